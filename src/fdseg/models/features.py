"""Named feature taps: canonical layer names, ``FeatureInfo`` and the ``FeatureTap`` context manager.

Every model in :mod:`fdseg.models` declares ``feature_layers: dict[str, str]`` (canonical name -> module
path) and ``feature_info: tuple[FeatureInfo, ...]``. The canonical names describe *resolution*, not position
in a particular network:

========== =============================================================
name       meaning
========== =============================================================
enc1       encoder block at full resolution (reduction 1)
enc2..enc4 encoder blocks at reduction 2, 4, 8
bottleneck the deepest feature map (reduction 16 for a depth-4 U-Net)
dec4..dec2 decoder blocks at reduction 8, 4, 2
dec1       the last decoder block, at full resolution (before the 1x1 head)
========== =============================================================

A model declares only the names it has (MONAI's ``UNet`` downsamples in its first block, so it has no
``enc1``). :class:`FeatureTap` works on any ``nn.Module`` given module paths, so third-party networks can be
tapped without a declared map.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from torch import Tensor, nn

from fdseg._names import CANONICAL_LAYERS

__all__ = [
    "CANONICAL_LAYERS",
    "FeatureInfo",
    "FeatureTap",
    "canonical_name",
    "parse_layer_path",
    "resolve_layers",
    "unwrap_model",
]


_PATH_RE = re.compile(r"^(?P<path>[^\[\]]*)(?P<indices>(?:\[-?\d+\])*)$")


@dataclass(frozen=True)
class FeatureInfo:
    """What a model's named feature map looks like, known without a forward pass.

    Attributes:
        name: canonical tap name, e.g. ``"enc1"`` or ``"bottleneck"``.
        channels: number of channels C of the (B, C, h, w) feature map.
        reduction: input H // feature h (1 = full resolution).
    """

    name: str
    channels: int
    reduction: int


def canonical_name(part: str, reduction: int, bottleneck_reduction: int) -> str | None:
    """The canonical name of an encoder or decoder map at ``reduction``, or None when it has none.

    Names describe resolution: ``enc{k}``/``dec{k}`` sit at reduction ``2**(k-1)`` for k = 1..4. A map at
    or below the bottleneck's resolution, or at a reduction that is not a power of two, has no name.

    Args:
        part: ``"enc"`` or ``"dec"``.
        reduction: input H // feature h of the map.
        bottleneck_reduction: the reduction of the network's deepest map.

    Raises:
        ValueError: ``part`` is neither ``"enc"`` nor ``"dec"``.

    Example:
        >>> canonical_name("enc", 8, 16), canonical_name("enc", 16, 32), canonical_name("dec", 1, 16)
        ('enc4', None, 'dec1')
    """
    if part not in ("enc", "dec"):
        raise ValueError(f"part must be 'enc' or 'dec', got {part!r}")
    level = reduction.bit_length()  # 1 -> 1, 2 -> 2, 4 -> 3, 8 -> 4
    if reduction < 1 or reduction >= bottleneck_reduction or reduction != 1 << (level - 1) or level > 4:
        return None
    return f"{part}{level}"


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP/``DataParallel`` (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers.

    Args:
        model: any module, possibly wrapped several times.

    Returns:
        The innermost user module, whose submodule paths match ``feature_layers``.
    """
    seen: set[int] = set()
    while id(model) not in seen:
        seen.add(id(model))
        orig = model.__dict__.get("_modules", {}).get("_orig_mod")
        if isinstance(orig, nn.Module):
            model = orig
            continue
        if isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
            model = model.module
    return model


def parse_layer_path(spec: str) -> tuple[str, tuple[int, ...]]:
    """Split ``"encoder[2]"`` into the module path ``"encoder"`` and the output indices ``(2,)``.

    Args:
        spec: a dotted module path (as in ``model.named_modules()``), optionally followed by one or more
            ``[i]`` selectors that pick an item of a module returning a tuple or list.

    Returns:
        ``(module_path, indices)``.

    Raises:
        TypeError: ``spec`` is not a string.
        ValueError: malformed selector, e.g. ``"encoder[a]"`` or ``"enc[1"``.
    """
    if not isinstance(spec, str):
        raise TypeError(f"layer path must be a str, got {type(spec).__name__} ({spec!r})")
    match = _PATH_RE.match(spec)
    if match is None:
        raise ValueError(
            f"malformed layer path {spec!r}: expected 'a.b.c' optionally followed by integer selectors "
            "like 'encoder[2]'"
        )
    indices = tuple(int(i) for i in re.findall(r"\[(-?\d+)\]", match["indices"]))
    return match["path"], indices


def resolve_layers(model: nn.Module, layers: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    """Turn a layer selection into ``{name: module path}``.

    Args:
        model: the (possibly DDP- or compile-wrapped) model.
        layers: either a mapping ``name -> module path`` (used as given), or a sequence whose items are
            canonical names declared in ``model.feature_layers`` or raw module paths (then the path is also
            the name).

    Returns:
        Ordered ``{name: module path}``; module paths may carry ``[i]`` selectors.

    Raises:
        TypeError: ``layers`` is a bare string or not a mapping/sequence of strings.
        ValueError: a canonical name the model does not declare (the message lists the names it has),
            a canonical name on a model without ``feature_layers``, an empty selection or a duplicate.
        KeyError: a module path that does not exist (see :class:`FeatureTap`).
    """
    inner = unwrap_model(model)
    if isinstance(layers, str):
        raise TypeError(
            f"layers must be a sequence or mapping of names, not the string {layers!r}; use [{layers!r}]"
        )
    declared: Mapping[str, str] | None = getattr(inner, "feature_layers", None)
    resolved: dict[str, str] = {}
    if isinstance(layers, Mapping):
        items = [(str(name), path) for name, path in layers.items()]
    elif isinstance(layers, Sequence):
        items = []
        for entry in layers:
            if not isinstance(entry, str):
                raise TypeError(f"layer names must be strings, got {type(entry).__name__} ({entry!r})")
            if declared is not None and entry in declared:
                items.append((entry, declared[entry]))
            elif entry in CANONICAL_LAYERS:
                if declared is None:
                    raise ValueError(
                        f"{type(inner).__name__} declares no feature_layers, so the canonical name {entry!r} "
                        "cannot be resolved; pass module paths instead, e.g. {'enc1': 'encoder.layer1'}"
                    )
                raise ValueError(
                    f"{type(inner).__name__} has no feature layer {entry!r}; it declares {list(declared)}"
                )
            else:
                items.append((entry, entry))
    else:
        raise TypeError(f"layers must be a mapping or a sequence of strings, got {type(layers).__name__}")
    if not items:
        raise ValueError("layers is empty: name at least one feature layer")
    for name, path in items:
        if name in resolved:
            raise ValueError(f"layer {name!r} is listed twice")
        _find_module(inner, name, path)
        resolved[name] = path
    return resolved


def _find_module(root: nn.Module, name: str, spec: str) -> tuple[nn.Module, tuple[int, ...]]:
    """The submodule addressed by ``spec`` and its output selectors; ``KeyError`` with close matches."""
    path, indices = parse_layer_path(spec)
    try:
        module = root.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in root.named_modules() if n]
        close = difflib.get_close_matches(path, names, n=3, cutoff=0.5)
        hint = (
            f"; closest: {close}" if close else f"; top-level modules: {[n for n in names if '.' not in n]}"
        )
        raise KeyError(f"layer {name!r}: {type(root).__name__} has no module {path!r}{hint}") from None
    return module, indices


def _select(output: Any, indices: tuple[int, ...], name: str, spec: str) -> Tensor:
    """Apply ``[i]`` selectors to a module output and check that a tensor results."""
    value = output
    for depth, index in enumerate(indices):
        if not isinstance(value, list | tuple):
            raise TypeError(
                f"layer {name!r} ({spec!r}): selector #{depth + 1} [{index}] applied to a "
                f"{type(value).__name__}, which is not a tuple or list"
            )
        if not -len(value) <= index < len(value):
            raise IndexError(
                f"layer {name!r} ({spec!r}): index {index} out of range for an output of {len(value)} items"
            )
        value = value[index]
    if not isinstance(value, Tensor):
        kind = type(value).__name__
        extra = (
            f" of {len(value)} items; add an index selector like '{spec}[0]'"
            if isinstance(value, list | tuple)
            else ""
        )
        raise TypeError(f"layer {name!r} ({spec!r}) produced a {kind}{extra}, expected a Tensor")
    return value


class FeatureTap:
    """Record named intermediate features of any ``nn.Module`` during its forward pass.

    Forward hooks are registered on entry and removed on exit (also when the body raises). The yielded
    dict is cleared at the start of every forward pass of ``model`` (a forward pre-hook on the model), so
    it holds the features of the latest pass only and no tensor outlives the next step. After each pass
    it is ordered like ``layers``. The features keep their autograd graph: a loss computed from them
    backpropagates into the model.

    If a tapped module runs several times in one pass (a shared module, or recomputation under
    activation checkpointing), the last output wins. ``nn.DataParallel`` on several GPUs runs replicas in
    threads that would overwrite each other's entries: use ``DistributedDataParallel`` (one process per GPU).

    Args:
        model: the network; ``DistributedDataParallel``/``DataParallel`` and ``torch.compile`` wrappers
            are unwrapped to find module paths.
        layers: canonical names declared in ``model.feature_layers`` (e.g. ``["enc1", "bottleneck"]``),
            raw module paths (``["encoder.layer2", "encoder[3]"]``) or a mapping name -> module path. A
            path may end in ``[i]`` selectors for modules returning tuples or lists.
        strict: raise ``RuntimeError`` at the end of a forward pass in which a tapped module did not run.

    Yields:
        ``dict[str, Tensor]``: name -> (B, C, h, w) feature map, same dtype and device as the model's
        activations.

    Raises:
        KeyError: unknown module path (the message lists the closest existing paths).
        ValueError: canonical name the model does not declare (the message lists the declared names).
        TypeError: ``layers`` is malformed; at forward time, a tapped output is not a tensor (use a
            selector).

    Example:
        >>> import torch
        >>> from fdseg.models import FeatureTap, create_model
        >>> model = create_model("unet", base_width=4)
        >>> with FeatureTap(model, ["enc1", "bottleneck"]) as feats:
        ...     logits = model(torch.zeros(1, 3, 32, 32))
        >>> {k: tuple(v.shape) for k, v in feats.items()}
        {'enc1': (1, 4, 32, 32), 'bottleneck': (1, 64, 2, 2)}
    """

    def __init__(
        self, model: nn.Module, layers: Mapping[str, str] | Sequence[str], *, strict: bool = True
    ) -> None:
        self.model = unwrap_model(model)
        self.layers = resolve_layers(self.model, layers)
        self.strict = strict
        self.features: dict[str, Tensor] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> dict[str, Tensor]:
        if self._handles:
            raise RuntimeError("FeatureTap is already active; exit it before entering again")
        self.features.clear()
        try:
            for name, spec in self.layers.items():
                module, indices = _find_module(self.model, name, spec)
                self._handles.append(module.register_forward_hook(self._make_hook(name, spec, indices)))
            self._handles.append(self.model.register_forward_pre_hook(self._start_pass))
            self._handles.append(self.model.register_forward_hook(self._end_pass))
        except BaseException:
            self._remove()
            raise
        return self.features

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _start_pass(self, module: nn.Module, args: Any) -> None:
        self.features.clear()

    def _end_pass(self, module: nn.Module, args: Any, output: Any) -> None:
        missing = [name for name in self.layers if name not in self.features]
        if missing and self.strict:
            raise RuntimeError(
                f"FeatureTap: tapped modules did not run in this forward pass: "
                f"{ {name: self.layers[name] for name in missing} }; pass strict=False to allow this"
            )
        ordered = {name: self.features[name] for name in self.layers if name in self.features}
        self.features.clear()
        self.features.update(ordered)

    def _make_hook(self, name: str, spec: str, indices: tuple[int, ...]) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.features[name] = _select(output, indices, name, spec)

        return hook
