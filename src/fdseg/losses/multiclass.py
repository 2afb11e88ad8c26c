"""Multi-class segmentation: class masks, per-class L_fd / L_fd^exch and the losses of the two heads.

Masks of a multi-class task come in two forms, both accepted everywhere here (:func:`class_masks`):

* a class-index map ``(B, 1, H, W)`` of an integer dtype, 0 = background, 1..K = the foreground classes;
* one-hot foreground channels ``(B, K, H, W)`` in {0, 1} whose channels sum to at most 1 at every pixel
  (0 everywhere = background); ``(B, K + 1, H, W)`` with the background first is accepted too.

**Per-class L_fd** (method-spec §F7, Appendix L). For a tapped layer ``l`` and a foreground class ``c`` the
class mask ``y_c`` plays the role of the binary mask of §A5: the prototypes ``mu_fg`` (mean feature under
``y_c``) and ``mu_bg`` (mean feature under ``1 - y_c``) of each image give ``L_fd(F_l, y_c)``. An image
contributes to class ``c`` only when ``y_c`` has a foreground and a background cell at the layer's
resolution; otherwise it contributes nothing for that class (no NaN, no gradient). Reductions:

* class value ``L^l_c`` = mean over the images of the batch where ``c`` is present (``batch="per_image"``);
* layer value ``L^l`` = mean of ``L^l_c`` over the classes present in the batch (0 when none is), so a rare
  class weighs as much as a frequent one.

The classes share the backbone features; only the mask changes. ``L_fd^exch`` is computed the same way per
class, with the pairs of :func:`~fdseg.losses.functional.exchange_pairs` shared by all classes and layers.
Terms are logged as ``fd/<layer>`` and ``fd/<layer>/<class>`` (``fd_exch/...`` likewise; a ``/`` in a class
name becomes ``-``); a class absent from the batch has no ``fd/<layer>/<class>`` entry for that batch.

**Heads** (``model.head``): ``binary_per_class`` (K sigmoid outputs, one per foreground class against a
shared background; L_seg is the binary loss on the one-hot channels) and ``softmax`` (K + 1 logits with the
background first; L_seg is MONAI ``DiceCELoss`` with softmax, cross-entropy + multi-class soft Dice).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from fdseg._checks import check_int, check_shape
from fdseg._names import MULTICLASS_HEADS
from fdseg.losses.discrepancy import (
    ExchangeableFeatureDiscrepancyLoss,
    FeatureDiscrepancyLoss,
    _Exchange,
)
from fdseg.losses.functional import (
    FdOptions,
    _check_pair,
    _class_values,
    _Gaps,
    _gaps,
    _neg_log,
    _resize_mask,
    _squared_gap,
    options_from_kwargs,
)

#: The two multi-class heads.
HEADS: tuple[str, ...] = MULTICLASS_HEADS


def _check_num_classes(num_classes: int) -> int:
    return check_int("num_classes (foreground classes)", num_classes)


def class_masks(mask: Tensor, num_classes: int, *, name: str = "mask") -> Tensor:
    """One float channel per foreground class, from a class-index map or one-hot channels.

    Args:
        mask: ``(B, 1, H, W)`` integer class indices in ``0..num_classes`` (0 = background), or
            ``(B, K, H, W)`` / ``(B, K + 1, H, W)`` one-hot in {0, 1} (float, int or bool) with channel sums
            <= 1 (== 1 with the background channel). A ``(B, 1, H, W)`` float mask with ``K = 1`` is read as
            the binary foreground.
        num_classes: K, the number of foreground classes.
        name: how errors call the mask (e.g. the file or batch it came from).

    Returns:
        ``(B, K, H, W)`` float32 in {0, 1}, channel ``c - 1`` = class ``c``.

    Raises:
        ValueError: a class index outside ``0..K`` (the message gives the offending value), one-hot channels
            that are not binary or that sum to more than 1 at a pixel, or a channel count that is neither 1,
            K nor K + 1.
    """
    k = _check_num_classes(num_classes)
    check_shape(mask, "B K H W", name=name)
    channels = mask.shape[1]
    is_index = channels == 1 and not mask.is_floating_point() and mask.dtype != torch.bool
    if is_index:
        lo, hi = int(mask.min()), int(mask.max())
        if lo < 0 or hi > k:
            bad = hi if hi > k else lo
            raise ValueError(
                f"{name}: class index {bad} is outside 0..{k} (0 = background, {k} foreground classes); "
                f"the data has more classes than the model (check model.out_channels and the dataset's "
                "classes= option)"
            )
        index = mask[:, 0].long()
        onehot = torch.zeros(mask.shape[0], k + 1, *mask.shape[2:], dtype=torch.float32, device=mask.device)
        onehot.scatter_(1, index.unsqueeze(1), 1.0)
        return onehot[:, 1:]
    if channels not in (k, k + 1):
        raise ValueError(
            f"{name}: {channels} channels for {k} foreground classes; expected a (B, 1, H, W) integer "
            f"class map or one-hot (B, {k}, H, W) / (B, {k + 1}, H, W) channels"
        )
    values = mask.float()
    if not bool(((values == 0) | (values == 1)).all()):
        examples = values[(values != 0) & (values != 1)].flatten()[:3].tolist()
        raise ValueError(f"{name}: one-hot channels must be 0 or 1, found e.g. {examples}")
    total = values.sum(1)
    if bool((total > 1).any()):
        raise ValueError(
            f"{name}: one-hot channels sum to {int(total.max())} at some pixel; each pixel belongs to at "
            "most one class (use an integer class map for overlapping labels resolved by priority)"
        )
    if channels == k + 1:  # background channel first
        if bool((total != 1).any()):
            raise ValueError(f"{name}: one-hot channels with a background channel must sum to 1 everywhere")
        return values[:, 1:]
    return values


def class_index_map(mask: Tensor, num_classes: int, *, name: str = "mask") -> Tensor:
    """``(B, 1, H, W)`` int64 class indices (0 = background) from either mask form (see :func:`class_masks`).

    Raises:
        ValueError: as :func:`class_masks`.
    """
    onehot = class_masks(mask, num_classes, name=name)
    background = (onehot.sum(1, keepdim=True) == 0).float()
    return torch.cat([background, onehot], 1).argmax(1, keepdim=True)


# -- per-class L_fd ----------------------------------------------------------------------------------------


class PerClassFdTerm(NamedTuple):
    """Per-class L_fd of one layer.

    Attributes:
        class_value: (K,) float, differentiable; ``L^l_c`` (mean over the images where class c is present;
            0 where it is absent from the whole batch).
        class_valid: (K,) bool; class c is present (with a background) in at least one image.
        value: () float, differentiable; mean of ``class_value`` over the valid classes (0 if none).
        per_image: (B, K) float; each image's value per class, 0 where the class is absent from the image.
        valid: (B, K) bool; class present in the image (foreground and background cells at this layer).
    """

    class_value: Tensor
    class_valid: Tensor
    value: Tensor
    per_image: Tensor
    valid: Tensor


def _per_class_from_gaps(gaps: _Gaps, opts: FdOptions) -> PerClassFdTerm:
    sq = _squared_gap(gaps.fg, gaps.bg, opts.channel)  # (B, K, C')
    valid = gaps.fg_ok & gaps.bg_ok
    per = torch.where(valid, _neg_log(sq, valid, opts), 0.0)
    class_value, class_valid = _class_values(sq, valid, per, opts)
    value = class_value.sum() / class_valid.sum().clamp_min(1)
    return PerClassFdTerm(class_value, class_valid, value, per, valid)


def _per_class_exchange(
    gaps: _Gaps, pairs: Tensor, cross: bool, opts: FdOptions
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class L_fd^exch: ``(class_value (K,), class_valid (K,), value ())``."""
    index = pairs.to(gaps.fg.device)
    anchor, partner = index[:, 0], index[:, 1]
    sq = _squared_gap(gaps.fg[anchor], gaps.bg[partner], opts.channel)
    valid = gaps.fg_ok[anchor] & gaps.bg_ok[partner]
    if cross:
        sq = sq + _squared_gap(gaps.fg[partner], gaps.bg[anchor], opts.channel)
        valid = valid & gaps.fg_ok[partner] & gaps.bg_ok[anchor]
    class_value, class_valid = _class_values(sq, valid, None, opts)
    return class_value, class_valid, class_value.sum() / class_valid.sum().clamp_min(1)


def per_class_fd_term(features: Tensor, mask: Tensor, num_classes: int, **options: Any) -> PerClassFdTerm:
    """Per-class L_fd of one tapped layer (method-spec §F7 with the §A5 options).

    Args:
        features: (B, C, h, w) float.
        mask: a class-index map ``(B, 1, H, W)`` int or one-hot ``(B, K, H, W)`` (see :func:`class_masks`),
            with ``H >= h`` and ``W >= w``.
        num_classes: K foreground classes.
        **options: the :func:`~fdseg.losses.functional.fd_term` options (``roles``, ``spatial``, ...).

    Returns:
        :class:`PerClassFdTerm`; the value is 0 (not NaN) when no class is present anywhere.

    Raises:
        ValueError: bad mask (see :func:`class_masks`), shapes or option values.

    Example:
        >>> f = torch.zeros(1, 1, 2, 2); f[0, 0, 0, 0] = 1.0
        >>> m = torch.zeros(1, 1, 2, 2, dtype=torch.long); m[0, 0, 0, 0] = 2
        >>> t = per_class_fd_term(f, m, 3)
        >>> t.class_valid.tolist(), round(float(t.value), 4)       # only class 2 present; -log(1 + 1e-6)
        ([False, True, False], -0.0)
    """
    opts = options_from_kwargs(options)
    onehot = class_masks(mask, num_classes)
    size = _check_pair(features, onehot, "features")
    mask_l = _resize_mask(onehot, size, opts.mask_resize, opts.binarize_mask)
    return _per_class_from_gaps(_gaps(features, mask_l, opts.roles, opts.spatial), opts)


def _check_class_names(class_names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(class_names, str):
        raise TypeError(f"class_names must be a sequence of names, got the string {class_names!r}")
    names = tuple(str(n) for n in class_names)
    if not names:
        raise ValueError("class_names must name at least one foreground class")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names has duplicates: {list(names)}")
    if not all(names):
        raise ValueError(f"class names must be non-empty: {list(names)}")
    return names


def term_name(class_name: str) -> str:
    """The class name as used in term keys ``fd/<layer>/<class>``: ``/`` becomes ``-``."""
    return class_name.replace("/", "-")


class _PerClassMixin:
    """What makes a loss of :mod:`fdseg.losses.discrepancy` per-class: the target is one channel per class,
    and a layer's value is the mean over the present classes, with a term per class."""

    class_names: tuple[str, ...]
    layers: tuple[str, ...]
    options: FdOptions

    def _target(self, mask: Tensor) -> Tensor:
        return class_masks(mask, len(self.class_names))

    def _layer_terms(
        self, name: str, gaps: _Gaps, exchange: _Exchange | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        fd = _per_class_from_gaps(gaps, self.options)
        terms = {f"fd/{name}": fd.value.detach()}
        class_terms = self._class_terms("fd", name, fd.class_value, fd.class_valid)
        if exchange is None:
            return fd.value, {**terms, **class_terms}
        ex_values, ex_valid, exch = _per_class_exchange(gaps, exchange.pairs, exchange.cross, self.options)
        terms[f"fd_exch/{name}"] = exch.detach()
        class_terms.update(self._class_terms("fd_exch", name, ex_values, ex_valid))
        return fd.value + exch, {**terms, **class_terms}

    def _class_terms(self, prefix: str, layer: str, values: Tensor, valid: Tensor) -> dict[str, Tensor]:
        present = valid.tolist()
        return {
            f"{prefix}/{layer}/{term_name(name)}": values[i].detach()
            for i, name in enumerate(self.class_names)
            if present[i]
        }


class PerClassFeatureDiscrepancyLoss(_PerClassMixin, FeatureDiscrepancyLoss):
    """Layer-wise per-class L_fd: ``total = sum_l w_l * L^l`` with ``L^l`` the mean over present classes.

    Args:
        layers: tap names.
        class_names: the K foreground class names (terms ``fd/<layer>/<class>``).
        preset, layer_weights, check_mask, **options: as :class:`FeatureDiscrepancyLoss`.

    ``forward(features, mask, source=None, *, weights=None)`` takes either mask form of :func:`class_masks`
    (a class index > K or one-hot channels summing to more than 1 raise ``ValueError``) and returns
    ``terms["fd/<layer>"]`` and ``terms["fd/<layer>/<class>"]`` for the classes present in the batch.

    Raises:
        ValueError: as :class:`FeatureDiscrepancyLoss`; empty or duplicate class names.
    """

    def __init__(
        self,
        layers: Sequence[str],
        class_names: Sequence[str],
        preset: str = "paper",
        layer_weights: Mapping[str, float] | None = None,
        *,
        check_mask: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(layers, preset, layer_weights, check_mask=check_mask, **options)
        self.class_names = _check_class_names(class_names)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, classes={list(self.class_names)}"

    @torch.no_grad()
    def per_image_class(self, features: Mapping[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
        """Per-image, per-class L_fd of every layer: tap name -> (B, K) float32, NaN where a class is absent.

        Raises:
            ValueError: as :meth:`forward`.
        """
        return self._per_image_values(features, self._target(mask), _per_class_from_gaps)

    @torch.no_grad()
    def per_image(self, features: Mapping[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
        """Per-image L_fd (mean over the classes present in the image): tap name -> (B,), NaN if none."""
        out: dict[str, Tensor] = {}
        for name, values in self.per_image_class(features, mask).items():
            present = ~torch.isnan(values)
            mean = torch.where(present, values, 0.0).sum(1) / present.sum(1).clamp_min(1)
            out[name] = torch.where(present.any(1), mean, torch.nan)
        return out


class PerClassExchangeableFeatureDiscrepancyLoss(_PerClassMixin, ExchangeableFeatureDiscrepancyLoss):
    """Per-class L_fd + L_fd^exch: ``total = sum_l w_l * (L^l + L^l_exch)``, both means over present classes.

    Args:
        layers, class_names: as :class:`PerClassFeatureDiscrepancyLoss`.
        preset, layer_weights, pairing, shift, independent_permutations, generator, seed, check_mask,
            **options: as :class:`ExchangeableFeatureDiscrepancyLoss`.

    ``forward`` takes the arguments of :meth:`ExchangeableFeatureDiscrepancyLoss.forward` with either mask
    form of :func:`class_masks`, and adds ``fd_exch/<layer>[/<class>]`` terms to those of
    :class:`PerClassFeatureDiscrepancyLoss`.
    """

    def __init__(
        self,
        layers: Sequence[str],
        class_names: Sequence[str],
        preset: str = "paper",
        layer_weights: Mapping[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(layers, preset, layer_weights, **kwargs)
        self.class_names = _check_class_names(class_names)


# -- segmentation losses of the heads ----------------------------------------------------------------------


class BinaryPerClassSegLoss(nn.Module):
    """L_seg of the ``binary_per_class`` head: a binary loss on K sigmoid logits against the one-hot classes.

    Args:
        base: a binary segmentation loss ``(logits (B,K,H,W), mask (B,K,H,W)) -> ()``, e.g. ``DiceBCELoss``
            (its soft Dice is averaged over the K classes).
        num_classes: K foreground classes.

    Raises:
        ValueError: ``logits`` without K channels (naming both), bad masks (see :func:`class_masks`).
    """

    def __init__(self, base: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.base = base
        self.num_classes = _check_num_classes(num_classes)

    def forward(self, logits: Tensor, mask: Tensor) -> Tensor:
        if logits.ndim != 4 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"logits of shape {tuple(logits.shape)}: the binary_per_class head needs "
                f"{self.num_classes} channels (one per foreground class)"
            )
        out: Tensor = self.base(logits, class_masks(mask, self.num_classes))
        return out


class SoftmaxSegLoss(nn.Module):
    """L_seg of the ``softmax`` head: MONAI ``DiceCELoss`` (softmax, cross-entropy + soft Dice over K + 1).

    Args:
        num_classes: K foreground classes; logits have K + 1 channels, background first.
        lambda_dice, lambda_ce: weights of the two parts (1, 1).

    Raises:
        ValueError: ``logits`` without K + 1 channels, bad masks (see :func:`class_masks`).
    """

    def __init__(self, num_classes: int, *, lambda_dice: float = 1.0, lambda_ce: float = 1.0) -> None:
        super().__init__()
        from monai.losses.dice import DiceCELoss

        self.num_classes = _check_num_classes(num_classes)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=lambda_dice, lambda_ce=lambda_ce)

    def forward(self, logits: Tensor, mask: Tensor) -> Tensor:
        if logits.ndim != 4 or logits.shape[1] != self.num_classes + 1:
            raise ValueError(
                f"logits of shape {tuple(logits.shape)}: the softmax head needs {self.num_classes + 1} "
                "channels (background + one per foreground class)"
            )
        target = class_index_map(mask, self.num_classes)
        out: Tensor = self.loss(logits.float(), target)
        return out


def build_head_seg_loss(head: str, num_classes: int, base: nn.Module) -> nn.Module:
    """The L_seg of a multi-class head: ``binary_per_class`` wraps ``base``; ``softmax`` is ``DiceCELoss``.

    Raises:
        ValueError: an unknown head (the message lists :data:`HEADS`).
    """
    from fdseg._checks import check_option

    check_option("model.head", head, HEADS)
    if head == "binary_per_class":
        return BinaryPerClassSegLoss(base, num_classes)
    return SoftmaxSegLoss(num_classes)
