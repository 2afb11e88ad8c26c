"""The run directory: its config, ``env.json``, lock file and checkpoints (no training here).

Layout: ``config.yaml`` (the run's configuration), ``env.json`` (versions and device of the first start,
with every later start appended under ``reruns``), ``split.json``, ``history.csv``, ``checkpoints/``,
``test/``, ``figures/``, ``DONE`` and, while a process trains into it, ``train.lock`` (the owner's pid).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import platform
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

import fdseg
from fdseg._io import atomic_write_text
from fdseg.training.config import ExperimentConfig

log = logging.getLogger(__name__)

#: Keys that may differ between the saved and the requested config of a run (they do not change results).
RUNTIME_KEYS = frozenset({
    "train.progress_bar", "train.num_workers", "train.log_every_n_steps", "train.checkpoint_every_s",
    "train.logger", "train.channels_last",
})  # fmt: skip
LOCK_NAME = "train.lock"


class RunConfigMismatchError(ValueError):
    """The run directory belongs to another configuration."""


class RunLockedError(RuntimeError):
    """Another live process is training into the run directory."""


class CheckpointError(ValueError):
    """A checkpoint file cannot be loaded; the message names the file and the reason."""


@dataclass(frozen=True)
class Runtime:
    """Where and how a run executes (chosen by the caller, e.g. the CLI).

    Attributes:
        accelerator: Lightning accelerator: ``cpu`` or ``gpu`` (``auto`` lets Lightning choose).
        cuda: whether the accelerator is a CUDA GPU; enables bf16 autocast (precision ``auto``),
            channels-last, cudnn benchmark and fused AdamW.
    """

    accelerator: str = "cpu"
    cuda: bool = False


# -- config and environment ---------------------------------------------------------------------------------
def write_json(path: Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def check_run_config(run_dir: Path, cfg: ExperimentConfig) -> bool:
    """Compare ``cfg`` with ``<run>/config.yaml``.

    Returns:
        ``True`` when the directory already holds this run's config, ``False`` when it holds none.

    Raises:
        RunConfigMismatchError: the saved config differs (the message lists the differing keys), or the
            directory holds checkpoints without the config that trained them.
    """
    path = run_dir / "config.yaml"
    if not path.is_file():
        if any((run_dir / "checkpoints").glob("*.ckpt")):
            raise RunConfigMismatchError(
                f"{run_dir} holds checkpoints but no config.yaml, so what trained them is unknown; restore "
                f"{path}, or use another --out directory"
            )
        return False
    diff = ExperimentConfig.from_yaml(path).differences(cfg, ignore=RUNTIME_KEYS)
    if diff:
        shown = "; ".join(diff[:6])
        raise RunConfigMismatchError(
            f"{run_dir} holds a run of another configuration ({shown}); use another --out directory or "
            f"delete {run_dir}"
        )
    return True


def read_config(run_dir: str | Path) -> ExperimentConfig:
    """The configuration saved in a run directory."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not an fdseg run directory (no config.yaml)")
    return ExperimentConfig.from_yaml(path)


def environment_info(runtime: Runtime) -> dict[str, Any]:
    """Versions, git sha and device, for ``env.json``."""
    import lightning
    import monai
    import numpy

    return {
        "fdseg": fdseg.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "monai": monai.__version__,
        "numpy": numpy.__version__,
        "git_sha": _git_sha(),
        "accelerator": runtime.accelerator,
        "device": torch.cuda.get_device_name(0) if runtime.cuda else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _git_sha() -> str | None:
    root = Path(__file__).resolve().parents[3]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else None


def record_environment(run_dir: Path, runtime: Runtime) -> None:
    """Write ``env.json`` on the first start; on a rerun keep it and append this start under ``reruns``.

    The top-level entries stay those of the first start, which wrote the first checkpoints.

    Raises:
        ValueError: an existing ``env.json`` that is not a JSON object (naming the file).
    """
    path = run_dir / "env.json"
    info = environment_info(runtime)
    if not path.is_file():
        write_json(path, info)
        return
    try:
        env = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(env, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(env).__name__}")
    reruns = env.get("reruns")
    env["reruns"] = [*reruns, info] if isinstance(reruns, list) else [info]
    write_json(path, env)


def prepare_run_dir(cfg: ExperimentConfig, run_dir: Path, runtime: Runtime) -> None:
    """Create the directory, refuse a foreign config, write ``config.yaml`` and ``env.json``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if not check_run_config(run_dir, cfg):
        atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    record_environment(run_dir, runtime)
    (run_dir / "checkpoints").mkdir(exist_ok=True)


# -- one training process per run directory -----------------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    return True


class RunLock:
    """``<run>/train.lock``: held by the one process that trains into a run directory.

    The file holds the owner's pid, host and start time. Acquiring refuses a lock whose owner is alive on
    this host; a lock whose process is gone (a killed run) is taken over with a warning.

    Args:
        run_dir: the run directory (must exist).
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self.held = False

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            RunLockedError: a live process (or one on another host) holds it; the message names it.
        """
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        # the record is complete before the lock exists (a hard link is created atomically, or not at all)
        tmp = self.path.with_name(f".{LOCK_NAME}.{os.getpid()}")
        tmp.write_text(json.dumps(record), encoding="utf-8")
        try:
            for _attempt in range(3):
                try:
                    os.link(tmp, self.path)
                except FileExistsError:
                    self._check_stale()
                    continue
                self.held = True
                return
        finally:
            tmp.unlink(missing_ok=True)
        raise RunLockedError(f"{self.path}: could not take the lock (another process keeps taking it)")

    def _check_stale(self) -> None:
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
            pid, host = int(owner["pid"]), str(owner.get("host", ""))
        except FileNotFoundError:
            return  # released meanwhile
        except (OSError, ValueError, KeyError, TypeError):
            owner, pid, host = {}, -1, socket.gethostname()  # unreadable: damaged, nobody can own it
        if host != socket.gethostname():
            raise RunLockedError(
                f"{self.path}: the run directory is in use by process {pid} on host {host}; "
                f"delete the lock file if that process is gone"
            )
        if pid > 0 and _alive(pid):
            raise RunLockedError(
                f"{self.path}: the run directory is in use by process {pid} (started "
                f"{owner.get('started', '?')}); wait for it to finish or stop it"
            )
        log.warning("%s: taking over the stale lock of process %s (no longer running)", self.path, pid)
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock file if this process holds it."""
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


# -- checkpoints -------------------------------------------------------------------------------------------
def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a run checkpoint safely (``torch.load(weights_only=True)`` on the CPU).

    Returns:
        The checkpoint dict (``state_dict``, ``fdseg``, optimiser states, …).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: one line naming ``path`` and why it cannot be loaded: it holds objects other than
            tensors and plain containers (refused, never unpickled), it is truncated or not a torch file,
            or it is not a dict.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (PermissionError, IsADirectoryError) as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror})") from None
    except Exception as exc:  # a damaged file can fail anywhere inside the unpickler
        lines = str(exc).strip().splitlines()
        if isinstance(exc, pickle.UnpicklingError):  # a pickle the safe unpickler will not run
            said = [ln.strip() for ln in lines if "global" in ln.lower() or "unsupported" in ln.lower()]
            raise CheckpointError(
                f"{path}: refused: it holds objects other than tensors and plain containers, or it is "
                f"damaged{f' ({said[0]})' if said else ''}; fdseg never unpickles such files"
            ) from None
        first = lines[0].split(". ")[0].rstrip(".") if lines else type(exc).__name__
        raise CheckpointError(f"{path}: truncated or not a checkpoint file ({first})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(ckpt).__name__}, not a dict)")
    return ckpt


def checkpoint_meta(path: Path) -> dict[str, Any] | None:
    """The ``fdseg`` stamp (phase, epoch, best Dice) of a checkpoint, or ``None`` when it is absent.

    Raises:
        CheckpointError: the file cannot be loaded or carries no ``fdseg`` stamp.
    """
    if not path.is_file():
        return None
    meta = read_checkpoint(path).get("fdseg")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: not an fdseg run checkpoint (no 'fdseg' entry)")
    return meta


def resume_meta(path: Path) -> dict[str, Any] | None:
    """:func:`checkpoint_meta` of the ``last.ckpt`` a run resumes from, checked to hold what Lightning
    restores besides the weights (optimiser states, loop progress); ``None`` when the file is absent.

    Raises:
        CheckpointError: as :func:`checkpoint_meta`, or a file without those (a best-weights checkpoint).
    """
    if not path.is_file():
        return None
    ckpt = read_checkpoint(path)
    missing = [key for key in ("fdseg", "state_dict", "optimizer_states", "loops") if key not in ckpt]
    if missing:
        raise CheckpointError(
            f"{path}: not a checkpoint to resume from (no {', '.join(missing)}; a best-weights file?)"
        )
    return dict(ckpt["fdseg"])


def model_state(ckpt: Mapping[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """The network weights (``model.*`` keys of the task, prefix removed) of a loaded checkpoint."""
    state_dict = ckpt.get("state_dict")
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{path}: holds no 'state_dict'")
    state = {k[len("model.") :]: v for k, v in state_dict.items() if k.startswith("model.")}
    if not state:
        raise CheckpointError(f"{path}: holds no 'model.*' weights")
    return state


def load_model_weights(model: nn.Module, path: Path) -> None:
    """Load the network weights of a run checkpoint (keys ``model.*`` of the task) into ``model``.

    The weights are checked against ``model`` first, so a mismatch leaves ``model`` untouched.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: see :func:`read_checkpoint`; no ``model.*`` weights; weights of another
            architecture: missing or unexpected keys, or a size mismatch (the first of each named).
    """
    state = model_state(read_checkpoint(path), path)
    own = model.state_dict()
    problems = {
        "missing": [k for k in own if k not in state],
        "unexpected": [k for k in state if k not in own],
        "of another shape": [
            f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
            for k, v in own.items()
            if k in state and state[k].shape != v.shape
        ],
    }
    parts = [f"{len(keys)} {what} (e.g. {keys[0]})" for what, keys in problems.items() if keys]
    if parts:
        raise CheckpointError(
            f"{path}: weights of another architecture than {type(model).__name__}: "
            f"{'; '.join(parts)} parameter(s)"
        )
    model.load_state_dict(state)
