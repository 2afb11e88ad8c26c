"""Statistics over seeds and images: the paper's one-sample t-test, paired tests, bootstrap CIs, summaries.

Conventions used throughout:

* A *difference* is always ``b - a`` (compared minus baseline), so a positive mean difference means ``b``
  scored higher; one-sided p-values test ``b > a`` (``alternative="greater"``).
* Values are paired **by id** (image id, or seed), never by position. Duplicate ids raise.
* NaN values raise in the tests and in the bootstrap; :func:`summarize` drops them per group and reports
  how many it dropped (``n_nan``), so a NaN from an empty-mask policy is never averaged silently.
* Degenerate inputs give NaN (or p = 1) with a ``note`` that says why, never a vanishingly small p: fewer
  than 2 values or pairs; a spread that is zero *up to floating-point rounding* (standard deviation at most
  :data:`ROUNDING_RTOL` times the magnitude of the values compared, where scipy would divide rounding noise
  by itself and return p ≈ 0); all differences 0 (p = 1: no evidence of a difference).
* Every p-value that is not degenerate is scipy's own (``ttest_1samp``, ``ttest_rel``, ``wilcoxon``) on the
  very numbers shown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

from fdseg._checks import check_option

PairedMethod = Literal["wilcoxon", "ttest"]
CIMethod = Literal["bootstrap", "t"]
PAIRED_METHODS: tuple[str, ...] = get_args(PairedMethod)
CI_METHODS: tuple[str, ...] = get_args(CIMethod)

Paired = pd.Series | Mapping[Any, float] | pd.DataFrame

__all__ = [
    "CI_METHODS",
    "PAIRED_METHODS",
    "ROUNDING_RTOL",
    "CIMethod",
    "PairedMethod",
    "align_pairs",
    "bootstrap_ci",
    "compare_arms",
    "compare_seeds",
    "compare_to_baseline",
    "effect_size_dz",
    "paired_bootstrap_diff",
    "paired_test",
    "summarize",
    "t_ci",
    "ttest_1samp_over_seeds",
]

_MAX_BOOT_CHUNK = 4_000_000  # resampled values held in memory at once

#: A spread (sd) at most this fraction of the values' magnitude is floating-point rounding, not variance.
ROUNDING_RTOL = 1e-9


def _rounding_only(spread: float, *scales: float) -> bool:
    """Whether ``spread`` (an sd or a range) is within rounding of values of magnitude ``max(|scales|)``."""
    scale = max([abs(float(x)) for x in scales if math.isfinite(float(x))] + [0.0])
    return spread <= ROUNDING_RTOL * scale or spread == 0.0


def _magnitude(*arrays: NDArray[np.float64]) -> float:
    return max((float(np.max(np.abs(a))) for a in arrays if a.size), default=0.0)


def _as_1d(values: ArrayLike, *, name: str = "values") -> NDArray[np.float64]:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be numbers, got {type(values).__name__}: {err}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _no_nan(arr: NDArray[np.float64], *, name: str) -> None:
    if np.isnan(arr).any():
        raise ValueError(
            f"{name} contains {int(np.isnan(arr).sum())} NaN value(s); drop them explicitly (they come e.g. "
            "from the 'nan' empty-mask policy) before testing"
        )
    if np.isinf(arr).any():
        raise ValueError(f"{name} contains infinite values")


def ttest_1samp_over_seeds(values: ArrayLike, mu0: float) -> dict[str, float | int | str]:
    """The paper's significance test (method-spec §F5): one-sample t-test of seed values against ``mu0``.

    ``mu0`` is the single ✗ (baseline) number; ``values`` are the ✓ results of independent seeds.

    Args:
        values: (n,) float, one value per seed, no NaN.
        mu0: the reference value.

    Returns:
        ``{"t", "df", "p_two_sided", "p_greater", "mean", "sd", "n", "mu0", "note"}``; ``p_greater`` tests
        mean > ``mu0``. With one seed, or a variance that is zero up to floating-point rounding, ``t`` and
        both p-values are NaN and ``note`` says why (``note`` is ``""`` otherwise).

    Raises:
        ValueError: no values, NaN or infinite values, non-finite ``mu0``.

    Example:
        >>> r = ttest_1samp_over_seeds([1.0, 2.0, 3.0], 0.0)
        >>> round(r["t"], 6), r["df"]
        (3.464102, 2)
    """
    arr = _as_1d(values)
    _no_nan(arr, name="values")
    if not math.isfinite(float(mu0)):
        raise ValueError(f"mu0 must be finite, got {mu0}")
    n = int(arr.size)
    if n == 0:
        raise ValueError("a one-sample t-test needs values, got none")
    mean = float(arr.mean())
    sd = float(arr.std(ddof=1)) if n >= 2 else math.nan
    out: dict[str, float | int | str] = {
        "mean": mean,
        "sd": sd,
        "n": n,
        "df": n - 1,
        "mu0": float(mu0),
        "note": "",
    }
    nan3 = {"t": math.nan, "p_two_sided": math.nan, "p_greater": math.nan}
    if n < 2:
        out.update(nan3, note=f"{n} seed: a t-test needs at least 2")
        return out
    if _rounding_only(sd, _magnitude(arr), float(mu0)):
        why = "zero variance" if np.ptp(arr) == 0 else "variance is floating-point rounding only"
        out.update(nan3, note=f"{why}: t undefined")
        return out
    two = sps.ttest_1samp(arr, float(mu0), alternative="two-sided")
    greater = sps.ttest_1samp(arr, float(mu0), alternative="greater")
    out.update(t=float(two.statistic), p_two_sided=float(two.pvalue), p_greater=float(greater.pvalue))
    return out


def _as_series(x: Paired, *, name: str, id_col: str, value: str) -> pd.Series:
    if isinstance(x, pd.DataFrame):
        missing = [c for c in (id_col, value) if c not in x.columns]
        if missing:
            raise KeyError(f"{name} has no column(s) {missing}; columns: {list(x.columns)}")
        series = pd.Series(x[value].to_numpy(dtype=np.float64), index=x[id_col].astype(str).to_numpy())
    elif isinstance(x, pd.Series):
        series = pd.Series(x.to_numpy(dtype=np.float64), index=x.index.astype(str))
    elif isinstance(x, Mapping):
        items = list(x.items())
        series = pd.Series([float(v) for _, v in items], index=[str(k) for k, _ in items], dtype=np.float64)
    else:
        raise TypeError(
            f"{name} must be a pandas Series indexed by id, a mapping id -> value or a DataFrame with "
            f"'{id_col}' and '{value}' columns; got {type(x).__name__}"
        )
    dup = series.index[series.index.duplicated()].unique().tolist()
    if dup:
        raise ValueError(f"{name} has duplicate ids {dup[:5]}; values are paired by id")
    return series


def align_pairs(
    a: Paired,
    b: Paired,
    *,
    id_col: str = "id",
    value: str = "dice",
    on_missing: Literal["raise", "drop"] = "raise",
) -> pd.DataFrame:
    """Pair ``a`` and ``b`` by id.

    Args:
        a: baseline values: Series indexed by id, mapping id -> value, or DataFrame with ``id_col`` and
            ``value`` columns.
        b: compared values, same forms.
        id_col: id column for DataFrame inputs.
        value: value column for DataFrame inputs.
        on_missing: ``"raise"`` when an id is in only one of ``a``/``b``; ``"drop"`` keeps the shared ids.

    Returns:
        DataFrame indexed by id (sorted) with float columns ``a``, ``b``, ``diff`` (= b - a).

    Raises:
        KeyError: a DataFrame lacks ``id_col``/``value``.
        ValueError: duplicate ids; ids unmatched with ``on_missing="raise"``; no shared id.
    """
    check_option("on_missing", on_missing, ("raise", "drop"))
    sa = _as_series(a, name="a", id_col=id_col, value=value)
    sb = _as_series(b, name="b", id_col=id_col, value=value)
    only_a = sorted(set(sa.index) - set(sb.index))
    only_b = sorted(set(sb.index) - set(sa.index))
    if (only_a or only_b) and on_missing == "raise":
        raise ValueError(
            f"ids do not match: {len(only_a)} only in a (e.g. {only_a[:3]}), {len(only_b)} only in b "
            f"(e.g. {only_b[:3]}); pass on_missing='drop' to keep the {len(sa) - len(only_a)} shared ids"
        )
    shared = sorted(set(sa.index) & set(sb.index))
    if not shared:
        raise ValueError("a and b share no id")
    frame = pd.DataFrame({"a": sa.loc[shared].to_numpy(), "b": sb.loc[shared].to_numpy()}, index=shared)
    frame["diff"] = frame["b"] - frame["a"]
    return frame


def paired_test(
    a: Paired,
    b: Paired,
    *,
    method: PairedMethod = "wilcoxon",
    id_col: str = "id",
    value: str = "dice",
    on_missing: Literal["raise", "drop"] = "raise",
) -> dict[str, float | int | str]:
    """Paired test of ``b`` against ``a`` on values paired by id (Wilcoxon signed-rank or paired t-test).

    Args:
        a: baseline values (see :func:`align_pairs` for the accepted forms).
        b: compared values.
        method: ``"wilcoxon"`` (scipy ``wilcoxon``, zero differences dropped, exact p for small n) or
            ``"ttest"`` (scipy ``ttest_rel``).
        id_col: id column for DataFrame inputs.
        value: value column for DataFrame inputs.
        on_missing: ``"raise"`` or ``"drop"`` unmatched ids.

    Returns:
        ``{"method", "n", "statistic", "p_two_sided", "p_greater", "mean_diff", "median_diff", "note"}``;
        ``p_greater`` tests b > a. When every difference is 0 (exactly or up to floating-point rounding),
        both p-values are 1.0 (no evidence of a difference) and ``note`` says so; differences that are
        constant up to rounding give NaN p for the t-test; fewer than 2 pairs give NaN. The p-values are
        otherwise scipy's (``wilcoxon(b, a)``, ``ttest_rel(b, a)``).

    Raises:
        ValueError: NaN values, unmatched or duplicate ids, unknown ``method``.
    """
    check_option("method", method, PAIRED_METHODS)
    pairs = align_pairs(a, b, id_col=id_col, value=value, on_missing=on_missing)
    _no_nan(pairs[["a", "b"]].to_numpy(dtype=np.float64).ravel(), name="paired values")
    return _paired_arrays(
        pairs["a"].to_numpy(dtype=np.float64), pairs["b"].to_numpy(dtype=np.float64), method=method
    )


def _paired_arrays(
    a: NDArray[np.float64], b: NDArray[np.float64], *, method: PairedMethod
) -> dict[str, float | int | str]:
    diff = b - a
    n = int(diff.size)
    out: dict[str, float | int | str] = {
        "method": method,
        "n": n,
        "mean_diff": float(diff.mean()) if n else math.nan,
        "median_diff": float(np.median(diff)) if n else math.nan,
        "note": "",
    }
    nan3 = {"statistic": math.nan, "p_two_sided": math.nan, "p_greater": math.nan}
    if n < 2:
        out.update(nan3, note=f"{n} pair(s): a paired test needs at least 2")
        return out
    scale = _magnitude(a, b)
    if np.all(diff == 0) or bool(np.all(np.abs(diff) <= ROUNDING_RTOL * scale)):
        exact = bool(np.all(diff == 0))
        why = "all differences are 0" if exact else "all differences are 0 up to floating-point rounding"
        out.update(statistic=0.0, p_two_sided=1.0, p_greater=1.0, note=f"{why}: no evidence of a difference")
        return out
    if method == "wilcoxon":
        two = sps.wilcoxon(b, a, alternative="two-sided")
        greater = sps.wilcoxon(b, a, alternative="greater")
    else:
        if _rounding_only(float(diff.std(ddof=1)), scale):
            why = "zero" if np.ptp(diff) == 0 else "floating-point rounding only"
            out.update(nan3, note=f"the differences are constant (their variance is {why}): t undefined")
            return out
        two = sps.ttest_rel(b, a, alternative="two-sided")
        greater = sps.ttest_rel(b, a, alternative="greater")
    out.update(statistic=float(two.statistic), p_two_sided=float(two.pvalue), p_greater=float(greater.pvalue))
    return out


def effect_size_dz(diff: ArrayLike) -> float:
    """Cohen's d_z of paired differences: mean / sd (ddof=1).

    Args:
        diff: (n,) float paired differences ``b - a``.

    Returns:
        d_z; NaN for n < 2 or a spread that is zero up to floating-point rounding.
    """
    arr = _as_1d(diff, name="diff")
    _no_nan(arr, name="diff")
    if arr.size < 2:
        return math.nan
    sd = float(arr.std(ddof=1))
    if _rounding_only(sd, _magnitude(arr)):
        return math.nan
    return float(arr.mean()) / sd


def _check_ci(ci: float) -> None:
    if not 0.0 < float(ci) < 1.0:
        raise ValueError(f"ci must be in (0, 1), e.g. 0.95, got {ci}")


def _bootstrap_means(arr: NDArray[np.float64], *, n_boot: int, seed: int) -> NDArray[np.float64]:
    rng = np.random.default_rng(seed)
    n = arr.size
    means = np.empty(n_boot, dtype=np.float64)
    rows = max(1, _MAX_BOOT_CHUNK // max(n, 1))
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = arr[idx].mean(axis=1)
    return means


def bootstrap_ci(
    values: ArrayLike, *, n_boot: int = 10_000, ci: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean, deterministic given ``seed``.

    Args:
        values: (n,) float, no NaN.
        n_boot: number of bootstrap resamples (>= 1).
        ci: coverage in (0, 1).
        seed: seed of the numpy generator; the same seed gives the same interval.

    Returns:
        ``(lo, hi)``; ``(nan, nan)`` when n < 2 (an interval needs at least 2 values).

    Raises:
        ValueError: empty or NaN ``values``, ``n_boot`` < 1, ``ci`` outside (0, 1).
    """
    arr = _as_1d(values)
    _check_ci(ci)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if arr.size == 0:
        raise ValueError("values is empty")
    _no_nan(arr, name="values")
    if arr.size < 2:
        return (math.nan, math.nan)
    means = _bootstrap_means(arr, n_boot=n_boot, seed=seed)
    alpha = (1.0 - ci) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def t_ci(values: ArrayLike, *, ci: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean (better than the bootstrap for a handful of seeds).

    Args:
        values: (n,) float, no NaN.
        ci: coverage in (0, 1).

    Returns:
        ``(lo, hi)``; ``(nan, nan)`` when n < 2; ``(mean, mean)`` for zero variance.

    Raises:
        ValueError: empty or NaN ``values``, ``ci`` outside (0, 1).
    """
    arr = _as_1d(values)
    _check_ci(ci)
    if arr.size == 0:
        raise ValueError("values is empty")
    _no_nan(arr, name="values")
    if arr.size < 2:
        return (math.nan, math.nan)
    mean = float(arr.mean())
    half = float(sps.t.ppf(0.5 + ci / 2.0, arr.size - 1)) * float(arr.std(ddof=1)) / math.sqrt(arr.size)
    return (mean - half, mean + half)


def paired_bootstrap_diff(
    a: Paired,
    b: Paired,
    *,
    n_boot: int = 10_000,
    ci: float = 0.95,
    seed: int = 0,
    id_col: str = "id",
    value: str = "dice",
    on_missing: Literal["raise", "drop"] = "raise",
) -> dict[str, float | int]:
    """Mean paired difference ``b - a`` (paired by id) with a percentile bootstrap CI over ids.

    Args:
        a: baseline values (see :func:`align_pairs`).
        b: compared values.
        n_boot: bootstrap resamples.
        ci: coverage in (0, 1).
        seed: generator seed.
        id_col: id column for DataFrame inputs.
        value: value column for DataFrame inputs.
        on_missing: ``"raise"`` or ``"drop"`` unmatched ids.

    Returns:
        ``{"mean_diff", "ci_lo", "ci_hi", "n"}``.
    """
    pairs = align_pairs(a, b, id_col=id_col, value=value, on_missing=on_missing)
    diff = pairs["diff"].to_numpy(dtype=np.float64)
    lo, hi = bootstrap_ci(diff, n_boot=n_boot, ci=ci, seed=seed)
    return {"mean_diff": float(diff.mean()), "ci_lo": lo, "ci_hi": hi, "n": int(diff.size)}


def summarize(
    df: pd.DataFrame,
    value: str = "dice",
    by: Sequence[str] = (),
    *,
    ci: float = 0.95,
    ci_method: CIMethod = "bootstrap",
    n_boot: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean, sd, n and a confidence interval of ``value`` per group.

    NaN values are dropped per group and counted in ``n_nan``; ``n`` counts the values used.

    Args:
        df: long table, one row per image (or per run).
        value: column to summarise.
        by: grouping columns (empty: one row for the whole table).
        ci: coverage of the interval.
        ci_method: ``"bootstrap"`` (percentile, seeded, default) or ``"t"`` (Student t, better for a few
            seeds).
        n_boot: bootstrap resamples.
        seed: bootstrap seed.

    Returns:
        DataFrame with the ``by`` columns, then ``mean``, ``sd`` (ddof=1; NaN for n < 2), ``n``, ``n_nan``,
        ``ci_lo``, ``ci_hi`` (NaN for n < 2), in group order of first appearance.

    Raises:
        KeyError: ``value`` or a ``by`` column is missing.
        ValueError: unknown ``ci_method``, bad ``ci``.
    """
    check_option("ci_method", ci_method, CI_METHODS)
    _check_ci(ci)
    if isinstance(by, str):
        by = [by]
    missing = [c for c in [value, *by] if c not in df.columns]
    if missing:
        raise KeyError(f"summarize: no column(s) {missing}; columns: {list(df.columns)}")
    groups: list[tuple[tuple[Any, ...], pd.DataFrame]]
    if by:
        groups = [
            (key if isinstance(key, tuple) else (key,), part)
            for key, part in df.groupby(list(by), sort=False, dropna=False)
        ]
    else:
        groups = [((), df)]
    rows: list[dict[str, Any]] = []
    for key, part in groups:
        vals = pd.to_numeric(part[value], errors="raise").to_numpy(dtype=np.float64)
        kept = vals[~np.isnan(vals)]
        n = int(kept.size)
        if n == 0:
            mean = sd = lo = hi = math.nan
        else:
            mean = float(kept.mean())
            sd = float(kept.std(ddof=1)) if n >= 2 else math.nan
            if ci_method == "bootstrap":
                lo, hi = bootstrap_ci(kept, n_boot=n_boot, ci=ci, seed=seed)
            else:
                lo, hi = t_ci(kept, ci=ci)
        row: dict[str, Any] = dict(zip(by, key))
        row.update(mean=mean, sd=sd, n=n, n_nan=int(vals.size - n), ci_lo=lo, ci_hi=hi)
        rows.append(row)
    return pd.DataFrame(rows, columns=[*by, "mean", "sd", "n", "n_nan", "ci_lo", "ci_hi"])


def compare_seeds(
    baseline: Mapping[Any, float], compared: Mapping[Any, float], *, ci: float = 0.95
) -> dict[str, Any]:
    """Compare two arms run with the same seeds: every statistic of ``fdseg compare`` over seeds.

    Values are paired by key (a seed, or a ``(seed, fold)`` tuple); keys in only one arm are **dropped**, and
    listed, never compared with a mean. Differences are ``compared - baseline``; one-sided p-values test
    ``compared > baseline``.

    Args:
        baseline: key -> value of the baseline arm (one value per seed, e.g. the mean test Dice of a run).
        compared: key -> value of the compared arm.
        ci: coverage of the t interval of the mean difference.

    Returns:
        ``{"n", "shared", "dropped_baseline", "dropped_compared", "baseline_mean", "baseline_sd",
        "compared_mean", "compared_sd", "mean_diff", "sd_diff", "diff_ci_lo", "diff_ci_hi", "d_z",
        "t", "p_t", "p_t_greater", "w", "p_w", "p_w_greater", "t1", "p_1samp", "p_1samp_greater",
        "notes"}``: ``p_t*`` paired t-test (``ttest_rel``), ``p_w*`` Wilcoxon signed-rank (``wilcoxon``),
        ``p_1samp*`` the paper's one-sample t-test of the compared seeds against the baseline's mean over
        the shared seeds (method-spec §F5), ``d_z`` Cohen's effect size of the paired differences. Means and
        sds are over the shared keys only. ``notes`` (list of str) says why a p-value is NaN or 1, and which
        keys were dropped.

    Raises:
        ValueError: NaN or infinite values; no shared key.
    """
    shared = sorted(set(baseline) & set(compared), key=str)
    dropped_a = sorted(set(baseline) - set(compared), key=str)
    dropped_b = sorted(set(compared) - set(baseline), key=str)
    if not shared:
        raise ValueError(
            f"the two arms share no seed: baseline has {sorted(baseline, key=str)}, compared has "
            f"{sorted(compared, key=str)}"
        )
    a = np.array([float(baseline[k]) for k in shared], dtype=np.float64)
    b = np.array([float(compared[k]) for k in shared], dtype=np.float64)
    _no_nan(a, name="baseline values")
    _no_nan(b, name="compared values")
    diff = b - a
    n = int(diff.size)
    notes: list[str] = []
    if dropped_a or dropped_b:
        notes.append(
            f"paired on the {n} shared seed(s) only; dropped: baseline {dropped_a or 'none'}, "
            f"compared {dropped_b or 'none'}"
        )
    t_res = _paired_arrays(a, b, method="ttest")
    w_res = _paired_arrays(a, b, method="wilcoxon")
    one = ttest_1samp_over_seeds(b, float(a.mean()))
    for label, res in (("paired t-test", t_res), ("Wilcoxon", w_res), ("one-sample t-test", one)):
        if res["note"]:
            notes.append(f"{label}: {res['note']}")
    lo, hi = (
        t_ci(diff, ci=ci)
        if n >= 2 and not _rounding_only(float(diff.std(ddof=1)), _magnitude(a, b))
        else ((math.nan, math.nan))
    )
    return {
        "n": n,
        "shared": shared,
        "dropped_baseline": dropped_a,
        "dropped_compared": dropped_b,
        "baseline_mean": float(a.mean()),
        "baseline_sd": float(a.std(ddof=1)) if n >= 2 else math.nan,
        "compared_mean": float(b.mean()),
        "compared_sd": float(b.std(ddof=1)) if n >= 2 else math.nan,
        "mean_diff": float(diff.mean()),
        "sd_diff": float(diff.std(ddof=1)) if n >= 2 else math.nan,
        "diff_ci_lo": lo,
        "diff_ci_hi": hi,
        "d_z": effect_size_dz(diff),
        "t": t_res["statistic"],
        "p_t": t_res["p_two_sided"],
        "p_t_greater": t_res["p_greater"],
        "w": w_res["statistic"],
        "p_w": w_res["p_two_sided"],
        "p_w_greater": w_res["p_greater"],
        "t1": one["t"],
        "p_1samp": one["p_two_sided"],
        "p_1samp_greater": one["p_greater"],
        "notes": notes,
    }


def compare_to_baseline(
    base: pd.DataFrame, other: pd.DataFrame, *, value: str, seed_col: str | None
) -> dict[str, Any]:
    """Difference ``other - base`` of ``value`` over runs, with the strongest test the data allow.

    Order of preference: paired t-test on the seeds present in both (n >= 2 shared seeds; seeds in only one
    of them are dropped and named in ``note``); the paper's one-sample t-test of the other method's seeds
    against a single baseline value (no seed column, or no shared seed); Welch's unpaired t-test when no
    seed is shared; otherwise no test (``"n too small"``). ``delta`` is over the paired seeds when there
    are any, so a seed of one arm is never compared with the mean of another arm's seeds.

    Args:
        base: rows of the baseline method (one per seed).
        other: rows of the compared method.
        value: metric column.
        seed_col: seed column, or ``None`` when the results carry none.

    Returns:
        ``{"test", "n", "delta", "delta_sd", "p_two_sided", "p_greater", "note"}`` (p NaN without a test);
        ``p_greater`` tests other > base.
    """
    nan = math.nan
    b = base[[c for c in (seed_col, value) if c]].copy()
    o = other[[c for c in (seed_col, value) if c]].copy()
    b = b[np.isfinite(pd.to_numeric(b[value]).to_numpy(dtype=np.float64))]
    o = o[np.isfinite(pd.to_numeric(o[value]).to_numpy(dtype=np.float64))]
    out: dict[str, Any] = {"test": "none", "n": 0, "delta": nan, "delta_sd": nan}
    out.update(p_two_sided=nan, p_greater=nan, note="")
    if b.empty or o.empty:
        out["note"] = "no finite value for one of the methods"
        return out
    bv = b[value].to_numpy(dtype=np.float64)
    ov = o[value].to_numpy(dtype=np.float64)
    out["delta"] = float(ov.mean() - bv.mean())
    paired_ok = (
        seed_col is not None and not b[seed_col].duplicated().any() and not o[seed_col].duplicated().any()
    )
    if paired_ok and seed_col is not None:
        sb = dict(zip(b[seed_col].astype(str), bv))
        so = dict(zip(o[seed_col].astype(str), ov))
        shared = sorted(set(sb) & set(so))
        if shared:
            res = compare_seeds(sb, so)
            out.update(
                test="paired t-test over seeds",
                n=len(shared),
                delta=res["mean_diff"],
                delta_sd=res["sd_diff"],
                p_two_sided=float(res["p_t"]),
                p_greater=float(res["p_t_greater"]),
                note="; ".join(n for n in res["notes"] if not n.startswith(("Wilcoxon", "one-sample"))),
            )
            if len(shared) < 2:
                dropped = [n for n in res["notes"] if n.startswith("paired on")]
                out["note"] = "; ".join([*dropped, "n too small for a test"])
            return out
    if bv.size == 1 and ov.size >= 2:
        res1 = ttest_1samp_over_seeds(ov, float(bv[0]))
        out.update(
            test="one-sample t-test of the seeds against the single baseline value",
            n=int(ov.size),
            p_two_sided=float(res1["p_two_sided"]),
            p_greater=float(res1["p_greater"]),
            note=str(res1["note"]),
        )
        return out
    if (
        bv.size >= 2
        and ov.size >= 2
        and not _rounding_only(max(float(bv.std(ddof=1)), float(ov.std(ddof=1))), _magnitude(bv, ov))
    ):
        two = sps.ttest_ind(ov, bv, equal_var=False)
        greater = sps.ttest_ind(ov, bv, equal_var=False, alternative="greater")
        out.update(
            test="Welch t-test (unpaired: no shared seeds)",
            n=int(min(bv.size, ov.size)),
            note=f"{ov.size} runs vs {bv.size} baseline runs",
            p_two_sided=float(two.pvalue),
            p_greater=float(greater.pvalue),
        )
        return out
    out["n"] = int(min(bv.size, ov.size))
    out["note"] = "n too small for a test"
    return out


def compare_arms(
    per_image: pd.DataFrame,
    *,
    metric: str = "dice",
    baseline: str,
    arm_col: str = "arm",
    n_boot: int = 10_000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Compare every arm with ``baseline``: runs paired by seed (and fold), images paired by id.

    ``per_image`` is the long table of every run's per-image results: one row per (arm, seed, fold, image
    id). Per seed, an arm's value is the mean ``metric`` over the images of its folds that the baseline also
    has for that seed (folds pooled), so both arms of a pair are scored on the same images. Runs (seed,
    fold) present in only one arm are dropped and named in ``notes``; they are never compared with a mean.
    The per-image difference (compared − baseline) is averaged over the paired seeds per image id and
    bootstrapped over images (percentile CI). Images with a NaN ``metric`` in either arm are left out.

    Args:
        per_image: columns ``arm_col``, ``seed``, ``fold`` (may be NaN/None), ``id``, ``metric``.
        metric: the per-image score.
        baseline: the baseline arm.
        arm_col: arm column.
        n_boot: bootstrap resamples.
        ci: coverage of the intervals.
        seed: bootstrap seed.

    Returns:
        One row per arm (baseline first): ``arm``, ``seeds`` (all its finished seeds), ``mean``/``sd`` over
        those seeds (sd NaN for one seed), ``n_images`` (per seed, pooled over folds), then, for the other
        arms, the fields of :func:`compare_seeds` over the paired seeds (``n``, ``mean_diff``, ``p_t``,
        ``p_t_greater``, ``p_w``, ``p_w_greater``, ``p_1samp``, ``p_1samp_greater``, ``d_z``, …) and
        ``img_diff``, ``img_ci_lo``, ``img_ci_hi``, ``n_img_pairs`` from the per-image bootstrap, and
        ``notes`` (one string).

    Raises:
        KeyError: a missing column, or an unknown ``baseline`` (with the arms present).
        ValueError: an arm with duplicate image ids within one run.
    """
    need = [arm_col, "seed", "fold", "id", metric]
    missing = [c for c in need if c not in per_image.columns]
    if missing:
        raise KeyError(f"per-image table has no column(s) {missing}; columns: {list(per_image.columns)}")
    frame = per_image[need].copy()
    frame[arm_col] = frame[arm_col].astype(str)
    frame["id"] = frame["id"].astype(str)
    frame["fold"] = frame["fold"].fillna(-1).astype(int)
    frame["seed"] = frame["seed"].astype(int)
    frame[metric] = pd.to_numeric(frame[metric], errors="coerce").astype(np.float64)
    arms = list(dict.fromkeys(frame[arm_col]))
    if baseline not in arms:
        from fdseg._checks import did_you_mean

        raise KeyError(
            f"baseline arm {baseline!r} is not among the arms{did_you_mean(baseline, arms)} arms: {arms}"
        )
    dup = frame.duplicated([arm_col, "seed", "fold", "id"])
    if dup.any():
        first = frame[dup].iloc[0]
        raise ValueError(
            f"arm {first[arm_col]!r}, seed {first['seed']}: image id {first['id']!r} appears twice"
        )

    def runs_of(arm: str) -> dict[tuple[int, int], pd.Series]:
        part = frame[frame[arm_col] == arm]
        out: dict[tuple[int, int], pd.Series] = {}
        for key, g in part.groupby(["seed", "fold"], sort=True):
            s, f = key
            out[(int(s), int(f))] = g.set_index("id")[metric]  # type: ignore[call-overload]
        return out

    base_runs = runs_of(baseline)
    rows: list[dict[str, Any]] = []
    for arm in [baseline, *[a for a in arms if a != baseline]]:
        runs = runs_of(arm)
        per_seed: dict[int, list[pd.Series]] = {}
        for (s, _f), values in runs.items():
            per_seed.setdefault(s, []).append(values)
        seed_means = {s: float(np.nanmean(pd.concat(v).to_numpy())) for s, v in per_seed.items()}
        vals = np.array(list(seed_means.values()), dtype=np.float64)
        row: dict[str, Any] = {
            "arm": arm,
            "seeds": len(seed_means),
            "mean": float(vals.mean()) if vals.size else math.nan,
            "sd": float(vals.std(ddof=1)) if vals.size > 1 else math.nan,
            "n_images": int(max((sum(len(x) for x in v) for v in per_seed.values()), default=0)),
        }
        if arm == baseline:
            row["notes"] = ""
            rows.append(row)
            continue
        shared = sorted(set(runs) & set(base_runs))
        notes: list[str] = []
        only_b = sorted(set(base_runs) - set(runs))
        only_c = sorted(set(runs) - set(base_runs))
        if only_b or only_c:
            notes.append(
                "unpaired runs dropped (seed, fold): "
                f"only in {baseline}: {_keys_text(only_b)}; only in {arm}: {_keys_text(only_c)}"
            )
        a_seed: dict[int, list[float]] = {}
        b_seed: dict[int, list[float]] = {}
        img_diffs: dict[str, list[float]] = {}
        for key in shared:
            pair = pd.concat({"a": base_runs[key], "b": runs[key]}, axis=1, join="inner").dropna()
            a_seed.setdefault(key[0], []).extend(pair["a"].tolist())
            b_seed.setdefault(key[0], []).extend(pair["b"].tolist())
            for image_id, d in (pair["b"] - pair["a"]).items():
                img_diffs.setdefault(str(image_id), []).append(float(d))
        if not shared or not a_seed:
            row["notes"] = "; ".join([*notes, f"no run of {arm} shares a seed (and fold) with {baseline}"])
            rows.append(row)
            continue
        res = compare_seeds(
            {s: float(np.mean(v)) for s, v in a_seed.items()},
            {s: float(np.mean(v)) for s, v in b_seed.items()},
            ci=ci,
        )
        notes.extend(res.pop("notes"))
        for k in ("shared", "dropped_baseline", "dropped_compared"):
            res.pop(k)
        row.update(res)
        diffs = np.array([np.mean(v) for v in img_diffs.values()], dtype=np.float64)
        lo, hi = bootstrap_ci(diffs, n_boot=n_boot, ci=ci, seed=seed) if diffs.size else (math.nan, math.nan)
        row.update(img_diff=float(diffs.mean()), img_ci_lo=lo, img_ci_hi=hi, n_img_pairs=int(diffs.size))
        if diffs.size < 10:
            notes.append(
                f"only {diffs.size} image(s) paired: a per-image interval on fewer than 10 images is fragile"
            )
        row["notes"] = "; ".join(notes)
        rows.append(row)
    return pd.DataFrame(rows)


def _keys_text(keys: Sequence[tuple[int, int]]) -> str:
    if not keys:
        return "none"
    return ", ".join(f"seed {s}" + (f" fold {f}" if f >= 0 else "") for s, f in keys)
