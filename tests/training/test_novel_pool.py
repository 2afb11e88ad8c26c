"""Novel images come from the novel dataset's training part only, never from its official test set."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fdseg.data.base import Record
from fdseg.data.errors import SplitError
from fdseg.data.open import open_dataset
from fdseg.data.pooling import addition_counts, novel_training_ids
from fdseg.training.config import ExperimentConfig
from fdseg.training.data import build_run_data

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("FDSEG_SHARED_DATA") or REPO.parent / "shared" / "data")
MONUSEG = SHARED_DATA / "monuseg"
needs_monuseg = pytest.mark.skipif(
    not (MONUSEG / "MoNuSegTestData").is_dir(),
    reason=f"real MoNuSeg training + test folders not found under {SHARED_DATA} (set FDSEG_SHARED_DATA)",
)


def _rec(i: str, split: str | None) -> Record:
    return Record(id=i, image=Path(f"{i}.png"), split=split)


def test_training_ids_skip_official_test_records() -> None:
    records = [_rec("a", "test"), _rec("b", "train"), _rec("c", "test"), _rec("d", "train")]
    assert novel_training_ids(records) == ["b", "d"]
    assert novel_training_ids([_rec("x", None), _rec("y", None)]) == ["x", "y"]  # no official split
    with pytest.raises(ValueError, match="no training part"):
        novel_training_ids([_rec("a", "test")], spec="monuseg:/t")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": [0, 6]}, "larger than the novel training pool"),
        ({"k": [-1]}, ">= 0"),
        ({"k": [2.5]}, "whole numbers"),
        ({"fractions": [0.5, 1.2]}, r"\[0, 1\]"),
        ({"fractions": ["a"]}, "numbers"),
        ({}, "not both and not neither"),
    ],
)
def test_addition_counts_reject_bad_values(kwargs: dict[str, list[object]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        addition_counts(5, **kwargs)  # type: ignore[arg-type]


def test_addition_counts_values() -> None:
    assert addition_counts(30, fractions=[0, 0.25, 0.5, 1]) == [0, 8, 15, 30]
    assert addition_counts(5, k=[0, 5, 3.0]) == [0, 5, 3]


def _config(tmp_path: Path, novel: str, **data: object) -> ExperimentConfig:
    base = f"synthetic:{tmp_path / 'base'}?family=nuclei&site=base&n=12&seed=0&size=32"
    return ExperimentConfig.from_dict(
        {
            "data": {
                "base": base,
                "novel": novel,
                "image_size": 32,
                "split_scheme": "paper",
                "cache_dir": str(tmp_path / "cache"),
                **data,
            }
        }
    )


@pytest.mark.slow
@needs_monuseg
def test_run_split_adds_only_official_training_images(tmp_path: Path) -> None:
    raw = open_dataset(f"monuseg:{MONUSEG}")
    official = raw.official_split()
    assert official is not None and len(official["test"]) == 14
    train_ids, test_ids = set(official["train"]), set(official["test"])
    cfg = _config(tmp_path, f"monuseg:{MONUSEG}", novel_fraction=1.0)
    data = build_run_data(cfg, tmp_path / "run")
    assert set(data.split["novel"]) == train_ids  # all of the pool, nothing else
    assert not set(data.split["novel"]) & test_ids
    saved = json.loads((tmp_path / "run" / "split.json").read_text())
    listed = json.dumps(saved)
    assert all(i in listed for i in train_ids) and not any(i in listed for i in test_ids)
    # a hand-edited split.json that adds an official test image is refused when re-read
    text = (tmp_path / "run" / "split.json").read_text().replace(sorted(train_ids)[0], sorted(test_ids)[0])
    (tmp_path / "run" / "split.json").write_text(text)
    with pytest.raises(SplitError, match="training part"):
        build_run_data(cfg, tmp_path / "run")
    with pytest.raises(SplitError, match="larger than the training pool"):
        build_run_data(_config(tmp_path, f"monuseg:{MONUSEG}", novel_k=len(train_ids) + 1), tmp_path / "run2")
    with pytest.raises(ValueError, match="no training part"):
        build_run_data(
            _config(tmp_path, f"monuseg:{MONUSEG / 'MoNuSegTestData'}", novel_k=1), tmp_path / "run3"
        )
