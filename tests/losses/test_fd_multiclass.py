"""Per-class L_fd / L_fd^exch against an independent NumPy computation, mask forms, head losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fdseg.losses.multiclass import (
    BinaryPerClassSegLoss,
    PerClassExchangeableFeatureDiscrepancyLoss,
    PerClassFeatureDiscrepancyLoss,
    SoftmaxSegLoss,
    class_index_map,
    class_masks,
    per_class_fd_term,
)
from fdseg.losses.segmentation import DiceBCELoss


def _np_per_class(features: np.ndarray, classes: np.ndarray, k: int, eps: float = 1e-6):
    """Reference: max-pool each class mask to the feature size, region means, -log(mean_c d² + eps)."""
    b, _c, h, w = features.shape
    big_h, big_w = classes.shape[-2:]
    sy, sx = big_h // h, big_w // w
    per = np.full((b, k), np.nan)
    for i in range(b):
        for cls in range(1, k + 1):
            y = (classes[i] == cls).reshape(h, sy, w, sx).max(axis=(1, 3)).astype(float)
            if y.sum() == 0 or (1 - y).sum() == 0:
                continue
            fg = (features[i] * y).sum(axis=(1, 2)) / y.sum()
            bg = (features[i] * (1 - y)).sum(axis=(1, 2)) / (1 - y).sum()
            per[i, cls - 1] = -np.log(((fg - bg) ** 2).mean() + eps)
    class_value = np.array([np.nanmean(per[:, j]) if np.isfinite(per[:, j]).any() else 0.0 for j in range(k)])
    present = np.isfinite(per).any(0)
    value = class_value[present].mean() if present.any() else 0.0
    return per, class_value, present, value


def _example(seed: int = 0):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(3, 5, 4, 4))
    classes = np.zeros((3, 1, 8, 8), np.int64)
    classes[0, 0, 0:3, 0:4] = 1
    classes[0, 0, 5:8, 5:8] = 3
    classes[1, 0, 2:6, 2:6] = 1
    classes[2, 0, 1:3, 4:8] = 3  # class 2 is absent from every image
    return feats, classes


def test_per_class_fd_equals_numpy_reference_with_absent_class() -> None:
    feats, classes = _example()
    per, class_value, present, value = _np_per_class(feats, classes[:, 0], 3)
    term = per_class_fd_term(torch.from_numpy(feats), torch.from_numpy(classes), 3)
    assert term.class_valid.tolist() == present.tolist() == [True, False, True]
    np.testing.assert_allclose(term.class_value.numpy(), class_value, rtol=1e-10)
    np.testing.assert_allclose(float(term.value), value, rtol=1e-10)
    got = torch.where(term.valid, term.per_image, torch.nan).numpy()
    np.testing.assert_allclose(got, per, rtol=1e-10)  # NaN pattern included
    assert torch.isfinite(term.value) and torch.isfinite(term.class_value).all()


def test_one_hot_and_index_maps_give_the_same_loss() -> None:
    feats, classes = _example(1)
    f = torch.from_numpy(feats)
    index = torch.from_numpy(classes)
    onehot = torch.nn.functional.one_hot(index[:, 0], 4).permute(0, 3, 1, 2)[:, 1:].float()
    with_bg = torch.nn.functional.one_hot(index[:, 0], 4).permute(0, 3, 1, 2).bool()
    a = per_class_fd_term(f, index, 3)
    b = per_class_fd_term(f, onehot, 3)
    c = per_class_fd_term(f, with_bg, 3)
    assert torch.equal(a.class_value, b.class_value) and torch.equal(a.class_value, c.class_value)
    assert torch.equal(class_index_map(onehot, 3), index)


def test_gradcheck_and_absent_class_has_no_gradient() -> None:
    feats, classes = _example(2)
    f = torch.from_numpy(feats).requires_grad_(True)
    m = torch.from_numpy(classes)
    assert torch.autograd.gradcheck(lambda x: per_class_fd_term(x, m, 3).value, (f,))
    # an image where no class is present gets no gradient at all
    empty = torch.zeros_like(m)
    empty[:2] = m[:2]
    per_class_fd_term(f, empty, 3).value.backward()
    assert f.grad is not None and torch.count_nonzero(f.grad[2]) == 0
    assert torch.count_nonzero(f.grad[0]) > 0


def test_no_class_anywhere_is_zero_not_nan() -> None:
    f = torch.randn(2, 3, 4, 4, requires_grad=True)
    term = per_class_fd_term(f, torch.zeros(2, 1, 8, 8, dtype=torch.long), 4)
    assert float(term.value.detach()) == 0.0 and not term.class_valid.any()
    term.value.backward()
    assert f.grad is not None and torch.all(f.grad == 0)


def test_module_terms_per_layer_and_class() -> None:
    feats, classes = _example(3)
    f = {"enc1": torch.from_numpy(feats).float(), "dec1": torch.from_numpy(feats).float()}
    loss = PerClassFeatureDiscrepancyLoss(["enc1", "dec1"], ["a", "b", "c"], layer_weights={"dec1": 0.5})
    out = loss(f, torch.from_numpy(classes))
    _, class_value, _, value = _np_per_class(feats, classes[:, 0], 3)
    assert set(out.terms) == {"fd/enc1", "fd/dec1", "fd/enc1/a", "fd/enc1/c", "fd/dec1/a", "fd/dec1/c"}
    assert out.terms["fd/enc1/c"].item() == pytest.approx(class_value[2], rel=1e-5)
    assert out.total.item() == pytest.approx(1.5 * value, rel=1e-5)
    per_image = loss.per_image_class(f, torch.from_numpy(classes))["enc1"]
    assert per_image.shape == (3, 3) and torch.isnan(per_image[:, 1]).all()


def test_exchangeable_per_class_matches_numpy_shift_pairs() -> None:
    feats, classes = _example(4)
    loss = PerClassExchangeableFeatureDiscrepancyLoss(["l"], ["a", "b", "c"])
    out = loss({"l": torch.from_numpy(feats)}, torch.from_numpy(classes))
    # reference: pairs (i, i+1 mod 3): fg of i against bg of i+1, per class
    b, _, h, w = feats.shape
    values = {}
    for cls in (1, 3):
        ys = [(classes[i, 0] == cls).reshape(h, 2, w, 2).max(axis=(1, 3)).astype(float) for i in range(b)]
        vals = []
        for i in range(b):
            j = (i + 1) % b
            if ys[i].sum() == 0 or (1 - ys[j]).sum() == 0:
                continue
            fg = (feats[i] * ys[i]).sum((1, 2)) / ys[i].sum()
            bg = (feats[j] * (1 - ys[j])).sum((1, 2)) / (1 - ys[j]).sum()
            vals.append(-np.log(((fg - bg) ** 2).mean() + 1e-6))
        values[cls] = np.mean(vals)
    assert out.terms["fd_exch/l/a"].item() == pytest.approx(values[1], rel=1e-6)
    assert out.terms["fd_exch/l/c"].item() == pytest.approx(values[3], rel=1e-6)
    assert "fd_exch/l/b" not in out.terms
    assert out.terms["fd_exch/l"].item() == pytest.approx((values[1] + values[3]) / 2, rel=1e-6)


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (torch.full((1, 1, 4, 4), 4, dtype=torch.long), "class index 4 is outside 0..3"),
        (torch.ones(1, 3, 4, 4), "sum to 3"),
        (torch.full((1, 3, 4, 4), 0.5), "must be 0 or 1"),
        (torch.zeros(1, 2, 4, 4), "2 channels for 3 foreground classes"),
    ],
)
def test_bad_masks_are_named(mask: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        class_masks(mask, 3)


def test_head_losses_check_channels_and_train_signal() -> None:
    classes = torch.zeros(2, 1, 8, 8, dtype=torch.long)
    classes[:, 0, 2:5, 2:5] = 2
    perfect = torch.nn.functional.one_hot(classes[:, 0], 3).permute(0, 3, 1, 2).float() * 80 - 40
    softmax = SoftmaxSegLoss(2)
    assert softmax(perfect, classes).item() < softmax(-perfect, classes).item()
    binary = BinaryPerClassSegLoss(DiceBCELoss(), 2)
    assert binary(perfect[:, 1:], classes).item() < 0.01
    with pytest.raises(ValueError, match="needs 3 channels"):
        softmax(perfect[:, 1:], classes)
    with pytest.raises(ValueError, match="needs 2 channels"):
        binary(perfect, classes)
