"""The local run executor (a subprocess per run, finished runs skipped) and the demo's arms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fdseg.experiments.demo import ARMS, DemoSettings, demo_runs
from fdseg.experiments.executors import InlineExecutor, LocalExecutor, RunSpec
from fdseg.training.config import ExperimentConfig
from fdseg.training.rundir import RunConfigMismatchError


def _tiny(tmp: Path, seed: int) -> ExperimentConfig:
    base = f"synthetic:{tmp / 'base'}?family=nuclei&site=base&n=12&seed=0&size=32"
    return ExperimentConfig.from_dict(
        {
            "data": {"base": base, "image_size": 32, "split_scheme": "paper", "cache_dir": str(tmp / "c")},
            "model": {"kwargs": {"base_width": 4, "depth": 2}},
            "train": {"epochs_phase1": 1, "epochs_phase2": 0, "batch_size": 4, "seed": seed},
        }
    )


def test_runs_in_subprocesses_and_skips_finished(tmp_path: Path) -> None:
    specs = [RunSpec(f"s{i}", _tiny(tmp_path, i), tmp_path / "exp" / f"s{i}") for i in range(2)]
    (specs[1].run_dir).mkdir(parents=True)
    (specs[1].run_dir / "config.yaml").write_text(specs[1].config.to_yaml())
    (specs[1].run_dir / "DONE").write_text("{}")
    seen: list[tuple[str, int]] = []
    results = LocalExecutor(2, threads_per_job=1, device="cpu").run(
        specs, on_run_end=lambda name, rc, secs, done, total: seen.append((name, rc))
    )
    assert [r.returncode for r in results] == [0, -1]
    assert sorted(seen) == [("s0", 0), ("s1", -1)]
    summary = json.loads((specs[0].run_dir / "test" / "summary.json").read_text())
    assert summary["n"] > 0 and (specs[0].run_dir / "train.log").is_file()
    assert not (specs[1].run_dir / "checkpoints").exists()  # never started


def test_worker_pool_trains_like_the_subprocess_executor_and_reports_failures(tmp_path: Path) -> None:
    good = [RunSpec(f"s{i}", _tiny(tmp_path, i), tmp_path / "pool" / f"s{i}") for i in range(2)]
    reference = LocalExecutor(1, threads_per_job=1, device="cpu").run(
        [RunSpec("ref", good[1].config, tmp_path / "ref")]
    )
    bad_config = _tiny(tmp_path, 0).with_overrides([f"data.base=folder:{tmp_path / 'missing'}"])
    bad = RunSpec("bad", bad_config, tmp_path / "pool" / "bad")
    seen: list[str] = []
    results = InlineExecutor(jobs=2, threads_per_job=1).run(
        [*good, bad], on_run_end=lambda name, rc, secs, done, total: seen.append(name)
    )
    assert [r.returncode for r in results] == [0, 0, 1] and sorted(seen) == ["bad", "s0", "s1"]
    assert "error:" in (bad.run_dir / "train.log").read_text()
    # a worker that trained s0 first trains s1 exactly as a fresh ``fdseg train`` process does
    ours = json.loads((good[1].run_dir / "test" / "summary.json").read_text())
    theirs = json.loads((reference[0].spec.run_dir / "test" / "summary.json").read_text())
    assert ours["mean"]["dice"] == pytest.approx(theirs["mean"]["dice"], abs=1e-6)


def test_foreign_run_dir_is_refused_before_anything_starts(tmp_path: Path) -> None:
    spec = RunSpec("a", _tiny(tmp_path, 0), tmp_path / "a")
    spec.run_dir.mkdir()
    (spec.run_dir / "config.yaml").write_text(_tiny(tmp_path, 5).to_yaml())
    fresh = RunSpec("b", _tiny(tmp_path, 1), tmp_path / "b")
    with pytest.raises(RunConfigMismatchError, match=r"train\.seed"):
        LocalExecutor(1).run([fresh, spec])
    assert not fresh.run_dir.exists()


def test_demo_arms_are_compute_matched(tmp_path: Path) -> None:
    specs = demo_runs(tmp_path, DemoSettings(seeds=(0, 1)))
    assert len(specs) == 2 * len(ARMS)
    budgets = {
        (s.config.train.max_steps, s.config.train.epochs_phase1, s.config.train.epochs_phase2) for s in specs
    }
    assert len(budgets) == 1  # every arm gets the same optimiser-step budget and phase split
    for spec in specs:
        cfg = spec.config
        assert cfg.has_phase2  # L_seg arms run phase 2 with λ ≡ 0 (compute_matched)
        assert cfg.train.compute_matched == (not cfg.loss.fd)
        assert (cfg.data.novel is None) == (cfg.name == ARMS[0][0])


POOL_PARENT = """
import sys
from pathlib import Path
from fdseg.experiments.executors import InlineExecutor, RunSpec
from fdseg.training.config import ExperimentConfig

cfg = ExperimentConfig.from_yaml(sys.argv[1])
specs = [RunSpec(f"s{i}", cfg, Path(sys.argv[2]) / f"s{i}") for i in range(2)]
InlineExecutor(jobs=2, threads_per_job=1).run(specs)
"""


@pytest.mark.slow
def test_workers_end_when_the_study_process_is_killed(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    config = tmp_path / "long.yaml"
    _tiny(tmp_path, 0).with_overrides(["train.epochs_phase1=500"]).to_yaml(config)
    src = Path(__file__).resolve().parents[2] / "src"
    parent = subprocess.Popen(
        [sys.executable, "-c", POOL_PARENT, str(config), str(tmp_path / "exp")],
        env={**os.environ, "PYTHONPATH": str(src)},
    )
    try:
        workers: list[int] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(workers) < 2:
            time.sleep(0.5)
            found = subprocess.run(["pgrep", "-P", str(parent.pid)], capture_output=True, text=True)
            # the pool's workers (not multiprocessing's resource tracker, which ends on its own)
            workers = [int(p) for p in found.stdout.split() if "spawn_main" in _cmdline(int(p))]
        assert len(workers) >= 2, "the pool's workers did not start"
        # wait until a worker is training (its run directory has a lock), then kill the study process
        while time.monotonic() < deadline and not list((tmp_path / "exp").glob("s*/train.lock")):
            time.sleep(0.5)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        alive = workers
        end = time.monotonic() + 30  # the workers look for their parent every second
        while alive and time.monotonic() < end:
            time.sleep(1)
            alive = [pid for pid in workers if Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)]
        assert not alive, f"orphaned workers still running: {alive}"
    finally:
        if parent.poll() is None:
            parent.kill()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return "Z"
