"""CoNSeP (Graham et al., Medical Image Analysis 2019): 41 colorectal H&E tiles with typed nuclei.

Layout (the root may be ``CoNSeP`` or up to two levels above it)::

    CoNSeP/{Train,Test}/Images/<id>.png      1000x1000 (RGBA or RGB; alpha dropped)
    CoNSeP/{Train,Test}/Labels/<id>.mat      inst_map (H, W) 0..N, type_map (H, W) 0..7, inst_type, …

``.mat`` files are read with ``scipy.io.loadmat`` (MATLAB v5) or, for v7.3 (HDF5), with ``h5py`` (the
``[mat73]`` extra), whose arrays come transposed and are transposed back. A file without ``inst_map`` and
``type_map`` raises ``DatasetError`` naming the file and the keys it has.

Samples carry three views: ``mask`` (H, W) bool = ``inst_map > 0`` (binary foreground), ``instances`` (H, W)
int32 = ``inst_map``, and ``classes`` (H, W) uint8 = ``type_map`` with the 7 original classes
(1 other, 2 inflammatory, 3 healthy epithelial, 4 dysplastic/malignant epithelial, 5 fibroblast, 6 muscle,
7 endothelial) or, with option ``classes=4``, the usual merge {1 other, 2 inflammatory, 3 epithelial (3, 4),
4 spindle-shaped (5, 6, 7)}; 0 is background. ``Record.split`` is the official split (27 train / 14 test).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np

from fdseg.data.base import FORMATS, RawSample, Record, natural_key
from fdseg.data.errors import DatasetError, DatasetNotFoundError
from fdseg.data.formats._io import (
    COMMON_OPTIONS,
    FormatLoader,
    check_same_size,
    find_folder,
    parse_choice,
    read_image,
)

#: Names of the 7 original CoNSeP classes (index = label; 0 = background).
CLASS_NAMES_7 = (
    "background",
    "other",
    "inflammatory",
    "healthy epithelial",
    "dysplastic/malignant epithelial",
    "fibroblast",
    "muscle",
    "endothelial",
)
#: Names of the merged 4 classes.
CLASS_NAMES_4 = ("background", "other", "inflammatory", "epithelial", "spindle-shaped")
#: Lookup table 7 classes -> 4 classes (index = original label).
MERGE_7_TO_4 = np.array([0, 1, 2, 3, 3, 4, 4, 4], dtype=np.uint8)
_SPLITS = {"train": "train", "test": "test"}
REQUIRED_KEYS = ("inst_map", "type_map")


def read_mat(path: str | Path, keys: tuple[str, ...] = REQUIRED_KEYS) -> dict[str, np.ndarray]:
    """Read ``keys`` from a MATLAB ``.mat`` file (v5 with scipy, v7.3/HDF5 with h5py, transposed back).

    Raises:
        DatasetError: unreadable file, missing keys (the message lists the keys the file has), or a v7.3
            file without h5py installed.
    """
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "file not found")
    try:
        content = scipy.io.loadmat(path)
    except NotImplementedError:  # scipy's answer to MATLAB v7.3 (HDF5) files
        return _read_mat73(path, keys)
    except (scipy.io.matlab.MatReadError, ValueError, OSError, TypeError, EOFError) as exc:
        if _is_hdf5(path):  # an HDF5 .mat without the MATLAB 7.3 header
            return _read_mat73(path, keys)
        raise DatasetError(path, f"cannot read .mat file: {exc}") from None
    present = sorted(k for k in content if not k.startswith("__"))
    missing = [k for k in keys if k not in content]
    if missing:
        raise DatasetError(path, f"missing keys {missing} in .mat file; it has {present}")
    return {k: np.asarray(content[k]) for k in keys}


def _is_hdf5(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(2048)
    signature = b"\x89HDF\r\n\x1a\n"
    return any(head[offset : offset + 8] == signature for offset in (0, 512, 1024))


def _read_mat73(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        import h5py
    except ImportError:
        raise DatasetError(path, "MATLAB v7.3 file needs h5py (pip install 'fdseg[mat73]')") from None
    try:
        with h5py.File(path, "r") as f:
            present = sorted(k for k in f if not k.startswith("#"))
            missing = [k for k in keys if k not in f]
            if missing:
                raise DatasetError(path, f"missing keys {missing} in .mat (v7.3) file; it has {present}")
            # MATLAB stores column-major; HDF5 exposes the transpose.
            return {k: np.asarray(f[k][()]).T for k in keys}
    except DatasetError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(path, f"cannot read .mat (v7.3) file: {exc}") from None


@FORMATS.register("consep")
class CoNSeP(FormatLoader):
    """CoNSeP (see the module docstring); option ``classes`` = ``7`` (default) or ``4``."""

    format_name = "consep"
    option_defaults: Mapping[str, str] = MappingProxyType({**COMMON_OPTIONS, "classes": "7"})

    @property
    def class_names(self) -> tuple[str, ...]:
        """:data:`CLASS_NAMES_7` or, with ``classes=4``, :data:`CLASS_NAMES_4` (background first)."""
        return CLASS_NAMES_4 if self.options.get("classes") == "4" else CLASS_NAMES_7

    def scan_records(self) -> list[Record]:
        """Pair ``Images/<id>.png`` with ``Labels/<id>.mat`` in ``Train`` and ``Test``."""
        self.n_classes = int(parse_choice("classes", self.options["classes"], ("7", "4")))

        def has_split(folder: Path) -> bool:
            return any(
                (d / "Images").is_dir() and (d / "Labels").is_dir()
                for d in folder.iterdir()
                if d.is_dir() and d.name.lower() in _SPLITS
            )

        folder = find_folder(self.root, has_split)
        if folder is None:
            raise DatasetNotFoundError(self.root, "CoNSeP/{Train,Test}/{Images/*.png,Labels/*.mat}")
        records: list[Record] = []
        for split_dir in sorted(d for d in folder.iterdir() if d.is_dir() and d.name.lower() in _SPLITS):
            images = self.files_by_stem(split_dir / "Images", (".png", ".tif", ".tiff"))
            labels = self.files_by_stem(split_dir / "Labels", (".mat",))
            for stem in sorted(set(labels) - set(images), key=natural_key):
                self.problem(labels[stem], f"label without an image: no {stem}.png in {split_dir / 'Images'}")
            for stem in sorted(images, key=natural_key):
                if stem not in labels:
                    self.problem(
                        images[stem], f"image without a label: {split_dir / 'Labels' / (stem + '.mat')}"
                    )
                    continue
                records.append(
                    Record(
                        id=stem,
                        image=images[stem],
                        mask_files=(labels[stem],),
                        split=_SPLITS[split_dir.name.lower()],
                    )
                )
        if not records:
            raise DatasetError(folder, "no image/label pairs found")
        return records

    def load_record(self, record: Record) -> RawSample:
        """Decode the image and the ``.mat`` maps into ``mask``, ``instances`` and ``classes``."""
        image, info = read_image(record.image, max_pixels=self.max_pixels)
        label = record.mask_files[0]
        maps = read_mat(label)
        inst, types = maps["inst_map"], maps["type_map"]
        for key, arr in maps.items():
            if arr.ndim != 2:
                raise DatasetError(label, f"{key} has shape {arr.shape}; expected (H, W)")
            check_same_size(image, record.image, arr, label)
        if inst.size and (inst.min() < 0 or not np.all(np.isfinite(inst))):
            raise DatasetError(label, "inst_map holds negative or non-finite values")
        types_int = np.rint(types.astype(np.float64)).astype(np.int64)
        if types_int.size and (types_int.min() < 0 or types_int.max() > 7):
            raise DatasetError(
                label,
                f"type_map values span {types_int.min()}..{types_int.max()}; expected 0..7 (CoNSeP classes)",
            )
        instances = inst.astype(np.int32)
        classes = types_int.astype(np.uint8)
        if self.n_classes == 4:
            classes = MERGE_7_TO_4[classes]
        mask = instances > 0
        meta = {
            **record.meta,
            **self.image_meta(info),
            "nuclei": str(len(np.unique(instances)) - int((instances == 0).any())),
            "type_inst_mismatch_px": str(int(np.count_nonzero(mask != (classes > 0)))),
        }
        return RawSample(
            image=image,
            mask=mask,
            id=record.id,
            group=record.group,
            meta=meta,
            instances=instances,
            classes=classes,
        )
