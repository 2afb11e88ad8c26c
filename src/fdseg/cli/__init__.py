"""The fdseg command line: the only place that parses arguments, reads env vars, seeds, picks devices.

``main(argv) -> int`` returns the exit code: 0 on success, 1 for a failed command (bad data, bad config,
a non-finite loss, …; one line on stderr, no traceback), 2 for a usage error.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

import fdseg
from fdseg.cli._options import SeedsOpt, seed_list

app = typer.Typer(
    name="fdseg",
    help="Feature-discrepancy losses, U-Nets, multi-site data and per-sample evaluation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rich's layout prints "<bool>" beside every flag
)
data_app = typer.Typer(help="Generate and check datasets.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")
experiment_app = typer.Typer(
    help="The paper's studies (Table 1, data addition, robustness, multi-class), one command each.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(experiment_app, name="experiment")

DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu or gpu.")]


def _echo(text: str) -> None:
    typer.echo(text)


def _runtime(device: str) -> Any:
    """Pick the device (the only place that does)."""
    import torch

    from fdseg.training.rundir import Runtime

    if device not in ("auto", "cpu", "gpu"):
        raise ValueError(f"--device must be auto, cpu or gpu, got {device!r}")
    cuda = torch.cuda.is_available() if device == "auto" else device == "gpu"
    if cuda and not torch.cuda.is_available():
        raise ValueError("--device gpu was asked for but CUDA is not available")
    return Runtime(accelerator="gpu" if cuda else "cpu", cuda=cuda)


def _seed(seed: int) -> None:
    import lightning.pytorch as pl

    pl.seed_everything(seed, workers=True, verbose=False)
    level = logging.getLogger().level
    for name in ("lightning.pytorch", "lightning.fabric"):  # Lightning sets INFO on import
        logging.getLogger(name).setLevel(level)


@app.command()
def version() -> None:
    """Print the fdseg version."""
    _echo(fdseg.__version__)


@app.command()
def train(
    config: Annotated[Path, typer.Option("--config", "-c", help="YAML experiment config.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run directory (created; resumed if present).")],
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", metavar="KEY=VALUE", help="Override a config value: section.key=value."),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option("--device", help="auto (CUDA when present), cpu or gpu. Default: train.accelerator."),
    ] = None,
    no_eval: Annotated[bool, typer.Option("--no-eval", help="Skip the test-split evaluation.")] = False,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads", help="torch CPU threads (default: all cores; 1 is often faster on a busy machine)."
        ),
    ] = None,
) -> None:
    """Train one run (two phases, resumable), evaluate it on the test split, print where it is."""
    from fdseg.training.config import ExperimentConfig
    from fdseg.training.progress import outcome_lines

    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    cfg = ExperimentConfig.from_yaml(config).with_overrides(overrides or [])
    if (out / "DONE").is_file():  # a finished run is said without loading Lightning
        from fdseg.training.rundir import check_run_config

        check_run_config(out, cfg)
        _echo(f"already finished (DONE), nothing trained: {out}")
        for line in outcome_lines(out):
            _echo(line)
        return
    from fdseg.training.run import is_global_zero, train_run

    runtime = _runtime(device or cfg.train.accelerator)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    _seed(cfg.train.seed)
    start = time.perf_counter()
    try:
        run_dir = train_run(cfg, out, runtime=runtime, evaluate=not no_eval, echo=_echo)
    except KeyboardInterrupt as exc:  # typer would turn it into a silent exit 130 (143 after SIGTERM)
        if not str(exc):
            raise  # before train_run took over Ctrl-C: main() says it
        typer.echo(str(exc), err=True)
        raise typer.Exit(143 if "(SIGTERM)" in str(exc) else 130) from None
    if not is_global_zero():
        return
    _echo(f"run finished in {time.perf_counter() - start:.1f} s: {run_dir}")
    for line in outcome_lines(run_dir):
        _echo(line)


@app.command()
def report(
    target: Annotated[Path, typer.Argument(help="A run directory or an experiment directory.")],
) -> None:
    """Write report.html for a run or an experiment directory."""
    from fdseg.report.experiment import write_experiment_report
    from fdseg.report.run import write_run_report

    if (target / "config.yaml").is_file():
        path = write_run_report(target)
    elif (target / "experiment.json").is_file() and "method" not in _csv_header(target / "results.csv"):
        import json

        kind = json.loads((target / "experiment.json").read_text()).get("kind", "sweep")
        command = "sweep" if kind == "sweep" else f"experiment {kind}"
        raise _CommandFailed(
            f"{target} was made by `fdseg {command}`, which writes its own report.html "
            f"({target / 'report.html'}); rerun that command with the same arguments to rewrite it "
            "(finished runs are skipped)"
        )
    else:
        import pandas as pd

        results = target / "results.csv"
        if not results.is_file():
            raise FileNotFoundError(
                f"{target} is neither a run (config.yaml) nor an experiment (results.csv)"
            )
        runs = {p.parent.name: p.parent for p in sorted(target.glob("*/config.yaml"))}
        path = write_experiment_report(target, pd.read_csv(results), title=target.name, runs=runs)
    _echo(f"report: {path}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("runs/demo"),
    steps: Annotated[int, typer.Option(help="Optimiser-step budget per run.")] = 250,
    seeds: SeedsOpt = "1",
    jobs: Annotated[int, typer.Option(help="Runs in parallel (one torch thread each when > 1).")] = 2,
) -> None:
    """The data-addition dilemma on synthetic data: base vs base + a shifted site, with and without L_fd."""
    from fdseg.experiments.demo import ARMS, DemoSettings, run_demo

    threads = max(1, (os.cpu_count() or 1) // max(jobs, 1))
    settings = DemoSettings(steps=steps, seeds=seed_list(seeds), jobs=jobs, threads_per_job=threads)
    start = time.perf_counter()
    runs = len(ARMS) * len(settings.seeds)
    _echo(f"demo: {runs} runs of {steps} steps ({jobs} at a time) into {out}; a line as each run ends")

    def progress(name: str, rc: int, seconds: float, done: int, total: int) -> None:
        state = "ok" if rc == 0 else ("skipped (DONE)" if rc < 0 else f"FAILED (exit {rc})")
        _echo(f"[{done}/{total}] {name}: {state} {seconds:.1f} s")

    result = run_demo(out, settings, on_run_end=progress)
    _echo("")
    _echo(result.table_text)
    _echo("")
    _echo(result.notes_text)
    _echo(f"\ndemo finished in {time.perf_counter() - start:.1f} s")
    _echo(f"results: {result.results_csv}")
    _echo(f"report:  {result.report_html}")


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Argument(help="Folder to create (images/, masks/, synthetic.json).")],
    family: Annotated[str, typer.Option(help="nuclei or ultrasound.")] = "nuclei",
    site: Annotated[str, typer.Option(help="Site preset (base, dil2, appear, ...).")] = "base",
    n: Annotated[int, typer.Option(help="Number of images.")] = 40,
    seed: Annotated[int, typer.Option(help="Draw seed.")] = 0,
    size: Annotated[int, typer.Option(help="Image side in px.")] = 64,
) -> None:
    """Generate a synthetic site as a folder dataset."""
    from fdseg.data.synthetic import write_synthetic

    path = write_synthetic(out, family, site, n, seed, size)
    _echo(f"{n} {family}/{site} images written to {path} (open it as folder:{path})")


@data_app.command("check")
def data_check(
    specs: Annotated[list[str], typer.Argument(metavar="SPEC", help="Dataset specs NAME:PATH[?opt=v].")],
) -> None:
    """Check datasets file by file (unreadable images, missing or mis-sized masks, …)."""
    from fdseg.data.check import check_dataset

    failed = 0
    for spec in specs:
        result = check_dataset(spec)
        _echo(result.to_text())
        failed += 0 if result.ok else 1
    if failed:
        raise _CommandFailed(f"{failed} of {len(specs)} dataset(s) have errors")


def _csv_header(path: Path) -> list[str]:
    """The column names of a CSV file (empty when it does not exist)."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return next(iter(handle), "").strip().split(",")


class _CommandFailed(Exception):
    """A command that ran but found problems (exit code 1, message already explained)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fdseg`` script; returns the exit code."""
    level = os.environ.get("FDSEG_LOG_LEVEL", "WARNING").upper()
    for number in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):  # "warning: ..."
        logging.addLevelName(number, logging.getLevelName(number).lower())
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
    warnings.filterwarnings("ignore", module=r"lightning\..*")
    args = list(argv) if argv is not None else sys.argv[1:]
    seen: list[int] = []  # typer turns a KeyboardInterrupt into a silent exit 130: note that one happened
    previous = _note_sigint(seen)
    try:
        result = app(args=args, prog_name="fdseg", standalone_mode=False)
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int) or exc.code is None else 1
    except KeyboardInterrupt as exc:
        typer.echo(str(exc) or "interrupted", err=True)
        return 130
    except (
        _CommandFailed,
        ValueError,
        KeyError,
        TypeError,
        OSError,
        FloatingPointError,
        RuntimeError,
    ) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        typer.echo(f"error: {message}", err=True)
        return 1
    except Exception as exc:  # click's usage errors (typer vendors its own click): bad option, missing arg
        show = getattr(exc, "show", None)
        code = getattr(exc, "exit_code", None)
        if show is None or not isinstance(code, int):
            raise
        show()
        return code
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if result == 130 and seen:  # typer's silent exit after a KeyboardInterrupt nobody reported
        typer.echo(f"interrupted (Ctrl-C) during fdseg {' '.join(args[:1])}", err=True)
    return int(result) if isinstance(result, int) else 0


def _note_sigint(seen: list[int]) -> Any:
    """Make Ctrl-C append to ``seen`` before it raises KeyboardInterrupt; returns the previous handler
    (``None`` outside the main thread, or when SIGINT is ignored)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGINT)
    if previous is signal.SIG_IGN:
        return None

    def handler(signum: int, _frame: Any) -> None:
        seen.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    return previous


# Command groups that live in their own modules register themselves on ``app`` when imported.
from fdseg.cli import _commands  # noqa: E402,F401
