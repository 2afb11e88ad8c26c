"""TNBC: the 50 real pairs, the official and Kaggle layouts, and broken pairings."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from fixtures import SHARED_DATA, make_tnbc, make_tnbc_kaggle

from fdseg.data.errors import DatasetError, DatasetNotFoundError
from fdseg.data.open import open_dataset

REAL = SHARED_DATA / "tnbc"


@pytest.mark.skipif(not REAL.is_dir(), reason="real TNBC copy not present in ../shared/data/tnbc")
def test_real_tnbc_50_pairs_11_slides_binary_masks() -> None:
    ds = open_dataset(f"tnbc:{REAL}")
    assert len(ds) == 50
    per_slide = {g: sum(r.group == g for r in ds.records) for g in {r.group for r in ds.records}}
    assert dict(sorted(per_slide.items())) == {
        f"Slide_{k:02d}": n for k, n in zip(range(1, 12), [7, 3, 5, 8, 4, 3, 3, 4, 6, 4, 3])
    }
    # Also accepted: the TNBC_NucleiSegmentation folder itself.
    assert [r.id for r in open_dataset(f"tnbc:{REAL / 'TNBC_NucleiSegmentation'}").records] == [
        r.id for r in ds.records
    ]
    modes = {}
    for record in ds.records:
        sample = ds.load_record(record)
        image, mask = sample["image"], sample["mask"]
        assert image.shape == (512, 512, 3) and image.dtype == np.uint8
        assert mask.shape == (512, 512) and mask.dtype == bool and 0 < mask.mean() < 0.5
        assert sample["meta"]["mask_nonbinary_px"] == "0"
        modes[record.id] = sample["meta"]["image_mode"]
    assert sorted(i for i, m in modes.items() if m == "RGB") == ["09_2", "09_3", "09_4"]
    assert sum(m == "RGBA" for m in modes.values()) == 47
    # RGB conversion drops the (opaque) alpha channel and keeps the colour channels as they are.
    from PIL import Image

    rgba = np.asarray(Image.open(ds.by_id("01_1").image))
    assert rgba.shape[2] == 4 and np.array_equal(ds[0]["image"], rgba[..., :3])


def test_official_layout_pairs_by_name_and_ignores_macos_junk(tmp_path: Path) -> None:
    masks = make_tnbc(tmp_path, {"01": 3, "02": 2, "10": 1}, rgb_ids=("02_1",))
    ds = open_dataset(f"tnbc:{tmp_path}")
    assert [r.id for r in ds.records] == ["01_1", "01_2", "01_3", "02_1", "02_2", "10_1"]
    assert [r.group for r in ds.records] == ["Slide_01"] * 3 + ["Slide_02"] * 2 + ["Slide_10"]
    for record in ds.records:
        sample = ds.load_record(record)
        assert np.array_equal(sample["mask"], masks[record.id])
        assert sample["image"].shape == (12, 10, 3)
    assert ds.official_split() is None


def test_kaggle_layout_detects_swapped_folders(tmp_path: Path) -> None:
    for swapped in (False, True):
        root = tmp_path / str(swapped)
        masks = make_tnbc_kaggle(root, swapped=swapped)
        ds = open_dataset(f"tnbc:{root}")
        assert [r.group for r in ds.records] == ["Slide_01", "Slide_01", "Slide_03"]
        assert bool(ds.problems) == swapped
        for record in ds.records:
            sample = ds.load_record(record)
            assert np.array_equal(sample["mask"], masks[record.id]) and sample["image"].std() > 10


def test_missing_mask_and_orphan_mask_name_the_file(tmp_path: Path) -> None:
    make_tnbc(tmp_path, {"01": 2})
    base = tmp_path / "TNBC_NucleiSegmentation"
    (base / "GT_01" / "01_2.png").unlink()
    with pytest.raises(DatasetError, match="image without a mask") as err:
        open_dataset(f"tnbc:{tmp_path}")
    assert err.value.path == base / "Slide_01" / "01_2.png"
    lenient = open_dataset(f"tnbc:{tmp_path}?strict=false")
    assert [r.id for r in lenient.records] == ["01_1"] and len(lenient.problems) == 1
    other = tmp_path / "other"
    make_tnbc(other, {"01": 1})
    orphan = other / "TNBC_NucleiSegmentation" / "GT_01" / "01_9.png"
    shutil.copy(orphan.with_name("01_1.png"), orphan)
    with pytest.raises(DatasetError, match="mask without an image") as err:
        open_dataset(f"tnbc:{other}")
    assert err.value.path == orphan


def test_not_found_and_bad_options(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="Slide_XX"):
        open_dataset(f"tnbc:{tmp_path}")
    make_tnbc(tmp_path, {"01": 1})
    with pytest.raises(ValueError, match="unknown tnbc option"):
        open_dataset(f"tnbc:{tmp_path}?sise=3")
    with pytest.raises(ValueError, match="strict"):
        open_dataset(f"tnbc:{tmp_path}?strict=maybe")
    with pytest.raises(KeyError, match="did you mean 'tnbc'"):
        open_dataset(f"tnbx:{tmp_path}")
