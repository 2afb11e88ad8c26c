"""The torch side: uint8 arrays -> float tensors, the sample dict and ``collate``.

A sample is ``{"image": (C, H, W) float32 in [0, 1], "mask": (1, H, W) float32 in {0, 1}, "source": int,
"id": str}`` (design.md §3 "Tensors"); :func:`collate` stacks a list of them into ``image`` (B, C, H, W),
``mask`` (B, 1, H, W), ``source`` (B,) int64 and ``id`` (a list of B strings).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypedDict

import numpy as np
import torch
from torch.utils.data import Dataset

from fdseg.data.errors import DatasetError
from fdseg.data.noise import GaussianNoise
from fdseg.data.transforms import Generator


class Sample(TypedDict):
    """One training/evaluation sample (see the module docstring for shapes)."""

    image: torch.Tensor
    mask: torch.Tensor
    source: int
    id: str


class Batch(TypedDict):
    """A collated batch: ``image`` (B, C, H, W), ``mask`` (B, 1, H, W), ``source`` (B,) int64, ``id``."""

    image: torch.Tensor
    mask: torch.Tensor
    source: torch.Tensor
    id: list[str]


class ArraySource(Protocol):
    """Anything indexable that yields ``{"image": (H, W, C) uint8, "mask": (H, W) bool, "id": str}``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Mapping[str, Any]: ...


class ArrayDataset:
    """In-memory arrays as an :class:`ArraySource` (e.g. from :func:`fdseg.data.synthetic.generate`).

    Args:
        images: (N, H, W, C) uint8 (or a list of (H, W, C) uint8 of varying size).
        masks: (N, H, W) bool (or a matching list).
        ids: N unique ids (default ``"0"``, ``"1"``, …).
        groups: N group keys (default none).
    """

    def __init__(
        self,
        images: np.ndarray | Sequence[np.ndarray],
        masks: np.ndarray | Sequence[np.ndarray],
        ids: Sequence[str] | None = None,
        groups: Sequence[str | None] | None = None,
    ) -> None:
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        self._ids = [str(i) for i in range(len(images))] if ids is None else [str(i) for i in ids]
        if len(self._ids) != len(images) or len(set(self._ids)) != len(self._ids):
            raise ValueError(f"ids must be {len(images)} unique strings")
        for i, (image, mask) in enumerate(zip(images, masks)):
            if image.ndim != 3 or image.dtype != np.uint8 or mask.shape != image.shape[:2]:
                raise ValueError(
                    f"item {self._ids[i]!r}: expected image (H, W, C) uint8 and mask (H, W), "
                    f"got {image.shape} {image.dtype} and {mask.shape}"
                )
        self.images = images
        self.masks = masks
        self._groups: list[str | None] = [None] * len(self._ids) if groups is None else list(groups)

    @property
    def ids(self) -> list[str]:
        """Item ids."""
        return list(self._ids)

    @property
    def groups(self) -> list[str | None]:
        """Item group keys."""
        return list(self._groups)

    def official_split(self) -> dict[str, list[str]] | None:
        """In-memory arrays have no official split."""
        return None

    def index_of(self, item_id: str) -> int:
        """The position of ``item_id`` (``KeyError`` otherwise)."""
        try:
            return self._ids.index(item_id)
        except ValueError:
            raise KeyError(f"no item with id {item_id!r}") from None

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.images[index], "mask": self.masks[index].astype(bool), "id": self._ids[index]}


def _index_of(data: ArraySource, item_id: str) -> int:
    finder = getattr(data, "index_of", None)
    if callable(finder):
        return int(finder(item_id))
    ids = getattr(data, "ids", None)
    if ids is None:
        raise TypeError(f"{type(data).__name__} has neither index_of nor ids; pass indices instead")
    try:
        return list(ids).index(item_id)
    except ValueError:
        raise KeyError(f"no item with id {item_id!r}") from None


class SegmentationDataset(Dataset[Sample]):
    """Tensors for training and evaluation from an :class:`ArraySource` (e.g. a ``CachedDataset``).

    Per item: uint8 (H, W, C) -> float32 (C, H, W) / 255, bool mask -> float32 (1, H, W) (an integer class
    map -> int64 (1, H, W)); then ``noise``
    (fixed per id) and then ``transforms(sample, generator)``.

    Args:
        data: the arrays.
        indices: the items to expose, in order (default: all).
        transforms: a paired transform from :mod:`fdseg.data.transforms` (training only, usually).
        source: the source index stamped on every sample (0 = base, 1 = novel, …).
        noise: a :class:`~fdseg.data.noise.GaussianNoise` applied before the transforms.
        generator: randomness for ``transforms``; ``None`` uses torch's global generator, which each
            ``DataLoader`` worker seeds separately.
    """

    def __init__(
        self,
        data: ArraySource,
        indices: Sequence[int] | None = None,
        *,
        transforms: Callable[..., dict[str, Any]] | None = None,
        source: int = 0,
        noise: GaussianNoise | None = None,
        generator: Generator = None,
    ) -> None:
        n = len(data)
        self.indices = list(range(n)) if indices is None else [int(i) for i in indices]
        bad = [i for i in self.indices if not 0 <= i < n]
        if bad:
            raise IndexError(f"indices {bad[:5]} out of range for a dataset of {n} items")
        if source < 0:
            raise ValueError(f"source must be >= 0, got {source}")
        self.data = data
        self.transforms = transforms
        self.source = int(source)
        self.noise = noise
        self.generator = generator

    @classmethod
    def from_ids(cls, data: ArraySource, ids: Sequence[str], **kwargs: Any) -> SegmentationDataset:
        """The items of ``data`` with the given ids (e.g. one set of a split), in that order."""
        return cls(data, [_index_of(data, i) for i in ids], **kwargs)

    def subset(self, positions: Sequence[int]) -> SegmentationDataset:
        """The items at ``positions`` of this dataset, with the same transforms, source and noise."""
        return SegmentationDataset(
            self.data,
            [self.indices[p] for p in positions],
            transforms=self.transforms,
            source=self.source,
            noise=self.noise,
            generator=self.generator,
        )

    @property
    def ids(self) -> list[str]:
        """Ids of the exposed items (reads only ids when the source has an ``ids`` list)."""
        all_ids = getattr(self.data, "ids", None)
        if all_ids is not None:
            all_list = list(all_ids)
            return [all_list[i] for i in self.indices]
        return [str(self.data[i]["id"]) for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Sample:
        item = self.data[self.indices[index]]
        image, mask = np.asarray(item["image"]), np.asarray(item["mask"])
        if image.ndim != 3 or image.dtype != np.uint8 or mask.shape != image.shape[:2]:
            raise DatasetError(
                str(item.get("id", index)),
                f"expected image (H, W, C) uint8 and mask (H, W), "
                f"got {image.shape} {image.dtype} and {mask.shape}",
            )
        sample: dict[str, Any] = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0),
            "mask": _mask_tensor(mask),
            "source": self.source,
            "id": str(item["id"]),
        }
        if self.noise is not None:
            sample = self.noise(sample)
        if self.transforms is not None:
            sample = self.transforms(sample, self.generator)
        return Sample(
            image=sample["image"], mask=sample["mask"], source=int(sample["source"]), id=sample["id"]
        )


def _mask_tensor(mask: np.ndarray) -> torch.Tensor:
    """bool (H, W) -> (1, H, W) float32 in {0, 1}; an integer class map -> (1, H, W) int64 labels."""
    if mask.dtype == bool:
        return torch.from_numpy(np.ascontiguousarray(mask))[None].float()
    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int64))[None]


def collate(batch: Sequence[Mapping[str, Any]]) -> Batch:
    """Stack samples: ``image`` (B, C, H, W), ``mask`` (B, 1, H, W), ``source`` (B,) int64, ``id`` list.

    Raises:
        ValueError: an empty batch or samples of different shapes (naming the first differing id).
    """
    if not batch:
        raise ValueError("collate got an empty batch")
    shape = tuple(batch[0]["image"].shape)
    for sample in batch:
        if tuple(sample["image"].shape) != shape:
            raise ValueError(
                f"cannot collate sample {sample['id']!r} of shape {tuple(sample['image'].shape)} "
                f"with {shape}; "
                "resize (CachedDataset size=) or tile first"
            )
    return Batch(
        image=torch.stack([s["image"] for s in batch]),
        mask=torch.stack([s["mask"] for s in batch]),
        source=torch.tensor([int(s["source"]) for s in batch], dtype=torch.long),
        id=[str(s["id"]) for s in batch],
    )
