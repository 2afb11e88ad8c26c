"""Per-image evaluation of a run and mask prediction for new images.

:func:`evaluate_run` thresholds the predictions (p > 0.5), counts tp/fp/fn/tn per image, derives Dice, IoU,
sensitivity, specificity and precision per image (empty ground truth: Dice = IoU = 1 if the prediction is
also empty, else 0, and the image is flagged ``empty_gt``), and records the unweighted L_fd of every tapped
layer per image (``FeatureDiscrepancyLoss.per_image``; an image without foreground or background at a layer's
scale has no L_fd there: NaN). It also reports the released code's soft batch Dice (probabilities, batches of
``train.eval_batch_size``, averaged over batches) under its own name, ``soft_batch_dice``.

A run trained on tiles (``data.preprocess: tile``) is evaluated per *image* at native resolution: each test
image is segmented with a sliding window of ``data.image_size``² (:func:`sliding_window_logits`: overlap 0.25,
Gaussian blending), metrics are counted on the whole image, ``fd/<layer>`` is the mean (over the image's tiles
that have both foreground and background at that layer) of the per-tile L_fd, and ``soft_batch_dice`` is
averaged over images (batches of one image). The summary's ``mode`` says which evaluation ran (``resize``:
per cached resized image; ``sliding``: per native image).

:func:`predict` segments new image files in one of two modes: ``resize`` (resize to the training size,
segment, resize the mask back) or ``sliding`` (sliding window at native resolution).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import torch
from monai.inferers.inferer import SlidingWindowInferer
from PIL import Image

from fdseg._checks import check_option, did_you_mean
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
PREDICT_MODES = ("resize", "sliding")
#: Fraction of the window shared by neighbouring sliding windows.
SLIDING_OVERLAP: Final = 0.25


def _checkpoint_path(run_dir: Path, checkpoint: str) -> Path:
    if checkpoint not in CHECKPOINTS:
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
            fd_values = probe.per_image(features, mask)  # layer -> (B,), NaN where no fg or no bg
            sources = batch.get("source")
            for b, sample_id in enumerate(batch["id"]):
                row: dict[str, Any] = {
                    "id": sample_id,
                    "source": int(sources[b]) if sources is not None else 0,
                }
                row.update(_metric_row(logits[b : b + 1], mask[b : b + 1]))
                row.update({f"fd/{layer}": float(values[b]) for layer, values in fd_values.items()})
                rows.append(row)
            if not data.tiled:
                soft.append(float(soft_batch_dice(torch.sigmoid(logits), mask)))
    if data.tiled:
        rows, soft = _per_image_rows(
            model,
            data,
            split,
            rows,
            roi=cfg.data.image_size,
            sw_batch_size=cfg.train.eval_batch_size,
            device=device,
        )
    if not rows:
        raise ValueError(f"{run_dir}: the {split} split is empty")
    out_dir = run_dir / split
    atomic_write_text(out_dir / "per_sample.csv", _to_csv(rows))
    summary = _summarise(rows, split=split, checkpoint=checkpoint, soft=soft)
    summary["mode"] = "sliding" if data.tiled else "resize"
    write_json(out_dir / "summary.json", summary)
    return summary


def _metric_row(logits: torch.Tensor, mask: torch.Tensor) -> dict[str, Any]:
    """Confusion counts and metrics of one image: logits and mask (1, 1, H, W)."""
    counts = confusion_counts(logits, mask)
    metrics = metrics_from_counts(**counts, empty_policy=EMPTY_POLICY)
    row: dict[str, Any] = {key: int(counts[key][0, 0]) for key in ("tp", "fp", "fn", "tn")}
    row.update({key: float(metrics[key][0, 0]) for key in METRIC_COLUMNS})
    row["empty_gt"] = bool(metrics["empty_gt"][0, 0])
    return row


def _per_image_rows(
    model: nn.Module,
    data: RunData,
    split: str,
    tile_rows: list[dict[str, Any]],
    *,
    roi: int,
    sw_batch_size: int,
    device: torch.device,
) -> tuple[list[dict[str, Any]], list[float]]:
    """Rows of a tiled run: whole native images segmented by sliding window, L_fd averaged over tiles."""
    fd_keys = [k for k in tile_rows[0] if k.startswith("fd/")] if tile_rows else []
    fd_of: dict[str, list[dict[str, Any]]] = {}
    for tile in tile_rows:
        fd_of.setdefault(str(tile["id"]).rpartition("@")[0], []).append(tile)
    rows: list[dict[str, Any]] = []
    soft: list[float] = []
    with torch.no_grad():
        for image_id, image, mask in data.images(split):
            x = _to_tensor(image).to(device)
            target = torch.from_numpy(np.array(mask, dtype=bool))[None, None].float().to(device)
            logits = sliding_window_logits(model, x, roi=roi, sw_batch_size=sw_batch_size)
            row: dict[str, Any] = {"id": image_id, "source": 0, "tiles": len(fd_of.get(image_id, []))}
            row.update(_metric_row(logits, target))
            for key in fd_keys:
                row[key] = _nanmean([float(t[key]) for t in fd_of.get(image_id, [])])
            soft.append(float(soft_batch_dice(torch.sigmoid(logits), target)))
            rows.append(row)
    for row in rows:  # NaN, as in a resize run, where no tile of the image had fg and bg at that layer
        row.update({key: float("nan") if row[key] is None else row[key] for key in fd_keys})
    return rows, soft


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint8 -> (1, C, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div(255.0).unsqueeze(0)


def sliding_window_logits(
    model: nn.Module, image: torch.Tensor, *, roi: int, sw_batch_size: int = 4
) -> torch.Tensor:
    """Logits of a whole image from ``roi``² windows (MONAI ``SlidingWindowInferer``).

    Windows overlap by :data:`SLIDING_OVERLAP` and are blended with Gaussian weights; an image smaller than
    the window is zero-padded to it (and the output cropped back).

    Args:
        model: the network in eval mode; it must accept ``(b, C, roi, roi)``.
        image: (1, C, H, W) float32 in [0, 1], any H and W.
        roi: the window side (the run's training input side).
        sw_batch_size: windows per forward pass.

    Returns:
        (1, K, H, W) float32 logits.
    """
    inferer = SlidingWindowInferer(
        roi_size=(roi, roi), sw_batch_size=sw_batch_size, overlap=SLIDING_OVERLAP, mode="gaussian"
    )
    out = inferer(image, lambda x: model(x).float())
    if not isinstance(out, torch.Tensor):  # pragma: no cover - a plain network returns one tensor
        raise TypeError(f"the model returned {type(out).__name__}, expected one logits tensor")
    return out


def segment_image(
    model: nn.Module,
    image: np.ndarray,
    *,
    mode: str,
    size: int,
    threshold: float = 0.5,
    sw_batch_size: int = 4,
    device: torch.device | None = None,
) -> np.ndarray:
    """Segment one decoded image at its native size.

    Args:
        model: the network in eval mode (binary: one output channel).
        image: (H, W, C) uint8.
        mode: ``resize`` (resize to ``size``², segment, threshold, resize the mask back with nearest) or
            ``sliding`` (:func:`sliding_window_logits` with ``size``² windows at native resolution).
        size: the run's training input side (``data.image_size``).
        threshold: probability threshold in (0, 1).
        sw_batch_size: windows per forward pass (``sliding``).
        device: where the model is (default CPU).

    Returns:
        (H, W) bool.

    Raises:
        ValueError: an unknown mode or a threshold outside (0, 1).
    """
    check_option("predict mode", mode, PREDICT_MODES)
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    device = device or torch.device("cpu")
    height, width = image.shape[:2]
    with torch.no_grad():
        if mode == "sliding":
            logits = sliding_window_logits(
                model, _to_tensor(image).to(device), roi=size, sw_batch_size=sw_batch_size
            )
            return np.asarray(torch.sigmoid(logits)[0, 0].cpu().numpy() > threshold)
        small = _to_tensor(resize_image(image, size)).to(device)
        probs = torch.sigmoid(model(small).float())[0, 0].cpu().numpy()
    mask_small = Image.fromarray(((probs > threshold) * 255).astype(np.uint8))
    return np.asarray(mask_small.resize((width, height), Image.Resampling.NEAREST)) > 127


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
    mode: str | None = None,
) -> list[Path]:
    """Segment image files with a trained run; masks are written at each image's native size.

    Each image is decoded like the training data (RGB, or grey for one input channel) and segmented by
    :func:`segment_image`: ``resize`` resizes it to the run's ``data.image_size``, segments, thresholds at
    ``threshold`` and resizes the mask back (nearest); ``sliding`` segments it at native resolution with
    ``data.image_size``² sliding windows (overlap 0.25, Gaussian blending; images smaller than a window are
    padded). Output: ``out_dir/<image stem>.png``, uint8 0/255.

    Args:
        run_dir: a trained run directory.
        images: image files (PNG, JPEG, TIFF).
        out_dir: created if needed.
        checkpoint: ``best``, ``last`` or ``phase1_best``.
        runtime: device choice (CPU by default).
        threshold: probability threshold in (0, 1).
        mode: ``resize`` or ``sliding``; ``None`` picks how the run was trained: ``sliding`` for a run
            trained on tiles (``data.preprocess: tile``), ``resize`` for one trained on resized images.

    Returns:
        The written mask paths, in the order of ``images``.

    Raises:
        FileNotFoundError: a missing image (named) or run.
        ValueError: an unreadable image (named); two images with the same stem; an unknown mode.
    """
    if mode is not None:
        check_option("predict mode", mode, PREDICT_MODES)
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
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
    mode = mode or default_predict_mode(cfg)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for path in paths:
        array = load_image(path, channels=cfg.model.in_channels)  # (H, W, C) uint8
        mask = segment_image(
            model,
            array,
            mode=mode,
            size=cfg.data.image_size,
            threshold=threshold,
            sw_batch_size=cfg.train.eval_batch_size,
            device=device,
        )
        target = out / f"{path.stem}.png"
        tmp = target.with_name(target.name + ".tmp")
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp, format="PNG")
        tmp.replace(target)
        written.append(target)
    return written


def default_predict_mode(cfg: Any) -> str:
    """``sliding`` for a run trained on tiles, ``resize`` for one trained on resized images."""
    return "sliding" if cfg.data.preprocess == "tile" else "resize"
