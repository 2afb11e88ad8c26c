"""Per-image, per-class evaluation of a multi-class run (``model.head`` = ``binary_per_class`` | ``softmax``).

``<run>/<split>/per_sample.csv`` is in **long form**: one row per image and class (background included as
class 0) with ``id, source, class, label, tp, fp, fn, tn, dice, iou, sensitivity, specificity, precision,
empty_gt, absent`` and the per-image, per-class L_fd of every tapped layer (``fd/<layer>``; NaN for the
background and where the class is absent from the image at that layer's scale).

Per-class metric policy (:mod:`fdseg.metrics.multiclass`): a class absent from both the ground truth and the
prediction of an image has no Dice there (NaN, counted in ``absent``, left out of the class mean); predicted
but absent from the ground truth scores 0. ``summary.json`` gives per-class means, the macro average over the
foreground classes (``mean.dice`` is that macro Dice, so that tables reading ``mean`` work unchanged), the
policy and the ``binary_per_class`` aggregation rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fdseg._io import atomic_write_text
from fdseg.metrics.multiclass import (
    AGGREGATION,
    DEFAULT_CLASS_EMPTY_POLICY,
    per_class_metrics,
    summarize_per_class,
)
from fdseg.models import FeatureTap
from fdseg.training.build import build_fd_probe, tap_layers
from fdseg.training.data import RunData
from fdseg.training.heads import MulticlassHead, build_head, nan_to_none

METRICS = ("dice", "iou", "sensitivity", "specificity", "precision")


def multiclass_rows(
    cfg: Any, model: nn.Module, data: RunData, split: str, device: torch.device
) -> tuple[list[dict[str, Any]], MulticlassHead]:
    """Long-form rows (one per image and class) of ``split``; see the module docstring."""
    head = build_head(cfg)
    if head is None:
        raise ValueError("multiclass_rows needs a multi-class model.head")
    layers = tap_layers(cfg, model)
    probe: Any = build_fd_probe(cfg, layers).to(device)
    names = ("background", *head.class_names)
    rows: list[dict[str, Any]] = []
    with FeatureTap(model, layers) as feats, torch.no_grad():
        for batch in data.eval_loader(split, cfg.train.eval_batch_size):
            image = batch["image"].to(device)
            mask = batch["mask"].to(device)
            logits = model(image).float()
            counts = head.counts(logits, mask)
            metrics = per_class_metrics(counts)
            fd = probe.per_image_class({k: v.float() for k, v in feats.items()}, mask)  # layer -> (B, K)
            sources = batch.get("source")
            for b, sample_id in enumerate(batch["id"]):
                for c, name in enumerate(names):
                    row: dict[str, Any] = {
                        "id": sample_id,
                        "source": int(sources[b]) if sources is not None else 0,
                        "class": name,
                        "label": c,
                    }
                    row.update({k: int(counts[k][b, c]) for k in ("tp", "fp", "fn", "tn")})
                    row.update({k: float(metrics[k][b, c]) for k in METRICS})
                    row["empty_gt"] = bool(metrics["empty_gt"][b, c])
                    row["absent"] = bool(metrics["absent"][b, c])
                    for layer, values in fd.items():
                        row[f"fd/{layer}"] = float("nan") if c == 0 else float(values[b, c - 1])
                    rows.append(row)
    return rows, head


def summarize_rows(rows: list[dict[str, Any]], head: MulticlassHead) -> dict[str, Any]:
    """Per-class means, macro averages, policy and aggregation rule of long-form rows."""
    names = ["background", *head.class_names]
    ids = list(dict.fromkeys(str(r["id"]) for r in rows))
    index = {i: n for n, i in enumerate(ids)}
    out: dict[str, Any] = {"per_class": {}, "mean": {}}
    absent = np.zeros((len(ids), len(names)), bool)
    for r in rows:
        absent[index[str(r["id"])], int(r["label"])] = bool(r["absent"])
    for metric in METRICS:
        table = np.full((len(ids), len(names)), np.nan)
        for r in rows:
            table[index[str(r["id"])], int(r["label"])] = float(r[metric])
        summary = summarize_per_class(table, names, absent=absent)
        for name, entry in summary["per_class"].items():
            out["per_class"].setdefault(name, {"n": entry["n"], "absent": entry["absent"]})[metric] = entry[
                "mean"
            ]
        out["mean"][metric] = summary["macro"]
        out.setdefault("macro_with_background", {})[metric] = summary["macro_with_background"]
    fd_keys = [k for k in rows[0] if k.startswith("fd/")] if rows else []
    out["fd_mean"] = {}
    for key in fd_keys:
        values = np.asarray([float(r[key]) for r in rows], dtype=float)
        out["fd_mean"][key[3:]] = (
            nan_to_none(float(np.nanmean(values))) if np.isfinite(values).any() else None
        )
    out.update(
        {
            "n": len(ids),
            "head": head.head,
            "classes": names,
            "aggregation": AGGREGATION
            if head.head == "binary_per_class"
            else "argmax over K + 1 softmax logits",
            "threshold": head.threshold,
            "empty_policy": f"{DEFAULT_CLASS_EMPTY_POLICY} per class: a class absent from both the ground "
            "truth and the prediction of an image has no Dice there (counted as absent, left out of the "
            "class mean); predicted but absent from the ground truth scores 0. mean = macro average over the "
            "foreground "
            "classes that have a value.",
        }
    )
    return out


def write_multiclass_evaluation(
    out_dir: Path, rows: list[dict[str, Any]], head: MulticlassHead, **extra: Any
) -> dict[str, Any]:
    """Write ``per_sample.csv`` (long form) and return the summary (the caller writes ``summary.json``)."""
    import csv
    import io

    if not rows:
        raise ValueError(f"{out_dir}: nothing to evaluate (empty split)")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out_dir / "per_sample.csv", buf.getvalue())
    summary = summarize_rows(rows, head)
    summary.update(extra)
    return summary
