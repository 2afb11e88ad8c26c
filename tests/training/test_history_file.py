"""history.csv: rows read back by a resumed run are rewritten exactly as they were written."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fdseg.training.history import HistoryWriter


def test_rows_read_back_are_rewritten_identically(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    first = HistoryWriter(path)
    first.append({"epoch": 0, "phase": 1, "step": 3, "train_loss": 0.1 + 0.2, "val_dice": math.nan})
    first.append(
        {"epoch": 1, "phase": 2, "step": 6, "train_loss": 1e-20, "val_dice": 0.5, "lambda/enc1": 0.001}
    )
    text = path.read_text(encoding="utf-8")
    assert text == (
        "epoch,phase,step,train_loss,train_seg,val_dice,val_loss,lambda/enc1\n"
        "0,1,3,0.30000000000000004,,nan,,\n"
        "1,2,6,1e-20,,0.5,,0.001\n"
    )
    resumed = HistoryWriter(path)  # as a resumed run: drop epoch 1, train it again
    resumed.truncate_after(0)
    assert path.read_text(encoding="utf-8") == (
        "epoch,phase,step,train_loss,train_seg,val_dice,val_loss\n0,1,3,0.30000000000000004,,nan,\n"
    )
    resumed.append(
        {"epoch": 1, "phase": 2, "step": 6, "train_loss": 1e-20, "val_dice": 0.5, "lambda/enc1": 0.001}
    )
    assert path.read_text(encoding="utf-8") == text


def test_a_history_that_lacks_or_repeats_trained_epochs_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    header = "epoch,phase,step,train_loss,train_seg,val_dice,val_loss\n"
    cases = {
        "missing": (header + "0,1,3,0.5,,0.1,\n2,1,9,0.4,,0.2,\n", r"no row for epoch\(s\) \['1'\] of the 3"),
        "twice": (header + "0,1,3,0.5,,0.1,\n1,1,6,0.4,,0.2,\n1,1,6,0.4,,0.2,\n2,1,9,0.3,,0.3,\n", "several"),
        "garbage": ("garbage\n", r"no row for epoch\(s\) \['0', '1', '2'\]"),
    }
    for text, message in cases.values():
        path.write_text(text, encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            HistoryWriter(path).truncate_after(2)
        assert path.read_text(encoding="utf-8") == text
    path.unlink()  # deleted: nothing to resume the history from either
    with pytest.raises(ValueError, match="no row for epoch"):
        HistoryWriter(path).truncate_after(0)
    path.write_text(header + "0,1,3,0.5,,0.1,\n1,1,6,0.4,,0.2,\n", encoding="utf-8")
    HistoryWriter(path).truncate_after(0)  # a later row than last.ckpt's epoch: dropped, as before
    assert path.read_text(encoding="utf-8") == header + "0,1,3,0.5,,0.1,\n"
