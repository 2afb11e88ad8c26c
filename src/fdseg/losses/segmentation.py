"""Segmentation losses L_seg (method-spec §D1).

All take **logits** ``(B, K, H, W)`` (one sigmoid head per class, ``K = 1`` for a binary task) and a mask of
the same shape in [0, 1] (one-hot for ``K > 1``). Soft Dice and IoU are *batch* quantities, as in the
released code: for each class the sums run over the whole batch and all pixels, then the classes are averaged.
Everything is computed in float32 (float64 kept), autocast or not.

* ``dice_bce`` (default, the paper's Eqs. 5-7 with a proper BCE): ``(1 - Dice) + BCE-with-logits``, Dice with
  ``eps = 1e-6`` in numerator and denominator, BCE averaged over all elements.
* ``dice_iou`` (the released AttnUNet / NuSegNet code): ``(1 - Dice) + (1 - IoU)`` on sigmoid probabilities,
  ``eps = 1e-7`` (Keras ``K.epsilon()``), no BCE.
* ``dice_bce_on_probs`` (the released CMUNet code, a bug kept for reproduction): ``(1 - Dice)`` plus
  ``sigmoid_cross_entropy_with_logits`` applied to the *probabilities*, i.e. a double sigmoid; its BCE part
  never drops below ``softplus(-1) ≈ 0.31`` on foreground and ``log 2 ≈ 0.69`` on background pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fdseg._checks import check_positive, check_shape
from fdseg.registry import Registry

#: Segmentation loss name -> ``nn.Module`` factory.
SEG_LOSSES: Registry[nn.Module] = Registry("segmentation loss")


def _prepare(logits: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Shape checks; both tensors as float32 (float64 kept)."""
    check_shape(logits, "B K H W", name="logits")
    check_shape(mask, "B K H W", name="mask")
    if logits.shape != mask.shape:
        raise ValueError(
            f"logits of shape {tuple(logits.shape)} and mask of shape {tuple(mask.shape)} differ; expected "
            "the same (B, K, H, W) (one sigmoid head per mask channel)"
        )
    if not logits.is_floating_point():
        raise TypeError(f"logits: expected a floating-point tensor, got dtype {logits.dtype}")
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    return logits.to(dtype), mask.to(dtype)


def _batch_overlap(probs: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per class over batch and pixels: intersection (K,) and ``sum(probs) + sum(mask)`` (K,)."""
    dims = (0, 2, 3)
    return (probs * mask).sum(dims), probs.sum(dims) + mask.sum(dims)


def soft_dice(probs: Tensor, mask: Tensor, *, eps: float = 1e-6) -> Tensor:
    """Soft batch Dice per class, ``(2 Σ p y + eps) / (Σ p + Σ y + eps)``.

    Args:
        probs: (B, K, H, W) float in [0, 1].
        mask: (B, K, H, W) float in [0, 1].
        eps: smoothing, > 0.

    Returns:
        (K,) float in (0, 1].
    """
    inter, total = _batch_overlap(probs, mask)
    return (2 * inter + eps) / (total + eps)


def dice_bce_loss(logits: Tensor, mask: Tensor, *, eps: float = 1e-6) -> Tensor:
    """``(1 - soft batch Dice) + BCE-with-logits`` (the default L_seg).

    Args:
        logits: (B, K, H, W) float.
        mask: (B, K, H, W) float in [0, 1].
        eps: Dice smoothing (default 1e-6).

    Returns:
        () float >= 0.
    """
    logits, mask = _prepare(logits, mask)
    dice = soft_dice(torch.sigmoid(logits), mask, eps=eps).mean()
    return (1 - dice) + F.binary_cross_entropy_with_logits(logits, mask)


def dice_iou_loss(logits: Tensor, mask: Tensor, *, eps: float = 1e-7) -> Tensor:
    """``(1 - soft Dice) + (1 - soft IoU)`` on sigmoid probabilities, batch-level (AttnUNet/NuSegNet code).

    ``IoU = (Σ p y + eps) / (Σ p + Σ y - Σ p y + eps)``.

    Args:
        logits: (B, K, H, W) float.
        mask: (B, K, H, W) float in [0, 1].
        eps: smoothing of both ratios (default 1e-7, Keras ``K.epsilon()``).

    Returns:
        () float in [0, 2].
    """
    logits, mask = _prepare(logits, mask)
    inter, total = _batch_overlap(torch.sigmoid(logits), mask)
    dice = ((2 * inter + eps) / (total + eps)).mean()
    iou = ((inter + eps) / (total - inter + eps)).mean()
    return (1 - dice) + (1 - iou)


def dice_bce_on_probs_loss(logits: Tensor, mask: Tensor, *, eps: float = 1e-7) -> Tensor:
    """The CMUNet code's loss: ``(1 - soft Dice)`` + BCE-with-logits applied to ``sigmoid(logits)``.

    Kept only to reproduce the released code (a double sigmoid; method-spec §D1).

    Args:
        logits: (B, K, H, W) float.
        mask: (B, K, H, W) float in [0, 1].
        eps: Dice smoothing (default 1e-7).

    Returns:
        () float.
    """
    logits, mask = _prepare(logits, mask)
    probs = torch.sigmoid(logits)
    dice = soft_dice(probs, mask, eps=eps).mean()
    return (1 - dice) + F.binary_cross_entropy_with_logits(probs, mask)


class _SegLoss(nn.Module):
    def __init__(self, *, eps: float) -> None:
        super().__init__()
        self.eps = check_positive("eps", eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


@SEG_LOSSES.register("dice_bce")
class DiceBCELoss(_SegLoss):
    """Module form of :func:`dice_bce_loss`; ``forward(logits, mask) -> ()``."""

    def __init__(self, *, eps: float = 1e-6) -> None:
        super().__init__(eps=eps)

    def forward(self, logits: Tensor, mask: Tensor) -> Tensor:
        return dice_bce_loss(logits, mask, eps=self.eps)


@SEG_LOSSES.register("dice_iou")
class DiceIoULoss(_SegLoss):
    """Module form of :func:`dice_iou_loss`; ``forward(logits, mask) -> ()``."""

    def __init__(self, *, eps: float = 1e-7) -> None:
        super().__init__(eps=eps)

    def forward(self, logits: Tensor, mask: Tensor) -> Tensor:
        return dice_iou_loss(logits, mask, eps=self.eps)


@SEG_LOSSES.register("dice_bce_on_probs")
class DiceBCEOnProbsLoss(_SegLoss):
    """Module form of :func:`dice_bce_on_probs_loss` (the CMUNet code's double sigmoid)."""

    def __init__(self, *, eps: float = 1e-7) -> None:
        super().__init__(eps=eps)

    def forward(self, logits: Tensor, mask: Tensor) -> Tensor:
        return dice_bce_on_probs_loss(logits, mask, eps=self.eps)


def build_seg_loss(name: str = "dice_bce", **kwargs: float) -> nn.Module:
    """Build a registered segmentation loss.

    Args:
        name: ``"dice_bce"`` (default) | ``"dice_iou"`` | ``"dice_bce_on_probs"``.
        **kwargs: the loss's options (``eps``).

    Raises:
        KeyError: unknown ``name`` (the message lists the registered ones).
        ValueError: an option the loss does not take, or a bad value.
    """
    factory = SEG_LOSSES.get(name)
    unknown = [k for k in kwargs if k != "eps"]
    if unknown:
        raise ValueError(f"unknown option {unknown} of segmentation loss {name!r}; valid: ['eps']")
    return factory(**kwargs)
