"""Swin-UNet (Cao et al., 2022): a pure-transformer U-Net of shifted-window attention blocks.

Layout for ``patch_size = p`` and channel width ``C = base_width`` (four stages, as in the paper):

============== =================================================================== ======== =============
module         what                                                                channels reduction
============== =================================================================== ======== =============
patch_embed    p x p stride-p conv + LayerNorm                                     C        p
encoder.0..3   [patch merging (stages 1-3)] + Swin blocks; ``encoder.3`` = bottleneck C..8C    p .. 8p
decoder.0..2   patch expanding x2, concatenate the skip, linear, Swin blocks       4C..C    4p, 2p, p
final          patch expanding x p back to full resolution                         C        1
head           1x1 conv to logits
============== =================================================================== ======== =============

All stage modules take and return (B, C, h, w) tensors, so forward hooks see ordinary feature maps. Canonical
taps follow resolution: with ``p = 4`` (the paper) ``enc3 = encoder.0``, ``enc4 = encoder.1``,
``bottleneck = encoder.3`` (H/32), ``dec4 = decoder.1``, ``dec3 = decoder.2``, ``dec1 = final``; ``encoder.2``
and ``decoder.0`` (H/16) have no canonical name. With ``p = 2`` every name but ``enc1`` exists.

A window larger than a stage's grid shrinks to the grid (and is then not shifted), as in Swin; grids that are
not a multiple of the window are zero-padded to one and cropped back. The pretrained ImageNet weights of the
paper are not used. At the default settings the model has about 27.2 M parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fdseg._checks import check_int, check_option
from fdseg.models.blocks import check_divisible
from fdseg.models.factory import MODELS
from fdseg.models.features import FeatureInfo, canonical_name

__all__ = ["SwinBlock", "SwinUNet", "WindowAttention"]

_STAGES = 4


def _windows(x: Tensor, window: int) -> Tensor:
    """(B, H, W, C) -> (B * H/w * W/w, w*w, C)."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def _unwindows(tokens: Tensor, window: int, b: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`_windows`: (B * H/w * W/w, w*w, C) -> (B, H, W, C)."""
    x = tokens.view(b, h // window, w // window, window, window, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, -1)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a w x w window with a learned relative position bias.

    Args:
        dim: token width C; divisible by ``heads``.
        heads: attention heads.
        window: the largest window side this module is used with (sizes the bias table).
    """

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads = heads
        self.window = window
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)

    def _bias(self, window: int) -> Tensor:
        """(heads, w*w, w*w) relative position bias for a window of side ``window`` <= ``self.window``."""
        coords = torch.stack(
            torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        ).flatten(1)  # (2, w*w)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (self.window - 1)
        index = (rel[..., 0] * (2 * self.window - 1) + rel[..., 1]).to(self.bias_table.device)
        return self.bias_table[index].permute(2, 0, 1)

    def forward(self, tokens: Tensor, window: int, mask: Tensor | None = None) -> Tensor:
        """(N, w*w, C) float, optional (nW, w*w, w*w) additive mask -> (N, w*w, C) float."""
        n, t, c = tokens.shape
        qkv = self.qkv(tokens).view(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self._bias(window).unsqueeze(0).to(tokens.dtype)  # (1, heads, t, t)
        if mask is not None:
            n_windows = mask.shape[0]
            bias = (bias + mask.unsqueeze(1).to(tokens.dtype)).repeat(n // n_windows, 1, 1, 1)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(n, t, c))  # type: ignore[no-any-return]


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention and MLP with residuals on (B, H, W, C) tokens.

    Args:
        dim: token width C.
        heads: attention heads.
        window: window side w.
        shift: shift the windows by w // 2 (every second block of a stage).
        mlp_ratio: MLP width / C.
    """

    def __init__(self, dim: int, heads: int, window: int, *, shift: bool, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.window = window
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    @staticmethod
    def _shift_mask(h: int, w: int, window: int, shift: int, device: torch.device) -> Tensor:
        """(nW, w*w, w*w) mask: 0 within a region, -inf across the wrapped-around regions."""
        regions = torch.zeros(1, h, w, 1, device=device)
        cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
        label = 0
        for hs in cuts:
            for ws in cuts:
                regions[:, hs, ws, :] = label
                label += 1
        ids = _windows(regions, window).squeeze(-1)  # (nW, w*w)
        diff = ids[:, None, :] - ids[:, :, None]
        return torch.zeros_like(diff).masked_fill(diff != 0, float("-inf"))

    def forward(self, x: Tensor) -> Tensor:
        """(B, H, W, C) float -> (B, H, W, C) float."""
        b, h, w, _ = x.shape
        window = min(self.window, h, w)
        shift = window // 2 if self.shift and window < min(h, w) else 0
        y = self.norm1(x)
        ph, pw = -h % window, -w % window
        if ph or pw:
            y = F.pad(y, (0, 0, 0, pw, 0, ph))
        hp, wp = h + ph, w + pw
        mask = None
        if shift:
            y = torch.roll(y, (-shift, -shift), dims=(1, 2))
            mask = self._shift_mask(hp, wp, window, shift, x.device)
        y = _unwindows(self.attn(_windows(y, window), window, mask), window, b, hp, wp)
        if shift:
            y = torch.roll(y, (shift, shift), dims=(1, 2))
        x = x + y[:, :h, :w, :]
        return x + self.mlp(self.norm2(x))  # type: ignore[no-any-return]


class _PatchMerging(nn.Module):
    """(B, H, W, C) -> (B, H/2, W/2, 2C): concatenate each 2x2 neighbourhood, LayerNorm, linear."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduce = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduce(self.norm(x))  # type: ignore[no-any-return]


class _PatchExpand(nn.Module):
    """(B, H, W, C_in) -> (B, sH, sW, C_out): linear to s*s*C_out, rearrange, LayerNorm."""

    def __init__(self, in_dim: int, out_dim: int, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.expand = nn.Linear(in_dim, scale * scale * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, _ = x.shape
        s = self.scale
        x = self.expand(x).view(b, h, w, s, s, -1).permute(0, 1, 3, 2, 4, 5).reshape(b, h * s, w * s, -1)
        return self.norm(x)  # type: ignore[no-any-return]


def _blocks(dim: int, heads: int, window: int, depth: int, mlp_ratio: float) -> nn.Sequential:
    return nn.Sequential(
        *(SwinBlock(dim, heads, window, shift=i % 2 == 1, mlp_ratio=mlp_ratio) for i in range(depth))
    )


def _nhwc(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1)


def _nchw(x: Tensor) -> Tensor:
    return x.permute(0, 3, 1, 2).contiguous()


class _EncoderStage(nn.Module):
    """(B, C, h, w) -> (B, C', h', w'): optional patch merging, then Swin blocks."""

    def __init__(self, dim: int, heads: int, window: int, depth: int, mlp_ratio: float, merge: bool) -> None:
        super().__init__()
        self.merge = _PatchMerging(dim // 2) if merge else nn.Identity()
        self.blocks = _blocks(dim, heads, window, depth, mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        return _nchw(self.blocks(self.merge(_nhwc(x))))


class _DecoderStage(nn.Module):
    """Expand the deeper (B, 2C, h, w) map x2, concatenate the (B, C, 2h, 2w) skip, linear to C, blocks."""

    def __init__(self, dim: int, heads: int, window: int, depth: int, mlp_ratio: float) -> None:
        super().__init__()
        self.expand = _PatchExpand(2 * dim, dim, 2)
        self.fuse = nn.Linear(2 * dim, dim)
        self.blocks = _blocks(dim, heads, window, depth, mlp_ratio)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = torch.cat([self.expand(_nhwc(x)), _nhwc(skip)], dim=-1)
        return _nchw(self.blocks(self.fuse(x)))


class _PatchEmbed(nn.Module):
    def __init__(self, in_channels: int, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return _nchw(self.norm(_nhwc(self.proj(x))))


class _FinalExpand(nn.Module):
    def __init__(self, dim: int, patch: int) -> None:
        super().__init__()
        self.expand = _PatchExpand(dim, dim, patch)

    def forward(self, x: Tensor) -> Tensor:
        return _nchw(self.expand(_nhwc(x)))


@MODELS.register("swin_unet")
class SwinUNet(nn.Module):
    """Swin-UNet returning logits, with canonical taps at every level it has (see the module docstring).

    Args:
        in_channels: C_in of the (B, C_in, H, W) float input.
        out_channels: K of the (B, K, H, W) logits.
        base_width: token width C of the first stage (paper: 96); stage i has ``C * 2**i``.
        depths: Swin blocks per encoder stage (the decoder mirrors stages 0-2); paper: (2, 2, 2, 2).
        heads: attention heads per stage, each dividing ``C * 2**i``; paper: (3, 6, 12, 24).
        window_size: attention window side (paper: 7).
        patch_size: 4 (paper) or 2; H and W must be divisible by ``patch_size * 8``.
        mlp_ratio: MLP width / token width.

    Raises:
        ValueError: bad sizes, lengths or divisibility (the message says which).

    Example:
        >>> import torch
        >>> model = SwinUNet(base_width=8, depths=(1, 1, 1, 1), heads=(1, 1, 2, 2), window_size=4)
        >>> model(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
    """

    feature_layers: dict[str, str]
    feature_info: tuple[FeatureInfo, ...]

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        base_width: int = 96,
        depths: Sequence[int] = (2, 2, 2, 2),
        heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        patch_size: int = 4,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        sizes = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "base_width": base_width,
            "window_size": window_size,
        }
        for key, value in sizes.items():
            check_int(f"SwinUNet: {key}", value)
        check_option("patch_size", patch_size, (2, 4))
        if len(depths) != _STAGES or len(heads) != _STAGES or min(depths) < 1 or min(heads) < 1:
            raise ValueError(
                f"SwinUNet: depths and heads need {_STAGES} positive entries, "
                f"got {tuple(depths)}, {tuple(heads)}"
            )
        dims = [base_width * 2**i for i in range(_STAGES)]
        bad = [(d, h) for d, h in zip(dims, heads) if d % h]
        if bad:
            raise ValueError(
                f"SwinUNet: stage widths {dims} must be divisible by heads {tuple(heads)}; got {bad}"
            )
        self.in_channels = in_channels
        self.divisor = patch_size * 2 ** (_STAGES - 1)

        self.patch_embed = _PatchEmbed(in_channels, dims[0], patch_size)
        self.encoder = nn.ModuleList(
            _EncoderStage(dims[i], heads[i], window_size, depths[i], mlp_ratio, merge=i > 0)
            for i in range(_STAGES)
        )
        self.decoder = nn.ModuleList(
            _DecoderStage(dims[i], heads[i], window_size, depths[i], mlp_ratio) for i in (2, 1, 0)
        )
        self.final = _FinalExpand(dims[0], patch_size)
        self.head = nn.Conv2d(dims[0], out_channels, 1)

        deepest = patch_size * 2 ** (_STAGES - 1)
        info: list[FeatureInfo] = []
        layers: dict[str, str] = {}
        for i in range(_STAGES - 1):
            name = canonical_name("enc", patch_size * 2**i, deepest)
            if name:
                info.append(FeatureInfo(name, dims[i], patch_size * 2**i))
                layers[name] = f"encoder.{i}"
        info.append(FeatureInfo("bottleneck", dims[-1], deepest))
        layers["bottleneck"] = f"encoder.{_STAGES - 1}"
        for j, i in enumerate((2, 1, 0)):
            name = canonical_name("dec", patch_size * 2**i, deepest)
            if name:
                info.append(FeatureInfo(name, dims[i], patch_size * 2**i))
                layers[name] = f"decoder.{j}"
        info.append(FeatureInfo("dec1", dims[0], 1))
        layers["dec1"] = "final"
        self.feature_info = tuple(info)
        self.feature_layers = layers

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) float -> (B, out_channels, H, W) logits; H, W divisible by 8 * patch.

        Raises:
            ValueError: wrong rank or channel count, or H/W not divisible (the message suggests a size).
        """
        check_divisible("SwinUNet", x, self.divisor, self.in_channels)
        x = self.patch_embed(x)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        for stage, skip in zip(self.decoder, reversed(skips[:-1])):
            x = stage(x, skip)
        return self.head(self.final(x))  # type: ignore[no-any-return]
