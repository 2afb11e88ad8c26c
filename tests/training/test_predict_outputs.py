"""``fdseg predict``: probabilities resized bilinearly then thresholded, ``--threshold``, ``--save-probs``,
``--overlay``, and ``--mode sliding`` at the training magnification of a run trained on resized images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from fdseg.cli import main
from fdseg.training.build import build_model
from fdseg.training.config import ExperimentConfig
from fdseg.training.evaluate import OVERLAY_COLOUR, sliding_window_logits
from fdseg.training.run import train_run
from fdseg.training.rundir import load_model_weights

Tiny = Callable[..., ExperimentConfig]


def _nuclei(height: int, width: int, seed: int) -> np.ndarray:
    """Dark discs on a light background, (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    image = np.full((height, width, 3), 210, dtype=np.uint8)
    for _ in range(height * width // 120):
        cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(3, 7)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = (60, 40, 110)
    return image


def _bilinear(p: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reference upsampling: pixel centres ((i + 0.5)·h/H − 0.5), linear weights, edges clamped."""

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), pos - lo

    y0, y1, wy = axis(height, p.shape[0])
    x0, x1, wx = axis(width, p.shape[1])
    rows = p[y0] * (1 - wy)[:, None] + p[y1] * wy[:, None]
    return rows[:, x0] * (1 - wx) + rows[:, x1] * wx


def _model(run: Path) -> torch.nn.Module:
    model = build_model(ExperimentConfig.from_yaml(run / "config.yaml"))
    load_model_weights(model, run / "checkpoints" / "best.ckpt")
    return model.eval()


def _probs_at(model: torch.nn.Module, image: np.ndarray, side: int) -> np.ndarray:
    """Probabilities of the image resized to side² (Pillow bilinear, as the cache), float64."""
    small = np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BILINEAR))
    x = torch.from_numpy(small.copy()).permute(2, 0, 1).float()[None] / 255.0
    with torch.no_grad():
        return torch.sigmoid(model(x))[0, 0].double().numpy()


def _contour(mask: np.ndarray) -> np.ndarray:
    """Foreground pixels with a 4-neighbour that is background or outside the image."""
    padded = np.pad(mask, 1, constant_values=False)
    inside = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inside


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


@pytest.fixture
def run(tmp_path: Path, data_dir: Path, tiny: Tiny) -> Path:
    cfg = tiny(data_dir, train={"epochs_phase1": 2, "epochs_phase2": 0})
    return train_run(cfg, tmp_path / "run", evaluate=False)


def test_resize_mode_thresholds_bilinear_probabilities(run: Path, tmp_path: Path) -> None:
    image = _nuclei(128, 96, 0)  # 4 x 3 the 32² training size
    path = tmp_path / "cells.png"
    Image.fromarray(image).save(path)
    small = _probs_at(_model(run), image, 32)
    expected = _bilinear(small, 128, 96)
    threshold = float(np.median(small))  # a boundary wherever the network put it
    assert 0.0 < threshold < 1.0
    out = tmp_path / "pred"
    args = ["predict", str(run), str(path), "--out", str(out), "--device", "cpu"]
    assert main([*args, "--threshold", str(threshold), "--save-probs", "tiff", "--overlay"]) == 0

    mask = _read(out / "cells.png") > 0
    assert mask.shape == (128, 96)
    decided = np.abs(expected - threshold) > 1e-5
    np.testing.assert_array_equal(mask[decided], (expected > threshold)[decided])
    # no staircase: nearest-neighbour enlargement would make every 4 x 3 block one value
    blocks = mask.reshape(32, 4, 32, 3)
    assert (blocks.min(axis=(1, 3)) != blocks.max(axis=(1, 3))).any()

    # saved probabilities round-trip (float32 TIFF) and give the mask at the threshold
    probs = tifffile.imread(out / "probs" / "cells.tif")
    assert probs.dtype == np.float32 and probs.shape == (128, 96)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    np.testing.assert_array_equal(probs > threshold, mask)

    # the overlay is the image with the predicted contour drawn in the overlay colour, and nothing else
    overlay = _read(out / "overlays" / "cells.png")
    contour = _contour(mask)
    assert overlay.shape == (128, 96, 3) and contour.any()
    assert (overlay[contour] == OVERLAY_COLOUR).all()
    np.testing.assert_array_equal(overlay[~contour], image[~contour])

    # another threshold, another mask; 16-bit PNG probabilities round-trip to 1/65535
    assert main([*args, "--threshold", "0.5", "--save-probs", "png16"]) == 0
    np.testing.assert_array_equal((_read(out / "cells.png") > 0)[decided], (expected > 0.5)[decided])
    png = _read(out / "probs" / "cells.png")
    assert png.dtype == np.uint16
    np.testing.assert_allclose(png / 65535.0, expected, atol=0.5 / 65535 + 1e-5)


def test_bad_predict_input_is_one_line(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(_nuclei(32, 32, 1)).save(good)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    out = tmp_path / "out"
    cases = [
        ([str(good), "--threshold", "1.5"], "threshold must be in (0, 1), got 1.5"),
        ([str(good), "--threshold", "0"], "got 0.0"),
        ([str(good), "--save-probs", "jpeg"], "'jpeg'"),
        ([str(good), str(bad)], "broken.png"),
        # a run without phase 2 has no phase1_best.ckpt: the error names the checkpoints it has
        ([str(good), "--checkpoint", "phase1_best"], "; the run has --checkpoint best / last)"),
    ]
    nan = (
        tmp_path / "nan.tif"
    )  # decodes only to find a non-finite sample: after the first image, yet nothing written
    values = np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)
    values[3, 4, 0] = np.nan
    tifffile.imwrite(nan, values)
    cases.append(([str(good), str(nan)], "non-finite"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image\n")
    cases.append(([str(empty)], f"{empty}: a folder without images"))
    for extra, needle in cases:
        assert main(["predict", str(run), *extra, "--out", str(out)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and needle in err, err
        assert not out.exists()
    # the output folder is the input's own folder: the image would be replaced by its mask
    before = good.read_bytes()
    assert main(["predict", str(run), str(good), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: predict: {good} is an input image and would be overwritten; choose another --out"
    assert good.read_bytes() == before
    assert main(["predict", str(run), str(good), "--out", str(bad)]) == 1  # --out an existing file
    assert capsys.readouterr().err.strip() == f"error: {bad}: the output folder (--out) is a file"


def test_predict_takes_a_folder_of_images(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "slides"
    (folder / "nested").mkdir(parents=True)
    for name, seed in (("b.png", 2), ("a.tif", 3), ("nested/c.png", 4)):
        Image.fromarray(_nuclei(32, 32, seed)).save(folder / name)
    (folder / "readme.txt").write_text("not an image\n")
    single = tmp_path / "d.png"
    Image.fromarray(_nuclei(32, 32, 5)).save(single)
    out = tmp_path / "masks"
    assert main(["predict", str(run), str(folder), str(single), "--out", str(out), "--device", "cpu"]) == 0
    # the folder's own images (sorted; not its subfolders, not other files), then the file given by name
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "d.png"]
    assert "3 masks written to" in capsys.readouterr().out
    # each mask equals the one predicted from the image given alone
    alone = tmp_path / "alone"
    assert main(["predict", str(run), str(folder / "a.tif"), "--out", str(alone), "--device", "cpu"]) == 0
    np.testing.assert_array_equal(_read(out / "a.png"), _read(alone / "a.png"))


def _mixed_folder(root: Path) -> Path:
    """A folder dataset of 12 images in two sizes (32² and 40x48)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(12):
        height, width = (32, 32) if i % 2 else (40, 48)
        image = _nuclei(height, width, 10 + i)
        Image.fromarray(image).save(root / "images" / f"im{i:02d}.png")
        Image.fromarray(((image[..., 0] < 128) * 255).astype(np.uint8)).save(
            root / "masks" / f"im{i:02d}.png"
        )
    return root


@pytest.mark.slow
def test_sliding_on_a_resized_run_uses_the_training_scale(
    tmp_path: Path, data_dir: Path, tiny: Tiny, capsys: pytest.CaptureFixture[str]
) -> None:
    # trained on 64² images resized to 32²: the network saw half the native magnification
    base = f"synthetic:{data_dir / 'base64-n12'}?family=nuclei&site=base&n=12&seed=0&size=64"
    cfg = tiny(data_dir, data={"base": base}, train={"epochs_phase1": 1, "epochs_phase2": 0})
    run = train_run(cfg, tmp_path / "run64", evaluate=False)
    image = _nuclei(64, 80, 2)
    path = tmp_path / "wide.png"
    Image.fromarray(image).save(path)
    out = tmp_path / "sliding"
    assert main(["predict", str(run), str(path), "--out", str(out), "--mode", "sliding", "--save-probs",
                 "tiff"]) == 0  # fmt: skip

    half = np.asarray(Image.fromarray(image).resize((40, 32), Image.Resampling.BILINEAR))
    x = torch.from_numpy(half.copy()).permute(2, 0, 1).float()[None] / 255.0
    with torch.no_grad():
        logits = sliding_window_logits(_model(run), x, roi=32, sw_batch_size=4)
    expected = _bilinear(torch.sigmoid(logits)[0, 0].double().numpy(), 64, 80)
    np.testing.assert_allclose(tifffile.imread(out / "probs" / "wide.tif"), expected, atol=1e-5)
    decided = np.abs(expected - 0.5) > 1e-5
    np.testing.assert_array_equal((_read(out / "wide.png") > 0)[decided], (expected > 0.5)[decided])

    # trained on images of several sizes resized to 32²: no single scale, refused with the reason
    mixed = _mixed_folder(tmp_path / "mixed")
    cfg = tiny(data_dir, data={"base": f"folder:{mixed}", "novel": None, "novel_k": None},
               train={"epochs_phase1": 1, "epochs_phase2": 0})  # fmt: skip
    run = train_run(cfg, tmp_path / "run-mixed", evaluate=False)
    refused = tmp_path / "refused"
    assert main(["predict", str(run), str(path), "--out", str(refused), "--mode", "sliding"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "2 native sizes (32x32, 48x40, W x H)" in err and "--mode resize" in err
    assert not refused.exists()
    assert main(["predict", str(run), str(path), "--out", str(refused), "--mode", "resize"]) == 0
