"""``fdseg predict --mode resize|sliding`` on a tiny run trained on 32² resized images."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fdseg.cli import main
from fdseg.training.build import build_model
from fdseg.training.config import ExperimentConfig
from fdseg.training.evaluate import predict, predict_probabilities, sliding_window_logits
from fdseg.training.run import train_run
from fdseg.training.rundir import load_model_weights

Tiny = Callable[..., ExperimentConfig]


@pytest.fixture
def run(tmp_path: Path, data_dir: Path, tiny: Tiny) -> Path:
    cfg = tiny(data_dir, train={"epochs_phase1": 2, "epochs_phase2": 0})
    return train_run(cfg, tmp_path / "run", evaluate=False)


def _nuclei(height: int, width: int, seed: int) -> np.ndarray:
    """A picture of dark discs on a light background, (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    image = np.full((height, width, 3), 210, dtype=np.uint8)
    for _ in range(height * width // 150):
        cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(3, 6)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = (60, 40, 110)
    return image


def _save(path: Path, image: np.ndarray) -> Path:
    Image.fromarray(image).save(path)
    return path


def _model(run: Path) -> torch.nn.Module:
    model = build_model(ExperimentConfig.from_yaml(run / "config.yaml"))
    load_model_weights(model, run / "checkpoints" / "best.ckpt")
    return model.eval()


def test_sliding_window_keeps_native_size(run: Path, tmp_path: Path) -> None:
    big = _save(tmp_path / "big.png", _nuclei(80, 96, 0))  # 2.5 x 3 the 32² training size
    small = _save(tmp_path / "small.png", _nuclei(20, 24, 1))  # smaller than one window: padded
    out = tmp_path / "sliding"
    assert main(["predict", str(run), str(big), str(small), "--out", str(out), "--mode", "sliding"]) == 0
    for name, shape in (("big", (80, 96)), ("small", (20, 24))):
        mask = np.asarray(Image.open(out / f"{name}.png"))
        assert mask.shape == shape and set(np.unique(mask)) <= {0, 255}

    # the written mask is the thresholded sliding-window probability of the whole image
    model = _model(run)
    x = torch.from_numpy(_nuclei(80, 96, 0)).permute(2, 0, 1).float().div(255.0)[None]
    with torch.no_grad():
        logits = sliding_window_logits(model, x, roi=32, sw_batch_size=4)
    assert logits.shape == (1, 1, 80, 96) and torch.isfinite(logits).all()
    expected = (torch.sigmoid(logits)[0, 0] > 0.5).numpy()
    np.testing.assert_array_equal(np.asarray(Image.open(out / "big.png")) > 0, expected)


def test_both_modes_agree_at_the_training_size(run: Path, tmp_path: Path) -> None:
    image = _nuclei(32, 32, 2)
    model = _model(run)
    x = torch.from_numpy(image).permute(2, 0, 1).float().div(255.0)[None]
    with torch.no_grad():
        direct = model(x)
        sliding = sliding_window_logits(model, x, roi=32)
    # one window, Gaussian weight w: (w * logits) / w equals the logits up to float rounding
    torch.testing.assert_close(sliding, direct, rtol=0, atol=1e-5)
    masks = {
        mode: predict_probabilities(model, image, mode=mode, size=32) > 0.5 for mode in ("resize", "sliding")
    }
    probs = torch.sigmoid(direct)[0, 0].numpy()
    decided = np.abs(probs - 0.5) > 1e-5  # pixels whose probability is not within rounding of 0.5
    np.testing.assert_array_equal(masks["resize"][decided], masks["sliding"][decided])

    path = _save(tmp_path / "img.png", image)
    (resize,) = predict(run, [path], tmp_path / "r", mode="resize")
    (default,) = predict(run, [path], tmp_path / "d")  # a run trained on resized images defaults to resize
    np.testing.assert_array_equal(np.asarray(Image.open(default)), np.asarray(Image.open(resize)))
    np.testing.assert_array_equal(np.asarray(Image.open(resize)) > 0, masks["resize"])


def test_bad_mode_is_refused(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _save(tmp_path / "img.png", _nuclei(32, 32, 3))
    with pytest.raises(ValueError, match=r"predict mode.*'resize'.*'sliding'"):
        predict(run, [path], tmp_path / "out", mode="tiles")
    assert main(["predict", str(run), str(path), "--out", str(tmp_path / "o"), "--mode", "slide"]) == 1
    assert "did you mean 'sliding'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
