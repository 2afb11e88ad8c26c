"""Paired spatial transforms: the image and every mask-like entry of a sample move together.

A transform is called as ``transform(sample, generator)`` and returns a new sample dict. Spatial entries are
``image``, ``mask`` and, when present, ``instances`` and ``classes``; other entries pass through. Arrays may
be
numpy, laid out (H, W[, C]), or torch tensors, laid out (C, H, W) / (1, H, W): the spatial axes are the
first two for numpy and the last two for torch. Randomness comes only from ``generator``: a
``torch.Generator``, a ``numpy.random.Generator``, or ``None`` for torch's global generator (which
``DataLoader`` workers seed individually).

The paper's augmentation (``method-spec.md`` §D3) is the ×5 offline set {identity, left-right flip, up-down
flip, rot 90°, rot 270°}; :data:`PAPER_VIEWS` with :class:`RandomView` draws one of those views per sample
on the fly, which has the same expected content per epoch without materialising five copies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from fdseg._checks import check_option
from fdseg.registry import Registry

Generator = torch.Generator | np.random.Generator | None
Sample = dict[str, Any]

SPATIAL_KEYS: tuple[str, ...] = ("image", "mask", "instances", "classes")
VIEWS: tuple[str, ...] = ("identity", "fliplr", "flipud", "rot90", "rot180", "rot270")
#: The paper's ×5 offline augmentation as views (``rot90`` is counter-clockwise, like ``np.rot90``).
PAPER_VIEWS: tuple[str, ...] = ("identity", "fliplr", "flipud", "rot90", "rot270")


def _uniform(generator: Generator) -> float:
    if isinstance(generator, np.random.Generator):
        return float(generator.random())
    return float(torch.rand((), generator=generator))


def _integer(generator: Generator, high: int) -> int:
    if isinstance(generator, np.random.Generator):
        return int(generator.integers(0, high))
    return int(torch.randint(0, high, (), generator=generator))


def _axes(arr: Any) -> tuple[int, int]:
    return (-2, -1) if isinstance(arr, torch.Tensor) else (0, 1)


def _view_array(arr: Any, view: str) -> Any:
    """Apply a view to one array (numpy or torch) over its spatial axes."""
    rows, cols = _axes(arr)
    if view == "identity":
        return arr
    if isinstance(arr, torch.Tensor):
        if view == "fliplr":
            return torch.flip(arr, dims=(cols,))
        if view == "flipud":
            return torch.flip(arr, dims=(rows,))
        k = {"rot90": 1, "rot180": 2, "rot270": 3}[view]
        return torch.rot90(arr, k, dims=(rows, cols))
    if view == "fliplr":
        out = np.flip(arr, axis=cols)
    elif view == "flipud":
        out = np.flip(arr, axis=rows)
    else:
        out = np.rot90(arr, {"rot90": 1, "rot180": 2, "rot270": 3}[view], axes=(rows, cols))
    return np.ascontiguousarray(out)


def apply_view(sample: Mapping[str, Any], view: str) -> Sample:
    """Apply one deterministic view (:data:`VIEWS`) to every spatial entry of ``sample``."""
    check_option("view", view, VIEWS)
    return {k: _view_array(v, view) if k in SPATIAL_KEYS else v for k, v in sample.items()}


class RandomView:
    """Apply one view drawn uniformly from ``views`` (default: the paper's five)."""

    def __init__(self, views: Sequence[str] = PAPER_VIEWS) -> None:
        if not views:
            raise ValueError("RandomView needs at least one view")
        for view in views:
            check_option("view", view, VIEWS)
        self.views = tuple(views)

    def __call__(self, sample: Mapping[str, Any], generator: Generator = None) -> Sample:
        return apply_view(sample, self.views[_integer(generator, len(self.views))])

    def __repr__(self) -> str:
        return f"RandomView({list(self.views)})"


class RandomFlip:
    """Flip left-right (``horizontal``) or up-down (``vertical``) with probability ``p``."""

    def __init__(self, *, axis: str = "horizontal", p: float = 0.5) -> None:
        check_option("flip axis", axis, ("horizontal", "vertical"))
        if not 0 <= p <= 1:
            raise ValueError(f"RandomFlip p must be in [0, 1], got {p}")
        self.view = "fliplr" if axis == "horizontal" else "flipud"
        self.p = p

    def __call__(self, sample: Mapping[str, Any], generator: Generator = None) -> Sample:
        return apply_view(sample, self.view) if _uniform(generator) < self.p else dict(sample)

    def __repr__(self) -> str:
        return f"RandomFlip(view={self.view!r}, p={self.p})"


class RandomRot90:
    """With probability ``p``, rotate by an angle drawn uniformly from ``angles`` (degrees, CCW)."""

    def __init__(self, *, angles: Sequence[int] = (90, 270), p: float = 1.0) -> None:
        for angle in angles:
            check_option("rotation angle", angle, (90, 180, 270))
        if not angles:
            raise ValueError("RandomRot90 needs at least one angle")
        if not 0 <= p <= 1:
            raise ValueError(f"RandomRot90 p must be in [0, 1], got {p}")
        self.angles = tuple(angles)
        self.p = p

    def __call__(self, sample: Mapping[str, Any], generator: Generator = None) -> Sample:
        if _uniform(generator) >= self.p:
            return dict(sample)
        angle = self.angles[_integer(generator, len(self.angles))]
        return apply_view(sample, f"rot{angle}")

    def __repr__(self) -> str:
        return f"RandomRot90(angles={list(self.angles)}, p={self.p})"


class Compose:
    """Apply transforms in order, sharing one generator."""

    def __init__(self, transforms: Sequence[Callable[..., Sample]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Mapping[str, Any], generator: Generator = None) -> Sample:
        out = dict(sample)
        for transform in self.transforms:
            out = transform(out, generator)
        return out

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


#: Named augmentation pipelines for configs: ``paper``, ``flip_rot90``, ``none``.
TRANSFORMS: Registry[Callable[..., Sample]] = Registry("augmentation")


@TRANSFORMS.register("paper")
def _paper() -> RandomView:
    """One of the paper's five views (identity, flips, rot 90°/270°) per sample."""
    return RandomView(PAPER_VIEWS)


@TRANSFORMS.register("flip_rot90")
def _flip_rot90() -> Compose:
    """Horizontal flip (p = 0.5) then a rotation by 0°, 90°, 180° or 270° (the calibration toy's)."""
    return Compose([RandomFlip(axis="horizontal"), RandomView(("identity", "rot90", "rot180", "rot270"))])


@TRANSFORMS.register("none")
def _identity() -> Compose:
    """No augmentation."""
    return Compose([])


def build_transforms(name: str) -> Callable[..., Sample]:
    """A named augmentation pipeline (``KeyError`` listing the names otherwise)."""
    return TRANSFORMS.build(name)
