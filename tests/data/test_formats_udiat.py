"""UDIAT Dataset B: ids from the listing, 1-bit and L masks, xlsx labels with and without openpyxl."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures import make_udiat, save

from fdseg.data.errors import DatasetError
from fdseg.data.open import open_dataset


def test_ids_from_listing_and_masks(tmp_path: Path) -> None:
    masks = make_udiat(tmp_path, xlsx=False)
    for root in (tmp_path, tmp_path / "BUS"):
        ds = open_dataset(f"udiat:{root}")
        assert [r.id for r in ds.records] == ["000001", "000004", "000310"]
    modes = []
    for record in ds.records:
        sample = ds.load_record(record)
        assert np.array_equal(sample["mask"], masks[record.id])
        assert sample["image"].shape == (*masks[record.id].shape, 3)
        assert np.array_equal(sample["image"][..., 0], sample["image"][..., 2])
        modes.append(sample["meta"]["mask_mode"])
    assert modes == ["1", "L", "1"]
    grey = open_dataset(f"udiat:{tmp_path}?channels=1")[0]["image"]
    assert grey.shape == (9, 13, 1)
    with pytest.raises(ValueError, match="channels"):
        open_dataset(f"udiat:{tmp_path}?channels=2")


def test_labels_from_xlsx(tmp_path: Path) -> None:
    pytest.importorskip("openpyxl", reason="openpyxl (the [xlsx] extra) is not installed")
    make_udiat(tmp_path, xlsx=True)
    ds = open_dataset(f"udiat:{tmp_path}")
    assert [dict(r.meta) for r in ds.records] == [
        {"class": "benign", "diagnosis": "CYST"},
        {"class": "malignant", "diagnosis": "IDC"},
        {"class": "benign", "diagnosis": "FA"},  # the id 310 stored as a number
    ]
    assert [p.message for p in ds.problems] == ["1 label rows without an image: ['000999']"]


def test_missing_openpyxl_warns_and_reads_no_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_udiat(tmp_path, xlsx=False)
    (tmp_path / "BUS" / "DatasetB.xlsx").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "openpyxl", None)
    ds = open_dataset(f"udiat:{tmp_path}")
    assert len(ds) == 3 and all(not r.meta for r in ds.records)
    assert [(p.severity, "openpyxl is not installed" in p.message) for p in ds.problems] == [
        ("warning", True)
    ]


def test_kaggle_layouts(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "UDIAT_Dataset_B" / "UDIAT_Dataset_B"
    rng = np.random.default_rng(0)
    mask = np.zeros((5, 6), bool)
    mask[1:3, 2:5] = True
    save(nested / "original" / "000007.png", rng.integers(0, 255, (5, 6), dtype=np.uint8))
    save(nested / "GT" / "000007.png", mask.astype(np.uint8) * 255)
    assert open_dataset(f"udiat:{tmp_path / 'a'}").records[0].id == "000007"
    flat = tmp_path / "b" / "udiat-updated"
    save(flat / "000002_Malignant_image.png", rng.integers(0, 255, (5, 6), dtype=np.uint8))
    save(flat / "000002_Malignant_mask.png", mask.astype(np.uint8) * 255)
    ds = open_dataset(f"udiat:{tmp_path / 'b'}")
    assert [(r.id, r.meta["class"]) for r in ds.records] == [("000002", "malignant")]
    assert np.array_equal(ds[0]["mask"], mask)


def test_unpaired_and_size_mismatch(tmp_path: Path) -> None:
    make_udiat(tmp_path, xlsx=False)
    (tmp_path / "BUS" / "GT" / "000004.png").unlink()
    with pytest.raises(DatasetError, match="image without a mask") as err:
        open_dataset(f"udiat:{tmp_path}")
    assert err.value.path.name == "000004.png"
    save(tmp_path / "BUS" / "GT" / "000004.png", np.zeros((3, 3), np.uint8))
    ds = open_dataset(f"udiat:{tmp_path}")
    with pytest.raises(DatasetError, match="mask is 3x3") as err:
        ds[1]
    assert err.value.path == tmp_path / "BUS" / "GT" / "000004.png"
