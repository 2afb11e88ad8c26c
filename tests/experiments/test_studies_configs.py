"""The study configs under configs/experiments/ load, expand into Table 1 runs and match the paper's cells."""

from __future__ import annotations

from pathlib import Path

import pytest

from fdseg.experiments.table1 import PAPER_TABLE1, dataset_name, table1_runs
from fdseg.models import list_models
from fdseg.training.config import ExperimentConfig
from fdseg.training.run import preflight

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "experiments").glob("table1_*.yaml"))


def test_there_are_gpu_cells_and_cpu_variants() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"table1_nucleisegnet_tnbc", "table1_nucleisegnet_tnbc_cpu", "table1_synthetic_cpu"} <= names
    assert {"table1_attnunet_tnbc", "table1_attnunet_monuseg", "table1_cmunet_udiat"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_expands_into_table1_runs(path: Path, tmp_path: Path) -> None:
    cfg = ExperimentConfig.from_yaml(path)
    assert cfg.model.name in list_models()
    runs = table1_runs(cfg, tmp_path, seeds=(0, 1))
    assert len(runs) == 6 and {r.spec.config.loss.fd for r in runs} == {False, True}
    if path.stem.endswith("_cpu"):
        preflight(cfg)  # the CPU variants build as they are (no data needed)
        assert cfg.data.image_size <= 128
    else:  # GPU cells: the paper's schedule and, where the paper has the cell, its numbers
        assert (cfg.train.epochs_phase1, cfg.train.epochs_phase2, cfg.train.batch_size) == (100, 75, 4)
        if dataset_name(cfg) != "busi":
            assert (cfg.model.name, dataset_name(cfg)) in PAPER_TABLE1
