"""``fdseg experiment table1``: worst-/best-off tables and p-values recomputed independently from the
per-image CSVs (NumPy/SciPy written here), the arms, K from Table 6 and the paper's cells."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from fdseg.cli import main
from fdseg.experiments.table1 import table1_runs, table1_tables, worst_off_k
from fdseg.training.config import ExperimentConfig

VIEWS = ("identity", "hflip", "vflip", "rot90", "rot270")


def _cfg(base: str, model: str = "nucleisegnet") -> ExperimentConfig:
    return ExperimentConfig.from_dict(
        {
            "name": "t1",
            "data": {"base": base, "image_size": 32},
            "model": {"name": model},
            "train": {"epochs_phase1": 1, "epochs_phase2": 1},
        }
    )


def _recompute(frames: dict[tuple[str, int], pd.DataFrame], seeds: list[int], k: int) -> dict[str, dict]:
    """Worst/best/all means (%) per arm and seed, from the per-image tables, with NumPy only."""
    out: dict[str, dict] = {}
    for arm in ("lseg", "lseg_cm", "fd"):
        for seed in seeds:
            base = frames[("lseg", seed)].set_index("id")
            comp = frames[(arm, seed)].set_index("id")
            order = sorted(base.index, key=lambda i: (base.loc[i, "dice"], i))
            groups = {"worst": order[:k], "best": order[::-1][:k], "all": order}
            for group, ids in groups.items():
                for metric in ("dice", "iou"):
                    out.setdefault(f"{arm}/{group}/{metric}", {})[seed] = 100 * comp.loc[ids, metric].mean()
    return out


def test_tables_and_p_values_match_an_independent_recomputation(tmp_path: Path) -> None:
    cfg = _cfg("tnbc:/nowhere")  # the dataset is never opened: the per-image results are written here
    seeds = [0, 1, 2, 3]
    runs = table1_runs(cfg, tmp_path / "exp", seeds=seeds)
    assert [r.name for r in runs][:3] == [
        "nucleisegnet_lseg_seed0",
        "nucleisegnet_lseg_seed1",
        "nucleisegnet_lseg_seed2",
    ]
    variants = {r.arm.values["variant"]: r.spec.config for r in runs if r.seed == 0}
    assert (variants["lseg"].loss.fd, variants["lseg"].has_phase2) == (False, False)
    assert (variants["lseg_cm"].loss.fd, variants["lseg_cm"].train.compute_matched) == (False, True)
    assert variants["lseg_cm"].has_phase2 and variants["fd"].loss.fd and variants["fd"].has_phase2
    rng = np.random.default_rng(7)
    ids = [f"img{i:02d}" for i in range(8)]
    plain: dict[tuple[str, int], pd.DataFrame] = {}
    views: dict[tuple[str, int], pd.DataFrame] = {}
    for run in runs:
        arm, seed = str(run.arm.values["variant"]), run.seed
        shift = {"lseg": 0.0, "lseg_cm": 0.01, "fd": 0.03}[arm]
        dice = np.clip(rng.uniform(0.4, 0.95, len(ids)) + shift, 0, 1)
        plain[(arm, seed)] = pd.DataFrame({"id": ids, "dice": dice, "iou": dice / (2 - dice)})
        vid = [(i, v) for i in ids for v in VIEWS]
        vd = np.clip(rng.uniform(0.4, 0.95, len(vid)) + shift, 0, 1)
        views[(arm, seed)] = pd.DataFrame(
            {"id": [i for i, _ in vid], "view": [v for _, v in vid], "dice": vd, "iou": vd / (2 - vd)}
        )
        rd = run.spec.run_dir
        (rd / "test").mkdir(parents=True)
        (rd / "test_views").mkdir()
        plain[(arm, seed)].to_csv(rd / "test" / "per_sample.csv", index=False)
        views[(arm, seed)].to_csv(rd / "test_views" / "per_sample.csv", index=False)
        (rd / "DONE").write_text("{}")
    result = table1_tables(runs, "tnbc")
    summary = result.summary

    # K: Table 6 gives 10 for TNBC; capped at N/2 = 4 on the plain set (8 images), 10 on the 5-view set (40)
    assert worst_off_k("tnbc", 8) == (4, 10, "Table 6 (tnbc)") and worst_off_k("tnbc", 40)[0] == 10
    assert any("plain: N = 8 images per seed, K = 4 (requested 10" in n for n in result.notes)
    assert any("fewer than 10" in n for n in result.notes)
    view_frames = {k: v.assign(id=v["id"] + "@" + v["view"]) for k, v in views.items()}
    for test_set, frames, k in (("plain", plain, 4), ("5-view", view_frames, 10)):
        ref = _recompute(frames, seeds, k)
        for key, per_seed in ref.items():
            arm, group, metric = key.split("/")
            row = summary[
                (summary["test_set"] == test_set)
                & (summary["arm"] == arm)
                & (summary["group"] == group)
                & (summary["metric"] == metric)
            ].iloc[0]
            vals = np.array([per_seed[s] for s in seeds])
            assert row["mean"] == pytest.approx(vals.mean()) and row["sd"] == pytest.approx(vals.std(ddof=1))
            if arm == "lseg":
                continue
            base = np.array([ref[f"lseg/{group}/{metric}"][s] for s in seeds])
            assert row["delta"] == pytest.approx((vals - base).mean())
            # the paper's Table 5 test: the arm's seeds against the single ✗ number (its mean over seeds)
            assert row["p_1samp"] == pytest.approx(sps.ttest_1samp(vals, base.mean()).pvalue, rel=1e-12)
            greater = sps.ttest_1samp(vals, base.mean(), alternative="greater").pvalue
            assert row["p_1samp_greater"] == pytest.approx(greater, rel=1e-12)
            assert row["p_paired"] == pytest.approx(sps.ttest_rel(vals, base).pvalue, rel=1e-12)
            paired_greater = sps.ttest_rel(vals, base, alternative="greater").pvalue
            assert row["p_paired_greater"] == pytest.approx(paired_greater, rel=1e-12)
            assert row["p_wilcoxon"] == pytest.approx(sps.wilcoxon(vals, base).pvalue, rel=1e-12)
    # the paper's numbers sit beside ours for NuSegNet on TNBC
    cell = summary[(summary["arm"] == "lseg") & (summary["group"] == "worst") & (summary["metric"] == "dice")]
    assert set(cell["paper"]) == {77.29}
    per_seed = result.per_seed
    thr = per_seed[
        (per_seed["test_set"] == "plain") & (per_seed["group"] == "worst") & (per_seed["seed"] == 0)
    ]
    assert thr["threshold"].iloc[0] == pytest.approx(100 * np.sort(plain[("lseg", 0)]["dice"])[3])


def test_table1_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    _cfg(f"synthetic:{tmp_path / 'd'}?family=nuclei&site=base&n=8&seed=0&size=16", "unet").to_yaml(config)
    exp = tmp_path / "exp"
    code = main(["experiment", "table1", "-c", str(config), "-o", str(exp), "--models", "unet,transunett"])
    assert code == 1 and "did you mean 'transunet'" in capsys.readouterr().err and not exp.exists()
    code = main(["experiment", "table1", "-c", str(config), "-o", str(exp), "--set", "train.epochs_phase2=0"])
    assert code == 1 and "epochs_phase2 >= 1" in capsys.readouterr().err and not exp.exists()
    code = main(["experiment", "table1", "-c", str(config), "-o", str(exp), "--folds", "20"])
    assert code == 1 and "20 folds need at least 20 groups" in capsys.readouterr().err and not exp.exists()


@pytest.mark.slow
@pytest.mark.timeout(1200)  # six short trainings: about a minute on 2 idle cores, far more on a busy machine
def test_table1_end_to_end_on_synthetic_data(tmp_path: Path) -> None:
    base = f"synthetic:{tmp_path / 'd'}?family=nuclei&site=base&n=16&seed=0&size=16"
    cfg = ExperimentConfig.from_dict(
        {
            "name": "tiny",
            "data": {
                "base": base,
                "image_size": 16,
                "split_scheme": "paper",
                "cache_dir": str(tmp_path / "c"),
            },
            "model": {"name": "unet", "kwargs": {"base_width": 4, "depth": 2}},
            "loss": {"lambda_kwargs": {"lambda_max": 0.01}},
            "optim": {"lr": 0.003},
            "train": {"epochs_phase1": 1, "epochs_phase2": 1, "batch_size": 4, "progress_bar": False},
        }
    )
    config = tmp_path / "c.yaml"
    cfg.to_yaml(config)
    exp = tmp_path / "exp"
    argv = ["experiment", "table1", "-c", str(config), "-o", str(exp), "--seeds", "2", "--executor", "inline"]
    assert main([*argv, "--device", "cpu"]) == 0
    results = pd.read_csv(exp / "results.csv")
    assert len(results) == 6 and (results["status"] == "done").all()
    frames: dict[tuple[str, int], pd.DataFrame] = {}
    for row in results.to_dict("records"):
        per_image = pd.read_csv(exp / "runs" / row["run"] / "test" / "per_sample.csv", dtype={"id": str})
        assert row["dice"] == pytest.approx(per_image["dice"].mean())  # results.csv = the run's test mean
        frames[(row["variant"], int(row["seed"]))] = per_image
    summary = pd.read_csv(exp / "table1.csv")
    n = len(frames[("lseg", 0)])
    k = max(1, min(max(1, n // 5), n // 2))
    ref = _recompute(frames, [0, 1], k)
    for key, per_seed in ref.items():
        arm, group, metric = key.split("/")
        row = summary[
            (summary["test_set"] == "plain")
            & (summary["arm"] == arm)
            & (summary["group"] == group)
            & (summary["metric"] == metric)
        ].iloc[0]
        assert row["mean"] == pytest.approx(np.mean(list(per_seed.values())))
    assert (exp / "report.html").is_file() and (exp / "table1.txt").is_file()
    assert (exp / "figures" / "worst_off_panels.png").is_file()  # both arms' best checkpoints re-segmented
    assert json.loads((exp / "experiment.json").read_text())["kind"] == "table1"
    # a second call trains nothing and rewrites the same table
    before = (exp / "table1.csv").read_text()
    assert main([*argv, "--device", "cpu"]) == 0 and (exp / "table1.csv").read_text() == before
