"""The paper's three architectures: Keras parameter counts, taps, variants, options, bad input."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fdseg.models import FeatureTap, create_model
from fdseg.models._paper_layers import keras_init_
from fdseg.models.attention_unet import AttentionUNet
from fdseg.models.cmunet import CMUNet
from fdseg.models.nucleisegnet import NucleiSegNet


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    """Run these tiny models on one intra-op thread: on a busy 2-core machine, two OpenMP threads made the
    same forward/backward passes up to 100x slower. The previous setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------------------
# Parameter counts. Keras' model.summary() total counts BatchNorm moving mean/variance as (non-trainable)
# parameters: a Keras BN layer over c channels holds 4c numbers. The formulas below rebuild that total layer
# by layer from the released Keras code (method-spec.md §E), independently of the PyTorch modules.
# ----------------------------------------------------------------------------------------------------------


def _conv(k: int, cin: int, cout: int) -> int:
    return k * k * cin * cout + cout


def _bn(c: int) -> int:
    return 4 * c


def _keras_attention_unet() -> int:
    def cb(cin: int, n: int) -> int:
        return _conv(3, cin, n) + _bn(n) + _conv(3, n, n) + _bn(n)

    def gate(cg: int, cs: int, n: int) -> int:
        return _conv(1, cg, n) + _bn(n) + _conv(1, cs, n) + _bn(n) + _conv(1, n, n)

    encoder = cb(3, 64) + cb(64, 128) + cb(128, 256) + cb(256, 512)
    decoder = sum(gate(c, c // 2, c // 2) + cb(c + c // 2, c // 2) for c in (512, 256, 128))
    return encoder + decoder + _conv(1, 64, 1)


def _keras_nucleisegnet() -> int:
    def crb(k: int, cin: int, cout: int) -> int:  # conv -> ReLU -> BN
        return _conv(k, cin, cout) + _bn(cout)

    def rrb(cin: int, f: int) -> int:
        separable = 9 * f + f * f + f + _bn(f)  # depthwise (no bias) + pointwise + one bias
        return crb(3, cin, f) + separable + crb(3, f, f) + crb(3, cin + f, f)

    def decoder(cin: int, f: int) -> int:
        gate = _conv(1, cin, f) + _conv(3, f, f // 2) + _conv(3, f, f // 2) + _conv(1, f // 2, f) + _bn(f)
        transpose = 4 * cin * f + f
        return transpose + gate + crb(3, 2 * f, f) + crb(3, f, f)

    encoder = rrb(3, 32) + rrb(32, 64) + rrb(64, 128) + rrb(128, 256)
    bottleneck = crb(3, 256, 512) + 2 * crb(3, 512, 512)
    decoders = sum(decoder(cin, cin // 2) for cin in (512, 256, 128, 64))
    return encoder + bottleneck + decoders + _conv(1, 32, 1)


def _keras_cmunet(depth: int = 7, k: int = 7) -> int:
    def cb(cin: int, n: int) -> int:
        return _conv(3, cin, n) + _bn(n) + _conv(3, n, n) + _bn(n)

    def msag(n: int) -> int:  # one BN shared by the three branches
        return _conv(1, n, n) + _conv(3, n, n) + _conv(3, n, n) + _bn(n) + _conv(1, 3 * n, n)

    encoder = cb(3, 64) + cb(64, 128) + cb(128, 256) + cb(256, 512) + cb(512, 1024)
    mixer = depth * (k * k * 1024 + 1024 + _bn(1024) + _conv(1, 1024, 1024) + _bn(1024))
    decoders = sum(msag(n) + _conv(3, 2 * n, n) + _bn(n) + cb(2 * n, n) for n in (512, 256, 128, 64))
    return encoder + mixer + decoders + _conv(1, 64, 1)


def _counts(model: nn.Module) -> tuple[int, int]:
    """(trainable parameters, parameters + BN running mean/var) of ``model``."""
    params = sum(p.numel() for p in model.parameters())
    stats = sum(b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked"))
    return params, params + stats


@pytest.mark.parametrize(
    ("name", "trainable", "keras_total", "paper_millions", "formula"),
    [
        ("attention_unet", 8_135_745, 8_143_169, 8.14, _keras_attention_unet),
        ("nucleisegnet", 12_395_713, 12_405_505, 12.41, _keras_nucleisegnet),
        ("cmunet", 49_926_593, 49_970_881, 49.97, _keras_cmunet),
    ],
)
def test_released_parameter_counts_match_keras(
    name: str, trainable: int, keras_total: int, paper_millions: float, formula: object
) -> None:
    with torch.device("meta"):  # full width, no memory and no init cost
        model = create_model(name, in_channels=3, out_channels=1)
    params, with_stats = _counts(model)
    assert (params, with_stats) == (trainable, keras_total)
    assert callable(formula) and formula() == keras_total
    # The published figure (rounded to 10 k) is the Keras total, and the trainable count is within 0.5 % too.
    assert round(with_stats / 1e6, 2) == paper_millions
    assert abs(params / (paper_millions * 1e6) - 1) < 0.005


def test_original_variants_parameter_counts() -> None:
    with torch.device("meta"):
        cmu = CMUNet(variant="original")
        jimenez = AttentionUNet(variant="jimenez2022")
    # Original MSAG: 3 BNs + a BN in the vote conv (2 trainable numbers per channel each) instead of one.
    extra = sum(3 * 2 * n for n in (512, 256, 128, 64))
    assert _counts(cmu)[0] == 49_926_593 + extra

    # Jimenez et al.: blocks 3-64-128-256-512 + Conv_middle, up-convs, one-channel gates (PyTorch BN: 2c).
    def cb(cin: int, n: int) -> int:
        return _conv(3, cin, n) + 2 * n + _conv(3, n, n) + 2 * n

    expected = cb(3, 64) + cb(64, 128) + cb(128, 256) + cb(256, 512) + cb(512, 512) + _conv(1, 64, 1)
    for c in (512, 256, 128):
        n = c // 2
        up = _conv(3, c, n) + 2 * n
        gate = 2 * (_conv(1, n, n // 2) + n) + _conv(1, n // 2, 1) + 2
        expected += up + gate + cb(2 * n, n)
    assert _counts(jimenez)[0] == expected


# ----------------------------------------------------------------------------------------------------------
# Tiny models: forward/backward, taps, variants.
# ----------------------------------------------------------------------------------------------------------

TINY: list[tuple[str, dict[str, object]]] = [
    ("attention_unet", {"variant": "released"}),
    ("attention_unet", {"variant": "released", "enc_tap": "pooled_upsampled"}),
    ("attention_unet", {"variant": "jimenez2022"}),
    ("nucleisegnet", {}),
    ("cmunet", {"variant": "released", "mixer_depth": 2}),
    ("cmunet", {"variant": "original", "mixer_depth": 2}),
]
EXPECTED_TAPS = {
    "attention_unet": ["enc1", "enc2", "enc3", "bottleneck", "dec3", "dec2", "dec1"],
    "nucleisegnet": ["enc1", "enc2", "enc3", "enc4", "bottleneck", "dec4", "dec3", "dec2", "dec1"],
    "cmunet": ["enc1", "enc2", "enc3", "enc4", "bottleneck", "dec4", "dec3", "dec2", "dec1"],
}


def _tiny(name: str, **kwargs: object) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, in_channels=3, out_channels=2, base_width=4, **kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs"), TINY, ids=[f"{n}-{'-'.join(map(str, k.values()))}" for n, k in TINY]
)
def test_forward_backward_and_taps(name: str, kwargs: dict[str, object]) -> None:
    model = _tiny(name, **kwargs)
    x = torch.rand(2, 3, 64, 64)
    with FeatureTap(model, model.feature_layers) as feats:
        logits = model(x)
    assert logits.shape == (2, 2, 64, 64)
    assert list(feats) == EXPECTED_TAPS[name] == [info.name for info in model.feature_info]
    width = {1: 4, 2: 8, 4: 16, 8: 32, 16: 64}  # base_width 4 doubles per level
    for info in model.feature_info:
        assert info.channels == width[info.reduction]
        size = 64 // info.reduction
        assert feats[info.name].shape == (2, info.channels, size, size), info.name
    deepest = max(info.reduction for info in model.feature_info)
    assert next(i for i in model.feature_info if i.name == "bottleneck").reduction == deepest

    # The hooked tensors are the ones forward_intermediates returns (no dropout: jimenez in eval mode).
    model.eval()
    with torch.no_grad(), FeatureTap(model, model.feature_layers) as tapped:
        ref_logits, ref = model.forward_intermediates(x)
        torch.testing.assert_close(model(x), ref_logits)
    for key in ref:
        torch.testing.assert_close(tapped[key], ref[key])

    # Backward: the loss on logits and on every tap reaches every parameter, with finite gradients.
    model.train()
    with FeatureTap(model, model.feature_layers) as feats:
        loss = model(x).square().mean() + sum(f.mean() for f in feats.values())
    loss.backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, pname
        assert torch.isfinite(param.grad).all(), pname
    assert sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None) > 0


@pytest.mark.parametrize(
    ("name", "kwargs", "nonnegative"),
    [
        ("attention_unet", {}, EXPECTED_TAPS["attention_unet"]),
        ("cmunet", {"mixer_depth": 1}, [n for n in EXPECTED_TAPS["cmunet"] if n != "bottleneck"]),
    ],
)
def test_post_relu_taps_are_nonnegative(name: str, kwargs: dict[str, object], nonnegative: list[str]) -> None:
    model = _tiny(name, **kwargs)
    _, feats = model.forward_intermediates(torch.rand(2, 3, 32, 32))
    for key in nonnegative:
        assert feats[key].min() >= 0, key
    # NucleiSegNet's taps end in BatchNorm (conv -> ReLU -> BN): centred, so negative values occur.
    _, nuseg = _tiny("nucleisegnet").forward_intermediates(torch.rand(2, 3, 32, 32))
    assert all(f.min() < 0 for f in nuseg.values())


def test_multiclass_head_and_single_channel_input() -> None:
    model = create_model("nucleisegnet", in_channels=1, out_channels=4, base_width=2)
    assert model(torch.rand(1, 1, 32, 32)).shape == (1, 4, 32, 32)


# ----------------------------------------------------------------------------------------------------------
# AttentionUNet options.
# ----------------------------------------------------------------------------------------------------------


def test_attention_unet_encoder_tap_options() -> None:
    pre = _tiny("attention_unet")
    pooled = _tiny("attention_unet", enc_tap="pooled_upsampled")
    pooled.load_state_dict(pre.state_dict())  # the option adds no parameters
    assert not any("enc_taps" in n for n, _ in pre.named_modules())
    assert pooled.feature_layers["enc2"] == "enc_taps.enc2" and pre.feature_layers["enc2"] == "enc2"
    pre.eval()
    pooled.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad(), FeatureTap(pooled, {"s1": "enc1", "s3": "enc3", **pooled.feature_layers}) as feats:
        logits_pooled = pooled(x)
    with torch.no_grad(), FeatureTap(pre, pre.feature_layers) as feats_pre:
        logits_pre = pre(x)
    torch.testing.assert_close(logits_pooled, logits_pre)  # taps never change the prediction
    torch.testing.assert_close(feats_pre["enc1"], feats["s1"])  # pre_pool = the skip tensor s_l
    for tap, skip in (("enc1", "s1"), ("enc3", "s3")):
        expected = F.interpolate(F.max_pool2d(feats[skip], 2), scale_factor=2, mode="bilinear")
        torch.testing.assert_close(feats[tap], expected)
        assert feats[tap].shape == feats[skip].shape
        assert not torch.equal(feats[tap], feats[skip])


def test_attention_unet_released_gate_and_upsampling() -> None:
    model = _tiny("attention_unet")
    gate = model.dec3.gate
    assert gate.psi.out_channels == gate.proj_skip.out_channels == 16  # n-channel gate, no BN before σ
    assert not hasattr(gate, "norm_psi")
    assert model.dec3.up.mode == "bilinear" and model.dec3.up.align_corners is False
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bn.momentum == pytest.approx(0.01) and bn.eps == 1e-3 for bn in bns)  # Keras 0.99 / 1e-3
    conv = model.enc1.conv1
    assert torch.count_nonzero(conv.bias) == 0


def test_jimenez_variant_dropout_gate_and_wiring() -> None:
    model = _tiny("attention_unet", variant="jimenez2022")
    assert model.dec3.gate.psi.out_channels == 1 and model.dec3.gate.norm_psi.num_features == 1
    assert model.dec3.up[0].mode == "nearest"
    assert any(isinstance(m, nn.LeakyReLU) for m in model.enc1.modules())
    x = torch.rand(2, 3, 32, 32)
    model.eval()  # dropout off: deterministic
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
    model.train()  # dropout 0.5 on
    torch.manual_seed(1)
    first = model(x)
    torch.manual_seed(2)
    assert not torch.allclose(first, model(x))

    # Correct wiring: the first decoder block's output feeds the rest (the original code dropped it).
    model.eval()
    with FeatureTap(model, ["dec3"]) as feats:
        logits = model(x)
    grad = torch.autograd.grad(logits.sum(), feats["dec3"])[0]
    assert grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------------
# CMUNet variants.
# ----------------------------------------------------------------------------------------------------------


def test_cmunet_released_msag_shares_one_batchnorm() -> None:
    released = _tiny("cmunet", mixer_depth=1)
    original = _tiny("cmunet", variant="original", mixer_depth=1)
    for model, n_bn in ((released, 1), (original, 4)):
        gate = model.dec2.skip_gate
        assert sum(isinstance(m, nn.BatchNorm2d) for m in gate.modules()) == n_bn
    calls: list[tuple[int, ...]] = []
    norm = released.dec2.skip_gate.norm
    handle = norm.register_forward_hook(lambda m, args, out: calls.append(tuple(out.shape)))
    before = int(norm.num_batches_tracked)
    released.train()
    released(torch.rand(2, 3, 32, 32))
    handle.remove()
    assert calls == [(2, 8, 16, 16)] * 3  # one module, three branches
    assert int(norm.num_batches_tracked) == before + 3
    for bn in (original.dec2.skip_gate.norm_pointwise, original.dec2.skip_gate.norm_vote):
        assert bn.momentum == pytest.approx(0.1) and bn.eps == 1e-5  # PyTorch defaults in the original


@pytest.mark.parametrize(("variant", "act"), [("released", nn.ReLU), ("original", nn.GELU)])
def test_cmunet_convmixer_residual_placement(variant: str, act: type[nn.Module]) -> None:
    layer = _tiny("cmunet", variant=variant, mixer_depth=1).mixer[0]
    assert isinstance(layer.act, act)
    with torch.no_grad():
        layer.pointwise.weight.zero_()
        layer.pointwise.bias.zero_()
    layer.train()
    x = torch.randn(2, 64, 4, 4)
    out = layer(x)
    if variant == "released":  # residual spans both convs: a zero pointwise branch gives the identity
        torch.testing.assert_close(out, x)
    else:  # residual wraps the depthwise part only: BN(GELU(0)) = 0 in training mode
        torch.testing.assert_close(out, torch.zeros_like(x))


# ----------------------------------------------------------------------------------------------------------
# Keras initialisation and NucleiSegNet conventions.
# ----------------------------------------------------------------------------------------------------------


def test_keras_initialisers() -> None:
    torch.manual_seed(0)
    weight = torch.empty(256, 128, 3, 3)
    fan_in, fan_out = 128 * 9, 256 * 9
    keras_init_(weight, "he_normal")
    std = math.sqrt(2 / fan_in)
    assert float(weight.std()) == pytest.approx(std, rel=0.01)
    assert float(weight.abs().max()) <= 2 * std / 0.87962566103423978 + 1e-7  # truncated at 2 sigma
    keras_init_(weight, "glorot_normal")
    assert float(weight.std()) == pytest.approx(math.sqrt(2 / (fan_in + fan_out)), rel=0.01)
    keras_init_(weight, "glorot_uniform")
    limit = math.sqrt(6 / (fan_in + fan_out))
    assert float(weight.abs().max()) <= limit and float(weight.abs().max()) > 0.99 * limit
    with pytest.raises(ValueError, match="unknown Keras initialiser"):
        keras_init_(weight, "lecun")  # type: ignore[arg-type]


def test_nucleisegnet_keras_conventions() -> None:
    model = _tiny("nucleisegnet")
    rrb = model.enc2
    assert isinstance(rrb.conv1.act, nn.ReLU)  # conv -> ReLU -> BN
    assert list(rrb.conv1._modules) == ["conv", "norm", "act"]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(bn.momentum == 0.5 and bn.eps == 1e-3 for bn in bns)
    assert torch.all(rrb.conv1.norm.bias == 0.01) and torch.all(model.dec2.conv1.norm.bias == 0)
    assert torch.all(rrb.conv1.conv.bias == 0.1) and torch.all(model.dec2.up.bias == 0.1)
    assert rrb.conv2.depthwise.bias is None and rrb.conv2.depthwise.groups == 8
    assert torch.all(model.dec2.gate.psi.bias == 0)
    assert model.dec2.up.kernel_size == (2, 2) and model.dec2.up.stride == (2, 2)


# ----------------------------------------------------------------------------------------------------------
# Bad input.
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shape", "message"),
    [
        (
            "attention_unet",
            (1, 3, 60, 64),
            r"divisible by 8, got \(60, 64\)\. Consider padding to \(64, 64\)",
        ),
        ("nucleisegnet", (1, 3, 72, 64), r"divisible by 16, got \(72, 64\)\. Consider padding to \(80, 64\)"),
        (
            "cmunet",
            (1, 3, 32, 40),
            r"CMUNet: .*divisible by 16, got \(32, 40\)\. Consider padding to \(32, 48\)",
        ),
        ("cmunet", (1, 1, 32, 32), r"expected 3 input channels"),
        ("attention_unet", (3, 32, 32), r"4 dims"),
    ],
)
def test_bad_input_size(name: str, shape: tuple[int, ...], message: str) -> None:
    model = create_model(name, base_width=2, **({"mixer_depth": 0} if name == "cmunet" else {}))
    with pytest.raises(ValueError, match=message):
        model(torch.rand(*shape))


def test_attention_unet_takes_multiples_of_eight() -> None:
    model = _tiny("attention_unet")
    assert model(torch.rand(1, 3, 24, 40)).shape == (1, 2, 24, 40)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        (
            "attention_unet",
            {"variant": "jimenez"},
            r"did you mean 'jimenez2022'.*\['jimenez2022', 'released'\]",
        ),
        ("attention_unet", {"enc_tap": "pooled"}, r"unknown enc_tap.*\['pooled_upsampled', 'pre_pool'\]"),
        ("cmunet", {"variant": "paper"}, r"unknown variant 'paper'.*\['original', 'released'\]"),
        ("cmunet", {"mixer_kernel": 4}, r"mixer_kernel must be odd"),
        ("nucleisegnet", {"base_width": 1}, r"base_width must be an int >= 2"),
        ("attention_unet", {"out_channels": 0}, r"out_channels must be an int >= 1"),
    ],
)
def test_bad_options(name: str, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_model(name, **kwargs)


def test_non_int_width_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="base_width must be an int >= 2"):
        NucleiSegNet(base_width=8.0)  # type: ignore[arg-type]


def test_logits_not_probabilities() -> None:
    model = _tiny("cmunet", mixer_depth=1)
    with torch.no_grad():
        model.head.bias.fill_(-5.0)
        logits: Tensor = model(torch.rand(1, 3, 32, 32))
    assert float(logits.max()) < 0  # a sigmoid output could not be negative
