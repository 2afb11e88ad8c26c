"""What the nnU-Net integration checks before importing nnU-Net: the extra, its folders, trainer options.

Importing this module never imports nnU-Net.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fdseg._checks import did_you_mean

INSTALL_HINT = 'pip install "fdseg[nnunet]"'
#: --trainer value -> nnU-Net trainer class name.
TRAINERS: dict[str, str] = {"FD": "nnUNetTrainerFD", "FDExch": "nnUNetTrainerFDExch", "base": "nnUNetTrainer"}
#: Folder to put in ``nnUNet_extTrainer`` so that nnU-Net's ``-tr`` finds fdseg's trainers.
EXT_TRAINER_DIR = Path(__file__).with_name("nnunet_trainers")
_ROOT_VARS = {"raw": "nnUNet_raw", "preprocessed": "nnUNet_preprocessed", "results": "nnUNet_results"}


def require_nnunet() -> None:
    """Import nnU-Net v2, or raise one line that names the fix.

    Raises:
        RuntimeError: ``nnunetv2`` cannot be imported (the message names the extra to install).
    """
    try:
        import nnunetv2  # noqa: F401
    except ImportError as err:
        raise RuntimeError(
            f"nnU-Net v2 is not installed ({err}); install the extra: {INSTALL_HINT}"
        ) from None


def set_roots(
    *,
    raw: str | Path | None = None,
    preprocessed: str | Path | None = None,
    results: str | Path | None = None,
) -> dict[str, str]:
    """Point nnU-Net at its folders: set ``nnUNet_raw``, ``nnUNet_preprocessed`` and ``nnUNet_results``.

    nnU-Net 2.8 reads these variables whenever it needs a folder, so they may be set before or after it is
    imported. Folders that are given are created when missing.

    Args:
        raw, preprocessed, results: folders; ``None`` keeps the current environment variable.

    Returns:
        Environment variable -> value of the folders now set (unset ones are left out).
    """
    given = {"raw": raw, "preprocessed": preprocessed, "results": results}
    for key, value in given.items():
        if value is None:
            continue
        path = Path(value).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        os.environ[_ROOT_VARS[key]] = str(path)
    return {var: os.environ[var] for var in _ROOT_VARS.values() if var in os.environ}


@dataclass(frozen=True)
class FdSettings:
    """L_fd settings of the nnU-Net FD trainers.

    Attributes:
        lambda_max: λ per layer once the warm-up is over (finite, >= 0).
        warmup_epochs: epochs with λ = 0 (``None``: half of the trainer's epochs), as fdseg's ``schedule``.
        ramp_epochs: epochs of the linear ramp from 0 to ``lambda_max`` after the warm-up (1: switch on).
        preset: L_fd preset (``paper``, ``paper_alg1``, ``code_exact``).
        layers: tap names to use (``None``: every tapped encoder and decoder stage).
    """

    lambda_max: float = 0.001
    warmup_epochs: int | None = None
    ramp_epochs: int = 1
    preset: str = "paper"
    layers: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain values (for the trainer's settings file)."""
        out = asdict(self)
        out["layers"] = list(self.layers) if self.layers is not None else None
        return out

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> FdSettings:
        """Inverse of :meth:`to_json`."""
        layers = payload.get("layers")
        return cls(
            lambda_max=float(payload.get("lambda_max", 0.001)),
            warmup_epochs=payload.get("warmup_epochs"),
            ramp_epochs=int(payload.get("ramp_epochs", 1)),
            preset=str(payload.get("preset", "paper")),
            layers=tuple(layers) if layers is not None else None,
        )


def check_train_options(
    trainer: str, *, lambda_max: float | None = None, warmup_epochs: int | None = None
) -> FdSettings | None:
    """Validate ``fdseg nnunet train``'s trainer options before anything is imported or written.

    Args:
        trainer: ``FD``, ``FDExch`` or ``base``.
        lambda_max: λ_max (FD trainers only).
        warmup_epochs: λ = 0 epochs (FD trainers only).

    Returns:
        The L_fd settings, or ``None`` for the base trainer.

    Raises:
        ValueError: an unknown trainer, λ options given to the base trainer, a negative or non-finite value.
    """
    if trainer not in TRAINERS:
        same_letters = [name for name in TRAINERS if name.lower() == str(trainer).lower()]
        hint = (
            f"; did you mean {same_letters[0]!r}?" if same_letters else did_you_mean(trainer, list(TRAINERS))
        )
        raise ValueError(f"unknown --trainer {trainer!r}{hint} valid: {list(TRAINERS)}")
    if trainer == "base":
        given = [
            n for n, v in (("--lambda-max", lambda_max), ("--warmup-epochs", warmup_epochs)) if v is not None
        ]
        if given:
            raise ValueError(
                f"{', '.join(given)} only apply to the FD trainers (--trainer FD or FDExch); "
                "the base trainer has no L_fd"
            )
        return None
    if lambda_max is not None and (not math.isfinite(lambda_max) or lambda_max < 0):
        raise ValueError(f"--lambda-max must be a finite number >= 0, got {lambda_max}")
    if warmup_epochs is not None and warmup_epochs < 0:
        raise ValueError(f"--warmup-epochs must be >= 0, got {warmup_epochs}")
    return FdSettings(
        lambda_max=0.001 if lambda_max is None else float(lambda_max), warmup_epochs=warmup_epochs
    )
