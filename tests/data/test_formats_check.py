"""check_dataset: clean real data with its quirks reported, and per-file problems on broken copies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures import SHARED_DATA, make_ad_tau, make_busi, make_tnbc, save

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
