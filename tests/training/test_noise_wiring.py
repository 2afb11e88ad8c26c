"""``data.noise`` in runs: fixed per-image noise on the configured splits; validation follows training."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fdseg.data.noise import noise_field
from fdseg.training.config import ExperimentConfig
from fdseg.training.data import RunData, build_run_data


def _first(data: RunData, split: str) -> dict[str, object]:
    loader = data.eval_loader(split, 64)
    return dict(next(iter(loader)))


def _clean(data: RunData, ids: list[str]) -> torch.Tensor:
    images = [data.base[data.base.index_of(i)]["image"] for i in ids]
    return torch.stack([torch.from_numpy(a.transpose(2, 0, 1).copy()).float() / 255 for a in images])


@pytest.mark.parametrize(
    ("apply_to", "noisy"),
    [("test", {"test"}), ("train", {"train", "val"}), ("all", {"train", "val", "test"})],
)
def test_noise_reaches_exactly_the_configured_splits(
    apply_to: str, noisy: set[str], tiny: Callable[..., ExperimentConfig], data_dir: Path, tmp_path: Path
) -> None:
    sigma, seed = 0.1, 7
    noise = {"sigma": sigma, "apply_to": apply_to, "seed": seed}
    cfg = tiny(data_dir, data={"noise": noise, "augment": "none"})
    data = build_run_data(cfg, tmp_path / "run")
    for split in ("train", "val", "test"):
        batch = _first(data, split)
        keep = batch["source"] == 0  # type: ignore[operator]  # base images (the pooled train set has novel ones)
        ids = [i.split("/", 1)[-1] for i, k in zip(batch["id"], keep.tolist()) if k]  # type: ignore[call-overload]
        clean = _clean(data, ids)
        got = batch["image"][keep]  # type: ignore[index]
        assert isinstance(got, torch.Tensor) and len(ids) > 0
        if split in noisy:
            z = torch.stack(
                [torch.from_numpy(noise_field(i, tuple(clean.shape[1:]), seed=seed)) for i in ids]
            )
            assert torch.allclose(got, (clean + sigma * z).clamp(0, 1), atol=1e-6), split
        else:
            assert torch.equal(got, clean), split
    # the novel images of the training set get noise too (with train/all), from their own field (seed + 1)
    assert data.novel is not None
    train = data.train
    for sample in (train[i] for i in range(len(train))):
        if sample["source"] != 1:
            continue
        record_id = sample["id"].split("/", 1)[1]
        array = data.novel[data.novel.index_of(record_id)]["image"]
        clean_novel = torch.from_numpy(array.transpose(2, 0, 1).copy()).float() / 255
        if "train" in noisy:
            z = torch.from_numpy(noise_field(record_id, tuple(clean_novel.shape), seed=seed + 1))
            assert torch.allclose(sample["image"], (clean_novel + sigma * z).clamp(0, 1), atol=1e-6)
        else:
            assert torch.equal(sample["image"], clean_novel)


def test_same_id_same_noise_across_arms(
    tiny: Callable[..., ExperimentConfig], data_dir: Path, tmp_path: Path
) -> None:
    noise = {"noise": {"sigma": 0.2, "apply_to": "test", "seed": 1}}
    a = build_run_data(tiny(data_dir, data=noise), tmp_path / "a")
    b = build_run_data(tiny(data_dir, data=noise, loss={"fd": False}), tmp_path / "b")
    assert torch.equal(_first(a, "test")["image"], _first(b, "test")["image"])  # type: ignore[arg-type]


def test_bad_noise_settings_are_refused(tiny: Callable[..., ExperimentConfig], data_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"data.noise.sigma must be >= 0"):
        tiny(data_dir, data={"noise": {"sigma": -0.1}})
    with pytest.raises(ValueError, match="apply_to"):
        tiny(data_dir, data={"noise": {"sigma": 0.1, "apply_to": "val"}})
    cfg = ExperimentConfig().with_overrides(["data.noise.sigma=0.05", "data.noise.apply_to=train"])
    assert cfg.data.noise.sigma == 0.05 and cfg.data.noise.apply_to == "train"
