"""Wall time of one training epoch: fdseg's ``train_run`` against a plain PyTorch loop (same process).

The problem is TNBC-sized: ``--n`` synthetic nuclei images (their training split is the epoch), resized to
``--size``², batch ``--batch``, NucleiSegNet at ``--width``, L_seg + L_fd over every tapped layer. fdseg runs
1 + 1 epochs with its defaults (validation every epoch, ``history.csv``, ``last.ckpt`` and best checkpoints);
the phase-2 epoch (L_fd on) is timed and split with callback timestamps into training steps, validation,
checkpoint I/O (``atomic_save_checkpoint`` timed) and logging (the history row and the epoch statistics).
The plain loop trains the same model class on the same training loader with the same loss modules
(forward with feature hooks, L_seg + L_fd, backward, AdamW) for two epochs and times the second, without
validation or files.

    PYTHONPATH=src .venv/bin/python bench/epoch_cost.py [--n 50] [--size 512] [--batch 4] [--width 8]

Reports plain/fdseg (1.0 = no overhead; the goal is >= 0.95). Writes bench/results/epoch_cost.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

import fdseg.training.phases as phases
from fdseg.training.build import build_model, build_task
from fdseg.training.config import ExperimentConfig
from fdseg.training.data import build_run_data
from fdseg.training.phases import Phase
from fdseg.training.run import train_run


def _config(root: Path, args: argparse.Namespace) -> ExperimentConfig:
    base = f"synthetic:{root / 'base'}?family=nuclei&site=base&n={args.n}&seed=0&size={args.size}"
    return ExperimentConfig.from_dict({
        "schema": 1,
        "data": {"base": base, "image_size": args.size, "split_scheme": "paper", "split_seed": 0,
                 "cache_dir": str(root / "cache")},
        "model": {"name": "nucleisegnet", "kwargs": {"base_width": args.width}},
        "loss": {"fd": True, "lambda_kwargs": {"ramp_epochs": 1}},
        "train": {"epochs_phase1": 1, "epochs_phase2": 1, "batch_size": args.batch, "progress_bar": False,
                  "num_workers": 0},
    })  # fmt: skip


class _Clock(pl.Callback):
    """Timestamps of the phase-2 epoch (after fdseg's recorder, which writes history and checkpoints)."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}
        self.steps = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.t = {"start": time.perf_counter()}
        self.steps = 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *a: Any) -> None:
        self._b = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *a: Any) -> None:
        self.steps += time.perf_counter() - self._b

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.t["val_start"] = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.t["val_end"] = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.t["end"] = time.perf_counter()


def fdseg_epoch(cfg: ExperimentConfig, root: Path) -> dict[str, float]:
    """Seconds of fdseg's phase-2 epoch and of its parts."""
    ckpt_s: list[float] = []
    save = phases.atomic_save_checkpoint

    def timed_save(trainer: pl.Trainer, path: Path) -> None:
        start = time.perf_counter()
        save(trainer, path)
        ckpt_s.append(time.perf_counter() - start)

    phases.atomic_save_checkpoint = timed_save  # RunRecorder looks the name up at call time
    clock = _Clock()
    try:
        pl.seed_everything(0, verbose=False)
        train_run(cfg, root / "run", callbacks=[clock], evaluate=False)
    finally:
        phases.atomic_save_checkpoint = save
    t = clock.t
    n_saves_last_epoch = 2 if len(ckpt_s) >= 4 else 1  # last.ckpt, plus best.ckpt on improvement
    ckpt = sum(ckpt_s[-n_saves_last_epoch:])
    total = t["end"] - t["start"]
    validation = t["val_end"] - t["val_start"]
    return {
        "epoch_s": total,
        "train_steps_s": clock.steps,
        "validation_s": validation,
        "checkpoint_io_s": ckpt,
        "logging_s": (t["end"] - t["val_end"]) - ckpt,
        "other_s": total - clock.steps - validation - (t["end"] - t["val_end"]),
    }


def plain_epoch(cfg: ExperimentConfig, root: Path) -> tuple[float, int]:
    """Seconds of one plain-PyTorch epoch over the same training loader; returns (seconds, images)."""
    pl.seed_everything(0, verbose=False)
    data = build_run_data(cfg, root / "plain", write_split=False)
    model = build_model(cfg)
    task = build_task(cfg, model, Phase(2, 1, 1, False, "best.ckpt"), warmup=1)  # its loss modules only
    seg, fds, tap = task.seg_loss, list(task.fd_losses), task._tap
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    model.train()
    for _ in range(2):  # the first epoch warms up (as fdseg's phase 1 does); the second is timed
        images = 0
        start = time.perf_counter()
        for batch in data.loaders(cfg).train:
            mask = batch["mask"]
            logits = model(batch["image"])
            loss = seg(logits.float(), mask)
            feats = dict(tap)
            for fd in fds:
                loss = loss + fd(feats, mask, source=batch.get("source")).total
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            images += int(mask.shape[0])
        elapsed = time.perf_counter() - start
    task.close()
    return elapsed, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50, help="synthetic images (train/val/test split of them)")
    parser.add_argument("--size", type=int, default=512, help="image side after resizing (pixels)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--width", type=int, default=8, help="NucleiSegNet base_width (paper: 32)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "epoch_cost.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cfg = _config(root, args)
        build_run_data(cfg, root / "warm", write_split=False)  # generate and cache the images once
        plain_s, images = plain_epoch(cfg, root)
        parts = fdseg_epoch(cfg, root)
    ratio = plain_s / parts["epoch_s"]
    rows = [("plain PyTorch epoch", plain_s), ("fdseg epoch", parts["epoch_s"])]
    rows += [(f"  {k[:-2].replace('_', ' ')}", v) for k, v in parts.items() if k != "epoch_s"]
    print(f"{'':28s}{'seconds':>10s}{'share':>8s}")
    for name, value in rows:
        share = f"{value / parts['epoch_s']:8.1%}" if name.startswith("  ") else ""
        print(f"{name:28s}{value:10.3f}{share}")
    print(f"plain/fdseg = {ratio:.3f}  ({images} training images per epoch, goal >= 0.95)")
    result = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "train_images": images,
        "plain_s": plain_s,
        "fdseg": parts,
        "plain_over_fdseg": ratio,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
