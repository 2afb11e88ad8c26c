"""Qualitative figures (method-spec §D5, §F8): activation heatmaps (Fig. 8) and error overlays (Fig. 6).

The array functions (:func:`activation_map`, :func:`error_masks`, :func:`error_overlay`) compute exactly what
is drawn, so tests can check the pixels; the ``plot_*`` functions lay those arrays out in a ``Figure``.

* Heatmap of a tapped layer: the channel mean of the absolute activation, ``mean_c |F[c]|``, upsampled
  bilinearly to the image size (the released code's "mean over channels", on absolute values so that
  negative post-BN activations do not cancel).
* Overlay of a prediction against the ground truth (binary masks or class maps, 0 = background):
  false positive = predicted foreground whose class is not the ground truth's (for binary masks exactly
  ``pred ∧ ¬GT``), false negative = ground-truth foreground predicted as background (``GT ∧ ¬pred``), true
  positive = foreground of the right class. FP pixels are painted :data:`FP_COLOR`, FN :data:`FN_COLOR`, TP
  :data:`TP_COLOR` (blended with ``tp_alpha``); every other pixel keeps the image's value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from numpy.typing import NDArray

from fdseg.viz._common import new_figure

#: Colours (RGB uint8) of false positives, false negatives and true positives in :func:`error_overlay`.
FP_COLOR: tuple[int, int, int] = (255, 0, 255)
FN_COLOR: tuple[int, int, int] = (0, 200, 255)
TP_COLOR: tuple[int, int, int] = (0, 200, 0)


def activation_map(
    features: NDArray[np.floating] | torch.Tensor, size: tuple[int, int]
) -> NDArray[np.float64]:
    """Channel-mean absolute activation of one feature map, upsampled to ``size``.

    Args:
        features: (C, h, w) float activations of one image.
        size: the image's (H, W).

    Returns:
        (H, W) float64 ``mean_c |F[c]|`` (bilinear, ``align_corners=False``; unchanged at ``(h, w) == size``).

    Raises:
        ValueError: not a (C, h, w) array.
    """
    x = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
    if x.ndim != 3:
        raise ValueError(f"features must be (C, h, w), got shape {tuple(x.shape)}")
    mean = x.detach().double().abs().mean(0)[None, None]
    if tuple(mean.shape[-2:]) != tuple(size):
        mean = F.interpolate(mean, size=tuple(size), mode="bilinear", align_corners=False)
    return mean[0, 0].cpu().numpy()


def error_masks(
    gt: NDArray[np.integer] | NDArray[np.bool_], pred: NDArray[np.integer] | NDArray[np.bool_]
) -> tuple[NDArray[np.bool_], NDArray[np.bool_], NDArray[np.bool_]]:
    """True positives, false positives and false negatives of a prediction (see the module docstring).

    Args:
        gt: (H, W) bool mask or integer class map (0 = background).
        pred: (H, W) of the same kind.

    Returns:
        ``(tp, fp, fn)`` (H, W) bool; they are disjoint.

    Raises:
        ValueError: shapes differ.
    """
    g, p = np.asarray(gt).astype(np.int64), np.asarray(pred).astype(np.int64)
    if g.shape != p.shape or g.ndim != 2:
        raise ValueError(f"gt {g.shape} and pred {p.shape} must be the same (H, W)")
    fp = (p > 0) & (p != g)
    fn = (g > 0) & (p == 0)
    tp = (g > 0) & (p == g)
    return tp, fp, fn


def error_overlay(
    image: NDArray[np.uint8],
    gt: NDArray[np.integer] | NDArray[np.bool_],
    pred: NDArray[np.integer] | NDArray[np.bool_],
    *,
    tp_alpha: float = 0.35,
) -> NDArray[np.uint8]:
    """The image with FP pixels in :data:`FP_COLOR`, FN in :data:`FN_COLOR` and TP tinted :data:`TP_COLOR`.

    Args:
        image: (H, W, 3) or (H, W, 1) uint8.
        gt: (H, W) bool or class map.
        pred: (H, W) bool or class map.
        tp_alpha: blend weight of the TP tint (0 leaves true positives untouched).

    Returns:
        (H, W, 3) uint8.
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    if img.shape[:2] != np.asarray(gt).shape:
        raise ValueError(f"image {img.shape[:2]} and masks {np.asarray(gt).shape} differ in size")
    tp, fp, fn = error_masks(gt, pred)
    out = img.astype(np.float64)
    out[tp] = (1 - tp_alpha) * out[tp] + tp_alpha * np.asarray(TP_COLOR, float)
    drawn: NDArray[np.uint8] = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    drawn[fp] = FP_COLOR
    drawn[fn] = FN_COLOR
    return drawn


def _label_colors(n: int) -> NDArray[np.uint8]:
    palette = np.array(
        [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
         [145, 30, 180], [70, 240, 240], [240, 50, 230]],
        dtype=np.uint8,
    )  # fmt: skip
    return palette[np.arange(n) % len(palette)]


def label_image(labels: NDArray[np.integer] | NDArray[np.bool_], n_labels: int) -> NDArray[np.uint8]:
    """(H, W) labels (0 = background) -> (H, W, 3) uint8 colours (background black)."""
    arr = np.asarray(labels).astype(np.int64)
    return _label_colors(max(n_labels, int(arr.max()) + 1 if arr.size else 1))[arr]


def plot_overlays(
    images: Sequence[NDArray[np.uint8]],
    gts: Sequence[NDArray[np.integer] | NDArray[np.bool_]],
    preds_a: Sequence[NDArray[np.integer] | NDArray[np.bool_]],
    preds_b: Sequence[NDArray[np.integer] | NDArray[np.bool_]] | None = None,
    *,
    ids: Sequence[str] | None = None,
    labels: Sequence[str] = ("A", "B"),
    scores_a: Sequence[float] | None = None,
    scores_b: Sequence[float] | None = None,
    n_labels: int = 2,
) -> Figure:
    """Fig. 6: per image, the image, the ground truth, and the error overlay of A (and B) side by side.

    Returns:
        A Figure with one row per image; the overlay axes hold the :func:`error_overlay` arrays as their
        first image (``ax.images[0].get_array()``).
    """
    n = len(images)
    if not (len(gts) == len(preds_a) == n) or (preds_b is not None and len(preds_b) != n):
        raise ValueError("images, ground truths and predictions must have the same length")
    cols = 3 if preds_b is None else 4
    fig = new_figure(2.2 * cols, 2.2 * max(n, 1) + 0.4)
    axes = fig.subplots(max(n, 1), cols, squeeze=False)
    for i in range(n):
        name = ids[i] if ids is not None else str(i)
        image = np.asarray(images[i])
        rgb = image[..., :3] if image.shape[-1] >= 3 else np.repeat(image, 3, -1)
        panels: list[tuple[NDArray[np.uint8], str]] = [
            (rgb, name),
            (label_image(gts[i], n_labels), "ground truth"),
        ]
        for k, (preds, scores) in enumerate(((preds_a, scores_a), (preds_b, scores_b))):
            if preds is None:
                continue
            score = "" if scores is None else f" (Dice {scores[i]:.3f})"
            panels.append((error_overlay(images[i], gts[i], preds[i]), f"{labels[k]}{score}"))
        for ax, (array, title) in zip(axes[i], panels):
            ax.imshow(array, interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.set_axis_off()
    fig.suptitle("magenta: false positive, cyan: false negative, green: true positive", fontsize=9)
    return fig


def plot_heatmaps(
    images: Sequence[NDArray[np.uint8]],
    maps_a: Mapping[str, Sequence[NDArray[np.floating]]],
    maps_b: Mapping[str, Sequence[NDArray[np.floating]]] | None = None,
    *,
    ids: Sequence[str] | None = None,
    labels: Sequence[str] = ("A", "B"),
    alpha: float = 0.55,
    cmap: str = "jet",
) -> Figure:
    """Fig. 8: per image and tapped layer, the activation map of A (and B) drawn over the image.

    Args:
        images: N images (H, W, 3) uint8.
        maps_a: layer -> N maps (H, W) from :func:`activation_map` of run A.
        maps_b: the same for run B (same layers), or ``None``.
        ids, labels: names of the images and runs.
        alpha: opacity of the heat map over the image.
        cmap: matplotlib colormap (``jet`` as in the released code).

    Every layer uses **one colour scale** for A and B and all images: ``[min, max]`` over all of its maps.
    The heat map of axes ``(image i, layer l, run r)`` is that axes' second image, with ``clim`` the layer's
    scale.
    """
    layers = list(maps_a)
    if maps_b is not None and list(maps_b) != layers:
        raise ValueError(f"maps_b layers {list(maps_b)} differ from maps_a layers {layers}")
    runs = [maps_a] if maps_b is None else [maps_a, maps_b]
    n = len(images)
    cols = 1 + len(layers) * len(runs)
    fig = new_figure(2.0 * cols, 2.1 * max(n, 1) + 0.3)
    axes = fig.subplots(max(n, 1), cols, squeeze=False)
    scale: dict[str, tuple[float, float]] = {}
    for layer in layers:
        values = [np.asarray(m) for run in runs for m in run[layer]]
        scale[layer] = (float(min(v.min() for v in values)), float(max(v.max() for v in values)))
    for i in range(n):
        image = np.asarray(images[i])
        axes[i][0].imshow(image[..., :3] if image.shape[-1] >= 3 else image[..., 0], cmap="gray")
        axes[i][0].set_title(ids[i] if ids is not None else str(i), fontsize=8)
        col = 1
        for layer in layers:
            lo, hi = scale[layer]
            for r, run in enumerate(runs):
                ax = axes[i][col]
                ax.imshow(image[..., :3] if image.shape[-1] >= 3 else image[..., 0], cmap="gray")
                ax.imshow(np.asarray(run[layer][i]), cmap=cmap, alpha=alpha, vmin=lo, vmax=hi)
                ax.set_title(f"{layer} · {labels[r]}", fontsize=8)
                col += 1
    for row in axes:
        for ax in row:
            ax.set_axis_off()
    return fig
