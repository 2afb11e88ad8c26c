"""Per-class metrics of multi-class segmentation: hard class maps, per-image per-class counts, summaries.

Steps (each one recomputable from what a run stores):

1. :func:`predict_classes` turns logits into a class-index map ``(B, 1, H, W)``. ``binary_per_class`` head
   (K sigmoid outputs): ``argmax_c p_c`` where ``max_c p_c > threshold``, background elsewhere (method-spec
   §F7's aggregation rule, :data:`AGGREGATION`); ``softmax`` head (K + 1 logits, background first): argmax.
2. :func:`class_confusion_counts` counts tp, fp, fn, tn per image and class, background included as class 0:
   ``(B, K + 1)`` int64 each.
3. :func:`~fdseg.metrics.functional.metrics_from_counts` gives Dice, IoU, … per image and class.

**Empty-ground-truth policy per class** (default ``"nan_if_both_empty"``, :data:`DEFAULT_CLASS_EMPTY_POLICY`):
for each image and class, a class absent from both the ground truth and the prediction has no Dice (NaN,
counted as *absent*, left out of that class's mean); a class absent from the ground truth but predicted has
Dice 0 (a false alarm). A class mean is the mean over the images where the class is in the ground truth or in
the prediction; the **macro average** is the mean of the foreground class means over the classes that have
one. ``"one_if_pred_empty"`` (both empty → 1, MONAI ``ignore_empty=False``) and ``"nan"`` (every empty
ground truth → NaN, MONAI's default ``ignore_empty=True``) are available too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import torch
from torch import Tensor

from fdseg._checks import check_option, check_shape
from fdseg._names import MULTICLASS_HEADS
from fdseg.metrics.functional import EMPTY_POLICIES, EmptyPolicy, hard_predictions, metrics_from_counts

#: The multi-class heads.
HEADS: tuple[str, ...] = MULTICLASS_HEADS
#: The aggregation rule of the ``binary_per_class`` head, recorded with every evaluation.
AGGREGATION: Final = "argmax over class probabilities; background where the maximum is <= threshold"
DEFAULT_CLASS_EMPTY_POLICY: Final[EmptyPolicy] = "nan_if_both_empty"


def predict_classes(logits: Tensor, head: str, *, threshold: float = 0.5) -> Tensor:
    """Hard class-index map of a multi-class head.

    Args:
        logits: (B, K, H, W) for ``binary_per_class`` or (B, K + 1, H, W) (background first) for ``softmax``.
        head: ``"binary_per_class"`` or ``"softmax"``.
        threshold: probability threshold in (0, 1) of ``binary_per_class``.

    Returns:
        (B, 1, H, W) int64 in ``0..K`` (0 = background).

    Raises:
        ValueError: unknown head, wrong rank, NaN logits, a threshold outside (0, 1).
    """
    check_option("model.head", head, HEADS)
    check_shape(logits, "B K H W", name="logits")
    if head == "softmax":
        if bool(torch.isnan(logits).any()):
            raise ValueError("logits contain NaN; cannot take the argmax")
        return logits.argmax(1, keepdim=True)
    winners = hard_predictions(logits, threshold=threshold, decision="argmax")  # (B, K, H, W) one-hot or 0
    index = winners.float().argmax(1, keepdim=True) + 1
    return torch.where(winners.any(1, keepdim=True), index, torch.zeros_like(index))


def _check_index_map(x: Tensor, num_classes: int, name: str) -> None:
    check_shape(x, "B 1 H W", name=name)
    if x.is_floating_point() or x.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer class-index map, got dtype {x.dtype}")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) > num_classes):
        bad = int(x.max()) if int(x.max()) > num_classes else int(x.min())
        raise ValueError(f"{name}: class index {bad} is outside 0..{num_classes}")


def class_confusion_counts(pred: Tensor, target: Tensor, num_classes: int) -> dict[str, Tensor]:
    """Per-image, per-class confusion counts of two class-index maps (background is class 0).

    Args:
        pred: (B, 1, H, W) integer class indices in ``0..K``.
        target: (B, 1, H, W) integer class indices in ``0..K``.
        num_classes: K foreground classes.

    Returns:
        ``{"tp", "fp", "fn", "tn"}`` each (B, K + 1) int64; column c is class c (0 = background);
        ``tp + fp + fn + tn == H * W``.

    Raises:
        ValueError: shapes differ, an index outside ``0..K``.
        TypeError: float or bool maps.
    """
    _check_index_map(pred, num_classes, "pred")
    _check_index_map(target, num_classes, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    classes = torch.arange(num_classes + 1, device=pred.device).view(1, -1, 1, 1)
    p = pred == classes  # (B, K + 1, H, W)
    t = target == classes
    dims = (2, 3)
    tp = (p & t).sum(dims, dtype=torch.int64)
    fp = p.sum(dims, dtype=torch.int64) - tp
    fn = t.sum(dims, dtype=torch.int64) - tp
    tn = pred.shape[2] * pred.shape[3] - tp - fp - fn
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def per_class_metrics(
    counts: dict[str, Tensor], *, empty_policy: EmptyPolicy = DEFAULT_CLASS_EMPTY_POLICY
) -> dict[str, Tensor]:
    """:func:`~fdseg.metrics.functional.metrics_from_counts` of per-class counts with the per-class policy.

    Returns:
        ``dice``, ``iou``, ``sensitivity``, ``specificity``, ``precision`` (B, K + 1) float64 (NaN where
        undefined), ``empty_gt`` and ``absent`` (B, K + 1) bool (absent = neither GT nor prediction has it).
    """
    check_option("empty_policy", empty_policy, EMPTY_POLICIES)
    out = metrics_from_counts(
        counts["tp"], counts["fp"], counts["fn"], counts["tn"], empty_policy=empty_policy
    )
    out["absent"] = (counts["tp"] + counts["fp"] + counts["fn"]) == 0
    return out


def summarize_per_class(
    values: np.ndarray | Sequence[Sequence[float]],
    class_names: Sequence[str],
    *,
    absent: np.ndarray | None = None,
) -> dict[str, Any]:
    """Per-class means (NaN-aware) and the macro average of a per-image, per-class metric.

    Args:
        values: (N, K + 1) per-image values; column 0 is the background; NaN = no value (see the policy).
        class_names: K + 1 names, background first.
        absent: (N, K + 1) bool, the class is in neither GT nor prediction (counted, not averaged).

    Returns:
        ``{"per_class": {name: {"mean", "n", "absent"}}, "macro": mean over foreground classes with a mean,
        "macro_with_background": the same including class 0}``; a class without any value has mean ``None``.

    Raises:
        ValueError: a column count that does not match ``class_names``.
    """
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != len(class_names):
        raise ValueError(f"values of shape {arr.shape} do not match {len(class_names)} class names")
    absent_arr = np.zeros(arr.shape, bool) if absent is None else np.asarray(absent, bool)
    per_class: dict[str, Any] = {}
    means: list[float] = []
    for c, name in enumerate(class_names):
        col = arr[:, c]
        ok = ~np.isnan(col)
        mean = float(col[ok].mean()) if ok.any() else None
        per_class[str(name)] = {"mean": mean, "n": int(ok.sum()), "absent": int(absent_arr[:, c].sum())}
        means.append(math.nan if mean is None else mean)
    fg = np.asarray(means[1:])
    all_ = np.asarray(means)
    return {
        "per_class": per_class,
        "macro": float(np.nanmean(fg)) if np.isfinite(fg).any() else None,
        "macro_with_background": float(np.nanmean(all_)) if np.isfinite(all_).any() else None,
    }
