"""The CLI through its entry point: main([...]) in process, and one real `fdseg` subprocess."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fdseg.cli import main

REPO = Path(__file__).resolve().parents[1]


def _smoke_overrides(tmp: Path) -> list[str]:
    base = f"synthetic:{tmp / 'base'}?family=nuclei&site=base&n=12&seed=0&size=32"
    novel = f"synthetic:{tmp / 'dil2'}?family=nuclei&site=dil2&n=4&seed=1&size=32"
    return [
        "--set",
        f"data.base={base}",
        "--set",
        f"data.novel={novel}",
        "--set",
        f"data.cache_dir={tmp / 'c'}",
    ]


def test_train_evaluate_predict_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--config",
            str(REPO / "configs" / "smoke.yaml"),
            "--out",
            str(run),
            "--device",
            "cpu",
            *_smoke_overrides(tmp_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert str(run) in out and (run / "DONE").is_file()

    assert main(["evaluate", str(run), "--device", "cpu"]) == 0
    assert "dice=" in capsys.readouterr().out

    image = next((tmp_path / "base" / "images").glob("*.png"))
    assert main(["predict", str(run), str(image), "--out", str(tmp_path / "pred"), "--device", "cpu"]) == 0
    assert (tmp_path / "pred" / image.name).is_file()

    assert main(["report", str(run)]) == 0
    assert "report:" in capsys.readouterr().out


def test_errors_are_one_line_with_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(REPO / "configs" / "smoke.yaml")
    assert (
        main(["train", "--config", config, "--out", str(tmp_path / "r"), "--set", "train.batch_sise=2"]) == 1
    )
    err = capsys.readouterr().err
    assert "did you mean 'batch_size'" in err and "Traceback" not in err
    assert main(["train", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "r")]) == 1
    assert "config file not found" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nowhere")]) == 1
    assert main(["train", "--no-such-flag"]) == 2


def test_data_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "syn"
    assert main(["data", "synth", str(out), "--site", "dil2", "--n", "3", "--size", "32"]) == 0
    assert len(list((out / "masks").glob("*.png"))) == 3
    assert str(out) in capsys.readouterr().out


def test_fdseg_script_runs() -> None:
    script = shutil.which("fdseg", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the fdseg console script is not installed in this environment (pip install -e .)")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0
    for verb in ("train", "evaluate", "predict", "demo", "data", "report"):
        assert verb in result.stdout


def test_data_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good"
    assert main(["data", "synth", str(good), "--n", "3", "--size", "32"]) == 0
    assert main(["data", "check", f"folder:{good}"]) == 0
    assert "OK" in capsys.readouterr().out
    (good / "masks" / "0001.png").unlink()
    assert main(["data", "check", f"folder:{good}"]) == 1
    captured = capsys.readouterr()
    assert "0001" in captured.out and "have errors" in captured.err


def test_report_on_a_sweep_or_table1_directory_says_which_command_writes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "experiment.json").write_text('{"schema": 1, "kind": "table1"}')
    (exp / "results.csv").write_text("run,arm,seed,dice\nr0,a,0,0.5\n")
    assert main(["report", str(exp)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "fdseg experiment table1" in err and "rerun that command" in err
    assert not (exp / "report.html").exists()
