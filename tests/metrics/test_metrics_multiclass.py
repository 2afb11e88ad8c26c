"""Per-class metrics against MONAI's per-class compute_dice, aggregation rule, summaries, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import compute_dice

from fdseg.metrics.multiclass import (
    class_confusion_counts,
    per_class_metrics,
    predict_classes,
    summarize_per_class,
)


def _maps(seed: int = 0, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    target = torch.from_numpy(rng.integers(0, k + 1, (4, 1, 6, 6)))
    pred = torch.from_numpy(rng.integers(0, k + 1, (4, 1, 6, 6)))
    target[0][target[0] == 2] = 0  # class 2 absent from image 0's ground truth ...
    pred[0][pred[0] == 2] = 0  # ... and from its prediction: absent from both
    target[1][target[1] == 3] = 0  # class 3 absent from image 1's ground truth but predicted
    pred[1, 0, 0, 0] = 3
    return pred, target


def _onehot(x: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(x[:, 0], k + 1).permute(0, 3, 1, 2).float()


@pytest.mark.parametrize(("policy", "ignore_empty"), [("nan", True), ("one_if_pred_empty", False)])
def test_per_class_dice_equals_monai(policy: str, ignore_empty: bool) -> None:
    pred, target = _maps()
    ours = per_class_metrics(class_confusion_counts(pred, target, 3), empty_policy=policy)["dice"]  # type: ignore[arg-type]
    monai = compute_dice(
        _onehot(pred, 3), _onehot(target, 3), include_background=True, ignore_empty=ignore_empty
    )
    np.testing.assert_allclose(ours.numpy(), monai.double().numpy(), rtol=1e-6, equal_nan=True)


def test_default_policy_is_nan_only_when_both_empty() -> None:
    pred, target = _maps()
    m = per_class_metrics(class_confusion_counts(pred, target, 3))
    monai = compute_dice(_onehot(pred, 3), _onehot(target, 3), include_background=True, ignore_empty=False)
    both_empty = m["absent"]
    assert bool(both_empty[0, 2]) and math.isnan(float(m["dice"][0, 2]))
    assert float(m["dice"][1, 3]) == 0.0  # predicted but not in the ground truth: a false alarm
    expected = torch.where(both_empty, torch.nan, monai.double())
    np.testing.assert_allclose(m["dice"].numpy(), expected.numpy(), equal_nan=True)


def test_summary_means_absent_and_macro() -> None:
    values = np.array([[0.9, 0.5, np.nan, 1.0], [0.8, 0.7, 0.2, np.nan]])
    absent = np.isnan(values)
    s = summarize_per_class(values, ["bg", "a", "b", "c"], absent=absent)
    assert s["per_class"]["a"] == {"mean": pytest.approx(0.6), "n": 2, "absent": 0}
    assert s["per_class"]["b"]["n"] == 1 and s["per_class"]["b"]["absent"] == 1
    assert s["macro"] == pytest.approx((0.6 + 0.2 + 1.0) / 3)
    assert s["macro_with_background"] == pytest.approx((0.85 + 0.6 + 0.2 + 1.0) / 4)
    none = summarize_per_class(np.full((2, 2), np.nan), ["bg", "a"])
    assert none["per_class"]["a"]["mean"] is None and none["macro"] is None


def test_binary_per_class_aggregation_rule() -> None:
    # probabilities (K = 2) at 3 pixels: both low -> background; class 2 highest; class 1 highest
    p = torch.tensor([[0.3, 0.2], [0.6, 0.9], [0.8, 0.7]]).T.reshape(1, 2, 1, 3)
    logits = torch.log(p / (1 - p))
    assert predict_classes(logits, "binary_per_class").flatten().tolist() == [0, 2, 1]
    assert predict_classes(logits, "binary_per_class", threshold=0.85).flatten().tolist() == [0, 2, 0]
    soft = torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 1.5]]).reshape(1, 2, 1, 3)
    assert predict_classes(soft, "softmax").flatten().tolist() == [0, 1, 1]


def test_bad_class_maps_are_named() -> None:
    pred, target = _maps()
    with pytest.raises(ValueError, match=r"target: class index 4 is outside 0\.\.3"):
        class_confusion_counts(pred, target + (target == 3).long(), 3)
    with pytest.raises(ValueError, match=r"unknown model\.head"):
        predict_classes(torch.zeros(1, 2, 2, 2), "sigmoid")
