"""Multi-source pooling and data-addition schedules (``method-spec.md`` §F2).

:class:`PooledDataset` concatenates datasets (a base site and one or more novel sites); every sample keeps
its ``source`` (0 = the first dataset, 1 = the second, …) and its id is namespaced as ``"<name>/<id>"`` so
that ids stay unique across sources. :func:`select_subset` chooses the ``k`` novel images added to a base
dataset: by default the **first k in natural order of their ids** (what the released README does,
``X_train_dil[:k]``), or a seeded random subset. Both selections are nested: the k images for a smaller k
are a prefix of those for a larger one. :func:`addition_schedule` turns fractions of the novel pool
(0, 1/4, 1/2, 1) into counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from fdseg._checks import check_option
from fdseg.data.base import natural_key, official_split_ids
from fdseg.data.torch_dataset import Sample

SELECTIONS: tuple[str, ...] = ("first", "random")
#: The paper's histopathology ticks: 0, D_novel/4, D_novel/2, D_novel.
PAPER_FRACTIONS: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)


def addition_schedule(n_novel: int, fractions: Sequence[float] = PAPER_FRACTIONS) -> list[int]:
    """Counts k = ⌊f·n + 0.5⌋ (round half up) for each fraction; 30 novel images give [0, 8, 15, 30].

    Raises:
        ValueError: a fraction outside [0, 1] or a negative ``n_novel``.
    """
    if n_novel < 0:
        raise ValueError(f"n_novel must be >= 0, got {n_novel}")
    bad = [f for f in fractions if not 0 <= f <= 1]
    if bad:
        raise ValueError(f"addition fractions must be in [0, 1], got {bad}")
    return [math.floor(f * n_novel + 0.5) for f in fractions]


def novel_training_ids(records: Sequence[Any], *, spec: str = "the novel dataset") -> list[str]:
    """The ids novel images may be drawn from: the dataset's training part, never its official test images.

    A dataset with an official split contributes only its ``"train"`` records; one without an official split
    (no record carries a ``split``) contributes every record.

    Args:
        records: the dataset's records (anything with ``id`` and ``split`` attributes).
        spec: the dataset's spec, for messages.

    Returns:
        Image ids in the records' order.

    Raises:
        ValueError: the dataset has an official split but no training image (naming ``spec`` and its sets).
    """
    official = official_split_ids((r.id, r.split) for r in records)
    if official is None:
        return [r.id for r in records]
    train = official.get("train", [])
    if not train:
        raise ValueError(
            f"{spec} has no training part to add images from (its official split has only "
            f"{sorted(official)}); "
            "novel images are never drawn from an official test set"
        )
    return train


def addition_counts(
    n_pool: int,
    *,
    k: Sequence[Any] | None = None,
    fractions: Sequence[Any] | None = None,
    pool: str = "the novel training pool",
) -> list[int]:
    """Checked addition counts: explicit ``k`` values, or ``fractions`` of the pool (rounded half up).

    Args:
        n_pool: images in the novel training pool.
        k: counts, each an integer in [0, n_pool].
        fractions: fractions in [0, 1] (see :func:`addition_schedule`).
        pool: how to name the pool in messages.

    Returns:
        The counts in the order given.

    Raises:
        ValueError: both or neither of ``k`` and ``fractions``; a non-integer, negative or too-large k; a
            fraction outside [0, 1] or not a number.
    """
    if (k is None) == (fractions is None):
        raise ValueError("give the added counts as k or as fractions, not both and not neither")
    if k is not None:
        out: list[int] = []
        for value in k:
            if isinstance(value, bool) or not isinstance(value, int | float) or float(value) != int(value):
                raise ValueError(f"k must be whole numbers of images, got {value!r}")
            if int(value) < 0:
                raise ValueError(f"k must be >= 0, got {value}")
            if int(value) > n_pool:
                raise ValueError(f"k = {int(value)} is larger than {pool} ({n_pool} images)")
            out.append(int(value))
        return out
    if fractions is None:
        raise ValueError("give either counts (k) or fractions")
    for value in fractions:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"fractions must be numbers in [0, 1], got {value!r}")
    return addition_schedule(n_pool, [float(f) for f in fractions])


def select_subset(ids: Sequence[str], k: int, *, selection: str = "first", seed: int = 0) -> list[str]:
    """Pick ``k`` ids: the first k in natural order, or the first k of a seeded permutation of that order.

    Raises:
        ValueError: ``k`` outside [0, len(ids)] or an unknown ``selection``.
    """
    check_option("novel selection", selection, SELECTIONS)
    if not 0 <= k <= len(ids):
        raise ValueError(f"k = {k} novel images requested but the novel training pool has {len(ids)}")
    ordered = sorted(ids, key=natural_key)
    if selection == "random":
        ordered = [ordered[int(i)] for i in np.random.default_rng(seed).permutation(len(ordered))]
    return ordered[:k]


class PooledDataset(Dataset[Sample]):
    """The concatenation of several datasets, each sample tagged with its source index.

    Args:
        parts: the datasets, base first; items are sample dicts with an ``id``.
        names: one name per part for id namespacing (default ``base``, ``novel``, ``novel2``, …).

    Every sample's ``source`` is its part's index and its ``id`` is ``"<name>/<original id>"``.
    """

    def __init__(self, parts: Sequence[Dataset[Sample]], *, names: Sequence[str] | None = None) -> None:
        if not parts:
            raise ValueError("PooledDataset needs at least one dataset")
        if names is None:
            names = ["base", "novel", *(f"novel{i}" for i in range(2, len(parts)))][: len(parts)]
        if len(names) != len(parts) or len(set(names)) != len(names):
            raise ValueError(f"names must be {len(parts)} distinct strings, got {list(names)}")
        bad = [n for n in names if not n or "/" in n]
        if bad:
            raise ValueError(f"source names must be non-empty and contain no '/', got {bad}")
        self.parts = list(parts)
        self.names = list(names)
        self._offsets = np.cumsum([0, *(len(p) for p in self.parts)])  # type: ignore[arg-type]

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def _locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} pooled samples")
        part = int(np.searchsorted(self._offsets, index, side="right")) - 1
        return part, index - int(self._offsets[part])

    def __getitem__(self, index: int) -> Sample:
        part, local = self._locate(index)
        sample = self.parts[part][local]
        return Sample(
            image=sample["image"], mask=sample["mask"], source=part, id=f"{self.names[part]}/{sample['id']}"
        )

    @property
    def sources(self) -> list[int]:
        """The source index of every item, in order."""
        return [p for p, part in enumerate(self.parts) for _ in range(len(part))]  # type: ignore[arg-type]

    @property
    def ids(self) -> list[str]:
        """Namespaced ids of every item (reads ids only when the parts expose an ``ids`` list)."""
        out: list[str] = []
        for name, part in zip(self.names, self.parts):
            part_ids: Any = getattr(part, "ids", None)
            if part_ids is None:
                part_ids = [part[i]["id"] for i in range(len(part))]  # type: ignore[arg-type]
            out.extend(f"{name}/{i}" for i in part_ids)
        return out

    def counts(self) -> dict[str, int]:
        """Number of items per source name."""
        return {name: len(part) for name, part in zip(self.names, self.parts)}  # type: ignore[arg-type]

    def sample_weights(self, *, balance: bool = True) -> torch.Tensor:
        """Per-item weights for ``WeightedRandomSampler``: equal total weight per source when ``balance``.

        Returns:
            (N,) float64, summing to 1.
        """
        sizes = torch.tensor([len(p) for p in self.parts], dtype=torch.float64)  # type: ignore[arg-type]
        per_source = (1.0 / sizes.clamp(min=1)) if balance else torch.ones_like(sizes)
        weights = torch.repeat_interleave(per_source, sizes.long())
        return weights / weights.sum()
