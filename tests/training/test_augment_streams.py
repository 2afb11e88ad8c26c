"""Augmentation randomness: the base and novel sites, and the DataLoader workers, draw separate streams."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from fdseg.data.torch_dataset import SegmentationDataset, collate
from fdseg.data.transforms import build_transforms
from fdseg.training.config import ExperimentConfig
from fdseg.training.data import augment_generator, build_run_data, reseed_worker_augmentation

Tiny = Callable[..., ExperimentConfig]
DRAWS = 8  # paper views: 5 choices per draw, so two equal 8-view sequences by chance has p = 5**-8


def _views(run_dir: Path, data_dir: Path, tiny: Tiny, generator: torch.Generator | None) -> torch.Tensor:
    """The same base image augmented DRAWS times in a row with ``generator``: (DRAWS, C, H, W)."""
    data = build_run_data(tiny(data_dir), run_dir)
    position = data.positions("train")[0]
    repeated = SegmentationDataset(
        data.base, [position] * DRAWS, transforms=build_transforms("paper"), generator=generator
    )
    return torch.stack([repeated[i]["image"] for i in range(DRAWS)])


def test_base_and_novel_draw_different_transforms(tmp_path: Path, data_dir: Path, tiny: Tiny) -> None:
    data = build_run_data(tiny(data_dir), tmp_path / "run")
    base, novel = data.train.parts  # type: ignore[attr-defined]
    assert (base.source, novel.source) == (0, 1)
    assert base.generator is not novel.generator
    # the same image through each site's generator: other views for the same index sequence
    from_base = _views(tmp_path / "run", data_dir, tiny, base.generator)
    from_novel = _views(tmp_path / "run", data_dir, tiny, novel.generator)
    assert not torch.equal(from_base, from_novel)
    # ... and reproducibly so: generators seeded alike give identical views (the check can tell them apart)
    again = _views(tmp_path / "run", data_dir, tiny, augment_generator(data.seed, 0))
    assert torch.equal(again, _views(tmp_path / "run", data_dir, tiny, augment_generator(data.seed, 0)))


def test_dataloader_workers_draw_different_transforms(tmp_path: Path, data_dir: Path, tiny: Tiny) -> None:
    data = build_run_data(tiny(data_dir), tmp_path / "run")
    position = data.positions("train")[0]
    repeated = SegmentationDataset(
        data.base,
        [position] * (2 * DRAWS),
        transforms=build_transforms("paper"),
        generator=augment_generator(0, 0),
    )

    def per_worker(init: Callable[[int], None] | None) -> tuple[torch.Tensor, torch.Tensor]:
        loader = DataLoader(
            repeated,
            batch_size=1,
            num_workers=2,
            collate_fn=collate,
            worker_init_fn=init,
            generator=torch.Generator().manual_seed(0),
        )
        images = torch.cat([batch["image"] for batch in loader])  # items alternate between the two workers
        return images[0::2], images[1::2]

    first, second = per_worker(None)
    assert torch.equal(first, second)  # without reseeding both workers copy one generator state
    first, second = per_worker(reseed_worker_augmentation)
    assert not torch.equal(first, second)
    assert all(torch.equal(a, b) for a, b in zip(per_worker(reseed_worker_augmentation), (first, second)))
