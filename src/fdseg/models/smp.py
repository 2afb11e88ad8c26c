"""segmentation_models_pytorch (smp) models with canonical taps: the optional ``[smp]`` extra.

smp and timm import torchvision at import time, so they work only where a torchvision build matching the
installed torch loads. smp is therefore imported lazily, inside the factories; where it cannot be imported
the factory raises an ``ImportError`` saying how to install it.

Tap map (``d = encoder_depth``; smp's encoder returns a list ``[x, f1, …, fd]`` with ``f_i`` at reduction
``2**i``, and the decoder's main path upsamples ``fd`` back to full resolution):

* ``enc2..enc4`` = ``encoder[1..3]`` (those shallower than the bottleneck); ``encoder[0]`` is the input image
  itself, so there is no ``enc1``.
* ``bottleneck`` = ``encoder[d]`` (reduction ``2**d``).
* ``dec{k}`` = decoder block ``j`` whose output has reduction ``2**(k-1) = 2**(d-1-j)``: ``decoder.blocks.j``
  for ``Unet``, the main-path node ``decoder.blocks.x_0_j`` for ``UnetPlusPlus``.

The map follows smp's module names (``encoder``, ``decoder.blocks``) and assumes an encoder without dilation
(``output_stride == 2**d``); a dilated encoder raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from fdseg._checks import check_int, check_option
from fdseg.models.external import ExternalSegmenter
from fdseg.models.factory import MODELS
from fdseg.models.features import FeatureInfo, canonical_name

__all__ = ["import_smp", "smp_feature_layers"]

_DEPTHS = (3, 4, 5)
_DECODER_CHANNELS = (256, 128, 64, 32, 16)


def import_smp() -> Any:
    """Import ``segmentation_models_pytorch``.

    Raises:
        ImportError: smp is not installed, or it (or timm / torchvision below it) fails to import, e.g.
            ``RuntimeError: operator torchvision::nms does not exist`` when torchvision does not match torch.
    """
    try:
        import segmentation_models_pytorch
    except (ImportError, RuntimeError, OSError) as err:
        raise ImportError(
            f"segmentation_models_pytorch could not be imported ({type(err).__name__}: {err}). "
            f'Install the extra with `pip install "fdseg[smp]"`; smp and timm also need a torchvision build '
            f"matching the installed torch {torch.__version__}."
        ) from err
    return segmentation_models_pytorch


def _taps(net: Any, *, depth: int, decoder_channels: Sequence[int]) -> list[FeatureInfo]:
    enc_channels = [int(c) for c in net.encoder.out_channels]
    if len(enc_channels) != depth + 1:
        raise ValueError(
            f"smp encoder reports {len(enc_channels)} outputs, expected encoder_depth + 1 = {depth + 1}"
        )
    stride = int(getattr(net.encoder, "output_stride", 2**depth))
    if stride != 2**depth:
        raise ValueError(
            f"smp encoder output_stride {stride} != 2**encoder_depth; a dilated encoder has no tap map"
        )
    deepest = 2**depth
    info: list[FeatureInfo] = []
    for i in range(1, depth):
        name = canonical_name("enc", 2**i, deepest)
        if name:
            info.append(FeatureInfo(name, enc_channels[i], 2**i))
    info.append(FeatureInfo("bottleneck", enc_channels[depth], deepest))
    for j in range(depth):
        name = canonical_name("dec", 2 ** (depth - 1 - j), deepest)
        if name:
            info.append(FeatureInfo(name, int(decoder_channels[j]), 2 ** (depth - 1 - j)))
    return info


def _paths(info: list[FeatureInfo], *, depth: int, plusplus: bool) -> dict[str, str]:
    paths: dict[str, str] = {}
    for f in info:
        if f.name.startswith("enc"):
            paths[f.name] = f"encoder[{f.reduction.bit_length() - 1}]"
        elif f.name == "bottleneck":
            paths[f.name] = f"encoder[{depth}]"
        else:
            j = depth - f.reduction.bit_length()  # reduction 2**(depth-1-j)
            paths[f.name] = f"decoder.blocks.x_0_{j}" if plusplus else f"decoder.blocks.{j}"
    return paths


def smp_feature_layers(
    net: nn.Module, *, encoder_depth: int = 5, decoder_channels: Sequence[int] | None = None
) -> dict[str, str]:
    """Canonical name -> module path for an smp ``Unet`` or ``UnetPlusPlus`` (see the module docstring).

    Args:
        net: the smp model (not wrapped).
        encoder_depth: the model's ``encoder_depth``.
        decoder_channels: the model's decoder widths (only their count matters for the paths).

    Raises:
        TypeError: not an smp ``Unet``/``UnetPlusPlus``.
        ValueError: a dilated encoder or inconsistent depth.
    """
    kind = type(net).__name__
    if kind not in ("Unet", "UnetPlusPlus"):
        raise TypeError(f"smp_feature_layers supports smp Unet and UnetPlusPlus, got {kind}")
    channels = decoder_channels if decoder_channels is not None else _DECODER_CHANNELS[-encoder_depth:]
    info = _taps(net, depth=encoder_depth, decoder_channels=channels)
    return _paths(info, depth=encoder_depth, plusplus=kind == "UnetPlusPlus")


def _build(
    arch: str,
    *,
    in_channels: int,
    out_channels: int,
    encoder_name: str,
    encoder_weights: str | None,
    encoder_depth: int,
    decoder_channels: Sequence[int] | None,
    kwargs: dict[str, Any],
) -> ExternalSegmenter:
    name = f"smp_{arch.lower()}"
    for key, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        check_int(f"{name}: {key}", value)
    check_option("encoder_depth", encoder_depth, _DEPTHS)
    channels = tuple(decoder_channels) if decoder_channels is not None else _DECODER_CHANNELS[-encoder_depth:]
    if len(channels) != encoder_depth:
        raise ValueError(
            f"{name}: decoder_channels needs encoder_depth={encoder_depth} widths, got {channels}"
        )
    smp = import_smp()
    net = getattr(smp, arch)(
        encoder_name=encoder_name,
        encoder_weights=encoder_weights,
        encoder_depth=encoder_depth,
        decoder_channels=channels,
        in_channels=in_channels,
        classes=out_channels,
        **kwargs,
    )
    plusplus = arch == "UnetPlusPlus"
    info = _taps(net, depth=encoder_depth, decoder_channels=channels)
    return ExternalSegmenter(
        net,
        feature_info=info,
        feature_layers=_paths(info, depth=encoder_depth, plusplus=plusplus),
        in_channels=in_channels,
        divisor=2**encoder_depth,
        name=name,
    )


@MODELS.register("smp_unet")
def smp_unet(
    in_channels: int = 3,
    out_channels: int = 1,
    encoder_name: str = "resnet34",
    encoder_weights: str | None = None,
    encoder_depth: int = 5,
    decoder_channels: Sequence[int] | None = None,
    **kwargs: Any,
) -> ExternalSegmenter:
    """smp ``Unet`` with canonical taps (needs the ``[smp]`` extra and a matching torchvision).

    Args:
        in_channels: C of the (B, C, H, W) input.
        out_channels: K of the (B, K, H, W) logits (smp's ``classes``).
        encoder_name: any smp/timm encoder, e.g. ``"resnet34"``, ``"efficientnet-b0"``.
        encoder_weights: ``None`` (default here, no download) or e.g. ``"imagenet"``.
        encoder_depth: 3, 4 or 5; H and W must be divisible by ``2**encoder_depth``.
        decoder_channels: ``encoder_depth`` widths, deep to shallow; default the last ``encoder_depth`` of
            (256, 128, 64, 32, 16).
        **kwargs: passed to ``smp.Unet``.

    Raises:
        ImportError: smp cannot be imported (the message says how to install it).
        ValueError: bad depth or decoder widths.
    """
    return _build(
        "Unet",
        in_channels=in_channels,
        out_channels=out_channels,
        encoder_name=encoder_name,
        encoder_weights=encoder_weights,
        encoder_depth=encoder_depth,
        decoder_channels=decoder_channels,
        kwargs=kwargs,
    )


@MODELS.register("smp_unetplusplus")
def smp_unetplusplus(
    in_channels: int = 3,
    out_channels: int = 1,
    encoder_name: str = "resnet34",
    encoder_weights: str | None = None,
    encoder_depth: int = 5,
    decoder_channels: Sequence[int] | None = None,
    **kwargs: Any,
) -> ExternalSegmenter:
    """smp ``UnetPlusPlus`` with canonical taps on the decoder's main path ``x_0_j``.

    Args and Raises: as :func:`smp_unet`.
    """
    return _build(
        "UnetPlusPlus",
        in_channels=in_channels,
        out_channels=out_channels,
        encoder_name=encoder_name,
        encoder_weights=encoder_weights,
        encoder_depth=encoder_depth,
        decoder_channels=decoder_channels,
        kwargs=kwargs,
    )
