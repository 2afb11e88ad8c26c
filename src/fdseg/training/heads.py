"""Multi-class heads of a run: which classes, which losses, how validation scores them.

``model.head`` is ``binary`` (one sigmoid output, the default), ``binary_per_class`` (K sigmoid outputs, one
per foreground class against a shared background, method-spec §F7) or ``softmax`` (K + 1 logits, background
first). A multi-class run takes its K classes from the base dataset's class names
(:attr:`fdseg.data.base.RawDataset.class_names`: ``consep:…?classes=7|4``, ``synthetic:…?family=nuclei_mc``)
and checks ``model.out_channels`` against them before anything is written. Its loaders yield class-index maps
``(B, 1, H, W)`` int64; L_seg is the head's loss (:func:`fdseg.losses.multiclass.build_head_seg_loss`), L_fd
the per-class L_fd (:class:`fdseg.losses.multiclass.PerClassFeatureDiscrepancyLoss`), and the validation Dice
the per-image macro Dice over the foreground classes (:class:`MulticlassHead`).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from fdseg._checks import check_option
from fdseg._names import MULTICLASS_HEADS
from fdseg.data.open import open_dataset
from fdseg.losses.multiclass import class_index_map
from fdseg.metrics.multiclass import class_confusion_counts, per_class_metrics, predict_classes


def is_multiclass(cfg: Any) -> bool:
    """Whether the run's ``model.head`` is a multi-class head."""
    return str(cfg.model.head) in MULTICLASS_HEADS


@functools.lru_cache(maxsize=32)
def dataset_class_names(spec: str) -> tuple[str, ...] | None:
    """The class names (background first) of the dataset ``spec``, or ``None`` when it has no class labels."""
    return open_dataset(spec).class_names


def run_classes(cfg: Any) -> tuple[str, ...]:
    """The K foreground class names of a multi-class run, checked against ``model.out_channels``.

    Raises:
        ValueError: a binary head; a dataset without class labels (naming the spec); ``out_channels`` that
            does not match the classes (naming both); a novel dataset with other classes; tiling.
    """
    head = str(cfg.model.head)
    if head not in MULTICLASS_HEADS:
        raise ValueError(f"model.head = {head!r} is not a multi-class head {MULTICLASS_HEADS}")
    names = dataset_class_names(cfg.data.base)
    if names is None:
        raise ValueError(
            f"model.head = {head} needs class labels, but data.base {cfg.data.base!r} has none; use a "
            "dataset with class maps (consep:PATH?classes=7|4, synthetic:PATH?family=nuclei_mc)"
        )
    if cfg.data.novel is not None and dataset_class_names(cfg.data.novel) != names:
        raise ValueError(
            f"data.novel {cfg.data.novel!r} has classes {dataset_class_names(cfg.data.novel)}, data.base "
            f"has {names}; a multi-class run needs the same classes"
        )
    if cfg.data.preprocess != "resize":
        raise ValueError("a multi-class run needs data.preprocess = resize (tiling is binary only)")
    k = len(names) - 1
    need = k if head == "binary_per_class" else k + 1
    if cfg.model.out_channels != need:
        raise ValueError(
            f"model.out_channels = {cfg.model.out_channels} does not match data.base {cfg.data.base!r}: its "
            f"{k} foreground classes {list(names[1:])} need {need} channels with model.head = {head}"
        )
    return tuple(names[1:])


class MulticlassHead:
    """Prediction and per-image validation score of a multi-class head.

    Args:
        head: ``binary_per_class`` or ``softmax``.
        class_names: the K foreground class names.
        threshold: the ``binary_per_class`` aggregation threshold.
    """

    def __init__(self, head: str, class_names: tuple[str, ...], threshold: float = 0.5) -> None:
        self.head = check_option("multi-class head", head, MULTICLASS_HEADS)
        self.class_names = tuple(class_names)
        self.threshold = threshold

    @property
    def num_classes(self) -> int:
        """K, the number of foreground classes."""
        return len(self.class_names)

    def predict(self, logits: Tensor) -> Tensor:
        """(B, 1, H, W) int64 class indices (see :func:`fdseg.metrics.multiclass.predict_classes`)."""
        return predict_classes(logits, self.head, threshold=self.threshold)

    def counts(self, logits: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """Per-image, per-class confusion counts (B, K + 1), background in column 0."""
        target = class_index_map(mask, self.num_classes)
        return class_confusion_counts(self.predict(logits), target, self.num_classes)

    def dice(self, logits: Tensor, mask: Tensor) -> Tensor:
        """(B,) per-image macro Dice over the foreground classes in the ground truth or the prediction.

        An image where no foreground class is in either scores 1 (nothing to find, nothing predicted).
        """
        dice = per_class_metrics(self.counts(logits, mask))["dice"][:, 1:]  # NaN where absent from both
        return torch.nan_to_num(dice.nanmean(1), nan=1.0).float()  # 1 where no class is in either


def build_head(cfg: Any) -> MulticlassHead | None:
    """The run's :class:`MulticlassHead`, or ``None`` for a binary run."""
    if not is_multiclass(cfg):
        return None
    return MulticlassHead(str(cfg.model.head), run_classes(cfg), float(cfg.model.class_threshold))
