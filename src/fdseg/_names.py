"""Names shared by every layer of fdseg (no imports beyond the standard library)."""

from __future__ import annotations

#: Canonical tap names: encoder (enc1 = full resolution), bottleneck, decoder (dec1 = last, full resolution).
CANONICAL_LAYERS: tuple[str, ...] = (
    "enc1",
    "enc2",
    "enc3",
    "enc4",
    "bottleneck",
    "dec4",
    "dec3",
    "dec2",
    "dec1",
)

#: Multi-class heads (``model.head``): K sigmoid outputs against a shared background, or K + 1 softmax logits.
MULTICLASS_HEADS: tuple[str, ...] = ("binary_per_class", "softmax")
