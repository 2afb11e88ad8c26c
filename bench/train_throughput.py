"""Training throughput of fdseg's Lightning task against a plain PyTorch loop (same process, same data).

Both loops train the same U-Net on the same synthetic 64x64 batches with the same loss (L_seg + Σ λ L_fd over
all tapped layers, λ = 0.01) and AdamW, for the same number of steps; we report images/s and the ratio. A
second pair of rows uses L_seg only (λ = 0 in fdseg: the L_fd terms are still computed for logging).

    .venv/bin/python bench/train_throughput.py [--steps 60] [--batch 8] [--size 64] [--width 16] [--threads 1]

Writes bench/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from fdseg.losses.discrepancy import FeatureDiscrepancyLoss
from fdseg.losses.segmentation import build_seg_loss
from fdseg.losses.weights import build_lambda_strategy
from fdseg.models import FeatureTap, create_model
from fdseg.training.config import OptimConfig
from fdseg.training.task import SegmentationTask


def _batches(n: int, size: int) -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, size, size, generator=gen)
    masks = (torch.rand(n, 1, size, size, generator=gen) > 0.8).float()
    return TensorDataset(images, masks)


def _collate(items: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, object]:
    images, masks = zip(*items)
    return {
        "image": torch.stack(images),
        "mask": torch.stack(masks),
        "source": torch.zeros(len(items), dtype=torch.long),
    }


def _model(width: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("unet", in_channels=3, out_channels=1, base_width=width, depth=3)


def plain_loop(data: TensorDataset, steps: int, batch: int, width: int, lam: float) -> float:
    """A hand-written loop: forward with hooks, L_seg + λ Σ L_fd, backward, AdamW. Returns images/s."""
    model = _model(width)
    layers = list(model.feature_layers)
    seg = build_seg_loss("dice_bce")
    fd = FeatureDiscrepancyLoss(layers, layer_weights=dict.fromkeys(layers, lam))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = DataLoader(data, batch_size=batch, shuffle=True, collate_fn=_collate, drop_last=True)
    done = 0
    with FeatureTap(model, layers) as feats:
        start = time.perf_counter()
        while done < steps:
            for b in loader:
                logits = model(b["image"])
                loss = seg(logits, b["mask"]) + fd(dict(feats), b["mask"]).total
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                done += 1
                if done == steps:
                    break
        elapsed = time.perf_counter() - start
    return steps * batch / elapsed


class _Timer(pl.Callback):
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.elapsed = time.perf_counter() - self.start


def fdseg_loop(data: TensorDataset, steps: int, batch: int, width: int, lam: float) -> float:
    """fdseg's SegmentationTask under a Lightning Trainer (no validation or checkpoints). Returns images/s."""
    model = _model(width)
    layers = list(model.feature_layers)
    tap = FeatureTap(model, layers)
    strategy = build_lambda_strategy("fixed", layers, value=lam) if lam > 0 else None
    task = SegmentationTask(
        model,
        tap=tap.__enter__(),
        tap_handle=tap,
        seg_loss=build_seg_loss("dice_bce"),
        fd_losses=[FeatureDiscrepancyLoss(layers)],
        lambda_strategy=strategy,
        force_zero=lam == 0,
        optim=OptimConfig(lr=1e-3, weight_decay=0.01),
    )
    loader = DataLoader(data, batch_size=batch, shuffle=True, collate_fn=_collate, drop_last=True)
    timer = _Timer()
    trainer = pl.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[timer],
    )  # fmt: skip
    trainer.fit(task, loader)
    task.close()
    return steps * batch / timer.elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1: no oversubscription)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = _batches(args.batch * 8, args.size)
    rows = []
    for lam in (0.01, 0.0):
        for _ in range(1):  # warm-up of both code paths
            plain_loop(data, 5, args.batch, args.width, lam)
            fdseg_loop(data, 5, args.batch, args.width, lam)
        plain = max(plain_loop(data, args.steps, args.batch, args.width, lam) for _ in range(args.repeats))
        ours = max(fdseg_loop(data, args.steps, args.batch, args.width, lam) for _ in range(args.repeats))
        rows.append({"lambda": lam, "plain_img_s": plain, "fdseg_img_s": ours, "ratio": ours / plain})
    print(
        f"train throughput, CPU ({torch.get_num_threads()} threads), U-Net w{args.width} d3, "
        f"{args.size}x{args.size}, batch {args.batch}, {args.steps} steps, best of {args.repeats}"
    )
    print(f"{'λ':>6} {'plain img/s':>12} {'fdseg img/s':>12} {'fdseg/plain':>12}")
    for r in rows:
        print(f"{r['lambda']:>6} {r['plain_img_s']:>12.1f} {r['fdseg_img_s']:>12.1f} {r['ratio']:>12.3f}")
    out = Path(__file__).resolve().parent / "results" / "train_throughput.json"
    out.parent.mkdir(exist_ok=True)
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.processor()}
    out.write_text(json.dumps({"args": vars(args), "meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
