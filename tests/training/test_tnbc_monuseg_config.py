"""``configs/tnbc_monuseg.yaml``: the data-addition protocol, and its data on the real TNBC + MoNuSeg."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from fdseg.data.base import natural_key
from fdseg.training.config import ExperimentConfig
from fdseg.training.data import build_run_data

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("FDSEG_SHARED_DATA") or REPO.parent / "shared" / "data")
TNBC = SHARED_DATA / "tnbc" / "TNBC_NucleiSegmentation"
MONUSEG_TRAIN = SHARED_DATA / "monuseg" / "MoNuSeg 2018 Training Data"


def test_config_is_the_papers_data_addition_protocol() -> None:
    cfg = ExperimentConfig.from_yaml(REPO / "configs" / "tnbc_monuseg.yaml")
    assert cfg.model.name == "nucleisegnet" and cfg.data.image_size == 512
    assert cfg.data.base.startswith("tnbc:") and cfg.data.novel is not None
    assert cfg.data.novel.startswith("monuseg:") and cfg.data.novel_fraction == 1.0
    assert (cfg.train.epochs_phase1, cfg.train.epochs_phase2, cfg.train.batch_size) == (100, 75, 4)
    assert cfg.loss.fd and cfg.loss.exch and cfg.has_phase2
    assert cfg.with_overrides(["data.novel_fraction=null", "data.novel_k=8"]).data.novel_k == 8


@pytest.mark.skipif(
    not (TNBC.is_dir() and MONUSEG_TRAIN.is_dir()),
    reason=f"real TNBC and MoNuSeg training data not found under {SHARED_DATA} (set FDSEG_SHARED_DATA)",
)
def test_config_data_resolves_on_the_real_files(tmp_path: Path) -> None:
    cfg = ExperimentConfig.from_yaml(REPO / "configs" / "tnbc_monuseg.yaml").with_overrides(
        [
            f"data.base=tnbc:{TNBC}",
            f"data.novel=monuseg:{MONUSEG_TRAIN}",
            "data.image_size=128",  # 512 in the config; 128 keeps the MoNuSeg rasterising fast here
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.novel_fraction=0.5",
        ]
    )
    data = build_run_data(cfg, tmp_path / "run")
    assert data.novel is not None
    n_novel = len(data.novel)
    k = int(n_novel * 0.5 + 0.5)  # round half up
    assert data.split["novel"] == sorted(data.novel.ids, key=natural_key)[:k]
    sets = ("train", "val", "test")
    slides = {n: {data.base.records[data.base.index_of(i)].group for i in data.split[n]} for n in sets}
    assert all(not slides[a] & slides[b] for a, b in (("train", "val"), ("train", "test"), ("val", "test")))
    assert sum(len(data.split[n]) for n in ("train", "val", "test")) == 50

    sources: list[int] = []
    for batch in data.loaders(cfg).train:
        assert batch["image"].shape[1:] == (3, 128, 128)
        sources += batch["source"].tolist()
        assert all((s == 1) == i.startswith("novel/") for i, s in zip(batch["id"], batch["source"].tolist()))
    assert sorted(sources) == [0] * len(data.split["train"]) + [1] * k
    assert data.n_train == len(sources)
    val = next(iter(data.loaders(cfg).val))
    assert torch.equal(val["source"], torch.zeros_like(val["source"]))  # validation is base only
