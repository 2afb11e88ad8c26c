"""``fdseg experiment multiclass``: U-Net vs U-Net + per-class L_fd on multi-class nuclei (Table 7, §F7).

The configuration (a multi-class run: ``model.head`` = ``binary_per_class`` or ``softmax``) is the
"U-Net + L_fd" arm; the "U-Net" arm is the same run without L_fd (``loss.fd = false``) and with
``train.compute_matched = true`` (the same two phases and step budget), so the arms differ only in the loss.
The evaluation still records each image's per-class L_fd for both arms. Each arm is trained once per seed
(``train.seed`` = 0, 1, …; the data split stays the configuration's) through
:class:`~fdseg.experiments.executors.LocalExecutor` (one ``fdseg train`` subprocess per run) and evaluated per
image and class on the test split.

Outputs in the experiment folder:

* ``results.csv``: one row per run and class: ``run, method, seed, class, dice`` (the class mean over the test
  images where the class is in the ground truth or the prediction, see :mod:`fdseg.metrics.multiclass`);
* ``table.md`` / ``table.csv``: Table 7's layout, one row per method and one column per class (background
  first), mean Dice × 100 over seeds (± sd);
* ``tests.csv``: per class, the paired differences (L_fd − U-Net) with two paired tests from ``scipy.stats``:
  Wilcoxon signed-rank and paired t over test images (per-image class Dice averaged over seeds, images where
  both arms have a value) and a paired t over seeds (class means);
* ``report.html``: the tables and the error overlays of the worst-off test images of the U-Net arm.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from fdseg.data.cache import CachedDataset
from fdseg.data.open import open_dataset
from fdseg.experiments.executors import InlineExecutor, LocalExecutor, RunResult, RunSpec
from fdseg.training.config import ExperimentConfig

METHODS = ("U-Net", "U-Net + L_fd")


def default_config(out: str | Path) -> ExperimentConfig:
    """The synthetic default: nuclei_mc (three nucleus types), 32² images, a small U-Net, 160 steps."""
    data = (Path(out) / "data").resolve()
    return ExperimentConfig.from_dict(
        {
            "schema": 1,
            "name": "multiclass synthetic nuclei",
            "data": {
                "base": f"synthetic:{data / 'nuclei_mc'}?family=nuclei_mc&site=base&n=80&seed=0&size=32",
                "image_size": 32,
                "split_scheme": "paper",
                "split_seed": 0,
                "test_fraction": 0.3,
                "val_fraction": 0.15,
                "cache_dir": str((Path(out) / ".cache").resolve()),
            },
            "model": {
                "name": "unet",
                "out_channels": 3,
                "head": "binary_per_class",
                "kwargs": {"base_width": 8, "depth": 3},
            },
            "loss": {"fd": True, "lambda_strategy": "schedule", "lambda_kwargs": {"lambda_max": 0.01}},
            "optim": {"lr": 3e-3, "weight_decay": 0.01, "scheduler": "cosine"},
            "train": {
                "epochs_phase1": 1,
                "epochs_phase2": 1,
                "max_steps": 160,
                "batch_size": 8,
                "eval_batch_size": 32,
                "progress_bar": False,
            },
        },
        source="multiclass default",
    )


@dataclass(frozen=True)
class MulticlassResult:
    """What the experiment produced."""

    results: pd.DataFrame
    table: pd.DataFrame
    tests: pd.DataFrame
    table_text: str
    report_html: Path
    seconds: float


def multiclass_runs(cfg: ExperimentConfig, out: str | Path, seeds: Sequence[int]) -> list[RunSpec]:
    """One run per method and seed; the baseline is the compute-matched copy of ``cfg`` (λ ≡ 0).

    Raises:
        ValueError: ``cfg`` is not a multi-class run with ``loss.fd`` on.
    """
    if cfg.model.head == "binary":
        raise ValueError("fdseg experiment multiclass needs model.head = binary_per_class or softmax")
    if not cfg.loss.fd:
        raise ValueError("fdseg experiment multiclass needs loss.fd = true (the U-Net + L_fd arm)")
    out = Path(out)
    specs: list[RunSpec] = []
    for seed in seeds:
        for method in METHODS:
            baseline = method == "U-Net"
            overrides = [f"train.seed={seed}"]
            if baseline:  # no L_fd, same two phases and step budget
                overrides += ["loss.fd=false", "loss.exch=false", "train.compute_matched=true"]
            run_cfg = cfg.with_overrides(overrides)
            run_cfg = ExperimentConfig.from_dict({**run_cfg.to_dict(), "name": method}, source="multiclass")
            name = f"{'unet' if baseline else 'unet_fd'}_seed{seed}"
            specs.append(RunSpec(name=name, config=run_cfg, run_dir=out / name))
    return specs


def prepare_data(cfg: ExperimentConfig, out: Path) -> None:
    """Open (generate) the dataset and fill the class-map cache once, before parallel runs start."""
    cache = Path(cfg.data.cache_dir) if cfg.data.cache_dir else out / ".cache"
    CachedDataset(open_dataset(cfg.data.base), cfg.data.image_size, cache, target="classes")


def run_multiclass(
    cfg: ExperimentConfig,
    out: str | Path,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    executor: LocalExecutor | InlineExecutor | None = None,
    jobs: int = 2,
    threads_per_job: int = 1,
    device: str = "cpu",
    on_run_end: Callable[[str, int, float, int, int], None] | None = None,
) -> MulticlassResult:
    """Train (or finish) every run, then write the tables, the tests and ``report.html``.

    The runs go to ``executor``; without one, to a :class:`LocalExecutor` of ``jobs``, ``threads_per_job``
    and ``device``.

    Raises:
        RuntimeError: a run failed (its ``train.log`` is named).
        ValueError: a config that is not a multi-class L_fd run.
    """
    import time

    out = Path(out)
    start = time.perf_counter()
    specs = multiclass_runs(cfg, out, seeds)
    out.mkdir(parents=True, exist_ok=True)
    prepare_data(cfg, out)
    if executor is None:
        executor = LocalExecutor(jobs, threads_per_job=threads_per_job, device=device)
    results = executor.run(specs, on_run_end=on_run_end)
    failed = [r for r in results if not r.ok]
    if failed:
        logs = ", ".join(str(r.spec.run_dir / "train.log") for r in failed)
        raise RuntimeError(f"{len(failed)} multiclass run(s) failed; see {logs}")
    frame, per_image = collect(results)
    frame.to_csv(out / "results.csv", index=False)
    classes = list(dict.fromkeys(frame["class"]))
    table = table7(frame, classes)
    table.to_csv(out / "table.csv")
    text = format_table7(table)
    (out / "table.md").write_text(text + "\n")
    tests = paired_tests(frame, per_image, classes)
    tests.to_csv(out / "tests.csv", index=False)
    from fdseg.report.multiclass import write_multiclass_report

    report = write_multiclass_report(out, table, tests, [r.spec for r in results], title=cfg.name)
    return MulticlassResult(frame, table, tests, text, report, time.perf_counter() - start)


def collect(results: Sequence[RunResult]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per run and class (``results.csv``) and per run, image and class (the long per_sample rows)."""
    rows: list[dict[str, Any]] = []
    images: list[pd.DataFrame] = []
    for result in results:
        spec = result.spec
        summary = json.loads((spec.run_dir / "test" / "summary.json").read_text())
        for name, entry in summary["per_class"].items():
            rows.append(
                {
                    "run": spec.name,
                    "method": spec.config.name,
                    "seed": spec.config.train.seed,
                    "class": name,
                    "dice": entry["dice"],
                    "n": entry["n"],
                    "absent": entry["absent"],
                    "train_seconds": result.seconds,
                }
            )
        per_sample = pd.read_csv(spec.run_dir / "test" / "per_sample.csv", dtype={"id": str})
        per_sample = per_sample.assign(method=spec.config.name, seed=spec.config.train.seed)
        images.append(per_sample[["method", "seed", "id", "class", "dice"]])
    return pd.DataFrame(rows), pd.concat(images, ignore_index=True)


def table7(frame: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """Methods × classes: mean Dice × 100 over seeds, and its sd (columns ``<class>`` and ``<class> sd``)."""
    out: dict[str, dict[str, float]] = {}
    for method in METHODS:
        sub = frame[frame["method"] == method]
        row: dict[str, float] = {}
        for name in classes:
            values = sub.loc[sub["class"] == name, "dice"].astype(float).dropna() * 100
            row[name] = float(values.mean()) if len(values) else math.nan
            row[f"{name} sd"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        out[method] = row
    return pd.DataFrame.from_dict(out, orient="index")


def format_table7(table: pd.DataFrame) -> str:
    """Markdown in Table 7's layout (mean ± sd over seeds, Dice × 100)."""
    classes = [c for c in table.columns if not c.endswith(" sd")]
    lines = ["| Method | " + " | ".join(c.title() for c in classes) + " |"]
    lines.append("|---" * (len(classes) + 1) + "|")
    for method, row in table.iterrows():
        cells = []
        for c in classes:
            mean, sd = row[c], row[f"{c} sd"]
            cell = "–" if math.isnan(mean) else f"{mean:.2f}"
            cells.append(cell if math.isnan(sd) else f"{cell} ± {sd:.2f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _p(result: Any) -> float:
    return float(result.pvalue)


def paired_tests(frame: pd.DataFrame, per_image: pd.DataFrame, classes: Sequence[str]) -> pd.DataFrame:
    """Per class: paired tests of U-Net + L_fd against U-Net (see the module docstring)."""
    base, fd = METHODS
    rows: list[dict[str, Any]] = []
    for name in classes:
        image_means = (
            per_image[per_image["class"] == name].groupby(["method", "id"])["dice"].mean().unstack("method")
        )
        pairs = image_means.dropna(subset=[m for m in METHODS if m in image_means.columns])
        diff = (pairs[fd] - pairs[base]).to_numpy() if {base, fd} <= set(pairs.columns) else np.array([])
        seeds = frame[frame["class"] == name].pivot_table(index="seed", columns="method", values="dice")
        seeds = seeds.dropna()
        seed_diff = (seeds[fd] - seeds[base]).to_numpy() if {base, fd} <= set(seeds.columns) else np.array([])
        row: dict[str, Any] = {
            "class": name,
            "n_images": int(diff.size),
            "mean_diff_images": float(diff.mean() * 100) if diff.size else math.nan,
            "wilcoxon_p": math.nan,
            "ttest_images_p": math.nan,
            "n_seeds": int(seed_diff.size),
            "mean_diff_seeds": float(seed_diff.mean() * 100) if seed_diff.size else math.nan,
            "ttest_seeds_p": math.nan,
        }
        if diff.size >= 2 and np.any(diff != 0):
            row["wilcoxon_p"] = _p(stats.wilcoxon(diff))
            row["ttest_images_p"] = _p(stats.ttest_1samp(diff, 0.0))
        if seed_diff.size >= 2 and np.std(seed_diff) > 0:
            row["ttest_seeds_p"] = _p(stats.ttest_1samp(seed_diff, 0.0))
        rows.append(row)
    return pd.DataFrame(rows)
