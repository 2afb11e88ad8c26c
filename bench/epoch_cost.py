"""Wall time of a training epoch: fdseg's ``train_run`` against a plain PyTorch loop (same process).

The problem is real-TNBC-sized: ``--n`` synthetic nuclei images of ``--size``² (``--n 53`` gives 36
training and 6 validation images under the paper split), batch ``--batch``, NucleiSegNet at ``--width``,
L_seg + L_fd over every tapped layer.

fdseg runs 1 + ``--epochs`` epochs with its defaults (validation every epoch, ``history.csv``, ``last.ckpt``
every ``train.checkpoint_every_s`` = 120 s and at the phase's end, best weights kept in memory and written
with it). Phase 2 (L_fd on) is timed from its start to its end, the phase-end checkpoint included, and split
into training steps, validation, checkpoint I/O (``RunCheckpoint``'s writes) and epoch-end work (the epoch
means, the history row, the λ update).

The plain loop trains the same model class on the same training loader with the same loss modules (forward
with feature hooks, L_seg + L_fd, backward, AdamW) for 1 + ``--epochs`` epochs and times the last
``--epochs``; after each epoch it runs fdseg's validation (the validation loader, no gradients, hard Dice
per image and L_seg), timed apart. The two alternate ``--repeats`` times; medians are reported, and the
median training step (batch in hand to optimiser step done) of each.

    PYTHONPATH=src .venv/bin/python bench/epoch_cost.py [--n 53] [--size 512] [--batch 4] [--width 8]

Reports plain/fdseg per epoch (1.0 = no overhead; the goal is >= 0.95) twice: against the plain loop with
the same validation (like for like: what fdseg adds is its bookkeeping), and against the plain loop's
training alone (what fdseg's default validation every epoch costs on top). Writes
bench/results/epoch_cost.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from fdseg.metrics import segmentation_metrics
from fdseg.training.build import build_model, build_task
from fdseg.training.config import ExperimentConfig
from fdseg.training.data import build_run_data
from fdseg.training.history import EpochRecord
from fdseg.training.phases import Phase, RunCheckpoint
from fdseg.training.run import train_run
from fdseg.training.task import SegmentationTask


def _config(root: Path, args: argparse.Namespace) -> ExperimentConfig:
    base = f"synthetic:{root / 'base'}?family=nuclei&site=base&n={args.n}&seed=0&size={args.size}"
    return ExperimentConfig.from_dict({
        "schema": 1,
        "data": {"base": base, "image_size": args.size, "split_scheme": "paper", "split_seed": 0,
                 "cache_dir": str(root / "cache")},
        "model": {"name": "nucleisegnet", "kwargs": {"base_width": args.width}},
        "loss": {"fd": True, "lambda_kwargs": {"ramp_epochs": 1}},
        "train": {"epochs_phase1": 1, "epochs_phase2": args.epochs, "batch_size": args.batch,
                  "progress_bar": False, "num_workers": 0},
    })  # fmt: skip


class _Clock(pl.Callback):
    """Phase 2: its start and end (teardown, after the phase-end checkpoint), steps and validation."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}
        self.steps: list[float] = []
        self.validation = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.t = {"start": time.perf_counter()}
        self.steps, self.validation = [], 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *a: Any) -> None:
        self._b = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *a: Any) -> None:
        self.steps.append(time.perf_counter() - self._b)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._v = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.validation += time.perf_counter() - self._v

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.t["end"] = time.perf_counter()


def _timed(cls: Any, name: str, into: list[float]) -> Any:
    """Replace ``cls.name`` by a wrapper adding its phase-2 wall time to ``into``; returns the original."""
    original = getattr(cls, name)

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            phase = getattr(self.phase, "index", self.phase)  # a Phase, or the task's phase number
            if phase == 2:
                into.append(time.perf_counter() - start)

    setattr(cls, name, wrapper)
    return original


def _step_stats(steps: list[float]) -> dict[str, float]:
    """Median, mean and slowest of the timed training steps (seconds)."""
    return {
        "median_step_s": statistics.median(steps),
        "mean_step_s": statistics.fmean(steps),
        "max_step_s": max(steps),
    }


def fdseg_epoch(cfg: ExperimentConfig, root: Path) -> dict[str, float]:
    """Seconds per epoch of fdseg's phase 2, and of its parts."""
    ckpt_s: list[float] = []
    record_s: list[float] = []
    module_s: list[float] = []

    patched = [
        (RunCheckpoint, "_save", _timed(RunCheckpoint, "_save", ckpt_s)),  # best and last.ckpt
        (EpochRecord, "on_train_epoch_end", _timed(EpochRecord, "on_train_epoch_end", record_s)),
        (SegmentationTask, "on_train_epoch_end", _timed(SegmentationTask, "on_train_epoch_end", module_s)),
    ]
    clock = _Clock()
    try:
        pl.seed_everything(0, verbose=False)
        train_run(cfg, root, callbacks=[clock], evaluate=False)
    finally:
        for cls, name, original in patched:
            setattr(cls, name, original)
    epochs = cfg.train.epochs_phase2
    total = clock.t["end"] - clock.t["start"]
    parts = {
        "train_steps_s": sum(clock.steps),
        "validation_s": clock.validation,
        "checkpoint_io_s": sum(ckpt_s),
        "epoch_end_s": sum(record_s) + sum(module_s),
    }
    parts["other_s"] = total - sum(parts.values())
    per_epoch = {k: v / epochs for k, v in parts.items()}
    return {"epoch_s": total / epochs, **per_epoch, **_step_stats(clock.steps)}


def plain_epoch(cfg: ExperimentConfig, root: Path) -> dict[str, float]:
    """Seconds of one plain-PyTorch epoch over the same loaders: training, and the same validation pass."""
    pl.seed_everything(0, verbose=False)
    data = build_run_data(cfg, root, write_split=False)
    model = build_model(cfg)
    task = build_task(cfg, model, Phase(2, 1, 1, False, "best.ckpt"), warmup=1)  # its loss modules only
    seg, fds, tap = task.seg_loss, list(task.fd_losses), task._tap
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    train_s = val_s = 0.0
    steps: list[float] = []
    for epoch in range(1 + cfg.train.epochs_phase2):  # the first epoch warms up (as fdseg's phase 1)
        loaders = data.loaders(cfg)
        model.train()
        start = time.perf_counter()
        for batch in loaders.train:
            step_start = time.perf_counter()
            mask = batch["mask"]
            logits = model(batch["image"])
            loss = seg(logits.float(), mask)
            feats = dict(tap)
            for fd in fds:
                loss = loss + fd(feats, mask, source=batch.get("source")).total
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if epoch:
                steps.append(time.perf_counter() - step_start)
        middle = time.perf_counter()
        model.eval()  # the validation fdseg runs: hard Dice per image and L_seg, no gradients
        dice, val_loss = [], []
        with torch.no_grad():
            for batch in loaders.val:
                logits = model(batch["image"]).float()
                dice.append(segmentation_metrics(logits, batch["mask"])["dice"][:, 0])
                val_loss.append(seg(logits, batch["mask"]))
        float(torch.cat(dice).mean()), float(torch.stack(val_loss).mean())
        if epoch:
            train_s += middle - start
            val_s += time.perf_counter() - middle
    task.close()
    epochs = cfg.train.epochs_phase2
    return {
        "train_s": train_s / epochs,
        "validation_s": val_s / epochs,
        **_step_stats(steps),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=53, help="synthetic images (53: 36 train, 6 val, 11 test)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (phase 2; plain: after one)")
    parser.add_argument("--size", type=int, default=512, help="image side after resizing (pixels)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--width", type=int, default=8, help="NucleiSegNet base_width (paper: 32)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--repeats", type=int, default=2, help="plain, fdseg, plain, fdseg, ... (medians)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "epoch_cost.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = _config(root, args).with_overrides(args.set)
        build_run_data(cfg, root / "warm", write_split=False)  # generate and cache the images once
        plains, fdsegs = [], []
        for r in range(args.repeats):  # alternated, so that a drift of the machine's speed hits both
            plains.append(plain_epoch(cfg, root / f"plain{r}"))
            fdsegs.append(fdseg_epoch(cfg, root / f"fdseg{r}"))
    plain = {k: statistics.median(p[k] for p in plains) for k in plains[0]}
    parts = {k: statistics.median(p[k] for p in fdsegs) for k in fdsegs[0]}
    epoch_s = parts["epoch_s"]
    plain_full = plain["train_s"] + plain["validation_s"]
    ratios = {"like_for_like": plain_full / epoch_s, "train_only": plain["train_s"] / epoch_s}
    rows = [("plain: training", plain["train_s"]), ("plain: validation", plain["validation_s"]),
            ("plain epoch (both)", plain_full), ("fdseg epoch", epoch_s)]  # fmt: skip
    rows += [
        (f"  {k[:-2].replace('_', ' ')}", v)
        for k, v in parts.items()
        if k not in ("epoch_s", "median_step_s", "mean_step_s", "max_step_s")
    ]
    print(f"{'':28s}{'seconds':>10s}{'share':>8s}")
    for name, value in rows:
        share = f"{value / epoch_s:8.1%}" if name.startswith("  ") else ""
        print(f"{name:28s}{value:10.3f}{share}")
    print(
        f"median training step: plain {plain['median_step_s']:.3f} s, fdseg {parts['median_step_s']:.3f} s "
        f"(plain/fdseg {plain['median_step_s'] / parts['median_step_s']:.3f}); "
        f"mean {plain['mean_step_s']:.3f} vs {parts['mean_step_s']:.3f} s, "
        f"slowest {plain['max_step_s']:.3f} vs {parts['max_step_s']:.3f} s"
    )
    print(
        f"plain/fdseg per epoch = {ratios['like_for_like']:.3f} with the same validation in both loops, "
        f"{ratios['train_only']:.3f} against a plain loop that does not validate (goal >= 0.95)"
    )
    result = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "plain": plain,
        "fdseg": parts,
        "repeats": {"plain": plains, "fdseg": fdsegs},
        "plain_over_fdseg": ratios,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
