"""Method comparison across conditions: per-seed dots with mean ± sd error bars."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fdseg.viz._common import COLORS, figure_of, new_figure, numeric, plain, require_columns

__all__ = ["plot_method_comparison", "plot_metric_vs_condition", "plot_metric_vs_value"]


def _ordered(values: pd.Series) -> list[str]:
    return list(dict.fromkeys(values.astype(str).tolist()))


def plot_method_comparison(
    results: pd.DataFrame,
    *,
    value: str = "dice",
    method_col: str = "method",
    condition_col: str = "condition",
    seed_col: str = "seed",
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Per-seed values as dots and mean ± sd (ddof=1) as error bars, per method and condition.

    Conditions are on the x axis in order of appearance (a single unnamed category if ``condition_col``
    is absent); methods are offset side by side. The legend gives each method's number of seeds (the range
    over conditions where it differs). NaN values are left out.

    Args:
        results: one row per run with ``method_col``, ``value`` and optionally ``condition_col``/``seed_col``.
        value: the score to plot.
        method_col: method column.
        condition_col: condition column (optional).
        seed_col: seed column (optional; only used to count seeds).
        ax: axes to draw into (default: a new figure).
        title: optional axes title.

    Returns:
        The Figure: one error-bar container and one dot scatter per method.

    Raises:
        TypeError: ``results`` is not a DataFrame.
        KeyError: ``method_col`` or ``value`` is missing.
        ValueError: ``results`` has no finite ``value``.
    """
    require_columns(results, [method_col, value], name="results")
    frame = results.copy()
    frame["_v"] = numeric(frame, value)
    frame = frame[np.isfinite(frame["_v"].to_numpy(dtype=np.float64))]
    if frame.empty:
        raise ValueError(f"results has no finite {value!r} value to plot")
    frame["_m"] = frame[method_col].astype(str)
    frame["_c"] = frame[condition_col].astype(str) if condition_col in frame.columns else ""
    methods = _ordered(frame["_m"])
    conditions = _ordered(frame["_c"])
    if ax is None:
        ax = new_figure(max(5.0, 1.2 * len(conditions) * max(1, len(methods)) ** 0.5 + 3.0), 4.0).subplots()
    width = 0.8 / len(methods)
    rng = np.random.default_rng(0)  # fixed horizontal jitter of the dots, for legibility only
    for j, method in enumerate(methods):
        color = COLORS[j % len(COLORS)]
        part = frame[frame["_m"] == method]
        centers, means, sds, counts = [], [], [], []
        dots_x: list[float] = []
        dots_y: list[float] = []
        for i, condition in enumerate(conditions):
            vals = part.loc[part["_c"] == condition, "_v"].to_numpy(dtype=np.float64)
            if vals.size == 0:
                continue
            center = i - 0.4 + width * (j + 0.5)
            centers.append(center)
            means.append(float(vals.mean()))
            sds.append(float(vals.std(ddof=1)) if vals.size > 1 else 0.0)
            counts.append(int(vals.size))
            dots_x.extend(center + rng.uniform(-width / 6, width / 6, size=vals.size))
            dots_y.extend(vals.tolist())
        n_text = f"n = {counts[0]}" if min(counts) == max(counts) else f"n = {min(counts)}–{max(counts)}"
        ax.errorbar(
            centers,
            means,
            yerr=sds,
            fmt="o",
            markersize=7,
            capsize=4,
            color=color,
            markerfacecolor="white",
            label=f"{plain(method)} (mean ± sd, {n_text} seeds)",
        )
        ax.scatter(dots_x, dots_y, s=12, color=color, alpha=0.8, zorder=3)
    ax.set_xticks(range(len(conditions)))
    ax.set_xticklabels([plain(c) for c in conditions], rotation=20 if len(conditions) > 4 else 0)
    if condition_col in results.columns:
        ax.set_xlabel(plain(condition_col))
    ax.set_ylabel(plain(value))
    if title:
        ax.set_title(plain(title))
    # outside the axes, so that it never covers a dot
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.grid(alpha=0.3, axis="y")
    return figure_of(ax)


def plot_metric_vs_condition(
    curve: pd.DataFrame,
    *,
    labels: dict[str, str] | None = None,
    xlabel: str = "condition",
    ylabel: str = "base-test Dice",
    scale: float = 100.0,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """A metric vs a numeric condition per arm: the mean over seeds as a line, its CI as a band (Fig. 3 / 9).

    Args:
        curve: one row per arm and condition with ``arm``, ``condition``, ``mean``, ``ci_lo``, ``ci_hi`` and
            ``n`` (rows with NaN CI bounds get no band).
        labels: arm -> legend label (default: the arm names).
        xlabel, ylabel: axis labels.
        scale: multiplies every value (100 plots Dice in %).
        ax: axes to draw into (default: a new figure).
        title: optional axes title.

    Returns:
        The Figure: one line per arm (legend ``label (n=seeds)``) and one band per arm with a finite CI.

    Raises:
        KeyError: a required column is missing.
        ValueError: ``curve`` is empty.
    """
    require_columns(curve, ["arm", "condition", "mean", "ci_lo", "ci_hi", "n"], name="curve")
    if curve.empty:
        raise ValueError("curve is empty")
    if ax is None:
        ax = new_figure().subplots()
    fig = figure_of(ax)
    labels = labels or {}
    for i, arm in enumerate(_ordered(curve["arm"])):
        sub = curve[curve["arm"].astype(str) == arm].sort_values("condition")
        x = numeric(sub, "condition")
        color = COLORS[i % len(COLORS)]
        seeds = sorted({int(n) for n in sub["n"]})
        n_text = f"n={seeds[0]}" if len(seeds) == 1 else f"n={seeds[0]}-{seeds[-1]}"
        ax.plot(
            x,
            numeric(sub, "mean") * scale,
            "o-",
            color=color,
            label=f"{plain(labels.get(arm, arm))} ({n_text})",
        )
        lo, hi = numeric(sub, "ci_lo") * scale, numeric(sub, "ci_hi") * scale
        ok = np.isfinite(lo) & np.isfinite(hi)
        if ok.any():
            ax.fill_between(x[ok], lo[ok], hi[ok], color=color, alpha=0.15, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{ylabel} (%)" if scale == 100.0 else ylabel)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(plain(title))
    return fig


def plot_metric_vs_value(
    results: pd.DataFrame,
    *,
    key: str,
    value: str = "dice",
    seed_col: str = "seed",
    ci: float = 0.95,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """A metric against a numeric setting (e.g. λ): per-seed dots, the mean line and a t confidence band.

    Args:
        results: one row per run (or per arm and seed) with ``key`` (numeric) and ``value``.
        key: the swept setting (x axis; log scale when every value is > 0 and they span a factor >= 100).
        value: the score (y axis).
        seed_col: seed column (optional; only counted).
        ci: coverage of the band (Student t over the seeds at each x; no band where there is one seed).
        ax: axes to draw into (default: a new figure).
        title: optional axes title.

    Returns:
        The Figure.

    Raises:
        KeyError: ``key`` or ``value`` is missing. ValueError: no finite (``key``, ``value``) pair.
    """
    from scipy import stats as sps

    require_columns(results, [key, value], name="results")
    x_all = numeric(results, key)
    y_all = numeric(results, value)
    keep = np.isfinite(x_all) & np.isfinite(y_all)
    if not keep.any():
        raise ValueError(f"results has no finite ({key}, {value}) pair to plot")
    x_all, y_all = x_all[keep], y_all[keep]
    xs = np.unique(x_all)
    if ax is None:
        ax = new_figure(6.0, 4.0).subplots()
    means, lo, hi = [], [], []
    for x in xs:
        ys = y_all[x_all == x]
        means.append(float(ys.mean()))
        if ys.size > 1:
            half = float(sps.t.ppf(0.5 + ci / 2, ys.size - 1)) * float(ys.std(ddof=1)) / np.sqrt(ys.size)
        else:
            half = np.nan
        lo.append(means[-1] - half)
        hi.append(means[-1] + half)
    n_seeds = sorted({int((x_all == x).sum()) for x in xs})
    n_text = f"{n_seeds[0]}" if len(n_seeds) == 1 else f"{n_seeds[0]}–{n_seeds[-1]}"
    ax.fill_between(xs, lo, hi, color=COLORS[0], alpha=0.2, label=f"{int(ci * 100)}% t-CI of the mean")
    ax.plot(
        xs, means, "-o", color=COLORS[0], markerfacecolor="white", label=f"mean over seeds (n = {n_text})"
    )
    ax.scatter(x_all, y_all, s=14, color=COLORS[1 % len(COLORS)], alpha=0.8, zorder=3, label="one seed")
    if xs.min() > 0 and xs.max() / xs.min() >= 100:
        ax.set_xscale("log")
    ax.set_xlabel(plain(key))
    ax.set_ylabel(plain(value))
    if title:
        ax.set_title(plain(title))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.grid(alpha=0.3)
    return figure_of(ax)
