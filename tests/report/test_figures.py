"""fdseg figures on a trained tiny run: the drawn arrays, the CLI, bad ids, and report.html embedding."""

from __future__ import annotations

import base64
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from fdseg.cli import main
from fdseg.models import FeatureTap
from fdseg.report.figures import heatmap_figure, load_run, overlay_figure, worst_off_ids
from fdseg.report.run import write_run_report
from fdseg.training.config import ExperimentConfig
from fdseg.training.run import train_run
from fdseg.viz.qualitative import FP_COLOR, activation_map

pytestmark = pytest.mark.slow  # one tiny run trained for the module


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("figures")
    pl.seed_everything(0, verbose=False)
    cfg = ExperimentConfig.from_dict(
        {
            "schema": 1,
            "data": {
                "base": f"synthetic:{root / 'base'}?family=nuclei&n=12&seed=0&size=32",
                "image_size": 32,
                "split_scheme": "paper",
                "split_seed": 0,
                "cache_dir": str(root / "cache"),
            },
            "model": {"name": "unet", "kwargs": {"base_width": 4, "depth": 2}},
            "loss": {"fd": True},
            "train": {"epochs_phase1": 1, "epochs_phase2": 1, "batch_size": 4, "progress_bar": False},
        }
    )
    return train_run(cfg, root / "run")


def _forward(
    run_dir: Path, image_id: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, torch.Tensor]]:
    loaded = load_run(run_dir)
    item = loaded.item(image_id)
    x = torch.from_numpy(item["image"].transpose(2, 0, 1).copy()).float()[None] / 255.0
    with FeatureTap(loaded.model, loaded.layers) as taps, torch.no_grad():
        logits = loaded.model(x)
        feats = {k: v[0].clone() for k, v in taps.items()}
    return item["image"], item["mask"], (logits[0, 0] > 0).numpy(), feats


def test_overlay_fp_pixels_are_prediction_and_not_gt(run: Path) -> None:
    ids = worst_off_ids(run, 2)
    fig = overlay_figure(load_run(run), None, ids)
    for row, image_id in enumerate(ids):
        _image, gt, pred, _ = _forward(run, image_id)
        drawn = np.asarray(fig.axes[row * 3 + 2].images[0].get_array())
        assert np.array_equal(np.all(drawn == FP_COLOR, axis=-1), pred & ~gt)


def test_heatmap_equals_channel_mean_of_the_tapped_features(run: Path) -> None:
    ids = worst_off_ids(run, 1)
    fig = heatmap_figure(load_run(run), None, ids)
    image, _gt, _pred, feats = _forward(run, ids[0])
    for ax in fig.axes[1:]:
        layer = ax.get_title().split(" · ")[0]
        expected = activation_map(feats[layer], image.shape[:2])
        np.testing.assert_allclose(np.asarray(ax.images[1].get_array()), expected, rtol=1e-6)


def test_cli_figures_all_kinds_and_bad_id(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image_id = worst_off_ids(run, 1)[0]
    assert main(["figures", str(run), image_id, "--kind", "heatmap", "-o", str(tmp_path)]) == 0
    assert main(["figures", str(run), str(run), "--kind", "overlay", "-o", str(tmp_path)]) == 0
    assert main(["figures", str(run), str(run), "--kind", "arrows", "-o", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"heatmap.png", "overlay.png", "arrows.png"}
    capsys.readouterr()
    assert main(["figures", str(run), "no_such_image", "--kind", "overlay", "-o", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "image 'no_such_image' is not in the data of run" in err[0]
    assert not (tmp_path / "x").exists()
    assert main(["figures", str(run), "--kind", "overlay", "--class", "tumour", "-o", str(tmp_path)]) == 1
    assert "unknown class 'tumour'" in capsys.readouterr().err
    assert main(["figures", str(run), "--kind", "arrows", "-o", str(tmp_path)]) == 1
    assert main(["figures", str(run), "--kind", "bars", "-o", str(tmp_path)]) == 1
    assert "unknown figure kind 'bars'" in capsys.readouterr().err


def test_run_report_embeds_the_worst_off_overlays(run: Path) -> None:
    html = write_run_report(run).read_text()
    png = run / "figures" / "test_worst_off_overlays.png"
    assert png.is_file()
    assert base64.b64encode(png.read_bytes()).decode("ascii") in html
