"""The data of a run: datasets opened from their specs, cached at the run's image size, split, pooled.

``build_run_data`` opens ``data.base`` (and ``data.novel``), caches them once (the cache decodes every file,
so a missing or unreadable image, or a mask of another size, fails here with the file named, before any
training), makes or re-reads ``<run>/split.json`` (image ids per split and per source) and returns a
:class:`RunData` whose loaders yield ``{"image": (B,C,H,W) float32 [0,1], "mask": (B,1,H,W) float32 {0,1},
"source": (B,) int64, "id": list[str]}``. Source 0 is the base site, 1 the novel site. Validation and test
images always come from the base site.

An item is a whole image resized to ``data.image_size``² or, with ``data.preprocess: tile``, a tile of a
native-resolution image; splits are always drawn over images, and every tile follows its image.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fdseg._checks import check_keys, check_option
from fdseg.data.cache import CachedDataset
from fdseg.data.errors import SplitError
from fdseg.data.noise import GaussianNoise
from fdseg.data.open import open_dataset
from fdseg.data.pooling import PooledDataset, addition_schedule, novel_training_ids, select_subset
from fdseg.data.splits import SourceSplit, check_split, fold_split, load_splits, make_split, save_splits
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
        base: the base site, cached at ``data.image_size`` (resized images, or native-size tiles).
        novel: the novel site (``None`` without one).
        split: ``{"train", "val", "test"}`` → base image ids, plus ``"novel"`` → the novel image ids added
            to training. With tiling each id stands for all the tiles of that image.
        seed: seed of the training shuffle and augmentation.
        augment: the training augmentation (a name of :data:`fdseg.data.transforms.TRANSFORMS`).
        num_workers: DataLoader workers.
        noise: fixed per-image Gaussian noise on the splits it applies to (training images, novel ones
            included, with ``train``/``all``; validation follows training; test with ``test``/``all``). A
            novel image's field is seeded apart from the base images' (``seed`` + source).
    """

    base: CachedDataset
    novel: CachedDataset | None
    split: dict[str, list[str]]
    seed: int = 0
    augment: str = "paper"
    num_workers: int = 0
    new_split: dict[str, SourceSplit] | None = None
    noise: GaussianNoise | None = None
    _positions: dict[str, list[int]] = field(default_factory=dict, init=False, repr=False)

    @functools.cached_property
    def stream(self) -> DataStream:
        """The run's training data stream (created on first use, then shared by both phases)."""
        return DataStream(self.seed)

    def save_split(self, path: Path) -> None:
        """Write ``split.json`` when the split was drawn here (not re-read from ``path``)."""
        if self.new_split is not None:
            save_splits(path, self.new_split)
            self.new_split = None

    @property
    def tiled(self) -> bool:
        """Whether the items are tiles of native-resolution images."""
        return self.base.tile is not None

    def positions(self, name: str) -> list[int]:
        """Item positions of a set: ``train``/``val``/``test`` in :attr:`base`, ``novel`` in :attr:`novel`.

        The items of an image are the image itself, or all its tiles.

        Raises:
            KeyError: an id of the set that is not an image of its dataset (naming the dataset).
        """
        data = self.novel if name == "novel" else self.base
        image_ids = self.split.get(name, [])
        if name not in self._positions and data is not None and image_ids:
            index: dict[str, list[int]] = {}
            for position, item in enumerate(data.ids):  # tile ids are "<image id>@<y>_<x>"
                index.setdefault(item if data.tile is None else item.rpartition("@")[0], []).append(position)
            unknown = [i for i in image_ids if i not in index]
            if unknown:
                raise KeyError(f"{data.raw.spec}: no image with id {unknown[0]!r}")
            self._positions[name] = [position for image_id in image_ids for position in index[image_id]]
        return self._positions.get(name, [])

    def _dataset(self, name: str, *, train: bool) -> Dataset[Any]:
        """The items of set ``name`` (training adds the novel images, as source 1, to the base ones)."""
        transforms = build_transforms(self.augment) if train else None
        sources: list[tuple[CachedDataset, str]] = [(self.base, name)]
        if name == "train" and self.novel is not None and self.positions("novel"):
            sources.append((self.novel, "novel"))
        parts = [
            SegmentationDataset(
                data,
                self.positions(which),
                transforms=transforms,
                source=source,
                noise=self._noise(name, source),
                generator=self.stream.augment[source] if train else None,
            )
            for source, (data, which) in enumerate(sources)
        ]
        return parts[0] if len(parts) == 1 else PooledDataset(parts)

    def _noise(self, name: str, source: int) -> GaussianNoise | None:
        if self.noise is None or not self.noise.applies_to(name):
            return None
        return GaussianNoise(self.noise.sigma, seed=self.noise.seed + source, apply_to=self.noise.apply_to)

    @property
    def n_train(self) -> int:
        """Number of training items (base train + novel; tiles when tiled)."""
        return len(self.positions("train")) + len(self.positions("novel"))

    def images(self, name: str) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """The whole images of a base set, one at a time: ``(image id, (H, W, C) uint8, (H, W) bool)``.

        Without tiling these are the cached (resized) images; with tiling the native-resolution images,
        put back together from their tiles (the tiles cover every pixel).
        """
        check_option("split", name, SPLIT_NAMES)
        items = (self.base[p] for p in self.positions(name))
        for image_id, parts in itertools.groupby(items, key=lambda item: str(item["record_id"])):
            tiles = list(parts)
            if self.tiled:
                yield (image_id, *_stitch(tiles))
            else:
                yield image_id, np.asarray(tiles[0]["image"]), np.asarray(tiles[0]["mask"])

    @property
    def train(self) -> Dataset[Any]:
        """The pooled training set (base train ids + novel ids)."""
        return self._dataset("train", train=True)

    def loaders(self, cfg: ExperimentConfig) -> Loaders:
        """Shuffled, augmented training loader and the validation loader.

        Both draw from :attr:`stream`, so the second phase continues the stream where the first stopped,
        and the stream's state (saved in checkpoints) fixes every later batch. Workers are not persistent:
        each epoch starts new ones, seeded from the shuffle generator (see
        :func:`reseed_worker_augmentation`), so no random state lives only in a worker process.
        """
        train = DataLoader(
            self.train,
            batch_size=cfg.train.batch_size,
            shuffle=True,
            generator=self.stream.shuffle,
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=False,
            worker_init_fn=reseed_worker_augmentation,
        )
        return Loaders(train, self.eval_loader("val", cfg.train.eval_batch_size))

    def eval_loader(self, name: str, batch_size: int) -> DataLoader[Any]:
        """Un-augmented, unshuffled loader of one split of the base site."""
        check_option("split", name, SPLIT_NAMES)
        return DataLoader(
            self._dataset(name, train=False),
            batch_size=batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate,
        )


def derive_seed(*key: int) -> int:
    """A 63-bit seed derived from integers (NumPy ``SeedSequence``): distinct keys give unrelated streams."""
    return int(np.random.SeedSequence([abs(int(k)) for k in key]).generate_state(1, np.uint64)[0] >> 1)


def augment_generator(seed: int, source: int) -> torch.Generator:
    """The augmentation generator of one source (0 base, 1 novel): its own stream for every source."""
    return torch.Generator().manual_seed(derive_seed(seed, source))


class DataStream:
    """A run's training randomness: the shuffle generator and one augmentation generator per source.

    The shuffle generator draws each epoch's order and the base seed of that epoch's DataLoader workers;
    without workers, the augmentation generators draw every transform. Their states are all that decides
    the batches of the following epochs, so :meth:`state_dict` in a checkpoint makes a resumed run see
    exactly the batches the uninterrupted run sees.

    Args:
        seed: ``train.seed``.
    """

    def __init__(self, seed: int) -> None:
        self.shuffle = torch.Generator().manual_seed(seed)
        self.augment = [augment_generator(seed, source) for source in (0, 1)]  # 0 base, 1 novel

    def state_dict(self) -> dict[str, Any]:
        """The generator states (CPU ``uint8`` tensors)."""
        return {"shuffle": self.shuffle.get_state(), "augment": [g.get_state() for g in self.augment]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` in place (the loaders keep their references to the generators)."""
        augment = list(state["augment"])
        if len(augment) != len(self.augment):
            raise ValueError(f"data stream state has {len(augment)} sources, expected {len(self.augment)}")
        self.shuffle.set_state(state["shuffle"])
        for generator, value in zip(self.augment, augment):
            generator.set_state(value)


def reseed_worker_augmentation(worker_id: int) -> None:
    """``worker_init_fn``: give each DataLoader worker its own augmentation stream per source.

    Every worker starts with a copy of the datasets' generators, so without this all workers would draw the
    same transforms. The new seed derives from the worker's torch seed (the loader's base seed, drawn from
    the loader's seeded generator, plus the worker id) and the source, so it is reproducible for a given
    ``train.seed`` and differs between workers, sources and (non-persistent) loader iterations.
    """
    info = torch.utils.data.get_worker_info()
    if info is None:
        return
    for part in getattr(info.dataset, "parts", [info.dataset]):  # a pooled set's parts, or the set itself
        if isinstance(getattr(part, "generator", None), torch.Generator):
            part.generator.manual_seed(derive_seed(torch.initial_seed(), part.source, worker_id))


def _stitch(tiles: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Paste the tiles of one image (ids ``"<image id>@<y>_<x>"``) back into the whole image and mask."""
    origins = [[int(v) for v in str(tile["id"]).rpartition("@")[2].split("_")] for tile in tiles]
    first = np.asarray(tiles[0]["image"])
    side_y, side_x = first.shape[:2]
    height = max(y for y, _ in origins) + side_y
    width = max(x for _, x in origins) + side_x
    image = np.zeros((height, width, first.shape[2]), dtype=first.dtype)
    mask = np.zeros((height, width), dtype=bool)
    for (y, x), tile in zip(origins, tiles):
        image[y : y + side_y, x : x + side_x] = tile["image"]
        mask[y : y + side_y, x : x + side_x] = tile["mask"]
    return image, mask


def cache_dataset(raw: Any, cfg: ExperimentConfig, run_dir: Path, *, native: bool = False) -> CachedDataset:
    """``raw`` cached as the run's data is, in ``data.cache_dir`` (default ``.cache`` beside ``run_dir``).

    With ``data.preprocess: tile``: native-size tiles of ``data.image_size``² at ``data.tile_stride``;
    otherwise whole images resized to ``data.image_size``² (kept at native size with ``native``). A
    multi-class head gets the class maps (uint8 labels) as targets instead of the binary foreground.
    """
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else run_dir.parent / ".cache"
    if cfg.data.preprocess == "tile":
        stride = cfg.data.tile_stride or cfg.data.image_size
        return CachedDataset(raw, None, cache_dir, tile=cfg.data.image_size, stride=stride)
    target = "classes" if cfg.model.head != "binary" else "mask"
    return CachedDataset(raw, None if native else cfg.data.image_size, cache_dir, target=target)


def _open_cached(spec: str, cfg: ExperimentConfig, run_dir: Path) -> CachedDataset:
    raw = open_dataset(spec)
    if len(raw) == 0:
        raise SplitError(f"dataset {spec!r} has no images")
    return cache_dataset(raw, cfg, run_dir)


def build_run_data(cfg: ExperimentConfig, run_dir: str | Path, *, write_split: bool = True) -> RunData:
    """Open, cache and split the run's data; write ``split.json`` on first use, re-read it afterwards.

    Args:
        cfg: the run's configuration.
        run_dir: the run directory (``split.json`` is read from it when present).
        write_split: write a newly drawn split now; with ``False`` it is kept in :attr:`RunData.new_split`
            for :meth:`RunData.save_split`, so the data can be checked before the run directory exists.

    Raises:
        DatasetError / DatasetNotFoundError: a missing or bad file (named).
        SplitError: an empty dataset, or a split that leaves a set empty.
    """
    run_dir = Path(run_dir)
    base = _open_cached(cfg.data.base, cfg, run_dir)
    novel = _open_cached(cfg.data.novel, cfg, run_dir) if cfg.data.novel else None
    path = run_dir / "split.json"
    new_split: dict[str, SourceSplit] | None = None
    if path.is_file():
        sources = load_splits(path)
        _check_saved(path, sources, base, novel, grouped=cfg.data.split_grouped)
    else:
        sources = new_split = _draw_split(cfg, base, novel)
    split = {name: list(sources["base"][name]) for name in SPLIT_NAMES}
    split["novel"] = list(sources["novel"]["train"]) if "novel" in sources and novel is not None else []
    noise = cfg.data.noise
    data = RunData(
        base,
        novel,
        split,
        seed=cfg.train.seed,
        augment=cfg.data.augment,
        num_workers=cfg.train.num_workers,
        noise=GaussianNoise(noise.sigma, seed=noise.seed, apply_to=noise.apply_to)
        if noise.sigma > 0
        else None,
        new_split=new_split,
    )
    if write_split:
        data.save_split(path)
    return data


def _images(data: CachedDataset, grouped: bool) -> tuple[list[str], list[str | None] | None]:
    """Image ids of ``data`` and their patient/slide groups (``None`` when the run does not group)."""
    return [r.id for r in data.records], [r.group for r in data.records] if grouped else None


def _draw_split(
    cfg: ExperimentConfig, base: CachedDataset, novel: CachedDataset | None
) -> dict[str, SourceSplit]:
    """A new split: base images into train/val/test (a fold, or the split scheme), novel images to add."""
    ids, groups = _images(base, cfg.data.split_grouped)
    if cfg.data.folds is not None:
        val = 0.2 if cfg.data.val_fraction is None else cfg.data.val_fraction
        base_split = fold_split(
            ids,
            cfg.data.folds,
            cfg.data.fold,
            groups=groups,
            seed=cfg.data.split_seed,
            val=val,
            spec=cfg.data.base,
        )
    else:
        base_split = make_split(
            ids,
            groups=groups,
            official=base.raw.official_split() if cfg.data.split_official else None,
            scheme=cfg.data.split_scheme,
            seed=cfg.data.split_seed,
            test=cfg.data.test_fraction,
            val=cfg.data.val_fraction,
            spec=cfg.data.base,
        )
    if novel is None or cfg.data.novel is None:
        return {"base": base_split}
    pool = novel_training_ids(novel.records, spec=cfg.data.novel)
    fraction = 1.0 if cfg.data.novel_fraction is None else cfg.data.novel_fraction
    k = addition_schedule(len(pool), [fraction])[0] if cfg.data.novel_k is None else cfg.data.novel_k
    if k > len(pool):
        raise SplitError(
            f"data.novel_k = {k} is larger than the training pool of {cfg.data.novel!r} "
            f"({len(pool)} images; official test images are never added)"
        )
    selection = cfg.data.novel_selection
    rule = (
        "first k ids in natural order (nested across k)"
        if selection == "first"
        else f"first k of a permutation seeded by {cfg.data.split_seed} (nested across k)"
    )
    added = tuple(select_subset(pool, k, selection=selection, seed=cfg.data.split_seed))
    meta = {"rule": rule, "pool": "official train split" if len(pool) < len(novel.records) else "every image"}
    novel_split = SourceSplit({"train": added}, spec=cfg.data.novel, scheme="custom", meta=meta)
    return {"base": base_split, "novel": novel_split}


def _check_saved(
    path: Path,
    sources: dict[str, SourceSplit],
    base: CachedDataset,
    novel: CachedDataset | None,
    *,
    grouped: bool,
) -> None:
    """Validate a re-read ``split.json`` against the run's datasets, as a fresh split would be.

    Every id must be an image of its source and stay inside the dataset root, no id (and, when the run
    splits by groups, no patient/slide group) may be in two sets, the base train/val/test sets must not be
    empty and together hold every base image (as every split fdseg draws does), and novel ids must come
    from the novel dataset's training part.

    Raises:
        SplitError: naming ``path`` and the offending source, set, id or group.
    """
    try:
        if "base" not in sources:
            raise SplitError("no 'base' source")
        check_keys("split source", sources, ("base", "novel"))
        if "novel" in sources and novel is None and any(sources["novel"].sets.values()):
            raise SplitError("it lists novel ids but the config has no data.novel")
        for name, data, required in (("base", base, SPLIT_NAMES), ("novel", novel, ())):
            if name in sources and data is not None:
                ids, groups = _images(data, grouped)
                check_split(
                    sources[name], ids, groups=groups, root=data.raw.root, required=required, source=name
                )
        listed = {i for part in SPLIT_NAMES for i in sources["base"][part]}
        unlisted = [r.id for r in base.records if r.id not in listed]
        if unlisted:  # every split fdseg draws holds every base image
            raise SplitError(
                f"{len(unlisted)} base image(s) are in no set (e.g. {unlisted[0]!r}): a split holds every "
                "image; delete split.json to draw it again from the config"
            )
        if novel is not None and "novel" in sources and sources["novel"]["train"]:
            pool = set(novel_training_ids(novel.records, spec=novel.raw.spec))
            outside = [i for i in sources["novel"]["train"] if i not in pool]
            if outside:
                raise SplitError(
                    f"novel ids {outside[:5]} are not in the novel dataset's training part "
                    "(official test images are never added)"
                )
    except ValueError as err:  # SplitError is a ValueError
        raise SplitError(f"{path}: {err}") from None
