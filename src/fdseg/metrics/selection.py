"""Worst-off / best-off selection of the paper's Table 1 (method-spec §F1 and §G15).

The k images with the lowest (worst-off) and highest (best-off) **baseline** score are chosen once, and both
runs are then compared on exactly those ids. k is capped at ⌊N/2⌋ so that the two sets never overlap, and the
k used, the cap and the threshold (the k-th baseline value) are always returned so they can be reported.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["worst_best_off"]


def _scores(frame: pd.DataFrame, *, name: str, metric: str, id_col: str) -> pd.Series:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in (id_col, metric) if c not in frame.columns]
    if missing:
        raise KeyError(f"{name} has no column(s) {missing}; columns: {list(frame.columns)}")
    ids = frame[id_col].astype(str)
    dup = ids[ids.duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"{name} has duplicate {id_col!r} values {dup[:5]}")
    return pd.Series(pd.to_numeric(frame[metric]).to_numpy(dtype=np.float64), index=ids.to_numpy())


def _group(ids: list[str], base: pd.Series, comp: pd.Series, threshold: float) -> dict[str, Any]:
    b = float(base.loc[ids].mean())
    c = float(comp.loc[ids].mean())
    return {
        "ids": ids,
        "threshold": threshold,
        "baseline_mean": b,
        "compared_mean": c,
        "delta": c - b,
    }


def worst_best_off(
    baseline: pd.DataFrame,
    compared: pd.DataFrame,
    *,
    k: int,
    metric: str = "dice",
    id_col: str = "id",
) -> dict[str, Any]:
    """Select the k lowest and k highest baseline images and compare both runs on the same ids.

    Images whose baseline ``metric`` is NaN (e.g. empty masks under the ``"nan"`` policy) cannot be ranked;
    they are left out and counted in ``n_excluded_nan``. Ties are broken by id so the selection is
    deterministic. Every ranked baseline id must be present in ``compared``.

    Args:
        baseline: per-sample table of the ✗ run with columns ``id_col`` and ``metric``.
        compared: per-sample table of the ✓ run, same columns.
        k: requested number of images per group (>= 1); capped at ⌊N/2⌋ where N is the number of ranked
            baseline images.
        metric: the column to rank and compare (e.g. ``"dice"``).
        id_col: image id column.

    Returns:
        ``{"metric", "k", "k_requested", "capped", "n", "n_excluded_nan", "worst", "best", "all", "table"}``
        where ``worst`` and ``best`` are ``{"ids", "threshold", "baseline_mean", "compared_mean", "delta"}``
        (``threshold`` = the k-th lowest, resp. highest, baseline value; ``delta`` = compared − baseline),
        ``all`` holds the means and delta over all N ranked ids (``threshold`` NaN), and ``table`` is a
        DataFrame ``id, baseline, compared, group`` (group ∈ {"worst", "best", ""}) sorted by baseline.

    Raises:
        TypeError: inputs are not DataFrames, ``k`` is not an int.
        KeyError: a column is missing.
        ValueError: ``k`` < 1, duplicate ids, fewer than 2 ranked images, ids missing from ``compared``.
    """
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    base = _scores(baseline, name="baseline", metric=metric, id_col=id_col)
    comp = _scores(compared, name="compared", metric=metric, id_col=id_col)
    ranked = base[~np.isnan(base.to_numpy())]
    n_excluded = int(base.size - ranked.size)
    n = int(ranked.size)
    if n < 2:
        raise ValueError(
            f"worst/best-off needs at least 2 baseline images with a {metric!r} value, got {n} "
            f"({n_excluded} NaN excluded)"
        )
    absent = sorted(set(ranked.index) - set(comp.index))
    if absent:
        raise ValueError(
            f"{len(absent)} baseline id(s) missing from compared, e.g. {absent[:3]}; both runs must be "
            "evaluated on the same images"
        )
    k_used = min(int(k), n // 2)
    order = sorted(ranked.index, key=lambda i: (float(ranked.loc[i]), i))
    worst = order[:k_used]
    best = order[::-1][:k_used]
    result: dict[str, Any] = {
        "metric": metric,
        "k": k_used,
        "k_requested": int(k),
        "capped": k_used < int(k),
        "n": n,
        "n_excluded_nan": n_excluded,
        "worst": _group(worst, ranked, comp, float(ranked.loc[worst[-1]])),
        "best": _group(best, ranked, comp, float(ranked.loc[best[-1]])),
        "all": _group(order, ranked, comp, math.nan),
    }
    group = {i: "worst" for i in worst} | {i: "best" for i in best}
    result["table"] = pd.DataFrame(
        {
            "id": order,
            "baseline": [float(ranked.loc[i]) for i in order],
            "compared": [float(comp.loc[i]) for i in order],
            "group": [group.get(i, "") for i in order],
        }
    )
    return result
