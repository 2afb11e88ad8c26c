"""A config whose model, losses or λ strategy cannot be built fails before the run directory is written."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fdseg.training.config import ExperimentConfig
from fdseg.training.run import preflight, train_run

Tiny = Callable[..., ExperimentConfig]


def test_rejected_config_leaves_no_run_dir_and_the_corrected_one_trains(
    tmp_path: Path, data_dir: Path, tiny: Tiny
) -> None:
    run = tmp_path / "run"
    # the tiny config's ramp_epochs is an option of the schedule strategy, not of dual
    bad = tiny(data_dir, loss={"lambda_strategy": "dual"}, train={"epochs_phase1": 1, "epochs_phase2": 1})
    with pytest.raises(ValueError, match="ramp_epochs"):
        train_run(bad, run, evaluate=False)
    assert not run.exists()

    good = tiny(
        data_dir,
        loss={"lambda_strategy": "dual", "lambda_kwargs": {"lambda_max": 0.01}},
        train={"epochs_phase1": 1, "epochs_phase2": 1},
    )
    train_run(good, run, evaluate=False)
    assert ExperimentConfig.from_yaml(run / "config.yaml").loss.lambda_strategy == "dual"
    with (run / "history.csv").open() as fh:
        assert [int(r["phase"]) for r in csv.DictReader(fh)] == [1, 2]


def test_preflight_leaves_the_global_rng_alone(data_dir: Path, tiny: Tiny) -> None:
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    preflight(tiny(data_dir))
    assert torch.equal(torch.rand(4), expected)
