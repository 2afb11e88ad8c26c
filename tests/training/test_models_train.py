"""Every registered model trains through ``fdseg train`` and evaluates through ``fdseg evaluate``.

Each model runs the CLI on 10 synthetic base + 2 novel images, 1 + 1 epochs, with tiny widths, L_fd and
L_fd^exch on every tap the model declares. The run must finish (``DONE``), log a finite per-layer L_fd for
each declared tap, and ``fdseg evaluate`` must rewrite the per-image table.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from fdseg.cli import main
from fdseg.models import create_model, list_models
from fdseg.models.smp import import_smp

#: Tiny widths per model; a model not listed gets ``base_width=4``.
SMALL: dict[str, dict[str, Any]] = {
    "transunet": {"base_width": 4, "depth": 1, "heads": 2},
    "monai_flexible_unet": {"backbone": "resnet10", "decoder_channels": [16, 8, 8, 4, 4]},
    "swin_unet": {"base_width": 4, "depths": [1, 1, 1, 1], "heads": [1, 1, 2, 2], "window_size": 4},
    "swin_unetr": {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]},
    "smp_unet": {"encoder_name": "resnet18", "decoder_channels": [16, 8, 8, 4, 4]},
    "smp_unetplusplus": {"encoder_name": "resnet18", "decoder_channels": [16, 8, 8, 4, 4]},
}

#: The side each model trains at: 32, or 64 where a 32² input leaves a 1x1 batch-normalised bottleneck
#: (a last training batch of one image then has one value per channel).
SIZE: dict[str, int] = {"swin_unetr": 64, "monai_flexible_unet": 64}


def _smp_missing() -> str | None:
    try:
        import_smp()
    except ImportError as err:
        return str(err)
    return None


def _kwargs(name: str) -> dict[str, Any]:
    return SMALL.get(name, {"base_width": 4})


def _config(tmp: Path, data: Path, name: str) -> Path:
    size = SIZE.get(name, 32)
    raw = {
        "schema": 1,
        "name": f"train-{name}",
        "data": {
            "base": f"synthetic:{data / f'base{size}'}?family=nuclei&site=base&n=10&seed=0&size={size}",
            "novel": f"synthetic:{data / f'dil2_{size}'}?family=nuclei&site=dil2&n=2&seed=1&size={size}",
            "novel_k": 2,
            "image_size": size,
            "split_scheme": "paper",
            "split_seed": 0,
            "cache_dir": str(data / "cache"),
        },
        "model": {"name": name, "kwargs": _kwargs(name)},
        "loss": {"fd": True, "exch": True, "lambda_kwargs": {"lambda_max": 0.01, "ramp_epochs": 1}},
        "optim": {"lr": 1e-3},
        "train": {"epochs_phase1": 1, "epochs_phase2": 1, "batch_size": 4, "progress_bar": False},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", list_models())
def test_model_trains_with_fdseg_train(name: str, tmp_path: Path, data_dir: Path) -> None:
    if name.startswith("smp_"):
        reason = _smp_missing()
        if reason:
            pytest.skip(f"smp models need segmentation_models_pytorch with a working torchvision: {reason}")
    config = _config(tmp_path, data_dir, name)
    run = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(run), "--device", "cpu"]) == 0
    assert (run / "DONE").is_file()

    declared = list(create_model(name, in_channels=3, out_channels=1, **_kwargs(name)).feature_layers)
    with (run / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["phase"]) for r in rows] == [1, 2]
    for layer in declared:
        for prefix in ("fd/", "fd_exch/"):
            values = [float(r[f"{prefix}{layer}"]) for r in rows]
            assert all(math.isfinite(v) for v in values), (prefix, layer, values)
    # phase 2 switches λ on (1-epoch ramp to λ_max)
    assert float(rows[1][f"lambda/{declared[0]}"]) == pytest.approx(0.01)

    table = run / "test" / "per_sample.csv"
    table.unlink()
    assert main(["evaluate", str(run), "--device", "cpu"]) == 0
    with table.open() as fh:
        per_sample = list(csv.DictReader(fh))
    assert per_sample and {f"fd/{layer}" for layer in declared} <= set(per_sample[0])
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in per_sample)
