"""CMU-Net (Tang et al. 2023) as released with the paper, and as in the CMU-Net authors' code.

``method-spec.md`` §E2. The released Keras model (``cmunet.py:431-553``, input 256×256×3, l = 7, k = 7):

* conv block(n) = [Conv3×3 → BN → ReLU] × 2; encoder c1..c5 with 64/128/256/512/1024 channels, a 2×2 max-pool
  between levels, so c5 is at H/16;
* ConvMixer, l blocks on c5: r = x; x = BN(ReLU(Conv1×1(BN(ReLU(DWConv k×k x))))); x = x + r (ReLU, and the
  residual spans both convolutions);
* MSAG(n)(x): BN(Conv1×1 x), BN(Conv3×3 x), BN(Conv3×3 dilation 2 x) through ONE BatchNorm layer shared by the
  three branches; a = σ(Conv1×1_n(ReLU(cat[…]))); out = x·a + x;
* up-conv(n) = nearest ×2 → Conv3×3 → BN → ReLU; decoder u = cb(n)(cat[MSAG(skip), up-conv(n)(deeper)]);
* head Conv1×1 (the Keras model ends in a sigmoid; this port returns logits).

Keras defaults apply throughout (``glorot_uniform`` kernels, zero biases, BN momentum 0.99 / eps 1e-3).

``variant="original"`` follows ``FengheTan9/CMU-Net`` (PyTorch): GELU in the ConvMixer, whose residual
wraps only the depthwise part (x = x + BN(GELU(DW x)); x = BN(GELU(Conv1×1 x))), three separate BNs in MSAG
plus a BN inside the vote convolution before the sigmoid, and PyTorch's default initialisation and BN.
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

__all__ = ["VARIANTS", "CMUNet", "CMUNetVariant"]

CMUNetVariant = Literal["released", "original"]
VARIANTS: tuple[str, ...] = ("released", "original")

#: H and W must be multiples of this (four 2×2 poolings).
_DIVISOR = 16


def _bn(channels: int, keras: bool) -> nn.BatchNorm2d:
    """Keras-default BN for the released variant, PyTorch-default BN for the original."""
    return keras_bn(channels) if keras else nn.BatchNorm2d(channels)


def _conv(
    in_channels: int, out_channels: int, kernel_size: int, keras: bool, *, groups: int = 1, dilation: int = 1
) -> nn.Conv2d:
    """A 'same'-padded conv with bias; Keras init (glorot_uniform, zero bias) for the released variant."""
    conv = nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        padding=dilation * (kernel_size // 2),
        dilation=dilation,
        groups=groups,
    )
    if keras:
        keras_conv_(conv, "glorot_uniform")
    return conv


class _ConvBlock(nn.Module):
    """[Conv3×3 → BN → ReLU] × 2: (B, in, H, W) -> (B, out, H, W) ≥ 0."""

    def __init__(self, in_channels: int, out_channels: int, keras: bool) -> None:
        super().__init__()
        self.conv1 = _conv(in_channels, out_channels, 3, keras)
        self.bn1 = _bn(out_channels, keras)
        self.conv2 = _conv(out_channels, out_channels, 3, keras)
        self.bn2 = _bn(out_channels, keras)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.bn1(self.conv1(x)))
        out: Tensor = self.act(self.bn2(self.conv2(x)))
        return out


class _MixerLayer(nn.Module):
    """One ConvMixer layer on (B, C, h, w), shape-preserving.

    Released: x + BN(ReLU(PW(BN(ReLU(DW x))))). Original: y = x + BN(GELU(DW x)); BN(GELU(PW y)).
    """

    def __init__(self, channels: int, kernel_size: int, keras: bool) -> None:
        super().__init__()
        self.residual_over_both = keras
        self.depthwise = _conv(channels, channels, kernel_size, keras, groups=channels)
        self.norm1 = _bn(channels, keras)
        self.pointwise = _conv(channels, channels, 1, keras)
        self.norm2 = _bn(channels, keras)
        self.act: nn.Module = nn.ReLU() if keras else nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        if self.residual_over_both:
            y = self.norm1(self.act(self.depthwise(x)))
            residual: Tensor = x + self.norm2(self.act(self.pointwise(y)))
            return residual
        x = x + self.norm1(self.act(self.depthwise(x)))
        out: Tensor = self.norm2(self.act(self.pointwise(x)))
        return out


class _SharedNormMSAG(nn.Module):
    """Released multi-scale attention gate: ONE BN module for all three branches. (B, C, h, w) -> same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pointwise = _conv(channels, channels, 1, True)
        self.ordinary = _conv(channels, channels, 3, True)
        self.dilated = _conv(channels, channels, 3, True, dilation=2)
        self.norm = keras_bn(channels)
        self.vote = _conv(3 * channels, channels, 1, True)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        branches = [self.norm(self.pointwise(x)), self.norm(self.ordinary(x)), self.norm(self.dilated(x))]
        attention = torch.sigmoid(self.vote(self.act(torch.cat(branches, dim=1))))
        return x * attention + x


class _MSAG(nn.Module):
    """Original multi-scale attention gate: a BN per branch and in the vote conv. (B, C, h, w) -> same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pointwise = nn.Conv2d(channels, channels, 1)
        self.norm_pointwise = nn.BatchNorm2d(channels)
        self.ordinary = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm_ordinary = nn.BatchNorm2d(channels)
        self.dilated = nn.Conv2d(channels, channels, 3, padding=2, dilation=2)
        self.norm_dilated = nn.BatchNorm2d(channels)
        self.vote = nn.Conv2d(3 * channels, channels, 1)
        self.norm_vote = nn.BatchNorm2d(channels)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        branches = [
            self.norm_pointwise(self.pointwise(x)),
            self.norm_ordinary(self.ordinary(x)),
            self.norm_dilated(self.dilated(x)),
        ]
        attention = torch.sigmoid(self.norm_vote(self.vote(self.act(torch.cat(branches, dim=1)))))
        return x + x * attention


class _DecoderBlock(nn.Module):
    """cb(cat[MSAG(skip), up-conv(x)]): x (B, Cin, h, w), skip (B, Cs, 2h, 2w) -> (B, out, 2h, 2w)."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, keras: bool) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            _conv(in_channels, out_channels, 3, keras),
            _bn(out_channels, keras),
            nn.ReLU(),
        )
        self.skip_gate: nn.Module = _SharedNormMSAG(skip_channels) if keras else _MSAG(skip_channels)
        self.block = _ConvBlock(skip_channels + out_channels, out_channels, keras)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        out: Tensor = self.block(torch.cat([self.skip_gate(skip), self.up(x)], dim=1))
        return out


@MODELS.register("cmunet")
class CMUNet(nn.Module):
    """CMU-Net: U-Net encoder, ConvMixer bottleneck at H/16, MSAG-gated skips, up-conv decoder.

    Feature taps (``feature_layers``; channels at ``base_width=w``, paper w = 64). Encoder and decoder taps
    are post-ReLU (≥ 0); the bottleneck, the ConvMixer output, ends in BN + residual and can be negative.

    ========== ===== ========= =================================================
    name       C     reduction tensor (Keras name)
    ========== ===== ========= =================================================
    enc1       w     1         c1
    enc2       2w    2         c2
    enc3       4w    4         c3
    enc4       8w    8         c4
    bottleneck 16w   16        cm, the ConvMixer output (module ``mixer``)
    dec4       8w    8         u5 (first decoder block)
    dec3       4w    4         u4
    dec2       2w    2         u3
    dec1       w     1         u2 (last, full resolution)
    ========== ===== ========= =================================================

    Parameter count (``in_channels=3, out_channels=1, base_width=64``, released, l = k = 7): 49,926,593
    trainable parameters; with the 44,288 BatchNorm running means and variances, 49,970,881, which is the
    Keras ``model.summary()`` total (49.97 M; Keras counts BN moving statistics as non-trainable parameters,
    and each shared MSAG BN once). The trainable count alone is 49.93 M (0.09 % below).
    ``variant="original"``: 49,932,353 trainable (its extra MSAG BNs).

    Args:
        in_channels: image channels C of the ``(B, C, H, W)`` input.
        out_channels: logit channels K (1 for binary; K for a K-class head).
        base_width: channels of the first level (paper: 64); levels use w, 2w, 4w, 8w, 16w.
        variant: ``"released"`` (the paper's Keras model) or ``"original"`` (the CMU-Net authors' code).
        mixer_depth: number of ConvMixer layers l (paper: 7).
        mixer_kernel: depthwise kernel size k of the ConvMixer, odd (paper: 7).

    Raises:
        TypeError: a size that is not an int.
        ValueError: unknown ``variant`` (lists the valid ones), a size below its minimum, or an even kernel.

    Example:
        >>> model = CMUNet(in_channels=3, out_channels=1, base_width=4, mixer_depth=1)
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
        variant: CMUNetVariant = "released",
        mixer_depth: int = 7,
        mixer_kernel: int = 7,
    ) -> None:
        super().__init__()
        check_option("variant", variant, VARIANTS)
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.out_channels = check_int("out_channels", out_channels, minimum=1)
        w = check_int("base_width", base_width, minimum=1)
        check_int("mixer_depth", mixer_depth, minimum=0)
        if check_int("mixer_kernel", mixer_kernel, minimum=1) % 2 == 0:
            raise ValueError(f"mixer_kernel must be odd ('same' padding), got {mixer_kernel}")
        self.variant = variant
        keras = variant == "released"
        widths = (w, 2 * w, 4 * w, 8 * w, 16 * w)

        self.enc1 = _ConvBlock(in_channels, widths[0], keras)
        self.enc2 = _ConvBlock(widths[0], widths[1], keras)
        self.enc3 = _ConvBlock(widths[1], widths[2], keras)
        self.enc4 = _ConvBlock(widths[2], widths[3], keras)
        self.pool1 = nn.MaxPool2d(2)
        self.pool2 = nn.MaxPool2d(2)
        self.pool3 = nn.MaxPool2d(2)
        self.pool4 = nn.MaxPool2d(2)
        self.bottleneck_conv = _ConvBlock(widths[3], widths[4], keras)
        self.mixer = nn.Sequential(*(_MixerLayer(widths[4], mixer_kernel, keras) for _ in range(mixer_depth)))
        self.dec4 = _DecoderBlock(widths[4], widths[3], widths[3], keras)
        self.dec3 = _DecoderBlock(widths[3], widths[2], widths[2], keras)
        self.dec2 = _DecoderBlock(widths[2], widths[1], widths[1], keras)
        self.dec1 = _DecoderBlock(widths[1], widths[0], widths[0], keras)
        self.head = _conv(widths[0], out_channels, 1, keras)

        names = ("enc1", "enc2", "enc3", "enc4", "bottleneck", "dec4", "dec3", "dec2", "dec1")
        self.feature_layers = {name: ("mixer" if name == "bottleneck" else name) for name in names}
        levels = {"enc1": 0, "enc2": 1, "enc3": 2, "enc4": 3, "bottleneck": 4}
        levels |= {"dec4": 3, "dec3": 2, "dec2": 1, "dec1": 0}
        self.feature_info = tuple(FeatureInfo(n, widths[levels[n]], 2 ** levels[n]) for n in names)

    @property
    def divisor(self) -> int:
        """H and W of the input must be multiples of this (four 2×2 poolings)."""
        return _DIVISOR

    def forward_intermediates(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and every declared feature (the tensors :class:`FeatureTap` would record).

        Args:
            x: ``(B, in_channels, H, W)`` float image, H and W multiples of 16.

        Returns:
            ``(logits, feats)``: logits ``(B, out_channels, H, W)`` float (no sigmoid/softmax); feats ordered
            like ``feature_info``, name -> ``(B, channels, H // reduction, W // reduction)``.

        Raises:
            ValueError: wrong rank or channels, or H/W not divisible by 16 (the message suggests a padding).
        """
        check_divisible(type(self).__name__, x, _DIVISOR, self.in_channels)
        feats: dict[str, Tensor] = {"enc1": self.enc1(x)}
        feats["enc2"] = self.enc2(self.pool1(feats["enc1"]))
        feats["enc3"] = self.enc3(self.pool2(feats["enc2"]))
        feats["enc4"] = self.enc4(self.pool3(feats["enc3"]))
        feats["bottleneck"] = self.mixer(self.bottleneck_conv(self.pool4(feats["enc4"])))
        feats["dec4"] = self.dec4(feats["bottleneck"], feats["enc4"])
        feats["dec3"] = self.dec3(feats["dec4"], feats["enc3"])
        feats["dec2"] = self.dec2(feats["dec3"], feats["enc2"])
        feats["dec1"] = self.dec1(feats["dec2"], feats["enc1"])
        logits: Tensor = self.head(feats["dec1"])
        return logits, feats

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` float -> ``(B, out_channels, H, W)`` logits; H, W multiples of 16."""
        return self.forward_intermediates(x)[0]
