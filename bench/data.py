"""Data-loading cost of fdseg's loaders and preprocessing cache against plain Pillow/tifffile/PyTorch code.

Real files from ``../shared/data`` (TNBC at 512x512, the MoNuSeg test set at 1000x1000); the cache goes to a
temporary folder. Rows per dataset (same process, same files):

* ``decode``: ``load_record`` of the fdseg loader (decode + RGB conversion + mask binarisation; for MoNuSeg
  also XML parsing and polygon rasterisation) against a bare decode of the same image files with Pillow
  (and, for TIFF, tifffile) plus, for TNBC, the mask PNG.
* ``first-time``: ``CachedDataset(raw, size)`` into an empty folder (decode + resize + ``.npz`` write) against
  a plain loop: Pillow decode, ``torch.nn.functional.interpolate`` (bilinear), ``np.savez``. For MoNuSeg the
  plain loop has no XML rasterisation, so its ratio also shows what the annotation parsing costs.
* ``cached``: re-opening the ``CachedDataset`` and reading every item against ``np.load`` of the plain
  loop's files.

Images/s are the best of ``--rounds`` rounds. Prints a table and writes ``bench/results/data.json``.

Usage: ``python bench/data.py [--rounds 3] [--data ../shared/data]``
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
import torch.nn.functional as F
from PIL import Image

from fdseg.data.base import RawDataset
from fdseg.data.cache import CachedDataset
from fdseg.data.open import open_dataset

ROOT = Path(__file__).resolve().parents[1]


def best_rate(n: int, fn: Callable[[], object], rounds: int) -> float:
    """Images per second of the fastest of ``rounds`` calls of ``fn`` (which handles ``n`` images)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def plain_decode(paths: list[tuple[Path, Path | None]], *, use_tifffile: bool) -> None:
    for image, mask in paths:
        if use_tifffile:
            tifffile.imread(image)
        else:
            np.asarray(Image.open(image).convert("RGB"))
        if mask is not None:
            np.asarray(Image.open(mask).convert("L")) > 0  # noqa: B015  (decode cost only)


def plain_prepare(paths: list[tuple[Path, Path | None]], size: int, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for i, (image, mask) in enumerate(paths):
        rgb = torch.from_numpy(np.array(Image.open(image).convert("RGB"))).permute(2, 0, 1)[None].float()
        resized = F.interpolate(rgb, size=(size, size), mode="bilinear", align_corners=False)
        arrays = {"image": resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()}
        if mask is not None:
            m = torch.from_numpy(np.asarray(Image.open(mask).convert("L")) > 0)[None, None].float()
            arrays["mask"] = F.interpolate(m, size=(size, size), mode="nearest")[0, 0].bool().numpy()
        np.savez(out / f"{i}.npz", **arrays)


def plain_cached(out: Path) -> None:
    for path in sorted(out.glob("*.npz")):
        with np.load(path) as entry:
            for key in entry.files:
                entry[key]


def bench_dataset(name: str, raw: RawDataset, size: int, rounds: int, tmp: Path) -> list[dict[str, Any]]:
    records = raw.records
    n = len(records)
    tiff = records[0].image.suffix.lower() in (".tif", ".tiff")
    pairs = [(r.image, r.mask_files[0] if r.mask_files[0].suffix == ".png" else None) for r in records]
    rows: list[dict[str, Any]] = []

    def row(stage: str, fdseg_rate: float, baseline: str, plain_rate: float) -> None:
        rows.append(
            {
                "dataset": name,
                "stage": stage,
                "images": n,
                "fdseg_img_s": fdseg_rate,
                "baseline": baseline,
                "baseline_img_s": plain_rate,
                "fdseg_over_baseline_time": plain_rate / fdseg_rate,
            }
        )

    loader_rate = best_rate(n, lambda: [raw.load_record(r) for r in records], rounds)
    row(
        "decode",
        loader_rate,
        "Pillow decode",
        best_rate(n, lambda: plain_decode(pairs, use_tifffile=False), rounds),
    )
    if tiff:
        row(
            "decode",
            loader_rate,
            "tifffile decode",
            best_rate(n, lambda: plain_decode(pairs, use_tifffile=True), rounds),
        )

    def fdseg_first() -> None:
        cache = tmp / f"{name}-cache"
        shutil.rmtree(cache, ignore_errors=True)
        CachedDataset(raw, size, cache)

    def plain_first() -> None:
        out = tmp / f"{name}-plain"
        shutil.rmtree(out, ignore_errors=True)
        plain_prepare(pairs, size, out)

    row(
        "first-time",
        best_rate(n, fdseg_first, rounds),
        "Pillow + torch resize + np.savez",
        best_rate(n, plain_first, rounds),
    )

    def fdseg_cached() -> None:
        ds = CachedDataset(raw, size, tmp / f"{name}-cache")
        if ds.decode_count:
            raise RuntimeError("cache miss in the cached round")
        for i in range(len(ds)):
            ds[i]

    row(
        "cached",
        best_rate(n, fdseg_cached, rounds),
        "np.load",
        best_rate(n, lambda: plain_cached(tmp / f"{name}-plain"), rounds),
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()
    torch.set_num_threads(1)
    datasets = [
        ("tnbc", f"tnbc:{args.data / 'tnbc'}", 512),
        ("monuseg-test", f"monuseg:{args.data / 'monuseg' / 'MoNuSegTestData'}", 1000),
    ]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fdseg-bench-data-") as tmp:
        for name, spec, size in datasets:
            rows += bench_dataset(name, open_dataset(spec), size, args.rounds, Path(tmp))
    header = (
        f"{'dataset':<13} {'stage':<11} {'n':>3} {'fdseg img/s':>12} {'baseline':<34} "
        f"{'base img/s':>11} {'time ratio':>10}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['dataset']:<13} {r['stage']:<11} {r['images']:>3} {r['fdseg_img_s']:>12.1f} "
            f"{r['baseline']:<34} {r['baseline_img_s']:>11.1f} {r['fdseg_over_baseline_time']:>10.2f}"
        )
    print("time ratio = fdseg time / baseline time (1.0 = same cost)")
    out = ROOT / "bench" / "results" / "data.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "rounds": args.rounds,
        "threads": 1,
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
