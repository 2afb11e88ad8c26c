"""MoNuSeg: real test/training files, the XML rasteriser against skimage, the Kaggle layout, bad XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from fixtures import MONUSEG_REGIONS, SHARED_DATA, make_monuseg, make_monuseg_kaggle, save
from skimage.draw import polygon as sk_polygon

from fdseg.data.check import check_dataset
from fdseg.data.errors import DatasetError
from fdseg.data.formats.monuseg import rasterize_polygons, read_polygons
from fdseg.data.open import open_dataset

REAL = SHARED_DATA / "monuseg"
needs_real = pytest.mark.skipif(
    not REAL.is_dir(), reason="real MoNuSeg copy not present in ../shared/data/monuseg"
)


def skimage_reference(polygons: list[np.ndarray], shape: tuple[int, int]) -> tuple[np.ndarray, int]:
    """One skimage.draw.polygon call per polygon (the poly2mask convention), later polygons on top."""
    inst = np.zeros(shape, np.int32)
    overlap = 0
    for label, poly in enumerate(polygons, start=1):
        rr, cc = sk_polygon(poly[:, 1] - 0.5, poly[:, 0] - 0.5, shape=shape)
        overlap += int(np.count_nonzero(inst[rr, cc]))
        inst[rr, cc] = label
    return inst, overlap


def valid_region_count(xml_path: Path) -> int:
    """Regions with at least 3 vertices, counted with the standard library (independent of the loader)."""
    root = ET.parse(xml_path).getroot()
    return sum(len(region.findall("./Vertices/Vertex")) >= 3 for region in root.iter("Region"))


@needs_real
def test_real_test_set_14_pairs_masks_and_instances() -> None:
    ds = open_dataset(f"monuseg:{REAL / 'MoNuSegTestData'}")
    assert len(ds) == 14 and {r.split for r in ds.records} == {"test"}
    for i, record in enumerate(ds.records):
        sample = ds.load_record(record)
        assert sample["image"].shape == (1000, 1000, 3) and sample["image"].dtype == np.uint8
        # Nuclei cover 9.4 % to 28 % of these tiles (measured); a wrong offset or transposition would not.
        assert 0.05 < sample["mask"].mean() < 0.35
        instances = sample["instances"]
        assert instances.dtype == np.int32
        n_valid = valid_region_count(record.mask_files[0])
        assert instances.max() == n_valid == int(sample["meta"]["regions"])
        assert np.array_equal(sample["mask"], instances > 0)
        if i == 0:  # one full comparison with per-polygon skimage on real coordinates
            polygons = read_polygons(record.mask_files[0]).polygons
            assert np.array_equal(instances, skimage_reference(polygons, (1000, 1000))[0])


@needs_real
def test_real_training_5_pairs_and_the_two_vertex_region() -> None:
    ds = open_dataset(f"monuseg:{REAL}")
    assert {k: len(v) for k, v in (ds.official_split() or {}).items()} == {"train": 5, "test": 14}
    train = open_dataset(f"monuseg:{REAL / 'MoNuSeg 2018 Training Data'}")
    assert len(train) == 5 and all(r.split == "train" for r in train.records)
    assert train.by_id("TCGA-E2-A1B5-01Z-00-DX1").group == "TCGA-E2-A1B5"
    meta = train[train.records.index(train.by_id("TCGA-E2-A1B5-01Z-00-DX1"))]["meta"]
    assert meta["regions_skipped"] == "1" and meta["skipped_region_ids"] == "460"


def test_rasteriser_equals_skimage_on_random_polygons() -> None:
    rng = np.random.default_rng(0)
    for trial in range(300):
        shape = (int(rng.integers(5, 30)), int(rng.integers(5, 30)))
        polygons = [
            rng.uniform(-4, 34, (int(rng.integers(3, 10)), 2)) for _ in range(int(rng.integers(1, 4)))
        ]
        if trial % 3 == 0:  # integer and half-integer vertices put centres exactly on edges and vertices
            polygons = [np.round(p * 2) / 2 for p in polygons]
        elif trial % 3 == 1:
            polygons = [np.round(p) for p in polygons]
        ours, overlap = rasterize_polygons(polygons, shape)
        ref, ref_overlap = skimage_reference(polygons, shape)
        assert np.array_equal(ours, ref) and overlap == ref_overlap, trial
    with pytest.raises(ValueError, match=r"\(N, 2\) array with N >= 3"):
        rasterize_polygons([np.zeros((2, 2))], (4, 4))


def test_official_layouts_fixture(tmp_path: Path) -> None:
    make_monuseg(
        tmp_path, train=("TCGA-AA-0001-01Z-00-DX1",), test=("TCGA-BB-0002-01A-01-TS1", "TCGA-BB-0003-01A")
    )
    ds = open_dataset(f"monuseg:{tmp_path}")
    assert [(r.id, r.split, r.group) for r in ds.records] == [
        ("TCGA-AA-0001-01Z-00-DX1", "train", "TCGA-AA-0001"),
        ("TCGA-BB-0002-01A-01-TS1", "test", "TCGA-BB-0002"),
        ("TCGA-BB-0003-01A", "test", "TCGA-BB-0003"),
    ]
    kept = [np.asarray(r, dtype=float) for r in MONUSEG_REGIONS if len(r) >= 3]
    expected, _ = skimage_reference(kept, (16, 16))
    for record in ds.records:
        sample = ds.load_record(record)
        assert np.array_equal(sample["instances"], expected)
        assert sample["meta"]["regions_skipped"] == "1" and sample["meta"]["regions_clipped"] == "1"
    # Square 1 spans x, y in [2, 6] -> pixel centres 2..5 after the -0.5 shift; square 3 overwrites (5, 5).
    assert expected[2:5, 2:5].min() == 1 and expected[5, 5] == 3 and expected[1, 1] == 0


def test_kaggle_layout(tmp_path: Path) -> None:
    masks = make_monuseg_kaggle(tmp_path)
    ds = open_dataset(f"monuseg:{tmp_path}")
    assert {r.id: r.split for r in ds.records} == {"TCGA-AA-0001-01Z": "train", "TCGA-BB-0002-01Z": "test"}
    for record in ds.records:
        sample = ds.load_record(record)
        assert np.array_equal(sample["mask"], masks[record.id]) and "instances" not in sample


def test_bad_annotations_name_the_file(tmp_path: Path) -> None:
    make_monuseg(tmp_path, train=(), test=("TCGA-BB-0002-01A", "TCGA-BB-0003-01A"))
    xml = tmp_path / "MoNuSegTestData" / "TCGA-BB-0002-01A.xml"
    ds = open_dataset(f"monuseg:{tmp_path}")
    for text, words in (
        ("<Annotations><Region Id='1'><Vertices>", "malformed XML"),
        ("<Annotations/>", "no <Region> element"),
        (
            "<R><Region Id='7'><Vertex X='1' Y='a'/><Vertex X='1' Y='2'/><Vertex X='3' Y='2'/></Region></R>",
            "Id=7",
        ),
    ):
        xml.write_text(text)
        with pytest.raises(DatasetError, match=words) as err:
            ds[0]
        assert err.value.path == xml
    xml.unlink()
    with pytest.raises(DatasetError, match="image without an annotation") as err:
        open_dataset(f"monuseg:{tmp_path}")
    assert err.value.path == xml.with_suffix(".tif")


def _region_xml(regions: list[tuple[int, int, list[tuple[float, float]], bool]]) -> str:
    """Aperio XML with one ``<Region Id Type NegativeROA>`` per ``(id, type, vertices, negative)``."""
    out = ['<Annotations><Annotation Id="1" Type="4"><Regions>']
    for region_id, kind, vertices, negative in regions:
        out.append(f'<Region Id="{region_id}" Type="{kind}" NegativeROA="{int(negative)}"><Vertices>')
        out += [f'<Vertex X="{x}" Y="{y}"/>' for x, y in vertices]
        out.append("</Vertices></Region>")
    out.append("</Regions></Annotation></Annotations>")
    return "\n".join(out)


def _one_tile(root: Path, xml: str, size: int = 48) -> Path:
    folder = root / "MoNuSegTestData"
    save(folder / "TCGA-ZZ-0001-01A.tif", np.full((size, size, 3), 200, np.uint8))
    (folder / "TCGA-ZZ-0001-01A.xml").write_text(xml)
    return folder


def _ellipse_reference(shape: tuple[int, int], x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Pixel centres (c + 0.5, r + 0.5) inside the ellipse inscribed in the box, tested one by one."""
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    out = np.zeros(shape, bool)
    for r in range(shape[0]):
        for c in range(shape[1]):
            out[r, c] = ((c + 0.5 - cx) / rx) ** 2 + ((r + 0.5 - cy) / ry) ** 2 <= 1.0
    return out


def test_square_plus_type2_ellipse_loads_about_248_px(tmp_path: Path) -> None:
    square = [(2, 2), (12, 2), (12, 12), (2, 12)]
    xml = _region_xml([(1, 0, square, False), (2, 2, [(20, 20), (36, 32)], False)])
    ds = open_dataset(f"monuseg:{_one_tile(tmp_path, xml)}")
    sample = ds[0]
    ellipse = _ellipse_reference((48, 48), 20, 20, 36, 32)
    assert int(ellipse.sum()) == 148 and abs(ellipse.sum() - np.pi * 8 * 6) < 4
    assert int(sample["mask"].sum()) == 248
    expected = np.zeros((48, 48), np.int32)
    expected[2:12, 2:12] = 1
    expected[ellipse] = 2
    np.testing.assert_array_equal(sample["instances"], expected)
    assert sample["meta"]["regions"] == "2" and sample["meta"]["regions_skipped"] == "0"
    assert sample["meta"]["region_shapes"] == "ellipse,polygon"


def test_rectangles_holes_and_other_types(tmp_path: Path) -> None:
    xml = _region_xml(
        [
            (1, 0, [(2, 2), (12, 2), (12, 12), (2, 12)], False),
            (2, 0, [(4, 4), (8, 4), (8, 8), (4, 8)], True),  # a hole in the square
            (3, 1, [(40, 2), (45, 6)], False),  # rectangle from two corners: 5 x 4
            (4, 2, [(20, 20), (36, 32)], False),
            (5, 2, [(24, 24), (32, 28)], True),  # an elliptic hole in the ellipse
            (6, 3, [(1, 1), (5, 5)], False),  # arrow
            (7, 4, [(1, 40), (30, 40)], False),  # ruler
            (8, 9, [(1, 1), (2, 2), (1, 2)], False),  # unknown type
        ]
    )
    folder = _one_tile(tmp_path, xml)
    sample = open_dataset(f"monuseg:{folder}")[0]
    outer = _ellipse_reference((48, 48), 20, 20, 36, 32)
    inner = _ellipse_reference((48, 48), 24, 24, 32, 28)
    expected = np.zeros((48, 48), np.int32)
    expected[2:12, 2:12] = 1
    expected[4:8, 4:8] = 0
    expected[2:6, 40:45] = 2
    expected[outer & ~inner] = 3
    np.testing.assert_array_equal(sample["instances"], expected)
    np.testing.assert_array_equal(sample["mask"], sample["instances"] > 0)
    assert int(sample["mask"].sum()) == 100 - 16 + 20 + int(outer.sum()) - int(inner.sum())
    meta = sample["meta"]
    assert meta["holes"] == "2" and meta["regions"] == "3" and meta["skipped_region_ids"] == "6,7,8"
    assert "6: Type 3 (arrow) is not an area" in meta["skipped_regions"]
    assert "7: Type 4 (ruler)" in meta["skipped_regions"] and "8: Type 9 (unknown)" in meta["skipped_regions"]
    report = check_dataset(f"monuseg:{folder}")
    skipped = [p for p in report.problems if "annotation regions skipped" in p.message]
    assert len(skipped) == 1 and "arrow" in skipped[0].message and skipped[0].path.suffix == ".xml"
    assert any("2 NegativeROA hole regions subtracted" in p.message for p in report.problems)
