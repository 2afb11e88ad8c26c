"""A TransUNet-style hybrid (Chen et al., 2021): CNN encoder to H/16, a small ViT there, U-Net decoder.

Layout (``b = base_width``):

========== ===================================================================== ============ =========
name       module                                                                channels     reduction
========== ===================================================================== ============ =========
enc1       ConvBlock                                                             b            1
enc2..enc4 max-pool + ConvBlock                                                  2b, 4b, 8b   2, 4, 8
bottleneck max-pool + ConvBlock to 16b, 1x1 patch embedding to ``embed_dim``,     16b          16
           depthwise-conv position encoding, ``depth`` pre-norm transformer
           layers over the (H/16 * W/16) tokens, LayerNorm, reshape, 1x1 conv
dec4..dec1 transposed-conv up + skip + ConvBlock                                  8b .. b      8 .. 1
========== ===================================================================== ============ =========

The position encoding is a 3x3 depthwise convolution on the token grid (a conditional position encoding,
Chu et al., 2023) instead of TransUNet's learned table, so any input size divisible by 16 works. The
original's ResNet-50 stem and pretrained ViT weights are not used.
"""

from __future__ import annotations

from torch import Tensor, nn

from fdseg._checks import check_int
from fdseg.models.blocks import ConvBlock, DownBlock, UpBlock, check_divisible
from fdseg.models.factory import MODELS
from fdseg.models.features import FeatureInfo

__all__ = ["TransUNet", "ViTBottleneck"]

_LEVELS = 4  # the CNN reaches H/16, as in TransUNet


class ViTBottleneck(nn.Module):
    """Downsample x2, embed each pixel as a token, run a transformer encoder, map back to a feature map.

    Args:
        in_channels: C of the (B, C, h, w) input.
        out_channels: C_out of the (B, C_out, h/2, w/2) output.
        embed_dim: token width; divisible by ``heads``.
        depth: number of transformer layers.
        heads: attention heads per layer.
        mlp_ratio: feed-forward width / ``embed_dim``.
        dropout: dropout inside the transformer layers.
        norm: normalisation of the CNN part (see :func:`fdseg.models.blocks.make_norm`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        embed_dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        self.down = DownBlock(in_channels, out_channels, norm=norm)
        self.embed = nn.Conv2d(out_channels, embed_dim, 1)
        self.pos = nn.Conv2d(embed_dim, embed_dim, 3, padding=1, groups=embed_dim)
        layer = nn.TransformerEncoderLayer(
            embed_dim,
            heads,
            dim_feedforward=int(embed_dim * mlp_ratio),
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(embed_dim)
        self.proj = nn.Conv2d(embed_dim, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, h, w) float -> (B, C_out, h/2, w/2) float."""
        x = self.down(x)
        tokens = self.embed(x)
        tokens = tokens + self.pos(tokens)
        b, c, h, w = tokens.shape
        seq = self.norm(self.transformer(tokens.flatten(2).transpose(1, 2)))  # (B, h*w, embed_dim)
        return self.proj(seq.transpose(1, 2).reshape(b, c, h, w))  # type: ignore[no-any-return]


@MODELS.register("transunet")
class TransUNet(nn.Module):
    """TransUNet-style segmentation network returning logits; all 9 canonical taps are declared.

    Args:
        in_channels: C of the (B, C, H, W) float input.
        out_channels: K of the (B, K, H, W) logits.
        base_width: channels of ``enc1`` (``b`` in the module docstring).
        depth: transformer layers at H/16 (TransUNet: 12).
        heads: attention heads (TransUNet: 12).
        embed_dim: token width (TransUNet: 768); ``None`` gives ``8 * base_width`` rounded up to a multiple
            of ``heads``.
        mlp_ratio: feed-forward width / ``embed_dim``.
        dropout: dropout inside the transformer layers.
        norm: ``"batch"``, ``"instance"``, ``"group"`` or ``"none"`` for the CNN parts.

    Raises:
        ValueError: non-positive sizes, or ``embed_dim`` not divisible by ``heads``.

    Example:
        >>> import torch
        >>> model = TransUNet(base_width=4, depth=1, heads=2)
        >>> model(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 1, 32, 32])
    """

    feature_layers: dict[str, str]
    feature_info: tuple[FeatureInfo, ...]

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        base_width: int = 64,
        depth: int = 4,
        heads: int = 8,
        embed_dim: int | None = None,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        sizes = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "base_width": base_width,
            "depth": depth,
            "heads": heads,
        }
        for key, value in sizes.items():
            check_int(f"TransUNet: {key}", value)
        if embed_dim is None:
            embed_dim = -(-8 * base_width // heads) * heads
        if embed_dim < 1 or embed_dim % heads:
            raise ValueError(
                f"TransUNet: embed_dim ({embed_dim}) must be a positive multiple of heads ({heads})"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        widths = [base_width * 2**i for i in range(_LEVELS + 1)]

        self.enc1 = ConvBlock(in_channels, widths[0], norm=norm)
        self.enc2 = DownBlock(widths[0], widths[1], norm=norm)
        self.enc3 = DownBlock(widths[1], widths[2], norm=norm)
        self.enc4 = DownBlock(widths[2], widths[3], norm=norm)
        self.bottleneck = ViTBottleneck(
            widths[3],
            widths[4],
            embed_dim=embed_dim,
            depth=depth,
            heads=heads,
            mlp_ratio=mlp_ratio,
            dropout=dropout,
            norm=norm,
        )
        self.dec4 = UpBlock(widths[4], widths[3], widths[3], norm=norm)
        self.dec3 = UpBlock(widths[3], widths[2], widths[2], norm=norm)
        self.dec2 = UpBlock(widths[2], widths[1], widths[1], norm=norm)
        self.dec1 = UpBlock(widths[1], widths[0], widths[0], norm=norm)
        self.head = nn.Conv2d(widths[0], out_channels, 1)

        info = [FeatureInfo(f"enc{i}", widths[i - 1], 2 ** (i - 1)) for i in range(1, _LEVELS + 1)]
        info.append(FeatureInfo("bottleneck", widths[_LEVELS], 2**_LEVELS))
        info += [FeatureInfo(f"dec{i}", widths[i - 1], 2 ** (i - 1)) for i in range(_LEVELS, 0, -1)]
        self.feature_info = tuple(info)
        self.feature_layers = {f.name: f.name for f in info}

    def forward_intermediates(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and every declared feature.

        Args:
            x: (B, in_channels, H, W) float, H and W divisible by 16.

        Returns:
            ``(logits, feats)``: (B, out_channels, H, W) logits and name -> (B, C, H/r, W/r), ordered like
            ``feature_info``.

        Raises:
            ValueError: wrong rank or channel count, or H/W not divisible by 16.
        """
        check_divisible("TransUNet", x, 2**_LEVELS, self.in_channels)
        feats: dict[str, Tensor] = {}
        feats["enc1"] = e1 = self.enc1(x)
        feats["enc2"] = e2 = self.enc2(e1)
        feats["enc3"] = e3 = self.enc3(e2)
        feats["enc4"] = e4 = self.enc4(e3)
        feats["bottleneck"] = d = self.bottleneck(e4)
        feats["dec4"] = d = self.dec4(d, e4)
        feats["dec3"] = d = self.dec3(d, e3)
        feats["dec2"] = d = self.dec2(d, e2)
        feats["dec1"] = d = self.dec1(d, e1)
        return self.head(d), feats

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) float -> (B, out_channels, H, W) logits; H, W divisible by 16."""
        logits, _ = self.forward_intermediates(x)
        return logits
