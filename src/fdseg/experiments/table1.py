"""``fdseg experiment table1``: the paper's Table 1 protocol (method-spec §F1, §F5, §F6, §G15).

Per model and seed, three arms are trained from one configuration:

- ``lseg``: ✗, L_seg only (phase 1 alone);
- ``lseg_cm``: ✗ compute-matched, L_seg for both phases (λ ≡ 0 in phase 2: the same epochs as ✓);
- ``fd``: ✓, L_seg + L_fd (phase 2 with L_fd).

Every run is evaluated per image on the plain test set (``test/``) and on the paper's 5-view augmented test
set (``test_views/``: identity, h-flip, v-flip, rot 90, rot 270). For each seed and test set the worst-off /
best-off images are the K with the lowest / highest ✗ Dice (K from Table 6 for the dataset, capped at ⌊N/2⌋;
for a dataset not in Table 6, K = ⌊N/5⌋), and every arm is scored on those same ids; "all" is every image.
With ``--folds`` the per-image results of all folds are pooled per seed before the selection. Dice and IoU
are reported in % as mean ± sd over seeds; Δ and p-values are over seeds, paired by seed: the paper's
one-sample t-test of the arm's seeds against the ✗ mean (Table 5), a paired t-test and a Wilcoxon test.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fdseg._io import atomic_write_text
from fdseg.data.base import parse_spec
from fdseg.experiments.sweep import Arm, SweepRun, expand
from fdseg.metrics import compare_seeds, worst_best_off
from fdseg.training.config import ExperimentConfig

__all__ = [
    "ARMS",
    "PAPER_TABLE1",
    "TABLE6_K",
    "Table1Result",
    "table1_arms",
    "table1_runs",
    "table1_tables",
    "worst_off_k",
]

#: (key, label, overrides) of the three arms of Table 1.
ARMS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("lseg", "✗ L_seg", ("loss.fd=false", "train.compute_matched=false")),
    ("lseg_cm", "✗ L_seg compute-matched", ("loss.fd=false", "train.compute_matched=true")),
    ("fd", "✓ L_seg + L_fd", ("loss.fd=true", "train.compute_matched=false")),
)
BASELINE = "lseg"
#: Table 6: worst-off K per dataset format name.
TABLE6_K: dict[str, int] = {"tnbc": 10, "monuseg": 25, "udiat": 35, "us-tnbc": 10, "ad-tau": 500}
#: fdseg model name -> the paper's model name.
PAPER_MODELS: dict[str, str] = {
    "nucleisegnet": "NuSegNet",
    "attention_unet": "AttnUNet",
    "cmunet": "CMUNet",
    "transunet": "TransUNet",
    "swin_unet": "SwinUNet",
}
#: Table 1 (method-spec §F1), Dice/IoU in %: (model, dataset) -> arm -> group -> (Dice, IoU); None = unknown.
PAPER_TABLE1: dict[tuple[str, str], dict[str, dict[str, tuple[float | None, float | None]]]] = {
    ("attention_unet", "udiat"): {
        "lseg": {"worst": (52.42, 29.47), "best": (75.86, 68.46), "all": (67.21, 35.61)},
        "fd": {"worst": (53.28, 30.31), "best": (None, 69.50), "all": (68.9, 38.43)},
    },
    ("attention_unet", "tnbc"): {
        "lseg": {"worst": (77.88, 68.64), "best": (85.82, 74.38), "all": (80.61, 67.79)},
        "fd": {"worst": (77.86, 68.66), "best": (86.25, 77.57), "all": (81.16, 69.19)},
    },
    ("attention_unet", "monuseg"): {
        "lseg": {"worst": (66.03, 52.38), "best": (82.57, 73.48), "all": (75.92, 61.28)},
        "fd": {"worst": (68.51, 53.06), "best": (None, 74.50), "all": (77.97, 62.87)},
    },
    ("cmunet", "udiat"): {
        "lseg": {"worst": (31.56, 26.58), "best": (90.88, 88.25), "all": (81.85, 69.87)},
        "fd": {"worst": (33.10, 28.17), "best": (95.28, 90.01), "all": (84.22, 73.02)},
    },
    ("nucleisegnet", "tnbc"): {
        "lseg": {"worst": (77.29, 68.00), "best": (86.49, 71.29), "all": (81.69, 69.22)},
        "fd": {"worst": (79.40, 68.42), "best": (86.82, 72.58), "all": (82.65, 70.58)},
    },
    ("nucleisegnet", "monuseg"): {
        "lseg": {"worst": (63.95, 50.05), "best": (84.61, 70.40), "all": (80.95, 67.91)},
        "fd": {"worst": (64.61, 52.1), "best": (84.9, 71.65), "all": (81.69, 68.65)},
    },
    # Table 4 (method-spec §F6): transformers, all samples only, no L_fd
    ("transunet", "tnbc"): {"lseg": {"all": (76.50, 72.04)}},
    ("transunet", "monuseg"): {"lseg": {"all": (77.46, 63.85)}},
    ("swin_unet", "tnbc"): {"lseg": {"all": (60.08, 50.14)}},
    ("swin_unet", "monuseg"): {"lseg": {"all": (76.38, 62.54)}},
}
#: Table 5 (method-spec §F5): one-sample t-test p of ✓ against ✗, (model, dataset) -> (p Dice, p IoU).
PAPER_TABLE5: dict[tuple[str, str], tuple[float, float]] = {
    ("nucleisegnet", "monuseg"): (0.0015, 0.0032),
    ("attention_unet", "monuseg"): (0.0019, 0.0007),
}
TEST_SETS: dict[str, tuple[str, str]] = {
    # name -> (evaluation folder, description)
    "plain": ("test", "plain test set"),
    "5-view": ("test_views", "5-view augmented test set (identity, h-flip, v-flip, rot 90, rot 270)"),
}
GROUPS = ("worst", "best", "all")
METRICS = ("dice", "iou")


def dataset_name(cfg: ExperimentConfig) -> str:
    """The format name of ``data.base`` (``tnbc``, ``monuseg``, …)."""
    return parse_spec(cfg.data.base)[0]


def worst_off_k(dataset: str, n: int) -> tuple[int, int, str]:
    """K of the worst-/best-off sets for ``n`` ranked images: ``(k used, k requested, where k comes from)``.

    Table 6's K for the dataset, capped at ⌊n/2⌋ (method-spec §G15); ⌊n/5⌋ (at least 1) for other datasets.
    """
    if dataset in TABLE6_K:
        requested, source = TABLE6_K[dataset], f"Table 6 ({dataset})"
    else:
        requested, source = max(1, n // 5), f"⌊N/5⌋ ({dataset} is not in Table 6)"
    return max(1, min(requested, n // 2)), requested, source


def table1_arms(cfg: ExperimentConfig, models: Sequence[str] = ()) -> list[Arm]:
    """The arms × models of Table 1 (other models than the config's use their default options).

    Raises:
        ValueError: a model listed twice.
    """
    names = list(models) or [cfg.model.name]
    if len(set(names)) != len(names):
        raise ValueError(f"--models lists a model twice: {names}")
    arms = []
    for model in names:
        extra = () if model == cfg.model.name else (f"model.name={model}", "model.kwargs={}")
        for key, label, overrides in ARMS:
            values = {"model": model, "variant": key}
            arms.append(Arm(f"{model} {label}", f"{model}_{key}", (*extra, *overrides), values))
    return arms


def table1_runs(
    cfg: ExperimentConfig,
    exp_dir: str | Path,
    *,
    seeds: Sequence[int],
    folds: int | None = None,
    models: Sequence[str] = (),
) -> list[SweepRun]:
    """Runs of Table 1 under ``exp_dir/runs/<model>_<arm>_seed<s>[_fold<f>]``.

    Raises:
        ValueError: ``train.epochs_phase2`` is 0 (✓ and the compute-matched ✗ need a second phase).
    """
    if cfg.train.epochs_phase2 < 1:
        raise ValueError("table1 needs train.epochs_phase2 >= 1: ✓ and the compute-matched ✗ train a phase 2")
    return expand(cfg, table1_arms(cfg, models), seeds, exp_dir, folds=folds)


@dataclass(frozen=True)
class Table1Result:
    """The tables of Table 1.

    Attributes:
        per_seed: one row per model, test set, seed, arm and group: ``dice``, ``iou`` (%), ``k``,
            ``k_requested``, ``n_images``, ``threshold`` (the K-th ✗ Dice, %).
        summary: one row per model, test set, group, metric and arm: ``mean``, ``sd``, ``seeds``, and for
            the arms other than ✗: ``delta`` (paired by seed), ``p_1samp``/``p_1samp_greater`` (Table 5),
            ``p_paired``/``p_paired_greater``, ``p_wilcoxon``, ``paper`` (the paper's value when the
            dataset and model match a cell).
        notes: how K was chosen, dropped seeds, small test sets.
    """

    per_seed: pd.DataFrame
    summary: pd.DataFrame
    notes: list[str]


def _pooled(runs: Sequence[SweepRun], folder: str) -> pd.DataFrame | None:
    frames = []
    for run in runs:
        csv = run.spec.run_dir / folder / "per_sample.csv"
        if not ((run.spec.run_dir / "DONE").is_file() and csv.is_file()):
            return None
        frame = pd.read_csv(csv, dtype={"id": str})
        if "view" in frame.columns:
            frame["id"] = frame["id"].astype(str) + "@" + frame["view"].astype(str)
        frames.append(frame[["id", *METRICS]])
    return pd.concat(frames, ignore_index=True) if frames else None


def table1_tables(runs: Sequence[SweepRun], dataset: str) -> Table1Result:
    """Worst-off / best-off / all, Dice and IoU, per model, test set, seed and arm; then over seeds.

    Raises:
        ValueError: no seed with finished ✗ and ✓ runs.
    """
    notes: list[str] = []
    by_key: dict[tuple[str, str, int], list[SweepRun]] = {}
    for run in runs:
        by_key.setdefault(
            (str(run.arm.values["model"]), str(run.arm.values["variant"]), run.seed), []
        ).append(run)
    models = list(dict.fromkeys(str(r.arm.values["model"]) for r in runs))
    seeds = sorted({r.seed for r in runs})
    rows: list[dict[str, Any]] = []
    k_notes: set[str] = set()
    for model in models:
        for test_set, (folder, _desc) in TEST_SETS.items():
            for seed in seeds:
                base = _pooled(by_key.get((model, BASELINE, seed), []), folder)
                if base is None:
                    notes.append(
                        f"{model}, {test_set}, seed {seed}: the ✗ run is unfinished or not evaluated"
                    )
                    continue
                ranked = base.dropna(subset=["dice"])
                k, k_req, source = worst_off_k(dataset, len(ranked))
                for arm_key, _label, _ov in ARMS:
                    comp = _pooled(by_key.get((model, arm_key, seed), []), folder)
                    if comp is None:
                        continue
                    sel = worst_best_off(base, comp, k=k, metric="dice")
                    k_notes.add(
                        f"{test_set}: N = {sel['n']} images per seed, K = {sel['k']} (requested {k_req} from "
                        f"{source}{', capped at ⌊N/2⌋' if sel['k'] < k_req else ''})"
                    )
                    comp_idx = comp.set_index("id")
                    for group in GROUPS:
                        ids = sel[group]["ids"]
                        row: dict[str, Any] = {
                            "model": model,
                            "test_set": test_set,
                            "seed": seed,
                            "arm": arm_key,
                            "group": group,
                            "k": sel["k"] if group != "all" else sel["n"],
                            "k_requested": k_req if group != "all" else sel["n"],
                            "n_images": sel["n"],
                            "threshold": 100 * sel[group]["threshold"] if group != "all" else math.nan,
                        }
                        for metric in METRICS:
                            vals = pd.to_numeric(comp_idx.loc[ids, metric]).to_numpy(dtype=np.float64)
                            row[metric] = 100 * float(np.nanmean(vals))
                        rows.append(row)
    per_seed = pd.DataFrame(rows)
    if per_seed.empty:
        raise ValueError("no seed has a finished and evaluated ✗ run; nothing to tabulate")
    notes.extend(sorted(k_notes))
    summary_rows: list[dict[str, Any]] = []
    for key, part in per_seed.groupby(["model", "test_set", "group"], sort=False):
        model_name, test_set, group = (str(v) for v in key)
        paper = PAPER_TABLE1.get((model_name, dataset), {})
        for m_i, metric in enumerate(METRICS):
            base_vals = {
                int(r["seed"]): float(r[metric]) for r in part[part["arm"] == BASELINE].to_dict("records")
            }
            for arm_key, label, _ov in ARMS:
                vals = {
                    int(r["seed"]): float(r[metric]) for r in part[part["arm"] == arm_key].to_dict("records")
                }
                if not vals:
                    continue
                arr = np.array(list(vals.values()))
                entry: dict[str, Any] = {
                    "model": model_name,
                    "test_set": test_set,
                    "group": group,
                    "metric": metric,
                    "arm": arm_key,
                    "arm_label": label,
                    "mean": float(arr.mean()),
                    "sd": float(arr.std(ddof=1)) if arr.size > 1 else math.nan,
                    "seeds": int(arr.size),
                }
                cell = paper.get(arm_key, {}).get(str(group))
                entry["paper"] = cell[m_i] if cell is not None and cell[m_i] is not None else math.nan
                if arm_key != BASELINE and base_vals:
                    res = compare_seeds(base_vals, vals)
                    entry.update(
                        delta=res["mean_diff"],
                        paired_seeds=res["n"],
                        p_1samp=res["p_1samp"],
                        p_1samp_greater=res["p_1samp_greater"],
                        p_paired=res["p_t"],
                        p_paired_greater=res["p_t_greater"],
                        p_wilcoxon=res["p_w"],
                        stat_notes="; ".join(res["notes"]),
                    )
                summary_rows.append(entry)
    summary = pd.DataFrame(summary_rows)
    small = per_seed[(per_seed["test_set"] == "plain") & (per_seed["n_images"] < 10)]
    if not small.empty:
        notes.append(
            f"warning: the plain test set has {int(small['n_images'].min())} image(s) per seed "
            "(fewer than 10); worst-/best-off sets on it are a handful of images "
            "(use --folds to test on every image)"
        )
    return Table1Result(per_seed, summary, notes)


def _cell(mean: float, sd: float, seeds: int) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.2f} ± {sd:.2f}" if seeds > 1 and not math.isnan(sd) else f"{mean:.2f}"


def _p(x: Any) -> str:
    return "–" if x is None or pd.isna(x) else f"{float(x):.3g}"


def format_table1(result: Table1Result, dataset: str) -> str:
    """The Table 1 layout as text (Markdown tables): Dice/IoU in % as mean ± sd over seeds, Δ vs ✗ L_seg,
    the paper's numbers where the model and dataset match a cell, then the p-values."""
    s = result.summary
    seeds = int(s["seeds"].max()) if not s.empty else 0
    lines = [
        f"Table 1 on {dataset}: Dice / IoU in %, mean ± sd over {seeds} seed(s); (Δ) = arm − ✗ L_seg",
        "",
    ]
    head = [
        "model",
        "test set",
        "arm",
        *[f"{g}-off Dice / IoU" if g != "all" else "all Dice / IoU" for g in GROUPS],
    ]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for (model, test_set), part in s.groupby(["model", "test_set"], sort=False):
        for arm_key, label, _ov in ARMS:
            arm_part = part[part["arm"] == arm_key]
            if arm_part.empty:
                continue
            cells, papers = [], []
            for group in GROUPS:
                pair, paper_pair = [], []
                for metric in METRICS:
                    r = arm_part[(arm_part["group"] == group) & (arm_part["metric"] == metric)]
                    if r.empty:
                        pair.append("–")
                        paper_pair.append("–")
                        continue
                    rec = r.iloc[0]
                    text = _cell(float(rec["mean"]), float(rec["sd"]), int(rec["seeds"]))
                    if arm_key != BASELINE and not pd.isna(rec.get("delta", math.nan)):
                        text += f" ({float(rec['delta']):+.2f})"
                    pair.append(text)
                    paper_pair.append("–" if pd.isna(rec["paper"]) else f"{float(rec['paper']):.2f}")
                cells.append(" / ".join(pair))
                papers.append(" / ".join(paper_pair))
            lines.append(f"| {model} | {test_set} | {label} | " + " | ".join(cells) + " |")
            if any(p != "– / –" for p in papers):
                lines.append(f"| {model} | {test_set} | paper: {label} | " + " | ".join(papers) + " |")
    lines += [
        "",
        'p-values over seeds, paired by seed; "greater" tests arm > ✗ L_seg. One-sample t = the '
        "paper's Table 5 test (the arm's seeds against the ✗ mean).",
        "",
    ]
    if "p_1samp" in s.columns:
        phead = [
            "model",
            "test set",
            "group",
            "metric",
            "arm",
            "Δ",
            "seeds",
            "one-sample p (greater)",
            "paired t p (greater)",
            "Wilcoxon p",
        ]
        lines.append("| " + " | ".join(phead) + " |")
        lines.append("|" + "---|" * len(phead))
        stat_notes: set[str] = set()
        for prow in s[s["arm"] != BASELINE].to_dict("records"):
            lines.append(
                f"| {prow['model']} | {prow['test_set']} | {prow['group']} | {prow['metric']} | "
                f"{prow['arm_label']} | {float(prow['delta']):+.2f} | {int(prow['paired_seeds'])} | "
                f"{_p(prow['p_1samp'])} ({_p(prow['p_1samp_greater'])}) | "
                f"{_p(prow['p_paired'])} ({_p(prow['p_paired_greater'])}) | {_p(prow['p_wilcoxon'])} |"
            )
            for note in str(prow.get("stat_notes") or "").split("; "):
                if note and note != "nan":
                    stat_notes.add(note)
        for note in sorted(stat_notes):
            lines.append(f"note (p-values): {note}")
    for (model, ds), (pd_, pi) in PAPER_TABLE5.items():
        if ds == dataset and model in set(s["model"]):
            lines.append(f"paper (Table 5) {model} {ds}: one-sample p = {pd_} (Dice), {pi} (IoU)")
    if result.notes:
        lines.append("")
        lines.extend(f"note: {n}" for n in result.notes)
    return "\n".join(lines)


def write_table1_outputs(
    exp_dir: str | Path, runs: Sequence[SweepRun], dataset: str, *, title: str
) -> tuple[Table1Result, str]:
    """Write ``results.csv``, ``table1.csv``, ``table1_per_seed.csv``, ``table1.txt`` and ``report.html``."""
    from fdseg.experiments.sweep import write_sweep_outputs

    exp = Path(exp_dir)
    result = table1_tables(runs, dataset)
    text = format_table1(result, dataset)
    atomic_write_text(exp / "table1.csv", result.summary.to_csv(index=False))
    atomic_write_text(exp / "table1_per_seed.csv", result.per_seed.to_csv(index=False))
    atomic_write_text(exp / "table1.txt", text + "\n")
    atomic_write_text(exp / "table1.json", json.dumps({"dataset": dataset, "notes": result.notes}, indent=1))
    panels = worst_off_panels(runs)
    write_sweep_outputs(
        exp,
        runs,
        ["model", "variant"],
        title=title,
        baseline=next((r.arm.label for r in runs if r.arm.values.get("variant") == BASELINE), None),
        extra_sections=[("Table 1 (method-spec §F1)", text)],
        extra_figures=[(panels[0], "worst_off_panels", panels[1])] if panels else [],
    )
    return result, text


def paper_cells(model: str, dataset: str) -> Mapping[str, Any]:
    """The paper's Table 1 / Table 4 cells for ``model`` on ``dataset`` (empty when there are none)."""
    return PAPER_TABLE1.get((model, dataset), {})


def evaluate_views(runs: Sequence[SweepRun], runtime: Any = None, *, echo: Any = None) -> int:
    """Score every finished run on the 5-view test set (``fdseg evaluate --views paper``) once.

    Returns:
        The number of runs evaluated now (runs with ``test_views/summary.json`` are skipped).
    """
    from fdseg.training.evaluate import evaluate_run

    done = 0
    for run in runs:
        rd = run.spec.run_dir
        if not (rd / "DONE").is_file() or (rd / "test_views" / "summary.json").is_file():
            continue
        evaluate_run(rd, views="paper", runtime=runtime)
        done += 1
        if echo is not None:
            echo(f"5-view test set scored: {run.name}")
    return done


def worst_off_panels(runs: Sequence[SweepRun], *, n_max: int = 4) -> tuple[Any, str] | None:
    """Image / ground truth / ✗ / ✓ prediction panels of the ✗ run's worst-off test images (same ids for ✓).

    Uses the first model and the first seed (fold 0 with folds) whose ✗ and ✓ runs are finished; the images
    are the run's test images as the network saw them (resized, or native for a tiled run).

    Returns:
        ``(figure, caption)``, or ``None`` when no such pair of runs exists.
    """
    from fdseg.training.build import build_model
    from fdseg.training.data import build_run_data
    from fdseg.training.evaluate import default_predict_mode, predict_probabilities
    from fdseg.training.rundir import load_model_weights, read_config
    from fdseg.viz import plot_image_panels

    pairs: dict[tuple[str, int, int | None], dict[str, Path]] = {}
    for run in runs:
        if (run.spec.run_dir / "DONE").is_file() and run.fold in (None, 0):
            key = (str(run.arm.values["model"]), run.seed, run.fold)
            pairs.setdefault(key, {})[str(run.arm.values["variant"])] = run.spec.run_dir
    chosen = next(
        (v for _k, v in sorted(pairs.items(), key=lambda kv: str(kv[0])) if {"lseg", "fd"} <= set(v)), None
    )
    if chosen is None:
        return None
    tables = {
        arm: pd.read_csv(chosen[arm] / "test" / "per_sample.csv", dtype={"id": str}) for arm in ("lseg", "fd")
    }
    base = tables["lseg"].dropna(subset=["dice"])
    ids = [str(i) for i in base.sort_values(["dice", "id"])["id"].head(n_max)]
    cfg = read_config(chosen["lseg"])
    data = build_run_data(cfg, chosen["lseg"])
    views = {i: (img, mask) for i, img, mask in data.images("test") if i in ids}
    preds: list[list[np.ndarray]] = []
    scores: list[list[float]] = []
    for arm in ("lseg", "fd"):
        run_cfg = read_config(chosen[arm])
        model = build_model(run_cfg)
        load_model_weights(model, chosen[arm] / "checkpoints" / "best.ckpt")
        model.eval()
        mode, size = default_predict_mode(run_cfg), run_cfg.data.image_size
        preds.append([predict_probabilities(model, views[i][0], mode=mode, size=size) > 0.5 for i in ids])
        by_id = tables[arm].set_index("id")["dice"]
        scores.append([float(by_id.loc[i]) for i in ids])
    fig = plot_image_panels(
        [views[i][0] for i in ids],
        [views[i][1] for i in ids],
        preds,
        ids=ids,
        labels=["✗ L_seg", "✓ L_seg + L_fd"],
        scores=scores,
        title=f"worst-off test images of ✗ ({chosen['lseg'].name}) and the same ids under ✓",
    )
    caption = (
        f"The {len(ids)} test images with the lowest ✗ Dice in {chosen['lseg'].name}: image, ground truth, "
        f"✗ prediction and ✓ prediction ({chosen['fd'].name}) with their Dice."
    )
    return fig, caption
