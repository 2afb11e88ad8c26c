"""AD tau: size/stain options, corner augmentations with their source, split CSVs inside the root only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures import make_ad_tau

from fdseg.data.errors import DatasetNotFoundError, SplitError
from fdseg.data.open import open_dataset
from fdseg.data.splits import make_split


def test_layout_options_and_groups(tmp_path: Path) -> None:
    masks = make_ad_tau(tmp_path)
    ds = open_dataset(f"ad-tau:{tmp_path}")
    assert len(ds) == 12 and all(r.image.parent.name == "macenko" for r in ds.records)
    for record in ds.records:
        sample = ds.load_record(record)
        assert sample["image"].shape == (6, 6, 3) and np.array_equal(sample["mask"], masks[record.id])
        assert record.group == record.meta["wsi"] and record.id.startswith(record.group)
    corner = ds.by_id("old_wsi_00-patch_0000_C2")
    assert corner.meta["source_patch"] == "patch_0000" and corner.meta["corner"] == "C2"
    raw128 = open_dataset(f"ad-tau:{tmp_path / 'dataset'}?size=128&stain=vahadane")
    assert len(raw128) == 12 and raw128.records[0].image.parent.name == "vahadane"
    with pytest.raises(DatasetNotFoundError, match="no 'vahadane' patches at 256x256"):
        open_dataset(f"ad-tau:{tmp_path}?stain=vahadane")
    with pytest.raises(ValueError, match="did you mean 'macenko'"):
        open_dataset(f"ad-tau:{tmp_path}?stain=makenko")
    # A grouped split never separates a corner augmentation from its source patch.
    split = make_split(
        [r.id for r in ds.records], groups=[r.group for r in ds.records], seed=3, test=0.3, val=0.3
    )
    where = {i: name for name in ("train", "val", "test") for i in split[name]}
    for record in ds.records:
        assert where[record.id] == where[f"{record.group}-{record.meta['source_patch']}"]


def test_split_csv_inside_root_only(tmp_path: Path) -> None:
    make_ad_tau(tmp_path)
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "test_00.csv").write_text("wsi\nnew_wsi_01\n")
    ds = open_dataset(f"ad-tau:{tmp_path}?split_csv=splits/test_00.csv")
    assert {r.group: r.split for r in ds.records} == {
        "A1702076 - 2021-07-21 18.41.42": "train",
        "new_wsi_01": "test",
        "old_wsi_00": "train",
    }
    outside = tmp_path.parent / "test_outside.csv"
    outside.write_text("wsi\nnew_wsi_01\n")
    for entry in (str(outside), "../test_outside.csv"):
        with pytest.raises(SplitError, match="outside the dataset root"):
            open_dataset(f"ad-tau:{tmp_path}?split_csv={entry}")
    (tmp_path / "splits" / "test_01.csv").write_text("wsi\nnew_wsi_09\n")
    with pytest.raises(SplitError, match="unknown WSI 'new_wsi_09'"):
        open_dataset(f"ad-tau:{tmp_path}?split_csv=splits/test_01.csv")
    (tmp_path / "splits" / "fold.csv").write_text("wsi\nnew_wsi_01\n")
    with pytest.raises(SplitError, match="must start with train, val or test"):
        open_dataset(f"ad-tau:{tmp_path}?split_csv=splits/fold.csv")
