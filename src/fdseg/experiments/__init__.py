"""fdseg.experiments."""
