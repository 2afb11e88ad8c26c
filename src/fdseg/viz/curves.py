"""Training curves from a run's ``history.csv``: losses and validation Dice, per-layer L_fd and λ."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from fdseg.viz._common import (
    COLORS,
    PREFIX_LABELS,
    epoch_axis,
    figure_of,
    layer_columns,
    new_figure,
    numeric,
    phase_boundaries,
    plain,
    require_columns,
)

__all__ = ["plot_layer_curves", "plot_training_curves"]

LOSS_COLUMNS: tuple[str, ...] = ("train_loss", "train_seg", "val_loss")
DICE_COLUMNS: tuple[str, ...] = ("val_dice",)


def _mark_phases(ax: Axes, boundaries: list[tuple[float, str]], *, label: bool) -> None:
    for i, (pos, phase) in enumerate(boundaries):
        ax.axvline(
            pos,
            color="0.3",
            linestyle="--",
            linewidth=1.0,
            label=f"phase → {plain(phase)}" if label and i < 3 else None,
        )


def _plot_columns(ax: Axes, history: pd.DataFrame, x: np.ndarray, columns: Sequence[str]) -> int:
    drawn = 0
    for column in columns:
        if column not in history.columns:
            continue
        y = numeric(history, column)
        if np.isnan(y).all():
            continue
        ax.plot(x, y, marker="o", markersize=2.5, linewidth=1.2, label=plain(column))
        drawn += 1
    return drawn


def plot_training_curves(history: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Losses (left) and validation Dice (right) per epoch, with phase boundaries as dashed lines.

    Args:
        history: one row per epoch with ``epoch`` and any of ``train_loss``, ``train_seg``, ``val_loss``
            (left panel) and ``val_dice`` (right panel); an optional ``phase`` column marks where a new
            phase starts. Columns that are absent or all NaN are skipped (a panel with nothing says so).
        title: optional figure title.

    Returns:
        Figure with 2 axes: one line per plotted column plus one dashed line per phase change in each.

    Raises:
        TypeError: ``history`` is not a DataFrame.
        KeyError: no ``epoch`` column.
    """
    require_columns(history, ["epoch"], name="history")
    x = epoch_axis(history)
    boundaries = phase_boundaries(history, x)
    fig = new_figure(10.0, 3.8)
    ax_loss, ax_dice = fig.subplots(1, 2)
    for ax, columns, ylabel in (
        (ax_loss, LOSS_COLUMNS, "loss"),
        (ax_dice, DICE_COLUMNS, "validation Dice"),
    ):
        drawn = _plot_columns(ax, history, x, columns)
        if not drawn:
            ax.text(
                0.5,
                0.5,
                f"no {', '.join(columns)} in history",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
        _mark_phases(ax, boundaries, label=True)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(plain(title))
    return fig


def plot_layer_curves(
    history: pd.DataFrame,
    prefix: str = "fd/",
    *,
    layers: Sequence[str] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """One line per layer of the per-epoch columns ``f"{prefix}{layer}"`` (per-layer L_fd or λ).

    Args:
        history: one row per epoch with ``epoch`` and columns such as ``fd/enc1`` or ``lambda/dec1``.
        prefix: ``"fd/"`` (L_fd), ``"fd_exch/"`` (L_fd^exch) or ``"lambda/"`` (λ), or any column prefix.
        layers: layer names (``"enc1"``) or full column names (``"fd/enc1"``) to draw (default: every column
            with the prefix, in network order); layers whose column is all NaN are skipped.
        ax: axes to draw into (default: a new figure).
        title: optional axes title.

    Returns:
        The Figure: one line per drawn layer plus one dashed line per phase change.

    Raises:
        TypeError: ``history`` is not a DataFrame.
        KeyError: no ``epoch`` column, or a requested layer column is missing.
        ValueError: no column starts with ``prefix``.
    """
    require_columns(history, ["epoch"], name="history")
    available = layer_columns(list(history.columns), prefix)
    if not available:
        raise ValueError(f"history has no column starting with {prefix!r}; columns: {list(history.columns)}")
    if isinstance(layers, str):
        layers = [layers]
    chosen = [layer[len(prefix) :] if layer.startswith(prefix) else layer for layer in layers or available]
    missing = [layer for layer in chosen if layer not in available]
    if missing:
        raise KeyError(
            f"history has no column(s) {[prefix + m for m in missing]}; available layers: {available}"
        )
    x = epoch_axis(history)
    if ax is None:
        ax = new_figure(6.5, 4.0).subplots()
    for i, layer in enumerate(chosen):
        y = numeric(history, prefix + layer)
        if np.isnan(y).all():
            continue
        ax.plot(x, y, color=COLORS[i % len(COLORS)], linewidth=1.3, label=plain(layer))
    _mark_phases(ax, phase_boundaries(history, x), label=True)
    quantity = PREFIX_LABELS.get(prefix, prefix.rstrip("/"))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{plain(quantity)} per layer")
    if title:
        ax.set_title(plain(title))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    return figure_of(ax)
