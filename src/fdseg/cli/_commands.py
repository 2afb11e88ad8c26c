"""Imports the modules of ``fdseg.cli`` that add commands to ``app`` (one import per module)."""

from fdseg.cli import studies  # noqa: F401
