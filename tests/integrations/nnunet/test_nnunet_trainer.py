"""The FD trainers: taps with fdseg's names; loss = nnU-Net's loss + Σ_l λ_l L_fd^l, checked independently."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import NO_NNUNET, Planned

nnunetv2 = pytest.importorskip("nnunetv2", reason=NO_NNUNET)

from dynamic_network_architectures.architectures.unet import (  # noqa: E402
    PlainConvUNet,
    ResidualEncoderUNet,
)
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer  # noqa: E402

from fdseg.integrations.nnunet import (  # noqa: E402
    nnunet_taps,
    nnUNetTrainerFD,
    nnUNetTrainerFDExch,
)
from fdseg.integrations.nnunet_env import EXT_TRAINER_DIR, FdSettings  # noqa: E402


def _unet(cls: type, n_stages: int) -> torch.nn.Module:
    common: dict[str, Any] = {
        "input_channels": 3,
        "n_stages": n_stages,
        "features_per_stage": [4 * 2**i for i in range(n_stages)],
        "conv_op": torch.nn.Conv2d,
        "kernel_sizes": 3,
        "strides": [1] + [2] * (n_stages - 1),
        "num_classes": 2,
        "n_conv_per_stage_decoder": 1,
        "norm_op": torch.nn.InstanceNorm2d,
        "nonlin": torch.nn.LeakyReLU,
        "deep_supervision": True,
    }
    if cls is ResidualEncoderUNet:
        return cls(n_blocks_per_stage=1, **common)
    return cls(n_conv_per_stage=1, **common)


@pytest.mark.parametrize("cls", [PlainConvUNet, ResidualEncoderUNet])
def test_taps_name_stages_by_resolution(cls: type) -> None:
    net = _unet(cls, 5)
    taps = nnunet_taps(net)
    assert list(taps) == ["enc1", "enc2", "enc3", "enc4", "bottleneck", "dec4", "dec3", "dec2", "dec1"]
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        net.get_submodule(path).register_forward_hook(
            lambda m, i, o, name=name: shapes.__setitem__(name, tuple(o.shape))
        )
        for name, path in taps.items()
    ]
    net(torch.zeros(1, 3, 64, 64))
    for h in hooks:
        h.remove()
    # enc<k>/dec<k> at 64 / 2**(k-1); the bottleneck at 64 / 16
    for name, side in {
        "enc1": 64,
        "enc2": 32,
        "enc3": 16,
        "enc4": 8,
        "bottleneck": 4,
        "dec4": 8,
        "dec1": 64,
    }.items():
        assert shapes[name][-2:] == (side, side), name


def test_deeper_networks_continue_the_names() -> None:
    taps = nnunet_taps(_unet(PlainConvUNet, 7))
    assert list(taps) == [
        "enc1", "enc2", "enc3", "enc4", "enc5", "enc6", "bottleneck", "dec6", "dec5", "dec4", "dec3", "dec2",
        "dec1",
    ]  # fmt: skip
    assert taps["bottleneck"] == "encoder.stages.6" and taps["dec1"] == "decoder.stages.5"
    with pytest.raises(TypeError, match="not an nnU-Net U-Net"):
        nnunet_taps(torch.nn.Conv2d(1, 1, 1))


def _trainer(cls: type, planned: Planned, results: Path, settings: FdSettings | None = None) -> Any:
    folder = planned.preprocessed / "Dataset903_Tiny"
    plans = json.loads((folder / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False
    dataset_json = json.loads((folder / "dataset.json").read_text())
    trainer = cls(
        plans=plans, configuration="2d", fold=0, dataset_json=dataset_json, device=torch.device("cpu")
    )
    if settings is not None:
        trainer.fd_settings = settings
    trainer.initialize()
    return trainer


def _batch(trainer: Any) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    data = torch.randn(2, 3, 32, 32, generator=g)
    full = torch.zeros(2, 1, 32, 32)
    full[0, :, 4:14, 6:20] = 1
    full[1, :, 18:30, 2:11] = 1
    targets = [full]
    for scale in trainer._get_deep_supervision_scales()[1:]:
        targets.append(F.interpolate(full, size=int(32 * scale[0]), mode="nearest"))
    return {"data": data, "target": targets}


def _reference_lfd(features: np.ndarray, mask: np.ndarray) -> float:
    """Paper preset by hand: max-pooled mask, region means, channel-mean squared gap, -log(X + 1e-6)."""
    _b, _c, h, w = features.shape
    kh, kw = mask.shape[-2] // h, mask.shape[-1] // w
    small = mask.reshape(mask.shape[0], h, kh, w, kw).max(axis=(2, 4))
    values = []
    for b in range(features.shape[0]):
        fg, bg = small[b] > 0.5, small[b] <= 0.5
        if fg.sum() == 0 or bg.sum() == 0:
            continue
        gap = features[b][:, fg].mean(axis=1) - features[b][:, bg].mean(axis=1)
        values.append(-np.log(np.mean(gap**2) + 1e-6))
    return float(np.mean(values))


@pytest.mark.timeout(900)  # the first user of the planned fixture pays for nnU-Net's planning
def test_fd_loss_is_base_loss_plus_weighted_lfd(
    planned: Planned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("nnUNet_preprocessed", str(planned.preprocessed))
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    lam = 0.05
    base = _trainer(nnUNetTrainer, planned, tmp_path)
    fd = _trainer(nnUNetTrainerFD, planned, tmp_path, FdSettings(lambda_max=lam, warmup_epochs=0))
    fd.network.load_state_dict(base.network.state_dict())
    fd.on_train_epoch_start()  # epoch 0 after a warm-up of 0 epochs: λ = λ_max on every layer
    # independent taps: every encoder and decoder stage, found by walking the network here
    net = fd.network
    modules = list(net.encoder.stages) + list(net.decoder.stages)
    captured: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: captured.append(o.detach().double())) for m in modules]
    batch = _batch(base)
    base_loss = float(base.train_step(batch)["loss"])
    out = fd.train_step(batch)
    for h in hooks:
        h.remove()
    assert len(captured) == len(modules) == 2 * len(net.encoder.stages) - 1
    mask = batch["target"][0].numpy()[:, 0]
    per_layer = [_reference_lfd(f.numpy(), mask) for f in captured]
    assert float(out["loss"]) == pytest.approx(base_loss + lam * sum(per_layer), rel=1e-5, abs=1e-6)
    assert float(out["seg_loss"]) == pytest.approx(base_loss, rel=1e-6)
    # the trainer's logged per-layer values are the same numbers, in canonical order
    logged = [out[f"fd/{name}"] for name in nnunet_taps(net)]
    np.testing.assert_allclose(logged, per_layer, rtol=1e-5)
    assert min(per_layer) != max(per_layer)  # the layers really differ: a mix-up would show


@pytest.mark.timeout(900)
def test_warmup_epochs_keep_lambda_zero_and_exch_adds_its_term(
    planned: Planned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("nnUNet_preprocessed", str(planned.preprocessed))
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    base = _trainer(nnUNetTrainer, planned, tmp_path)
    fd = _trainer(nnUNetTrainerFDExch, planned, tmp_path, FdSettings(lambda_max=0.1, warmup_epochs=2))
    assert [fd.fd_schedule.lambdas(e)["enc1"] for e in range(4)] == [0.0, 0.0, 0.1, 0.1]
    fd.network.load_state_dict(base.network.state_dict())
    batch = _batch(base)
    fd.current_epoch = 0
    fd.on_train_epoch_start()
    base_loss = float(base.train_step(batch)["loss"])
    warm = fd.train_step(batch)
    assert float(warm["loss"]) == pytest.approx(base_loss, rel=1e-6)  # phase 1: nnU-Net's loss only
    assert all(np.isfinite(warm[f"fd_exch/{n}"]) for n in fd.fd_taps)  # ... but L_fd^exch is still logged
    fd.current_epoch = 2
    fd.on_train_epoch_start()
    fd.network.load_state_dict(base.network.state_dict())
    base2 = _trainer(nnUNetTrainer, planned, tmp_path)
    base2.network.load_state_dict(base.network.state_dict())
    on = fd.train_step(batch)
    base_on = float(base2.train_step(batch)["loss"])
    extra = sum(on[f"fd/{n}"] + on[f"fd_exch/{n}"] for n in fd.fd_taps)
    assert float(on["loss"]) == pytest.approx(base_on + 0.1 * extra, rel=1e-5)


def test_ext_trainer_folder_is_found_by_nnunet_lookup() -> None:
    """nnU-Net's lookup in nnUNet_extTrainer folders (after its own trainers) finds fdseg's classes."""
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    for name, cls in (("nnUNetTrainerFD", nnUNetTrainerFD), ("nnUNetTrainerFDExch", nnUNetTrainerFDExch)):
        found = recursive_find_python_class(
            str(EXT_TRAINER_DIR),
            name,
            None,
            base_folder=str(EXT_TRAINER_DIR),
            cleanup_imports_from_base_folder=True,
        )
        assert found is cls


def test_full_cli_lookup_where_torchvision_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import torchvision  # noqa: F401
    except Exception as err:  # the PyPI torchvision beside a CPU torch raises RuntimeError on import
        pytest.skip(
            f"nnU-Net's -tr lookup imports every trainer module and crashes here: torchvision fails ({err})"
        )
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    monkeypatch.setenv("nnUNet_extTrainer", str(EXT_TRAINER_DIR))
    assert recursive_find_trainer_class_by_name("nnUNetTrainerFD").__name__ == "nnUNetTrainerFD"
