"""FeatureDiscrepancyLoss and ExchangeableFeatureDiscrepancyLoss: LossOutput, weights, presets, errors."""

from __future__ import annotations

import math

import pytest
import torch

from fdseg.losses import (
    PRESETS,
    ExchangeableFeatureDiscrepancyLoss,
    FeatureDiscrepancyLoss,
    LossOutput,
    exchangeable_fd_term,
    fd_term,
    resolve_options,
)

LAYERS = ["enc1", "enc2", "bottleneck"]


def _batch(dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    feats = {
        "enc1": torch.randn(3, 4, 16, 16, generator=gen, dtype=dtype),
        "enc2": torch.randn(3, 6, 8, 8, generator=gen, dtype=dtype),
        "bottleneck": torch.randn(3, 8, 2, 2, generator=gen, dtype=dtype),
        "dec1": torch.randn(3, 4, 16, 16, generator=gen, dtype=dtype),  # present but not used
    }
    mask = torch.zeros(3, 1, 16, 16, dtype=dtype)
    mask[0, :, 2:9, 3:12] = 1.0
    mask[1, :, 10:, :5] = 1.0
    return feats, mask  # image 2 has no foreground


def test_loss_output_terms_and_weighted_total() -> None:
    feats, mask = _batch()
    for f in feats.values():
        f.requires_grad_(True)
    loss = FeatureDiscrepancyLoss(LAYERS, layer_weights={"enc2": 0.5, "bottleneck": 2.0})
    out = loss(feats, mask)
    assert isinstance(out, LossOutput)
    assert sorted(out.terms) == ["fd/bottleneck", "fd/enc1", "fd/enc2"]
    assert all(not t.requires_grad and t.ndim == 0 for t in out.terms.values())
    expected = out.terms["fd/enc1"] + 0.5 * out.terms["fd/enc2"] + 2.0 * out.terms["fd/bottleneck"]
    assert float(out.total.detach()) == pytest.approx(float(expected), rel=1e-6)
    for name in LAYERS:  # module equals functional
        assert float(out.terms[f"fd/{name}"]) == pytest.approx(
            float(fd_term(feats[name], mask).value.detach())
        )
    out.total.backward()
    assert all(feats[name].grad is not None for name in LAYERS) and feats["dec1"].grad is None


def test_weights_per_call_settable_and_zero_weight_is_logged_only() -> None:
    feats, mask = _batch()
    feats["enc1"].requires_grad_(True)
    loss = FeatureDiscrepancyLoss(LAYERS)
    loss.set_layer_weights({"enc1": 0.0, "enc2": 0.25})
    assert loss.layer_weights == {"enc1": 0.0, "enc2": 0.25, "bottleneck": 1.0}
    out = loss(feats, mask)
    assert float(out.terms["fd/enc1"]) != 0.0  # still computed for logging
    expected = 0.25 * out.terms["fd/enc2"] + out.terms["fd/bottleneck"]
    assert float(out.total) == pytest.approx(float(expected), rel=1e-6)
    assert not out.terms["fd/enc1"].requires_grad
    call = loss(feats, mask, weights={"enc1": 1.0, "bottleneck": 0.0})
    expected = call.terms["fd/enc1"] + 0.25 * call.terms["fd/enc2"]
    assert float(call.total.detach()) == pytest.approx(float(expected), rel=1e-6)
    assert loss.layer_weights["enc1"] == 0.0  # per-call weights do not stick
    zero = loss(feats, mask, weights=dict.fromkeys(LAYERS, 0.0))
    assert float(zero.total) == 0.0 and not zero.total.requires_grad


def test_presets_and_overrides() -> None:
    feats, mask = _batch()
    for preset in PRESETS:
        out = FeatureDiscrepancyLoss(["enc2"], preset=preset)(feats, mask)
        ref = fd_term(feats["enc2"], mask, **PRESETS[preset])
        assert float(out.total) == pytest.approx(float(ref.value), rel=1e-6)
    loss = FeatureDiscrepancyLoss(["enc2"], preset="code_exact", eps=1e-3, batch="per_image")
    assert (
        loss.options.eps == 1e-3
        and loss.options.batch == "per_image"
        and loss.options.roles == "code_swapped"
    )
    assert resolve_options("paper").channel == "mean_sq_in_log"
    with pytest.raises(TypeError):
        PRESETS["paper"]["eps"] = 0.0  # type: ignore[index]


def test_per_image_values_nan_where_invalid() -> None:
    feats, mask = _batch()
    per = FeatureDiscrepancyLoss(LAYERS).per_image(feats, mask)
    assert sorted(per) == sorted(LAYERS)
    for name in LAYERS:
        ref = fd_term(feats[name], mask)
        assert per[name].shape == (3,)
        assert torch.equal(torch.isnan(per[name]), ~ref.valid)
        assert torch.allclose(per[name][ref.valid], ref.per_image[ref.valid])
    # image 2 is empty everywhere; at the 2x2 bottleneck image 0's mask covers every cell
    assert torch.isnan(per["enc1"][2]) and torch.isnan(per["bottleneck"][0])


def test_float64_gradcheck_through_module() -> None:
    feats, mask = _batch(torch.float64)
    small = {"enc2": feats["enc2"][:, :2].clone().requires_grad_(True)}
    loss = ExchangeableFeatureDiscrepancyLoss(["enc2"], layer_weights={"enc2": 0.7})
    assert torch.autograd.gradcheck(lambda f: loss({"enc2": f}, mask).total, (small["enc2"],))


def test_exchangeable_module_terms_and_total() -> None:
    feats, mask = _batch()
    loss = ExchangeableFeatureDiscrepancyLoss(LAYERS, layer_weights={"enc1": 0.5})
    out = loss(feats, mask)
    assert sorted(out.terms) == sorted([f"fd/{n}" for n in LAYERS] + [f"fd_exch/{n}" for n in LAYERS])
    expected = sum(
        (0.5 if n == "enc1" else 1.0) * (out.terms[f"fd/{n}"] + out.terms[f"fd_exch/{n}"]) for n in LAYERS
    )
    assert float(out.total) == pytest.approx(float(expected), rel=1e-6)
    ref = exchangeable_fd_term(feats["enc2"], mask)
    assert float(out.terms["fd_exch/enc2"]) == pytest.approx(float(ref.value))


def test_exchangeable_cross_source_fallback_is_logged() -> None:
    feats, mask = _batch()
    loss = ExchangeableFeatureDiscrepancyLoss(LAYERS, pairing="cross_source")
    assert float(loss(feats, mask, torch.tensor([0, 0, 0])).terms["fd_exch_fallback"]) == 1.0
    assert float(loss(feats, mask, torch.tensor([0, 1, 0])).terms["fd_exch_fallback"]) == 0.0
    with pytest.raises(ValueError, match="needs source"):
        loss(feats, mask)


def test_exchangeable_shuffle_generator_and_state_dict() -> None:
    feats, mask = _batch()
    a = ExchangeableFeatureDiscrepancyLoss(LAYERS, pairing="shuffle", seed=5)
    b = ExchangeableFeatureDiscrepancyLoss(LAYERS, pairing="shuffle", seed=5)
    first = [float(a(feats, mask).terms["fd_exch/enc1"]) for _ in range(4)]
    assert first == [float(b(feats, mask).terms["fd_exch/enc1"]) for _ in range(4)]
    state = a.state_dict()
    c = ExchangeableFeatureDiscrepancyLoss(LAYERS, pairing="shuffle", seed=99)
    c.load_state_dict(state)
    assert [float(a(feats, mask).terms["fd_exch/enc1"]) for _ in range(3)] == [
        float(c(feats, mask).terms["fd_exch/enc1"]) for _ in range(3)
    ]
    # a generator given at call time overrides the module's and leaves it untouched
    before = a.generator.get_state() if a.generator is not None else None
    a(feats, mask, generator=torch.Generator().manual_seed(0))
    assert a.generator is not None and before is not None and torch.equal(a.generator.get_state(), before)


def test_module_errors_are_raised_early_and_name_the_choices() -> None:
    feats, mask = _batch()
    with pytest.raises(ValueError, match=r"unknown preset 'papr'.*did you mean 'paper'.*code_exact"):
        FeatureDiscrepancyLoss(LAYERS, preset="papr")
    with pytest.raises(ValueError, match=r"unknown L_fd option \['spatal'\].*did you mean 'spatial'"):
        FeatureDiscrepancyLoss(LAYERS, spatal="sum")
    with pytest.raises(ValueError, match=r"attn_enc_tap is a model option"):
        FeatureDiscrepancyLoss(LAYERS, attn_enc_tap="pre_pool")
    with pytest.raises(ValueError, match=r"unknown batch 'batch'"):
        FeatureDiscrepancyLoss(LAYERS, batch="batch")
    with pytest.raises(ValueError, match=r"unknown layer weight \['enc3'\]"):
        FeatureDiscrepancyLoss(LAYERS, layer_weights={"enc3": 1.0})
    with pytest.raises(ValueError, match=r"finite float >= 0"):
        FeatureDiscrepancyLoss(LAYERS, layer_weights={"enc1": -1.0})
    with pytest.raises(ValueError, match=r"duplicate names \['enc1'\]"):
        FeatureDiscrepancyLoss(["enc1", "enc1"])
    with pytest.raises(TypeError, match=r"use \['enc1'\]"):
        FeatureDiscrepancyLoss("enc1")
    with pytest.raises(ValueError, match=r"unknown pairing"):
        ExchangeableFeatureDiscrepancyLoss(LAYERS, pairing="random")  # type: ignore[arg-type]
    loss = FeatureDiscrepancyLoss([*LAYERS, "dec4"])
    with pytest.raises(
        ValueError, match=r"lack the layers \['dec4'\]; they have \['bottleneck', 'dec1', 'enc1', 'enc2'\]"
    ):
        loss(feats, mask)
    loss = FeatureDiscrepancyLoss(LAYERS)
    with pytest.raises(ValueError, match=r"features\['enc2'\]: batch 2"):
        loss({**feats, "enc2": feats["enc2"][:2]}, mask)
    with pytest.raises(ValueError, match=r"values must lie in \[0, 1\]"):
        loss(feats, mask * 255)
    unchecked = FeatureDiscrepancyLoss(LAYERS, check_mask=False)  # the caller vouches for the mask
    assert torch.isfinite(unchecked(feats, mask * 255).total)
    with pytest.raises(ValueError, match=r"mask: expected 4 dims"):
        unchecked(feats, mask[:, 0])


def test_channels_last_and_multiclass_mask() -> None:
    feats, mask = _batch()
    loss = FeatureDiscrepancyLoss(LAYERS)
    cl = {k: v.contiguous(memory_format=torch.channels_last) for k, v in feats.items()}
    assert float(loss(cl, mask).total) == pytest.approx(float(loss(feats, mask).total), rel=1e-6)
    second = torch.zeros_like(mask)
    second[0, :, :4, :4] = 1.0  # a second class, present in image 0 only
    two = torch.cat([mask, second], dim=1)
    per_class = [FeatureDiscrepancyLoss(["enc1"])(feats, m) for m in (mask, second)]
    expected = (float(per_class[0].total) + float(per_class[1].total)) / 2
    assert float(FeatureDiscrepancyLoss(["enc1"])(feats, two).total) == pytest.approx(expected, rel=1e-5)
    assert math.isfinite(float(loss(feats, torch.zeros_like(two)).total))


@pytest.mark.parametrize("mask_resize", ["maxpool", "nearest", "avgpool"])
@pytest.mark.parametrize("binarize_mask", [True, False])
def test_module_equals_functional_for_every_resize_rule(mask_resize: str, binarize_mask: bool) -> None:
    feats, mask = _batch()
    mask = mask * 0.8 + 0.1 * torch.rand_like(mask)  # soft values on both sides of 0.5
    loss = ExchangeableFeatureDiscrepancyLoss(LAYERS, mask_resize=mask_resize, binarize_mask=binarize_mask)
    out = loss(feats, mask)
    for name in LAYERS:
        opts = {"mask_resize": mask_resize, "binarize_mask": binarize_mask}
        ref = fd_term(feats[name], mask, **opts)  # type: ignore[arg-type]
        exch = exchangeable_fd_term(feats[name], mask, **opts)
        assert float(out.terms[f"fd/{name}"]) == pytest.approx(float(ref.value), rel=1e-6)
        assert float(out.terms[f"fd_exch/{name}"]) == pytest.approx(float(exch.value), rel=1e-6)
