"""fdseg.models."""
