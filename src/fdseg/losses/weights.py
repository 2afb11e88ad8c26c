"""Per-layer weights λ_l(epoch) of L_fd (method-spec §C).

A strategy maps an epoch to one λ per layer; the trainer applies it with
``loss.set_layer_weights(strategy.lambdas(epoch))`` at the start of every epoch, calls
``strategy.update(epoch, layer_stats)`` at its end (``layer_stats``: tap name -> the per-batch L_fd values of
that epoch) and saves ``strategy.state_dict()`` in its checkpoints. Epochs count from 0.

* ``schedule`` (default): λ = 0 for ``epoch < warmup_epochs``, then a linear ramp
  ``λ_max * min(1, (epoch - E_w + 1) / E_ramp)``, or the geometric penalty-method variant
  ``min(λ_0 * β ** (epoch - E_w), λ_max)``.
* ``dual``: projected dual ascent on the constraint ``L_fd^l <= τ_l``, once per epoch.
* ``fixed``: a constant λ (optionally 0 during a warm-up).
* ``code_exact``: λ ≡ 0, what the released code really trains (its λ variables are never updated).

The default λ_max is 0.001 per layer (design.md §3: 0.1 and 0.01 summed over nine layers lowered Dice on
TNBC).

Example:
    >>> strategy = build_lambda_strategy("schedule", ["enc1", "dec1"], warmup_epochs=2, ramp_epochs=2)
    >>> [strategy.lambdas(e)["enc1"] for e in range(5)]
    [0.0, 0.0, 0.0005, 0.001, 0.001]
"""

from __future__ import annotations

import inspect
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from fdseg._checks import check_int, check_keys, check_layer_names, check_option
from fdseg.registry import Registry

#: Default λ_max per layer (design.md §3).
DEFAULT_LAMBDA_MAX = 0.001


@runtime_checkable
class LambdaStrategy(Protocol):
    """What the trainer needs from a λ strategy."""

    name: str
    layers: tuple[str, ...]

    @property
    def needs_stats(self) -> bool:
        """Whether :meth:`update` reads ``layer_stats`` (the trainer may skip collecting them otherwise)."""
        ...

    def lambdas(self, epoch: int) -> dict[str, float]:
        """λ_l for every layer during ``epoch`` (>= 0)."""
        ...

    def update(self, epoch: int, layer_stats: Mapping[str, Sequence[float]]) -> None:
        """Observe the per-batch L_fd values of every layer at the end of ``epoch``."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (plain Python values)."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        ...


LAMBDA_STRATEGIES: Registry[LambdaStrategy] = Registry("lambda strategy")


def _check_epoch(epoch: int) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
    return epoch


def _check_float(name: str, value: float, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a float, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"{name} must be a finite float {'> 0' if positive else '>= 0'}, got {value!r}")
    return v


def _per_layer(name: str, value: float | Mapping[str, float], layers: tuple[str, ...]) -> dict[str, float]:
    """A float for every layer from one float or a mapping that names every layer."""
    if isinstance(value, Mapping):
        check_keys(name, value, layers)
        missing = [layer for layer in layers if layer not in value]
        if missing:
            raise ValueError(
                f"{name}: no value for the layers {missing}; give one float or all of {list(layers)}"
            )
        return {layer: _check_float(f"{name}[{layer!r}]", value[layer]) for layer in layers}
    v = _check_float(name, value)
    return dict.fromkeys(layers, v)


class _Strategy:
    """Shared parts: layers, the state-dict name check and a no-op update."""

    name = ""

    def __init__(self, layers: Sequence[str]) -> None:
        self.layers = check_layer_names(layers)

    @property
    def needs_stats(self) -> bool:
        return False

    def update(self, epoch: int, layer_stats: Mapping[str, Sequence[float]]) -> None:
        """Nothing to learn: this strategy depends on the epoch only."""
        _check_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "layers": list(self.layers)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("name") != self.name or list(state.get("layers", [])) != list(self.layers):
            raise ValueError(
                f"state of lambda strategy {state.get('name')!r} for layers {state.get('layers')} cannot be "
                f"loaded into {self.name!r} for layers {list(self.layers)}"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.state_dict()})"


@LAMBDA_STRATEGIES.register("fixed")
class FixedLambda(_Strategy):
    """A constant λ per layer, 0 before ``warmup_epochs``.

    Args:
        layers: tap names.
        value: one λ for all layers or a mapping naming every layer.
        warmup_epochs: epochs with λ = 0 first (default 0).
    """

    name = "fixed"

    def __init__(
        self,
        layers: Sequence[str],
        *,
        value: float | Mapping[str, float] = DEFAULT_LAMBDA_MAX,
        warmup_epochs: int = 0,
    ) -> None:
        super().__init__(layers)
        self.value = _per_layer("value", value, self.layers)
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs, minimum=0)

    def lambdas(self, epoch: int) -> dict[str, float]:
        if _check_epoch(epoch) < self.warmup_epochs:
            return dict.fromkeys(self.layers, 0.0)
        return dict(self.value)


@LAMBDA_STRATEGIES.register("schedule")
class ScheduleLambda(_Strategy):
    """Warm-up at λ = 0, then a deterministic ramp to λ_max (the penalty method; method-spec §C.1).

    ``ramp="linear"``: ``λ(e) = λ_max * min(1, (e - E_w + 1) / E_ramp)`` for ``e >= E_w``.
    ``ramp="geometric"``: ``λ(e) = min(λ_0 * β ** (e - E_w), λ_max)``, i.e. ``λ <- min(β λ, λ_max)`` per epoch
    from ``λ_0`` at ``E_w``.

    Args:
        layers: tap names.
        lambda_max: λ_max, one float or a mapping naming every layer (default 0.001).
        warmup_epochs: E_w (default 100, the paper's phase 1).
        ramp_epochs: E_ramp >= 1 of the linear ramp (default 5; 1 switches λ_max on at once).
        ramp: ``"linear"`` | ``"geometric"``.
        lambda0: λ_0 of the geometric ramp; default ``lambda_max / 100`` per layer (the spec's 1e-3 for 0.1).
        beta: growth factor β > 1 of the geometric ramp (default 1.5).
    """

    name = "schedule"

    def __init__(
        self,
        layers: Sequence[str],
        *,
        lambda_max: float | Mapping[str, float] = DEFAULT_LAMBDA_MAX,
        warmup_epochs: int = 100,
        ramp_epochs: int = 5,
        ramp: Literal["linear", "geometric"] = "linear",
        lambda0: float | Mapping[str, float] | None = None,
        beta: float = 1.5,
    ) -> None:
        super().__init__(layers)
        self.lambda_max = _per_layer("lambda_max", lambda_max, self.layers)
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs, minimum=0)
        self.ramp_epochs = check_int("ramp_epochs", ramp_epochs, minimum=1)
        self.ramp = check_option("ramp", ramp, ("linear", "geometric"))
        if lambda0 is None:
            self.lambda0 = {k: v / 100.0 for k, v in self.lambda_max.items()}
        else:
            self.lambda0 = _per_layer("lambda0", lambda0, self.layers)
        self.beta = _check_float("beta", beta, positive=True)
        if self.beta < 1.0:
            raise ValueError(f"beta must be >= 1 (λ grows towards λ_max), got {beta!r}")

    def lambdas(self, epoch: int) -> dict[str, float]:
        steps = _check_epoch(epoch) - self.warmup_epochs
        if steps < 0:
            return dict.fromkeys(self.layers, 0.0)
        if self.ramp == "linear":
            fraction = min(1.0, (steps + 1) / self.ramp_epochs)
            return {k: v * fraction for k, v in self.lambda_max.items()}
        return {k: min(self.lambda0[k] * self.beta**steps, self.lambda_max[k]) for k in self.layers}


@LAMBDA_STRATEGIES.register("dual")
class DualLambda(_Strategy):
    """Projected dual ascent on ``L_fd^l <= τ_l`` (method-spec §C.2).

    * ``epoch < warmup_epochs``: λ = 0. At the end of the last warm-up epoch (``warmup_epochs - 1``) the
      target becomes ``τ_l = median(per-batch L_fd^l of that epoch) - delta`` (unless ``targets`` are given).
    * From ``warmup_epochs`` on, λ starts at 0 and after every epoch
      ``EMA_l <- ema * EMA_l + (1 - ema) * mean(per-batch L_fd^l)`` (the first epoch initialises it) and
      ``λ_l <- clip(λ_l + eta * (EMA_l - τ_l), 0, λ_max)``: λ rises while the constraint is violated and
      decays once it holds.

    Args:
        layers: tap names.
        lambda_max: the clip bound, one float or a mapping naming every layer (default 0.001).
        warmup_epochs: E_w (default 100).
        eta: dual step size; default ``0.05 * lambda_max`` per layer (the spec's 0.05 for λ_max = 1, scaled so
            that one epoch moves λ by a fraction of its range).
        delta: how far below the warm-up median the target sits (default log 2: the squared gap doubles).
        ema: EMA factor in [0, 1) (default 0.9).
        targets: explicit τ_l (one float or a mapping naming every layer) instead of the warm-up median.

    Raises:
        ValueError: at :meth:`update` when a target is needed but neither ``targets`` nor the statistics of
            the last warm-up epoch were given, or when the statistics miss a layer or hold non-finite values.
    """

    name = "dual"

    def __init__(
        self,
        layers: Sequence[str],
        *,
        lambda_max: float | Mapping[str, float] = DEFAULT_LAMBDA_MAX,
        warmup_epochs: int = 100,
        eta: float | Mapping[str, float] | None = None,
        delta: float = math.log(2.0),
        ema: float = 0.9,
        targets: float | Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(layers)
        self.lambda_max = _per_layer("lambda_max", lambda_max, self.layers)
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs, minimum=0)
        if eta is None:
            self.eta = {k: 0.05 * v for k, v in self.lambda_max.items()}
        else:
            self.eta = _per_layer("eta", eta, self.layers)
        self.delta = _check_float("delta", delta)
        self.ema = _check_float("ema", ema)
        if self.ema >= 1.0:
            raise ValueError(f"ema must be in [0, 1), got {ema!r}")
        self.targets: dict[str, float] | None = None
        if targets is not None:
            if isinstance(targets, Mapping):
                check_keys("targets", targets, self.layers)
                missing = [layer for layer in self.layers if layer not in targets]
                if missing:
                    raise ValueError(f"targets: no value for the layers {missing}")
                self.targets = {k: float(targets[k]) for k in self.layers}
            else:
                self.targets = dict.fromkeys(self.layers, float(targets))
            if not all(math.isfinite(v) for v in self.targets.values()):
                raise ValueError(f"targets must be finite, got {self.targets}")
        self.current: dict[str, float] = dict.fromkeys(self.layers, 0.0)
        self.ema_value: dict[str, float] | None = None
        self.last_epoch: int | None = None

    @property
    def needs_stats(self) -> bool:
        return True

    def lambdas(self, epoch: int) -> dict[str, float]:
        if _check_epoch(epoch) < self.warmup_epochs:
            return dict.fromkeys(self.layers, 0.0)
        return dict(self.current)

    def _epoch_values(self, layer_stats: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
        missing = [layer for layer in self.layers if layer not in layer_stats]
        if missing:
            raise ValueError(
                f"dual λ needs the per-batch L_fd of every layer; missing {missing}, "
                f"got {sorted(layer_stats)}"
            )
        values: dict[str, list[float]] = {}
        for layer in self.layers:
            vals = [float(v) for v in layer_stats[layer]]
            if not vals or not all(math.isfinite(v) for v in vals):
                raise ValueError(
                    f"dual λ: per-batch L_fd of {layer!r} must be non-empty and finite, got {vals}"
                )
            values[layer] = vals
        return values

    def update(self, epoch: int, layer_stats: Mapping[str, Sequence[float]]) -> None:
        """One dual step at the end of ``epoch`` (see the class docstring).

        Args:
            epoch: the epoch that just ended; epochs must increase from call to call.
            layer_stats: tap name -> per-batch L_fd^l values of that epoch.
        """
        _check_epoch(epoch)
        if self.last_epoch is not None and epoch <= self.last_epoch:
            raise ValueError(f"dual λ already updated for epoch {self.last_epoch}; got epoch {epoch} again")
        if epoch < self.warmup_epochs - 1:
            self.last_epoch = epoch
            return
        values = self._epoch_values(layer_stats)
        self.last_epoch = epoch
        if epoch == self.warmup_epochs - 1:
            if self.targets is None:
                self.targets = {k: statistics.median(v) - self.delta for k, v in values.items()}
            return
        if self.targets is None:
            raise ValueError(
                "dual λ has no targets: give targets=… or the per-batch L_fd of the last warm-up epoch "
                f"(epoch {self.warmup_epochs - 1}) to update()"
            )
        means = {k: statistics.fmean(v) for k, v in values.items()}
        if self.ema_value is None:
            self.ema_value = means
        else:
            self.ema_value = {
                k: self.ema * self.ema_value[k] + (1 - self.ema) * means[k] for k in self.layers
            }
        for k in self.layers:
            step = self.current[k] + self.eta[k] * (self.ema_value[k] - self.targets[k])
            self.current[k] = min(max(step, 0.0), self.lambda_max[k])

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "current": dict(self.current),
            "ema_value": None if self.ema_value is None else dict(self.ema_value),
            "targets": None if self.targets is None else dict(self.targets),
            "last_epoch": self.last_epoch,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.current = {k: float(state["current"][k]) for k in self.layers}
        self.ema_value = (
            None if state["ema_value"] is None else {k: float(state["ema_value"][k]) for k in self.layers}
        )
        self.targets = (
            None if state["targets"] is None else {k: float(state["targets"][k]) for k in self.layers}
        )
        self.last_epoch = state["last_epoch"]


@LAMBDA_STRATEGIES.register("code_exact")
class CodeExactLambda(_Strategy):
    """λ ≡ 0 at every epoch: the released code's λ variables are never trained (method-spec §C)."""

    name = "code_exact"

    def lambdas(self, epoch: int) -> dict[str, float]:
        _check_epoch(epoch)
        return dict.fromkeys(self.layers, 0.0)


def build_lambda_strategy(name: str, layers: Sequence[str], **kwargs: Any) -> LambdaStrategy:
    """Build a registered λ strategy.

    Args:
        name: ``"schedule"`` | ``"dual"`` | ``"fixed"`` | ``"code_exact"``.
        layers: tap names, the same as the loss's.
        **kwargs: the strategy's options (see each class), e.g. ``lambda_max=0.01, warmup_epochs=100``.

    Raises:
        KeyError: unknown ``name`` (the message lists the registered ones).
        ValueError: an option the strategy does not take (the message lists those it takes), or a bad value.
    """
    factory = LAMBDA_STRATEGIES.get(name)
    accepted = [p for p in inspect.signature(factory).parameters if p != "layers"]
    check_keys(f"option of lambda strategy {name!r}", kwargs, accepted)
    return factory(layers, **kwargs)
