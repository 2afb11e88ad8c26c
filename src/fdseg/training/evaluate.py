"""Per-image evaluation of a run and mask prediction for new images.

:func:`evaluate_run` thresholds the predictions (p > 0.5), counts tp/fp/fn/tn per image, derives Dice, IoU,
sensitivity, specificity and precision per image (empty ground truth: Dice = IoU = 1 if the prediction is
also empty, else 0, and the image is flagged ``empty_gt``), and records the unweighted L_fd of every tapped
layer per image (``FeatureDiscrepancyLoss.per_image``; an image without foreground or background at a layer's
scale has no L_fd there: NaN). It also reports the released code's soft batch Dice (probabilities, batches of
``train.eval_batch_size``, averaged over batches) under its own name, ``soft_batch_dice``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import torch
from PIL import Image

from fdseg.metrics import confusion_counts, metrics_from_counts, soft_batch_dice
from fdseg.models import FeatureTap
from fdseg.training.build import build_fd_probe, build_model, tap_layers
from fdseg.training.data import RunData, build_run_data, load_image, resize_image
from fdseg.training.history import atomic_write_text
from fdseg.training.run import Runtime, load_model_weights, read_config, write_json

if TYPE_CHECKING:
    from torch import nn

CHECKPOINTS = ("best", "last", "phase1_best")
SPLITS = ("test", "val", "train")
EMPTY_POLICY: Final = "one_if_pred_empty"
METRIC_COLUMNS = ("dice", "iou", "sensitivity", "specificity", "precision")


def _checkpoint_path(run_dir: Path, checkpoint: str) -> Path:
    if checkpoint not in CHECKPOINTS:
        from fdseg._checks import did_you_mean

        raise ValueError(
            f"unknown checkpoint {checkpoint!r}{did_you_mean(checkpoint, CHECKPOINTS)} valid: {CHECKPOINTS}"
        )
    path = run_dir / "checkpoints" / f"{checkpoint}.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (train the run first: fdseg train --out {run_dir})")
    return path


def _load(run_dir: Path, checkpoint: str, runtime: Runtime) -> tuple[Any, nn.Module, torch.device]:
    cfg = read_config(run_dir)
    path = _checkpoint_path(run_dir, checkpoint)
    model = build_model(cfg)
    load_model_weights(model, path)
    device = torch.device("cuda" if runtime.cuda else "cpu")
    model.to(device).eval()
    return cfg, model, device


def evaluate_run(
    run_dir: str | Path,
    *,
    split: str = "test",
    checkpoint: str = "best",
    runtime: Runtime | None = None,
    data: RunData | None = None,
) -> dict[str, Any]:
    """Evaluate one checkpoint of a run per image and write ``<run>/<split>/{per_sample.csv,summary.json}``.

    Args:
        run_dir: a trained run directory.
        split: ``test`` (default), ``val`` or ``train`` (ids from ``split.json``).
        checkpoint: ``best``, ``last`` or ``phase1_best``.
        runtime: device choice (CPU by default).
        data: the run's data when already built (skips rebuilding it).

    Returns:
        The summary: ``{"split", "checkpoint", "n", "mean": {metric: value}, "per_source": …,
        "empty_gt", "empty_policy", "threshold", "soft_batch_dice", "fd_mean": {layer: value}}``.

    Raises:
        FileNotFoundError: no such run or checkpoint.
        ValueError: unknown split or checkpoint name.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {SPLITS}")
    run_dir = Path(run_dir)
    runtime = runtime or Runtime()
    cfg, model, device = _load(run_dir, checkpoint, runtime)
    data = data or build_run_data(cfg, run_dir)
    layers = tap_layers(cfg, model)
    probe: Any = build_fd_probe(cfg, layers).to(device)
    rows: list[dict[str, Any]] = []
    soft: list[float] = []
    with FeatureTap(model, layers) as feats, torch.no_grad():
        for batch in data.eval_loader(split, cfg.train.eval_batch_size):
            image = batch["image"].to(device)
            mask = batch["mask"].to(device)
            logits = model(image).float()
            features = {k: v.float() for k, v in feats.items()}
            counts = confusion_counts(logits, mask)
            metrics = metrics_from_counts(**counts, empty_policy=EMPTY_POLICY)
            soft.append(float(soft_batch_dice(torch.sigmoid(logits), mask)))
            fd_values = probe.per_image(features, mask)  # layer -> (B,), NaN where no fg or no bg
            sources = batch.get("source")
            for b, sample_id in enumerate(batch["id"]):
                row: dict[str, Any] = {
                    "id": sample_id,
                    "source": int(sources[b]) if sources is not None else 0,
                }
                for key in ("tp", "fp", "fn", "tn"):
                    row[key] = int(counts[key][b, 0])
                for key in METRIC_COLUMNS:
                    row[key] = float(metrics[key][b, 0])
                row["empty_gt"] = bool(metrics["empty_gt"][b, 0])
                row.update({f"fd/{layer}": float(values[b]) for layer, values in fd_values.items()})
                rows.append(row)
    if not rows:
        raise ValueError(f"{run_dir}: the {split} split is empty")
    out_dir = run_dir / split
    atomic_write_text(out_dir / "per_sample.csv", _to_csv(rows))
    summary = _summarise(rows, split=split, checkpoint=checkpoint, soft=soft)
    write_json(out_dir / "summary.json", summary)
    return summary


def _to_csv(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _nanmean(values: Sequence[float]) -> float | None:
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else None


def _summarise(
    rows: list[dict[str, Any]], *, split: str, checkpoint: str, soft: list[float]
) -> dict[str, Any]:
    fd_keys = [k for k in rows[0] if k.startswith("fd/")]
    per_source: dict[str, Any] = {}
    for source in sorted({r["source"] for r in rows}):
        sub = [r for r in rows if r["source"] == source]
        per_source[str(source)] = {"n": len(sub), "dice": _nanmean([r["dice"] for r in sub])}
    return {
        "split": split,
        "checkpoint": checkpoint,
        "n": len(rows),
        "threshold": 0.5,
        "mean": {k: _nanmean([r[k] for r in rows]) for k in METRIC_COLUMNS},
        "per_source": per_source,
        "empty_gt": sum(bool(r["empty_gt"]) for r in rows),
        "empty_policy": f"{EMPTY_POLICY}: Dice = IoU = 1 when the ground truth and the prediction are "
        "both empty, else 0; sensitivity is undefined (NaN) on an empty ground truth and left out of "
        "its mean",
        "soft_batch_dice": float(np.mean(soft)) if soft else None,
        "fd_mean": {k[3:]: _nanmean([r[k] for r in rows]) for k in fd_keys},
    }


def predict(
    run_dir: str | Path,
    images: Sequence[str | Path],
    out_dir: str | Path,
    *,
    checkpoint: str = "best",
    runtime: Runtime | None = None,
    threshold: float = 0.5,
) -> list[Path]:
    """Segment image files with a trained run; masks are written at each image's native size.

    Each image is decoded like the training data (RGB, or grey for one input channel), resized to the run's
    ``data.image_size``, segmented, thresholded at ``threshold`` and the mask resized back (nearest) to the
    image's size. Output: ``out_dir/<image stem>.png``, uint8 0/255.

    Args:
        run_dir: a trained run directory.
        images: image files (PNG, JPEG, TIFF).
        out_dir: created if needed.
        checkpoint: ``best``, ``last`` or ``phase1_best``.
        runtime: device choice (CPU by default).
        threshold: probability threshold in (0, 1).

    Returns:
        The written mask paths, in the order of ``images``.

    Raises:
        FileNotFoundError: a missing image (named) or run.
        ValueError: an unreadable image (named); two images with the same stem.
    """
    run_dir, out = Path(run_dir), Path(out_dir)
    paths = [Path(p) for p in images]
    if not paths:
        raise ValueError("predict: no images given")
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})
        raise ValueError(f"predict: several images share the file stem(s) {dup}; their masks would collide")
    cfg, model, device = _load(run_dir, checkpoint, runtime or Runtime())
    size = cfg.data.image_size
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with torch.no_grad():
        for path in paths:
            array = load_image(path, channels=cfg.model.in_channels)  # (H, W, C) uint8
            height, width = array.shape[:2]
            small = resize_image(array, size)
            tensor = (
                torch.from_numpy(np.array(small)).permute(2, 0, 1).float().div(255.0).unsqueeze(0).to(device)
            )
            probs = torch.sigmoid(model(tensor).float())[0, 0].cpu().numpy()
            mask_small = Image.fromarray(((probs > threshold) * 255).astype(np.uint8))
            mask = mask_small.resize((width, height), Image.Resampling.NEAREST)
            target = out / f"{path.stem}.png"
            tmp = target.with_name(target.name + ".tmp")
            mask.save(tmp, format="PNG")
            tmp.replace(target)
            written.append(target)
    return written
