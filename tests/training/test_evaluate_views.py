"""``fdseg evaluate --views paper``: the paper's 5-view augmented test set, scored per view."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from fdseg.cli import main
from fdseg.training.build import build_model
from fdseg.training.config import ExperimentConfig
from fdseg.training.data import build_run_data
from fdseg.training.evaluate import VIEW_SETS, evaluate_run, view_array
from fdseg.training.run import train_run
from fdseg.training.rundir import load_model_weights

Tiny = Callable[..., ExperimentConfig]
PAPER_VIEWS = ("identity", "hflip", "vflip", "rot90", "rot270")
#: The views written with NumPy alone (rot270 as three counter-clockwise quarter turns).
TURNS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "identity": lambda a: a,
    "hflip": np.fliplr,
    "vflip": np.flipud,
    "rot90": lambda a: np.rot90(a, 1),
    "rot270": lambda a: np.rot90(a, 3),
}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_views_move_pixels_as_named() -> None:
    a = np.array([[1, 2, 3], [4, 5, 6]])
    expected = {
        "identity": [[1, 2, 3], [4, 5, 6]],
        "hflip": [[3, 2, 1], [6, 5, 4]],
        "vflip": [[4, 5, 6], [1, 2, 3]],
        "rot90": [[3, 6], [2, 5], [1, 4]],  # counter-clockwise: the right column becomes the top row
        "rot270": [[4, 1], [5, 2], [6, 3]],
    }
    assert VIEW_SETS["paper"] == PAPER_VIEWS
    for view, want in expected.items():
        np.testing.assert_array_equal(view_array(a, view), np.array(want))
        t = torch.from_numpy(a)[None, None]
        np.testing.assert_array_equal(view_array(t, view)[0, 0].numpy(), np.array(want))
    rgb = np.arange(2 * 3 * 3).reshape(2, 3, 3)  # channels stay attached to their pixel
    np.testing.assert_array_equal(view_array(rgb, "rot90")[0, 0], rgb[0, 2])


@pytest.mark.slow
def test_paper_views_scored_per_view_beside_the_plain_test(
    tmp_path: Path, data_dir: Path, tiny: Tiny, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tiny(data_dir, train={"epochs_phase1": 2, "epochs_phase2": 0})
    run = train_run(cfg, tmp_path / "run", evaluate=False)
    evaluate_run(run)
    plain = (run / "test" / "per_sample.csv").read_bytes()
    summary = evaluate_run(run, views="paper")

    out = run / "test_views"
    assert summary["dir"] == str(out) and (out / "summary.json").is_file()
    assert (run / "test" / "per_sample.csv").read_bytes() == plain  # the plain results stay
    rows = _rows(out / "per_sample.csv")
    test_ids = json.loads((run / "split.json").read_text())["sources"]["base"]["sets"]["test"]
    assert sorted((r["id"], r["view"]) for r in rows) == sorted((i, v) for i in test_ids for v in PAPER_VIEWS)
    assert summary["n"] == 5 * len(test_ids) and summary["n_images"] == len(test_ids)
    assert any("fewer than 10" in w for w in summary["warnings"])

    # identity rows are the plain evaluation
    plain_rows = {r["id"]: r for r in _rows(run / "test" / "per_sample.csv")}
    for r in rows:
        if r["view"] == "identity":
            assert {k: r[k] for k in ("tp", "fp", "fn", "tn")} == {
                k: plain_rows[r["id"]][k] for k in ("tp", "fp", "fn", "tn")
            }

    # every view row equals an independent computation: transform the cached image with NumPy, segment
    model = build_model(cfg)
    load_model_weights(model, run / "checkpoints" / "best.ckpt")
    model.eval()
    images = {i: (im, m) for i, im, m in build_run_data(cfg, run).images("test")}
    for r in rows:
        image, mask = images[r["id"]]
        turned = TURNS[r["view"]]
        x = torch.from_numpy(np.ascontiguousarray(turned(image))).permute(2, 0, 1).float()[None] / 255.0
        with torch.no_grad():
            pred = (model(x)[0, 0] > 0).numpy()
        truth = turned(mask)
        assert int(r["tp"]) == int((pred & truth).sum()), r
        assert int(r["fp"]) == int((pred & ~truth).sum()), r
        assert int(r["fn"]) == int((~pred & truth).sum()), r

    # means over all rows and per view
    dice = {v: [float(r["dice"]) for r in rows if r["view"] == v] for v in PAPER_VIEWS}
    assert summary["mean"]["dice"] == pytest.approx(np.mean([d for ds in dice.values() for d in ds]))
    for view in PAPER_VIEWS:
        assert summary["per_view"][view]["n"] == len(test_ids)
        assert summary["per_view"][view]["mean"]["dice"] == pytest.approx(np.mean(dice[view]))
    assert json.loads((out / "summary.json").read_text())["per_view"]["rot90"]["n"] == len(test_ids)

    # the command line: per-view lines, and an unknown view set is one line naming it, nothing written
    assert main(["evaluate", str(run), "--views", "paper", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert all(f"  {v}: n={len(test_ids)}" in printed for v in PAPER_VIEWS) and "test_views" in printed
    assert main(["evaluate", str(run), "--views", "papr", "--split", "val"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'papr'" in err and "did you mean 'paper'" in err
    assert not (run / "val_views").exists()

    # another checkpoint is scored beside the run's own test/ (which keeps the best checkpoint's scores)
    last = evaluate_run(run, checkpoint="last")
    assert last["dir"] == str(run / "test_last") and last["checkpoint"] == "last"
    assert (run / "test" / "per_sample.csv").read_bytes() == plain
    assert json.loads((run / "test" / "summary.json").read_text())["checkpoint"] == "best"


@pytest.mark.slow
def test_paper_views_of_a_tiled_run_are_whole_native_images(
    tmp_path: Path, data_dir: Path, tiny: Tiny
) -> None:
    base = f"synthetic:{data_dir / 'base48'}?family=nuclei&site=base&n=12&seed=0&size=48"
    cfg = tiny(
        data_dir,
        data={"base": base, "novel": None, "novel_k": None, "preprocess": "tile", "image_size": 32},
        train={"epochs_phase1": 1, "epochs_phase2": 0},
    )
    run = train_run(cfg, tmp_path / "tiled", evaluate=False)
    plain = evaluate_run(run)
    summary = evaluate_run(run, views="paper", at="native")  # a tiled run is always scored at native size
    assert summary["mode"] == "sliding" and summary["dir"] == str(run / "test_views")
    rows = _rows(run / "test_views" / "per_sample.csv")
    assert len(rows) == 5 * plain["n"] and {r["view"] for r in rows} == set(PAPER_VIEWS)
    assert all(sum(int(r[k]) for k in ("tp", "fp", "fn", "tn")) == 48 * 48 for r in rows)
    assert all(int(r["tiles"]) == 4 for r in rows)  # 48² in 32² tiles: 2 x 2, each seen under the view
    identity = {r["id"]: r for r in rows if r["view"] == "identity"}
    for r in _rows(run / "test" / "per_sample.csv"):
        assert {k: identity[r["id"]][k] for k in ("tp", "fp", "fn", "dice")} == {
            k: r[k] for k in ("tp", "fp", "fn", "dice")
        }
