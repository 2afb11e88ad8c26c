"""``open_dataset``: a dataset from its spec ``NAME:PATH?opt=v``, through the registry of every format.

It lives apart from :mod:`fdseg.data.base` so that the base classes, which every format imports, never import
the formats themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fdseg.data.base import FORMATS, RawDataset, parse_spec


def open_dataset(spec: str, **options: Any) -> RawDataset:
    """Open a dataset from a spec such as ``"tnbc:/data/TNBC_NucleiSegmentation"``.

    Options may be given in the spec (``?size=256``) or as keyword arguments (converted to strings).
    Unknown format names raise ``KeyError`` listing the valid ones.
    """
    import fdseg.data.formats  # noqa: F401  (registers every loader)

    name, path, spec_options = parse_spec(spec)
    factory: Callable[..., RawDataset] = FORMATS.get(name)
    merged = {**spec_options, **{k: str(v) for k, v in options.items()}}
    return factory(root=path, **merged)
