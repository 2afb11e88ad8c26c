"""fdseg.metrics: per-image metrics from confusion counts, soft batch metrics, worst/best-off, statistics.

Example:
    >>> import torch
    >>> from fdseg.metrics import confusion_counts, metrics_from_counts
    >>> counts = confusion_counts(torch.randn(2, 1, 8, 8), torch.zeros(2, 1, 8, 8))
    >>> sorted(metrics_from_counts(**counts))
    ['dice', 'empty_gt', 'iou', 'precision', 'sensitivity', 'specificity']
"""

from __future__ import annotations

from fdseg.metrics.functional import (
    COUNT_KEYS,
    DECISIONS,
    EMPTY_POLICIES,
    METRIC_KEYS,
    Decision,
    EmptyPolicy,
    confusion_counts,
    hard_predictions,
    metrics_from_counts,
    segmentation_metrics,
    soft_batch_dice,
    soft_batch_iou,
)
from fdseg.metrics.multiclass import (
    AGGREGATION,
    DEFAULT_CLASS_EMPTY_POLICY,
    class_confusion_counts,
    per_class_metrics,
    predict_classes,
    summarize_per_class,
)
from fdseg.metrics.selection import worst_best_off
from fdseg.metrics.stats import (
    align_pairs,
    bootstrap_ci,
    compare_arms,
    compare_seeds,
    compare_to_baseline,
    effect_size_dz,
    paired_bootstrap_diff,
    paired_test,
    summarize,
    t_ci,
    ttest_1samp_over_seeds,
)

__all__ = [
    "AGGREGATION",
    "COUNT_KEYS",
    "DECISIONS",
    "DEFAULT_CLASS_EMPTY_POLICY",
    "EMPTY_POLICIES",
    "METRIC_KEYS",
    "Decision",
    "EmptyPolicy",
    "align_pairs",
    "bootstrap_ci",
    "class_confusion_counts",
    "compare_arms",
    "compare_seeds",
    "compare_to_baseline",
    "confusion_counts",
    "effect_size_dz",
    "hard_predictions",
    "metrics_from_counts",
    "paired_bootstrap_diff",
    "paired_test",
    "per_class_metrics",
    "predict_classes",
    "segmentation_metrics",
    "soft_batch_dice",
    "soft_batch_iou",
    "summarize",
    "summarize_per_class",
    "t_ci",
    "ttest_1samp_over_seeds",
    "worst_best_off",
]
