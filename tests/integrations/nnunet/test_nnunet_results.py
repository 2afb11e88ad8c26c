"""nnU-Net predictions -> fdseg's per_sample.csv, checked against Dice/IoU computed here from the pixels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import Sites
from fdseg.integrations.nnunet_export import export_nnunet
from fdseg.integrations.nnunet_results import collect_nnunet_results


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def test_per_image_table_from_predicted_pngs(sites: Sites, tmp_path: Path) -> None:
    result = export_nnunet(sites.base, tmp_path / "raw", dataset_id=920, name="Res")
    cases = result.cases
    test_cases = sorted(c for c, info in cases.items() if info["set"] == "test")
    assert len(test_cases) == 2
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    refs = {c: _read(result.folder / "labelsTs" / f"{c}.png") for c in test_cases}
    first, second = test_cases
    Image.fromarray(refs[first]).save(pred_dir / f"{first}.png")  # perfect
    shifted = np.roll(refs[second], 3, axis=1)  # partly overlapping
    Image.fromarray(shifted).save(pred_dir / f"{second}.png")
    summary = collect_nnunet_results(pred_dir, result.folder, tmp_path / "run", split="test")
    with (tmp_path / "run" / "test" / "per_sample.csv").open() as fh:
        rows = {row["case"]: row for row in csv.DictReader(fh)}
    assert rows[first]["id"] == cases[first]["id"] and rows[first]["source"] == "0"
    assert float(rows[first]["dice"]) == 1.0 and float(rows[first]["iou"]) == 1.0
    p, r = shifted.astype(bool), refs[second].astype(bool)
    tp, fp, fn = int((p & r).sum()), int((p & ~r).sum()), int((~p & r).sum())
    assert tp > 0 and fp > 0
    assert int(rows[second]["tp"]) == tp and int(rows[second]["fp"]) == fp and int(rows[second]["fn"]) == fn
    assert float(rows[second]["dice"]) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert float(rows[second]["iou"]) == pytest.approx(tp / (tp + fp + fn))
    assert summary["n"] == 2
    assert summary["mean"]["dice"] == pytest.approx((1.0 + 2 * tp / (2 * tp + fp + fn)) / 2)
    written = json.loads((tmp_path / "run" / "test" / "summary.json").read_text())
    assert written["engine"] == "nnU-Net" and written["n"] == 2


def test_empty_ground_truth_follows_fdseg_policy(sites: Sites, tmp_path: Path) -> None:
    result = export_nnunet(sites.base, tmp_path / "raw", dataset_id=921, name="Empty")
    test_cases = sorted(c for c, info in result.cases.items() if info["set"] == "test")
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    for k, case in enumerate(test_cases):
        empty = np.zeros_like(_read(result.folder / "labelsTs" / f"{case}.png"))
        Image.fromarray(empty).save(result.folder / "labelsTs" / f"{case}.png")  # empty reference
        pred = empty.copy()
        pred[0, 0] = k  # first: empty prediction, second: one false-positive pixel
        Image.fromarray(pred).save(pred_dir / f"{case}.png")
    collect_nnunet_results(pred_dir, result.folder, tmp_path / "run")
    with (tmp_path / "run" / "test" / "per_sample.csv").open() as fh:
        rows = {row["case"]: row for row in csv.DictReader(fh)}
    assert [float(rows[c]["dice"]) for c in test_cases] == [1.0, 0.0]
    assert all(rows[c]["empty_gt"] == "True" for c in test_cases)


def test_incomplete_or_foreign_predictions_are_refused(sites: Sites, tmp_path: Path) -> None:
    result = export_nnunet(sites.base, tmp_path / "raw", dataset_id=922, name="Partial")
    test_cases = sorted(c for c, info in result.cases.items() if info["set"] == "test")
    val_case = next(c for c, info in result.cases.items() if info["set"] == "val")
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    label = _read(result.folder / "labelsTs" / f"{test_cases[0]}.png")
    Image.fromarray(label).save(pred_dir / f"{test_cases[0]}.png")
    with pytest.raises(ValueError, match=r"no prediction for 1 test case\(s\)"):
        collect_nnunet_results(pred_dir, result.folder, tmp_path / "run")
    Image.fromarray(label).save(pred_dir / f"{val_case}.png")
    with pytest.raises(ValueError, match=f"case '{val_case}' is in the 'val' set, not 'test'"):
        collect_nnunet_results(pred_dir, result.folder, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(FileNotFoundError, match="written by fdseg nnunet export"):
        collect_nnunet_results(pred_dir, tmp_path, tmp_path / "run")


def test_collected_folders_are_runs_for_fdseg_compare(sites: Sites, tmp_path: Path) -> None:
    from fdseg.experiments.compare import compare_runs

    result = export_nnunet(sites.base, tmp_path / "raw", dataset_id=923, name="Cmp")
    test_cases = sorted(c for c, info in result.cases.items() if info["set"] == "test")
    refs = {c: _read(result.folder / "labelsTs" / f"{c}.png") for c in test_cases}
    dice: dict[str, list[float]] = {}
    for arm, shift in (("nnunet:nnUNetTrainer", 4), ("nnunet:nnUNetTrainerFD", 1)):
        pred_dir = tmp_path / f"pred_{shift}"
        pred_dir.mkdir()
        for case in test_cases:
            Image.fromarray(np.roll(refs[case], shift, axis=0)).save(pred_dir / f"{case}.png")
        # a fold's folder layout, so that the arm is read from the trainer's folder name
        run_dir = tmp_path / "runs" / arm.split(":")[1]
        fold = tmp_path / "results" / f"{arm.split(':')[1]}__nnUNetPlans__2d" / "fold_0" / "validation"
        fold.mkdir(parents=True)
        for p in pred_dir.iterdir():
            (fold / p.name).write_bytes(p.read_bytes())
        summary = collect_nnunet_results(fold.parent / "validation", result.folder, run_dir, split="test")
        meta = json.loads((run_dir / "run.json").read_text())
        assert meta["arm"] == arm and meta["fold"] == "0" and meta["engine"] == "nnU-Net"
        dice[arm] = [summary["mean"]["dice"]]
    comparison = compare_runs([tmp_path / "runs"], baseline="nnunet:nnUNetTrainer", n_boot=200)
    table = comparison.table.set_index("arm")
    assert list(table.index) == ["nnunet:nnUNetTrainer", "nnunet:nnUNetTrainerFD"]
    assert table.loc["nnunet:nnUNetTrainerFD", "mean_diff"] == pytest.approx(
        dice["nnunet:nnUNetTrainerFD"][0] - dice["nnunet:nnUNetTrainer"][0]
    )
