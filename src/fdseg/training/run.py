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

import logging
import random
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import TQDMProgressBar

from fdseg._io import atomic_path
from fdseg.training.build import build_model, build_task
from fdseg.training.config import ExperimentConfig
from fdseg.training.data import RunData, build_run_data
from fdseg.training.heads import is_multiclass
from fdseg.training.history import EpochRecord, HistoryWriter
from fdseg.training.loggers import check_logger, make_logger
from fdseg.training.phases import (
    AtomicCheckpointIO,
    Phase,
    RunCheckpoint,
    StepBudget,
    plan_phases,
    restore_stream,
    steps_per_epoch,
)
from fdseg.training.progress import Echo, summary_lines
from fdseg.training.rundir import (
    CheckpointError,
    RunLock,
    Runtime,
    check_run_config,
    checkpoint_meta,
    load_model_weights,
    prepare_run_dir,
    read_checkpoint,
    resume_meta,
    write_json,
)
from fdseg.training.task import build_optimizer

log = logging.getLogger(__name__)


# -- training -----------------------------------------------------------------------------------------------
def resolved_precision(cfg: ExperimentConfig, runtime: Runtime) -> str:
    """``train.precision`` with ``auto`` resolved: bf16-mixed on CUDA, 32-true elsewhere.

    Raises:
        ValueError: ``16-mixed`` off CUDA (Lightning would silently train in bf16 instead).
    """
    if cfg.train.precision == "16-mixed" and not runtime.cuda:
        raise ValueError(
            f"train.precision='16-mixed' needs a CUDA GPU (fp16 autocast); on {runtime.accelerator} use "
            "bf16-mixed or 32-true"
        )
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
    """The Lightning ``Trainer`` of one phase (it sets PyTorch's global determinism flags).

    Checkpoints are written by :class:`RunCheckpoint` (among ``callbacks``) through an atomic
    :class:`AtomicCheckpointIO`; the ``train.logger`` (none, csv, tensorboard, mlflow, wandb) writes under
    ``<run>/logs``.
    """
    deterministic: Any = {"warn": "warn", "true": True, "false": False}[str(cfg.train.deterministic)]
    bar = _progress_bar(cfg.train.progress_bar)
    with _lightning_quiet():
        trainer = pl.Trainer(
            max_epochs=phase.epochs,
            accelerator=runtime.accelerator,
            devices=_devices(cfg.train.devices),
            strategy=cfg.train.strategy,
            precision=resolved_precision(cfg, runtime),  # type: ignore[arg-type]
            deterministic=deterministic,
            benchmark=True if runtime.cuda and deterministic is not True else None,
            logger=make_logger(cfg.train.logger, root, cfg.name, phase.index),
            plugins=[AtomicCheckpointIO()],
            enable_checkpointing=True,
            enable_progress_bar=bar,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            log_every_n_steps=cfg.train.log_every_n_steps,
            callbacks=[*callbacks, *([PhaseProgressBar(phase)] if bar else [])],
            default_root_dir=str(root),
        )
    # Deterministic algorithms do not need uninitialised memory filled with NaN (PyTorch's default with
    # them, a debugging aid that costs ~5% of a step at 512² on the CPU; bench/deterministic_cost.py)
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    return trainer


class PhaseProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar in the run's own terms: one bar per epoch, described ``phase P epoch e/E``
    (counted from 1, as the epoch lines), kept on screen when the epoch ends, so that the epoch's line
    (:func:`epoch_line`) follows it on a line of its own."""

    def __init__(self, phase: Phase) -> None:
        super().__init__(leave=True)
        self.phase = phase

    def on_train_epoch_start(self, trainer: Any, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        epoch = trainer.current_epoch + 1
        self.train_progress_bar.set_description(f"phase {self.phase.index} epoch {epoch}/{self.phase.epochs}")


def _progress_bar(setting: bool | None) -> bool:
    """``train.progress_bar``; ``None``: on when standard output is a terminal (not a log file or pipe)."""
    if setting is not None:
        return setting
    return bool(getattr(sys.stdout, "isatty", lambda: False)())


def world_size(cfg: ExperimentConfig, runtime: Runtime) -> int:
    """Processes that share each training epoch (``train.devices`` × nodes under the resolved strategy).

    Resolved by Lightning itself, from a ``Trainer`` that is built and dropped (it starts no process and
    touches no device memory), so ``auto`` devices and strategies count as Lightning will count them.

    Raises:
        ValueError: devices or a strategy Lightning refuses (one line naming both keys and its reason).
    """
    try:
        with _lightning_quiet():
            probe = pl.Trainer(
                accelerator=runtime.accelerator,
                devices=_devices(cfg.train.devices),
                strategy=cfg.train.strategy,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
            )
    except Exception as exc:  # Lightning's MisconfigurationException, int("abc"), ...
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(
            f"train.devices={cfg.train.devices!r} / train.strategy={cfg.train.strategy!r} on "
            f"{runtime.accelerator}: {reason}"
        ) from None
    return max(int(probe.world_size), 1)


@contextmanager
def _lightning_quiet() -> Iterator[None]:
    """Silence Lightning's informational lines (device listing, tips) while a ``Trainer`` is built."""
    quiet = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        yield
    finally:
        quiet.setLevel(level)


def is_global_zero() -> bool:
    """Whether this process is rank 0 of a (possibly distributed) run; ``True`` outside DDP."""
    from lightning.pytorch.utilities import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0)) == 0


class _Interrupt(BaseException):
    """Raised by the SIGINT handler; not a KeyboardInterrupt, so Lightning tears down and re-raises it."""


@contextmanager
def _sigint_raises() -> Iterator[None]:
    """While active, Ctrl-C and SIGTERM raise :class:`_Interrupt` (once; further signals are ignored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _Interrupt(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def preflight(cfg: ExperimentConfig) -> None:
    """Check that ``cfg`` can train, on the CPU and without data, before anything is written.

    Builds the model, the L_seg/L_fd losses, the λ strategy and the optimiser, and runs the model (and the
    L_fd terms) once on a dummy batch of one ``data.image_size``² image with a half-foreground mask. The
    global RNG states (torch CPU, NumPy, ``random``) are restored afterwards, so the run's own model
    initialisation is unchanged.

    Raises:
        ValueError / KeyError / TypeError: one line naming the config key: an unknown model, loss or λ
            option, an image size the model cannot take (``data.image_size``), optimiser settings AdamW
            refuses (``optim.*``).
    """
    check_logger(cfg.train.logger)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            model = build_model(cfg)
            probe = Phase(2 if cfg.has_phase2 else 1, 1, 1, False, "best.ckpt")
            task = build_task(cfg, model, probe, warmup=max(cfg.train.epochs_phase1, 1))
            try:
                build_optimizer(task.parameters(), cfg.optim)
                _dry_run(cfg, task)
            finally:
                task.close()
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _dry_run(cfg: ExperimentConfig, task: Any) -> None:
    size, channels = cfg.data.image_size, cfg.model.in_channels
    image = torch.rand(1, channels, size, size)
    mask = torch.zeros(1, 1, size, size)
    mask[..., : size // 2, :] = 1.0
    if is_multiclass(cfg):  # a class-index map (classes 0 and 1)
        mask = mask.long()
    task.eval()
    with torch.no_grad():
        try:
            logits = task.model(image)
        except (RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(
                f"data.image_size={size}: model {cfg.model.name!r} cannot take {size}x{size} inputs ({first})"
            ) from None
        if (
            not isinstance(logits, torch.Tensor)
            or logits.ndim != 4
            or tuple(logits.shape[2:]) != (size, size)
        ):
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(
                f"data.image_size={size}: model {cfg.model.name!r} returns {shape} for a {size}x{size} "
                f"input, expected logits (1, K, {size}, {size})"
            )
        feats = dict(task._tap)
        source = torch.zeros(1, dtype=torch.int64)
        for loss in [*task.fd_losses, *getattr(task, "aux_losses", ())]:
            loss(feats, mask, source=source)


def train_run(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    *,
    runtime: Runtime | None = None,
    callbacks: Sequence[pl.Callback] = (),
    evaluate: bool = True,
    echo: Echo | None = None,
) -> Path:
    """Train (or resume, or skip) one run and evaluate it on its test split.

    Nothing is written before the configuration and the data are checked (:func:`preflight`, then the
    datasets are opened, cached and split). One process at a time trains into a run directory
    (``train.lock``). A rerun resumes exactly from ``checkpoints/last.ckpt``: weights, optimiser, λ
    strategy, data stream and RNG states, so its history equals the uninterrupted run's.

    The caller seeds the global RNGs (``lightning.seed_everything(cfg.train.seed)``) and chooses the
    runtime; the CLI does both.

    Args:
        cfg: the run's configuration.
        run_dir: the run directory (created if needed).
        runtime: accelerator choice; defaults to CPU.
        callbacks: extra Lightning callbacks for every phase.
        evaluate: evaluate the best checkpoint on the test split and write ``test/``.
        echo: where to say what happens (a summary before training, ``resuming from epoch E (phase P)``,
            one line per epoch; see :mod:`fdseg.training.progress`); ``None``: silent.

    Returns:
        ``run_dir``.

    Raises:
        RunConfigMismatchError: the directory holds another configuration.
        RunLockedError: another live process trains into the directory.
        ValueError / KeyError / TypeError: a config that cannot train (before anything is written).
        fdseg.data.errors.DatasetError, FileNotFoundError, ValueError: bad data (before anything is written).
        CheckpointError: ``last.ckpt`` (or ``phase1_best.ckpt``) cannot be loaded (file and reason named).
        NonFiniteLossError: the training diverged (step, phase, term and layer named).
        KeyboardInterrupt: Ctrl-C; the message says at which epoch and phase, and how to resume.
    """
    run_dir = Path(run_dir)
    runtime = runtime or Runtime()
    if (run_dir / "DONE").is_file():
        check_run_config(run_dir, cfg)
        log.info("%s is finished (DONE); skipping", run_dir)
        return run_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(f"{run_dir}: the run directory (--out) is a file")
    lock = RunLock(run_dir)
    progress: dict[str, int] = {}
    try:
        with _sigint_raises():  # from here on, Ctrl-C/SIGTERM end with one line and temp files removed
            check_run_config(run_dir, cfg)
            preflight(cfg)
            world = world_size(cfg, runtime)
            resolved_precision(cfg, runtime)  # refuses what the device cannot do, before anything is written
            data = build_run_data(cfg, run_dir, write_split=False)
            rank_zero = is_global_zero()
            if rank_zero:
                run_dir.mkdir(parents=True, exist_ok=True)
                lock.acquire()
                prepare_run_dir(cfg, run_dir, runtime)
                data.save_split(run_dir / "split.json")
            say = echo if rank_zero else None
            history = _train_phases(cfg, run_dir, data, runtime, world, callbacks, progress, say)
            progress["trained"] = 1
            if not rank_zero:
                return run_dir  # under DDP the other ranks only train; rank 0 evaluates and marks DONE
            if evaluate:
                from fdseg.training.evaluate import evaluate_run

                evaluate_run(run_dir, runtime=runtime, data=data, finished=True)
            _write_figures(run_dir)
            write_json(
                run_dir / "DONE",
                {"finished": datetime.now(UTC).isoformat(timespec="seconds"), "epochs": len(history.rows)},
            )
    except _Interrupt as exc:
        # epochs counted from 1, as in the per-epoch lines ("run epoch E/G")
        where, resume = "before training (checking the config, preparing the data)", ""
        if "trained" in progress:
            where, resume = "after training, while evaluating", " (it evaluates again)"
        elif progress:
            where = f"at epoch {progress['epoch'] + 1} (phase {progress['phase']})"
            resume = _resume_point(run_dir / "checkpoints" / "last.ckpt")
        by = " (SIGTERM)" if exc.args and exc.args[0] == signal.SIGTERM else ""
        raise KeyboardInterrupt(
            f"interrupted {where}{by}; rerun the same command to resume{resume}"
        ) from None
    finally:
        lock.release()
    return run_dir


def _train_phases(
    cfg: ExperimentConfig,
    run_dir: Path,
    data: RunData,
    runtime: Runtime,
    world: int,
    callbacks: Sequence[pl.Callback],
    progress: dict[str, int],
    echo: Echo | None,
) -> HistoryWriter:
    ckpt_dir = run_dir / "checkpoints"
    history = HistoryWriter(run_dir / "history.csv")
    steps = steps_per_epoch(data.n_train, cfg.train.batch_size, world)
    phases = plan_phases(cfg, steps)
    total = sum(p.epochs for p in phases)
    with _resume_hint():
        meta = resume_meta(ckpt_dir / "last.ckpt")
    if echo is not None:
        with torch.random.fork_rng(devices=[]):
            model = build_model(cfg)
        counts = {name: len(data.positions(name)) for name in ("train", "val", "test", "novel")}
        device = "gpu (CUDA)" if runtime.cuda else runtime.accelerator
        for line in summary_lines(
            cfg, counts=counts, model=model, device=device, precision=resolved_precision(cfg, runtime),
            phases=phases, steps_per_epoch=steps,
        ):  # fmt: skip
            echo(line)
    notice = None
    if meta is not None:  # said once the checkpoint's weights have loaded
        nxt = int(meta["epoch"]) + 1
        where = next((p.index for p in phases if nxt < p.epoch_offset + p.epochs), phases[-1].index)
        notice = f"resuming from epoch {nxt + 1} (phase {where})"  # counted from 1, as the epoch lines
        if nxt >= total:
            notice = f"training finished at epoch {total} (last.ckpt); evaluating again"
    for phase in phases:
        resume = meta is not None and int(meta["phase"]) == phase.index
        if meta is not None and int(meta["phase"]) > phase.index:
            continue
        if resume and meta is not None:
            history.truncate_after(int(meta["epoch"]))
        record = EpochRecord(history, phase, echo, total)
        _train_phase(
            cfg, phase, data, runtime, ckpt_dir, [record, *callbacks],
            resume=resume, warmup=phases[0].epochs, progress=progress,
            echo=echo, notice=notice,
        )  # fmt: skip
        notice = None
        meta = None
    return history


@contextmanager
def _resume_hint() -> Iterator[None]:
    """A ``last.ckpt`` that cannot be resumed: its error also says how to start the run again."""
    try:
        yield
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; delete it to train this run from its start") from None


def _train_phase(
    cfg: ExperimentConfig,
    phase: Phase,
    data: RunData,
    runtime: Runtime,
    ckpt_dir: Path,
    callbacks: Sequence[pl.Callback],
    *,
    resume: bool,
    warmup: int,
    progress: dict[str, int],
    echo: Echo | None = None,
    notice: str | None = None,
) -> None:
    """Train one phase; ``notice`` (the resume line) is echoed once ``last.ckpt``'s weights have loaded."""
    model = build_model(cfg)
    task = build_task(cfg, model, phase, warmup=warmup, cuda=runtime.cuda)
    last_path = ckpt_dir / "last.ckpt"
    if resume:
        # a checkpoint of another architecture is a one-line error here, not a traceback from Lightning
        with _resume_hint():
            load_model_weights(model, last_path)
        if echo is not None and notice is not None:
            echo(notice)
    elif phase.index == 2:
        # weights of phase 1's best epoch; λ strategy, loss generators, data stream and RNGs as phase 1
        # left them in last.ckpt (read from disk on every path, so a rerun starts phase 2 identically)
        load_model_weights(model, ckpt_dir / "phase1_best.ckpt")
        last = read_checkpoint(last_path)
        if task.lambda_strategy is not None and "fdseg_lambda" in last:
            task.lambda_strategy.load_state_dict(last["fdseg_lambda"])
        extra = {k: v for k, v in last.get("state_dict", {}).items() if not k.startswith("model.")}
        task.load_state_dict(extra, strict=False)
        restore_stream(last, data.stream)
    recorder = RunCheckpoint(ckpt_dir, phase, cfg.train.checkpoint_every_s, data.stream)
    # Lightning calls Checkpoint callbacks last, in list order: the history row, then the checkpoints
    budget = [StepBudget(phase.steps)] if phase.steps is not None else []
    trainer = make_trainer(cfg, phase, runtime, [*budget, *callbacks, recorder], ckpt_dir.parent)
    loaders = data.loaders(cfg)
    ckpt_path = str(last_path) if resume else None
    try:
        trainer.fit(task, loaders.train, loaders.val, ckpt_path=ckpt_path, weights_only=True)
    except _Interrupt:
        progress.update(phase=phase.index, epoch=recorder.epoch if recorder.epoch is not None else -1)
        raise
    finally:
        task.close()
    if trainer.interrupted:  # Lightning caught the interrupt itself (outside the main thread)
        progress.update(phase=phase.index, epoch=recorder.epoch if recorder.epoch is not None else -1)
        raise _Interrupt(signal.SIGINT)


def _resume_point(last: Path) -> str:
    """Where a rerun starts: `` from epoch E (last.ckpt)`` (counted from 1), or from the beginning."""
    try:
        meta = checkpoint_meta(last)
    except CheckpointError:
        meta = None
    if meta is None:
        return " (nothing is saved yet: it starts again from epoch 1)"
    return f" from epoch {int(meta['epoch']) + 2} (last.ckpt; written every train.checkpoint_every_s)"


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
        with atomic_path(out / f"{name}.png") as tmp:
            fig.savefig(tmp, format="png", dpi=90)
        plt.close(fig)
