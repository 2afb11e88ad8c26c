"""MONAI tap maps: declared channels and strides against real forward passes, paths, errors."""

from __future__ import annotations

import pytest
import torch
from monai.networks.layers.simplelayers import SkipConnection
from monai.networks.nets.attentionunet import AttentionLayer, AttentionUnet
from monai.networks.nets.basic_unet import BasicUNet
from monai.networks.nets.flexible_unet import FlexibleUNet
from monai.networks.nets.unet import UNet as MonaiUNet
from torch import nn

from fdseg.models import CANONICAL_LAYERS, FeatureTap, create_model
from fdseg.models.external import ExternalSegmenter, monai_feature_info, monai_feature_layers


def _check_taps(net: nn.Module, size: int) -> dict[str, torch.Tensor]:
    """Run ``net`` under a FeatureTap on its canonical map; every tap must match monai_feature_info."""
    layers = monai_feature_layers(net)
    info = monai_feature_info(net)
    assert [f.name for f in info] == list(layers)
    assert set(layers) <= set(CANONICAL_LAYERS)
    # order: encoder shallow to deep, bottleneck, decoder deep to shallow
    assert [CANONICAL_LAYERS.index(n) for n in layers] == sorted(CANONICAL_LAYERS.index(n) for n in layers)
    net.eval()
    with torch.no_grad(), FeatureTap(net, layers) as feats:
        net(torch.rand(1, 3, size, size))
    for f in info:
        assert feats[f.name].shape == (1, f.channels, size // f.reduction, size // f.reduction), f
    return feats


@pytest.mark.parametrize(
    ("depth", "names"),
    [
        (2, ["enc2", "bottleneck", "dec2"]),
        (3, ["enc2", "enc3", "bottleneck", "dec3", "dec2"]),
        (4, ["enc2", "enc3", "enc4", "bottleneck", "dec4", "dec3", "dec2"]),
        (5, ["enc2", "enc3", "enc4", "bottleneck", "dec4", "dec3", "dec2"]),
    ],
)
def test_monai_unet_map_by_resolution(depth: int, names: list[str]) -> None:
    channels = tuple(2 * 2**i for i in range(depth + 1))
    net = MonaiUNet(spatial_dims=2, in_channels=3, out_channels=2, channels=channels, strides=(2,) * depth)
    assert list(monai_feature_layers(net)) == names
    _check_taps(net, 64)
    info = {f.name: f for f in monai_feature_info(net)}
    assert info["bottleneck"].reduction == 2**depth
    assert info["bottleneck"].channels == channels[-1]


def test_monai_unet_paths_avoid_skip_connections() -> None:
    net = MonaiUNet(
        spatial_dims=2, in_channels=3, out_channels=1, channels=(2, 4, 8, 16, 32), strides=(2, 2, 2, 2)
    )
    layers = monai_feature_layers(net)
    assert layers["enc2"] == "model.0"
    assert layers["enc3"] == "model.1.submodule.0"
    assert layers["bottleneck"] == "model.1.submodule.1.submodule.1.submodule.1.submodule"
    assert layers["dec2"] == "model.1.submodule.2"
    for path in layers.values():
        assert not isinstance(net.get_submodule(path), SkipConnection)


def test_monai_attention_unet_map() -> None:
    net = AttentionUnet(
        spatial_dims=2, in_channels=3, out_channels=2, channels=(2, 4, 8, 16, 32), strides=(2,) * 4
    )
    layers = monai_feature_layers(net)
    assert list(layers) == list(CANONICAL_LAYERS)
    assert layers["enc1"] == "model.0"
    assert layers["dec1"] == "model.1"
    assert isinstance(net.get_submodule(layers["dec4"]), AttentionLayer)
    assert layers["bottleneck"] == "model.1.submodule.1.submodule.1.submodule.1.submodule"
    _check_taps(net, 32)


def test_monai_basic_unet_map() -> None:
    net = BasicUNet(spatial_dims=2, in_channels=3, out_channels=2, features=(3, 4, 5, 6, 7, 8))
    layers = monai_feature_layers(net)
    assert layers == {
        "enc1": "conv_0",
        "enc2": "down_1",
        "enc3": "down_2",
        "enc4": "down_3",
        "bottleneck": "down_4",
        "dec4": "upcat_4",
        "dec3": "upcat_3",
        "dec2": "upcat_2",
        "dec1": "upcat_1",
    }
    info = {f.name: f.channels for f in monai_feature_info(net)}
    assert info == {
        **dict(zip(list(layers)[:5], (3, 4, 5, 6, 7))),
        "dec4": 6,
        "dec3": 5,
        "dec2": 4,
        "dec1": 8,
    }
    _check_taps(net, 32)


def test_monai_flexible_unet_list_encoder() -> None:
    net = FlexibleUNet(
        in_channels=3, out_channels=1, backbone="resnet10", decoder_channels=(8, 8, 4, 4, 4), spatial_dims=2
    )
    layers = monai_feature_layers(net)
    assert layers["enc2"] == "encoder[0]"
    assert layers["bottleneck"] == "encoder[4]"
    assert "enc1" not in layers
    _check_taps(net, 64)


def test_wrapper_prefixes_paths_and_checks_input() -> None:
    model = create_model("monai_unet", in_channels=1, out_channels=1, base_width=2, depth=3)
    assert isinstance(model, ExternalSegmenter)
    assert all(path.startswith("net.") for path in model.feature_layers.values())
    assert monai_feature_layers(model) == model.feature_layers
    assert monai_feature_info(model) == model.feature_info
    with pytest.raises(
        ValueError, match=r"monai_unet: .*divisible by 8, got \(20, 24\)\. Consider padding to \(24, 24\)"
    ):
        model(torch.rand(1, 1, 20, 24))
    with pytest.raises(ValueError, match="expected 1 input channels"):
        model(torch.rand(1, 3, 24, 24))


def test_unsupported_networks_are_named() -> None:
    with pytest.raises(
        TypeError, match=r"no canonical tap map for .*Conv2d; supported MONAI nets: \['AttentionUnet'"
    ):
        monai_feature_layers(nn.Conv2d(1, 1, 1))
    net = MonaiUNet(spatial_dims=2, in_channels=1, out_channels=1, channels=(2, 4, 8), strides=(2, 1))
    with pytest.raises(ValueError, match=r"need strides of 2, got \(2, 1\)"):
        monai_feature_layers(net)


def test_factory_options_are_checked() -> None:
    with pytest.raises(ValueError, match="did you mean 'resnet18'"):
        create_model("monai_flexible_unet", backbone="resnet81")
    with pytest.raises(ValueError, match="decoder_channels needs 5 widths"):
        create_model("monai_flexible_unet", backbone="resnet10", decoder_channels=(8, 8))
    with pytest.raises(ValueError, match="feature_size must be a multiple of 12, got 16"):
        create_model("swin_unetr", feature_size=16)
    with pytest.raises(ValueError, match="base_width must be a positive int"):
        create_model("monai_basic_unet", base_width=0)
    with pytest.raises(ValueError, match="differ from feature_layers"):
        ExternalSegmenter(
            nn.Identity(), feature_info=(), feature_layers={"a": "b"}, in_channels=1, divisor=1, name="x"
        )
