"""Per-image plots: Dice vs L_fd (Fig. 1a), Dice histograms (Fig. 2b), paired arrows (Fig. 4)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import ArrayLike, NDArray

from fdseg.viz._common import (
    COLORS,
    figure_of,
    fit_line,
    layer_columns,
    new_figure,
    numeric,
    plain,
    require_columns,
)

__all__ = ["plot_dice_histograms", "plot_dice_vs_fd", "plot_image_panels", "plot_paired_arrows"]


def _layer_names(per_sample: pd.DataFrame, layers: Sequence[str] | None, prefix: str) -> list[str]:
    available = layer_columns(list(per_sample.columns), prefix)
    if layers is None:
        layers = available
    if isinstance(layers, str):
        layers = [layers]
    names = [layer[len(prefix) :] if layer.startswith(prefix) else layer for layer in layers]
    if not names:
        raise ValueError(
            f"no layer to plot: no column starts with {prefix!r}; columns: {list(per_sample.columns)}"
        )
    missing = [n for n in names if n not in available]
    if missing:
        raise KeyError(f"no column(s) {[prefix + m for m in missing]}; available layers: {available}")
    return names


def plot_dice_vs_fd(
    per_sample: pd.DataFrame,
    layers: Sequence[str] | None = None,
    *,
    x: str = "dice",
    prefix: str = "fd/",
    ncols: int = 3,
    title: str | None = None,
) -> Figure:
    """Scatter of per-image L_fd (y) against Dice (x), one panel per layer, with a least-squares line and r.

    The axes are labelled explicitly (x = Dice, y = L_fd), as the released code plots them; the paper's
    Fig. 1a has the labels swapped (method-spec §G20). Rows with NaN are left out of the fit.

    Args:
        per_sample: one row per image with ``x`` and ``f"{prefix}{layer}"`` columns.
        layers: layer names or full column names (default: every column starting with ``prefix``).
        x: the score on the x axis.
        prefix: the L_fd column prefix.
        ncols: panels per row.
        title: optional figure title.

    Returns:
        Figure with one axes per layer; each holds one scatter and, where the fit is defined, one line;
        its title gives the layer, r and n.

    Raises:
        TypeError: ``per_sample`` is not a DataFrame.
        KeyError: ``x`` or a layer column is missing.
        ValueError: no layer, or ``ncols`` < 1.
    """
    require_columns(per_sample, [x], name="per_sample")
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    names = _layer_names(per_sample, layers, prefix)
    cols = min(ncols, len(names))
    rows = math.ceil(len(names) / cols)
    fig = new_figure(3.6 * cols, 3.2 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    xs = numeric(per_sample, x)
    for ax, name in zip(axes, names):
        ys = numeric(per_sample, prefix + name)
        keep = np.isfinite(xs) & np.isfinite(ys)
        ax.scatter(xs[keep], ys[keep], s=14, alpha=0.75, color=COLORS[0])
        slope, intercept, r = fit_line(xs[keep], ys[keep])
        if math.isfinite(slope):
            grid = np.linspace(float(xs[keep].min()), float(xs[keep].max()), 2)
            ax.plot(grid, slope * grid + intercept, color=COLORS[1], linewidth=1.5)
        r_text = "n/a" if math.isnan(r) else f"{r:+.2f}"
        ax.set_title(f"{plain(name)}: r = {r_text}, n = {int(keep.sum())}", fontsize=10)
        ax.set_xlabel(f"{plain(x.capitalize() if x == 'dice' else x)} (per image)")
        ax.set_ylabel(f"L_fd ({plain(name)})")
        ax.grid(alpha=0.3)
    for ax in axes[len(names) :]:
        fig.delaxes(ax)
    if title:
        fig.suptitle(plain(title))
    return fig


def _values(data: pd.DataFrame | ArrayLike, column: str, *, name: str) -> NDArray[np.float64]:
    if isinstance(data, pd.DataFrame):
        require_columns(data, [column], name=name)
        arr = numeric(data, column)
    else:
        arr = np.asarray(data, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def plot_dice_histograms(
    a: pd.DataFrame | ArrayLike,
    b: pd.DataFrame | ArrayLike,
    labels: Sequence[str] = ("without L_fd", "with L_fd"),
    *,
    value: str = "dice",
    fd_layer: str | None = None,
    prefix: str = "fd/",
    bins: int = 20,
    title: str | None = None,
) -> Figure:
    """Overlaid histograms of per-image Dice of two runs (Fig. 2b), optionally with a layer's L_fd.

    Args:
        a: the first run: a per-sample DataFrame (column ``value``) or a 1-D array of values.
        b: the second run, same form.
        labels: legend names of ``a`` and ``b``.
        value: the score column when ``a``/``b`` are DataFrames.
        fd_layer: if given (DataFrames only), a second panel with the histograms of ``f"{prefix}{fd_layer}"``.
        prefix: the L_fd column prefix.
        bins: number of bins, shared by both runs.
        title: optional figure title.

    Returns:
        Figure with 1 axes (2 with ``fd_layer``); each holds one filled histogram per run and a dashed line
        at each run's mean. NaN values are left out; the legend gives each run's n.

    Raises:
        KeyError: a column is missing.
        ValueError: ``labels`` is not 2 names, ``bins`` < 1, ``fd_layer`` given with arrays, a run has no
            finite value.
    """
    if len(labels) != 2:
        raise ValueError(f"labels must name the 2 runs, got {list(labels)}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    panels = [(value, value)]
    if fd_layer is not None:
        if not (isinstance(a, pd.DataFrame) and isinstance(b, pd.DataFrame)):
            raise ValueError("fd_layer needs per-sample DataFrames for a and b, got arrays")
        column = fd_layer if fd_layer.startswith(prefix) else prefix + fd_layer
        panels.append((column, f"L_fd ({column[len(prefix) :]})"))
    fig = new_figure(4.8 * len(panels), 3.6)
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)).ravel()
    for ax, (column, xlabel) in zip(axes, panels):
        va = _values(a, column, name="a")
        vb = _values(b, column, name="b")
        for run, vals in ((labels[0], va), (labels[1], vb)):
            if vals.size == 0:
                raise ValueError(f"run {run!r} has no finite {column!r} value to plot")
        lo = float(min(va.min(), vb.min()))
        hi = float(max(va.max(), vb.max()))
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
        for i, (run, vals) in enumerate(((labels[0], va), (labels[1], vb))):
            color = COLORS[i]
            ax.hist(
                vals,
                bins=edges,
                histtype="stepfilled",
                alpha=0.45,
                color=color,
                label=f"{plain(run)} (n = {vals.size})",
            )
            ax.axvline(float(vals.mean()), color=color, linestyle="--", linewidth=1.2)
        ax.set_xlabel(plain(xlabel.capitalize() if xlabel == "dice" else xlabel) + " per image")
        ax.set_ylabel("images")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(plain(title))
    return fig


def plot_paired_arrows(
    a_df: pd.DataFrame,
    b_df: pd.DataFrame,
    layer: str,
    *,
    labels: Sequence[str] = ("without L_fd", "with L_fd"),
    value: str = "dice",
    prefix: str = "fd/",
    id_col: str = "id",
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """Per-image arrows from (L_fd, Dice) of run ``a`` to (L_fd, Dice) of run ``b``, paired by id (Fig. 4).

    Arrows are green where Dice rose and red where it fell. Images in only one run, or with a NaN, are left
    out; the axes title gives the number of pairs drawn and of ids left out.

    Args:
        a_df: per-sample table of the first run (``id_col``, ``value``, ``f"{prefix}{layer}"``).
        b_df: per-sample table of the second run, same columns.
        layer: the layer (e.g. ``"bottleneck"``) or its full column name.
        labels: names of the two runs.
        value: score column on the y axis.
        prefix: the L_fd column prefix.
        id_col: image id column.
        ax: axes to draw into (default: a new figure).
        title: optional title prefix.

    Returns:
        The Figure: one arrow annotation per paired image (in ``ax.texts``), plus 2 scatters (start, end).

    Raises:
        KeyError: a column is missing.
        ValueError: duplicate ids, or the runs share no id.
    """
    column = layer if layer.startswith(prefix) else prefix + layer
    if len(labels) != 2:
        raise ValueError(f"labels must name the 2 runs, got {list(labels)}")
    frames = []
    for name, frame in (("a_df", a_df), ("b_df", b_df)):
        require_columns(frame, [id_col, value, column], name=name)
        ids = frame[id_col].astype(str)
        if ids.duplicated().any():
            raise ValueError(
                f"{name} has duplicate {id_col!r} values {ids[ids.duplicated()].unique()[:5].tolist()}"
            )
        frames.append(
            pd.DataFrame({"id": ids.to_numpy(), "fd": numeric(frame, column), "v": numeric(frame, value)})
        )
    merged = frames[0].merge(frames[1], on="id", suffixes=("_a", "_b"), how="inner")
    finite = np.isfinite(merged[["fd_a", "v_a", "fd_b", "v_b"]].to_numpy(dtype=np.float64)).all(axis=1)
    merged = merged[finite]
    if merged.empty:
        raise ValueError(f"a_df and b_df share no id with finite {value!r} and {column!r} values")
    left_out = len(set(frames[0]["id"]) | set(frames[1]["id"])) - len(merged)
    if ax is None:
        ax = new_figure(5.5, 4.5).subplots()
    ax.scatter(merged["fd_a"], merged["v_a"], s=16, color=COLORS[7], label=plain(labels[0]), zorder=3)
    ax.scatter(merged["fd_b"], merged["v_b"], s=16, color=COLORS[0], label=plain(labels[1]), zorder=3)
    for row in merged.itertuples(index=False):
        color = COLORS[2] if row.v_b >= row.v_a else COLORS[1]
        ax.annotate(
            "",
            xy=(float(row.fd_b), float(row.v_b)),
            xytext=(float(row.fd_a), float(row.v_a)),
            arrowprops={"arrowstyle": "->", "color": color, "linewidth": 1.0, "shrinkA": 2, "shrinkB": 2},
        )
    name = column[len(prefix) :] if column.startswith(prefix) else column
    ax.set_xlabel(f"L_fd ({plain(name)})")
    ax.set_ylabel(f"{plain(value.capitalize() if value == 'dice' else value)} (per image)")
    head = f"{plain(title)}: " if title else ""
    extra = f", {left_out} unpaired left out" if left_out else ""
    ax.set_title(f"{head}{len(merged)} paired images{extra}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure_of(ax)


def plot_image_panels(
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    predictions: Sequence[Sequence[np.ndarray]],
    *,
    ids: Sequence[str],
    labels: Sequence[str],
    scores: Sequence[Sequence[float]] | None = None,
    title: str | None = None,
) -> Figure:
    """Image, ground truth and each model's prediction, one row per image (e.g. the worst-off images).

    Args:
        images: per row an (H, W, C) uint8 or (H, W) image.
        truths: per row an (H, W) bool mask.
        predictions: per model (column) a list of (H, W) bool masks, one per row.
        ids: image ids (row labels).
        labels: model names (column titles), one per entry of ``predictions``.
        scores: per model a list of per-row scores (e.g. Dice) shown in the panel titles.
        title: figure title.

    Returns:
        The Figure: ``len(ids)`` rows × (2 + number of models) columns, axes off.

    Raises:
        ValueError: lengths that do not match, or no row.
    """
    n = len(ids)
    if n == 0:
        raise ValueError("plot_image_panels needs at least one image")
    if len(images) != n or len(truths) != n or any(len(p) != n for p in predictions):
        raise ValueError("images, truths and every prediction list need one entry per id")
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels for {len(predictions)} prediction columns")
    cols = 2 + len(predictions)
    fig = Figure(figsize=(2.2 * cols, 2.2 * n + (0.4 if title else 0.0)), layout="constrained")
    axes = fig.subplots(n, cols, squeeze=False)
    for r in range(n):
        image = np.asarray(images[r])
        panels: list[tuple[np.ndarray, str, str | None]] = [
            (image, f"{plain(ids[r])}", None),
            (np.asarray(truths[r], dtype=bool), "ground truth", "gray"),
        ]
        for c, label in enumerate(labels):
            score = f" ({scores[c][r]:.3f})" if scores is not None else ""
            panels.append((np.asarray(predictions[c][r], dtype=bool), f"{plain(label)}{score}", "gray"))
        for c, (data, name, cmap) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(data, cmap=cmap, interpolation="nearest")
            ax.set_title(name, fontsize=7)
            ax.set_axis_off()
    if title:
        fig.suptitle(plain(title), fontsize=9)
    return fig
