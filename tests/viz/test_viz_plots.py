from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.text import Annotation

from fdseg.analysis import dice_vs_fd
from fdseg.viz import (
    plot_dice_histograms,
    plot_dice_vs_fd,
    plot_layer_curves,
    plot_method_comparison,
    plot_paired_arrows,
    plot_training_curves,
)

HOSTILE = "$x_1$ <script>alert(1)</script>"


def _history(restart: bool = False) -> pd.DataFrame:
    epochs = list(range(4)) + (list(range(3)) if restart else list(range(4, 7)))
    n = len(epochs)
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "epoch": epochs,
            "phase": [1] * 4 + [2] * 3,
            "step": np.arange(n) * 10,
            "train_loss": np.linspace(1.0, 0.3, n),
            "train_seg": np.linspace(0.9, 0.3, n),
            "val_dice": np.linspace(0.4, 0.8, n),
            "val_loss": np.linspace(1.1, 0.5, n),
            "fd/enc1": [np.nan] * 4 + list(rng.uniform(1, 2, 3)),
            "fd/dec1": [np.nan] * 4 + list(rng.uniform(1, 2, 3)),
            "fd/bottleneck": [np.nan] * 4 + list(rng.uniform(1, 2, 3)),
            "lambda/enc1": [0.0] * 4 + [0.0005, 0.001, 0.001],
            "lambda/dec1": [0.0] * 4 + [0.0005, 0.001, 0.001],
        }
    )


def _per_sample(seed: int, n: int = 15) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dice = rng.uniform(0.4, 0.9, n)
    return pd.DataFrame(
        {
            "id": [f"img{i:02d}" for i in range(n)],
            "source": 0,
            "dice": dice,
            "fd/enc1": 2.0 - dice + rng.normal(0, 0.05, n),
            "fd/bottleneck": rng.normal(1.0, 0.2, n),
            "fd/dec1": 3.0 - 2 * dice,
        }
    )


def _data_lines(ax: object) -> int:
    """Lines that are not the dashed phase markers."""
    return sum(1 for line in ax.lines if line.get_linestyle() != "--")  # type: ignore[attr-defined]


def test_training_curves_axes_lines_and_phase_marker(tmp_path: Path) -> None:
    fig = plot_training_curves(_history(), title=HOSTILE)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    loss_ax, dice_ax = fig.axes
    assert _data_lines(loss_ax) == 3 and _data_lines(dice_ax) == 1
    markers = [line for line in loss_ax.lines if line.get_linestyle() == "--"]
    assert len(markers) == 1 and markers[0].get_xdata()[0] == pytest.approx(3.5)
    fig.savefig(io.BytesIO(), format="png")  # renders with the hostile title (mathtext escaped)
    assert list(tmp_path.iterdir()) == []


def test_training_curves_restarted_epochs_and_missing_columns() -> None:
    fig = plot_training_curves(_history(restart=True)[["epoch", "phase", "train_loss"]])
    loss_ax, dice_ax = fig.axes
    x = loss_ax.lines[0].get_xdata()
    assert list(x) == [0, 1, 2, 3, 4, 5, 6]  # phase 2 restarted at 0 and was shifted
    assert _data_lines(dice_ax) == 0
    assert any("no val_dice" in t.get_text() for t in dice_ax.texts)
    with pytest.raises(KeyError, match="epoch"):
        plot_training_curves(pd.DataFrame({"train_loss": [1.0]}))


def test_layer_curves_one_line_per_layer() -> None:
    fig = plot_layer_curves(_history(), prefix="fd/")
    ax = fig.axes[0]
    assert _data_lines(ax) == 3
    assert [t.get_text() for t in ax.get_legend().get_texts()][:3] == ["enc1", "bottleneck", "dec1"]
    assert ax.get_ylabel() == "L_fd per layer"
    fig = plot_layer_curves(_history(), prefix="lambda/", layers=["lambda/dec1"])
    assert _data_lines(fig.axes[0]) == 1 and fig.axes[0].get_ylabel() == "λ per layer"
    with pytest.raises(ValueError, match="no column starting with 'fd_exch/'"):
        plot_layer_curves(_history(), prefix="fd_exch/")
    with pytest.raises(KeyError, match="available layers"):
        plot_layer_curves(_history(), layers=["dec9"])


def test_layer_curves_draw_into_given_axes() -> None:
    fig = Figure()
    ax = fig.add_subplot(1, 2, 2)
    assert plot_layer_curves(_history(), ax=ax) is fig
    assert len(fig.axes) == 1


def test_dice_vs_fd_panels_fit_and_labels() -> None:
    df = _per_sample(1)
    fig = plot_dice_vs_fd(df, ["enc1", "bottleneck", "dec1", "fd/enc1"], ncols=3)
    assert len(fig.axes) == 4  # unused grid cells removed
    first = fig.axes[0]
    assert first.get_xlabel() == "Dice (per image)" and first.get_ylabel() == "L_fd (enc1)"
    assert len(first.collections) == 1 and len(first.lines) == 1
    r = dice_vs_fd(df, ["enc1", "dec1"]).set_index("layer")["r"]
    assert f"r = {r['enc1']:+.2f}" in first.get_title() and "n = 15" in first.get_title()
    assert "r = -1.00" in fig.axes[2].get_title()
    # the drawn line is the least-squares line of L_fd on Dice
    xs, ys = fig.axes[2].lines[0].get_data()
    np.testing.assert_allclose(ys, 3.0 - 2 * np.asarray(xs), atol=1e-9)
    constant = df.assign(dice=0.5)
    fig = plot_dice_vs_fd(constant, ["enc1"])
    assert len(fig.axes[0].lines) == 0 and "r = n/a" in fig.axes[0].get_title()
    with pytest.raises(KeyError, match="available layers"):
        plot_dice_vs_fd(df, ["dec4"])


def test_method_comparison_dots_and_error_bars() -> None:
    rows = []
    for method, base in (("baseline", 0.7), ("fd", 0.75), (HOSTILE, 0.6)):
        for condition in ("k=0", "k=8"):
            for seed in range(3):
                rows.append(
                    {"method": method, "condition": condition, "seed": seed, "dice": base + 0.01 * seed}
                )
    results = pd.DataFrame(rows)
    fig = plot_method_comparison(results)
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 3
    means = np.asarray(bars[1].lines[0].get_ydata(), dtype=float)
    np.testing.assert_allclose(means, [0.76, 0.76])
    dots = [c for c in ax.collections if c.get_offsets().shape[0] == 6]
    assert len(dots) == 3
    assert [t.get_text() for t in ax.get_xticklabels()] == ["k=0", "k=8"]
    assert "n = 3 seeds" in ax.get_legend().get_texts()[0].get_text()
    fig.savefig(io.BytesIO(), format="png")
    single = plot_method_comparison(results.drop(columns=["condition"]).iloc[:4])
    assert len([c for c in single.axes[0].containers if isinstance(c, ErrorbarContainer)]) == 1
    with pytest.raises(ValueError, match="no finite 'dice'"):
        plot_method_comparison(results.assign(dice=math.nan))


def test_dice_histograms_panels() -> None:
    a, b = _per_sample(1), _per_sample(2)
    fig = plot_dice_histograms(a, b, ["✗", "✓"])
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert len(ax.patches) == 2 and len(ax.lines) == 2
    assert ax.lines[0].get_xdata()[0] == pytest.approx(a["dice"].mean())
    fig2 = plot_dice_histograms(a, b, ["✗", "✓"], fd_layer="bottleneck")
    assert len(fig2.axes) == 2 and fig2.axes[1].get_xlabel() == "L_fd (bottleneck) per image"
    arrays = plot_dice_histograms([0.1, 0.2, math.nan], np.array([0.3, 0.4]), ["a", "b"])
    assert "n = 2" in arrays.axes[0].get_legend().get_texts()[0].get_text()
    with pytest.raises(ValueError, match="needs per-sample DataFrames"):
        plot_dice_histograms([0.1], [0.2], ["a", "b"], fd_layer="enc1")


def test_paired_arrows_one_per_shared_id() -> None:
    a, b = _per_sample(1), _per_sample(2)
    b = b.iloc[2:].sample(frac=1.0, random_state=0)  # 13 shared ids, shuffled order
    fig = plot_paired_arrows(a, b, "bottleneck")
    ax = fig.axes[0]
    arrows = [t for t in ax.texts if isinstance(t, Annotation)]
    assert len(arrows) == 13
    assert "13 paired images, 2 unpaired left out" in ax.get_title()
    assert ax.get_xlabel() == "L_fd (bottleneck)" and ax.get_ylabel() == "Dice (per image)"
    # arrow for img05 goes from a's point to b's point
    target = b.set_index("id").loc["img05"]
    source = a.set_index("id").loc["img05"]
    pairs = {(round(t.xy[0], 9), round(t.xy[1], 9)): t.xyann for t in arrows}
    key = (round(float(target["fd/bottleneck"]), 9), round(float(target["dice"]), 9))
    assert pairs[key] == pytest.approx((float(source["fd/bottleneck"]), float(source["dice"])))
    with pytest.raises(ValueError, match="share no id"):
        plot_paired_arrows(a.iloc[:2], a.iloc[2:4], "enc1")
