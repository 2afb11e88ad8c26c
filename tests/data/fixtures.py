"""Builders of tiny on-disk copies of the real dataset layouts (and their quirks) for the format tests.

Every builder writes into a given folder and returns what the test needs to check the loader against
(ids, masks, polygons). Images are a few pixels wide; nothing here is real data.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

#: Real data beside the repository (``../shared/data``), or wherever ``FDSEG_SHARED_DATA`` points.
SHARED_DATA = Path(
    os.environ.get("FDSEG_SHARED_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data"
)


def save(path: Path, array: np.ndarray, mode: str | None = None, **kwargs: object) -> Path:
    """Write ``array`` as an image (``mode`` e.g. ``"1"``, ``"L"``, ``"RGBA"``), creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array)
    if mode is not None and img.mode != mode:
        img = img.convert(mode)
    img.save(path, **kwargs)
    return path


def he_image(rng: np.random.Generator, h: int, w: int, *, alpha: bool = False) -> np.ndarray:
    """A random pinkish RGB(A) uint8 picture (not binary, channels differ)."""
    rgb = np.stack(
        [rng.integers(150, 255, (h, w)), rng.integers(50, 150, (h, w)), rng.integers(100, 200, (h, w))],
        axis=2,
    ).astype(np.uint8)
    if alpha:
        return np.concatenate([rgb, np.full((h, w, 1), 255, np.uint8)], axis=2)
    return rgb


def blob_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A non-empty random rectangle mask (H, W) bool."""
    r0, c0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    mask = np.zeros((h, w), bool)
    mask[r0 : r0 + h // 3 + 1, c0 : c0 + w // 3 + 1] = True
    return mask


def to_l(mask: np.ndarray) -> np.ndarray:
    return mask.astype(np.uint8) * 255


# -- TNBC ---------------------------------------------------------------------------------------------------


def make_tnbc(
    root: Path, slides: dict[str, int] | None = None, *, rgb_ids: tuple[str, ...] = ()
) -> dict[str, np.ndarray]:
    """``root/TNBC_NucleiSegmentation/Slide_XX/XX_k.png`` (RGBA unless in ``rgb_ids``) + ``GT_XX``
    (``L`` {0, 255}), plus a ``__MACOSX`` folder and a ``.DS_Store``. Returns id -> mask."""
    rng = np.random.default_rng(1)
    slides = slides or {"01": 3, "02": 2, "10": 1}
    base = root / "TNBC_NucleiSegmentation"
    masks: dict[str, np.ndarray] = {}
    for slide, n in slides.items():
        for k in range(1, n + 1):
            image_id = f"{slide}_{k}"
            save(
                base / f"Slide_{slide}" / f"{image_id}.png",
                he_image(rng, 12, 10, alpha=image_id not in rgb_ids),
            )
            masks[image_id] = blob_mask(rng, 12, 10)
            save(base / f"GT_{slide}" / f"{image_id}.png", to_l(masks[image_id]))
    save(
        root / "__MACOSX" / "TNBC_NucleiSegmentation" / "Slide_01" / "._01_1.png", np.zeros((2, 2), np.uint8)
    )
    (base / "Slide_01" / ".DS_Store").write_bytes(b"\x00\x01")
    return masks


def make_tnbc_kaggle(root: Path, *, swapped: bool) -> dict[str, np.ndarray]:
    """The Kaggle ``tnbc-seg`` layout ``TNBC_NucleiSegmentation/TNBC_NucleiSegmentation/{images,masks}``;
    with ``swapped`` the masks sit in ``images/`` and the pictures in ``masks/``."""
    rng = np.random.default_rng(2)
    base = root / "TNBC_NucleiSegmentation" / "TNBC_NucleiSegmentation"
    image_dir, mask_dir = ("masks", "images") if swapped else ("images", "masks")
    masks: dict[str, np.ndarray] = {}
    for image_id in ("01_1", "01_2", "03_1"):
        save(base / image_dir / f"{image_id}.png", he_image(rng, 8, 8))
        masks[image_id] = blob_mask(rng, 8, 8)
        save(base / mask_dir / f"{image_id}.png", to_l(masks[image_id]))
    return masks


# -- MoNuSeg ------------------------------------------------------------------------------------------------


def aperio_xml(regions: list[list[tuple[float, float]]], *, microns: bool = True) -> str:
    """An Aperio ImageScope annotation with one ``<Region>`` per vertex list of ``(x, y)``."""
    attribute = ' MicronsPerPixel="0.252700"' if microns else ""
    out = [f"<Annotations{attribute}>"]
    out.append('<Annotation Id="1" Type="4" LineColor="65280"><Attributes/><Regions>')
    out.append('<RegionAttributeHeaders><AttributeHeader Id="9999" Name="Region"/></RegionAttributeHeaders>')
    for i, vertices in enumerate(regions, start=2):
        out.append(f'<Region Id="{i}" Type="0" Length="1" Area="1"><Attributes/><Vertices>')
        out += [f'<Vertex X="{x}" Y="{y}"/>' for x, y in vertices]
        out.append("</Vertices></Region>")
    out.append("</Regions></Annotation></Annotations>")
    return "\n".join(out)


#: Polygons of the MoNuSeg fixtures: a square, a triangle crossing the right border, a 2-vertex region
#: (skipped), and a square overlapping the first.
MONUSEG_REGIONS: list[list[tuple[float, float]]] = [
    [(2, 2), (6, 2), (6, 6), (2, 6)],
    [(14, 3), (18.5, 5), (14, 9)],
    [(1, 1), (3, 3)],
    [(5, 5), (9, 5), (9, 9), (5, 9)],
]


def make_monuseg(root: Path, *, train: tuple[str, ...], test: tuple[str, ...]) -> None:
    """The official training (``Tissue Images``/``Annotations``, LZW TIFF) and test (flat, PackBits TIFF)
    folders, 16x16 images, each annotated with :data:`MONUSEG_REGIONS`."""
    rng = np.random.default_rng(3)
    train_dir = root / "MoNuSeg 2018 Training Data"
    for image_id in train:
        save(train_dir / "Tissue Images" / f"{image_id}.tif", he_image(rng, 16, 16), compression="tiff_lzw")
        (train_dir / "Annotations").mkdir(parents=True, exist_ok=True)
        (train_dir / "Annotations" / f"{image_id}.xml").write_text(aperio_xml(MONUSEG_REGIONS))
    for image_id in test:
        save(root / "MoNuSegTestData" / f"{image_id}.tif", he_image(rng, 16, 16), compression="packbits")
        (root / "MoNuSegTestData" / f"{image_id}.xml").write_text(aperio_xml(MONUSEG_REGIONS, microns=False))


def make_monuseg_kaggle(root: Path) -> dict[str, np.ndarray]:
    """``MonuSeg/MonuSeg/{Training,Test}/{TissueImages,GroundTruth}``: PNG training images, TIFF test
    images, ``<id>_bin_mask.png`` masks. Returns id -> mask."""
    rng = np.random.default_rng(4)
    base = root / "MonuSeg" / "MonuSeg"
    masks: dict[str, np.ndarray] = {}
    for split, ext, ids in (
        ("Training", "png", ("TCGA-AA-0001-01Z",)),
        ("Test", "tif", ("TCGA-BB-0002-01Z",)),
    ):
        for image_id in ids:
            save(base / split / "TissueImages" / f"{image_id}.{ext}", he_image(rng, 10, 10))
            masks[image_id] = blob_mask(rng, 10, 10)
            save(base / split / "GroundTruth" / f"{image_id}_bin_mask.png", to_l(masks[image_id]))
    return masks


# -- UDIAT --------------------------------------------------------------------------------------------------


def make_udiat(root: Path, *, xlsx: bool) -> dict[str, np.ndarray]:
    """``BUS/original`` (``L``) + ``BUS/GT`` with ids that skip numbers (000001, 000004, 000310), masks of
    mode ``1`` and ``L`` {0, 255}, a ``.DS_Store``, and optionally ``DatasetB.xlsx`` (legend block in F–G)."""
    rng = np.random.default_rng(5)
    bus = root / "BUS"
    masks: dict[str, np.ndarray] = {}
    for image_id, h, w, mode in (("000001", 9, 13, "1"), ("000004", 11, 7, "L"), ("000310", 8, 8, "1")):
        save(bus / "original" / f"{image_id}.png", rng.integers(0, 255, (h, w), dtype=np.uint8))
        masks[image_id] = blob_mask(rng, h, w)
        save(bus / "GT" / f"{image_id}.png", to_l(masks[image_id]), mode=mode)
    (bus / "original" / ".DS_Store").write_bytes(b"\x00")
    if xlsx:
        import openpyxl

        wb = openpyxl.Workbook()
        ws = wb.active
        ws.append(["Image", "Type", "Diagnosis", None, None, "Legend", "Meaning"])
        ws.append(["000001", "Benign", "CYST", None, None, "IDC", "invasive ductal carcinoma"])
        ws.append(["000004", "Malignant", "IDC"])
        ws.append([310, "Benign", "FA"])
        ws.append(["000999", "Benign", "FA"])
        wb.save(bus / "DatasetB.xlsx")
    return masks


# -- BUSI ---------------------------------------------------------------------------------------------------


def make_busi(root: Path) -> dict[str, np.ndarray]:
    """``Dataset_BUSI_with_GT/{benign,malignant,normal}`` with every quirk of the real copy: names with spaces
    and parentheses (``benign (10)`` sorts after ``benign (2)``), ``_mask_1``/``_mask_2`` files, an RGBA mask
    (R=G=B, alpha 255), mode ``1`` masks, an all-zero RGB ``normal`` mask. Returns id -> expected mask."""
    rng = np.random.default_rng(6)
    base = root / "Dataset_BUSI_with_GT"
    expected: dict[str, np.ndarray] = {}

    def image(cls: str, n: int, h: int = 9, w: int = 11) -> tuple[str, Path]:
        grey = rng.integers(0, 255, (h, w), dtype=np.uint8)
        stem = f"{cls} ({n})"
        save(base / cls / f"{stem}.png", np.stack([grey] * 3, axis=2))
        return stem, base / cls

    for n in (1, 2, 10):
        stem, folder = image("benign", n)
        expected[stem] = blob_mask(rng, 9, 11)
        save(folder / f"{stem}_mask.png", to_l(expected[stem]), mode="1")
    # benign (2): two extra masks, one of them RGBA with a fully opaque alpha channel.
    extra1 = np.zeros((9, 11), bool)
    extra1[7:, 9:] = True
    rgba = np.zeros((9, 11, 4), np.uint8)
    rgba[..., :3] = to_l(extra1)[..., None]
    rgba[..., 3] = 255
    save(base / "benign" / "benign (2)_mask_1.png", rgba)
    extra2 = np.zeros((9, 11), bool)
    extra2[0, 0] = True
    save(base / "benign" / "benign (2)_mask_2.png", to_l(extra2), mode="1")
    expected["benign (2)"] = expected["benign (2)"] | extra1 | extra2
    stem, folder = image("malignant", 1, 7, 5)
    expected[stem] = blob_mask(rng, 7, 5)
    save(folder / f"{stem}_mask.png", to_l(expected[stem]), mode="L")
    stem, folder = image("normal", 1)
    expected[stem] = np.zeros((9, 11), bool)
    save(folder / f"{stem}_mask.png", np.zeros((9, 11, 3), np.uint8))
    return expected


# -- CoNSeP -------------------------------------------------------------------------------------------------


def consep_maps(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """An instance map with 7 nuclei (one per class 1..7) and its type map."""
    inst = np.zeros((h, w), np.int32)
    types = np.zeros((h, w), np.int32)
    for label in range(1, 8):
        r, c = 2 * (label - 1), int(rng.integers(0, w - 2))
        inst[r : r + 2, c : c + 2] = label
        types[r : r + 2, c : c + 2] = label
    return inst, types


def write_mat(path: Path, content: dict[str, np.ndarray], *, version: str) -> None:
    """A ``.mat`` file, MATLAB v5 (scipy) or v7.3 (HDF5 via h5py, stored transposed as MATLAB does)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if version == "v5":
        import scipy.io

        scipy.io.savemat(path, {k: v.astype(np.float64) for k, v in content.items()})
        return
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        for key, value in content.items():
            f.create_dataset(key, data=np.ascontiguousarray(value.astype(np.float64).T))
    header = (
        b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    )
    with path.open(
        "r+b"
    ) as f:  # the 128-byte MATLAB header in the HDF5 user block: text, version 0x0200, "IM"
        f.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")


def make_consep(root: Path, *, version: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``CoNSeP/{Train,Test}/{Images,Labels,Overlay}`` with RGBA PNGs and ``.mat`` labels (14x9, so that a
    transposition would be caught). Returns id -> (inst_map, type_map)."""
    rng = np.random.default_rng(7)
    base = root / "CoNSeP"
    (base / "README.txt").parent.mkdir(parents=True, exist_ok=True)
    (base / "README.txt").write_text("CoNSeP fixture")
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, ids in (("Train", ("train_1", "train_2")), ("Test", ("test_1",))):
        for image_id in ids:
            save(base / split / "Images" / f"{image_id}.png", he_image(rng, 14, 9, alpha=True))
            save(base / split / "Overlay" / f"{image_id}.png", he_image(rng, 14, 9))
            inst, types = consep_maps(rng, 14, 9)
            extra = {"inst_type": np.arange(1, 8)[:, None], "inst_centroid": np.zeros((7, 2))}
            write_mat(
                base / split / "Labels" / f"{image_id}.mat",
                {"inst_map": inst, "type_map": types, **extra},
                version=version,
            )
            out[image_id] = (inst, types)
    return out


# -- AD tau -------------------------------------------------------------------------------------------------


def make_ad_tau(root: Path) -> dict[str, np.ndarray]:
    """``dataset/{128x128,256x256}/<wsi>/{patches,macenko,vahadane,masks}`` (vahadane only at 128), RGBA
    patches 6x6 with ``_Cx`` corner augmentations. Returns id (at 256, macenko) -> mask."""
    rng = np.random.default_rng(8)
    masks: dict[str, np.ndarray] = {}
    for size in ("128x128", "256x256"):
        stains = ("patches", "macenko", "vahadane") if size == "128x128" else ("patches", "macenko")
        for wsi in ("old_wsi_00", "new_wsi_01", "A1702076 - 2021-07-21 18.41.42"):
            for stem in ("patch_0000", "patch_0000_C1", "patch_0000_C2", "patch_0003"):
                mask = blob_mask(rng, 6, 6)
                for stain in stains:
                    save(
                        root / "dataset" / size / wsi / stain / f"{stem}.png", he_image(rng, 6, 6, alpha=True)
                    )
                save(
                    root / "dataset" / size / wsi / "masks" / f"{stem.replace('patch', 'mask')}.png",
                    to_l(mask),
                    mode="1",
                )
                if size == "256x256":
                    masks[f"{wsi}-{stem}"] = mask
    return masks
