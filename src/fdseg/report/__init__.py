"""fdseg.report."""
