"""Multi-class data: the synthetic nuclei_mc family, class-map caching, tensors, per-class data check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from tests.data.fixtures import make_consep

from fdseg.data.cache import CachedDataset
from fdseg.data.check import check_dataset
from fdseg.data.errors import DatasetError
from fdseg.data.open import open_dataset
from fdseg.data.synthetic import MULTICLASS_NAMES, generate, generate_class_map
from fdseg.data.torch_dataset import SegmentationDataset


def test_nuclei_types_differ_in_size_and_stain() -> None:
    data = generate("nuclei_mc", "base", n=12, seed=3, size=64)
    assert data.classes is not None
    assert np.array_equal(data.masks, data.classes > 0)
    darkness = data.images.astype(float).mean(-1)
    area: dict[int, list[int]] = {1: [], 2: [], 3: []}
    dark: dict[int, float] = {}
    for label in (1, 2, 3):
        inside = data.classes == label
        dark[label] = float(darkness[inside].mean())
        for cls in data.classes:
            comps, _n = ndimage.label(cls == label)
            area[label].extend(np.bincount(comps.ravel())[1:].tolist())
    assert np.median(area[2]) > 2 * np.median(area[1])  # epithelial nuclei are larger than lymphocytes
    assert dark[1] < dark[2]  # lymphocytes are darker (denser haematoxylin) than the pale epithelial nuclei
    assert np.array_equal(data.classes[5], generate_class_map("base", seed=3, index=5, size=64))


def test_sites_shift_appearance_but_keep_labels() -> None:
    a = generate("nuclei_mc", "base", n=2, seed=1)
    b = generate("nuclei_mc", "appear", n=2, seed=1)
    assert a.classes is not None and b.classes is not None
    assert np.array_equal(a.classes, b.classes) and not np.array_equal(a.images, b.images)


def test_synthetic_spec_caches_class_maps_and_yields_int64(tmp_path: Path) -> None:
    raw = open_dataset(f"synthetic:{tmp_path / 'mc'}?family=nuclei_mc&n=4&size=32")
    assert raw.class_names == MULTICLASS_NAMES
    cached = CachedDataset(raw, 32, tmp_path / "cache", target="classes")
    expected = generate_class_map("base", seed=0, index=2, size=32)
    assert np.array_equal(cached[2]["mask"], expected) and cached[2]["mask"].dtype == np.uint8
    sample = SegmentationDataset(cached)[2]
    assert sample["mask"].dtype.is_floating_point is False and tuple(sample["mask"].shape) == (1, 32, 32)
    assert sample["mask"].numpy()[0].tolist() == expected.tolist()
    binary = CachedDataset(raw, 32, tmp_path / "cache")  # the binary entry is another cache entry
    assert binary[2]["mask"].dtype == bool and np.array_equal(binary[2]["mask"], expected > 0)


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_consep_class_maps_resized_nearest(tmp_path: Path, version: str) -> None:
    truth = make_consep(tmp_path, version=version)
    raw = open_dataset(f"consep:{tmp_path}")
    native = CachedDataset(raw, None, persist=False, target="classes")
    _inst, types = truth["train_1"]
    assert np.array_equal(native[native.index_of("train_1")]["mask"], types.astype(np.uint8))
    merged = CachedDataset(
        open_dataset(f"consep:{tmp_path}?classes=4"), (28, 18), persist=False, target="classes"
    )
    labels = merged[merged.index_of("train_1")]["mask"]
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 4}
    assert np.array_equal(labels[::2, ::2], np.array([0, 1, 2, 3, 3, 4, 4, 4])[types])  # nearest, 2x


def test_binary_dataset_has_no_classes(tmp_path: Path) -> None:
    raw = open_dataset(f"synthetic:{tmp_path / 'bin'}?n=2&size=32")
    with pytest.raises(DatasetError, match="has no class labels"):
        CachedDataset(raw, 32, persist=False, target="classes")


def test_data_check_reports_class_fractions(tmp_path: Path) -> None:
    truth = make_consep(tmp_path, version="v5")
    report = check_dataset(f"consep:{tmp_path}")
    assert report.class_fractions is not None and report.class_images is not None
    counts = np.bincount(np.concatenate([t.ravel() for _i, t in truth.values()]), minlength=8)
    for label, name in enumerate(report.class_fractions):
        assert report.class_fractions[name] == pytest.approx(counts[label] / counts.sum())
    assert report.class_images["muscle"] == 3
    assert "class pixel fractions" in report.to_text()
