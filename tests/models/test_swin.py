"""Swin-UNet: window locality, the shifted-window mask, padding, taps and option errors."""

from __future__ import annotations

import pytest
import torch

from fdseg.models import FeatureTap, create_model
from fdseg.models.swin import SwinBlock, SwinUNet


def _block(shift: bool) -> SwinBlock:
    torch.manual_seed(0)
    return SwinBlock(4, 2, 4, shift=shift).eval()


def _changed(block: SwinBlock, where: tuple[int, int], x: torch.Tensor) -> torch.Tensor:
    """(H, W) bool: which output tokens change when the input token at ``where`` changes."""
    y = x.clone()
    y[0, where[0], where[1]] += torch.tensor([1.0, -1.0, 2.0, 0.0])  # not constant: LayerNorm would erase it
    with torch.no_grad():
        return (block(y) - block(x)).abs().sum(-1)[0] > 1e-4


def test_plain_windows_do_not_talk_to_each_other() -> None:
    x = torch.rand(1, 8, 8, 4)
    changed = _changed(_block(shift=False), (2, 2), x)
    assert changed[:4, :4].all()  # its own 4x4 window
    assert not changed[4:, :].any() and not changed[:, 4:].any()


def test_shifted_windows_connect_neighbours_but_mask_the_wrap_around() -> None:
    x = torch.rand(1, 8, 8, 4)
    block = _block(shift=True)
    # (2, 2) and (5, 5) share a window once the grid is rolled by 2; unshifted they do not
    assert _changed(block, (2, 2), x)[5, 5]
    assert not _changed(_block(shift=False), (2, 2), x)[5, 5]
    # (0, 0) and (7, 7) land in the same rolled window only by wrapping around: the mask keeps them apart
    assert not _changed(block, (0, 0), x)[7, 7]
    assert not _changed(block, (7, 7), x)[0, 0]


def test_block_pads_grids_that_are_not_a_multiple_of_the_window() -> None:
    block = SwinBlock(4, 1, 4, shift=True)
    assert block(torch.rand(2, 6, 10, 4)).shape == (2, 6, 10, 4)
    assert block(torch.rand(2, 3, 3, 4)).shape == (2, 3, 3, 4)  # window shrinks to the grid


@pytest.mark.parametrize(
    ("patch", "names"),
    [
        (4, ["enc3", "enc4", "bottleneck", "dec4", "dec3", "dec1"]),
        (2, ["enc2", "enc3", "enc4", "bottleneck", "dec4", "dec3", "dec2", "dec1"]),
    ],
)
def test_taps_follow_resolution(patch: int, names: list[str]) -> None:
    model = SwinUNet(base_width=4, depths=(1, 1, 1, 1), heads=(1, 1, 2, 2), window_size=4, patch_size=patch)
    assert list(model.feature_layers) == names
    with torch.no_grad(), FeatureTap(model, model.feature_layers) as feats:
        model.eval()(torch.rand(1, 3, 64, 96))
    for f in model.feature_info:
        assert feats[f.name].shape == (1, f.channels, 64 // f.reduction, 96 // f.reduction)


def test_bad_options() -> None:
    with pytest.raises(ValueError, match=r"unknown patch_size 3.*valid options: \['2', '4'\]"):
        SwinUNet(patch_size=3)
    with pytest.raises(ValueError, match="need 4 positive entries"):
        SwinUNet(depths=(2, 2, 2))
    with pytest.raises(ValueError, match=r"must be divisible by heads \(3, 6, 12, 24\)"):
        SwinUNet(base_width=8)
    with pytest.raises(ValueError, match=r"divisible by 32, got \(48, 64\)\. Consider padding to \(64, 64\)"):
        create_model("swin_unet", base_width=4, depths=(1, 1, 1, 1), heads=(1, 1, 1, 1))(
            torch.rand(1, 3, 48, 64)
        )
