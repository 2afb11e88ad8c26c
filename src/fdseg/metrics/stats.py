"""Statistics over seeds and images: the paper's one-sample t-test, paired tests, bootstrap CIs, summaries.

Conventions used throughout:

* A *difference* is always ``b - a`` (compared minus baseline), so a positive mean difference means ``b``
  scored higher; one-sided p-values test ``b > a`` (``alternative="greater"``).
* Values are paired **by id** (image id, or seed), never by position. Duplicate ids raise.
* NaN values raise in the tests and in the bootstrap; :func:`summarize` drops them per group and reports
  how many it dropped (``n_nan``), so a NaN from an empty-mask policy is never averaged silently.
* Degenerate inputs give NaN with a reason instead of a warning from scipy: fewer than 2 values, or zero
  variance, where a t statistic does not exist.
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
    "CIMethod",
    "PairedMethod",
    "align_pairs",
    "bootstrap_ci",
    "paired_bootstrap_diff",
    "paired_test",
    "summarize",
    "t_ci",
    "ttest_1samp_over_seeds",
]

_MAX_BOOT_CHUNK = 4_000_000  # resampled values held in memory at once


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
        values: (n,) float, one value per seed, n >= 2, no NaN.
        mu0: the reference value.

    Returns:
        ``{"t", "df", "p_two_sided", "p_greater", "mean", "sd", "n", "mu0", "note"}``; ``p_greater`` tests
        mean > ``mu0``. With zero variance ``t`` and both p-values are NaN and ``note`` says why
        (``note`` is ``""`` otherwise).

    Raises:
        ValueError: fewer than 2 values, NaN or infinite values, non-finite ``mu0``.

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
    if n < 2:
        raise ValueError(f"a one-sample t-test needs at least 2 seeds, got {n}")
    mean = float(arr.mean())
    sd = float(arr.std(ddof=1))
    out: dict[str, float | int | str] = {
        "mean": mean,
        "sd": sd,
        "n": n,
        "df": n - 1,
        "mu0": float(mu0),
        "note": "",
    }
    if np.ptp(arr) == 0:
        out.update(t=math.nan, p_two_sided=math.nan, p_greater=math.nan, note="zero variance: t undefined")
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
        ``p_greater`` tests b > a. When every difference is exactly 0, both p-values are 1.0 (no evidence
        of a difference) and ``note`` says so; zero-variance non-zero differences give NaN p for the t-test.

    Raises:
        ValueError: fewer than 2 pairs, NaN values, unmatched or duplicate ids, unknown ``method``.
    """
    check_option("method", method, PAIRED_METHODS)
    pairs = align_pairs(a, b, id_col=id_col, value=value, on_missing=on_missing)
    diff = pairs["diff"].to_numpy(dtype=np.float64)
    _no_nan(pairs[["a", "b"]].to_numpy(dtype=np.float64).ravel(), name="paired values")
    n = int(diff.size)
    if n < 2:
        raise ValueError(f"a paired test needs at least 2 pairs, got {n}")
    out: dict[str, float | int | str] = {
        "method": method,
        "n": n,
        "mean_diff": float(diff.mean()),
        "median_diff": float(np.median(diff)),
        "note": "",
    }
    if np.all(diff == 0):
        out.update(statistic=0.0, p_two_sided=1.0, p_greater=1.0, note="all differences are 0")
        return out
    if method == "wilcoxon":
        two = sps.wilcoxon(diff, alternative="two-sided")
        greater = sps.wilcoxon(diff, alternative="greater")
    else:
        if np.ptp(diff) == 0:
            out.update(statistic=math.nan, p_two_sided=math.nan, p_greater=math.nan)
            out["note"] = "zero variance of the differences: t undefined"
            return out
        two = sps.ttest_rel(pairs["b"].to_numpy(), pairs["a"].to_numpy(), alternative="two-sided")
        greater = sps.ttest_rel(pairs["b"].to_numpy(), pairs["a"].to_numpy(), alternative="greater")
    out.update(statistic=float(two.statistic), p_two_sided=float(two.pvalue), p_greater=float(greater.pvalue))
    return out


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
