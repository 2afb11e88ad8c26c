"""``fdseg compare`` on run directories: arms from the configs, pairing by seed (and fold) and image id."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from fdseg.cli import main
from fdseg.experiments.compare import compare_runs, load_runs
from fdseg.training.config import ExperimentConfig

IDS = [f"im{i}" for i in range(12)]


def _run(root: Path, name: str, *, fd: bool, seed: int, fold: int | None, dice: np.ndarray) -> Path:
    over = [f"loss.fd={str(fd).lower()}", f"train.seed={seed}"]
    if fold is not None:
        over += ["data.folds=2", f"data.fold={fold}"]
    cfg = ExperimentConfig().with_overrides(over)
    run = root / name
    (run / "test").mkdir(parents=True)
    cfg.to_yaml(run / "config.yaml")
    ids = IDS[:6] if fold == 0 else IDS[6:] if fold == 1 else IDS
    pd.DataFrame({"id": ids, "dice": dice[: len(ids)], "iou": dice[: len(ids)] / 2}).to_csv(
        run / "test" / "per_sample.csv", index=False
    )
    (run / "DONE").write_text("{}")
    return run


def test_missing_seed_is_dropped_and_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    values = {}
    for seed in range(4):
        base = rng.uniform(0.5, 0.9, 12)
        values[("fd=false", seed)] = base
        _run(tmp_path / "exp" / "runs", f"a{seed}", fd=False, seed=seed, fold=None, dice=base)
        if seed != 2:  # the L_fd arm lacks seed 2
            comp = base + rng.uniform(0.0, 0.05, 12)
            values[("fd=true", seed)] = comp
            _run(tmp_path / "exp" / "runs", f"b{seed}", fd=True, seed=seed, fold=None, dice=comp)
    runs = load_runs([tmp_path / "exp"])
    assert sorted(set(runs["arm"])) == ["fd=false", "fd=true"]
    cmp = compare_runs([tmp_path / "exp"], n_boot=500)
    assert cmp.baseline == "fd=false"
    row = cmp.table[cmp.table["arm"] == "fd=true"].iloc[0]
    shared = [0, 1, 3]
    a = np.array([values[("fd=false", s)].mean() for s in shared])
    b = np.array([values[("fd=true", s)].mean() for s in shared])
    assert row["n"] == 3 and "only in fd=false: seed 2" in row["notes"]
    assert row["mean_diff"] == pytest.approx((b - a).mean())  # never seed 2's baseline value
    assert row["p_t"] == sps.ttest_rel(b, a).pvalue
    assert row["p_t_greater"] == sps.ttest_rel(b, a, alternative="greater").pvalue
    assert row["p_w"] == sps.wilcoxon(b, a).pvalue
    assert row["p_1samp"] == sps.ttest_1samp(b, a.mean()).pvalue
    per_image = np.mean([values[("fd=true", s)] - values[("fd=false", s)] for s in shared], axis=0)
    assert row["img_diff"] == pytest.approx(per_image.mean()) and row["n_img_pairs"] == 12
    assert row["img_ci_lo"] < per_image.mean() < row["img_ci_hi"]
    base_row = cmp.table[cmp.table["arm"] == "fd=false"].iloc[0]
    assert base_row["seeds"] == 4  # the summary of an arm keeps all its seeds
    assert main(["compare", str(tmp_path / "exp"), "--baseline", "fd=false", "--metric", "iou"]) == 0
    out = capsys.readouterr().out
    assert "dropped" in out and "one-sample t-test" in out
    assert main(["compare", str(tmp_path / "exp"), "--baseline", "fd=fals"]) == 1
    assert "did you mean 'fd=false'" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "exp"), "--metric", "dcie"]) == 1
    assert "did you mean 'dice'" in capsys.readouterr().err


def test_folds_are_pooled_per_seed_and_paired_per_fold(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pooled: dict[tuple[bool, int], list[float]] = {}
    for seed in range(3):
        for fold in (0, 1):
            for fd in (False, True):
                if fd and seed == 1 and fold == 1:
                    continue  # one missing fold: dropped for both arms, named
                dice = rng.uniform(0.5, 0.9, 6)
                _run(tmp_path, f"{fd}_{seed}_{fold}", fd=fd, seed=seed, fold=fold, dice=dice)
                pooled.setdefault((fd, seed), []).extend(dice if not (seed == 1 and fold == 1) else [])
    cmp = compare_runs([tmp_path], n_boot=200)
    row = cmp.table[cmp.table["arm"] == "fd=true"].iloc[0]
    assert "seed 1 fold 1" in row["notes"]
    a = np.array([np.mean(pooled[(False, s)]) for s in range(3)])
    b = np.array([np.mean(pooled[(True, s)]) for s in range(3)])
    assert row["mean_diff"] == pytest.approx((b - a).mean())
    assert row["p_t"] == pytest.approx(sps.ttest_rel(b, a).pvalue, rel=1e-12)


def _finish(run_dir: Path, config: ExperimentConfig, dice: np.ndarray) -> None:
    """A finished run as fdseg writes it: config.yaml, DONE and test/per_sample.csv."""
    (run_dir / "test").mkdir(parents=True)
    config.to_yaml(run_dir / "config.yaml")
    pd.DataFrame({"id": IDS, "dice": dice, "iou": dice / 2}).to_csv(
        run_dir / "test" / "per_sample.csv", index=False
    )
    (run_dir / "DONE").write_text("{}")


def _write_study(exp: Path, runs: list, values: dict[str, np.ndarray]) -> None:
    from fdseg._io import atomic_write_text
    from fdseg.experiments.sweep import collect_results

    for run in runs:
        _finish(run.spec.run_dir, run.spec.config, values[run.arm.slug] + 0.01 * run.seed)
    atomic_write_text(exp / "results.csv", collect_results(runs, ["model", "variant"]).to_csv(index=False))


def test_table1_study_baseline_is_the_lseg_arm_and_is_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fdseg.experiments.table1 import table1_runs

    cfg = ExperimentConfig.from_dict(
        {"name": "t1", "data": {"base": "tnbc:/nowhere"}, "train": {"epochs_phase1": 1, "epochs_phase2": 1}}
    )
    exp = tmp_path / "t1"
    runs = table1_runs(cfg, exp, seeds=[0, 1, 2])
    rng = np.random.default_rng(3)
    values = {slug: rng.uniform(0.4, 0.9, 12) for slug in ("unet_lseg", "unet_lseg_cm", "unet_fd")}
    _write_study(exp, runs, values)
    # alphabetically the ✓ runs (unet_fd_*) come first; the study lists ✗ L_seg first, and it is L_seg-only
    assert sorted(p.name for p in (exp / "runs").iterdir())[0] == "unet_fd_seed0"
    cmp = compare_runs([exp], n_boot=200)
    assert cmp.baseline == "unet ✗ L_seg"
    assert list(cmp.table["arm"]) == ["unet ✗ L_seg", "unet ✗ L_seg compute-matched", "unet ✓ L_seg + L_fd"]
    assert cmp.baseline_reason == "the first of 2 L_seg-only arms in the study's order"
    assert list(load_runs([exp])["run"][:3]) == ["unet_lseg_seed0", "unet_lseg_seed1", "unet_lseg_seed2"]
    assert main(["compare", str(exp)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (
        "baseline: unet ✗ L_seg (the first of 2 L_seg-only arms in the study's order; "
        "pick another with --baseline)"
    )
    # the choice does not depend on the order of the paths or directories given
    dirs = sorted((exp / "runs").iterdir(), reverse=True)
    assert compare_runs(dirs, n_boot=200).baseline == "unet ✗ L_seg"
    assert main(["compare", str(exp), "--baseline", "unet ✓ L_seg + L_fd"]) == 0
    assert capsys.readouterr().out.startswith("baseline: unet ✓ L_seg + L_fd (given with --baseline;")


def test_without_an_lseg_arm_the_baseline_is_the_first_arm_of_the_study(tmp_path: Path) -> None:
    from fdseg.experiments.sweep import expand, grid_arms, parse_grid

    cfg = ExperimentConfig().with_overrides(["loss.fd=true"])
    exp = tmp_path / "lam"
    arms = grid_arms(parse_grid(["loss.lambda_kwargs.lambda_max=0.01,0.001"], cfg))
    runs = expand(cfg, arms, [0, 1], exp)
    rng = np.random.default_rng(4)
    _write_study(exp, runs, {a.slug: rng.uniform(0.4, 0.9, 12) for a in arms})
    cmp = compare_runs([exp], n_boot=200)
    # the grid's first value, although lambda_max-0.001 sorts first and no arm is L_seg-only
    assert cmp.baseline == "lambda_max=0.01"
    assert cmp.baseline_reason == "the first arm in the study's order (no arm trains with L_seg alone)"


def test_compare_prints_and_writes_counts_as_integers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(5)
    for seed in range(3):
        base = rng.uniform(0.5, 0.9, 12)
        _run(tmp_path / "exp" / "runs", f"a{seed}", fd=False, seed=seed, fold=None, dice=base)
        _run(tmp_path / "exp" / "runs", f"b{seed}", fd=True, seed=seed, fold=None, dice=base + 0.02)
    csv = tmp_path / "cmp.csv"
    assert main(["compare", str(tmp_path / "exp"), "--csv", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "[3 seeds, 12 images/seed]" in out
    assert "Δ over 3 paired seed(s)" in out and "per-image Δ (12 images" in out
    assert not re.search(r"\b\d+\.0 (seeds|images|paired)", out), out
    assert out.startswith("baseline: fd=false (the L_seg-only arm, without L_fd or an auxiliary loss;")
    text = pd.read_csv(csv, dtype=str).set_index("arm")
    for column in ("seeds", "n_images", "n", "n_img_pairs"):
        assert re.fullmatch(r"\d+", str(text.loc["fd=true", column])), (column, text.loc["fd=true", column])
    assert pd.isna(text.loc["fd=false", "n"])  # the baseline is not paired with itself


def test_runs_on_different_base_datasets_are_not_paired(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dice = np.linspace(0.5, 0.9, 12)
    _run(tmp_path, "a", fd=False, seed=0, fold=None, dice=dice)
    other = _run(tmp_path, "b", fd=True, seed=0, fold=None, dice=dice)
    cfg = ExperimentConfig.from_yaml(other / "config.yaml")
    moved = cfg.with_overrides(["data.base=folder:/elsewhere"])  # the same ids name other images
    moved.to_yaml(other / "config.yaml")
    assert main(["compare", str(tmp_path / "a"), str(other)]) == 1
    err = capsys.readouterr().err
    assert "different base datasets (data.base: " in err and "folder:/elsewhere" in err
