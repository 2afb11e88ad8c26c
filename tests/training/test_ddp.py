"""A run on two CPU processes with Lightning DDP (gloo): nothing in fdseg precludes multi-device training."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"


def test_two_process_ddp_run_through_the_cli(tmp_path: Path) -> None:
    script = shutil.which("fdseg", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the fdseg console script is not installed in this environment (pip install -e .)")
    args = [script, "train", "-c", str(CONFIG), "-o", "run", "--device", "cpu"]
    args += ["--set", "train.devices=2", "--set", "train.strategy=ddp"]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("run finished") == 1  # only rank 0 reports, evaluates and marks DONE
    run = tmp_path / "run"
    assert (run / "DONE").is_file() and (run / "test" / "summary.json").is_file()

    split = json.loads((run / "split.json").read_text())["sources"]
    n_train = len(split["base"]["sets"]["train"]) + len(split["novel"]["sets"]["train"])
    with (run / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["phase"]) for r in rows] == [1, 2]
    # each of the two ranks sees half of the training images per epoch (Lightning's distributed sampler)
    batch = 4
    assert int(rows[0]["step"]) == math.ceil(math.ceil(n_train / 2) / batch)
    assert all(math.isfinite(float(r["fd/enc1"])) for r in rows)
