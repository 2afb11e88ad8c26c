from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fdseg.data import DatasetError, open_dataset
from fdseg.data.synthetic import (
    SiteConfig,
    apply_annotation,
    ensure_synthetic,
    generate,
    generate_sample,
    site_names,
    site_preset,
    write_synthetic,
)


def _hist_l1(a: np.ndarray, b: np.ndarray) -> float:
    """L1 distance between normalised 32-bin grey histograms (0 = same, 2 = disjoint)."""
    grey_a, grey_b = a.mean(axis=-1).ravel(), b.mean(axis=-1).ravel()
    ha, _ = np.histogram(grey_a, bins=32, range=(0, 255))
    hb, _ = np.histogram(grey_b, bins=32, range=(0, 255))
    return float(np.abs(ha / ha.sum() - hb / hb.sum()).sum())


@pytest.mark.parametrize("family", ["nuclei", "ultrasound"])
def test_same_seed_same_arrays_other_seed_differs(family: str) -> None:
    a = generate(family, "base", n=4, seed=7, size=48)
    b = generate(family, "base", n=4, seed=7, size=48)
    c = generate(family, "base", n=4, seed=8, size=48)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.masks, c.masks)
    assert a.images.shape == (4, 48, 48, 3) and a.images.dtype == np.uint8
    assert a.masks.dtype == np.bool_
    # each image is drawn from (seed, index) alone: a longer draw starts with the same images
    longer = generate(family, "base", n=6, seed=7, size=48)
    np.testing.assert_array_equal(longer.images[:4], a.images)


def test_nuclei_foreground_fraction_near_calibration() -> None:
    data = generate("nuclei", "base", n=40, seed=0)
    # synthetic-calibration.md §1: foreground fraction 13.6 % for the base site
    assert 0.09 < data.masks.mean() < 0.18
    # touching nuclei exist: some connected components contain more than one nucleus area
    assert data.masks.any(axis=(1, 2)).all()


def test_appearance_site_shifts_intensity_histogram() -> None:
    base = generate("nuclei", "base", n=20, seed=0)
    appear = generate("nuclei", "appear", n=20, seed=0)
    mild = generate("nuclei", "appear_mild", n=20, seed=0)
    other_seed = generate("nuclei", "base", n=20, seed=1)
    d_appear = _hist_l1(base.images, appear.images)
    d_mild = _hist_l1(base.images, mild.images)
    d_seed = _hist_l1(base.images, other_seed.images)
    assert d_appear > 0.5
    assert d_seed < 0.15 < d_mild < d_appear
    # appearance sites keep geometry: same masks for the same seed
    np.testing.assert_array_equal(base.masks, appear.masks)


def test_ultrasound_appearance_site_shifts_histogram() -> None:
    base = generate("ultrasound", "base", n=10, seed=0)
    appear = generate("ultrasound", "appear", n=10, seed=0)
    other_seed = generate("ultrasound", "base", n=10, seed=1)
    assert _hist_l1(base.images, appear.images) > 0.35 > 2 * _hist_l1(base.images, other_seed.images)
    # grey content replicated to RGB; the lesion is darker than its surroundings (hypoechoic)
    assert (base.images[..., 0] == base.images[..., 2]).all()
    grey = base.images[..., 0].astype(float)
    assert grey[base.masks].mean() < 0.7 * grey[~base.masks].mean()


@pytest.mark.parametrize("family", ["nuclei", "ultrasound"])
def test_annotation_sites_change_masks_not_images(family: str) -> None:
    base = generate(family, "base", n=10, seed=3)
    dil2 = generate(family, "dil2", n=10, seed=3)
    ero2 = generate(family, "ero2", n=10, seed=3)
    smooth = generate(family, "smooth2", n=10, seed=3)
    for other in (dil2, ero2, smooth):
        np.testing.assert_array_equal(other.images, base.images)
        np.testing.assert_array_equal(other.true_masks, base.masks)
    assert dil2.masks.sum() > 1.25 * base.masks.sum()
    assert (dil2.masks >= base.masks).all()  # dilation only adds pixels
    assert ero2.masks.sum() < 0.8 * base.masks.sum()
    assert (ero2.masks <= base.masks).all()
    assert smooth.masks.sum() < base.masks.sum()


def test_geometry_site_has_more_foreground() -> None:
    base = generate("nuclei", "base", n=20, seed=0)
    geom = generate("nuclei", "geom", n=20, seed=0)
    # calibration: fg fraction 13.6 % -> 45.7 % for geom
    assert geom.masks.mean() > 2.5 * base.masks.mean()


def test_apply_annotation_closed_form() -> None:
    mask = np.zeros((11, 11), dtype=bool)
    mask[5, 5] = True
    assert apply_annotation(mask, "dilate", 1).sum() == 5  # a radius-1 disk is a plus sign
    assert apply_annotation(mask, "dilate", 2).sum() == 13
    square = np.zeros((11, 11), dtype=bool)
    square[2:9, 2:9] = True
    assert apply_annotation(square, "erode", 1).sum() == 25
    border = np.ones((5, 5), dtype=bool)
    assert apply_annotation(border, "erode", 2).all()  # outside counts as foreground
    with pytest.raises(ValueError, match="unknown annotation style"):
        apply_annotation(mask, "grow", 1)


def test_presets_and_site_errors() -> None:
    assert {"base", "appear", "appear_mild", "geom", "dil1", "dil2", "ero1", "ero2", "smooth2"} <= set(
        site_names("nuclei")
    )
    assert site_preset("nuclei", "dil2").annotation == "dilate"
    assert site_preset("nuclei", "appear_dil2").h_conc == site_preset("nuclei", "appear").h_conc
    with pytest.raises(ValueError, match="did you mean 'dil2'"):
        site_preset("nuclei", "dill2")
    with pytest.raises(ValueError, match="synthetic family"):
        generate("xray", "base", n=1)
    with pytest.raises(ValueError, match="annotation_amount > 0"):
        SiteConfig(annotation="dilate")
    with pytest.raises(ValueError, match="contrast must be > 0"):
        SiteConfig(contrast=0)
    custom = SiteConfig(noise=0.0, blur=0.0)
    image, _mask, _true = generate_sample("nuclei", custom, seed=0, index=0, size=32, channels=1)
    assert image.shape == (32, 32, 1)


def test_write_and_load_through_folder_path(tmp_path: Path) -> None:
    out = write_synthetic(tmp_path / "syn", "nuclei", "dil2", n=5, seed=2, size=32)
    meta = json.loads((out / "synthetic.json").read_text())
    assert meta["site"] == "dil2" and meta["n"] == 5 and meta["site_config"]["annotation"] == "dilate"
    ds = open_dataset(f"folder:{out}")
    ref = generate("nuclei", "dil2", n=5, seed=2, size=32)
    assert [r.id for r in ds.records] == list(ref.ids)
    for i, sample in enumerate(ds):
        np.testing.assert_array_equal(sample["image"], ref.images[i])  # PNG is lossless
        np.testing.assert_array_equal(sample["mask"], ref.masks[i])
    with pytest.raises(DatasetError, match="refusing to overwrite"):
        write_synthetic(out, "nuclei", "dil2", n=5, seed=2, size=32)


def test_synthetic_spec_generates_once_and_refuses_mismatch(tmp_path: Path) -> None:
    spec = f"synthetic:{tmp_path / 'u'}?family=ultrasound&site=ero1&n=3&seed=1&size=32"
    ds = open_dataset(spec)
    assert len(ds) == 3 and ds.format_name == "synthetic"
    first = ds[0]
    assert first["image"].shape == (32, 32, 3) and first["mask"].dtype == np.bool_
    mtime = (tmp_path / "u" / "images" / "0000.png").stat().st_mtime_ns
    again = open_dataset(spec)  # reused, not rewritten
    assert (tmp_path / "u" / "images" / "0000.png").stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again[0]["image"], first["image"])
    with pytest.raises(DatasetError, match=r"synthetic\.json: describes another generation .*seed: found 1"):
        open_dataset(f"synthetic:{tmp_path / 'u'}?family=ultrasound&site=ero1&n=3&seed=2&size=32")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DatasetError, match="not written by write_synthetic"):
        ensure_synthetic(tmp_path / "plain")
    with pytest.raises(ValueError, match="unknown synthetic option"):
        open_dataset(f"synthetic:{tmp_path / 'v'}?sites=base")
