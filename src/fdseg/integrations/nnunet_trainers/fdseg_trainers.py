"""fdseg's nnU-Net trainers for nnU-Net's trainer lookup (``nnUNet_extTrainer``).

See :mod:`fdseg.integrations.nnunet`.
"""

from fdseg.integrations.nnunet import nnUNetTrainerFD, nnUNetTrainerFDExch

__all__ = ["nnUNetTrainerFD", "nnUNetTrainerFDExch"]
