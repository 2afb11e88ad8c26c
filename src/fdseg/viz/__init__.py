"""fdseg.viz: pure plotting functions, data in, matplotlib ``Figure`` out (never shown, never saved).

Figures are built without pyplot, so they hold no global state; save one with ``fig.savefig(path)``.
"""

from __future__ import annotations

from fdseg.viz.comparison import plot_method_comparison, plot_metric_vs_value
from fdseg.viz.curves import plot_layer_curves, plot_training_curves
from fdseg.viz.per_sample import (
    plot_dice_histograms,
    plot_dice_vs_fd,
    plot_image_panels,
    plot_paired_arrows,
)
from fdseg.viz.qualitative import (
    activation_map,
    error_masks,
    error_overlay,
    plot_heatmaps,
    plot_overlays,
)

__all__ = [
    "activation_map",
    "error_masks",
    "error_overlay",
    "plot_dice_histograms",
    "plot_dice_vs_fd",
    "plot_heatmaps",
    "plot_image_panels",
    "plot_layer_curves",
    "plot_method_comparison",
    "plot_metric_vs_value",
    "plot_overlays",
    "plot_paired_arrows",
    "plot_training_curves",
]
