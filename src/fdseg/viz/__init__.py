"""fdseg.viz."""
