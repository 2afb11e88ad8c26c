"""The model contract, checked on every registered model (a model is tested as soon as it is registered).

Each model runs at 64x64 on CPU with tiny widths: logits (2, K, 64, 64), every declared tap present with the
declared channels and reduction, hooks gone afterwards, no feature kept between steps, gradients finite,
state_dict round trip exact in eval mode, and a clear error for input sizes the model cannot take.
"""

from __future__ import annotations

import gc
import io
import weakref
from typing import Any

import pytest
import torch
from torch import nn

from fdseg.models import CANONICAL_LAYERS, FeatureTap, create_model, list_models
from fdseg.models.smp import import_smp

SIZE = 64
K = 2

#: Small configurations so the whole contract runs in seconds; a model not listed gets ``base_width=4``.
SMALL: dict[str, dict[str, Any]] = {
    "transunet": {"base_width": 4, "depth": 1, "heads": 2},
    "monai_flexible_unet": {"backbone": "resnet10", "decoder_channels": (16, 8, 8, 4, 4)},
    "swin_unet": {"base_width": 4, "depths": (1, 1, 1, 1), "heads": (1, 1, 2, 2), "window_size": 4},
    "swin_unetr": {"feature_size": 12, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1)},
    "smp_unet": {"encoder_name": "resnet18", "decoder_channels": (16, 8, 8, 4, 4)},
    "smp_unetplusplus": {"encoder_name": "resnet18", "decoder_channels": (16, 8, 8, 4, 4)},
}


def _smp_missing() -> str | None:
    try:
        import_smp()
    except ImportError as err:
        return str(err)
    return None


def _build(name: str, seed: int = 0) -> nn.Module:
    if name.startswith("smp_"):
        reason = _smp_missing()
        if reason:
            pytest.skip(f"smp models need segmentation_models_pytorch with a working torchvision: {reason}")
    torch.manual_seed(seed)
    return create_model(name, in_channels=3, out_channels=K, **SMALL.get(name, {"base_width": 4}))


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


MODELS = list_models()


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_and_taps(name: str) -> None:
    model = _build(name)
    info = model.feature_info
    layers = model.feature_layers
    assert [f.name for f in info] == list(layers), "feature_info and feature_layers must name the same taps"
    assert set(layers) <= set(CANONICAL_LAYERS)
    assert "bottleneck" in layers
    positions = [CANONICAL_LAYERS.index(n) for n in layers]
    assert positions == sorted(positions), "taps are ordered encoder -> bottleneck -> decoder"

    model.train()
    x = torch.rand(2, 3, SIZE, SIZE)
    with FeatureTap(model, layers) as feats:
        logits = model(x)
    assert _hook_count(model) == 0
    assert logits.shape == (2, K, SIZE, SIZE)
    assert torch.isfinite(logits).all()
    assert list(feats) == list(layers)
    for f in info:
        side = SIZE // f.reduction
        assert feats[f.name].shape == (2, f.channels, side, side), f
        assert torch.isfinite(feats[f.name]).all()

    loss = logits.float().mean() + sum(t.float().pow(2).mean() for t in feats.values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(torch.isfinite(g).all() for g in grads if g is not None)


@pytest.mark.parametrize("name", MODELS)
def test_eval_round_trip_and_per_step_features(name: str) -> None:
    model = _build(name, seed=0)
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad():
        train_logits = model.train()(x)
        model.eval()
        with FeatureTap(model, model.feature_layers) as feats:
            logits = model(x)
            first = {k: weakref.ref(v) for k, v in feats.items()}
            second_logits = model(x)
            gc.collect()
            assert all(ref() is None for ref in first.values()), "features of the previous step were kept"
            assert list(feats) == list(model.feature_layers)
    assert train_logits.shape == logits.shape == (2, K, SIZE, SIZE)
    torch.testing.assert_close(second_logits, logits, rtol=0, atol=0)

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = _build(name, seed=1).eval()
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(clone(x), logits, rtol=0, atol=0)

    if hasattr(model, "forward_intermediates"):
        with torch.no_grad():
            fi_logits, fi_feats = model.forward_intermediates(x)
        torch.testing.assert_close(fi_logits, logits, rtol=0, atol=0)
        assert list(fi_feats) == [f.name for f in model.feature_info]


@pytest.mark.parametrize("name", MODELS)
def test_bad_input_size_names_what_works(name: str) -> None:
    model = _build(name).eval()
    with torch.no_grad(), pytest.raises(ValueError, match="divisible by"):
        model(torch.rand(1, 3, SIZE - 1, SIZE))
    with torch.no_grad(), pytest.raises(ValueError, match="channels"):
        model(torch.rand(1, 5, SIZE, SIZE))


def test_unknown_model_lists_the_names() -> None:
    with pytest.raises(KeyError, match=r"unknown model 'unet3'.*available: \["):
        create_model("unet3")
