"""``train.logger``: where Lightning sends the epoch metrics besides ``history.csv``.

``none`` (default) keeps the run directory as it is; ``csv``, ``tensorboard``, ``mlflow`` and ``wandb`` are
Lightning's own loggers, writing under ``<run>/logs`` (MLflow: a file store ``<run>/logs/mlruns``; W&B:
offline unless ``WANDB_MODE`` says otherwise). They receive what the task logs per epoch: ``train_loss``,
``train_seg``, ``val_dice``, ``val_loss``, ``fd/<layer>``, ``fd_exch/<layer>``, ``lambda/<layer>``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from fdseg._checks import check_option

LOGGERS = ("none", "csv", "tensorboard", "mlflow", "wandb")
#: the modules each logger needs, and the fdseg extra that installs them
_NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "mlflow": (("mlflow",), "mlflow"),
    "wandb": (("wandb",), "wandb"),
}


def check_logger(name: str) -> None:
    """Check that ``train.logger`` names a logger and that what it needs is installed.

    Raises:
        ValueError: an unknown name (the valid ones listed), or a logger whose package is missing (naming
            the ``fdseg[<extra>]`` that installs it).
    """
    check_option("train.logger", name, LOGGERS)
    modules, extra = _NEEDS.get(name, ((), ""))
    if modules and not any(importlib.util.find_spec(m) is not None for m in modules):
        raise ValueError(
            f"train.logger={name!r} needs the {modules[0]} package: pip install 'fdseg[{extra}]'"
        )


def make_logger(name: str, run_dir: Path, run_name: str, phase: int = 1) -> Any:
    """The Lightning logger ``name`` of one phase, under ``<run_dir>/logs``; ``False`` for ``none``.

    Each phase has its own Trainer, hence its own logger version: ``logs/<name>/phase<P>`` (csv,
    tensorboard; a resumed phase writes ``phase<P>-2``, ``-3``…, never over the earlier file), an MLflow/W&B
    run named ``<run_name>-phase<P>``; epochs count from 0 within a phase.

    Raises:
        ValueError: as :func:`check_logger`.
    """
    check_logger(name)
    logs = Path(run_dir) / "logs"
    if name == "none":
        return False
    if name in ("csv", "tensorboard"):
        version, start = f"phase{phase}", 1
        while (logs / name / version).exists():
            start += 1
            version = f"phase{phase}-{start}"
        if name == "csv":
            from lightning.pytorch.loggers import CSVLogger

            return CSVLogger(logs, name="csv", version=version)
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(logs, name="tensorboard", version=version, default_hp_metric=False)
    if name == "mlflow":
        from lightning.pytorch.loggers import MLFlowLogger

        return MLFlowLogger(
            experiment_name=run_name,
            run_name=f"{run_name}-phase{phase}",
            tracking_uri=(logs / "mlruns").resolve().as_uri(),
        )
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(
        name=f"{run_name}-phase{phase}",
        save_dir=str(logs),
        offline=os.environ.get("WANDB_MODE", "offline") == "offline",
    )
