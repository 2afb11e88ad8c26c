"""Experiment configuration: frozen dataclasses, loaded from and saved to a versioned YAML (``schema: 1``).

A configuration is an :class:`ExperimentConfig` composed of :class:`DataConfig`, :class:`ModelConfig`,
:class:`LossConfig`, :class:`OptimConfig` and :class:`TrainConfig`. YAML only serialises it: every key is
checked (an unknown key raises ``KeyError`` with the closest valid key), every value is coerced to the
field's declared type (a value of another type raises ``TypeError`` naming the key), and option values are
checked against their choices (``ValueError``).

Example:
    >>> cfg = ExperimentConfig().with_overrides(["train.batch_size=8", "loss.layers=[enc1, bottleneck]"])
    >>> cfg.train.batch_size, cfg.loss.layers
    (8, ('enc1', 'bottleneck'))
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from fdseg._checks import check_int, check_option, did_you_mean
from fdseg._names import MULTICLASS_HEADS
from fdseg.data.noise import APPLY_TO as NOISE_APPLY_TO
from fdseg.data.pooling import SELECTIONS as NOVEL_SELECTIONS
from fdseg.data.splits import SCHEMES as SPLIT_SCHEMES
from fdseg.losses.baselines import BASELINES
from fdseg.losses.functional import PAIRINGS
from fdseg.losses.segmentation import SEG_LOSSES
from fdseg.losses.weights import LAMBDA_STRATEGIES
from fdseg.training._yaml import load_yaml_file, load_yaml_text
from fdseg.training.loggers import LOGGERS

SCHEMA_VERSION = 1

# Option values defined elsewhere are checked against their source (the loss registries, the data modules,
# fdseg._names), so that a new entry is valid at once; only options that exist nowhere else are listed here.
HEADS = ("binary", *MULTICLASS_HEADS)
SCHEDULERS = ("none", "cosine")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed", "64-true")
DETERMINISTIC = ("warn", "true", "false")
PREPROCESS = ("resize", "tile")
ACCELERATORS = ("auto", "cpu", "gpu")

C = TypeVar("C")


@dataclass(frozen=True)
class NoiseConfig:
    """Fixed per-image Gaussian noise, ``clip(I + σ z, 0, 1)`` (method-spec §F4; :mod:`fdseg.data.noise`).

    Attributes:
        sigma: σ for images in [0, 1] (0: no noise).
        apply_to: ``all``, ``train`` or ``test``; validation images follow the training ones, so with
            ``test`` the checkpoint is selected on clean images.
        seed: the noise seed; z depends only on (seed, image id, source), the same in every arm and epoch.
    """

    sigma: float = 0.0
    apply_to: str = "all"
    seed: int = 0

    def __post_init__(self) -> None:
        check_option("data.noise.apply_to", self.apply_to, NOISE_APPLY_TO)
        if not self.sigma >= 0:
            raise ValueError(f"data.noise.sigma must be >= 0, got {self.sigma}")


@dataclass(frozen=True)
class DataConfig:
    """Which images a run trains and is tested on.

    Attributes:
        base: dataset spec of the base site, ``NAME:PATH[?opt=v&…]`` (see :func:`fdseg.data.open_dataset`).
            Validation and test images always come from the base site.
        novel: dataset spec of the novel site whose images are added to the training set (``None``: none).
        novel_k: number of novel images added (the first ``novel_k`` in id order, nested across k).
        novel_fraction: alternatively, the number of novel images as a fraction of the novel dataset.
        image_size: side of the square inputs the network sees: with ``preprocess: resize`` every image is
            resized to ``image_size``² once, then cached; with ``preprocess: tile`` it is the tile side.
        preprocess: ``resize`` (the paper: whole images resized to ``image_size``) or ``tile`` (images kept at
            native resolution and cut into ``image_size``² tiles at ``tile_stride``; the last row and column
            of tiles end at the image border, so every pixel is covered; an image smaller than a tile is an
            error naming its file). With tiling, ``split.json`` lists *image* ids: splits are drawn over
            images (and their groups), and every tile of an image goes to that image's set, so no image has
            tiles in two sets; ``novel_k`` counts novel images (all their tiles are added). Training and the
            per-epoch validation Dice use tiles. The test evaluation (``fdseg evaluate``) is per *image* at
            native resolution: each test image is segmented with a sliding window of ``image_size``²
            (overlap 0.25, Gaussian blending), and its ``fd/<layer>`` values are the mean of that image's
            per-tile L_fd (``fdseg predict`` uses the same sliding window by default).
        tile_stride: step between tiles in px (``None``: ``image_size``, i.e. no overlap); only with
            ``preprocess: tile``, and at most ``image_size`` so that tiles cover the image.
        split_scheme: ``code`` (test 10 %, then val 20 % of the rest, as the released code) or ``paper``
            (test 20 %, val 10 % of the total); see :mod:`fdseg.data.splits`.
        split_seed: seed of the split draw (the released code uses 35).
        val_fraction: validation ratio (``None``: the scheme's default).
        test_fraction: test ratio (``None``: the scheme's default; ignored when an official test set is used).
        split_grouped: keep patient/slide groups in one set when the dataset has groups.
        split_official: honour the dataset's official split when it has one.
        augment: training augmentation: ``paper`` (identity, flips, 90°/270° rotations, one per sample),
            ``flip_rot90`` or ``none`` (see :mod:`fdseg.data.transforms`).
        cache_dir: where resized arrays are cached (``None``: ``.cache`` beside the run directory).
        folds: cross-validation: the number of test folds K (>= 2; ``None``: one train/val/test split).
            The base images are partitioned into K disjoint folds of whole patient/slide groups that cover
            every image once (:func:`fdseg.data.splits.make_folds`, seeded by ``split_seed``); the run tests
            on fold ``fold``, validates on ``val_fraction`` (default 0.2) of the other folds and trains on the
            rest. An official test split is not used with folds.
        fold: the test fold of this run, in [0, folds).
        novel_selection: which novel images are added: ``first`` (the first k in natural id order) or
            ``random`` (the first k of a permutation seeded by ``split_seed``); both nested across k, both
            drawn from the novel dataset's training part only.
        noise: fixed per-image Gaussian noise (:class:`NoiseConfig`; σ = 0 by default).
    """

    base: str = "synthetic:data/synthetic/base?family=nuclei&site=base&n=60&seed=0&size=64"
    novel: str | None = None
    novel_k: int | None = None
    novel_fraction: float | None = None
    image_size: int = 256
    split_scheme: str = "code"
    split_seed: int = 35
    val_fraction: float | None = None
    test_fraction: float | None = None
    split_grouped: bool = True
    split_official: bool = True
    augment: str = "paper"
    cache_dir: str | None = None
    preprocess: str = "resize"
    tile_stride: int | None = None
    folds: int | None = None
    fold: int = 0
    novel_selection: str = "first"
    noise: NoiseConfig = field(default_factory=NoiseConfig)

    def __post_init__(self) -> None:
        check_option("data.split_scheme", self.split_scheme, SPLIT_SCHEMES)
        check_option("data.preprocess", self.preprocess, PREPROCESS)
        if self.tile_stride is not None:
            if self.preprocess != "tile":
                raise ValueError("data.tile_stride is only used with data.preprocess=tile")
            if not 1 <= self.tile_stride <= self.image_size:
                raise ValueError(
                    f"data.tile_stride must be in [1, data.image_size={self.image_size}] so that tiles "
                    f"cover the image, got {self.tile_stride}"
                )
        check_option("data.novel_selection", self.novel_selection, NOVEL_SELECTIONS)
        if self.noise.sigma > 0 and self.preprocess == "tile":
            raise ValueError("data.noise is not supported with data.preprocess=tile (use resize)")
        if self.folds is None and self.fold != 0:
            raise ValueError(f"data.fold={self.fold} needs data.folds (the number of folds)")
        if self.folds is not None:
            check_int("data.folds", self.folds, minimum=2)
            if not 0 <= self.fold < self.folds:
                raise ValueError(
                    f"data.fold must be in [0, {self.folds - 1}] for data.folds={self.folds}, got {self.fold}"
                )
        if ":" not in self.base:
            raise ValueError(f"data.base must be a dataset spec NAME:PATH, got {self.base!r}")
        if self.novel is not None and ":" not in self.novel:
            raise ValueError(f"data.novel must be a dataset spec NAME:PATH or null, got {self.novel!r}")
        if self.novel_k is not None and self.novel_fraction is not None:
            raise ValueError("give data.novel_k or data.novel_fraction, not both")
        if self.novel_k is not None:
            check_int("data.novel_k", self.novel_k, minimum=0)
        if self.novel_fraction is not None and not 0.0 <= self.novel_fraction <= 1.0:
            raise ValueError(f"data.novel_fraction must be in [0, 1], got {self.novel_fraction}")
        check_int("data.image_size", self.image_size, minimum=8)
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < 1.0:
                raise ValueError(f"data.{name} must be in (0, 1), got {value}")


@dataclass(frozen=True)
class ModelConfig:
    """The network: a registered model name plus its options.

    Attributes:
        name: a name of :func:`fdseg.models.list_models`.
        in_channels: image channels (3 for RGB).
        out_channels: 1 for binary segmentation; K (``binary_per_class``) or K + 1 (``softmax``) for K
            foreground classes.
        kwargs: further options of the model (``base_width``, ``depth``, …).
        head: ``binary`` (default, one sigmoid output), ``binary_per_class`` (one sigmoid output per
            foreground class against a shared background, method-spec §F7) or ``softmax`` (K + 1 logits,
            background first). A multi-class head trains on the dataset's class maps
            (``consep:…?classes=7|4``, ``synthetic:…?family=nuclei_mc``) with per-class L_fd.
        class_threshold: ``binary_per_class`` aggregation: a pixel takes the class of highest probability
            where that probability exceeds this threshold, else background (recorded in the summary).
    """

    name: str = "unet"
    in_channels: int = 3
    out_channels: int = 1
    kwargs: dict[str, Any] = field(default_factory=dict)
    head: str = "binary"
    class_threshold: float = 0.5

    def __post_init__(self) -> None:
        check_option("model.head", self.head, HEADS)
        if self.head == "binary" and self.out_channels != 1:
            raise ValueError(
                f"model.out_channels = {self.out_channels} with model.head = binary; use 1, or a multi-class "
                "head (binary_per_class: K channels, softmax: K + 1)"
            )
        if self.head == "softmax" and self.out_channels < 2:
            raise ValueError(
                f"model.head = softmax needs out_channels >= 2 (background + classes), got "
                f"{self.out_channels}"
            )
        if not 0.0 < self.class_threshold < 1.0:
            raise ValueError(f"model.class_threshold must be in (0, 1), got {self.class_threshold}")


@dataclass(frozen=True)
class LossConfig:
    """L_seg + Σ_l λ_l (L_fd^l [+ L_fd,exch^l]).

    Attributes:
        seg: the segmentation loss (``dice_bce`` default; ``dice_iou`` and ``dice_bce_on_probs`` reproduce
            the released code).
        fd: add the feature discrepancy loss L_fd.
        fd_preset: the L_fd reading (``paper`` default, ``code_exact``, …), see :mod:`fdseg.losses`.
        fd_options: per-option overrides of the preset.
        layers: tapped layers (canonical names); empty means every layer the model declares.
        exch: add the exchangeable term L_fd^exch with the same λ.
        pairing: pairing of the exchangeable term (``shift``, ``shuffle``, ``cross_source``).
        lambda_strategy: how λ evolves per epoch (``schedule``, ``dual``, ``fixed``, ``code_exact``).
        lambda_kwargs: options of the strategy; ``lambda_max`` defaults to 0.001 per layer and the warm-up
            length is the phase-1 length (``train.epochs_phase1``) unless given here.
        baseline: an auxiliary baseline loss of the data-addition study (method-spec §F2,
            :mod:`fdseg.losses.baselines`): ``none``, ``contrastive`` (L_con) or ``deep_supervision``
            (L_deeps). It follows L_fd's warm start: off in phase 1, on in phase 2 (off in both phases of
            the compute-matched baseline); its heads are trained parameters saved in the checkpoints and
            dropped at inference.
        baseline_weight: its weight in the total loss (``None``: 0.1 for L_con, 1.0 for L_deeps).
        baseline_options: L_con: ``layer`` (default: the model's highest-resolution decoder tap), ``dim``
            (128), ``temperature`` (0.1), ``max_fg`` / ``max_bg`` (256), ``mask_resize`` (``nearest``);
            L_deeps: ``layers`` (default: every decoder tap), ``depths`` (default from the names).
    """

    seg: str = "dice_bce"
    fd: bool = False
    fd_preset: str = "paper"
    fd_options: dict[str, Any] = field(default_factory=dict)
    layers: tuple[str, ...] = ()
    exch: bool = False
    pairing: str = "shift"
    lambda_strategy: str = "schedule"
    lambda_kwargs: dict[str, Any] = field(default_factory=lambda: {"lambda_max": 0.001})
    baseline: str = "none"
    baseline_weight: float | None = None
    baseline_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_option("loss.baseline", self.baseline, BASELINES)
        if self.baseline_weight is not None and not self.baseline_weight >= 0:
            raise ValueError(f"loss.baseline_weight must be >= 0, got {self.baseline_weight}")
        check_option("loss.seg", self.seg, SEG_LOSSES.names())
        check_option("loss.pairing", self.pairing, PAIRINGS)
        check_option("loss.lambda_strategy", self.lambda_strategy, LAMBDA_STRATEGIES.names())
        if self.exch and not self.fd:
            raise ValueError("loss.exch=true needs loss.fd=true (L_fd^exch is added to L_fd with the same λ)")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW (decoupled weight decay). Defaults are the released code's Keras AdamW.

    Attributes:
        lr: learning rate.
        weight_decay: decoupled weight decay (Keras default 0.004).
        eps: Adam epsilon (Keras 1e-7).
        betas: Adam betas.
        scheduler: ``none`` (paper) or ``cosine`` decay to 0 over each phase.
        fused: use the fused AdamW kernel; ``None`` means "when CUDA is used".
    """

    lr: float = 1e-4
    weight_decay: float = 0.004
    eps: float = 1e-7
    betas: tuple[float, float] = (0.9, 0.999)
    scheduler: str = "none"
    fused: bool | None = None

    def __post_init__(self) -> None:
        check_option("optim.scheduler", self.scheduler, SCHEDULERS)
        for name, low, strict in (("lr", 0.0, True), ("weight_decay", 0.0, False), ("eps", 0.0, False)):
            value = getattr(self, name)
            if not math.isfinite(value) or value < low or (strict and value == low):
                bound = "> 0" if strict else ">= 0"
                raise ValueError(f"optim.{name} must be a finite number {bound}, got {value}")
        if len(self.betas) != 2 or not all(math.isfinite(b) and 0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1), got {list(self.betas)}")


@dataclass(frozen=True)
class TrainConfig:
    """The two-phase schedule and the Lightning Trainer settings.

    Attributes:
        epochs_phase1: warm-up epochs with λ = 0 (paper: 100); best val Dice → ``phase1_best.ckpt``.
        epochs_phase2: epochs with L_fd switched on (paper: 75), started from ``phase1_best.ckpt``.
        max_steps: optional optimiser-step budget for the whole run, split between the phases in proportion
            to their epochs; the epoch counts are then only the split ratio. Adding data then adds no compute.
        batch_size: training batch size (paper: 4).
        eval_batch_size: validation/test batch size.
        compute_matched: the compute-matched baseline: both phases run, with λ ≡ 0.
        precision: Lightning precision; ``auto`` is bf16-mixed on CUDA and 32-true elsewhere.
        num_workers: DataLoader workers.
        seed: seed of initialisation, batch order and augmentation.
        deterministic: ``warn`` (deterministic algorithms where they exist), ``true`` or ``false`` (YAML
            booleans or strings).
        accelerator: where ``fdseg train`` runs: ``auto`` (CUDA when present), ``cpu`` or ``gpu``; the CLI's
            ``--device`` overrides it.
        devices: Lightning devices (``auto``, a count, or a list as a string).
        strategy: Lightning strategy (``auto``, ``ddp``, …).
        progress_bar: show Lightning's progress bar (``null``, the default: only when standard output is a
            terminal, so a log file gets the one line per epoch without the bar's redraws).
        log_every_n_steps: Lightning logging interval (the history is written per epoch regardless).
        checkpoint_every_s: seconds between two ``last.ckpt`` (written at an epoch's end once this much
            time has passed, and at each phase's end); a killed run loses at most this much work.
        logger: ``none``, ``csv``, ``tensorboard``, ``mlflow`` or ``wandb`` (Lightning loggers under
            ``<run>/logs``; the last three need the extra of that name).
        channels_last: channels-last memory format for the model and images: ``true``, ``false`` or
            ``null`` (default: on CUDA only). On CPU it is often faster too (1.3-1.4x for the small U-Nets
            of the synthetic studies on this project's 2-core test machine).
    """

    epochs_phase1: int = 100
    epochs_phase2: int = 75
    max_steps: int | None = None
    batch_size: int = 4
    eval_batch_size: int = 4
    compute_matched: bool = False
    precision: str = "auto"
    num_workers: int = 0
    seed: int = 0
    deterministic: bool | str = "warn"
    accelerator: str = "auto"
    devices: str = "auto"
    strategy: str = "auto"
    progress_bar: bool | None = None
    log_every_n_steps: int = 50
    checkpoint_every_s: float = 120.0
    logger: str = "none"
    channels_last: bool | None = None

    def __post_init__(self) -> None:
        check_option("train.logger", self.logger, LOGGERS)
        if not (math.isfinite(self.checkpoint_every_s) and self.checkpoint_every_s > 0):
            raise ValueError(
                f"train.checkpoint_every_s must be a number of seconds > 0, got {self.checkpoint_every_s}"
            )
        check_option("train.precision", self.precision, PRECISIONS)
        if isinstance(self.deterministic, bool):  # YAML's true/false: kept as the option's name
            object.__setattr__(self, "deterministic", str(self.deterministic).lower())
        check_option("train.deterministic", self.deterministic, DETERMINISTIC)
        check_option("train.accelerator", self.accelerator, ACCELERATORS)
        for name, minimum in (("epochs_phase1", 1), ("epochs_phase2", 0), ("batch_size", 1)):
            check_int(f"train.{name}", getattr(self, name), minimum=minimum)
        check_int("train.eval_batch_size", self.eval_batch_size)
        check_int("train.num_workers", self.num_workers, minimum=0)
        check_int("train.log_every_n_steps", self.log_every_n_steps)
        if self.max_steps is not None:
            check_int("train.max_steps", self.max_steps)


@dataclass(frozen=True)
class ExperimentConfig:
    """One run: data, model, loss, optimiser and training schedule.

    Attributes:
        schema: YAML schema version (only 1 exists).
        name: a label for reports.
    """

    schema: int = SCHEMA_VERSION
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.schema != SCHEMA_VERSION:
            raise ValueError(f"config schema {self.schema} is not supported (this fdseg reads schema 1)")

    # -- phases ---------------------------------------------------------------------------------------------
    @property
    def has_phase2(self) -> bool:
        """Whether the run has a second phase (L_fd or a baseline on, or the compute-matched baseline)."""
        auxiliary = self.loss.fd or self.loss.baseline != "none"
        return self.train.epochs_phase2 > 0 and (auxiliary or self.train.compute_matched)

    # -- (de)serialisation ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples as lists), the YAML form."""
        return {key: _plain(value) for key, value in dataclasses.asdict(self).items()}

    def flat(self) -> dict[str, Any]:
        """:meth:`to_dict` as one level of dotted keys: ``train.batch_size``, also inside dict-valued options
        (``model.kwargs.base_width``); an empty mapping is one value."""
        return _flat(self.to_dict())

    def differences(self, other: ExperimentConfig, *, ignore: Iterable[str] = ()) -> list[str]:
        """``"<key>: <value here> (saved) vs <value in other>"`` for every dotted key (:meth:`flat`) whose
        values differ, sorted by key (``(not set)`` for a key only one of them has, e.g. inside
        ``loss.lambda_kwargs``); keys in ``ignore`` are left out."""
        old, new, skip = self.flat(), other.flat(), set(ignore)
        keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in skip)

        def show(flat: dict[str, Any], key: str) -> str:
            return repr(flat[key]) if key in flat else "(not set)"

        return [f"{k}: {show(old, k)} (saved) vs {show(new, k)}" for k in keys]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> ExperimentConfig:
        """Build from a nested mapping; unknown keys raise ``KeyError``, wrong types ``TypeError``."""
        if not isinstance(data, Mapping):
            raise TypeError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
        return _build(cls, data, prefix="", source=source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> ExperimentConfig:
        """Read a YAML config file strictly (YAML 1.2 numbers such as ``1e-3``, also inside ``*_kwargs``).

        Raises:
            FileNotFoundError: the file is missing.
            ValueError: ``"<file>:<line>: …"`` for an empty file, invalid YAML, a duplicate key or aliases
                that expand too far; option values outside their choices.
            KeyError / TypeError: an unknown key or a value of the wrong type (naming the key).
        """
        path = Path(path)
        return cls.from_dict(load_yaml_file(path), source=str(path))

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The YAML text; also written to ``path`` when given."""
        text = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def with_overrides(
        self, overrides: Iterable[str], *, source: str = "--set overrides"
    ) -> ExperimentConfig:
        """A copy with ``"a.b=value"`` overrides applied (values parsed as YAML, then type-checked).

        Keys inside dict-valued fields can be set too: ``model.kwargs.base_width=16``. ``source`` is what
        errors name as the origin of the values.

        Raises:
            ValueError: an override without ``=``.
            KeyError: an unknown key (with the closest valid key).
            TypeError: a value of the wrong type (naming the key).
        """
        data = self.to_dict()
        for item in overrides:
            key, eq, raw = item.partition("=")
            key = key.strip()
            if not eq or not key:
                raise ValueError(f"override {item!r} must look like section.key=value")
            try:
                value = load_yaml_text(raw, source=f"--set {key}") if raw.strip() else None
            except ValueError:
                value = raw
            _set_path(data, key.split("."), value, full_key=key)
        return ExperimentConfig.from_dict(data, source=source)


# -- helpers ------------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _set_path(data: dict[str, Any], parts: list[str], value: Any, *, full_key: str) -> None:
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or part not in node:
            valid = list(node) if isinstance(node, dict) else []
            where = ".".join(parts[:depth]) or "top level"
            raise KeyError(
                f"unknown config key {full_key!r} ({part!r} at {where}){did_you_mean(part, valid)}"
            )
        if node[part] is None:
            node[part] = {}
        node = node[part]
    if not isinstance(node, dict):
        raise KeyError(f"config key {full_key!r}: {'.'.join(parts[:-1])} is not a section")
    node[parts[-1]] = value


def _build(cls: type[C], data: Mapping[str, Any], *, prefix: str, source: str) -> C:
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            raise KeyError(
                f"{source}: unknown config key {prefix + str(key)!r}{did_you_mean(str(key), fields)} "
                f"valid keys{' of ' + prefix.rstrip('.') if prefix else ''}: {sorted(fields)}"
            )
    kwargs = {
        name: _coerce(value, hints[name], key=prefix + name, source=source) for name, value in data.items()
    }
    try:
        return cls(**kwargs)
    except (ValueError, KeyError) as exc:
        raise type(exc)(f"{source}: {exc.args[0] if exc.args else exc}") from None


#: The values a scalar field accepts (a bool is never a number here); ``tp(value)`` converts them.
_SCALARS: dict[Any, tuple[type, ...]] = {
    bool: (bool,),
    int: (int,),
    float: (int, float),
    str: (str, int, float),
}


def _coerce(value: Any, tp: Any, *, key: str, source: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    fail = TypeError(f"{source}: config key {key!r} expects {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if value is None:
            return tp()
        if not isinstance(value, Mapping):
            raise fail
        return _build(tp, value, prefix=key + ".", source=source)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            with contextlib.suppress(TypeError):
                return _coerce(value, arg, key=key, source=source)
        raise fail
    if tp is Any:
        return value
    if tp in _SCALARS:
        if isinstance(value, _SCALARS[tp]) and (tp is bool or not isinstance(value, bool)):
            return tp(value)
        if tp is float and isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            with contextlib.suppress(ValueError):
                return float(value)
        raise fail
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise fail
        items = [args[0]] * len(value) if args[-1] is Ellipsis else list(args)
        if len(value) != len(items):
            raise fail
        return tuple(_coerce(v, a, key=key, source=source) for v, a in zip(value, items))
    if origin is dict:
        if value is not None and not isinstance(value, Mapping):
            raise fail
        return {str(k): v for k, v in (value or {}).items()}
    raise TypeError(f"{source}: config key {key!r} has an unsupported type {tp!r}")  # pragma: no cover


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    names = {tuple: "a list", dict: "a mapping", type(None): "null"}
    return names.get(typing.get_origin(tp) or tp, getattr(tp, "__name__", str(tp)))
