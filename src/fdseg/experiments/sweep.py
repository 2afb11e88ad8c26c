"""``fdseg sweep``: a grid of settings × seeds (× cross-validation folds) as plain run directories.

An experiment directory holds ``experiment.json`` (which command made it, from which configuration),
``runs/<name>/`` (one normal run directory per grid point, seed and fold), ``results.csv`` (one row per run)
and ``report.html``. Run names spell out what varies, e.g. ``lambda_max-0.01_seed2_fold1``. Finished runs
(``DONE``) are skipped, so running the same command again resumes; a failed run is started again (it resumes
from its last checkpoint). The experiment never trains itself: each run is ``fdseg train`` in a subprocess
(:class:`~fdseg.experiments.executors.LocalExecutor`) or a SLURM job
(:class:`~fdseg.experiments.executors.SlurmExecutor`).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from fdseg._io import atomic_write_text
from fdseg.experiments.executors import (
    InlineExecutor,
    LocalExecutor,
    RunResult,
    RunSpec,
    SlurmExecutor,
    Submission,
)
from fdseg.training.config import ExperimentConfig
from fdseg.training.rundir import RUNTIME_KEYS

__all__ = [
    "EXPERIMENT_FILE",
    "Arm",
    "SweepRun",
    "check_experiment",
    "claim_experiment",
    "collect_results",
    "expand",
    "grid_arms",
    "log_tail",
    "parse_grid",
    "parse_seeds",
    "run_sweep",
]

EXPERIMENT_FILE = "experiment.json"
METRICS = ("dice", "iou", "sensitivity", "specificity", "precision")
#: Keys a sweep sets itself: a grid over them would clash with ``--seeds`` / ``--folds``.
RESERVED = {"train.seed": "--seeds", "data.fold": "--folds", "data.folds": "--folds"}


@dataclass(frozen=True)
class Arm:
    """One point of the grid: a label and the overrides that make it.

    Attributes:
        label: readable label, e.g. ``"lambda_max=0.01, fd=true"`` (``"base"`` without a grid).
        slug: the label as a directory-name part, e.g. ``"lambda_max-0.01_fd-true"``.
        overrides: ``key=value`` strings applied to the base configuration.
        values: key -> value of this point (the varied keys only).
    """

    label: str
    slug: str
    overrides: tuple[str, ...]
    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: an arm, a seed and a fold.

    Attributes:
        spec: the run (name, configuration, directory).
        arm: the grid point.
        seed: ``train.seed``.
        fold: ``data.fold``, or ``None`` without cross-validation.
    """

    spec: RunSpec
    arm: Arm
    seed: int
    fold: int | None

    @property
    def name(self) -> str:
        """The run name (its directory name under ``runs/``)."""
        return self.spec.name


def parse_seeds(text: str | int | Sequence[int]) -> tuple[int, ...]:
    """Seeds from ``"0-4"`` (inclusive range), ``"0,3,7"`` (a list) or ``"5"`` / ``5`` (a count: 0..4).

    The one parser of ``--seeds`` for every study command (``fdseg sweep``, ``fdseg experiment …``); a
    sequence of ints is taken as the seeds themselves.

    Raises:
        ValueError: anything else, negative or repeated seeds, an empty range.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    if not isinstance(text, str):
        seeds = tuple(int(s) for s in text)  # type: ignore[union-attr]
        if not seeds:
            raise ValueError("--seeds: no seed given")
    else:
        raw = text.strip()
        if re.fullmatch(r"\d+", raw):
            count = int(raw)
            if count < 1:
                raise ValueError(f"--seeds must be >= 1 as a count of seeds, got {raw!r}")
            seeds = tuple(range(count))
        elif m := re.fullmatch(r"(\d+)\s*-\s*(\d+)", raw):
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ValueError(f"--seeds {raw!r}: empty range (write low-high, e.g. 0-4)")
            seeds = tuple(range(lo, hi + 1))
        elif re.fullmatch(r"\d+(\s*,\s*\d+)+", raw):
            seeds = tuple(int(s) for s in raw.split(","))
        else:
            raise ValueError(
                f"--seeds {text!r} is not a count (5), an inclusive range (0-4) or a list (0,3,7) of seeds"
            )
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r} repeats a seed")
    if any(s < 0 for s in seeds):
        raise ValueError(f"--seeds {text!r}: seeds must be >= 0")
    return seeds


def _parse_value(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def parse_grid(items: Sequence[str], base: ExperimentConfig) -> list[tuple[str, list[Any]]]:
    """Parse ``--grid key=v1,v2`` options and check every value against the configuration.

    Values are read as YAML scalars (``0.01``, ``true``, ``unet``); a list value is written in brackets,
    ``loss.layers=[enc1,dec1],[enc1]``.

    Args:
        items: the ``--grid`` strings.
        base: the configuration the grid applies to.

    Returns:
        ``[(key, [value, ...]), ...]`` in the order given.

    Raises:
        ValueError: no ``=``, an empty grid, a repeated key or value, a key set by ``--seeds``/``--folds``.
        KeyError: a key that does not exist (with the closest valid key).
        TypeError: a value of the wrong type for its key.
    """
    grids: list[tuple[str, list[Any]]] = []
    seen: set[str] = set()
    for item in items:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"--grid {item!r} must look like section.key=v1,v2")
        if key in RESERVED:
            raise ValueError(f"--grid {key}: set it with {RESERVED[key]}, not with --grid")
        if key in seen:
            raise ValueError(f"--grid {key} is given twice")
        seen.add(key)
        parts = _split_values(raw)
        if not parts:
            raise ValueError(f"--grid {item!r} has no values (write {key}=v1,v2)")
        values = [_parse_value(p) for p in parts]
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
            raise ValueError(f"--grid {item!r} repeats a value")
        for value in values:  # unknown keys and wrong types fail here, before anything is written
            point = f"{key}={_yaml_text(value)}"
            base.with_overrides([point], source=f"--grid {point} (with the config and --set)")
        grids.append((key, values))
    return grids


def _split_values(raw: str) -> list[str]:
    """Split on commas outside brackets."""
    parts, depth, current = [], 0, ""
    for ch in raw:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return [p for p in parts if p]


def _yaml_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return "+".join(_value_text(v) for v in value) or "none"
    return str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-") or "x"


def _short_keys(keys: Sequence[str]) -> dict[str, str]:
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def grid_arms(grids: Sequence[tuple[str, Sequence[Any]]]) -> list[Arm]:
    """The Cartesian product of the grids as arms (one arm, ``base``, without a grid)."""
    if not grids:
        return [Arm("base", "base", ())]
    keys = [k for k, _ in grids]
    short = _short_keys(keys)
    arms = []
    for combo in itertools.product(*(values for _, values in grids)):
        values = dict(zip(keys, combo))
        label = ", ".join(f"{short[k]}={_value_text(v)}" for k, v in values.items())
        slug = "_".join(f"{_slug(short[k])}-{_slug(_value_text(v))}" for k, v in values.items())
        overrides = tuple(f"{k}={_yaml_text(v)}" for k, v in values.items())
        arms.append(Arm(label, slug, overrides, values))
    return arms


def expand(
    base: ExperimentConfig,
    arms: Sequence[Arm],
    seeds: Sequence[int],
    exp_dir: str | Path,
    *,
    folds: int | None = None,
) -> list[SweepRun]:
    """Arms × seeds (× folds) as runs under ``exp_dir/runs/<arm>_seed<s>[_fold<f>]``.

    Each run's configuration is ``base`` with the arm's overrides, ``train.seed`` and (with ``folds``)
    ``data.folds``/``data.fold``; its ``name`` is ``<base name> [<arm label>]``.

    Raises:
        ValueError: no seed, ``folds`` < 2, two arms with the same directory name.
        KeyError / TypeError: a bad override (from the configuration).
    """
    if not seeds:
        raise ValueError("a sweep needs at least one seed")
    if folds is not None and folds < 2:
        raise ValueError(f"--folds must be >= 2, got {folds} (1 fold leaves no image for training)")
    slugs = [a.slug for a in arms]
    if len(set(slugs)) != len(slugs):
        raise ValueError(
            f"two grid points share a run name: {sorted({s for s in slugs if slugs.count(s) > 1})}"
        )
    runs_dir = Path(exp_dir) / "runs"
    out: list[SweepRun] = []
    for arm in arms:
        for seed in seeds:
            for fold in range(folds) if folds else [None]:
                overrides = [*arm.overrides, f"train.seed={seed}"]
                name = f"{arm.slug}_seed{seed}"
                if fold is not None:
                    overrides += [f"data.folds={folds}", f"data.fold={fold}"]
                    name += f"_fold{fold}"
                cfg = base.with_overrides(overrides, source=f"grid point {arm.label} (with --set)")
                label = base.name if arm.label == "base" else f"{base.name} [{arm.label}]"
                cfg = cfg.with_overrides([f"name={label}"])
                out.append(SweepRun(RunSpec(name, cfg, runs_dir / name), arm, seed, fold))
    return out


def check_experiment(exp_dir: str | Path, kind: str, base: ExperimentConfig) -> None:
    """Check that ``exp_dir`` is new, or an experiment of ``kind`` made from ``base`` (writes nothing).

    Raises:
        ValueError: as :func:`claim_experiment`.
    """
    exp = Path(exp_dir)
    marker = exp / EXPERIMENT_FILE
    if marker.is_file():
        try:
            saved = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{marker}: unreadable ({err})") from None
        if saved.get("kind") != kind:
            raise ValueError(
                f"{exp} was made by `fdseg {saved.get('kind')}`, not `fdseg {kind}`; use another -o directory"
            )
        saved_cfg = ExperimentConfig.from_dict(saved.get("config", {}), source=str(marker))
        diff = saved_cfg.differences(base, ignore=RUNTIME_KEYS)
        if diff:
            shown = "; ".join(diff[:5])
            raise ValueError(
                f"{exp} holds an experiment from another configuration ({shown}); use another -o directory"
            )
    elif exp.is_dir() and any(exp.iterdir()):
        raise ValueError(f"{exp} exists and is not an fdseg experiment directory (no {EXPERIMENT_FILE})")


def claim_experiment(exp_dir: str | Path, kind: str, base: ExperimentConfig, **settings: Any) -> Path:
    """Make ``exp_dir`` an experiment of ``kind`` from ``base``, or check that it already is one.

    Writes ``exp_dir/experiment.json`` (``kind``, the base configuration, ``settings`` such as the grid).
    Re-running with the same command and configuration is a resume; the grid, seeds and folds may grow.

    Raises:
        ValueError: ``exp_dir`` was made by another command or from another configuration (the differing
            keys are named), or is a non-empty directory that is not an experiment.
    """
    exp = Path(exp_dir)
    check_experiment(exp, kind, base)
    exp.mkdir(parents=True, exist_ok=True)
    marker = exp / EXPERIMENT_FILE
    payload = {"schema": 1, "kind": kind, "config": base.to_dict(), "settings": settings}
    atomic_write_text(marker, json.dumps(payload, indent=1, default=str) + "\n")
    return marker


def log_tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file (``""`` when it is missing)."""
    if not path.is_file():
        return ""
    text = path.read_text(errors="replace").rstrip("\n").splitlines()
    return "\n".join(text[-lines:])


ProgressFn = Callable[[str], None]


def run_sweep(
    runs: Sequence[SweepRun],
    executor: LocalExecutor | InlineExecutor | SlurmExecutor,
    *,
    echo: ProgressFn | None = None,
) -> list[RunResult] | Submission:
    """Run (local) or submit (SLURM) every run; finished runs are skipped.

    With a local executor ``echo`` gets one progress line per finished run (state, wall time, runs done, an
    ETA from the mean time of the runs trained so far) and the log tail of every failed run; the sweep
    carries on with the other runs. Each successful run's wall time is kept in ``<run>/wall.json``.

    Returns:
        Local: the results in the order of ``runs``. SLURM: the submission.
    """
    specs = [r.spec for r in runs]
    say = echo or (lambda _text: None)
    if isinstance(executor, SlurmExecutor):
        return executor.submit(specs)
    started = time.perf_counter()
    trained: list[float] = []
    by_name = {r.name: r for r in runs}
    slots = max(1, executor.jobs)

    def on_end(name: str, rc: int, seconds: float, done: int, total: int) -> None:
        run = by_name[name]
        if rc == 0:
            atomic_write_text(run.spec.run_dir / "wall.json", json.dumps({"seconds": seconds}) + "\n")
        if rc >= 0:
            trained.append(seconds)
        state = "ok" if rc == 0 else ("skipped (DONE)" if rc < 0 else f"FAILED (exit {rc})")
        left = total - done
        eta = ""
        if left and trained:
            eta_s = sum(trained) / len(trained) * math.ceil(left / slots)
            eta = f", ETA {_duration(eta_s)}"
        elapsed = _duration(time.perf_counter() - started)
        say(f"[{done}/{total}] {name}: {state} {seconds:.1f} s (elapsed {elapsed}{eta})")
        if rc > 0:
            tail = log_tail(run.spec.run_dir / "train.log")
            say(
                f"  last lines of {run.spec.run_dir / 'train.log'}:\n"
                + "\n".join("  | " + t for t in tail.splitlines())
            )

    return executor.run(specs, on_run_end=on_end)


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def collect_results(runs: Sequence[SweepRun], keys: Sequence[str] = ()) -> pd.DataFrame:
    """One row per run: ``run``, ``arm``, every varied key, ``seed``, ``fold``, ``status``, test metrics,
    ``n_test`` and ``wall_seconds`` (read from the run directories; an unfinished run has NaN metrics and
    ``status`` ``failed`` or ``pending``)."""
    rows: list[dict[str, Any]] = []
    for run in runs:
        rd = run.spec.run_dir
        row: dict[str, Any] = {"run": run.name, "arm": run.arm.label}
        for key in keys:
            row[key] = _value_text(run.arm.values[key]) if key in run.arm.values else None
        row.update(seed=run.seed, fold=run.fold)
        summary_path = rd / "test" / "summary.json"
        done = (rd / "DONE").is_file() and summary_path.is_file()
        row["status"] = "done" if done else ("failed" if (rd / "train.log").is_file() else "pending")
        summary = json.loads(summary_path.read_text()) if done else {}
        means = summary.get("mean", {})
        for metric in METRICS:
            value = means.get(metric)
            row[metric] = math.nan if value is None else float(value)
        row["n_test"] = summary.get("n", math.nan)
        wall = rd / "wall.json"
        row["wall_seconds"] = json.loads(wall.read_text())["seconds"] if wall.is_file() else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def check_folds(cfg: ExperimentConfig, folds: int) -> None:
    """Check that the base dataset can be split into ``folds`` grouped folds, before anything is written.

    Raises:
        ValueError: ``folds`` < 2. SplitError: fewer patient/slide groups than folds.
    """
    from fdseg.data.open import open_dataset
    from fdseg.data.splits import make_folds

    if folds < 2:
        raise ValueError(f"--folds must be >= 2, got {folds} (1 fold leaves no image for training)")
    records = open_dataset(cfg.data.base).records
    groups = [r.group for r in records] if cfg.data.split_grouped else None
    make_folds([r.id for r in records], folds, groups=groups, seed=cfg.data.split_seed)


def check_runs(runs: Sequence[SweepRun]) -> None:
    """Build each grid point's model and losses once (no data), so a setting that cannot train fails here,
    naming the run, before anything is written; and refuse run directories of another configuration.

    Raises:
        ValueError / KeyError / TypeError: naming the first run that cannot be built.
        RunConfigMismatchError: a run directory holds another configuration.
    """
    from fdseg.training.run import preflight
    from fdseg.training.rundir import check_run_config

    seen: set[str] = set()
    for run in runs:
        check_run_config(run.spec.run_dir, run.spec.config)
        if run.arm.slug in seen:
            continue
        seen.add(run.arm.slug)
        try:
            preflight(run.spec.config)
        except (ValueError, KeyError, TypeError) as err:
            message = err.args[0] if err.args else err
            raise type(err)(f"run {run.name} ({run.arm.label}) cannot train: {message}") from None


def seed_results(runs: Sequence[SweepRun], split_dir: str = "test") -> pd.DataFrame:
    """One row per (arm, seed): the per-image metrics pooled over the seed's finished folds and averaged.

    Columns: ``method`` (the arm), ``seed``, ``n_images``, the metrics, and ``run`` when there are no folds.
    """
    rows: list[dict[str, Any]] = []
    groups: dict[tuple[str, int], list[SweepRun]] = {}
    for run in runs:
        groups.setdefault((run.arm.label, run.seed), []).append(run)
    for (arm, seed), members in groups.items():
        frames = []
        for run in members:
            csv = run.spec.run_dir / split_dir / "per_sample.csv"
            if (run.spec.run_dir / "DONE").is_file() and csv.is_file():
                frames.append(pd.read_csv(csv, dtype={"id": str}))
        if not frames:
            continue
        pooled = pd.concat(frames, ignore_index=True)
        row: dict[str, Any] = {"method": arm, "seed": seed, "n_images": len(pooled)}
        for metric in METRICS:
            if metric in pooled.columns:
                row[metric] = float(pd.to_numeric(pooled[metric], errors="coerce").mean())
        if len(members) == 1 and members[0].fold is None:
            row["run"] = members[0].name
        rows.append(row)
    return pd.DataFrame(rows)


def write_sweep_outputs(
    exp_dir: str | Path,
    runs: Sequence[SweepRun],
    keys: Sequence[str],
    *,
    title: str,
    baseline: str | None = None,
    extra_sections: Sequence[tuple[str, str]] = (),
    extra_figures: Sequence[tuple[Any, str, str]] = (),
) -> tuple[Path, Path | None]:
    """Write ``results.csv`` (one row per run) and ``report.html`` (arms compared, paired by seed and fold).

    Returns:
        ``(results.csv, report.html)``; no report (``None``) when no run has finished.
    """
    from fdseg.experiments.compare import compare_runs
    from fdseg.report.experiment import write_experiment_report

    exp = Path(exp_dir)
    results = collect_results(runs, keys)
    results_csv = exp / "results.csv"
    atomic_write_text(results_csv, results.to_csv(index=False))
    per_seed = seed_results(runs)
    if per_seed.empty:
        return results_csv, None
    arms = {r.name: r.arm.label for r in runs}
    done = [r.spec.run_dir for r in runs if (r.spec.run_dir / "DONE").is_file()]
    comparisons = {}
    notes: list[str] = []
    if len(set(per_seed["method"])) > 1:
        for metric in ("dice", "iou"):
            cmp = compare_runs(done, baseline=baseline, metric=metric, arms=arms, n_boot=2000)
            comparisons[metric] = cmp.table
            baseline = cmp.baseline
            notes = cmp.notes
    numeric_key = None
    if len(keys) == 1 and all(
        isinstance(r.arm.values.get(keys[0]), int | float) and not isinstance(r.arm.values.get(keys[0]), bool)
        for r in runs
    ):
        numeric_key = keys[0]
        per_seed[numeric_key] = [
            next(r.arm.values[numeric_key] for r in runs if r.arm.label == m) for m in per_seed["method"]
        ]
    n_failed = int((results["status"] != "done").sum())
    report = write_experiment_report(
        exp,
        per_seed,
        title=title,
        runs={r.name: r.spec.run_dir for r in runs if r.spec.run_dir.is_dir()},
        notes=[
            f"{len(results)} runs: {len(results) - n_failed} finished"
            + (f", {n_failed} failed or pending (left out)" if n_failed else ""),
            "Each row of the results is one arm and seed; with folds the per-image results of all folds are "
            "pooled per seed.",
            *notes,
        ],
        baseline=baseline,
        metrics=[m for m in ("dice", "iou") if m in per_seed.columns],
        comparison=comparisons or None,
        numeric_key=numeric_key,
        sections=extra_sections,
        figures=extra_figures,
    )
    return results_csv, report
