"""Statistics of ``fdseg compare``: every p-value is scipy's on the same numbers, one-sided ones in the named
direction, and degenerate inputs give NaN or p = 1 with a note, never a vanishingly small p."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from fdseg.metrics import (
    compare_seeds,
    compare_to_baseline,
    effect_size_dz,
    paired_test,
    ttest_1samp_over_seeds,
)

BASE = {0: 0.801, 1: 0.793, 2: 0.812, 3: 0.785, 4: 0.799}
FD = {0: 0.815, 1: 0.801, 2: 0.810, 3: 0.806, 4: 0.813}


def test_every_p_value_equals_scipy_and_one_sided_points_the_named_way() -> None:
    r = compare_seeds(BASE, FD)
    a = np.array([BASE[k] for k in range(5)])
    b = np.array([FD[k] for k in range(5)])
    assert r["p_t"] == sps.ttest_rel(b, a).pvalue
    assert r["t"] == sps.ttest_rel(b, a).statistic
    assert r["p_t_greater"] == sps.ttest_rel(b, a, alternative="greater").pvalue
    assert r["p_w"] == sps.wilcoxon(b, a).pvalue
    assert r["p_w_greater"] == sps.wilcoxon(b, a, alternative="greater").pvalue
    assert r["p_1samp"] == sps.ttest_1samp(b, a.mean()).pvalue
    assert r["p_1samp_greater"] == sps.ttest_1samp(b, a.mean(), alternative="greater").pvalue
    # direction: FD is higher on 4 of 5 seeds, so "greater" (compared > baseline) is the small one-sided p
    assert r["mean_diff"] > 0 and r["p_t_greater"] < 0.5 and r["p_t_greater"] == pytest.approx(r["p_t"] / 2)
    swapped = compare_seeds(FD, BASE)
    assert swapped["p_t_greater"] == pytest.approx(1 - r["p_t_greater"])
    assert swapped["p_w_greater"] > 0.5 and swapped["mean_diff"] == pytest.approx(-r["mean_diff"])
    diff = b - a
    assert r["d_z"] == pytest.approx(diff.mean() / diff.std(ddof=1))
    assert r["sd_diff"] == pytest.approx(diff.std(ddof=1))
    half = sps.t.ppf(0.975, 4) * diff.std(ddof=1) / math.sqrt(5)
    assert (r["diff_ci_lo"], r["diff_ci_hi"]) == pytest.approx((diff.mean() - half, diff.mean() + half))
    assert r["notes"] == [] and r["dropped_baseline"] == [] and r["dropped_compared"] == []


def test_missing_seed_is_dropped_and_reported_never_compared_to_a_mean() -> None:
    fd = {k: v for k, v in FD.items() if k != 3}
    r = compare_seeds(BASE, fd)
    assert r["n"] == 4 and r["shared"] == [0, 1, 2, 4] and r["dropped_baseline"] == [3]
    assert any("dropped: baseline [3]" in n for n in r["notes"])
    a = np.array([BASE[k] for k in (0, 1, 2, 4)])
    b = np.array([fd[k] for k in (0, 1, 2, 4)])
    assert r["baseline_mean"] == pytest.approx(a.mean())  # the baseline mean is over the shared seeds only
    assert r["p_t"] == sps.ttest_rel(b, a).pvalue
    assert r["p_1samp"] == sps.ttest_1samp(b, a.mean()).pvalue
    with pytest.raises(ValueError, match="share no seed"):
        compare_seeds({0: 0.5}, {1: 0.6})
    # the report's comparison pairs the same way
    base = pd.DataFrame({"seed": list(BASE), "dice": list(BASE.values())})
    other = pd.DataFrame({"seed": list(fd), "dice": list(fd.values())})
    rep = compare_to_baseline(base, other, value="dice", seed_col="seed")
    assert rep["n"] == 4 and rep["delta"] == pytest.approx((b - a).mean()) and "dropped" in rep["note"]
    assert rep["p_greater"] == sps.ttest_rel(b, a, alternative="greater").pvalue


def test_constant_up_to_rounding_gives_nan_not_a_tiny_p() -> None:
    a = np.array([0.123, 0.456, 0.789, 0.2468, 0.97531])
    b = a + 0.07  # differences 0.07 up to rounding (not exactly equal in binary)
    assert np.ptp(b - a) > 0  # the trap: scipy sees a tiny spread
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning, match="Precision loss"):
        assert sps.ttest_rel(b, a).pvalue < 1e-10
    r = compare_seeds(dict(enumerate(a)), dict(enumerate(b)))
    assert math.isnan(r["p_t"]) and math.isnan(r["d_z"]) and math.isnan(r["diff_ci_lo"])
    assert any("rounding" in n for n in r["notes"])
    one = ttest_1samp_over_seeds(np.full(4, 0.8) + np.array([0, 1e-17, -1e-17, 0]), 0.7)
    assert math.isnan(one["p_two_sided"]) and "zero variance" in str(one["note"])
    t = paired_test(dict(enumerate(a)), dict(enumerate(b)), method="ttest")
    assert math.isnan(t["p_two_sided"]) and "constant" in str(t["note"])
    assert math.isnan(effect_size_dz(b - a))


def test_all_zero_and_rounding_zero_differences_give_p_one() -> None:
    a = {i: v for i, v in enumerate([0.7, 0.8, 0.9])}
    r = compare_seeds(a, dict(a))
    assert r["p_t"] == 1.0 and r["p_w"] == 1.0 and r["p_w_greater"] == 1.0
    assert any("all differences are 0" in n for n in r["notes"])
    # 0.1 + 0.2 - 0.3 is 5.6e-17, not 0: rounding, still no evidence of a difference
    near = {0: 0.3, 1: 0.5, 2: 0.6}
    shifted = {0: 0.1 + 0.2, 1: 0.5, 2: 0.6}
    w = paired_test(near, shifted, method="wilcoxon")
    assert w["p_two_sided"] == 1.0 and "rounding" in str(w["note"])


def test_too_few_pairs_give_nan_with_a_note() -> None:
    r = compare_seeds({0: 0.7, 1: 0.8}, {0: 0.75, 2: 0.9})
    assert r["n"] == 1 and math.isnan(r["p_t"]) and math.isnan(r["p_w"]) and math.isnan(r["p_1samp"])
    assert any("needs at least 2" in n for n in r["notes"]) and math.isnan(r["baseline_sd"])
    assert math.isnan(paired_test({"x": 0.1}, {"x": 0.3})["p_two_sided"])
