"""CoNSeP: .mat v5 and v7.3 (transposed HDF5), the 7 and 4 class views, missing keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures import make_consep, write_mat

from fdseg.data.errors import DatasetError
from fdseg.data.formats.consep import MERGE_7_TO_4
from fdseg.data.open import open_dataset


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_views_and_official_split(tmp_path: Path, version: str) -> None:
    if version == "v7.3":
        pytest.importorskip("h5py", reason="h5py (the [mat73] extra) is not installed")
    maps = make_consep(tmp_path, version=version)
    ds = open_dataset(f"consep:{tmp_path}")
    assert {r.id: r.split for r in ds.records} == {"train_1": "train", "train_2": "train", "test_1": "test"}
    for record in ds.records:
        sample = ds.load_record(record)
        inst, types = maps[record.id]
        assert sample["image"].shape == (14, 9, 3)
        assert sample["instances"].dtype == np.int32 and np.array_equal(sample["instances"], inst)
        assert sample["classes"].dtype == np.uint8 and np.array_equal(sample["classes"], types)
        assert np.array_equal(sample["mask"], inst > 0) and sample["meta"]["nuclei"] == "7"
    merged_ds = open_dataset(f"consep:{tmp_path}?classes=4")
    merged = merged_ds.load_record(merged_ds.by_id("train_1"))["classes"]
    inst, types = maps["train_1"]
    assert np.array_equal(merged, MERGE_7_TO_4[types]) and sorted(np.unique(merged)) == [0, 1, 2, 3, 4]
    # healthy (3) and malignant (4) epithelial merge to 3; fibroblast, muscle, endothelial (5, 6, 7) to 4.
    assert MERGE_7_TO_4.tolist() == [0, 1, 2, 3, 3, 4, 4, 4]


def test_missing_keys_and_bad_values(tmp_path: Path) -> None:
    make_consep(tmp_path, version="v5")
    label = tmp_path / "CoNSeP" / "Test" / "Labels" / "test_1.mat"
    write_mat(label, {"instance_map": np.zeros((14, 9))}, version="v5")
    ds = open_dataset(f"consep:{tmp_path}")
    with pytest.raises(
        DatasetError, match=r"missing keys \['inst_map', 'type_map'\].*has \['instance_map'\]"
    ) as err:
        ds[ds.records.index(ds.by_id("test_1"))]
    assert err.value.path == label
    write_mat(label, {"inst_map": np.zeros((14, 9)), "type_map": np.full((14, 9), 9)}, version="v5")
    with pytest.raises(DatasetError, match=r"expected 0\.\.7"):
        ds[ds.records.index(ds.by_id("test_1"))]
    write_mat(label, {"inst_map": np.zeros((9, 14)), "type_map": np.zeros((9, 14))}, version="v5")
    with pytest.raises(DatasetError, match="mask is 9x14"):
        ds[ds.records.index(ds.by_id("test_1"))]
    label.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"cannot read \.mat"):
        ds[ds.records.index(ds.by_id("test_1"))]
    with pytest.raises(ValueError, match="option classes"):
        open_dataset(f"consep:{tmp_path}?classes=5")
