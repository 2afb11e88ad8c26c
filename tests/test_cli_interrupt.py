"""Ctrl-C before ``train_run`` takes it over is reported in one line, not a silent exit 130."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from fdseg.cli import main
from fdseg.training.config import ExperimentConfig


def test_ctrl_c_while_the_config_is_read_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted_read(cls: Any, path: Any) -> ExperimentConfig:
        os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT, delivered to main()'s handler
        time.sleep(5)  # the handler raises KeyboardInterrupt here, at once
        raise AssertionError("SIGINT was not delivered")

    before = signal.getsignal(signal.SIGINT)
    if before is signal.SIG_IGN:
        pytest.skip("SIGINT is ignored in this test process (its parent ignores it), so Ctrl-C cannot arrive")
    monkeypatch.setattr(ExperimentConfig, "from_yaml", classmethod(interrupted_read))
    code = main(["train", "-c", str(tmp_path / "c.yaml"), "-o", str(tmp_path / "run")])
    assert code == 130
    assert capsys.readouterr().err.strip() == "interrupted (Ctrl-C) during fdseg train"
    assert signal.getsignal(signal.SIGINT) is before  # main() put the previous handler back
    assert not (tmp_path / "run").exists()
