"""``fdseg divergence``: KL / JS between the base training images and each added novel subset (§F3).

The images are chosen exactly as a training run chooses them: the base site's *training* split (the
configured scheme, seed and grouping; or every base image with ``base_set="all"``) and, for each k, the first
k images of the novel dataset's training part in natural id order (or the seeded random option), nested
across k. Images are compared at native resolution, or resized to ``size``² with the training cache's
resizing (bilinear images, nearest masks).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from fdseg.analysis.divergence import (
    DivergenceSettings,
    IntensityHistograms,
    divergence_row,
    format_divergence_table,
)
from fdseg.data.cache import CachedDataset
from fdseg.data.open import open_dataset
from fdseg.data.pooling import addition_counts, novel_training_ids, select_subset
from fdseg.data.splits import split_dataset

BASE_SETS: tuple[str, ...] = ("train", "all")
COLUMNS: tuple[str, ...] = (
    "step", "k", "fraction", "fg_kl", "fg_js", "bg_kl", "bg_js", "all_kl", "all_js",
    "novel_images", "novel_fg_pixels", "novel_bg_pixels",
)  # fmt: skip


@dataclass(frozen=True)
class SubsetRule:
    """How the base training set and the novel subsets are drawn (the training rules).

    Attributes:
        split_scheme, split_seed, val_fraction, test_fraction, grouped, official: the base split, as the
            ``data`` section of a run config.
        base_set: ``train`` (the base training split, the paper's D_base) or ``all`` (every base image).
        selection: ``first`` (natural id order, nested) or ``random`` (seeded permutation, nested).
        selection_seed: seed of ``random``.
    """

    split_scheme: str = "code"
    split_seed: int = 35
    val_fraction: float | None = None
    test_fraction: float | None = None
    grouped: bool = True
    official: bool = True
    base_set: str = "train"
    selection: str = "first"
    selection_seed: int = 0

    def __post_init__(self) -> None:
        if self.base_set not in BASE_SETS:
            raise ValueError(f"unknown base set {self.base_set!r}; valid: {list(BASE_SETS)}")


@dataclass
class DivergenceResult:
    """The table and everything behind it."""

    rows: list[dict[str, Any]]
    settings: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def table_text(self) -> str:
        """Tables 2-3's layout."""
        return format_divergence_table([r for r in self.rows if r["k"] > 0])

    def write(self, out: str | Path) -> tuple[Path, Path]:
        """Write ``divergence.csv`` and ``divergence.json`` (settings, subsets, rows) into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        csv_path, json_path = out / "divergence.csv", out / "divergence.json"
        with csv_path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(COLUMNS), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.rows)
        payload = {"settings": self.settings, "meta": self.meta, "rows": self.rows}
        json_path.write_text(json_text(payload), encoding="utf-8")
        return csv_path, json_path


def json_text(payload: Any) -> str:
    """``payload`` as indented JSON text ending in a newline, with NaN and ±inf floats written as ``null``."""
    return json.dumps(_finite(payload), indent=2) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _label(k: int, n_pool: int, fraction: float | None) -> str:
    if fraction is not None:
        frac = Fraction(fraction).limit_denominator(64)
        return f"+{frac} (k={k})"
    return f"+{k}/{n_pool}"


def novel_pool(novel_spec: str) -> list[str]:
    """The novel dataset's training ids (official train split when it has one); checked before any run.

    Raises:
        ValueError: the dataset has no training part. DatasetError / DatasetNotFoundError: bad files.
    """
    raw = open_dataset(novel_spec)
    return novel_training_ids(raw.records, spec=novel_spec)


def divergence_study(
    base_spec: str,
    novel_spec: str,
    *,
    k: Sequence[Any] | None = None,
    fractions: Sequence[Any] | None = None,
    size: int | None = None,
    settings: DivergenceSettings | None = None,
    rule: SubsetRule | None = None,
    cache_dir: str | Path | None = None,
) -> DivergenceResult:
    """KL(base ‖ novel subset) and the JS distance per region, for every added count.

    Args:
        base_spec, novel_spec: dataset specs (``NAME:PATH[?opt=v]``).
        k: added counts (exclusive with ``fractions``); each in [0, novel training pool].
        fractions: fractions of the novel training pool, rounded half up (default 1/4, 1/2, 1).
        size: compare at ``size``² (the training cache's resizing); ``None``: native resolution.
        settings: grey weights, bins, ε (:class:`~fdseg.analysis.divergence.DivergenceSettings`).
        rule: how the base training set and the novel subsets are drawn.
        cache_dir: keep the decoded (resized) arrays there; ``None`` keeps them in memory only.

    Returns:
        One row per count: ``step``, ``k``, ``fraction`` and the six KL / JS values (NaN for k = 0 or a region
        without pixels), plus the novel subset's image and pixel counts.

    Raises:
        ValueError: bad k / fractions / settings, a novel dataset without a training part (all checked
            before any image is decoded).
    """
    settings = settings or DivergenceSettings()
    rule = rule or SubsetRule()
    if k is None and fractions is None:
        fractions = (0.25, 0.5, 1.0)
    base_raw = open_dataset(base_spec)
    novel_raw = open_dataset(novel_spec)
    pool = novel_training_ids(novel_raw.records, spec=novel_spec)
    counts = addition_counts(len(pool), k=k, fractions=fractions, pool=f"the training pool of {novel_spec!r}")
    largest = select_subset(pool, max(counts, default=0), selection=rule.selection, seed=rule.selection_seed)
    persist = cache_dir is not None
    base = CachedDataset(base_raw, size, cache_dir, persist=persist)
    if rule.base_set == "train":
        split = split_dataset(
            base,
            scheme=rule.split_scheme,
            seed=rule.split_seed,
            test=rule.test_fraction,
            val=rule.val_fraction,
            use_groups=rule.grouped,
            use_official=rule.official,
            spec=base_spec,
        )
        base_ids = list(split["train"])
    else:
        base_ids = list(base.ids)
    base_hist = IntensityHistograms(settings)
    for image_id in base_ids:
        item = base[base.index_of(image_id)]
        base_hist.add(item["image"], item["mask"])
    novel = CachedDataset(novel_raw, size, cache_dir, persist=persist)
    rows: list[dict[str, Any]] = []
    fraction_list = list(fractions) if fractions is not None else [None] * len(counts)
    for count, fraction in zip(counts, fraction_list):
        subset = largest[:count]  # nested: the first `count` of the largest subset
        hist = IntensityHistograms(settings)
        for image_id in subset:
            item = novel[novel.index_of(image_id)]
            hist.add(item["image"], item["mask"])
        row: dict[str, Any] = {
            "step": _label(count, len(pool), None if fraction is None else float(fraction)),
            "k": count,
            "fraction": count / len(pool) if pool else math.nan,
            **divergence_row(base_hist, hist),
            "novel_images": len(subset),
            "novel_fg_pixels": int(hist.counts["fg"].sum()),
            "novel_bg_pixels": int(hist.counts["bg"].sum()),
            "novel_ids": list(subset),
        }
        rows.append(row)
    meta = {
        "base": base_spec,
        "novel": novel_spec,
        "size": size if size is not None else "native",
        "base_set": rule.base_set,
        "base_images": len(base_ids),
        "base_ids": base_ids,
        "base_fg_pixels": int(base_hist.counts["fg"].sum()),
        "base_bg_pixels": int(base_hist.counts["bg"].sum()),
        "novel_pool": len(pool),
        "novel_pool_rule": "official train split" if len(pool) < len(novel_raw.records) else "every image",
        "selection": rule.selection,
        "selection_seed": rule.selection_seed,
        "split": {
            "scheme": rule.split_scheme,
            "seed": rule.split_seed,
            "val_fraction": rule.val_fraction,
            "test_fraction": rule.test_fraction,
            "grouped": rule.grouped,
            "official": rule.official,
        },
    }
    return DivergenceResult(rows, settings.as_dict(), meta)
