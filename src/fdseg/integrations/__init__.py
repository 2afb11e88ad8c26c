"""fdseg.integrations."""
