"""λ strategies over epochs: schedule ramps, dual ascent, fixed, code_exact, state round trips, errors."""

from __future__ import annotations

import itertools
import math

import pytest

from fdseg.losses import (
    DEFAULT_LAMBDA_MAX,
    LAMBDA_STRATEGIES,
    DualLambda,
    LambdaStrategy,
    build_lambda_strategy,
)

LAYERS = ["enc1", "bottleneck"]


def test_registry_names_and_protocol() -> None:
    assert LAMBDA_STRATEGIES.names() == ["code_exact", "dual", "fixed", "schedule"]
    for name in LAMBDA_STRATEGIES.names():
        assert isinstance(build_lambda_strategy(name, LAYERS), LambdaStrategy)
    assert DEFAULT_LAMBDA_MAX == 0.001


def test_schedule_linear_ramp_values() -> None:
    s = build_lambda_strategy("schedule", LAYERS)  # E_w = 100, E_ramp = 5, λ_max = 0.001
    expected = {0: 0.0, 99: 0.0, 100: 0.0002, 101: 0.0004, 102: 0.0006, 104: 0.001, 174: 0.001}
    for epoch, value in expected.items():
        assert s.lambdas(epoch) == {"enc1": pytest.approx(value), "bottleneck": pytest.approx(value)}
    switch = build_lambda_strategy("schedule", LAYERS, warmup_epochs=3, ramp_epochs=1, lambda_max=1.0)
    assert [switch.lambdas(e)["enc1"] for e in range(5)] == [0.0, 0.0, 0.0, 1.0, 1.0]
    per_layer = build_lambda_strategy(
        "schedule", LAYERS, warmup_epochs=0, lambda_max={"enc1": 0.1, "bottleneck": 0.2}
    )
    assert per_layer.lambdas(10) == {"enc1": 0.1, "bottleneck": 0.2}


def test_schedule_geometric_values() -> None:
    s = build_lambda_strategy(
        "schedule", LAYERS, ramp="geometric", warmup_epochs=10, lambda_max=0.1, lambda0=1e-3, beta=1.5
    )
    assert s.lambdas(9)["enc1"] == 0.0
    assert s.lambdas(10)["enc1"] == pytest.approx(1e-3)
    assert s.lambdas(11)["enc1"] == pytest.approx(1.5e-3)
    assert s.lambdas(13)["enc1"] == pytest.approx(1e-3 * 1.5**3)
    # 1e-3 * 1.5**k >= 0.1 first at k = 12 (1.5**11 = 86.5, 1.5**12 = 129.7)
    assert s.lambdas(21)["enc1"] == pytest.approx(1e-3 * 1.5**11)
    assert s.lambdas(22)["enc1"] == 0.1 and s.lambdas(50)["bottleneck"] == 0.1
    default_start = build_lambda_strategy("schedule", LAYERS, ramp="geometric", warmup_epochs=0)
    assert default_start.lambdas(0)["enc1"] == pytest.approx(DEFAULT_LAMBDA_MAX / 100)


def _run_dual(dual: LambdaStrategy, epochs: range, value: float) -> list[float]:
    out = []
    for epoch in epochs:
        dual.update(epoch, {"enc1": [value, value + 0.1, value - 0.1], "bottleneck": [value]})
        out.append(dual.lambdas(epoch + 1)["enc1"])
    return out


def test_dual_rises_while_violated_then_decays() -> None:
    dual = build_lambda_strategy("dual", LAYERS, warmup_epochs=2, lambda_max=1.0, ema=0.5)
    assert dual.needs_stats
    assert dual.lambdas(0) == {"enc1": 0.0, "bottleneck": 0.0}
    dual.update(0, {})  # early warm-up epochs need no statistics
    dual.update(1, {"enc1": [1.0, 2.0, 3.0], "bottleneck": [2.0]})  # last warm-up epoch: τ = median - log 2
    assert isinstance(dual, DualLambda) and dual.targets is not None
    assert dual.targets["enc1"] == pytest.approx(2.0 - math.log(2))
    assert dual.lambdas(2)["enc1"] == 0.0  # λ starts at 0 after the warm-up
    # violated (L_fd = 3 > τ): the first step is eta * (3 - τ) with eta = 0.05 * λ_max
    rising = _run_dual(dual, range(2, 6), 3.0)
    assert rising[0] == pytest.approx(0.05 * (3.0 - (2.0 - math.log(2))))
    assert all(b > a for a, b in itertools.pairwise(rising))
    # met (L_fd = 0.5 < τ): the EMA drops below τ and λ decays to the 0 bound
    falling = _run_dual(dual, range(6, 40), 0.5)
    assert falling[-1] < rising[-1]
    assert falling[-1] == 0.0
    assert all(b <= a for a, b in itertools.pairwise(falling))


def test_dual_is_clipped_at_lambda_max() -> None:
    dual = build_lambda_strategy("dual", LAYERS, warmup_epochs=0, targets=0.0, eta=1.0)  # λ_max 0.001
    dual.update(0, {"enc1": [5.0], "bottleneck": [5.0]})
    assert dual.lambdas(1) == {"enc1": 0.001, "bottleneck": 0.001}


def test_dual_state_dict_round_trip() -> None:
    a = build_lambda_strategy("dual", LAYERS, warmup_epochs=1, lambda_max=1.0)
    a.update(0, {"enc1": [2.0], "bottleneck": [1.0]})
    _run_dual(a, range(1, 4), 3.0)
    b = build_lambda_strategy("dual", LAYERS, warmup_epochs=1, lambda_max=1.0)
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict()
    assert _run_dual(a, range(4, 8), 1.5) == _run_dual(b, range(4, 8), 1.5)
    with pytest.raises(ValueError, match="cannot be loaded into 'schedule'"):
        build_lambda_strategy("schedule", LAYERS).load_state_dict(a.state_dict())


def test_stateless_strategies_round_trip_and_code_exact_zero() -> None:
    for name in ("schedule", "fixed", "code_exact"):
        s = build_lambda_strategy(name, LAYERS)
        t = build_lambda_strategy(name, LAYERS)
        t.load_state_dict(s.state_dict())
        assert not s.needs_stats
    code = build_lambda_strategy("code_exact", LAYERS)
    assert all(code.lambdas(e) == {"enc1": 0.0, "bottleneck": 0.0} for e in (0, 1, 100, 1000))
    fixed = build_lambda_strategy("fixed", LAYERS, value=0.02, warmup_epochs=2)
    assert [fixed.lambdas(e)["enc1"] for e in range(4)] == [0.0, 0.0, 0.02, 0.02]


def test_strategy_errors() -> None:
    with pytest.raises(KeyError, match=r"unknown lambda strategy 'shedule'.*did you mean 'schedule'"):
        build_lambda_strategy("shedule", LAYERS)
    with pytest.raises(ValueError, match=r"unknown option of lambda strategy 'schedule' \['lambda_mx'\]"):
        build_lambda_strategy("schedule", LAYERS, lambda_mx=0.1)
    with pytest.raises(ValueError, match=r"lambda_max must be a finite float >= 0"):
        build_lambda_strategy("schedule", LAYERS, lambda_max=-0.1)
    with pytest.raises(ValueError, match=r"no value for the layers \['bottleneck'\]"):
        build_lambda_strategy("fixed", LAYERS, value={"enc1": 0.1})
    with pytest.raises(ValueError, match=r"ramp_epochs must be an int >= 1"):
        build_lambda_strategy("schedule", LAYERS, ramp_epochs=0)
    with pytest.raises(ValueError, match=r"epoch must be an int >= 0"):
        build_lambda_strategy("schedule", LAYERS).lambdas(-1)
    dual = build_lambda_strategy("dual", LAYERS, warmup_epochs=0)
    with pytest.raises(ValueError, match=r"no targets"):
        dual.update(0, {"enc1": [1.0], "bottleneck": [1.0]})
    dual = build_lambda_strategy("dual", LAYERS, warmup_epochs=1)
    with pytest.raises(ValueError, match=r"missing \['bottleneck'\]"):
        dual.update(0, {"enc1": [1.0]})
    with pytest.raises(ValueError, match=r"non-empty and finite"):
        dual.update(0, {"enc1": [float("nan")], "bottleneck": [1.0]})
    dual.update(0, {"enc1": [1.0], "bottleneck": [1.0]})
    with pytest.raises(ValueError, match=r"already updated for epoch 0"):
        dual.update(0, {"enc1": [1.0], "bottleneck": [1.0]})
