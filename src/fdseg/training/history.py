"""``history.csv``: one row per epoch, rewritten atomically (temp file + rename) after every epoch.

Columns: ``epoch, phase, step, train_loss, train_seg, val_dice, val_loss``, then ``fd/<layer>``,
``fd_exch/<layer>`` and ``lambda/<layer>`` for every tapped layer, then anything else logged. ``epoch`` counts
over both phases (0-based), ``step`` is the optimiser step count within the phase at the end of the epoch.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Checkpoint

from fdseg._io import atomic_write_text
from fdseg.training.phases import Phase
from fdseg.training.progress import epoch_line

__all__ = ["FIXED_COLUMNS", "EpochRecord", "HistoryWriter"]

FIXED_COLUMNS = ("epoch", "phase", "step", "train_loss", "train_seg", "val_dice", "val_loss")
_GROUP_ORDER = ("fd/", "fd_exch/", "lambda/")


def _column_key(name: str) -> tuple[int, str]:
    for rank, prefix in enumerate(_GROUP_ORDER):
        if name.startswith(prefix):
            return rank, name
    return len(_GROUP_ORDER), name


class HistoryWriter:
    """Accumulates epoch rows and keeps ``path`` up to date.

    Args:
        path: ``<run>/history.csv``; existing rows are read back (resumed runs append to them). Their
            values stay the file's text, which the rewrite reproduces (a float is written as its ``repr``).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as fh:
                self.rows = [{k: v for k, v in raw.items() if v != ""} for raw in csv.DictReader(fh)]

    def truncate_after(self, epoch: int) -> None:
        """Drop rows of epochs after ``epoch`` (rows written after the checkpoint a run resumes from).

        Raises:
            ValueError: the file does not hold exactly one row for each epoch 0..``epoch`` (edited, damaged
                or deleted), which a resumed run cannot redo; nothing is changed then.
        """
        trained = [str(e) for e in range(epoch + 1)]
        kept = [r for r in self.rows if str(r.get("epoch")) in trained]
        epochs = [str(r["epoch"]) for r in kept]
        if sorted(epochs, key=int) != trained:
            missing = [e for e in trained if e not in epochs]
            twice = sorted({e for e in epochs if epochs.count(e) > 1})
            what = f"no row for epoch(s) {missing[:5]}" if missing else f"several rows for epoch(s) {twice}"
            raise ValueError(
                f"{self.path}: {what} of the {epoch + 1} epochs last.ckpt has trained, and a resumed run "
                "cannot redo them; restore the file, or delete the run directory to train from the start"
            )
        if len(kept) != len(self.rows):
            self.rows = kept
            self._write()

    def append(self, row: Mapping[str, Any]) -> None:
        """Add (or replace, for the same epoch) one row and rewrite the file."""
        self.rows = [r for r in self.rows if int(r["epoch"]) != int(row["epoch"])]
        self.rows.append(dict(row))
        self.rows.sort(key=lambda r: int(r["epoch"]))
        self._write()

    @property
    def columns(self) -> list[str]:
        """Fixed columns, then per-layer groups in the documented order."""
        extra = sorted({k for r in self.rows for k in r if k not in FIXED_COLUMNS}, key=_column_key)
        return [*FIXED_COLUMNS, *extra]

    def _write(self) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buf.getvalue())


class EpochRecord(Checkpoint):
    """Write each epoch's ``history.csv`` row from ``trainer.callback_metrics`` and say it in one line.

    The row is the epoch, phase and step, then every metric logged for the epoch (the task's epoch means,
    ``val_dice``/``val_loss`` and ``lambda/<layer>``). It is a :class:`Checkpoint` callback only so that
    Lightning calls it after ``LightningModule.on_train_epoch_end`` (where the task logs the epoch means)
    and, listed before :class:`fdseg.training.phases.RunCheckpoint`, before ``last.ckpt`` is written: a run
    resumed from ``last.ckpt`` never lacks the row of an epoch it has trained.

    Args:
        history: the run's history writer (rank 0 writes).
        phase: the phase being trained.
        echo: where the epoch line goes (``None``: silent); see :func:`epoch_line`.
        total_epochs: epochs over both phases (for the line).
    """

    def __init__(
        self,
        history: HistoryWriter,
        phase: Phase,
        echo: Callable[[str], None] | None = None,
        total_epochs: int = 0,
    ) -> None:
        self.history = history
        self.phase = phase
        self.echo = echo
        self.total_epochs = total_epochs
        self._started = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {"val_dice": math.nan, "val_loss": math.nan}
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
        epoch = self.phase.epoch_offset + trainer.current_epoch
        if trainer.is_global_zero:
            row = {"epoch": epoch, "phase": self.phase.index, "step": trainer.global_step, **metrics}
            self.history.append(row)
            if self.echo is not None:
                seconds = time.perf_counter() - self._started
                self.echo(epoch_line(self.phase, trainer.current_epoch, self.total_epochs, metrics, seconds))
