"""Imports the modules of ``fdseg.cli`` that add commands to ``app`` (one import per module)."""
