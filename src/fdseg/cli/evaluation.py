"""``fdseg evaluate`` and ``fdseg predict``: score a run per image, segment new images."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from fdseg.cli import DeviceOpt, _echo, _runtime, app


def _line(label: str, n: int, means: dict[str, float | None], soft: float | None) -> str:
    def fmt(value: float | None) -> str:
        return "–" if value is None or math.isnan(value) else f"{value:.4f}"

    return (
        f"{label}: n={n} dice={fmt(means.get('dice'))} iou={fmt(means.get('iou'))} "
        f"(soft batch Dice {fmt(soft)})"
    )


def _check_run_dir(run: Path) -> None:
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"{run} is not an fdseg run directory (no config.yaml)")


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run directory.")],
    split: Annotated[str, typer.Option(help="test, val or train.")] = "test",
    checkpoint: Annotated[
        str,
        typer.Option(help="best, last or phase1_best (other than best: written to <folder>_<checkpoint>)."),
    ] = "best",
    views: Annotated[
        str,
        typer.Option(
            "--views",
            help="none, or paper: every image also h-flipped, v-flipped, rotated by 90 and 270 degrees, each "
            "view scored as its own row (written to <folder>_views).",
        ),
    ] = "none",
    at: Annotated[
        str,
        typer.Option(
            "--at",
            help="training (metrics on the training-size images) or native (probabilities resized "
            "bilinearly to each image's native size, then thresholded; written to <folder>_native).",
        ),
    ] = "training",
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="Score the run on every image of another dataset with ground truth, NAME:PATH (written "
            "to <run>/external/<format>-<folder>).",
        ),
    ] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Evaluate a run's checkpoint per image; writes per_sample.csv and summary.json."""
    _check_run_dir(run)  # before the seconds it takes to import torch, Lightning and MONAI
    from fdseg.training.evaluate import evaluate_run

    result = evaluate_run(
        run,
        split=split,
        checkpoint=checkpoint,
        runtime=_runtime(device),
        views=views,
        at=at,
        dataset=data,
    )
    label = f"{result['data']}" if data is not None else split
    n_images = result.get("n_images", result["n"])
    n_views = len(result.get("view_names", ["identity"]))
    count = f"{n_images} images x {n_views} views" if n_views > 1 else f"{n_images} images"
    mode = result.get("mode", "resize")
    _echo(_line(f"{label} [{mode}]", result["n"], result["mean"], result.get("soft_batch_dice")))
    for view, sub in result.get("per_view", {}).items():
        _echo(_line(f"  {view}", sub["n"], sub["mean"], sub.get("soft_batch_dice")))
    labels = {"empty_gt": "empty GT", "n_groups": "groups"}
    details = [f"{name}: {result[key]}" for key, name in labels.items() if key in result]
    _echo(f"evaluated: {count}" + (f" ({', '.join(details)})" if details else ""))
    folder = Path(result.get("dir", Path(run) / split))
    _echo(f"per-sample table: {folder / 'per_sample.csv'} (summary: {folder / 'summary.json'})")


@app.command()
def predict(
    run: Annotated[Path, typer.Argument(help="Run directory.")],
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE", help="Image files, or folders of them.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the mask PNGs.")],
    checkpoint: Annotated[str, typer.Option(help="best, last or phase1_best.")] = "best",
    mode: Annotated[
        str | None,
        typer.Option(
            "--mode",
            help="resize (to the training size, probabilities resized back) or sliding (windows of the "
            "training size at the training magnification). Default: sliding for a run trained on tiles, "
            "resize otherwise.",
        ),
    ] = None,
    threshold: Annotated[float, typer.Option("--threshold", help="Foreground if p > threshold.")] = 0.5,
    save_probs: Annotated[
        str | None,
        typer.Option(
            "--save-probs",
            help="Also write probabilities to <out>/probs/: tiff (float32) or png16 (p x 65535).",
        ),
    ] = None,
    overlay: Annotated[
        bool,
        typer.Option("--overlay", help="Also write <out>/overlays/: each image with the predicted contour."),
    ] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Predict masks (PNG, 0/255, at each image's native size)."""
    _check_run_dir(run)  # before the seconds it takes to import torch, Lightning and MONAI
    missing = next((p for p in images if not p.exists()), None)
    if missing is not None:
        raise FileNotFoundError(f"image not found: {missing}")
    from fdseg.training.evaluate import predict as predict_masks

    paths = predict_masks(
        run,
        images,
        out,
        checkpoint=checkpoint,
        runtime=_runtime(device),
        mode=mode,
        threshold=threshold,
        save_probs=save_probs,
        overlay=overlay,
    )
    extras = [name for name, on in (("probabilities", save_probs), ("overlays", overlay)) if on]
    written = f"{len(paths)} mask{'s' * (len(paths) != 1)} written to {out}"
    _echo(written + (f" (with {' and '.join(extras)})" if extras else ""))
