"""``train.progress_bar: null`` (default): the bar on a terminal only; each epoch its bar, then its line."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import ProgressBar

from fdseg.training.config import ExperimentConfig
from fdseg.training.phases import Phase
from fdseg.training.run import PhaseProgressBar, make_trainer, train_run
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
    bars = [c for c in trainer.callbacks if isinstance(c, ProgressBar)]
    assert all(isinstance(b, PhaseProgressBar) and b.phase == phase for b in bars)
    return bool(bars)


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


def test_on_a_terminal_each_epoch_has_its_bar_then_its_line(
    tmp_path: Path, data_dir: Path, tiny: Callable[..., ExperimentConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    cfg = tiny(
        data_dir, train={"progress_bar": None, "epochs_phase1": 1, "epochs_phase2": 1}, loss={"fd": True}
    )
    train_run(cfg, tmp_path / "run", evaluate=False, echo=lambda line: print(line, file=terminal))
    text = terminal.getvalue()
    for phase in (1, 2):
        bar, line = f"phase {phase} epoch 1/1: 100%", f"\nphase {phase} epoch 1/1 (run epoch {phase}/2):"
        assert bar in text and line in text  # the epoch line starts a line of its own, after its bar
        assert text.index(bar) < text.index(line)
    shown = [line.rsplit("\r", 1)[-1] for line in text.split("\n")]  # what stays on screen of each line
    assert not [line for line in shown if line.startswith("Epoch")]  # Lightning's 0-based name is replaced
