"""Baseline losses L_con and L_deeps: closed forms, gradients, heads on every model, edge masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fdseg.losses.baselines import (
    DeepSupervisionLoss,
    PixelContrastiveLoss,
    decoder_channels,
    deep_supervision_loss,
    deep_supervision_weights,
    sample_pixels,
    supervised_contrastive_loss,
)
from fdseg.models import FeatureTap, create_model, list_models


def _supcon_reference(z: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Supervised InfoNCE written out with loops (Khosla et al. 2020, the 'out' form)."""
    n = len(labels)
    per_anchor = []
    for i in range(n):
        others = [a for a in range(n) if a != i]
        positives = [p for p in others if labels[p] == labels[i]]
        if not positives:
            continue
        denom = sum(math.exp(float(z[i] @ z[a]) / temperature) for a in others)
        terms = [math.log(math.exp(float(z[i] @ z[p]) / temperature) / denom) for p in positives]
        per_anchor.append(-sum(terms) / len(positives))
    return sum(per_anchor) / len(per_anchor)


def test_supcon_closed_form_two_clusters() -> None:
    # anchors 0 and 1 are each other's only positive (cos 1), the negative is orthogonal (cos 0):
    # L = log(1 + e^{-1/T}); anchor 2 has no positive and is left out
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    loss = supervised_contrastive_loss(z, torch.tensor([0, 0, 1]), temperature=0.1)
    assert float(loss) == pytest.approx(math.log1p(math.exp(-10.0)), rel=1e-12)


def test_supcon_matches_loop_reference() -> None:
    rng = np.random.default_rng(3)
    z = rng.standard_normal((9, 5))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    labels = np.array([0, 1, 1, 0, 0, 1, 0, 1, 1])
    for temperature in (0.1, 0.5, 1.0):
        got = supervised_contrastive_loss(
            torch.from_numpy(z), torch.from_numpy(labels), temperature=temperature
        )
        assert float(got) == pytest.approx(_supcon_reference(z, labels, temperature), rel=1e-10)


def test_supcon_without_positives_is_a_connected_zero() -> None:
    z = torch.randn(2, 4, requires_grad=True)
    loss = supervised_contrastive_loss(z, torch.tensor([0, 1]))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert z.grad is not None and torch.all(z.grad == 0)


def test_supcon_gradcheck_float64() -> None:
    labels = torch.tensor([0, 1, 0, 1, 1])

    def fn(x: torch.Tensor) -> torch.Tensor:
        return supervised_contrastive_loss(F.normalize(x, dim=1), labels, temperature=0.1)

    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (x,))


def test_sample_pixels_caps_labels_and_seed() -> None:
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, 0, :2] = 1  # 16 fg, 48 bg
    draws = sample_pixels(mask, max_fg=5, max_bg=7, generator=torch.Generator().manual_seed(1))
    idx, labels = draws[0]
    assert int((labels == 1).sum()) == 5 and int((labels == 0).sum()) == 7
    flat = mask[0, 0].reshape(-1)
    assert torch.equal(flat[idx].long(), labels)
    assert len(set(idx.tolist())) == idx.numel()
    _, labels1 = draws[1]  # empty mask: no foreground at all
    assert int((labels1 == 1).sum()) == 0 and int((labels1 == 0).sum()) == 7
    again = sample_pixels(mask, max_fg=5, max_bg=7, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(draws, again))


def test_pixel_contrastive_equals_reference_when_all_pixels_are_drawn() -> None:
    torch.manual_seed(0)
    loss = PixelContrastiveLoss("dec1", 3, dim=4, temperature=0.2, max_fg=100, max_bg=100).double()
    feats = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    mask = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    mask[0, 0, 1:3, 1:3] = 1
    mask[1, 0, :, :1] = 1
    out = loss({"dec1": feats}, mask)
    w = loss.head.weight.detach()[:, :, 0, 0].numpy()
    bias = loss.head.bias.detach().numpy()
    expected = []
    for b in range(2):
        x = feats[b].reshape(3, -1).T.numpy()
        z = x @ w.T + bias
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        expected.append(_supcon_reference(z, mask[b, 0].reshape(-1).numpy().astype(int), 0.2))
    assert float(out.total) == pytest.approx(float(np.mean(expected)), rel=1e-9)
    assert set(out.terms) == {"con"}


def test_pixel_contrastive_gradcheck_float64() -> None:
    torch.manual_seed(1)
    loss = PixelContrastiveLoss("dec2", 2, dim=3, max_fg=3, max_bg=3, seed=5).double()
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    mask[..., 2:6, 2:6] = 1
    state = loss.generator.get_state()

    def fn(x: torch.Tensor) -> torch.Tensor:
        loss.generator.set_state(state)  # the same pixels at every evaluation
        return loss({"dec2": x}, mask).total

    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (x,))


def test_pixel_contrastive_generator_state_is_saved() -> None:
    a = PixelContrastiveLoss("dec1", 2, max_fg=2, max_bg=2, seed=3)
    mask = torch.zeros(1, 1, 6, 6)
    mask[..., :3, :] = 1
    feats = {"dec1": torch.randn(1, 2, 6, 6)}
    a(feats, mask)
    b = PixelContrastiveLoss("dec1", 2, max_fg=2, max_bg=2, seed=99)
    b.load_state_dict(a.state_dict())
    assert float(a(feats, mask).total) == pytest.approx(float(b(feats, mask).total))


def test_deep_supervision_weights_nnunet_convention() -> None:
    assert deep_supervision_weights([0, 1, 2]) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert deep_supervision_weights([3, 0]) == pytest.approx([1 / 9, 8 / 9])
    with pytest.raises(ValueError, match="at least one"):
        deep_supervision_weights([])


def test_deep_supervision_closed_form_zero_logits() -> None:
    # zero logits: p = 0.5 everywhere after any upsampling, so BCE = log 2 and
    # Dice = (2·0.5·F + eps) / (0.5·N + F + eps) for F foreground pixels of N
    mask = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    mask[0, 0, :4] = 1  # F = 32 of N = 128
    logits = [torch.zeros(2, 1, 2, 2, dtype=torch.float64), torch.zeros(2, 1, 8, 8, dtype=torch.float64)]
    total, parts = deep_supervision_loss(logits, mask, [0.25, 0.75])
    eps = 1e-6
    dice = (32 + eps) / (64 + 32 + eps)
    each = (1 - dice) + math.log(2)
    assert [float(p) for p in parts] == pytest.approx([each, each], rel=1e-12)
    assert float(total) == pytest.approx(each, rel=1e-12)


def test_deep_supervision_gradcheck_float64() -> None:
    mask = (torch.rand(2, 1, 8, 8) > 0.5).double()

    def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return deep_supervision_loss([a, b], mask, [2 / 3, 1 / 3])[0]

    a = torch.randn(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (a, b))


def test_deep_supervision_module_depths_from_names() -> None:
    loss = DeepSupervisionLoss({"dec3": 8, "dec2": 4, "dec1": 2})
    assert loss.depths == {"dec3": 2, "dec2": 1, "dec1": 0}
    assert loss.weights["dec1"] == pytest.approx(4 / 7)
    with pytest.raises(ValueError, match="cannot infer the depth"):
        DeepSupervisionLoss({"bottleneck": 8})
    assert DeepSupervisionLoss({"up_a": 8}, depths={"up_a": 1}).weights == {"up_a": 1.0}


@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_baselines_finite_on_empty_and_full_masks(fill: float) -> None:
    torch.manual_seed(2)
    feats = {"dec2": torch.randn(2, 4, 8, 8, requires_grad=True), "dec1": torch.randn(2, 3, 16, 16)}
    feats["dec1"].requires_grad_(True)
    mask = torch.full((2, 1, 16, 16), fill)
    for loss in (PixelContrastiveLoss("dec1", 3), DeepSupervisionLoss({"dec2": 4, "dec1": 3})):
        out = loss(feats, mask)
        assert torch.isfinite(out.total)
        out.total.backward()
        for t in feats.values():
            if t.grad is not None:
                assert torch.isfinite(t.grad).all()
                t.grad = None


def _models() -> list[str]:
    return list_models()


@pytest.mark.parametrize("name", _models())
def test_heads_on_every_registered_models_decoder_taps(name: str) -> None:
    try:
        model = create_model(name)
    except ImportError as exc:  # an optional backend that is not installed
        pytest.skip(f"{name}: {exc}")
    except RuntimeError as exc:
        if "could not be imported" not in str(exc):
            raise
        pytest.skip(f"{name}: {exc}")
    channels = decoder_channels(model.feature_info)
    side = 64
    feats = {
        f.name: torch.randn(2, f.channels, side // f.reduction, side // f.reduction)
        for f in model.feature_info
        if f.name in channels
    }
    mask = torch.zeros(2, 1, side, side)
    mask[:, :, 8:40, 16:48] = 1
    deeps = DeepSupervisionLoss(channels)
    for tap, head in deeps.heads.items():
        out = head(feats[tap])
        assert out.shape == (2, 1, *feats[tap].shape[-2:])
    assert torch.isfinite(deeps(feats, mask).total)
    top = next(reversed(channels))  # the highest-resolution decoder tap
    con = PixelContrastiveLoss(top, channels[top])
    assert con.project(feats[top]).shape == (2, 128, *feats[top].shape[-2:])
    assert torch.isfinite(con(feats, mask).total)


def test_heads_through_a_real_feature_tap() -> None:
    torch.manual_seed(0)
    model = create_model("unet", base_width=4, depth=3)
    channels = decoder_channels(model.feature_info)
    assert list(channels) == ["dec3", "dec2", "dec1"]
    deeps = DeepSupervisionLoss(channels)
    con = PixelContrastiveLoss("dec1", channels["dec1"], max_fg=32, max_bg=32)
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 4:20, 4:12] = 1
    with FeatureTap(model, list(channels)) as feats:
        model(torch.rand(2, 3, 32, 32))
        total = deeps(feats, mask).total + con(feats, mask).total
    total.backward()
    assert all(p.grad is not None for p in deeps.heads.parameters())
    assert con.head.weight.grad is not None
    assert model.head.weight.grad is None  # type: ignore[union-attr]


def test_decoder_channels_rejects_a_model_without_decoder_taps() -> None:
    from fdseg.models import FeatureInfo

    with pytest.raises(ValueError, match="no decoder taps"):
        decoder_channels([FeatureInfo("enc1", 4, 1), FeatureInfo("bottleneck", 8, 2)])
