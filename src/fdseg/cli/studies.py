"""Studies of many runs: ``fdseg sweep``, ``fdseg compare`` and ``fdseg experiment table1``."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fdseg.cli import _CommandFailed, _echo, app, experiment_app
from fdseg.cli._options import (
    DEFAULT_DEVICE,
    DEFAULT_JOBS,
    DEFAULT_OUT,
    DEFAULT_PER_GPU,
    ArrayOpt,
    ConfigOpt,
    DeviceOpt,
    ExecutorOpt,
    FoldsOpt,
    JobsOpt,
    OutOpt,
    PartitionOpt,
    PerGpuOpt,
    SeedsOpt,
    SetOpt,
    SlurmCpusOpt,
    SlurmGpusOpt,
    ThreadsOpt,
    TimeOpt,
    check_device,
    local_executor,
    seed_list,
)


def _executor(
    exp: Path,
    *,
    executor: str,
    jobs: int,
    per_gpu: int,
    device: str,
    threads: int | None,
    partition: str | None,
    slurm_time: int,
    slurm_gpus: int,
    slurm_cpus: int,
    array: bool,
) -> Any:
    from fdseg.experiments.executors import InlineExecutor, SlurmExecutor

    check_device(device)
    if executor == "inline":
        from fdseg.cli import _runtime

        cores = threads or max(1, (os.cpu_count() or 1) // max(jobs, 1))
        return InlineExecutor(_runtime(device), jobs=jobs, threads_per_job=cores)
    if executor == "slurm":
        return SlurmExecutor(
            exp / "slurm",
            partition=partition,
            time_min=slurm_time,
            gpus_per_job=slurm_gpus,
            cpus_per_job=slurm_cpus,
            array=array,
            device="gpu" if slurm_gpus else "cpu",
        )
    if executor != "local":
        raise ValueError(f"--executor must be local, inline or slurm, got {executor!r}")
    return local_executor(jobs=jobs, per_gpu=per_gpu, device=device, threads=threads)


def _finish_local(results: Any, runs: Any, exp: Path, start: float) -> None:
    failed = [r for r in results if not r.ok]
    _echo(
        f"\n{len(results) - len(failed)} of {len(results)} runs finished "
        f"in {time.perf_counter() - start:.0f} s"
    )
    _echo(f"results: {exp / 'results.csv'}")
    _echo(f"report:  {exp / 'report.html'}")
    if failed:
        names = ", ".join(r.spec.name for r in failed)
        raise _CommandFailed(
            f"{len(failed)} run(s) failed ({names}); their logs are <run>/train.log; rerun to retry them"
        )


@app.command()
def sweep(
    config: ConfigOpt,
    out: OutOpt = DEFAULT_OUT["sweep"],
    grid: Annotated[
        list[str] | None,
        typer.Option(
            "--grid", "-g", metavar="KEY=V1,V2", help="key=v1,v2,… (repeat for a Cartesian product)."
        ),
    ] = None,
    seeds: SeedsOpt = "1",
    folds: FoldsOpt = None,
    overrides: SetOpt = None,
    jobs: JobsOpt = DEFAULT_JOBS,
    per_gpu: PerGpuOpt = DEFAULT_PER_GPU,
    threads: ThreadsOpt = None,
    device: DeviceOpt = DEFAULT_DEVICE,
    executor: ExecutorOpt = "local",
    slurm_partition: PartitionOpt = None,
    slurm_time: TimeOpt = 120,
    slurm_gpus: SlurmGpusOpt = 1,
    slurm_cpus: SlurmCpusOpt = 4,
    slurm_array: ArrayOpt = True,
) -> None:
    """Train a grid of settings × seeds (× folds) as runs under OUT/runs/; write results.csv and report.html.

    Finished runs are skipped, so the same command resumes. With --executor slurm the runs are submitted and
    the command returns; run it again once they have finished to collect the results.
    """
    from fdseg.experiments.sweep import (
        check_experiment,
        check_folds,
        check_runs,
        claim_experiment,
        expand,
        grid_arms,
        parse_grid,
        run_sweep,
        write_sweep_outputs,
    )
    from fdseg.training.config import ExperimentConfig

    cfg = ExperimentConfig.from_yaml(config).with_overrides(overrides or [])
    grids = parse_grid(grid or [], cfg)
    seed_values = seed_list(seeds)
    if folds is not None:
        check_folds(cfg, folds)
    runs = expand(cfg, grid_arms(grids), seed_values, out, folds=folds)
    check_experiment(out, "sweep", cfg)  # the experiment as a whole before each of its runs
    check_runs(runs)
    ex = _executor(
        out,
        executor=executor,
        jobs=jobs,
        per_gpu=per_gpu,
        device=device,
        threads=threads,
        partition=slurm_partition,
        slurm_time=slurm_time,
        slurm_gpus=slurm_gpus,
        slurm_cpus=slurm_cpus,
        array=slurm_array,
    )
    claim_experiment(out, "sweep", cfg, grid={k: v for k, v in grids}, seeds=list(seed_values), folds=folds)
    _echo(
        f"{len(runs)} runs ({len(grid_arms(grids))} grid points × {len(seed_values)} seeds"
        + (f" × {folds} folds" if folds else "")
        + f") in {out / 'runs'}"
    )
    start = time.perf_counter()
    results = run_sweep(runs, ex, echo=_echo)
    if executor == "slurm":
        _echo_submission(results, out, "sweep")
        return
    write_sweep_outputs(out, runs, [k for k, _ in grids], title=f"sweep: {cfg.name}")
    _finish_local(results, runs, out, start)


def _echo_submission(sub: Any, exp: Path, verb: str) -> None:
    if sub.job_ids:
        _echo(
            f"submitted {len(sub.runs)} run(s) to SLURM: job(s) {', '.join(sub.job_ids[:5])}"
            + (" …" if len(sub.job_ids) > 5 else "")
            + f"; scripts and job logs in {sub.folder}"
        )
    _echo(f"{len(sub.skipped)} finished run(s) skipped")
    _echo(
        f"when the jobs have finished, run the same `fdseg {verb}` command with --executor local to "
        f"collect {exp / 'results.csv'} and {exp / 'report.html'} (finished runs are not trained again)"
    )


@app.command()
def compare(
    paths: Annotated[
        list[Path], typer.Argument(metavar="DIR", help="Experiment directories and/or run directories.")
    ],
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            help="Baseline arm (default: the L_seg-only arm, else the first arm in the study's order; "
            "the choice is printed).",
        ),
    ] = None,
    metric: Annotated[str, typer.Option("--metric", help="Per-image metric (dice, iou, …).")] = "dice",
    split_dir: Annotated[
        str,
        typer.Option(
            "--eval", help="Evaluation folder of each run (test, or another one written by fdseg evaluate)."
        ),
    ] = "test",
    csv: Annotated[
        Path | None, typer.Option("--csv", help="Also write the comparison table to this CSV file.")
    ] = None,
) -> None:
    """Compare arms of runs, paired by seed (and fold) and images by id.

    Paired t-test and Wilcoxon over seeds, the paper's one-sample t-test (§F5), effect size, and a bootstrap
    CI of the per-image difference.
    """
    from fdseg.experiments.compare import compare_runs, format_comparison

    result = compare_runs(paths, baseline=baseline, metric=metric, split_dir=split_dir)
    _echo(format_comparison(result))
    if csv is not None:
        result.table.to_csv(csv, index=False)
        _echo(f"\ntable: {csv}")


@experiment_app.command("table1")
def table1(
    config: ConfigOpt,
    out: OutOpt = DEFAULT_OUT["table1"],
    seeds: SeedsOpt = "5",
    folds: FoldsOpt = None,
    models: Annotated[
        str | None,
        typer.Option("--models", help="Comma-separated models (default: the config's), e.g. Table 4's rows."),
    ] = None,
    overrides: SetOpt = None,
    jobs: JobsOpt = DEFAULT_JOBS,
    per_gpu: PerGpuOpt = DEFAULT_PER_GPU,
    threads: ThreadsOpt = None,
    device: DeviceOpt = DEFAULT_DEVICE,
    executor: ExecutorOpt = "local",
    slurm_partition: PartitionOpt = None,
    slurm_time: TimeOpt = 240,
    slurm_gpus: SlurmGpusOpt = 1,
    slurm_cpus: SlurmCpusOpt = 4,
    slurm_array: ArrayOpt = True,
) -> None:
    """The paper's Table 1 (✗, ✗ compute-matched, ✓ per seed; plain and 5-view test sets; worst-/best-off).

    Writes OUT/table1.txt (the table, with the paper's numbers when the model and dataset match a cell),
    table1.csv (over seeds, with p-values), table1_per_seed.csv, results.csv (one row per run), report.html.
    """
    from fdseg.cli import _runtime
    from fdseg.experiments.sweep import check_experiment, check_folds, check_runs, claim_experiment, run_sweep
    from fdseg.experiments.table1 import dataset_name, evaluate_views, table1_runs, write_table1_outputs
    from fdseg.training.config import ExperimentConfig

    cfg = ExperimentConfig.from_yaml(config).with_overrides(overrides or [])
    model_list = [m.strip() for m in (models or "").split(",") if m.strip()]
    if models is not None and not model_list:
        raise ValueError("--models is empty; give model names, e.g. --models nucleisegnet,transunet")
    if model_list:
        from fdseg._checks import did_you_mean
        from fdseg.models import list_models

        known = list_models()
        for m in model_list:
            if m not in known:
                raise KeyError(f"--models: unknown model {m!r}{did_you_mean(m, known)} models: {known}")
    seed_values = seed_list(seeds)
    if folds is not None:
        check_folds(cfg, folds)
    runs = table1_runs(cfg, out, seeds=seed_values, folds=folds, models=model_list)
    check_experiment(out, "table1", cfg)  # the experiment as a whole before each of its runs
    check_runs(runs)
    ex = _executor(
        out,
        executor=executor,
        jobs=jobs,
        per_gpu=per_gpu,
        device=device,
        threads=threads,
        partition=slurm_partition,
        slurm_time=slurm_time,
        slurm_gpus=slurm_gpus,
        slurm_cpus=slurm_cpus,
        array=slurm_array,
    )
    claim_experiment(out, "table1", cfg, seeds=list(seed_values), folds=folds, models=model_list)
    _echo(
        f"{len(runs)} runs (3 arms × {len(model_list) or 1} model(s) × {len(seed_values)} seeds"
        + (f" × {folds} folds" if folds else "")
        + f") in {out / 'runs'}"
    )
    start = time.perf_counter()
    results = run_sweep(runs, ex, echo=_echo)
    if executor == "slurm":
        _echo_submission(results, out, "experiment table1")
        return
    evaluate_views(runs, _runtime("cpu" if device == "cpu" else device), echo=_echo)
    _result, text = write_table1_outputs(out, runs, dataset_name(cfg), title=f"Table 1: {cfg.name}")
    _echo("")
    _echo(text)
    _echo(f"\ntable:   {out / 'table1.txt'} (and table1.csv, table1_per_seed.csv)")
    _finish_local(results, runs, out, start)
