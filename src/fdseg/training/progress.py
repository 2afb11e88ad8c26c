"""What a run says while it trains: a summary before, one line per epoch, the outcome and its warnings after.

Everything goes through an ``echo`` callable chosen by the caller (the CLI prints to stdout); nothing here
prints by itself, and only rank 0 of a distributed run speaks. The lines do not depend on the progress bar.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fdseg.training.config import ExperimentConfig
from fdseg.training.rundir import checkpoint_meta

if TYPE_CHECKING:  # lightning (imported by phases) is not needed to speak about a finished run
    from torch import nn

    from fdseg.training.phases import Phase

Echo = Callable[[str], None]


def summary_lines(
    cfg: ExperimentConfig,
    *,
    counts: Mapping[str, int],
    model: nn.Module,
    device: str,
    precision: str,
    phases: Sequence[Phase],
    steps_per_epoch: int,
) -> list[str]:
    """The block printed before training.

    Args:
        cfg: the run's configuration.
        counts: items per set: ``train`` (base), ``novel``, ``val``, ``test``.
        model: the network (for its parameter count).
        device: accelerator in words (``cpu``, ``gpu``).
        precision: the resolved Lightning precision.
        phases: the planned phases.
        steps_per_epoch: optimiser steps per epoch (per process).
    """
    params = sum(p.numel() for p in model.parameters())
    unit = "tiles" if cfg.data.preprocess == "tile" else "images"
    lines = [
        f"data: base {cfg.data.base}",
        f"      train {counts.get('train', 0)}, val {counts.get('val', 0)}, "
        f"test {counts.get('test', 0)} {unit}",
    ]
    if cfg.data.novel:
        lines.append(f"      novel {cfg.data.novel}: {counts.get('novel', 0)} {unit} added to training")
    lines.append(f"model: {cfg.model.name} ({params / 1e6:.2f} M parameters), input {cfg.data.image_size}²")
    lines.append(f"device: {device}, precision {precision}")
    for phase in phases:
        what = "λ = 0" if phase.lambda_zero else f"L_fd on ({cfg.loss.lambda_strategy} λ)"
        lines.append(
            f"phase {phase.index}: {phase.epochs} epoch{'s' * (phase.epochs != 1)} x {steps_per_epoch} steps"
            f"{_budget(phase, steps_per_epoch)}, {what} -> checkpoints/{phase.best_name}"
        )
    return lines


def _budget(phase: Phase, steps_per_epoch: int) -> str:
    """`` (N steps: k in the last epoch)`` when the phase's step budget cuts its last epoch short."""
    if phase.steps is None or phase.steps == phase.epochs * steps_per_epoch:
        return ""
    last = phase.steps - (phase.epochs - 1) * steps_per_epoch
    return f" ({phase.steps} steps: {last} in the last epoch)"


def epoch_line(
    phase: Phase, epoch_in_phase: int, total_epochs: int, stats: Mapping[str, float], seconds: float
) -> str:
    """``phase P epoch e/E (run epoch g/G): train loss …, val Dice …, λ a–b, t s`` (``λ a`` when every layer
    has the same λ, ``λ -`` without L_fd)."""
    lambdas = [v for k, v in stats.items() if k.startswith("lambda/")]
    low, high = (min(lambdas), max(lambdas)) if lambdas else (math.nan, math.nan)
    lam = "λ -" if not lambdas else f"λ {low:g}" if low == high else f"λ {low:g}–{high:g}"
    global_epoch = phase.epoch_offset + epoch_in_phase
    return (
        f"phase {phase.index} epoch {epoch_in_phase + 1}/{phase.epochs} (run epoch {global_epoch + 1}/"
        f"{total_epochs}): train loss {_fmt(stats.get('train_loss'))}, "
        f"val Dice {_fmt(stats.get('val_dice'))}, {lam}, {seconds:.1f} s"
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def outcome_lines(run_dir: Path) -> list[str]:
    """After a run: its best validation Dice and epoch, the test Dice with its n, where the outputs are, and
    warnings when it learnt nothing.

    Raises:
        CheckpointError: ``checkpoints/best.ckpt`` exists but cannot be read.

    Warns when the validation Dice is 0 at every epoch, and when every test prediction is empty or all
    foreground (a constant prediction).
    """
    lines: list[str] = []
    best = checkpoint_meta(run_dir / "checkpoints" / "best.ckpt")
    if best is not None and int(best.get("best_epoch", -1)) >= 0:
        lines.append(
            f"best val Dice {_fmt(best['best_val_dice'])} at epoch {int(best['best_epoch']) + 1} (phase "
            f"{best['phase']}): {run_dir / 'checkpoints' / 'best.ckpt'}"
        )
    summary_path = run_dir / "test" / "summary.json"
    if summary_path.is_file():
        summary: dict[str, Any] = json.loads(summary_path.read_text(encoding="utf-8"))
        dice = summary.get("mean", {}).get("dice")
        which = summary.get("checkpoint", "best")
        lines.append(f"test Dice {_fmt(dice)} (n = {summary.get('n')}, {which} checkpoint): {summary_path}")
    per_sample = run_dir / "test" / "per_sample.csv"
    if per_sample.is_file():
        with per_sample.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        if rows and all("tp" in r and int(r["tp"]) + int(r["fp"]) == 0 for r in rows):
            lines.append(
                f"warning: every test prediction is empty ({len(rows)} images): the model predicts no "
                f"foreground"
            )
        elif rows and all("tn" in r and int(r["tn"]) + int(r["fn"]) == 0 for r in rows):
            lines.append(
                f"warning: every test prediction is all foreground ({len(rows)} images): the model marks "
                f"every pixel, so IoU is the foreground fraction f (Dice 2f/(1+f))"
            )
    history = run_dir / "history.csv"
    if history.is_file():
        with history.open(newline="", encoding="utf-8") as fh:
            dices = [float(r["val_dice"]) for r in csv.DictReader(fh) if r.get("val_dice") not in (None, "")]
        if dices and all(d == 0.0 for d in dices):
            lines.append(
                f"warning: the validation Dice stayed 0 in all {len(dices)} epochs: the run learnt no "
                f"foreground (check the masks with fdseg data check, or the learning rate)"
            )
    present = [
        name
        for name in ("history.csv", "checkpoints/", "test/", "figures/", "logs/")
        if (run_dir / name).exists()
    ]
    lines.append(f"outputs: {run_dir} ({', '.join(present)})")
    return lines
