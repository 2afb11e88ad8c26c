"""fdseg.analysis: analyses of trained runs (Dice vs L_fd correlation; intensity divergences)."""

from __future__ import annotations

from fdseg.analysis.correlation import CANONICAL_LAYERS, dice_vs_fd, fd_layers, linear_fit

__all__ = ["CANONICAL_LAYERS", "dice_vs_fd", "fd_layers", "linear_fit"]
