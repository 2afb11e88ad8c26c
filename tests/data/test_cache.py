from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fdseg.data import CachedDataset, DatasetError, open_dataset, resize_mask
from fdseg.data.base import RawDataset, Record
from fdseg.data.cache import resize_image, tile_starts
from fdseg.data.synthetic import write_synthetic


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("cache") / "syn", "nuclei", "base", n=6, seed=0, size=48)


def _forbid_decoding(monkeypatch: pytest.MonkeyPatch, raw: RawDataset) -> None:
    def refuse(record: Record) -> None:
        raise AssertionError(f"decoded {record.id} although it is cached")

    monkeypatch.setattr(raw, "load_record", refuse)


def test_second_pass_never_decodes(synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = open_dataset(f"folder:{synth_root}")
    first = CachedDataset(raw, 32, tmp_path)
    assert first.decode_count == len(raw) == 6
    epoch1 = [item["image"].copy() for item in first]
    epoch2 = [item["image"] for item in first]  # a second epoch over the same object
    assert first.decode_count == 6
    for a, b in zip(epoch1, epoch2):
        np.testing.assert_array_equal(a, b)

    _forbid_decoding(monkeypatch, raw)
    again = CachedDataset(raw, 32, tmp_path)  # a new run: everything comes from the .npz entries
    assert again.decode_count == 0
    for a, item in zip(epoch1, again):
        np.testing.assert_array_equal(a, item["image"])
        assert item["image"].shape == (32, 32, 3) and item["mask"].dtype == np.bool_


def test_key_changes_with_size_mode_and_file_content(synth_root: Path, tmp_path: Path) -> None:
    raw = open_dataset(f"folder:{synth_root}")
    base = CachedDataset(raw, 32, tmp_path)
    record = raw.records[0]
    paths = {
        base.entry_path(record),
        CachedDataset(raw, 24, tmp_path).entry_path(record),
        CachedDataset(raw, 32, tmp_path, mask_resize="area").entry_path(record),
        CachedDataset(raw, 32, tmp_path, image_resize="area").entry_path(record),
    }
    assert len(paths) == 4
    copy = tmp_path / "copy"
    write_synthetic(copy, "nuclei", "base", n=6, seed=0, size=48)
    raw_copy = open_dataset(f"folder:{copy}")
    other = CachedDataset(raw_copy, 32, tmp_path)
    # same bytes under another path: the key is content-addressed, so the entries are shared
    assert other.decode_count == 0
    assert other.entry_path(raw_copy.records[0]) == base.entry_path(record)
    write_synthetic(tmp_path / "seed1", "nuclei", "base", n=1, seed=1, size=48)
    (copy / "images" / "0000.png").write_bytes((tmp_path / "seed1" / "images" / "0000.png").read_bytes())
    changed = CachedDataset(open_dataset(f"folder:{copy}"), 32, tmp_path)
    assert changed.decode_count == 1  # only the changed file is decoded again


def test_in_memory_mode_writes_nothing(synth_root: Path, tmp_path: Path) -> None:
    ds = CachedDataset(open_dataset(f"folder:{synth_root}"), None, tmp_path / "c", persist=False)
    assert ds.decode_count == 6 and not (tmp_path / "c").exists()
    assert ds[0]["image"].shape == (48, 48, 3)


def test_tiling_covers_image_and_groups_tiles(synth_root: Path, tmp_path: Path) -> None:
    raw = open_dataset(f"folder:{synth_root}")
    whole = CachedDataset(raw, None, tmp_path)
    tiled = CachedDataset(raw, None, tmp_path, tile=20, stride=16)
    assert tiled.decode_count == 0  # tiling reuses the untiled entries
    assert tile_starts(48, 20, 16) == [0, 16, 28]
    assert len(tiled) == 6 * 9
    assert tiled.ids[:3] == ["0000@0_0", "0000@0_16", "0000@0_28"]
    assert set(tiled.groups[:9]) == {"0000"}
    patch = tiled[tiled.index_of("0001@16_28")]
    np.testing.assert_array_equal(patch["image"], whole[1]["image"][16:36, 28:48])
    np.testing.assert_array_equal(patch["mask"], whole[1]["mask"][16:36, 28:48])
    with pytest.raises(ValueError, match="larger than the target size"):
        CachedDataset(raw, 16, tmp_path, tile=20)


def test_corrupt_entry_is_rebuilt(synth_root: Path, tmp_path: Path) -> None:
    raw = open_dataset(f"folder:{synth_root}")
    ds = CachedDataset(raw, 32, tmp_path)
    ds.entry_path(raw.records[2]).write_bytes(b"garbage")
    again = CachedDataset(raw, 32, tmp_path)
    assert again.decode_count == 1
    np.testing.assert_array_equal(again[2]["image"], ds[2]["image"])


def test_resize_rules_closed_form() -> None:
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, 0] = True  # one pixel of the top-left 2x2 cell
    mask[2:4, 2:4] = True  # the whole bottom-right cell
    mask[0:2, 2] = True  # half of the top-right cell
    assert resize_mask(mask, (2, 2), mode="any").tolist() == [[True, True], [False, True]]
    assert resize_mask(mask, (2, 2), mode="area").tolist() == [[False, False], [False, True]]
    nearest = resize_mask(mask, (8, 8), mode="nearest")
    assert nearest.sum() == 4 * mask.sum()
    image = np.full((4, 6, 3), 100, dtype=np.uint8)
    assert (resize_image(image, (2, 3), mode="area") == 100).all()
    assert resize_image(image[..., :1], (8, 12)).shape == (8, 12, 1)
    with pytest.raises(ValueError, match="unknown mask resize mode"):
        resize_mask(mask, (2, 2), mode="max")


def test_decode_error_names_the_file(synth_root: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    write_synthetic(broken, "nuclei", "base", n=2, seed=0, size=32)
    (broken / "images" / "0001.png").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(DatasetError, match=r"images/0001\.png"):
        CachedDataset(open_dataset(f"folder:{broken}"), 32, tmp_path / "c")


def test_edit_with_restored_mtime_and_same_size_is_seen(synth_root: Path, tmp_path: Path) -> None:
    import os
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    raw = open_dataset(f"folder:{root}")
    first = CachedDataset(raw, 32, tmp_path / "cache")
    mask_file = raw.records[0].mask_files[0]
    before = os.stat(mask_file)
    from PIL import Image

    edited = np.zeros((48, 48), np.uint8)  # an empty mask of the same size ...
    Image.fromarray(edited).save(mask_file)
    data = mask_file.read_bytes()
    pad = before.st_size - len(data)
    assert pad > 0  # an empty mask compresses to fewer bytes than a mask with nuclei
    mask_file.write_bytes(data + b"\0" * pad)  # ... padded to the old byte count (readers ignore the tail)
    os.utime(mask_file, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the old mtime restored
    again = CachedDataset(open_dataset(f"folder:{root}"), 32, tmp_path / "cache")
    assert os.stat(mask_file).st_size == before.st_size
    assert again.decode_count == 1
    assert not again[0]["mask"].any() and first[0]["mask"].any()
