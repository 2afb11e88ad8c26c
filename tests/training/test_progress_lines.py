"""What ``fdseg train`` says: summary, one line per epoch, resume notice, outcome and warnings."""

from __future__ import annotations

import csv
import math
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import pytest

from fdseg.cli import main
from fdseg.training.config import ExperimentConfig
from fdseg.training.phases import Phase
from fdseg.training.progress import epoch_line, outcome_lines
from fdseg.training.run import train_run

Tiny = Callable[..., ExperimentConfig]


def test_train_prints_summary_epoch_lines_and_outcome(
    tmp_path: Path, data_dir: Path, tiny: Tiny, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    tiny(data_dir, train={"epochs_phase1": 1, "epochs_phase2": 1}).to_yaml(config)
    run = tmp_path / "run"
    assert main(["train", "-c", str(config), "-o", str(run), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^      train 7, val 2, test 3 images$", out, re.M), out
    assert re.search(r"^      novel .*: 4 images added to training$", out, re.M)
    assert re.search(r"^model: unet \(0\.\d\d M parameters\), input 32²$", out, re.M)
    assert "device: cpu, precision 32-true" in out
    assert re.search(r"^phase 1: 1 epoch x 3 steps, λ = 0 -> checkpoints/phase1_best\.ckpt$", out, re.M)
    assert re.search(
        r"^phase 2: 1 epoch x 3 steps, L_fd on \(schedule λ\) -> checkpoints/best\.ckpt$", out, re.M
    )
    line = r"train loss \d\.\d{4}, val Dice \d\.\d{4}, λ LAM, \d+\.\d s$"
    assert re.search(r"^phase 1 epoch 1/1 \(run epoch 1/2\): " + line.replace("LAM", "0"), out, re.M), out
    assert re.search(r"^phase 2 epoch 1/1 \(run epoch 2/2\): " + line.replace("LAM", "0.01"), out, re.M)
    summary = re.escape(str(run / "test" / "summary.json"))
    assert re.search(rf"^test Dice \d\.\d{{4}} \(n = 3, best checkpoint\): {summary}$", out, re.M), out
    # the best epoch named is phase 2's best row of history.csv (best.ckpt holds phase 2's best)
    best = re.search(r"^best val Dice (\d\.\d{4}) at epoch (\d+) \(phase 2\): .*best\.ckpt$", out, re.M)
    assert best, out
    with (run / "history.csv").open(newline="") as fh:
        top = max((r for r in csv.DictReader(fh) if r["phase"] == "2"), key=lambda r: float(r["val_dice"]))
    assert (best.group(1), int(best.group(2))) == (f"{float(top['val_dice']):.4f}", int(top["epoch"]) + 1)
    assert "GPU available" not in out and "Tip:" not in out
    # a rerun of the finished run says so and repeats the outcome, without importing Lightning (seconds)
    code = (
        "import sys; from fdseg.cli import main; "
        f"rc = main(['train', '-c', {str(config)!r}, '-o', {str(run)!r}, '--device', 'cpu']); "
        "print('lightning loaded:', 'lightning' in sys.modules); sys.exit(rc)"
    )
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert again.startswith(f"already finished (DONE), nothing trained: {run}\n"), again
    assert best.group(0) in again and "lightning loaded: False" in again


class _Crash(pl.Callback):
    """A crash after epoch 0 and its checkpoint."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 1:
            raise RuntimeError("simulated crash")


def test_a_resumed_run_says_where_it_resumes(tmp_path: Path, data_dir: Path, tiny: Tiny) -> None:
    cfg = tiny(data_dir, train={"epochs_phase1": 2, "epochs_phase2": 0})
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_run(cfg, run, callbacks=[_Crash()], evaluate=False)
    said: list[str] = []
    train_run(cfg, run, evaluate=False, echo=said.append)
    assert "resuming from epoch 2 (phase 1)" in said  # epoch lines count from 1: it redoes "epoch 2/2"
    assert [s.split(":")[0] for s in said if s.startswith("phase 1 epoch")] == [
        "phase 1 epoch 2/2 (run epoch 2/2)"
    ]


def _table(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_a_run_that_learnt_nothing_ends_with_warnings(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _table(run / "history.csv", [{"epoch": e, "phase": 1, "val_dice": 0.0} for e in range(3)])
    _table(run / "test" / "per_sample.csv", [{"id": i, "tp": 0, "fp": 0, "fn": 5, "tn": 95} for i in "ab"])
    lines = outcome_lines(run)
    assert "warning: every test prediction is empty (2 images): the model predicts no foreground" in lines
    assert any(s.startswith("warning: the validation Dice stayed 0 in all 3 epochs") for s in lines)
    _table(
        run / "history.csv",
        [{"epoch": 0, "phase": 1, "val_dice": 0.0}, {"epoch": 1, "phase": 1, "val_dice": 0.2}],
    )
    _table(run / "test" / "per_sample.csv", [{"id": "a", "tp": 1, "fp": 0, "fn": 5, "tn": 94}])
    assert not [s for s in outcome_lines(run) if s.startswith("warning")]
    # a constant all-foreground prediction: no true or false negatives anywhere
    _table(run / "test" / "per_sample.csv", [{"id": i, "tp": 5, "fp": 95, "fn": 0, "tn": 0} for i in "abc"])
    assert (
        "warning: every test prediction is all foreground (3 images): the model marks every pixel, so IoU "
        "is the foreground fraction f (Dice 2f/(1+f))"
    ) in outcome_lines(run)


def test_epoch_line_gives_the_lambda_range_over_layers() -> None:
    phase = Phase(2, 3, 4, False, "best.ckpt")
    stats = {"train_loss": 0.5, "val_dice": math.nan, "lambda/enc1": 0.002, "lambda/dec1": 0.0005}
    assert epoch_line(phase, 1, 7, stats, 2.25) == (
        "phase 2 epoch 2/3 (run epoch 6/7): train loss 0.5000, val Dice -, λ 0.0005–0.002, 2.2 s"
    )
    same = {**stats, "lambda/dec1": 0.002}
    assert "λ 0.002, " in epoch_line(phase, 1, 7, same, 1.0)
    assert "λ -, " in epoch_line(phase, 1, 7, {"train_loss": 0.5}, 1.0)
