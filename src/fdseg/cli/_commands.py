"""Imports the modules of ``fdseg.cli`` that add commands to ``app`` (one import per module)."""

from fdseg.cli import (
    evaluation,  # noqa: F401
    multiclass,  # noqa: F401
    nnunet,  # noqa: F401  (fdseg nnunet export|plan|train|predict|collect)
    studies,  # noqa: F401  (fdseg sweep, fdseg compare, fdseg experiment table1)
    studies_addition,  # noqa: F401  (fdseg divergence, fdseg experiment …)
)
