"""Argument checks with clear messages: shapes, options, did-you-mean.

Everything here raises ``ValueError`` (bad value) or ``KeyError`` (unknown name) with a message that says
what was expected, what arrived and, where possible, what to do.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A short suffix suggesting the closest of ``choices`` to ``name`` ('' when nothing is close)."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_option(name: str, value: T, choices: Sequence[T]) -> T:
    """Return ``value`` if it is one of ``choices``; otherwise raise ``ValueError`` listing them."""
    if value not in choices:
        hint = did_you_mean(str(value), [str(c) for c in choices]) or ";"
        raise ValueError(f"unknown {name} {value!r}{hint} valid options: {sorted(str(c) for c in choices)}")
    return value


def check_keys(kind: str, given: Iterable[str], valid: Iterable[str]) -> None:
    """Raise ``ValueError`` naming every key of ``given`` that is not in ``valid``."""
    valid_list = list(valid)
    bad = [k for k in given if k not in valid_list]
    if bad:
        hint = did_you_mean(bad[0], valid_list) or ";"
        raise ValueError(f"unknown {kind} {bad}{hint} valid: {sorted(valid_list)}")


def check_shape(x: torch.Tensor, dims: str, *, name: str) -> None:
    """Check that ``x`` has as many dimensions as the space-separated names in ``dims``.

    Names that are integers are checked exactly, e.g. ``check_shape(mask, "B 1 H W", name="mask")``.

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: wrong rank or a fixed dimension differs.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor ({dims}), got {type(x).__name__}")
    parts = dims.split()
    if x.ndim != len(parts):
        raise ValueError(f"{name}: expected {len(parts)} dims ({dims}), got shape {tuple(x.shape)}")
    for axis, (part, size) in enumerate(zip(parts, x.shape)):
        if part.isdigit() and int(part) != size:
            raise ValueError(
                f"{name}: expected size {part} at dim {axis} ({dims}), got shape {tuple(x.shape)}"
            )


def check_int(name: str, value: int, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an ``int`` (not a ``bool``) >= ``minimum`` (default 1: a positive int).

    Raises:
        TypeError: not an int, e.g. ``2.0`` or ``True``; the message names ``name`` and the bound.
        ValueError: an int below ``minimum``, e.g. ``"base_width must be an int >= 1, got 0"``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_layer_names(layers: Sequence[str]) -> tuple[str, ...]:
    """Return ``layers`` as a tuple of distinct tap names (at least one), e.g. ``("enc1", "bottleneck")``.

    Raises:
        TypeError: a bare string (``"enc1"`` instead of ``["enc1"]``) or a name that is not a ``str``.
        ValueError: no name, or a name listed twice (the message lists the duplicates).
    """
    if isinstance(layers, str):
        raise TypeError(
            f"layers must be a sequence of tap names, got the string {layers!r}; use [{layers!r}]"
        )
    names = tuple(layers)
    if not names:
        raise ValueError("layers must name at least one tapped layer, e.g. ['enc1', 'bottleneck']")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"layers: expected str tap names, got {name!r}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"layers: duplicate names {duplicates} in {list(names)}")
    return names


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """Raise ``ValueError`` unless ``value`` > 0 (or >= 0 with ``allow_zero``)."""
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value
