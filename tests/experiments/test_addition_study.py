"""``fdseg experiment data-addition`` / ``robustness``: checks before any run, and a tiny study end to end."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest

from fdseg.cli import main
from fdseg.experiments.addition import ARMS, plan_data_addition, plan_robustness, synthetic_config
from fdseg.training.config import ExperimentConfig

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("FDSEG_SHARED_DATA") or REPO.parent / "shared" / "data")
MONUSEG = SHARED_DATA / "monuseg"


def _tiny_yaml(tmp_path: Path, novel: str | None = None) -> Path:
    data = tmp_path / "data"
    cfg = {
        "schema": 1,
        "data": {
            "base": f"synthetic:{data / 'base'}?family=nuclei&site=base&n=14&seed=0&size=32",
            "novel": novel or f"synthetic:{data / 'dil2'}?family=nuclei&site=dil2&n=4&seed=1&size=32",
            "image_size": 32,
            "split_scheme": "paper",
            "split_seed": 0,
            "cache_dir": str(data / "cache"),
        },
        "model": {"name": "unet", "kwargs": {"base_width": 4, "depth": 2}},
        "loss": {"lambda_kwargs": {"lambda_max": 0.01}},
        "optim": {"lr": 1e-3},
        "train": {"epochs_phase1": 1, "epochs_phase2": 1, "max_steps": 6, "batch_size": 4},
    }
    path = tmp_path / "tiny.yaml"
    ExperimentConfig.from_dict(cfg).to_yaml(path)
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--k", "0,5"], "larger than the training pool"),
        (["--k", "-2"], ">= 0"),
        (["--k", "1.5"], "whole numbers"),
        (["--fractions", "0,1.2"], r"\[0, 1\]"),
        (["--k", "1", "--fractions", "0.5"], "not both"),
        (["--arms", "seg,dice"], r"unknown arm\(s\) \['dice'\]"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--set", "loss.baseline_options={layer: dec7}"], "not a tap"),
    ],
)
def test_data_addition_bad_input_fails_before_any_run(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "exp"
    code = main(["experiment", "data-addition", "-c", str(_tiny_yaml(tmp_path)), "-o", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("error:") and len(err.splitlines()) == 1, err
    assert re.search(message, err), err
    assert not out.exists()  # nothing was run or written


@pytest.mark.skipif(not (MONUSEG / "MoNuSegTestData").is_dir(), reason=f"MoNuSeg not under {SHARED_DATA}")
def test_novel_dataset_without_training_part(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _tiny_yaml(tmp_path, novel=f"monuseg:{MONUSEG / 'MoNuSegTestData'}")
    code = main(["experiment", "data-addition", "-c", str(cfg), "-o", str(tmp_path / "exp"), "--k", "0,1"])
    assert code == 1 and "no training part" in capsys.readouterr().err
    assert not (tmp_path / "exp").exists()


def test_robustness_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(_tiny_yaml(tmp_path))
    for args, message in (
        (["--sigmas", "0,-0.1"], "sigma must be >= 0"),
        (["--sigmas", "0,x"], "not a number"),
        (["--apply-to", "val"], "apply-to"),
        (["--arms", "fd,segg"], "unknown arm"),
    ):
        code = main(["experiment", "robustness", "-c", cfg, "-o", str(tmp_path / "r"), *args])
        err = capsys.readouterr().err
        assert code == 1 and message in err, err
    assert not (tmp_path / "r").exists()


def test_plans(tmp_path: Path) -> None:
    cfg = ExperimentConfig.from_yaml(_tiny_yaml(tmp_path))
    study = plan_data_addition(cfg, tmp_path / "exp", fractions=[0.5, 1], arms=list(ARMS), seeds=2)
    assert study.conditions == [0.0, 2.0, 4.0]  # k = 0 added as the reference
    assert len(study.specs) == 3 * 5 * 2
    by_name = {s.name: s.config for s in study.specs}
    seg, con = by_name["k2_seg_s1"], by_name["k2_con_s1"]
    assert seg.train.compute_matched and not seg.loss.fd and seg.has_phase2
    assert con.loss.baseline == "contrastive" and not con.train.compute_matched
    assert by_name["k4_fd_exch_s0"].loss.exch and by_name["k0_fd_s0"].data.novel_k == 0
    assert seg.train.seed == 1 and seg.data.split_seed == by_name["k2_seg_s0"].data.split_seed
    rob = plan_robustness(cfg, tmp_path / "rob", sigmas=[0.1], arms=["seg"], seeds=1, apply_to="test")
    assert rob.conditions == [0.0, 0.1]
    assert [s.config.data.noise.sigma for s in rob.specs] == [0.0, 0.1]
    assert rob.specs[1].config.data.noise.apply_to == "test"
    default = synthetic_config(tmp_path / "d")
    assert default.train.max_steps == 240 and default.data.novel is not None and "dil2" in default.data.novel


def test_every_shipped_config_parses() -> None:
    paths = sorted((REPO / "configs" / "experiments").glob("data_addition_*.yaml"))
    assert len(paths) == 5
    for path in paths:
        cfg = ExperimentConfig.from_yaml(path)
        assert cfg.data.novel is not None and cfg.has_phase2 is False  # arms switch the losses on
        assert cfg.with_overrides(["loss.baseline=contrastive"]).has_phase2


@pytest.mark.slow
def test_tiny_study_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "exp"
    args = ["experiment", "data-addition", "-c", str(_tiny_yaml(tmp_path)), "-o", str(out)]
    code = main([*args, "--k", "0,4", "--arms", "seg,con,deeps", "--seeds", "2", "--jobs", "2"])
    text = capsys.readouterr().out
    assert code == 0, text
    frame = pd.read_csv(out / "results.csv")
    assert len(frame) == 2 * 3 * 2 and set(frame["arm"]) == {"seg", "con", "deeps"}
    assert frame["dice"].between(0, 1).all()
    summary = json.loads((out / "summary.json").read_text())
    change = {(r["arm"], r["condition"]): r for r in summary["change"]}
    for arm in ("seg", "con", "deeps"):
        sub = frame[frame["arm"] == arm].pivot(index="seed", columns="condition", values="dice")
        assert change[(arm, 4.0)]["mean_diff"] == pytest.approx(float((sub[4.0] - sub[0.0]).mean()))
        assert change[(arm, 4.0)]["n"] == 2
    assert [r["k"] for r in summary["divergence"]] == [4]
    assert (out / "figures" / "data-addition.png").stat().st_size > 0
    assert (out / "divergence.csv").is_file()
    assert "base-test Dice (%) vs k" in text and "L_seg + L_con" in text
    again = main(
        [*args, "--k", "0,4", "--arms", "seg,con,deeps", "--seeds", "2"]
    )  # finished runs are skipped
    assert again == 0 and "skipped (DONE)" in capsys.readouterr().out
