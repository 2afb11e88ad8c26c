from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fdseg.data import (
    SourceSplit,
    SplitError,
    check_split,
    load_splits,
    make_split,
    save_splits,
    split_dataset,
)
from fdseg.data.torch_dataset import ArrayDataset

IDS = [f"{i:02d}" for i in range(50)]


def _sizes(split: SourceSplit) -> tuple[int, int, int]:
    return len(split.train), len(split.val_ids), len(split.test_ids)


def test_code_scheme_counts_match_released_code() -> None:
    # method-spec §D3: TNBC 50 -> 36/9/5, UDIAT 163 -> 116/30/17 (train/val/test)
    assert _sizes(make_split(IDS, scheme="code", seed=35)) == (36, 9, 5)
    assert _sizes(make_split([str(i) for i in range(163)], scheme="code", seed=35)) == (116, 30, 17)
    assert _sizes(make_split(IDS, scheme="paper", seed=0)) == (35, 5, 10)
    assert _sizes(make_split(IDS, scheme="code", seed=0, test=0.2, val=0.25)) == (30, 10, 10)


def test_deterministic_disjoint_and_order_independent() -> None:
    a = make_split(IDS, seed=3)
    b = make_split(list(reversed(IDS)), seed=3)
    c = make_split(IDS, seed=4)
    assert a.sets == b.sets
    assert a.sets != c.sets
    sets = [set(a.train), set(a.val_ids), set(a.test_ids)]
    assert sets[0].isdisjoint(sets[1]) and sets[0].isdisjoint(sets[2]) and sets[1].isdisjoint(sets[2])
    assert set().union(*sets) == set(IDS)


def test_groups_never_span_two_sets() -> None:
    # TNBC-like: 11 patients with 7, 3, 5, 8, 4, 3, 3, 4, 6, 4, 3 images
    sizes = [7, 3, 5, 8, 4, 3, 3, 4, 6, 4, 3]
    ids, groups = [], []
    for patient, count in enumerate(sizes, start=1):
        for k in range(1, count + 1):
            ids.append(f"{patient:02d}_{k}")
            groups.append(f"{patient:02d}")
    for seed in range(5):
        split = make_split(ids, groups=groups, seed=seed)
        where = {}
        for name in ("train", "val", "test"):
            for item in split[name]:
                where.setdefault(item.split("_")[0], set()).add(name)
        assert all(len(v) == 1 for v in where.values())
        assert split.grouped and len(split.test_ids) >= 5
    with pytest.raises(SplitError, match="group '01' is in both"):
        check_split(
            SourceSplit(sets={"train": ("01_1",), "val": ("01_2",), "test": ("02_1",)}), ids, groups=groups
        )


def test_official_split_is_honoured() -> None:
    official = {"train": IDS[:40], "test": IDS[40:]}
    split = make_split(IDS, official=official, seed=1, val=0.2)
    assert split.test_ids == tuple(IDS[40:]) and split.official
    assert len(split.val_ids) == 8 and set(split.val_ids) <= set(IDS[:40])
    with pytest.raises(SplitError, match="unknown ids"):
        make_split(IDS, official={"train": IDS, "test": ["zz"]})


def test_empty_set_is_refused_before_training() -> None:
    with pytest.raises(SplitError, match="the 'train' set is empty"):
        make_split(["a", "b"], groups=["g", "g"], seed=0)
    with pytest.raises(ValueError, match="ratio test must be in"):
        make_split(IDS, test=1.5)


def test_save_load_round_trip_and_validation(tmp_path: Path) -> None:
    data = ArrayDataset(np.zeros((50, 2, 2, 3), np.uint8), np.zeros((50, 2, 2), bool), ids=IDS)
    split = split_dataset(data, seed=9, spec="folder:/x")
    path = save_splits(tmp_path / "run" / "split.json", {"base": split})
    assert json.loads(path.read_text())["schema"] == 1
    loaded = load_splits(path)
    assert loaded["base"] == split
    assert make_split(IDS, seed=9, spec="folder:/x") == split  # stable across runs

    bad = SourceSplit(sets={"train": ("00", "nope"), "val": ("01",), "test": ("02",)}, spec="folder:/x")
    with pytest.raises(SplitError, match="set 'train': unknown id 'nope'"):
        check_split(bad, IDS)
    escape = SourceSplit(sets={"train": ("../../etc/passwd",), "val": ("01",), "test": ("02",)})
    with pytest.raises(SplitError, match=r"'\.\./\.\./etc/passwd' is outside the dataset root"):
        check_split(escape, IDS, root=tmp_path)
    overlap = SourceSplit(sets={"train": ("00",), "val": ("00",), "test": ("02",)})
    with pytest.raises(SplitError, match="id '00' is in both 'train' and 'val'"):
        check_split(overlap, IDS)

    (tmp_path / "old.json").write_text(json.dumps({"schema": 0, "sources": {}}))
    with pytest.raises(SplitError, match="split schema 0 is not supported"):
        load_splits(tmp_path / "old.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(SplitError, match=r"broken\.json: unreadable split file"):
        load_splits(tmp_path / "broken.json")
