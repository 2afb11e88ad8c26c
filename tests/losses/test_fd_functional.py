"""L_fd functional core: hand values, an independent numpy reference, invariances, gradients, NaN safety."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
import torch

from fdseg.losses import PRESETS, fd_term, region_prototypes, resize_mask
from fdseg.losses.functional import FdOptions

EPS = 1e-6


def _two_by_two() -> tuple[torch.Tensor, torch.Tensor]:
    """One image, 2 channels, 2x2 map; foreground = the top row.

    channel 0 = [[1, 2], [3, 4]], channel 1 = [[0, 0], [1, 1]]
    mu_fg = (1.5, 0), mu_bg = (3.5, 1), d = (-2, -1), d² = (4, 1).
    """
    features = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [1.0, 1.0]]]])
    mask = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    return features, mask


# ------------------------------------------------------------------------------------------------ hand


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, -math.log(2.5 + EPS)),  # default: mean_c d² = 2.5
        ({"channel": "sum_sq_in_log"}, -math.log(5.0 + EPS)),
        ({"channel": "mean_of_log"}, (-math.log(4 + EPS) - math.log(1 + EPS)) / 2),
        ({"channel": "avg_first"}, -math.log(1.5**2 + EPS)),  # mean_c d = -1.5
        ({"power": 1}, -math.log(math.sqrt(2.5) + EPS)),
        ({"power": 1, "channel": "mean_of_log"}, (-math.log(2 + EPS) - math.log(1 + EPS)) / 2),
        ({"eps": 0.5}, -math.log(2.5 + 0.5)),
        # image_mean: fg sums (3, 0), bg sums (7, 2), ÷4 -> d = (-1, -0.5), mean d² = 0.625
        ({"spatial": "image_mean"}, -math.log(0.625 + EPS)),
        # sum: d = (-4, -2), mean d² = 10
        ({"spatial": "sum"}, -math.log(10.0 + EPS)),
        # code roles, image mean: d_c = mean(y (2F - 1)) = (4/4, -2/4) = (1, -0.5)
        ({"roles": "code_swapped", "spatial": "image_mean"}, -math.log((1 + 0.25) / 2 + EPS)),
        # code roles, region mean (÷ fg area 2): d = (2, -1)
        ({"roles": "code_swapped"}, -math.log((4 + 1) / 2 + EPS)),
        ({"lfd_floor": 0.0}, 0.0),  # -log(2.5) < 0 is clamped to the floor
    ],
)
def test_hand_values_one_image(options: dict[str, Any], expected: float) -> None:
    features, mask = _two_by_two()
    term = fd_term(features, mask, **options)
    assert float(term.value) == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert float(term.per_image[0]) == pytest.approx(expected, rel=1e-6, abs=1e-7)
    assert term.valid.tolist() == [True]


def test_hand_values_presets() -> None:
    features, mask = _two_by_two()
    assert float(fd_term(features, mask, **PRESETS["paper"]).value) == pytest.approx(-math.log(2.5 + 1e-6))
    assert float(fd_term(features, mask, **PRESETS["paper_alg1"]).value) == pytest.approx(-math.log(5 + 1e-6))
    # code_exact, one image: n_c = |d_c| = (1, 0.5); L = mean_c -log n_c = log(2) / 2
    assert float(fd_term(features, mask, **PRESETS["code_exact"]).value) == pytest.approx(math.log(2) / 2)


def test_hand_values_batch_and_resize() -> None:
    """Two images, mask at 4x4 max-pooled to the 2x2 features; one empty image is skipped."""
    features = torch.zeros(3, 1, 2, 2)
    features[0, 0] = torch.tensor([[3.0, 1.0], [1.0, 1.0]])  # fg cell (0,0): mu_fg 3, mu_bg 1 -> D 4
    features[1, 0] = torch.tensor([[0.0, 0.0], [2.0, 0.5]])  # fg cell (1,0): mu_fg 2, mu_bg 0.5/3
    mask = torch.zeros(3, 1, 4, 4)
    mask[0, 0, 1, 1] = 1.0  # one pixel in cell (0, 0) -> the whole cell is foreground after max-pool
    mask[1, 0, 3, 0] = 0.7  # binarised to 1 -> cell (1, 0)
    mask[1, 0, 3, 3] = 0.3  # binarised to 0
    # image 2 has no foreground: invalid
    term = fd_term(features, mask)
    d1 = 2.0 - (0.0 + 0.0 + 0.5) / 3
    expected = [-math.log(4 + EPS), -math.log(d1**2 + EPS), 0.0]
    assert term.per_image.tolist() == pytest.approx(expected, rel=1e-6)
    assert term.valid.tolist() == [True, True, False]
    assert float(term.value) == pytest.approx((expected[0] + expected[1]) / 2, rel=1e-6)
    # batch_l2 (per-channel norm over the valid images): -log(d0² + d1²)
    l2 = fd_term(features, mask, batch="batch_l2")
    assert float(l2.value) == pytest.approx(-math.log(4 + d1**2 + EPS), rel=1e-6)
    assert l2.per_image.tolist() == pytest.approx(expected, rel=1e-6)  # each image as a batch of one


def test_multiclass_mask_averages_present_classes() -> None:
    torch.manual_seed(0)
    features = torch.randn(2, 3, 4, 4)
    mask = torch.zeros(2, 2, 8, 8)
    mask[0, 0, :4] = 1.0
    mask[1, 0, :, :2] = 1.0
    mask[0, 1, 4:, 4:] = 1.0  # class 1 only present in image 0
    both = fd_term(features, mask)
    c0, c1 = fd_term(features, mask[:, :1]), fd_term(features, mask[:, 1:])
    assert float(both.value) == pytest.approx((float(c0.value) + float(c1.value)) / 2, rel=1e-6)
    assert float(both.per_image[0]) == pytest.approx((float(c0.per_image[0]) + float(c1.per_image[0])) / 2)
    assert float(both.per_image[1]) == pytest.approx(float(c0.per_image[1]))
    assert both.valid.tolist() == [True, True]


# ------------------------------------------------------------------------------------- numpy reference


def _np_fd(features: np.ndarray, mask_l: np.ndarray, o: FdOptions) -> float:
    """Independent loop implementation of method-spec §A5 for a binary (B, 1, h, w) mask at feature size."""
    bsz, chans = features.shape[:2]
    rows: list[np.ndarray] = []
    used: list[int] = []
    for b in range(bsz):
        y = mask_l[b, 0]
        fg_area, bg_area = y.sum(), (1 - y).sum()
        if o.roles == "paper":
            if fg_area == 0 or bg_area == 0:
                continue
            fg = np.array([(features[b, c] * y).sum() for c in range(chans)])
            bg = np.array([(features[b, c] * (1 - y)).sum() for c in range(chans)])
            div_fg, div_bg = {
                "region_mean": (fg_area, bg_area),
                "image_mean": (y.size, y.size),
                "sum": (1, 1),
            }[o.spatial]
        else:
            if fg_area == 0:
                continue
            fg = np.array([(y * features[b, c]).sum() for c in range(chans)])
            bg = np.array([(y * (1 - features[b, c])).sum() for c in range(chans)])
            div = {"region_mean": fg_area, "image_mean": y.size, "sum": 1}[o.spatial]
            div_fg = div_bg = div
        d = fg / div_fg - bg / div_bg
        rows.append(d)
        used.append(b)
    if not rows:
        return 0.0

    def neg_log(sq: np.ndarray) -> float:  # sq: (C,) squared gaps, or (1,) for avg_first
        x = {"mean_sq_in_log": sq.mean(), "sum_sq_in_log": sq.sum(), "avg_first": sq[0], "mean_of_log": sq}[
            o.channel
        ]
        val = -np.log(np.power(x, o.power / 2) + o.eps)
        val = float(np.mean(val))
        return max(val, o.lfd_floor) if o.lfd_floor is not None else val

    sqs = [(np.array([d.mean()]) if o.channel == "avg_first" else d) ** 2 for d in rows]
    if o.batch == "per_image":
        return float(np.mean([neg_log(s) for s in sqs]))
    return neg_log(np.sum(sqs, axis=0))


GRID = list(
    itertools.product(
        ["paper", "code_swapped"],
        ["region_mean", "image_mean", "sum"],
        ["mean_sq_in_log", "sum_sq_in_log", "mean_of_log", "avg_first"],
        ["per_image", "batch_l2"],
        [1, 2],
    )
)


@pytest.mark.parametrize(("roles", "spatial", "channel", "batch", "power"), GRID)
def test_every_option_combination_matches_numpy(
    roles: str, spatial: str, channel: str, batch: str, power: int
) -> None:
    gen = torch.Generator().manual_seed(GRID.index((roles, spatial, channel, batch, power)))
    features = torch.rand(4, 3, 4, 4, generator=gen, dtype=torch.float64)
    mask = (torch.rand(4, 1, 4, 4, generator=gen) > 0.6).double()
    mask[3] = 0.0  # an image without foreground
    opts = FdOptions(
        **{"roles": roles, "spatial": spatial, "channel": channel, "batch": batch, "power": power}
    )
    got = float(fd_term(features, mask, **vars(opts)).value)
    assert got == pytest.approx(_np_fd(features.numpy(), mask.numpy(), opts), rel=1e-9, abs=1e-12)


def test_code_exact_matches_released_code_formula() -> None:
    """method-spec §A2 on soft max-pooled masks.

    d[b, c] = mean_hw(y_l (2F - 1)), n_c = ||d[:, c]|| over the batch, L = mean_c -log n_c.
    """
    rng = np.random.default_rng(0)
    for trial in range(5):
        features = rng.normal(size=(4, 6, 8, 8)).astype(np.float32) + trial * 0.1
        mask = rng.uniform(size=(4, 1, 32, 32)).astype(np.float32) ** 4  # soft, like bicubic-resized masks
        y = mask.reshape(4, 1, 8, 4, 8, 4).max(axis=(3, 5))  # two successive 2x2 max-pools
        d = (y * (2 * features - 1)).mean(axis=(2, 3))  # (B, C)
        expected = float(np.mean(-np.log(np.sqrt((d**2).sum(axis=0)))))
        got = float(
            fd_term(torch.from_numpy(features), torch.from_numpy(mask), **PRESETS["code_exact"]).value
        )
        assert got == pytest.approx(expected, abs=1e-5)


# ----------------------------------------------------------------------------------------- invariances


def _region_features(mask_l: torch.Tensor, fg_vec: torch.Tensor, bg_vec: torch.Tensor) -> torch.Tensor:
    return mask_l * fg_vec[None, :, None, None] + (1 - mask_l) * bg_vec[None, :, None, None]


def test_default_ignores_foreground_area_but_image_mean_does_not() -> None:
    fg_vec, bg_vec = torch.tensor([1.0, -0.5, 2.0]), torch.tensor([0.2, 0.3, 0.0])
    small, large = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    small[..., 2:4, 2:4] = 1.0
    large[..., 1:7, 0:6] = 1.0
    f_small, f_large = _region_features(small, fg_vec, bg_vec), _region_features(large, fg_vec, bg_vec)
    expected = -math.log(float(((fg_vec - bg_vec) ** 2).mean()) + EPS)
    assert float(fd_term(f_small, small).value) == pytest.approx(expected, rel=1e-6)
    assert float(fd_term(f_large, large).value) == pytest.approx(expected, rel=1e-6)
    a = float(fd_term(f_small, small, spatial="image_mean").value)
    b = float(fd_term(f_large, large, spatial="image_mean").value)
    assert abs(a - b) > 0.1  # the area-weighted reading (A4-3) depends on the area


def test_swapping_foreground_and_background_leaves_default_unchanged() -> None:
    torch.manual_seed(1)
    features = torch.randn(3, 5, 8, 8)
    mask = (torch.rand(3, 1, 8, 8) > 0.5).float()
    for preset in ("paper", "paper_alg1"):
        a = fd_term(features, mask, **PRESETS[preset])
        b = fd_term(features, 1 - mask, **PRESETS[preset])
        assert torch.allclose(a.per_image, b.per_image, rtol=1e-5)
        assert float(a.value) == pytest.approx(float(b.value), rel=1e-5)


def test_batch_permutation_invariance() -> None:
    torch.manual_seed(2)
    features = torch.randn(5, 4, 4, 4)
    mask = (torch.rand(5, 1, 16, 16) > 0.7).float()
    mask[1] = 0.0
    perm = torch.tensor([3, 0, 4, 1, 2])
    for preset in PRESETS:
        a = fd_term(features, mask, **PRESETS[preset])
        b = fd_term(features[perm], mask[perm], **PRESETS[preset])
        assert float(a.value) == pytest.approx(float(b.value), rel=1e-5)
        assert torch.allclose(a.per_image[perm], b.per_image, rtol=1e-5)


def test_background_features_change_default_but_not_code_exact() -> None:
    """The released code never reads background features (swapped arguments, method-spec §A3)."""
    torch.manual_seed(3)
    features = torch.rand(2, 4, 8, 8)
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:5, 3:7] = 1.0
    changed = features + (1 - mask) * torch.rand(2, 4, 8, 8) * 3.0  # only background cells move
    default_a, default_b = fd_term(features, mask), fd_term(changed, mask)
    assert abs(float(default_a.value) - float(default_b.value)) > 0.1
    code_a = fd_term(features, mask, **PRESETS["code_exact"])
    code_b = fd_term(changed, mask, **PRESETS["code_exact"])
    assert float(code_a.value) == pytest.approx(float(code_b.value), rel=1e-6)


def test_memory_format_and_bf16_autocast() -> None:
    torch.manual_seed(4)
    features = torch.randn(2, 8, 8, 8)
    mask = (torch.rand(2, 1, 16, 16) > 0.6).float()
    ref = fd_term(features, mask)
    cl = fd_term(features.contiguous(memory_format=torch.channels_last), mask)
    assert torch.allclose(ref.per_image, cl.per_image, rtol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = fd_term(features.bfloat16(), mask)
    assert low.value.dtype == torch.float32
    # only the bf16 rounding of the inputs remains (reductions run in fp32)
    assert float(low.value) == pytest.approx(float(ref.value), rel=2e-2)


def _two_pass_prototypes(features: torch.Tensor, mask_l: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The former reduction: one masked sum per region, each over the whole map, in float32."""
    f = features.float()
    a_fg, a_bg = mask_l.sum((2, 3)), (1 - mask_l).sum((2, 3))
    mu_fg = (f * mask_l).sum((2, 3)) / a_fg.clamp_min(1)
    mu_bg = (f * (1 - mask_l)).sum((2, 3)) / a_bg.clamp_min(1)
    return mu_fg, mu_bg


@pytest.mark.parametrize("region", ["one_bg_cell", "one_fg_cell", "half"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_one_pass_sums_match_two_pass_on_large_offsets(region: str, layout: str) -> None:
    """Features of mean 3000 with gaps of 1e-2: total minus foreground must not cancel away the gap."""
    gen = torch.Generator().manual_seed(11)
    size = 64
    mask = torch.zeros(2, 1, size, size)
    if region == "one_bg_cell":
        mask[:] = 1.0
        mask[:, :, 5, 7] = 0.0
    elif region == "one_fg_cell":
        mask[:, :, 5, 7] = 1.0
    else:
        mask[:, :, : size // 2] = 1.0
    truth64 = 3000.0 + 1e-3 * torch.randn(2, 4, size, size, generator=gen, dtype=torch.float64)
    truth64 = truth64 + 1e-2 * mask.double()  # the foreground sits 1e-2 above the background
    features = truth64.float()
    exact = region_prototypes(features.double(), mask.double())  # float64 sums of the same float32 values
    if layout == "channels_last":
        features = features.contiguous(memory_format=torch.channels_last)
    protos = region_prototypes(features, mask)
    old_fg, old_bg = _two_pass_prototypes(features, mask)
    ulp = 3000.0 * 2.0**-23  # one float32 ulp of the features' magnitude
    for new, old, ref in ((protos.mu_fg, old_fg, exact.mu_fg), (protos.mu_bg, old_bg, exact.mu_bg)):
        err_new = float((new.double() - ref).abs().max())
        err_old = float((old.double() - ref).abs().max())
        # as accurate as the two-pass sums (a blocked float32 accumulation without centring is ~16 ulp off)
        assert err_new <= max(err_old, 2 * ulp), (err_new / ulp, err_old / ulp)
        assert torch.allclose(new, old, rtol=0, atol=4 * ulp)
    gap = (protos.mu_fg - protos.mu_bg).double()  # 1e-2, i.e. about 30 ulp of the features
    assert torch.allclose(gap, exact.mu_fg - exact.mu_bg, rtol=0, atol=4 * ulp)
    term, ref = fd_term(features, mask), fd_term(features.double(), mask.double())
    assert float(term.value) == pytest.approx(float(ref.value), abs=0.1)  # -log(gap²): 0.1 ~ 5% of the gap


def test_bf16_features_are_summed_in_float32() -> None:
    """bf16 inputs whose bf16 sums would round badly: the reduction must promote to float32 first."""
    gen = torch.Generator().manual_seed(12)
    values = 256.0 + 2.0 * torch.randint(0, 4, (2, 3, 32, 32), generator=gen)  # exact in bf16
    mask = (torch.rand(2, 1, 32, 32, generator=gen) > 0.1).float()  # a large foreground, a small background
    exact = region_prototypes(values.double(), mask.double())
    for fmt in (torch.contiguous_format, torch.channels_last):
        low = values.bfloat16().contiguous(memory_format=fmt)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            protos = region_prototypes(low, mask)
            term = fd_term(low, mask)
        assert protos.mu_fg.dtype == torch.float32
        assert torch.allclose(protos.mu_fg.double(), exact.mu_fg, rtol=1e-6, atol=0)
        assert torch.allclose(protos.mu_bg.double(), exact.mu_bg, rtol=1e-6, atol=0)
        ref = fd_term(values.double(), mask.double())
        assert float(term.value) == pytest.approx(float(ref.value), rel=1e-4)


# -------------------------------------------------------------------------------------- gradients, NaN


@pytest.mark.parametrize("preset", list(PRESETS))
def test_gradcheck_float64(preset: str) -> None:
    torch.manual_seed(5)
    features = torch.randn(3, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    mask = (torch.rand(3, 1, 8, 8, dtype=torch.float64) > 0.5).double()
    mask[2] = 0.0  # an invalid image must get exactly zero gradient
    assert torch.autograd.gradcheck(lambda f: fd_term(f, mask, **PRESETS[preset]).value, (features,))
    assert torch.autograd.gradcheck(lambda f: fd_term(f, mask, **PRESETS[preset]).per_image, (features,))
    fd_term(features, mask, **PRESETS[preset]).value.backward()
    assert features.grad is not None and float(features.grad[2].abs().sum()) == 0.0


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("case", ["empty_fg", "full_fg", "all_empty", "all_full", "mixed"])
def test_no_nan_for_degenerate_masks(preset: str, case: str) -> None:
    features = torch.rand(3, 4, 4, 4, requires_grad=True)
    mask = torch.zeros(3, 1, 8, 8)
    if case == "empty_fg":
        mask[0, :, :4] = 1.0
    elif case == "full_fg":
        mask[:] = 1.0
        mask[0, :, :4] = 0.0
    elif case == "all_full":
        mask[:] = 1.0
    elif case == "mixed":
        mask[0] = 1.0
        mask[1, :, :2, :2] = 1.0
    term = fd_term(features, mask, **PRESETS[preset])
    assert torch.isfinite(term.value) and torch.isfinite(term.per_image).all()
    term.value.backward()
    assert features.grad is not None and torch.isfinite(features.grad).all()
    if case in ("all_empty",) or (case == "all_full" and PRESETS[preset]["roles"] == "paper"):
        assert float(term.value.detach()) == 0.0
        assert not term.valid.any()
        assert float(features.grad.abs().sum()) == 0.0


def test_power_one_has_finite_gradient_at_zero_gap() -> None:
    features = torch.ones(1, 2, 4, 4, requires_grad=True)  # fg and bg identical: D = 0
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :] = 1.0
    term = fd_term(features, mask, power=1)
    assert float(term.value.detach()) == pytest.approx(-math.log(EPS))
    term.value.backward()
    assert features.grad is not None and torch.isfinite(features.grad).all()


# -------------------------------------------------------------------------------------- resize, protos


def test_resize_mask_modes() -> None:
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, 0, 1] = 1.0  # one pixel in cell (0, 0)
    mask[0, 0, 2:, 2:] = 0.6  # a soft block, foreground after binarisation
    mask[0, 0, 3, 0] = 0.4  # background after binarisation
    assert resize_mask(mask, (2, 2)).squeeze().tolist() == [[1.0, 0.0], [0.0, 1.0]]
    soft = resize_mask(mask, (2, 2), binarize=False).squeeze()
    assert torch.allclose(soft, torch.tensor([[1.0, 0.0], [0.4, 0.6]]))
    # nearest-exact picks pixel (1, 1), (1, 3), (3, 1), (3, 3) of the 4x4 grid
    assert resize_mask(mask, (2, 2), mode="nearest").squeeze().tolist() == [[0.0, 0.0], [0.0, 1.0]]
    assert resize_mask(mask, (2, 2), mode="avgpool").squeeze().tolist() == [[0.25, 0.0], [0.0, 1.0]]
    # any ratio: 5x5 -> 2x2 with overlapping adaptive windows; bool masks are accepted
    odd = torch.zeros(1, 1, 5, 5, dtype=torch.bool)
    odd[0, 0, 2, 2] = True  # the centre pixel belongs to all four windows
    assert resize_mask(odd, (2, 2)).squeeze().tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert resize_mask(mask, (4, 4)).dtype == torch.float32


def test_region_prototypes_values() -> None:
    features, mask = _two_by_two()
    protos = region_prototypes(features, mask)
    assert protos.mu_fg.tolist() == [[1.5, 0.0]]
    assert protos.mu_bg.tolist() == [[3.5, 1.0]]
    assert protos.valid.tolist() == [True]
    assert region_prototypes(features, mask, spatial="sum").mu_bg.tolist() == [[7.0, 2.0]]
    empty = region_prototypes(features, torch.zeros(1, 1, 2, 2))
    assert empty.valid.tolist() == [False] and empty.mu_fg.tolist() == [[0.0, 0.0]]
    assert region_prototypes(features.double(), mask).mu_fg.dtype == torch.float64


# ------------------------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors() -> None:
    features, mask = torch.rand(2, 3, 4, 4), torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match=r"features: expected 4 dims \(B C h w\), got shape \(3, 4, 4\)"):
        fd_term(features[0], mask)
    with pytest.raises(ValueError, match=r"mask: expected 4 dims"):
        fd_term(features, mask[:, 0])
    with pytest.raises(ValueError, match=r"batch 2 .* != mask batch 1"):
        fd_term(features, mask[:1])
    with pytest.raises(
        ValueError, match=r"mask of shape \(2, 1, 8, 8\) to a feature map of spatial size \(16, 16\)"
    ):
        fd_term(torch.rand(2, 3, 16, 16), mask)
    with pytest.raises(ValueError, match=r"values must lie in \[0, 1\].*max 255"):
        fd_term(features, torch.full((2, 1, 8, 8), 255, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"values must lie in \[0, 1\]"):
        fd_term(features, torch.full((2, 1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match=r"min -0\.5"):
        resize_mask(torch.full((1, 1, 4, 4), -0.5), (2, 2))
    with pytest.raises(TypeError, match="floating-point"):
        fd_term(torch.ones(2, 3, 4, 4, dtype=torch.long), mask)
    with pytest.raises(ValueError, match=r"unknown roles 'code'.*did you mean 'code_swapped'"):
        fd_term(features, mask, roles="code")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown channel .*valid options"):
        fd_term(features, mask, channel="l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown power 3"):
        fd_term(features, mask, power=3)
    with pytest.raises(ValueError, match=r"eps must be a finite float >= 0"):
        fd_term(features, mask, eps=-1.0)
    with pytest.raises(ValueError, match=r"unknown mask_resize 'bilinear'"):
        resize_mask(mask, (2, 2), mode="bilinear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"mask_l of shape \(2, 1, 8, 8\) does not match features"):
        region_prototypes(features, mask)
