"""Per-image Dice versus per-layer L_fd: Pearson r, p and a least-squares line (method-spec §F8, Fig. 1a).

The axes follow the released code (method-spec §G20): x = Dice, y = L_fd of one layer, one fit per layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import stats as sps

from fdseg._names import CANONICAL_LAYERS

__all__ = ["CANONICAL_LAYERS", "dice_vs_fd", "fd_layers", "linear_fit"]


def fd_layers(columns: Sequence[str], prefix: str = "fd/") -> list[str]:
    """Layer names of the columns that start with ``prefix``, canonical layers first in network order.

    Args:
        columns: column names, e.g. ``["id", "dice", "fd/dec1", "fd/enc1"]``.
        prefix: column prefix, e.g. ``"fd/"`` or ``"lambda/"``.

    Returns:
        Layer names without the prefix, e.g. ``["enc1", "dec1"]``.
    """
    names = [
        str(c)[len(prefix) :] for c in columns if str(c).startswith(prefix) and len(str(c)) > len(prefix)
    ]
    rank = {name: i for i, name in enumerate(CANONICAL_LAYERS)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def linear_fit(x: NDArray[np.float64], y: NDArray[np.float64]) -> dict[str, float]:
    """Pearson r, two-sided p, and least-squares slope/intercept of y on x, defined for degenerate data.

    Rules: fewer than 2 points, or constant x: every value NaN. Constant y (x not constant): slope 0,
    intercept = y, r and p NaN (correlation undefined). r and p need at least 3 points (with 2 points r is
    ±1 by construction and carries no information), otherwise NaN.

    Args:
        x: (n,) float, finite.
        y: (n,) float, finite, same length.

    Returns:
        ``{"r", "p", "slope", "intercept"}``.
    """
    nan = math.nan
    out = {"r": nan, "p": nan, "slope": nan, "intercept": nan}
    if x.size < 2 or np.ptp(x) == 0:
        return out
    xc = x - x.mean()
    slope = float((xc * (y - y.mean())).sum() / (xc * xc).sum())
    out["slope"] = slope
    out["intercept"] = float(y.mean() - slope * x.mean())
    if np.ptp(y) == 0:
        out["slope"] = 0.0
        out["intercept"] = float(y[0])
        return out
    if x.size >= 3:
        res = sps.pearsonr(x, y)
        out["r"] = float(res.statistic)
        out["p"] = float(res.pvalue)
    return out


def dice_vs_fd(
    per_sample: pd.DataFrame,
    layers: Sequence[str] | None = None,
    *,
    x: str = "dice",
    prefix: str = "fd/",
) -> pd.DataFrame:
    """Correlation of per-image Dice with each layer's L_fd.

    Rows with a NaN in ``x`` or in the layer's column are left out of that layer's fit and counted in
    ``n_dropped``.

    Args:
        per_sample: one row per image with column ``x`` and ``f"{prefix}{layer}"`` per layer (the
            ``test/per_sample.csv`` of a run).
        layers: layer names (``"enc1"``) or full column names (``"fd/enc1"``); ``None`` takes every
            column starting with ``prefix``.
        x: the score column on the x axis.
        prefix: the L_fd column prefix.

    Returns:
        DataFrame with one row per layer: ``layer, n, n_dropped, r, p, slope, intercept`` (slope and
        intercept of L_fd = slope · Dice + intercept); NaN where undefined (see :func:`linear_fit`).

    Raises:
        TypeError: ``per_sample`` is not a DataFrame.
        KeyError: ``x`` or a layer column is missing (the message lists the available layers).
        ValueError: no layer selected.
    """
    if not isinstance(per_sample, pd.DataFrame):
        raise TypeError(f"per_sample must be a pandas DataFrame, got {type(per_sample).__name__}")
    available = fd_layers(list(per_sample.columns), prefix)
    if x not in per_sample.columns:
        raise KeyError(f"per_sample has no {x!r} column; columns: {list(per_sample.columns)}")
    if layers is None:
        layers = available
    if isinstance(layers, str):
        layers = [layers]
    if not layers:
        raise ValueError(f"no layer to correlate: per_sample has no column starting with {prefix!r}")
    names = [layer[len(prefix) :] if layer.startswith(prefix) else layer for layer in layers]
    missing = [n for n in names if f"{prefix}{n}" not in per_sample.columns]
    if missing:
        raise KeyError(
            f"per_sample has no column(s) {[prefix + n for n in missing]}; available layers: {available}"
        )
    xs = pd.to_numeric(per_sample[x]).to_numpy(dtype=np.float64)
    rows = []
    for name in names:
        ys = pd.to_numeric(per_sample[f"{prefix}{name}"]).to_numpy(dtype=np.float64)
        keep = np.isfinite(xs) & np.isfinite(ys)
        fit = linear_fit(xs[keep], ys[keep])
        rows.append({"layer": name, "n": int(keep.sum()), "n_dropped": int((~keep).sum()), **fit})
    return pd.DataFrame(rows, columns=["layer", "n", "n_dropped", "r", "p", "slope", "intercept"])
