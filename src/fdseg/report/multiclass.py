"""The report of ``fdseg experiment multiclass``: Table 7, paired tests per class, worst-off overlays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fdseg.report._html import Page


def per_image_view(per_sample: pd.DataFrame) -> pd.DataFrame:
    """Long-form multi-class rows -> one row per image (means over the foreground classes with a value)."""
    if "class" not in per_sample.columns:
        return per_sample
    fg = per_sample[per_sample["label"] > 0]
    return fg.groupby("id", as_index=False, sort=False).mean(numeric_only=True).drop(columns=["label"])


def per_class_table(per_sample: pd.DataFrame) -> pd.DataFrame:
    """Per class: mean Dice and IoU over the images with a value, images counted and absent."""
    grouped = per_sample.groupby("class", sort=False)
    return pd.DataFrame(
        {
            "class": list(grouped.groups),
            "dice": grouped["dice"].mean().to_numpy(),
            "iou": grouped["iou"].mean().to_numpy(),
            "n": grouped["dice"].count().to_numpy(),
            "absent": grouped["absent"].sum().to_numpy(),
        }
    )


def add_worst_off_overlays(page: Page, run_a: Path, run_b: Path | None, *, k: int = 4, name: str) -> None:
    """Overlays (image, ground truth, FP/FN of A and B) of the ``k`` worst-off test images of ``run_a``.

    Missing checkpoints or per-sample files turn into a sentence, never an exception.
    """
    from fdseg.report.figures import load_run, overlay_figure, worst_off_ids

    try:
        ids = worst_off_ids(run_a, k)
        a = load_run(run_a)
        b = load_run(run_b) if run_b is not None else None
        fig = overlay_figure(a, b, ids)
    except (FileNotFoundError, KeyError, ValueError, OSError) as err:
        page.missing(f"no error overlays: {err}")
        return
    against = f" against {run_b.name}" if run_b is not None else ""
    page.figure(
        fig,
        f"{name}_worst_off_overlays",
        f"The {len(ids)} worst-off test images of {run_a.name}{against}: image, ground truth, errors "
        "(magenta: false positive, cyan: false negative, green: true positive).",
    )


def write_multiclass_report(
    out: Path, table: pd.DataFrame, tests: pd.DataFrame, specs: Sequence[Any], *, title: str
) -> Path:
    """Write ``out/report.html`` (figures embedded, also saved under ``out/figures``)."""
    page = Page(f"fdseg experiment multiclass: {title}", figures_dir=out / "figures")
    seeds = sorted({s.config.train.seed for s in specs})
    page.paragraph(
        f"U-Net vs U-Net + per-class L_fd over {len(seeds)} seed(s). Dice × 100 per class on the test split: "
        "mean over seeds of the class mean over test images where the class is in the ground truth or the "
        "prediction (a class absent from both in an image is left out for that image)."
    )
    shown = table.reset_index(names="method")
    page.table(shown, digits=2, caption="Per-class Dice × 100 (Table 7 layout; sd over seeds)")
    page.table(
        tests,
        digits=4,
        caption="Paired tests per class (L_fd − U-Net, Dice points): Wilcoxon, t over images; t over seeds",
    )
    by_method: dict[str, Path] = {}
    for spec in specs:
        if spec.config.train.seed == seeds[0]:
            by_method[spec.config.name] = spec.run_dir
    if "U-Net" in by_method:
        page.heading("Worst-off images")
        add_worst_off_overlays(page, by_method["U-Net"], by_method.get("U-Net + L_fd"), name="seed0")
    return page.write(out / "report.html")
