"""The LightningModule: L_seg + Σ_l λ_l (L_fd^l [+ L_fd,exch^l]) on features tapped from any model.

Feature taps are registered once, when the task is built, and stay registered (they are never toggled). Each
epoch the λ strategy gives one value per layer; the values are written into the L_fd module(s) as their
per-layer weights.

**When a λ is 0** (all of phase 1, the compute-matched baseline, ``code_exact``) that layer's L_fd is still
computed for the history, but without autograd (the loss module does this for zero weights): no graph is built
through the statistics and nothing is back-propagated, so the cost is one read of each tapped feature map
(measured in ``bench/train_throughput.py``). The optimised loss is then exactly L_seg.

**A diverging run** stops with :class:`NonFiniteLossError`, naming the global step, the phase and epoch, the
non-finite term (``seg``, ``fd/<layer>``, ``fd_exch/<layer>``; ``val_loss`` when only the validation logits
are non-finite; the update itself when the weights became non-finite after a step with finite terms) and the
layer where the network first holds a non-finite value (the first non-finite weight, else the first module
whose output is non-finite on the offending batch). The weights are checked once per epoch (before
validation). Checkpoints and history rows already written stay as they are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from fdseg.metrics import segmentation_metrics
from fdseg.training.config import OptimConfig


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or ±inf; the message names the step and the offending terms."""


def build_optimizer(
    parameters: Iterable[nn.Parameter], cfg: OptimConfig, *, fused: bool = False
) -> torch.optim.AdamW:
    """AdamW over the trainable ``parameters`` with the ``optim.*`` settings (``optim.fused`` wins).

    Raises:
        ValueError: a setting torch refuses, naming the ``optim`` key.
    """
    params = [p for p in parameters if p.requires_grad]
    use_fused = fused if cfg.fused is None else cfg.fused
    try:
        return torch.optim.AdamW(
            params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay,
            fused=use_fused or None,
        )  # fmt: skip
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"optim: AdamW refuses these settings ({exc})") from None


class SegmentationTask(pl.LightningModule):
    """Train a segmentation network with optional feature-discrepancy terms.

    Args:
        model: any ``nn.Module`` returning logits ``(B, K, H, W)`` for images ``(B, C, H, W)`` in [0, 1].
        tap: an entered :class:`fdseg.models.FeatureTap` context manager's dict (canonical layer name →
            the feature ``(B, C_l, h_l, w_l)`` of the current forward pass), filled by forward hooks.
        seg_loss: ``(logits, mask) -> () scalar``; ``mask`` is ``(B, 1, H, W)`` float in {0, 1}.
        fd_losses: L_fd modules (``FeatureDiscrepancyLoss``, ``ExchangeableFeatureDiscrepancyLoss``) called
            as ``loss(feats, mask, source=source) -> LossOutput(total, terms)``; their ``total`` is the
            λ-weighted sum over layers (layers at λ = 0 are computed without autograd, for logging only).
        lambda_strategy: a :mod:`fdseg.losses.weights` strategy: ``lambdas(epoch)`` gives each epoch's λ;
            ``update(epoch, per-batch L_fd per layer)`` is called after every epoch (both phases, so that the
            ``dual`` strategy sees the warm-up); its state is saved in checkpoints.
        force_zero: λ ≡ 0 whatever the strategy says (phase 1, the compute-matched baseline).
        tap_handle: the ``FeatureTap`` whose dict ``tap`` is; :meth:`close` removes its hooks.
        optim: optimiser settings.
        epoch_offset: global index of this phase's first epoch (phase 2 starts at ``epochs_phase1``).
        phase: 1 or 2, recorded in every history row and checkpoint.
        channels_last: convert the model and images to channels-last memory format (CUDA default).
        fused_adamw: use the fused AdamW kernel (CUDA default).
        head: a multi-class head (:class:`fdseg.training.heads.MulticlassHead`): masks are class maps and the
            validation Dice is its per-image macro Dice; ``None`` for binary segmentation.
        aux_losses: auxiliary baseline losses (:mod:`fdseg.losses.baselines`) called like the L_fd modules;
            their heads are parameters of this task (trained, saved in checkpoints, never part of ``model``).
        aux_weight: their weight in the total loss.
        aux_active: whether they are on in this phase; when off they are not computed at all.
        total_steps: the phase's optimiser-step budget (sizes the cosine schedule); ``None``: its epochs.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        tap: Mapping[str, Tensor],
        tap_handle: Any = None,
        seg_loss: nn.Module,
        fd_losses: Sequence[nn.Module] = (),
        lambda_strategy: Any = None,
        force_zero: bool = False,
        optim: OptimConfig | None = None,
        epoch_offset: int = 0,
        phase: int = 1,
        channels_last: bool = False,
        fused_adamw: bool = False,
        head: Any = None,
        aux_losses: Sequence[nn.Module] = (),
        aux_weight: float = 0.0,
        aux_active: bool = False,
        total_steps: int | None = None,
    ) -> None:
        super().__init__()
        if fd_losses and lambda_strategy is None and not force_zero:
            raise ValueError("fd_losses need a lambda_strategy (or force_zero=True)")
        self.model = model
        self.seg_loss = seg_loss
        self.fd_losses = nn.ModuleList(fd_losses)
        self.aux_losses = nn.ModuleList(aux_losses)
        self.aux_weight = float(aux_weight)
        self.aux_active = bool(aux_active)
        self.total_steps = total_steps
        self._tap = tap
        self._tap_handle = tap_handle
        self.lambda_strategy = lambda_strategy
        self.force_zero = force_zero
        self._layer_batches: dict[str, list[Tensor]] = {}
        self.optim_cfg = optim or OptimConfig()
        self.epoch_offset = epoch_offset
        self.phase = phase
        self.channels_last = channels_last
        self.fused_adamw = fused_adamw
        self.head = head
        self.lambdas: dict[str, float] = {}
        # the epoch's training terms, summed on the device: the terms every step has, stacked in one tensor
        # (``_sum_keys``); the per-class terms of a multi-class head, present in some batches only, as
        # (sum, count); and the per-class terms seen in any epoch so far (logged NaN in an epoch without)
        self._sum_keys: list[str] = []
        self._sums: Tensor | None = None
        self._class_sums: dict[str, tuple[Tensor, int]] = {}
        self._class_keys: set[str] = set()
        self._steps = 0
        # the device-side record of the first non-finite step: term names, step (-1: none yet), term values
        self._bad: tuple[list[str], Tensor, Tensor] | None = None
        # validation means over images (Dice) and batches (L_seg); torchmetrics reduces them across devices
        self.val_dice = MeanMetric(nan_strategy="disable")
        self.val_loss = MeanMetric(nan_strategy="disable")
        if channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def close(self) -> None:
        """Remove the feature-tap hooks (after training)."""
        if self._tap_handle is not None:
            self._tap_handle.__exit__(None, None, None)
            self._tap_handle = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save the λ strategy's state (the ``dual`` multipliers) with the weights."""
        if self.lambda_strategy is not None:
            checkpoint["fdseg_lambda"] = self.lambda_strategy.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore the λ strategy's state when resuming."""
        if self.lambda_strategy is not None and "fdseg_lambda" in checkpoint:
            self.lambda_strategy.load_state_dict(checkpoint["fdseg_lambda"])

    # -- epochs ----------------------------------------------------------------------------------------------
    @property
    def global_epoch(self) -> int:
        """Epoch index over both phases (0-based)."""
        return self.epoch_offset + self.current_epoch

    def on_train_epoch_start(self) -> None:
        """Fetch this epoch's λ per layer and write them into the loss modules."""
        if len(self.fd_losses):
            if self.force_zero or self.lambda_strategy is None:
                layers: Sequence[str] = getattr(self.fd_losses[0], "layers", ())
                self.lambdas = dict.fromkeys(layers, 0.0)
            else:
                self.lambdas = {
                    k: float(v) for k, v in self.lambda_strategy.lambdas(self.global_epoch).items()
                }
            for loss in self.fd_losses:
                loss.set_layer_weights(self.lambdas)  # type: ignore[operator]
        self._sum_keys, self._sums, self._class_sums = [], None, {}
        self._steps = 0
        self._layer_batches = {}

    def on_validation_epoch_start(self) -> None:
        """Check the weights after the epoch's last update, before validating them (one device sync)."""
        self.flush_finite_check()
        params = [p for p in self.model.parameters() if p.is_floating_point()]
        if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
            term = (
                f"weights after the optimiser update of step {self.global_step} (the last of epoch "
                f"{self.global_epoch}), whose loss terms were all finite (term: the update of train_loss)"
            )
            raise self._diverged(self.global_step, term, None)

    # -- steps -----------------------------------------------------------------------------------------------
    def _images(self, batch: Mapping[str, Any]) -> Tensor:
        image: Tensor = batch["image"]
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return image

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        """One step on ``{"image": (B,C,H,W) float [0,1], "mask": (B,1,H,W) {0,1}, "source": (B,) int}``."""
        mask: Tensor = batch["mask"]
        source: Tensor | None = batch.get("source")
        logits = self.model(self._images(batch))
        seg = self.seg_loss(logits.float(), mask)
        terms: dict[str, Tensor] = {"seg": seg.detach()}
        total: Tensor = seg
        # the L_fd modules' totals are λ-weighted already; the baselines' get aux_weight
        weighted: list[tuple[nn.Module, float | None]] = [(loss, None) for loss in self.fd_losses]
        if self.aux_active:
            weighted += [(aux, self.aux_weight) for aux in self.aux_losses]
        feats = dict(self._tap)
        for loss, weight in weighted:
            out = loss(feats, mask, source=source)
            total = total + (out.total if weight is None else weight * out.total)
            terms.update({k: v.detach() for k, v in out.terms.items()})
        if self.lambda_strategy is not None and self.lambda_strategy.needs_stats:
            for key, value in terms.items():
                if key.startswith("fd/") and key.count("/") == 1:  # not the per-class fd/<layer>/<class>
                    self._layer_batches.setdefault(key[3:], []).append(value.float())
        self._check_finite(total, terms, batch)
        terms["loss"] = total.detach()
        self._accumulate(terms)
        return total

    def _accumulate(self, terms: Mapping[str, Tensor]) -> None:
        """Add the step's terms to the epoch sums, on the device (one stack and one add; no host sync)."""
        keys = [k for k in terms if k.count("/") < 2]
        values = torch.stack([terms[k].float().reshape(()) for k in keys])
        if self._sums is None:
            self._sum_keys, self._sums = keys, values
        elif keys == self._sum_keys:
            self._sums = self._sums + values
        else:
            raise RuntimeError(f"the training terms changed within an epoch: {self._sum_keys} -> {keys}")
        for key in terms.keys() - keys:  # fd/<layer>/<class>: only in the batches that hold the class
            old, count = self._class_sums.get(key, (None, 0))
            value = terms[key].float()
            self._class_sums[key] = (value if old is None else old + value, count + 1)
        self._steps += 1

    @property
    def finite_check_every(self) -> int:
        """Steps between host-side checks of the loss: 1 on the CPU (a check costs nothing there), else 50.

        Between checks a device-side record keeps the first non-finite step and its term values, so the
        error still names that step and term; the weights' diagnosis then replaces the batch's.
        """
        return 1 if self.device.type == "cpu" else 50

    def _check_finite(self, total: Tensor, terms: Mapping[str, Tensor], batch: Mapping[str, Any]) -> None:
        every = self.finite_check_every
        if every == 1:  # on the CPU a check is free: record only a bad step, and diagnose its batch at once
            if not bool(torch.isfinite(total).all()):
                self._record_finite(total, terms)
                self.flush_finite_check(batch)
            return
        self._record_finite(total, terms)
        if self._steps % every == every - 1:
            self.flush_finite_check()

    def _record_finite(self, total: Tensor, terms: Mapping[str, Tensor]) -> None:
        """Keep, on the device, the first step whose loss is non-finite and its term values (no sync)."""
        names = ["total", *terms]
        values = torch.stack([total.detach().float(), *(v.float().reshape(()) for v in terms.values())])
        if self._bad is None or self._bad[0] != names:
            none_yet = torch.full((), -1, dtype=torch.int64, device=values.device)
            self._bad = (names, none_yet, torch.zeros_like(values))
        _, first, recorded = self._bad
        first_now = ~torch.isfinite(values[0]) & (first < 0)
        step = torch.full_like(first, self.global_step)
        self._bad = (names, torch.where(first_now, step, first), torch.where(first_now, values, recorded))

    def flush_finite_check(self, batch: Mapping[str, Any] | None = None) -> None:
        """Raise :class:`NonFiniteLossError` if the device-side record holds a non-finite step (one sync).

        With ``batch`` (the current one, checked at once) the message also names the batch and the first
        module whose output on it is non-finite; without, where the weights are non-finite, now.
        """
        if self._bad is None or int(self._bad[1]) < 0:
            return
        names, first, recorded = self._bad
        values = dict(zip(names, recorded.cpu().tolist()))
        named = ", ".join(f"{k}={v}" for k, v in values.items() if k != "total" and not math.isfinite(v))
        named = named or f"total={values['total']}"
        where = f", batch {self._steps}" if batch is not None else ""
        lambdas = sorted(set(self.lambdas.values())) or [0.0]
        after = "" if batch is not None else f" (weights checked at step {self.global_step})"
        after += f"; λ in [{lambdas[0]:g}, {lambdas[-1]:g}]"
        raise self._diverged(int(first), f"term {named}", batch, where, after)

    def _diverged(
        self, step: int, term: str, batch: Mapping[str, Any] | None, where: str = "", after: str = ""
    ) -> NonFiniteLossError:
        """The error naming ``step``, the phase and epoch (then ``where``), the non-finite ``term``, the layer
        :meth:`_diagnose` finds on ``batch`` (then ``after``) and the advice."""
        return NonFiniteLossError(
            f"training diverged at global step {step} (phase {self.phase}, epoch {self.global_epoch}"
            f"{where}): non-finite {term}; {self._diagnose(batch)}{after}. Lower optim.lr or "
            "loss.lambda_kwargs.lambda_max."
        )

    def _layer_of(self, module_path: str) -> str:
        """The declared feature layer that holds ``module_path`` (else its top-level module)."""
        declared: Mapping[str, str] = getattr(self.model, "feature_layers", None) or {}
        best, found = "", ""
        for name, path in declared.items():
            if (module_path == path or module_path.startswith(path + ".")) and len(path) > len(best):
                best, found = path, name
        return found if best else module_path.split(".", 1)[0]

    @torch.no_grad()
    def _diagnose(self, batch: Mapping[str, Any] | None) -> str:
        """Where the network first holds a non-finite value: a weight, else a module's output on ``batch``."""
        for name, param in self.model.named_parameters():
            if not bool(torch.isfinite(param).all()):
                module = name.rpartition(".")[0]
                return f"first non-finite in layer {self._layer_of(module)} (parameter {name})"
        if batch is None:
            return "no weight is non-finite"
        first: list[str] = []

        def record(name: str, _module: nn.Module, _inputs: Any, output: Any) -> None:
            if not first and isinstance(output, Tensor) and not bool(torch.isfinite(output).all()):
                first.append(name)

        handles = [m.register_forward_hook(partial(record, n)) for n, m in self.model.named_modules() if n]
        try:
            self.model(self._images(batch))
        finally:
            for handle in handles:
                handle.remove()
        if not first:
            return "every weight and activation is finite (the loss itself overflowed)"
        return f"first non-finite in layer {self._layer_of(first[0])} (output of module {first[0]})"

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Accumulate L_seg and the per-image hard Dice (p > 0.5; empty GT and prediction → 1)."""
        mask: Tensor = batch["mask"]
        logits = self.model(self._images(batch)).float()
        if batch_idx == 0 and not bool(torch.isfinite(logits).all()):
            term = "term val_loss (the validation logits; the weights are finite)"
            raise self._diverged(self.global_step, term, batch)
        if self.head is not None:
            dice = self.head.dice(logits, mask)
        else:
            dice = segmentation_metrics(logits, mask)["dice"][:, 0].float()
        self.val_dice.update(dice)
        self.val_loss.update(self.seg_loss(logits, mask).detach())

    def on_validation_epoch_end(self) -> None:
        """Log ``val_dice`` (mean over images) and ``val_loss`` (mean over batches), reduced over devices."""
        self.log_dict({"val_dice": self.val_dice, "val_loss": self.val_loss})

    # -- epoch summary ---------------------------------------------------------------------------------------
    def on_train_epoch_end(self) -> None:
        """Log the epoch means of the training terms and the epoch's λ, then update the λ strategy.

        Logged (``trainer.callback_metrics``): ``train_loss``, ``train_seg``, ``fd/<layer>``,
        ``fd_exch/<layer>``, the baselines' terms and ``lambda/<layer>``: means over the epoch's batches,
        reduced over devices (``sync_dist``; one reduction per key, at the epoch's end). A per-class term
        ``fd/<layer>/<class>`` is the mean over the batches that hold the class (NaN when none did), taken
        on each process separately (processes may see different classes).
        """
        self.flush_finite_check()
        if self._sums is not None:
            means = (self._sums / max(self._steps, 1)).unbind()
            names = [{"loss": "train_loss", "seg": "train_seg"}.get(k, k) for k in self._sum_keys]
            self.log_dict(dict(zip(names, means)), sync_dist=True)
        self._class_keys |= set(self._class_sums)
        for key in sorted(self._class_keys):
            total, count = self._class_sums.get(key, (math.nan, 1))
            self.log(key, total / count)
        if self.lambdas:
            self.log_dict({f"lambda/{layer}": lam for layer, lam in self.lambdas.items()})
        if self.lambda_strategy is not None:
            self.lambda_strategy.update(self.global_epoch, self._gathered_layer_batches())

    def _gathered_layer_batches(self) -> dict[str, list[float]]:
        """The epoch's per-batch L_fd per layer, of every rank under DDP (rank by rank, in batch order).

        Every rank gets the same lists, so a λ strategy that reads them (``dual``: median and mean) takes
        the same step on every rank. Ranks may have run different numbers of batches: each sends its
        values padded to the longest count, and the padding is cut off again.
        """
        local = {k: torch.stack(v).detach().float() for k, v in self._layer_batches.items()}
        needs = bool(getattr(self.lambda_strategy, "needs_stats", False))
        if self.trainer.world_size <= 1 or not needs:
            return {k: v.cpu().tolist() for k, v in local.items()}
        layers: list[str] = list(getattr(self.lambda_strategy, "layers", sorted(local)))
        count = max((int(v.numel()) for v in local.values()), default=0)
        counts = self.trainer.strategy.all_gather(
            torch.tensor([count], dtype=torch.int64, device=self.device)
        )
        counts = counts.reshape(-1).cpu()  # (world_size,)
        width = max(int(counts.max()), 1)
        packed = torch.zeros(len(layers), width, dtype=torch.float32, device=self.device)
        for i, layer in enumerate(layers):
            if layer in local:
                values = local[layer].to(self.device)
                packed[i, : values.numel()] = values
        gathered = (
            self.trainer.strategy.all_gather(packed).reshape(-1, len(layers), width).cpu()
        )  # (world_size, L, width)
        return {
            layer: [v for rank, n in enumerate(counts.tolist()) for v in gathered[rank, i, :n].tolist()]
            for i, layer in enumerate(layers)
        }

    # -- optimiser -------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        """AdamW over the model and every loss parameter; optional cosine decay over the phase's steps."""
        cfg = self.optim_cfg
        optimizer = build_optimizer(self.parameters(), cfg, fused=self.fused_adamw)
        if cfg.scheduler == "none":
            return optimizer
        total = self.total_steps or max(int(self.trainer.estimated_stepping_batches), 1)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=0.0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
