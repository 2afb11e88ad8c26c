"""Run executors: one subprocess per run (``fdseg train``), N at a time, finished runs skipped.

A run is a directory plus a configuration. The executor writes the configuration to
``<run>/config.yaml`` (a run directory that already holds another configuration is refused by ``fdseg
train``), starts ``python -m fdseg.cli train --config <run>/config.yaml --out <run>`` and sends its output to
``<run>/train.log``. Runs with a ``DONE`` marker are not started again, so re-running an experiment only
trains what is missing. With ``threads_per_job`` the child processes get ``OMP_NUM_THREADS`` (torch's
intra-op threads), so that N parallel runs share the cores instead of oversubscribing them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fdseg.training.config import ExperimentConfig
from fdseg.training.history import atomic_write_text
from fdseg.training.run import check_run_config


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
    ) -> None:
        if jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {jobs}")
        if threads_per_job is not None and threads_per_job < 1:
            raise ValueError(f"threads_per_job must be >= 1, got {threads_per_job}")
        self.jobs = jobs
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

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.threads_per_job is not None:
            env["OMP_NUM_THREADS"] = str(self.threads_per_job)
            env["MKL_NUM_THREADS"] = str(self.threads_per_job)
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
        running: dict[int, tuple[subprocess.Popen[bytes], float, RunSpec]] = {}
        total = len(specs)

        def finish(index: int, result: RunResult) -> None:
            results[index] = result
            if on_run_end is not None:
                on_run_end(result.spec.name, result.returncode, result.seconds, len(results), total)

        env = self._env()
        while pending or running:
            while pending and len(running) < self.jobs:
                index, spec = pending.pop(0)
                if (spec.run_dir / "DONE").is_file():
                    finish(index, RunResult(spec, -1, 0.0))
                    continue
                spec.run_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_text(spec.run_dir / "config.yaml", spec.config.to_yaml())
                log = (spec.run_dir / "train.log").open("wb")
                proc = subprocess.Popen(self.command(spec), stdout=log, stderr=subprocess.STDOUT, env=env)
                log.close()
                running[index] = (proc, time.perf_counter(), spec)
            for index, (proc, started, spec) in list(running.items()):
                code = proc.poll()
                if code is not None:
                    del running[index]
                    finish(index, RunResult(spec, code, time.perf_counter() - started))
            if running:
                time.sleep(0.05)
        return [results[i] for i in range(total)]
