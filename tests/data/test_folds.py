"""Cross-validation folds: disjoint, grouped by patient/slide, covering every image once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from fixtures import SHARED_DATA

from fdseg.data import open_dataset
from fdseg.data.errors import SplitError
from fdseg.data.splits import fold_split, make_folds

TNBC = SHARED_DATA / "tnbc" / "TNBC_NucleiSegmentation"


def _check_partition(ids: list[str], groups: list[str | None], folds: list[tuple[str, ...]]) -> None:
    seen = Counter(i for fold in folds for i in fold)
    assert set(seen) == set(ids) and set(seen.values()) == {1}  # every image in exactly one fold
    group_of = dict(zip(ids, groups))
    for g in {g for g in groups if g is not None}:
        where = {f for f, fold in enumerate(folds) for i in fold if group_of[i] == g}
        assert len(where) == 1, f"group {g} split over folds {where}"


def test_folds_are_disjoint_grouped_and_cover_every_image() -> None:
    ids = [f"img{i}" for i in range(23)]
    groups: list[str | None] = [f"p{i % 7}" for i in range(20)] + [None, None, None]
    folds = make_folds(ids, 5, groups=groups, seed=3)
    assert len(folds) == 5 and all(folds)
    _check_partition(ids, groups, folds)
    sizes = sorted(len(f) for f in folds)
    assert sizes[-1] - sizes[0] <= 3  # largest group has 3 images: within one group of each other
    assert make_folds(ids, 5, groups=groups, seed=3) == folds  # deterministic
    ungrouped = make_folds(ids, 4)
    assert sorted(len(f) for f in ungrouped) == [5, 6, 6, 6]


def test_fold_split_tests_on_the_fold_and_keeps_groups_together() -> None:
    ids = [f"img{i}" for i in range(30)]
    groups: list[str | None] = [f"p{i // 3}" for i in range(30)]
    folds = make_folds(ids, 5, groups=groups, seed=1)
    tests = []
    for f in range(5):
        split = fold_split(ids, 5, f, groups=groups, seed=1, val=0.2)
        assert split.test_ids == folds[f] and split.meta["fold"] == f
        assert set(split.train) | set(split.val_ids) | set(split.test_ids) == set(ids)
        assert not set(split.train) & set(split.val_ids)
        tests.extend(split.test_ids)
    assert sorted(tests) == sorted(ids)


def test_bad_fold_counts() -> None:
    ids = ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="at least 2 folds, got 1"):
        make_folds(ids, 1)
    with pytest.raises(SplitError, match=r"5 folds need at least 5 groups.*2 group"):
        make_folds(ids, 5, groups=["x", "x", "y", "y"])
    with pytest.raises(ValueError, match=r"data.fold must be in \[0, 2\]"):
        fold_split(ids, 3, 3)


@pytest.mark.skipif(not TNBC.is_dir(), reason=f"real TNBC not found at {TNBC}")
def test_real_tnbc_five_folds_by_slide() -> None:
    ds = open_dataset(f"tnbc:{TNBC}")
    ids = [r.id for r in ds.records]
    groups = [r.group for r in ds.records]
    folds = make_folds(ids, 5, groups=groups, seed=35)
    _check_partition(ids, groups, folds)
    assert len(ids) == 50 and min(len(f) for f in folds) >= 5
    with pytest.raises(SplitError, match="groups"):
        make_folds(ids, len(set(groups)) + 1, groups=groups)


def test_config_folds_checked_and_run_split_is_the_fold(tmp_path: Path) -> None:
    from fdseg.training.config import ExperimentConfig
    from fdseg.training.data import build_run_data

    with pytest.raises(ValueError, match=r"data\.folds must be an int >= 2"):
        ExperimentConfig().with_overrides(["data.folds=1"])
    with pytest.raises(ValueError, match=r"data.fold must be in \[0, 2\]"):
        ExperimentConfig().with_overrides(["data.folds=3", "data.fold=3"])
    base = f"synthetic:{tmp_path / 'd'}?family=nuclei&site=base&n=10&seed=0&size=16"
    tests = []
    for fold in range(3):
        cfg = ExperimentConfig().with_overrides(
            [f"data.base={base}", "data.image_size=16", "data.folds=3", f"data.fold={fold}"]
        )
        data = build_run_data(cfg, tmp_path / f"run{fold}")
        tests.extend(data.split["test"])
        assert (tmp_path / f"run{fold}" / "split.json").is_file()
        assert not set(data.split["test"]) & set(data.split["train"] + data.split["val"])
    assert len(tests) == 10 and len(set(tests)) == 10  # the 3 test folds cover the 10 images once
