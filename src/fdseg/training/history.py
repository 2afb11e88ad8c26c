"""``history.csv``: one row per epoch, rewritten atomically (temp file + rename) after every epoch.

Columns: ``epoch, phase, step, train_loss, train_seg, val_dice, val_loss``, then ``fd/<layer>``,
``fd_exch/<layer>`` and ``lambda/<layer>`` for every tapped layer, then anything else logged. ``epoch`` counts
over both phases (0-based), ``step`` is the optimiser step count within the phase at the end of the epoch.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FIXED_COLUMNS = ("epoch", "phase", "step", "train_loss", "train_seg", "val_dice", "val_loss")
_GROUP_ORDER = ("fd/", "fd_exch/", "lambda/")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through ``path.tmp`` and ``os.replace`` (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _column_key(name: str) -> tuple[int, str]:
    for rank, prefix in enumerate(_GROUP_ORDER):
        if name.startswith(prefix):
            return rank, name
    return len(_GROUP_ORDER), name


class HistoryWriter:
    """Accumulates epoch rows and keeps ``path`` up to date.

    Args:
        path: ``<run>/history.csv``; existing rows are read back (resumed runs append to them).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as fh:
                for raw in csv.DictReader(fh):
                    self.rows.append({k: _parse(v) for k, v in raw.items() if v != ""})

    def truncate_after(self, epoch: int) -> None:
        """Drop rows of epochs after ``epoch`` (rows written after the checkpoint a run resumes from)."""
        kept = [r for r in self.rows if int(r["epoch"]) <= epoch]
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
        for row in self.rows:
            writer.writerow({k: _fmt(v) for k, v in row.items()})
        atomic_write_text(self.path, buf.getvalue())


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return value


def _parse(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text
