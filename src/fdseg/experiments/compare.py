"""``fdseg compare``: group finished runs into arms and compare each with a baseline arm.

Runs are found in run directories (``config.yaml``) or experiment directories (``runs/*/config.yaml``), and
in result folders of other engines that hold ``run.json`` with an ``arm`` (``fdseg nnunet collect`` writes
them). The arm of a run is what differs between the configurations given, apart from the seed and the fold
(e.g. ``fd=true``); when nothing else differs, the configuration's ``name``. The statistics are
:func:`fdseg.metrics.compare_arms`: runs paired by seed (and fold), images by id.

Arms are listed in the study's own order (the rows of its ``results.csv``, which list the arms in the order
the study defines them; otherwise the order of the paths given). Without ``--baseline`` the baseline is the
L_seg-only arm (no L_fd, no L_fd^exch, no auxiliary baseline loss; the first such arm when there are
several, e.g. Table 1's ✗ before its compute-matched copy), else the first arm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fdseg._checks import did_you_mean
from fdseg.metrics import compare_arms
from fdseg.training.config import ExperimentConfig
from fdseg.training.rundir import RUNTIME_KEYS

__all__ = ["Comparison", "choose_baseline", "compare_runs", "find_runs", "format_comparison", "load_runs"]

#: A result folder of another engine (e.g. nnU-Net): ``{"engine", "arm", "seed", "fold"}``.
ENGINE_FILE = "run.json"
#: Run-config keys that never define an arm.
NOT_ARM_KEYS = frozenset({"name", "train.seed", "data.fold", "data.cache_dir"} | RUNTIME_KEYS)
#: Count columns of the comparison table (printed and written as integers; missing: ``<NA>``).
COUNT_COLUMNS = ("seeds", "n_images", "n", "n_img_pairs")


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories in ``paths``: each a run, an experiment (its ``runs/*``) or a folder of runs.

    Raises:
        FileNotFoundError: a path that is none of these (named).
        ValueError: no run at all.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if (path / "config.yaml").is_file() or (path / ENGINE_FILE).is_file():
            found.append(path)
            continue
        inner = sorted((path / "runs").glob("*/config.yaml")) or sorted(path.glob("*/config.yaml"))
        inner = inner or sorted(path.glob(f"*/{ENGINE_FILE}"))
        if not inner:
            raise FileNotFoundError(
                f"{path} is neither a run directory (config.yaml) nor an experiment (runs/)"
            )
        found.extend(p.parent for p in inner)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise ValueError("no run directory found")
    return unique


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _study_file(run_dir: Path) -> Path:
    """The ``results.csv`` of the study that may list ``run_dir`` (``EXP/runs/<run>`` or ``EXP/<run>``)."""
    return (run_dir.parent.parent if run_dir.parent.name == "runs" else run_dir.parent) / "results.csv"


def _read_study_files(dirs: Sequence[Path]) -> dict[Path, pd.DataFrame]:
    tables: dict[Path, pd.DataFrame] = {}
    for path in dict.fromkeys(_study_file(d) for d in dirs):
        if path.is_file():
            table = pd.read_csv(path, dtype=str)
            if "run" in table.columns:
                tables[path] = table
    return tables


def _in_study_order(dirs: Sequence[Path], tables: Mapping[Path, pd.DataFrame]) -> list[Path]:
    """``dirs`` with each study's runs in the order of its ``results.csv`` (the order in which the study
    defines its arms, then seeds); runs that no ``results.csv`` lists stay where they are."""
    rank = {path: {str(r): i for i, r in reversed(list(enumerate(t["run"])))} for path, t in tables.items()}
    anchor: dict[Path, int] = {}
    keys: dict[Path, tuple[int, int]] = {}
    for index, d in enumerate(dirs):
        study = _study_file(d)
        listed = rank.get(study, {})
        if d.name not in listed:
            keys[d] = (index, 0)
            continue
        keys[d] = (anchor.setdefault(study, index), listed[d.name])
    return sorted(dirs, key=lambda d: keys[d])


def _seg_only(cfg: ExperimentConfig) -> bool:
    """Whether the run trains with L_seg alone (no L_fd, no L_fd^exch, no auxiliary baseline loss)."""
    return not cfg.loss.fd and not cfg.loss.exch and cfg.loss.baseline == "none"


def load_runs(paths: Sequence[str | Path], *, arms: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per run, in the study's order: ``run``, ``path``, ``arm``, ``seed``, ``fold``, ``done``,
    ``seg_only`` (trained with L_seg alone; ``False`` for results of another engine).

    Args:
        paths: run or experiment directories (see :func:`find_runs`).
        arms: run directory name -> arm label, to override the arms derived from the configurations. Runs
            of a sweep (``EXP/runs/<name>``) take their arm from ``EXP/results.csv`` unless given here.
    """
    found = find_runs(paths)
    tables = _read_study_files(found)
    all_dirs = _in_study_order(found, tables)
    dirs = [d for d in all_dirs if (d / "config.yaml").is_file()]
    arms = dict(arms or {})
    for results, table in tables.items():
        if results.parent / "runs" in {d.parent for d in dirs} and "arm" in table.columns:
            for run, arm in zip(table["run"], table["arm"]):
                arms.setdefault(str(run), str(arm))
    configs = {d: ExperimentConfig.from_yaml(d / "config.yaml") for d in dirs}
    flats = {d: c.flat() for d, c in configs.items()}
    keys = sorted({k for f in flats.values() for k in f})
    varying = [k for k in keys if k not in NOT_ARM_KEYS and len({repr(f.get(k)) for f in flats.values()}) > 1]
    if "data.base" in varying:  # the same image id would name different images
        bases = sorted({str(f.get("data.base")) for f in flats.values()})
        raise ValueError(
            f"the runs were tested on different base datasets (data.base: {', '.join(bases[:3])}); images "
            "are paired by id, which needs the same test images: compare runs of one data.base"
        )
    short = {k: k.rsplit(".", 1)[-1] for k in varying}
    if len(set(short.values())) != len(short):
        short = {k: k for k in varying}
    rows = []
    for d in all_dirs:
        cfg = configs.get(d)
        if cfg is None:
            rows.append(_engine_row(d, arms))
            continue
        if arms and d.name in arms:
            arm = arms[d.name]
        elif varying:
            arm = ", ".join(f"{short[k]}={_text(flats[d].get(k))}" for k in varying)
        else:
            arm = cfg.name
        rows.append(
            {
                "run": d.name,
                "path": str(d),
                "arm": arm,
                "seed": cfg.train.seed,
                "fold": cfg.data.fold if cfg.data.folds else None,
                "done": (d / "DONE").is_file(),
                "seg_only": _seg_only(cfg),
            }
        )
    return pd.DataFrame(rows)


def _engine_row(path: Path, arms: Mapping[str, str] | None) -> dict[str, Any]:
    """The row of a result folder written by another engine (``run.json``)."""
    import json

    try:
        meta = json.loads((path / ENGINE_FILE).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path / ENGINE_FILE}: unreadable ({err})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("arm"), str):
        raise ValueError(f"{path / ENGINE_FILE}: needs an 'arm' string")
    return {
        "run": path.name,
        "path": str(path),
        "arm": arms[path.name] if arms and path.name in arms else meta["arm"],
        "seed": int(meta.get("seed", 0)),
        "fold": meta.get("fold"),
        "done": True,
        "seg_only": False,
    }


def per_image_table(runs: pd.DataFrame, *, split_dir: str = "test") -> tuple[pd.DataFrame, list[str]]:
    """The long per-image table of the finished runs (``<run>/<split_dir>/per_sample.csv``) and notes."""
    frames, notes = [], []
    for row in runs.to_dict("records"):
        csv = Path(str(row["path"])) / split_dir / "per_sample.csv"
        if not csv.is_file():
            notes.append(f"{row['run']}: no {split_dir}/per_sample.csv (unfinished or failed run), left out")
            continue
        frame = pd.read_csv(csv, dtype={"id": str})
        for position, column in enumerate(("arm", "seed", "fold", "run")):
            frame.insert(position, column, [row[column]] * len(frame))
        frames.append(frame)
    if not frames:
        raise ValueError(f"none of the {len(runs)} runs has {split_dir}/per_sample.csv; train them first")
    return pd.concat(frames, ignore_index=True), notes


@dataclass(frozen=True)
class Comparison:
    """The result of :func:`compare_runs`.

    Attributes:
        table: one row per arm (see :func:`fdseg.metrics.compare_arms`); the counts (``seeds``,
            ``n_images``, ``n``, ``n_img_pairs``) are integers (``Int64``, ``<NA>`` for the baseline's ``n``).
        baseline: the baseline arm.
        metric: the per-image metric compared.
        notes: runs left out, warnings.
        runs: the runs (see :func:`load_runs`).
        baseline_reason: why ``baseline`` was chosen, as a phrase (``"given with --baseline"``, ``"the
            L_seg-only arm, …"``, ``"the first arm in the study's order …"``); empty when not known.
    """

    table: pd.DataFrame
    baseline: str
    metric: str
    notes: list[str]
    runs: pd.DataFrame
    baseline_reason: str = ""


def choose_baseline(
    arms: Sequence[str], baseline: str | None = None, *, seg_only: Sequence[str] = ()
) -> tuple[str, str]:
    """The baseline arm and why it was chosen.

    ``baseline`` when given (checked, with a did-you-mean); else the first arm of ``arms`` that is in
    ``seg_only`` (trained with L_seg alone); else the first arm. ``arms`` is in the study's order.

    Returns:
        ``(arm, reason)``, the reason as a phrase for the user.

    Raises:
        KeyError: an unknown ``baseline``.
        ValueError: no arm.
    """
    if not arms:
        raise ValueError("no arm to compare")
    if baseline is not None:
        if baseline not in arms:
            raise KeyError(
                f"--baseline {baseline!r} is not an arm{did_you_mean(baseline, arms)} arms: {list(arms)}"
            )
        return baseline, "given with --baseline"
    plain = [a for a in arms if a in set(seg_only)]
    if len(plain) == 1:
        return plain[0], "the L_seg-only arm, without L_fd or an auxiliary loss"
    if plain:
        return plain[0], f"the first of {len(plain)} L_seg-only arms in the study's order"
    return arms[0], "the first arm in the study's order (no arm trains with L_seg alone)"


def _counts_as_int(table: pd.DataFrame) -> pd.DataFrame:
    """The count columns as integers (pandas makes them float when the baseline row lacks them)."""
    out = table.copy()
    for column in COUNT_COLUMNS:
        if column in out.columns:
            out[column] = pd.to_numeric(out[column]).round().astype("Int64")
    return out


def compare_runs(
    paths: Sequence[str | Path],
    *,
    baseline: str | None = None,
    metric: str = "dice",
    split_dir: str = "test",
    arms: Mapping[str, str] | None = None,
    n_boot: int = 10_000,
) -> Comparison:
    """Load runs, group them into arms and compare every arm with the baseline (see module docstring).

    Raises:
        FileNotFoundError / ValueError: no runs, no finished run.
        KeyError: unknown ``baseline`` or ``metric``.
    """
    runs = load_runs(paths, arms=arms)
    per_image, notes = per_image_table(runs, split_dir=split_dir)
    if metric not in per_image.columns:
        cols = [c for c in per_image.columns if c not in ("arm", "seed", "fold", "run", "id")]
        raise KeyError(
            f"--metric {metric!r} is not a per-image column{did_you_mean(metric, cols)} columns: {cols}"
        )
    arm_names = list(dict.fromkeys(per_image["arm"]))
    seg_only = [a for a in arm_names if bool(runs.loc[runs["arm"] == a, "seg_only"].all())]
    base, reason = choose_baseline(arm_names, baseline, seg_only=seg_only)
    table = _counts_as_int(compare_arms(per_image, metric=metric, baseline=base, n_boot=n_boot))
    if len(arm_names) < 2:
        notes.append(f"only one arm ({arm_names[0]!r}): nothing to compare")
    small = table[table["n_images"] < 10]
    for row in small.itertuples():
        notes.append(
            f"warning: arm {row.arm!r} is evaluated on {row.n_images} image(s) per seed (fewer than 10); "
            "use --folds to test on every image"
        )
    return Comparison(table, base, metric, notes, runs, reason)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _f(value: Any, digits: int = 4) -> str:
    if _missing(value):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _n(value: Any) -> str:
    """A count as an integer (``–`` when missing)."""
    return "–" if _missing(value) else str(int(value))


def _p(value: Any) -> str:
    if _missing(value):
        return "–"
    return f"{float(value):.3g}"


def format_comparison(cmp: Comparison) -> str:
    """A plain-text rendering: per arm mean ± sd over seeds, then the paired statistics vs the baseline."""
    lines = []
    if cmp.baseline_reason:
        lines.append(f"baseline: {cmp.baseline} ({cmp.baseline_reason}; pick another with --baseline)")
    lines.append(f"{cmp.metric}: mean ± sd over seeds; Δ = arm − {cmp.baseline} (paired by seed and fold)")
    width = max(len(str(a)) for a in cmp.table["arm"]) + 2
    for row in cmp.table.to_dict("records"):
        spread = f"± {_f(row['sd'])}" if int(row["seeds"]) > 1 else "(1 seed)"
        lines.append(
            f"  {row['arm']:<{width}} {_f(row['mean'])} {spread}  "
            f"[{_n(row['seeds'])} seeds, {_n(row['n_images'])} images/seed]"
        )
    others = [r for r in cmp.table.to_dict("records") if r["arm"] != cmp.baseline]
    for row in others:
        lines.append("")
        lines.append(f"{row['arm']} vs {cmp.baseline}:")
        if "mean_diff" not in row or pd.isna(row.get("mean_diff")):
            lines.append(f"  no paired runs: {row.get('notes', '')}")
            continue
        lines.append(
            f"  Δ over {_n(row['n'])} paired seed(s): {_f(row['mean_diff'])} (sd {_f(row['sd_diff'])}, "
            f"95% t-CI [{_f(row['diff_ci_lo'])}, {_f(row['diff_ci_hi'])}], d_z {_f(row['d_z'], 2)})"
        )
        lines.append(
            f"  paired t-test over seeds:  p = {_p(row['p_t'])} (two-sided), "
            f"{_p(row['p_t_greater'])} (arm > baseline)"
        )
        lines.append(
            f"  Wilcoxon over seeds:       p = {_p(row['p_w'])} (two-sided), "
            f"{_p(row['p_w_greater'])} (arm > baseline)"
        )
        lines.append(
            f"  one-sample t-test (§F5, seeds vs the baseline mean): p = {_p(row['p_1samp'])} (two-sided), "
            f"{_p(row['p_1samp_greater'])} (arm > baseline)"
        )
        lines.append(
            f"  per-image Δ ({_n(row['n_img_pairs'])} images, mean over seeds): {_f(row['img_diff'])}, "
            f"95% bootstrap CI [{_f(row['img_ci_lo'])}, {_f(row['img_ci_hi'])}]"
        )
        if row.get("notes"):
            lines.append(f"  notes: {row['notes']}")
    if cmp.notes:
        lines.append("")
        lines.extend(f"note: {n}" for n in cmp.notes)
    return "\n".join(lines)
