"""HTML report of an experiment: a results table (one row per method × condition × seed) and its runs.

Every statement in the report is computed from the numbers it shows: differences come with the number of
seeds, the test used and its p-value, or with "n too small" when no test is possible. Nothing is claimed in
advance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fdseg.analysis import fd_layers
from fdseg.metrics import compare_to_baseline, summarize, worst_best_off
from fdseg.report._html import Page, fmt
from fdseg.report._load import read_csv
from fdseg.report.run import add_history_section, add_per_sample_section
from fdseg.viz import plot_method_comparison, plot_metric_vs_value

__all__ = ["BASELINE_NAMES", "compare_to_baseline", "write_experiment_report"]

KNOWN_METRICS: tuple[str, ...] = ("dice", "iou", "sensitivity", "specificity", "precision", "soft_batch_dice")
BASELINE_NAMES: tuple[str, ...] = ("baseline", "none", "lseg", "seg", "plain", "without_fd", "no_fd")


def _pick_baseline(methods: Sequence[str], baseline: str | None) -> tuple[str, str]:
    if baseline is not None:
        if baseline not in methods:
            raise ValueError(f"baseline method {baseline!r} is not in results; methods: {list(methods)}")
        return baseline, "chosen by the caller"
    lowered = {m.lower(): m for m in methods}
    for name in BASELINE_NAMES:
        if name in lowered:
            return lowered[name], f"the method named {lowered[name]!r}"
    return methods[0], "the first method listed in the results (no method is named like a baseline)"


def _sentence(
    cmp: dict[str, Any], *, method: str, baseline: str, metric: str, condition: str, alpha: float
) -> str:
    where = f"[{condition}] " if condition else ""
    head = f"{where}{method} − {baseline}: mean {metric} difference {fmt(cmp['delta'])}"
    if math.isnan(cmp["p_two_sided"]):
        reason = cmp["note"] or "n too small for a test"
        return f"{head} (n = {cmp['n']}); {reason}, so no conclusion is drawn."
    p = cmp["p_two_sided"]
    stats = (
        f"n = {cmp['n']}, {cmp['test']}, two-sided p = {p:.3g}, "
        f"one-sided p (greater) = {cmp['p_greater']:.3g}"
    )
    if p < alpha and cmp["delta"] > 0:
        verdict = f"{method} scored higher than {baseline} at α = {alpha}"
    elif p < alpha and cmp["delta"] < 0:
        verdict = f"{method} scored lower than {baseline} at α = {alpha}"
    else:
        verdict = f"no significant difference at α = {alpha}"
    return f"{head} ({stats}): {verdict}."


def _results_table(results: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    keys = ["condition", "method"]
    table = results[keys].drop_duplicates().reset_index(drop=True)
    for metric in metrics:
        s = summarize(results, value=metric, by=keys, ci_method="t")
        cells = {
            (str(r["condition"]), str(r["method"])): (
                f"{fmt(r['mean'])} ± {fmt(r['sd'])} (n = {int(r['n'])})"
                if int(r["n"]) > 1
                else f"{fmt(r['mean'])} (1 seed)"
            )
            for _, r in s.iterrows()
        }
        table[metric] = [cells[(str(c), str(m))] for c, m in zip(table["condition"], table["method"])]
    return table


def _worst_best_section(
    page: Page,
    results: pd.DataFrame,
    runs: Mapping[str, Path],
    *,
    baseline: str,
    k: int,
    seed_col: str | None,
) -> None:
    page.heading("Worst-off / best-off images")
    if "run" not in results.columns or seed_col is None:
        page.missing(
            "results has no 'run' and 'seed' columns linking each row to a run directory, so the per-image "
            "worst-off / best-off comparison is not shown."
        )
        return
    cache: dict[str, pd.DataFrame | None] = {}
    problems: list[str] = []

    def per_sample(run: str) -> pd.DataFrame | None:
        if run not in cache:
            if run not in runs:
                problems.append(f"run {run!r} of results is not among the run directories given")
                cache[run] = None
            else:
                frame, problem = read_csv(Path(runs[run]) / "test" / "per_sample.csv")
                if problem:
                    problems.append(problem)
                cache[run] = frame
        return cache[run]

    rows = []
    for (condition, seed), part in results.groupby(["condition", seed_col], sort=False):
        base_rows = part[part["method"] == baseline]
        if len(base_rows) != 1:
            continue
        base = per_sample(str(base_rows["run"].iloc[0]))
        for _, row in part[part["method"] != baseline].iterrows():
            other = per_sample(str(row["run"]))
            if base is None or other is None:
                continue
            try:
                sel = worst_best_off(base, other, k=k)
            except (KeyError, ValueError) as err:
                problems.append(f"{row['run']}: {err}")
                continue
            rows.append(
                {
                    "condition": condition,
                    "seed": seed,
                    "method": row["method"],
                    "k used": sel["k"],
                    "k capped": sel["capped"],
                    "N images": sel["n"],
                    "worst threshold": sel["worst"]["threshold"],
                    "worst: baseline": sel["worst"]["baseline_mean"],
                    "worst: method": sel["worst"]["compared_mean"],
                    "worst Δ": sel["worst"]["delta"],
                    "best Δ": sel["best"]["delta"],
                    "all Δ": sel["all"]["delta"],
                }
            )
    if rows:
        page.paragraph(
            f"The k = {k} images with the lowest (worst-off) and highest (best-off) baseline Dice of each "
            "seed, "
            f"compared on the same ids; k is capped at ⌊N/2⌋ (see 'k capped'). Δ = method − {baseline}."
        )
        table = pd.DataFrame(rows)
        page.table(table)
        agg = []
        for (condition, method), part in table.groupby(["condition", "method"], sort=False):
            entry: dict[str, Any] = {"condition": condition, "method": method}
            for column in ("worst Δ", "best Δ", "all Δ"):
                vals = part[column].to_numpy(dtype=np.float64)
                if vals.size > 1:
                    sd = fmt(float(vals.std(ddof=1)))
                    entry[column] = f"{fmt(float(vals.mean()))} ± {sd} (n = {vals.size} seeds)"
                else:
                    entry[column] = f"{fmt(float(vals.mean()))} (1 seed)"
            agg.append(entry)
        page.table(pd.DataFrame(agg), caption="mean ± sd over seeds of the per-seed differences above")
    else:
        page.missing("no baseline/method run pair with per-image results was found for this comparison.")
    page.bullets(sorted(set(problems)))


_PAIRED_COLUMNS = {
    "arm": "arm",
    "seeds": "seeds",
    "mean": "mean",
    "sd": "sd over seeds",
    "n": "paired seeds",
    "mean_diff": "Δ (paired)",
    "d_z": "d_z",
    "p_t": "p paired t",
    "p_t_greater": "p paired t (arm > baseline)",
    "p_w": "p Wilcoxon",
    "p_1samp": "p one-sample t (§F5)",
    "p_1samp_greater": "p one-sample t (arm > baseline)",
    "img_diff": "per-image Δ",
    "img_ci_lo": "per-image Δ CI lo",
    "img_ci_hi": "per-image Δ CI hi",
    "notes": "notes",
}


def _paired_section(page: Page, comparison: Mapping[str, pd.DataFrame], *, baseline: str) -> None:
    page.heading(f"Paired comparison with '{baseline}'")
    page.paragraph(
        "Runs are paired by seed (and fold), images by id; seeds present in only one arm are dropped and "
        "named in the notes. Δ = arm − baseline; one-sided p-values test arm > baseline. The per-image "
        "interval is a 95% percentile bootstrap over images of the per-image difference averaged over seeds."
    )
    for metric, table in comparison.items():
        shown = table[[c for c in _PAIRED_COLUMNS if c in table.columns]].rename(columns=_PAIRED_COLUMNS)
        page.table(shown, caption=f"{metric}")


def _overlay_section(
    page: Page, frame: pd.DataFrame, runs: Mapping[str, Path], base_name: str, seed_col: str | None
) -> None:
    """Error overlays of the worst-off test images of the baseline's first run, beside another method's run
    of the same seed (the first one listed)."""
    if "run" not in frame.columns:
        return
    from fdseg.report.multiclass import add_worst_off_overlays

    base_rows = frame[frame["method"] == base_name]
    if base_rows.empty or str(base_rows["run"].iloc[0]) not in runs:
        return
    first = base_rows.iloc[0]
    others = frame[frame["method"] != base_name]
    if seed_col is not None:
        others = others[others[seed_col] == first[seed_col]]
    other = next((str(r) for r in others["run"] if str(r) in runs), None)
    page.heading("Worst-off images")
    add_worst_off_overlays(
        page,
        Path(runs[str(first["run"])]),
        Path(runs[other]) if other is not None else None,
        name="experiment",
    )


def write_experiment_report(
    out_dir: Path,
    results: pd.DataFrame,
    *,
    title: str,
    runs: Mapping[str, Path],
    notes: Sequence[str] = (),
    baseline: str | None = None,
    metrics: Sequence[str] | None = None,
    alpha: float = 0.05,
    worst_k: int = 10,
    max_run_figures: int = 6,
    dpi: int = 100,
    comparison: Mapping[str, pd.DataFrame] | None = None,
    numeric_key: str | None = None,
    sections: Sequence[tuple[str, str]] = (),
    figures: Sequence[tuple[Any, str, str]] = (),
) -> Path:
    """Write ``out_dir/report.html`` (self-contained) and ``out_dir/figures/*.png`` for an experiment.

    Sections: results per method and condition (mean ± sd with the number of seeds in every cell);
    differences to the baseline method with a test or "n too small", and a sentence computed from each;
    method comparison plots; worst-off / best-off per seed (when ``results`` has a ``run`` column); and, for
    the first ``max_run_figures`` runs, training curves, per-layer L_fd/λ curves and Dice vs L_fd.

    Args:
        out_dir: the experiment directory (created if needed).
        results: one row per run: ``method``, optional ``condition`` and ``seed``, metric columns (``dice``,
            ``iou``, ...), optional ``run`` (a key of ``runs``).
        title: report title.
        runs: run name -> run directory.
        notes: free-text notes shown under the title.
        baseline: the reference method (default: a method named like a baseline, else the first one; the
            report says which).
        metrics: metric columns to report (default: the known ones present).
        alpha: significance level of the sentences.
        worst_k: k of the worst-off / best-off selection.
        max_run_figures: runs with figures (the rest are listed only).
        dpi: resolution of the figures.
        comparison: metric -> the table of :func:`fdseg.metrics.compare_arms` (runs paired by seed and fold,
            images by id), shown as "Paired comparison".
        numeric_key: a numeric column of ``results`` that was swept (e.g. λ): adds a metric-vs-value plot.
        sections: ``(heading, preformatted text)`` shown right after the notes (e.g. the Table 1 layout).
        figures: ``(matplotlib Figure, file name, caption)`` shown after the sections.

    Returns:
        The path of ``report.html``.

    Raises:
        TypeError: ``results`` is not a DataFrame.
        KeyError: ``results`` has no ``method`` column or lacks a requested metric.
        ValueError: no metric column, unknown ``baseline``, ``alpha`` outside (0, 1).
    """
    if not isinstance(results, pd.DataFrame):
        raise TypeError(f"results must be a pandas DataFrame, got {type(results).__name__}")
    if "method" not in results.columns:
        raise KeyError(f"results has no 'method' column; columns: {list(results.columns)}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if metrics is None:
        metrics = [m for m in KNOWN_METRICS if m in results.columns]
        if not metrics:
            raise ValueError(f"results has none of the metric columns {list(KNOWN_METRICS)}")
    missing = [m for m in metrics if m not in results.columns]
    if missing:
        raise KeyError(f"results has no metric column(s) {missing}; columns: {list(results.columns)}")
    frame = results.copy()
    frame["method"] = frame["method"].astype(str)
    frame["condition"] = frame["condition"].astype(str) if "condition" in frame.columns else ""
    seed_col = "seed" if "seed" in frame.columns else None
    methods = list(dict.fromkeys(frame["method"]))
    conditions = list(dict.fromkeys(frame["condition"]))
    base_name, why = _pick_baseline(methods, baseline)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = Page(title, figures_dir=out_dir / "figures", dpi=dpi)
    page.paragraph(
        f"{len(frame)} runs, {len(methods)} methods, {len(conditions)} condition(s). "
        f"Baseline: {base_name} ({why})."
    )
    page.bullets([str(n) for n in notes])
    for heading, text in sections:
        page.heading(heading)
        page.preformatted(text)
    for fig, name, caption in figures:
        page.figure(fig, name, caption)

    page.heading("Results (mean ± sd over seeds; n = number of seeds)")
    page.table(_results_table(frame, metrics))

    page.heading(f"Differences to the baseline '{base_name}'")
    primary = metrics[0]
    rows, sentences = [], []
    for condition in conditions:
        part = frame[frame["condition"] == condition]
        base_part = part[part["method"] == base_name]
        for method in methods:
            if method == base_name:
                continue
            other = part[part["method"] == method]
            if other.empty:
                continue
            for metric in metrics:
                cmp = compare_to_baseline(base_part, other, value=metric, seed_col=seed_col)
                rows.append(
                    {
                        "condition": condition,
                        "method": method,
                        "metric": metric,
                        "Δ mean": cmp["delta"],
                        "Δ sd": cmp["delta_sd"],
                        "n": cmp["n"],
                        "test": cmp["test"],
                        "p (two-sided)": cmp["p_two_sided"],
                        "p (greater)": cmp["p_greater"],
                    }
                )
                if metric == primary:
                    sentences.append(
                        _sentence(
                            cmp,
                            method=method,
                            baseline=base_name,
                            metric=primary,
                            condition=condition,
                            alpha=alpha,
                        )
                    )
    if rows:
        page.bullets(sentences)
        page.table(pd.DataFrame(rows))
    else:
        page.missing(f"only the baseline '{base_name}' is present: there is nothing to compare.")

    if comparison:
        _paired_section(page, comparison, baseline=base_name)

    if numeric_key is not None and numeric_key in frame.columns:
        page.heading(f"Metric against {numeric_key}")
        for metric in metrics[:2]:
            page.figure(
                plot_metric_vs_value(
                    frame, key=numeric_key, value=metric, title=f"{metric} vs {numeric_key}"
                ),
                f"vs_{numeric_key}_{metric}",
                f"{metric} per seed (dots), mean over seeds (line) and 95% t-CI of the mean (band).",
            )

    page.heading("Method comparison")
    for metric in metrics[:2]:
        page.figure(
            plot_method_comparison(frame, value=metric, title=f"{title}: {metric}"),
            f"comparison_{metric}",
            f"{metric} per method and condition: per-seed dots, mean ± sd error bars.",
        )

    _worst_best_section(page, frame, runs, baseline=base_name, k=worst_k, seed_col=seed_col)
    _overlay_section(page, frame, runs, base_name, seed_col)

    page.heading("Runs")
    listing = []
    for name, path in runs.items():
        p = Path(path)
        listing.append(
            {
                "run": name,
                "directory": str(p),
                "DONE": (p / "DONE").is_file(),
                "history.csv": (p / "history.csv").is_file(),
                "test/per_sample.csv": (p / "test" / "per_sample.csv").is_file(),
            }
        )
    if listing:
        page.table(pd.DataFrame(listing))
    else:
        page.missing("no run directories were given.")
    shown = list(runs.items())[: max(0, max_run_figures)]
    if len(runs) > len(shown):
        page.paragraph(f"Figures are shown for the first {len(shown)} of {len(runs)} runs.")
    for i, (name, path) in enumerate(shown):
        page.heading(f"Run {name}", level=3)
        history, problem = read_csv(Path(path) / "history.csv")
        if history is None:
            page.missing(f"{problem}: no training curves for run {name}.")
        else:
            add_history_section(page, history, name=f"run{i}", label=str(name))
        per_sample, problem = read_csv(Path(path) / "test" / "per_sample.csv")
        if per_sample is None:
            page.missing(f"{problem}: no per-image results for run {name}.")
        elif fd_layers(list(per_sample.columns), "fd/"):
            add_per_sample_section(page, per_sample, name=f"run{i}", label=str(name))
        else:
            page.missing(f"run {name}: per_sample.csv has no fd/<layer> columns (no Dice vs L_fd plot).")
    return page.write(out_dir / "report.html")
