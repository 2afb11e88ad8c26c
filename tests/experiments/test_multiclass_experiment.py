"""fdseg experiment multiclass at a toy size, and its table / paired tests against SciPy on known numbers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from fdseg.cli import main
from fdseg.experiments.multiclass import (
    default_config,
    format_table7,
    multiclass_runs,
    paired_tests,
    table7,
)


def test_table7_and_paired_tests_on_known_numbers() -> None:
    rows = []
    for seed, (a, b) in enumerate([(0.5, 0.6), (0.4, 0.55), (0.45, 0.5)]):
        rows += [
            {"method": "U-Net", "seed": seed, "class": "background", "dice": 0.9},
            {"method": "U-Net", "seed": seed, "class": "x", "dice": a},
            {"method": "U-Net + L_fd", "seed": seed, "class": "background", "dice": 0.9},
            {"method": "U-Net + L_fd", "seed": seed, "class": "x", "dice": b},
        ]
    frame = pd.DataFrame(rows)
    table = table7(frame, ["background", "x"])
    assert table.loc["U-Net", "x"] == pytest.approx(45.0) and table.loc["U-Net + L_fd", "x"] == pytest.approx(
        55.0
    )
    assert table.loc["U-Net", "x sd"] == pytest.approx(5.0)
    text = format_table7(table)
    assert text.splitlines()[0] == "| Method | Background | X |" and "55.00 ± 5.00" in text
    rng = np.random.default_rng(0)
    a_img, b_img = rng.random(8), rng.random(8)
    per_image = pd.DataFrame(
        [
            {"method": "U-Net", "seed": s, "id": f"i{i}", "class": "x", "dice": a_img[i]}
            for s in range(3)
            for i in range(8)
        ]
        + [
            {"method": "U-Net + L_fd", "seed": s, "id": f"i{i}", "class": "x", "dice": b_img[i]}
            for s in range(3)
            for i in range(8)
        ]
    )
    tests = paired_tests(frame, per_image, ["x"]).iloc[0]
    assert tests["n_images"] == 8 and tests["n_seeds"] == 3
    assert tests["wilcoxon_p"] == pytest.approx(stats.wilcoxon(b_img - a_img).pvalue)
    assert tests["ttest_images_p"] == pytest.approx(stats.ttest_rel(b_img, a_img).pvalue)
    assert tests["ttest_seeds_p"] == pytest.approx(stats.ttest_rel([0.6, 0.55, 0.5], [0.5, 0.4, 0.45]).pvalue)
    assert tests["mean_diff_seeds"] == pytest.approx(10.0)


def test_runs_differ_only_in_the_loss(tmp_path: Path) -> None:
    specs = multiclass_runs(default_config(tmp_path), tmp_path, [0, 1])
    assert [s.name for s in specs] == ["unet_seed0", "unet_fd_seed0", "unet_seed1", "unet_fd_seed1"]
    base, fd = specs[0].config, specs[1].config
    assert (base.loss.fd, base.train.compute_matched, fd.loss.fd, fd.train.compute_matched) == (
        False,
        True,
        True,
        False,
    )
    assert base.data == fd.data and base.model == fd.model and base.train.max_steps == fd.train.max_steps
    with pytest.raises(ValueError, match=r"needs model\.head"):
        multiclass_runs(
            default_config(tmp_path).with_overrides(["model.head=binary", "model.out_channels=1"]),
            tmp_path,
            [0],
        )


@pytest.mark.slow
def test_experiment_multiclass_cli_at_toy_size(tmp_path: Path) -> None:
    cfg = default_config(tmp_path).with_overrides(
        [
            f"data.base=synthetic:{tmp_path / 'data'}?family=nuclei_mc&n=16&seed=0&size=32",
            "data.image_size=32",
            "model.kwargs={base_width: 4, depth: 2}",
            "train.max_steps=4",
            "train.batch_size=4",
        ]
    )
    path = tmp_path / "mc.yaml"
    cfg.to_yaml(path)
    out = tmp_path / "exp"
    assert main(["experiment", "multiclass", "-c", str(path), "--seeds", "1", "-o", str(out)]) == 0
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 2 * 1 * 4  # methods x seeds x classes (background included)
    table = pd.read_csv(out / "table.csv", index_col=0)
    assert list(table.index) == ["U-Net", "U-Net + L_fd"]
    means = results[results["method"] == "U-Net"].groupby("class")["dice"].mean() * 100
    for name, value in means.items():
        assert table.loc["U-Net", name] == pytest.approx(value) or math.isnan(value)
    tests = pd.read_csv(out / "tests.csv")
    assert list(tests["class"]) == ["background", "lymphocyte", "epithelial", "spindle"]
    html = (out / "report.html").read_text()
    assert "Table 7 layout" in html and "seed0_worst_off_overlays" in "".join(
        p.name for p in (out / "figures").iterdir()
    )
