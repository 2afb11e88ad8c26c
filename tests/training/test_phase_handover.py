"""Phase 2 starts from phase 1's best weights, and ``best.ckpt`` holds phase 2's best epoch.

One tiny run (2 + 2 epochs) is shared by the tests. A callback spoils the network after phase 1's last
training epoch (its head bias is set to -1e3, so every pixel is predicted background and validation Dice
is 0): phase 1's best epoch is then epoch 0 and ``last.ckpt`` at the phase change holds other weights.
At the start of phase 2 the callback reads both checkpoints from disk and copies the model's weights.
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from conftest import tiny_config  # the shared tiny task (tests/training/conftest.py)
from fdseg.training.run import train_run
from fdseg.training.rundir import model_state, read_checkpoint


class _SpoilThenWatch(pl.Callback):
    """Spoil the weights before validation of global epoch ``spoil_at``; record phase 2's starting state."""

    def __init__(self, ckpt_dir: Path, spoil_at: int) -> None:
        self.ckpt_dir = ckpt_dir
        self.spoil_at = spoil_at
        self.start: dict[str, torch.Tensor] = {}
        self.phase1_best: dict[str, torch.Tensor] = {}
        self.last: dict[str, torch.Tensor] = {}

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.global_epoch == self.spoil_at:  # type: ignore[attr-defined]
            with torch.no_grad():
                pl_module.model.head.bias.fill_(-1e3)  # type: ignore[union-attr]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.global_epoch != self.spoil_at + 1:  # type: ignore[attr-defined]
            return  # phase 1
        self.start = {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()}  # type: ignore[union-attr]
        for name, target in (("phase1_best", self.phase1_best), ("last", self.last)):
            path = self.ckpt_dir / f"{name}.ckpt"
            target.update(model_state(read_checkpoint(path), path))


@pytest.fixture(scope="module")
def handover(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, _SpoilThenWatch]:
    pl.seed_everything(0, verbose=False)
    root = tmp_path_factory.mktemp("handover")
    cfg = tiny_config(tmp_path_factory.getbasetemp() / "fdseg-data")
    run = root / "run"
    watch = _SpoilThenWatch(run / "checkpoints", spoil_at=cfg.train.epochs_phase1 - 1)
    train_run(cfg, run, callbacks=[watch], evaluate=False)
    return run, watch


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as fh:
        return list(csv.DictReader(fh))


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_phase2_starts_from_phase1_best(handover: tuple[Path, _SpoilThenWatch]) -> None:
    run, watch = handover
    rows = _rows(run)
    phase1 = [r for r in rows if r["phase"] == "1"]
    assert float(phase1[-1]["val_dice"]) == 0.0 < float(phase1[0]["val_dice"])  # best epoch is not the last
    meta = read_checkpoint(run / "checkpoints" / "phase1_best.ckpt")["fdseg"]
    assert meta["phase"] == 1 and meta["epoch"] == 0
    assert watch.start and watch.phase1_best and watch.last
    assert not _equal(watch.phase1_best, watch.last)
    assert torch.all(watch.last["head.bias"] == -1e3)
    assert _equal(watch.start, watch.phase1_best)
    assert not _equal(watch.start, watch.last)


def test_best_ckpt_records_phase2_best_epoch(handover: tuple[Path, _SpoilThenWatch]) -> None:
    run, _ = handover
    rows = _rows(run)
    phase2 = [r for r in rows if r["phase"] == "2"]
    dice = [float(r["val_dice"]) for r in phase2]
    # phase 2 improves on the spoiled last epoch of phase 1 (Dice 0), so it has a best epoch of its own
    assert max(dice) > float(rows[len(rows) - len(phase2) - 1]["val_dice"])
    best = read_checkpoint(run / "checkpoints" / "best.ckpt")
    expected = int(phase2[dice.index(max(dice))]["epoch"])  # first epoch of the maximum (strict improvement)
    assert best["fdseg"]["phase"] == 2
    assert best["fdseg"]["epoch"] == expected >= len(rows) - len(phase2)
    assert best["fdseg"]["best_val_dice"] == pytest.approx(max(dice))
    phase1_best = read_checkpoint(run / "checkpoints" / "phase1_best.ckpt")
    assert not _equal(model_state(best, Path("best")), model_state(phase1_best, Path("phase1_best")))
