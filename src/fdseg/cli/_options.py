"""Options shared by the commands that train many runs: ``fdseg sweep`` and every ``fdseg experiment …``.

Each option is defined once here (an ``Annotated`` alias with its flags and help) together with its default,
so that every study spells, defaults and documents ``--config``, ``--out``, ``--set``, ``--seeds``,
``--jobs``, ``--per-gpu``, ``--threads`` and ``--device`` the same way. ``--seeds`` is parsed by
:func:`fdseg.experiments.sweep.parse_seeds` for every command, and the local executor (runs in parallel on
the CPU cores or the visible GPUs) is built by :func:`local_executor`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from fdseg.experiments.executors import InlineExecutor, LocalExecutor

#: Defaults shared by every study command.
DEFAULT_JOBS = 1
DEFAULT_PER_GPU = 1
DEFAULT_DEVICE = "auto"
DEVICES = ("auto", "cpu", "gpu")
#: The default experiment directory of each study command: ``runs/<command>``.
DEFAULT_OUT = {
    name: Path("runs") / name for name in ("sweep", "table1", "data-addition", "robustness", "multiclass")
}

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="YAML experiment config.")]
StudyConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML experiment config (default: the study's synthetic setting)."),
]
OutOpt = Annotated[
    Path,
    typer.Option("--out", "-o", help="Experiment directory (created; resumed if present)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="KEY=VALUE",
        help="Override a config value for every run: section.key=value (repeat).",
    ),
]
SeedsOpt = Annotated[
    str,
    typer.Option(
        "--seeds", help="Seeds per arm: a count (5 = seeds 0-4), an inclusive range (0-4) or a list (0,3,7)."
    ),
]
FoldsOpt = Annotated[
    int | None,
    typer.Option("--folds", help="Cross-validation: K test folds grouped by patient/slide (K >= 2)."),
]
JobsOpt = Annotated[
    int,
    typer.Option(
        "--jobs", "-j", help="CPU: runs in parallel (the cores are split between them); GPUs: see --per-gpu."
    ),
]
PerGpuOpt = Annotated[int, typer.Option("--per-gpu", help="GPU: concurrent runs per visible GPU.")]
ThreadsOpt = Annotated[
    int | None,
    typer.Option("--threads", help="Torch threads per run (default: the CPU cores split between the runs)."),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto (CUDA when present), cpu or gpu, for every run.")
]
ExecutorOpt = Annotated[
    str,
    typer.Option(
        "--executor",
        help="local (a process per run, --jobs at a time), inline (one at a time in this process: no "
        "start-up cost, for small CPU runs) or slurm (submitit).",
    ),
]
PartitionOpt = Annotated[str | None, typer.Option("--slurm-partition", help="SLURM partition.")]
TimeOpt = Annotated[int, typer.Option("--slurm-time", help="SLURM time limit per run, minutes.")]
SlurmGpusOpt = Annotated[int, typer.Option("--slurm-gpus", help="GPUs per SLURM job (0: CPU jobs).")]
SlurmCpusOpt = Annotated[int, typer.Option("--slurm-cpus", help="CPUs per SLURM job.")]
ArrayOpt = Annotated[
    bool, typer.Option("--slurm-array/--slurm-jobs", help="One job array, or one job per run.")
]


def seed_list(text: str) -> tuple[int, ...]:
    """``--seeds`` of every study command (see :func:`fdseg.experiments.sweep.parse_seeds`).

    Raises:
        ValueError: not a count >= 1, an inclusive range or a list of distinct seeds >= 0.
    """
    from fdseg.experiments.sweep import parse_seeds

    return parse_seeds(text)


def check_device(device: str) -> str:
    """``device`` when it is ``auto``, ``cpu`` or ``gpu``.

    Raises:
        ValueError: another value (naming ``--device``).
    """
    if device not in DEVICES:
        raise ValueError(f"--device must be auto, cpu or gpu, got {device!r}")
    return device


def visible_gpus(device: str) -> list[str]:
    """The GPUs the runs are to use, in ``CUDA_VISIBLE_DEVICES`` order (empty on CPU).

    Raises:
        ValueError: an unknown ``device``, or ``gpu`` without CUDA.
    """
    if check_device(device) == "cpu":
        return []
    import torch

    if not torch.cuda.is_available():
        if device == "gpu":
            raise ValueError("--device gpu was asked for but CUDA is not available")
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [v.strip() for v in visible.split(",") if v.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def local_executor(
    *, jobs: int, per_gpu: int, device: str, threads: int | None = None, pool_on_cpu: bool = False
) -> LocalExecutor | InlineExecutor:
    """The executor of ``--jobs``/``--per-gpu``/``--threads``/``--device``: a ``fdseg train`` process a run.

    On GPUs, ``per_gpu`` runs share each visible GPU; on the CPU, ``jobs`` runs at a time. Each run gets
    ``threads`` torch threads (default: the CPU cores divided by the runs in flight). With ``pool_on_cpu``
    the CPU runs go to ``jobs`` worker processes that each train many runs (:class:`InlineExecutor`: no
    start-up cost per run).

    Raises:
        ValueError: ``jobs``, ``per_gpu`` or ``threads`` < 1, an unknown ``device``, ``gpu`` without CUDA.
    """
    from fdseg.experiments.executors import InlineExecutor, LocalExecutor

    if jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {jobs}")
    if per_gpu < 1:
        raise ValueError(f"--per-gpu must be >= 1, got {per_gpu}")
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    gpus = visible_gpus(device)
    slots = len(gpus) * per_gpu if gpus else jobs
    if pool_on_cpu and not gpus:
        from fdseg.training.rundir import Runtime

        cores = threads or max(1, (os.cpu_count() or 1) // jobs)
        return InlineExecutor(Runtime(), jobs=jobs, threads_per_job=cores)
    return LocalExecutor(
        jobs,
        threads_per_job=threads or max(1, (os.cpu_count() or 1) // slots),
        device="gpu" if gpus else "cpu",
        gpus=gpus or None,
        per_gpu=per_gpu,
    )
