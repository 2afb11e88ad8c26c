"""fdseg.models: segmentation networks with named feature taps.

Importing this package registers every built-in model in :data:`MODELS`; build one with
:func:`create_model` and tap its features with :class:`FeatureTap`.
"""

from __future__ import annotations

from fdseg.models import attention_unet, cmunet, external, nucleisegnet, smp, swin, transunet, unet
from fdseg.models.factory import MODELS, create_model, list_models
from fdseg.models.features import (
    CANONICAL_LAYERS,
    FeatureInfo,
    FeatureTap,
    canonical_name,
    parse_layer_path,
    resolve_layers,
    unwrap_model,
)
from fdseg.models.unet import UNet

__all__ = [
    "CANONICAL_LAYERS",
    "MODELS",
    "FeatureInfo",
    "FeatureTap",
    "UNet",
    "attention_unet",
    "canonical_name",
    "cmunet",
    "create_model",
    "external",
    "list_models",
    "nucleisegnet",
    "parse_layer_path",
    "resolve_layers",
    "smp",
    "swin",
    "transunet",
    "unet",
    "unwrap_model",
]
