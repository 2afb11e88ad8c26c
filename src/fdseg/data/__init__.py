"""fdseg.data."""
