"""The two training phases and the callback that records them (history rows, best and last checkpoints).

Phase 1 trains with λ = 0 for ``train.epochs_phase1`` epochs and keeps the best validation-Dice weights as
``checkpoints/phase1_best.ckpt``. Phase 2 starts from those weights (with a fresh optimiser and a fresh best
tracker), runs ``train.epochs_phase2`` epochs with the λ strategy switched on and keeps its best as
``checkpoints/best.ckpt``. A run without L_fd and without ``compute_matched`` has phase 1 only, whose best is
copied to ``best.ckpt``. ``checkpoints/last.ckpt`` is rewritten at the end of every epoch of either phase and
carries the phase number, so an interrupted run resumes where it stopped.

With an optimiser-step budget (``train.max_steps``) the budget is split between the phases in proportion to
their epochs and rounded to whole epochs (validation and checkpointing happen at epoch ends), so the steps
actually taken can differ from the budget by less than one epoch per phase; ``history.csv`` records them.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from fdseg.training.config import ExperimentConfig
from fdseg.training.history import HistoryWriter


@dataclass(frozen=True)
class Phase:
    """One phase of a run.

    Attributes:
        index: 1 or 2.
        epochs: epochs of this phase.
        epoch_offset: global index of its first epoch.
        lambda_zero: λ ≡ 0 in this phase (phase 1, the compute-matched baseline's phase 2).
        best_name: checkpoint file of its best validation Dice.
    """

    index: int
    epochs: int
    epoch_offset: int
    lambda_zero: bool
    best_name: str


def plan_phases(cfg: ExperimentConfig, steps_per_epoch: int) -> list[Phase]:
    """The phases of ``cfg`` given the number of optimiser steps per epoch.

    Args:
        cfg: the run's configuration.
        steps_per_epoch: optimiser steps in one training epoch (>= 1).

    Returns:
        One or two phases.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    train = cfg.train
    e1, e2 = train.epochs_phase1, train.epochs_phase2 if cfg.has_phase2 else 0
    if train.max_steps is not None:
        steps1 = train.max_steps * e1 / (e1 + e2)
        e1_new = max(1, round(steps1 / steps_per_epoch))
        e2 = max(1, round((train.max_steps - e1_new * steps_per_epoch) / steps_per_epoch)) if e2 else 0
        e1 = e1_new
    phase1_name = "phase1_best.ckpt" if e2 else "best.ckpt"
    phases = [Phase(1, e1, 0, True, phase1_name)]
    if e2:
        phases.append(Phase(2, e2, e1, train.compute_matched or not cfg.loss.fd, "best.ckpt"))
    return phases


def steps_per_epoch(n_train: int, batch_size: int, world_size: int = 1) -> int:
    """Optimiser steps per epoch for ``n_train`` images (last partial batch kept)."""
    return max(1, math.ceil(math.ceil(n_train / world_size) / batch_size))


def rng_state() -> dict[str, Any]:
    """The global RNG states (torch CPU, NumPy, ``random``) as tensors and plain containers."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }  # fmt: skip


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    npy = state["numpy"]
    keys = np.asarray(npy["keys"].numpy(), dtype=np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["gauss"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))


def restore_stream(checkpoint: Mapping[str, Any], stream: Any) -> None:
    """Set the data stream and the global RNGs to the states saved in ``checkpoint`` (when present)."""
    if stream is not None and "fdseg_stream" in checkpoint:
        stream.load_state_dict(checkpoint["fdseg_stream"])
    if "fdseg_rng" in checkpoint:
        set_rng_state(checkpoint["fdseg_rng"])


def atomic_save_checkpoint(trainer: pl.Trainer, path: Path) -> None:
    """Save the trainer's full checkpoint to ``path`` via a temporary file and an atomic rename.

    Full means weights, optimiser, scheduler, callback and λ states (Lightning's ``weights_only=False``), so
    an interrupted run resumes exactly. The file holds only tensors and plain containers and is read back
    with ``torch.load(..., weights_only=True)``.
    """
    tmp = path.with_name(path.name + ".tmp")
    trainer.save_checkpoint(tmp, weights_only=False)
    if trainer.is_global_zero:
        os.replace(tmp, path)
    trainer.strategy.barrier("fdseg_checkpoint")


class RunRecorder(pl.Callback):
    """Write one history row per epoch, then ``last.ckpt`` and (on improvement) the phase's best checkpoint.

    The history row is written before the checkpoints, so a run resumed from ``last.ckpt`` never lacks the
    row of an epoch it has already trained. The best validation Dice survives resumption (callback state).
    Checkpoints also carry the data stream (``fdseg_stream``) and the global RNG states (``fdseg_rng``), which
    a resumed run restores, so it continues with the batches the uninterrupted run would have drawn.

    Args:
        checkpoint_dir: ``<run>/checkpoints``.
        history: the run's history writer.
        phase: the phase being trained.
        stream: the run's :class:`fdseg.training.data.DataStream` (``state_dict``/``load_state_dict``).
    """

    def __init__(
        self, checkpoint_dir: Path, history: HistoryWriter, phase: Phase, stream: Any = None
    ) -> None:
        self.checkpoint_dir = checkpoint_dir
        self.history = history
        self.phase = phase
        self.stream = stream
        self.best_dice = -math.inf
        self.best_epoch = -1
        self.epoch: int | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Note the epoch in progress (named when the run is interrupted)."""
        self.epoch = self.phase.epoch_offset + trainer.current_epoch

    @property
    def state_key(self) -> str:
        return f"RunRecorder[phase={self.phase.index}]"

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Record the epoch and write checkpoints."""
        if trainer.sanity_checking:
            return
        finish = getattr(pl_module, "finish_epoch", None)
        if finish is None:
            raise TypeError(f"RunRecorder needs a SegmentationTask, got {type(pl_module).__name__}")
        stats: dict[str, float] = finish()
        epoch = self.phase.epoch_offset + trainer.current_epoch
        row: dict[str, Any] = {
            "epoch": epoch,
            "phase": self.phase.index,
            "step": trainer.global_step,
            **stats,
        }
        if trainer.is_global_zero:
            self.history.append(row)
        dice = stats.get("val_dice", math.nan)
        improved = not math.isnan(dice) and dice > self.best_dice
        if improved:
            self.best_dice = dice
            self.best_epoch = epoch
        # checkpoints carry this callback's state, so update it before saving
        if improved:
            atomic_save_checkpoint(trainer, self.checkpoint_dir / self.phase.best_name)
        atomic_save_checkpoint(trainer, self.checkpoint_dir / "last.ckpt")

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Stamp the checkpoint with the phase and epoch it belongs to, the data stream and the RNG states."""
        checkpoint["fdseg"] = {
            "phase": self.phase.index,
            "epoch": self.phase.epoch_offset + trainer.current_epoch,
            "best_val_dice": self.best_dice,
            "best_epoch": self.best_epoch,
        }
        if self.stream is not None:
            checkpoint["fdseg_stream"] = self.stream.state_dict()
        checkpoint["fdseg_rng"] = rng_state()

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Restore the data stream and the RNG states of the checkpoint a phase resumes from."""
        restore_stream(checkpoint, self.stream)

    def state_dict(self) -> dict[str, Any]:
        return {"best_dice": self.best_dice, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_dice = float(state_dict["best_dice"])
        self.best_epoch = int(state_dict["best_epoch"])
