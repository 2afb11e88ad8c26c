"""The data-addition dilemma study and the noise-robustness study (method-spec §F2, §F4; Fig. 3, Fig. 9).

``fdseg experiment data-addition`` retrains every arm from scratch for every added count k and seed, always
evaluates on the base site's test split, and reports base-test Dice vs k per arm (mean over seeds, a t
confidence band), the change against k = 0 per arm with paired tests over seeds
(:func:`fdseg.metrics.stats.compare_seeds`), each arm against L_seg at every k, and the divergence table
per k (:mod:`fdseg.experiments.divergence`). ``fdseg experiment robustness`` does the same over the noise σ
(``data.noise``), with σ = 0 as the reference.

Arms (every one has the config's two phases; the L_seg arm is the compute-matched baseline, λ ≡ 0 in phase
2, so arms differ only in their loss):

========== ================================================================
``seg``     L_seg only
``fd``      L_seg + L_fd
``fd_exch`` L_seg + L_fd + L_fd^exch
``con``     L_seg + L_con (pixel contrastive, :mod:`fdseg.losses.baselines`)
``deeps``   L_seg + L_deeps (deep supervision)
========== ================================================================

Everything that can be checked is checked before the first run starts (arm names, k against the novel
training pool, fractions, σ, seeds, each arm's model and losses); runs go through
the executors of :mod:`fdseg.experiments.executors` (on the CPU ``jobs`` worker processes that each train
many runs, on GPUs one ``fdseg train`` process per run), finished runs skipped, so an interrupted study
resumes where it stopped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fdseg.data.cache import CachedDataset
from fdseg.data.open import open_dataset
from fdseg.data.pooling import addition_counts, novel_training_ids
from fdseg.experiments.divergence import SubsetRule, divergence_study, json_text
from fdseg.experiments.executors import InlineExecutor, LocalExecutor, RunResult, RunSpec
from fdseg.metrics.stats import compare_seeds, t_ci
from fdseg.training.config import ExperimentConfig
from fdseg.training.run import preflight

#: Arm name -> (label, loss-section overrides, compute-matched).
ARMS: Mapping[str, tuple[str, dict[str, Any], bool]] = {
    "seg": ("L_seg", {"fd": False, "exch": False, "baseline": "none"}, True),
    "fd": ("L_seg + L_fd", {"fd": True, "exch": False, "baseline": "none"}, False),
    "fd_exch": ("L_seg + L_fd + L_fd^exch", {"fd": True, "exch": True, "baseline": "none"}, False),
    "con": ("L_seg + L_con", {"fd": False, "exch": False, "baseline": "contrastive"}, False),
    "deeps": ("L_seg + L_deeps", {"fd": False, "exch": False, "baseline": "deep_supervision"}, False),
}
DEFAULT_ADDITION_ARMS: tuple[str, ...] = ("seg", "fd", "fd_exch", "con", "deeps")
DEFAULT_ROBUSTNESS_ARMS: tuple[str, ...] = ("seg", "fd", "con", "deeps")
#: The synthetic default: a novel site that looks like the base site but whose masks are drawn 2 px wider.
SYNTHETIC_K: tuple[int, ...] = (0, 10, 20, 40)
SYNTHETIC_SIGMAS: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.2)


def synthetic_config(data_dir: str | Path) -> ExperimentConfig:
    """The synthetic default study (``synthetic-calibration.md`` §6, sized for 2 CPU cores).

    100 base images of 64² (45 train / 15 val / 40 test), a pool of 40 novel ``dil2`` images (same look,
    masks dilated by 2 px), U-Net 8-16-32 (+64), a fixed budget of 240 optimiser steps for every k (adding
    data adds no compute), half per phase; λ = 0.01 per layer for L_fd.
    """
    root = Path(data_dir).resolve()
    common = "family=nuclei&size=64"
    return ExperimentConfig.from_dict(
        {
            "name": "synthetic data addition",
            "data": {
                "base": f"synthetic:{root / 'addition_base'}?{common}&site=base&n=100&seed=0",
                "novel": f"synthetic:{root / 'addition_dil2'}?{common}&site=dil2&n=40&seed=1",
                "image_size": 64,
                "split_scheme": "paper",
                "split_seed": 0,
                "val_fraction": 0.15,
                "test_fraction": 0.4,
                "cache_dir": str(root / ".cache"),
            },
            "model": {"name": "unet", "kwargs": {"base_width": 8, "depth": 3}},
            "loss": {"lambda_strategy": "schedule", "lambda_kwargs": {"lambda_max": 0.01}},
            "optim": {"lr": 1e-3, "weight_decay": 0.01, "scheduler": "cosine"},
            "train": {
                "epochs_phase1": 1,
                "epochs_phase2": 1,
                "max_steps": 240,
                "batch_size": 8,
                "eval_batch_size": 40,
                "progress_bar": False,
            },
        },
        source="synthetic default",
    )


def check_arms(arms: Sequence[str]) -> list[str]:
    """The arm names, checked (``ValueError`` naming an unknown one and listing the valid ones)."""
    out = [a.strip() for a in arms if a.strip()]
    if not out:
        raise ValueError(f"--arms is empty; valid arms: {list(ARMS)}")
    bad = [a for a in out if a not in ARMS]
    if bad:
        raise ValueError(f"unknown arm(s) {bad}; valid arms: {list(ARMS)}")
    if len(set(out)) != len(out):
        raise ValueError(f"--arms lists an arm twice: {out}")
    return out


def arm_config(cfg: ExperimentConfig, arm: str, seed: int, data: Mapping[str, Any]) -> ExperimentConfig:
    """``cfg`` as one run of ``arm`` with ``seed`` and the given ``data`` overrides."""
    label, loss, matched = ARMS[arm]
    raw = cfg.to_dict()
    raw["loss"].update(loss)
    raw["train"]["compute_matched"] = matched
    raw["train"]["seed"] = seed
    raw["train"]["progress_bar"] = False
    raw["data"].update(data)
    raw["name"] = label
    return ExperimentConfig.from_dict(raw, source=f"arm {arm}")


@dataclass(frozen=True)
class Study:
    """A planned study: its runs and what each run varies."""

    kind: str  # "data-addition" or "robustness"
    out: Path
    base: ExperimentConfig
    arms: list[str]
    seeds: list[int]
    conditions: list[float]  # k or σ
    specs: list[RunSpec]
    keys: dict[str, tuple[str, float, int]]  # run name -> (arm, condition, seed)


def _with_cache(cfg: ExperimentConfig, out: Path) -> ExperimentConfig:
    if cfg.data.cache_dir:
        return cfg
    return cfg.with_overrides([f"data.cache_dir={(out / '.cache').resolve()}"])


def _seeds(seeds: int | str | Sequence[int]) -> list[int]:
    """A count N (seeds 0..N-1), a range/list text or the seeds themselves, checked by ``parse_seeds``."""
    from fdseg.experiments.sweep import parse_seeds

    return list(parse_seeds(seeds))


def _check_runs(cfg: ExperimentConfig, arms: Sequence[str]) -> None:
    for arm in arms:  # each arm's model, losses and heads once, before anything runs
        preflight(arm_config(cfg, arm, 0, {}))


def plan_data_addition(
    cfg: ExperimentConfig,
    out: str | Path,
    *,
    k: Sequence[Any] | None = None,
    fractions: Sequence[Any] | None = None,
    arms: Sequence[str] = DEFAULT_ADDITION_ARMS,
    seeds: int | str | Sequence[int] = 3,
) -> Study:
    """Check everything and list the runs (nothing is trained or written).

    Raises:
        ValueError: no novel dataset in the config, a novel dataset without a training part, bad k or
            fractions, an unknown arm, bad ``seeds`` (a count < 1, a repeated or negative seed), an arm whose
            losses cannot be built on the model (e.g. a baseline on a model without decoder taps).
    """
    out = Path(out)
    seed_values = _seeds(seeds)
    arm_list = check_arms(arms)
    if cfg.data.novel is None:
        raise ValueError("the config has no data.novel: the data-addition study needs a novel dataset")
    pool = novel_training_ids(open_dataset(cfg.data.novel).records, spec=cfg.data.novel)
    if k is None and fractions is None:
        fractions = (0.0, 0.25, 0.5, 1.0)
    counts = addition_counts(
        len(pool), k=k, fractions=fractions, pool=f"the training pool of {cfg.data.novel!r}"
    )
    if 0 not in counts:
        counts = [0, *counts]  # the reference of every paired change
    counts = sorted(set(counts))
    cfg = _with_cache(cfg, out)
    _check_runs(cfg, arm_list)
    specs: list[RunSpec] = []
    keys: dict[str, tuple[str, float, int]] = {}
    for arm in arm_list:  # arm by arm, so that a study stopped early leaves whole arms
        for count in counts:
            for seed in seed_values:
                name = f"k{count}_{arm}_s{seed}"
                data = {"novel_k": count, "novel_fraction": None}
                specs.append(RunSpec(name, arm_config(cfg, arm, seed, data), out / name))
                keys[name] = (arm, float(count), seed)
    return Study("data-addition", out, cfg, arm_list, seed_values, [float(c) for c in counts], specs, keys)


def plan_robustness(
    cfg: ExperimentConfig,
    out: str | Path,
    *,
    sigmas: Sequence[Any] = SYNTHETIC_SIGMAS,
    arms: Sequence[str] = DEFAULT_ROBUSTNESS_ARMS,
    seeds: int | str | Sequence[int] = 3,
    apply_to: str = "all",
    noise_seed: int = 0,
) -> Study:
    """Check everything and list the runs of the noise study (σ = 0 is always included as the reference).

    Raises:
        ValueError: σ < 0 or not a number, an unknown ``apply_to`` or arm, bad ``seeds``, an unbuildable arm.
    """
    out = Path(out)
    seed_values = _seeds(seeds)
    arm_list = check_arms(arms)
    values: list[float] = []
    for s in sigmas:
        if isinstance(s, bool) or not isinstance(s, int | float) or not math.isfinite(s):
            raise ValueError(f"--sigmas must be numbers >= 0, got {s!r}")
        if s < 0:
            raise ValueError(f"noise sigma must be >= 0, got {s}")
        values.append(float(s))
    values = sorted({0.0, *values})
    from fdseg.data.noise import APPLY_TO as NOISE_APPLY_TO

    if apply_to not in NOISE_APPLY_TO:
        raise ValueError(f"unknown --apply-to {apply_to!r}; valid: {list(NOISE_APPLY_TO)}")
    cfg = _with_cache(cfg, out)
    _check_runs(cfg, arm_list)
    specs: list[RunSpec] = []
    keys: dict[str, tuple[str, float, int]] = {}
    for arm in arm_list:
        for sigma in values:
            for seed in seed_values:
                name = f"sigma{sigma:g}_{arm}_s{seed}"
                data = {"noise": {"sigma": sigma, "apply_to": apply_to, "seed": noise_seed}}
                specs.append(RunSpec(name, arm_config(cfg, arm, seed, data), out / name))
                keys[name] = (arm, sigma, seed)
    return Study("robustness", out, cfg, arm_list, seed_values, values, specs, keys)


def prepare_data(cfg: ExperimentConfig) -> None:
    """Open and cache the base and novel datasets once, before parallel runs share the cache."""
    size = cfg.data.image_size if cfg.data.preprocess == "resize" else None
    for spec in (cfg.data.base, cfg.data.novel):
        if spec:
            CachedDataset(open_dataset(spec), size, cfg.data.cache_dir)


def run_study(
    study: Study,
    *,
    executor: LocalExecutor | InlineExecutor | None = None,
    jobs: int = 1,
    threads_per_job: int | None = None,
    device: str = "cpu",
    echo: Callable[[str], None] | None = None,
) -> list[RunResult]:
    """Train every run of ``study`` through :func:`fdseg.experiments.sweep.run_sweep` (finished runs skipped).

    The folder is claimed as an experiment of this kind and configuration (``experiment.json``), so a rerun
    resumes and another study is never mixed into it. The runs go to ``executor``; without one, to a
    :class:`LocalExecutor` of ``jobs``, ``threads_per_job`` and ``device``.

    Raises:
        ValueError: the folder holds another experiment. RuntimeError: a run failed (naming its log).
    """
    from fdseg.experiments.sweep import Arm, SweepRun, claim_experiment, run_sweep

    claim_experiment(
        study.out, f"experiment {study.kind}", study.base,
        arms=study.arms, conditions=study.conditions, seeds=study.seeds,
    )  # fmt: skip
    prepare_data(study.base)
    runs: list[SweepRun] = []
    for spec in study.specs:
        arm, condition, seed = study.keys[spec.name]
        label = f"{arm} {'k' if study.kind == 'data-addition' else 'sigma'}={condition:g}"
        point = Arm(label, spec.name.rsplit("_s", 1)[0], (), {"arm": arm, "condition": condition})
        runs.append(SweepRun(spec, point, seed, None))
    if executor is None:
        executor = LocalExecutor(jobs, threads_per_job=threads_per_job, device=device)
    results = run_sweep(runs, executor, echo=echo)
    if not isinstance(results, list):  # a local executor always waits for its runs
        raise TypeError(
            f"expected the finished runs from {type(executor).__name__}, got {type(results).__name__}"
        )
    failed = [r for r in results if not r.ok]
    if failed:
        logs = ", ".join(str(r.spec.run_dir / "train.log") for r in failed)
        raise RuntimeError(f"{len(failed)} run(s) failed; see {logs}")
    return results


def collect(study: Study, results: Sequence[RunResult] | None = None) -> pd.DataFrame:
    """One row per run: arm, condition (k or σ), seed, base-test metrics, wall seconds."""
    seconds = {r.spec.name: r.seconds for r in results or ()}
    rows: list[dict[str, Any]] = []
    for spec in study.specs:
        summary = json.loads((spec.run_dir / "test" / "summary.json").read_text(encoding="utf-8"))
        arm, condition, seed = study.keys[spec.name]
        rows.append(
            {
                "run": spec.name,
                "arm": arm,
                "method": ARMS[arm][0],
                "condition": condition,
                "seed": seed,
                "n_test": summary["n"],
                **{k: v for k, v in summary["mean"].items() if isinstance(v, int | float)},
                "train_seconds": seconds.get(spec.name, math.nan),
            }
        )
    return pd.DataFrame(rows)


def summarise(study: Study, frame: pd.DataFrame, *, metric: str = "dice") -> dict[str, Any]:
    """Per arm and condition: mean, sd, 95 % t CI over seeds; paired change vs the reference condition
    (k = 0 or σ = 0) per arm; each arm vs ``seg`` at every condition (when ``seg`` ran).

    Returns:
        ``{"curve": [...], "change": [...], "vs_seg": [...]}``, lists of flat dicts.
    """
    curve: list[dict[str, Any]] = []
    change: list[dict[str, Any]] = []
    vs_seg: list[dict[str, Any]] = []
    reference = min(study.conditions)
    by = {(a, c): sub for (a, c), sub in frame.groupby(["arm", "condition"])}

    def per_seed(arm: str, condition: float) -> dict[int, float]:
        sub = by.get((arm, condition))
        return {} if sub is None else {int(s): float(v) for s, v in zip(sub["seed"], sub[metric])}

    for arm in study.arms:
        for condition in study.conditions:
            values = per_seed(arm, condition)
            arr = list(values.values())
            lo, hi = t_ci(arr) if len(arr) >= 2 else (math.nan, math.nan)
            sd = float(pd.Series(arr).std(ddof=1)) if len(arr) >= 2 else math.nan
            curve.append(
                {"arm": arm, "condition": condition, "n": len(arr), "mean": float(sum(arr) / len(arr)),
                 "sd": sd, "ci_lo": lo, "ci_hi": hi}
            )  # fmt: skip
            if condition != reference:
                stats = compare_seeds(per_seed(arm, reference), values)
                change.append({"arm": arm, "condition": condition, **_flat(stats)})
            if arm != "seg" and "seg" in study.arms:
                stats = compare_seeds(per_seed("seg", condition), values)
                vs_seg.append({"arm": arm, "condition": condition, **_flat(stats)})
    return {"metric": metric, "reference": reference, "curve": curve, "change": change, "vs_seg": vs_seg}


def _flat(stats: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("n", "mean_diff", "sd_diff", "diff_ci_lo", "diff_ci_hi", "d_z", "p_t", "p_w", "p_t_greater")
    out = {k: stats[k] for k in keep}
    out["notes"] = "; ".join(stats.get("notes", []))
    return out


#: What the text tables print for a missing value (NaN: one seed, no test, …), as the other fdseg tables do.
MISSING = "–"


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _fmt(x: float, scale: float = 100.0, sign: bool = False) -> str:
    if _missing(x):
        return MISSING
    return f"{x * scale:+.2f}" if sign else f"{x * scale:.2f}"


def _p(x: float) -> str:
    return MISSING if _missing(x) else f"{x:.3g}"


def format_summary(study: Study, summary: Mapping[str, Any]) -> str:
    """Plain-text tables: the curve (Fig. 3 / Fig. 9 layout, Dice in %), changes vs the reference.

    A value that cannot be computed (a CI or a test on one seed, an arm without runs) reads ``–``.
    """
    name = "k" if study.kind == "data-addition" else "σ"
    conds = study.conditions
    label = {c: (f"{int(c)}" if study.kind == "data-addition" else f"{c:g}") for c in conds}
    lines = [f"base-test Dice (%) vs {name}: mean over seeds [95% t CI]"]
    header = f"{'arm':<26}" + "".join(f"{name + '=' + label[c]:>22}" for c in conds)
    lines += [header, "-" * len(header)]
    cells = {(r["arm"], r["condition"]): r for r in summary["curve"]}
    for arm in study.arms:
        row = f"{ARMS[arm][0]:<26}"
        for c in conds:
            r = cells[(arm, c)]
            ci = f"[{_fmt(r['ci_lo'])},{_fmt(r['ci_hi'])}]" if r["n"] >= 2 else f"(n={r['n']})"
            row += f"{_fmt(r['mean']) + ' ' + ci:>22}"
        lines.append(row)
    lines += [
        "",
        f"change vs {name}={label[summary['reference']]} (paired over seeds, points): Δ [95% CI] p_t p_w",
    ]
    changes = {(r["arm"], r["condition"]): r for r in summary["change"]}
    for arm in study.arms:
        row = f"{ARMS[arm][0]:<26}"
        for c in conds[1:]:
            r = changes[(arm, c)]
            row += (
                f"  {name}={label[c]}: {_fmt(r['mean_diff'], sign=True)} "
                f"[{_fmt(r['diff_ci_lo'], sign=True)},{_fmt(r['diff_ci_hi'], sign=True)}] "
                f"p_t={_p(r['p_t'])} p_w={_p(r['p_w'])}"
            )
        lines.append(row)
    if summary["vs_seg"]:
        lines += ["", "arm − L_seg at the same " + name + " (paired over seeds, points): Δ [95% CI] p_t"]
        vs = {(r["arm"], r["condition"]): r for r in summary["vs_seg"]}
        for arm in study.arms:
            if arm == "seg":
                continue
            row = f"{ARMS[arm][0]:<26}"
            for c in conds:
                r = vs[(arm, c)]
                row += (
                    f"  {name}={label[c]}: {_fmt(r['mean_diff'], sign=True)} "
                    f"[{_fmt(r['diff_ci_lo'], sign=True)},{_fmt(r['diff_ci_hi'], sign=True)}] "
                    f"p_t={_p(r['p_t'])}"
                )
            lines.append(row)
    return "\n".join(lines)


def write_outputs(
    study: Study, frame: pd.DataFrame, summary: Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> dict[str, Path]:
    """``results.csv``, ``summary.json``, ``summary.txt`` and ``figures/<kind>.png`` in the study folder."""
    from fdseg.viz.comparison import plot_metric_vs_condition

    out = study.out
    paths = {"results": out / "results.csv", "summary": out / "summary.json", "text": out / "summary.txt"}
    frame.to_csv(paths["results"], index=False)
    payload = {"kind": study.kind, "arms": study.arms, "seeds": study.seeds, "conditions": study.conditions,
               **summary, **(extra or {})}  # fmt: skip
    paths["summary"].write_text(json_text(payload), encoding="utf-8")
    paths["text"].write_text(format_summary(study, summary) + "\n", encoding="utf-8")
    (out / "figures").mkdir(exist_ok=True)
    xlabel = "novel images added (k)" if study.kind == "data-addition" else "noise σ"
    fig = plot_metric_vs_condition(
        pd.DataFrame(summary["curve"]), labels={a: ARMS[a][0] for a in study.arms}, xlabel=xlabel
    )
    paths["figure"] = out / "figures" / f"{study.kind}.png"
    fig.savefig(paths["figure"], dpi=100)
    return paths


def addition_divergence(study: Study) -> list[dict[str, Any]]:
    """The divergence table of the study's k (the training images, at the training size)."""
    cfg = study.base
    if cfg.data.novel is None:
        raise ValueError("data.novel: a data-addition study needs a novel dataset")
    counts = [int(c) for c in study.conditions if c > 0]
    if not counts:
        return []
    rule = SubsetRule(
        split_scheme=cfg.data.split_scheme,
        split_seed=cfg.data.split_seed,
        val_fraction=cfg.data.val_fraction,
        test_fraction=cfg.data.test_fraction,
        grouped=cfg.data.split_grouped,
        official=cfg.data.split_official,
        selection=cfg.data.novel_selection,
        selection_seed=cfg.data.split_seed,
    )
    size = cfg.data.image_size if cfg.data.preprocess == "resize" else None
    result = divergence_study(
        cfg.data.base, cfg.data.novel, k=counts, size=size, rule=rule, cache_dir=cfg.data.cache_dir
    )
    result.write(study.out)
    return result.rows
