"""fdseg: feature-discrepancy losses and honest multi-site evaluation for 2D medical image segmentation."""

__version__ = "0.1.0"
