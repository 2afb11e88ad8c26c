"""Open a dataset from a spec ``"NAME:PATH[?key=value&…]"``.

This module sits above :mod:`fdseg.data.base` (the record/loader contract and the format registry) and
:mod:`fdseg.data.formats` (the loaders, which register themselves in :data:`~fdseg.data.base.FORMATS`), so
that the contract never imports the loaders built on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fdseg.data.formats  # noqa: F401  (registers every loader)
from fdseg.data.base import FORMATS, RawDataset


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """Split ``"NAME:PATH?k=v&k2=v2"`` into ``(name, path, options)``.

    Args:
        spec: a dataset spec, e.g. ``"tnbc:/data/TNBC_NucleiSegmentation"`` or ``"folder:/d?mask_suffix=_m"``.

    Returns:
        ``(format name, path, options)``; options map each key to its string value.

    Raises:
        ValueError: no ``NAME:`` prefix (the message lists the formats), or an option not ``key=value``.
    """
    if ":" not in spec:
        raise ValueError(f"dataset spec {spec!r} must look like NAME:PATH (formats: {FORMATS.names()})")
    name, rest = spec.split(":", 1)
    path, _, query = rest.partition("?")
    options: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise ValueError(f"dataset spec {spec!r}: option {part!r} must be key=value")
        options[key] = value
    return name, path, options


def open_dataset(spec: str, **options: Any) -> RawDataset:
    """Open a dataset from a spec such as ``"tnbc:/data/TNBC_NucleiSegmentation"``.

    Options may be given in the spec (``?size=256``) or as keyword arguments (converted to strings; they win
    over the spec's).

    Raises:
        KeyError: an unknown format name (the message lists the valid ones).
        ValueError: a malformed spec or an option the format does not know.
        DatasetError: the folder does not hold the format's layout.
    """
    name, path, spec_options = parse_spec(spec)
    factory: Callable[..., RawDataset] = FORMATS.get(name)
    merged = {**spec_options, **{k: str(v) for k, v in options.items()}}
    return factory(root=path, **merged)
