"""An argument in model.kwargs that the model does not take: one line naming model.kwargs and the argument."""

from __future__ import annotations

import pytest

from fdseg.training.build import build_model
from fdseg.training.config import ExperimentConfig


def test_an_unknown_model_kwarg_names_model_kwargs_and_the_argument() -> None:
    cfg = ExperimentConfig.from_dict({"model": {"name": "unet", "kwargs": {"base_width": 4, "bogus": 1}}})
    with pytest.raises(ValueError, match=r"model\.kwargs of model 'unet': .*'bogus'"):
        build_model(cfg)


def test_known_model_kwargs_still_build() -> None:
    cfg = ExperimentConfig.from_dict({"model": {"name": "unet", "kwargs": {"base_width": 4, "depth": 2}}})
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) > 0
