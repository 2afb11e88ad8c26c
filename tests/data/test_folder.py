from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures import SHARED_DATA
from PIL import Image

from fdseg.data import DatasetError, DatasetNotFoundError, open_dataset
from fdseg.data.formats.folder import FolderDataset

SHARED = SHARED_DATA


def _write(
    root: Path,
    stem: str,
    *,
    size: tuple[int, int] = (6, 5),
    mask_size: tuple[int, int] | None = None,
    mode: str = "RGB",
    suffix: str = "",
    mask_ext: str = ".png",
    mask_value: int = 255,
) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    h, w = size
    rng = np.random.default_rng(len(stem))
    pixels = rng.integers(0, 256, (h, w, 4 if mode == "RGBA" else 3), dtype=np.uint8)
    image = Image.fromarray(pixels, mode="RGBA" if mode == "RGBA" else "RGB")
    if mode == "L":
        image = image.convert("L")
    image.save(root / "images" / f"{stem}.png")
    mh, mw = mask_size or size
    mask = np.zeros((mh, mw), dtype=np.uint8)
    mask[1:3, 1:4] = mask_value
    Image.fromarray(mask).save(root / "masks" / f"{stem}{suffix}{mask_ext}")


def test_pairs_by_stem_with_suffix_and_natural_order(tmp_path: Path) -> None:
    for stem in ["case 10", "case 2", "case 1"]:
        _write(tmp_path, stem, suffix="_mask")
    ds = open_dataset(f"folder:{tmp_path}?mask_suffix=_mask")
    assert [r.id for r in ds.records] == ["case 1", "case 2", "case 10"]
    sample = ds[1]
    assert sample["image"].shape == (6, 5, 3) and sample["image"].dtype == np.uint8
    assert sample["mask"].dtype == np.bool_ and sample["mask"].sum() == 6
    assert ds.records[1].mask_files[0].name == "case 2_mask.png"
    assert ds.spec.endswith("?mask_suffix=_mask")


def test_grey_and_rgba_become_rgb_and_channels_option(tmp_path: Path) -> None:
    _write(tmp_path, "a", mode="L")
    _write(tmp_path, "b", mode="RGBA")
    ds = open_dataset(f"folder:{tmp_path}")
    grey = ds[0]["image"]
    assert grey.shape == (6, 5, 3) and (grey[..., 0] == grey[..., 2]).all()
    assert ds[1]["image"].shape == (6, 5, 3)
    single = open_dataset(f"folder:{tmp_path}?channels=1")
    assert single[0]["image"].shape == (6, 5, 1)
    np.testing.assert_array_equal(single[0]["image"][..., 0], grey[..., 0])


def test_fg_value_selects_one_label(tmp_path: Path) -> None:
    _write(tmp_path, "a", mask_value=128)
    assert open_dataset(f"folder:{tmp_path}")[0]["mask"].sum() == 6
    assert open_dataset(f"folder:{tmp_path}?fg_value=255")[0]["mask"].sum() == 0
    assert open_dataset(f"folder:{tmp_path}?fg_value=128")[0]["mask"].sum() == 6


def test_group_pattern_and_custom_dirs(tmp_path: Path) -> None:
    for stem in ["03_1", "03_2", "11_1"]:
        _write(tmp_path, stem)
    (tmp_path / "images").rename(tmp_path / "original")
    (tmp_path / "masks").rename(tmp_path / "GT")
    ds = FolderDataset(tmp_path, images_dir="original", masks_dir="GT", group_pattern=r"^(\d+)_")
    assert [r.group for r in ds.records] == ["03", "03", "11"]
    with pytest.raises(ValueError, match="not a regular expression"):
        FolderDataset(tmp_path, images_dir="original", masks_dir="GT", group_pattern="(")


def test_missing_mask_names_the_file(tmp_path: Path) -> None:
    _write(tmp_path, "a")
    _write(tmp_path, "b")
    (tmp_path / "masks" / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"masks/b\.png: missing mask for image .*images/b\.png"):
        open_dataset(f"folder:{tmp_path}")


def test_mask_without_image_names_the_file(tmp_path: Path) -> None:
    _write(tmp_path, "a")
    _write(tmp_path, "b")
    (tmp_path / "images" / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"masks/b\.png: mask without an image"):
        open_dataset(f"folder:{tmp_path}")


def test_size_mismatch_names_the_mask(tmp_path: Path) -> None:
    _write(tmp_path, "a", size=(6, 5), mask_size=(6, 4))
    ds = open_dataset(f"folder:{tmp_path}")
    with pytest.raises(DatasetError, match=r"masks/a\.png: mask size 4x6 differs from image a\.png size 5x6"):
        ds[0]


def test_truncated_image_names_the_file(tmp_path: Path) -> None:
    _write(tmp_path, "a", size=(64, 64))
    path = tmp_path / "images" / "a.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    ds = open_dataset(f"folder:{tmp_path}")
    with pytest.raises(DatasetError, match=r"images/a\.png: cannot decode image \(truncated or corrupt\?\)"):
        ds[0]
    path.write_bytes(b"not an image at all")
    with pytest.raises(DatasetError, match=r"images/a\.png: cannot read image"):
        ds[0]


def test_decompression_bomb_limit_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, "a", size=(40, 40))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    ds = open_dataset(f"folder:{tmp_path}")
    with pytest.raises(DatasetError, match=r"images/a\.png: image is beyond the pixel limit"):
        ds[0]


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "images" / ".DS_Store").write_bytes(b"x")
    with pytest.raises(DatasetError, match=r"images: empty dataset"):
        open_dataset(f"folder:{tmp_path}")
    with pytest.raises(DatasetNotFoundError, match="dataset not found"):
        open_dataset(f"folder:{tmp_path / 'nope'}")
    (tmp_path / "images" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"notes\.txt: not an image file"):
        open_dataset(f"folder:{tmp_path}")


def test_bad_options(tmp_path: Path) -> None:
    _write(tmp_path, "a")
    with pytest.raises(ValueError, match="did you mean 'mask_suffix'"):
        open_dataset(f"folder:{tmp_path}?mask_sufix=_m")
    with pytest.raises(ValueError, match="fg_value must be an integer"):
        open_dataset(f"folder:{tmp_path}?fg_value=white")
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        open_dataset(f"folder:{tmp_path}?channels=2")


def test_real_tnbc_slide_through_folder_layout() -> None:
    slide = SHARED / "tnbc" / "TNBC_NucleiSegmentation"
    if not (slide / "Slide_09").is_dir():
        pytest.skip("real TNBC data not present in ../shared/data")
    ds = FolderDataset(slide, images_dir="Slide_09", masks_dir="GT_09")
    assert [r.id for r in ds.records][:2] == ["09_1", "09_2"]
    sample = ds[1]  # 09_2 is one of the plain-RGB TNBC images; the others are RGBA
    assert sample["image"].shape == (512, 512, 3) and sample["mask"].shape == (512, 512)
    assert 0.004 < sample["mask"].mean() < 0.32  # TNBC foreground fractions are 0.4 %–32 %
