from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures import SHARED_DATA

from fdseg.data import (
    SourceSplit,
    SplitError,
    check_split,
    load_splits,
    make_split,
    open_dataset,
    save_splits,
    split_dataset,
)
from fdseg.data.base import RawDataset
from fdseg.data.torch_dataset import ArrayDataset

IDS = [f"{i:02d}" for i in range(50)]


#: TNBC's slides: 11 groups of 7, 3, 5, 8, 4, 3, 3, 4, 6, 4, 3 images (50 in all).
TNBC_SIZES = [7, 3, 5, 8, 4, 3, 3, 4, 6, 4, 3]


def _sizes(split: SourceSplit) -> tuple[int, int, int]:
    return len(split.train), len(split.val_ids), len(split.test_ids)


def _grouped_ids(sizes: list[int]) -> tuple[list[str], list[str]]:
    """Ids ``"<group>_<k>"`` and their groups, ``sizes[g]`` ids in group ``g + 1``."""
    ids, groups = [], []
    for group, count in enumerate(sizes, start=1):
        for k in range(1, count + 1):
            ids.append(f"{group:02d}_{k}")
            groups.append(f"{group:02d}")
    return ids, groups


def _set_of_group(split: SourceSplit, ids: list[str], groups: list[str | None]) -> dict[str, set[str]]:
    """Group -> the sets its ids are in."""
    where_id = {item: name for name in ("train", "val", "test") for item in split[name]}
    out: dict[str, set[str]] = {}
    for item, group in zip(ids, groups):
        out.setdefault(str(group), set()).add(where_id[item])
    return out


class _RecordView:
    """The ids, groups and official split of a dataset on disk, without decoding its images."""

    def __init__(self, dataset: RawDataset) -> None:
        self.dataset = dataset

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.dataset.records]

    @property
    def groups(self) -> list[str | None]:
        return [r.group for r in self.dataset.records]

    def official_split(self) -> dict[str, list[str]] | None:
        return self.dataset.official_split()


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
    ids, groups = _grouped_ids(TNBC_SIZES)
    for seed in range(5):
        split = make_split(ids, groups=groups, seed=seed)
        assert all(len(v) == 1 for v in _set_of_group(split, ids, groups).values())
        assert split.grouped
    with pytest.raises(SplitError, match="group '01' is in both"):
        check_split(
            SourceSplit(sets={"train": ("01_1",), "val": ("01_2",), "test": ("02_1",)}), ids, groups=groups
        )


def test_grouped_sets_land_within_one_group_of_their_targets() -> None:
    # code scheme on 50 ids: test target 5, val target 9; a group joins a set only if it brings it closer,
    # so a set ends less than one group over its target and at most half a group under it.
    ids, groups = _grouped_ids(TNBC_SIZES)
    largest = max(TNBC_SIZES)
    drawn = set()
    deviations = []
    for seed in range(51):
        split = make_split(ids, groups=groups, scheme="code", seed=seed)
        n_train, n_val, n_test = _sizes(split)
        drawn.add((n_train, n_val, n_test))
        deviations.append(abs(n_train - 36) + abs(n_val - 9) + abs(n_test - 5))
        for n, target in ((n_test, 5), (n_val, 9)):
            assert target - largest / 2 <= n < target + largest, (seed, n, target)
        assert min(n_train, n_val, n_test) > 0 and n_train + n_val + n_test == 50
        assert all(len(v) == 1 for v in _set_of_group(split, ids, groups).values())
    assert len(drawn) > 3  # the seed still matters
    # filling each set until it reaches its target (a whole slide over) was off by 10.8 images on average
    assert np.mean(deviations) < largest / 2


def test_grouped_split_skips_groups_that_overshoot() -> None:
    # one group of 8 and ten singletons (18 ids): targets test 2, val 4; the 8 brings neither closer,
    # so for every seed it is in train and test/val get exactly 2/4 singletons.
    ids, groups = _grouped_ids([8] + [1] * 10)
    for seed in range(20):
        split = make_split(ids, groups=groups, seed=seed)
        assert _sizes(split) == (12, 4, 2)
        assert {f"01_{k}" for k in range(1, 9)} <= set(split.train)


def test_grouped_split_never_leaves_a_set_empty() -> None:
    # every group is at least twice the test target: test still gets one (the smallest), and the sets
    # after it keep one group each.
    ids, groups = _grouped_ids([4, 4, 4, 4])  # targets test 2, val 3
    assert {_sizes(make_split(ids, groups=groups, seed=seed)) for seed in range(10)} == {(8, 4, 4)}
    ids, groups = _grouped_ids([5, 5, 5])  # targets test 2, val 3: one group each
    assert {_sizes(make_split(ids, groups=groups, seed=seed)) for seed in range(10)} == {(5, 5, 5)}
    ids, groups = _grouped_ids([9, 4, 12])  # the smallest group goes to test
    for seed in range(10):
        split = make_split(ids, groups=groups, seed=seed)
        assert set(split.test_ids) == {f"02_{k}" for k in range(1, 5)} and split.val_ids and split.train


def test_real_tnbc_code_split_is_close_to_36_9_5() -> None:
    root = SHARED_DATA / "tnbc"
    if not root.is_dir():
        pytest.skip(f"real TNBC data not found at {root}")
    data = _RecordView(open_dataset(f"tnbc:{root}"))
    ids, groups = data.ids, data.groups
    assert len(ids) == 50 and len(set(groups)) == 11
    split = split_dataset(data, scheme="code", seed=35)
    assert split.grouped and not split.official
    for n, target in zip(_sizes(split), (36, 9, 5)):
        assert abs(n - target) <= 4, (_sizes(split), (36, 9, 5))
    assert all(len(v) == 1 for v in _set_of_group(split, ids, groups).values())


def test_official_split_is_honoured() -> None:
    official = {"train": IDS[:40], "test": IDS[40:]}
    split = make_split(IDS, official=official, seed=1, val=0.2)
    assert split.test_ids == tuple(IDS[40:]) and split.official
    assert len(split.val_ids) == 8 and set(split.val_ids) <= set(IDS[:40])
    with pytest.raises(SplitError, match="unknown ids"):
        make_split(IDS, official={"train": IDS, "test": ["zz"]})


def test_official_split_without_test_is_drawn_like_no_official_split() -> None:
    # e.g. MoNuSeg's training folder alone: every record is official "train", no test set
    for seed in (0, 35):
        split = make_split(IDS, groups=IDS, official={"train": IDS}, seed=seed)
        assert split.sets == make_split(IDS, groups=IDS, seed=seed).sets
        assert _sizes(split) == (36, 9, 5) and not split.official
    ids, groups = _grouped_ids(TNBC_SIZES)
    split = make_split(ids, groups=groups, official={"train": ids}, seed=35)
    assert split.sets == make_split(ids, groups=groups, seed=35).sets
    # an official val but no test: val is kept, test is drawn from the rest with the scheme's ratio
    split = make_split(IDS, official={"train": IDS[:44], "val": IDS[44:]}, seed=2)
    assert split.val_ids == tuple(IDS[44:]) and split.official
    assert len(split.test_ids) == 5 and set(split.test_ids) <= set(IDS[:44])


def test_real_monuseg_training_folder_alone_splits() -> None:
    root = SHARED_DATA / "monuseg" / "MoNuSeg 2018 Training Data"
    if not root.is_dir():
        pytest.skip(f"real MoNuSeg training data not found at {root}")
    data = _RecordView(open_dataset(f"monuseg:{root}"))
    assert len(data.ids) == 5 and data.official_split() == {"train": data.ids}
    split = split_dataset(data, scheme="code", seed=0)
    assert _sizes(split) == (3, 1, 1) and not split.official  # test ⌈0.5⌉ = 1, val ⌈0.2·4⌉ = 1
    assert set(split.train) | set(split.val_ids) | set(split.test_ids) == set(data.ids)


def test_empty_set_is_refused_before_training() -> None:
    with pytest.raises(SplitError, match=r"2 items in 1 group\(s\) cannot fill the train, test, val sets"):
        make_split(["a", "b"], groups=["g", "g"], seed=0)
    with pytest.raises(SplitError, match=r"1 items in 1 group\(s\) cannot fill the train, val sets"):
        make_split(["a", "b"], official={"train": ["a"], "test": ["b"]})
    with pytest.raises(SplitError, match="the 'train' set is empty"):
        check_split(SourceSplit(sets={"train": (), "val": ("a",), "test": ("b",)}), ["a", "b"])
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
