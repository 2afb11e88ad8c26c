"""fdseg.losses."""
