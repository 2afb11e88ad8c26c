"""nnU-Net v2 trainers with the feature discrepancy loss L_fd, and drivers that need no trainer lookup.

Needs the optional extra (``pip install "fdseg[nnunet]"``, nnunetv2 2.8); fdseg's core never imports this
module.

Trainers (subclasses of nnU-Net's ``nnUNetTrainer``):

* :class:`nnUNetTrainerFD` adds ``sum_l λ_l · L_fd^l`` (:class:`fdseg.losses.FeatureDiscrepancyLoss`, paper
  preset by default) to nnU-Net's deep-supervision loss, which is left exactly as nnU-Net builds it.
* :class:`nnUNetTrainerFDExch` adds ``sum_l λ_l · (L_fd^l + L_fd,exch^l)``
  (:class:`fdseg.losses.ExchangeableFeatureDiscrepancyLoss`, shift pairing within the batch).

The features are the outputs of every encoder stage and every decoder stage of nnU-Net's ``PlainConvUNet`` /
``ResidualEncoderUNet`` (``encoder.stages[i]``, ``decoder.stages[j]``), named with fdseg's canonical names
(:func:`nnunet_taps`: ``enc1`` at full resolution, ``bottleneck`` the deepest stage, ``dec1`` the last decoder
stage; stages deeper than fdseg's four levels continue as ``enc5``, ``dec5``, …). L_fd is computed in
``train_step`` against the full-resolution target (``target[0]``; the mask is resized to every stage by the
loss), with labels 1..K as K one-hot channels (regions as given). λ follows fdseg's two-phase ``schedule``
strategy by epoch: 0 for ``warmup_epochs`` (default half of the epochs), then ``lambda_max`` per layer (after
``ramp_epochs`` of linear ramp). Per-layer L_fd means are logged each epoch (training log and nnU-Net's logger
under ``fd/<layer>``).

Eager or compiled: the forward hooks are registered in ``initialize()``, before the first forward pass (so
before ``torch.compile`` traces the network) and never added or removed later. DDP: hooks sit on the
unwrapped module of each rank; every rank computes L_fd on its own batch (DDP averages the gradients) and the
logged means are gathered over ranks.

Settings reach a trainer through :attr:`nnUNetTrainerFD.fd_settings` (``fdseg nnunet train`` sets it) or, for
nnU-Net's own ``nnUNetv2_train -tr nnUNetTrainerFD`` (with ``nnUNet_extTrainer`` pointing at
:data:`EXT_TRAINER_DIR`), the environment variables ``FDSEG_LAMBDA_MAX`` and ``FDSEG_WARMUP_EPOCHS``.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import Tensor, nn

from fdseg.integrations.nnunet_env import EXT_TRAINER_DIR, TRAINERS, FdSettings
from fdseg.losses import ExchangeableFeatureDiscrepancyLoss, FeatureDiscrepancyLoss, ScheduleLambda
from fdseg.models.features import canonical_name, unwrap_model

SETTINGS_FILE = "fdseg_fd.json"
#: nnU-Net's variable for its data-augmentation worker count (0: in the main process).
DA_PROCESSES = "nnUNet_n_proc_DA"


def _stage_reductions(strides: list[Any]) -> list[int]:
    """Input size // stage output size along the first spatial axis, for every encoder stage."""
    out: list[int] = []
    total = 1
    for stride in strides:
        step = stride[0] if isinstance(stride, list | tuple) else stride
        total *= int(step)
        out.append(total)
    return out


def _level_name(part: str, reduction: int, bottleneck: int) -> str:
    name = canonical_name(part, reduction, bottleneck)
    if name is not None:
        return name
    return f"{part}{max(1, reduction).bit_length()}"


def nnunet_taps(network: nn.Module) -> dict[str, str]:
    """fdseg tap name -> module path for nnU-Net's ``PlainConvUNet`` / ``ResidualEncoderUNet``.

    Encoder stage ``i`` (output at reduction ``r_i``, the product of the strides up to it) is ``enc<k>`` with
    ``r_i = 2**(k-1)``; the last encoder stage is ``bottleneck``; decoder stage ``j`` (which outputs at the
    resolution of encoder stage ``n - 2 - j``) is ``dec<k>``. Names are fdseg's canonical ones
    (:data:`fdseg._names.CANONICAL_LAYERS`) up to level 4 and continue as ``enc5``, ``dec5``, … in deeper
    networks.

    Args:
        network: the network, possibly wrapped by DDP and/or ``torch.compile``.

    Returns:
        Ordered ``{"enc1": "encoder.stages.0", …, "bottleneck": "encoder.stages.<n-1>", …,
        "dec1": "decoder.stages.<n-2>"}``.

    Raises:
        TypeError: the network has no ``encoder.stages``, ``encoder.strides`` and ``decoder.stages``.
    """
    net = unwrap_model(network)
    encoder = getattr(net, "encoder", None)
    decoder = getattr(net, "decoder", None)
    if encoder is None or decoder is None or not hasattr(encoder, "stages") or not hasattr(decoder, "stages"):
        raise TypeError(
            f"{type(net).__name__} is not an nnU-Net U-Net with encoder.stages and decoder.stages "
            "(PlainConvUNet, ResidualEncoderUNet); fdseg's nnU-Net trainers cannot tap it"
        )
    reductions = _stage_reductions(list(encoder.strides))
    n = len(encoder.stages)
    bottleneck = reductions[-1]
    taps: dict[str, str] = {}
    for i in range(n - 1):
        taps[_level_name("enc", reductions[i], bottleneck)] = f"encoder.stages.{i}"
    taps["bottleneck"] = f"encoder.stages.{n - 1}"
    for j in range(len(decoder.stages)):
        taps[_level_name("dec", reductions[n - 2 - j], bottleneck)] = f"decoder.stages.{j}"
    return taps


def label_channels(target: Tensor, labels: list[int], *, regions: bool) -> Tensor:
    """The L_fd mask from nnU-Net's full-resolution target.

    Args:
        target: (B, 1, H, W) label map (any dtype), or (B, R, H, W) region masks when ``regions``.
        labels: the foreground label values 1..K (ignored when ``regions``).
        regions: region-based training (the target already holds one binary channel per region).

    Returns:
        (B, K, H, W) float32 in {0, 1}: channel k is ``target == labels[k]`` (or region k).
    """
    if regions:
        return (target > 0).float()
    return torch.cat([(target[:, :1] == value) for value in labels], dim=1).float()


class SegPlusFdLoss(nn.Module):
    """nnU-Net's loss plus the trainer's weighted L_fd while a training step runs.

    ``forward(output, target)`` returns ``seg_loss(output, target)`` outside a training step (validation) and
    ``seg_loss(output, target) + fd(features, mask(target[0])).total`` inside one; the L_fd terms of the last
    step are kept in :attr:`last_terms`.
    """

    def __init__(self, seg_loss: nn.Module, trainer: nnUNetTrainerFD) -> None:
        super().__init__()
        self.seg_loss = seg_loss
        self._trainer = [trainer]  # a list, so that the trainer is not registered as a submodule
        self.last_terms: dict[str, float] = {}

    def forward(self, output: Any, target: Any) -> Tensor:
        seg: Tensor = self.seg_loss(output, target)
        trainer = self._trainer[0]
        if not trainer.fd_active:
            return seg
        full = target[0] if isinstance(target, list | tuple) else target
        mask = trainer.fd_mask(full)
        result = trainer.fd_loss(trainer.fd_features, mask)
        self.last_terms = {key: float(value) for key, value in result.terms.items()}
        self.last_terms["seg_loss"] = float(seg.detach())
        total: Tensor = seg + result.total
        return total


class nnUNetTrainerFD(nnUNetTrainer):  # type: ignore[misc]
    """nnU-Net's trainer plus λ-weighted L_fd on the encoder and decoder stages (see the module docstring).

    Attributes set before ``initialize()`` (``fdseg nnunet train`` does this):
        fd_settings: :class:`~fdseg.integrations.nnunet_env.FdSettings`.

    After ``initialize()``:
        fd_taps: tap name -> module path (:func:`nnunet_taps`).
        fd_loss: the L_fd module; ``fd_schedule``: the λ schedule; ``loss``: :class:`SegPlusFdLoss`.
    """

    fd_loss_class: type[FeatureDiscrepancyLoss] = FeatureDiscrepancyLoss
    loss: nn.Module

    def __init__(
        self,
        plans: dict[str, Any],
        configuration: str,
        fold: int,
        dataset_json: dict[str, Any],
        device: torch.device = torch.device("cuda"),  # noqa: B008  (nnU-Net's signature)
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.fd_settings = _settings_from_env()
        self.fd_taps: dict[str, str] = {}
        self.fd_features: dict[str, Tensor] = {}
        self.fd_active = False
        self.fd_loss: FeatureDiscrepancyLoss
        self.fd_schedule: ScheduleLambda
        self._fd_handles: list[Any] = []

    # -- set-up ------------------------------------------------------------------------------------------
    def initialize(self) -> None:
        super().initialize()
        self.fd_taps = nnunet_taps(self.network)
        layers = list(self.fd_settings.layers or self.fd_taps)
        unknown = [name for name in layers if name not in self.fd_taps]
        if unknown:
            raise ValueError(f"L_fd layers {unknown} are not tapped; this network has {list(self.fd_taps)}")
        inner = unwrap_model(self.network)
        for name, path in self.fd_taps.items():
            if name in layers:
                hook = inner.get_submodule(path).register_forward_hook(self._store(name))
                self._fd_handles.append(hook)
        self.fd_loss = self.fd_loss_class(layers, preset=self.fd_settings.preset).to(self.device)
        warmup = self.fd_settings.warmup_epochs
        if warmup is None:
            warmup = self.num_epochs // 2
        self.fd_schedule = ScheduleLambda(
            layers,
            lambda_max=self.fd_settings.lambda_max,
            warmup_epochs=warmup,
            ramp_epochs=self.fd_settings.ramp_epochs,
        )
        self.fd_combined = SegPlusFdLoss(self.loss, self)
        self.loss = self.fd_combined

    def _store(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.fd_features[name] = output

        return hook

    def fd_mask(self, target: Tensor) -> Tensor:
        """(B, K, H, W) float mask of the foreground labels (or regions) of a full-resolution target."""
        manager = self.label_manager
        if manager.has_regions:
            return label_channels(target, [], regions=True)
        labels = [v for v in manager.all_labels if v != 0 and v != manager.ignore_label]
        return label_channels(target, labels, regions=False)

    # -- training ----------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        super().on_train_start()
        if self.local_rank == 0:
            payload = {
                "trainer": type(self).__name__,
                "settings": self.fd_settings.to_json(),
                "warmup_epochs": self.fd_schedule.warmup_epochs,
                "taps": self.fd_taps,
                "layers": list(self.fd_loss.layers),
            }
            Path(self.output_folder, SETTINGS_FILE).write_text(json.dumps(payload, indent=1) + "\n")

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        lambdas = self.fd_schedule.lambdas(self.current_epoch)
        self.fd_loss.set_layer_weights(lambdas)
        values = sorted(set(lambdas.values()))
        self.print_to_log_file(f"L_fd λ per layer: {values[0] if len(values) == 1 else lambdas}")

    def train_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        self.fd_active = True
        try:
            out: dict[str, Any] = super().train_step(batch)
        finally:
            self.fd_active = False
            self.fd_features.clear()
        out.update(self.fd_combined.last_terms)
        return out

    def validation_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        try:
            out: dict[str, Any] = super().validation_step(batch)
            return out
        finally:
            self.fd_features.clear()

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        try:
            super().perform_actual_validation(save_probabilities)
        finally:
            self.fd_features.clear()

    def on_train_epoch_end(self, train_outputs: list[dict[str, Any]]) -> None:
        super().on_train_epoch_end(train_outputs)
        keys = [k for k in train_outputs[0] if k.startswith(("fd/", "fd_exch/"))] if train_outputs else []
        means = {k: float(np.mean([float(o[k]) for o in train_outputs])) for k in keys}
        if self.is_ddp:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, means)
            means = {k: float(np.mean([g[k] for g in gathered])) for k in keys}
        local = self.logger.local_logger.my_fantastic_logging
        for key, value in means.items():
            history = local.setdefault(key, [])
            while len(history) < self.current_epoch:
                history.append(math.nan)
            self.logger.log(key, value, self.current_epoch)
        if means:
            self.print_to_log_file("L_fd per layer: " + ", ".join(f"{k} {v:.4f}" for k, v in means.items()))


class nnUNetTrainerFDExch(nnUNetTrainerFD):
    """:class:`nnUNetTrainerFD` with L_fd + L_fd^exch (shift pairing within each rank's batch)."""

    fd_loss_class = ExchangeableFeatureDiscrepancyLoss


TRAINER_CLASSES: dict[str, type[nnUNetTrainer]] = {
    "FD": nnUNetTrainerFD,
    "FDExch": nnUNetTrainerFDExch,
    "base": nnUNetTrainer,
}


def _settings_from_env() -> FdSettings:
    lam = os.environ.get("FDSEG_LAMBDA_MAX")
    warm = os.environ.get("FDSEG_WARMUP_EPOCHS")
    try:
        return FdSettings(
            lambda_max=0.001 if lam is None else float(lam),
            warmup_epochs=None if warm is None else int(warm),
        )
    except ValueError:
        raise ValueError(
            f"FDSEG_LAMBDA_MAX={lam!r} / FDSEG_WARMUP_EPOCHS={warm!r}: expected a float and an integer"
        ) from None


# -- drivers --------------------------------------------------------------------------------------------


def _device(name: str) -> torch.device:
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {name!r}")
    cuda = torch.cuda.is_available() if name == "auto" else name == "cuda"
    if cuda and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but CUDA is not available")
    return torch.device("cuda" if cuda else "cpu")


def _dataset_name(dataset: str | int) -> str:
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    text = str(dataset)
    if not text.startswith("Dataset") and not text.isdigit():
        raise ValueError(f"dataset must be an id (901) or a folder name (Dataset901_TNBC), got {text!r}")
    return str(maybe_convert_to_dataset_name(text if text.startswith("Dataset") else int(text)))


def _fingerprint_extractor(samples: int | None) -> type:
    """nnU-Net's fingerprint extractor, sampling ``samples`` foreground intensities in all (None: default)."""
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import (
        DatasetFingerprintExtractor,
    )

    if samples is None:
        return DatasetFingerprintExtractor  # type: ignore[no-any-return]

    class FingerprintExtractor(DatasetFingerprintExtractor):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.num_foreground_voxels_for_intensitystats = samples

    return FingerprintExtractor


def plan_and_preprocess(
    dataset_id: int,
    *,
    configuration: str = "2d",
    processes: int = 1,
    verify: bool = True,
    intensity_samples: int | None = None,
) -> Path:
    """nnU-Net's fingerprint + planning + preprocessing of one configuration, with CPU-safe settings.

    Runs with ``nnUNet_n_proc_DA=1`` (0 crashes planning) and ``processes`` workers, then copies the raw
    dataset's ``splits_final.json`` (written by ``fdseg nnunet export``) into the preprocessed folder so that
    nnU-Net's fold 0 is fdseg's split.

    Args:
        dataset_id: 1..999, exported to ``$nnUNet_raw``.
        configuration: the configuration to preprocess (``2d`` for 2D images).
        processes: worker processes (>= 1).
        verify: run nnU-Net's dataset integrity check first.
        intensity_samples: foreground intensities the fingerprint samples over the whole dataset (nnU-Net:
            1e8, which dominates the time on small datasets; only CT normalisation uses these statistics).

    Returns:
        The preprocessed dataset folder.

    Raises:
        ValueError: ``processes`` or ``intensity_samples`` < 1, or a configuration the plans do not have.
        RuntimeError: nnU-Net's own errors (missing folders, a failed integrity check).
    """
    if processes < 1:
        raise ValueError(f"--processes must be >= 1, got {processes}")
    if intensity_samples is not None and intensity_samples < 1:
        raise ValueError(f"--intensity-samples must be >= 1, got {intensity_samples}")
    if os.environ.get(DA_PROCESSES, "0") == "0":
        os.environ[DA_PROCESSES] = "1"
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprint_dataset,
        plan_experiments,
        preprocess,
    )
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw

    name = _dataset_name(dataset_id)
    extract_fingerprint_dataset(
        dataset_id,
        _fingerprint_extractor(intensity_samples),
        num_processes=processes,
        check_dataset_integrity=verify,
        verbose=False,
        show_progress_bar=False,
    )
    plan_experiments([dataset_id])
    target = Path(nnUNet_preprocessed.require()) / name
    plans = json.loads((target / "nnUNetPlans.json").read_text())
    if configuration not in plans.get("configurations", {}):
        raise ValueError(
            f"configuration {configuration!r} is not in {target / 'nnUNetPlans.json'}; it has "
            f"{sorted(plans.get('configurations', {}))}"
        )
    preprocess(
        [dataset_id], configurations=[configuration], num_processes=[processes], show_progress_bar=False
    )
    splits = Path(nnUNet_raw.require()) / name / "splits_final.json"
    if splits.is_file():
        shutil.copyfile(splits, target / "splits_final.json")
    return target


def _latest_checkpoint(folder: Path) -> Path | None:
    for name in ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth"):
        if (folder / name).is_file():
            return folder / name
    return None


def train_nnunet(
    dataset: str | int,
    configuration: str,
    fold: str | int,
    *,
    trainer: str = "FD",
    fd_settings: FdSettings | None = None,
    epochs: int | None = None,
    iterations: int | None = None,
    val_iterations: int | None = None,
    resume: bool = False,
    plans: str = "nnUNetPlans",
    device: str = "auto",
    validate: bool = True,
) -> Path:
    """Construct and run an nnU-Net trainer directly (as ``nnUNetv2_train`` does, without its class lookup).

    Args:
        dataset: id or ``Dataset<ID>_<Name>``, planned and preprocessed.
        configuration: e.g. ``2d``.
        fold: 0..4 or ``all`` (fold 0 is fdseg's split when exported by fdseg).
        trainer: ``FD``, ``FDExch`` or ``base``.
        fd_settings: L_fd settings (FD trainers; default :class:`FdSettings`).
        epochs, iterations, val_iterations: override nnU-Net's 1000 epochs × 250 (50 validation) iterations.
        resume: continue from the fold's final, latest or best checkpoint (nnU-Net's ``--c``).
        plans: the plans identifier.
        device: ``auto``, ``cpu`` or ``cuda``.
        validate: predict the validation cases at the end (``fold_X/validation``, with ``summary.json``).

    Returns:
        The fold's output folder.

    Raises:
        ValueError: unknown trainer or configuration, λ settings for the base trainer, a resumed run whose
            L_fd settings differ from those it started with.
        FileNotFoundError: the dataset was not planned (run ``fdseg nnunet plan`` first).
    """
    from nnunetv2.paths import nnUNet_preprocessed

    if trainer not in TRAINER_CLASSES:
        raise ValueError(f"unknown trainer {trainer!r}; valid: {list(TRAINER_CLASSES)}")
    if trainer == "base" and fd_settings is not None:
        raise ValueError("L_fd settings only apply to the FD trainers, not to the base trainer")
    for label, value in (("epochs", epochs), ("iterations", iterations), ("val_iterations", val_iterations)):
        if value is not None and value < 1:
            raise ValueError(f"--{label.replace('_', '-')} must be >= 1, got {value}")
    fold_value: str | int = fold if str(fold) == "all" else int(fold)
    name = _dataset_name(dataset)
    folder = Path(nnUNet_preprocessed.require()) / name
    plans_file = folder / f"{plans}.json"
    if not plans_file.is_file():
        raise FileNotFoundError(
            f"{plans_file} not found: plan the dataset first (fdseg nnunet plan {dataset})"
        )
    plans_dict = json.loads(plans_file.read_text())
    if configuration not in plans_dict.get("configurations", {}):
        raise ValueError(
            f"configuration {configuration!r} is not in {plans_file}; "
            f"it has {sorted(plans_dict['configurations'])}"
        )
    dataset_json = json.loads((folder / "dataset.json").read_text())
    torch_device = _device(device)
    if torch_device.type == "cpu":
        os.environ.setdefault(DA_PROCESSES, "0")
    plans_dict["continue_training"] = resume
    cls = TRAINER_CLASSES[trainer]
    instance = cls(
        plans=plans_dict, configuration=configuration, fold=fold_value, dataset_json=dataset_json,
        device=torch_device,
    )  # fmt: skip
    if epochs is not None:
        instance.num_epochs = epochs
    if iterations is not None:
        instance.num_iterations_per_epoch = iterations
    if val_iterations is not None:
        instance.num_val_iterations_per_epoch = val_iterations
    output = Path(instance.output_folder)
    if isinstance(instance, nnUNetTrainerFD):
        settings = fd_settings or FdSettings()
        saved = output / SETTINGS_FILE
        if resume and saved.is_file():
            before = FdSettings.from_json(json.loads(saved.read_text())["settings"])
            if before != settings:
                raise ValueError(
                    f"{saved}: the run started with L_fd settings {before.to_json()}, not "
                    f"{settings.to_json()}; resume with the same options or train another fold"
                )
        instance.fd_settings = settings
    if resume:
        checkpoint = _latest_checkpoint(output)
        if checkpoint is not None:
            # nnU-Net reads the file with weights_only=False (and takes no dict: a path only), so the file is
            # first read the safe way, which refuses anything but tensors and NumPy scalars
            load_checkpoint(checkpoint)
            instance.load_checkpoint(str(checkpoint))
    instance.run_training()
    if validate:
        instance.perform_actual_validation(False)
    return output


def _checkpoint_globals() -> list[Any]:
    """What an nnU-Net checkpoint holds besides tensors, plain containers and ``torch.device``: NumPy scalars
    (the logged losses and Dice, ``_best_ema``) and their dtypes, under NumPy 2's and NumPy 1's names."""
    core: Any = getattr(np, "_core", None) or np.core  # NumPy 2, NumPy 1
    scalar = core.multiarray.scalar
    names = ("numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar")  # as pickled by NumPy 2 / 1
    dtypes = [type(np.dtype(name)) for name in ("float64", "float32", "float16", "int64", "int32", "bool")]
    return [*((scalar, name) for name in names), np.dtype, *dtypes]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an nnU-Net checkpoint (``checkpoint_final.pth``, …) on the CPU without running arbitrary code.

    ``torch.load(weights_only=True)``, with only NumPy's scalar and dtype types allowed beyond torch's
    defaults; a file that needs anything else (another trainer's objects, a tampered file) is refused.

    Returns:
        The checkpoint dict (``network_weights``, ``trainer_name``, ``init_args``, ``logging``, …).

    Raises:
        ValueError: the file needs other Python objects (named) or is not a checkpoint dict.
    """
    path = Path(path)
    with torch.serialization.safe_globals(_checkpoint_globals()):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            try:
                extra = torch.serialization.get_unsafe_globals_in_checkpoint(path)
            except Exception:
                extra = []
            allowed = {
                f"{g.__module__}.{g.__name__}" for g in _checkpoint_globals() if not isinstance(g, tuple)
            }
            needed = [g for g in extra if g not in allowed and g != "numpy.core.multiarray.scalar"]
            raise ValueError(
                f"{path}: refused to load: the file holds Python objects beyond tensors, NumPy scalars and "
                f"plain containers ({', '.join(needed) or 'unknown'}); fdseg loads nnU-Net checkpoints with "
                "torch.load(weights_only=True)"
            ) from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not an nnU-Net checkpoint (a {type(state).__name__}, not a dict)")
    return state


def predict_folder(
    model: str | Path,
    images: str | Path,
    out: str | Path,
    *,
    checkpoint: str = "checkpoint_final.pth",
    device: str = "auto",
    mirroring: bool = True,
) -> list[Path]:
    """Predict every ``<case>_0000.png`` of ``images`` with a trained fold, one case after the other.

    The network is built with ``nnUNetTrainer.build_network_architecture`` (fdseg's trainers do not change
    it) and handed to nnU-Net's predictor, so no trainer-class lookup runs.

    Args:
        model: the fold folder (``…/<trainer>__<plans>__<configuration>/fold_<k>``).
        images: folder of input images named like ``imagesTs``.
        out: folder for the predicted ``<case>.png`` label maps.
        checkpoint: the checkpoint file in ``model``.
        device: ``auto``, ``cpu`` or ``cuda``.
        mirroring: nnU-Net's test-time mirroring (4 passes per window in 2D; off: 4 times faster).

    Returns:
        The written label files.

    Raises:
        FileNotFoundError: a missing checkpoint, ``plans.json`` or ``dataset.json``.
        ValueError: a checkpoint of another trainer whose architecture fdseg cannot rebuild, or a file that
            holds Python objects beyond tensors and NumPy scalars (see :func:`load_checkpoint`).
    """
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    model, images, out = Path(model), Path(images), Path(out)
    path = model / checkpoint
    for needed in (path, model.parent / "plans.json", model.parent / "dataset.json"):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} not found: is {model} a trained nnU-Net fold folder?")
    if not images.is_dir():
        raise FileNotFoundError(f"{images}: no such image folder")
    state = load_checkpoint(path)
    if state.get("trainer_name") not in TRAINERS.values():
        raise ValueError(
            f"{path} was trained with {state.get('trainer_name')!r}; fdseg predicts only with "
            f"{sorted(TRAINERS.values())} (use nnUNetv2_predict for other trainers)"
        )
    plans_manager = PlansManager(json.loads((model.parent / "plans.json").read_text()))
    dataset_json = json.loads((model.parent / "dataset.json").read_text())
    config = plans_manager.get_configuration(state["init_args"]["configuration"])
    network = nnUNetTrainer.build_network_architecture(
        plans_manager,
        config,
        determine_num_input_channels(plans_manager, config, dataset_json),
        plans_manager.get_label_manager(dataset_json).num_segmentation_heads,
        enable_deep_supervision=False,
    )
    torch_device = _device(device)
    predictor = nnUNetPredictor(
        device=torch_device,
        perform_everything_on_device=torch_device.type == "cuda",
        use_mirroring=mirroring,
        allow_tqdm=False,
    )
    predictor.manual_initialization(
        network,
        plans_manager,
        config,
        [state["network_weights"]],
        dataset_json,
        str(state["trainer_name"]),
        state.get("inference_allowed_mirroring_axes"),
    )
    out.mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files_sequential(str(images), str(out), save_probabilities=False, overwrite=True)
    ending = str(dataset_json.get("file_ending", ".png"))
    return sorted(out.glob(f"*{ending}"))


__all__ = [
    "EXT_TRAINER_DIR",
    "TRAINER_CLASSES",
    "SegPlusFdLoss",
    "label_channels",
    "load_checkpoint",
    "nnUNetTrainerFD",
    "nnUNetTrainerFDExch",
    "nnunet_taps",
    "plan_and_preprocess",
    "predict_folder",
    "train_nnunet",
]
