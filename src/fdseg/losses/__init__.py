"""fdseg.losses: the feature discrepancy loss L_fd, its exchangeable variant, λ strategies and L_seg.

Losses receive tensors (``features: dict[str, Tensor]``, masks, logits), never a model.
"""

from __future__ import annotations

from fdseg.losses.discrepancy import (
    PRESETS,
    ExchangeableFeatureDiscrepancyLoss,
    FeatureDiscrepancyLoss,
    LossOutput,
    resolve_options,
)
from fdseg.losses.functional import (
    ExchangeTerm,
    FdOptions,
    FdTerm,
    Prototypes,
    exchange_pairs,
    exchangeable_fd_term,
    fd_term,
    region_prototypes,
    resize_mask,
)
from fdseg.losses.multiclass import (
    HEADS,
    BinaryPerClassSegLoss,
    PerClassExchangeableFeatureDiscrepancyLoss,
    PerClassFdTerm,
    PerClassFeatureDiscrepancyLoss,
    SoftmaxSegLoss,
    build_head_seg_loss,
    class_index_map,
    class_masks,
    per_class_fd_term,
)
from fdseg.losses.segmentation import (
    SEG_LOSSES,
    DiceBCELoss,
    DiceBCEOnProbsLoss,
    DiceIoULoss,
    build_seg_loss,
    dice_bce_loss,
    dice_bce_on_probs_loss,
    dice_iou_loss,
    soft_dice,
)
from fdseg.losses.weights import (
    DEFAULT_LAMBDA_MAX,
    LAMBDA_STRATEGIES,
    CodeExactLambda,
    DualLambda,
    FixedLambda,
    LambdaStrategy,
    ScheduleLambda,
    build_lambda_strategy,
)

__all__ = [
    "DEFAULT_LAMBDA_MAX",
    "HEADS",
    "LAMBDA_STRATEGIES",
    "PRESETS",
    "SEG_LOSSES",
    "BinaryPerClassSegLoss",
    "CodeExactLambda",
    "DiceBCELoss",
    "DiceBCEOnProbsLoss",
    "DiceIoULoss",
    "DualLambda",
    "ExchangeTerm",
    "ExchangeableFeatureDiscrepancyLoss",
    "FdOptions",
    "FdTerm",
    "FeatureDiscrepancyLoss",
    "FixedLambda",
    "LambdaStrategy",
    "LossOutput",
    "PerClassExchangeableFeatureDiscrepancyLoss",
    "PerClassFdTerm",
    "PerClassFeatureDiscrepancyLoss",
    "Prototypes",
    "ScheduleLambda",
    "SoftmaxSegLoss",
    "build_head_seg_loss",
    "build_lambda_strategy",
    "build_seg_loss",
    "class_index_map",
    "class_masks",
    "dice_bce_loss",
    "dice_bce_on_probs_loss",
    "dice_iou_loss",
    "exchange_pairs",
    "exchangeable_fd_term",
    "fd_term",
    "per_class_fd_term",
    "region_prototypes",
    "resize_mask",
    "resolve_options",
    "soft_dice",
]
