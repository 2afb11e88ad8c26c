"""MONAI tap maps: declared channels and strides against real forward passes, paths, errors."""

from __future__ import annotations

import importlib.abc
import itertools
import sys
import types

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
    with pytest.raises(ValueError, match="base_width must be an int >= 1"):
        create_model("monai_basic_unet", base_width=0)
    with pytest.raises(ValueError, match="differ from feature_layers"):
        ExternalSegmenter(
            nn.Identity(), feature_info=(), feature_layers={"a": "b"}, in_channels=1, divisor=1, name="x"
        )


# --- smp: the error path always, the tap map on a stand-in with smp's module layout -----------------------


class _RaiseOnImport(importlib.abc.MetaPathFinder):
    """Makes ``import segmentation_models_pytorch`` fail like a torchvision that does not match torch."""

    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        if fullname == "segmentation_models_pytorch":
            raise RuntimeError("operator torchvision::nms does not exist")


def test_smp_missing_raises_import_error_with_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)
    with pytest.raises(ImportError, match=r'pip install "fdseg\[smp\]".*torchvision build matching'):
        create_model("smp_unet")


def test_smp_broken_torchvision_raises_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "segmentation_models_pytorch", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_RaiseOnImport(), *sys.meta_path])
    with pytest.raises(
        ImportError, match=r"RuntimeError: operator torchvision::nms does not exist.*fdseg\[smp\]"
    ):
        create_model("smp_unetplusplus")


class _StandInEncoder(nn.Module):
    """smp's encoder contract: ``forward(x) -> [x, f1, ..., fd]`` with f_i at reduction 2**i."""

    def __init__(self, in_channels: int, depth: int) -> None:
        super().__init__()
        widths = [in_channels, 6, 7, 8, 9, 10][: depth + 1]
        self.out_channels = tuple(widths)
        self.output_stride = 2**depth
        self.stages = nn.ModuleList(
            nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in itertools.pairwise(widths)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [x]
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        return feats


class _StandInBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.interpolate(x, scale_factor=2.0))


class _StandInDecoder(nn.Module):
    def __init__(self, head_channels: int, decoder_channels: tuple[int, ...], plusplus: bool) -> None:
        super().__init__()
        ins = [head_channels, *decoder_channels[:-1]]
        blocks = [_StandInBlock(a, b) for a, b in zip(ins, decoder_channels)]
        if plusplus:
            self.blocks: nn.Module = nn.ModuleDict({f"x_0_{j}": b for j, b in enumerate(blocks)})
        else:
            self.blocks = nn.ModuleList(blocks)
        self.plusplus = plusplus

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for j in range(len(self.blocks)):
            x = self.blocks[f"x_0_{j}" if self.plusplus else j](x)  # type: ignore[index]
        return x


def _stand_in_smp() -> types.ModuleType:
    def make(plusplus: bool) -> type[nn.Module]:
        class Model(nn.Module):
            def __init__(self, *, encoder_depth: int, decoder_channels: tuple[int, ...], in_channels: int,
                         classes: int, **_: object) -> None:  # fmt: skip
                super().__init__()
                self.encoder = _StandInEncoder(in_channels, encoder_depth)
                self.decoder = _StandInDecoder(self.encoder.out_channels[-1], decoder_channels, plusplus)
                self.segmentation_head = nn.Conv2d(decoder_channels[-1], classes, 1)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.segmentation_head(self.decoder(self.encoder(x)))

        Model.__name__ = "UnetPlusPlus" if plusplus else "Unet"
        return Model

    module = types.ModuleType("segmentation_models_pytorch")
    module.Unet = make(False)  # type: ignore[attr-defined]
    module.UnetPlusPlus = make(True)  # type: ignore[attr-defined]
    return module


@pytest.mark.parametrize("name", ["smp_unet", "smp_unetplusplus"])
@pytest.mark.parametrize("depth", [3, 5])
def test_smp_tap_map_on_stand_in(monkeypatch: pytest.MonkeyPatch, name: str, depth: int) -> None:
    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", _stand_in_smp())
    model = create_model(name, in_channels=3, out_channels=2, encoder_depth=depth)
    layers = model.feature_layers
    assert layers["bottleneck"] == f"net.encoder[{depth}]"
    assert "enc1" not in layers and "dec1" in layers
    last = (
        f"net.decoder.blocks.x_0_{depth - 1}"
        if name == "smp_unetplusplus"
        else f"net.decoder.blocks.{depth - 1}"
    )
    assert layers["dec1"] == last
    expected = ["enc2", "enc3", "enc4"][: min(depth - 1, 3)]  # every map shallower than the bottleneck
    assert [n for n in layers if n.startswith("enc")] == expected
    x = torch.rand(1, 3, 64, 64)
    with FeatureTap(model, layers) as feats:
        assert model(x).shape == (1, 2, 64, 64)
    for f in model.feature_info:
        assert feats[f.name].shape == (1, f.channels, 64 // f.reduction, 64 // f.reduction), f
    with pytest.raises(ValueError, match=f"divisible by {2**depth}"):
        model(torch.rand(1, 3, 2**depth + 4, 64))


def test_smp_options_are_checked_before_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "segmentation_models_pytorch", None)
    with pytest.raises(ValueError, match=r"unknown encoder_depth 6.*valid options: \['3', '4', '5'\]"):
        create_model("smp_unet", encoder_depth=6)
    with pytest.raises(ValueError, match="decoder_channels needs encoder_depth=4 widths"):
        create_model("smp_unet", encoder_depth=4, decoder_channels=(8, 8))
