"""A run killed with SIGKILL at an epoch boundary and rerun ends exactly like the uninterrupted run.

The killed runs are real child processes (``kill -9`` of themselves right after an epoch's checkpoint is
written); the reruns and the reference run happen in this process, each seeded as the CLI seeds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import pytest

from fdseg.training.config import ExperimentConfig
from fdseg.training.run import train_run
from fdseg.training.rundir import checkpoint_meta

Tiny = Callable[..., ExperimentConfig]
SRC = Path(__file__).resolve().parents[2] / "src"

KILLED_CHILD = """
import os, signal, sys
import lightning.pytorch as pl
import torch
from fdseg.training.config import ExperimentConfig
from fdseg.training.run import train_run

cfg = ExperimentConfig.from_yaml(sys.argv[1])
kill_after = int(sys.argv[3])

class KillAfter(pl.Callback):
    def on_train_epoch_start(self, trainer, module):
        if module.global_epoch == kill_after + 1:  # epoch kill_after and its checkpoints are written
            os.kill(os.getpid(), signal.SIGKILL)

torch.set_num_threads(1)  # as the test process (float sums depend on the thread count)
pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
train_run(cfg, sys.argv[2], callbacks=[KillAfter()])
"""


def _config(data_dir: Path, tiny: Tiny) -> ExperimentConfig:
    # two sources (both augmented), the shuffled exchangeable pairing and the dual λ: every stream and state
    return tiny(
        data_dir,
        loss={
            "exch": True,
            "pairing": "shuffle",
            "lambda_strategy": "dual",
            "lambda_kwargs": {"lambda_max": 0.01},
        },
    )


def _train(cfg: ExperimentConfig, run: Path) -> Path:
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    return train_run(cfg, run)


@pytest.mark.slow
def test_sigkill_at_three_epoch_boundaries_then_rerun_is_identical(
    tmp_path: Path, data_dir: Path, tiny: Tiny
) -> None:
    cfg = _config(data_dir, tiny)
    reference = _train(cfg, tmp_path / "reference")
    config = tmp_path / "config.yaml"
    cfg.to_yaml(config)
    run = tmp_path / "run"
    # killed after epoch 0 (mid phase 1), then, resumed, after epoch 1 (the phase boundary), then after
    # epoch 2 (mid phase 2); each rerun resumes from the previous kill
    for kill_after in (0, 1, 2):
        child = subprocess.run(
            [sys.executable, "-c", KILLED_CHILD, str(config), str(run), str(kill_after)],
            env={**os.environ, "PYTHONPATH": str(SRC)},
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert child.returncode == -9, child.stderr[-2000:]
        meta = checkpoint_meta(run / "checkpoints" / "last.ckpt")
        assert meta is not None and meta["epoch"] == kill_after
        assert (run / "train.lock").is_file()  # the killed process could not release it
        assert not (run / "DONE").exists()

    _train(cfg, run)  # takes the stale lock over and resumes in phase 2

    assert (run / "history.csv").read_text() == (reference / "history.csv").read_text()
    assert (run / "test" / "per_sample.csv").read_text() == (
        reference / "test" / "per_sample.csv"
    ).read_text()
    assert not (run / "train.lock").exists()
