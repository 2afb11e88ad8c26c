"""Build the pieces of a run from its configuration: model, feature taps, losses, λ strategy, task.

Each builder does one job, so a variant replaces exactly one of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from fdseg._checks import check_keys
from fdseg.losses.baselines import DeepSupervisionLoss, PixelContrastiveLoss, decoder_channels
from fdseg.losses.discrepancy import ExchangeableFeatureDiscrepancyLoss, FeatureDiscrepancyLoss
from fdseg.losses.multiclass import (
    PerClassExchangeableFeatureDiscrepancyLoss,
    PerClassFeatureDiscrepancyLoss,
    build_head_seg_loss,
)
from fdseg.losses.segmentation import build_seg_loss
from fdseg.losses.weights import build_lambda_strategy
from fdseg.models import FeatureTap, create_model
from fdseg.training.config import ExperimentConfig
from fdseg.training.heads import build_head, is_multiclass, run_classes
from fdseg.training.phases import Phase
from fdseg.training.task import SegmentationTask


def build_model(cfg: ExperimentConfig) -> nn.Module:
    """The network of ``cfg.model`` (random initialisation; seed the global RNG first).

    Raises:
        ValueError: ``model.kwargs`` holds an argument the model does not take (the message names it).
    """
    try:
        return create_model(
            cfg.model.name,
            in_channels=cfg.model.in_channels,
            out_channels=cfg.model.out_channels,
            **cfg.model.kwargs,
        )
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        raise ValueError(f"model.kwargs of model {cfg.model.name!r}: {exc}") from None


def tap_layers(cfg: ExperimentConfig, model: nn.Module) -> list[str]:
    """The tapped layers: ``loss.layers``, or every layer the model declares when that is empty."""
    if cfg.loss.layers:
        return list(cfg.loss.layers)
    declared: Mapping[str, str] | None = getattr(model, "feature_layers", None)
    if not declared:
        raise ValueError(
            f"model {cfg.model.name!r} declares no feature_layers; list the module paths in loss.layers"
        )
    return list(declared)


def build_fd_loss(cfg: ExperimentConfig, layers: list[str], *, exch: bool = False) -> FeatureDiscrepancyLoss:
    """L_fd over ``layers`` with the configured preset and options (per class for a multi-class head).

    With ``exch``: L_fd + L_fd^exch with the configured pairing (one module computes both).
    """
    exch_options: dict[str, Any] = {"pairing": cfg.loss.pairing, "seed": cfg.train.seed} if exch else {}
    if is_multiclass(cfg):
        per_class = PerClassExchangeableFeatureDiscrepancyLoss if exch else PerClassFeatureDiscrepancyLoss
        return per_class(
            layers, run_classes(cfg), preset=cfg.loss.fd_preset, **exch_options, **cfg.loss.fd_options
        )
    binary = ExchangeableFeatureDiscrepancyLoss if exch else FeatureDiscrepancyLoss
    return binary(layers, preset=cfg.loss.fd_preset, **exch_options, **cfg.loss.fd_options)


#: Default weight of each baseline loss in the total (method-spec §F2: 0.1 for L_con).
BASELINE_WEIGHTS = {"contrastive": 0.1, "deep_supervision": 1.0}
_CON_OPTIONS = ("layer", "dim", "temperature", "max_fg", "max_bg", "mask_resize")
_DEEPS_OPTIONS = ("layers", "depths")


def build_baseline_loss(cfg: ExperimentConfig, model: nn.Module) -> nn.Module | None:
    """The auxiliary baseline loss of ``loss.baseline`` (``None`` for ``none``), with fresh heads.

    Its heads are sized from the model's ``feature_info`` (its decoder taps, ``dec*``).

    Raises:
        ValueError: the model declares no decoder taps, an unknown option or tap name.
    """
    name = cfg.loss.baseline
    if name == "none":
        return None
    options = dict(cfg.loss.baseline_options)
    allowed = _CON_OPTIONS if name == "contrastive" else _DEEPS_OPTIONS
    check_keys(f"loss.baseline_options of {name}:", options, allowed)
    info = getattr(model, "feature_info", ())
    try:
        channels = decoder_channels(info)
    except ValueError as err:
        raise ValueError(
            f"loss.baseline={name} needs decoder taps: model {cfg.model.name!r}: {err}"
        ) from None
    if name == "contrastive":
        layer = str(options.pop("layer", next(reversed(channels))))
        every = {f.name: int(f.channels) for f in info}
        if layer not in every:
            raise ValueError(
                f"loss.baseline_options.layer {layer!r} is not a tap of {cfg.model.name!r}: {list(every)}"
            )
        return PixelContrastiveLoss(layer, every[layer], seed=cfg.train.seed, **options)
    layers = options.get("layers")
    if layers is not None:
        bad = [n for n in layers if n not in channels]
        if bad:
            raise ValueError(
                f"loss.baseline_options.layers {bad} are not decoder taps of {cfg.model.name!r}: "
                f"{list(channels)}"
            )
        channels = {n: channels[n] for n in layers}
    return DeepSupervisionLoss(channels, out_channels=cfg.model.out_channels, depths=options.get("depths"))


def baseline_weight(cfg: ExperimentConfig) -> float:
    """``loss.baseline_weight``, or the baseline's default."""
    if cfg.loss.baseline_weight is not None:
        return float(cfg.loss.baseline_weight)
    return BASELINE_WEIGHTS.get(cfg.loss.baseline, 0.0)


def lambda_kwargs(cfg: ExperimentConfig, warmup_epochs: int) -> dict[str, Any]:
    """The λ strategy's options, with ``warmup_epochs`` = the planned phase-1 length unless given."""
    kwargs = dict(cfg.loss.lambda_kwargs)
    if cfg.loss.lambda_strategy in ("schedule", "dual"):
        kwargs.setdefault("warmup_epochs", warmup_epochs)
    return kwargs


def build_task(
    cfg: ExperimentConfig, model: nn.Module, phase: Phase, *, warmup: int, cuda: bool = False
) -> SegmentationTask:
    """The LightningModule of one phase.

    Phase 1, and every phase of the compute-matched baseline, runs with λ ≡ 0 (the L_fd terms are then only
    logged). With L_fd on, the λ strategy is built in both phases so that it observes the warm-up statistics
    (the ``dual`` strategy sets its targets from the last warm-up epoch); its warm-up length is the planned
    phase-1 length unless ``loss.lambda_kwargs`` gives one.
    """
    seg = build_seg_loss(cfg.loss.seg)
    head = build_head(cfg)
    if head is not None:  # the head's L_seg: binary on the one-hot classes, or softmax DiceCE
        seg = build_head_seg_loss(head.head, head.num_classes, seg)
    layers = tap_layers(cfg, model) if cfg.loss.fd else []
    losses = [build_fd_loss(cfg, layers, exch=cfg.loss.exch)] if cfg.loss.fd else []
    strategy: Any = None
    if cfg.loss.fd and not cfg.train.compute_matched:
        strategy = build_lambda_strategy(cfg.loss.lambda_strategy, layers, **lambda_kwargs(cfg, warmup))
    baseline = build_baseline_loss(cfg, model)
    taps = [*layers, *(n for n in getattr(baseline, "layers", ()) if n not in layers)]
    tap = FeatureTap(model, taps) if taps else None
    feats: Mapping[str, Any] = tap.__enter__() if tap is not None else {}
    for loss in losses:  # the data layer already guarantees valid masks: no range check (a sync) per step
        loss.check_mask = False
    return SegmentationTask(
        model,
        tap=feats,
        tap_handle=tap,
        seg_loss=seg,
        fd_losses=losses,
        lambda_strategy=strategy,
        force_zero=phase.lambda_zero,
        optim=cfg.optim,
        epoch_offset=phase.epoch_offset,
        phase=phase.index,
        channels_last=cuda if cfg.train.channels_last is None else cfg.train.channels_last,
        fused_adamw=cuda,
        head=head,
        aux_losses=[baseline] if baseline is not None else [],
        aux_weight=baseline_weight(cfg),
        aux_active=phase.index == 2 and not cfg.train.compute_matched,
        total_steps=phase.steps,
    )
