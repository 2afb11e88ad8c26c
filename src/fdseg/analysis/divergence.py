"""Pixel-intensity divergences between a base site and added novel images (method-spec §F3, Tables 2-3).

Protocol (every choice is a parameter and is recorded by :meth:`DivergenceSettings.as_dict`):

1. RGB -> grey with the luminosity weights, 0.299/0.587/0.114 (ITU-R BT.601, what PIL and OpenCV use) by
   default, or 0.21/0.72/0.07; single-channel images are used as they are; no rounding.
2. One 256-bin histogram on [0, 255] (``np.histogram`` edges, equal widths of 255/256) per site and region:
   foreground (mask = 1), background (mask = 0) and overall, pooling every pixel of every image.
3. Each histogram is normalised, ε = 1e-10 is added to every bin and it is normalised again.
4. ``KL(p ‖ q) = Σ p log(p / q)`` with p = base and q = the added novel subset; the Jensen-Shannon
   *distance* ``sqrt(JSD)`` with ``JSD = ½ KL(p ‖ m) + ½ KL(q ‖ m)``, ``m = (p + q)/2``; natural logs.

This module works on arrays only; which images form the base training set and the novel subsets (the same
rule as training) is decided by the caller (``fdseg divergence``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "GREY_WEIGHTS",
    "REGIONS",
    "DivergenceSettings",
    "IntensityHistograms",
    "divergence_row",
    "format_divergence_table",
    "js_distance",
    "kl_divergence",
    "smooth_histogram",
    "to_grey",
]

#: Named RGB -> grey weights: ``bt601`` (0.299/0.587/0.114, default) and ``luminosity`` (0.21/0.72/0.07).
GREY_WEIGHTS: Mapping[str, tuple[float, float, float]] = {
    "bt601": (0.299, 0.587, 0.114),
    "luminosity": (0.21, 0.72, 0.07),
}
#: Regions of Tables 2-3: foreground, background, every pixel.
REGIONS: tuple[str, ...] = ("fg", "bg", "all")


@dataclass(frozen=True)
class DivergenceSettings:
    """The choices of §F3 that the paper leaves open.

    Attributes:
        grey: a key of :data:`GREY_WEIGHTS`.
        bins: histogram bins on ``value_range``.
        value_range: the histogram range (grey levels of uint8 images).
        eps: added to every normalised bin before renormalising.
    """

    grey: str = "bt601"
    bins: int = 256
    value_range: tuple[float, float] = (0.0, 255.0)
    eps: float = 1e-10

    def __post_init__(self) -> None:
        if self.grey not in GREY_WEIGHTS:
            raise ValueError(f"unknown grey conversion {self.grey!r}; valid: {sorted(GREY_WEIGHTS)}")
        if self.bins < 1:
            raise ValueError(f"bins must be >= 1, got {self.bins}")
        if not self.value_range[0] < self.value_range[1]:
            raise ValueError(f"value_range must be (low, high) with low < high, got {self.value_range}")
        if not self.eps >= 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")

    def as_dict(self) -> dict[str, Any]:
        """Everything needed to reproduce the numbers (written into the JSON output)."""
        return {
            "grey": self.grey,
            "grey_weights": list(GREY_WEIGHTS[self.grey]),
            "bins": self.bins,
            "range": list(self.value_range),
            "binning": "numpy.histogram, equal-width bins, last bin closed",
            "eps": self.eps,
            "eps_rule": "normalise, add eps to every bin, normalise again",
            "kl": "KL(base || novel) = sum p log(p/q), natural log",
            "js": "Jensen-Shannon distance sqrt(JSD), natural log",
        }


def to_grey(image: NDArray[Any], weights: Sequence[float] = GREY_WEIGHTS["bt601"]) -> NDArray[np.float64]:
    """Grey levels of an image.

    Args:
        image: (H, W, 3) RGB or (H, W) / (H, W, 1) single channel; uint8 (or any real dtype, used as is).
            A 4th (alpha) channel is dropped.
        weights: the R, G, B weights.

    Returns:
        (H, W) float64, ``Σ_c w_c I_c`` (no rounding).

    Raises:
        ValueError: an image that is neither (H, W) nor (H, W, C) with C in 1, 3, 4.
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        return arr.astype(np.float64)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must be (H, W) or (H, W, 1|3|4), got shape {arr.shape}")
    if arr.shape[2] == 1:
        return arr[..., 0].astype(np.float64)
    rgb = arr[..., :3].astype(np.float64)
    w = np.asarray(weights, dtype=np.float64)
    return np.asarray(rgb @ w, dtype=np.float64)


@dataclass
class IntensityHistograms:
    """Pooled grey-level histograms (counts) of one set of images, per region.

    Example:
        >>> h = IntensityHistograms()
        >>> h.add(np.full((2, 2, 3), 255, np.uint8), np.array([[1, 0], [0, 0]], bool))
        >>> int(h.counts["fg"].sum()), int(h.counts["bg"].sum()), h.images
        (1, 3, 1)
    """

    settings: DivergenceSettings = field(default_factory=DivergenceSettings)
    counts: dict[str, NDArray[np.int64]] = field(default_factory=dict)
    images: int = 0

    def __post_init__(self) -> None:
        for region in REGIONS:
            self.counts.setdefault(region, np.zeros(self.settings.bins, dtype=np.int64))

    def add(self, image: NDArray[Any], mask: NDArray[Any]) -> None:
        """Add one image and its (H, W) binary mask (nonzero = foreground).

        Raises:
            ValueError: the mask's (H, W) differs from the image's.
        """
        grey = to_grey(image, GREY_WEIGHTS[self.settings.grey])
        fg = np.asarray(mask).astype(bool)
        if fg.ndim == 3 and fg.shape[2] == 1:
            fg = fg[..., 0]
        if fg.shape != grey.shape:
            raise ValueError(f"mask of shape {fg.shape} does not match the image's {grey.shape}")
        for region, values in (("fg", grey[fg]), ("bg", grey[~fg]), ("all", grey.ravel())):
            hist, _ = np.histogram(values, bins=self.settings.bins, range=self.settings.value_range)
            self.counts[region] += hist.astype(np.int64)
        self.images += 1

    def extend(self, pairs: Iterable[tuple[NDArray[Any], NDArray[Any]]]) -> IntensityHistograms:
        """Add every ``(image, mask)``; returns ``self``."""
        for image, mask in pairs:
            self.add(image, mask)
        return self

    def merged(self, other: IntensityHistograms) -> IntensityHistograms:
        """A new set holding both sets' counts (same settings)."""
        if other.settings != self.settings:
            raise ValueError("cannot merge histograms made with different settings")
        out = IntensityHistograms(self.settings)
        for region in REGIONS:
            out.counts[region] = self.counts[region] + other.counts[region]
        out.images = self.images + other.images
        return out


def smooth_histogram(counts: NDArray[Any], eps: float = 1e-10) -> NDArray[np.float64]:
    """Normalise, add ``eps`` to every bin, normalise again.

    Returns:
        float64 probabilities summing to 1; all NaN when ``counts`` is empty (no pixel of that region).
    """
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if total <= 0:
        return np.full(c.shape, np.nan)
    p = c / total + eps
    return np.asarray(p / p.sum(), dtype=np.float64)


def kl_divergence(p: NDArray[Any], q: NDArray[Any]) -> float:
    """``Σ p log(p / q)`` (natural log) of two probability vectors with no zero in ``q``; NaN if either is."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if np.isnan(p).any() or np.isnan(q).any():
        return math.nan
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))


def js_distance(p: NDArray[Any], q: NDArray[Any]) -> float:
    """The Jensen-Shannon distance ``sqrt(½ KL(p ‖ m) + ½ KL(q ‖ m))``, ``m = (p + q)/2``, natural log."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if np.isnan(p).any() or np.isnan(q).any():
        return math.nan
    m = (p + q) / 2
    jsd = 0.5 * kl_divergence(p, m) + 0.5 * kl_divergence(q, m)
    return math.sqrt(max(jsd, 0.0))


def divergence_row(base: IntensityHistograms, novel: IntensityHistograms) -> dict[str, float]:
    """KL(base ‖ novel) and the JS distance per region: ``{"fg_kl", "fg_js", "bg_kl", …, "all_js"}``.

    A region without pixels on either side gives NaN.
    """
    if base.settings != novel.settings:
        raise ValueError("base and novel histograms were made with different settings")
    eps = base.settings.eps
    row: dict[str, float] = {}
    for region in REGIONS:
        p = smooth_histogram(base.counts[region], eps)
        q = smooth_histogram(novel.counts[region], eps)
        row[f"{region}_kl"] = kl_divergence(p, q)
        row[f"{region}_js"] = js_distance(p, q)
    return row


def format_divergence_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Tables 2-3's layout: one line per addition step, FG / BG / overall KL and JS.

    Args:
        rows: dicts with ``"step"`` (a label such as ``"+8 (1/4)"``) and the keys of :func:`divergence_row`.
    """
    header = f"{'step':<16}" + "".join(
        f"{name:>10}" for name in ("FG KL", "FG JS", "BG KL", "BG JS", "All KL", "All JS")
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        cells = "".join(f"{row[f'{r}_{m}']:>10.4f}" for r in REGIONS for m in ("kl", "js"))
        lines.append(f"{row['step']!s:<16}{cells}")
    return "\n".join(lines)
