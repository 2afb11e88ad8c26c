"""The preprocessing cache: decoded, resized arrays stored once, so that epochs never decode images.

:class:`CachedDataset` wraps a :class:`~fdseg.data.base.RawDataset`. On first use each record is decoded
(``raw.load_record``), resized, optionally tiled, and written to ``<cache_dir>/v<LOADER_VERSION>/<format>/``
as one uncompressed ``.npz`` per record. The entry's key is the sha1 of: the loader version, the format and
its options, the record id, the sha1 of every file the record reads, the target size and both resize modes.
A changed file, size, option or loader version therefore gives a new entry; stale entries are simply unused.
File hashes are memoised under ``<cache_dir>/filehash/`` by (path, size, mtime), so re-opening a dataset
reads no image bytes at all once it is cached.

Resizing (``size=None`` keeps native size):

- images: ``bilinear`` (default), ``area`` (Pillow BOX, best for strong downsampling), ``bicubic`` (what the
  paper's code does), ``nearest``.
- masks (binary in, binary out): ``nearest`` (default; the dataset checklist's rule), ``area`` (foreground
  if more than half of the cell is foreground), ``any`` (foreground if any pixel of the cell is), ``bicubic``
  (the paper's code: bicubic on 0/255, then binarised at 0.5 — it resizes before binarising).

Tiling (``tile=``, ``stride=``) cuts every (resized) image into ``tile``×``tile`` patches at the given stride;
the last row/column of patches is aligned to the border so that the whole image is covered. A patch's id is
``"<record id>@<y>_<x>"`` and its ``group`` is the record's group, or the record id when there is none, so
grouped splits never put two patches of one image into different sets.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fdseg._checks import check_option
from fdseg._io import atomic_write_bytes
from fdseg.data.base import LOADER_VERSION, RawDataset, Record, official_split_ids
from fdseg.data.errors import DatasetError

IMAGE_RESIZE_MODES: tuple[str, ...] = ("bilinear", "area", "bicubic", "nearest")
MASK_RESIZE_MODES: tuple[str, ...] = ("nearest", "area", "any", "bicubic")
#: What a cached item's ``mask`` holds: the binary foreground or the class map.
TARGETS: tuple[str, ...] = ("mask", "classes")

_PIL_FILTERS = {
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


def default_cache_dir() -> Path:
    """``~/.cache/fdseg``, the default cache location."""
    return Path.home() / ".cache" / "fdseg"


def _as_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive (H, W), got {size}")
    return height, width


def resize_image(image: np.ndarray, size: tuple[int, int], *, mode: str = "bilinear") -> np.ndarray:
    """Resize an image with Pillow.

    Args:
        image: (H, W, C) uint8 with C = 1 or 3.
        size: target (height, width).
        mode: one of :data:`IMAGE_RESIZE_MODES`.

    Returns:
        (height, width, C) uint8.
    """
    check_option("image resize mode", mode, IMAGE_RESIZE_MODES)
    if image.shape[:2] == size:
        return image
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    out = np.asarray(pil.resize((size[1], size[0]), _PIL_FILTERS[mode]))
    return np.ascontiguousarray(out[..., None] if out.ndim == 2 else out)


def resize_mask(mask: np.ndarray, size: tuple[int, int], *, mode: str = "nearest") -> np.ndarray:
    """Resize a binary mask (see the module docstring for the rules).

    Args:
        mask: (H, W) bool.
        size: target (height, width).
        mode: one of :data:`MASK_RESIZE_MODES`.

    Returns:
        (height, width) bool.
    """
    check_option("mask resize mode", mode, MASK_RESIZE_MODES)
    if mask.shape == size:
        return mask.copy()
    pil = Image.fromarray(mask.astype(np.uint8) * 255)
    target = (size[1], size[0])
    if mode == "nearest":
        return np.asarray(pil.resize(target, Image.Resampling.NEAREST)) > 127
    if mode == "bicubic":
        return np.asarray(pil.resize(target, Image.Resampling.BICUBIC)) > 127
    if mode == "area":
        frac = np.asarray(Image.fromarray(mask.astype(np.float32)).resize(target, Image.Resampling.BOX))
        return frac > 0.5
    # "any": a target cell is foreground if any source pixel mapped into it is.
    rows = np.minimum((np.arange(mask.shape[0]) * size[0]) // mask.shape[0], size[0] - 1)
    cols = np.minimum((np.arange(mask.shape[1]) * size[1]) // mask.shape[1], size[1] - 1)
    out = np.zeros(size, dtype=bool)
    ys, xs = np.nonzero(mask)
    out[rows[ys], cols[xs]] = True
    if size[0] > mask.shape[0] or size[1] > mask.shape[1]:  # upsampling: nearest covers the gaps
        out |= np.asarray(pil.resize(target, Image.Resampling.NEAREST)) > 127
    return out


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a class map (H, W) uint8 with nearest neighbour (labels are never blended)."""
    if labels.shape == size:
        return labels.copy()
    return np.asarray(Image.fromarray(labels).resize((size[1], size[0]), Image.Resampling.NEAREST))


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles along one axis; the last tile ends at ``length``.

    Raises:
        ValueError: ``tile`` larger than ``length`` or a non-positive ``stride``.
    """
    if stride < 1 or tile < 1:
        raise ValueError(f"tile and stride must be >= 1, got tile={tile}, stride={stride}")
    if tile > length:
        raise ValueError(f"tile {tile} is larger than the image side {length}")
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def _sha1_file(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_digest(path: Path, memo_dir: Path | None) -> str:
    """sha1 of a file's content, memoised in ``memo_dir`` by (absolute path, inode, size, mtime, ctime).

    The status-change time ``ctime`` is set by the file system on every write and cannot be set back by a
    user (unlike ``mtime``), so an edited file always gets a new memo entry and is hashed again.
    """
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise DatasetError(path, "file not found") from None
    if memo_dir is None:
        return _sha1_file(path)
    key = f"{path.resolve()}|{stat.st_ino}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ctime_ns}"
    fast = hashlib.sha1(key.encode()).hexdigest()
    memo = memo_dir / fast[:2] / fast
    if memo.is_file():
        cached = memo.read_text().strip()
        if len(cached) == 40:
            return cached
    digest = _sha1_file(path)
    atomic_write_bytes(memo, digest.encode())
    return digest


@dataclass(frozen=True)
class _Item:
    record: int
    y: int
    x: int
    id: str


class CachedDataset:
    """Decoded, resized (and optionally tiled) arrays of a raw dataset, decoded at most once.

    Items are dicts ``{"image": (h, w, C) uint8, "mask": (h, w) bool, "id": str, "group": str | None,
    "record_id": str}``. ``decode_count`` counts calls to ``raw.load_record`` made by this object (0 when
    every record came from the disk cache); no call is ever made after construction.

    Args:
        raw: the dataset to cache.
        size: target (height, width) or one int for a square; ``None`` keeps the native size.
        cache_dir: where ``.npz`` entries live (default :func:`default_cache_dir`).
        persist: ``False`` keeps arrays in memory only (nothing is written, no file is hashed).
        image_resize: one of :data:`IMAGE_RESIZE_MODES`.
        mask_resize: one of :data:`MASK_RESIZE_MODES`.
        tile: patch side in px (after resizing); ``None`` for whole images.
        stride: step between patches (default ``tile``, i.e. no overlap).
        progress: called as ``progress(done, total)`` after each record is prepared.
        target: what ``mask`` holds: ``"mask"`` (binary foreground, bool) or ``"classes"`` (the loader's class
            map, uint8 labels, resized with nearest neighbour whatever ``mask_resize`` says; a loader without
            class maps is an error naming the file).

    Raises:
        ValueError: a bad size, mode, tile or stride (before anything is decoded).
        DatasetError: a record that cannot be decoded (naming its file).
    """

    def __init__(
        self,
        raw: RawDataset,
        size: int | tuple[int, int] | None = None,
        cache_dir: str | Path | None = None,
        *,
        persist: bool = True,
        image_resize: str = "bilinear",
        mask_resize: str = "nearest",
        tile: int | None = None,
        stride: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        target: str = "mask",
    ) -> None:
        check_option("image resize mode", image_resize, IMAGE_RESIZE_MODES)
        check_option("cache target", target, TARGETS)
        self.target = target
        check_option("mask resize mode", mask_resize, MASK_RESIZE_MODES)
        self.size = _as_size(size)
        if tile is not None and (tile < 1 or (stride is not None and stride < 1)):
            raise ValueError(f"tile and stride must be >= 1, got tile={tile}, stride={stride}")
        if tile is None and stride is not None:
            raise ValueError("stride given without tile")
        if tile is not None and self.size is not None and tile > min(self.size):
            raise ValueError(f"tile {tile} is larger than the target size {self.size}")
        self.raw = raw
        self.image_resize = image_resize
        self.mask_resize = mask_resize
        self.tile = tile
        self.stride = stride if stride is not None else tile
        self.persist = persist
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.decode_count = 0
        self._images: list[np.ndarray] = []
        self._masks: list[np.ndarray] = []
        records = raw.records
        for done, record in enumerate(records, start=1):
            image, mask = self._prepare(record)
            self._images.append(image)
            self._masks.append(mask)
            if progress is not None:
                progress(done, len(records))
        self._items = self._index()

    # -- preparation ----------------------------------------------------------------------------------------
    def _key(self, record: Record) -> str:
        memo = self.cache_dir / "filehash"
        payload: dict[str, Any] = {
            "loader_version": LOADER_VERSION,
            "format": self.raw.format_name,
            "options": sorted(self.raw.options.items()),
            "id": record.id,
            "files": [file_digest(f, memo) for f in record.files],
            "size": self.size,
            "image_resize": self.image_resize,
            "mask_resize": self.mask_resize,
        }
        if self.target != "mask":  # binary entries keep their keys
            payload["target"] = self.target
        return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def entry_path(self, record: Record) -> Path:
        """The ``.npz`` file that holds ``record``'s arrays."""
        key = self._key(record)
        return self.cache_dir / f"v{LOADER_VERSION}" / self.raw.format_name / key[:2] / f"{key}.npz"

    def _decode(self, record: Record) -> tuple[np.ndarray, np.ndarray]:
        self.decode_count += 1
        sample = self.raw.load_record(record)
        image, mask = sample["image"], sample["mask"]
        if image.ndim != 3 or image.dtype != np.uint8 or mask.shape != image.shape[:2]:
            raise DatasetError(
                record.image,
                f"loader returned image {image.shape} {image.dtype} and mask {mask.shape}; "
                "expected (H, W, C) uint8 and (H, W) bool",
            )
        if self.target == "classes":
            classes = sample.get("classes")
            if classes is None:
                raise DatasetError(
                    record.image,
                    f"{self.raw.format_name} has no class labels; multi-class training needs them",
                )
            if classes.shape != image.shape[:2]:
                raise DatasetError(record.image, f"class map {classes.shape} != image {image.shape[:2]}")
            labels = np.asarray(classes, dtype=np.uint8)
            if self.size is not None:
                image = resize_image(image, self.size, mode=self.image_resize)
                labels = resize_labels(labels, self.size)
            return np.ascontiguousarray(image), np.ascontiguousarray(labels)
        if self.size is not None:
            image = resize_image(image, self.size, mode=self.image_resize)
            mask = resize_mask(mask.astype(bool), self.size, mode=self.mask_resize)
        return np.ascontiguousarray(image), np.ascontiguousarray(mask.astype(bool))

    def _prepare(self, record: Record) -> tuple[np.ndarray, np.ndarray]:
        if not self.persist:
            return self._decode(record)
        path = self.entry_path(record)
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as entry:
                    return entry["image"], entry["mask"]
            except (OSError, ValueError, KeyError):
                path.unlink(missing_ok=True)  # a corrupt entry is rebuilt
        image, mask = self._decode(record)
        buffer = BytesIO()
        np.savez(buffer, image=image, mask=mask)
        atomic_write_bytes(path, buffer.getvalue())
        return image, mask

    def _index(self) -> list[_Item]:
        items: list[_Item] = []
        for r, (record, image) in enumerate(zip(self.raw.records, self._images)):
            if self.tile is None:
                items.append(_Item(r, 0, 0, record.id))
                continue
            stride = self.stride if self.stride is not None else self.tile
            try:
                rows = tile_starts(image.shape[0], self.tile, stride)
                cols = tile_starts(image.shape[1], self.tile, stride)
            except ValueError as err:
                raise DatasetError(record.image, f"cannot tile: {err}") from None
            items.extend(_Item(r, y, x, f"{record.id}@{y}_{x}") for y in rows for x in cols)
        return items

    # -- access ---------------------------------------------------------------------------------------------
    @property
    def records(self) -> list[Record]:
        """The raw dataset's records."""
        return self.raw.records

    @property
    def ids(self) -> list[str]:
        """Item ids (record ids, or ``"<record id>@<y>_<x>"`` for patches)."""
        return [item.id for item in self._items]

    @property
    def groups(self) -> list[str | None]:
        """Item group keys (the record's group; with tiling, the record id when it has none)."""
        out: list[str | None] = []
        for item in self._items:
            record = self.raw.records[item.record]
            out.append(record.group if self.tile is None or record.group is not None else record.id)
        return out

    def official_split(self) -> dict[str, list[str]] | None:
        """Item ids per official split of the raw dataset (``None`` when it has none)."""
        return official_split_ids((item.id, self.raw.records[item.record].split) for item in self._items)

    def index_of(self, item_id: str) -> int:
        """The position of ``item_id`` (``KeyError`` naming the dataset otherwise)."""
        lookup = getattr(self, "_lookup", None)
        if lookup is None:
            lookup = {item.id: i for i, item in enumerate(self._items)}
            self._lookup = lookup
        try:
            return int(lookup[item_id])
        except KeyError:
            raise KeyError(f"{self.raw.spec}: no item with id {item_id!r}") from None

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self._items[index]
        image, mask = self._images[item.record], self._masks[item.record]
        if self.tile is not None:
            rows, cols = slice(item.y, item.y + self.tile), slice(item.x, item.x + self.tile)
            image, mask = image[rows, cols], mask[rows, cols]
        record = self.raw.records[item.record]
        group = record.group if self.tile is None or record.group is not None else record.id
        return {"image": image, "mask": mask, "id": item.id, "group": group, "record_id": record.id}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]
