"""The built-in UNet: parameter counts from the architecture, taps, options, bad input, learning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fdseg.models import UNet, create_model
from fdseg.models.transunet import TransUNet


def _conv_block_params(cin: int, cout: int, norm: str) -> int:
    if norm == "none":
        return cin * cout * 9 + cout + cout * cout * 9 + cout
    return cin * cout * 9 + 2 * cout + cout * cout * 9 + 2 * cout  # no conv bias, norm weight + bias


def _expected_params(cin: int, k: int, b: int, depth: int, up: str, norm: str) -> int:
    widths = [b * 2**i for i in range(depth + 1)]
    total = _conv_block_params(cin, widths[0], norm)
    for i in range(1, depth + 1):  # enc2..enc{depth}, then the bottleneck
        total += _conv_block_params(widths[i - 1], widths[i], norm)
    for i in range(depth, 0, -1):
        deep, skip = widths[i], widths[i - 1]
        if up == "transpose":
            total += deep * (deep // 2) * 4 + deep // 2
            total += _conv_block_params(deep // 2 + skip, skip, norm)
        else:
            total += _conv_block_params(deep + skip, skip, norm)
    return total + widths[0] * k + k


@pytest.mark.parametrize(
    ("depth", "up", "norm"),
    [
        (4, "transpose", "batch"),
        (3, "bilinear", "batch"),
        (2, "transpose", "none"),
        (1, "bilinear", "instance"),
    ],
)
def test_parameter_count_matches_architecture(depth: int, up: str, norm: str) -> None:
    model = UNet(in_channels=3, out_channels=2, base_width=4, depth=depth, up=up, norm=norm)
    n = sum(p.numel() for p in model.parameters())
    assert n == _expected_params(3, 2, 4, depth, up, norm)


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("up", ["transpose", "bilinear"])
def test_feature_info_matches_intermediates(depth: int, up: str) -> None:
    model = UNet(in_channels=1, out_channels=3, base_width=2, depth=depth, up=up)
    logits, feats = model.forward_intermediates(torch.rand(2, 1, 32, 48))
    assert logits.shape == (2, 3, 32, 48)
    assert list(feats) == [f.name for f in model.feature_info] == list(model.feature_layers)
    assert len(feats) == 2 * depth + 1
    for info in model.feature_info:
        assert feats[info.name].shape == (2, info.channels, 32 // info.reduction, 48 // info.reduction)
    assert model.feature_info[depth].name == "bottleneck"
    assert model.feature_info[depth].reduction == 2**depth


def test_input_checks_name_the_sizes_that_work() -> None:
    model = UNet(base_width=2)
    with pytest.raises(
        ValueError, match=r"divisible by 16, got \(100, 64\)\. Consider padding to \(112, 64\)"
    ):
        model(torch.rand(1, 3, 100, 64))
    with pytest.raises(
        ValueError, match=r"expected 3 input channels \(B, 3, H, W\), got shape \(1, 1, 64, 64\)"
    ):
        model(torch.rand(1, 1, 64, 64))
    with pytest.raises(ValueError, match="expected input of 4 dims"):
        model(torch.rand(3, 64, 64))
    with pytest.raises(TypeError, match="expected a"):
        model([1, 2])  # type: ignore[arg-type]
    UNet(base_width=2, depth=2)(torch.rand(1, 3, 12, 20))  # 4 divides both


def test_bad_options_list_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown depth 5.*valid options: \['1', '2', '3', '4'\]"):
        UNet(depth=5)
    with pytest.raises(ValueError, match="did you mean 'bilinear'"):
        UNet(up="bilinaer")
    with pytest.raises(ValueError, match=r"unknown norm 'layer'.*'batch', 'group', 'instance', 'none'"):
        UNet(norm="layer")
    with pytest.raises(ValueError, match="base_width must be an int >= 1"):
        UNet(base_width=0)
    with pytest.raises(KeyError, match="did you mean 'unet'"):
        create_model("unte")


def test_group_norm_and_registry() -> None:
    model = create_model("unet", in_channels=1, out_channels=1, base_width=4, depth=2, norm="group")
    assert isinstance(model, UNet)
    assert model(torch.rand(1, 1, 16, 16)).shape == (1, 1, 16, 16)


def test_learns_a_single_mask() -> None:
    torch.manual_seed(0)
    model = UNet(in_channels=1, out_channels=1, base_width=4, depth=2)
    image = torch.zeros(2, 1, 16, 16)
    image[:, :, 4:12, 4:12] = 1.0
    mask = image.clone()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(image), mask)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def _transunet_params(cin: int, k: int, b: int, d: int, layers: int) -> int:
    blocks = _conv_block_params
    total = blocks(cin, b, "batch") + blocks(b, 2 * b, "batch") + blocks(2 * b, 4 * b, "batch")
    total += blocks(4 * b, 8 * b, "batch") + blocks(8 * b, 16 * b, "batch")  # enc4, bottleneck conv
    ff = 4 * d
    layer = (3 * d * d + 3 * d) + (d * d + d) + (d * ff + ff) + (ff * d + d) + 2 * (2 * d)
    total += (16 * b * d + d) + (9 * d + d) + layers * layer + 2 * d + (d * 16 * b + 16 * b)
    for deep in (16 * b, 8 * b, 4 * b, 2 * b):  # dec4..dec1: transposed conv + ConvBlock(deep/2 + skip)
        total += deep * (deep // 2) * 4 + deep // 2 + blocks(deep, deep // 2, "batch")
    return total + b * k + k


@pytest.mark.parametrize(("b", "heads", "layers", "embed"), [(4, 2, 1, None), (2, 4, 3, 24)])
def test_transunet_parameter_count_and_taps(b: int, heads: int, layers: int, embed: int | None) -> None:
    model = TransUNet(in_channels=3, out_channels=2, base_width=b, depth=layers, heads=heads, embed_dim=embed)
    d = embed if embed is not None else -(-8 * b // heads) * heads
    assert sum(p.numel() for p in model.parameters()) == _transunet_params(3, 2, b, d, layers)
    logits, feats = model.forward_intermediates(torch.rand(1, 3, 32, 48))
    assert logits.shape == (1, 2, 32, 48)
    assert feats["bottleneck"].shape == (1, 16 * b, 2, 3)
    for info in model.feature_info:
        assert feats[info.name].shape == (1, info.channels, 32 // info.reduction, 48 // info.reduction)


def test_transunet_attention_mixes_tokens() -> None:
    """A change in one corner reaches the far corner of the bottleneck only through the transformer."""
    torch.manual_seed(0)
    model = TransUNet(in_channels=1, out_channels=1, base_width=2, depth=1, heads=2).eval()
    x = torch.rand(1, 1, 128, 128)
    y = x.clone()
    y[..., :16, :16] += 1.0

    def far_corner(m: TransUNet) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            return tuple(m.forward_intermediates(v)[1]["bottleneck"][..., 7, 7] for v in (x, y))  # type: ignore[return-value]

    with_attention = far_corner(model)
    assert not torch.equal(*with_attention)
    model.bottleneck.transformer = torch.nn.Identity()  # the CNN's receptive field (172 px) stops short
    without_attention = far_corner(model)
    assert torch.equal(*without_attention)


def test_transunet_bad_options() -> None:
    with pytest.raises(ValueError, match=r"embed_dim \(10\) must be a positive multiple of heads \(4\)"):
        TransUNet(embed_dim=10, heads=4)
    with pytest.raises(ValueError, match="heads must be an int >= 1"):
        TransUNet(heads=0)
    with pytest.raises(ValueError, match=r"divisible by 16, got \(40, 32\)\. Consider padding to \(48, 32\)"):
        TransUNet(base_width=2, depth=1, heads=2)(torch.rand(1, 3, 40, 32))
