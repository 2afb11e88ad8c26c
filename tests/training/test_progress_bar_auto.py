"""``train.progress_bar: null`` (the default) shows Lightning's bar on a terminal only."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import ProgressBar

from fdseg.training.config import ExperimentConfig
from fdseg.training.phases import Phase
from fdseg.training.run import make_trainer
from fdseg.training.rundir import Runtime


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _has_bar(
    setting: bool | None, stdout: io.StringIO, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> bool:
    monkeypatch.setattr(sys, "stdout", stdout)
    cfg = ExperimentConfig().with_overrides([f"train.progress_bar={'null' if setting is None else setting}"])
    phase = Phase(1, 1, 0, True, "best.ckpt")
    trainer = make_trainer(cfg, phase, Runtime(), [], tmp_path)
    return any(isinstance(c, ProgressBar) for c in trainer.callbacks)


@pytest.mark.parametrize(
    ("setting", "terminal", "expected"),
    [(None, True, True), (None, False, False), (True, False, True), (False, True, False)],
)
def test_progress_bar_follows_the_terminal_unless_set(
    setting: bool | None, terminal: bool, expected: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stdout = _Terminal() if terminal else io.StringIO()
    assert _has_bar(setting, stdout, tmp_path, monkeypatch) is expected


def test_default_is_null() -> None:
    assert ExperimentConfig().train.progress_bar is None
    assert ExperimentConfig().with_overrides(["train.progress_bar=true"]).train.progress_bar is True
