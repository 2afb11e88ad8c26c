"""Pure functions of the feature discrepancy loss L_fd and its exchangeable variant L_fd^exch.

Notation (method-spec §A5, §B). ``features`` is one tapped map ``F`` of shape ``(B, C, h, w)``; ``mask`` is
the ground truth ``(B, K, H, W)`` in [0, 1] (``K = 1`` for a binary task, one-hot channels for ``K`` sigmoid
heads). The mask is resized to ``(h, w)`` (:func:`resize_mask`), then every image ``b`` and class ``k`` gets
a foreground vector ``fg[b, k]`` and a background vector ``bg[b, k]`` in ``R^C`` (:func:`region_prototypes`):

    d = fg - bg,    X = channel reduction of d ** 2,    L = -log(X ** (power / 2) + eps).

Every option of method-spec §A5 is a keyword argument; the defaults are the sound reading of the paper (the
``paper`` preset of :mod:`fdseg.losses.discrepancy`):

* ``roles``: ``"paper"`` (F masked by y and by 1 - y) or ``"code_swapped"`` (the released code, which calls
  ``extract_features(mask, features)`` with its arguments swapped: ``fg = y * F`` and ``bg = y * (1 - F)``, so
  ``d = reduce(y * (2F - 1))`` and background features never enter).
* ``spatial``: ``"region_mean"`` (divide by the region area; size invariant), ``"image_mean"`` (divide by
  ``h * w``, the code), ``"sum"`` (no division, the proof of Lemma 1). With ``code_swapped`` roles the
  region is the foreground of ``y``: ``region_mean`` gives ``d = 2 * mean_fg(F) - 1``.
* ``channel``: ``"mean_sq_in_log"`` (``X = mean_c d_c²``), ``"sum_sq_in_log"`` (``X = ||d||²``, Eq. 1),
  ``"mean_of_log"`` (``mean_c -log(|d_c|^power + eps)``, the code), ``"avg_first"`` (average over channels
  first: ``X = (mean_c d_c)²``).
* ``batch``: ``"per_image"`` (one value per image, mean over valid images) or ``"batch_l2"`` (the code: the
  squared gaps are summed over the valid images of the batch before the log, i.e. a per-channel L2 norm over
  the batch axis; the value then depends on the batch size).
* ``power``: 2 (squared norm, Eq. 1) or 1 (plain norm, the code: half the squared-norm value when eps = 0).
* ``eps`` (>= 0): added inside the log. ``eps = 0`` reproduces the code's infinite barrier (``+inf`` when
  fg and bg coincide); use a positive value for training.
* ``mask_resize``, ``binarize_mask``: see :func:`resize_mask`.
* ``lfd_floor``: ``None`` (default) or a float; per-image (and ``batch_l2`` layer) values are clamped from
  below to it, which removes the incentive to inflate the gap without bound (L_fd is unbounded below).

Validity. With ``paper`` roles an image (class) is valid at a layer when its resized mask has at least one
foreground and one background cell; with ``code_swapped`` roles when it has a foreground cell (the background
is never read, and an empty mask gives d = 0 exactly as in the code). Invalid images are excluded from every
mean; a layer without a valid image contributes exactly 0, and no NaN or inf reaches values or gradients
(masked entries are computed from safe stand-in values before ``torch.where`` drops them).

Precision and cost. Each layer is reduced in one pass: one batched matrix product of the flattened features
against, per class, the smaller of the two regions of the resized mask plus a row of ones (the total); the
other region's sum is the total minus the direct one, so no second pass over the features and no loop over
images. The product runs in float32 (float64 when the features are float64, e.g. bf16 features are promoted),
with autocast disabled, whatever the memory format (NCHW or channels-last). Summing the smaller region
directly keeps ``total - region`` as accurate as a direct sum (the subtracted region covers at least half the
map), also for features with a large common offset.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from fdseg._checks import check_int, check_keys, check_option, check_shape

Roles = Literal["paper", "code_swapped"]
Spatial = Literal["region_mean", "image_mean", "sum"]
Channel = Literal["mean_sq_in_log", "sum_sq_in_log", "mean_of_log", "avg_first"]
BatchReduction = Literal["per_image", "batch_l2"]
MaskResize = Literal["maxpool", "nearest", "avgpool"]
Pairing = Literal["shift", "shuffle", "cross_source"]

ROLES: tuple[str, ...] = get_args(Roles)
SPATIAL_REDUCTIONS: tuple[str, ...] = get_args(Spatial)
CHANNEL_REDUCTIONS: tuple[str, ...] = get_args(Channel)
BATCH_REDUCTIONS: tuple[str, ...] = get_args(BatchReduction)
MASK_RESIZE_MODES: tuple[str, ...] = get_args(MaskResize)
PAIRINGS: tuple[str, ...] = get_args(Pairing)
POWERS: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class FdOptions:
    """The options of one L_fd computation (method-spec §A5), validated on construction.

    Attributes:
        roles: ``"paper"`` | ``"code_swapped"``.
        spatial: ``"region_mean"`` | ``"image_mean"`` | ``"sum"``.
        channel: ``"mean_sq_in_log"`` | ``"sum_sq_in_log"`` | ``"mean_of_log"`` | ``"avg_first"``.
        batch: ``"per_image"`` | ``"batch_l2"``.
        power: 2 (squared norm) or 1 (plain norm).
        eps: >= 0, added to the (powered) gap inside the log.
        mask_resize: ``"maxpool"`` | ``"nearest"`` | ``"avgpool"``.
        binarize_mask: threshold the mask at 0.5 before resizing.
        lfd_floor: lower clamp of the per-image values, or ``None``.

    Raises:
        ValueError: an unknown choice (the message lists the valid ones) or a negative / non-finite number.
        TypeError: ``power`` or ``binarize_mask`` of the wrong type.
    """

    roles: Roles = "paper"
    spatial: Spatial = "region_mean"
    channel: Channel = "mean_sq_in_log"
    batch: BatchReduction = "per_image"
    power: int = 2
    eps: float = 1e-6
    mask_resize: MaskResize = "maxpool"
    binarize_mask: bool = True
    lfd_floor: float | None = None

    def __post_init__(self) -> None:
        check_option("roles", self.roles, ROLES)
        check_option("spatial", self.spatial, SPATIAL_REDUCTIONS)
        check_option("channel", self.channel, CHANNEL_REDUCTIONS)
        check_option("batch", self.batch, BATCH_REDUCTIONS)
        check_option("mask_resize", self.mask_resize, MASK_RESIZE_MODES)
        if isinstance(self.power, bool) or not isinstance(self.power, int):
            raise TypeError(f"power must be the int 1 or 2, got {self.power!r}")
        check_option("power", self.power, POWERS)
        if not isinstance(self.eps, int | float) or not math.isfinite(self.eps) or self.eps < 0:
            raise ValueError(f"eps must be a finite float >= 0, got {self.eps!r}")
        if not isinstance(self.binarize_mask, bool):
            raise TypeError(f"binarize_mask must be a bool, got {self.binarize_mask!r}")
        if self.lfd_floor is not None and (
            not isinstance(self.lfd_floor, int | float) or not math.isfinite(self.lfd_floor)
        ):
            raise ValueError(f"lfd_floor must be None or a finite float, got {self.lfd_floor!r}")

    @classmethod
    def names(cls) -> list[str]:
        """The option names, in declaration order."""
        return [f.name for f in fields(cls)]


class Prototypes(NamedTuple):
    """Per-image foreground and background mean features of one layer (``paper`` roles).

    Attributes:
        mu_fg: (B, C) float32 (float64 for float64 features); zeros where the image has no foreground.
        mu_bg: (B, C) same dtype; zeros where the image has no background.
        valid: (B,) bool, the image has at least one foreground and one background cell.
    """

    mu_fg: Tensor
    mu_bg: Tensor
    valid: Tensor


class FdTerm(NamedTuple):
    """L_fd of one layer.

    Attributes:
        per_image: (B,) float; the value of each image (mean over its valid classes), 0 where invalid. With
            ``batch="batch_l2"`` it is the value the image would get as a batch of one.
        valid: (B,) bool; the image has a valid class at this layer.
        value: () float, differentiable; the layer's L_fd (0 when no image is valid).
    """

    per_image: Tensor
    valid: Tensor
    value: Tensor


class ExchangeTerm(NamedTuple):
    """L_fd^exch of one layer.

    Attributes:
        per_pair: (P,) float; the value of each pair, 0 where invalid.
        valid: (P,) bool; the pair is used (anchor has a foreground, partner a background; for
            ``cross_source`` both images need both).
        value: () float, differentiable; the layer's L_fd^exch (0 without a valid pair).
        pairs: (P, 2) int64 on CPU, rows ``(i, partner(i))`` of batch indices.
        pairing: the pairing actually used (``"shift"`` when ``cross_source`` fell back).
        fallback: True when ``cross_source`` was asked for but the batch holds a single source.
    """

    per_pair: Tensor
    valid: Tensor
    value: Tensor
    pairs: Tensor
    pairing: str
    fallback: bool


class _Gaps(NamedTuple):
    """Foreground / background vectors per image and class, with their availability."""

    fg: Tensor  # (B, K, C)
    bg: Tensor  # (B, K, C)
    fg_ok: Tensor  # (B, K) bool
    bg_ok: Tensor  # (B, K) bool


# ----------------------------------------------------------------------------------------------------------
# masks


def resize_mask(
    mask: Tensor,
    size: Sequence[int],
    *,
    mode: MaskResize = "maxpool",
    binarize: bool = True,
) -> Tensor:
    """Resize a ground-truth mask to a feature map's spatial size.

    Rules (method-spec §A5; the choice changes the loss, so it is explicit):

    * ``"maxpool"``: ``F.adaptive_max_pool2d``; a cell is foreground if any pixel in it is. Any ratio works
      (an exact power of two equals repeated 2x2 max-pools, the paper's rule).
    * ``"nearest"``: ``F.interpolate(mode="nearest-exact")``; one pixel near each cell centre; thin structures
      can vanish.
    * ``"avgpool"``: ``F.adaptive_avg_pool2d``; a soft mask, the foreground fraction of each cell.

    With ``binarize=True`` the mask is thresholded (``> 0.5``) **before** resizing and nothing is thresholded
    afterwards: ``maxpool`` and ``nearest`` then stay binary, ``avgpool`` deliberately stays soft (it is the
    soft option). With ``binarize=False`` a soft mask is resized as is (the released code's soft masks).

    Args:
        mask: (B, K, H, W) float (or bool) in [0, 1].
        size: the target ``(h, w)`` with ``h <= H`` and ``w <= W``, e.g. ``features.shape[-2:]``.
        mode: ``"maxpool"`` | ``"nearest"`` | ``"avgpool"``.
        binarize: threshold at 0.5 before resizing.

    Returns:
        (B, K, h, w) float32 (float64 for a float64 mask) in [0, 1].

    Raises:
        ValueError: wrong rank, an empty batch, values outside [0, 1], an unknown ``mode``, or a target size
            larger than the mask (the message names both shapes).
    """
    check_option("mask_resize", mode, MASK_RESIZE_MODES)
    if not isinstance(binarize, bool):
        raise TypeError(f"binarize must be a bool, got {binarize!r}")
    _check_mask(mask)
    target = _check_target_size(mask, size)
    return _resize_mask(mask, target, mode, binarize)


def _check_mask(mask: Tensor) -> None:
    """Rank, non-empty batch and value range of a mask (one device sync)."""
    check_shape(mask, "B K H W", name="mask")
    if mask.numel() == 0:
        raise ValueError(f"mask: empty tensor of shape {tuple(mask.shape)}")
    if mask.dtype == torch.bool:
        return
    if mask.is_complex():
        raise TypeError(f"mask: expected a real tensor, got dtype {mask.dtype}")
    lo, hi = torch.aminmax(mask.detach())
    lo_v, hi_v = (float(v) for v in torch.stack([lo.double(), hi.double()]).tolist())
    if not (lo_v >= 0.0 and hi_v <= 1.0):
        raise ValueError(
            f"mask: values must lie in [0, 1] (binary masks in {{0, 1}}), got min {lo_v:.4g} and max "
            f"{hi_v:.4g}; scale 0/255 masks by 1/255 and check for NaN"
        )


def _check_target_size(mask: Tensor, size: Sequence[int]) -> tuple[int, int]:
    """``size`` as ``(h, w)``; the feature map must not be larger than the mask."""
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"size must be two positive ints (h, w), got {tuple(size)!r}")
    h, w = int(size[0]), int(size[1])
    height, width = mask.shape[-2:]
    if h > height or w > width:
        raise ValueError(
            f"cannot pool a mask of shape {tuple(mask.shape)} to a feature map of spatial size {(h, w)}: "
            f"the feature map is larger than the mask ({height}x{width}); tap a layer at or below the mask "
            "resolution"
        )
    return h, w


def _mask_float(mask: Tensor) -> Tensor:
    dtype = torch.float64 if mask.dtype == torch.float64 else torch.float32
    return mask.to(dtype)


def _resize_mask(mask: Tensor, size: tuple[int, int], mode: str, binarize: bool) -> Tensor:
    """:func:`resize_mask` without checks."""
    m = _mask_float(mask.detach())
    if binarize:
        m = (m > 0.5).to(m.dtype)
    height, width = m.shape[-2:]
    if (height, width) == size:
        return m
    if mode == "nearest":
        return F.interpolate(m, size=size, mode="nearest-exact")
    if height % size[0] == 0 and width % size[1] == 0:  # exact ratio: the same windows, a faster kernel
        kernel = (height // size[0], width // size[1])
        return F.max_pool2d(m, kernel) if mode == "maxpool" else F.avg_pool2d(m, kernel)
    return F.adaptive_max_pool2d(m, size) if mode == "maxpool" else F.adaptive_avg_pool2d(m, size)


# ----------------------------------------------------------------------------------------------------------
# prototypes


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _region_sums(features: Tensor, mask_l: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Foreground and background sums of one layer in one pass over the features.

    One batched matrix product reduces the features against ``K + 1`` weight rows per image: for each class
    the smaller of its two regions (``mask_l`` or ``1 - mask_l``, by area) and a row of ones (the total). The
    other region's sum is the total minus the direct one. Numerical care: each channel is centred on its
    first cell's value before the product (the offset is added back as area * shift), so a large common
    offset does not enter the accumulation; and taking the smaller region directly bounds the cancellation of
    ``total - direct`` (the subtracted region covers at least half of the map). The means then stay within a
    few float32 ulps of the features' magnitude, as with a direct sum per region.

    Args:
        features: (B, C, h, w) float, NCHW or channels-last, any floating dtype.
        mask_l: (B, K, h, w) float in [0, 1].

    Returns:
        ``s_fg`` (B, K, C), ``s_bg`` (B, K, C), ``a_fg`` (B, K), ``a_bg`` (B, K), in the compute dtype
        (float32; float64 for float64 features), computed with autocast disabled.
    """
    dtype = _compute_dtype(features.dtype)
    num_classes = mask_l.shape[1]
    m = mask_l.to(dtype).flatten(2)  # (B, K, n)
    a_fg, a_bg = m.sum(-1), (1.0 - m).sum(-1)
    flip = a_fg > a_bg  # the background is the smaller region: sum it directly
    direct = torch.where(flip.unsqueeze(-1), 1.0 - m, m)
    weights = torch.cat([direct, torch.ones_like(m[:, :1])], dim=1)  # (B, K + 1, n)
    flat = features.flatten(2)  # (B, C, n): a view for NCHW, (stride 1 on C) for channels-last
    # Centre each channel on the value of its first cell before accumulating: a large common offset then
    # never enters the (blocked) accumulation; it is added back exactly as area * shift. The subtraction also
    # promotes bf16/fp16 to float32 in the same kernel, and keeps the features' layout. The shift is
    # detached: the sums do not depend on it, so its two gradient paths cancel.
    shift = flat[:, :, :1].detach().to(dtype)  # (B, C, 1)
    centred = torch.sub(flat, shift)
    device_type = features.device.type
    ctx = (
        torch.autocast(device_type, enabled=False)
        if torch.is_autocast_enabled(device_type)
        else contextlib.nullcontext()
    )
    with ctx:
        # Orient the product so that the gradient (B, C, n) is written in the features' own layout,
        # without a transposing copy: NCHW -> (C, n) @ (n, K + 1); channels-last -> (K + 1, n) @ (n, C).
        if centred.stride(1) == 1 and centred.shape[1] > 1:
            sums = torch.bmm(weights, centred.transpose(1, 2))
        else:
            sums = torch.bmm(centred, weights.transpose(1, 2)).transpose(1, 2)
    s_direct, total = sums[:, :num_classes], sums[:, num_classes:]
    s_other = total - s_direct
    swap = flip.unsqueeze(-1)
    offset = shift.transpose(1, 2)  # (B, 1, C)
    s_fg = torch.where(swap, s_other, s_direct) + a_fg.unsqueeze(-1) * offset
    s_bg = torch.where(swap, s_direct, s_other) + a_bg.unsqueeze(-1) * offset
    return s_fg, s_bg, a_fg, a_bg


def _gaps(features: Tensor, mask_l: Tensor, roles: str, spatial: str) -> _Gaps:
    """Foreground and background vectors per image and class (no checks)."""
    n_cells = features.shape[-2] * features.shape[-1]
    s_fg, s_bg, a_fg, a_bg = _region_sums(features, mask_l)
    if roles == "paper":
        fg_ok, bg_ok = a_fg > 0, a_bg > 0
        if spatial == "region_mean":
            s_fg = s_fg / torch.where(fg_ok, a_fg, 1.0).unsqueeze(-1)
            s_bg = s_bg / torch.where(bg_ok, a_bg, 1.0).unsqueeze(-1)
        elif spatial == "image_mean":
            s_fg, s_bg = s_fg / n_cells, s_bg / n_cells
        return _Gaps(s_fg, s_bg, fg_ok, bg_ok)
    # code_swapped: the mask plays the features and F the mask: fg = sum(y * F), bg = sum(y * (1 - F)).
    ok = a_fg > 0
    fg, bg = s_fg, a_fg.unsqueeze(-1) - s_fg
    if spatial == "region_mean":
        denom = torch.where(ok, a_fg, 1.0).unsqueeze(-1)
        fg, bg = fg / denom, bg / denom
    elif spatial == "image_mean":
        fg, bg = fg / n_cells, bg / n_cells
    return _Gaps(fg, bg, ok, ok)


def region_prototypes(features: Tensor, mask_l: Tensor, *, spatial: Spatial = "region_mean") -> Prototypes:
    """Per-image foreground and background mean features (the ``paper`` roles).

    ``mu_fg[b] = sum_hw(F[b] * y[b]) / a_fg[b]`` and ``mu_bg[b] = sum_hw(F[b] * (1 - y[b])) / a_bg[b]`` for
    ``spatial="region_mean"``; ``image_mean`` divides by ``h * w`` instead, ``sum`` does not divide.

    Args:
        features: (B, C, h, w) float, any memory format.
        mask_l: (B, 1, h, w) float in [0, 1], already at the feature resolution (see :func:`resize_mask`).
        spatial: ``"region_mean"`` | ``"image_mean"`` | ``"sum"``.

    Returns:
        :class:`Prototypes` ``(mu_fg (B, C), mu_bg (B, C), valid (B,))`` in float32 (float64 for float64
        features).

    Raises:
        ValueError: wrong ranks, a mask with more than one channel, mismatched batch or spatial sizes.
    """
    check_option("spatial", spatial, SPATIAL_REDUCTIONS)
    _check_features(features, "features")
    check_shape(mask_l, "B 1 h w", name="mask_l")
    if mask_l.shape[0] != features.shape[0] or mask_l.shape[-2:] != features.shape[-2:]:
        raise ValueError(
            f"mask_l of shape {tuple(mask_l.shape)} does not match features of shape "
            f"{tuple(features.shape)}: expected (B, 1, h, w) with the features' B, h and w"
        )
    gaps = _gaps(features, _mask_float(mask_l), "paper", spatial)
    return Prototypes(gaps.fg[:, 0], gaps.bg[:, 0], (gaps.fg_ok & gaps.bg_ok)[:, 0])


# ----------------------------------------------------------------------------------------------------------
# reductions


def _squared_gap(fg: Tensor, bg: Tensor, channel: str) -> Tensor:
    """(..., C) squared per-channel gaps, or (..., 1) for ``avg_first``."""
    d = fg - bg
    if channel == "avg_first":
        d = d.mean(-1, keepdim=True)
    return d.square()


def _safe_sqrt(x: Tensor) -> Tensor:
    """sqrt with a zero (sub)gradient at 0 instead of inf."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, 1.0).sqrt(), 0.0)


def _neg_log(sq: Tensor, valid: Tensor, opts: FdOptions) -> Tensor:
    """``-log(X ** (power / 2) + eps)`` with the channel reduction; invalid rows get finite stand-ins.

    Args:
        sq: (..., C') squared gaps.
        valid: (...) bool.

    Returns:
        (...) float.
    """
    if opts.channel == "mean_sq_in_log":
        x = sq.mean(-1)
    elif opts.channel == "sum_sq_in_log":
        x = sq.sum(-1)
    elif opts.channel == "avg_first":
        x = sq[..., 0]
    else:  # mean_of_log: one log per channel
        x = sq
    keep = valid if x.ndim == valid.ndim else valid.unsqueeze(-1)
    x = torch.where(keep, x, 1.0)
    magnitude = x if opts.power == 2 else _safe_sqrt(x)
    value = -torch.log(magnitude + opts.eps)
    if opts.channel == "mean_of_log":
        value = value.mean(-1)
    if opts.lfd_floor is not None:
        value = value.clamp_min(opts.lfd_floor)
    return value


def _reduce_rows(sq: Tensor, valid: Tensor, opts: FdOptions) -> tuple[Tensor, Tensor, Tensor]:
    """Rows (images or pairs) x classes -> per-row values, per-row validity and the layer value.

    Args:
        sq: (R, K, C') squared gaps.
        valid: (R, K) bool.

    Returns:
        ``per_row`` (R,) (mean over the row's valid classes, 0 if none), ``row_valid`` (R,) bool and the layer
        value () (mean over classes with a valid row of the class value; 0 if none).
    """
    per = torch.where(valid, _neg_log(sq, valid, opts), 0.0)  # (R, K)
    class_value, class_valid = _class_values(sq, valid, per, opts)
    value = class_value.sum() / class_valid.sum().clamp_min(1)
    per_row = per.sum(1) / valid.sum(1).clamp_min(1)
    return per_row, valid.any(1), value


def _class_values(sq: Tensor, valid: Tensor, per: Tensor | None, opts: FdOptions) -> tuple[Tensor, Tensor]:
    """Per-class values ``(K,)`` (mean over the class's valid rows; 0 without one) and validity ``(K,)``.

    Args:
        sq: (R, K, C') squared gaps.
        valid: (R, K) bool.
        per: (R, K) per-row values when already computed (``per_image``), else ``None``.
    """
    class_valid = valid.any(0)  # (K,)
    if opts.batch == "per_image":
        if per is None:
            per = torch.where(valid, _neg_log(sq, valid, opts), 0.0)
        class_value = per.sum(0) / valid.sum(0).clamp_min(1)
    else:  # batch_l2: squared gaps summed over the valid rows before the log
        pooled = torch.where(valid.unsqueeze(-1), sq, 0.0).sum(0)  # (K, C')
        class_value = torch.where(class_valid, _neg_log(pooled, class_valid, opts), 0.0)
    return class_value, class_valid


def _fd_from_gaps(gaps: _Gaps, opts: FdOptions) -> FdTerm:
    sq = _squared_gap(gaps.fg, gaps.bg, opts.channel)
    per_image, valid, value = _reduce_rows(sq, gaps.fg_ok & gaps.bg_ok, opts)
    return FdTerm(per_image, valid, value)


def _exchange_from_gaps(
    gaps: _Gaps, pairs: Tensor, cross: bool, opts: FdOptions
) -> tuple[Tensor, Tensor, Tensor]:
    index = pairs.to(gaps.fg.device)
    anchor, partner = index[:, 0], index[:, 1]
    sq = _squared_gap(gaps.fg[anchor], gaps.bg[partner], opts.channel)
    valid = gaps.fg_ok[anchor] & gaps.bg_ok[partner]
    if cross:  # Definition 2: one log of the sum of both cross terms
        sq = sq + _squared_gap(gaps.fg[partner], gaps.bg[anchor], opts.channel)
        valid = valid & gaps.fg_ok[partner] & gaps.bg_ok[anchor]
    return _reduce_rows(sq, valid, opts)


# ----------------------------------------------------------------------------------------------------------
# public terms


def _check_features(features: Tensor, name: str) -> None:
    check_shape(features, "B C h w", name=name)
    if not features.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {features.dtype}")
    if features.numel() == 0:
        raise ValueError(f"{name}: empty tensor of shape {tuple(features.shape)}")


def _check_pair(features: Tensor, mask: Tensor, name: str) -> tuple[int, int]:
    """Shape checks of a feature map against the full-resolution mask; returns the target size."""
    _check_features(features, name)
    if features.device != mask.device:
        raise ValueError(
            f"{name} is on {features.device} but mask is on {mask.device}; move both to one device"
        )
    if features.shape[0] != mask.shape[0]:
        raise ValueError(
            f"{name}: batch {features.shape[0]} (shape {tuple(features.shape)}) != mask batch "
            f"{mask.shape[0]} (shape {tuple(mask.shape)})"
        )
    return _check_target_size(mask, tuple(features.shape[-2:]))


def fd_term(
    features: Tensor,
    mask: Tensor,
    *,
    roles: Roles = "paper",
    spatial: Spatial = "region_mean",
    channel: Channel = "mean_sq_in_log",
    batch: BatchReduction = "per_image",
    power: int = 2,
    eps: float = 1e-6,
    mask_resize: MaskResize = "maxpool",
    binarize_mask: bool = True,
    lfd_floor: float | None = None,
) -> FdTerm:
    """The feature discrepancy L_fd of one tapped layer (method-spec §A5).

    Default (the sound reading): ``y = maxpool(mask > 0.5)`` at ``(h, w)``;
    ``D[b] = mean_c (mu_fg[b, c] - mu_bg[b, c])²``; ``L = mean_{b valid} -log(D[b] + 1e-6)``. The other
    options are described in the module docstring.

    Args:
        features: (B, C, h, w) float (any dtype and memory format; reduced in float32, float64 kept).
        mask: (B, K, H, W) float or bool in [0, 1] with ``H >= h`` and ``W >= w``; ``K > 1`` (one-hot, one
            sigmoid head per class) averages the per-class values over the classes present.
        roles, spatial, channel, batch, power, eps, mask_resize, binarize_mask, lfd_floor: see the module
            docstring and :class:`FdOptions`.

    Returns:
        :class:`FdTerm` ``(per_image (B,), valid (B,) bool, value ())``; ``value`` is differentiable and is
        0 when no image is valid.

    Raises:
        ValueError: wrong ranks or sizes, mask values outside [0, 1], unknown option values.
        TypeError: non-floating features.

    Example:
        >>> features = torch.zeros(1, 2, 2, 2); features[0, :, 0, 0] = 0.5
        >>> mask = torch.zeros(1, 1, 4, 4); mask[0, 0, :2, :2] = 1.0
        >>> round(float(fd_term(features, mask).value), 4)   # D = 0.25, -log(0.25 + 1e-6)
        1.3863
    """
    opts = FdOptions(
        roles=roles,
        spatial=spatial,
        channel=channel,
        batch=batch,
        power=power,
        eps=eps,
        mask_resize=mask_resize,
        binarize_mask=binarize_mask,
        lfd_floor=lfd_floor,
    )
    _check_mask(mask)
    size = _check_pair(features, mask, "features")
    mask_l = _resize_mask(mask, size, opts.mask_resize, opts.binarize_mask)
    return _fd_from_gaps(_gaps(features, mask_l, opts.roles, opts.spatial), opts)


def _as_source(source: Tensor | Sequence[int] | None, batch_size: int) -> list[int] | None:
    if source is None:
        return None
    if isinstance(source, Tensor):
        if source.ndim != 1 or source.is_floating_point() or source.is_complex():
            raise ValueError(
                f"source: expected a (B,) integer tensor, got shape {tuple(source.shape)} "
                f"dtype {source.dtype}"
            )
        values = [int(v) for v in source.tolist()]
    else:
        values = [int(v) for v in source]
    if len(values) != batch_size:
        raise ValueError(f"source: {len(values)} entries for a batch of {batch_size}")
    return values


def check_pairing_options(pairing: str, shift: int, independent_permutations: bool) -> None:
    """Validate the pairing options of L_fd^exch without drawing anything.

    Raises:
        ValueError: unknown ``pairing`` (the message lists the valid ones), ``shift`` not an int >= 1, or
            ``independent_permutations`` without ``pairing="shuffle"``.
    """
    check_option("pairing", pairing, PAIRINGS)
    check_int("shift", shift)
    if independent_permutations and pairing != "shuffle":
        raise ValueError(f"independent_permutations=True needs pairing='shuffle', got pairing={pairing!r}")


def _exchange_pairs(
    batch_size: int,
    pairing: str,
    shift: int,
    source: Tensor | Sequence[int] | None,
    generator: torch.Generator | None,
    independent_permutations: bool,
) -> tuple[Tensor, str]:
    """Pairs (P, 2) int64 on CPU and the pairing actually used."""
    check_pairing_options(pairing, shift, independent_permutations)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sources = _as_source(source, batch_size)
    used = pairing
    if pairing == "cross_source":
        if sources is None:
            raise ValueError(
                "pairing='cross_source' needs source: a (B,) integer tensor of source ids "
                "(the collated 'source')"
            )
        if len(set(sources)) < 2:
            used = "shift"
    rows: list[tuple[int, int]]
    if used == "shift":
        rows = [(i, (i + shift) % batch_size) for i in range(batch_size)]
    elif used == "shuffle":
        if generator is None:
            raise ValueError(
                "pairing='shuffle' draws its permutation from `generator`; pass a torch.Generator (e.g. "
                "torch.Generator().manual_seed(0)); fdseg never draws from the global RNG"
            )
        perm = torch.randperm(batch_size, generator=generator, device=generator.device).tolist()
        if independent_permutations:  # the README: two independent shuffles, same-image pairs included
            other = torch.randperm(batch_size, generator=generator, device=generator.device).tolist()
            return torch.tensor(list(zip(perm, other)), dtype=torch.long).reshape(-1, 2), used
        rows = list(enumerate(perm))
    else:
        ids = sources if sources is not None else []
        rows = []
        for i in range(batch_size):
            for offset in range(1, batch_size):
                j = (i + offset) % batch_size
                if ids[j] != ids[i]:
                    rows.append((i, j))
                    break
    rows = [(i, j) for i, j in rows if i != j]  # a same-image pair would only repeat L_fd
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 2), used


def exchange_pairs(
    batch_size: int,
    *,
    pairing: Pairing = "shift",
    shift: int = 1,
    source: Tensor | Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    independent_permutations: bool = False,
) -> Tensor:
    """The image pairs ``(i, partner(i))`` of L_fd^exch (method-spec §B).

    * ``"shift"`` (Algorithm 1): ``partner(i) = (i + shift) mod B``.
    * ``"shuffle"`` (README): one random permutation ``pi`` drawn from ``generator``; ``partner(i) = pi(i)``.
      With ``independent_permutations=True`` the README's two independent shuffles: rows ``(pi1(b), pi2(b))``.
    * ``"cross_source"`` (Definition 2): ``partner(i)`` is the next image after ``i`` (cyclically) from
      another source, so every base image is paired with a novel one and vice versa. A batch with a single
      source falls back to ``"shift"`` (:func:`exchangeable_fd_term` reports it).

    Same-image pairs are dropped (they would repeat L_fd), except with ``independent_permutations`` which
    reproduces the README exactly. A batch of one therefore has no pair.

    Args:
        batch_size: B >= 1.
        pairing: ``"shift"`` | ``"shuffle"`` | ``"cross_source"``.
        shift: k >= 1 for ``"shift"`` (and the ``cross_source`` fallback).
        source: (B,) integer source ids; required for ``"cross_source"``.
        generator: the only randomness of ``"shuffle"`` (required there); fdseg never uses the global RNG.
        independent_permutations: see above; only with ``"shuffle"``.

    Returns:
        (P, 2) int64 on CPU.

    Raises:
        ValueError: unknown pairing, bad shift, missing ``source`` or ``generator``, source of another length.
    """
    pairs, _ = _exchange_pairs(batch_size, pairing, shift, source, generator, independent_permutations)
    return pairs


def exchangeable_fd_term(
    features: Tensor,
    mask: Tensor,
    *,
    pairing: Pairing = "shift",
    shift: int = 1,
    source: Tensor | Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    independent_permutations: bool = False,
    **options: Any,
) -> ExchangeTerm:
    """The exchangeable term L_fd^exch of one tapped layer (method-spec §B).

    For a pair ``(i, j)`` from :func:`exchange_pairs` the value is
    ``-log(X(fg[i] - bg[j]) ** (power / 2) + eps)`` with the same prototypes, channel reduction, power, eps
    and validity as :func:`fd_term`; ``cross_source`` uses one log of the sum of both cross terms,
    ``X(fg[i] - bg[j]) + X(fg[j] - bg[i])`` (Definition 2). A pair is skipped when ``i`` has no foreground or
    ``j`` no background (for ``cross_source``: when either image lacks one). The layer value is the mean over
    valid pairs (``batch="batch_l2"``: the pooled L2 form of the README).

    Args:
        features: (B, C, h, w) float.
        mask: (B, K, H, W) float or bool in [0, 1].
        pairing, shift, source, generator, independent_permutations: see :func:`exchange_pairs`.
        **options: the :func:`fd_term` options (``roles``, ``spatial``, ``channel``, ``batch``, ``power``,
            ``eps``, ``mask_resize``, ``binarize_mask``, ``lfd_floor``).

    Returns:
        :class:`ExchangeTerm` ``(per_pair (P,), valid (P,), value (), pairs (P, 2), pairing, fallback)``.

    Raises:
        ValueError: as :func:`fd_term` and :func:`exchange_pairs`; an unknown option name.
    """
    opts = options_from_kwargs(options)
    _check_mask(mask)
    size = _check_pair(features, mask, "features")
    pairs, used = _exchange_pairs(
        features.shape[0], pairing, shift, source, generator, independent_permutations
    )
    mask_l = _resize_mask(mask, size, opts.mask_resize, opts.binarize_mask)
    gaps = _gaps(features, mask_l, opts.roles, opts.spatial)
    per_pair, valid, value = _exchange_from_gaps(gaps, pairs, used == "cross_source", opts)
    return ExchangeTerm(per_pair, valid, value, pairs, used, used != pairing)


def options_from_kwargs(options: dict[str, Any]) -> FdOptions:
    """:class:`FdOptions` from keyword arguments.

    Raises:
        ValueError: an unknown option name (the message lists the valid ones) or a bad value.
    """
    valid = FdOptions.names()
    unknown = [k for k in options if k not in valid]
    if unknown:
        if "attn_enc_tap" in unknown:
            raise ValueError(
                "attn_enc_tap is a model option (where the attention U-Net's encoder taps sit), not a loss "
                f"option; valid loss options: {valid}"
            )
        check_keys("L_fd option", unknown, valid)
    return FdOptions(**options)
