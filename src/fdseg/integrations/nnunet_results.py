"""nnU-Net predictions as an fdseg result table (``<run>/<split>/per_sample.csv`` + ``summary.json``).

nnU-Net writes predicted label maps as ``<case>.png`` (the ``validation/`` folder of a trained fold, or the
output folder of ``nnUNetv2_predict``). :func:`collect_nnunet_results` compares each with the reference label
of a dataset written by :func:`fdseg.integrations.nnunet_export.export_nnunet` and writes the same table
that ``fdseg evaluate`` writes for fdseg's own runs: one row per image with ``id`` (the fdseg image id),
``source`` (0 base, 1 novel), ``tp, fp, fn, tn``, ``dice, iou, sensitivity, specificity, precision`` and
``empty_gt``, under fdseg's empty policy (Dice = IoU = 1 when the ground truth and the prediction are both
empty, else 0 on an empty ground truth). A multi-class dataset gets one ``dice/<label>`` and ``iou/<label>``
column per foreground label; its ``dice``/``iou`` are the means over the foreground labels and its counts the
sums over them.

No nnU-Net import is needed: the files are PNGs and JSON.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from fdseg.metrics import COUNT_KEYS, METRIC_KEYS, metrics_from_counts

EMPTY_POLICY: Final = "one_if_pred_empty"
SPLITS: tuple[str, ...] = ("test", "val")
_SOURCE_INDEX = {"base": 0, "novel": 1}


def _read_label(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img)
    except OSError as err:
        raise OSError(f"{path}: unreadable label PNG ({err})") from None


def _dataset_json(dataset: Path) -> dict[str, Any]:
    path = dataset / "dataset.json"
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} not found: --dataset must be a Dataset<ID>_<Name> folder written by fdseg nnunet export"
        ) from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("fdseg"), dict):
        raise ValueError(f"{path} has no 'fdseg' block: the dataset was not exported by fdseg nnunet export")
    return payload


def _nanmean(values: list[float]) -> float | None:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else None


def _row(pred: np.ndarray, ref: np.ndarray, labels: Mapping[str, int]) -> dict[str, Any]:
    """Counts and metrics of one image over the foreground labels."""
    fg = {name: value for name, value in labels.items() if value != 0}
    counts: dict[str, list[int]] = {key: [] for key in COUNT_KEYS}
    for value in fg.values():
        p, r = pred == value, ref == value
        counts["tp"].append(int(np.sum(p & r)))
        counts["fp"].append(int(np.sum(p & ~r)))
        counts["fn"].append(int(np.sum(~p & r)))
        counts["tn"].append(int(np.sum(~p & ~r)))
    tensors = {k: torch.tensor([v], dtype=torch.int64) for k, v in counts.items()}
    metrics = metrics_from_counts(**tensors, empty_policy=EMPTY_POLICY)
    row: dict[str, Any] = {}
    if len(fg) == 1:
        row.update({key: counts[key][0] for key in COUNT_KEYS})
        row.update({key: float(metrics[key][0, 0]) for key in METRIC_KEYS})
        row["empty_gt"] = bool(metrics["empty_gt"][0, 0])
        return row
    row.update({key: sum(counts[key]) for key in COUNT_KEYS})
    for key in METRIC_KEYS:
        values = [float(v) for v in metrics[key][0]]
        row[key] = _nanmean(values)
    row["empty_gt"] = bool(metrics["empty_gt"][0].all())
    for k, name in enumerate(fg):
        row[f"dice/{name}"] = float(metrics["dice"][0, k])
        row[f"iou/{name}"] = float(metrics["iou"][0, k])
    return row


def collect_nnunet_results(
    predictions: str | Path,
    dataset: str | Path,
    out: str | Path,
    *,
    split: str = "test",
    arm: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Score nnU-Net's predicted PNGs per image and write ``<out>/<split>/{per_sample.csv,summary.json}``.

    ``<out>/run.json`` (``{"engine": "nnU-Net", "arm", "seed", "fold", …}``) makes ``out`` a run that
    ``fdseg compare`` reads beside fdseg's own runs (images paired by fdseg id, runs by seed).

    Args:
        predictions: a folder of ``<case>.png`` label maps (``fold_X/validation`` or an
            ``nnUNetv2_predict`` output folder).
        dataset: the raw ``Dataset<ID>_<Name>`` folder written by ``fdseg nnunet export`` (references and the
            case -> fdseg id map).
        out: the run-like directory to write (read by fdseg's report and comparison tools).
        split: ``test`` (the dataset's imagesTs cases) or ``val`` (fold 0's validation cases).
        arm: the arm name for comparisons (default: ``nnunet:<trainer>`` when ``predictions`` lies in a
            trained fold folder, else ``nnunet``).
        seed: the seed recorded for pairing with fdseg runs.

    Returns:
        The summary: ``{"split", "n", "mean": {metric: value}, "empty_gt", "empty_policy", "predictions",
        "dataset"}``.

    Raises:
        ValueError: an unknown split; a predicted case that is not in the dataset or belongs to another
            split; a split case without a prediction; a prediction whose size differs from its reference.
        FileNotFoundError: a missing folder, ``dataset.json`` or reference label.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {list(SPLITS)}")
    predictions, dataset, out = Path(predictions), Path(dataset), Path(out)
    if not predictions.is_dir():
        raise FileNotFoundError(f"{predictions}: no such prediction folder")
    meta = _dataset_json(dataset)
    cases: Mapping[str, Mapping[str, str]] = meta["fdseg"].get("cases", {})
    labels: Mapping[str, int] = {str(k): int(v) for k, v in meta.get("labels", {}).items()}
    wanted = {case for case, info in cases.items() if info.get("set") == split}
    files = {p.name[: -len(".png")]: p for p in sorted(predictions.glob("*.png"))}
    for case in files:
        if case not in cases:
            raise ValueError(f"{files[case]}: case {case!r} is not in {dataset / 'dataset.json'}")
        if case not in wanted:
            raise ValueError(
                f"{files[case]}: case {case!r} is in the {cases[case].get('set')!r} set, not {split!r}"
            )
    missing = sorted(wanted - set(files))
    if missing:
        raise ValueError(
            f"{predictions}: no prediction for {len(missing)} {split} case(s), e.g. {missing[:3]}; "
            f"predict every case of the {split} set first"
        )
    ref_dir = dataset / ("labelsTs" if split == "test" else "labelsTr")
    rows: list[dict[str, Any]] = []
    for case in sorted(wanted, key=lambda c: (cases[c]["source"], cases[c]["id"])):
        pred = _read_label(files[case])
        ref_path = ref_dir / f"{case}.png"
        if not ref_path.is_file():
            raise FileNotFoundError(f"{ref_path}: reference label missing")
        ref = _read_label(ref_path)
        if pred.shape != ref.shape:
            raise ValueError(
                f"{files[case]}: prediction {pred.shape} and reference {ref.shape} differ in size"
            )
        info = cases[case]
        row: dict[str, Any] = {"id": info["id"], "source": _SOURCE_INDEX.get(info["source"], 0), "case": case}
        row.update(_row(pred, ref, labels))
        rows.append(row)
    if not rows:
        raise ValueError(f"{dataset}: the {split} set is empty")
    target = out / split
    target.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (target / "per_sample.csv").write_text(buf.getvalue())
    summary = {
        "split": split,
        "n": len(rows),
        "mean": {key: _nanmean([float(r[key]) for r in rows if r[key] is not None]) for key in METRIC_KEYS},
        "empty_gt": sum(bool(r["empty_gt"]) for r in rows),
        "empty_policy": f"{EMPTY_POLICY}: Dice = IoU = 1 when the ground truth and the prediction are both "
        "empty, else 0",
        "predictions": str(predictions),
        "dataset": str(dataset),
        "engine": "nnU-Net",
    }
    (target / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    trainer, fold = _trainer_and_fold(predictions)
    run = {
        "engine": "nnU-Net",
        "arm": arm or (f"nnunet:{trainer}" if trainer else "nnunet"),
        "seed": seed,
        "fold": fold,
        "trainer": trainer,
        "dataset": str(dataset),
    }
    (out / "run.json").write_text(json.dumps(run, indent=1) + "\n")
    return summary


def _trainer_and_fold(predictions: Path) -> tuple[str | None, str | None]:
    """The trainer and fold of ``…/<trainer>__<plans>__<config>/fold_<k>/validation`` (or of a folder inside
    a fold), ``(None, None)`` when ``predictions`` is not inside a trained fold folder."""
    for folder in (predictions, *predictions.resolve().parents):
        if folder.name.startswith("fold_") and "__" in folder.parent.name:
            return folder.parent.name.split("__")[0], folder.name[len("fold_") :]
    return None, None


__all__ = ["SPLITS", "collect_nnunet_results"]
