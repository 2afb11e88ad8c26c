"""fdseg.metrics."""
