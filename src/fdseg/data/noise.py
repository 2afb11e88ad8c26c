"""Gaussian-noise robustness (``method-spec.md`` §F4): I' = clip(I + η, 0, 1), η ~ N(0, σ²) per pixel/channel.

The noise is *fixed per sample*: η = σ·z where z is a standard-normal field drawn from a generator seeded
by ``(seed, sha1(sample id))``. The same image therefore gets the same noise in every epoch, in every run
with the same seed, and across σ values only the scale changes (the σ curve is paired). Which splits are
noisy is a setting: ``all`` (default), ``train`` or ``test``; validation images follow the training ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from fdseg._checks import check_option

#: The paper's σ values for images in [0, 1].
PAPER_SIGMAS: tuple[float, ...] = (0.05, 0.10, 0.15, 0.20)
APPLY_TO: tuple[str, ...] = ("all", "train", "test")


def noise_field(sample_id: str, shape: tuple[int, ...], *, seed: int = 0) -> np.ndarray:
    """The standard-normal field z of ``sample_id``: float32 ``shape``, deterministic in (seed, id, shape)."""
    digest = int.from_bytes(hashlib.sha1(sample_id.encode()).digest()[:8], "little")
    rng = np.random.default_rng([seed, digest])
    return rng.standard_normal(shape, dtype=np.float32)


def add_gaussian_noise(image: Any, sigma: float, *, sample_id: str, seed: int = 0) -> Any:
    """Return clip(image + σ·z, 0, 1) with the fixed field z of ``sample_id``.

    Args:
        image: float image in [0, 1]: a (C, H, W) tensor or an (H, W, C) numpy array (any layout works;
            the field has the image's shape).
        sigma: noise standard deviation, >= 0 (0 returns the image unchanged).
        sample_id: the sample's id.
        seed: the noise seed.

    Returns:
        The same type, dtype and shape as ``image``.
    """
    if sigma < 0:
        raise ValueError(f"noise sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return image
    z = noise_field(sample_id, tuple(image.shape), seed=seed)
    if isinstance(image, torch.Tensor):
        noisy = image + sigma * torch.from_numpy(z).to(device=image.device, dtype=image.dtype)
        return noisy.clamp_(0.0, 1.0)
    return np.clip(image + sigma * z.astype(image.dtype, copy=False), 0.0, 1.0)


class GaussianNoise:
    """Sample transform adding the fixed noise of each sample's ``id`` to its float ``image``.

    Args:
        sigma: noise standard deviation for images in [0, 1].
        seed: the noise seed.
        apply_to: ``all``, ``train`` or ``test``; see :meth:`applies_to`.
    """

    def __init__(self, sigma: float, *, seed: int = 0, apply_to: str = "all") -> None:
        if sigma < 0:
            raise ValueError(f"noise sigma must be >= 0, got {sigma}")
        check_option("noise apply_to", apply_to, APPLY_TO)
        self.sigma = float(sigma)
        self.seed = seed
        self.apply_to = apply_to

    def applies_to(self, split: str) -> bool:
        """Whether the split ``split`` (``train``/``val``/``test``) gets noise.

        Validation follows training: with ``apply_to="test"`` the validation images stay clean, so the
        checkpoint is never selected on noisy images the model is meant not to have seen.
        """
        check_option("split", split, ("train", "val", "test"))
        if self.apply_to == "all":
            return True
        if split == "val":
            split = "train"
        return (split == "train") == (self.apply_to == "train")

    def __call__(self, sample: Mapping[str, Any], generator: Any = None) -> dict[str, Any]:
        out = dict(sample)
        out["image"] = add_gaussian_noise(
            sample["image"], self.sigma, sample_id=str(sample["id"]), seed=self.seed
        )
        return out

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self.sigma}, seed={self.seed}, apply_to={self.apply_to!r})"
