"""fdseg.training."""
