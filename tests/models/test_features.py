"""FeatureTap: shapes, ordering, hook removal, per-step memory, wrappers, selectors and error messages."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import Tensor, nn

from fdseg.models import CANONICAL_LAYERS, FeatureTap, UNet, parse_layer_path, resolve_layers, unwrap_model


def _all_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


class _ListEncoder(nn.Module):
    """Returns a list of three maps, like MONAI FlexibleUNet's or smp's encoder."""

    def forward(self, x: Tensor) -> list[Tensor]:
        return [x, 2 * x, 3 * x]


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = _ListEncoder()
        self.head = nn.Conv2d(3, 1, 1)
        self.unused = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x)[-1])


@pytest.fixture
def unet() -> UNet:
    torch.manual_seed(0)
    return UNet(in_channels=3, out_channels=2, base_width=4, depth=4)


def test_canonical_shapes_and_order(unet: UNet) -> None:
    x = torch.rand(2, 3, 64, 64)
    with FeatureTap(unet, list(reversed(CANONICAL_LAYERS))) as feats:
        logits = unet(x)
    assert logits.shape == (2, 2, 64, 64)
    assert list(feats) == list(reversed(CANONICAL_LAYERS))
    for info in unet.feature_info:
        assert feats[info.name].shape == (2, info.channels, 64 // info.reduction, 64 // info.reduction)


def test_tap_equals_forward_intermediates(unet: UNet) -> None:
    unet.eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad(), FeatureTap(unet, unet.feature_layers) as feats:
        logits = unet(x)
        ref_logits, ref = unet.forward_intermediates(x)
    # the second call refreshed the dict: same values, new tensors
    torch.testing.assert_close(logits, ref_logits)
    assert list(feats) == list(ref)
    for name in ref:
        assert feats[name] is ref[name]


def test_hooks_removed_on_exit_and_on_exception(unet: UNet) -> None:
    assert _all_hooks(unet) == 0
    with FeatureTap(unet, ["enc1", "dec1"]):
        assert _all_hooks(unet) == 4  # two taps + pre/post hooks on the root
    assert _all_hooks(unet) == 0
    with pytest.raises(ZeroDivisionError), FeatureTap(unet, ["enc1"]):
        _ = 1 / 0
    assert _all_hooks(unet) == 0
    with pytest.raises(ValueError, match="divisible by 16"), FeatureTap(unet, ["enc1"]):
        unet(torch.rand(1, 3, 20, 20))
    assert _all_hooks(unet) == 0


def test_dict_cleared_each_step_and_old_features_freed(unet: UNet) -> None:
    unet.eval()
    with torch.no_grad(), FeatureTap(unet, ["enc1", "bottleneck"]) as feats:
        unet(torch.rand(1, 3, 32, 32))
        old = weakref.ref(feats["enc1"])
        old_id = id(feats["bottleneck"])
        assert old() is not None
        unet(torch.rand(1, 3, 32, 32))
        gc.collect()
        assert old() is None  # nothing kept the first step's features alive
        assert id(feats["bottleneck"]) != old_id or feats["bottleneck"].shape == (1, 64, 2, 2)
        assert list(feats) == ["enc1", "bottleneck"]


def test_features_carry_gradients(unet: UNet) -> None:
    with FeatureTap(unet, ["bottleneck"]) as feats:
        unet(torch.rand(2, 3, 32, 32))
    feats["bottleneck"].pow(2).mean().backward()
    enc1_grad = unet.get_submodule("enc1.0").weight.grad
    assert enc1_grad is not None and enc1_grad.abs().sum() > 0
    assert unet.head.weight.grad is None  # the head is after the tap


def test_index_selector_and_raw_paths() -> None:
    net = _Net()
    x = torch.rand(1, 3, 8, 8)
    with FeatureTap(net, {"second": "encoder[1]", "last": "encoder[-1]", "head": "head"}) as feats:
        net(x)
    torch.testing.assert_close(feats["second"], 2 * x)
    torch.testing.assert_close(feats["last"], 3 * x)
    assert feats["head"].shape == (1, 1, 8, 8)
    with FeatureTap(net, ["head"]) as feats:  # a raw path is also its name
        net(x)
    assert list(feats) == ["head"]


def test_selector_errors_at_forward() -> None:
    net = _Net()
    x = torch.rand(1, 3, 8, 8)
    with (
        pytest.raises(TypeError, match=r"add an index selector like 'encoder\[0\]'"),
        FeatureTap(net, ["encoder"]),
    ):
        net(x)
    out_of_range = "index 5 out of range for an output of 3 items"
    with pytest.raises(IndexError, match=out_of_range), FeatureTap(net, {"e": "encoder[5]"}):
        net(x)
    with pytest.raises(TypeError, match="not a tuple or list"), FeatureTap(net, {"h": "head[0]"}):
        net(x)
    assert _all_hooks(net) == 0


def test_strict_reports_modules_that_did_not_run() -> None:
    net = _Net()
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(RuntimeError, match=r"did not run.*unused"), FeatureTap(net, ["head", "unused"]):
        net(x)
    with FeatureTap(net, ["head", "unused"], strict=False) as feats:
        net(x)
    assert list(feats) == ["head"]


def test_unwraps_dataparallel_and_compile(unet: UNet) -> None:
    wrapped = nn.DataParallel(unet)
    assert unwrap_model(wrapped) is unet
    with FeatureTap(wrapped, ["enc2"]) as feats:
        wrapped(torch.rand(1, 3, 32, 32))
    assert feats["enc2"].shape == (1, 8, 16, 16)

    compiled = torch.compile(unet, backend="eager")
    assert unwrap_model(compiled) is unet
    unet.eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad(), FeatureTap(compiled, ["enc1", "dec2"]) as feats:
        compiled(x)
        _, ref = unet.forward_intermediates(x)
    assert list(feats) == ["enc1", "dec2"]
    torch.testing.assert_close(feats["dec2"], ref["dec2"])


def test_unknown_module_path_suggests_closest(unet: UNet) -> None:
    with pytest.raises(KeyError, match=r"has no module 'decc1'; closest: \['dec1'"):
        FeatureTap(unet, {"d": "decc1"})
    with pytest.raises(KeyError, match="top-level modules"):
        FeatureTap(_Net(), {"x": "zzzzzz"})


def test_canonical_name_errors() -> None:
    shallow = UNet(base_width=2, depth=2)
    with pytest.raises(
        ValueError, match=r"no feature layer 'enc4'; it declares \['enc1', 'enc2', 'bottleneck'"
    ):
        FeatureTap(shallow, ["enc1", "enc4"])
    with pytest.raises(ValueError, match="declares no feature_layers"):
        FeatureTap(_Net(), ["enc1"])


def test_malformed_layer_arguments(unet: UNet) -> None:
    with pytest.raises(TypeError, match=r"not the string 'enc1'; use \['enc1'\]"):
        FeatureTap(unet, "enc1")
    with pytest.raises(ValueError, match="layers is empty"):
        FeatureTap(unet, [])
    with pytest.raises(ValueError, match="listed twice"):
        FeatureTap(unet, ["enc1", "enc1"])
    with pytest.raises(TypeError, match="layer names must be strings"):
        FeatureTap(unet, [1])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="malformed layer path"):
        parse_layer_path("encoder[a]")
    assert parse_layer_path("net.encoder[2][-1]") == ("net.encoder", (2, -1))
    assert resolve_layers(unet, ["enc1", "head"]) == {"enc1": "enc1", "head": "head"}


def test_reentry_is_refused(unet: UNet) -> None:
    tap = FeatureTap(unet, ["enc1"])
    with tap, pytest.raises(RuntimeError, match="already active"):
        tap.__enter__()
    assert _all_hooks(unet) == 0
    with tap as feats:  # usable again after exit
        unet(torch.rand(2, 3, 16, 16))
    assert feats["enc1"].shape == (2, 4, 16, 16)
