"""``train.logger``: Lightning's loggers receive the epoch metrics; a missing one is a one-line error."""

from __future__ import annotations

import csv
import importlib.util
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import pytest

from fdseg.cli import main
from fdseg.training.config import ExperimentConfig
from fdseg.training.run import train_run

Tiny = Callable[..., ExperimentConfig]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_csv_logger_gets_the_history_metrics(tmp_path: Path, data_dir: Path, tiny: Tiny) -> None:
    run = train_run(tiny(data_dir, train={"logger": "csv"}), tmp_path / "run", evaluate=False)
    history = _rows(run / "history.csv")
    assert len(history) == 4
    for phase in (1, 2):  # each phase has its own Trainer, hence its own logger version
        logged = _rows(run / "logs" / "csv" / f"phase{phase}" / "metrics.csv")
        val = [float(r["val_dice"]) for r in logged if r.get("val_dice")]
        train = [float(r["train_loss"]) for r in logged if r.get("train_loss")]
        ours = [r for r in history if int(r["phase"]) == phase]
        assert val == pytest.approx([float(r["val_dice"]) for r in ours])
        assert train == pytest.approx([float(r["train_loss"]) for r in ours])
        assert any(r.get("fd/enc1") for r in logged) and any(r.get("lambda/enc1") for r in logged)


def test_without_a_logger_the_run_has_no_logs_folder(tmp_path: Path, data_dir: Path, tiny: Tiny) -> None:
    run = train_run(tiny(data_dir, train={"epochs_phase2": 0}), tmp_path / "run", evaluate=False)
    assert not (run / "logs").exists()


@pytest.mark.parametrize("name", ["tensorboard", "mlflow", "wandb"])
def test_a_logger_not_installed_is_one_line_naming_the_extra(
    tmp_path: Path, data_dir: Path, tiny: Tiny, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    module = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}[name]
    if importlib.util.find_spec(module) is not None or (
        name == "tensorboard" and importlib.util.find_spec("tensorboardX") is not None
    ):
        pytest.skip(f"{module} is installed here: the missing-extra path cannot be reached")
    config = tmp_path / "c.yaml"
    tiny(data_dir).to_yaml(config)
    out = tmp_path / "runs" / "run"
    argv = ["train", "-c", str(config), "-o", str(out), "--device", "cpu", "--set", f"train.logger={name}"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: train.logger='{name}' needs the {module} package: pip install 'fdseg[{name}]'"
    assert not out.exists()


def test_an_unknown_logger_lists_the_valid_ones(data_dir: Path, tiny: Tiny) -> None:
    with pytest.raises(ValueError) as info:
        tiny(data_dir, train={"logger": "tensorbord"})
    message = str(info.value)
    assert "unknown train.logger 'tensorbord'; did you mean 'tensorboard'?" in message
    assert "['csv', 'mlflow', 'none', 'tensorboard', 'wandb']" in message


class _CrashAfterFirst(pl.Callback):
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 1:
            raise RuntimeError("simulated crash")


def test_a_resumed_phase_logs_beside_the_earlier_file(tmp_path: Path, data_dir: Path, tiny: Tiny) -> None:
    cfg = tiny(data_dir, train={"logger": "csv", "epochs_phase2": 0})
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_run(cfg, run, callbacks=[_CrashAfterFirst()], evaluate=False)
    train_run(cfg, run, evaluate=False)
    first = [r for r in _rows(run / "logs" / "csv" / "phase1" / "metrics.csv") if r.get("val_dice")]
    second = [r for r in _rows(run / "logs" / "csv" / "phase1-2" / "metrics.csv") if r.get("val_dice")]
    history = _rows(run / "history.csv")
    assert [float(r["val_dice"]) for r in first + second] == pytest.approx(
        [float(r["val_dice"]) for r in history]
    )
