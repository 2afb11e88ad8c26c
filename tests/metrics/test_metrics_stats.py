from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from fdseg.metrics import (
    align_pairs,
    bootstrap_ci,
    paired_bootstrap_diff,
    paired_test,
    summarize,
    t_ci,
    ttest_1samp_over_seeds,
    worst_best_off,
)


def test_ttest_1samp_by_hand_and_against_scipy() -> None:
    # x = 1, 2, 3 vs 0: mean 2, sd 1, t = 2 / (1 / sqrt 3) = 2 sqrt 3
    r = ttest_1samp_over_seeds([1.0, 2.0, 3.0], 0.0)
    assert r["t"] == pytest.approx(2 * math.sqrt(3))
    assert r["df"] == 2 and r["n"] == 3 and r["mean"] == 2.0 and r["sd"] == 1.0
    # two-sided p from the t distribution with 2 df
    assert r["p_two_sided"] == pytest.approx(2 * sps.t.sf(2 * math.sqrt(3), 2))
    assert r["p_greater"] == pytest.approx(r["p_two_sided"] / 2)
    seeds = [0.823, 0.829, 0.818, 0.831, 0.826]
    ref = sps.ttest_1samp(seeds, 0.8169)
    mine = ttest_1samp_over_seeds(seeds, 0.8169)
    assert mine["p_two_sided"] == pytest.approx(ref.pvalue) and mine["t"] == pytest.approx(ref.statistic)
    assert mine["p_greater"] == pytest.approx(sps.ttest_1samp(seeds, 0.8169, alternative="greater").pvalue)
    # below mu0: the one-sided p is large
    assert ttest_1samp_over_seeds([0.1, 0.2, 0.15], 0.5)["p_greater"] > 0.9


def test_ttest_degenerate_cases() -> None:
    r = ttest_1samp_over_seeds([0.8, 0.8, 0.8], 0.7)
    assert math.isnan(r["t"]) and math.isnan(r["p_two_sided"]) and "zero variance" in str(r["note"])
    one = ttest_1samp_over_seeds([0.8], 0.7)
    assert math.isnan(one["p_two_sided"]) and "needs at least 2" in str(one["note"])
    with pytest.raises(ValueError, match="NaN"):
        ttest_1samp_over_seeds([0.8, math.nan], 0.7)


def test_paired_tests_pair_by_id_not_position() -> None:
    a = pd.DataFrame({"id": ["a", "b", "c", "d", "e", "f"], "dice": [0.5, 0.6, 0.7, 0.4, 0.9, 0.3]})
    shuffled = a.sample(frac=1.0, random_state=3)
    b = shuffled.assign(dice=shuffled["dice"] + np.array([0.1, 0.05, 0.02, 0.08, 0.01, 0.03]))
    pairs = align_pairs(a, b)
    assert list(pairs.index) == ["a", "b", "c", "d", "e", "f"]
    diff = b.set_index("id").loc[list(pairs.index), "dice"].to_numpy() - a["dice"].to_numpy()
    np.testing.assert_allclose(pairs["diff"].to_numpy(), diff)
    t = paired_test(a, b, method="ttest")
    ref = sps.ttest_rel(pairs["b"], pairs["a"])
    assert t["p_two_sided"] == pytest.approx(ref.pvalue) and t["n"] == 6
    w = paired_test(a, b, method="wilcoxon")
    # every difference positive: exact two-sided Wilcoxon p = 2 / 2**6
    assert w["p_two_sided"] == pytest.approx(2 / 64) and w["p_greater"] == pytest.approx(1 / 64)
    assert w["mean_diff"] == pytest.approx(float(np.mean(diff)))


def test_paired_test_inputs_and_errors() -> None:
    a = pd.Series([0.1, 0.2, 0.3], index=["x", "y", "z"])
    b = {"x": 0.1, "y": 0.2, "z": 0.3}
    r = paired_test(a, b)
    assert r["p_two_sided"] == 1.0 and "all differences are 0" in str(r["note"])
    with pytest.raises(ValueError, match="ids do not match: 1 only in a"):
        paired_test(a, {"x": 0.1, "y": 0.2, "w": 0.0})
    dropped = paired_test(a, {"x": 0.2, "y": 0.25, "z": 0.5, "w": 0.0}, on_missing="drop", method="ttest")
    assert dropped["n"] == 3
    with pytest.raises(ValueError, match="duplicate ids"):
        paired_test(pd.DataFrame({"id": ["x", "x"], "dice": [0.1, 0.2]}), b)
    with pytest.raises(KeyError, match="no column"):
        paired_test(pd.DataFrame({"name": ["x"], "dice": [0.1]}), b)
    with pytest.raises(ValueError, match="did you mean 'ttest'"):
        paired_test(a, b, method="ttst")  # type: ignore[arg-type]


def test_bootstrap_ci_contains_mean_and_is_deterministic() -> None:
    rng = np.random.default_rng(7)
    values = rng.normal(0.8, 0.05, size=40)
    lo, hi = bootstrap_ci(values, n_boot=2000, seed=3)
    assert lo < values.mean() < hi
    assert (lo, hi) == bootstrap_ci(values, n_boot=2000, seed=3)
    assert (lo, hi) != bootstrap_ci(values, n_boot=2000, seed=4)
    # close to the normal-theory interval for n = 40
    se = values.std(ddof=1) / math.sqrt(values.size)
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.2)
    lo50, hi50 = bootstrap_ci(values, n_boot=2000, ci=0.5, seed=3)
    assert lo < lo50 < hi50 < hi
    constant = bootstrap_ci([0.5, 0.5, 0.5])
    assert constant == (0.5, 0.5)
    assert all(math.isnan(v) for v in bootstrap_ci([0.5]))
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci([0.5, math.nan])
    with pytest.raises(ValueError, match=r"ci must be in \(0, 1\)"):
        bootstrap_ci([0.5, 0.6], ci=95)


def test_t_ci_matches_scipy() -> None:
    x = [0.81, 0.83, 0.80, 0.84, 0.82]
    lo, hi = t_ci(x, ci=0.95)
    ref = sps.t.interval(0.95, 4, loc=np.mean(x), scale=sps.sem(x))
    assert (lo, hi) == pytest.approx(ref)


def test_paired_bootstrap_diff() -> None:
    a = {str(i): 0.5 + 0.01 * i for i in range(20)}
    b = {str(i): 0.55 + 0.01 * i + (0.01 if i % 2 else -0.01) for i in range(20)}
    r = paired_bootstrap_diff(a, b, n_boot=1000, seed=0)
    assert r["n"] == 20 and r["mean_diff"] == pytest.approx(0.05)
    assert r["ci_lo"] < 0.05 < r["ci_hi"] and r["ci_lo"] > 0.04


def test_summarize_groups_and_nan_handling() -> None:
    df = pd.DataFrame(
        {
            "method": ["fd", "fd", "fd", "base", "base", "base"],
            "condition": ["k0"] * 6,
            "dice": [0.8, 0.82, math.nan, 0.7, 0.72, 0.74],
        }
    )
    s = summarize(df, value="dice", by=["method", "condition"], ci_method="t")
    assert list(s.columns) == ["method", "condition", "mean", "sd", "n", "n_nan", "ci_lo", "ci_hi"]
    assert list(s["method"]) == ["fd", "base"]
    fd = s.iloc[0]
    assert fd["n"] == 2 and fd["n_nan"] == 1 and fd["mean"] == pytest.approx(0.81)
    assert fd["sd"] == pytest.approx(np.std([0.8, 0.82], ddof=1))
    base = s.iloc[1]
    assert base["ci_lo"] < base["mean"] < base["ci_hi"]
    whole = summarize(df, value="dice", n_boot=500)
    assert len(whole) == 1 and whole["n"].iloc[0] == 5
    single = summarize(df.iloc[[0]], value="dice")
    assert math.isnan(single["sd"].iloc[0]) and math.isnan(single["ci_lo"].iloc[0])
    with pytest.raises(KeyError, match="no column"):
        summarize(df, value="iou")


def _per_sample(values: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame({"id": list(values), "dice": list(values.values())})


def test_worst_best_off_selection_and_capping() -> None:
    base = _per_sample({"a": 0.9, "b": 0.1, "c": 0.5, "d": 0.3, "e": 0.7, "f": 0.2, "g": math.nan})
    comp = _per_sample({"a": 0.8, "b": 0.3, "c": 0.5, "d": 0.4, "e": 0.9, "f": 0.2, "g": 0.5})
    r = worst_best_off(base, comp.iloc[::-1], k=2)
    assert r["k"] == 2 and not r["capped"] and r["n"] == 6 and r["n_excluded_nan"] == 1
    assert r["worst"]["ids"] == ["b", "f"] and r["best"]["ids"] == ["a", "e"]
    assert r["worst"]["threshold"] == 0.2 and r["best"]["threshold"] == 0.7
    assert r["worst"]["baseline_mean"] == pytest.approx(0.15)
    assert r["worst"]["compared_mean"] == pytest.approx(0.25)
    assert r["worst"]["delta"] == pytest.approx(0.10)
    assert r["best"]["delta"] == pytest.approx(0.05)
    assert r["all"]["baseline_mean"] == pytest.approx(np.mean([0.9, 0.1, 0.5, 0.3, 0.7, 0.2]))
    assert list(r["table"]["group"]) == ["worst", "worst", "", "", "best", "best"]
    capped = worst_best_off(base, comp, k=10)
    assert capped["k"] == 3 and capped["capped"] and capped["k_requested"] == 10
    assert not set(capped["worst"]["ids"]) & set(capped["best"]["ids"])
    # ties broken by id, deterministic
    tied = _per_sample({"z": 0.5, "y": 0.5, "x": 0.5, "w": 0.5})
    assert worst_best_off(tied, tied, k=1)["worst"]["ids"] == ["w"]
    assert worst_best_off(tied, tied, k=1)["best"]["ids"] == ["z"]


def test_worst_best_off_errors() -> None:
    base = _per_sample({"a": 0.9, "b": 0.1, "c": 0.5})
    with pytest.raises(ValueError, match="missing from compared"):
        worst_best_off(base, _per_sample({"a": 0.9, "b": 0.1}), k=1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        worst_best_off(base, base, k=0)
    with pytest.raises(KeyError, match=r"no column\(s\) \['iou'\]"):
        worst_best_off(base, base, k=1, metric="iou")
    with pytest.raises(ValueError, match="at least 2 baseline images"):
        worst_best_off(base.iloc[:1], base, k=1)
