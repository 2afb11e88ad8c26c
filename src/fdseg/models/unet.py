"""The plain U-Net (Ronneberger et al., 2015) with named taps for every level.

Module names are the canonical tap names: ``enc1`` (full resolution), ``enc2`` … ``enc{depth}``,
``bottleneck`` (reduction ``2**depth``), ``dec{depth}`` … ``dec1`` (full resolution), then ``head``
(1x1 conv to logits). ``feature_layers`` is therefore the identity map on the declared names.
"""

from __future__ import annotations

from torch import Tensor, nn

from fdseg._checks import check_int, check_option
from fdseg.models.blocks import NORMS, UPSAMPLERS, ConvBlock, DownBlock, UpBlock, check_divisible
from fdseg.models.factory import MODELS
from fdseg.models.features import FeatureInfo

__all__ = ["UNet"]

_DEPTHS = (1, 2, 3, 4)


@MODELS.register("unet")
class UNet(nn.Module):
    """Configurable 2D U-Net returning logits, with all encoder, bottleneck and decoder taps named.

    Channels at level ``i`` (1-based) are ``base_width * 2**(i-1)``; the bottleneck has
    ``base_width * 2**depth``. Each block is [conv3x3 -> norm -> ReLU] x 2.

    Args:
        in_channels: C of the (B, C, H, W) float input (images in [0, 1]).
        out_channels: K of the (B, K, H, W) logits.
        base_width: channels of ``enc1``; 64 in the original U-Net.
        depth: number of downsamplings, 1 to 4; H and W must be divisible by ``2**depth``.
        up: ``"transpose"`` (2x2 transposed conv) or ``"bilinear"``.
        norm: ``"batch"``, ``"instance"``, ``"group"`` or ``"none"``.

    Raises:
        ValueError: a non-positive size, an unknown ``depth``/``up``/``norm`` (the message lists the choices).

    Example:
        >>> import torch
        >>> model = UNet(in_channels=3, out_channels=2, base_width=4, depth=2)
        >>> model(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 2, 32, 32])
        >>> [(f.name, f.channels, f.reduction) for f in model.feature_info][:3]
        [('enc1', 4, 1), ('enc2', 8, 2), ('bottleneck', 16, 4)]
    """

    feature_layers: dict[str, str]
    feature_info: tuple[FeatureInfo, ...]

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        base_width: int = 64,
        depth: int = 4,
        up: str = "transpose",
        norm: str = "batch",
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("base_width", base_width),
        ):
            check_int(f"UNet: {name}", value)
        check_option("depth", depth, _DEPTHS)
        check_option("up", up, UPSAMPLERS)
        check_option("norm", norm, NORMS)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.depth = depth
        widths = [base_width * 2**i for i in range(depth + 1)]  # widths[depth] is the bottleneck

        self.enc_names = [f"enc{i}" for i in range(1, depth + 1)]
        self.dec_names = [f"dec{i}" for i in range(depth, 0, -1)]
        self.add_module("enc1", ConvBlock(in_channels, widths[0], norm=norm))
        for i in range(2, depth + 1):
            self.add_module(f"enc{i}", DownBlock(widths[i - 2], widths[i - 1], norm=norm))
        self.bottleneck = DownBlock(widths[depth - 1], widths[depth], norm=norm)
        for i in range(depth, 0, -1):
            self.add_module(f"dec{i}", UpBlock(widths[i], widths[i - 1], widths[i - 1], up=up, norm=norm))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

        info = [FeatureInfo(f"enc{i}", widths[i - 1], 2 ** (i - 1)) for i in range(1, depth + 1)]
        info.append(FeatureInfo("bottleneck", widths[depth], 2**depth))
        info += [FeatureInfo(f"dec{i}", widths[i - 1], 2 ** (i - 1)) for i in range(depth, 0, -1)]
        self.feature_info = tuple(info)
        self.feature_layers = {f.name: f.name for f in info}

    @property
    def divisor(self) -> int:
        """H and W of the input must be multiples of this (``2**depth``)."""
        return 1 << self.depth

    def forward_intermediates(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and every declared feature.

        Args:
            x: (B, in_channels, H, W) float, H and W divisible by ``2**depth``.

        Returns:
            ``(logits, feats)``: logits (B, out_channels, H, W) float; feats ordered like ``feature_info``,
            name -> (B, channels, H // reduction, W // reduction).

        Raises:
            ValueError: wrong rank or channel count, or H/W not divisible by ``2**depth`` (the message
                suggests a padded size).
        """
        check_divisible("UNet", x, self.divisor, self.in_channels)
        feats: dict[str, Tensor] = {}
        skips: list[Tensor] = []
        for name in self.enc_names:
            x = self.get_submodule(name)(x)
            feats[name] = x
            skips.append(x)
        x = self.bottleneck(x)
        feats["bottleneck"] = x
        for name, skip in zip(self.dec_names, reversed(skips)):
            x = self.get_submodule(name)(x, skip)
            feats[name] = x
        return self.head(x), feats

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) float -> (B, out_channels, H, W) logits; H, W divisible by ``2**depth``."""
        logits, _ = self.forward_intermediates(x)
        return logits
