"""Qualitative figures of trained runs: heatmaps (Fig. 8), error overlays (Fig. 6), per-image arrows (Fig. 4).

Each function reads one or two run directories (``config.yaml``, a checkpoint, ``split.json``, the cached
data and ``test/per_sample.csv``), computes the arrays with the run's model and draws them with
:mod:`fdseg.viz.qualitative` / :func:`fdseg.viz.plot_paired_arrows`. Images are named by their id in the run's
data (training size, as cached); the default images are the worst-off test images of run A (lowest per-image
Dice; for a multi-class run the mean over the foreground classes of the per-class Dice).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from fdseg.models import FeatureTap
from fdseg.training.build import build_model, tap_layers
from fdseg.training.data import RunData, build_run_data
from fdseg.training.heads import build_head
from fdseg.training.rundir import load_model_weights, read_config
from fdseg.viz import activation_map, plot_heatmaps, plot_overlays, plot_paired_arrows

KINDS = ("heatmap", "overlay", "arrows")


@dataclass
class LoadedRun:
    """A run's configuration, model (eval mode, CPU), data and head."""

    path: Path
    cfg: Any
    model: nn.Module
    data: RunData
    head: Any
    layers: list[str]

    def class_label(self, name: str) -> int:
        """The label of a foreground class name.

        Raises:
            KeyError: a binary run, or a name that is not one of the run's classes (the message lists them).
        """
        names = () if self.head is None else self.head.class_names
        if name not in names:
            valid = list(names) if names else "none (a binary run)"
            raise KeyError(f"unknown class {name!r} for run {self.path}; its classes: {valid}")
        return names.index(name) + 1

    @property
    def n_labels(self) -> int:
        """Labels drawn in ground-truth panels (background + classes)."""
        return 2 if self.head is None else self.head.num_classes + 1

    def item(self, image_id: str) -> dict[str, Any]:
        """The cached item of ``image_id``.

        Raises:
            KeyError: an id that is not in the run's data (the message names the run and some ids).
        """
        try:
            return self.data.base[self.data.base.index_of(image_id)]
        except KeyError:
            some = ", ".join(self.data.base.ids[:5])
            raise KeyError(
                f"image {image_id!r} is not in the data of run {self.path} ({self.cfg.data.base}); its ids "
                f"include {some}"
            ) from None


def load_run(run_dir: str | Path, checkpoint: str = "best") -> LoadedRun:
    """Load a trained run for drawing.

    Raises:
        FileNotFoundError: not a run directory, or no such checkpoint.
    """
    path = Path(run_dir)
    cfg = read_config(path)
    ckpt = path / "checkpoints" / f"{checkpoint}.ckpt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"{ckpt} does not exist (train the run first)")
    model = build_model(cfg)
    load_model_weights(model, ckpt)
    model.eval()
    return LoadedRun(path, cfg, model, build_run_data(cfg, path), build_head(cfg), tap_layers(cfg, model))


def per_image_scores(run_dir: str | Path) -> pd.Series:
    """Per-image Dice of a run's ``test/per_sample.csv`` (multi-class: mean over the foreground classes).

    Raises:
        FileNotFoundError: no per_sample.csv.
    """
    path = Path(run_dir) / "test" / "per_sample.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (run fdseg evaluate first)")
    frame = pd.read_csv(path, dtype={"id": str})
    if "class" in frame.columns:
        frame = frame[frame["label"] > 0]
    return frame.groupby("id", sort=False)["dice"].mean()


def worst_off_ids(run_dir: str | Path, k: int = 4) -> list[str]:
    """The ``k`` test images of lowest per-image Dice (ties by id)."""
    scores = per_image_scores(run_dir).dropna()
    ordered = sorted(scores.items(), key=lambda kv: (kv[1], kv[0]))
    return [str(i) for i, _ in ordered[:k]]


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div(255.0)[None]


def predict_arrays(run: LoadedRun, ids: Sequence[str], *, features: bool = False) -> list[dict[str, Any]]:
    """Per id: ``image`` (H, W, C) uint8, ``gt`` and ``pred`` (H, W) (bool or class map), and with
    ``features`` the tapped maps ``{layer: (C, h, w)}`` of the forward pass.

    Raises:
        KeyError: an id not in the run's data.
    """
    items = [run.item(i) for i in ids]  # every id is checked before any forward pass
    out: list[dict[str, Any]] = []
    with FeatureTap(run.model, run.layers) as taps, torch.no_grad():
        for image_id, item in zip(ids, items):
            logits = run.model(_tensor(item["image"])).float()
            binary = run.head is None
            pred = (logits[0, 0] > 0).numpy() if binary else run.head.predict(logits)[0, 0].numpy()
            entry: dict[str, Any] = {"id": image_id, "image": item["image"], "gt": item["mask"], "pred": pred}
            if features:
                entry["features"] = {k: v[0].detach().clone() for k, v in taps.items()}
            out.append(entry)
    return out


def heatmap_figure(run_a: LoadedRun, run_b: LoadedRun | None, ids: Sequence[str]) -> Figure:
    """Fig. 8 for ``ids``: channel-mean |activation| per tapped layer, A and B with one scale per layer."""
    layers = run_a.layers if run_b is None else [x for x in run_a.layers if x in run_b.layers]
    arrays = [predict_arrays(r, ids, features=True) for r in ([run_a] if run_b is None else [run_a, run_b])]
    maps = []
    for run_arrays in arrays:
        maps.append(
            {
                layer: [activation_map(e["features"][layer], e["image"].shape[:2]) for e in run_arrays]
                for layer in layers
            }
        )
    labels = (run_a.path.name, run_b.path.name if run_b is not None else "")
    return plot_heatmaps(
        [e["image"] for e in arrays[0]],
        maps[0],
        maps[1] if run_b is not None else None,
        ids=ids,
        labels=labels,
    )


def _only_class(arrays: list[dict[str, Any]], label: int) -> list[dict[str, Any]]:
    return [{**e, "gt": np.asarray(e["gt"]) == label, "pred": np.asarray(e["pred"]) == label} for e in arrays]


def overlay_figure(
    run_a: LoadedRun, run_b: LoadedRun | None, ids: Sequence[str], *, class_name: str | None = None
) -> Figure:
    """Fig. 6 for ``ids``: image, ground truth, FP/FN overlays of A (and B); one class only if named.

    Raises:
        KeyError: an unknown class name or image id.
    """
    label = run_a.class_label(class_name) if class_name is not None else None
    a = predict_arrays(run_a, ids)
    b = predict_arrays(run_b, ids) if run_b is not None else None
    if label is not None:
        a = _only_class(a, label)
        b = _only_class(b, label) if b is not None else None
    scores = per_image_scores(run_a.path) if (run_a.path / "test" / "per_sample.csv").is_file() else None
    labels = (run_a.path.name, run_b.path.name if run_b is not None else "")
    return plot_overlays(
        [e["image"] for e in a],
        [e["gt"] for e in a],
        [e["pred"] for e in a],
        [e["pred"] for e in b] if b is not None else None,
        ids=list(ids),
        labels=labels,
        scores_a=[float(scores.get(i, np.nan)) for i in ids] if scores is not None else None,
        n_labels=run_a.n_labels if label is None else 2,
    )


def arrows_figure(run_a: str | Path, run_b: str | Path, layer: str) -> Figure:
    """Fig. 4: per-image (L_fd of ``layer``, Dice) from run A to run B (per-image means for multi-class)."""
    frames = []
    for run in (run_a, run_b):
        path = Path(run) / "test" / "per_sample.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist (run fdseg evaluate first)")
        frame = pd.read_csv(path, dtype={"id": str})
        if "class" in frame.columns:
            frame = frame[frame["label"] > 0].groupby("id", as_index=False).mean(numeric_only=True)
        if f"fd/{layer}" not in frame.columns:
            have = sorted(c[3:] for c in frame.columns if c.startswith("fd/"))
            raise KeyError(f"{path} has no L_fd of layer {layer!r}; it has {have}")
        frames.append(frame)
    return plot_paired_arrows(frames[0], frames[1], layer, labels=(Path(run_a).name, Path(run_b).name))


def write_figures(
    run_a: str | Path,
    run_b: str | Path | None,
    image_ids: Sequence[str],
    kind: str,
    out: str | Path,
    *,
    layer: str = "bottleneck",
    k: int = 4,
    dpi: int = 100,
    class_name: str | None = None,
) -> Path:
    """Draw one kind of figure into ``out/<kind>.png`` and return its path.

    Args:
        class_name: overlays of one foreground class only (multi-class runs).

    Raises:
        ValueError: an unknown kind, or ``arrows`` without a second run.
        KeyError: an image id not in run A's data; an unknown class name.
        FileNotFoundError: a missing run, checkpoint or per_sample.csv.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown figure kind {kind!r}; valid: {list(KINDS)}")
    if kind == "arrows":
        if run_b is None:
            raise ValueError("--kind arrows needs two runs (RUN RUN_B)")
        fig = arrows_figure(run_a, run_b, layer)
    else:
        a = load_run(run_a)
        b = load_run(run_b) if run_b is not None else None
        ids = list(image_ids) or worst_off_ids(run_a, k)
        for image_id in ids:  # one clear error before any drawing
            a.item(image_id)
            if b is not None:
                b.item(image_id)
        if class_name is not None:
            a.class_label(class_name)
        if kind == "heatmap":
            fig = heatmap_figure(a, b, ids)
        else:
            fig = overlay_figure(a, b, ids, class_name=class_name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{kind}.png"
    fig.savefig(path, dpi=dpi)
    return path
