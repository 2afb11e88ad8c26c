"""nnU-Net checkpoints are read with ``torch.load(weights_only=True)``: a checkpoint written by nnU-Net's own
trainer loads (NumPy scalars allowed), anything holding other Python objects is refused, naming them, without
running its code."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import NO_NNUNET, Planned

nnunetv2 = pytest.importorskip("nnunetv2", reason=NO_NNUNET)

from fdseg.integrations.nnunet import load_checkpoint, nnUNetTrainerFD  # noqa: E402
from fdseg.integrations.nnunet_env import FdSettings  # noqa: E402


def _trainer(planned: Planned) -> Any:
    folder = planned.preprocessed / "Dataset903_Tiny"
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False
    dataset_json = json.loads((folder / "dataset.json").read_text())
    trainer = nnUNetTrainerFD(
        plans=plans, configuration="2d", fold=0, dataset_json=dataset_json, device=torch.device("cpu")
    )
    trainer.fd_settings = FdSettings(lambda_max=0.01, warmup_epochs=0)
    trainer.initialize()
    return trainer


def _batch(trainer: Any) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    full = torch.zeros(2, 1, 32, 32)
    full[0, :, 4:14, 6:20] = 1
    full[1, :, 18:30, 2:11] = 1
    targets = [full]
    for scale in trainer._get_deep_supervision_scales()[1:]:
        targets.append(F.interpolate(full, size=int(32 * scale[0]), mode="nearest"))
    return {"data": torch.randn(2, 3, 32, 32, generator=g), "target": targets}


@pytest.mark.timeout(900)  # the first user of the planned fixture pays for nnU-Net's planning
def test_a_checkpoint_written_by_nnunet_loads_with_weights_only(
    planned: Planned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("nnUNet_preprocessed", str(planned.preprocessed))
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    trainer = _trainer(planned)
    batch = _batch(trainer)
    # one epoch through nnU-Net's own hooks, so that its logger holds what it logs (NumPy scalars)
    trainer.on_epoch_start()
    trainer.on_train_epoch_start()
    trainer.on_train_epoch_end([trainer.train_step(batch)])
    trainer.on_validation_epoch_start()
    trainer.on_validation_epoch_end([trainer.validation_step(batch)])
    trainer.on_epoch_end()  # writes checkpoint_best.pth
    best = Path(trainer.output_folder) / "checkpoint_best.pth"
    assert load_checkpoint(best)["current_epoch"] == 1
    path = tmp_path / "checkpoint_final.pth"
    trainer.save_checkpoint(str(path))  # nnU-Net's writer, after the epoch has ended

    state = load_checkpoint(path)
    full = torch.load(path, map_location="cpu", weights_only=False)  # the unrestricted reading, for reference
    assert state.keys() == full.keys()
    assert state["trainer_name"] == "nnUNetTrainerFD" and state["current_epoch"] == 2
    assert state["_best_ema"] == full["_best_ema"] and isinstance(full["_best_ema"], np.floating)
    assert state["init_args"]["configuration"] == "2d" and state["init_args"]["device"] == torch.device("cpu")
    for key, tensor in full["network_weights"].items():
        assert torch.equal(state["network_weights"][key], tensor), key
    assert isinstance(full["logging"]["mean_fg_dice"][0], np.floating)  # there are NumPy scalars to allow
    for key, values in full["logging"].items():
        got = state["logging"][key]
        assert len(got) == len(values), key
        for a, b in zip(got, values, strict=True):
            assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), key
    assert any(k.startswith("fd/") for k in state["logging"])  # fdseg's trainer logs L_fd per layer


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_file_with_other_python_objects_is_refused_without_running_them(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"network_weights": {"w": torch.zeros(2)}, "trainer_name": _RunsCode(marker)}, path)
    with pytest.raises(ValueError, match=r"evil\.pth: refused to load: .*\(posix\.system\)"):
        load_checkpoint(path)
    assert not marker.exists()
    other = tmp_path / "path.pth"
    torch.save({"network_weights": {}, "dataset": Path("/data")}, other)
    with pytest.raises(ValueError, match=r"pathlib\.\w*PosixPath"):
        load_checkpoint(other)
    weights = tmp_path / "tensor.pth"
    torch.save(torch.ones(3), weights)
    with pytest.raises(ValueError, match="not an nnU-Net checkpoint"):
        load_checkpoint(weights)
    plain = tmp_path / "plain.pth"
    torch.save({"_best_ema": np.float64(0.25), "lr": [np.float32(0.5)], "dtype": np.dtype("float64")}, plain)
    state = load_checkpoint(plain)
    assert state["_best_ema"] == 0.25 and state["lr"] == [0.5] and state["dtype"] == np.dtype("float64")
