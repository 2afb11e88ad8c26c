"""Run executors: one subprocess per run (``fdseg train``), N at a time, finished runs skipped.

A run is a directory plus a configuration. The executor writes the configuration to
``<run>/config.yaml`` (a run directory that already holds another configuration is refused by ``fdseg
train``), starts ``python -m fdseg.cli train --config <run>/config.yaml --out <run>`` and sends its output to
``<run>/train.log``. Runs with a ``DONE`` marker are not started again, so re-running an experiment only
trains what is missing. With ``threads_per_job`` the child processes get ``OMP_NUM_THREADS`` (torch's
intra-op threads), so that N parallel runs share the cores instead of oversubscribing them. With ``gpus``,
``per_gpu`` runs share each listed GPU: every child sees only its GPU (``CUDA_VISIBLE_DEVICES``).

:class:`SlurmExecutor` submits the same ``fdseg train`` command lines to SLURM with ``submitit`` (extra
``[slurm]``), one job per run or one job array, and returns without waiting.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fdseg._io import atomic_write_text
from fdseg.training.config import ExperimentConfig
from fdseg.training.rundir import check_run_config


@dataclass(frozen=True)
class RunSpec:
    """One run of an experiment.

    Attributes:
        name: a short label (also the directory name under the experiment folder).
        config: the run's configuration.
        run_dir: where the run lives.
    """

    name: str
    config: ExperimentConfig
    run_dir: Path


@dataclass(frozen=True)
class RunResult:
    """How a run ended.

    Attributes:
        spec: the run.
        returncode: the process exit code; -1 when the run was already finished (skipped).
        seconds: wall time of the process (0 when skipped).
    """

    spec: RunSpec
    returncode: int
    seconds: float

    @property
    def ok(self) -> bool:
        """Finished now or before."""
        return self.returncode in (0, -1)


OnRunEnd = Callable[[str, int, float, int, int], None]


class LocalExecutor:
    """Run ``fdseg train`` subprocesses on this machine, ``jobs`` at a time.

    Args:
        jobs: runs in flight at once (>= 1).
        threads_per_job: torch threads per run (``OMP_NUM_THREADS``); ``None`` leaves the environment as is.
        device: ``--device`` passed to ``fdseg train`` (``auto``, ``cpu``, ``gpu``).
        python: interpreter for the child processes.
    """

    def __init__(
        self,
        jobs: int = 1,
        *,
        threads_per_job: int | None = None,
        device: str = "auto",
        python: str | None = None,
        gpus: Sequence[str] | None = None,
        per_gpu: int = 1,
    ) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        if threads_per_job is not None and threads_per_job < 1:
            raise ValueError(f"threads_per_job must be >= 1, got {threads_per_job}")
        if per_gpu < 1:
            raise ValueError(f"per_gpu must be >= 1, got {per_gpu}")
        self.gpus = [str(g) for g in gpus] if gpus else []
        #: one entry per concurrent run: the GPU it sees (``None``: the environment as is)
        self.slots: list[str | None] = [g for g in self.gpus for _ in range(per_gpu)] or [None] * jobs
        self.jobs = len(self.slots)
        self.threads_per_job = threads_per_job
        self.device = device
        self.python = python or sys.executable

    def command(self, spec: RunSpec) -> list[str]:
        """The child's command line."""
        config = spec.run_dir / "config.yaml"
        return [
            self.python, "-m", "fdseg.cli", "train",
            "--config", str(config), "--out", str(spec.run_dir), "--device", self.device,
        ]  # fmt: skip

    def _env(self, gpu: str | None = None) -> dict[str, str]:
        env = dict(os.environ)
        if self.threads_per_job is not None:
            env["OMP_NUM_THREADS"] = str(self.threads_per_job)
            env["MKL_NUM_THREADS"] = str(self.threads_per_job)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        return env

    def run(self, specs: Sequence[RunSpec], *, on_run_end: OnRunEnd | None = None) -> list[RunResult]:
        """Run every spec (finished ones are skipped) and return their results in the order given.

        Raises:
            RunConfigMismatchError: a run directory holds another configuration (checked before any start).
            ValueError: two specs share a run directory.
        """
        dirs = [s.run_dir.resolve() for s in specs]
        if len(set(dirs)) != len(dirs):
            raise ValueError("two runs share a run directory")
        for spec in specs:  # refuse foreign directories before starting anything
            check_run_config(spec.run_dir, spec.config)
        results: dict[int, RunResult] = {}
        pending = list(enumerate(specs))
        running: dict[int, tuple[subprocess.Popen[bytes], float, RunSpec, int]] = {}
        free = list(range(len(self.slots)))
        total = len(specs)

        def finish(index: int, result: RunResult) -> None:
            results[index] = result
            if on_run_end is not None:
                on_run_end(result.spec.name, result.returncode, result.seconds, len(results), total)

        while pending or running:
            while pending and free:
                index, spec = pending.pop(0)
                if (spec.run_dir / "DONE").is_file():
                    finish(index, RunResult(spec, -1, 0.0))
                    continue
                slot = free.pop(0)
                spec.run_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_text(spec.run_dir / "config.yaml", spec.config.to_yaml())
                log = (spec.run_dir / "train.log").open("wb")
                env = self._env(self.slots[slot])
                proc = subprocess.Popen(self.command(spec), stdout=log, stderr=subprocess.STDOUT, env=env)
                log.close()
                running[index] = (proc, time.perf_counter(), spec, slot)
            for index, (proc, started, spec, slot) in list(running.items()):
                code = proc.poll()
                if code is not None:
                    del running[index]
                    free.append(slot)
                    free.sort()
                    finish(index, RunResult(spec, code, time.perf_counter() - started))
            if running:
                time.sleep(0.05)
        return [results[i] for i in range(total)]


def run_logged(command: Sequence[str], log: str) -> int:
    """Run ``command`` with its output appended to ``log``; raise when it fails (what a SLURM job runs).

    Raises:
        RuntimeError: a non-zero exit code (naming the log), so that the job is marked failed.
    """
    with open(log, "ab") as out:
        code = subprocess.call(list(command), stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {code}; see {log}")
    return code


@dataclass(frozen=True)
class Submission:
    """Runs handed to SLURM.

    Attributes:
        job_ids: the SLURM job id of each submitted run (``<array id>_<index>`` in a job array).
        runs: the names of the submitted runs (finished runs are not submitted).
        skipped: the names of the runs skipped because they were finished (``DONE``).
        folder: submitit's folder (submission scripts, job logs).
    """

    job_ids: list[str]
    runs: list[str]
    skipped: list[str]
    folder: Path


class SlurmExecutor:
    """Submit ``fdseg train`` runs to SLURM with ``submitit`` (optional extra ``[slurm]``).

    Each run is one job (``array=False``) or one task of a job array (``array=True``, the default, at most
    ``max_parallel`` running at once); each gets ``gpus_per_job`` GPUs, ``cpus_per_job`` CPUs (also its torch
    threads), ``mem_gb`` and ``time_min`` minutes. Finished runs (``DONE``) are not submitted. The job runs
    ``python -m fdseg.cli train --config <run>/config.yaml --out <run>`` (the same command as
    :class:`LocalExecutor`), so fdseg must be installed where the jobs run.

    Args:
        folder: submitit's working folder (submission scripts, stdout/stderr of the jobs).
        partition: SLURM partition.
        time_min: time limit per run in minutes.
        gpus_per_job: GPUs per run (0 for CPU runs).
        cpus_per_job: CPUs per run.
        mem_gb: memory per run (``None``: the cluster default).
        array: submit one job array instead of one job per run.
        max_parallel: array tasks running at once.
        device: ``--device`` of ``fdseg train``.
        python: interpreter of the jobs.
        extra: further submitit ``slurm_*`` parameters (e.g. ``{"slurm_account": "lab"}``).

    Raises:
        ImportError: submitit is not installed (``pip install 'fdseg[slurm]'``).
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        partition: str | None = None,
        time_min: int = 60,
        gpus_per_job: int = 1,
        cpus_per_job: int = 4,
        mem_gb: int | None = None,
        array: bool = True,
        max_parallel: int = 32,
        device: str = "auto",
        python: str | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        if time_min < 1:
            raise ValueError(f"the SLURM time limit must be >= 1 minute, got {time_min}")
        if gpus_per_job < 0 or cpus_per_job < 1:
            raise ValueError(
                f"need gpus_per_job >= 0 and cpus_per_job >= 1, got {gpus_per_job}, {cpus_per_job}"
            )
        try:
            import submitit
        except ImportError as err:
            raise ImportError(
                "the SLURM executor needs submitit: pip install 'fdseg[slurm]' (or pip install submitit)"
            ) from err
        self.folder = Path(folder)
        self.array = array
        self._local = LocalExecutor(1, device=device, python=python, threads_per_job=cpus_per_job)
        params: dict[str, object] = {
            "timeout_min": time_min,
            "cpus_per_task": cpus_per_job,
            "tasks_per_node": 1,
            "nodes": 1,
            "name": "fdseg",
        }
        if gpus_per_job:
            params["gpus_per_node"] = gpus_per_job
        if mem_gb is not None:
            params["mem_gb"] = mem_gb
        if partition:
            params["slurm_partition"] = partition
        if array:
            params["slurm_array_parallelism"] = max_parallel
        params.update(extra or {})
        self.executor = submitit.AutoExecutor(folder=str(self.folder), cluster="slurm")
        self.executor.update_parameters(**params)
        self.env = {"OMP_NUM_THREADS": str(cpus_per_job), "MKL_NUM_THREADS": str(cpus_per_job)}

    def command(self, spec: RunSpec) -> list[str]:
        """The job's command line (with the thread count set through ``env``)."""
        return ["env", *(f"{k}={v}" for k, v in self.env.items()), *self._local.command(spec)]

    def submit(self, specs: Sequence[RunSpec]) -> Submission:
        """Write each pending run's ``config.yaml`` and submit it; finished runs are skipped.

        Raises:
            RunConfigMismatchError: a run directory holds another configuration (before any submission).
        """
        for spec in specs:
            check_run_config(spec.run_dir, spec.config)
        todo = [s for s in specs if not (s.run_dir / "DONE").is_file()]
        skipped = [s.name for s in specs if (s.run_dir / "DONE").is_file()]
        for spec in todo:
            spec.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(spec.run_dir / "config.yaml", spec.config.to_yaml())
        commands = [self.command(s) for s in todo]
        logs = [str(s.run_dir / "train.log") for s in todo]
        if not todo:
            return Submission([], [], skipped, self.folder)
        if self.array:
            jobs = self.executor.map_array(run_logged, commands, logs)
        else:
            jobs = [self.executor.submit(run_logged, c, log) for c, log in zip(commands, logs)]
        return Submission([str(j.job_id) for j in jobs], [s.name for s in todo], skipped, self.folder)


def _exit_with_parent(parent: int) -> None:
    """End this worker as soon as the process that started it is gone (killed, crashed)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


def _worker_init(threads: int | None, parent: int) -> None:
    """A worker's torch intra-op threads and warning filter (as ``fdseg``'s own), before it trains.

    A watcher thread ends the worker when its parent dies, so a killed study leaves no orphan training.
    """
    import threading
    import warnings

    # the parent's pid comes from the parent itself: read here, it could already be init's (a parent killed
    # while this worker was still importing)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    warnings.filterwarnings("ignore", module=r"lightning\..*")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def train_inline(spec: RunSpec, runtime: object | None = None) -> RunResult:
    """Train ``spec`` in this process (``train_run``, seeded as the CLI seeds); an error fails the run.

    The error and its traceback go to ``<run>/train.log`` (exit code 1); success appends ``run finished``.
    """
    import logging
    import traceback

    import lightning.pytorch as pl

    from fdseg.training.run import train_run
    from fdseg.training.rundir import Runtime

    spec.run_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    code = 0
    try:
        pl.seed_everything(spec.config.train.seed, workers=True, verbose=False)
        for name in ("lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
        train_run(spec.config, spec.run_dir, runtime=runtime if isinstance(runtime, Runtime) else Runtime())
        message = f"run finished: {spec.run_dir}\n"
    except Exception as err:  # a failed run is reported, the sweep goes on
        code = 1
        message = "".join(traceback.format_exception(err)) + f"error: {err}\n"
    with (spec.run_dir / "train.log").open("a") as log:
        log.write(message)
    return RunResult(spec, code, time.perf_counter() - started)


class InlineExecutor:
    """Train runs in this process, or in ``jobs`` worker processes that each train many runs.

    No start-up cost per run (imports, process launch: about 5-10 s on a small CPU machine), so it suits many
    small runs. With ``jobs`` > 1 the workers are started once (``spawn``, with ``threads_per_job`` torch
    threads each) by :class:`concurrent.futures.ProcessPoolExecutor` and take the runs in order. A run that
    raises is recorded as failed (exit code 1, the error in ``<run>/train.log``) and the others carry on; a
    worker that dies takes its run with it (recorded as failed).

    Args:
        runtime: the device choice of every run (CPU by default).
        jobs: runs at a time (1: in this process).
        threads_per_job: torch threads of each worker (``None``: torch's default).
    """

    def __init__(
        self, runtime: object | None = None, jobs: int = 1, threads_per_job: int | None = None
    ) -> None:
        self.runtime = runtime
        self.jobs = max(1, int(jobs))
        self.threads_per_job = threads_per_job

    def run(self, specs: Sequence[RunSpec], *, on_run_end: OnRunEnd | None = None) -> list[RunResult]:
        """Run every spec and return their results in the order given.

        Raises:
            RunConfigMismatchError: a run directory holds another configuration (checked before any start).
        """
        for spec in specs:
            check_run_config(spec.run_dir, spec.config)
        results: dict[int, RunResult] = {}

        def done(index: int, result: RunResult) -> None:
            results[index] = result
            if on_run_end is not None:
                on_run_end(specs[index].name, result.returncode, result.seconds, len(results), len(specs))

        todo = []
        for index, spec in enumerate(specs):
            if (spec.run_dir / "DONE").is_file():
                done(index, RunResult(spec, -1, 0.0))
            else:
                todo.append(index)
        if self.jobs == 1:
            for index in todo:
                done(index, train_inline(specs[index], self.runtime))
        elif todo:
            self._pool(specs, todo, done)
        return [results[i] for i in range(len(specs))]

    def _pool(
        self, specs: Sequence[RunSpec], todo: list[int], done: Callable[[int, RunResult], None]
    ) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            self.jobs,
            mp_context=context,
            initializer=_worker_init,
            initargs=(self.threads_per_job, os.getpid()),
        ) as pool:
            futures = {pool.submit(train_inline, specs[i], self.runtime): i for i in todo}
            try:
                for future in as_completed(futures):
                    index = futures[future]
                    try:
                        result = future.result()
                    except Exception as err:  # a worker died (e.g. out of memory): the pool is broken
                        folder = specs[index].run_dir
                        folder.mkdir(parents=True, exist_ok=True)
                        with (folder / "train.log").open("a") as log:
                            log.write(f"error: a worker process of the study died ({err!r}); rerun\n")
                        result = RunResult(specs[index], 1, 0.0)
                    done(index, result)
            except BaseException:  # Ctrl-C: do not start the queued runs
                pool.shutdown(wait=False, cancel_futures=True)
                raise
