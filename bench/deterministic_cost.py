"""What PyTorch's determinism settings cost one training step (paired, in one process).

One NucleiSegNet step (forward with feature taps, L_seg + L_fd over every tap, backward, AdamW) on a
random batch, repeated under three settings in turn, step by step (A, B, C, A, B, C, …), so that a drift of
the machine's speed hits all three alike:

- ``off``: ``torch.use_deterministic_algorithms(False)``;
- ``deterministic``: deterministic algorithms (``warn_only``, as ``train.deterministic: warn``), uninitialised
  memory left as it is (what fdseg's trainer sets);
- ``deterministic+fill``: the same with ``torch.utils.deterministic.fill_uninitialized_memory = True``
  (PyTorch's default under deterministic algorithms: every ``torch.empty`` is filled with NaN).

    PYTHONPATH=src .venv/bin/python bench/deterministic_cost.py [--size 256] [--steps 30]

Reports each setting's median step and its median paired ratio to ``off`` (1.0 = free). Writes
bench/results/deterministic_cost.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from fdseg.losses.discrepancy import FeatureDiscrepancyLoss
from fdseg.losses.segmentation import build_seg_loss
from fdseg.models import FeatureTap, create_model

SETTINGS = {"off": (False, False), "deterministic": (True, False), "deterministic+fill": (True, True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="image side (pixels)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--width", type=int, default=8, help="NucleiSegNet base_width (paper: 32)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per setting")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "deterministic_cost.json"
    )
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    shape = (args.batch, 1, args.size, args.size)
    image = torch.rand(args.batch, 3, args.size, args.size, generator=gen)
    mask = (torch.rand(shape, generator=gen) > 0.7).float()
    torch.manual_seed(0)
    model = create_model("nucleisegnet", in_channels=3, out_channels=1, base_width=args.width)
    seg = build_seg_loss("dice_bce")
    with FeatureTap(model, list(model.feature_layers)) as feats:
        fd = FeatureDiscrepancyLoss(list(model.feature_layers))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step() -> float:
            start = time.perf_counter()
            loss = seg(model(image), mask) + fd(dict(feats), mask).total
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return time.perf_counter() - start

        step()  # warm-up
        times: dict[str, list[float]] = {name: [] for name in SETTINGS}
        for _ in range(args.steps):
            for name, (deterministic, fill) in SETTINGS.items():
                torch.use_deterministic_algorithms(deterministic, warn_only=True)
                torch.utils.deterministic.fill_uninitialized_memory = fill  # type: ignore[attr-defined]
                times[name].append(step())
    torch.use_deterministic_algorithms(False)
    result: dict[str, object] = {"args": {k: str(v) for k, v in vars(args).items()}}
    print(f"{'':22s}{'median step s':>14s}{'paired ratio to off':>22s}")
    for name, values in times.items():
        ratio = statistics.median(a / b for a, b in zip(values, times["off"], strict=True))
        print(f"{name:22s}{statistics.median(values):14.4f}{ratio:22.3f}")
        result[name] = {"median_step_s": statistics.median(values), "paired_ratio_to_off": ratio}
    result.update(torch=torch.__version__, threads=torch.get_num_threads(), machine=platform.platform())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
