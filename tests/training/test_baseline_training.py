"""Training with the baseline losses L_con and L_deeps: warm start, heads in checkpoints, bad configs."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from fdseg.training.build import build_baseline_loss
from fdseg.training.config import ExperimentConfig
from fdseg.training.run import train_run

Tiny = Callable[..., ExperimentConfig]


def _history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("baseline", "term", "head_key"),
    [
        ("contrastive", "con", "aux_losses.0.head.weight"),
        ("deep_supervision", "deeps", "aux_losses.0.heads.dec1.weight"),
    ],
)
def test_baseline_arm_trains_with_warm_start(
    baseline: str, term: str, head_key: str, tmp_path: Path, data_dir: Path, tiny: Tiny
) -> None:
    cfg = tiny(data_dir, loss={"fd": False, "baseline": baseline})
    assert cfg.has_phase2
    run = train_run(cfg, tmp_path / "run")
    rows = _history(run)
    assert [int(r["phase"]) for r in rows] == [1, 1, 2, 2]
    # off in phase 1 (the optimised loss is L_seg alone), on in phase 2
    for r in rows[:2]:
        assert r.get(term, "") in ("", "nan") and float(r["train_loss"]) == pytest.approx(
            float(r["train_seg"])
        )
    weight = 0.1 if baseline == "contrastive" else 1.0
    for r in rows[2:]:
        value = float(r[term])
        assert math.isfinite(value) and value > 0
        assert float(r["train_loss"]) > float(r["train_seg"])
        assert float(r["train_loss"]) == pytest.approx(float(r["train_seg"]) + weight * value, rel=0.2)
    phase1 = torch.load(run / "checkpoints" / "phase1_best.ckpt", weights_only=True)["state_dict"]
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert head_key in last and head_key in phase1
    assert not torch.equal(phase1[head_key], last[head_key])  # the head was trained in phase 2
    summary = json.loads((run / "test" / "summary.json").read_text())  # evaluation uses model.* only
    assert summary["n"] > 0


def test_baseline_options_and_bad_configs(tiny: Tiny, data_dir: Path) -> None:
    from fdseg.models import create_model

    model = create_model("unet", base_width=4, depth=2)
    con = build_baseline_loss(
        tiny(data_dir, loss={"baseline": "contrastive", "baseline_options": {"layer": "dec2", "dim": 16}}),
        model,
    )
    assert con is not None and con.layers == ("dec2",) and con.head.out_channels == 16  # type: ignore[union-attr]
    deeps = build_baseline_loss(
        tiny(data_dir, loss={"baseline": "deep_supervision", "baseline_options": {"layers": ["dec1"]}}), model
    )
    assert deeps is not None and deeps.layers == ("dec1",)
    with pytest.raises(ValueError, match=r"unknown loss\.baseline_options"):
        build_baseline_loss(
            tiny(data_dir, loss={"baseline": "contrastive", "baseline_options": {"t": 1}}), model
        )
    with pytest.raises(ValueError, match="not a tap"):
        build_baseline_loss(
            tiny(data_dir, loss={"baseline": "contrastive", "baseline_options": {"layer": "dec9"}}), model
        )
    with pytest.raises(ValueError, match="needs decoder taps"):
        build_baseline_loss(tiny(data_dir, loss={"baseline": "deep_supervision"}), nn.Conv2d(3, 1, 1))
    with pytest.raises(ValueError, match=r"unknown loss\.baseline"):
        tiny(data_dir, loss={"baseline": "mixup"})
    with pytest.raises(ValueError, match="baseline_weight must be >= 0"):
        tiny(data_dir, loss={"baseline": "contrastive", "baseline_weight": -1.0})


def test_rejected_baseline_writes_nothing(tmp_path: Path, tiny: Tiny, data_dir: Path) -> None:
    cfg = tiny(data_dir, loss={"baseline": "contrastive", "baseline_options": {"layer": "bottleneck9"}})
    with pytest.raises(ValueError, match="not a tap"):
        train_run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
