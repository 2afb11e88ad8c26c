"""Per-image, per-class evaluation of a multi-class run (``model.head`` = ``binary_per_class`` | ``softmax``).

``<run>/<split>/per_sample.csv`` (:func:`fdseg.training.evaluate.evaluate_run`) is in **long form**: one row
per image and class (background included as class 0) with ``id, source, class, label, tp, fp, fn, tn, dice,
iou, sensitivity, specificity, precision, empty_gt, absent`` and the per-image, per-class L_fd of every
tapped layer (``fd/<layer>``; NaN for the background and where the class is absent from the image at that
layer's scale).

Per-class metric policy (:mod:`fdseg.metrics.multiclass`): a class absent from both the ground truth and the
prediction of an image has no Dice there (NaN, counted in ``absent``, left out of the class mean); predicted
but absent from the ground truth scores 0. ``summary.json`` gives per-class means, the macro average over the
foreground classes (``mean.dice`` is that macro Dice, so that tables reading ``mean`` work unchanged), the
policy and the ``binary_per_class`` aggregation rule.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fdseg.metrics import AGGREGATION, DEFAULT_CLASS_EMPTY_POLICY, METRIC_KEYS, summarize_per_class
from fdseg.training.heads import MulticlassHead, nan_to_none


def summarize_rows(rows: list[dict[str, Any]], head: MulticlassHead) -> dict[str, Any]:
    """Per-class means, macro averages, policy and aggregation rule of long-form rows (each image's K + 1
    rows in a block, background first; ``n`` counts images)."""
    names = ["background", *head.class_names]
    fd_keys = [k for k in rows[0] if k.startswith("fd/")]
    column = {key: np.asarray([float(r[key]) for r in rows]) for key in (*METRIC_KEYS, "absent", *fd_keys)}
    absent = column["absent"].reshape(-1, len(names)).astype(bool)
    out: dict[str, Any] = {"per_class": {}, "mean": {}, "macro_with_background": {}}
    for metric in METRIC_KEYS:
        summary = summarize_per_class(column[metric].reshape(-1, len(names)), names, absent=absent)
        for name, entry in summary["per_class"].items():
            out["per_class"].setdefault(name, {"n": entry["n"], "absent": entry["absent"]})[metric] = entry[
                "mean"
            ]
        out["mean"][metric] = summary["macro"]
        out["macro_with_background"][metric] = summary["macro_with_background"]
    out["fd_mean"] = {}
    for key in fd_keys:
        values = column[key]
        out["fd_mean"][key[3:]] = (
            nan_to_none(float(np.nanmean(values))) if np.isfinite(values).any() else None
        )
    return {
        **out,
        "n": len(rows) // len(names),
        "head": head.head,
        "classes": names,
        "aggregation": AGGREGATION if head.head == "binary_per_class" else "argmax over K + 1 softmax logits",
        "threshold": head.threshold,
        "empty_policy": f"{DEFAULT_CLASS_EMPTY_POLICY} per class: a class absent from both the ground truth "
        "and the prediction of an image has no Dice there (counted as absent, left out of the class mean); "
        "predicted but absent from the ground truth scores 0. mean = macro average over the foreground "
        "classes that have a value.",
    }
