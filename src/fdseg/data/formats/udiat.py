"""UDIAT breast ultrasound "Dataset B" (Yap et al., IEEE JBHI 2018): 163 greyscale images, one lesion each.

Layouts read (the root may be the folder shown or up to two levels above it):

* official: ``BUS/original/<id>.png`` + ``BUS/GT/<id>.png`` and optionally ``BUS/DatasetB.xlsx``;
* Kaggle ``udiat-segmentation-dataset``: ``UDIAT_Dataset_B/UDIAT_Dataset_B/{original,GT}/<id>.png``;
* Kaggle ``udiat-updated``: one folder of ``<id>_<Benign|Malignant>_image.png`` + ``…_mask.png``.

Ids come from the directory listing (they run 000001–000310 with gaps), never from a range; an image and its
mask share the file name. Masks are 1-bit (mode ``1``) or ``L`` {0, 255}. Labels (``class`` =
benign/malignant, ``diagnosis``) come from ``DatasetB.xlsx`` when ``openpyxl`` is installed (the ``[xlsx]``
extra); without it the labels are skipped with a warning, never an error. Images are replicated to RGB
(``channels=3``, default) or kept single-channel (``channels=1``). There is no official split and no group.
This dataset is licensed for research on request only: never ship it with code or tests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from fdseg.data.base import FORMATS, RawSample, Record, natural_key
from fdseg.data.errors import DatasetError, DatasetNotFoundError
from fdseg.data.formats._io import (
    COMMON_OPTIONS,
    FormatLoader,
    check_same_size,
    find_folder,
    is_hidden,
    logger,
    parse_choice,
    read_image,
    read_mask,
)

_FLAT = re.compile(r"^(?P<id>\d+)_(?P<cls>benign|malignant)_(?P<kind>image|mask)$", re.IGNORECASE)
_LABELS_FILE = "DatasetB.xlsx"


def normalise_udiat_id(value: object) -> str | None:
    """``'000001'``, ``1`` or ``1.0`` -> ``'000001'``; ``None`` for empty or non-numeric cells."""
    if value is None:
        return None
    text = str(value).strip()
    if text.endswith(".0"):
        text = text[:-2]
    return text.zfill(6) if text.isdigit() else None


def read_udiat_labels(loader: FormatLoader, path: Path) -> dict[str, dict[str, str]]:
    """``{id: {"class": ..., "diagnosis": ...}}`` from ``DatasetB.xlsx``; ``{}`` (with a warning) when
    openpyxl is missing or the workbook cannot be read."""
    try:
        import openpyxl
    except ImportError:
        loader.problem(
            path, "labels not read: openpyxl is not installed (pip install 'fdseg[xlsx]')", "warning"
        )
        return {}
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises zipfile, KeyError, InvalidFileException, ...
        loader.problem(path, f"labels not read: cannot open the workbook ({exc})", "warning")
        return {}
    try:
        rows = list(workbook.worksheets[0].iter_rows(values_only=True))
    finally:
        workbook.close()
    header_at = next(
        (
            i
            for i, row in enumerate(rows[:10])
            if {"image", "type"} <= {str(c).strip().lower() for c in row if c is not None}
        ),
        None,
    )
    if header_at is None:
        loader.problem(path, "labels not read: no header row with 'Image' and 'Type' columns", "warning")
        return {}
    header = [str(c).strip().lower() if c is not None else "" for c in rows[header_at]]
    col_id, col_type = header.index("image"), header.index("type")
    col_diag = header.index("diagnosis") if "diagnosis" in header else None
    labels: dict[str, dict[str, str]] = {}
    for row in rows[header_at + 1 :]:
        image_id = normalise_udiat_id(row[col_id] if col_id < len(row) else None)
        kind = row[col_type] if col_type < len(row) else None
        if image_id is None or kind is None:
            continue
        entry = {"class": str(kind).strip().lower()}
        if col_diag is not None and col_diag < len(row) and row[col_diag] is not None:
            entry["diagnosis"] = str(row[col_diag]).strip()
        labels[image_id] = entry
    return labels


@FORMATS.register("udiat")
class UDIAT(FormatLoader):
    """UDIAT Dataset B (see the module docstring); option ``channels`` = ``3`` (default) or ``1``."""

    format_name = "udiat"
    option_defaults: Mapping[str, str] = MappingProxyType({**COMMON_OPTIONS, "channels": "3"})

    def scan_records(self) -> list[Record]:
        """Pair ``original/<id>`` with ``GT/<id>`` (or the flat Kaggle names) and attach labels."""
        self.channels = int(parse_choice("channels", self.options["channels"], ("1", "3")))
        folder = find_folder(self.root, lambda f: (f / "original").is_dir() and (f / "GT").is_dir())
        if folder is not None:
            return self._scan_official(folder)
        flat = find_folder(
            self.root, lambda f: any(_FLAT.match(p.stem) for p in f.iterdir() if p.is_file()), depth=1
        )
        if flat is not None:
            return self._scan_flat(flat)
        raise DatasetNotFoundError(
            self.root, "BUS/{original,GT}/<id>.png (official or Kaggle copy) or <id>_<class>_{image,mask}.png"
        )

    def _scan_official(self, folder: Path) -> list[Record]:
        images = self.files_by_stem(folder / "original")
        masks = self.files_by_stem(folder / "GT")
        labels_file = folder / _LABELS_FILE
        labels = read_udiat_labels(self, labels_file) if labels_file.is_file() else {}
        for stem in sorted(set(masks) - set(images), key=natural_key):
            self.problem(masks[stem], f"mask without an image: no {stem} in {folder / 'original'}")
        records: list[Record] = []
        for stem in sorted(images, key=natural_key):
            if stem not in masks:
                self.problem(images[stem], f"image without a mask: no {stem} in {folder / 'GT'}")
                continue
            meta = dict(labels.get(normalise_udiat_id(stem) or stem, {}))
            if labels and not meta:
                self.problem(images[stem], f"no label row for id {stem} in {labels_file.name}", "warning")
            records.append(Record(id=stem, image=images[stem], mask_files=(masks[stem],), meta=meta))
        if labels:
            unused = sorted(set(labels) - {normalise_udiat_id(r.id) for r in records}, key=natural_key)
            if unused:
                self.problem(labels_file, f"{len(unused)} label rows without an image: {unused[:5]}", "info")
        if not records:
            raise DatasetError(folder, "no image/mask pairs found")
        logger.debug("udiat: %d records, %d labels", len(records), len(labels))
        return records

    def _scan_flat(self, folder: Path) -> list[Record]:
        parts: dict[str, dict[str, Path]] = {}
        classes: dict[str, str] = {}
        for path in sorted(folder.iterdir()):
            m = _FLAT.match(path.stem) if path.is_file() and not is_hidden(path) else None
            if m is None:
                continue
            parts.setdefault(m["id"], {})[m["kind"].lower()] = path
            classes[m["id"]] = m["cls"].lower()
        records: list[Record] = []
        for image_id in sorted(parts, key=natural_key):
            found = parts[image_id]
            if "image" not in found:
                self.problem(found["mask"], "mask without an image")
                continue
            if "mask" not in found:
                self.problem(found["image"], "image without a mask")
                continue
            records.append(
                Record(
                    id=image_id,
                    image=found["image"],
                    mask_files=(found["mask"],),
                    meta={"class": classes[image_id]},
                )
            )
        if not records:
            raise DatasetError(folder, "no image/mask pairs found")
        return records

    def load_record(self, record: Record) -> RawSample:
        """Decode the image (RGB or grey uint8) and its mask (bool) at native size."""
        image, info = read_image(record.image, channels=self.channels, max_pixels=self.max_pixels)
        mask, mask_info = read_mask(record.mask_files[0], max_pixels=self.max_pixels)
        check_same_size(image, record.image, mask, record.mask_files[0])
        meta = {**record.meta, **self.image_meta(info), **self.mask_meta([mask_info])}
        return RawSample(image=image, mask=mask, id=record.id, group=record.group, meta=meta)
