"""BUSI: natural order, OR-merged multi-masks, the RGBA masks, empty normal masks, class subsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures import make_busi, save

from fdseg.data.errors import DatasetError
from fdseg.data.open import open_dataset


def test_every_quirk(tmp_path: Path) -> None:
    expected = make_busi(tmp_path)
    ds = open_dataset(f"busi:{tmp_path}")
    assert [r.id for r in ds.records] == [
        "benign (1)",
        "benign (2)",
        "benign (10)",
        "malignant (1)",
        "normal (1)",
    ]
    assert [r.meta["n_masks"] for r in ds.records] == ["1", "3", "1", "1", "1"]
    for record in ds.records:
        sample = ds.load_record(record)
        # The RGBA _mask_1 adds only its 4 foreground pixels, not the whole (opaque) image.
        assert np.array_equal(sample["mask"], expected[record.id]), record.id
        assert sample["meta"]["class"] == record.id.split(" ")[0]
        assert sample["meta"]["empty_mask"] == ("true" if record.id == "normal (1)" else "false")
    assert ds[1]["meta"]["mask_mode"] == "1+RGBA" and ds[1]["mask"].sum() == expected["benign (2)"].sum()
    assert ds.official_split() is None and all(r.group is None for r in ds.records)


def test_class_subset_and_channels(tmp_path: Path) -> None:
    make_busi(tmp_path)
    ds = open_dataset(f"busi:{tmp_path / 'Dataset_BUSI_with_GT'}?classes=benign,malignant&channels=1")
    assert [r.meta["class"] for r in ds.records] == ["benign"] * 3 + ["malignant"]
    assert ds[0]["image"].shape == (9, 11, 1)
    with pytest.raises(ValueError, match="did you mean 'benign'"):
        open_dataset(f"busi:{tmp_path}?classes=benin")


def test_orphans_and_mismatched_extra_mask(tmp_path: Path) -> None:
    make_busi(tmp_path)
    folder = tmp_path / "Dataset_BUSI_with_GT" / "benign"
    save(folder / "benign (7)_mask.png", np.zeros((9, 11), np.uint8))
    with pytest.raises(DatasetError, match="mask without an image") as err:
        open_dataset(f"busi:{tmp_path}")
    assert err.value.path == folder / "benign (7)_mask.png"
    (folder / "benign (7)_mask.png").unlink()
    save(folder / "benign (1)_mask_1.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DatasetError, match="mask is 4x4") as err:
        open_dataset(f"busi:{tmp_path}")[0]
    assert err.value.path == folder / "benign (1)_mask_1.png"
