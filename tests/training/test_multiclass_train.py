"""Multi-class runs: both heads on synthetic nuclei_mc, CoNSeP .mat fixtures through the CLI, bad configs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from tests.data.fixtures import make_consep

from fdseg.cli import main
from fdseg.training.config import ExperimentConfig
from fdseg.training.run import train_run


def _mc_config(data_dir: Path, head: str, channels: int, **train: object) -> ExperimentConfig:
    raw = {
        "schema": 1,
        "data": {
            "base": f"synthetic:{data_dir / 'mc'}?family=nuclei_mc&n=16&seed=0&size=32",
            "image_size": 32,
            "split_scheme": "paper",
            "split_seed": 0,
            "cache_dir": str(data_dir / "cache"),
        },
        "model": {
            "name": "unet",
            "out_channels": channels,
            "head": head,
            "kwargs": {"base_width": 4, "depth": 2},
        },
        "loss": {"fd": True, "exch": True, "lambda_kwargs": {"lambda_max": 0.01, "ramp_epochs": 1}},
        "optim": {"lr": 1e-3},
        "train": {"epochs_phase1": 1, "epochs_phase2": 1, "batch_size": 4, "progress_bar": False, **train},
    }
    return ExperimentConfig.from_dict(raw)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
@pytest.mark.parametrize(("head", "channels"), [("binary_per_class", 3), ("softmax", 4)])
def test_both_heads_train_and_evaluate_per_class(
    tmp_path: Path, data_dir: Path, head: str, channels: int
) -> None:
    run = train_run(_mc_config(data_dir, head, channels), tmp_path / head)
    history = _rows(run / "history.csv")
    assert {"fd/enc1/lymphocyte", "fd_exch/dec1/spindle"} <= set(history[0])
    assert all(np.isfinite(float(r["train_loss"])) for r in history)
    rows = _rows(run / "test" / "per_sample.csv")
    summary = json.loads((run / "test" / "summary.json").read_text())
    ids = {r["id"] for r in rows}
    assert len(rows) == 4 * len(ids) == 4 * summary["n"]
    assert [r["class"] for r in rows[:4]] == ["background", "lymphocyte", "epithelial", "spindle"]
    for r in rows:  # counts cover the image; Dice follows from them; absent classes have no Dice
        tp, fp, fn, tn = (int(r[k]) for k in ("tp", "fp", "fn", "tn"))
        assert tp + fp + fn + tn == 32 * 32
        if tp + fp + fn == 0:
            assert r["absent"] == "True" and r["dice"] == "nan"
        else:
            assert float(r["dice"]) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    class_means = {}
    for name in ("lymphocyte", "epithelial", "spindle"):
        values = [float(r["dice"]) for r in rows if r["class"] == name and r["dice"] != "nan"]
        class_means[name] = np.mean(values)
        assert summary["per_class"][name]["dice"] == pytest.approx(class_means[name])
    assert summary["mean"]["dice"] == pytest.approx(np.mean(list(class_means.values())))
    assert summary["head"] == head and "absent" in summary["empty_policy"]


@pytest.mark.slow
@pytest.mark.parametrize(("version", "classes"), [("v5", "7"), ("v7.3", "4")])
def test_consep_mat_fixture_trains_through_cli(tmp_path: Path, version: str, classes: str) -> None:
    make_consep(tmp_path / "data", version=version)
    k = int(classes)
    cfg = {
        "schema": 1,
        "data": {
            "base": f"consep:{tmp_path / 'data'}?classes={classes}",
            "image_size": 16,
            "split_seed": 0,
            "val_fraction": 0.5,
            "cache_dir": str(tmp_path / "cache"),
        },
        "model": {
            "name": "unet",
            "out_channels": k,
            "head": "binary_per_class",
            "kwargs": {"base_width": 4, "depth": 2},
        },
        "loss": {"fd": True, "lambda_kwargs": {"lambda_max": 0.01, "ramp_epochs": 1}},
        "train": {"epochs_phase1": 1, "epochs_phase2": 1, "batch_size": 1, "progress_bar": False},
    }
    path = tmp_path / "consep.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "-c", str(path), "--out", str(tmp_path / "run"), "--device", "cpu"]) == 0
    summary = json.loads((tmp_path / "run" / "test" / "summary.json").read_text())
    assert summary["classes"][0] == "background" and len(summary["classes"]) == k + 1
    assert summary["n"] == 1  # the official Test split: test_1
    assert _rows(tmp_path / "run" / "test" / "per_sample.csv")[0]["id"] == "test_1"


def test_bad_multiclass_configs_are_one_line_errors(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _mc_config(data_dir, "binary_per_class", 5)
    path = tmp_path / "bad.yaml"
    cfg.to_yaml(path)
    out = tmp_path / "run"
    assert main(["train", "-c", str(path), "--out", str(out), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("error: model.out_channels = 5 does not match data.base") and "need 3 channels" in err
    )
    assert not out.exists()
    binary = cfg.with_overrides(
        [f"data.base=synthetic:{data_dir / 'bin'}?n=8&size=32", "model.out_channels=3"]
    )
    binary.to_yaml(path)
    assert main(["train", "-c", str(path), "--out", str(out), "--device", "cpu"]) == 1
    assert "has none; use a dataset with class maps" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"unknown model\.head"):
        cfg.with_overrides(["model.head=sigmoid"])


def test_consep_experiment_config_matches_the_7_classes(tmp_path: Path) -> None:
    from fdseg.training.heads import run_classes

    make_consep(tmp_path / "data", version="v5")
    root = Path(__file__).resolve().parents[2]
    cfg = ExperimentConfig.from_yaml(root / "configs" / "experiments" / "consep_unet.yaml")
    assert cfg.model.head == "binary_per_class" and cfg.data.split_official
    local = cfg.with_overrides([f"data.base=consep:{tmp_path / 'data'}?classes=7"])
    assert run_classes(local)[-1] == "endothelial" and len(run_classes(local)) == 7
    merged = cfg.with_overrides([f"data.base=consep:{tmp_path / 'data'}?classes=4"])
    with pytest.raises(ValueError, match="need 4 channels"):
        run_classes(merged)
