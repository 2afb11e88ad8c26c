"""Forward+backward time and peak memory of every registered fdseg model, against a plain PyTorch U-Net.

For each model and input size, in one process: the median time of a training step's forward+backward
(``logits.float().mean().backward()``), without and with a :class:`fdseg.models.FeatureTap` on every declared
tap (the tap overhead), and the ratio to a plain-PyTorch U-Net written in this file (no fdseg code) at the
same width as fdseg's ``unet``.

* CUDA: bf16 autocast, channels-last, the models' full default widths; peak memory is
  ``torch.cuda.max_memory_allocated`` during one step (parameters, activations, gradients).
* CPU: fp32, REDUCED widths (the ``config`` column; ``CPU_CONFIGS`` below) so the whole run fits in a few
  minutes on 2 cores. Peak memory is the growth of the resident set during one step: the kernel's peak-RSS
  counter is reset (``/proc/self/clear_refs``), the step runs, and ``VmHWM - VmRSS(before)`` is reported. The
  memory is measured first, in one child process started with ``MALLOC_MMAP_THRESHOLD_=65536`` so that freed
  tensors go back to the OS and one model's cache does not hide the next one's peak (timings run in the main
  process, without that setting). It includes allocator and oneDNN workspace, so it is an upper bound on
  tensor memory. (Linux only; elsewhere the column is empty.)
* Both: "step MB" is the memory a training step adds on top of the built model (activations, gradients,
  workspace); on CUDA the absolute ``max_memory_allocated`` is also written to the JSON.

Timings of each model are interleaved with the plain U-Net's at the same size (plain, model, model+taps in
every repetition), so load drift on a shared machine hits both alike; the plain row shows the median of all
its runs. The machine's load average is printed and saved: treat CPU numbers as rough when it exceeds the
core count.

Prints a table and writes ``bench/results/models.json``.

Usage: ``python bench/models.py [--sizes 256 512] [--batch 1] [--reps 3] [--models unet,transunet]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from fdseg.models import FeatureTap, create_model, list_models

#: Reduced widths for CPU runs (models not listed get ``base_width=8``). CUDA runs use the defaults.
CPU_CONFIGS: dict[str, dict[str, Any]] = {
    "unet": {"base_width": 8},
    "transunet": {"base_width": 8, "depth": 2, "heads": 4},
    "monai_unet": {"base_width": 8},
    "monai_attention_unet": {"base_width": 8},
    "monai_basic_unet": {"base_width": 8},
    "monai_flexible_unet": {"backbone": "resnet10", "decoder_channels": (64, 32, 16, 8, 8)},
    "swin_unet": {"base_width": 12, "depths": (1, 1, 1, 1), "heads": (1, 2, 4, 8)},
    "swin_unetr": {"feature_size": 12, "depths": (1, 1, 1, 1), "num_heads": (1, 2, 4, 8)},
    "smp_unet": {"encoder_name": "resnet18"},
    "smp_unetplusplus": {"encoder_name": "resnet18"},
}
PLAIN = "plain PyTorch U-Net"


class PlainUNet(nn.Module):
    """The baseline: a textbook U-Net in plain PyTorch (double conv, BN, ReLU, max-pool, transposed conv)."""

    def __init__(self, in_channels: int, out_channels: int, width: int, depth: int = 4) -> None:
        super().__init__()
        widths = [width * 2**i for i in range(depth + 1)]

        def double(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.down = nn.ModuleList([double(in_channels, widths[0])])
        self.down.extend(double(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in range(depth)
        )
        self.dec = nn.ModuleList(double(2 * widths[i], widths[i]) for i in range(depth))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for i in reversed(range(len(self.up))):
            x = self.dec[i](torch.cat([skips.pop(), self.up[i](x)], dim=1))
        return self.head(x)  # type: ignore[no-any-return]


def _config(name: str, device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {}
    return dict(CPU_CONFIGS.get(name, {"base_width": 8}))


def _build(name: str, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    if name == PLAIN:
        width = int(_config("unet", device).get("base_width", 64))
        model: nn.Module = PlainUNet(3, 1, width)
    else:
        model = create_model(name, in_channels=3, out_channels=1, **_config(name, device))
    model = model.to(device).train()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def _input(size: int, batch: int, device: torch.device) -> torch.Tensor:
    x = torch.rand(batch, 3, size, size, device=device)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def _autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _layers(model: nn.Module) -> dict[str, str]:
    return cast(dict[str, str], model.feature_layers)


def _step(model: nn.Module, x: torch.Tensor, *, tap: bool) -> None:
    with _autocast(x.device):
        if tap:
            with FeatureTap(model, _layers(model)) as feats:
                logits = model(x)
            loss = logits.float().mean() + sum(t.float().mean() for t in feats.values())
        else:
            loss = model(x).float().mean()
    loss.backward()
    model.zero_grad(set_to_none=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _status_mb(key: str) -> float:
    text = Path("/proc/self/status").read_text()
    for line in text.splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def _cpu_step_mb(model: nn.Module, x: torch.Tensor) -> float | None:
    """Resident-set growth (MB) during one training step; None where /proc/self/clear_refs is unavailable."""
    try:
        base = _status_mb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        return None
    _step(model, x, tap=False)
    return _status_mb("VmHWM") - base


def _cuda_step_mb(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """(growth over the allocated memory before the step, absolute max_memory_allocated), in MB."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    _step(model, x, tap=False)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return (peak - before) / 2**20, peak / 2**20


def _measure(
    model: nn.Module, plain: nn.Module, x: torch.Tensor, reps: int
) -> tuple[list[float], list[float], list[float], dict[str, float | None]]:
    """Interleaved timings (ms) of plain, model and model + FeatureTap, and the model's step memory.

    The memory of the model's step is read during its first timed repetition (after one warm-up step).
    """
    runs: list[tuple[nn.Module, bool]] = [(plain, False), (model, False), (model, True)]
    _step(model, x, tap=False)  # warm-up: oneDNN / cuDNN plans for this shape (plain is already warm)
    times: list[list[float]] = [[], [], []]
    memory: dict[str, float | None] = {}
    for rep in range(reps):
        for i, (net, tap) in enumerate(runs):
            _sync(x.device)
            start = time.perf_counter()
            if rep == 0 and i == 1 and x.device.type == "cuda":
                memory = _memory(net, x)
            else:
                _step(net, x, tap=tap)
            _sync(x.device)
            times[i].append(1000 * (time.perf_counter() - start))
    return times[0], times[1], times[2], memory


def _memory(model: nn.Module, x: torch.Tensor) -> dict[str, float | None]:
    """Step memory of one training step (run a warm-up step first so one-off workspace is not counted)."""
    if x.device.type == "cuda":
        growth, peak = _cuda_step_mb(model, x)
        return {"step_mb": growth, "cuda_max_allocated_mb": peak}
    return {"step_mb": _cpu_step_mb(model, x)}


def _rows(
    names: list[str],
    args: argparse.Namespace,
    device: torch.device,
    cpu_memory: dict[str, dict[str, float | None]],
) -> list[dict[str, Any]]:
    plain = _build(PLAIN, device)
    plain_times: dict[int, list[float]] = {size: [] for size in args.sizes}
    plain_memory = {}
    for size in args.sizes:
        x = _input(size, args.batch, device)
        _step(plain, x, tap=False)  # warm-up
        if device.type == "cuda":
            plain_memory[size] = _memory(plain, x)
        else:
            plain_memory[size] = {"step_mb": cpu_memory.get(PLAIN, {}).get(str(size))}
    rows: list[dict[str, Any]] = []
    for name in names:
        try:
            model = _build(name, device)
        except (ImportError, RuntimeError) as err:
            rows.append({"model": name, "skipped": f"{type(err).__name__}: {str(err).splitlines()[0][:90]}"})
            continue
        params = sum(p.numel() for p in model.parameters()) / 1e6
        for size in args.sizes:
            x = _input(size, args.batch, device)
            base, step, tapped, memory = _measure(model, plain, x, args.reps)
            plain_times[size] += base
            row: dict[str, Any] = {
                "model": name,
                "config": _config(name, device),
                "size": size,
                "params_m": params,
                "step_ms": statistics.median(step),
                "tap_ms": statistics.median(tapped),
                "taps": len(_layers(model)),
                "plain_ms_interleaved": statistics.median(base),
                **(memory if device.type == "cuda" else {"step_mb": cpu_memory.get(name, {}).get(str(size))}),
            }
            row["x_plain_time"] = row["step_ms"] / row["plain_ms_interleaved"]
            row["tap_overhead"] = row["tap_ms"] / row["step_ms"]
            ref = plain_memory[size]["step_mb"]
            row["x_plain_mem"] = row["step_mb"] / ref if row["step_mb"] is not None and ref else None
            rows.append(row)
            print(f"  {name} {size}: {row['step_ms']:.0f} ms", file=sys.stderr, flush=True)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    params = sum(p.numel() for p in plain.parameters()) / 1e6
    plain_rows = [
        {
            "model": PLAIN,
            "config": _config("unet", device),
            "size": size,
            "params_m": params,
            "step_ms": statistics.median(plain_times[size]) if plain_times[size] else float("nan"),
            "x_plain_time": 1.0,
            **plain_memory[size],
            "x_plain_mem": 1.0,
        }
        for size in args.sizes
    ]
    return plain_rows + rows


def _fmt_config(config: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in config.items()).replace(" ", "") or "default"


def _cpu_memory_child(names: list[str], sizes: list[int], batch: int) -> None:
    """Child process (started with MALLOC_MMAP_THRESHOLD_): print {model: {size: step MB}} as JSON."""
    device = torch.device("cpu")
    out: dict[str, dict[str, float | None]] = {}
    for name in names:
        try:
            model = _build(name, device)
        except (ImportError, RuntimeError):
            continue
        out[name] = {}
        for size in sizes:
            x = _input(size, batch, device)
            _step(model, x, tap=False)  # warm-up
            out[name][str(size)] = _memory(model, x)["step_mb"]
        del model
    print(json.dumps(out))


def _cpu_memory(names: list[str], args: argparse.Namespace) -> dict[str, dict[str, float | None]]:
    """Run :func:`_cpu_memory_child` in a fresh process whose glibc returns freed tensors to the OS."""
    cmd = [sys.executable, __file__, "--memory-child", ",".join(names), "--batch", str(args.batch)]
    cmd += ["--threads", str(args.threads), "--sizes", *map(str, args.sizes)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    result = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _print_table(rows: list[dict[str, Any]], header_line: str) -> None:
    print(header_line)
    header = (
        f"{'model':22} {'config':40} {'size':>4} {'Mparam':>7} {'step ms':>8} {'x plain':>7} "
        f"{'+taps ms':>8} {'tap x':>6} {'step MB':>8} {'x plain':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        if "skipped" in r:
            print(f"{r['model']:22} skipped: {r['skipped']}")
            continue
        tap = f"{r['tap_ms']:8.1f} {r['tap_overhead']:6.2f}" if "tap_ms" in r else f"{'-':>8} {'-':>6}"
        mem = f"{r['step_mb']:8.1f}" if r.get("step_mb") is not None else f"{'-':>8}"
        mem_ratio = f"{r['x_plain_mem']:7.2f}" if r.get("x_plain_mem") is not None else f"{'-':>7}"
        print(
            f"{r['model']:22} {_fmt_config(r['config'])[:40]:40} {r['size']:4d} {r['params_m']:7.2f} "
            f"{r['step_ms']:8.1f} {r['x_plain_time']:7.2f} {tap} {mem} {mem_ratio}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--batch", type=int, default=None, help="default: 1 on CPU, 8 on CUDA")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (default: 2 CPU, 10 CUDA)")
    parser.add_argument("--models", type=str, default=None, help="comma-separated subset of the registry")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "models.json")
    parser.add_argument("--memory-child", type=str, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    args.batch = args.batch or (8 if cuda else 1)
    args.reps = args.reps or (10 if cuda else 2)
    if args.memory_child:
        _cpu_memory_child([PLAIN, *args.memory_child.split(",")], args.sizes, args.batch)
        return
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cudnn.benchmark = True
    names = args.models.split(",") if args.models else list_models()
    cpu_memory = _cpu_memory(names, args) if not cuda else {}

    load_before = os.getloadavg()
    start = time.perf_counter()
    rows = _rows(names, args, device, cpu_memory)
    total_s = time.perf_counter() - start
    load_after = os.getloadavg()

    precision = "bf16 autocast, channels-last, default widths" if cuda else "fp32, REDUCED widths (config)"
    memory = "max_memory_allocated growth" if cuda else "RSS growth (VmHWM reset per step, upper bound)"
    device_name = (
        torch.cuda.get_device_name() if cuda else f"{platform.processor() or 'cpu'}, {args.threads} threads"
    )
    _print_table(
        rows,
        f"device: {device_name}; batch {args.batch}; {precision}; median of {args.reps} interleaved reps; "
        f"memory: {memory}; load average {load_before[0]:.1f} -> {load_after[0]:.1f} "
        f"on {os.cpu_count()} cores",
    )
    print(f"total {total_s:.0f} s")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "device": str(device),
        "device_name": device_name,
        "torch": torch.__version__,
        "batch": args.batch,
        "reps": args.reps,
        "threads": args.threads,
        "precision": precision,
        "memory": memory,
        "load_average_before_after": [load_before[0], load_after[0]],
        "cpu_count": os.cpu_count(),
        "total_s": total_s,
    }
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
