from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fdseg.data import (
    ArrayDataset,
    PooledDataset,
    SegmentationDataset,
    addition_schedule,
    collate,
    generate,
    select_subset,
)


def _site(site: str, n: int, seed: int) -> ArrayDataset:
    data = generate("nuclei", site, n=n, seed=seed, size=32)
    return ArrayDataset(data.images, data.masks, ids=[f"img{i}" for i in range(n)])


def test_segmentation_dataset_sample_contract() -> None:
    base = _site("base", 3, 0)
    sample = SegmentationDataset(base, source=0)[1]
    assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.float32
    assert float(sample["image"].min()) >= 0.0 and float(sample["image"].max()) <= 1.0
    assert sample["mask"].shape == (1, 32, 32) and set(sample["mask"].unique().tolist()) <= {0.0, 1.0}
    np.testing.assert_allclose(sample["image"].numpy().transpose(1, 2, 0) * 255, base.images[1], atol=1e-3)
    assert sample["id"] == "img1" and sample["source"] == 0
    by_id = SegmentationDataset.from_ids(base, ["img2", "img0"])
    assert by_id.ids == ["img2", "img0"] and by_id[0]["id"] == "img2"
    with pytest.raises(KeyError, match="img9"):
        SegmentationDataset.from_ids(base, ["img9"])


def _pool(base: SegmentationDataset, novel: SegmentationDataset, k: int) -> PooledDataset:
    """The base set plus the first ``k`` novel images, as the trainer pools them."""
    position = {item: i for i, item in enumerate(novel.ids)}
    chosen = select_subset(novel.ids, k)
    return PooledDataset([base, novel.subset([position[i] for i in chosen])], names=("base", "novel"))


def test_pool_keeps_sources_and_unique_ids_through_a_dataloader() -> None:
    base = SegmentationDataset(_site("base", 4, 0))
    novel = SegmentationDataset(_site("dil2", 6, 1))
    pooled = _pool(base, novel, 3)
    assert len(pooled) == 7 and pooled.counts() == {"base": 4, "novel": 3}
    assert pooled.ids[3:5] == ["base/img3", "novel/img0"]
    assert len(set(pooled.ids)) == len(pooled)
    loader = DataLoader(
        pooled, batch_size=4, shuffle=True, collate_fn=collate, generator=torch.Generator().manual_seed(0)
    )
    seen_ids: list[str] = []
    for batch in loader:
        assert batch["source"].dtype == torch.long and batch["image"].shape[1:] == (3, 32, 32)
        assert batch["mask"].shape[1:] == (1, 32, 32)
        for sid, src in zip(batch["id"], batch["source"].tolist()):
            assert src == (0 if sid.startswith("base/") else 1)
        seen_ids.extend(batch["id"])
    assert sorted(seen_ids) == sorted(pooled.ids)
    weights = pooled.sample_weights()
    assert torch.isclose(weights[:4].sum(), torch.tensor(0.5, dtype=torch.float64))


def test_first_k_is_sorted_and_nested_random_is_seeded() -> None:
    ids = ["n10", "n2", "n1", "n3"]
    assert select_subset(ids, 2) == ["n1", "n2"]  # natural order, like X_train_dil[:k] over sorted files
    assert select_subset(ids, 3) == ["n1", "n2", "n3"]
    r2 = select_subset(ids, 2, selection="random", seed=5)
    r3 = select_subset(ids, 3, selection="random", seed=5)
    assert r3[:2] == r2 and select_subset(ids, 3, selection="random", seed=5) == r3
    draws = {tuple(select_subset(ids, 2, selection="random", seed=s)) for s in range(20)}
    assert len(draws) > 1
    with pytest.raises(ValueError, match="pool has 4"):
        select_subset(ids, 5)
    with pytest.raises(ValueError, match="unknown novel selection"):
        select_subset(ids, 1, selection="last")


def test_addition_schedule_and_fraction_pooling() -> None:
    assert addition_schedule(30) == [0, 8, 15, 30]  # the paper's MoNuSeg ticks (method-spec §F2)
    assert addition_schedule(40) == [0, 10, 20, 40]
    assert addition_schedule(163, [1 / 16, 1 / 8, 3 / 16, 1 / 4]) == [10, 20, 31, 41]
    base = SegmentationDataset(_site("base", 2, 0))
    novel = SegmentationDataset(_site("dil2", 8, 1))
    counts = addition_schedule(len(novel))
    assert [len(_pool(base, novel, k)) for k in counts] == [2, 4, 6, 10]
    with pytest.raises(ValueError, match="distinct strings"):
        PooledDataset([base, novel], names=["a", "a"])
