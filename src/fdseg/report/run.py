"""HTML report of one run directory: config, history, per-image test results and summary."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fdseg.analysis import dice_vs_fd, fd_layers
from fdseg.metrics import summarize
from fdseg.report._html import Page
from fdseg.report._load import flatten, read_csv, read_json, read_yaml
from fdseg.viz import plot_dice_vs_fd, plot_layer_curves, plot_training_curves

__all__ = ["METRIC_COLUMNS", "add_history_section", "add_per_sample_section", "write_run_report"]

METRIC_COLUMNS: tuple[str, ...] = ("dice", "iou", "sensitivity", "specificity", "precision")
LAYER_GROUPS: tuple[tuple[str, str], ...] = (
    ("fd/", "per-layer L_fd"),
    ("fd_exch/", "per-layer L_fd^exch"),
    ("lambda/", "per-layer λ"),
)


def add_history_section(page: Page, history: pd.DataFrame, *, name: str, label: str) -> None:
    """Training curves and the per-layer L_fd / L_fd^exch / λ curves of one run's history."""
    if "epoch" not in history.columns:
        page.missing(f"{label}: history.csv has no 'epoch' column; columns: {list(history.columns)}")
        return
    page.figure(
        plot_training_curves(history, title=label),
        f"{name}_training_curves",
        f"{label}: training loss and validation Dice per epoch; dashed lines mark a phase change.",
    )
    for prefix, what in LAYER_GROUPS:
        layers = [
            layer
            for layer in fd_layers(list(history.columns), prefix)
            if pd.to_numeric(history[prefix + layer], errors="coerce").notna().any()
        ]
        if not layers:
            page.paragraph(f"{label}: history.csv has no {prefix}<layer> values, so no {what} curves.")
            continue
        page.figure(
            plot_layer_curves(history, prefix, layers=layers, title=f"{label}: {what}"),
            f"{name}_{prefix.rstrip('/')}_curves",
            f"{label}: {what} per epoch ({len(layers)} layers).",
        )


def _metric_summary(per_sample: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for metric in METRIC_COLUMNS:
        if metric not in per_sample.columns:
            continue
        s = summarize(per_sample, value=metric, ci_method="bootstrap", n_boot=2000, seed=0).iloc[0]
        rows.append(
            {
                "metric": metric,
                "mean": s["mean"],
                "sd": s["sd"],
                "n images": int(s["n"]),
                "n NaN (left out)": int(s["n_nan"]),
                "95% CI lo (bootstrap)": s["ci_lo"],
                "95% CI hi (bootstrap)": s["ci_hi"],
            }
        )
    return pd.DataFrame(rows)


def add_per_sample_section(page: Page, per_sample: pd.DataFrame, *, name: str, label: str) -> None:
    """Per-image summary, extreme images, per-source Dice and the Dice vs L_fd plot of one run."""
    summary = _metric_summary(per_sample)
    if summary.empty:
        page.missing(f"{label}: per_sample.csv has none of the metric columns {list(METRIC_COLUMNS)}.")
        return
    page.table(summary, caption=f"{label}: per-image metrics (p > 0.5), mean ± sd over images")
    if "empty_gt" in per_sample.columns:
        n_empty = int(per_sample["empty_gt"].astype(str).str.lower().isin(["true", "1", "1.0"]).sum())
        page.paragraph(
            f"{n_empty} of {len(per_sample)} images have an empty ground truth (flagged empty_gt); their "
            "Dice/IoU follow the run's empty-mask policy and their sensitivity is undefined (NaN)."
        )
    if "dice" in per_sample.columns and "id" in per_sample.columns:
        ranked = per_sample.assign(_d=pd.to_numeric(per_sample["dice"], errors="coerce")).dropna(
            subset=["_d"]
        )
        ranked = ranked.sort_values(["_d", "id"], kind="mergesort")
        k = min(5, len(ranked) // 2)
        if k:
            show = [c for c in ("id", "source", "dice", "iou", "tp", "fp", "fn") if c in ranked.columns]
            page.table(ranked[show].head(k), caption=f"{label}: the {k} lowest-Dice images")
            page.table(ranked[show].tail(k).iloc[::-1], caption=f"{label}: the {k} highest-Dice images")
        if "source" in per_sample.columns and per_sample["source"].nunique() > 1:
            by_source = summarize(per_sample, value="dice", by=["source"], ci_method="t")
            page.table(by_source, caption=f"{label}: Dice per source (t-interval)")
    layers = fd_layers(list(per_sample.columns), "fd/")
    if not layers:
        page.missing(f"{label}: per_sample.csv has no fd/<layer> columns, so no Dice vs L_fd analysis.")
        return
    if "dice" not in per_sample.columns:
        page.missing(f"{label}: per_sample.csv has no dice column, so no Dice vs L_fd analysis.")
        return
    page.figure(
        plot_dice_vs_fd(per_sample, layers, title=label),
        f"{name}_dice_vs_fd",
        f"{label}: per-image L_fd (y) against Dice (x) per layer, least-squares line and Pearson r.",
    )
    page.table(dice_vs_fd(per_sample, layers), caption=f"{label}: Pearson r of Dice and L_fd per layer")


def write_run_report(run_dir: Path, *, dpi: int = 100) -> Path:
    """Write ``run_dir/report.html`` (self-contained, figures embedded) and ``run_dir/figures/*.png``.

    Reads ``config.yaml``, ``history.csv``, ``test/per_sample.csv`` and ``test/summary.json`` when present;
    a missing or unreadable file turns into a sentence saying what is missing, never an exception.

    Args:
        run_dir: a run directory.
        dpi: resolution of the figures.

    Returns:
        The path of the written ``report.html``.

    Raises:
        FileNotFoundError: ``run_dir`` is not a directory.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    page = Page(f"fdseg run report: {run_dir.name}", figures_dir=run_dir / "figures", dpi=dpi)
    done = (run_dir / "DONE").is_file()
    page.paragraph(f"Run directory: {run_dir.resolve()}. Finished (DONE marker): {'yes' if done else 'no'}.")

    page.heading("Test results")
    summary, problem = read_json(run_dir / "test" / "summary.json")
    if summary is None:
        page.missing(f"{problem}: no stored test summary.")
    else:
        page.mapping(flatten(summary))
    per_sample, problem = read_csv(run_dir / "test" / "per_sample.csv")
    if per_sample is None:
        page.missing(f"{problem}: no per-image results (run `fdseg evaluate` on this run).")
    else:
        if "class" in per_sample.columns:  # a multi-class run: per-class table, then per-image means
            from fdseg.report.multiclass import per_class_table, per_image_view

            page.table(per_class_table(per_sample), caption="Per-class test metrics (images with a value)")
            per_sample = per_image_view(per_sample)
        add_per_sample_section(page, per_sample, name="test", label="test split")

    if per_sample is not None and (run_dir / "checkpoints" / "best.ckpt").is_file():
        from fdseg.report.multiclass import add_worst_off_overlays

        page.heading("Worst-off images")
        add_worst_off_overlays(page, run_dir, None, name="test")

    page.heading("Training")
    history, problem = read_csv(run_dir / "history.csv")
    if history is None:
        page.missing(f"{problem}: no training curves.")
    else:
        add_history_section(page, history, name="run", label=run_dir.name)

    page.heading("Configuration")
    _, text, problem = read_yaml(run_dir / "config.yaml")
    if problem is not None:
        page.missing(problem)
    if text is not None:
        page.preformatted(text)
    return page.write(run_dir / "report.html")
