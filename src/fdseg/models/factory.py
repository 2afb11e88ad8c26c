"""The model registry and ``create_model``.

Every model module registers its factory here with ``@MODELS.register("name")``; ``fdseg.models``
imports every model module so that the registry is complete once the package is imported.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from fdseg.registry import Registry

#: Model name -> factory returning an ``nn.Module`` that declares ``feature_layers``.
MODELS: Registry[nn.Module] = Registry("model")


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models`, e.g. ``"unet"``, ``"attention_unet"``, ``"nucleisegnet"``.
        **kwargs: the model's options (``in_channels``, ``out_channels``, ``base_width``, ``variant``, …).

    Returns:
        The model. It returns logits ``(B, out_channels, H, W)`` and has a ``feature_layers`` dict
        (canonical tap name -> module path) usable with :class:`fdseg.models.FeatureTap`.

    Raises:
        KeyError: unknown ``name`` (the message lists the registered names).

    Example:
        >>> from fdseg.models import create_model
        >>> model = create_model("unet", in_channels=3, out_channels=1, base_width=8)
        >>> sorted(model.feature_layers)[:2]
        ['bottleneck', 'dec1']
    """
    return MODELS.build(name, **kwargs)


def list_models() -> list[str]:
    """Registered model names."""
    return MODELS.names()
