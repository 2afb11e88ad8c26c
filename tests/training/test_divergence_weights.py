"""A non-finite weight found before validation: the error names the step, phase, epoch and parameter."""

from __future__ import annotations

import math

import pytest
import torch

from fdseg.losses.segmentation import build_seg_loss
from fdseg.models import create_model
from fdseg.training.task import NonFiniteLossError, SegmentationTask


def test_non_finite_weight_is_named_before_validation() -> None:
    model = create_model("unet", in_channels=3, out_channels=1, base_width=4, depth=2)
    task = SegmentationTask(model, tap={}, seg_loss=build_seg_loss("dice_bce"), phase=2, epoch_offset=5)
    task.on_validation_epoch_start()  # finite weights: nothing to report
    with torch.no_grad():
        model.get_parameter("dec1.conv.0.weight")[0, 0, 0, 0] = math.inf
    with pytest.raises(NonFiniteLossError) as info:
        task.on_validation_epoch_start()
    assert str(info.value) == (
        "training diverged at global step 0 (phase 2, epoch 5): non-finite weights after the optimiser "
        "update of step 0 (the last of epoch 5), whose loss terms were all finite (term: the update of "
        "train_loss); first non-finite in layer dec1 (parameter dec1.conv.0.weight). Lower optim.lr or "
        "loss.lambda_kwargs.lambda_max."
    )
