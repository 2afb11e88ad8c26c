"""Per-image evaluation of a run and mask prediction for new images.

:func:`evaluate_run` thresholds the predictions (p > 0.5), counts tp/fp/fn/tn per image, derives Dice, IoU,
sensitivity, specificity and precision per image (empty ground truth: Dice = IoU = 1 if the prediction is
also empty, else 0, and the image is flagged ``empty_gt``), and records the unweighted L_fd of every tapped
layer per image (``FeatureDiscrepancyLoss.per_image``; an image without foreground or background at a layer's
scale has no L_fd there: NaN). It also reports the released code's soft batch Dice (probabilities, batches of
``train.eval_batch_size``, averaged over batches) under its own name, ``soft_batch_dice``.

What is evaluated, and where the results go (``<run>/<folder>/{per_sample.csv,summary.json}``):

- ``split``: the run's own ``test`` (default), ``val`` or ``train`` images → folder ``<split>``.
- ``dataset="NAME:PATH"``: every image of another dataset with ground truth (external validation, e.g. a
  TNBC-trained run on the MoNuSeg test set) → folder ``external/<format>-<folder name>`` (plus ``-`` and 8
  hex digits of the spec's sha1 when that folder holds another dataset's results), so the run's own
  results are never overwritten.
- ``views="paper"``: the paper's 5-view augmented test set (method-spec §D3, §F1): identity, horizontal
  flip, vertical flip, rotation by 90° and by 270° (counter-clockwise, ``np.rot90`` with k = 1 and k = -1)
  of every image, each view one row with a ``view`` column → suffix ``_views`` (e.g. ``test_views``).
- ``at="native"``: each image at its native size: resized to the training size as in training, segmented,
  the *probabilities* resized back bilinearly and thresholded, metrics counted against the native mask
  → suffix ``_native``. ``at="training"`` (default) counts on the cached images of the training size.
- ``checkpoint`` other than ``best`` → suffix ``_<checkpoint>`` (e.g. ``test_native_views_last``: the
  suffixes come in this order), so that the run's own ``test/`` always holds the best checkpoint's scores.

A run trained on tiles (``data.preprocess: tile``) is always evaluated per *image* at native resolution
(no ``_native`` suffix): each image is segmented with a sliding window of ``data.image_size``²
(:func:`sliding_window_logits`: overlap 0.25, Gaussian blending), metrics are counted on the whole image,
``fd/<layer>`` is the mean (over the image's tiles that have both foreground and background at that layer)
of the per-tile L_fd, and ``soft_batch_dice`` is averaged over images (batches of one image). The summary's
``mode`` says which evaluation ran (``resize``: per cached resized image; ``native``: resized for the
network, scored at native size; ``sliding``: per native image).

A multi-class run (``model.head`` = ``binary_per_class`` | ``softmax``) is scored on its own split at
training size, and ``per_sample.csv`` is in **long form**: one row per image and class (background included
as class 0) with ``class`` and ``label`` columns, ``absent`` beside ``empty_gt``, and the per-image,
per-class L_fd (NaN for the background and where the class is absent at that layer's scale). A class absent
from both the ground truth and the prediction of an image has no Dice there (NaN, counted in ``absent``,
left out of the class mean); predicted but absent from the ground truth scores 0
(:mod:`fdseg.metrics.multiclass`). ``summary.json`` gives per-class means, the macro average over the
foreground classes (``mean.dice`` is that macro Dice, so that tables reading ``mean`` work unchanged), the
policy and the ``binary_per_class`` aggregation rule.

An evaluation on fewer than :data:`MIN_IMAGES` images, or whose images all come from one patient/slide
group, logs a warning and records it under ``warnings`` in the summary.

:func:`predict` segments new image files, resized to the training size or by sliding window
(:func:`predict_probabilities`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

import numpy as np
import tifffile
import torch
import torch.nn.functional as F
from monai.inferers.utils import sliding_window_inference
from PIL import Image
from scipy import ndimage

from fdseg._checks import check_option
from fdseg._io import atomic_path
from fdseg.data import apply_view, read_image
from fdseg.data.base import IMAGE_EXTENSIONS
from fdseg.data.cache import resize_image as resize_to
from fdseg.data.cache import resize_mask
from fdseg.data.formats._io import image_size
from fdseg.data.open import open_dataset
from fdseg.data.splits import load_splits
from fdseg.metrics import (
    AGGREGATION,
    DEFAULT_CLASS_EMPTY_POLICY,
    METRIC_KEYS,
    confusion_counts,
    metrics_from_counts,
    soft_batch_dice,
    summarize_per_class,
)
from fdseg.metrics.multiclass import per_class_metrics
from fdseg.models import FeatureTap
from fdseg.training.build import build_fd_loss, build_model, tap_layers
from fdseg.training.data import RunData, build_run_data, cache_dataset
from fdseg.training.heads import MulticlassHead, build_head
from fdseg.training.rundir import Runtime, load_model_weights, read_config, write_json

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

CHECKPOINTS = ("best", "last", "phase1_best")
SPLITS = ("test", "val", "train")
EMPTY_POLICY: Final = "one_if_pred_empty"
PREDICT_MODES = ("resize", "sliding")
#: Fraction of the window shared by neighbouring sliding windows.
SLIDING_OVERLAP: Final = 0.25
#: View sets of :func:`evaluate_run`: ``none`` (the images as they are) and ``paper`` (method-spec §D3).
VIEW_SETS: Final[dict[str, tuple[str, ...]]] = {
    "none": ("identity",),
    "paper": ("identity", "hflip", "vflip", "rot90", "rot270"),
}
_VIEW_NAMES: Final = {"hflip": "fliplr", "vflip": "flipud"}  # the others keep their names in apply_view
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)
#: Where :func:`evaluate_run` counts the metrics: on the training-size images or at native size.
EVAL_AT = ("training", "native")
#: Evaluations on fewer images than this are flagged in the summary's ``warnings``.
MIN_IMAGES: Final = 10
#: Probability file formats of :func:`predict`: float32 TIFF, or 16-bit PNG (p·65535, rounded).
PROB_FORMATS = ("tiff", "png16")
#: RGB colour of the predicted contour in :func:`predict`'s overlays.
OVERLAY_COLOUR: Final = (0, 255, 0)


# -- views -------------------------------------------------------------------------------------------------


def view_array(x: ArrayT, view: str) -> ArrayT:
    """One view of an (H, W[, C]) array or a (..., H, W) tensor (:func:`fdseg.data.apply_view`):
    ``identity``, ``hflip`` (left-right), ``vflip`` (up-down), ``rot90`` / ``rot270`` (counter-clockwise by
    90° / 270°, like ``np.rot90`` with k = 1 / k = -1).

    Raises:
        ValueError: an unknown view.
    """
    if view not in VIEW_SETS["paper"]:
        raise ValueError(f"unknown view {view!r}; valid: {VIEW_SETS['paper']}")
    return cast(ArrayT, apply_view({"image": x}, _VIEW_NAMES.get(view, view))["image"])


# -- loading -----------------------------------------------------------------------------------------------


def _load(run_dir: Path, checkpoint: str, runtime: Runtime) -> tuple[Any, nn.Module, torch.device]:
    cfg = read_config(run_dir)
    check_option("checkpoint", checkpoint, CHECKPOINTS)
    path = run_dir / "checkpoints" / f"{checkpoint}.ckpt"
    if not path.is_file():
        there = [name for name in CHECKPOINTS if (run_dir / "checkpoints" / f"{name}.ckpt").is_file()]
        other = f"; the run has --checkpoint {' / '.join(there)}" if there else ""
        raise FileNotFoundError(
            f"{path} does not exist (train the run first: fdseg train -c {run_dir / 'config.yaml'} "
            f"-o {run_dir}{other})"
        )
    model = build_model(cfg)
    load_model_weights(model, path)
    device = torch.device("cuda" if runtime.cuda else "cpu")
    model.to(device).eval()
    return cfg, model, device


def _external_data(cfg: Any, run_dir: Path, spec: str, *, native: bool) -> tuple[RunData, str]:
    """Another dataset as the ``test`` set of a :class:`RunData`, cached like the run's own data (at native
    size with ``native``: the network input is resized from it anyway), and its folder name
    ``<format>-<folder name>``."""
    try:
        raw = open_dataset(spec)
        records = raw.records
    except KeyError as err:
        raise ValueError(f"--data {spec!r}: {err.args[0] if err.args else err}") from None
    if not records:
        raise ValueError(f"--data {spec!r}: the dataset has no images")
    unlabelled = [r for r in records if not r.mask_files]
    if unlabelled:
        raise ValueError(
            f"--data {spec!r}: {len(unlabelled)} of {len(records)} images have no ground-truth mask "
            f"(e.g. {unlabelled[0].image}); external evaluation needs one for every image"
        )
    cached = cache_dataset(raw, cfg, run_dir, native=native)
    channels = int(np.asarray(cached[0]["image"]).shape[-1])
    if channels != cfg.model.in_channels:
        raise ValueError(
            f"--data {spec!r}: images have {channels} channel(s) but the run's model takes "
            f"{cfg.model.in_channels} (model.in_channels)"
        )
    ids = [r.id for r in records]
    data = RunData(cached, None, {"train": [], "val": [], "test": ids}, seed=cfg.train.seed)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{raw.format_name}-{Path(raw.root).name}").strip("_")
    return data, name or "data"


def _holds_other(folder: Path, spec: str) -> bool:
    """Whether ``folder`` already holds the results of a dataset other than ``spec``."""
    try:
        other = json.loads((folder / "summary.json").read_text()).get("data")
    except (OSError, ValueError, AttributeError):
        return False
    return other is not None and other != spec


# -- evaluation --------------------------------------------------------------------------------------------


def evaluate_run(
    run_dir: str | Path,
    *,
    split: str = "test",
    checkpoint: str = "best",
    runtime: Runtime | None = None,
    data: RunData | None = None,
    views: str = "none",
    at: str = "training",
    dataset: str | None = None,
    finished: bool | None = None,
) -> dict[str, Any]:
    """Evaluate one checkpoint of a run per image; write ``per_sample.csv`` and ``summary.json`` to the
    folder the module docstring describes (``<run_dir>/test`` by default).

    Args:
        run_dir: a trained run directory.
        split: ``test`` (default), ``val`` or ``train`` (ids from ``split.json``).
        checkpoint: ``best``, ``last`` or ``phase1_best``.
        runtime: device choice (CPU by default).
        data: the run's data when already built (skips rebuilding it; ignored with ``dataset``).
        views: ``none`` (default) or ``paper`` (:data:`VIEW_SETS`).
        at: ``training`` (default) or ``native``.
        dataset: a dataset spec ``NAME:PATH[?opt=v]`` with ground truth to score the run on instead of its
            own split (every image of it).
        finished: whether the run has finished training (``None``: it has when ``<run_dir>/DONE`` exists);
            the summary's ``warnings`` say when it has not.

    Returns:
        The summary: ``{"split", "checkpoint", "data", "views", "view_names", "at", "mode", "n",
        "n_images", "n_groups", "warnings", "mean": {metric: value}, "per_view": {view: {...}},
        "per_source", "empty_gt", "empty_policy", "threshold", "soft_batch_dice", "fd_mean": {layer: value},
        "dir"}``; ``n`` counts rows (images × views). A multi-class run's summary is ``{"per_class": {class:
        {"n", "absent", metric: mean}}, "mean": {metric: macro mean over the foreground classes},
        "macro_with_background", "fd_mean", "n" (images), "head", "classes", "aggregation", "threshold",
        "empty_policy", "split", "checkpoint", "mode", "at", "data", "dir"}``.

    Raises:
        FileNotFoundError: no such run, checkpoint or dataset folder.
        ValueError: an unknown split, checkpoint, view set or ``at``; a dataset spec that cannot be opened,
            an image that cannot be read (named), a dataset without ground truth or with another channel
            count than the model's; views, ``at="native"`` or a dataset for a multi-class run.
    """
    check_option("split", split, SPLITS)
    check_option("view set", views, tuple(VIEW_SETS))
    check_option("evaluation size (at)", at, EVAL_AT)
    if dataset is not None and split != "test":
        raise ValueError(
            f"split {split!r} has no meaning with an external dataset (all its images are scored)"
        )
    run_dir = Path(run_dir)
    cfg, model, device = _load(run_dir, checkpoint, runtime or Runtime())
    head = build_head(cfg)
    if head is not None and (views != "none" or at != "training" or dataset is not None):
        raise ValueError(
            f"a multi-class run ({run_dir}, model.head = {cfg.model.head}) is evaluated on its own split at "
            "training size only (no --views, --at native or external dataset)"
        )
    folder = split
    if dataset is not None:
        data, name = _external_data(cfg, run_dir, dataset, native=at == "native")
        folder = f"external/{name}"
    data = data or build_run_data(cfg, run_dir)
    layers = tap_layers(cfg, model)
    probe: Any = build_fd_loss(cfg, layers).to(device)  # unweighted: λ = 1 per layer
    soft: dict[str, list[float]] = {view: [] for view in VIEW_SETS[views]}
    native = head is None and (data.tiled or at == "native")  # whole images at native size
    with FeatureTap(model, layers) as feats, torch.no_grad():
        scorer = _Scorer(model, feats, probe, data, split, VIEW_SETS[views], cfg, device, soft)
        rows = scorer.batched_rows(head) if data.tiled or not native else []  # tiles: L_fd averaged per image
        if native:
            rows = scorer.image_rows(rows)
    if not rows:
        raise ValueError(f"{run_dir}: the {split} split is empty")
    spec = data.base.raw.spec
    suffix = ("_native" if at == "native" and not data.tiled else "") + ("_views" if views != "none" else "")
    suffix += f"_{checkpoint}" if checkpoint != "best" else ""
    out_dir = run_dir / f"{folder}{suffix}"
    if dataset is not None and _holds_other(out_dir, spec):  # same folder name, another dataset
        out_dir = run_dir / f"{folder}-{hashlib.sha1(spec.encode()).hexdigest()[:8]}{suffix}"
    columns = [k for k in rows[0] if k != "view" or views != "none"]
    with atomic_path(out_dir / "per_sample.csv") as tmp, tmp.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    if head is None:
        summary = {"split": split, "checkpoint": checkpoint, **_summarise(rows, soft, views)}
    else:
        summary = {**_class_summary(rows, head), "split": split, "checkpoint": checkpoint}
    summary["mode"] = "sliding" if native and data.tiled else ("native" if native else "resize")
    summary["at"] = "native" if native else at
    summary["data"] = spec if dataset is not None else cfg.data.base
    if head is None:
        summary.update(_coverage(data, list(dict.fromkeys(str(r["id"]) for r in rows))))
    if not (finished if finished is not None else (run_dir / "DONE").is_file()):
        summary.setdefault("warnings", []).append(
            f"the run has not finished training (no DONE): these are the scores of its {checkpoint} "
            "checkpoint so far"
        )
    summary["dir"] = str(out_dir)
    for message in summary.get("warnings", []):
        log.warning("%s: %s", out_dir, message)
    write_json(out_dir / "summary.json", summary)
    return summary


def _coverage(data: RunData, ids: Sequence[str]) -> dict[str, Any]:
    """Image and group counts of an evaluation, with the warnings they call for."""
    group_of = {r.id: r.group for r in data.base.records}
    groups = [group_of.get(i) for i in ids]
    known = {g for g in groups if g is not None}
    n_groups = len(known) + sum(g is None for g in groups)
    warnings: list[str] = []
    if len(ids) < MIN_IMAGES:
        warnings.append(
            f"only {len(ids)} image(s) evaluated (fewer than {MIN_IMAGES}): the means are rough estimates; "
            "pool several splits or folds before drawing conclusions"
        )
    if len(ids) > 1 and n_groups == 1 and known:
        warnings.append(
            f"all {len(ids)} images come from a single group ({next(iter(known))!r}, one patient/slide): "
            "the result says little about other patients or slides"
        )
    return {"n_images": len(ids), "n_groups": n_groups, "warnings": warnings}


def _scores(
    logits: torch.Tensor, mask: torch.Tensor, *, from_logits: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Binary confusion counts and metrics, each (B, 1), of logits (or probabilities), mask (B, 1, H, W)."""
    counts = confusion_counts(logits, mask, from_logits=from_logits)
    return counts, metrics_from_counts(**counts, empty_policy=EMPTY_POLICY)


def _row(
    counts: dict[str, Any], metrics: dict[str, Any], fd: dict[str, Any], b: int, c: int
) -> dict[str, Any]:
    """Counts, metrics, flags (``empty_gt``, multi-class ``absent``) and ``fd/<layer>`` of image ``b``,
    channel or class ``c`` (``fd`` values: (B,) or (B, K + 1))."""
    row: dict[str, Any] = {key: int(counts[key][b, c]) for key in ("tp", "fp", "fn", "tn")}
    row.update({key: float(metrics[key][b, c]) for key in METRIC_KEYS})
    row.update({key: bool(metrics[key][b, c]) for key in ("empty_gt", "absent") if key in metrics})
    row.update({f"fd/{layer}": float(v[b, c] if v.ndim == 2 else v[b]) for layer, v in fd.items()})
    return row


@dataclass
class _Scorer:
    """The rows of one evaluation: the network (eval mode) with its tapped features, the unweighted L_fd
    ``probe``, the data and split, and the soft batch Dice of each view (``soft``, appended to)."""

    model: nn.Module
    feats: dict[str, torch.Tensor]
    probe: Any
    data: RunData
    split: str
    views: Sequence[str]
    cfg: Any
    device: torch.device
    soft: dict[str, list[float]]

    def batched_rows(self, head: MulticlassHead | None) -> list[dict[str, Any]]:
        """Rows of the cached items (training-size images, or tiles) of the split under every view: one per
        item, or with a multi-class ``head`` one per item and class (background first, no L_fd: NaN)."""
        classes = () if head is None else ("background", *head.class_names)
        labels = [{"class": name, "label": c} for c, name in enumerate(classes)] or [{}]
        rows: list[dict[str, Any]] = []
        for batch in self.data.eval_loader(self.split, self.cfg.train.eval_batch_size):
            sources = batch.get("source")
            for view in self.views:
                image = view_array(batch["image"], view).to(self.device)
                mask = view_array(batch["mask"], view).to(self.device)
                logits = self.model(image).float()
                features = {k: v.float() for k, v in self.feats.items()}
                if head is None:
                    counts, metrics = _scores(logits, mask)
                    fd = self.probe.per_image(features, mask)  # layer -> (B,), NaN where no fg or no bg
                else:
                    counts = head.counts(logits, mask)
                    metrics = per_class_metrics(counts)
                    fd = self.probe.per_image_class(features, mask)  # layer -> (B, K), NaN: class absent
                    fd = {k: F.pad(v, (1, 0), value=np.nan) for k, v in fd.items()}  # none for the background
                for b, sample_id in enumerate(batch["id"]):
                    source = int(sources[b]) if sources is not None else 0
                    for c, label in enumerate(labels):
                        row = _row(counts, metrics, fd, b, c)
                        rows.append({"id": sample_id, "view": view, "source": source, **label, **row})
                if head is None and not self.data.tiled:
                    self.soft[view].append(float(soft_batch_dice(torch.sigmoid(logits), mask)))
        return rows

    def image_rows(self, tile_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rows of whole images at native size under every view, one image per forward pass.

        A resize run: the network sees the image resized as the cache does, L_fd is measured there against
        the mask resized as the cache does, and the probabilities are resized bilinearly to the native size
        and thresholded there. A tiled run: the image is segmented by sliding window, and its L_fd is the
        mean of ``tile_rows`` (the image's tiles under the same view).
        """
        size, cached, device = self.cfg.data.image_size, self.data.base, self.device
        fd_keys = [k for k in tile_rows[0] if k.startswith("fd/")] if tile_rows else []
        tiles_of: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for tile in tile_rows:
            tiles_of.setdefault((str(tile["id"]).rpartition("@")[0], str(tile["view"])), []).append(tile)
        rows: list[dict[str, Any]] = []
        for image_id, native_image, native_mask in _native_images(self.data, self.split):
            for view in self.views:
                image, mask = view_array(native_image, view), view_array(native_mask, view)
                target = _batch(mask).to(device)
                row: dict[str, Any] = {"id": image_id, "view": view, "source": 0}
                if self.data.tiled:
                    x, batch_size = _batch(image).to(device), self.cfg.train.eval_batch_size
                    logits = sliding_window_logits(self.model, x, roi=size, sw_batch_size=batch_size)
                    probs = torch.sigmoid(logits)
                    tiles = tiles_of.get((image_id, view), [])
                    row["tiles"] = len(tiles)
                    row.update(_row(*_scores(logits, target), {}, 0, 0))
                    for key in fd_keys:  # NaN, as in a resize run, where no tile had fg and bg at that layer
                        mean = _nanmean(float(t[key]) for t in tiles)
                        row[key] = float("nan") if mean is None else mean
                else:
                    small = resize_to(image, (size, size), mode=cached.image_resize)
                    small_mask = _batch(resize_mask(mask, (size, size), mode=cached.mask_resize)).to(device)
                    logits = self.model(_batch(small).to(device)).float()
                    fd = self.probe.per_image({k: v.float() for k, v in self.feats.items()}, small_mask)
                    probs = resize_probabilities(torch.sigmoid(logits), mask.shape)
                    row.update(_row(*_scores(probs, target, from_logits=False), fd, 0, 0))
                self.soft[view].append(float(soft_batch_dice(probs, target)))
                rows.append(row)
        return rows


def _native_images(data: RunData, split: str) -> Iterable[tuple[str, np.ndarray, np.ndarray]]:
    """``(id, (H, W, C) uint8, (H, W) bool)`` at native size: from a native-size cache, else decoded."""
    cached = data.base
    if cached.size is None:
        yield from data.images(split)
        return
    records = {r.id: r for r in cached.records}
    for image_id in data.split[split]:
        sample = cached.raw.load_record(records[image_id])
        yield image_id, np.asarray(sample["image"]), np.asarray(sample["mask"], dtype=bool)


def _batch(array: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint8 image -> (1, C, H, W) float32 in [0, 1]; (H, W) mask -> (1, 1, H, W) float32 {0, 1}."""
    if array.ndim == 2:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=bool))[None, None].float()
    return torch.from_numpy(np.array(array, dtype=np.uint8)).permute(2, 0, 1).float().div(255.0).unsqueeze(0)


def _nanmean(values: Iterable[float]) -> float | None:
    """The mean of the values that are not NaN (``None`` when there are none)."""
    arr = np.asarray(list(values), dtype=float)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else None


def _summarise(rows: list[dict[str, Any]], soft: dict[str, list[float]], views: str) -> dict[str, Any]:
    """The scores of binary rows: NaN-aware means over all rows, per source and (views other than ``none``)
    per view, the empty-ground-truth count and policy, and the soft batch Dice."""
    fd_keys = [k for k in rows[0] if k.startswith("fd/")]

    def means(sub: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "mean": {k: _nanmean(r[k] for r in sub) for k in METRIC_KEYS},
            "fd_mean": {k[3:]: _nanmean(r[k] for r in sub) for k in fd_keys},
        }

    per_source: dict[str, Any] = {}
    for source in sorted({r["source"] for r in rows}):
        sub = [r for r in rows if r["source"] == source]
        per_source[str(source)] = {"n": len(sub), "dice": _nanmean(r["dice"] for r in sub)}
    summary: dict[str, Any] = {
        "views": views,
        "view_names": list(VIEW_SETS[views]),
        "n": len(rows),
        "threshold": 0.5,
        **means(rows),
        "per_source": per_source,
        "empty_gt": sum(bool(r["empty_gt"]) for r in rows),
        "empty_policy": f"{EMPTY_POLICY}: Dice = IoU = 1 when the ground truth and the prediction are "
        "both empty, else 0; sensitivity is undefined (NaN) on an empty ground truth and left out of "
        "its mean",
        "soft_batch_dice": _nanmean(v for values in soft.values() for v in values),
    }
    if views != "none":
        by_view = {view: [r for r in rows if r["view"] == view] for view in VIEW_SETS[views]}
        summary["per_view"] = {
            view: {"n": len(sub), **means(sub), "soft_batch_dice": _nanmean(soft[view])}
            for view, sub in by_view.items()
        }
    return summary


def _class_summary(rows: list[dict[str, Any]], head: MulticlassHead) -> dict[str, Any]:
    """Per-class means, macro averages, policy and aggregation rule of long-form rows (each image's K + 1
    rows in a block, background first; ``n`` counts images)."""
    names = ["background", *head.class_names]
    absent = np.asarray([bool(r["absent"]) for r in rows]).reshape(-1, len(names))
    out: dict[str, Any] = {"per_class": {}, "mean": {}, "macro_with_background": {}}
    for metric in METRIC_KEYS:
        values = np.asarray([float(r[metric]) for r in rows]).reshape(-1, len(names))
        summary = summarize_per_class(values, names, absent=absent)
        for name, entry in summary["per_class"].items():
            per_class = out["per_class"].setdefault(name, {"n": entry["n"], "absent": entry["absent"]})
            per_class[metric] = entry["mean"]
        out["mean"][metric] = summary["macro"]
        out["macro_with_background"][metric] = summary["macro_with_background"]
    return {
        **out,
        "fd_mean": {k[3:]: _nanmean(r[k] for r in rows) for k in rows[0] if k.startswith("fd/")},
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


# -- prediction --------------------------------------------------------------------------------------------


def sliding_window_logits(
    model: nn.Module, image: torch.Tensor, *, roi: int, sw_batch_size: int = 4
) -> torch.Tensor:
    """Logits of a whole image from ``roi``² windows (MONAI ``sliding_window_inference``).

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
    predictor = lambda x: model(x).float()  # noqa: E731 - one tensor in, one out
    out = sliding_window_inference(image, (roi, roi), sw_batch_size, predictor, SLIDING_OVERLAP, "gaussian")
    return cast(torch.Tensor, out)  # the predictor returns one tensor, so does the inference


def resize_probabilities(probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a probability map bilinearly (pixel centres, ``align_corners=False``; antialiased when a side
    shrinks, as Pillow does).

    Args:
        probs: (B, K, h, w) float32 in [0, 1].
        size: target (H, W).

    Returns:
        (B, K, H, W) float32 in [0, 1] (``probs`` itself when the size already matches).
    """
    height, width = int(size[0]), int(size[1])
    if tuple(probs.shape[2:]) == (height, width):
        return probs
    shrink = height < probs.shape[2] or width < probs.shape[3]
    out = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False, antialias=shrink)
    return out.clamp_(0.0, 1.0)


def _check_threshold(threshold: float) -> None:
    if not 0.0 < float(threshold) < 1.0:  # also refuses NaN
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")


def predict_probabilities(
    model: nn.Module,
    image: np.ndarray,
    *,
    mode: str,
    size: int,
    scale: tuple[float, float] = (1.0, 1.0),
    sw_batch_size: int = 4,
    device: torch.device | None = None,
) -> np.ndarray:
    """Foreground probability of every pixel of one decoded image, at its native size.

    Args:
        model: the network in eval mode (binary: one output channel).
        image: (H, W, C) uint8.
        mode: ``resize`` (resize to ``size``² as the cache does, segment, resize the probabilities back
            bilinearly) or ``sliding`` (resize by ``scale``, :func:`sliding_window_logits` with ``size``²
            windows, probabilities resized back bilinearly to (H, W)).
        size: the run's training input side (``data.image_size``).
        scale: (y, x) factors of ``sliding``: the training magnification relative to the native one
            (:func:`training_scale`); (1, 1) segments at native resolution.
        sw_batch_size: windows per forward pass (``sliding``).
        device: where the model is (default CPU).

    Returns:
        (H, W) float32 in [0, 1].

    Raises:
        ValueError: an unknown mode or a non-positive scale.
    """
    check_option("predict mode", mode, PREDICT_MODES)
    if not (scale[0] > 0 and scale[1] > 0):
        raise ValueError(f"scale must be positive, got {scale}")
    device = device or torch.device("cpu")
    height, width = image.shape[:2]
    with torch.no_grad():
        if mode == "sliding":
            scaled = (max(1, round(height * scale[0])), max(1, round(width * scale[1])))
            x = _batch(resize_to(image, scaled)).to(device)
            logits = sliding_window_logits(model, x, roi=size, sw_batch_size=sw_batch_size)
        else:
            logits = model(_batch(resize_to(image, (size, size))).to(device)).float()
        probs = resize_probabilities(torch.sigmoid(logits), (height, width))
    return np.asarray(probs[0, 0].cpu().numpy(), dtype=np.float32)


def training_scale(cfg: Any, run_dir: str | Path) -> tuple[float, float]:
    """The (y, x) factor by which the run's training resized its images (training size / native size).

    A run trained on tiles saw native pixels: (1, 1). A run trained on resized images saw its base-site
    training images (``split.json``) at ``data.image_size / native size``; that is one factor only when they
    all have the same native size (the novel site, when there is one, is not looked at).

    Raises:
        ValueError: the training images cannot be found, or have several native sizes (no single scale).
    """
    if cfg.data.preprocess == "tile":
        return 1.0, 1.0
    side = int(cfg.data.image_size)
    why = (
        f"--mode sliding on a run trained on images resized to {side}x{side} must first rescale each image "
        "by the run's training scale, so that the network sees the magnification it was trained on"
    )
    try:
        ids = load_splits(Path(run_dir) / "split.json")["base"]["train"]
        records = {r.id: r for r in open_dataset(cfg.data.base).records}
        sizes = sorted({image_size(records[i].image)[:2] for i in ids})
    except (OSError, ValueError, KeyError) as err:
        reason = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise ValueError(
            f"{why}, but the training images' native size cannot be read ({reason}); use --mode resize"
        ) from None
    if len(sizes) != 1:
        shown = ", ".join(f"{w}x{h}" for h, w in sizes[:4]) + (", ..." if len(sizes) > 4 else "")
        raise ValueError(
            f"{why}, but its {len(ids)} training images have {len(sizes)} native sizes ({shown}, W x H), so "
            "there is no single training scale; use --mode resize (each image resized as in training)"
        )
    height, width = sizes[0]
    return side / height, side / width


def contour_overlay(
    image: np.ndarray, mask: np.ndarray, colour: Sequence[int] = OVERLAY_COLOUR
) -> np.ndarray:
    """The image in RGB with the mask's contour drawn on it.

    The contour is the set of foreground pixels with a 4-neighbour that is background or outside the image
    (``mask & ~binary_erosion(mask)`` with a cross and a background border).

    Args:
        image: (H, W, C) uint8, C = 1 or 3.
        mask: (H, W) bool.
        colour: RGB of the contour.

    Returns:
        (H, W, 3) uint8.
    """
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[..., :3].copy()
    inner = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1), border_value=0)
    rgb[mask & ~inner] = np.asarray(colour, dtype=np.uint8)
    return rgb


def _write_image(target: Path, array: np.ndarray) -> Path:
    """Write ``array`` to ``target`` atomically (``.tif``: tifffile, else PNG by Pillow)."""
    with atomic_path(target) as tmp:
        if target.suffix == ".tif":
            tifffile.imwrite(tmp, array)
        else:
            Image.fromarray(array).save(tmp, format="PNG")
    return target


def predict(
    run_dir: str | Path,
    images: Sequence[str | Path],
    out_dir: str | Path,
    *,
    checkpoint: str = "best",
    runtime: Runtime | None = None,
    threshold: float = 0.5,
    mode: str | None = None,
    save_probs: str | None = None,
    overlay: bool = False,
) -> list[Path]:
    """Segment image files with a trained run; masks are written at each image's native size.

    Each image is decoded like the training data (RGB, or grey for one input channel), segmented by
    :func:`predict_probabilities` (``sliding`` at the run's :func:`training_scale`) and thresholded:
    ``p > threshold``.

    Output: ``out_dir/<image stem>.png`` (uint8 0/255); with ``save_probs`` also
    ``out_dir/probs/<stem>.tif`` (float32 p) or ``.png`` (uint16, p·65535 rounded); with ``overlay`` also
    ``out_dir/overlays/<stem>.png`` (the image with the predicted contour in :data:`OVERLAY_COLOUR`).

    Args:
        run_dir: a trained run directory.
        images: image files (PNG, JPEG, TIFF, BMP), or folders standing for the image files they hold.
        out_dir: created if needed.
        checkpoint: ``best``, ``last`` or ``phase1_best``.
        runtime: device choice (CPU by default).
        threshold: probability threshold in (0, 1).
        mode: ``resize`` or ``sliding``; ``None`` picks how the run was trained: ``sliding`` for a run
            trained on tiles (``data.preprocess: tile``), ``resize`` for one trained on resized images.
        save_probs: ``None``, ``tiff`` or ``png16`` (:data:`PROB_FORMATS`).
        overlay: also write contour overlays.

    Returns:
        The written mask paths, in the order of ``images``.

    Raises:
        FileNotFoundError: a missing image (named), a folder without images, or a missing run.
        NotADirectoryError: ``out_dir`` is a file.
        ValueError: an unreadable image (named); two images with the same stem; an output file that is one
            of the input images (named); an unknown mode or
            probability format; a threshold outside (0, 1); ``sliding`` on a resized run whose training
            scale cannot be determined (explained). Nothing is written in these cases.
    """
    if mode is not None:
        check_option("predict mode", mode, PREDICT_MODES)
    if save_probs is not None:
        check_option("probability format (--save-probs)", save_probs, PROB_FORMATS)
    _check_threshold(threshold)
    run_dir, out = Path(run_dir), Path(out_dir)
    paths: list[Path] = []
    for given in map(Path, images):  # a folder stands for its image files (not its subfolders), sorted
        if given.is_dir():
            found = sorted(p for p in given.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            if not found:
                raise FileNotFoundError(f"{given}: a folder without images ({', '.join(IMAGE_EXTENSIONS)})")
            paths += found
        else:
            paths.append(given)
    if not paths:
        raise ValueError("predict: no images given")
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
        read_image(
            path
        )  # every image decodes (no truncation, no non-finite sample) before anything is written
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})
        raise ValueError(f"predict: several images share the file stem(s) {dup}; their masks would collide")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: the output folder (--out) is a file")
    inputs = {p.resolve() for p in paths}
    names = [n for s in stems for n in (f"{s}.png", f"probs/{s}.tif", f"probs/{s}.png", f"overlays/{s}.png")]
    clash = next((out / name for name in names if (out / name).resolve() in inputs), None)
    if clash is not None:
        raise ValueError(f"predict: {clash} is an input image and would be overwritten; choose another --out")
    cfg, model, device = _load(run_dir, checkpoint, runtime or Runtime())
    mode = mode or default_predict_mode(cfg)
    scale = training_scale(cfg, run_dir) if mode == "sliding" else (1.0, 1.0)
    out.mkdir(parents=True, exist_ok=True)  # the sub-folders are created by their first file
    written: list[Path] = []
    for path in paths:
        array = read_image(path, channels=cfg.model.in_channels)[0]  # (H, W, C) uint8
        probs = predict_probabilities(
            model,
            array,
            mode=mode,
            size=cfg.data.image_size,
            scale=scale,
            sw_batch_size=cfg.train.eval_batch_size,
            device=device,
        )
        mask = probs > threshold
        written.append(_write_image(out / f"{path.stem}.png", mask.astype(np.uint8) * 255))
        if save_probs == "tiff":
            _write_image(out / "probs" / f"{path.stem}.tif", probs.astype(np.float32))
        elif save_probs == "png16":
            scaled = np.rint(np.clip(probs, 0.0, 1.0) * 65535.0).astype(np.uint16)
            _write_image(out / "probs" / f"{path.stem}.png", scaled)
        if overlay:
            _write_image(out / "overlays" / f"{path.stem}.png", contour_overlay(array, mask))
    return written


def default_predict_mode(cfg: Any) -> str:
    """``sliding`` for a run trained on tiles, ``resize`` for one trained on resized images."""
    return "sliding" if cfg.data.preprocess == "tile" else "resize"
