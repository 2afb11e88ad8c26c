"""The dataset contract shared by every format loader.

A *format* (``tnbc``, ``monuseg``, ``folder``, …) scans a dataset in its distributed layout into a list of
:class:`Record` (one per image, paired by id, never by sorted position) and loads one record at native size
into a :class:`RawSample`. :func:`fdseg.data.open.open_dataset` turns a spec ``"NAME:PATH[?key=value&…]"``
into a :class:`RawDataset`. Resizing, caching, splitting and tensor conversion happen later (``cache.py``,
``splits.py``, ``transforms.py``), never in a loader.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import numpy as np

from fdseg.data.errors import DatasetError
from fdseg.registry import Registry

#: Bump when a loader's decoding changes, so that cached arrays are rebuilt.
LOADER_VERSION = 2


@dataclass(frozen=True)
class Record:
    """One image of a dataset on disk.

    Attributes:
        id: unique within the dataset (e.g. ``"03_5"`` for TNBC).
        image: the image file.
        mask_files: files the mask is built from (PNG masks OR-merged, an XML, a ``.mat``); may be empty
            for unlabelled images.
        group: patient/slide/WSI key for grouped splits (``None`` when the dataset has none).
        split: the official split (``"train"``/``"test"``) when the dataset has one.
        meta: free-form string metadata (class label, site, …).
    """

    id: str
    image: Path
    mask_files: tuple[Path, ...] = ()
    group: str | None = None
    split: str | None = None
    meta: Mapping[str, str] = field(default_factory=dict)

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file this record reads (for cache keys)."""
        return (self.image, *self.mask_files)


class RawSample(TypedDict, total=False):
    """A sample at native size, as a loader returns it.

    ``image``: (H, W, 3) uint8 RGB (or (H, W, 1) for single-channel data); ``mask``: (H, W) bool;
    ``id``: str; ``group``: str | None; ``meta``: dict; optional ``instances``: (H, W) int32 instance map;
    optional ``classes``: (H, W) uint8 class map.
    """

    image: np.ndarray
    mask: np.ndarray
    id: str
    group: str | None
    meta: dict[str, str]
    instances: np.ndarray
    classes: np.ndarray


class RawDataset(ABC):
    """Base of all format loaders: a list of records plus a ``load`` that decodes one.

    Subclasses implement :meth:`scan` and :meth:`load_record` and set ``format_name``. ``options`` are the
    spec's query options (``?size=…``); unknown options must raise ``ValueError``.
    """

    format_name: str = "raw"
    #: option name -> default value (as a string), checked by ``__init__``.
    option_defaults: Mapping[str, str] = {}

    def __init__(self, root: str | Path, **options: str) -> None:
        from fdseg._checks import check_keys

        self.root = Path(root).expanduser()
        check_keys(f"{self.format_name} option", options, self.option_defaults)
        self.options: dict[str, str] = {**self.option_defaults, **options}
        self.records: list[Record] = self.scan()
        ids = [r.id for r in self.records]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise DatasetError(self.root, f"duplicate image ids {dup}")

    # -- to implement -------------------------------------------------------------------------------------
    @abstractmethod
    def scan(self) -> list[Record]:
        """List the records of the dataset (raise ``DatasetNotFoundError`` / ``DatasetError``)."""

    @abstractmethod
    def load_record(self, record: Record) -> RawSample:
        """Decode one record at native size."""

    # -- provided -----------------------------------------------------------------------------------------
    @property
    def class_names(self) -> tuple[str, ...] | None:
        """Names of the labels of ``RawSample["classes"]`` (index = label, 0 = background), or ``None`` for a
        dataset without class labels."""
        return None

    @property
    def spec(self) -> str:
        """The spec that reopens this dataset."""
        opts = "&".join(
            f"{k}={v}" for k, v in sorted(self.options.items()) if v != self.option_defaults.get(k)
        )
        return f"{self.format_name}:{self.root}" + (f"?{opts}" if opts else "")

    def official_split(self) -> dict[str, list[str]] | None:
        """Ids per official split, or ``None`` when the dataset has no official split."""
        return official_split_ids((r.id, r.split) for r in self.records)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> RawSample:
        return self.load_record(self.records[index])

    def __iter__(self) -> Iterator[RawSample]:
        for r in self.records:
            yield self.load_record(r)

    def by_id(self, image_id: str) -> Record:
        """The record with id ``image_id`` (``KeyError`` otherwise)."""
        for r in self.records:
            if r.id == image_id:
                return r
        raise KeyError(f"{self.spec}: no image with id {image_id!r}")


#: Format name -> loader class. Register in the module that defines the loader.
FORMATS: Registry[RawDataset] = Registry("dataset format")


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """Split ``"NAME:PATH?k=v&k2=v2"`` into ``(name, path, options)``.

    Raises:
        ValueError: no ``NAME:`` prefix, or a malformed option.
    """
    if ":" not in spec:
        raise ValueError(f"dataset spec {spec!r} must look like NAME:PATH (formats: {FORMATS.names()})")
    name, rest = spec.split(":", 1)
    path, _, query = rest.partition("?")
    options: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise ValueError(f"dataset spec {spec!r}: option {part!r} must be key=value")
        options[key] = value
    return name, path, options


# -- shared decoding helpers ------------------------------------------------------------------------------

#: Image file extensions every loader accepts (lower case, with the dot).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def official_split_ids(items: Iterable[tuple[str, str | None]]) -> dict[str, list[str]] | None:
    """The official split from ``(id, split)`` pairs: split name -> ids in the given order.

    Args:
        items: ``(item id, official split name or None)`` per image (or tile), in dataset order.

    Returns:
        ``{"train": [...], "test": [...], ...}`` with the names as they occur, or ``None`` when no item has an
        official split.
    """
    splits: dict[str, list[str]] = {}
    for item_id, split in items:
        if split is not None:
            splits.setdefault(split, []).append(item_id)
    return splits or None


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders ``"benign (2)"`` before ``"benign (10)"`` (digit runs compare as numbers)."""
    return tuple((0, int(tok)) if tok.isdigit() else (1, tok) for tok in re.split(r"(\d+)", text) if tok)
