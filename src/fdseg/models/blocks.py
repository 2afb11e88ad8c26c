"""Building blocks shared by the U-Net family: norms, the double conv, encoder and decoder steps.

All blocks take and return (B, C, h, w) float tensors; each module instance is used once per forward pass
(so a forward hook on it sees exactly one output).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fdseg._checks import check_option

__all__ = ["NORMS", "UPSAMPLERS", "ConvBlock", "DownBlock", "UpBlock", "check_divisible", "make_norm"]

#: Normalisation choices accepted by :func:`make_norm`.
NORMS: tuple[str, ...] = ("batch", "instance", "group", "none")
#: Upsampling choices accepted by :class:`UpBlock`.
UPSAMPLERS: tuple[str, ...] = ("transpose", "bilinear")


def make_norm(norm: str, channels: int) -> nn.Module:
    """A 2D normalisation layer for ``channels`` channels.

    Args:
        norm: ``"batch"`` (BatchNorm2d), ``"instance"`` (affine InstanceNorm2d), ``"group"`` (GroupNorm with
            8 groups, or fewer when ``channels`` is not divisible by 8) or ``"none"`` (identity).
        channels: number of channels, > 0.

    Raises:
        ValueError: unknown ``norm`` (the message lists the choices).
    """
    check_option("norm", norm, NORMS)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """[conv3x3 -> norm -> ReLU] x 2; spatial size is preserved.

    Convolutions have no bias when a norm follows them.

    Args:
        in_channels: C_in of the (B, C_in, h, w) input.
        out_channels: C_out of the (B, C_out, h, w) output.
        norm: see :func:`make_norm`.
        mid_channels: channels after the first conv (default ``out_channels``).
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, norm: str = "batch", mid_channels: int | None = None
    ) -> None:
        mid = out_channels if mid_channels is None else mid_channels
        bias = norm == "none"
        super().__init__(
            nn.Conv2d(in_channels, mid, 3, padding=1, bias=bias),
            make_norm(norm, mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 3, padding=1, bias=bias),
            make_norm(norm, out_channels),
            nn.ReLU(inplace=True),
        )


class DownBlock(nn.Sequential):
    """2x2 max-pool then :class:`ConvBlock`: (B, C_in, h, w) -> (B, C_out, h/2, w/2)."""

    def __init__(self, in_channels: int, out_channels: int, *, norm: str = "batch") -> None:
        super().__init__(nn.MaxPool2d(2), ConvBlock(in_channels, out_channels, norm=norm))


class UpBlock(nn.Module):
    """Upsample x2, concatenate the skip connection, then :class:`ConvBlock`.

    ``up="transpose"`` uses a 2x2 stride-2 transposed conv to ``in_channels // 2`` channels;
    ``up="bilinear"`` upsamples bilinearly (align_corners=False) and keeps ``in_channels``.

    Args:
        in_channels: C of the deeper (B, C, h, w) input.
        skip_channels: C_s of the (B, C_s, 2h, 2w) skip connection.
        out_channels: C_out of the (B, C_out, 2h, 2w) output.
        up: ``"transpose"`` or ``"bilinear"``.
        norm: see :func:`make_norm`.

    Raises:
        ValueError: unknown ``up`` or ``norm``.
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        *,
        up: str = "transpose",
        norm: str = "batch",
    ) -> None:
        super().__init__()
        check_option("up", up, UPSAMPLERS)
        self.up: nn.Module
        if up == "transpose":
            self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, 2, stride=2)
            up_channels = in_channels // 2
        else:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            up_channels = in_channels
        self.conv = ConvBlock(up_channels + skip_channels, out_channels, norm=norm)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """(B, C, h, w) float, (B, C_s, 2h, 2w) float -> (B, C_out, 2h, 2w) float."""
        x = self.up(x)
        if x.shape[-2:] != skip.shape[-2:]:
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        return self.conv(torch.cat([skip, x], dim=1))  # type: ignore[no-any-return]


def check_divisible(model_name: str, x: Tensor, divisor: int, in_channels: int) -> None:
    """Check a (B, C, H, W) model input: rank, channel count and H, W divisible by ``divisor``.

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: wrong rank, wrong channel count, or H/W not divisible; the message names the sizes that
            work, e.g. "... divisible by 16. Consider padding to (256, 256)."
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{model_name}: expected a (B, C, H, W) tensor, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"{model_name}: expected input of 4 dims (B, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise ValueError(
            f"{model_name}: expected {in_channels} input channels (B, {in_channels}, H, W), got shape "
            f"{tuple(x.shape)}"
        )
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h % divisor or w % divisor:
        ph, pw = -(-h // divisor) * divisor, -(-w // divisor) * divisor
        raise ValueError(
            f"{model_name}: input height and width must be divisible by {divisor}, got ({h}, {w}). "
            f"Consider padding to ({ph}, {pw})."
        )
