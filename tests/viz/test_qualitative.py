"""Qualitative figures: the drawn arrays (overlay pixels, heatmap values, colour scales)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fdseg.viz.qualitative import (
    FN_COLOR,
    FP_COLOR,
    activation_map,
    error_masks,
    error_overlay,
    plot_heatmaps,
    plot_overlays,
)


def _masks(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = np.full((12, 10, 3), 128, np.uint8)
    gt = rng.random((12, 10)) > 0.6
    pred = rng.random((12, 10)) > 0.5
    return image, gt, pred


def test_overlay_fp_fn_pixels_are_exactly_the_errors() -> None:
    image, gt, pred = _masks()
    overlay = error_overlay(image, gt, pred)
    is_fp = np.all(overlay == FP_COLOR, axis=-1)
    is_fn = np.all(overlay == FN_COLOR, axis=-1)
    assert np.array_equal(is_fp, pred & ~gt)
    assert np.array_equal(is_fn, gt & ~pred)
    untouched = ~gt & ~pred
    assert np.array_equal(overlay[untouched], image[untouched])
    tp = gt & pred  # tinted, not in either error colour
    assert not np.any(is_fp[tp] | is_fn[tp]) and np.all(overlay[tp] != image[tp])


def test_class_map_errors_count_a_wrong_class_as_false_positive() -> None:
    gt = np.array([[0, 1, 2, 2]])
    pred = np.array([[1, 1, 1, 0]])
    tp, fp, fn = error_masks(gt, pred)
    assert tp.tolist() == [[False, True, False, False]]
    assert fp.tolist() == [[True, False, True, False]]
    assert fn.tolist() == [[False, False, False, True]]


def test_heatmap_of_known_features_is_their_channel_mean() -> None:
    features = torch.tensor(np.random.default_rng(1).normal(size=(5, 6, 7)))
    same = activation_map(features, (6, 7))
    np.testing.assert_allclose(same, features.abs().mean(0).numpy())
    constant = torch.full((3, 2, 2), -2.0)
    np.testing.assert_allclose(activation_map(constant, (8, 8)), np.full((8, 8), 2.0))
    up = activation_map(features, (12, 14))
    assert up.shape == (12, 14)
    ref = torch.nn.functional.interpolate(features.abs().mean(0)[None, None], (12, 14), mode="bilinear")
    np.testing.assert_allclose(up, ref[0, 0].numpy())


def test_heatmaps_share_one_colour_scale_per_layer_for_a_and_b() -> None:
    images = [np.zeros((4, 4, 3), np.uint8)] * 2
    a = {"enc1": [np.full((4, 4), 1.0), np.full((4, 4), 2.0)], "dec1": [np.zeros((4, 4)), np.ones((4, 4))]}
    b = {
        "enc1": [np.full((4, 4), 5.0), np.full((4, 4), 3.0)],
        "dec1": [np.ones((4, 4)), np.ones((4, 4)) * 0.5],
    }
    fig = plot_heatmaps(images, a, b, labels=("A", "B"))
    axes = fig.axes
    assert len(axes) == 2 * (1 + 2 * 2)
    enc1 = [ax for ax in axes if ax.get_title().startswith("enc1")]
    dec1 = [ax for ax in axes if ax.get_title().startswith("dec1")]
    assert {ax.images[1].get_clim() for ax in enc1} == {(1.0, 5.0)}
    assert {ax.images[1].get_clim() for ax in dec1} == {(0.0, 1.0)}
    np.testing.assert_array_equal(enc1[1].images[1].get_array(), b["enc1"][0])  # row 0: A then B


def test_overlay_figure_draws_the_overlay_arrays() -> None:
    image, gt, pred = _masks(2)
    fig = plot_overlays([image], [gt], [pred], [gt], ids=["x"], labels=("A", "B"))
    a_ax, b_ax = fig.axes[2], fig.axes[3]
    np.testing.assert_array_equal(a_ax.images[0].get_array(), error_overlay(image, gt, pred))
    assert not np.any(np.all(np.asarray(b_ax.images[0].get_array()) == FP_COLOR, axis=-1))  # B is perfect
    with pytest.raises(ValueError, match="same length"):
        plot_overlays([image], [gt, gt], [pred])
