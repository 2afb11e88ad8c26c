"""Modules of the layer-wise feature discrepancy loss L_fd and its exchangeable variant L_fd^exch.

A loss receives ``features: dict[str, Tensor]`` (canonical tap name -> (B, C, h, w)) and the full-resolution
mask, never a model. ``total = sum_l w_l * L_l`` where ``w_l`` is the layer's weight (λ_l, default 1); the λ
schedules live in :mod:`fdseg.losses.weights` and reach the loss through :meth:`set_layer_weights` or the
``weights=`` argument of ``forward``. Every module returns :class:`LossOutput` so that each layer's value is
logged.

Example:
    >>> import torch
    >>> loss = FeatureDiscrepancyLoss(layers=["enc1", "bottleneck"])          # preset="paper"
    >>> feats = {"enc1": torch.rand(2, 4, 16, 16), "bottleneck": torch.rand(2, 8, 2, 2)}
    >>> mask = torch.zeros(2, 1, 16, 16); mask[:, :, 4:12, 4:12] = 1.0
    >>> out = loss(feats, mask)
    >>> sorted(out.terms)
    ['fd/bottleneck', 'fd/enc1']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from types import MappingProxyType
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from fdseg._checks import check_keys, check_layer_names, check_option, check_shape
from fdseg.losses.functional import (
    FdOptions,
    Pairing,
    _check_mask,
    _check_pair,
    _exchange_from_gaps,
    _exchange_pairs,
    _fd_from_gaps,
    _Gaps,
    _gaps,
    _resize_mask,
    check_pairing_options,
    options_from_kwargs,
)


class _Exchange(NamedTuple):
    """The pairs of one call of an exchangeable loss (``(P, 2)`` anchor/partner rows) and whether they are
    cross-source pairs (both directions)."""

    pairs: Tensor
    cross: bool


class LossOutput(NamedTuple):
    """What every fdseg loss module returns.

    Attributes:
        total: () float, differentiable; what the optimiser minimises.
        terms: named detached () tensors for logging, e.g. ``"fd/enc1"``, ``"fd_exch/enc1"``.
    """

    total: Tensor
    terms: dict[str, Tensor]


def _preset(**values: Any) -> Mapping[str, Any]:
    return MappingProxyType(asdict(FdOptions(**values)))


#: Named option sets of method-spec §A5 (read-only). Explicit keyword arguments override a preset's values.
PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        # The sound reading: region means, channel-averaged squared gap, per image, eps 1e-6, binary max-pool.
        "paper": _preset(),
        # Algorithm 1 / Eq. 1: the squared L2 norm over channels instead of its channel mean.
        "paper_alg1": _preset(channel="sum_sq_in_log"),
        # The released code exactly: swapped roles, ÷HW, mean over channels of -log, L2 over the batch, plain
        # norm, soft max-pooled masks; eps 1e-12 instead of 0 so that an empty batch is not +inf.
        "code_exact": _preset(
            roles="code_swapped",
            spatial="image_mean",
            channel="mean_of_log",
            batch="batch_l2",
            power=1,
            eps=1e-12,
            mask_resize="maxpool",
            binarize_mask=False,
        ),
    }
)


def resolve_options(preset: str = "paper", **overrides: Any) -> FdOptions:
    """The options of ``preset`` with ``overrides`` applied.

    Raises:
        ValueError: unknown preset or option name (the message lists the valid ones), or a bad value.
    """
    check_option("preset", preset, list(PRESETS))
    return options_from_kwargs({**PRESETS[preset], **overrides})


class FeatureDiscrepancyLoss(nn.Module):
    """Layer-wise L_fd: ``total = sum_l w_l * L_fd^l`` (design.md §3, method-spec §A5).

    Args:
        layers: tap names to use, e.g. ``["enc1", ..., "dec1"]``; each must be a key of ``features``.
        preset: ``"paper"`` (default, the sound reading), ``"paper_alg1"`` or ``"code_exact"``
            (:data:`PRESETS`).
        layer_weights: per-layer weights λ_l (>= 0); layers not named keep weight 1.
        check_mask: check on every call that the mask lies in [0, 1] (one device sync per call on a GPU; a
            trainer whose data layer already guarantees binary masks may switch it off).
        **options: any :class:`~fdseg.losses.functional.FdOptions` field, overriding the preset
            (``roles``, ``spatial``, ``channel``, ``batch``, ``power``, ``eps``, ``mask_resize``,
            ``binarize_mask``, ``lfd_floor``).

    A layer whose weight is 0 is still computed, without autograd, so that its value is logged.

    Raises:
        ValueError: empty or duplicate ``layers``, unknown preset / option / weight key, negative weight.
    """

    def __init__(
        self,
        layers: Sequence[str],
        preset: str = "paper",
        layer_weights: Mapping[str, float] | None = None,
        *,
        check_mask: bool = True,
        **options: Any,
    ) -> None:
        super().__init__()
        self.layers = check_layer_names(layers)
        self.check_mask = check_mask
        self.preset = preset
        self.options = resolve_options(preset, **options)
        self.layer_weights: dict[str, float] = dict.fromkeys(self.layers, 1.0)
        if layer_weights is not None:
            self.set_layer_weights(layer_weights)

    def extra_repr(self) -> str:
        return f"layers={list(self.layers)}, preset={self.preset!r}, options={self.options}"

    def set_layer_weights(self, weights: Mapping[str, float]) -> None:
        """Set λ_l for the named layers (the others keep their current weight).

        Args:
            weights: tap name -> finite float >= 0, e.g. ``strategy.lambdas(epoch)``.

        Raises:
            ValueError: a name that is not one of ``layers``, or a negative / non-finite weight.
        """
        self.layer_weights.update(self._check_weights(weights))

    def _check_weights(self, weights: Mapping[str, float]) -> dict[str, float]:
        check_keys("layer weight", weights, self.layers)
        checked: dict[str, float] = {}
        for name, value in weights.items():
            w = float(value)
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"layer weight {name!r} must be a finite float >= 0, got {value!r}")
            checked[name] = w
        return checked

    def _weights_for_call(self, weights: Mapping[str, float] | None) -> dict[str, float]:
        if weights is None:
            return dict(self.layer_weights)
        return {**self.layer_weights, **self._check_weights(weights)}

    def _check_inputs(self, features: Mapping[str, Tensor], mask: Tensor) -> dict[str, tuple[int, int]]:
        """Cheap checks of every input before any computation; returns each layer's spatial size."""
        if not isinstance(features, Mapping):
            raise TypeError(
                f"features must be a dict tap name -> (B, C, h, w) tensor, got {type(features).__name__}"
            )
        missing = [name for name in self.layers if name not in features]
        if missing:
            raise ValueError(
                f"features lack the layers {missing}; they have {sorted(features)}. Tap them (FeatureTap "
                "with the model's feature_layers) or choose layers among the available names"
            )
        if self.check_mask:
            _check_mask(mask)
        else:
            check_shape(mask, "B K H W", name="mask")
        return {name: _check_pair(features[name], mask, f"features[{name!r}]") for name in self.layers}

    def _layer_gaps(
        self, features: Tensor, mask: Tensor, size: tuple[int, int], masks: dict[Any, Tensor]
    ) -> _Gaps:
        """Prototype gaps of one layer; ``masks`` caches the resized mask per spatial size within one call."""
        if size not in masks:
            if "full" not in masks:  # binarise once at full resolution (it commutes with every resize mode)
                full_size = (int(mask.shape[-2]), int(mask.shape[-1]))
                masks["full"] = _resize_mask(mask, full_size, "nearest", self.options.binarize_mask)
            masks[size] = _resize_mask(masks["full"], size, self.options.mask_resize, False)
        return _gaps(features, masks[size], self.options.roles, self.options.spatial)

    def forward(
        self,
        features: Mapping[str, Tensor],
        mask: Tensor,
        source: Tensor | None = None,
        *,
        weights: Mapping[str, float] | None = None,
    ) -> LossOutput:
        """Compute ``sum_l w_l * L_fd^l``.

        Args:
            features: tap name -> (B, C, h, w) float (extra names are ignored).
            mask: (B, K, H, W) float or bool in [0, 1], with every tapped (h, w) at most (H, W).
            source: (B,) source ids; unused by plain L_fd (accepted so that both losses share a signature).
            weights: per-call λ_l overriding the module's weights for this call only.

        Returns:
            :class:`LossOutput` with ``terms["fd/<layer>"]`` for every layer.

        Raises:
            ValueError: a layer missing from ``features`` (the message lists the names it has), bad shapes or
                mask values, unknown or negative weights.
        """
        return self._sum_layers(features, *self._prepare(features, mask, weights))

    def _target(self, mask: Tensor) -> Tensor:
        """The mask the layers are measured against (the per-class losses turn class maps into channels)."""
        return mask

    def _prepare(
        self, features: Mapping[str, Tensor], mask: Tensor, weights: Mapping[str, float] | None
    ) -> tuple[Tensor, dict[str, tuple[int, int]], dict[str, float]]:
        """Every check of a call, before any computation: ``(target mask, layer sizes, layer weights)``."""
        target = self._target(mask)
        return target, self._check_inputs(features, target), self._weights_for_call(weights)

    def _layer_terms(
        self, name: str, gaps: _Gaps, exchange: _Exchange | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """One layer's differentiable value (L_fd^l, plus L_fd,exch^l with ``exchange``) and logged terms."""
        fd = _fd_from_gaps(gaps, self.options)
        if exchange is None:
            return fd.value, {f"fd/{name}": fd.value.detach()}
        _, _, exch = _exchange_from_gaps(gaps, exchange.pairs, exchange.cross, self.options)
        return fd.value + exch, {f"fd/{name}": fd.value.detach(), f"fd_exch/{name}": exch.detach()}

    def _sum_layers(
        self,
        features: Mapping[str, Tensor],
        mask: Tensor,
        sizes: dict[str, tuple[int, int]],
        layer_weights: dict[str, float],
        exchange: _Exchange | None = None,
    ) -> LossOutput:
        """``sum_l w_l * value_l`` over :meth:`_layer_terms` (a layer of weight 0 without autograd)."""
        masks: dict[Any, Tensor] = {}
        total = mask.new_zeros((), dtype=torch.float32)
        terms: dict[str, Tensor] = {}
        for name in self.layers:
            w = layer_weights[name]
            with torch.set_grad_enabled(torch.is_grad_enabled() and w != 0):
                gaps = self._layer_gaps(features[name], mask, sizes[name], masks)
                value, layer_terms = self._layer_terms(name, gaps, exchange)
            terms.update(layer_terms)
            if w != 0:
                total = total + w * value
        return LossOutput(total, terms)

    def _per_image_values(
        self, features: Mapping[str, Tensor], mask: Tensor, term: Callable[[_Gaps, FdOptions], Any]
    ) -> dict[str, Tensor]:
        """``term(gaps, options)``'s ``per_image`` of every layer, NaN where not ``valid``, as float32."""
        sizes = self._check_inputs(features, mask)
        masks: dict[Any, Tensor] = {}
        out: dict[str, Tensor] = {}
        for name in self.layers:
            value = term(self._layer_gaps(features[name], mask, sizes[name], masks), self.options)
            out[name] = torch.where(value.valid, value.per_image, torch.nan).float()
        return out

    @torch.no_grad()
    def per_image(self, features: Mapping[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
        """Per-image L_fd of every layer, for per-sample tables and plots.

        Args:
            features: tap name -> (B, C, h, w) float.
            mask: (B, K, H, W) float or bool in [0, 1].

        Returns:
            tap name -> (B,) float32, NaN where the image has no foreground or no background at that layer.
            With ``batch="batch_l2"`` each value is the image's value as a batch of one.
        """
        return self._per_image_values(features, mask, _fd_from_gaps)


class ExchangeableFeatureDiscrepancyLoss(FeatureDiscrepancyLoss):
    """L_fd plus the exchangeable term: ``total = sum_l w_l * (L_fd^l + L_fd,exch^l)`` (method-spec §B "Use").

    The pairs are drawn once per call and shared by all layers
    (:func:`~fdseg.losses.functional.exchange_pairs`).

    Randomness: ``pairing="shuffle"`` draws its permutation only from a ``torch.Generator``: the one passed to
    ``forward(generator=...)`` if any, else the module's own (``generator`` at construction, or a private CPU
    generator seeded with ``seed``). The global RNG is never used; the module's generator state is saved in
    ``state_dict`` (extra state) so that a resumed run draws the same pairs.

    Args:
        layers, preset, layer_weights, check_mask, **options: as :class:`FeatureDiscrepancyLoss`.
        pairing: ``"shift"`` (default, Algorithm 1), ``"shuffle"`` (README) or ``"cross_source"``
            (Definition 2; needs ``source`` in ``forward``; falls back to ``"shift"`` for a single-source
            batch and then logs ``terms["fd_exch_fallback"] = 1``).
        shift: k >= 1 of the shift pairing.
        independent_permutations: the README's two independent shuffles (``pairing="shuffle"`` only).
        generator: the generator of ``"shuffle"``.
        seed: seeds the private generator when ``pairing="shuffle"`` and no ``generator`` is given.

    Raises:
        ValueError: as :class:`FeatureDiscrepancyLoss`; unknown pairing; bad shift.
    """

    def __init__(
        self,
        layers: Sequence[str],
        preset: str = "paper",
        layer_weights: Mapping[str, float] | None = None,
        *,
        pairing: Pairing = "shift",
        shift: int = 1,
        independent_permutations: bool = False,
        generator: torch.Generator | None = None,
        seed: int = 0,
        check_mask: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(layers, preset, layer_weights, check_mask=check_mask, **options)
        check_pairing_options(pairing, shift, independent_permutations)
        self.pairing = pairing
        self.shift = shift
        self.independent_permutations = independent_permutations
        if generator is None and pairing == "shuffle":
            generator = torch.Generator().manual_seed(seed)
        self.generator = generator

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pairing={self.pairing!r}, shift={self.shift}"

    def get_extra_state(self) -> dict[str, Any]:
        state = None if self.generator is None else self.generator.get_state()
        return {"generator_state": state}

    def set_extra_state(self, state: Any) -> None:
        gen_state = state.get("generator_state") if isinstance(state, Mapping) else None
        if gen_state is not None:
            if self.generator is None:
                self.generator = torch.Generator()
            self.generator.set_state(gen_state)

    def forward(
        self,
        features: Mapping[str, Tensor],
        mask: Tensor,
        source: Tensor | None = None,
        *,
        weights: Mapping[str, float] | None = None,
        generator: torch.Generator | None = None,
    ) -> LossOutput:
        """Compute ``sum_l w_l * (L_fd^l + L_fd,exch^l)``.

        Args:
            features: tap name -> (B, C, h, w) float.
            mask: (B, K, H, W) float or bool in [0, 1].
            source: (B,) integer source ids; required for ``pairing="cross_source"``.
            weights: per-call λ_l overriding the module's weights for this call.
            generator: overrides the module's generator for this call (``"shuffle"``).

        Returns:
            :class:`LossOutput` with ``"fd/<layer>"`` and ``"fd_exch/<layer>"`` for every layer, plus
            ``"fd_exch_fallback"`` (0 or 1) when ``pairing="cross_source"``.

        Raises:
            ValueError: as :meth:`FeatureDiscrepancyLoss.forward`; ``source`` missing for ``cross_source``.
        """
        target, sizes, layer_weights = self._prepare(features, mask, weights)
        pairs, used = _exchange_pairs(
            target.shape[0],
            self.pairing,
            self.shift,
            source,
            generator if generator is not None else self.generator,
            self.independent_permutations,
        )
        exchange = _Exchange(pairs, used == "cross_source")
        out = self._sum_layers(features, target, sizes, layer_weights, exchange)
        if self.pairing == "cross_source":
            out.terms["fd_exch_fallback"] = torch.tensor(float(used != self.pairing), device=out.total.device)
        return out
