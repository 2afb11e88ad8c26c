"""check_dataset: clean real data with its quirks reported, and per-file problems on broken copies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures import SHARED_DATA, make_ad_tau, make_busi, make_monuseg, make_tnbc, save

from fdseg.data.check import check_dataset


@pytest.mark.skipif(not (SHARED_DATA / "tnbc").is_dir(), reason="no real TNBC copy in ../shared/data/tnbc")
def test_real_tnbc_is_clean_and_quirks_reported() -> None:
    report = check_dataset(f"tnbc:{SHARED_DATA / 'tnbc'}", size=512, seed=35)
    assert report.ok and report.n_records == report.n_loaded == 50
    assert report.image_modes == {"RGB": 3, "RGBA": 47} and report.image_sizes == {"512x512": 50}
    assert len(report.groups) == 11 and not report.empty_masks and not report.nonbinary_masks
    assert 0.003 < report.fg_fraction_min < report.fg_fraction_mean < report.fg_fraction_max < 0.33
    assert report.split is not None and sum(report.split.values()) == 50 and "grouped" in report.split_scheme
    alpha = [p for p in report.problems if "opaque alpha" in p.message]
    assert len(alpha) == 47 and all(p.severity == "info" and p.path.suffix == ".png" for p in alpha)
    text = report.to_text()
    assert text.startswith(f"tnbc:{SHARED_DATA / 'tnbc'}: OK") and "RGBA x47" in text
    json.dumps(report.to_dict())


@pytest.mark.skipif(
    not (SHARED_DATA / "monuseg").is_dir(), reason="no real MoNuSeg copy in ../shared/data/monuseg"
)
def test_real_monuseg_training_is_clean_and_quirks_reported() -> None:
    report = check_dataset(f"monuseg:{SHARED_DATA / 'monuseg' / 'MoNuSeg 2018 Training Data'}")
    assert report.ok and report.n_loaded == 5 and report.split == {"train": 3, "val": 1, "test": 1}
    skipped = [p for p in report.problems if "fewer than 3 vertices" in p.message]
    assert len(skipped) == 1 and "TCGA-E2-A1B5" in skipped[0].path.name and "460" in skipped[0].message
    assert any("clipped" in p.message for p in report.problems)


def test_broken_copy_lists_every_file(tmp_path: Path) -> None:
    make_tnbc(tmp_path, {"01": 3, "02": 3, "03": 3})
    base = tmp_path / "TNBC_NucleiSegmentation"
    (base / "GT_01" / "01_3.png").unlink()  # image without mask
    save(base / "GT_02" / "02_7.png", np.zeros((12, 10), np.uint8))  # mask without image
    (base / "Slide_01" / "01_2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # corrupt image
    save(base / "GT_02" / "02_1.png", np.zeros((5, 5), np.uint8))  # size mismatch, empty
    soft = np.zeros((12, 10), np.uint8)
    soft[2:6, 2:6], soft[0, 0] = 255, 128
    save(base / "GT_02" / "02_2.png", soft)  # soft value
    report = check_dataset(f"tnbc:{tmp_path}", size=4)
    assert not report.ok and report.n_records == 8 and report.n_loaded == 6
    errors = {
        p.path.relative_to(base).as_posix(): p.message for p in report.problems if p.severity == "error"
    }
    assert set(errors) == {"Slide_01/01_3.png", "GT_02/02_7.png", "Slide_01/01_2.png", "GT_02/02_1.png"}
    assert "image without a mask" in errors["Slide_01/01_3.png"] and "mask is 5x5" in errors["GT_02/02_1.png"]
    assert report.size_mismatches == 1 and report.nonbinary_masks == {"02_2": 1} and report.split is not None
    assert "NOT OK (4 errors" in report.to_text()


def test_opening_errors_are_reported(tmp_path: Path) -> None:
    report = check_dataset(f"tnbcc:{tmp_path}")
    assert not report.ok and "did you mean 'tnbc'" in report.problems[0].message
    report = check_dataset(f"busi:{tmp_path / 'nowhere'}")
    assert not report.ok and report.problems[0].path == tmp_path / "nowhere"
    make_ad_tau(tmp_path / "ad")
    (tmp_path / "test_00.csv").write_text("wsi\nold_wsi_00\n")
    report = check_dataset(f"ad-tau:{tmp_path / 'ad'}?split_csv=../test_00.csv")
    assert not report.ok and "outside the dataset root" in report.problems[0].message


def test_busi_empty_normal_masks_are_info_and_vanishing_masks_warned(tmp_path: Path) -> None:
    make_busi(tmp_path)
    report = check_dataset(f"busi:{tmp_path}", size=2)
    assert report.ok and report.empty_masks == ["normal (1)"]
    empty = [p for p in report.problems if "empty mask" in p.message]
    assert [p.severity for p in empty] == ["info"] and empty[0].path.name == "normal (1)_mask.png"
    assert report.image_sizes == {"7x5": 1, "9x11": 4}
    assert any("aspect ratio" in p.message for p in report.problems)


def _folder(root: Path, images: dict[str, np.ndarray], masks: dict[str, tuple[np.ndarray, str]]) -> Path:
    """``root/images/<id>.png`` + ``root/masks/<id>.<ext>`` from arrays (``(array, ext)`` per mask)."""
    for stem, image in images.items():
        save(root / "images" / f"{stem}.png", image)
    for stem, (mask, ext) in masks.items():
        save(root / "masks" / f"{stem}.{ext}", mask, **({"quality": 50} if ext == "jpg" else {}))
    return root


def test_no_foreground_anywhere_exits_non_zero_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fdseg.cli import main

    image = np.full((8, 8, 3), 90, np.uint8)
    ids = "abcd"
    root = _folder(tmp_path, dict.fromkeys(ids, image), {k: (np.zeros((8, 8), np.uint8), "png") for k in ids})
    report = check_dataset(f"folder:{root}")
    assert not report.ok and report.empty_masks == list(ids)
    assert main(["data", "check", f"folder:{root}"]) == 1
    out = capsys.readouterr().out
    assert "no mask has any foreground pixel (4 decoded)" in out and "NOT OK (1 errors" in out
    # One mask with one foreground pixel is enough.
    one = np.zeros((8, 8), np.uint8)
    one[3, 3] = 255
    save(root / "masks" / "b.png", one)
    assert main(["data", "check", f"folder:{root}"]) == 0


def test_official_test_only_folder_is_usable_for_testing(tmp_path: Path) -> None:
    make_monuseg(tmp_path, train=(), test=("TCGA-BB-0002-01A", "TCGA-BB-0003-01A"))
    report = check_dataset(f"monuseg:{tmp_path / 'MoNuSegTestData'}")
    assert report.ok and report.split == {"train": 0, "val": 0, "test": 2}
    assert report.split_scheme == "official test set only"
    assert any("usable for testing" in p.message for p in report.problems)
    assert "split (official test set only): train 0, val 0, test 2" in report.to_text()


@pytest.mark.slow
@pytest.mark.skipif(
    not (SHARED_DATA / "monuseg" / "MoNuSegTestData").is_dir(), reason="no real MoNuSegTestData copy"
)
def test_real_monuseg_test_data_is_usable_for_testing() -> None:
    report = check_dataset(f"monuseg:{SHARED_DATA / 'monuseg' / 'MoNuSegTestData'}")
    assert report.ok and report.n_records == report.n_loaded == 14
    assert report.split == {"train": 0, "val": 0, "test": 14}
    assert not any("no usable split" in p.message for p in report.problems)


def test_os_litter_is_skipped_like_dotfiles(tmp_path: Path) -> None:
    mask = np.zeros((6, 6), np.uint8)
    mask[1:3, 1:3] = 255
    ids = "abc"
    image = np.full((6, 6, 3), 50, np.uint8)
    root = _folder(tmp_path, dict.fromkeys(ids, image), {k: (mask, "png") for k in ids})
    for folder in ("images", "masks"):
        (root / folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
        (root / folder / "desktop.ini").write_text("[.ShellClassInfo]\n")
        (root / folder / ".DS_Store").write_bytes(b"\x00")
    report = check_dataset(f"folder:{root}")
    assert report.ok and report.n_records == report.n_loaded == 3 and not report.problems


def test_folder_check_shows_modes_rules_and_soft_jpeg_masks(tmp_path: Path) -> None:
    from PIL import Image

    disc = np.zeros((24, 24), np.uint8)
    rr, cc = np.ogrid[:24, :24]
    disc[(rr - 12) ** 2 + (cc - 10) ** 2 <= 36] = 255
    rgba = np.concatenate([np.full((24, 24, 3), 120, np.uint8), np.full((24, 24, 1), 255, np.uint8)], 2)
    root = _folder(
        tmp_path,
        {"a": rgba, "b": np.full((24, 24), 7, np.uint8), "c": np.full((24, 24, 3), 30, np.uint8)},
        {"a": (disc, "jpg"), "b": (disc, "jpg"), "c": (disc, "png")},
    )
    save(root / "images" / "d.png", np.full((24, 24), 30000, np.uint16))
    palette = Image.fromarray((disc > 0).astype(np.uint8), mode="L").convert("P")
    palette.putpalette([255, 255, 255, 0, 0, 2])
    palette.save(root / "masks" / "d.png")
    report = check_dataset(f"folder:{root}")
    assert report.ok and report.n_loaded == 4
    assert report.image_modes == {"I;16": 1, "L": 1, "RGB": 1, "RGBA": 1}
    assert report.mask_modes == {"L": 3, "P": 1}
    assert report.mask_rules == {
        "value > 0": 1,
        "palette index > 0": 1,
        "value > 127.5 (half range; lossy compression)": 2,
    }
    assert set(report.nonbinary_masks) == {"a", "b"}
    soft = [p for p in report.problems if "lossy-compressed mask (JPEG)" in p.message]
    assert sorted(p.path.name for p in soft) == ["a.jpg", "b.jpg"]
    assert {p.severity for p in soft} == {"warning"}
    infos = {p.message for p in report.problems if p.severity == "info"}
    assert "P mask: foreground is palette index > 0" in infos
    assert "I;16 samples scaled from their format range 0..65535 to 0..255" in infos
    text = report.to_text()
    assert "image file modes: I;16 x1, L x1, RGB x1, RGBA x1" in text
    assert "masks with soft values: 2 (a, b)" in text


def test_full_masks_are_warned(tmp_path: Path) -> None:
    full = np.full((6, 6), 255, np.uint8)
    some = np.zeros((6, 6), np.uint8)
    some[0, 0] = 255
    image = np.full((6, 6, 3), 9, np.uint8)
    root = _folder(tmp_path, {"a": image, "b": image}, {"a": (full, "png"), "b": (some, "png")})
    report = check_dataset(f"folder:{root}")
    full_warned = [p for p in report.problems if "foreground everywhere" in p.message]
    assert [p.path.name for p in full_warned] == ["a.png"] and full_warned[0].severity == "warning"


def test_synthetic_check_reports_decode_metadata(tmp_path: Path) -> None:
    report = check_dataset(f"synthetic:{tmp_path / 's'}?n=3&size=16")
    assert report.ok and report.n_loaded == 3
    assert report.image_modes == {"RGB": 3} and report.mask_modes == {"L": 3}
    assert report.mask_rules == {"value > 0": 3}
