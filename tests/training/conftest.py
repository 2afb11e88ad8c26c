"""Tiny synthetic runs shared by the training tests (32² images, a 4-wide U-Net, a few steps)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import pytest

from fdseg.training.config import ExperimentConfig


def tiny_config(data_dir: Path, **sections: dict[str, object]) -> ExperimentConfig:
    """A config that trains in about a second: 12 base + 4 novel images of 32², 2 + 2 epochs."""
    base = f"synthetic:{data_dir / 'base'}?family=nuclei&site=base&n=12&seed=0&size=32"
    novel = f"synthetic:{data_dir / 'dil2'}?family=nuclei&site=dil2&n=4&seed=1&size=32"
    raw: dict[str, dict[str, object]] = {
        "data": {
            "base": base,
            "novel": novel,
            "novel_k": 4,
            "image_size": 32,
            "split_scheme": "paper",
            "split_seed": 0,
            "cache_dir": str(data_dir / "cache"),
        },
        "model": {"name": "unet", "kwargs": {"base_width": 4, "depth": 2}},
        "loss": {"fd": True, "lambda_kwargs": {"lambda_max": 0.01, "ramp_epochs": 1}},
        "optim": {"lr": 1e-3},
        # last.ckpt after every epoch (the default cadence, 120 s, is tested on its own)
        "train": {
            "epochs_phase1": 2,
            "epochs_phase2": 2,
            "batch_size": 4,
            "progress_bar": False,
            "checkpoint_every_s": 1e-9,
        },
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return ExperimentConfig.from_dict({"schema": 1, **raw})


def learning_config(data_dir: Path, **sections: dict[str, object]) -> ExperimentConfig:
    """A tiny task that learns: validation Dice rises from 0 to > 0.2 within 4 + 1 epochs (about 10 s on CPU).

    24 base images of 32², an 8-wide U-Net, batch 2 and lr 0.02, so that each epoch takes several steps.
    """
    base = f"synthetic:{data_dir / 'learn-base-n24-s32'}?family=nuclei&site=base&n=24&seed=0&size=32"
    raw: dict[str, dict[str, object]] = {
        "data": {"base": base},
        "model": {"name": "unet", "kwargs": {"base_width": 8, "depth": 2}},
        "optim": {"lr": 0.02},
        "train": {"epochs_phase1": 4, "epochs_phase2": 1, "batch_size": 2},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return tiny_config(data_dir, **raw)


@pytest.fixture
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "fdseg-data"


@pytest.fixture
def tiny() -> Callable[..., ExperimentConfig]:
    """The :func:`tiny_config` factory."""
    return tiny_config


@pytest.fixture(autouse=True)
def _seed() -> None:
    pl.seed_everything(0, verbose=False)
