"""The data of a run: datasets opened from their specs, cached at the run's image size, split, pooled.

``build_run_data`` opens ``data.base`` (and ``data.novel``), caches resized arrays once (the cache decodes
every file, so a missing or unreadable image, or a mask of another size, fails here with the file named,
before any training), makes or re-reads ``<run>/split.json`` (ids per split and per source) and returns a
:class:`RunData` whose loaders yield ``{"image": (B,C,H,W) float32 [0,1], "mask": (B,1,H,W) float32 {0,1},
"source": (B,) int64, "id": list[str]}``. Source 0 is the base site, 1 the novel site. Validation and test
images always come from the base site.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fdseg.data.base import open_dataset
from fdseg.data.cache import CachedDataset
from fdseg.data.cache import resize_image as _resize_image
from fdseg.data.errors import SplitError
from fdseg.data.formats._io import read_image
from fdseg.data.pooling import PooledDataset, addition_schedule, select_subset
from fdseg.data.splits import SourceSplit, load_splits, save_splits, split_dataset
from fdseg.data.torch_dataset import SegmentationDataset, collate
from fdseg.data.transforms import build_transforms
from fdseg.training.config import ExperimentConfig

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Loaders:
    """Training and validation loaders of a phase."""

    train: DataLoader[Any]
    val: DataLoader[Any]


@dataclass
class RunData:
    """A run's cached datasets and its split.

    Attributes:
        base: the base site, cached at ``data.image_size``.
        novel: the novel site (``None`` without one).
        split: ``{"train", "val", "test"}`` → base ids, plus ``"novel"`` → the novel ids added to training.
        seed: seed of the training shuffle and augmentation.
        augment: the training augmentation (a name of :data:`fdseg.data.transforms.TRANSFORMS`).
        num_workers: DataLoader workers.
    """

    base: CachedDataset
    novel: CachedDataset | None
    split: dict[str, list[str]]
    seed: int = 0
    augment: str = "paper"
    num_workers: int = 0

    def _dataset(self, name: str, *, train: bool) -> Dataset[Any]:
        transforms = build_transforms(self.augment) if train else None
        generator = torch.Generator().manual_seed(self.seed) if train else None
        base = SegmentationDataset.from_ids(
            self.base, self.split[name], transforms=transforms, source=0, generator=generator
        )
        if not (name == "train" and self.novel is not None and self.split.get("novel")):
            return base
        novel = SegmentationDataset.from_ids(
            self.novel, self.split["novel"], transforms=transforms, source=1, generator=generator
        )
        return PooledDataset([base, novel])

    @property
    def n_train(self) -> int:
        """Number of training images (base train + novel)."""
        return len(self.split["train"]) + (len(self.split["novel"]) if self.novel is not None else 0)

    @property
    def train(self) -> Dataset[Any]:
        """The pooled training set (base train ids + novel ids)."""
        return self._dataset("train", train=True)

    def loaders(self, cfg: ExperimentConfig) -> Loaders:
        """Shuffled, augmented training loader and the validation loader."""
        generator = torch.Generator().manual_seed(self.seed)
        train = DataLoader(
            self.train,
            batch_size=cfg.train.batch_size,
            shuffle=True,
            generator=generator,
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
        )
        return Loaders(train, self.eval_loader("val", cfg.train.eval_batch_size))

    def eval_loader(self, name: str, batch_size: int) -> DataLoader[Any]:
        """Un-augmented, unshuffled loader of one split of the base site."""
        if name not in SPLIT_NAMES:
            raise ValueError(f"unknown split {name!r}; valid: {SPLIT_NAMES}")
        return DataLoader(
            self._dataset(name, train=False),
            batch_size=batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate,
        )


def _open_cached(spec: str, cfg: ExperimentConfig, run_dir: Path) -> CachedDataset:
    raw = open_dataset(spec)
    if len(raw) == 0:
        raise SplitError(f"dataset {spec!r} has no images")
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else run_dir.parent / ".cache"
    return CachedDataset(raw, cfg.data.image_size, cache_dir)


def build_run_data(cfg: ExperimentConfig, run_dir: str | Path) -> RunData:
    """Open, cache and split the run's data; write ``split.json`` on first use, re-read it afterwards.

    Raises:
        DatasetError / DatasetNotFoundError: a missing or bad file (named).
        SplitError: an empty dataset, or a split that leaves a set empty.
    """
    run_dir = Path(run_dir)
    base = _open_cached(cfg.data.base, cfg, run_dir)
    novel = _open_cached(cfg.data.novel, cfg, run_dir) if cfg.data.novel else None
    path = run_dir / "split.json"
    if path.is_file():
        sources = load_splits(path)
        split = _check_saved(path, sources, base, novel)
    else:
        base_split = split_dataset(
            base,
            scheme=cfg.data.split_scheme,
            seed=cfg.data.split_seed,
            test=cfg.data.test_fraction,
            val=cfg.data.val_fraction,
            use_groups=cfg.data.split_grouped,
            use_official=cfg.data.split_official,
            spec=cfg.data.base,
        )
        sources = {"base": base_split}
        split = {name: list(base_split[name]) for name in SPLIT_NAMES}
        split["novel"] = []
        if novel is not None and cfg.data.novel is not None:
            k = cfg.data.novel_k
            if k is None:
                fraction = 1.0 if cfg.data.novel_fraction is None else cfg.data.novel_fraction
                k = addition_schedule(len(novel), [fraction])[0]
            split["novel"] = select_subset(novel.ids, k)
            sources["novel"] = SourceSplit(
                sets={"train": tuple(split["novel"])}, spec=cfg.data.novel, scheme="custom",
                meta={"rule": "first k ids in natural order (nested across k)"},
            )  # fmt: skip
        for name in SPLIT_NAMES:
            if not split[name]:
                raise SplitError(f"split of {cfg.data.base!r} leaves the {name} set empty ({_counts(split)})")
        save_splits(path, sources)
    return RunData(
        base, novel, split, seed=cfg.train.seed, augment=cfg.data.augment, num_workers=cfg.train.num_workers
    )


def _counts(split: dict[str, list[str]]) -> dict[str, int]:
    return {k: len(v) for k, v in split.items()}


def _check_saved(
    path: Path, sources: dict[str, SourceSplit], base: CachedDataset, novel: CachedDataset | None
) -> dict[str, list[str]]:
    if "base" not in sources:
        raise SplitError(f"{path}: no 'base' source")
    split = {name: list(sources["base"][name]) for name in SPLIT_NAMES}
    split["novel"] = list(sources["novel"]["train"]) if "novel" in sources else []
    for name in SPLIT_NAMES:
        for item in split[name]:
            base.index_of(item)
    if split["novel"]:
        if novel is None:
            raise SplitError(f"{path} lists novel ids but the config has no data.novel")
        for item in split["novel"]:
            novel.index_of(item)
    return split


def load_image(path: Path, *, channels: int) -> np.ndarray:
    """Decode an image file like the loaders do: (H, W, channels) uint8."""
    image, _info = read_image(path, channels=channels)
    return image


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize (H, W, C) uint8 to (size, size, C) like the cache does."""
    return _resize_image(image, (size, size))
