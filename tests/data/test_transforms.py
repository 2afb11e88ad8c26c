from __future__ import annotations

import numpy as np
import pytest
import torch

from fdseg.data import PAPER_VIEWS, RandomFlip, RandomRot90, RandomView, apply_view, build_transforms
from fdseg.data.transforms import Compose


def _marked_sample() -> dict:
    """A non-square image whose mask marks exactly the pixels where channel 0 equals 255."""
    image = np.zeros((5, 7, 3), dtype=np.uint8)
    image[..., 1] = np.arange(35, dtype=np.uint8).reshape(5, 7)
    image[0, 1, 0] = image[3, 6, 0] = image[4, 0, 0] = 255
    mask = image[..., 0] == 255
    return {"image": image, "mask": mask, "id": "x", "source": 1}


def _assert_aligned(sample: dict) -> None:
    image, mask = sample["image"], sample["mask"]
    if isinstance(image, torch.Tensor):
        assert torch.equal(mask[0] > 0.5, image[0] == 1.0)
    else:
        np.testing.assert_array_equal(mask, image[..., 0] == 255)


@pytest.mark.parametrize("view", ["identity", "fliplr", "flipud", "rot90", "rot180", "rot270"])
def test_views_keep_alignment_numpy_and_torch(view: str) -> None:
    sample = _marked_sample()
    out = apply_view(sample, view)
    _assert_aligned(out)
    assert out["id"] == "x" and out["source"] == 1
    tensor_sample = {
        "image": torch.from_numpy(sample["image"].transpose(2, 0, 1).copy()).float() / 255,
        "mask": torch.from_numpy(sample["mask"])[None].float(),
        "id": "x",
    }
    tout = apply_view(tensor_sample, view)
    _assert_aligned(tout)
    # numpy (H, W, C) and torch (C, H, W) views agree
    np.testing.assert_array_equal(
        (tout["image"] * 255).round().byte().numpy().transpose(1, 2, 0), out["image"]
    )


def test_view_semantics() -> None:
    image = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    sample = {"image": image, "mask": image[..., 0] > 2}
    assert apply_view(sample, "fliplr")["image"][..., 0].tolist() == [[2, 1, 0], [5, 4, 3]]
    assert apply_view(sample, "flipud")["image"][..., 0].tolist() == [[3, 4, 5], [0, 1, 2]]
    assert apply_view(sample, "rot90")["image"][..., 0].tolist() == [[2, 5], [1, 4], [0, 3]]  # CCW
    rot = apply_view(apply_view(sample, "rot90"), "rot270")
    np.testing.assert_array_equal(rot["image"], image)


def test_random_transforms_are_seeded_and_cover_views() -> None:
    sample = _marked_sample()
    transform = RandomView(PAPER_VIEWS)
    seen = set()
    for seed in range(40):
        a = transform(sample, np.random.default_rng(seed))
        b = transform(sample, np.random.default_rng(seed))
        np.testing.assert_array_equal(a["image"], b["image"])
        _assert_aligned(a)
        seen.add(a["image"].tobytes())
    assert len(seen) == 5  # the five paper views are distinct for this image
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    pipeline = Compose([RandomFlip(axis="vertical"), RandomRot90(angles=(90, 180, 270), p=0.7)])
    for _ in range(10):
        a, b = pipeline(sample, gen_a), pipeline(sample, gen_b)
        np.testing.assert_array_equal(a["image"], b["image"])
        _assert_aligned(a)


def test_named_pipelines_and_errors() -> None:
    sample = _marked_sample()
    for name in ("paper", "flip_rot90", "none"):
        _assert_aligned(build_transforms(name)(sample, np.random.default_rng(0)))
    np.testing.assert_array_equal(build_transforms("none")(sample)["image"], sample["image"])
    with pytest.raises(KeyError, match="did you mean 'paper'"):
        build_transforms("papr")
    with pytest.raises(ValueError, match="unknown rotation angle 45"):
        RandomRot90(angles=(45,))
    with pytest.raises(ValueError, match="unknown view 'transpose'"):
        RandomView(("transpose",))
