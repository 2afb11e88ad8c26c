"""A run on disk: prepare the directory, train both phases (resumable), evaluate, mark it ``DONE``.

Layout (design.md §3)::

    <run>/config.yaml  env.json  split.json
    <run>/checkpoints/{phase1_best,best,last}.ckpt
    <run>/history.csv
    <run>/test/per_sample.csv  <run>/test/summary.json
    <run>/figures/*.png
    <run>/DONE

Every file is written atomically (temp file + rename). A directory that already holds a run of another
configuration is refused before anything is trained (:class:`RunConfigMismatchError`). A finished run
(``DONE``) is skipped. An interrupted run resumes from ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import random
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

import fdseg
from fdseg.training.build import build_model, build_task
from fdseg.training.config import ExperimentConfig
from fdseg.training.data import RunData, build_run_data
from fdseg.training.history import HistoryWriter, atomic_write_text
from fdseg.training.phases import Phase, RunRecorder, plan_phases, steps_per_epoch

log = logging.getLogger(__name__)

#: Keys that may differ between the saved and the requested config of a run (they do not change results).
RUNTIME_KEYS = frozenset({"train.progress_bar", "train.num_workers", "train.log_every_n_steps"})


class RunConfigMismatchError(ValueError):
    """The run directory belongs to another configuration."""


@dataclass(frozen=True)
class Runtime:
    """Where and how a run executes (chosen by the caller, e.g. the CLI).

    Attributes:
        accelerator: Lightning accelerator: ``cpu`` or ``gpu`` (``auto`` lets Lightning choose).
        cuda: whether the accelerator is a CUDA GPU; enables bf16 autocast (precision ``auto``),
            channels-last, cudnn benchmark and fused AdamW.
    """

    accelerator: str = "cpu"
    cuda: bool = False


# -- run directory ------------------------------------------------------------------------------------------
def write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and not name.endswith("kwargs") and "options" not in key:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def check_run_config(run_dir: Path, cfg: ExperimentConfig) -> bool:
    """Compare ``cfg`` with ``<run>/config.yaml``.

    Returns:
        ``True`` when the directory already holds this run's config, ``False`` when it holds none.

    Raises:
        RunConfigMismatchError: the saved config differs (the message lists the differing keys).
    """
    path = run_dir / "config.yaml"
    if not path.is_file():
        return False
    saved = ExperimentConfig.from_yaml(path)
    old, new = _flatten(saved.to_dict()), _flatten(cfg.to_dict())
    diff = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in RUNTIME_KEYS)
    if diff:
        shown = "; ".join(f"{k}: {old.get(k)!r} (saved) vs {new.get(k)!r}" for k in diff[:6])
        raise RunConfigMismatchError(
            f"{run_dir} holds a run of another configuration ({shown}); use another --out directory or "
            f"delete {run_dir}"
        )
    return True


def environment_info(runtime: Runtime) -> dict[str, Any]:
    """Versions, git sha and device, for ``env.json``."""
    import lightning
    import monai
    import numpy

    info: dict[str, Any] = {
        "fdseg": fdseg.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "monai": monai.__version__,
        "numpy": numpy.__version__,
        "git_sha": _git_sha(),
        "accelerator": runtime.accelerator,
        "device": torch.cuda.get_device_name(0) if runtime.cuda else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return info


def _git_sha() -> str | None:
    root = Path(__file__).resolve().parents[3]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else None


def check_buildable(cfg: ExperimentConfig) -> None:
    """Build the model, the L_seg/L_fd losses and the λ strategy once on the CPU, without data.

    This fails on a configuration that cannot train (an unknown model, loss or λ option) before the run
    directory is created, so a rejected config is never saved as ``config.yaml``. The global RNG states
    (torch CPU, NumPy, ``random``) are restored afterwards, so the run's own model initialisation is
    unchanged.

    Raises:
        ValueError / KeyError / TypeError: from the builders, naming the bad option.
    """
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            model = build_model(cfg)
            probe = Phase(2 if cfg.has_phase2 else 1, 1, 1, False, "best.ckpt")
            build_task(cfg, model, probe, warmup=max(cfg.train.epochs_phase1, 1)).close()
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def prepare_run_dir(cfg: ExperimentConfig, run_dir: Path, runtime: Runtime) -> None:
    """Create the directory, refuse a foreign config, write ``config.yaml`` and ``env.json``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if not check_run_config(run_dir, cfg):
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    write_json(run_dir / "env.json", environment_info(runtime))
    (run_dir / "checkpoints").mkdir(exist_ok=True)


def checkpoint_meta(path: Path) -> dict[str, Any] | None:
    """The ``fdseg`` stamp (phase, epoch, best Dice) of a checkpoint, or ``None`` when it is absent."""
    if not path.is_file():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    meta = ckpt.get("fdseg")
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: not an fdseg checkpoint (no 'fdseg' entry)")
    return meta


def load_model_weights(model: torch.nn.Module, path: Path) -> None:
    """Load the network weights of a run checkpoint (keys ``model.*`` of the task) into ``model``."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    if not state:
        raise ValueError(f"{path}: holds no 'model.*' weights")
    model.load_state_dict(state)


# -- training -----------------------------------------------------------------------------------------------
def resolved_precision(cfg: ExperimentConfig, runtime: Runtime) -> str:
    """``train.precision`` with ``auto`` resolved: bf16-mixed on CUDA, 32-true elsewhere."""
    if cfg.train.precision != "auto":
        return cfg.train.precision
    return "bf16-mixed" if runtime.cuda else "32-true"


def _devices(value: str) -> Any:
    if value == "auto":
        return "auto"
    if value.lstrip("-").isdigit():
        return int(value)
    return [int(v) for v in value.strip("[]").split(",") if v.strip()]


def make_trainer(
    cfg: ExperimentConfig, phase: Phase, runtime: Runtime, callbacks: Sequence[pl.Callback], root: Path
) -> pl.Trainer:
    """The Lightning ``Trainer`` of one phase (no Lightning logger or checkpointing: :class:`RunRecorder`)."""
    deterministic: Any = {"warn": "warn", "true": True, "false": False}[cfg.train.deterministic]
    return pl.Trainer(
        max_epochs=phase.epochs,
        accelerator=runtime.accelerator,
        devices=_devices(cfg.train.devices),
        strategy=cfg.train.strategy,
        precision=resolved_precision(cfg, runtime),  # type: ignore[arg-type]
        deterministic=deterministic,
        benchmark=True if runtime.cuda and deterministic is not True else None,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=cfg.train.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=cfg.train.log_every_n_steps,
        callbacks=list(callbacks),
        default_root_dir=str(root),
    )


def world_size(cfg: ExperimentConfig, runtime: Runtime) -> int:
    """Processes that share each training epoch (``train.devices`` × nodes under the resolved strategy).

    Resolved by Lightning itself, from a ``Trainer`` that is built and dropped (it starts no process and
    touches no device memory), so ``auto`` devices and strategies count as Lightning will count them.
    """
    quiet = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        probe = pl.Trainer(
            accelerator=runtime.accelerator,
            devices=_devices(cfg.train.devices),
            strategy=cfg.train.strategy,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    finally:
        quiet.setLevel(level)
    return max(int(probe.world_size), 1)


def is_global_zero() -> bool:
    """Whether this process is rank 0 of a (possibly distributed) run; ``True`` outside DDP."""
    from lightning.pytorch.utilities import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0)) == 0


def train_run(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    *,
    runtime: Runtime | None = None,
    callbacks: Sequence[pl.Callback] = (),
    evaluate: bool = True,
) -> Path:
    """Train (or resume, or skip) one run and evaluate it on its test split.

    The caller seeds the global RNGs (``lightning.seed_everything(cfg.train.seed)``) and chooses the
    runtime; the CLI does both.

    Args:
        cfg: the run's configuration.
        run_dir: the run directory (created if needed).
        runtime: accelerator choice; defaults to CPU.
        callbacks: extra Lightning callbacks for every phase.
        evaluate: evaluate the best checkpoint on the test split and write ``test/``.

    Returns:
        ``run_dir``.

    Raises:
        RunConfigMismatchError: the directory holds another configuration.
        ValueError / KeyError / TypeError: a model, loss or λ option that cannot be built (before the run
            directory is created or written).
        fdseg.data.errors.DatasetError, FileNotFoundError, ValueError: bad data (before training starts).
        NonFiniteLossError: the loss became NaN/inf (step and term named).
    """
    run_dir = Path(run_dir)
    runtime = runtime or Runtime()
    if (run_dir / "DONE").is_file():
        check_run_config(run_dir, cfg)
        log.info("%s is finished (DONE); skipping", run_dir)
        return run_dir
    check_buildable(cfg)
    prepare_run_dir(cfg, run_dir, runtime)
    data = build_run_data(cfg, run_dir)
    ckpt_dir = run_dir / "checkpoints"
    history = HistoryWriter(run_dir / "history.csv")
    world = world_size(cfg, runtime)
    phases = plan_phases(cfg, steps_per_epoch(data.n_train, cfg.train.batch_size, world))
    meta = checkpoint_meta(ckpt_dir / "last.ckpt")
    for phase in phases:
        resume = meta is not None and int(meta["phase"]) == phase.index
        if meta is not None and int(meta["phase"]) > phase.index:
            continue
        if resume and meta is not None:
            history.truncate_after(int(meta["epoch"]))
        _train_phase(
            cfg, phase, data, runtime, history, ckpt_dir, callbacks, resume=resume, warmup=phases[0].epochs
        )
        meta = None
    if not is_global_zero():
        return run_dir  # under DDP the other ranks only train; rank 0 evaluates and marks the run DONE
    if evaluate:
        from fdseg.training.evaluate import evaluate_run

        evaluate_run(run_dir, runtime=runtime, data=data)
    _write_figures(run_dir)
    write_json(
        run_dir / "DONE",
        {"finished": datetime.now(UTC).isoformat(timespec="seconds"), "epochs": len(history.rows)},
    )
    return run_dir


def _train_phase(
    cfg: ExperimentConfig,
    phase: Phase,
    data: RunData,
    runtime: Runtime,
    history: HistoryWriter,
    ckpt_dir: Path,
    callbacks: Sequence[pl.Callback],
    *,
    resume: bool,
    warmup: int,
) -> None:
    model = build_model(cfg)
    task = build_task(cfg, model, phase, warmup=warmup, cuda=runtime.cuda)
    if phase.index == 2 and not resume:
        # weights of phase 1's best epoch; the λ strategy as phase 1 left it (it saw the whole warm-up)
        load_model_weights(model, ckpt_dir / "phase1_best.ckpt")
        last = torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=True)
        if task.lambda_strategy is not None and "fdseg_lambda" in last:
            task.lambda_strategy.load_state_dict(last["fdseg_lambda"])
    recorder = RunRecorder(ckpt_dir, history, phase)
    trainer = make_trainer(cfg, phase, runtime, [recorder, *callbacks], ckpt_dir.parent)
    loaders = data.loaders(cfg)
    ckpt_path = str(ckpt_dir / "last.ckpt") if resume else None
    try:
        trainer.fit(task, loaders.train, loaders.val, ckpt_path=ckpt_path, weights_only=True)
    finally:
        task.close()
    if trainer.interrupted:
        raise KeyboardInterrupt(f"training interrupted in phase {phase.index}; rerun to resume")


def _write_figures(run_dir: Path) -> None:
    """Training curves, per-layer L_fd/λ curves and per-image Dice vs L_fd into ``<run>/figures/``."""
    import matplotlib.pyplot as plt
    import pandas as pd

    from fdseg.viz.curves import plot_layer_curves, plot_training_curves
    from fdseg.viz.per_sample import plot_dice_vs_fd

    out = run_dir / "figures"
    out.mkdir(exist_ok=True)
    history = pd.read_csv(run_dir / "history.csv")
    figures = {"training_curves": plot_training_curves(history, title=run_dir.name)}
    for prefix, name in (("fd/", "fd_curves"), ("lambda/", "lambda_curves")):
        if any(c.startswith(prefix) for c in history.columns):
            figures[name] = plot_layer_curves(history, prefix)
    per_sample = run_dir / "test" / "per_sample.csv"
    if per_sample.is_file():
        table = pd.read_csv(per_sample)
        if any(c.startswith("fd/") for c in table.columns):
            figures["dice_vs_fd"] = plot_dice_vs_fd(table)
    for name, fig in figures.items():
        tmp = out / f"{name}.png.tmp"
        fig.savefig(tmp, format="png", dpi=90)
        plt.close(fig)
        os.replace(tmp, out / f"{name}.png")


def read_config(run_dir: str | Path) -> ExperimentConfig:
    """The configuration saved in a run directory."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not an fdseg run directory (no config.yaml)")
    return ExperimentConfig.from_yaml(path)
