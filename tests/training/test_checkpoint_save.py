"""Run checkpoints are saved as full checkpoints, explicitly, and load with ``weights_only=True``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fdseg.training.config import ExperimentConfig
from fdseg.training.run import checkpoint_meta, train_run

Tiny = Callable[..., ExperimentConfig]


def test_checkpoints_are_full_and_save_without_the_weights_only_notice(
    tmp_path: Path, data_dir: Path, tiny: Tiny, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tiny(data_dir, train={"epochs_phase1": 1, "epochs_phase2": 1})
    with caplog.at_level(logging.INFO):
        run = train_run(cfg, tmp_path / "run", evaluate=False)
    assert not [r for r in caplog.records if "weights_only" in r.getMessage()]
    for name in ("phase1_best", "best", "last"):
        path = run / "checkpoints" / f"{name}.ckpt"
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        assert ckpt["optimizer_states"] and ckpt["state_dict"], name  # full: resumable, not weights only
        assert "fdseg_lambda" in ckpt
    meta = checkpoint_meta(run / "checkpoints" / "last.ckpt")
    assert meta is not None and (meta["phase"], meta["epoch"]) == (2, 1)
