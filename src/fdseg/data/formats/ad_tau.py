"""Alzheimer tau neuritic plaques (Jimenez et al., MICCAI 2022): RGBA patches from 8 whole-slide images.

Layout (the root may be ``dataset``, its parent, or the ``<S>x<S>`` folder itself)::

    dataset/{128x128,256x256}/<wsi>/patches/patch_NNNN[_Cx].png     raw patches
                                    macenko/ vahadane/  (same names)  stain-normalised (vahadane: 128 only)
                                    masks/mask_NNNN[_Cx].png          binary plaque masks

Options: ``size`` = ``256`` (default) or ``128``; ``stain`` = ``macenko`` (default, as in the published
configs), ``patches`` (raw) or ``vahadane``; ``split_csv`` = comma-separated CSV files (relative to the root
or absolute, but inside it) with a ``wsi`` column, e.g. the published ``test_00.csv``; each file's name says
its set (``train``/``val``/``test`` prefix) and WSIs listed nowhere are ``train``. A path outside the
dataset root raises ``SplitError``.

The mask of ``<stain>/patch_0007_C2.png`` is ``masks/mask_0007_C2.png``. ``_Cx`` (x = 1..4) corner-shift
augmentations stay attached to their source patch: ``meta["source_patch"]`` is ``patch_0007`` and the
group is the WSI, so a grouped split keeps every WSI (and every augmentation) in one set. Ids are
``<wsi>-<patch name>``. Images are RGBA with alpha 255 and come out RGB.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from fdseg.data.base import FORMATS, RawSample, Record, natural_key
from fdseg.data.errors import DatasetError, DatasetNotFoundError, SplitError
from fdseg.data.formats._io import (
    COMMON_OPTIONS,
    FormatLoader,
    check_same_size,
    is_hidden,
    parse_choice,
    read_image,
    read_mask,
)

STAINS = ("macenko", "patches", "vahadane")
SIZES = ("256", "128")
_PATCH = re.compile(r"^patch_(?P<num>\d+)(?:_C(?P<corner>\d+))?$")
_SET = re.compile(r"^(train|val|valid|validation|test)", re.IGNORECASE)
_SET_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@FORMATS.register("ad-tau")
class ADTau(FormatLoader):
    """The AD tau plaque dataset (see the module docstring); options ``size``, ``stain``, ``split_csv``."""

    format_name = "ad-tau"
    option_defaults: Mapping[str, str] = MappingProxyType(
        {**COMMON_OPTIONS, "size": "256", "stain": "macenko", "split_csv": ""}
    )

    def _size_folder(self, size: str) -> Path:
        name = f"{size}x{size}"
        for folder in (self.root / name, self.root / "dataset" / name):
            if folder.is_dir():
                return folder
        if self.root.name == name and self.root.is_dir():
            return self.root
        raise DatasetNotFoundError(self.root, f"dataset/{name}/<wsi>/{{patches,macenko,vahadane,masks}}/")

    def scan_records(self) -> list[Record]:
        """Pair every stain-folder patch with its mask, per WSI, and apply the split CSVs."""
        size = parse_choice("size", self.options["size"], SIZES)
        stain = parse_choice("stain", self.options["stain"], STAINS)
        folder = self._size_folder(size)
        wsis = sorted(
            (d for d in folder.iterdir() if d.is_dir() and not is_hidden(d)),
            key=lambda d: natural_key(d.name),
        )
        if not wsis:
            raise DatasetNotFoundError(folder, "one folder per WSI (old_wsi_00, new_wsi_01, …)")
        if not any((w / stain).is_dir() for w in wsis):
            raise DatasetNotFoundError(folder, f"<wsi>/{stain}/ (no {stain!r} patches at {size}x{size})")
        records: list[Record] = []
        for wsi in wsis:
            records += self._scan_wsi(wsi, stain)
        if not records:
            raise DatasetError(folder, f"no {stain} patch/mask pairs found")
        return self._apply_split_files(records)

    def _scan_wsi(self, wsi: Path, stain: str) -> list[Record]:
        image_dir, mask_dir = wsi / stain, wsi / "masks"
        if not image_dir.is_dir() or not mask_dir.is_dir():
            missing = image_dir if not image_dir.is_dir() else mask_dir
            self.problem(missing, f"WSI folder {wsi.name} has no {missing.name}/ folder")
            return []
        images = self.files_by_stem(image_dir, (".png",))
        masks = self.files_by_stem(mask_dir, (".png",))
        expected_masks: set[str] = set()
        records: list[Record] = []
        for stem in sorted(images, key=natural_key):
            m = _PATCH.match(stem)
            if m is None:
                self.problem(images[stem], "not named patch_NNNN[_Cx].png; skipped", "warning")
                continue
            mask_stem = "mask" + stem[len("patch") :]
            expected_masks.add(mask_stem)
            if mask_stem not in masks:
                self.problem(
                    images[stem], f"patch without a mask: {mask_dir / (mask_stem + '.png')} does not exist"
                )
                continue
            meta = {"wsi": wsi.name, "source_patch": f"patch_{m['num']}", "stain": stain}
            if m["corner"]:
                meta["corner"] = f"C{m['corner']}"
            records.append(
                Record(
                    id=f"{wsi.name}-{stem}",
                    image=images[stem],
                    mask_files=(masks[mask_stem],),
                    group=wsi.name,
                    meta=meta,
                )
            )
        for stem in sorted(set(masks) - expected_masks, key=natural_key):
            self.problem(masks[stem], f"mask without a patch in {image_dir}")
        return records

    def _apply_split_files(self, records: list[Record]) -> list[Record]:
        entries = [e.strip() for e in self.options["split_csv"].split(",") if e.strip()]
        if not entries:
            return records
        root = self.root.resolve()
        wsi_set: dict[str, str] = {}
        known = {r.group for r in records}
        for entry in entries:
            path = Path(entry).expanduser()
            path = (path if path.is_absolute() else root / path).resolve()
            if not path.is_relative_to(root):
                raise SplitError(f"split file {entry!r} resolves to {path}, outside the dataset root {root}")
            m = _SET.match(path.name)
            if m is None:
                raise SplitError(f"split file {path}: its name must start with train, val or test")
            set_name = _SET_NAMES[m.group(1).lower()]
            for wsi in self._read_wsi_column(path):
                if wsi not in known:
                    raise SplitError(
                        f"split file {path}: unknown WSI {wsi!r}; known: {sorted(known, key=str)}"
                    )
                if wsi_set.get(wsi, set_name) != set_name:
                    raise SplitError(
                        f"split file {path}: WSI {wsi!r} is in both {wsi_set[wsi]!r} and {set_name!r}"
                    )
                wsi_set[wsi] = set_name
        return [
            Record(
                id=r.id,
                image=r.image,
                mask_files=r.mask_files,
                group=r.group,
                split=wsi_set.get(r.group or "", "train"),
                meta=r.meta,
            )
            for r in records
        ]

    @staticmethod
    def _read_wsi_column(path: Path) -> list[str]:
        if not path.is_file():
            raise SplitError(f"split file {path} does not exist")
        try:
            with path.open(newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise SplitError(f"split file {path}: cannot read it as CSV ({exc})") from None
        if not rows or "wsi" not in rows[0]:
            columns = list(rows[0]) if rows else []
            raise SplitError(f"split file {path}: needs a 'wsi' column, has {columns}")
        return [row["wsi"].strip() for row in rows if row["wsi"] and row["wsi"].strip()]

    def load_record(self, record: Record) -> RawSample:
        """Decode the patch (RGB uint8) and its mask (bool)."""
        image, info = read_image(record.image, max_pixels=self.max_pixels)
        mask, mask_info = read_mask(record.mask_files[0], max_pixels=self.max_pixels)
        check_same_size(image, record.image, mask, record.mask_files[0])
        meta = {**record.meta, **self.image_meta(info), **self.mask_meta([mask_info])}
        return RawSample(image=image, mask=mask, id=record.id, group=record.group, meta=meta)
