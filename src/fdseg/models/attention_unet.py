"""Attention U-Net as released with the paper (``variant="released"``) and as in Jimenez et al. 2022.

``method-spec.md`` §E1. The released Keras model (``attnunet.py:427-526``, default input 512×512×3):

* conv block(n) = [Conv3×3(n, HeNormal, bias 0) → BN → ReLU] × 2; encoder s1 = cb(64) at H, s2 = cb(128) at
  H/2, s3 = cb(256) at H/4 (a 2×2 max-pool after each); bottleneck b1 = cb(512) at H/8.
* decoder block(n)(x, s): x ← bilinear ×2 (no conv); s' = gate(x, s); cb(n)(cat[x, s']).
* attention gate(n)(g, s): a = σ(Conv1×1(n)(ReLU(BN(Conv1×1(n) g) + BN(Conv1×1(n) s)))); out = a ⊙ s. The gate
  has n channels (a channel- and spatial-wise gate) and no BN before the sigmoid.
* head Conv1×1 (the Keras model ends in a sigmoid; this port returns logits).

``variant="jimenez2022"`` is the PyTorch original ``AttU_Net`` of Jimenez et al. (MICCAI 2022): blocks
64/128/256/512 with three poolings plus ``Conv_middle`` 512→512 at H/8, up-conv = nearest ×2 + Conv3×3 +
BN + ReLU, a one-channel gate ψ with BN and F_int = F_g / 2, LeakyReLU in the conv blocks, dropout 0.5 after
every conv block and up-conv, PyTorch default initialisation and BN. Differences from that code, on purpose:
dropout is an ``nn.Dropout`` (active in training only; the original's ``F.dropout`` is always on) and the
decoder is wired correctly (the original feeds the gated skip ``x3`` instead of ``d4`` to its second
up-conv).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from fdseg._checks import check_int, check_option
from fdseg.models._paper_layers import keras_bn, keras_conv_
from fdseg.models.blocks import check_divisible
from fdseg.models.factory import MODELS
from fdseg.models.features import FeatureInfo

__all__ = ["ENCODER_TAPS", "VARIANTS", "AttentionUNet", "AttentionUNetVariant", "EncoderTap"]

AttentionUNetVariant = Literal["released", "jimenez2022"]
EncoderTap = Literal["pre_pool", "pooled_upsampled"]
VARIANTS: tuple[str, ...] = ("released", "jimenez2022")
ENCODER_TAPS: tuple[str, ...] = ("pre_pool", "pooled_upsampled")

#: H and W must be multiples of this (three 2×2 poolings).
_DIVISOR = 8


class _ReleasedConvBlock(nn.Module):
    """[Conv3×3 (HeNormal, zero bias) → BN (Keras) → ReLU] × 2: (B, in, H, W) -> (B, out, H, W) ≥ 0."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn1 = keras_bn(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn2 = keras_bn(out_channels)
        self.act = nn.ReLU()
        keras_conv_(self.conv1, "he_normal")
        keras_conv_(self.conv2, "he_normal")

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.bn1(self.conv1(x)))
        out: Tensor = self.act(self.bn2(self.conv2(x)))
        return out


class _JimenezConvBlock(nn.Module):
    """[Conv3×3 → BN → LeakyReLU(0.01)] × 2 → Dropout(0.5): (B, in, H, W) -> (B, out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act = nn.LeakyReLU(0.01)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.bn1(self.conv1(x)))
        out: Tensor = self.dropout(self.act(self.bn2(self.conv2(x))))
        return out


class _ReleasedGate(nn.Module):
    """Released additive gate with ``channels`` gate channels: (g, s) -> σ(…) ⊙ s, shape of ``s``.

    ``channels`` must equal the skip's channel count (the gate multiplies ``s`` channel-wise).
    """

    def __init__(self, gate_channels: int, skip_channels: int, channels: int) -> None:
        super().__init__()
        self.proj_gate = nn.Conv2d(gate_channels, channels, 1)
        self.norm_gate = keras_bn(channels)
        self.proj_skip = nn.Conv2d(skip_channels, channels, 1)
        self.norm_skip = keras_bn(channels)
        self.psi = nn.Conv2d(channels, channels, 1)
        self.act = nn.ReLU()
        for conv in (self.proj_gate, self.proj_skip, self.psi):
            keras_conv_(conv, "glorot_uniform")

    def forward(self, gate: Tensor, skip: Tensor) -> Tensor:
        """``gate``: (B, Cg, h, w); ``skip``: (B, Cs, h, w) -> (B, Cs, h, w)."""
        mixed = self.act(self.norm_gate(self.proj_gate(gate)) + self.norm_skip(self.proj_skip(skip)))
        return torch.sigmoid(self.psi(mixed)) * skip


class _JimenezGate(nn.Module):
    """Jimenez et al. gate: one-channel ψ = σ(BN(Conv1×1(ReLU(BN(W_g g) + BN(W_x s))))); out = ψ ⊙ s."""

    def __init__(self, gate_channels: int, skip_channels: int, inner_channels: int) -> None:
        super().__init__()
        self.proj_gate = nn.Conv2d(gate_channels, inner_channels, 1)
        self.norm_gate = nn.BatchNorm2d(inner_channels)
        self.proj_skip = nn.Conv2d(skip_channels, inner_channels, 1)
        self.norm_skip = nn.BatchNorm2d(inner_channels)
        self.psi = nn.Conv2d(inner_channels, 1, 1)
        self.norm_psi = nn.BatchNorm2d(1)
        self.act = nn.ReLU()

    def forward(self, gate: Tensor, skip: Tensor) -> Tensor:
        """``gate``: (B, Cg, h, w); ``skip``: (B, Cs, h, w) -> (B, Cs, h, w)."""
        mixed = self.act(self.norm_gate(self.proj_gate(gate)) + self.norm_skip(self.proj_skip(skip)))
        return torch.sigmoid(self.norm_psi(self.psi(mixed))) * skip


class _ReleasedDecoder(nn.Module):
    """Released decoder: bilinear ×2, gated skip, cb(cat[x, gated]): (B, Cin, h, w) -> (B, Cout, 2h, 2w)."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.gate = _ReleasedGate(in_channels, skip_channels, out_channels)
        self.block = _ReleasedConvBlock(in_channels + skip_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(x)
        out: Tensor = self.block(torch.cat([x, self.gate(x, skip)], dim=1))
        return out


class _JimenezDecoder(nn.Module):
    """Jimenez decoder: up-conv (nearest ×2, Conv3×3, BN, ReLU, dropout), gate, cb(cat[gated, x])."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Dropout(0.5),
        )
        self.gate = _JimenezGate(out_channels, skip_channels, out_channels // 2)
        self.block = _JimenezConvBlock(skip_channels + out_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(x)
        out: Tensor = self.block(torch.cat([self.gate(x, skip), x], dim=1))
        return out


@MODELS.register("attention_unet")
class AttentionUNet(nn.Module):
    """Attention U-Net with three poolings, as released with the paper (or as in Jimenez et al. 2022).

    Feature taps (``feature_layers``, canonical name -> module path; channels at ``base_width=w``):

    ========== ======= ========= =========================================================
    name       C       reduction tensor
    ========== ======= ========= =========================================================
    enc1       w       1         s1 (``pre_pool``) or Up(MaxPool(s1)) (``pooled_upsampled``)
    enc2       2w      2         s2, or Up(p2): the pooled output upsampled ×2 back
    enc3       4w      4         s3, or Up(p3)
    bottleneck 8w      8         b1 (released) / ``Conv_middle`` output (jimenez2022)
    dec3       4w      4         first decoder block (d1 in the Keras code)
    dec2       2w      2         d2
    dec1       w       1         d3, the last (full-resolution) decoder block
    ========== ======= ========= =========================================================

    All taps are post-activation (post-dropout in ``jimenez2022`` training). ``pooled_upsampled`` reproduces
    the released code, which computes L_fd on the pooled encoder outputs bilinearly upsampled ×2
    (``attnunet.py:284-290``); the extra upsampling runs only when that option is chosen, in modules
    ``enc_taps.enc1`` … whose outputs feed nothing but the taps.

    Parameter count (``in_channels=3, out_channels=1, base_width=64``, released): 8,135,745 trainable
    parameters; with the 7,424 BatchNorm running means and variances, 8,143,169 — exactly the Keras
    ``model.summary()`` total (8.14 M), which counts BN moving statistics as non-trainable parameters.
    ``variant="jimenez2022"``: 13,373,290 trainable parameters (``Conv_middle`` and the up-convs add to it).

    Args:
        in_channels: image channels C of the ``(B, C, H, W)`` input.
        out_channels: logit channels K (1 for binary; K for a K-class head).
        base_width: channels of the first level (paper: 64); levels use w, 2w, 4w, 8w.
        variant: ``"released"`` (the paper's Keras model) or ``"jimenez2022"``.
        enc_tap: ``"pre_pool"`` (the skip tensors s_l, default) or ``"pooled_upsampled"`` (as coded).

    Raises:
        ValueError: unknown ``variant``/``enc_tap`` (lists the valid ones), or a non-positive size.

    Example:
        >>> model = AttentionUNet(in_channels=3, out_channels=1, base_width=4)
        >>> model(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 1, 32, 32])
    """

    feature_layers: dict[str, str]
    feature_info: tuple[FeatureInfo, ...]

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 1,
        base_width: int = 64,
        variant: AttentionUNetVariant = "released",
        enc_tap: EncoderTap = "pre_pool",
    ) -> None:
        super().__init__()
        check_option("variant", variant, VARIANTS)
        check_option("enc_tap", enc_tap, ENCODER_TAPS)
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.out_channels = check_int("out_channels", out_channels, minimum=1)
        w = check_int("base_width", base_width, minimum=2 if variant == "jimenez2022" else 1)
        self.variant = variant
        self.enc_tap = enc_tap
        widths = (w, 2 * w, 4 * w, 8 * w)

        block: type[_ReleasedConvBlock] | type[_JimenezConvBlock]
        decoder: type[_ReleasedDecoder] | type[_JimenezDecoder]
        if variant == "released":
            block, decoder = _ReleasedConvBlock, _ReleasedDecoder
            self.bottleneck: nn.Module = _ReleasedConvBlock(widths[2], widths[3])
        else:
            block, decoder = _JimenezConvBlock, _JimenezDecoder
            self.bottleneck = nn.Sequential(
                _JimenezConvBlock(widths[2], widths[3]), _JimenezConvBlock(widths[3], widths[3])
            )
        self.enc1 = block(in_channels, widths[0])
        self.enc2 = block(widths[0], widths[1])
        self.enc3 = block(widths[1], widths[2])
        self.pool1 = nn.MaxPool2d(2)
        self.pool2 = nn.MaxPool2d(2)
        self.pool3 = nn.MaxPool2d(2)
        self.dec3 = decoder(widths[3], widths[2], widths[2])
        self.dec2 = decoder(widths[2], widths[1], widths[1])
        self.dec1 = decoder(widths[1], widths[0], widths[0])
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        if variant == "released":
            keras_conv_(self.head, "glorot_uniform")

        self.enc_taps: nn.ModuleDict | None = None
        if enc_tap == "pooled_upsampled":
            self.enc_taps = nn.ModuleDict(
                {
                    name: nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
                    for name in ("enc1", "enc2", "enc3")
                }
            )
        encoder_paths = {
            name: (f"enc_taps.{name}" if enc_tap == "pooled_upsampled" else name)
            for name in ("enc1", "enc2", "enc3")
        }
        self.feature_layers = {
            **encoder_paths,
            "bottleneck": "bottleneck",
            "dec3": "dec3",
            "dec2": "dec2",
            "dec1": "dec1",
        }
        channels = {"enc1": w, "enc2": 2 * w, "enc3": 4 * w, "bottleneck": 8 * w}
        channels |= {"dec3": 4 * w, "dec2": 2 * w, "dec1": w}
        reductions = {"enc1": 1, "enc2": 2, "enc3": 4, "bottleneck": 8, "dec3": 4, "dec2": 2, "dec1": 1}
        self.feature_info = tuple(
            FeatureInfo(name, channels[name], reductions[name]) for name in self.feature_layers
        )

    @property
    def divisor(self) -> int:
        """H and W of the input must be multiples of this (three 2×2 poolings)."""
        return _DIVISOR

    def forward_intermediates(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and every declared feature (the tensors :class:`FeatureTap` would record).

        Args:
            x: ``(B, in_channels, H, W)`` float image, H and W multiples of 8.

        Returns:
            ``(logits, feats)``: logits ``(B, out_channels, H, W)`` float (no sigmoid/softmax); feats ordered
            like ``feature_info``, name -> ``(B, channels, H // reduction, W // reduction)``.

        Raises:
            ValueError: wrong rank or channels, or H/W not divisible by 8 (the message suggests a padding).
        """
        check_divisible(type(self).__name__, x, _DIVISOR, self.in_channels)
        s1 = self.enc1(x)
        p1 = self.pool1(s1)
        s2 = self.enc2(p1)
        p2 = self.pool2(s2)
        s3 = self.enc3(p2)
        p3 = self.pool3(s3)
        feats = {"enc1": s1, "enc2": s2, "enc3": s3}
        if self.enc_taps is not None:
            # The released code's encoder taps; their outputs feed nothing but the feature dict and hooks.
            for name, pooled in (("enc1", p1), ("enc2", p2), ("enc3", p3)):
                feats[name] = self.enc_taps[name](pooled)
        feats["bottleneck"] = self.bottleneck(p3)
        feats["dec3"] = self.dec3(feats["bottleneck"], s3)
        feats["dec2"] = self.dec2(feats["dec3"], s2)
        feats["dec1"] = self.dec1(feats["dec2"], s1)
        logits: Tensor = self.head(feats["dec1"])
        return logits, feats

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` float -> ``(B, out_channels, H, W)`` logits; H, W multiples of 8."""
        return self.forward_intermediates(x)[0]
