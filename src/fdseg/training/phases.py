"""The two training phases and their checkpoints (best weights of each phase, ``last.ckpt`` to resume).

Phase 1 trains with λ = 0 for ``train.epochs_phase1`` epochs and keeps the best validation-Dice weights as
``checkpoints/phase1_best.ckpt``. Phase 2 starts from those weights (with a fresh optimiser and a fresh best
tracker), runs ``train.epochs_phase2`` epochs with the λ strategy switched on and keeps its best as
``checkpoints/best.ckpt``. A run without L_fd and without ``compute_matched`` has phase 1 only, whose best is
named ``best.ckpt``. ``checkpoints/last.ckpt`` is rewritten at an epoch's end every
``train.checkpoint_every_s`` seconds and at each phase's end, and carries the phase number, so an
interrupted run resumes from it (:class:`RunCheckpoint`).

With an optimiser-step budget (``train.max_steps``) the budget is split between the phases in proportion to
their epochs, and each phase stops after exactly its share of steps (:class:`StepBudget`): its last epoch
may be partial, and is validated and checkpointed like any other. Adding data thus adds no compute.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning
import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning_utilities.core.apply_func import apply_to_collection

from fdseg._io import atomic_path
from fdseg.training.config import ExperimentConfig


@dataclass(frozen=True)
class Phase:
    """One phase of a run.

    Attributes:
        index: 1 or 2.
        epochs: epochs of this phase.
        epoch_offset: global index of its first epoch.
        lambda_zero: λ ≡ 0 in this phase (phase 1, the compute-matched baseline's phase 2).
        best_name: checkpoint file of its best validation Dice.
        steps: the phase's optimiser steps when ``train.max_steps`` is set (``None``: whole epochs).
    """

    index: int
    epochs: int
    epoch_offset: int
    lambda_zero: bool
    best_name: str
    steps: int | None = None


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
    s1: int | None = None
    s2: int | None = None
    if train.max_steps is not None:
        s1 = max(1, round(train.max_steps * e1 / (e1 + e2))) if e2 else train.max_steps
        s2 = max(1, train.max_steps - s1) if e2 else None
        e1 = math.ceil(s1 / steps_per_epoch)
        e2 = math.ceil(s2 / steps_per_epoch) if s2 else 0
    phase1_name = "phase1_best.ckpt" if e2 else "best.ckpt"
    phases = [Phase(1, e1, 0, True, phase1_name, s1)]
    if e2:
        phases.append(Phase(2, e2, e1, train.compute_matched or not cfg.loss.fd, "best.ckpt", s2))
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


#: The clock of the checkpoint cadence (seconds, monotonic). Tests replace it to inject time.
clock: Callable[[], float] = time.monotonic


class StepBudget(pl.Callback):
    """Stop the phase after exactly ``steps`` optimiser steps, validating its last (partial) epoch.

    Setting ``trainer.should_stop`` makes Lightning validate and close the epoch, so the last epoch gets its
    history row and checkpoints like any other. (``Trainer(max_steps=...)`` is not used: with it, Lightning
    2.6 resumes a checkpoint written at an epoch's end as a restart inside that epoch.) The task sizes its
    learning-rate schedule from the same budget (``SegmentationTask.total_steps``).
    """

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step >= self.steps:
            trainer.should_stop = True


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``torch.save`` checkpoint I/O, written to a temporary file renamed over the target.

    A process killed while saving leaves the previous checkpoint whole (:func:`fdseg._io.atomic_path`).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


class RunCheckpoint(Checkpoint):
    """The phase's checkpoints: ``last.ckpt`` on a time cadence, the best weights kept in memory.

    ``last.ckpt`` is a full checkpoint (weights, optimiser, scheduler, callback and λ states, the data stream
    and the global RNG states), written at an epoch's end when ``every_s`` seconds have passed since the
    phase started or since it was last written, and at the phase's end. A run killed between two of them
    resumes from the last one and repeats the epochs after it exactly (same batches, same RNG draws), so it
    loses at most ``every_s`` seconds of work.

    The best validation Dice's weights are copied to host memory when the Dice improves (a copy of the
    module's state dict) and written to the phase's best file (``phase1_best.ckpt`` or ``best.ckpt``: the
    state dict, the λ state and the ``fdseg`` stamp; no optimiser) before every ``last.ckpt``, at the
    phase's end and when training stops on an exception (Ctrl-C, SIGTERM, divergence). So the best file on
    disk is always the one ``last.ckpt``'s best epoch names.

    Lightning calls it after ``LightningModule.on_train_epoch_end`` (it is a :class:`Checkpoint`), so the
    epoch's λ update is in the saved λ state; under DDP the cadence is rank 0's clock, broadcast.

    Args:
        checkpoint_dir: ``<run>/checkpoints``.
        phase: the phase being trained.
        every_s: seconds between two ``last.ckpt`` (``train.checkpoint_every_s``).
        stream: the run's :class:`fdseg.training.data.DataStream` (``state_dict``/``load_state_dict``).
    """

    def __init__(self, checkpoint_dir: Path, phase: Phase, every_s: float, stream: Any = None) -> None:
        self.checkpoint_dir = checkpoint_dir
        self.phase = phase
        self.every_s = float(every_s)
        self.stream = stream
        self.best_dice = -math.inf
        self.best_epoch = -1
        self.epoch: int | None = None
        self._best: dict[str, Any] | None = None  # unwritten best: state dict (host copy) and stamp
        self._saved_at = 0.0
        self._saved_epoch: int | None = None

    @property
    def state_key(self) -> str:
        return f"RunRecorder[phase={self.phase.index}]"

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._saved_at = clock()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Note the epoch in progress (named when the run is interrupted)."""
        self.epoch = self.phase.epoch_offset + trainer.current_epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Keep improved weights in memory; write the checkpoints when ``every_s`` has passed."""
        if trainer.sanity_checking:
            return
        epoch = self.phase.epoch_offset + trainer.current_epoch
        dice = float(trainer.callback_metrics.get("val_dice", math.nan))
        if not math.isnan(dice) and dice > self.best_dice:
            self.best_dice, self.best_epoch = dice, epoch
            if trainer.is_global_zero:
                self._best = self._best_checkpoint(trainer, pl_module, epoch)
        due = trainer.strategy.broadcast(clock() - self._saved_at >= self.every_s)
        if due:
            self._save(trainer, epoch)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The phase's end: write the best weights and ``last.ckpt`` (unless this epoch's is written)."""
        epoch = self.phase.epoch_offset + trainer.current_epoch - 1
        if self._saved_epoch != epoch:
            self._save(trainer, epoch)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Interrupted or diverged: write the best weights held in memory (``last.ckpt`` stays)."""
        self._write_best(trainer)

    def _save(self, trainer: pl.Trainer, epoch: int) -> None:
        self._write_best(trainer)
        self._saved_epoch = epoch  # stamped into the checkpoint by on_save_checkpoint
        trainer.save_checkpoint(self.checkpoint_dir / "last.ckpt", weights_only=False)
        self._saved_at = clock()

    def _write_best(self, trainer: pl.Trainer) -> None:
        if self._best is not None and trainer.is_global_zero:
            trainer.strategy.checkpoint_io.save_checkpoint(
                self._best, self.checkpoint_dir / self.phase.best_name
            )
            self._best = None

    def _best_checkpoint(self, trainer: pl.Trainer, module: pl.LightningModule, epoch: int) -> dict[str, Any]:
        # a host copy (also of CPU tensors: the live weights keep training); extra states may be dicts
        state = apply_to_collection(
            module.state_dict(), torch.Tensor, lambda t: t.detach().to("cpu", copy=True)
        )
        best: dict[str, Any] = {
            "state_dict": state,
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "pytorch-lightning_version": lightning.__version__,
            "fdseg": self._stamp(epoch),
        }
        strategy = getattr(module, "lambda_strategy", None)
        if strategy is not None:
            best["fdseg_lambda"] = copy.deepcopy(strategy.state_dict())
        return best

    def _stamp(self, epoch: int) -> dict[str, Any]:
        return {
            "phase": self.phase.index,
            "epoch": epoch,
            "best_val_dice": self.best_dice,
            "best_epoch": self.best_epoch,
        }

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Stamp ``last.ckpt`` with the phase and epoch, the data stream and the RNG states."""
        epoch = self._saved_epoch
        if epoch is None:
            epoch = self.phase.epoch_offset + trainer.current_epoch
        checkpoint["fdseg"] = self._stamp(epoch)
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
