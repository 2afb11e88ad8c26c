from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fdseg.report import compare_to_baseline, write_experiment_report, write_run_report

HOSTILE = '<script>alert("x")</script> & $x_1$'
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr", "area", "base", "embed", "track"}


class _Checker(HTMLParser):
    """Collects tags, checks nesting, and gathers every <img> src and every text node."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.imgs: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.doctype = ""

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs).get("src") or "")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _check_html(path: Path) -> _Checker:
    text = path.read_text(encoding="utf-8")
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert checker.doctype.lower() == "doctype html"
    assert checker.errors == [] and checker.stack == []
    assert checker.tags[:3] == ["html", "head", "meta"] and "script" not in checker.tags
    assert "<script" not in text.lower()
    for src in checker.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1], validate=True).startswith(PNG_SIGNATURE)
    return checker


def _make_run(root: Path, seed: int, *, shift: float = 0.0, complete: bool = True) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump({"schema": 1, "name": HOSTILE, "seed": seed}))
    n_epochs = 6
    history = pd.DataFrame(
        {
            "epoch": range(n_epochs),
            "phase": [1, 1, 1, 2, 2, 2],
            "step": np.arange(n_epochs) * 5,
            "train_loss": np.linspace(1.0, 0.4, n_epochs),
            "train_seg": np.linspace(1.0, 0.4, n_epochs),
            "val_dice": np.linspace(0.5, 0.8, n_epochs) + shift,
            "val_loss": np.linspace(1.1, 0.6, n_epochs),
            "fd/enc1": [np.nan] * 3 + list(rng.uniform(1, 2, 3)),
            "fd/bottleneck": [np.nan] * 3 + list(rng.uniform(1, 2, 3)),
            "lambda/enc1": [0.0] * 3 + [0.001] * 3,
            "lambda/bottleneck": [0.0] * 3 + [0.001] * 3,
        }
    )
    history.to_csv(root / "history.csv", index=False)
    if not complete:
        return root
    (root / "test").mkdir()
    n = 12
    dice = np.clip(rng.uniform(0.4, 0.9, n) + shift, 0, 1)
    dice[0] = 0.1 + shift  # "007" is the lowest-Dice image
    per_sample = pd.DataFrame(
        {
            "id": ["007", *[f"img{i:02d}" for i in range(1, n - 1)], HOSTILE],
            "source": [0] * 6 + [1] * 6,
            "tp": 10,
            "fp": 2,
            "fn": 3,
            "tn": 100,
            "dice": dice,
            "iou": dice / (2 - dice),
            "sensitivity": dice,
            "specificity": 0.95,
            "precision": dice,
            "empty_gt": [False] * (n - 1) + [True],
            "fd/enc1": 2 - dice + rng.normal(0, 0.05, n),
            "fd/bottleneck": rng.normal(1, 0.1, n),
        }
    )
    per_sample.to_csv(root / "test" / "per_sample.csv", index=False)
    summary = {"split": "test", "n": n, "mean": {"dice": float(dice.mean())}, "empty_policy": HOSTILE}
    (root / "test" / "summary.json").write_text(json.dumps(summary))
    (root / "DONE").write_text("")
    return root


def test_run_report_is_valid_self_contained_html(tmp_path: Path) -> None:
    run = _make_run(tmp_path / "run", 0)
    path = write_run_report(run, dpi=40)
    assert path == run / "report.html"
    checker = _check_html(path)
    text = path.read_text(encoding="utf-8")
    assert "&lt;script&gt;" in text  # the hostile id, config value and summary string are shown, escaped
    # training curves, fd curves, lambda curves, dice vs fd
    assert len(checker.imgs) == 4
    files = sorted(p.name for p in (run / "figures").glob("*.png"))
    assert len(files) == 4 and all(
        (run / "figures" / f).read_bytes().startswith(PNG_SIGNATURE) for f in files
    )
    body = " ".join(checker.text)
    assert "1 of 12 images have an empty ground truth" in body
    assert "history.csv has no fd_exch/<layer> values" in body
    assert "Dice per source" in body
    assert "<td>007</td>" in text  # a numeric-looking id is read and shown as text


def test_run_report_says_what_is_missing(tmp_path: Path) -> None:
    run = _make_run(tmp_path / "partial", 1, complete=False)
    (run / "config.yaml").write_text("a: [unclosed")
    checker = _check_html(write_run_report(run, dpi=40))
    body = " ".join(checker.text)
    assert "summary.json not found" in body and "per_sample.csv not found" in body
    assert "is not valid YAML" in body
    assert len(checker.imgs) == 3  # curves only
    empty = tmp_path / "empty"
    empty.mkdir()
    body = " ".join(_check_html(write_run_report(empty, dpi=40)).text)
    assert "history.csv not found" in body and "config.yaml not found" in body
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_run_report(tmp_path / "nope")


def _results(runs: dict[str, Path], values: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for method, vals in values.items():
        for seed, v in enumerate(vals):
            rows.append(
                {
                    "method": method,
                    "condition": "k=0",
                    "seed": seed,
                    "dice": v,
                    "iou": v / (2 - v),
                    "run": f"{method}_s{seed}",
                }
            )
    return pd.DataFrame(rows)


def test_experiment_report_numbers_sentences_and_escaping(tmp_path: Path) -> None:
    values = {
        "baseline": [0.70, 0.72, 0.71],
        "fd": [0.75, 0.78, 0.76],
        HOSTILE: [0.70, 0.73, 0.71],
    }
    runs = {}
    for method, vals in values.items():
        for seed in range(len(vals)):
            name = f"{method}_s{seed}"
            runs[name] = _make_run(
                tmp_path / "runs" / f"{len(runs)}", seed, shift=0.05 if method == "fd" else 0
            )
    results = _results(runs, values)
    out = write_experiment_report(
        tmp_path / "exp",
        results,
        title=f"Exp {HOSTILE}",
        runs=runs,
        notes=[HOSTILE],
        max_run_figures=2,
        dpi=40,
    )
    checker = _check_html(out)
    body = " ".join(checker.text)
    # every mean ± sd cell carries its seed count
    assert "0.7100 ± 0.0100 (n = 3)" in body
    cells = re.findall(r"± [0-9.]+ \(n = (\d+)\)", body)
    assert len(cells) == 6 and set(cells) == {"3"}
    # the sentence is computed: paired t-test over seeds, p from scipy
    diffs = np.array(values["fd"]) - np.array(values["baseline"])
    from scipy import stats as sps

    p = sps.ttest_rel(values["fd"], values["baseline"]).pvalue
    assert f"fd − baseline: mean dice difference {diffs.mean():.4f}" in body
    assert f"n = 3, paired t-test over seeds, two-sided p = {p:.3g}" in body
    assert "fd scored higher than baseline at α = 0.05" in body
    assert "Baseline: baseline (the method named 'baseline')" in body
    # worst/best-off: k capped at N // 2 = 6 of the 12 per-sample rows
    assert "Worst-off / best-off images" in body
    assert "k capped" in body
    # per-seed images are the baseline's shifted by +0.05, so every worst/best/all difference is 0.05
    assert body.count("0.0500 ± 0.0000 (n = 3 seeds)") == 3
    assert "Figures are shown for the first 2 of 9 runs." in body
    # comparison plots (dice, iou) + 2 runs x (curves, fd, lambda, dice-vs-fd)
    assert len(checker.imgs) == 2 + 2 * 4
    assert len(list((tmp_path / "exp" / "figures").glob("*.png"))) == len(checker.imgs)


def test_experiment_report_n_too_small_and_missing_runs(tmp_path: Path) -> None:
    results = pd.DataFrame({"method": ["none", "fd"], "seed": [0, 0], "dice": [0.7, 0.9], "run": ["a", "b"]})
    runs = {"a": tmp_path / "missing_a", "b": tmp_path / "missing_b"}
    checker = _check_html(write_experiment_report(tmp_path / "exp", results, title="tiny", runs=runs, dpi=40))
    body = " ".join(checker.text)
    assert "fd − none: mean dice difference 0.2000 (n = 1); n too small for a test, so no conclusion" in body
    assert "history.csv not found" in body and "per_sample.csv not found" in body
    assert "scored higher" not in body


def test_compare_to_baseline_test_choice() -> None:
    base = pd.DataFrame({"seed": [0], "dice": [0.70]})
    other = pd.DataFrame({"seed": [1, 2, 3, 4, 5], "dice": [0.72, 0.73, 0.71, 0.74, 0.72]})
    r = compare_to_baseline(base, other, value="dice", seed_col="seed")
    from scipy import stats as sps

    assert r["test"].startswith("one-sample t-test")
    assert r["p_two_sided"] == pytest.approx(sps.ttest_1samp(other["dice"], 0.70).pvalue)
    unpaired = compare_to_baseline(
        pd.DataFrame({"seed": [10, 11], "dice": [0.7, 0.71]}), other, value="dice", seed_col="seed"
    )
    assert unpaired["test"].startswith("Welch")
    one_shared = compare_to_baseline(
        pd.DataFrame({"seed": [0, 1], "dice": [0.7, 0.71]}), other, value="dice", seed_col="seed"
    )  # seed 1 is shared: paired on it alone, the other seeds dropped and named, no test
    assert one_shared["n"] == 1 and one_shared["delta"] == pytest.approx(0.72 - 0.71)
    assert "dropped" in one_shared["note"] and "n too small" in one_shared["note"]
    with pytest.raises(ValueError, match="baseline method 'base' is not in results"):
        write_experiment_report(
            Path("/nonexistent"),
            pd.DataFrame({"method": ["a"], "dice": [0.5]}),
            title="t",
            runs={},
            baseline="base",
        )
    with pytest.raises(KeyError, match="no 'method' column"):
        write_experiment_report(Path("/nonexistent"), pd.DataFrame({"dice": [0.5]}), title="t", runs={})


def test_numeric_looking_ids_stay_text(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "test").mkdir(parents=True)
    ids = ["001", "002", "003", "004"]
    table = pd.DataFrame({"id": ids, "dice": [0.1, 0.2, 0.3, 0.4]})
    table.to_csv(run / "test" / "per_sample.csv", index=False)
    text = write_run_report(run, dpi=40).read_text(encoding="utf-8")
    assert "<td>001</td>" in text and "<td>004</td>" in text
    assert "no fd/&lt;layer&gt; columns" in text
