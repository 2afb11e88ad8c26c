"""Shared helpers of the plotting functions: figures without pyplot, safe text, layer order, epoch axis."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from numpy.typing import NDArray

from fdseg._names import CANONICAL_LAYERS

PREFIX_LABELS: dict[str, str] = {
    "fd/": "L_fd",
    "fd_exch/": "L_fd^exch",
    "lambda/": "λ",
}

COLORS: tuple[str, ...] = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def new_figure(width: float = 6.0, height: float = 4.0) -> Figure:
    """A standalone Agg-renderable Figure (no pyplot state, nothing shown or saved)."""
    return Figure(figsize=(width, height), layout="constrained")


def figure_of(ax: Axes) -> Figure:
    """The top-level Figure that holds ``ax``."""
    fig = ax.get_figure()
    while isinstance(fig, SubFigure):
        fig = fig.get_figure()
    if not isinstance(fig, Figure):
        raise ValueError("ax is not attached to a matplotlib Figure")
    return fig


def plain(text: object) -> str:
    """``text`` as a string that matplotlib draws literally (``$`` would start mathtext)."""
    return str(text).replace("$", r"\$")


def layer_columns(columns: Sequence[object], prefix: str) -> list[str]:
    """Layer names of the columns starting with ``prefix``, canonical layers first in network order."""
    cut = len(prefix)
    names = [str(c)[cut:] for c in columns if str(c).startswith(prefix) and len(str(c)) > cut]
    rank = {name: i for i, name in enumerate(CANONICAL_LAYERS)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def require_columns(frame: pd.DataFrame, columns: Sequence[str], *, name: str) -> None:
    """Raise ``TypeError``/``KeyError`` unless ``frame`` is a DataFrame holding ``columns``."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"{name} has no column(s) {missing}; columns: {list(frame.columns)}")


def numeric(frame: pd.DataFrame, column: str) -> NDArray[np.float64]:
    """A column as float64 (non-numbers raise)."""
    return pd.to_numeric(frame[column]).to_numpy(dtype=np.float64)


def epoch_axis(history: pd.DataFrame) -> NDArray[np.float64]:
    """Monotone epoch positions of the history rows.

    Epoch numbers are used as they are; if they restart (e.g. phase 2 counting from 0 again), the later
    rows are shifted so that the axis keeps increasing.
    """
    require_columns(history, ["epoch"], name="history")
    epochs = numeric(history, "epoch")
    x = epochs.copy()
    offset = 0.0
    for i in range(1, x.size):
        if epochs[i] + offset <= x[i - 1]:
            offset = x[i - 1] + 1.0 - epochs[i]
        x[i] = epochs[i] + offset
    return x


def phase_boundaries(history: pd.DataFrame, x: NDArray[np.float64]) -> list[tuple[float, str]]:
    """``(position, new phase)`` half-way between the last row of a phase and the first of the next."""
    if "phase" not in history.columns:
        return []
    phases = history["phase"].astype(str).to_numpy()
    return [
        ((float(x[i - 1]) + float(x[i])) / 2.0, str(phases[i]))
        for i in range(1, phases.size)
        if phases[i] != phases[i - 1]
    ]


def fit_line(x: NDArray[np.float64], y: NDArray[np.float64]) -> tuple[float, float, float]:
    """``(slope, intercept, r)`` of a least-squares line, NaN where undefined (constant x or y, n < 2/3)."""
    nan = float("nan")
    if x.size < 2 or np.ptp(x) == 0:
        return (nan, nan, nan)
    slope, intercept = np.polyfit(x, y, 1)
    r = nan if x.size < 3 or np.ptp(y) == 0 else float(np.corrcoef(x, y)[0, 1])
    return (float(slope), float(intercept), r)
