"""fdseg.analysis."""
