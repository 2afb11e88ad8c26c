"""``fdseg sweep``: grid × seeds × folds expansion and naming, resume, failed runs, bad input, SLURM."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from fdseg.cli import main
from fdseg.data.errors import SplitError
from fdseg.data.synthetic import write_synthetic
from fdseg.experiments.executors import LocalExecutor
from fdseg.experiments.sweep import (
    check_folds,
    claim_experiment,
    collect_results,
    expand,
    grid_arms,
    parse_grid,
    parse_seeds,
    run_sweep,
)
from fdseg.training.config import ExperimentConfig


def _cfg(tmp: Path) -> ExperimentConfig:
    return ExperimentConfig.from_dict(
        {
            "name": "tiny",
            "data": {"base": f"folder:{tmp / 'data'}", "image_size": 16, "cache_dir": str(tmp / "cache")},
            "model": {"kwargs": {"base_width": 4, "depth": 2}},
            "train": {"epochs_phase1": 1, "epochs_phase2": 1, "batch_size": 4, "progress_bar": False},
        }
    )


def test_grid_times_seeds_times_folds_expansion_and_names(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    grids = parse_grid(["loss.lambda_kwargs.lambda_max=0.001,0.01", "loss.fd=true,false"], cfg)
    assert grids == [("loss.lambda_kwargs.lambda_max", [0.001, 0.01]), ("loss.fd", [True, False])]
    arms = grid_arms(grids)
    assert [a.slug for a in arms] == [
        "lambda_max-0.001_fd-true",
        "lambda_max-0.001_fd-false",
        "lambda_max-0.01_fd-true",
        "lambda_max-0.01_fd-false",
    ]
    runs = expand(cfg, arms, parse_seeds("0-2"), tmp_path / "exp", folds=2)
    assert len(runs) == 4 * 3 * 2
    names = [r.name for r in runs]
    assert len(set(names)) == len(names) and names[:3] == [
        "lambda_max-0.001_fd-true_seed0_fold0",
        "lambda_max-0.001_fd-true_seed0_fold1",
        "lambda_max-0.001_fd-true_seed1_fold0",
    ]
    run = next(r for r in runs if r.name == "lambda_max-0.01_fd-false_seed2_fold1")
    c = run.spec.config
    assert (c.loss.lambda_kwargs["lambda_max"], c.loss.fd, c.train.seed) == (0.01, False, 2)
    assert (c.data.folds, c.data.fold) == (2, 1) and c.name == "tiny [lambda_max=0.01, fd=false]"
    assert run.spec.run_dir == tmp_path / "exp" / "runs" / run.name
    # everything else is the base configuration
    assert c.with_overrides(["loss.lambda_kwargs.lambda_max=0.001", "loss.fd=false"]).model == cfg.model
    # no grid: one arm, seeds only
    plain = expand(cfg, grid_arms([]), parse_seeds("3"), tmp_path / "e2")
    assert [r.name for r in plain] == ["base_seed0", "base_seed1", "base_seed2"] and plain[0].fold is None
    # keys with the same last part keep their full name
    both = grid_arms(parse_grid(["train.batch_size=2,4", "train.eval_batch_size=8"], cfg))
    assert both[0].slug == "batch_size-2_eval_batch_size-8"
    assert parse_seeds("0,3,7") == (0, 3, 7) and parse_seeds(2) == (0, 1)


@pytest.mark.parametrize(
    ("grid", "error", "match"),
    [
        (["loss.fdd=true"], KeyError, "did you mean 'fd'"),
        (["train.batch_size=four"], TypeError, "train.batch_size.*expects int"),
        (["loss.fd="], ValueError, "has no values"),
        (["loss.fd"], ValueError, "must look like"),
        (["train.seed=1,2"], ValueError, "set it with --seeds"),
        (["loss.fd=true,true"], ValueError, "repeats a value"),
        (["optim.lr=0.1", "optim.lr=0.2"], ValueError, "given twice"),
    ],
)
def test_bad_grids(tmp_path: Path, grid: list[str], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        parse_grid(grid, _cfg(tmp_path))


def test_bad_seeds_folds_and_experiment_dirs(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    for bad in ("", "4-2", "a", "1,1", "0"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)
    with pytest.raises(ValueError, match="--folds must be >= 2, got 1"):
        expand(cfg, grid_arms([]), (0,), tmp_path / "e", folds=1)
    write_synthetic(tmp_path / "data", "nuclei", "base", 6, 0, 16)
    with pytest.raises(SplitError, match="7 folds need at least 7 groups"):
        check_folds(cfg, 7)
    check_folds(cfg, 3)
    exp = tmp_path / "exp"
    claim_experiment(exp, "sweep", cfg, grid={})
    claim_experiment(exp, "sweep", cfg, grid={"loss.fd": [True]})  # same command and config: a resume
    with pytest.raises(ValueError, match="made by `fdseg sweep`, not `fdseg table1`"):
        claim_experiment(exp, "table1", cfg)
    with pytest.raises(ValueError, match=r"another configuration \(optim.lr: 0.0001 \(saved\) vs 0.5"):
        claim_experiment(exp, "sweep", cfg.with_overrides(["optim.lr=0.5"]))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not an fdseg experiment directory"):
        claim_experiment(tmp_path / "other", "sweep", cfg)


def test_cli_bad_grid_key_fails_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    _cfg(tmp_path).to_yaml(config)
    exp = tmp_path / "exp"
    code = main(["sweep", "-c", str(config), "-o", str(exp), "--grid", "loss.lambda_strategy=schedul"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and "did you mean 'schedule'" in err
    assert not exp.exists()
    code = main(["sweep", "-c", str(config), "-o", str(exp), "--folds", "1"])
    assert code == 1 and "--folds must be >= 2" in capsys.readouterr().err and not exp.exists()


# A stand-in for the ``fdseg train`` child process (the executor runs ``<python> -m fdseg.cli train
# --config C --out O ...``): it fails for runs named in FAKE_FAIL, otherwise writes what a finished run
# holds. The sweep's skip / re-run logic is what is tested; real training is covered end to end elsewhere.
FAKE_CHILD = """#!{python}
import json, os, sys
from pathlib import Path
import yaml
args = sys.argv[1:]
out = Path(args[args.index("--out") + 1])
cfg = yaml.safe_load(Path(args[args.index("--config") + 1]).read_text())
with open(out / "attempts", "a") as f:
    f.write("x")
if out.name in os.environ.get("FAKE_FAIL", "").split(","):
    print("Traceback: something broke in", out.name)
    sys.exit(3)
seed, fd = cfg["train"]["seed"], cfg["loss"]["fd"]
(out / "test").mkdir(exist_ok=True)
value = lambda i: 0.5 + 0.01 * i + 0.02 * seed + (0.05 if fd else 0)
rows = ["id,dice,iou"] + [f"im{{i}},{{value(i)}},0.4" for i in range(12)]
(out / "test" / "per_sample.csv").write_text("\\n".join(rows) + "\\n")
mean = sum(value(i) for i in range(12)) / 12
(out / "test" / "summary.json").write_text(json.dumps({{"n": 12, "mean": {{"dice": mean, "iou": 0.4}}}}))
(out / "DONE").write_text("{{}}")
"""


def _fake_python(tmp: Path) -> str:
    path = tmp / "fake_fdseg_train"
    path.write_text(FAKE_CHILD.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_resume_skips_finished_and_reruns_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(tmp_path)
    runs = expand(cfg, grid_arms(parse_grid(["loss.fd=false,true"], cfg)), (0, 1), tmp_path / "exp")
    executor = LocalExecutor(2, python=_fake_python(tmp_path), device="cpu")
    monkeypatch.setenv("FAKE_FAIL", "fd-true_seed1")
    lines: list[str] = []
    results = run_sweep(runs, executor, echo=lines.append)
    assert [r.returncode for r in results] == [0, 0, 0, 3]  # type: ignore[union-attr]
    text = "\n".join(lines)
    assert "FAILED (exit 3)" in text and "| Traceback: something broke in fd-true_seed1" in text
    assert any(line.startswith("[4/4]") for line in lines) and "ETA" in text
    table = collect_results(runs, ["loss.fd"])
    assert list(table["status"]) == ["done", "done", "done", "failed"]
    assert table.loc[3, ["dice"]].isna().all() and table["loss.fd"].tolist() == [
        "false",
        "false",
        "true",
        "true",
    ]
    # second pass: finished runs are skipped (not started again), the failed one is started again
    monkeypatch.setenv("FAKE_FAIL", "")
    again = run_sweep(runs, executor, echo=lines.append)
    assert [r.returncode for r in again] == [-1, -1, -1, 0]  # type: ignore[union-attr]
    attempts = {r.name: (r.spec.run_dir / "attempts").read_text() for r in runs}
    assert attempts == {
        "fd-false_seed0": "x",
        "fd-false_seed1": "x",
        "fd-true_seed0": "x",
        "fd-true_seed1": "xx",
    }
    done = collect_results(runs, ["loss.fd"])
    assert (done["status"] == "done").all()
    assert done["dice"].tolist() == pytest.approx([0.555, 0.575, 0.605, 0.625])


def test_local_executor_spreads_runs_over_gpus(tmp_path: Path) -> None:
    executor = LocalExecutor(1, gpus=["0", "3"], per_gpu=2)
    assert executor.jobs == 4 and executor.slots == ["0", "0", "3", "3"]
    assert executor._env("3")["CUDA_VISIBLE_DEVICES"] == "3"


def test_slurm_submission_with_a_fake_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("submitit", reason="submitit (extra [slurm]) is not installed")
    from fdseg.experiments.executors import SlurmExecutor, run_logged

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sbatch_calls"
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(
        f'#!/bin/sh\necho "$@" >> {log}\ncp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job 4242"\n'
    )
    sbatch.chmod(0o755)
    srun = bin_dir / "srun"  # submitit only checks that srun exists; the jobs are never run here
    srun.write_text("#!/bin/sh\nexit 0\n")
    srun.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cfg = _cfg(tmp_path)
    runs = expand(cfg, grid_arms(parse_grid(["loss.fd=false,true"], cfg)), (0, 1), tmp_path / "exp")
    runs[0].spec.run_dir.mkdir(parents=True)
    (runs[0].spec.run_dir / "config.yaml").write_text(runs[0].spec.config.to_yaml())
    (runs[0].spec.run_dir / "DONE").write_text("{}")
    executor = SlurmExecutor(
        tmp_path / "exp" / "slurm",
        partition="gpu-short",
        time_min=90,
        gpus_per_job=1,
        cpus_per_job=6,
        mem_gb=32,
    )
    sub = run_sweep(runs, executor)
    assert sub.skipped == ["fd-false_seed0"] and sub.runs == [r.name for r in runs[1:]]  # type: ignore[union-attr]
    assert sub.job_ids == ["4242_0", "4242_1", "4242_2"]  # type: ignore[union-attr]
    script = (tmp_path / "submitted.sh").read_text()
    for flag in (
        "#SBATCH --partition=gpu-short",
        "#SBATCH --time=90",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=6",
        "#SBATCH --mem=32GB",
        "#SBATCH --array=0-2%3",  # parallelism capped at the 3 runs
    ):
        assert flag in script, flag
    assert len(log.read_text().splitlines()) == 1  # one sbatch call: a job array
    # the pickled task of each array element is fdseg train on that run's config and directory
    import cloudpickle

    for index, run in enumerate(runs[1:]):
        pkl = tmp_path / "exp" / "slurm" / f"4242_{index}_submitted.pkl"
        task = cloudpickle.loads(pkl.read_bytes())
        assert task.function is run_logged
        command, log_path = task.args
        assert command[-7:] == [
            "train", "--config", str(run.spec.run_dir / "config.yaml"), "--out", str(run.spec.run_dir),
            "--device", "auto",
        ]  # fmt: skip
        assert command[:3] == ["env", "OMP_NUM_THREADS=6", "MKL_NUM_THREADS=6"]
        assert log_path == str(run.spec.run_dir / "train.log")
        assert (run.spec.run_dir / "config.yaml").is_file()
    # one job per run
    per_run = SlurmExecutor(
        tmp_path / "exp" / "slurm2", time_min=10, gpus_per_job=0, cpus_per_job=2, array=False
    )
    sub2 = per_run.submit([r.spec for r in runs[1:]])
    assert len(sub2.job_ids) == 3 and len(log.read_text().splitlines()) == 4
    assert "#SBATCH --gpus-per-node" not in (tmp_path / "submitted.sh").read_text()


def test_a_grid_value_that_clashes_with_set_names_the_grid_point(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    ExperimentConfig().with_overrides(["loss.fd=true"]).to_yaml(config)  # valid with --set loss.exch=true
    argv = ["sweep", "-c", str(config), "--grid", "loss.fd=true,false", "--set", "loss.exch=true"]
    assert main([*argv, "-o", str(tmp_path / "exp")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --grid loss.fd=false (with the config and --set): loss.exch=true needs")
    assert not (tmp_path / "exp").exists()


def test_a_rerun_with_another_set_is_refused_for_the_experiment_not_per_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _cfg(tmp_path)
    config, exp = tmp_path / "c.yaml", tmp_path / "exp"
    cfg.to_yaml(config)
    first = expand(cfg, grid_arms([]), [0], exp)
    claim_experiment(exp, "sweep", cfg, grid={})  # an earlier sweep with its run directory
    first[0].spec.run_dir.mkdir(parents=True)
    first[0].spec.config.to_yaml(first[0].spec.run_dir / "config.yaml")
    assert main(["sweep", "-c", str(config), "-o", str(exp), "--seeds", "1", "--set", "optim.lr=0.01"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {exp} holds an experiment from another configuration (optim.lr: ")
