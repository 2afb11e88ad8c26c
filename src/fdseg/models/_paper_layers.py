"""Keras defaults shared by the ports of the paper's three architectures.

The paper's models were released as Keras 3 code. Porting them faithfully needs the Keras initialisers and
BatchNorm conventions (``method-spec.md`` §D4), which differ from PyTorch's:

* ``BatchNormalization(momentum=m, epsilon=e)`` updates ``moving = m * moving + (1 - m) * batch``;
  PyTorch's ``momentum`` is the weight of the *new* value, so Keras ``m`` becomes PyTorch ``1 - m``
  (0.99 -> 0.01, 0.5 -> 0.5). Keras' default epsilon is 1e-3 (PyTorch: 1e-5). One difference remains:
  PyTorch feeds the unbiased batch variance into ``running_var`` (Keras the biased one), a factor
  n / (n - 1) with n = B·H·W values per channel.
* Keras kernels default to ``glorot_uniform`` and biases to zero (PyTorch: Kaiming-uniform with a=sqrt(5)
  and a fan-in uniform bias). ``HeNormal`` and ``glorot_normal`` draw from a normal truncated at two
  standard deviations, rescaled by 1/0.8796 so that the variance is exactly ``scale / fan``.

Fans follow Keras: for a kernel ``(out, in / groups, kh, kw)`` (PyTorch layout), fan_in =
``in / groups * kh * kw`` and fan_out = ``out * kh * kw``; for a transposed convolution, whose PyTorch weight
is ``(in, out, kh, kw)``, the same formula gives Keras' fans for its ``(kh, kw, out, in)`` kernel. Depthwise
kernels differ from Keras by a swap of fan_in and fan_out, which the ``fan_avg`` (Glorot) initialisers do
not see.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

KerasInit = Literal["glorot_uniform", "glorot_normal", "he_normal"]
_KERAS_INITS: tuple[str, ...] = ("glorot_uniform", "glorot_normal", "he_normal")

#: Ratio of the standard deviation of a unit normal truncated to [-2, 2] to 1 (Keras' correction constant).
_TRUNCATED_STD = 0.87962566103423978


def _fans(weight: Tensor) -> tuple[int, int]:
    """Keras fans of a convolution weight ``(out, in / groups, kh, kw)`` (or a ConvTranspose2d weight)."""
    receptive = math.prod(weight.shape[2:])
    return weight.shape[1] * receptive, weight.shape[0] * receptive


@torch.no_grad()
def keras_init_(weight: Tensor, kind: KerasInit) -> Tensor:
    """Fill a convolution ``weight`` in place as the named Keras initialiser would.

    Args:
        weight: ``(out, in / groups, kh, kw)`` float tensor (``(in, out, kh, kw)`` for a transposed conv).
        kind: ``"glorot_uniform"`` (U(-l, l), l = sqrt(6 / (fan_in + fan_out))), ``"glorot_normal"``
            (truncated normal, variance 2 / (fan_in + fan_out)) or ``"he_normal"`` (truncated normal,
            variance 2 / fan_in).

    Returns:
        ``weight``, filled.

    Raises:
        ValueError: unknown ``kind``.
    """
    if kind not in _KERAS_INITS:
        raise ValueError(f"unknown Keras initialiser {kind!r}; valid: {list(_KERAS_INITS)}")
    if weight.is_meta:  # no storage to fill (models built on the meta device, e.g. to count parameters)
        return weight
    fan_in, fan_out = _fans(weight)
    if kind == "glorot_uniform":
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return weight.uniform_(-limit, limit)
    # Keras VarianceScaling: glorot_normal = scale 1 over fan_avg, he_normal = scale 2 over fan_in.
    variance = 2.0 / (fan_in + fan_out) if kind == "glorot_normal" else 2.0 / fan_in
    std = math.sqrt(variance) / _TRUNCATED_STD
    return _truncated_normal_(weight, std)


def _truncated_normal_(weight: Tensor, std: float) -> Tensor:
    """N(0, std²) truncated to [-2 std, 2 std], by inverse-CDF sampling (one pass, no rejection loop)."""
    edge = math.erf(2.0 / math.sqrt(2.0))  # 2 Φ(2) - 1: the uniform range that maps onto [-2, 2]
    weight.uniform_(-edge, edge).erfinv_().mul_(std * math.sqrt(2.0))
    return weight.clamp_(-2.0 * std, 2.0 * std)


def keras_conv_(
    conv: nn.Conv2d | nn.ConvTranspose2d, kind: KerasInit = "glorot_uniform", *, bias: float = 0.0
) -> None:
    """Initialise ``conv`` like a Keras ``Conv2D``: ``kind`` kernel, constant ``bias`` (Keras default 0)."""
    keras_init_(conv.weight, kind)
    if conv.bias is not None:
        nn.init.constant_(conv.bias, bias)


def keras_bn(
    channels: int, *, momentum: float = 0.99, eps: float = 1e-3, beta: float = 0.0
) -> nn.BatchNorm2d:
    """A ``BatchNorm2d`` behaving like Keras ``BatchNormalization(momentum, epsilon, beta_initializer)``.

    Args:
        channels: number of features C of the ``(B, C, H, W)`` input.
        momentum: the *Keras* momentum (weight of the old moving statistic); PyTorch gets ``1 - momentum``.
        eps: variance epsilon (Keras default 1e-3).
        beta: initial shift (Keras ``beta_initializer=Constant(beta)``); gamma starts at 1.
    """
    bn = nn.BatchNorm2d(channels, momentum=1.0 - momentum, eps=eps)
    nn.init.constant_(bn.bias, beta)
    return bn
