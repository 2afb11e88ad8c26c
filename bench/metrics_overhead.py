"""Cost of fdseg's per-image evaluation against a plain PyTorch per-image Dice and MONAI ``compute_dice``.

All three compute per-image Dice of thresholded predictions on the same logits in the same process;
fdseg additionally counts tp/fp/fn/tn, checks the mask is binary and derives IoU, sensitivity, specificity
and precision with explicit empty-mask rules.
Prints a table and writes ``bench/results/metrics_overhead.json``.

Usage: ``python bench/metrics_overhead.py [--batch 16] [--size 256] [--repeats 20]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from monai.metrics import compute_dice

from fdseg.metrics import segmentation_metrics


def plain_dice(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The baseline: per-image hard Dice in a few lines of PyTorch (empty-empty -> 1)."""
    pred = (torch.sigmoid(logits) > 0.5).float()
    inter = (pred * mask).sum(dim=(2, 3))
    total = pred.sum(dim=(2, 3)) + mask.sum(dim=(2, 3))
    return torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))


def monai_dice(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    pred = (torch.sigmoid(logits) > 0.5).float()
    return compute_dice(pred, mask, include_background=True, ignore_empty=False)


def fdseg_metrics(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return segmentation_metrics(logits, mask)["dice"]


def _time(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *args: torch.Tensor, repeats: int
) -> float:
    fn(*args)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "metrics_overhead.json"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(args.batch, 1, args.size, args.size, generator=gen)
    mask = (torch.rand(args.batch, 1, args.size, args.size, generator=gen) > 0.7).float()

    ref = plain_dice(logits, mask).double()
    torch.testing.assert_close(fdseg_metrics(logits, mask), ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(monai_dice(logits, mask).double(), ref, rtol=1e-5, atol=1e-6)

    rows = []
    base = _time(plain_dice, logits, mask, repeats=args.repeats)
    for name, fn in (
        ("plain PyTorch Dice", plain_dice),
        ("MONAI compute_dice", monai_dice),
        ("fdseg segmentation_metrics", fdseg_metrics),
    ):
        t = base if fn is plain_dice else _time(fn, logits, mask, repeats=args.repeats)
        rows.append({"impl": name, "ms_per_batch": 1e3 * t, "ratio_vs_plain": t / base})

    shape = f"({args.batch}, 1, {args.size}, {args.size})"
    print(f"per-image metrics on CPU, logits {shape}, {args.threads} threads, median of {args.repeats}")
    print(f"{'implementation':<30} {'ms/batch':>10} {'× plain':>9}")
    for row in rows:
        print(f"{row['impl']:<30} {row['ms_per_batch']:>10.2f} {row['ratio_vs_plain']:>9.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "bench": "metrics_overhead",
        "shape": [args.batch, 1, args.size, args.size],
        "threads": args.threads,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "machine": platform.platform(),
        "rows": rows,
    }
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
