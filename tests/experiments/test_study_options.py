"""The study commands (``fdseg sweep``, ``fdseg experiment …``) share one set of options: the same flags,
help, defaults and ``--seeds`` parser; and the seeds given reach the runs of every study."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pandas as pd
import pytest
import typer

from fdseg.cli import app, main
from fdseg.experiments.addition import plan_data_addition, plan_robustness
from fdseg.experiments.sweep import claim_experiment
from fdseg.training.config import ExperimentConfig

#: argv prefix -> the name of its default experiment directory (runs/<name>)
COMMANDS = {
    ("sweep",): "sweep",
    ("experiment", "table1"): "table1",
    ("experiment", "data-addition"): "data-addition",
    ("experiment", "robustness"): "robustness",
    ("experiment", "multiclass"): "multiclass",
}
SHARED = ("out", "overrides", "seeds", "jobs", "per_gpu", "threads", "device")


def _command(path: tuple[str, ...]) -> click.Command:
    command: Any = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def _params(path: tuple[str, ...]) -> dict[str, click.Parameter]:
    return {p.name: p for p in _command(path).params if p.name}


def test_every_study_command_has_the_same_options_helps_and_defaults() -> None:
    reference = _params(("sweep",))
    for path, folder in COMMANDS.items():
        params = _params(path)
        for name in SHARED:
            assert name in params, f"{' '.join(path)} lacks {name}"
            mine, ref = params[name], reference[name]
            assert (mine.opts, mine.secondary_opts) == (ref.opts, ref.secondary_opts), (path, name)
            assert getattr(mine, "help", None) == getattr(ref, "help", None), (path, name)
            if name not in ("out", "seeds"):
                assert mine.default == ref.default, (path, name, mine.default, ref.default)
        assert params["out"].default == Path("runs") / folder
        assert (params["jobs"].default, params["device"].default, params["per_gpu"].default) == (1, "auto", 1)
        assert params["config"].opts == ["--config", "-c"]
        assert sorted(params["overrides"].opts) == ["--set", "-s"]


def _tiny(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    cfg = ExperimentConfig.from_dict(
        {
            "data": {
                "base": f"synthetic:{data / 'base'}?family=nuclei&site=base&n=14&seed=0&size=32",
                "novel": f"synthetic:{data / 'dil2'}?family=nuclei&site=dil2&n=4&seed=1&size=32",
                "image_size": 32,
                "split_scheme": "paper",
                "split_seed": 0,
                "cache_dir": str(data / "cache"),
            },
            "model": {"name": "unet", "kwargs": {"base_width": 4, "depth": 2}},
            "train": {"epochs_phase1": 1, "epochs_phase2": 1, "max_steps": 4, "batch_size": 4},
        }
    )
    path = tmp_path / "tiny.yaml"
    cfg.to_yaml(path)
    return path


@pytest.mark.parametrize("path", list(COMMANDS))
@pytest.mark.parametrize(
    ("seeds", "message"),
    [
        ("1,1", "--seeds '1,1' repeats a seed"),
        ("0", "--seeds must be >= 1 as a count of seeds, got '0'"),
        ("3-1", "--seeds '3-1': empty range"),
        ("two", "is not a count (5), an inclusive range (0-4) or a list (0,3,7)"),
    ],
)
def test_every_study_command_parses_seeds_alike(
    path: tuple[str, ...], seeds: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "exp"
    code = main([*path, "-c", str(_tiny(tmp_path)), "-o", str(out), "--seeds", seeds])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert message in err
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize("path", list(COMMANDS))
def test_every_study_command_checks_device_jobs_and_threads(
    path: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*path, "-c", str(_tiny(tmp_path)), "-o", str(tmp_path / "exp")]
    for extra, message in (
        (["--device", "cuda"], "--device must be auto, cpu or gpu, got 'cuda'"),
        (["--jobs", "0"], "--jobs must be >= 1, got 0"),
        (["--threads", "0"], "--threads must be >= 1, got 0"),
    ):
        assert main([*argv, *extra]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "exp").exists()


def test_set_overrides_the_multiclass_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mc"
    argv = ["experiment", "multiclass", "-o", str(out), "--set", "model.head=binary"]
    assert main([*argv, "--set", "model.out_channels=1"]) == 1
    assert "needs model.head = binary_per_class or softmax" in capsys.readouterr().err
    assert main(argv) == 1  # the override meets the default config's 3 output channels
    assert "--set overrides: model.out_channels = 3 with model.head = binary" in capsys.readouterr().err
    assert main(["experiment", "multiclass", "-o", str(out), "-s", "loss.fd=false"]) == 1
    assert "needs loss.fd = true" in capsys.readouterr().err
    assert main(["experiment", "multiclass", "-o", str(out), "-s", "loss.fdd=true"]) == 1
    assert "did you mean 'fd'" in capsys.readouterr().err
    assert not out.exists()


def test_seed_ranges_and_lists_plan_those_seeds(tmp_path: Path) -> None:
    cfg = ExperimentConfig.from_yaml(_tiny(tmp_path))
    study = plan_data_addition(cfg, tmp_path / "a", k=[0, 2], arms=["seg"], seeds="2-3")
    assert study.seeds == [2, 3]
    assert [s.name for s in study.specs] == ["k0_seg_s2", "k0_seg_s3", "k2_seg_s2", "k2_seg_s3"]
    assert [s.config.train.seed for s in study.specs] == [2, 3, 2, 3]
    rob = plan_robustness(cfg, tmp_path / "r", sigmas=[0.1], arms=["fd"], seeds=(0, 5))
    assert rob.seeds == [0, 5] and [s.config.train.seed for s in rob.specs] == [0, 5, 0, 5]
    assert plan_robustness(cfg, tmp_path / "r", sigmas=[], arms=["fd"], seeds=2).seeds == [0, 1]
    with pytest.raises(ValueError, match="repeats a seed"):
        plan_robustness(cfg, tmp_path / "r", sigmas=[], arms=["fd"], seeds=[1, 1])


def _dice(i: int) -> float:
    return 0.5 + 0.01 * i + 0.003 * i * i  # paired differences that are not constant


def _finished(spec: Any, dice: float) -> None:
    """A finished run of a study as ``fdseg train`` leaves it (config, DONE, test summary)."""
    spec.run_dir.mkdir(parents=True)
    spec.config.to_yaml(spec.run_dir / "config.yaml")
    (spec.run_dir / "test").mkdir()
    summary = {"n": 6, "mean": {"dice": dice, "iou": dice / 2}}
    (spec.run_dir / "test" / "summary.json").write_text(json.dumps(summary))
    (spec.run_dir / "DONE").write_text("{}")


@pytest.mark.parametrize("seeds", ["3,5", "4-4"])
def test_data_addition_runs_the_seeds_given_and_prints_dashes_for_missing_values(
    seeds: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _tiny(tmp_path)
    out = tmp_path / "exp"
    study = plan_data_addition(
        ExperimentConfig.from_yaml(config), out, k=[0, 2], arms=["seg", "fd"], seeds=seeds
    )
    # a study whose runs all finished before: the command trains nothing, it collects and summarises
    claim_experiment(
        out,
        "experiment data-addition",
        study.base,
        arms=study.arms,
        conditions=study.conditions,
        seeds=study.seeds,
    )
    for i, spec in enumerate(study.specs):
        _finished(spec, _dice(i))
    argv = [
        "experiment",
        "data-addition",
        "-c",
        str(config),
        "-o",
        str(out),
        "--k",
        "0,2",
        "--arms",
        "seg,fd",
    ]
    assert main([*argv, "--seeds", seeds, "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert text.count("skipped (DONE)") == len(study.specs) == (8 if seeds == "3,5" else 4)
    frame = pd.read_csv(out / "results.csv")
    expected = [3, 5] if seeds == "3,5" else [4]
    assert sorted(set(frame["seed"])) == expected
    assert json.loads((out / "summary.json").read_text())["seeds"] == expected
    by_name = dict(zip(frame["run"], frame["dice"]))
    assert by_name == {s.name: pytest.approx(_dice(i)) for i, s in enumerate(study.specs)}
    assert "nan" not in text.lower()
    if seeds == "4-4":  # one seed: no CI, no paired test
        assert "(n=1)" in text and "p_t=– p_w=–" in text and "[–,–]" in text
        assert "nan" not in (out / "summary.txt").read_text().lower()
    else:
        assert "p_t=– p_w=–" not in text
