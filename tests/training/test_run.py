"""End to end on tiny synthetic data: train -> evaluate -> predict, resume, foreign run dirs, bad data."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
from PIL import Image

from fdseg.data.errors import DatasetError
from fdseg.training.config import ExperimentConfig
from fdseg.training.evaluate import evaluate_run, predict
from fdseg.training.run import train_run
from fdseg.training.rundir import RunConfigMismatchError, checkpoint_meta

Tiny = Callable[..., ExperimentConfig]


def _history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_train_evaluate_predict(tmp_path: Path, data_dir: Path, tiny: Tiny) -> None:
    cfg = tiny(data_dir, loss={"exch": True})
    run = train_run(cfg, tmp_path / "run")
    for name in ("config.yaml", "env.json", "split.json", "history.csv", "DONE"):
        assert (run / name).is_file(), name
    for name in ("phase1_best", "best", "last"):
        assert (run / "checkpoints" / f"{name}.ckpt").is_file()
    assert not list(run.rglob("*.tmp"))

    rows = _history(run)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert [int(r["phase"]) for r in rows] == [1, 1, 2, 2]
    layers = sorted(["enc1", "enc2", "bottleneck", "dec2", "dec1"])
    header = (run / "history.csv").read_text().splitlines()[0].split(",")
    fixed = ["epoch", "phase", "step", "train_loss", "train_seg", "val_dice", "val_loss"]
    assert header == fixed + [f"{p}{layer}" for p in ("fd/", "fd_exch/", "lambda/") for layer in layers]
    # λ is 0 in phase 1 and λ_max (1-epoch ramp) in phase 2; the optimised loss differs from L_seg only then
    assert all(float(rows[i]["lambda/enc1"]) == 0.0 for i in (0, 1))
    assert all(float(rows[i]["lambda/enc1"]) == pytest.approx(0.01) for i in (2, 3))
    assert float(rows[0]["train_loss"]) == pytest.approx(float(rows[0]["train_seg"]))
    assert float(rows[2]["train_loss"]) != pytest.approx(float(rows[2]["train_seg"]))

    split = json.loads((run / "split.json").read_text())["sources"]
    sets = [set(split["base"]["sets"][name]) for name in ("train", "val", "test")]
    assert all(sets) and not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert split["novel"]["sets"]["train"] == ["0000", "0001", "0002", "0003"]

    summary = json.loads((run / "test" / "summary.json").read_text())
    with (run / "test" / "per_sample.csv").open() as fh:
        per_sample = list(csv.DictReader(fh))
    assert summary["n"] == len(per_sample) == len(sets[2])
    assert {r["id"] for r in per_sample} == sets[2]
    for r in per_sample:  # counts add up to the image and Dice follows from them
        tp, fp, fn, tn = (int(r[k]) for k in ("tp", "fp", "fn", "tn"))
        assert tp + fp + fn + tn == 32 * 32
        expected = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
        assert float(r["dice"]) == pytest.approx(expected)
    assert summary["mean"]["dice"] == pytest.approx(np.mean([float(r["dice"]) for r in per_sample]))
    assert set(summary["fd_mean"]) == set(layers)
    assert "soft_batch_dice" in summary and (run / "figures" / "training_curves.png").is_file()

    # evaluate again from disk: same numbers
    again = evaluate_run(run)
    assert again["mean"]["dice"] == pytest.approx(summary["mean"]["dice"])

    # predict at native size: a 40x24 image gets a 40x24 0/255 mask
    image = tmp_path / "odd.png"
    Image.fromarray(np.full((40, 24, 3), 200, dtype=np.uint8)).save(image)
    (mask_path,) = predict(run, [image], tmp_path / "pred")
    mask = np.asarray(Image.open(mask_path))
    assert mask.shape == (40, 24) and set(np.unique(mask)) <= {0, 255}

    # a finished run is skipped
    before = (run / "checkpoints" / "best.ckpt").stat().st_mtime_ns
    train_run(cfg, run)
    assert (run / "checkpoints" / "best.ckpt").stat().st_mtime_ns == before


class _StopAt(pl.Callback):
    """Simulate a crash after a given global epoch (at the next one's start, its checkpoint written)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.global_epoch == self.epoch + 1:  # type: ignore[attr-defined]
            raise RuntimeError("simulated crash")


@pytest.mark.parametrize("crash_epoch", [0, 2])
def test_resume_after_interruption(tmp_path: Path, data_dir: Path, tiny: Tiny, crash_epoch: int) -> None:
    cfg = tiny(data_dir)
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_run(cfg, run, callbacks=[_StopAt(crash_epoch)])
    assert not (run / "DONE").exists()
    meta = checkpoint_meta(run / "checkpoints" / "last.ckpt")
    assert meta is not None and meta["epoch"] == crash_epoch
    train_run(cfg, run)
    rows = _history(run)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]  # same final epoch count as an uninterrupted run
    assert (run / "DONE").is_file()


def test_run_dir_of_another_config_is_refused(tmp_path: Path, data_dir: Path, tiny: Tiny) -> None:
    cfg = tiny(data_dir, train={"epochs_phase2": 0})
    run = train_run(cfg, tmp_path / "run", evaluate=False)
    other = cfg.with_overrides(["optim.lr=0.5"])
    with pytest.raises(RunConfigMismatchError, match=r"optim\.lr: 0\.001 \(saved\) vs 0\.5"):
        train_run(other, run)


def test_non_finite_loss_names_step_and_term(tmp_path: Path, data_dir: Path, tiny: Tiny) -> None:
    cfg = tiny(data_dir, optim={"lr": 1e30})
    with pytest.raises(FloatingPointError, match=r"global step \d+ .*(seg|fd/\w+)="):
        train_run(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "config.yaml").is_file()


def test_missing_mask_is_named_before_training(tmp_path: Path, tiny: Tiny) -> None:
    root = tmp_path / "folder"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(6):
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "images" / f"{i}.png")
        if i != 3:
            Image.fromarray(np.zeros((32, 32), np.uint8)).save(root / "masks" / f"{i}.png")
    cfg = tiny(tmp_path, data={"base": f"folder:{root}", "novel": None, "novel_k": None})
    with pytest.raises(DatasetError, match=r"masks/3\.png: missing mask"):
        train_run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


def test_max_steps_is_honoured_exactly_with_a_partial_last_epoch(
    tmp_path: Path, data_dir: Path, tiny: Tiny, capsys: pytest.CaptureFixture[str]
) -> None:
    # 7 base + 4 novel training images, batch 4: 3 steps per epoch; 7 steps split 2:2 -> 4 + 3
    cfg = tiny(data_dir, train={"max_steps": 7})
    said: list[str] = []
    run = train_run(cfg, tmp_path / "run", evaluate=False, echo=said.append)
    rows = _history(run)
    assert [(int(r["phase"]), int(r["step"])) for r in rows] == [(1, 3), (1, 4), (2, 3)]
    assert all(r["val_dice"] != "" for r in rows)  # the partial epoch is validated like the others
    assert (
        "phase 1: 2 epochs x 3 steps (4 steps: 1 in the last epoch), λ = 0 -> checkpoints/phase1_best.ckpt"
        in said
    )
    meta = checkpoint_meta(run / "checkpoints" / "last.ckpt")
    assert meta is not None and (meta["phase"], meta["epoch"]) == (2, 2)


def test_a_step_budget_run_resumed_mid_phase_ends_like_the_uninterrupted(
    tmp_path: Path, data_dir: Path, tiny: Tiny
) -> None:
    cfg = tiny(data_dir, train={"max_steps": 7})  # phase 1: 3 + 1 steps, phase 2: 3 steps
    pl.seed_everything(0, verbose=False)
    reference = train_run(cfg, tmp_path / "reference", evaluate=False)
    run = tmp_path / "run"
    pl.seed_everything(0, verbose=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_run(cfg, run, callbacks=[_StopAt(0)], evaluate=False)  # last.ckpt: the end of epoch 0
    train_run(cfg, run, evaluate=False)
    assert (run / "history.csv").read_text() == (reference / "history.csv").read_text()
