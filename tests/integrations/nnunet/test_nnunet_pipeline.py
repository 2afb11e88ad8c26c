"""End to end on CPU: export + plan (fixture), train nnUNetTrainerFD 2 epochs, predict, collect, resume."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pytest

from conftest import Planned, needs_nnunet, run_cli


@pytest.mark.slow
@pytest.mark.timeout(1200)  # three nnU-Net processes; minutes on a busy 2-core machine
@needs_nnunet
def test_train_fd_two_epochs_predict_collect_and_resume(
    planned: Planned, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train_args = ["nnunet", "train", "903", "2d", "0", "--trainer", "FD", "--iterations", "1",
                  "--val-iterations", "1", "--warmup-epochs", "1", "--lambda-max", "0.01", "--device", "cpu",
                  "--no-validate", *planned.roots()]  # fmt: skip
    train = run_cli([*train_args, "--epochs", "2"])
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    from fdseg.integrations.nnunet import load_checkpoint

    fold = planned.results / "Dataset903_Tiny" / "nnUNetTrainerFD__nnUNetPlans__2d" / "fold_0"
    state = load_checkpoint(fold / "checkpoint_final.pth")  # weights_only=True: tensors and NumPy scalars
    assert state["trainer_name"] == "nnUNetTrainerFD" and state["current_epoch"] == 2
    fd_keys = sorted(k for k in state["logging"] if k.startswith("fd/"))
    assert fd_keys == sorted(
        f"fd/{n}" for n in ("enc1", "enc2", "enc3", "bottleneck", "dec3", "dec2", "dec1")
    )
    assert all(
        len(state["logging"][k]) == 2 and all(math.isfinite(v) for v in state["logging"][k]) for k in fd_keys
    )
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    lambdas = re.findall(r"L_fd λ per layer: (\S+)", log)
    assert lambdas == ["0.0", "0.01"]  # phase 1 (λ = 0), then phase 2 (λ_max on every layer)

    pred = tmp_path / "pred"
    predict = run_cli(
        ["nnunet", "predict", str(fold), str(planned.dataset / "imagesTs"), "-o", str(pred), "--no-mirroring",
         "--device", "cpu"]
    )  # fmt: skip
    assert predict.returncode == 0, predict.stderr[-3000:]
    n_test = len(list((planned.dataset / "imagesTs").iterdir()))
    assert len(list(pred.glob("*.png"))) == n_test
    collect = run_cli(
        ["nnunet", "collect", str(pred), "--dataset", str(planned.dataset), "-o", str(tmp_path / "run")]
    )
    assert collect.returncode == 0, collect.stderr
    with (tmp_path / "run" / "test" / "per_sample.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == n_test and all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)

    resume = run_cli([*train_args, "--epochs", "3", "--c"])
    assert resume.returncode == 0, resume.stdout[-3000:] + resume.stderr[-3000:]
    state = load_checkpoint(fold / "checkpoint_final.pth")
    assert state["current_epoch"] == 3
    assert all(len(state["logging"][k]) == 3 for k in fd_keys)
    # resuming with other L_fd settings is refused before anything trains
    from fdseg.integrations.nnunet import train_nnunet
    from fdseg.integrations.nnunet_env import FdSettings

    monkeypatch.setenv("nnUNet_preprocessed", str(planned.preprocessed))
    monkeypatch.setenv("nnUNet_results", str(planned.results))
    with pytest.raises(ValueError, match="the run started with L_fd settings"):
        train_nnunet(903, "2d", 0, fd_settings=FdSettings(lambda_max=0.5, warmup_epochs=1), resume=True,
                     epochs=4, device="cpu")  # fmt: skip
    assert load_checkpoint(fold / "checkpoint_final.pth")["current_epoch"] == 3
