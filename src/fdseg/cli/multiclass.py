"""``fdseg experiment multiclass`` (Table 7) and ``fdseg figures`` (Figs. 4, 6, 8)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from fdseg.cli import _echo, app, experiment_app
from fdseg.cli._options import (
    DEFAULT_DEVICE,
    DEFAULT_JOBS,
    DEFAULT_OUT,
    DEFAULT_PER_GPU,
    DeviceOpt,
    JobsOpt,
    OutOpt,
    PerGpuOpt,
    SeedsOpt,
    SetOpt,
    StudyConfigOpt,
    ThreadsOpt,
    local_executor,
    seed_list,
)


@experiment_app.command("multiclass")
def experiment_multiclass(
    config: StudyConfigOpt = None,
    out: OutOpt = DEFAULT_OUT["multiclass"],
    seeds: SeedsOpt = "3",
    overrides: SetOpt = None,
    jobs: JobsOpt = DEFAULT_JOBS,
    per_gpu: PerGpuOpt = DEFAULT_PER_GPU,
    threads: ThreadsOpt = None,
    device: DeviceOpt = DEFAULT_DEVICE,
) -> None:
    """U-Net vs U-Net + per-class L_fd: per-class Dice in Table 7's layout and paired tests per class.

    The config is a multi-class L_fd run (default: synthetic nuclei_mc, generated under OUT/data).
    """
    from fdseg.experiments.multiclass import default_config, run_multiclass
    from fdseg.training.config import ExperimentConfig

    seed_values = seed_list(seeds)
    executor = local_executor(jobs=jobs, per_gpu=per_gpu, device=device, threads=threads)
    cfg = ExperimentConfig.from_yaml(config) if config is not None else default_config(out)
    cfg = cfg.with_overrides(overrides or [])
    start = time.perf_counter()

    def progress(name: str, code: int, seconds: float, done: int, total: int) -> None:
        state = "skipped (DONE)" if code == -1 else ("ok" if code == 0 else f"FAILED (exit {code})")
        _echo(f"[{done}/{total}] {name}: {state} {seconds:.1f} s")

    result = run_multiclass(cfg, out, seeds=seed_values, executor=executor, on_run_end=progress)
    _echo(result.table_text)
    _echo(f"tests:   {out / 'tests.csv'}")
    _echo(f"report:  {result.report_html}")
    _echo(f"wall time: {time.perf_counter() - start:.0f} s")


@app.command()
def figures(
    targets: Annotated[
        list[str],
        typer.Argument(
            metavar="TARGET",
            help="RUN [RUN_B] [IMAGE_ID ...]: run directories, then image ids of the run's data.",
        ),
    ],
    kind: Annotated[str, typer.Option(help="heatmap, overlay or arrows.")] = "overlay",
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder of the figure.")] = Path("figures"),
    layer: Annotated[str, typer.Option(help="Layer of the arrows (L_fd on the x axis).")] = "bottleneck",
    worst: Annotated[
        int, typer.Option("--worst", "-k", help="Default images: this many worst-off of RUN.")
    ] = 4,
    class_name: Annotated[
        str | None, typer.Option("--class", help="Overlay one foreground class only (multi-class runs).")
    ] = None,
) -> None:
    """Heatmaps (figure 8), FP/FN overlays (figure 6) or per-image arrows (figure 4) of one or two runs."""
    from fdseg.report.figures import write_figures

    run_a = Path(targets[0])
    if not (run_a / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_a} is not an fdseg run directory (no config.yaml)")
    rest = targets[1:]
    run_b = None
    if rest and (Path(rest[0]) / "config.yaml").is_file():
        run_b, rest = Path(rest[0]), rest[1:]
    path = write_figures(run_a, run_b, rest, kind, out, layer=layer, k=worst, class_name=class_name)
    _echo(f"figure: {path}")
