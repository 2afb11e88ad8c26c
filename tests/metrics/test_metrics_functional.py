from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.metrics import compute_dice, compute_iou

from fdseg.metrics import (
    confusion_counts,
    hard_predictions,
    metrics_from_counts,
    segmentation_metrics,
    soft_batch_dice,
    soft_batch_iou,
)

BIG = 20.0  # a logit far from the threshold


def _logits(pred: list[list[int]]) -> torch.Tensor:
    """(1, 1, H, W) logits that threshold to ``pred``."""
    p = torch.tensor(pred, dtype=torch.float32)
    return (p * 2 - 1)[None, None] * BIG


def _mask(m: list[list[int]]) -> torch.Tensor:
    return torch.tensor(m, dtype=torch.float32)[None, None]


def test_counts_and_metrics_by_hand() -> None:
    # pred:  1 1 0      mask: 1 0 0
    #        1 0 0            1 1 0
    #        0 0 0            0 0 1
    pred = [[1, 1, 0], [1, 0, 0], [0, 0, 0]]
    mask = [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    c = confusion_counts(_logits(pred), _mask(mask))
    assert {k: int(v) for k, v in c.items()} == {"tp": 2, "fp": 1, "fn": 2, "tn": 4}
    for v in c.values():
        assert v.shape == (1, 1) and v.dtype == torch.int64
    m = metrics_from_counts(**c)
    assert m["dice"].dtype == torch.float64
    assert float(m["dice"]) == pytest.approx(4 / 7)  # 2*2 / (4 + 1 + 2)
    assert float(m["iou"]) == pytest.approx(2 / 5)
    assert float(m["sensitivity"]) == pytest.approx(2 / 4)
    assert float(m["specificity"]) == pytest.approx(4 / 5)
    assert float(m["precision"]) == pytest.approx(2 / 3)
    assert not bool(m["empty_gt"])


def test_threshold_is_strict_and_works_on_probabilities() -> None:
    probs = torch.tensor([0.5, 0.50001, 0.7, 0.2]).reshape(1, 1, 2, 2)
    assert hard_predictions(probs, from_logits=False).flatten().tolist() == [False, True, True, False]
    assert hard_predictions(probs, from_logits=False, threshold=0.6).flatten().tolist() == [
        False,
        False,
        True,
        False,
    ]
    # tiny positive logits: sigmoid rounds to exactly 0.5 in float32, the logit-space comparison does not
    tiny = torch.tensor([1e-9, -1e-9, 0.0, 3.0]).reshape(1, 1, 2, 2)
    assert float(torch.sigmoid(tiny[0, 0, 0, 0])) == 0.5
    assert hard_predictions(tiny).flatten().tolist() == [True, False, False, True]
    # threshold 0.7 in logit space
    logits = torch.tensor([0.84, 0.85, -1.0, 5.0]).reshape(1, 1, 2, 2)  # logit(0.7) = 0.8473
    assert hard_predictions(logits, threshold=0.7).flatten().tolist() == [False, True, False, True]


@pytest.mark.parametrize(
    ("policy", "both_empty", "fp_on_empty"),
    [
        ("one_if_pred_empty", 1.0, 0.0),
        ("nan", math.nan, math.nan),
        ("nan_if_both_empty", math.nan, 0.0),
    ],
)
def test_empty_gt_policies(policy: str, both_empty: float, fp_on_empty: float) -> None:
    t = torch.tensor
    # image 0: empty GT, empty pred; image 1: empty GT, 3 false positives; image 2: normal
    tp, fp, fn, tn = t([0, 0, 3]), t([0, 3, 1]), t([0, 0, 2]), t([16, 13, 10])
    m = metrics_from_counts(tp, fp, fn, tn, empty_policy=policy)  # type: ignore[arg-type]
    np.testing.assert_equal(m["dice"].numpy(), [both_empty, fp_on_empty, 6 / 9])
    np.testing.assert_equal(m["iou"].numpy(), [both_empty, fp_on_empty, 3 / 6])
    assert m["empty_gt"].tolist() == [True, True, False]
    # the other metrics are NaN exactly where their denominator is 0, whatever the policy
    np.testing.assert_equal(m["sensitivity"].numpy(), [math.nan, math.nan, 3 / 5])
    np.testing.assert_equal(m["precision"].numpy(), [math.nan, 0.0, 3 / 4])
    np.testing.assert_equal(m["specificity"].numpy(), [1.0, 13 / 16, 10 / 11])


def test_all_foreground_gt_gives_nan_specificity() -> None:
    t = torch.tensor
    m = metrics_from_counts(t([4]), t([0]), t([0]), t([0]))
    assert float(m["dice"]) == 1.0 and math.isnan(float(m["specificity"]))


def test_multiclass_counts_per_channel() -> None:
    # K = 3 one-hot classes on a 2x2 image, 2 images
    labels = torch.tensor([[[0, 1], [2, 2]], [[1, 1], [1, 0]]])
    mask = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    pred_labels = torch.tensor([[[0, 1], [1, 2]], [[1, 1], [1, 1]]])
    logits = (torch.nn.functional.one_hot(pred_labels, 3).permute(0, 3, 1, 2).float() * 2 - 1) * BIG
    c = confusion_counts(logits, mask)
    assert c["tp"].tolist() == [[1, 1, 1], [0, 3, 0]]
    assert c["fp"].tolist() == [[0, 1, 0], [0, 1, 0]]
    assert c["fn"].tolist() == [[0, 0, 1], [1, 0, 0]]
    assert (c["tp"] + c["fp"] + c["fn"] + c["tn"]).eq(4).all()
    m = metrics_from_counts(**c)
    assert m["dice"].shape == (2, 3)
    # image 1, class 2: empty GT and empty pred -> 1 under the default policy
    assert float(m["dice"][1, 2]) == 1.0 and bool(m["empty_gt"][1, 2])
    assert float(m["dice"][0, 1]) == pytest.approx(2 / 3)


def test_argmax_decision_keeps_one_class_per_pixel() -> None:
    logits = torch.tensor([[[[3.0, -4.0]], [[2.0, -3.0]]]])  # (1, 2, 1, 2): pixel 0 both > 0.5, pixel 1 none
    mask = torch.tensor([[[[0.0, 0.0]], [[1.0, 0.0]]]])
    thr = confusion_counts(logits, mask)
    arg = confusion_counts(logits, mask, decision="argmax")
    assert thr["fp"].tolist() == [[1, 0]] and thr["tp"].tolist() == [[0, 1]]
    assert arg["fp"].tolist() == [[1, 0]] and arg["tp"].tolist() == [[0, 0]]
    assert arg["fn"].tolist() == [[0, 1]]


def test_agrees_with_monai_compute_dice_and_iou() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 2, 16, 16, generator=gen)
    mask = (torch.rand(6, 2, 16, 16, generator=gen) > 0.6).float()
    mask[4] = 0  # empty GT, non-empty pred
    mask[5] = 0
    logits[5] = -5.0  # empty GT, empty pred
    pred = hard_predictions(logits).float()
    ours = metrics_from_counts(**confusion_counts(logits, mask))
    ref = compute_dice(pred, mask, include_background=True, ignore_empty=False)
    ref_iou = compute_iou(pred, mask, include_background=True, ignore_empty=False)
    np.testing.assert_allclose(ours["dice"].numpy(), ref.double().numpy(), rtol=1e-6)
    np.testing.assert_allclose(ours["iou"].numpy(), ref_iou.double().numpy(), rtol=1e-6)
    nan_ours = metrics_from_counts(**confusion_counts(logits, mask), empty_policy="nan")
    nan_ref = compute_dice(pred, mask, include_background=True, ignore_empty=True)
    np.testing.assert_allclose(nan_ours["dice"].numpy(), nan_ref.double().numpy(), rtol=1e-6, equal_nan=True)
    assert torch.isnan(nan_ours["dice"][4:]).all()


def test_segmentation_metrics_merges_counts_and_metrics() -> None:
    out = segmentation_metrics(_logits([[1, 0], [0, 0]]), _mask([[1, 0], [0, 1]]))
    metric_keys = {"dice", "iou", "sensitivity", "specificity", "precision", "empty_gt"}
    assert set(out) == {"tp", "fp", "fn", "tn"} | metric_keys
    assert float(out["dice"]) == pytest.approx(2 / 3)


def test_soft_batch_metrics_match_numpy() -> None:
    gen = torch.Generator().manual_seed(1)
    probs = torch.rand(3, 1, 8, 8, generator=gen)
    mask = (torch.rand(3, 1, 8, 8, generator=gen) > 0.5).float()
    p, y = probs.double().numpy().ravel(), mask.double().numpy().ravel()
    eps = 1e-7
    dice = (2 * (p * y).sum() + eps) / (y.sum() + p.sum() + eps)
    iou = ((p * y).sum() + eps) / (y.sum() + p.sum() - (p * y).sum() + eps)
    assert float(soft_batch_dice(probs.double(), mask)) == pytest.approx(dice, rel=1e-12)
    assert float(soft_batch_iou(probs.double(), mask)) == pytest.approx(iou, rel=1e-12)
    # batch-level, not the mean of per-image values
    per_image = [float(soft_batch_dice(probs[i : i + 1], mask[i : i + 1])) for i in range(3)]
    assert float(soft_batch_dice(probs, mask)) != pytest.approx(float(np.mean(per_image)), rel=1e-6)
    # both empty -> eps / eps = 1
    z = torch.zeros(1, 1, 4, 4)
    assert float(soft_batch_dice(z, z)) == 1.0 and float(soft_batch_iou(z, z)) == 1.0


def test_bad_input_raises_clear_errors() -> None:
    logits = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"logits shape \(2, 1, 4, 4\) != mask shape \(2, 1, 4, 3\)"):
        confusion_counts(logits, torch.zeros(2, 1, 4, 3))
    with pytest.raises(ValueError, match="mask: expected 4 dims"):
        confusion_counts(logits, torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="binary"):
        confusion_counts(logits, torch.full((2, 1, 4, 4), 0.5))
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\)"):
        confusion_counts(logits, torch.zeros(2, 1, 4, 4), threshold=1.0)
    with pytest.raises(ValueError, match="NaN"):
        confusion_counts(torch.full((2, 1, 4, 4), math.nan), torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="from_logits=True"):
        confusion_counts(logits + 3, torch.zeros(2, 1, 4, 4), from_logits=False)
    with pytest.raises(ValueError, match="did you mean 'argmax'"):
        confusion_counts(logits, torch.zeros(2, 1, 4, 4), decision="argmx")  # type: ignore[arg-type]
    t = torch.tensor
    with pytest.raises(ValueError, match=r"did you mean 'nan'.*one_if_pred_empty"):
        metrics_from_counts(t([1]), t([0]), t([0]), t([0]), empty_policy="nann")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="integer counts"):
        metrics_from_counts(t([1.0]), t([0]), t([0]), t([0]))
    with pytest.raises(ValueError, match="fn has negative counts"):
        metrics_from_counts(t([1]), t([0]), t([-1]), t([0]))
    with pytest.raises(ValueError, match="apply sigmoid"):
        soft_batch_dice(torch.full((1, 1, 2, 2), 2.0), torch.zeros(1, 1, 2, 2))


def _tnbc_masks() -> list:
    default = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    shared = os.environ.get("FDSEG_SHARED_DATA") or default
    root = Path(shared) / "tnbc" / "TNBC_NucleiSegmentation"
    masks = sorted(root.glob("GT_0[12]/*.png"))[:3]
    if not masks:
        pytest.skip(f"real TNBC masks not found under {root}")
    return masks


def test_real_tnbc_masks_against_monai_and_numpy() -> None:
    from PIL import Image

    masks = np.stack([np.asarray(Image.open(p).convert("L")) > 127 for p in _tnbc_masks()])
    truth = torch.from_numpy(masks[:, None].astype(np.float32))  # (3, 1, 512, 512)
    # prediction: the nuclei shifted by 3 pixels and one image predicted empty
    pred = torch.roll(truth, shifts=(3, -2), dims=(2, 3))
    pred[2] = 0
    logits = (pred * 2 - 1) * BIG
    m = segmentation_metrics(logits, truth)
    ref = compute_dice(pred, truth, include_background=True, ignore_empty=False).double().numpy()
    np.testing.assert_allclose(m["dice"].numpy(), ref, rtol=1e-6)  # MONAI computes in float32
    p, y = pred.numpy().astype(bool), truth.numpy().astype(bool)
    for i in range(3):
        tp = int((p[i] & y[i]).sum())
        assert int(m["tp"][i, 0]) == tp and int(m["fn"][i, 0]) == int((~p[i] & y[i]).sum())
        assert float(m["iou"][i, 0]) == pytest.approx(tp / int((p[i] | y[i]).sum()))
    assert float(m["dice"][2, 0]) == 0.0 and math.isnan(float(m["precision"][2, 0]))
    assert 0.0 < float(m["dice"][0, 0]) < 1.0
