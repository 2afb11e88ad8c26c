"""The dataset checker behind ``fdseg data check SPEC``: decode every record and report what is wrong.

:func:`check_dataset` opens a spec leniently (``strict=false`` for the loaders that support it, so that a
broken pairing is listed instead of stopping the scan), decodes every record once, and returns a
:class:`CheckReport`: counts, image sizes and modes, mask statistics, groups, the split that training would
use, and a list of :class:`Problem` — each naming the file it concerns. ``CheckReport.ok`` is ``False`` when
any problem is an error (including a dataset in which no mask has a single foreground pixel); quirks the
loaders handle are reported as warnings or info, from the decode facts each loader records in
``RawSample["meta"]``: dropped alpha, samples scaled from their format range, EXIF orientation applied,
how mask foreground was decided (palette index, alpha, any colour channel, half range for lossy files),
soft mask values, full masks, skipped annotation regions and holes. An official test-only folder (the
MoNuSeg test set alone) is reported as usable for testing.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fdseg.data.base import FORMATS, RawDataset, parse_spec
from fdseg.data.errors import DatasetError, DatasetNotFoundError, SplitError
from fdseg.data.formats._decode import orientation_name
from fdseg.data.formats._io import Problem, SizeMismatchError

__all__ = ["CheckReport", "Problem", "check_dataset"]

logger = logging.getLogger(__name__)

_MAX_LISTED = 10


@dataclass
class CheckReport:
    """What :func:`check_dataset` found.

    Attributes:
        spec: the checked spec.
        format: the format name (``None`` when the spec could not be parsed).
        root: the dataset root.
        n_records: records found by the scan (image paired with its annotation).
        n_loaded: records that decoded without error.
        image_size_min: smallest ``(H, W)`` by area, ``None`` when nothing loaded.
        image_size_max: largest ``(H, W)`` by area.
        image_sizes: ``"HxW"`` -> number of images.
        image_modes: file mode (``RGBA``, ``L``, …) -> number of images.
        mask_modes: mask file mode -> number of records (XML/MAT annotations are absent).
        mask_rules: how mask foreground was decided (``value > 0``, ``palette index > 0``, …) -> records.
        channels: image channels after decoding -> number of images.
        fg_fraction_mean: mean foreground fraction of the masks (``None`` when nothing loaded).
        fg_fraction_min: smallest foreground fraction.
        fg_fraction_max: largest foreground fraction.
        empty_masks: ids of records whose mask is empty.
        nonbinary_masks: id -> number of soft (neither 0 nor maximum) mask pixels, for masks that have any.
        size_mismatches: records whose mask size differs from the image size.
        groups: group key -> number of records (empty when the dataset has no groups).
        split: set name -> number of records of the split training would use (``None`` if it failed).
        split_scheme: how that split was made (``"official"`` or ``"code, seed 0"``, …).
        size: the target size checked (``None``: native size).
        problems: every problem found, each naming its file.
    """

    spec: str
    format: str | None = None
    root: str = ""
    n_records: int = 0
    n_loaded: int = 0
    image_size_min: tuple[int, int] | None = None
    image_size_max: tuple[int, int] | None = None
    image_sizes: dict[str, int] = field(default_factory=dict)
    image_modes: dict[str, int] = field(default_factory=dict)
    mask_modes: dict[str, int] = field(default_factory=dict)
    mask_rules: dict[str, int] = field(default_factory=dict)
    channels: dict[int, int] = field(default_factory=dict)
    fg_fraction_mean: float | None = None
    fg_fraction_min: float | None = None
    fg_fraction_max: float | None = None
    empty_masks: list[str] = field(default_factory=list)
    nonbinary_masks: dict[str, int] = field(default_factory=dict)
    size_mismatches: int = 0
    groups: dict[str, int] = field(default_factory=dict)
    split: dict[str, int] | None = None
    split_scheme: str = ""
    size: tuple[int, int] | None = None
    problems: list[Problem] = field(default_factory=list)
    class_fractions: dict[str, float] | None = None
    class_images: dict[str, int] | None = None

    @property
    def ok(self) -> bool:
        """``True`` when no problem is an error."""
        return not any(p.severity == "error" for p in self.problems)

    def count(self, severity: str) -> int:
        """Number of problems of ``severity`` (``error``, ``warning`` or ``info``)."""
        return sum(p.severity == severity for p in self.problems)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the report (problems as ``{path, message, severity}``)."""
        return {
            "spec": self.spec,
            "format": self.format,
            "root": self.root,
            "ok": self.ok,
            "n_records": self.n_records,
            "n_loaded": self.n_loaded,
            "image_size_min": list(self.image_size_min) if self.image_size_min else None,
            "image_size_max": list(self.image_size_max) if self.image_size_max else None,
            "image_sizes": dict(self.image_sizes),
            "image_modes": dict(self.image_modes),
            "mask_modes": dict(self.mask_modes),
            "mask_rules": dict(self.mask_rules),
            "channels": {str(k): v for k, v in self.channels.items()},
            "fg_fraction": {
                "mean": self.fg_fraction_mean,
                "min": self.fg_fraction_min,
                "max": self.fg_fraction_max,
            },
            "empty_masks": list(self.empty_masks),
            "nonbinary_masks": dict(self.nonbinary_masks),
            "size_mismatches": self.size_mismatches,
            "groups": dict(self.groups),
            "split": dict(self.split) if self.split is not None else None,
            "split_scheme": self.split_scheme,
            "size": list(self.size) if self.size else None,
            "class_fractions": dict(self.class_fractions) if self.class_fractions is not None else None,
            "class_images": dict(self.class_images) if self.class_images is not None else None,
            "problems": [
                {"path": str(p.path), "message": p.message, "severity": p.severity} for p in self.problems
            ],
        }

    def to_text(self) -> str:
        """A readable multi-line summary (every error and warning, info lines grouped)."""
        status = "OK" if self.ok else "NOT OK"
        lines = [f"{self.spec}: {status} ({self.count('error')} errors, {self.count('warning')} warnings)"]
        lines.append(f"  format {self.format}, root {self.root}")
        lines.append(f"  records: {self.n_records} found, {self.n_loaded} decoded")
        if self.image_size_min is not None and self.image_size_max is not None:
            sizes = ", ".join(
                f"{k} x{v}" for k, v in sorted(self.image_sizes.items(), key=lambda kv: -kv[1])[:5]
            )
            more = f" (+{len(self.image_sizes) - 5} more)" if len(self.image_sizes) > 5 else ""
            lines.append(
                f"  image sizes (HxW): min {self.image_size_min[0]}x{self.image_size_min[1]}, "
                f"max {self.image_size_max[0]}x{self.image_size_max[1]}, {len(self.image_sizes)} unique: "
                f"{sizes}{more}"
            )
            modes = ", ".join(f"{k} x{v}" for k, v in sorted(self.image_modes.items()))
            lines.append(f"  image file modes: {modes}")
        if self.mask_modes:
            modes = ", ".join(f"{k} x{v}" for k, v in sorted(self.mask_modes.items()))
            rules = ", ".join(f"{k} x{v}" for k, v in sorted(self.mask_rules.items()))
            lines.append(f"  mask file modes: {modes}; foreground: {rules}")
        if self.fg_fraction_mean is not None:
            lines.append(
                f"  mask foreground fraction: mean {self.fg_fraction_mean:.4f}, "
                f"min {self.fg_fraction_min:.4f}, max {self.fg_fraction_max:.4f}"
            )
            soft = ", ".join(sorted(self.nonbinary_masks)[:_MAX_LISTED])
            more = "…" if len(self.nonbinary_masks) > _MAX_LISTED else ""
            lines.append(
                f"  empty masks: {len(self.empty_masks)}; masks with soft values: "
                f"{len(self.nonbinary_masks)}{f' ({soft}{more})' if soft else ''}; "
                f"size mismatches: {self.size_mismatches}"
            )
        if self.class_fractions is not None and self.class_images is not None:
            lines.append("  class pixel fractions (images containing the class):")
            lines.extend(
                f"    {name}: {frac:.4f} ({self.class_images[name]})"
                for name, frac in self.class_fractions.items()
            )
        if self.groups:
            sizes_g = sorted(self.groups.values())
            lines.append(f"  groups: {len(self.groups)} (records per group {sizes_g[0]}..{sizes_g[-1]})")
        else:
            lines.append("  groups: none (each record is its own group)")
        if self.split is not None:
            parts = ", ".join(f"{k} {v}" for k, v in self.split.items())
            lines.append(f"  split ({self.split_scheme}): {parts}")
        if self.size is not None:
            lines.append(f"  checked at size {self.size[0]}x{self.size[1]}")
        for severity in ("error", "warning"):
            for p in (p for p in self.problems if p.severity == severity):
                lines.append(f"  {severity.upper()} {p.path}: {p.message}")
        infos = Counter(p.message for p in self.problems if p.severity == "info")
        for message, n in infos.most_common():
            example = next(p.path for p in self.problems if p.severity == "info" and p.message == message)
            where = f"{example}" if n == 1 else f"{n} files, e.g. {example}"
            lines.append(f"  info: {message} ({where})")
        return "\n".join(lines)


def _open_leniently(spec: str) -> RawDataset:
    import fdseg.data.formats  # noqa: F401  (registers every loader)

    name, path, options = parse_spec(spec)
    factory = FORMATS.get(name)
    defaults = getattr(factory, "option_defaults", {})
    if "strict" in defaults and "strict" not in options:
        options = {**options, "strict": "false"}
    return factory(root=path, **options)


def _meta_problems(
    record_id: str, image: Path, meta: dict[str, str], annotation: Path | None = None
) -> list[Problem]:
    """Turn the decode facts of ``meta`` into problems; annotation facts name the ``annotation`` file."""
    found: list[Problem] = []
    notes = annotation if annotation is not None else image
    alpha = meta.get("alpha_dropped")
    if alpha == "opaque":
        found.append(
            Problem(image, f"{meta.get('image_mode')} image with an opaque alpha channel (dropped)", "info")
        )
    elif alpha == "translucent":
        found.append(Problem(image, "alpha channel is not opaque everywhere; it was dropped", "warning"))
    if meta.get("image_range"):
        found.append(
            Problem(
                image,
                f"{meta.get('image_mode')} samples scaled from their format range {meta['image_range']} "
                "to 0..255",
                "info",
            )
        )
    if meta.get("image_orientation"):
        turn = int(meta["image_orientation"])
        found.append(
            Problem(
                image,
                f"EXIF orientation {turn} applied: image used as displayed ({orientation_name(turn)})",
                "info",
            )
        )
    if meta.get("image_decode"):
        found.append(Problem(image, f"image decoded: {meta['image_decode']}", "info"))
    if meta.get("mask_orientation"):
        turned = meta["mask_orientation"]
        found.append(Problem(notes, f"EXIF orientation {turned} applied to the mask (as displayed)", "info"))
    rule = meta.get("mask_rule", "value > 0")
    if rule != "value > 0" and meta.get("mask_lossy") != "true":
        found.append(Problem(notes, f"{meta.get('mask_mode')} mask: foreground is {rule}", "info"))
    if int(meta.get("regions_skipped", "0")):
        reasons = meta.get("skipped_regions") or ", ".join(
            f"{i}: polygon with fewer than 3 vertices" for i in meta.get("skipped_region_ids", "").split(",")
        )
        found.append(Problem(notes, f"annotation regions skipped (Region Id {reasons})", "info"))
    if int(meta.get("holes", "0")):
        found.append(
            Problem(
                notes,
                f"{meta['holes']} NegativeROA hole regions subtracted ({meta.get('hole_px', '0')} px)",
                "info",
            )
        )
    if int(meta.get("regions_clipped", "0")):
        found.append(Problem(notes, "annotation polygons extend beyond the image (clipped)", "info"))
    if int(meta.get("type_inst_mismatch_px", "0")):
        n = meta["type_inst_mismatch_px"]
        found.append(
            Problem(image, f"{n} pixels are foreground in inst_map but not in type_map or back", "warning")
        )
    return found


def check_dataset(
    spec: str,
    *,
    size: int | tuple[int, int] | None = None,
    split_scheme: str = "code",
    seed: int = 0,
) -> CheckReport:
    """Decode every record of a dataset and report counts, statistics, the split and every problem.

    Args:
        spec: a dataset spec, e.g. ``"tnbc:/data/TNBC_NucleiSegmentation"``.
        size: the training size ``S`` or ``(H, W)``; when given, masks whose foreground vanishes after a
            nearest-neighbour resize and non-square images (aspect ratio changes) are reported.
        split_scheme: ``code`` or ``paper`` (see :mod:`fdseg.data.splits`), used when the dataset has no
            official split (and to carve the validation set out of an official training set).
        seed: the split seed.

    Returns:
        The report; ``report.ok`` is ``False`` when any problem is an error. Opening errors (unknown
        format, missing folder, bad option, split file outside the root) are reported, not raised.
    """
    from fdseg.data.cache import resize_mask
    from fdseg.data.splits import make_split

    target: tuple[int, int] | None = None
    if size is not None:
        target = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    report = CheckReport(spec=spec, size=target)
    try:
        name, path, _ = parse_spec(spec)
        report.format, report.root = name, path
        dataset = _open_leniently(spec)
    except (KeyError, ValueError, DatasetError, DatasetNotFoundError, SplitError) as exc:
        where = Path(getattr(exc, "path", None) or (report.root or spec))
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        report.problems.append(Problem(where, f"cannot open dataset: {message}", "error"))
        return report

    report.root = str(dataset.root)
    report.problems.extend(getattr(dataset, "problems", []))
    report.n_records = len(dataset.records)
    sizes: Counter[tuple[int, int]] = Counter()
    modes: Counter[str] = Counter()
    masks_modes: Counter[str] = Counter()
    mask_rules: Counter[str] = Counter()
    channels: Counter[int] = Counter()
    fractions: list[float] = []
    not_square = 0
    names = dataset.class_names
    class_pixels = np.zeros(len(names), np.int64) if names is not None else None
    class_images = np.zeros(len(names), np.int64) if names is not None else None
    total_pixels = 0
    for record in dataset.records:
        try:
            sample = dataset.load_record(record)
        except SizeMismatchError as exc:
            report.size_mismatches += 1
            report.problems.append(Problem(exc.path, exc.problem, "error"))
            continue
        except DatasetError as exc:
            report.problems.append(Problem(exc.path, exc.problem, "error"))
            continue
        image, mask = sample["image"], sample["mask"]
        meta = dict(sample.get("meta", {}))
        report.n_loaded += 1
        h, w = int(image.shape[0]), int(image.shape[1])
        sizes[(h, w)] += 1
        modes[meta.get("image_mode", "?")] += 1
        channels[int(image.shape[2]) if image.ndim == 3 else 1] += 1
        fraction = float(mask.mean()) if mask.size else 0.0
        fractions.append(fraction)
        classes = sample.get("classes")
        if (
            names is not None
            and class_pixels is not None
            and class_images is not None
            and classes is not None
        ):
            counts = np.bincount(np.asarray(classes, np.int64).ravel(), minlength=len(names))
            if counts.size > len(names):
                where = record.mask_files[0] if record.mask_files else record.image
                bad = int(np.flatnonzero(counts[len(names) :])[0]) + len(names)
                report.problems.append(
                    Problem(
                        where, f"class index {bad} is outside 0..{len(names) - 1} ({list(names)})", "error"
                    )
                )
                counts = counts[: len(names)]
            class_pixels += counts
            class_images += counts > 0
            total_pixels += int(classes.size)
        if not mask.any():
            report.empty_masks.append(record.id)
            where = record.mask_files[0] if record.mask_files else record.image
            if meta.get("class") == "normal":
                report.problems.append(Problem(where, "empty mask (class 'normal': no lesion)", "info"))
            else:
                report.problems.append(Problem(where, "mask is empty (no foreground pixel)", "warning"))
        if "mask_mode" in meta:
            masks_modes[meta["mask_mode"]] += 1
            mask_rules[meta.get("mask_rule", "value > 0")] += 1
        if mask.size and mask.all():
            where = record.mask_files[0] if record.mask_files else record.image
            report.problems.append(
                Problem(where, "mask is foreground everywhere (every pixel); inverted convention?", "warning")
            )
        soft = int(meta.get("mask_nonbinary_px", "0"))
        if soft:
            report.nonbinary_masks[record.id] = soft
            rule = meta.get("mask_rule", "value > 0")
            lossy = meta.get("mask_lossy") == "true"
            what = "lossy-compressed mask (JPEG) has" if lossy else "mask has"
            report.problems.append(
                Problem(
                    record.mask_files[0],
                    f"{what} {soft} soft pixels (neither 0 nor its maximum); foreground is {rule}",
                    "warning",
                )
            )
        annotation = next(iter(record.mask_files), None)
        report.problems.extend(_meta_problems(record.id, record.image, meta, annotation))
        if target is not None:
            not_square += int(h * target[1] != w * target[0])
            if mask.any() and not resize_mask(mask, target).any():
                report.problems.append(
                    Problem(
                        record.mask_files[0],
                        f"foreground vanishes when the mask is resized to {target[0]}x{target[1]} (nearest)",
                        "warning",
                    )
                )
    if sizes:
        by_area = sorted(sizes, key=lambda hw: (hw[0] * hw[1], hw))
        report.image_size_min, report.image_size_max = by_area[0], by_area[-1]
        report.image_sizes = {f"{h}x{w}": n for (h, w), n in sorted(sizes.items())}
        report.image_modes = dict(sorted(modes.items()))
        report.mask_modes = dict(sorted(masks_modes.items()))
        report.mask_rules = dict(sorted(mask_rules.items()))
        report.channels = dict(sorted(channels.items()))
        report.fg_fraction_mean = float(np.mean(fractions))
        report.fg_fraction_min = float(np.min(fractions))
        report.fg_fraction_max = float(np.max(fractions))
    if names is not None and class_pixels is not None and class_images is not None and total_pixels:
        report.class_fractions = {n: float(c) / total_pixels for n, c in zip(names, class_pixels)}
        report.class_images = {n: int(c) for n, c in zip(names, class_images)}
    if target is not None and not_square:
        report.problems.append(
            Problem(
                dataset.root,
                f"{not_square} images are not {target[0]}:{target[1]}; resizing changes their aspect ratio",
                "info",
            )
        )
    if report.n_loaded and len(report.empty_masks) == report.n_loaded:
        report.problems.append(
            Problem(
                dataset.root,
                f"no mask has any foreground pixel ({report.n_loaded} decoded); there is nothing to learn or "
                "to score (wrong mask folder, foreground value or convention?)",
                "error",
            )
        )
    report.groups = dict(Counter(r.group for r in dataset.records if r.group is not None))
    official = dataset.official_split()
    if official and official.get("test") and not official.get("train") and not official.get("val"):
        n_test = len(official["test"])
        report.split = {"train": 0, "val": 0, "test": n_test}
        report.split_scheme = "official test set only"
        report.problems.append(
            Problem(
                dataset.root,
                f"official test-only folder: its {n_test} images are usable for testing, not for training "
                "(a spec on the folder above it gives the official training set as well)",
                "info",
            )
        )
        logger.info("checked %s: %d records, %d problems", spec, report.n_records, len(report.problems))
        return report
    if official and not official.get("test"):
        sets = sorted(official)
        report.problems.append(
            Problem(
                dataset.root, f"official split has no test set (only {sets}); a seeded split is drawn", "info"
            )
        )
        official = None
    ids = [r.id for r in dataset.records]
    try:
        split = make_split(
            ids,
            groups=[r.group for r in dataset.records],
            official=official,
            scheme=split_scheme,
            seed=seed,
            spec=spec,
        )
        report.split = {name: len(split[name]) for name in ("train", "val", "test")}
        report.split_scheme = (
            f"official + val drawn by {split_scheme}, seed {seed}"
            if official
            else f"{split_scheme}, seed {seed}"
        )
        if report.groups:
            report.split_scheme += ", grouped"
    except (SplitError, ValueError) as exc:
        report.problems.append(Problem(dataset.root, f"no usable split: {exc}", "error"))
    logger.info("checked %s: %d records, %d problems", spec, report.n_records, len(report.problems))
    return report
