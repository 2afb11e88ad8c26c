"""``fdseg compare`` on run directories: arms from the configs, pairing by seed (and fold) and image id."""

from __future__ import annotations

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
