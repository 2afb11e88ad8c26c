"""Tap maps for third-party networks, and registered MONAI models that declare them.

:func:`monai_feature_layers` and :func:`monai_feature_info` describe a MONAI ``UNet``, ``AttentionUnet``,
``BasicUNet``, ``FlexibleUNet`` or 2D ``SwinUNETR`` in fdseg's canonical names. Canonical names mean a
resolution (``enc1``/``dec1`` full resolution, ``enc2``/``dec2`` half, …, ``bottleneck`` the deepest map),
so a level that a network does not have is simply not declared:

=============== ============================================================================================
network         declared taps (module paths relative to the MONAI net; reduction in brackets)
=============== ============================================================================================
UNet            enc2..enc4 = the strided encoder units ``model.0``, ``model.1.submodule.0`` … (2, 4, 8);
                bottleneck = the innermost ``…submodule`` (2**n); dec4..dec2 = the up layers ``….submodule.2``
                (8, 4, 2). No enc1 (the first unit already downsamples), no dec1 (the top up layer ``model.2``
                outputs the logits), and the last strided unit (2**n, followed by the bottleneck unit at the
                same size) has no name.
AttentionUnet   enc1 = ``model.0`` (1); enc2..enc4 = the strided ``ConvBlock`` ``…submodule.0`` (2, 4, 8);
                bottleneck = the bottom ``ConvBlock`` (2**n); dec4..dec1 = the ``AttentionLayer`` s
                ``model.1``, ``model.1.submodule.1`` … (8, 4, 2, 1); each outputs the gated, merged map.
BasicUNet       enc1 = ``conv_0``, enc2..enc4 = ``down_1..down_3``, bottleneck = ``down_4`` (16),
                dec4..dec1 = ``upcat_4..upcat_1``.
FlexibleUNet    enc2..enc4 = ``encoder[0..2]`` (the encoder returns a list), bottleneck = ``encoder[4]`` (32),
                dec4..dec1 = ``decoder.blocks.1..4``; ``encoder[3]`` and ``decoder.blocks.0`` (16) have no
                name.
SwinUNETR (2D)  enc1..enc4 = ``encoder1..encoder4``, bottleneck = ``encoder10`` (32), dec4..dec1 =
                ``decoder4..decoder1``; ``decoder5`` (16) has no name.
=============== ============================================================================================

Hooks go on the children, never on a MONAI ``SkipConnection`` (whose output is a concatenation). Every
registered factory wraps the MONAI net in :class:`ExternalSegmenter` (``net`` attribute, paths prefixed with
``"net."``) that checks the input size and returns the logits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from fdseg._checks import check_int, check_option
from fdseg.models.blocks import check_divisible
from fdseg.models.factory import MODELS
from fdseg.models.features import FeatureInfo, canonical_name

__all__ = [
    "ExternalSegmenter",
    "monai_feature_info",
    "monai_feature_layers",
]


@dataclass(frozen=True)
class _Tap:
    name: str
    path: str
    channels: int
    reduction: int


class ExternalSegmenter(nn.Module):
    """A third-party segmentation network with a declared tap map and clear input checks.

    Args:
        net: the wrapped network; ``net(x)`` returns (B, K, H, W) logits.
        feature_info: the declared taps, in order (encoder, bottleneck, decoder).
        feature_layers: canonical name -> module path *relative to* ``net`` (prefixed with ``"net."`` here).
        in_channels: C of the (B, C, H, W) input.
        divisor: H and W must be multiples of this.
        name: shown in error messages, e.g. ``"monai_unet"``.

    Raises:
        ValueError: ``feature_info`` and ``feature_layers`` name different taps.
    """

    feature_layers: dict[str, str]
    feature_info: tuple[FeatureInfo, ...]

    def __init__(
        self,
        net: nn.Module,
        *,
        feature_info: Sequence[FeatureInfo],
        feature_layers: Mapping[str, str],
        in_channels: int,
        divisor: int,
        name: str,
    ) -> None:
        super().__init__()
        if [f.name for f in feature_info] != list(feature_layers):
            raise ValueError(
                f"{name}: feature_info names {[f.name for f in feature_info]} differ from feature_layers "
                f"{list(feature_layers)}"
            )
        self.net = net
        self.model_name = name
        self.in_channels = in_channels
        self.divisor = divisor
        self.feature_info = tuple(feature_info)
        self.feature_layers = {key: f"net.{path}" for key, path in feature_layers.items()}

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) float -> (B, K, H, W) logits; H and W divisible by ``divisor``."""
        check_divisible(self.model_name, x, self.divisor, self.in_channels)
        logits = self.net(x)
        if not isinstance(logits, Tensor):
            raise TypeError(
                f"{self.model_name}: the wrapped net returned {type(logits).__name__}, not logits"
            )
        return logits


def _ordered(encoder: list[_Tap], bottleneck: _Tap, decoder: list[_Tap]) -> list[_Tap]:
    enc = sorted(encoder, key=lambda t: t.reduction)
    dec = sorted(decoder, key=lambda t: -t.reduction)
    return [*enc, bottleneck, *dec]


def _require_strides_of_two(kind: str, strides: Sequence[int]) -> None:
    if any(int(s) != 2 for s in strides):
        raise ValueError(
            f"monai_feature_layers: canonical names for a MONAI {kind} need strides of 2, "
            f"got {tuple(strides)}; pass module paths to FeatureTap instead"
        )


def _monai_unet_taps(net: Any) -> list[_Tap]:
    channels = [int(c) for c in net.channels]
    strides = net.strides
    _require_strides_of_two("UNet", strides)
    n = len(strides)
    deepest = 2**n
    encoder: list[_Tap] = []
    decoder: list[_Tap] = []
    prefix = "model"
    for level in range(n):
        reduction = 2 ** (level + 1)
        down = f"{prefix}.0" if level == 0 else f"{prefix}.submodule.0"
        name = canonical_name("enc", reduction, deepest)
        if name:
            encoder.append(_Tap(name, down, channels[level], reduction))
        if level > 0:  # the top up layer (model.2) outputs the logits
            name = canonical_name("dec", 2**level, deepest)
            if name:
                decoder.append(_Tap(name, f"{prefix}.submodule.2", channels[level - 1], 2**level))
        prefix = f"{prefix}.1" if level == 0 else f"{prefix}.submodule.1"
    # prefix is now the innermost SkipConnection; its submodule is the bottom unit
    bottleneck = _Tap("bottleneck", f"{prefix}.submodule", channels[n], deepest)
    return _ordered(encoder, bottleneck, decoder)


def _monai_attention_unet_taps(net: Any) -> list[_Tap]:
    channels = [int(c) for c in net.channels]
    strides = net.strides
    _require_strides_of_two("AttentionUnet", strides)
    n = len(strides)
    deepest = 2**n
    encoder = [_Tap("enc1", "model.0", channels[0], 1)]
    decoder: list[_Tap] = []
    layer = "model.1"  # the AttentionLayer of level 0
    for level in range(n):
        name = canonical_name("dec", 2**level, deepest)
        if name:
            decoder.append(_Tap(name, layer, channels[level], 2**level))
        if level == n - 1:
            break
        name = canonical_name("enc", 2 ** (level + 1), deepest)
        if name:
            encoder.append(_Tap(name, f"{layer}.submodule.0", channels[level + 1], 2 ** (level + 1)))
        layer = f"{layer}.submodule.1"
    bottleneck = _Tap("bottleneck", f"{layer}.submodule", channels[n], deepest)
    return _ordered(encoder, bottleneck, decoder)


def _out_channels(net: nn.Module, path: str) -> int:
    module: Any = net.get_submodule(path)
    return int(module.out_channels)


def _monai_basic_unet_taps(net: Any) -> list[_Tap]:
    encoder = [_Tap("enc1", "conv_0", _out_channels(net, "conv_0.conv_1"), 1)]
    for k in (1, 2, 3):
        encoder.append(_Tap(f"enc{k + 1}", f"down_{k}", _out_channels(net, f"down_{k}.convs.conv_1"), 2**k))
    bottleneck = _Tap("bottleneck", "down_4", _out_channels(net, "down_4.convs.conv_1"), 16)
    decoder = [
        _Tap(f"dec{k}", f"upcat_{k}", _out_channels(net, f"upcat_{k}.convs.conv_1"), 2 ** (k - 1))
        for k in (4, 3, 2, 1)
    ]
    return _ordered(encoder, bottleneck, decoder)


def _monai_flexible_unet_taps(net: Any) -> list[_Tap]:
    from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE

    spec = FLEXUNET_BACKBONE.register_dict[net.backbone]
    enc_channels = [int(c) for c in spec["feature_channel"]]
    if len(enc_channels) != 5:
        raise ValueError(
            f"monai_feature_layers: FlexibleUNet backbone {net.backbone!r} has {len(enc_channels)} stages; "
            "the canonical map needs 5"
        )
    encoder = [_Tap(f"enc{i + 2}", f"encoder[{i}]", enc_channels[i], 2 ** (i + 1)) for i in range(3)]
    bottleneck = _Tap("bottleneck", "encoder[4]", enc_channels[4], 32)
    decoder = [
        _Tap(
            f"dec{5 - i}",
            f"decoder.blocks.{i}",
            _out_channels(net, f"decoder.blocks.{i}.convs.conv_1"),
            2 ** (4 - i),
        )
        for i in (1, 2, 3, 4)
    ]
    return _ordered(encoder, bottleneck, decoder)


def _monai_swin_unetr_taps(net: Any) -> list[_Tap]:
    if int(net.patch_size) != 2:
        raise ValueError(f"monai_feature_layers: SwinUNETR needs patch_size=2, got {net.patch_size}")
    size = _out_channels(net, "encoder1.layer.conv1")
    if not isinstance(net.get_submodule("encoder1.layer.conv1.conv"), nn.Conv2d):
        raise ValueError("monai_feature_layers: only a 2D SwinUNETR (spatial_dims=2) is supported")
    encoder = [
        _Tap("enc1", "encoder1", size, 1),
        _Tap("enc2", "encoder2", size, 2),
        _Tap("enc3", "encoder3", 2 * size, 4),
        _Tap("enc4", "encoder4", 4 * size, 8),
    ]
    bottleneck = _Tap("bottleneck", "encoder10", 16 * size, 32)
    decoder = [
        _Tap("dec4", "decoder4", 4 * size, 8),
        _Tap("dec3", "decoder3", 2 * size, 4),
        _Tap("dec2", "decoder2", size, 2),
        _Tap("dec1", "decoder1", size, 1),
    ]
    return _ordered(encoder, bottleneck, decoder)


_MONAI_TAPS: dict[str, Callable[[Any], list[_Tap]]] = {
    "UNet": _monai_unet_taps,
    "AttentionUnet": _monai_attention_unet_taps,
    "BasicUNet": _monai_basic_unet_taps,
    "FlexibleUNet": _monai_flexible_unet_taps,
    "SwinUNETR": _monai_swin_unetr_taps,
}


def _monai_taps(model: nn.Module) -> list[_Tap]:
    kind = type(model).__name__
    if type(model).__module__.split(".")[0] != "monai" or kind not in _MONAI_TAPS:
        raise TypeError(
            f"no canonical tap map for {type(model).__module__}.{kind}; supported MONAI nets: "
            f"{sorted(_MONAI_TAPS)} (pass module paths to FeatureTap for other networks)"
        )
    return _MONAI_TAPS[kind](model)


def monai_feature_layers(model: nn.Module) -> dict[str, str]:
    """Canonical name -> module path for a MONAI segmentation network (see the module docstring).

    Args:
        model: a MONAI ``UNet``, ``AttentionUnet``, ``BasicUNet``, ``FlexibleUNet`` or 2D ``SwinUNETR``, or an
            :class:`ExternalSegmenter` wrapping one (then its own, ``"net."``-prefixed map is returned).

    Returns:
        Ordered ``{name: path}``, encoder names first (shallow to deep), then ``bottleneck``, then decoder
        names (deep to shallow). Paths may use ``[i]`` selectors (FlexibleUNet's list-valued encoder).

    Raises:
        TypeError: an unsupported network (the message lists the supported ones).
        ValueError: a configuration without canonical levels (strides other than 2, a 3D SwinUNETR, …).

    Example:
        >>> from monai.networks.nets import BasicUNet
        >>> net = BasicUNet(spatial_dims=2, features=(4, 4, 8, 16, 32, 4))
        >>> monai_feature_layers(net)["bottleneck"]
        'down_4'
    """
    if isinstance(model, ExternalSegmenter):
        return dict(model.feature_layers)
    return {tap.name: tap.path for tap in _monai_taps(model)}


def monai_feature_info(model: nn.Module) -> tuple[FeatureInfo, ...]:
    """Channels and reduction of every tap of :func:`monai_feature_layers`, without a forward pass.

    Raises:
        TypeError, ValueError: as :func:`monai_feature_layers`.
    """
    if isinstance(model, ExternalSegmenter):
        return model.feature_info
    return tuple(FeatureInfo(t.name, t.channels, t.reduction) for t in _monai_taps(model))


def _wrap(net: nn.Module, *, name: str, in_channels: int, divisor: int) -> ExternalSegmenter:
    taps = _monai_taps(net)
    return ExternalSegmenter(
        net,
        feature_info=[FeatureInfo(t.name, t.channels, t.reduction) for t in taps],
        feature_layers={t.name: t.path for t in taps},
        in_channels=in_channels,
        divisor=divisor,
        name=name,
    )


def _check_sizes(name: str, **sizes: int) -> None:
    for key, value in sizes.items():
        check_int(f"{name}: {key}", value)


@MODELS.register("monai_unet")
def monai_unet(
    in_channels: int = 3, out_channels: int = 1, base_width: int = 16, depth: int = 4, **kwargs: Any
) -> ExternalSegmenter:
    """MONAI ``UNet`` (residual units) with channels ``base_width * 2**i``, i = 0..depth, strides of 2.

    Args:
        in_channels: C of the (B, C, H, W) input.
        out_channels: K of the (B, K, H, W) logits.
        base_width: channels of the first (already strided) unit.
        depth: number of strided units; H and W must be divisible by ``2**depth``.
        **kwargs: passed to ``monai.networks.nets.UNet`` (``num_res_units`` defaults to 2, ``norm``,
            ``act``, ``dropout``, …).

    Returns:
        An :class:`ExternalSegmenter` declaring enc2..enc4, bottleneck, dec4..dec2 (see the module docstring).
    """
    from monai.networks.nets.unet import UNet as MonaiUNet

    _check_sizes(
        "monai_unet", in_channels=in_channels, out_channels=out_channels, base_width=base_width, depth=depth
    )
    kwargs.setdefault("num_res_units", 2)
    net = MonaiUNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(base_width * 2**i for i in range(depth + 1)),
        strides=(2,) * depth,
        **kwargs,
    )
    return _wrap(net, name="monai_unet", in_channels=in_channels, divisor=2**depth)


@MODELS.register("monai_attention_unet")
def monai_attention_unet(
    in_channels: int = 3, out_channels: int = 1, base_width: int = 16, depth: int = 4, **kwargs: Any
) -> ExternalSegmenter:
    """MONAI ``AttentionUnet`` with channels ``base_width * 2**i``, i = 0..depth, strides of 2.

    Args:
        in_channels: C of the (B, C, H, W) input.
        out_channels: K of the (B, K, H, W) logits.
        base_width: channels of the full-resolution head block.
        depth: number of strided blocks; H and W must be divisible by ``2**depth``.
        **kwargs: passed to ``monai.networks.nets.AttentionUnet`` (``dropout``, ``kernel_size``, …).
    """
    from monai.networks.nets.attentionunet import AttentionUnet

    _check_sizes(
        "monai_attention_unet",
        in_channels=in_channels,
        out_channels=out_channels,
        base_width=base_width,
        depth=depth,
    )
    net = AttentionUnet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(base_width * 2**i for i in range(depth + 1)),
        strides=(2,) * depth,
        **kwargs,
    )
    return _wrap(net, name="monai_attention_unet", in_channels=in_channels, divisor=2**depth)


@MODELS.register("monai_basic_unet")
def monai_basic_unet(
    in_channels: int = 3, out_channels: int = 1, base_width: int = 32, **kwargs: Any
) -> ExternalSegmenter:
    """MONAI ``BasicUNet`` with features ``(b, b, 2b, 4b, 8b, b)`` for ``b = base_width`` (MONAI default 32).

    Args:
        in_channels: C of the (B, C, H, W) input.
        out_channels: K of the (B, K, H, W) logits.
        base_width: see above; H and W must be divisible by 16.
        **kwargs: passed to ``monai.networks.nets.BasicUNet`` (``features`` overrides ``base_width``).
    """
    from monai.networks.nets.basic_unet import BasicUNet

    _check_sizes(
        "monai_basic_unet", in_channels=in_channels, out_channels=out_channels, base_width=base_width
    )
    b = base_width
    kwargs.setdefault("features", (b, b, 2 * b, 4 * b, 8 * b, b))
    net = BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, **kwargs)
    return _wrap(net, name="monai_basic_unet", in_channels=in_channels, divisor=16)


@MODELS.register("monai_flexible_unet")
def monai_flexible_unet(
    in_channels: int = 3,
    out_channels: int = 1,
    backbone: str = "resnet18",
    pretrained: bool = False,
    decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
    **kwargs: Any,
) -> ExternalSegmenter:
    """MONAI ``FlexibleUNet``: a ResNet or EfficientNet encoder (no torchvision needed) and a U-Net decoder.

    Args:
        in_channels: C of the (B, C, H, W) input.
        out_channels: K of the (B, K, H, W) logits.
        backbone: a MONAI FlexibleUNet backbone, e.g. ``"resnet18"`` or ``"efficientnet-b0"``.
        pretrained: load ImageNet weights (downloads them; False by default).
        decoder_channels: the 5 decoder block widths, deep to shallow.
        **kwargs: passed to ``monai.networks.nets.FlexibleUNet``.

    Raises:
        ValueError: unknown ``backbone`` (the message lists the choices); ``decoder_channels`` not 5 long.
    """
    from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE, FlexibleUNet

    _check_sizes("monai_flexible_unet", in_channels=in_channels, out_channels=out_channels)
    check_option("backbone", backbone, sorted(FLEXUNET_BACKBONE.register_dict))
    if len(decoder_channels) != 5:
        raise ValueError(
            f"monai_flexible_unet: decoder_channels needs 5 widths, got {tuple(decoder_channels)}"
        )
    net = FlexibleUNet(
        in_channels=in_channels,
        out_channels=out_channels,
        backbone=backbone,
        pretrained=pretrained,
        decoder_channels=tuple(decoder_channels),
        spatial_dims=2,
        **kwargs,
    )
    return _wrap(net, name="monai_flexible_unet", in_channels=in_channels, divisor=32)


@MODELS.register("swin_unetr")
def swin_unetr(
    in_channels: int = 3,
    out_channels: int = 1,
    feature_size: int = 24,
    depths: Sequence[int] = (2, 2, 2, 2),
    num_heads: Sequence[int] = (3, 6, 12, 24),
    **kwargs: Any,
) -> ExternalSegmenter:
    """MONAI ``SwinUNETR`` in 2D (``spatial_dims=2``, patch size 2, window 7); needs ``einops``.

    Args:
        in_channels: C of the (B, C, H, W) input.
        out_channels: K of the (B, K, H, W) logits.
        feature_size: channels of the full-resolution stage; a multiple of 12 (MONAI's rule).
        depths: Swin blocks per stage (4 stages).
        num_heads: attention heads per stage.
        **kwargs: passed to ``monai.networks.nets.SwinUNETR``.

    Raises:
        ValueError: ``feature_size`` not a positive multiple of 12.
    """
    from monai.networks.nets.swin_unetr import SwinUNETR

    _check_sizes("swin_unetr", in_channels=in_channels, out_channels=out_channels, feature_size=feature_size)
    if feature_size % 12:
        raise ValueError(f"swin_unetr: feature_size must be a multiple of 12, got {feature_size}")
    net = SwinUNETR(
        in_channels=in_channels,
        out_channels=out_channels,
        feature_size=feature_size,
        depths=tuple(depths),
        num_heads=tuple(num_heads),
        spatial_dims=2,
        **kwargs,
    )
    return _wrap(net, name="swin_unetr", in_channels=in_channels, divisor=32)
