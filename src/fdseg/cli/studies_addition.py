"""Commands of the data-addition study: ``fdseg divergence`` (and the ``experiment`` group's studies)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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


def parse_numbers(text: str | None, option: str) -> list[float | int] | None:
    """``"8,15,30"`` -> ``[8, 15, 30]`` (ints where whole, floats otherwise); ``None`` stays ``None``.

    Raises:
        ValueError: an item that is not a number, or an empty list (naming ``option``).
    """
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"{option} needs a comma-separated list of numbers, got {text!r}")
    out: list[float | int] = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            raise ValueError(f"{option}: {item!r} is not a number") from None
        out.append(
            int(value) if value.is_integer() and "." not in item and "e" not in item.lower() else value
        )
    return out


@app.command()
def divergence(
    base: Annotated[str, typer.Argument(help="Base dataset spec NAME:PATH[?opt=v].")],
    novel: Annotated[str, typer.Argument(help="Novel dataset spec; images come from its training part.")],
    k: Annotated[str | None, typer.Option("--k", help="Added counts, e.g. 8,15,30.")] = None,
    fractions: Annotated[
        str | None,
        typer.Option("--fractions", help="Fractions of the novel training pool (default 0.25,0.5,1)."),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for divergence.csv/.json.")] = None,
    size: Annotated[
        int | None, typer.Option("--size", help="Compare at SIZE² (the training resize); default native.")
    ] = None,
    grey: Annotated[
        str, typer.Option(help="bt601 (0.299/0.587/0.114) or luminosity (0.21/0.72/0.07).")
    ] = "bt601",
    base_set: Annotated[str, typer.Option(help="train (the base training split) or all.")] = "train",
    split_scheme: Annotated[str, typer.Option(help="Base split scheme (code or paper).")] = "code",
    split_seed: Annotated[int, typer.Option(help="Base split seed.")] = 35,
    selection: Annotated[str, typer.Option(help="first (natural id order) or random (seeded).")] = "first",
    selection_seed: Annotated[int, typer.Option(help="Seed of --selection random.")] = 0,
) -> None:
    """KL and JS distance of pixel intensities: base training images vs each added novel subset."""
    from fdseg.analysis.divergence import DivergenceSettings
    from fdseg.experiments.divergence import SubsetRule, divergence_study

    if k is not None and fractions is not None:
        raise ValueError("give --k or --fractions, not both")
    settings = DivergenceSettings(grey=grey)
    rule = SubsetRule(
        split_scheme=split_scheme,
        split_seed=split_seed,
        base_set=base_set,
        selection=selection,
        selection_seed=selection_seed,
    )
    if size is not None and size < 8:
        raise ValueError(f"--size must be >= 8, got {size}")
    result = divergence_study(
        base,
        novel,
        k=parse_numbers(k, "--k"),
        fractions=parse_numbers(fractions, "--fractions"),
        size=size,
        settings=settings,
        rule=rule,
    )
    meta: dict[str, Any] = result.meta
    _echo(
        f"base: {meta['base_images']} {meta['base_set']} images of {base}; novel pool: {meta['novel_pool']} "
        f"({meta['novel_pool_rule']}) of {novel}; size: {meta['size']}"
    )
    _echo(
        f"grey {settings.grey} {list(result.settings['grey_weights'])}, {settings.bins} bins on "
        f"{list(settings.value_range)}, eps {settings.eps}, KL(base || novel), "
        "JS distance = sqrt(JSD), natural log"
    )
    _echo(result.table_text)
    if out is not None:
        csv_path, json_path = result.write(out)
        _echo(f"written: {csv_path} {json_path}")


def _load_config(config: Path | None, overrides: list[str] | None) -> Any:
    from fdseg.experiments.addition import synthetic_config
    from fdseg.training.config import ExperimentConfig

    # the synthetic default's data live beside the shipped configs' (data/synthetic, relative to the working
    # directory), never inside the study folder, which holds runs only
    cfg = ExperimentConfig.from_yaml(config) if config is not None else synthetic_config("data/synthetic")
    return cfg.with_overrides(overrides or [])


def _run_and_report(study: Any, executor: Any, extra: Any = None) -> None:
    import time

    from fdseg.experiments.addition import collect, format_summary, run_study, summarise, write_outputs

    _echo(
        f"{study.kind}: {len(study.specs)} runs ({len(study.arms)} arms x {len(study.conditions)} "
        f"conditions x {len(study.seeds)} seeds), {executor.jobs} at a time, into {study.out}"
    )
    start = time.perf_counter()

    results = run_study(study, executor=executor, echo=_echo)
    frame = collect(study, results)
    summary = summarise(study, frame)
    extras = {"wall_seconds": round(time.perf_counter() - start, 1), **(extra() if extra else {})}
    paths = write_outputs(study, frame, summary, extras)
    _echo("")
    _echo(format_summary(study, summary))
    if extras.get("divergence"):
        from fdseg.analysis.divergence import format_divergence_table

        _echo("\ndivergence of each added subset from the base training images (Tables 2-3 layout):")
        _echo(format_divergence_table(extras["divergence"]))
    _echo(
        f"\nwall time {extras['wall_seconds']:.1f} s; results: {paths['results']}; figure: {paths['figure']}"
    )


@experiment_app.command("data-addition")
def data_addition(
    config: StudyConfigOpt = None,
    out: OutOpt = DEFAULT_OUT["data-addition"],
    k: Annotated[str | None, typer.Option("--k", help="Added counts, e.g. 0,8,15,30.")] = None,
    fractions: Annotated[
        str | None, typer.Option("--fractions", help="Fractions of the novel training pool (0,0.25,0.5,1).")
    ] = None,
    arms: Annotated[
        str, typer.Option(help="Arms: seg, fd, fd_exch, con, deeps.")
    ] = "seg,fd,fd_exch,con,deeps",
    seeds: SeedsOpt = "3",
    overrides: SetOpt = None,
    jobs: JobsOpt = DEFAULT_JOBS,
    per_gpu: PerGpuOpt = DEFAULT_PER_GPU,
    threads: ThreadsOpt = None,
    device: DeviceOpt = DEFAULT_DEVICE,
) -> None:
    """Base-test Dice vs added novel images per arm (figure 3), paired changes vs k = 0, divergences per k."""
    from fdseg.experiments.addition import SYNTHETIC_K, addition_divergence, plan_data_addition

    if k is not None and fractions is not None:
        raise ValueError("give --k or --fractions, not both")
    seed_values = seed_list(seeds)
    executor = local_executor(jobs=jobs, per_gpu=per_gpu, device=device, threads=threads, pool_on_cpu=True)
    cfg = _load_config(config, overrides)
    k_values = parse_numbers(k, "--k")
    if config is None and k is None and fractions is None:
        k_values = list(SYNTHETIC_K)
    study = plan_data_addition(
        cfg,
        out,
        k=k_values,
        fractions=parse_numbers(fractions, "--fractions"),
        arms=arms.split(","),
        seeds=seed_values,
    )
    _run_and_report(study, executor, extra=lambda: {"divergence": addition_divergence(study)})


@experiment_app.command("robustness")
def robustness(
    config: StudyConfigOpt = None,
    out: OutOpt = DEFAULT_OUT["robustness"],
    sigmas: Annotated[str, typer.Option(help="Noise σ for images in [0, 1].")] = "0,0.05,0.1,0.15,0.2",
    apply_to: Annotated[str, typer.Option(help="all, train or test (validation follows training).")] = "all",
    arms: Annotated[str, typer.Option(help="Arms: seg, fd, fd_exch, con, deeps.")] = "seg,fd,con,deeps",
    seeds: SeedsOpt = "3",
    overrides: SetOpt = None,
    jobs: JobsOpt = DEFAULT_JOBS,
    per_gpu: PerGpuOpt = DEFAULT_PER_GPU,
    threads: ThreadsOpt = None,
    device: DeviceOpt = DEFAULT_DEVICE,
) -> None:
    """Base-test Dice vs Gaussian noise σ per arm (figure 9), paired changes vs σ = 0."""
    from fdseg.experiments.addition import plan_robustness

    seed_values = seed_list(seeds)
    executor = local_executor(jobs=jobs, per_gpu=per_gpu, device=device, threads=threads, pool_on_cpu=True)
    cfg = _load_config(config, overrides)
    if config is None:
        cfg = cfg.with_overrides(["data.novel=null"])  # the synthetic noise study uses the base site only
    values = parse_numbers(sigmas, "--sigmas") or []
    study = plan_robustness(
        cfg, out, sigmas=values, arms=arms.split(","), seeds=seed_values, apply_to=apply_to
    )
    _run_and_report(study, executor)
