"""BUSI breast ultrasound (Al-Dhabyani et al., Data in Brief 2020): 780 images in 3 classes.

Layout (the root may be ``Dataset_BUSI_with_GT`` or up to two levels above it)::

    Dataset_BUSI_with_GT/{benign,malignant,normal}/<cls> (N).png
                                                  <cls> (N)_mask.png [, <cls> (N)_mask_1.png, _mask_2.png]

Quirks handled (``datasets.md`` §4): names with spaces and parentheses (natural order, masks matched by
``stem + "_mask"``, never by glob or position); 17 images with several masks, OR-merged; masks of mode ``1``,
``L``, and two RGBA masks whose R=G=B hold the lesion while alpha is 255 everywhere (read by grey value,
never by alpha); the 133 ``normal`` masks, all-zero RGB, are kept and flagged ``meta["empty_mask"] =
"true"``. ``meta["class"]`` is the class folder, ``meta["n_masks"]`` the number of mask files. Option
``classes`` (default ``benign,malignant,normal``) keeps a subset, e.g. ``benign,malignant`` as in CMU-Net.
Images are RGB (grey content, 16 with colour overlays), or single-channel with ``channels=1``. No official
split, no group.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np

from fdseg.data.base import FORMATS, RawSample, Record, natural_key
from fdseg.data.errors import DatasetError, DatasetNotFoundError
from fdseg.data.formats._io import (
    COMMON_OPTIONS,
    FormatLoader,
    MaskInfo,
    check_same_size,
    find_folder,
    is_hidden,
    parse_choice,
    read_image,
    read_mask,
)

CLASSES = ("benign", "malignant", "normal")
_MASK = re.compile(r"^(?P<stem>.+?)_mask(?:_(?P<k>\d+))?$")


@FORMATS.register("busi")
class BUSI(FormatLoader):
    """BUSI with ground truth (see the module docstring); options ``classes`` and ``channels``."""

    format_name = "busi"
    option_defaults: Mapping[str, str] = MappingProxyType(
        {**COMMON_OPTIONS, "classes": ",".join(CLASSES), "channels": "3"}
    )

    def scan_records(self) -> list[Record]:
        """Pair every image with its ``_mask`` file(s) inside each class folder."""
        self.channels = int(parse_choice("channels", self.options["channels"], ("1", "3")))
        wanted = [c.strip() for c in self.options["classes"].split(",") if c.strip()]
        for name in wanted:
            parse_choice("classes entry", name, CLASSES)
        if not wanted:
            raise ValueError(f"option classes is empty; choose from {list(CLASSES)}")
        folder = find_folder(self.root, lambda f: any((f / c).is_dir() for c in CLASSES))
        if folder is None:
            raise DatasetNotFoundError(self.root, "Dataset_BUSI_with_GT/{benign,malignant,normal}/")
        records: list[Record] = []
        for cls in wanted:
            if not (folder / cls).is_dir():
                self.problem(folder / cls, f"class folder {cls!r} is missing", "warning")
                continue
            records += self._scan_class(folder / cls, cls)
        if not records:
            raise DatasetError(folder, f"no image/mask pairs found in classes {wanted}")
        return records

    def _scan_class(self, folder: Path, cls: str) -> list[Record]:
        images: dict[str, Path] = {}
        masks: dict[str, list[tuple[int, Path]]] = {}
        for path in folder.iterdir():
            if not path.is_file() or is_hidden(path) or path.suffix.lower() != ".png":
                continue
            m = _MASK.match(path.stem)
            if m:
                masks.setdefault(m["stem"], []).append((int(m["k"] or 0), path))
            else:
                images[path.stem] = path
        for stem in sorted(set(masks) - set(images), key=natural_key):
            for _, path in sorted(masks[stem]):
                self.problem(path, f"mask without an image: {folder / (stem + '.png')} does not exist")
        records: list[Record] = []
        for stem in sorted(images, key=natural_key):
            if stem not in masks:
                self.problem(
                    images[stem], f"image without a mask: {folder / (stem + '_mask.png')} does not exist"
                )
                continue
            files = tuple(path for _, path in sorted(masks[stem]))
            records.append(
                Record(
                    id=stem,
                    image=images[stem],
                    mask_files=files,
                    meta={"class": cls, "n_masks": str(len(files))},
                )
            )
        return records

    def load_record(self, record: Record) -> RawSample:
        """Decode the image and OR-merge its masks (each checked against the image size)."""
        image, info = read_image(record.image, channels=self.channels, max_pixels=self.max_pixels)
        mask = np.zeros(image.shape[:2], dtype=bool)
        infos: list[MaskInfo] = []
        for path in record.mask_files:
            part, part_info = read_mask(path, max_pixels=self.max_pixels)
            check_same_size(image, record.image, part, path)
            mask |= part
            infos.append(part_info)
        meta = {
            **record.meta,
            **self.image_meta(info),
            **self.mask_meta(infos),
            "empty_mask": "true" if not mask.any() else "false",
        }
        return RawSample(image=image, mask=mask, id=record.id, group=record.group, meta=meta)
