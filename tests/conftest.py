"""Suite-wide settings: tests use tiny tensors, where one intra-op thread is fastest and avoids
thread wake-up stalls on a busy 2-core machine."""

from __future__ import annotations

from collections.abc import Iterator

import matplotlib
import pytest
import torch

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _single_intra_op_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
