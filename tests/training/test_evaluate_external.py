"""``fdseg evaluate RUN --data SPEC [--at native]``: external validation, native-size scoring, warnings."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fdseg.cli import main
from fdseg.data.open import open_dataset
from fdseg.training.build import build_model
from fdseg.training.config import ExperimentConfig
from fdseg.training.evaluate import evaluate_run
from fdseg.training.run import train_run
from fdseg.training.rundir import load_model_weights

Tiny = Callable[..., ExperimentConfig]
REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("FDSEG_SHARED_DATA") or REPO.parent / "shared" / "data")
MONUSEG_TEST = SHARED_DATA / "monuseg" / "MoNuSegTestData"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def _bilinear(p: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reference upsampling: pixel centres ((i + 0.5)·h/H − 0.5), linear weights, edges clamped."""

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), pos - lo

    y0, y1, wy = axis(height, p.shape[0])
    x0, x1, wx = axis(width, p.shape[1])
    rows = p[y0] * (1 - wy)[:, None] + p[y1] * wy[:, None]
    return rows[:, x0] * (1 - wx) + rows[:, x1] * wx


def _native_reference(run: Path, spec: str, image_id: str) -> tuple[int, int, int, int]:
    """(tp, fp, fn, undecided) of one image scored at native size, computed here with Pillow and NumPy."""
    model = build_model(ExperimentConfig.from_yaml(run / "config.yaml"))
    load_model_weights(model, run / "checkpoints" / "best.ckpt")
    model.eval()
    raw = open_dataset(spec)
    sample = raw.load_record(raw.by_id(image_id))
    image, truth = sample["image"], sample["mask"].astype(bool)
    small = np.asarray(Image.fromarray(image).resize((32, 32), Image.Resampling.BILINEAR))
    x = torch.from_numpy(small.copy()).permute(2, 0, 1).float()[None] / 255.0
    with torch.no_grad():
        probs = torch.sigmoid(model(x))[0, 0].double().numpy()
    up = _bilinear(probs, *truth.shape)
    pred = up > 0.5
    undecided = int((np.abs(up - 0.5) < 1e-5).sum())
    return int((pred & truth).sum()), int((pred & ~truth).sum()), int((~pred & truth).sum()), undecided


def _assert_row(row: dict[str, str], reference: tuple[int, int, int, int]) -> None:
    tp, fp, fn, undecided = reference
    assert abs(int(row["tp"]) - tp) <= undecided and abs(int(row["fp"]) - fp) <= undecided, (row, reference)
    assert abs(int(row["fn"]) - fn) <= undecided, (row, reference)
    dice = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    assert float(row["dice"]) == pytest.approx(dice, abs=1e-3 if undecided else 1e-9)


@pytest.fixture
def run(tmp_path: Path, data_dir: Path, tiny: Tiny) -> Path:
    cfg = tiny(data_dir, train={"epochs_phase1": 2, "epochs_phase2": 0})
    return train_run(cfg, tmp_path / "run", evaluate=False)


@pytest.mark.slow
def test_external_synthetic_at_training_and_native_size(run: Path, data_dir: Path) -> None:
    spec = f"synthetic:{data_dir / 'ext48'}?family=nuclei&site=dil2&n=12&seed=5&size=48"
    evaluate_run(run)
    plain = (run / "test" / "per_sample.csv").read_bytes()

    summary = evaluate_run(run, dataset=spec)
    out = run / "external" / "synthetic-ext48"
    assert summary["dir"] == str(out) and summary["mode"] == "resize" and summary["at"] == "training"
    rows = _rows(out / "per_sample.csv")
    assert len(rows) == summary["n"] == summary["n_images"] == 12
    assert all(sum(int(r[k]) for k in ("tp", "fp", "fn", "tn")) == 32 * 32 for r in rows)
    assert summary["warnings"] == []  # 12 images, each its own group
    assert json.loads((out / "summary.json").read_text())["data"].startswith("synthetic:")

    native = evaluate_run(run, dataset=spec, at="native")
    out_native = run / "external" / "synthetic-ext48_native"
    assert native["dir"] == str(out_native) and native["mode"] == "native"
    rows = _rows(out_native / "per_sample.csv")
    assert len(rows) == 12 and all(sum(int(r[k]) for k in ("tp", "fp", "fn", "tn")) == 48 * 48 for r in rows)
    for row in rows[:3]:
        _assert_row(row, _native_reference(run, spec, row["id"]))
    assert native["mean"]["dice"] == pytest.approx(np.mean([float(r["dice"]) for r in rows]))

    both = evaluate_run(run, dataset=spec, at="native", views="paper")
    assert Path(both["dir"]).name == "synthetic-ext48_native_views" and both["n"] == 60
    assert (run / "test" / "per_sample.csv").read_bytes() == plain  # the run's own results stay

    # the run's own test split at native size: 32² images trained at 32², so the same counts as plain
    own = evaluate_run(run, at="native")
    assert own["dir"] == str(run / "test_native")
    same = {r["id"]: r for r in _rows(run / "test" / "per_sample.csv")}
    for r in _rows(run / "test_native" / "per_sample.csv"):
        assert abs(int(r["tp"]) - int(same[r["id"]]["tp"])) <= 1, r  # probabilities vs logits at 0.5


def _folder(root: Path, n: int, *, broken: bool = False) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        mask = np.zeros((40, 48), dtype=np.uint8)
        y, x = rng.integers(8, 30), rng.integers(8, 38)
        mask[y - 5 : y + 5, x - 5 : x + 5] = 255
        image = np.where(mask[..., None] > 0, (60, 40, 110), (210, 210, 210)).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"slideA_{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"slideA_{i}.png")
    if broken:
        (root / "images" / "slideA_0.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root


def test_few_images_from_one_group_warn(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    folder = _folder(tmp_path / "few", 4)
    spec = f"folder:{folder}?group_pattern=^(slide[A-Z])_"
    assert main(["evaluate", str(run), "--data", spec, "--at", "native", "--device", "cpu"]) == 0
    summary = json.loads((run / "external" / "folder-few_native" / "summary.json").read_text())
    assert summary["n_images"] == 4 and summary["n_groups"] == 1
    warnings = " ".join(summary["warnings"])
    assert "only 4 image(s) evaluated (fewer than 10)" in warnings and "single group ('slideA'" in warnings
    printed = caplog.text + capsys.readouterr().err
    assert "fewer than 10" in printed and "single group" in printed
    rows = _rows(run / "external" / "folder-few_native" / "per_sample.csv")
    assert all(sum(int(r[k]) for k in ("tp", "fp", "fn", "tn")) == 40 * 48 for r in rows)

    # another dataset in a folder of the same name gets its own folder; the first one's results stay
    other = _folder(tmp_path / "elsewhere" / "few", 10)
    again = evaluate_run(run, dataset=f"folder:{other}", at="native")
    assert Path(again["dir"]).name.startswith("folder-few-") and again["warnings"] == []
    assert json.loads((run / "external" / "folder-few_native" / "summary.json").read_text())["n_images"] == 4


def test_bad_external_input_is_one_line(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = _folder(tmp_path / "broken", 3, broken=True)
    cases = [
        (["--data", "nosuch:/tmp/x"], "nosuch"),
        (["--data", f"folder:{tmp_path / 'absent'}"], "absent"),
        (["--data", f"folder:{broken}"], "slideA_0.png"),
        (["--data", f"folder:{broken}", "--at", "nativ"], "did you mean 'native'"),
        (["--data", f"folder:{broken}", "--split", "val"], "split 'val'"),
    ]
    for extra, needle in cases:
        assert main(["evaluate", str(run), *extra]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and needle in err, err
    assert not (run / "external").exists()


@pytest.mark.slow
@pytest.mark.skipif(
    not MONUSEG_TEST.is_dir(),
    reason=f"real MoNuSeg test data not found under {SHARED_DATA} (set FDSEG_SHARED_DATA)",
)
def test_external_validation_on_real_monuseg(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = f"monuseg:{MONUSEG_TEST}"
    assert main(["evaluate", str(run), "--data", spec, "--at", "native", "--device", "cpu"]) == 0
    assert "external/monuseg-MoNuSegTestData_native/per_sample.csv" in capsys.readouterr().out
    out = run / "external" / "monuseg-MoNuSegTestData_native"
    rows = _rows(out / "per_sample.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert len(rows) == summary["n_images"] == 14 and summary["n_groups"] == 14 and summary["warnings"] == []
    assert all(sum(int(r[k]) for k in ("tp", "fp", "fn", "tn")) == 1000 * 1000 for r in rows)
    assert all(int(r["tp"]) + int(r["fn"]) > 10_000 for r in rows)  # every image has its nuclei annotated
    _assert_row(rows[0], _native_reference(run, spec, rows[0]["id"]))


def test_an_unfinished_run_is_scored_with_a_warning(run: Path) -> None:
    assert not [w for w in evaluate_run(run)["warnings"] if "not finished" in w]  # DONE: no warning
    (run / "DONE").unlink()  # as a run killed during training
    summary = evaluate_run(run, checkpoint="last")
    expected = (
        "the run has not finished training (no DONE): these are the scores of its last checkpoint so far"
    )
    assert expected in summary["warnings"]
    assert expected in json.loads((run / "test_last" / "summary.json").read_text())["warnings"]
