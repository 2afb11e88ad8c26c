"""L_seg: hand values, MONAI cross-check, the code variants, multi-class heads, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fdseg.losses import SEG_LOSSES, build_seg_loss, dice_bce_loss, dice_bce_on_probs_loss, dice_iou_loss


def _one_pixel() -> tuple[torch.Tensor, torch.Tensor]:
    """Logits 0 (p = 0.5) on a 2x2 map with one foreground pixel: Σp = 2, Σy = 1, Σpy = 0.5."""
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    return torch.zeros_like(mask), mask


def test_hand_values() -> None:
    logits, mask = _one_pixel()
    dice = (2 * 0.5 + 1e-6) / (3 + 1e-6)
    assert float(dice_bce_loss(logits, mask)) == pytest.approx(1 - dice + math.log(2), rel=1e-6)
    d7, iou = (1 + 1e-7) / (3 + 1e-7), (0.5 + 1e-7) / (2.5 + 1e-7)
    assert float(dice_iou_loss(logits, mask)) == pytest.approx((1 - d7) + (1 - iou), rel=1e-6)
    # CMUNet: BCE-with-logits on p = 0.5: y=1 -> softplus(-0.5), y=0 -> softplus(0.5)
    bce = (F.softplus(torch.tensor(-0.5)) + 3 * F.softplus(torch.tensor(0.5))) / 4
    assert float(dice_bce_on_probs_loss(logits, mask)) == pytest.approx(1 - d7 + float(bce), rel=1e-6)


def test_perfect_prediction_and_the_double_sigmoid_floor() -> None:
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, :2] = 1.0
    logits = (mask * 2 - 1) * 50.0
    assert float(dice_bce_loss(logits, mask)) == pytest.approx(0.0, abs=1e-6)
    assert float(dice_iou_loss(logits, mask)) == pytest.approx(0.0, abs=1e-6)
    # double sigmoid: BCE on probabilities never goes below softplus(-1) on fg and log 2 on bg
    floor = (math.log1p(math.exp(-1.0)) + math.log(2.0)) / 2
    assert float(dice_bce_on_probs_loss(logits, mask)) == pytest.approx(floor, abs=1e-6)


def test_default_matches_monai_dice_ce_for_one_head() -> None:
    monai_losses = pytest.importorskip("monai.losses")
    torch.manual_seed(0)
    logits, mask = torch.randn(3, 1, 8, 8), (torch.rand(3, 1, 8, 8) > 0.6).float()
    ref = monai_losses.DiceCELoss(sigmoid=True, batch=True, smooth_nr=1e-6, smooth_dr=1e-6)
    assert float(dice_bce_loss(logits, mask)) == pytest.approx(float(ref(logits, mask)), rel=1e-6)
    # With K > 1 heads MONAI's DiceCELoss(sigmoid=True) uses a softmax cross-entropy, not K sigmoid BCEs:
    # one reason fdseg computes L_seg itself.
    logits2, mask2 = torch.randn(3, 2, 8, 8), (torch.rand(3, 2, 8, 8) > 0.6).float()
    assert abs(float(dice_bce_loss(logits2, mask2)) - float(ref(logits2, mask2))) > 1e-4


def test_multiclass_heads_average_per_class_batch_dice() -> None:
    torch.manual_seed(1)
    logits, mask = torch.randn(2, 3, 8, 8), (torch.rand(2, 3, 8, 8) > 0.5).float()
    probs = torch.sigmoid(logits)
    dices = [
        (2 * (probs[:, k] * mask[:, k]).sum() + 1e-6) / (probs[:, k].sum() + mask[:, k].sum() + 1e-6)
        for k in range(3)
    ]
    expected = 1 - torch.stack(dices).mean() + F.binary_cross_entropy_with_logits(logits, mask)
    assert float(dice_bce_loss(logits, mask)) == pytest.approx(float(expected), rel=1e-6)


def test_registry_modules_gradients_and_errors() -> None:
    assert SEG_LOSSES.names() == ["dice_bce", "dice_bce_on_probs", "dice_iou"]
    logits, mask = torch.randn(2, 1, 4, 4, requires_grad=True), (torch.rand(2, 1, 4, 4) > 0.5).float()
    for name, fn in [
        ("dice_bce", dice_bce_loss),
        ("dice_iou", dice_iou_loss),
        ("dice_bce_on_probs", dice_bce_on_probs_loss),
    ]:
        module = build_seg_loss(name)
        value = module(logits, mask)
        assert float(value.detach()) == pytest.approx(float(fn(logits, mask).detach()))
        (grad,) = torch.autograd.grad(value, logits)
        assert torch.isfinite(grad).all() and float(grad.abs().sum()) > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert dice_bce_loss(logits.bfloat16(), mask).dtype == torch.float32
    with pytest.raises(KeyError, match=r"unknown segmentation loss 'dice_ce'.*did you mean"):
        build_seg_loss("dice_ce")
    with pytest.raises(ValueError, match=r"unknown option \['smooth'\]"):
        build_seg_loss("dice_bce", smooth=1.0)
    with pytest.raises(ValueError, match=r"eps must be > 0"):
        build_seg_loss("dice_iou", eps=0.0)
    with pytest.raises(
        ValueError, match=r"logits of shape \(2, 1, 4, 4\) and mask of shape \(2, 1, 8, 8\) differ"
    ):
        dice_bce_loss(logits, torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match=r"mask: expected 4 dims"):
        dice_bce_loss(logits, mask[:, 0])
