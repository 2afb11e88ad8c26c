"""``folder:`` — a generic ``images/`` + ``masks/`` layout, and ``synthetic:`` built on it.

Layout (the private US-TNBC set of the paper is distributed the same way)::

    <root>/images/<stem>.<ext>                  png, jpg/jpeg, tif/tiff or bmp
    <root>/masks/<stem><mask_suffix>.<ext>      any of the same extensions; 0 = background

Images and masks are paired by file stem, never by sorted position. Options (``folder:DIR?key=value``):

- ``mask_suffix`` (default ``""``): e.g. ``_mask`` for ``masks/case1_mask.png``.
- ``fg_value`` (default: any non-zero grey value is foreground): the grey value that marks foreground.
- ``images_dir`` / ``masks_dir`` (default ``images`` / ``masks``): sub-folder names, e.g. ``original`` /
  ``GT``.
- ``channels`` (``3`` or ``1``, default ``3``): RGB (grey replicated) or single channel.
- ``group_pattern`` (default none): a regular expression whose first group, searched in the id, is the
  patient/slide key used by grouped splits (e.g. ``^(\\d+)_`` for ``03_5``).

Hidden files (``.DS_Store``, ``._*``) and OS litter (``Thumbs.db``, ``desktop.ini``) are ignored; any other
file in ``images/`` must be an image. Images and masks are decoded by what each file says its values mean
(see :mod:`fdseg.data.formats._decode`), and the decisions are in ``meta`` for ``fdseg data check``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image

from fdseg.data.base import (
    FORMATS,
    IMAGE_EXTENSIONS,
    RawDataset,
    RawSample,
    Record,
    natural_key,
)
from fdseg.data.errors import DatasetError, DatasetNotFoundError
from fdseg.data.formats._io import (
    SizeMismatchError,
    image_meta,
    is_hidden,
    mask_meta,
    read_image,
    read_mask,
)


def _list_images(folder: Path) -> dict[str, Path]:
    """Stem -> file for every image in ``folder``; two files with one stem is an error."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if is_hidden(path) or not path.is_file():
            continue
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise DatasetError(path, f"not an image file (expected one of {list(IMAGE_EXTENSIONS)})")
        if path.stem in found:
            raise DatasetError(
                path, f"two files with the stem {path.stem!r}: {found[path.stem].name}, {path.name}"
            )
        found[path.stem] = path
    return found


def scan_image_mask_folders(
    root: Path,
    *,
    images_dir: str = "images",
    masks_dir: str = "masks",
    mask_suffix: str = "",
    group_of: Callable[[str], str | None] | None = None,
) -> list[Record]:
    """Records for ``root/<images_dir>/<stem>.*`` paired with ``root/<masks_dir>/<stem><mask_suffix>.*``.

    Records are in natural order of their ids (the file stems).

    Raises:
        DatasetNotFoundError: ``root`` or one of the two sub-folders does not exist.
        DatasetError: an image without a mask or a mask without an image (naming the file), a non-image
            file, two files with one stem, or no image at all.
    """
    images_path = root / images_dir
    masks_path = root / masks_dir
    layout = f"{images_dir}/ and {masks_dir}/ sub-folders"
    if not root.is_dir():
        raise DatasetNotFoundError(root, f"a folder with {layout}")
    for folder in (images_path, masks_path):
        if not folder.is_dir():
            raise DatasetNotFoundError(folder, f"a folder (layout: {layout})")
    images = _list_images(images_path)
    if not images:
        raise DatasetError(images_path, f"empty dataset: no image files ({', '.join(IMAGE_EXTENSIONS)})")
    masks = _list_images(masks_path)
    records: list[Record] = []
    for stem in sorted(images, key=natural_key):
        mask = masks.pop(stem + mask_suffix, None)
        if mask is None:
            raise DatasetError(
                masks_path / f"{stem}{mask_suffix}.png",
                f"missing mask for image {images[stem]} "
                f"(expected {stem}{mask_suffix} with an image extension)",
            )
        group = group_of(stem) if group_of is not None else None
        records.append(Record(id=stem, image=images[stem], mask_files=(mask,), group=group))
    if masks:
        orphan = masks[sorted(masks, key=natural_key)[0]]
        expected = orphan.stem[: len(orphan.stem) - len(mask_suffix)] if mask_suffix else orphan.stem
        raise DatasetError(orphan, f"mask without an image (expected {images_path / expected}.*)")
    return records


def load_image_mask_pair(record: Record, *, channels: int = 3, fg_value: int | None = None) -> RawSample:
    """Decode ``record.image`` and its single mask file at native size.

    Returns:
        ``image`` (H, W, channels) uint8, ``mask`` (H, W) bool, ``id``, ``group``, ``meta`` (the decode
        facts of :func:`~fdseg.data.formats._decode.image_meta` and ``mask_meta``).

    Raises:
        DatasetError: an unreadable/truncated file, or a mask whose size differs from its image
            (:class:`SizeMismatchError`, naming the mask file and both sizes).
    """
    image, image_info = read_image(record.image, channels=channels)
    mask, mask_info = read_mask(record.mask_files[0], fg_value=fg_value)
    if mask.shape != image.shape[:2]:
        raise SizeMismatchError(
            record.mask_files[0],
            f"mask size {mask.shape[1]}x{mask.shape[0]} differs from image {record.image.name} "
            f"size {image.shape[1]}x{image.shape[0]} (W x H)",
        )
    meta = {**record.meta, **image_meta(image_info), **mask_meta([mask_info])}
    return RawSample(image=image, mask=mask, id=record.id, group=record.group, meta=meta)


@FORMATS.register("folder")
class FolderDataset(RawDataset):
    """Images and binary masks in two sibling folders, paired by file stem.

    ``load_record`` returns ``image`` (H, W, 3) uint8 RGB (or (H, W, 1) with ``channels=1``) and ``mask``
    (H, W) bool, at native size.

    Raises (at construction):
        DatasetNotFoundError: ``root``, ``images/`` or ``masks/`` does not exist.
        DatasetError: an image without a mask or a mask without an image (naming the file), a non-image
            file, or an empty ``images/`` folder.
        ValueError: an unknown or malformed option.
    """

    format_name = "folder"
    option_defaults: Mapping[str, str] = MappingProxyType(
        {
            "mask_suffix": "",
            "fg_value": "",
            "images_dir": "images",
            "masks_dir": "masks",
            "channels": "3",
            "group_pattern": "",
        }
    )

    def __init__(self, root: str | Path, **options: str) -> None:
        merged = {**self.option_defaults, **options}
        fg = merged.get("fg_value", "")
        if fg and not (fg.isdigit() and 0 <= int(fg) <= 65535):
            raise ValueError(f"folder option fg_value must be an integer grey value, got {fg!r}")
        if merged.get("channels") not in ("1", "3"):
            raise ValueError(f"folder option channels must be 1 or 3, got {merged.get('channels')!r}")
        pattern = merged.get("group_pattern", "")
        try:
            self._group_re = re.compile(pattern) if pattern else None
        except re.error as err:
            raise ValueError(
                f"folder option group_pattern {pattern!r} is not a regular expression: {err}"
            ) from None
        super().__init__(root, **options)

    @property
    def fg_value(self) -> int | None:
        """The foreground grey value, or ``None`` for any non-zero value."""
        return int(self.options["fg_value"]) if self.options["fg_value"] else None

    @property
    def channels(self) -> int:
        """Image channels returned by :meth:`load_record` (1 or 3)."""
        return int(self.options["channels"])

    def _group(self, image_id: str) -> str | None:
        if self._group_re is None:
            return None
        match = self._group_re.search(image_id)
        if match is None:
            raise DatasetError(
                self.root, f"group_pattern {self._group_re.pattern!r} does not match id {image_id!r}"
            )
        return match.group(1) if match.groups() else match.group(0)

    def scan(self) -> list[Record]:
        """Pair ``images/<stem>.*`` with ``masks/<stem><mask_suffix>.*``."""
        return scan_image_mask_folders(
            self.root,
            images_dir=self.options["images_dir"],
            masks_dir=self.options["masks_dir"],
            mask_suffix=self.options["mask_suffix"],
            group_of=self._group,
        )

    def load_record(self, record: Record) -> RawSample:
        """Decode one image/mask pair at native size (a size mismatch names the mask file)."""
        return load_image_mask_pair(record, channels=self.channels, fg_value=self.fg_value)


@FORMATS.register("synthetic")
class SyntheticDataset(RawDataset):
    """``synthetic:DIR?family=nuclei&site=dil2&n=40&seed=0&size=64`` — generated once, then read as a folder.

    If ``DIR`` is missing it is generated with :func:`fdseg.data.synthetic.write_synthetic`; if it exists, its
    ``synthetic.json`` must describe the same generation, otherwise a ``DatasetError`` is raised (nothing is
    overwritten). Options: ``family`` (``nuclei`` | ``ultrasound`` | ``nuclei_mc``: typed nuclei with class
    maps), ``site`` (a preset name, see
    :func:`fdseg.data.synthetic.site_names`), ``n``, ``seed``, ``size``, ``channels`` (1 or 3). Samples are
    those of ``folder:DIR``.
    """

    format_name = "synthetic"
    option_defaults: Mapping[str, str] = MappingProxyType(
        {
            "family": "nuclei",
            "site": "base",
            "n": "40",
            "seed": "0",
            "size": "64",
            "channels": "3",
        }
    )

    def __init__(self, root: str | Path, **options: str) -> None:
        merged = {**self.option_defaults, **options}
        for key in ("n", "seed", "size", "channels"):
            if not merged[key].isdigit():
                raise ValueError(
                    f"synthetic option {key} must be a non-negative integer, got {merged[key]!r}"
                )
        super().__init__(root, **options)

    def scan(self) -> list[Record]:
        """Generate ``root`` if needed (or check that it matches), then pair ``images/`` and ``masks/``."""
        from fdseg.data.synthetic import ensure_synthetic

        ensure_synthetic(
            self.root,
            family=self.options["family"],
            site=self.options["site"],
            n=int(self.options["n"]),
            seed=int(self.options["seed"]),
            size=int(self.options["size"]),
            channels=int(self.options["channels"]),
        )
        return scan_image_mask_folders(self.root)

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """The nucleus types of family ``nuclei_mc`` (background first); ``None`` for binary families."""
        if self.options["family"] != "nuclei_mc":
            return None
        from fdseg.data.synthetic import MULTICLASS_NAMES

        return MULTICLASS_NAMES

    def load_record(self, record: Record) -> RawSample:
        """Decode one generated pair (0/255 PNG masks); ``nuclei_mc`` adds ``classes`` from ``classes/``."""
        sample = load_image_mask_pair(record, channels=int(self.options["channels"]))
        if self.options["family"] == "nuclei_mc":
            path = self.root / "classes" / f"{record.id}.png"
            if not path.is_file():
                raise DatasetError(path, "missing class map of a nuclei_mc image (regenerate the folder)")
            classes = np.asarray(Image.open(path))
            if classes.shape != sample["mask"].shape:
                raise DatasetError(path, f"class map {classes.shape} != mask {sample['mask'].shape}")
            sample["classes"] = classes.astype(np.uint8)
        return sample
