"""Per-image segmentation metrics from confusion counts, and the released code's soft batch metrics.

Hard metrics (the ones fdseg reports per image) are computed in two steps, so that a reader can always
recompute them from what is stored on disk:

1. :func:`confusion_counts` thresholds the prediction (``p > threshold``) and counts tp, fp, fn, tn per
   image and channel.
2. :func:`metrics_from_counts` turns the counts into Dice, IoU, sensitivity, specificity and precision with
   exact ratios (no epsilon bias) and an explicit rule for every 0/0 case.

**Empty-mask policy** (``empty_policy``) decides Dice and IoU where they are 0/0 or where the ground truth is
empty; it never touches the other metrics:

================================  ============================  ============================
policy                            empty GT, empty prediction    empty GT, non-empty prediction
================================  ============================  ============================
``"one_if_pred_empty"`` (default) 1.0                           0.0
``"nan"``                         NaN                           NaN
``"nan_if_both_empty"``           NaN                           0.0
================================  ============================  ============================

``"one_if_pred_empty"`` equals MONAI ``compute_dice(..., ignore_empty=False)``, ``"nan"`` equals MONAI's
default ``ignore_empty=True``, and ``"nan_if_both_empty"`` is what nnU-Net's evaluation does.

**Sensitivity, specificity and precision are NaN whenever their denominator is zero**, under every policy:
sensitivity = tp / (tp + fn) is undefined for an empty ground truth (there is no positive to find),
specificity = tn / (tn + fp) for an all-foreground ground truth, precision = tp / (tp + fp) for an empty
prediction. A number there would be invented; aggregate with NaN-aware means and report the count.

The soft batch metrics (:func:`soft_batch_dice`, :func:`soft_batch_iou`) reproduce the released Keras code
(method-spec §D2): probabilities, no threshold, sums over the whole flattened batch and ``eps`` in numerator
and denominator. They are reported under their own name, never as "Dice".
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import Tensor

from fdseg._checks import check_option, check_shape

EmptyPolicy = Literal["one_if_pred_empty", "nan", "nan_if_both_empty"]
Decision = Literal["threshold", "argmax"]

EMPTY_POLICIES: tuple[str, ...] = get_args(EmptyPolicy)
DECISIONS: tuple[str, ...] = get_args(Decision)
COUNT_KEYS: tuple[str, ...] = ("tp", "fp", "fn", "tn")
METRIC_KEYS: tuple[str, ...] = ("dice", "iou", "sensitivity", "specificity", "precision")

__all__ = [
    "COUNT_KEYS",
    "DECISIONS",
    "EMPTY_POLICIES",
    "METRIC_KEYS",
    "Decision",
    "EmptyPolicy",
    "confusion_counts",
    "hard_predictions",
    "metrics_from_counts",
    "segmentation_metrics",
    "soft_batch_dice",
    "soft_batch_iou",
]


def _check_threshold(threshold: float) -> None:
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool):
        raise TypeError(f"threshold must be a float in (0, 1), got {type(threshold).__name__}")
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")


def _check_binary_mask(mask: Tensor, *, name: str = "mask") -> Tensor:
    """``mask`` as bool; ``ValueError`` if it holds anything other than 0 and 1."""
    if mask.dtype == torch.bool:
        return mask
    if not bool(((mask == 0) | (mask == 1)).all()):
        bad = mask[(mask != 0) & (mask != 1)].flatten()[:3].tolist()
        raise ValueError(
            f"{name} must be binary with values in {{0, 1}}, found e.g. {bad}; binarise it (mask > 0.5) "
            "or one-hot encode multi-class labels"
        )
    return mask.bool()


def hard_predictions(
    logits: Tensor,
    *,
    threshold: float = 0.5,
    from_logits: bool = True,
    decision: Decision = "threshold",
) -> Tensor:
    """Binary predictions ``p > threshold`` per channel (or per pixel with ``decision="argmax"``).

    With ``from_logits=True`` the comparison is made in logit space, ``logits > log(t / (1 - t))``, which is
    the same set as ``sigmoid(logits) > t`` but does not suffer from the sigmoid rounding to exactly 0.5
    (or 1.0) in float32 for small (or large) logits.

    Args:
        logits: (B, K, H, W) float; logits if ``from_logits`` else probabilities in [0, 1].
        threshold: probability threshold in (0, 1); a pixel is foreground if ``p > threshold``.
        from_logits: whether ``logits`` are logits (sigmoid per channel) or probabilities.
        decision: ``"threshold"``: every channel independently ``p_k > threshold`` (binary and multi-label
            heads). ``"argmax"``: at most one channel per pixel, ``k = argmax_k p_k`` and only where
            ``p_k > threshold`` (background otherwise), the aggregation of per-class sigmoid heads in
            method-spec §F7.

    Returns:
        (B, K, H, W) bool.

    Raises:
        ValueError: wrong rank, NaN in ``logits``, probabilities outside [0, 1], threshold outside (0, 1),
            unknown ``decision``.
    """
    check_shape(logits, "B K H W", name="logits")
    _check_threshold(threshold)
    check_option("decision", decision, DECISIONS)
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating tensor, got dtype {logits.dtype}")
    if bool(torch.isnan(logits).any()):
        raise ValueError("logits contain NaN; cannot threshold them")
    if from_logits:
        cut = math.log(threshold / (1.0 - threshold))
    else:
        if bool(((logits < 0) | (logits > 1)).any()):
            raise ValueError(
                f"probabilities must lie in [0, 1] when from_logits=False, got range "
                f"[{float(logits.min()):.4g}, {float(logits.max()):.4g}]; pass from_logits=True for logits"
            )
        cut = float(threshold)
    above = logits > cut
    if decision == "threshold":
        return above
    winner = logits.argmax(dim=1, keepdim=True)
    one_hot = torch.zeros_like(above).scatter_(1, winner, True)
    return one_hot & above


def confusion_counts(
    logits: Tensor,
    mask: Tensor,
    *,
    threshold: float = 0.5,
    from_logits: bool = True,
    decision: Decision = "threshold",
) -> dict[str, Tensor]:
    """Per-image, per-channel confusion counts of hard predictions ``p > threshold`` against ``mask``.

    Args:
        logits: (B, K, H, W) float; logits if ``from_logits`` else probabilities in [0, 1].
        mask: (B, K, H, W) binary ground truth, values in {0, 1} (float, int or bool); multi-class masks
            one-hot.
        threshold: probability threshold in (0, 1).
        from_logits: whether ``logits`` are logits or probabilities.
        decision: ``"threshold"`` (per channel) or ``"argmax"`` (one class per pixel); see
            :func:`hard_predictions`.

    Returns:
        ``{"tp", "fp", "fn", "tn"}``, each (B, K) int64; ``tp + fp + fn + tn == H * W``.

    Raises:
        ValueError: shapes differ, wrong rank, non-binary ``mask``, NaN logits, bad threshold.

    Example:
        >>> logits = torch.tensor([[[[5.0, -5.0], [5.0, -5.0]]]])
        >>> mask = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
        >>> {k: v.tolist() for k, v in confusion_counts(logits, mask).items()}
        {'tp': [[1]], 'fp': [[1]], 'fn': [[1]], 'tn': [[1]]}
    """
    check_shape(mask, "B K H W", name="mask")
    check_shape(logits, "B K H W", name="logits")
    if logits.shape != mask.shape:
        raise ValueError(f"logits shape {tuple(logits.shape)} != mask shape {tuple(mask.shape)}")
    truth = _check_binary_mask(mask)
    pred = hard_predictions(logits, threshold=threshold, from_logits=from_logits, decision=decision)
    dims = (2, 3)
    tp = (pred & truth).sum(dim=dims, dtype=torch.int64)
    n_pred = pred.sum(dim=dims, dtype=torch.int64)
    n_true = truth.sum(dim=dims, dtype=torch.int64)
    fp = n_pred - tp
    fn = n_true - tp
    tn = logits.shape[2] * logits.shape[3] - tp - fp - fn
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """Exact ``num / den`` in float64, NaN where ``den == 0``."""
    num64 = num.to(torch.float64)
    den64 = den.to(torch.float64)
    nan = torch.full_like(num64, math.nan)
    return torch.where(den64 > 0, num64 / torch.where(den64 > 0, den64, torch.ones_like(den64)), nan)


def metrics_from_counts(
    tp: Tensor,
    fp: Tensor,
    fn: Tensor,
    tn: Tensor,
    *,
    empty_policy: EmptyPolicy = "one_if_pred_empty",
) -> dict[str, Tensor]:
    """Dice, IoU, sensitivity, specificity and precision from confusion counts, with explicit 0/0 rules.

    Formulas (exact, no epsilon): Dice = 2tp / (2tp + fp + fn), IoU = tp / (tp + fp + fn),
    sensitivity = tp / (tp + fn), specificity = tn / (tn + fp), precision = tp / (tp + fp).
    See the module docstring for the empty-mask policies.

    Args:
        tp: any shape, typically (B, K), non-negative integer counts.
        fp: same shape as ``tp``.
        fn: same shape as ``tp``.
        tn: same shape as ``tp``.
        empty_policy: ``"one_if_pred_empty"`` (default), ``"nan"`` or ``"nan_if_both_empty"``.

    Returns:
        ``{"dice", "iou", "sensitivity", "specificity", "precision"}`` float64 in [0, 1] or NaN, and
        ``"empty_gt"`` bool (tp + fn == 0), all of the shape of ``tp``.

    Raises:
        TypeError: counts are not integer tensors.
        ValueError: shapes differ, a count is negative, unknown ``empty_policy``.

    Example:
        >>> t = torch.tensor
        >>> m = metrics_from_counts(t([0]), t([0]), t([0]), t([16]))
        >>> m["dice"].tolist(), m["sensitivity"].tolist(), m["empty_gt"].tolist()
        ([1.0], [nan], [True])
    """
    check_option("empty_policy", empty_policy, EMPTY_POLICIES)
    counts = {"tp": tp, "fp": fp, "fn": fn, "tn": tn}
    for name, value in counts.items():
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of integer counts, got {type(value).__name__}")
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer counts, got dtype {value.dtype}")
        if value.shape != tp.shape:
            raise ValueError(f"{name} shape {tuple(value.shape)} != tp shape {tuple(tp.shape)}")
        if bool((value < 0).any()):
            raise ValueError(f"{name} has negative counts: {value[value < 0].flatten()[:3].tolist()}")

    empty_gt = (tp + fn) == 0
    empty_pred = (tp + fp) == 0
    dice = _ratio(2 * tp, 2 * tp + fp + fn)
    iou = _ratio(tp, tp + fp + fn)
    nan = torch.full_like(dice, math.nan)
    if empty_policy == "one_if_pred_empty":
        both_empty = empty_gt & empty_pred
        dice = torch.where(both_empty, torch.ones_like(dice), dice)
        iou = torch.where(both_empty, torch.ones_like(iou), iou)
    elif empty_policy == "nan":
        dice = torch.where(empty_gt, nan, dice)
        iou = torch.where(empty_gt, nan, iou)
    # "nan_if_both_empty": the exact ratio already is NaN for 0/0 and 0 for fp > 0 on an empty GT.
    return {
        "dice": dice,
        "iou": iou,
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "precision": _ratio(tp, tp + fp),
        "empty_gt": empty_gt,
    }


def segmentation_metrics(
    logits: Tensor,
    mask: Tensor,
    *,
    threshold: float = 0.5,
    from_logits: bool = True,
    decision: Decision = "threshold",
    empty_policy: EmptyPolicy = "one_if_pred_empty",
) -> dict[str, Tensor]:
    """:func:`confusion_counts` followed by :func:`metrics_from_counts`, merged in one dict.

    Args:
        logits: (B, K, H, W) float logits (or probabilities with ``from_logits=False``).
        mask: (B, K, H, W) binary ground truth in {0, 1}.
        threshold: probability threshold in (0, 1).
        from_logits: whether ``logits`` are logits.
        decision: ``"threshold"`` or ``"argmax"``.
        empty_policy: see the module docstring.

    Returns:
        tp, fp, fn, tn (B, K) int64; dice, iou, sensitivity, specificity, precision (B, K) float64;
        empty_gt (B, K) bool.
    """
    counts = confusion_counts(logits, mask, threshold=threshold, from_logits=from_logits, decision=decision)
    return {**counts, **metrics_from_counts(**counts, empty_policy=empty_policy)}


def _soft_sums(probs: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    if not isinstance(probs, Tensor) or not isinstance(mask, Tensor):
        raise TypeError(
            f"probs and mask must be torch.Tensors, got {type(probs).__name__} and {type(mask).__name__}"
        )
    if probs.shape != mask.shape:
        raise ValueError(f"probs shape {tuple(probs.shape)} != mask shape {tuple(mask.shape)}")
    if not probs.is_floating_point():
        raise TypeError(f"probs must be a floating tensor, got dtype {probs.dtype}")
    if probs.numel() and bool(((probs < 0) | (probs > 1) | torch.isnan(probs)).any()):
        raise ValueError(
            "probs must lie in [0, 1] (apply sigmoid to logits first), got range "
            f"[{float(probs.min()):.4g}, {float(probs.max()):.4g}]"
        )
    truth = mask.to(probs.dtype)
    intersection = (probs * truth).sum()
    return intersection, truth.sum(), probs.sum()


def soft_batch_dice(probs: Tensor, mask: Tensor, *, eps: float = 1e-7) -> Tensor:
    """Soft Dice of the released code: ``(2 Σ y p + eps) / (Σ y + Σ p + eps)`` over the flattened batch.

    This is one number for the whole batch, not a mean of per-image values, computed on probabilities
    without a threshold (method-spec §D2, ``attnunet.py:218``). Report it as ``soft_batch_dice``.

    Args:
        probs: any shape, float probabilities in [0, 1] (e.g. (B, 1, H, W) after a sigmoid).
        mask: same shape, ground truth in [0, 1].
        eps: smoothing added to numerator and denominator (Keras ``K.epsilon()`` = 1e-7).

    Returns:
        () tensor of the dtype of ``probs``, in [0, 1].

    Raises:
        TypeError: non-tensor or non-floating ``probs``.
        ValueError: shapes differ, ``probs`` outside [0, 1], ``eps`` < 0.
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    intersection, sum_mask, sum_probs = _soft_sums(probs, mask)
    return (2.0 * intersection + eps) / (sum_mask + sum_probs + eps)


def soft_batch_iou(probs: Tensor, mask: Tensor, *, eps: float = 1e-7) -> Tensor:
    """Soft IoU of the released code: ``(Σ y p + eps) / (Σ y + Σ p − Σ y p + eps)`` over the flattened batch.

    Args:
        probs: any shape, float probabilities in [0, 1].
        mask: same shape, ground truth in [0, 1].
        eps: smoothing added to numerator and denominator.

    Returns:
        () tensor of the dtype of ``probs``, in [0, 1].

    Raises:
        TypeError: non-tensor or non-floating ``probs``.
        ValueError: shapes differ, ``probs`` outside [0, 1], ``eps`` < 0.
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    intersection, sum_mask, sum_probs = _soft_sums(probs, mask)
    return (intersection + eps) / (sum_mask + sum_probs - intersection + eps)
