"""The two baseline auxiliary losses of the data-addition study (method-spec §F2): L_con and L_deeps.

The paper compares L_fd with a local pixel contrastive loss (Chaitanya et al. 2020) and deep supervision
(Dou et al. 2016) but specifies neither; these are the readings of method-spec §F2, with every default an
option. Like L_fd they receive tapped features (``features: dict[str, Tensor]``, from
:class:`fdseg.models.FeatureTap`) and the full-resolution mask, never a model, and return
:class:`~fdseg.losses.discrepancy.LossOutput`. Their heads (the projection head of L_con, the auxiliary
1×1 heads of L_deeps) are trainable parameters of the loss module; they are used only for the loss and are
dropped at inference (the network's own output is unchanged).

* **L_con** (:func:`supervised_contrastive_loss`, :class:`PixelContrastiveLoss`): a 1×1 projection head
  (``dim`` = 128 channels, L2-normalised) on one tap; per image at most ``max_fg`` = 256 foreground and
  ``max_bg`` = 256 background pixels are sampled with a seeded generator; supervised InfoNCE with temperature
  0.1, positives = the other sampled pixels of the same class:

      L_i = -1/|P(i)| Σ_{p∈P(i)} log( exp(z_i·z_p/T) / Σ_{a≠i} exp(z_i·z_a/T) )

  averaged over the anchors that have at least one positive, then over the images that have any.
* **L_deeps** (:func:`deep_supervision_loss`, :class:`DeepSupervisionLoss`): a 1×1 conv head on every
  decoder tap, its logits upsampled (bilinear) to the mask size, Dice + BCE each (the default L_seg,
  :func:`~fdseg.losses.segmentation.dice_bce_loss`), weighted by 1/2^depth and normalised to sum 1 (the
  nnU-Net convention), where the depth of a tap at reduction r is log2(r) (``dec1`` 0, ``dec2`` 1, …).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fdseg._checks import check_option, check_positive, check_shape
from fdseg.losses.discrepancy import LossOutput
from fdseg.losses.functional import _resize_mask
from fdseg.losses.segmentation import dice_bce_loss

__all__ = [
    "BASELINES",
    "DeepSupervisionLoss",
    "PixelContrastiveLoss",
    "decoder_channels",
    "deep_supervision_loss",
    "deep_supervision_weights",
    "sample_pixels",
    "supervised_contrastive_loss",
]

#: Names of the baseline auxiliary losses (``loss.baseline`` in a config).
BASELINES: tuple[str, ...] = ("none", "contrastive", "deep_supervision")
MASK_MODES: tuple[str, ...] = ("nearest", "maxpool")


# ----------------------------------------------------------------------------------------------------------
# L_con
def supervised_contrastive_loss(embeddings: Tensor, labels: Tensor, *, temperature: float = 0.1) -> Tensor:
    """Supervised InfoNCE over one set of embeddings (positives = same label, the anchor excluded).

    ``L_i = -1/|P(i)| Σ_{p∈P(i)} log(exp(s_ip/T) / Σ_{a≠i} exp(s_ia/T))`` with ``s = z zᵀ``; the loss is the
    mean of ``L_i`` over the anchors with at least one positive.

    Args:
        embeddings: (N, D) float; L2-normalised rows for the usual cosine reading (not enforced).
        labels: (N,) integer or bool class labels.
        temperature: T > 0.

    Returns:
        () float in the embeddings' dtype (float32 for half inputs); ``0 * embeddings.sum()`` (zero, still
        connected to the graph) when no anchor has a positive (N < 2, or every label distinct).

    Raises:
        ValueError: wrong shapes or T <= 0.
    """
    check_shape(embeddings, "N D", name="embeddings")
    check_shape(labels, "N", name="labels")
    if labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"labels has {labels.shape[0]} entries but embeddings has {embeddings.shape[0]} rows"
        )
    check_positive("temperature", temperature)
    z = embeddings if embeddings.dtype == torch.float64 else embeddings.float()
    n = z.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = positives.sum(1)
    valid = n_pos > 0
    if n < 2 or not bool(valid.any()):
        return z.sum() * 0.0
    logits = (z @ z.T) / temperature
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos_sum = torch.where(positives, log_prob, torch.zeros_like(log_prob)).sum(1)
    per_anchor = -pos_sum[valid] / n_pos[valid].to(z.dtype)
    return per_anchor.mean()


def sample_pixels(
    mask: Tensor, *, max_fg: int = 256, max_bg: int = 256, generator: torch.Generator | None = None
) -> list[tuple[Tensor, Tensor]]:
    """Draw at most ``max_fg`` foreground and ``max_bg`` background pixels per image, without replacement.

    Args:
        mask: (B, 1, h, w) binary {0, 1} (float or bool) at the embedding's resolution.
        max_fg, max_bg: caps per image (>= 0); an image with fewer pixels of a class gives all of them.
        generator: a CPU ``torch.Generator`` for the draw (``None``: the global RNG).

    Returns:
        One ``(flat pixel indices (n,) int64, labels (n,) int64 in {0, 1})`` per image, on the mask's device.
    """
    check_shape(mask, "B 1 H W", name="mask")
    if max_fg < 0 or max_bg < 0:
        raise ValueError(f"max_fg and max_bg must be >= 0, got {max_fg} and {max_bg}")
    flat = (mask.detach().reshape(mask.shape[0], -1) > 0.5).cpu()
    out: list[tuple[Tensor, Tensor]] = []
    for row in flat:
        chosen: list[Tensor] = []
        labels: list[Tensor] = []
        for cls, cap in ((1, max_fg), (0, max_bg)):
            idx = torch.nonzero(row == bool(cls)).reshape(-1)
            if idx.numel() > cap:
                idx = idx[torch.randperm(idx.numel(), generator=generator)[:cap]]
            chosen.append(idx)
            labels.append(torch.full_like(idx, cls))
        out.append((torch.cat(chosen).to(mask.device), torch.cat(labels).to(mask.device)))
    return out


class PixelContrastiveLoss(nn.Module):
    """L_con on one tapped layer: projection head, per-image pixel sampling, supervised InfoNCE (§F2).

    Args:
        layer: the tap name, e.g. ``"dec1"``.
        in_channels: channels of that tap.
        dim: projection width (128).
        temperature: InfoNCE temperature (0.1).
        max_fg, max_bg: sampled pixels per image and class (256 each).
        mask_resize: how the mask reaches the tap's resolution: ``nearest`` (default; labels of the pixel
            nearest each cell centre) or ``maxpool``.
        seed: seeds the module's private sampling generator; its state is saved in ``state_dict`` (extra
            state) so that a resumed run draws the same pixels.

    Randomness: only the module's generator (or the one passed to ``forward``); never the global RNG.

    Raises:
        ValueError: bad sizes, temperature or mask mode.
    """

    def __init__(
        self,
        layer: str,
        in_channels: int,
        *,
        dim: int = 128,
        temperature: float = 0.1,
        max_fg: int = 256,
        max_bg: int = 256,
        mask_resize: str = "nearest",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(layer, str) or not layer:
            raise ValueError(f"layer must be a tap name, got {layer!r}")
        if in_channels < 1 or dim < 1:
            raise ValueError(f"in_channels and dim must be >= 1, got {in_channels} and {dim}")
        check_positive("temperature", temperature)
        if max_fg < 1 and max_bg < 1:
            raise ValueError("max_fg and max_bg cannot both be 0")
        check_option("mask_resize", mask_resize, MASK_MODES)
        self.layer = layer
        self.layers = (layer,)
        self.temperature = float(temperature)
        self.max_fg = int(max_fg)
        self.max_bg = int(max_bg)
        self.mask_resize = mask_resize
        self.head = nn.Conv2d(in_channels, dim, kernel_size=1)
        self.generator = torch.Generator().manual_seed(seed)

    def extra_repr(self) -> str:
        return (
            f"layer={self.layer!r}, T={self.temperature}, max_fg={self.max_fg}, max_bg={self.max_bg}, "
            f"mask_resize={self.mask_resize!r}"
        )

    def get_extra_state(self) -> dict[str, Any]:
        return {"generator_state": self.generator.get_state()}

    def set_extra_state(self, state: Any) -> None:
        if isinstance(state, Mapping) and state.get("generator_state") is not None:
            self.generator.set_state(state["generator_state"])

    def project(self, features: Tensor) -> Tensor:
        """(B, C, h, w) -> L2-normalised (B, dim, h, w) embeddings (float32 for half inputs)."""
        z = self.head(features)
        z = z if z.dtype == torch.float64 else z.float()
        return F.normalize(z, dim=1)

    def forward(
        self,
        features: Mapping[str, Tensor],
        mask: Tensor,
        source: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> LossOutput:
        """Mean over images (with at least one anchor that has a positive) of the per-image InfoNCE.

        Args:
            features: tap name -> (B, C, h, w); must hold ``layer``.
            mask: (B, 1, H, W) in [0, 1], (h, w) <= (H, W); binarised at 0.5.
            source: unused (accepted so that every auxiliary loss shares one signature).
            generator: overrides the module's generator for this call.

        Returns:
            :class:`LossOutput` with ``terms["con"]``.

        Raises:
            ValueError: ``layer`` missing from ``features`` (names the ones present), bad shapes.
        """
        if self.layer not in features:
            raise ValueError(f"features lack the layer {self.layer!r}; they have {sorted(features)}")
        feats = features[self.layer]
        check_shape(feats, "B C H W", name=f"features[{self.layer!r}]")
        check_shape(mask, "B 1 H W", name="mask")
        if feats.shape[0] != mask.shape[0]:
            raise ValueError(f"features have batch {feats.shape[0]} but the mask has {mask.shape[0]}")
        size = (int(feats.shape[-2]), int(feats.shape[-1]))
        m = _resize_mask(mask, size, self.mask_resize, True)
        flat = feats.flatten(2)  # (B, C, h*w)
        draws = sample_pixels(
            m, max_fg=self.max_fg, max_bg=self.max_bg, generator=generator or self.generator
        )
        per_image: list[Tensor] = []
        for b, (idx, labels) in enumerate(draws):
            if idx.numel() < 2 or int(labels.unique().numel()) == idx.numel():
                continue
            # the head is a 1x1 convolution: projecting only the sampled pixels gives the same embeddings
            z = self.project(flat[b][:, idx][None, :, :, None])[0, :, :, 0]  # (D, n)
            per_image.append(supervised_contrastive_loss(z.T, labels, temperature=self.temperature))
        total = torch.stack(per_image).mean() if per_image else self.project(feats[:1, :, :1, :1]).sum() * 0.0
        return LossOutput(total, {"con": total.detach()})


# ----------------------------------------------------------------------------------------------------------
# L_deeps
def deep_supervision_weights(depths: Sequence[int]) -> list[float]:
    """Weights ``1/2^depth`` normalised to sum 1 (nnU-Net); ``[0, 1, 2]`` -> ``[4/7, 2/7, 1/7]``.

    Raises:
        ValueError: empty ``depths`` or a negative depth.
    """
    if not depths:
        raise ValueError("deep supervision needs at least one head")
    if any(d < 0 for d in depths):
        raise ValueError(f"depths must be >= 0, got {list(depths)}")
    raw = [0.5**d for d in depths]
    total = sum(raw)
    return [w / total for w in raw]


def deep_supervision_loss(
    logits: Sequence[Tensor], mask: Tensor, weights: Sequence[float], *, eps: float = 1e-6
) -> tuple[Tensor, list[Tensor]]:
    """``Σ_d w_d · (Dice + BCE)(upsample(logits_d), mask)``.

    Args:
        logits: one (B, K, h_d, w_d) float per auxiliary head; upsampled bilinearly (align_corners=False) to
            the mask's (H, W).
        mask: (B, K, H, W) in [0, 1].
        weights: one weight per head (see :func:`deep_supervision_weights`).
        eps: Dice smoothing of :func:`~fdseg.losses.segmentation.dice_bce_loss`.

    Returns:
        ``(total, per-head losses)``; every value is a () float.

    Raises:
        ValueError: length mismatch or bad shapes.
    """
    if len(logits) != len(weights) or not logits:
        raise ValueError(f"got {len(logits)} logits and {len(weights)} weights; need one weight per head")
    check_shape(mask, "B K H W", name="mask")
    size = (int(mask.shape[-2]), int(mask.shape[-1]))
    parts: list[Tensor] = []
    for i, out in enumerate(logits):
        check_shape(out, "B K H W", name=f"logits[{i}]")
        up = out if tuple(out.shape[-2:]) == size else F.interpolate(out, size=size, mode="bilinear")
        parts.append(dice_bce_loss(up, mask, eps=eps))
    total = sum((w * p for w, p in zip(weights, parts)), start=parts[0].new_zeros(()))
    return total, parts


def _depth_of(name: str) -> int:
    if len(name) == 4 and name.startswith("dec") and name[3].isdigit() and name[3] != "0":
        return int(name[3]) - 1
    raise ValueError(
        f"cannot infer the depth of tap {name!r} (canonical decoder names dec1..dec4 have depth 0..3); "
        "pass depths={name: depth}"
    )


class DeepSupervisionLoss(nn.Module):
    """L_deeps: a 1×1 conv head per decoder tap, Dice + BCE at the mask size, weights 1/2^depth normalised.

    Args:
        channels: tap name -> its channels, e.g. ``{"dec4": 512, …, "dec1": 64}`` (a model's decoder taps,
            :func:`decoder_channels`).
        out_channels: logits per head (K, the mask's channels).
        depths: tap name -> depth (log2 of its reduction); default from canonical names (``decK`` -> K-1).

    Raises:
        ValueError: no taps, a tap whose depth cannot be inferred, bad channels.
    """

    def __init__(
        self,
        channels: Mapping[str, int],
        *,
        out_channels: int = 1,
        depths: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("deep supervision needs at least one decoder tap")
        depth_map = dict(depths or {})
        self.layers = tuple(channels)
        self.depths = {
            name: int(depth_map[name]) if name in depth_map else _depth_of(name) for name in channels
        }
        self.weights = dict(zip(self.layers, deep_supervision_weights([self.depths[n] for n in self.layers])))
        for name, c in channels.items():
            if int(c) < 1:
                raise ValueError(f"tap {name!r}: channels must be >= 1, got {c}")
        self.heads = nn.ModuleDict({name: nn.Conv2d(int(c), out_channels, 1) for name, c in channels.items()})

    def extra_repr(self) -> str:
        shown = {k: round(v, 4) for k, v in self.weights.items()}
        return f"weights={shown}"

    def forward(
        self, features: Mapping[str, Tensor], mask: Tensor, source: Tensor | None = None
    ) -> LossOutput:
        """Weighted Dice + BCE of every head against ``mask``.

        Args:
            features: tap name -> (B, C, h, w); must hold every tap of ``channels``.
            mask: (B, K, H, W) in [0, 1].
            source: unused.

        Returns:
            :class:`LossOutput` with ``terms["deeps"]`` (the weighted sum) and ``"deeps/<tap>"`` per head.

        Raises:
            ValueError: a tap missing from ``features`` (names the ones present), bad shapes.
        """
        missing = [n for n in self.layers if n not in features]
        if missing:
            raise ValueError(f"features lack the layers {missing}; they have {sorted(features)}")
        logits = [self.heads[n](features[n]).float() for n in self.layers]
        total, parts = deep_supervision_loss(logits, mask.float(), [self.weights[n] for n in self.layers])
        terms = {"deeps": total.detach(), **{f"deeps/{n}": p.detach() for n, p in zip(self.layers, parts)}}
        return LossOutput(total, terms)


def decoder_channels(feature_info: Sequence[Any]) -> dict[str, int]:
    """The decoder taps (``dec*``) of a model's ``feature_info`` and their channels, deepest first.

    Args:
        feature_info: :class:`fdseg.models.FeatureInfo` items (``name``, ``channels``, ``reduction``).

    Raises:
        ValueError: the model declares no decoder tap.
    """
    taps = [(int(f.reduction), f.name, int(f.channels)) for f in feature_info if f.name.startswith("dec")]
    if not taps:
        names = [f.name for f in feature_info]
        raise ValueError(f"the model declares no decoder taps (dec1..dec4); its taps: {names}")
    return {name: c for _, name, c in sorted(taps, reverse=True)}


def check_finite_weight(name: str, value: float) -> float:
    """Return ``value`` as a float when finite and >= 0; ``ValueError`` naming ``name`` otherwise."""
    w = float(value)
    if not math.isfinite(w) or w < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return w
