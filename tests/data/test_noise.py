from __future__ import annotations

import numpy as np
import pytest
import torch

from fdseg.data import ArrayDataset, GaussianNoise, SegmentationDataset, add_gaussian_noise
from fdseg.data.noise import noise_field


def test_noise_is_fixed_per_id_and_seed() -> None:
    image = torch.full((3, 16, 16), 0.5)
    a = add_gaussian_noise(image, 0.1, sample_id="img1", seed=0)
    b = add_gaussian_noise(image, 0.1, sample_id="img1", seed=0)
    c = add_gaussian_noise(image, 0.1, sample_id="img2", seed=0)
    d = add_gaussian_noise(image, 0.1, sample_id="img1", seed=1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c) and not torch.equal(a, d)
    # the sigma curve is paired: the same field, scaled
    z = torch.from_numpy(noise_field("img1", (3, 16, 16), seed=0))
    torch.testing.assert_close(add_gaussian_noise(image, 0.05, sample_id="img1") - 0.5, 0.05 * z)
    assert abs(float((a - 0.5).std()) - 0.1) < 0.015


def test_noise_is_clipped_and_sigma_zero_is_identity() -> None:
    image = np.zeros((8, 8, 3), dtype=np.float32)
    noisy = add_gaussian_noise(image, 0.2, sample_id="x")
    assert noisy.dtype == np.float32 and noisy.min() == 0.0 and noisy.max() <= 1.0
    assert (noisy > 0).mean() > 0.3  # about half of the pixels get positive noise
    assert add_gaussian_noise(image, 0.0, sample_id="x") is image
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        add_gaussian_noise(image, -0.1, sample_id="x")


def test_noise_in_dataset_is_the_same_every_epoch_and_split_rules() -> None:
    images = np.full((2, 8, 8, 3), 128, dtype=np.uint8)
    data = ArrayDataset(images, np.zeros((2, 8, 8), bool), ids=["a", "b"])
    noise = GaussianNoise(0.15, seed=3)
    ds = SegmentationDataset(data, noise=noise)
    assert torch.equal(ds[0]["image"], ds[0]["image"])
    assert not torch.equal(ds[0]["image"], ds[1]["image"])
    clean = SegmentationDataset(data)[0]["image"]
    assert float((ds[0]["image"] - clean).abs().mean()) > 0.05
    assert noise.applies_to("train") and noise.applies_to("test")
    train_only = GaussianNoise(0.1, apply_to="train")
    assert (
        train_only.applies_to("train") and not train_only.applies_to("test") and train_only.applies_to("val")
    )
    test_only = GaussianNoise(0.1, apply_to="test")
    assert test_only.applies_to("test") and not test_only.applies_to("val")
    assert not test_only.applies_to("train")  # validation stays clean: no selection on noisy images
    with pytest.raises(ValueError, match="unknown noise apply_to"):
        GaussianNoise(0.1, apply_to="everything")
