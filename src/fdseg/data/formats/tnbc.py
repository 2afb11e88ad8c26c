"""TNBC nuclei (Naylor et al., IEEE TMI 2018): 50 H&E images of 512x512 from 11 patients.

Layouts read (the root may be any of the folders shown, or the folder above):

* official (Zenodo): ``TNBC_NucleiSegmentation/Slide_XX/XX_k.png`` with its mask at
  ``TNBC_NucleiSegmentation/GT_XX/XX_k.png`` (same file name). ``__MACOSX`` and dotfiles are ignored.
* Kaggle ``tnbc-seg``: ``TNBC_NucleiSegmentation/TNBC_NucleiSegmentation/{images,masks}/<id>.png``. Which
  folder holds the masks is decided by content (binary single-channel pictures), because a reference script
  reads them the other way round; swapped folders are reported as a warning.

Images are RGBA (47, alpha 255) or RGB (3) and come out as RGB uint8; masks are semantic ``L`` {0, 255}.
The group is the slide (patient), ``"Slide_XX"``; there is no official split.
"""

from __future__ import annotations

import re
from pathlib import Path

from fdseg.data.base import FORMATS, RawSample, Record, natural_key
from fdseg.data.errors import DatasetError, DatasetNotFoundError
from fdseg.data.formats._io import (
    FormatLoader,
    check_same_size,
    is_hidden,
    looks_like_mask,
    read_image,
    read_mask,
)

_SLIDE = re.compile(r"^Slide_(\w+)$")
_GT = re.compile(r"^GT_(\w+)$")
_KAGGLE_ID = re.compile(r"^(\d+)_\d+$")
_FOLDER = "TNBC_NucleiSegmentation"


def png_files(folder: Path) -> dict[str, Path]:
    """The ``.png`` files of ``folder`` by file name, skipping dotfiles and ``__MACOSX``."""
    return {
        p.name: p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png" and not is_hidden(p)
    }


@FORMATS.register("tnbc")
class TNBC(FormatLoader):
    """TNBC in its official (``Slide_XX``/``GT_XX``) or Kaggle (``images``/``masks``) layout.

    Example:
        >>> ds = open_dataset("tnbc:/data/TNBC_NucleiSegmentation")  # doctest: +SKIP
        >>> s = ds[0]; s["image"].shape, s["mask"].dtype, s["group"]  # doctest: +SKIP
        ((512, 512, 3), dtype('bool'), 'Slide_01')
    """

    format_name = "tnbc"

    def _find_layout(self) -> tuple[str, Path]:
        candidates = [self.root, self.root / _FOLDER, self.root / _FOLDER / _FOLDER]
        for folder in candidates:
            if not folder.is_dir():
                continue
            subdirs = [d for d in folder.iterdir() if d.is_dir() and not is_hidden(d)]
            if any(_SLIDE.match(d.name) for d in subdirs):
                return "official", folder
            names = {d.name for d in subdirs}
            if {"images", "masks"} <= names:
                return "kaggle", folder
        raise DatasetNotFoundError(
            self.root,
            f"{_FOLDER}/Slide_XX/*.png with GT_XX/*.png, or the Kaggle {_FOLDER}/{_FOLDER}/{{images,masks}}/",
        )

    def scan_records(self) -> list[Record]:
        """Pair every image with the mask of the same file name."""
        layout, folder = self._find_layout()
        self.layout = layout
        records = self._scan_official(folder) if layout == "official" else self._scan_kaggle(folder)
        if not records:
            raise DatasetError(folder, "no image/mask pairs found")
        return records

    def _scan_official(self, folder: Path) -> list[Record]:
        slides: dict[str, Path] = {}
        gts: dict[str, Path] = {}
        for d in folder.iterdir():
            if not d.is_dir() or is_hidden(d):
                continue
            if m := _SLIDE.match(d.name):
                slides[m.group(1)] = d
            elif m := _GT.match(d.name):
                gts[m.group(1)] = d
        for key in sorted(set(gts) - set(slides)):
            self.problem(gts[key], f"mask folder without its image folder Slide_{key}")
        records: list[Record] = []
        for key in sorted(slides, key=natural_key):
            slide = slides[key]
            if key not in gts:
                self.problem(slide, f"image folder without its mask folder GT_{key} in {folder}")
                continue
            images, masks = png_files(slide), png_files(gts[key])
            for name in sorted(set(masks) - set(images), key=natural_key):
                self.problem(masks[name], f"mask without an image: {slide / name} does not exist")
            for name in sorted(images, key=natural_key):
                if name not in masks:
                    self.problem(images[name], f"image without a mask: {gts[key] / name} does not exist")
                    continue
                records.append(
                    Record(
                        id=Path(name).stem,
                        image=images[name],
                        mask_files=(masks[name],),
                        group=slide.name,
                        meta={"slide": slide.name},
                    )
                )
        return records

    def _scan_kaggle(self, folder: Path) -> list[Record]:
        image_dir, mask_dir = folder / "images", folder / "masks"
        images, masks = png_files(image_dir), png_files(mask_dir)
        common = sorted(set(images) & set(masks), key=natural_key)
        if common:
            probe = common[0]
            images_are_masks = looks_like_mask(images[probe], max_pixels=self.max_pixels)
            masks_are_masks = looks_like_mask(masks[probe], max_pixels=self.max_pixels)
            if images_are_masks and not masks_are_masks:
                self.problem(
                    folder,
                    "folders are swapped: images/ holds the binary masks and masks/ the H&E images "
                    f"(decided by the content of {probe}); reading them accordingly",
                    "warning",
                )
                image_dir, mask_dir, images, masks = mask_dir, image_dir, masks, images
            elif images_are_masks == masks_are_masks:
                raise DatasetError(
                    folder,
                    f"cannot tell images from masks: images/{probe} and masks/{probe} both look like "
                    f"{'masks' if images_are_masks else 'photographs'}",
                )
        for name in sorted(set(masks) - set(images), key=natural_key):
            self.problem(masks[name], f"mask without an image: {image_dir / name} does not exist")
        records: list[Record] = []
        for name in sorted(images, key=natural_key):
            if name not in masks:
                self.problem(images[name], f"image without a mask: {mask_dir / name} does not exist")
                continue
            stem = Path(name).stem
            m = _KAGGLE_ID.match(stem)
            group = f"Slide_{m.group(1)}" if m else None
            records.append(Record(id=stem, image=images[name], mask_files=(masks[name],), group=group))
        return records

    def load_record(self, record: Record) -> RawSample:
        """Decode one image (RGB uint8) and its mask (bool) at native size."""
        image, info = read_image(record.image, max_pixels=self.max_pixels)
        mask, mask_info = read_mask(record.mask_files[0], max_pixels=self.max_pixels)
        check_same_size(image, record.image, mask, record.mask_files[0])
        meta = {**record.meta, **self.image_meta(info), **self.mask_meta([mask_info])}
        return RawSample(image=image, mask=mask, id=record.id, group=record.group, meta=meta)
