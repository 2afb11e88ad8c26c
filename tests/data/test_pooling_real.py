"""Real multi-site pooling: TNBC (base, 512² PNG) + the MoNuSeg test set (novel, 1000² TIFF + XML polygons).

Both sites are cached at one common size (128², to stay fast: rasterising the MoNuSeg polygons is the slow
part) in a temporary cache, pooled, and loaded through ``collate``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures import SHARED_DATA
from torch.utils.data import DataLoader

from fdseg.data import PooledDataset, SegmentationDataset, collate, open_dataset, select_subset
from fdseg.data.base import natural_key
from fdseg.data.cache import CachedDataset

TNBC = SHARED_DATA / "tnbc" / "TNBC_NucleiSegmentation"
MONUSEG_TEST = SHARED_DATA / "monuseg" / "MoNuSegTestData"
SIZE = 128

pytestmark = pytest.mark.skipif(
    not (TNBC.is_dir() and MONUSEG_TEST.is_dir()),
    reason=f"real TNBC and MoNuSeg test data not found under {SHARED_DATA} (set FDSEG_SHARED_DATA)",
)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> tuple[CachedDataset, CachedDataset]:
    cache = tmp_path_factory.mktemp("real-cache")
    base = CachedDataset(open_dataset(f"tnbc:{TNBC}"), SIZE, cache)
    novel = CachedDataset(open_dataset(f"monuseg:{MONUSEG_TEST}"), SIZE, cache)
    return base, novel


def test_sites_share_one_size(sites: tuple[CachedDataset, CachedDataset]) -> None:
    base, novel = sites
    assert (len(base), len(novel)) == (50, 14)
    for data in (base, novel):
        for item in (data[0], data[len(data) - 1]):
            assert item["image"].shape == (SIZE, SIZE, 3) and item["image"].dtype == np.uint8
            assert item["mask"].shape == (SIZE, SIZE) and item["mask"].dtype == bool
            assert 0 < item["mask"].mean() < 1  # nuclei and background both present after resizing


@pytest.mark.parametrize("k", [0, 3, 7, 14])
def test_pooled_sources_ids_and_first_k(sites: tuple[CachedDataset, CachedDataset], k: int) -> None:
    base_cache, novel_cache = sites
    base = SegmentationDataset(base_cache, source=0)
    novel = SegmentationDataset(novel_cache, source=1)
    position = {item: i for i, item in enumerate(novel.ids)}
    chosen = [position[i] for i in select_subset(novel.ids, k)]
    pooled = PooledDataset([base, novel.subset(chosen)], names=("base", "novel"))
    assert pooled.counts() == {"base": 50, "novel": k}
    ids = pooled.ids
    assert len(set(ids)) == len(ids) == 50 + k
    first_k = sorted(novel_cache.ids, key=natural_key)[:k]
    assert [i.removeprefix("novel/") for i in ids[50:]] == first_k
    assert first_k == sorted(novel_cache.ids)[:k]  # the TCGA ids sort the same either way

    loader = DataLoader(
        pooled, batch_size=8, shuffle=True, collate_fn=collate, generator=torch.Generator().manual_seed(k)
    )
    seen: dict[str, int] = {}
    for batch in loader:
        assert batch["image"].shape[1:] == (3, SIZE, SIZE) and batch["image"].dtype == torch.float32
        assert batch["mask"].shape[1:] == (1, SIZE, SIZE)
        assert batch["source"].dtype == torch.long and len(batch["id"]) == batch["image"].shape[0]
        for b, (item, source) in enumerate(zip(batch["id"], batch["source"].tolist())):
            assert source == (1 if item.startswith("novel/") else 0)
            seen[item] = source
            if source == 1:  # a novel sample is that MoNuSeg image, at the common size
                cached = novel_cache[novel_cache.index_of(item.removeprefix("novel/"))]
                expected = torch.from_numpy(cached["image"].transpose(2, 0, 1).astype(np.float32) / 255)
                torch.testing.assert_close(batch["image"][b], expected)
    assert sorted(seen) == sorted(ids)
    assert sum(seen.values()) == k
