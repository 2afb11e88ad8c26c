from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from fdseg.analysis import dice_vs_fd, fd_layers


def _table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    dice = rng.uniform(0.5, 0.9, size=12)
    return pd.DataFrame(
        {
            "id": [f"img{i}" for i in range(12)],
            "dice": dice,
            "fd/dec1": 3.0 - 2.0 * dice,  # exact line
            "fd/enc1": rng.normal(size=12),
            "fd/bottleneck": np.full(12, 1.5),  # constant L_fd
        }
    )


def test_exact_line_and_scipy_agreement() -> None:
    df = _table()
    out = dice_vs_fd(df, ["dec1", "fd/enc1"]).set_index("layer")
    assert out.loc["dec1", "slope"] == pytest.approx(-2.0)
    assert out.loc["dec1", "intercept"] == pytest.approx(3.0)
    assert out.loc["dec1", "r"] == pytest.approx(-1.0)
    ref = sps.pearsonr(df["dice"], df["fd/enc1"])
    assert out.loc["enc1", "r"] == pytest.approx(ref.statistic)
    assert out.loc["enc1", "p"] == pytest.approx(ref.pvalue)
    slope, intercept = np.polyfit(df["dice"], df["fd/enc1"], 1)
    assert out.loc["enc1", "slope"] == pytest.approx(slope)
    assert out.loc["enc1", "intercept"] == pytest.approx(intercept)


def test_degenerate_data_gives_nan_not_errors() -> None:
    df = _table()
    out = dice_vs_fd(df).set_index("layer")
    assert list(out.index) == ["enc1", "bottleneck", "dec1"]  # network order
    assert math.isnan(out.loc["bottleneck", "r"]) and out.loc["bottleneck", "slope"] == 0.0
    const_x = df.assign(dice=0.7)
    row = dice_vs_fd(const_x, ["dec1"]).iloc[0]
    assert math.isnan(row["r"]) and math.isnan(row["slope"])
    with_nan = df.copy()
    with_nan.loc[0, "fd/dec1"] = np.nan
    row = dice_vs_fd(with_nan, ["dec1"]).iloc[0]
    assert row["n"] == 11 and row["n_dropped"] == 1 and row["r"] == pytest.approx(-1.0)
    two = dice_vs_fd(df.iloc[:2], ["enc1"]).iloc[0]
    assert math.isnan(two["r"]) and not math.isnan(two["slope"])


def test_errors_name_the_columns() -> None:
    with pytest.raises(KeyError, match=r"fd/dec9.*available layers: \['enc1', 'bottleneck', 'dec1'\]"):
        dice_vs_fd(_table(), ["dec9"])
    with pytest.raises(KeyError, match="no 'iou' column"):
        dice_vs_fd(_table(), x="iou")
    with pytest.raises(ValueError, match="no column starting with 'fd/'"):
        dice_vs_fd(pd.DataFrame({"dice": [0.5]}))
    assert fd_layers(["lambda/dec1", "lambda/enc2", "lambda/x", "dice"], "lambda/") == ["enc2", "dec1", "x"]
