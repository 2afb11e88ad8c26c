"""``fdseg divergence``: KL / JS of pixel intensities (§F3) against an independent NumPy/SciPy computation."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy

from fdseg.analysis.divergence import (
    DivergenceSettings,
    IntensityHistograms,
    divergence_row,
    js_distance,
    kl_divergence,
    smooth_histogram,
    to_grey,
)
from fdseg.cli import main
from fdseg.data.open import open_dataset
from fdseg.experiments.divergence import SubsetRule, divergence_study

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("FDSEG_SHARED_DATA") or REPO.parent / "shared" / "data")
TNBC = SHARED_DATA / "tnbc" / "TNBC_NucleiSegmentation"
MONUSEG = SHARED_DATA / "monuseg"


def _reference(base: list[tuple[np.ndarray, np.ndarray]], novel: list[tuple[np.ndarray, np.ndarray]],
               weights: tuple[float, float, float], eps: float = 1e-10) -> dict[str, float]:  # fmt: skip
    """Grey levels by hand, bins by floor(v·256/255), KL with scipy.stats.entropy, JS with scipy."""

    def hist(pairs: list[tuple[np.ndarray, np.ndarray]], region: str) -> np.ndarray:
        counts = np.zeros(256)
        for rgb, mask in pairs:
            r, g, b = (rgb[..., c].astype(np.float64) for c in range(3))
            grey = weights[0] * r + weights[1] * g + weights[2] * b
            sel = {"fg": mask, "bg": ~mask, "all": np.ones_like(mask)}[region]
            idx = np.minimum(np.floor(grey[sel] * 256 / 255).astype(int), 255)
            counts += np.bincount(idx, minlength=256)
        p = counts / counts.sum() + eps
        return p / p.sum()

    out = {}
    for region in ("fg", "bg", "all"):
        p, q = hist(base, region), hist(novel, region)
        out[f"{region}_kl"] = float(entropy(p, q))
        out[f"{region}_js"] = float(jensenshannon(p, q))
    return out


def test_closed_form_two_bin_histograms() -> None:
    # p = (3/4, 1/4), q = (1/4, 3/4): KL = ½ log 3, JSD = log 2 - H(½·(p+q)... ) computed by hand
    p, q = np.array([0.75, 0.25]), np.array([0.25, 0.75])
    assert kl_divergence(p, q) == pytest.approx(0.5 * math.log(3))
    m = np.array([0.5, 0.5])
    jsd = 0.5 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5)) * 2
    assert js_distance(p, q) == pytest.approx(math.sqrt(jsd))
    assert js_distance(p, p) == 0.0 and kl_divergence(m, m) == 0.0


def test_smoothing_and_empty_region() -> None:
    p = smooth_histogram(np.array([1, 0, 0, 3]), eps=0.1)
    expected = np.array([0.25, 0.0, 0.0, 0.75]) + 0.1
    assert p == pytest.approx(expected / expected.sum())
    assert np.isnan(smooth_histogram(np.zeros(4))).all()
    h_base, h_novel = IntensityHistograms(), IntensityHistograms()
    h_base.add(np.zeros((2, 2, 3), np.uint8), np.ones((2, 2), bool))
    h_novel.add(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), bool))  # no foreground at all
    row = divergence_row(h_base, h_novel)
    assert math.isnan(row["fg_kl"]) and math.isnan(row["fg_js"]) and math.isnan(row["bg_kl"])
    assert row["all_kl"] == pytest.approx(0.0, abs=1e-12)


def test_grey_weights_and_shapes() -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    assert to_grey(rgb) == pytest.approx(np.array([[0.299, 0.587, 0.114]]) * 255)
    lum = DivergenceSettings(grey="luminosity")
    h = IntensityHistograms(lum)
    h.add(rgb, np.array([[1, 0, 0]], bool))
    assert int(np.argmax(h.counts["fg"])) == int(0.21 * 255 * 256 / 255)
    assert to_grey(np.dstack([rgb, np.full((1, 3, 1), 7, np.uint8)])) == pytest.approx(to_grey(rgb))
    with pytest.raises(ValueError, match="grey"):
        DivergenceSettings(grey="average")
    with pytest.raises(ValueError, match="does not match"):
        h.add(rgb, np.zeros((2, 2), bool))


@pytest.mark.slow
@pytest.mark.skipif(
    not (TNBC.is_dir() and (MONUSEG / "MoNuSeg 2018 Training Data").is_dir()),
    reason=f"real TNBC and MoNuSeg data not found under {SHARED_DATA} (set FDSEG_SHARED_DATA)",
)
def test_real_tnbc_vs_monuseg_matches_an_independent_computation(tmp_path: Path) -> None:
    result = divergence_study(f"tnbc:{TNBC}", f"monuseg:{MONUSEG}", k=[2, 5], rule=SubsetRule())
    meta = result.meta
    assert meta["base_images"] == 36 and meta["novel_pool"] == 5  # code split of 50; 5 training images
    # base: read the TNBC PNGs directly (alpha dropped), masks = GT > 0
    base = []
    for image_id in meta["base_ids"]:
        slide = image_id.split("_")[0]
        rgb = np.asarray(Image.open(TNBC / f"Slide_{slide}" / f"{image_id}.png").convert("RGB"))
        gt = np.asarray(Image.open(TNBC / f"GT_{slide}" / f"{image_id}.png"))
        base.append((rgb, (gt[..., 0] if gt.ndim == 3 else gt) > 0))
    # novel: the .tif read directly; the mask rasterised from the XML by fdseg's MoNuSeg loader
    raw = open_dataset(f"monuseg:{MONUSEG}")
    official = raw.official_split()
    assert official is not None
    novel_ids = sorted(official["train"])
    assert result.rows[1]["novel_ids"] == novel_ids  # all 5, natural order = sorted TCGA ids
    novel = []
    for image_id in novel_ids:
        record = raw.by_id(image_id)
        rgb = np.asarray(Image.open(record.image).convert("RGB"))
        novel.append((rgb, raw.load_record(record)["mask"]))
    for row, n in zip(result.rows, (2, 5)):
        expected = _reference(base, novel[:n], (0.299, 0.587, 0.114))
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (n, key)
    csv_path, json_path = result.write(tmp_path)
    saved = json.loads(json_path.read_text())
    assert saved["settings"]["grey_weights"] == [0.299, 0.587, 0.114] and saved["settings"]["eps"] == 1e-10
    assert saved["settings"]["bins"] == 256 and saved["meta"]["novel_pool_rule"] == "official train split"
    assert csv_path.read_text().splitlines()[0].startswith("step,k,fraction,fg_kl,fg_js")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--k", "6"], "larger than the training pool"),
        (["--k", "-1"], ">= 0"),
        (["--k", "1.5"], "whole numbers"),
        (["--fractions", "0.5,1.5"], r"\[0, 1\]"),
        (["--k", "2", "--fractions", "0.5"], "not both"),
        (["--grey", "mean"], "grey"),
    ],
)
@pytest.mark.skipif(not (MONUSEG / "MoNuSegTestData").is_dir(), reason=f"MoNuSeg not under {SHARED_DATA}")
def test_cli_bad_input_is_one_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = f"synthetic:{tmp_path / 'base'}?family=nuclei&site=base&n=6&seed=0&size=32"
    code = main(["divergence", base, f"monuseg:{MONUSEG}", *args, "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("error:") and len(err.splitlines()) == 1
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "out").exists()


def test_cli_novel_without_training_part(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not (MONUSEG / "MoNuSegTestData").is_dir():
        pytest.skip(f"MoNuSeg not under {SHARED_DATA}")
    base = f"synthetic:{tmp_path / 'base'}?family=nuclei&site=base&n=6&seed=0&size=32"
    code = main(["divergence", base, f"monuseg:{MONUSEG / 'MoNuSegTestData'}", "--k", "1"])
    assert code == 1 and "no training part" in capsys.readouterr().err


def test_cli_on_synthetic_sites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = f"synthetic:{tmp_path / 'b'}?family=nuclei&site=base&n=10&seed=0&size=32"
    novel = f"synthetic:{tmp_path / 'n'}?family=nuclei&site=appear&n=8&seed=1&size=32"
    code = main(["divergence", base, novel, "--fractions", "0.25,0.5,1", "-o", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "+1/4 (k=2)" in out and "+1 (k=8)" in out and "FG KL" in out
    rows = json.loads((tmp_path / "o" / "divergence.json").read_text())["rows"]
    assert [r["k"] for r in rows] == [2, 4, 8]
    assert rows[0]["novel_ids"] == rows[2]["novel_ids"][:2]  # nested subsets
    assert all(r["all_kl"] > 0 for r in rows)
