"""Checkpoints: ``last.ckpt`` is full and timed; the best weights are kept in memory and written with it.

Time is injected (``fdseg.training.phases.clock``), never slept: a callback advances a fake clock by 50 s at
each epoch's start, so with ``checkpoint_every_s = 120`` the cadence is known in advance.
"""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from fdseg.training import phases
from fdseg.training.config import ExperimentConfig
from fdseg.training.run import train_run
from fdseg.training.rundir import checkpoint_meta

Tiny = Callable[..., ExperimentConfig]
SRC = Path(__file__).resolve().parents[2] / "src"


def test_last_is_full_and_best_files_hold_weights_and_stamp(
    tmp_path: Path, data_dir: Path, tiny: Tiny, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tiny(data_dir, train={"epochs_phase1": 1, "epochs_phase2": 1})
    with caplog.at_level(logging.INFO):
        run = train_run(cfg, tmp_path / "run", evaluate=False)
    assert not [r for r in caplog.records if "weights_only" in r.getMessage()]
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["optimizer_states"] and last["state_dict"] and "fdseg_lambda" in last  # resumable
    for name, phase in (("phase1_best", 1), ("best", 2)):
        best = torch.load(run / "checkpoints" / f"{name}.ckpt", map_location="cpu", weights_only=True)
        assert best["fdseg"]["phase"] == phase and "fdseg_lambda" in best, name
        assert set(best["state_dict"]) == set(last["state_dict"]), name
        assert "optimizer_states" not in best, name  # the weights, not a resumable state
    assert not list((run / "checkpoints").glob("*.tmp"))
    meta = checkpoint_meta(run / "checkpoints" / "last.ckpt")
    assert meta is not None and (meta["phase"], meta["epoch"]) == (2, 1)


class _FakeClock:
    """50 s pass at the start of every epoch; ``saved`` gets the ``last.ckpt`` dicts as they are written."""

    def __init__(self) -> None:
        self.now = 0.0
        self.saved: list[dict[str, Any]] = []

    def __call__(self) -> float:
        return self.now


class _Advance(pl.Callback):
    def __init__(self, clock: _FakeClock, probe: Callable[[int], None] | None = None) -> None:
        self.clock = clock
        self.probe = probe

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.clock.now += 50.0
        if self.probe is not None:
            self.probe(trainer.current_epoch)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, module: pl.LightningModule, ckpt: dict[str, Any]
    ) -> None:
        self.clock.saved.append(ckpt)  # stamped by RunCheckpoint right after this hook


def _val_dice(run: Path) -> list[float]:
    with (run / "history.csv").open() as fh:
        return [float(r["val_dice"]) for r in csv.DictReader(fh)]


def test_last_ckpt_follows_checkpoint_every_s_and_best_stays_in_memory(
    tmp_path: Path, data_dir: Path, tiny: Tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = _FakeClock()
    monkeypatch.setattr(phases, "clock", clock)
    cfg = tiny(data_dir, train={"epochs_phase1": 7, "epochs_phase2": 0, "checkpoint_every_s": 120.0})
    run = tmp_path / "run"
    on_disk: list[tuple[int, bool, bool]] = []

    def probe(epoch: int) -> None:
        ckpts = run / "checkpoints"
        on_disk.append((epoch, (ckpts / "last.ckpt").is_file(), (ckpts / "best.ckpt").is_file()))

    train_run(cfg, run, callbacks=[_Advance(clock, probe)], evaluate=False)
    # epoch e ends at 50 (e + 1) s: saved once 120 s have passed since the last save, then at the phase end
    assert [c["fdseg"]["epoch"] for c in clock.saved] == [2, 5, 6]
    # nothing on disk before the first timed save; the best weights were only in memory until then
    assert on_disk[:3] == [(0, False, False), (1, False, False), (2, False, False)]
    assert on_disk[3][1] and on_disk[3][2]
    dice = _val_dice(run)
    assert len(dice) == 7
    best = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["fdseg"]
    assert best["epoch"] == dice.index(max(dice)) and best["best_val_dice"] == pytest.approx(max(dice))


@pytest.mark.parametrize("every", [0, -1, float("nan"), float("inf")])
def test_checkpoint_every_s_must_be_positive(data_dir: Path, tiny: Tiny, every: float) -> None:
    with pytest.raises(ValueError, match=r"train\.checkpoint_every_s must be a number of seconds > 0"):
        tiny(data_dir, train={"checkpoint_every_s": every})


KILLED_CHILD = """
import os, signal, sys
import lightning.pytorch as pl
import torch
from fdseg.training import phases
from fdseg.training.config import ExperimentConfig
from fdseg.training.run import train_run

now = [0.0]
phases.clock = lambda: now[0]

class Advance(pl.Callback):
    def on_train_epoch_start(self, trainer, module):
        if module.global_epoch == 4:  # epoch 3 ended 50 s after the save of epoch 2: not saved
            os.kill(os.getpid(), signal.SIGKILL)
        now[0] += 50.0

cfg = ExperimentConfig.from_yaml(sys.argv[1])
torch.set_num_threads(1)  # as the test process (float sums depend on the thread count)
pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
train_run(cfg, sys.argv[2], callbacks=[Advance()])
"""


@pytest.mark.slow
def test_kill_between_two_timed_checkpoints_resumes_from_the_last(
    tmp_path: Path, data_dir: Path, tiny: Tiny
) -> None:
    loss = {
        "exch": True,
        "pairing": "shuffle",
        "lambda_strategy": "dual",
        "lambda_kwargs": {"lambda_max": 0.01},
    }
    train = {"epochs_phase1": 6, "epochs_phase2": 2, "checkpoint_every_s": 120.0}
    cfg = tiny(data_dir, loss=loss, train=train)
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    reference = train_run(cfg, tmp_path / "reference")
    config = tmp_path / "config.yaml"
    cfg.to_yaml(config)
    run = tmp_path / "run"
    child = subprocess.run(
        [sys.executable, "-c", KILLED_CHILD, str(config), str(run)],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert child.returncode == -9, child.stderr[-2000:]
    meta = checkpoint_meta(run / "checkpoints" / "last.ckpt")
    assert meta is not None and meta["epoch"] == 2  # epoch 3 was trained but never saved
    best = torch.load(run / "checkpoints" / "phase1_best.ckpt", map_location="cpu", weights_only=True)
    assert best["fdseg"]["epoch"] == meta["best_epoch"]  # the best file is the one last.ckpt names
    assert len(_val_dice(run)) == 4  # the history row of the lost epoch 3 is there, and will be redone

    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    train_run(cfg, run)
    assert (run / "history.csv").read_text() == (reference / "history.csv").read_text()
    assert (run / "test" / "per_sample.csv").read_text() == (
        reference / "test" / "per_sample.csv"
    ).read_text()
