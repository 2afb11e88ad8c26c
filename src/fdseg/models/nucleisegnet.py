"""NucleiSegNet (Lal et al. 2021) as released with the paper (``method-spec.md`` §E3).

The released Keras model (``nusegnet.py:433-569``) is a faithful port of ``shyamfec/NucleiSegNet`` (input
512×512×3 instead of 256):

* every convolution applies its ReLU inside the layer, *then* BatchNorm (conv → ReLU → BN), BN momentum 0.5
  (PyTorch 0.5) and eps 1e-3; kernels ``glorot_normal`` (truncated) with bias 0.1 unless noted;
* robust residual block RRB(f): x1 = BN(ReLU(Conv3×3 in)); x2 = BN(ReLU(SepConv3×3 x1)); x3 = BN(ReLU(Conv3×3
  x2)); out = BN(ReLU(Conv3×3(cat[in, x3]))); BN β starts at 0.01; the separable conv (depthwise 3×3 without
  bias, then pointwise 1×1 with bias 0.1) uses ``glorot_uniform`` kernels;
* encoder RRB 32/64/128/256 (2×2 max-pool between levels), bottleneck 3 × [Conv3×3 → ReLU → BN] with 512;
* attention gate(x = skip, g = deeper, f): g' = ReLU(Conv1×1_f g); θ = ReLU(Conv3×3_{f/2} x);
  φ = ReLU(Conv3×3_{f/2} g'); q = ReLU(θ + bilinear×2(φ)); a = σ(BN(ReLU(Conv1×1_f q))); out = a ⊙ x
  (the last 1×1 conv has Keras-default ``glorot_uniform`` and zero bias, its BN β 0);
* decoder block: cat[ReLU(ConvTranspose2×2 s2 (f) inp), gate(skip, inp)] then 2 × [Conv3×3 → ReLU → BN] (f);
* head Conv1×1 (``glorot_uniform``, zero bias); the Keras model ends in a sigmoid, this port returns logits.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fdseg._checks import check_int
from fdseg.models._paper_layers import keras_bn, keras_conv_
from fdseg.models.blocks import check_divisible
from fdseg.models.factory import MODELS
from fdseg.models.features import FeatureInfo

__all__ = ["NucleiSegNet"]

#: H and W must be multiples of this (four 2×2 poolings).
_DIVISOR = 16
#: Keras BN settings of the released model.
_BN_MOMENTUM = 0.5
_BN_EPS = 1e-3
#: Bias initialiser of every conv with ``bias_initializer=Constant(0.1)``.
_BIAS = 0.1


def _bn(channels: int, *, beta: float = 0.0) -> nn.BatchNorm2d:
    return keras_bn(channels, momentum=_BN_MOMENTUM, eps=_BN_EPS, beta=beta)


class _ConvReluBN(nn.Module):
    """Conv k×k ('same', glorot_normal, bias 0.1) → ReLU → BN: (B, in, H, W) -> (B, out, H, W), any sign."""

    def __init__(
        self, in_channels: int, out_channels: int, *, kernel_size: int = 3, beta: float = 0.0
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.norm = _bn(out_channels, beta=beta)
        self.act = nn.ReLU()
        keras_conv_(self.conv, "glorot_normal", bias=_BIAS)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.norm(self.act(self.conv(x)))
        return out


class _SepConvReluBN(nn.Module):
    """Separable conv (depthwise 3×3, pointwise 1×1 + bias 0.1; glorot_uniform) → ReLU → BN (β 0.01)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)
        self.norm = _bn(out_channels, beta=0.01)
        self.act = nn.ReLU()
        keras_conv_(self.depthwise, "glorot_uniform")
        keras_conv_(self.pointwise, "glorot_uniform", bias=_BIAS)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.norm(self.act(self.pointwise(self.depthwise(x))))
        return out


class _RobustResidualBlock(nn.Module):
    """RRB(f): three conv layers, then a conv over cat[input, x3]: (B, in, H, W) -> (B, f, H, W)."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.conv1 = _ConvReluBN(in_channels, channels, beta=0.01)
        self.conv2 = _SepConvReluBN(channels, channels)
        self.conv3 = _ConvReluBN(channels, channels, beta=0.01)
        self.fuse = _ConvReluBN(in_channels + channels, channels, beta=0.01)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv3(self.conv2(self.conv1(x)))
        out: Tensor = self.fuse(torch.cat([x, y], dim=1))
        return out


class _AttentionGate(nn.Module):
    """NucleiSegNet gate: (skip (B, f, 2h, 2w), deeper (B, Cg, h, w)) -> (B, f, 2h, 2w)."""

    def __init__(self, skip_channels: int, gate_channels: int, channels: int) -> None:
        super().__init__()
        inner = channels // 2
        self.proj_gate = nn.Conv2d(gate_channels, channels, 1)
        self.theta = nn.Conv2d(skip_channels, inner, 3, padding=1)
        self.phi = nn.Conv2d(channels, inner, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.psi = nn.Conv2d(inner, channels, 1)
        self.norm = _bn(channels)
        self.act = nn.ReLU()
        for conv in (self.proj_gate, self.theta, self.phi):
            keras_conv_(conv, "glorot_normal", bias=_BIAS)
        keras_conv_(self.psi, "glorot_uniform")

    def forward(self, skip: Tensor, gate: Tensor) -> Tensor:
        gate = self.act(self.proj_gate(gate))
        mixed = self.act(self.act(self.theta(skip)) + self.up(self.act(self.phi(gate))))
        return torch.sigmoid(self.norm(self.act(self.psi(mixed)))) * skip


class _DecoderBlock(nn.Module):
    """Transposed conv ×2 and gated skip, concatenated, then 2 × conv: (B, Cin, h, w) -> (B, f, 2h, 2w)."""

    def __init__(self, in_channels: int, skip_channels: int, channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, channels, 2, stride=2)
        self.act = nn.ReLU()
        self.gate = _AttentionGate(skip_channels, in_channels, channels)
        self.conv1 = _ConvReluBN(2 * channels, channels)
        self.conv2 = _ConvReluBN(channels, channels)
        keras_conv_(self.up, "glorot_normal", bias=_BIAS)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        merged = torch.cat([self.act(self.up(x)), self.gate(skip, x)], dim=1)
        out: Tensor = self.conv2(self.conv1(merged))
        return out


@MODELS.register("nucleisegnet")
class NucleiSegNet(nn.Module):
    """NucleiSegNet as released with the paper: robust residual encoder, attention decoder, four poolings.

    Feature taps (``feature_layers``; channels at ``base_width=w``, paper w = 32). All taps end in BatchNorm,
    so they can be negative.

    ========== ===== ========= ==========================================
    name       C     reduction tensor (Keras name)
    ========== ===== ========= ==========================================
    enc1       w     1         x_conv1 (RRB)
    enc2       2w    2         x_conv2
    enc3       4w    4         x_conv3
    enc4       8w    8         x_conv4
    bottleneck 16w   16        x_conv5 (3 × conv)
    dec4       8w    8         u_conv4 (first decoder block)
    dec3       4w    4         u_conv3
    dec2       2w    2         u_conv2
    dec1       w     1         u_conv1 (last, full resolution)
    ========== ===== ========= ==========================================

    Parameter count (``in_channels=3, out_channels=1, base_width=32``): 12,395,713 trainable parameters; with
    the 9,792 BatchNorm running means and variances, 12,405,505, which is the Keras ``model.summary()`` total
    (12.41 M; Keras counts BN moving statistics as non-trainable parameters). The trainable count alone rounds
    to 12.40 M (0.08 % below). A Keras ``SeparableConv2D`` has one bias, after the pointwise step, as here.

    Args:
        in_channels: image channels C of the ``(B, C, H, W)`` input.
        out_channels: logit channels K (1 for binary; K for a K-class head).
        base_width: channels of the first level (paper: 32); levels use w, 2w, 4w, 8w, 16w. At least 2 (the
            gates use ``w // 2`` inner channels).

    Raises:
        TypeError: a size that is not an int.
        ValueError: a size below its minimum.

    Example:
        >>> model = NucleiSegNet(in_channels=3, out_channels=1, base_width=4)
        >>> model(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 1, 32, 32])
    """

    feature_layers: dict[str, str]
    feature_info: tuple[FeatureInfo, ...]

    def __init__(self, *, in_channels: int = 3, out_channels: int = 1, base_width: int = 32) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.out_channels = check_int("out_channels", out_channels, minimum=1)
        w = check_int("base_width", base_width, minimum=2)
        widths = (w, 2 * w, 4 * w, 8 * w, 16 * w)
        self.enc1 = _RobustResidualBlock(in_channels, widths[0])
        self.enc2 = _RobustResidualBlock(widths[0], widths[1])
        self.enc3 = _RobustResidualBlock(widths[1], widths[2])
        self.enc4 = _RobustResidualBlock(widths[2], widths[3])
        self.pool1 = nn.MaxPool2d(2)
        self.pool2 = nn.MaxPool2d(2)
        self.pool3 = nn.MaxPool2d(2)
        self.pool4 = nn.MaxPool2d(2)
        self.bottleneck = nn.Sequential(
            _ConvReluBN(widths[3], widths[4]),
            _ConvReluBN(widths[4], widths[4]),
            _ConvReluBN(widths[4], widths[4]),
        )
        self.dec4 = _DecoderBlock(widths[4], widths[3], widths[3])
        self.dec3 = _DecoderBlock(widths[3], widths[2], widths[2])
        self.dec2 = _DecoderBlock(widths[2], widths[1], widths[1])
        self.dec1 = _DecoderBlock(widths[1], widths[0], widths[0])
        self.head = nn.Conv2d(widths[0], out_channels, 1)
        keras_conv_(self.head, "glorot_uniform")

        names = ("enc1", "enc2", "enc3", "enc4", "bottleneck", "dec4", "dec3", "dec2", "dec1")
        self.feature_layers = {name: name for name in names}
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
        feats["bottleneck"] = self.bottleneck(self.pool4(feats["enc4"]))
        feats["dec4"] = self.dec4(feats["bottleneck"], feats["enc4"])
        feats["dec3"] = self.dec3(feats["dec4"], feats["enc3"])
        feats["dec2"] = self.dec2(feats["dec3"], feats["enc2"])
        feats["dec1"] = self.dec1(feats["dec2"], feats["enc1"])
        logits: Tensor = self.head(feats["dec1"])
        return logits, feats

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_channels, H, W)`` float -> ``(B, out_channels, H, W)`` logits; H, W multiples of 16."""
        return self.forward_intermediates(x)[0]
