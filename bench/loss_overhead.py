"""Train-step cost of fdseg's L_fd and L_fd^exch against a plain PyTorch loop with the same U-Net.

Rows (same process, same random batch, same architecture, interleaved rounds, median step time):

* ``plain``: a U-Net written inline here (no fdseg code), Dice + BCE written inline, AdamW.
* ``plain + naive L_fd``: the same, with a straightforward per-layer L_fd on all 9 blocks
  (``(f * m).sum / m.sum`` for foreground and background); the model returns its block outputs directly.
* ``fdseg``: ``create_model("unet")`` with ``build_seg_loss("dice_bce")``, no L_fd.
* ``fdseg + L_fd``: plus ``FeatureTap`` on the 9 canonical taps and ``FeatureDiscrepancyLoss`` (λ = 0.001).
* ``fdseg + L_fd + exch``: ``ExchangeableFeatureDiscrepancyLoss`` instead (shift pairing).

A second table times the loss alone (forward + backward on fixed features): fdseg's one-pass per-layer
reduction against the naive loop, on float32 NCHW features and, on CUDA, also on bf16 channels-last features
(what the autocast training step produces). On CUDA the train step uses bf16 autocast, channels-last and fused
AdamW; on CPU float32. Prints two tables (``--loss-only``: the second) and writes
``bench/results/loss_overhead.json``.

Usage: ``python bench/loss_overhead.py [--size 128] [--batch 4] [--width 16] [--steps 4] [--rounds 3]
[--threads N] [--loss-only]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fdseg.losses import ExchangeableFeatureDiscrepancyLoss, FeatureDiscrepancyLoss, build_seg_loss
from fdseg.models import FeatureTap, create_model

LAYERS = ["enc1", "enc2", "enc3", "enc4", "bottleneck", "dec4", "dec3", "dec2", "dec1"]
LAMBDA = 0.001


# -------------------------------------------------------------------------------------------- plain PyTorch
def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class PlainUNet(nn.Module):
    """Depth-4 U-Net, [conv-BN-ReLU]x2 blocks, max-pool down, 2x2 transposed-conv up.

    ``forward`` returns the logits and the 9 block outputs (the taps of fdseg's U-Net, in the same order).
    """

    def __init__(self, in_ch: int, out_ch: int, width: int) -> None:
        super().__init__()
        w = [width * 2**i for i in range(5)]
        self.downs = nn.ModuleList(
            [_conv_block(in_ch, w[0])] + [_conv_block(w[i - 1], w[i]) for i in range(1, 5)]
        )
        self.ups = nn.ModuleList([nn.ConvTranspose2d(w[i], w[i] // 2, 2, stride=2) for i in range(4, 0, -1)])
        self.up_convs = nn.ModuleList([_conv_block(w[i] // 2 + w[i - 1], w[i - 1]) for i in range(4, 0, -1)])
        self.head = nn.Conv2d(w[0], out_ch, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        blocks, skips = [], []
        for i, down in enumerate(self.downs):
            x = down(x if i == 0 else F.max_pool2d(x, 2))
            blocks.append(x)
            skips.append(x)
        skips.pop()
        for up, conv in zip(self.ups, self.up_convs):
            x = conv(torch.cat([up(x), skips.pop()], dim=1))
            blocks.append(x)
        return self.head(x), blocks


def plain_seg_loss(logits: Tensor, mask: Tensor) -> Tensor:
    logits = logits.float()
    probs = torch.sigmoid(logits)
    dice = (2 * (probs * mask).sum() + 1e-6) / (probs.sum() + mask.sum() + 1e-6)
    return (1 - dice) + F.binary_cross_entropy_with_logits(logits, mask)


def naive_fd(blocks: list[Tensor], mask: Tensor) -> Tensor:
    """Per-layer L_fd written the obvious way (one masked product per region, fp32)."""
    total = mask.new_zeros(())
    for f in blocks:
        f = f.float()
        y = F.adaptive_max_pool2d(mask, f.shape[-2:])
        a_fg, a_bg = y.sum((2, 3)), (1 - y).sum((2, 3))
        mu_fg = (f * y).sum((2, 3)) / a_fg.clamp_min(1)
        mu_bg = (f * (1 - y)).sum((2, 3)) / a_bg.clamp_min(1)
        valid = ((a_fg > 0) & (a_bg > 0)).squeeze(1).float()
        per = -torch.log(((mu_fg - mu_bg) ** 2).mean(1) + 1e-6)
        total = total + LAMBDA * (per * valid).sum() / valid.sum().clamp_min(1)
    return total


# ----------------------------------------------------------------------------------------------- harness
class Setup:
    """One model + optimiser + step function."""

    def __init__(self, name: str, model: nn.Module, step: Callable[[], None], tap: FeatureTap | None = None):
        self.name, self.model, self.step, self.tap = name, model, step, tap
        self.times: list[float] = []


def _optimizer(model: nn.Module, cuda: bool) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.004, eps=1e-7, fused=cuda or None)


def _autocast(cuda: bool) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()


def build_setups(
    args: argparse.Namespace, device: torch.device
) -> tuple[list[Setup], Tensor, Tensor, Tensor]:
    cuda = device.type == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(args.batch, 3, args.size, args.size, generator=gen).to(device, memory_format=fmt)
    mask = torch.zeros(args.batch, 1, args.size, args.size)
    for b in range(args.batch):  # a blob per image so that every layer has foreground and background
        c = args.size // 4 + b * args.size // (4 * args.batch)
        mask[b, :, c : c + args.size // 3, c // 2 : c // 2 + args.size // 2] = 1.0
    mask = mask.to(device)
    source = (torch.arange(args.batch) % 2).to(device)
    setups: list[Setup] = []

    def plain(with_fd: bool) -> Setup:
        model = PlainUNet(3, 1, args.width).to(device, memory_format=fmt)
        opt = _optimizer(model, cuda)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with _autocast(cuda):
                logits, blocks = model(image)
                loss = plain_seg_loss(logits, mask)
                if with_fd:
                    loss = loss + naive_fd(blocks, mask)
            loss.backward()
            opt.step()

        return Setup("plain + naive L_fd" if with_fd else "plain", model, step)

    def fdseg(kind: str) -> Setup:
        model = create_model("unet", in_channels=3, out_channels=1, base_width=args.width).to(
            device, memory_format=fmt
        )
        opt = _optimizer(model, cuda)
        seg = build_seg_loss("dice_bce")
        fd: nn.Module | None = None
        if kind == "fd":
            fd = FeatureDiscrepancyLoss(LAYERS, layer_weights=dict.fromkeys(LAYERS, LAMBDA))
        elif kind == "exch":
            fd = ExchangeableFeatureDiscrepancyLoss(LAYERS, layer_weights=dict.fromkeys(LAYERS, LAMBDA))
        tap = FeatureTap(model, model.feature_layers) if fd is not None else None
        feats = tap.__enter__() if tap is not None else {}

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with _autocast(cuda):
                logits = model(image)
            loss = seg(logits, mask)
            if fd is not None:
                loss = loss + fd(feats, mask, source).total
            loss.backward()
            opt.step()

        label = {"none": "fdseg", "fd": "fdseg + L_fd", "exch": "fdseg + L_fd + exch"}[kind]
        return Setup(label, model, step, tap)

    setups = [plain(False), plain(True), fdseg("none"), fdseg("fd"), fdseg("exch")]
    return setups, image, mask, source


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _loss_variants(device: torch.device) -> list[tuple[str, torch.dtype, torch.memory_format]]:
    """Feature dtypes and layouts of the loss-alone table: float32 NCHW; on CUDA also bf16 channels-last."""
    variants = [("float32, NCHW", torch.float32, torch.contiguous_format)]
    if device.type == "cuda":
        variants.append(("bf16, channels-last", torch.bfloat16, torch.channels_last))
    return variants


def loss_only(args: argparse.Namespace, device: torch.device, mask: Tensor) -> list[dict[str, Any]]:
    """Forward + backward of the loss alone on the 9 feature maps of the fdseg U-Net, per dtype and layout."""
    model = create_model("unet", in_channels=3, out_channels=1, base_width=args.width).to(device)
    image = torch.rand(args.batch, 3, args.size, args.size, device=device)
    with torch.no_grad(), FeatureTap(model, model.feature_layers) as feats:
        model(image)
        base_feats = {k: v.detach().float().clone() for k, v in feats.items()}
    fdseg_loss = FeatureDiscrepancyLoss(LAYERS, layer_weights=dict.fromkeys(LAYERS, LAMBDA))
    exch_loss = ExchangeableFeatureDiscrepancyLoss(LAYERS, layer_weights=dict.fromkeys(LAYERS, LAMBDA))
    labels = {"naive": "naive L_fd (plain PyTorch)", "fdseg": "fdseg L_fd", "exch": "fdseg L_fd + exch"}
    rows: list[dict[str, Any]] = []
    for variant, dtype, fmt in _loss_variants(device):
        fixed = {k: v.to(dtype).contiguous(memory_format=fmt) for k, v in base_feats.items()}

        def run(kind: str, fixed: dict[str, Tensor] = fixed) -> None:
            leaves = {k: v.requires_grad_(True) for k, v in fixed.items()}
            if kind == "naive":
                value = naive_fd([leaves[k] for k in LAYERS], mask)
            elif kind == "fdseg":
                value = fdseg_loss(leaves, mask).total
            else:
                value = exch_loss(leaves, mask).total
            value.backward()
            for v in leaves.values():
                v.grad = None

        kinds = ["naive", "fdseg", "exch"]
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for kind in kinds:
            run(kind)
        for _ in range(args.rounds):  # interleaved, so that a busy machine affects every row alike
            for kind in kinds:
                times[kind] += [_timed(lambda kind=kind: run(kind), device) for _ in range(args.steps)]
        base = statistics.median(times["naive"])
        min_base = min(times["naive"])
        rows += [
            {
                "features": variant,
                "loss": labels[k],
                "ms": 1e3 * statistics.median(times[k]),
                "min_ms": 1e3 * min(times[k]),
                "ratio_vs_naive": statistics.median(times[k]) / base,
                "min_ratio_vs_naive": min(times[k]) / min_base,
            }
            for k in kinds
        ]
    return rows


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def _closing(setups: list[Setup]) -> Iterator[None]:
    try:
        yield
    finally:
        for s in setups:
            if s.tap is not None:
                s.tap.__exit__(None, None, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per configuration and round")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the configurations")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave the default)")
    parser.add_argument("--loss-only", action="store_true", help="only the loss-alone table")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "loss_overhead.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)

    setups, _, mask, _ = build_setups(args, device)
    counts = {s.name: _params(s.model) for s in setups}
    if len(set(counts.values())) != 1:
        raise SystemExit(f"the plain and fdseg U-Nets differ in size: {counts}")
    timed = [] if args.loss_only else setups
    with _closing(setups):
        for s in timed:
            for _ in range(args.warmup):
                s.step()
        for _ in range(args.rounds if timed else 0):  # interleaved: a busy machine affects every row alike
            for s in timed:
                s.times += [_timed(s.step, device) for _ in range(args.steps)]
    rows = []
    if timed:
        base, fdseg_base = statistics.median(setups[0].times), statistics.median(setups[2].times)
        rows = [
            {
                "config": s.name,
                "ms": 1e3 * statistics.median(s.times),
                "min_ms": 1e3 * min(s.times),
                "img_per_s": args.batch / statistics.median(s.times),
                "ratio_vs_plain": statistics.median(s.times) / base,
                "ratio_vs_fdseg_no_fd": statistics.median(s.times) / fdseg_base,
                "min_ratio_vs_plain": min(s.times) / min(setups[0].times),
            }
            for s in setups
        ]
    loss_rows = loss_only(args, device, mask)

    device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    )
    precision = "bf16 autocast, channels-last" if device.type == "cuda" else "float32"
    print(
        f"U-Net width {args.width} ({next(iter(counts.values())) / 1e6:.2f} M params), {args.size}², "
        f"batch {args.batch}, {device.type} ({device_name}, {torch.get_num_threads()} threads), {precision}, "
        f"median of {args.rounds}x{args.steps} steps"
    )
    if rows:
        print("\ntrain step")
        print(
            f"{'config':<22} {'step ms':>9} {'min ms':>8} {'img/s':>8} {'vs plain':>9} {'vs fdseg':>9} "
            f"{'min vs plain':>13}"
        )
        for r in rows:
            print(
                f"{r['config']:<22} {r['ms']:>9.1f} {r['min_ms']:>8.1f} {r['img_per_s']:>8.1f} "
                f"{r['ratio_vs_plain']:>9.3f} {r['ratio_vs_fdseg_no_fd']:>9.3f} "
                f"{r['min_ratio_vs_plain']:>13.3f}"
            )
    print("\nloss alone (forward + backward on the 9 fixed feature maps)")
    print(f"{'features':<20} {'loss':<28} {'ms':>8} {'min ms':>8} {'vs naive':>9} {'min vs naive':>13}")
    for r in loss_rows:
        print(
            f"{r['features']:<20} {r['loss']:<28} {r['ms']:>8.2f} {r['min_ms']:>8.2f} "
            f"{r['ratio_vs_naive']:>9.3f} {r['min_ratio_vs_naive']:>13.3f}"
        )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "device": device.type,
        "device_name": device_name,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "precision": precision,
        "size": args.size,
        "batch": args.batch,
        "width": args.width,
        "params": next(iter(counts.values())),
        "steps": args.steps,
        "rounds": args.rounds,
        "train_step": rows,
        "loss_only": loss_rows,
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
