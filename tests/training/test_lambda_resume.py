"""The λ strategy's state travels in checkpoints: a resumed ``dual`` run continues its multipliers."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from fdseg.training.config import ExperimentConfig
from fdseg.training.run import train_run

Tiny = Callable[..., ExperimentConfig]


class _CrashAfter(pl.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after epoch ``self.epoch`` and its checkpoint
        if pl_module.global_epoch == self.epoch + 1:  # type: ignore[attr-defined]
            raise RuntimeError("simulated crash")


def _lambdas(run: Path) -> list[float]:
    with (run / "history.csv").open() as fh:
        return [float(row["lambda/enc1"]) for row in csv.DictReader(fh)]


def test_dual_lambda_state_is_checkpointed_and_resumed(tmp_path: Path, data_dir: Path, tiny: Tiny) -> None:
    dual = {"lambda_strategy": "dual", "lambda_kwargs": {"lambda_max": 1.0, "eta": 0.02, "delta": 5.0}}
    cfg = tiny(data_dir, loss=dual, train={"epochs_phase2": 3})
    whole = train_run(cfg, tmp_path / "whole", evaluate=False)
    reference = _lambdas(whole)
    # phase 1 (2 epochs) at λ = 0, then the multiplier rises: the target sits far below the warm-up median
    assert reference[:2] == [0.0, 0.0]
    assert 0.0 < reference[3] < reference[4] <= 1.0

    run = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_run(cfg, run, callbacks=[_CrashAfter(3)])
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert "fdseg_lambda" in saved
    before = _lambdas(run)
    assert len(before) == 4 and before[3] > 0.0
    train_run(cfg, run, evaluate=False)
    after = _lambdas(run)
    assert len(after) == len(reference) == 5
    # without the restored state the resumed epoch would start from λ = 0 again
    assert after[4] > before[3] > 0.0
