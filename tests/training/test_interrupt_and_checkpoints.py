"""Ctrl-C says where training stopped; unloadable checkpoints and divergence are one line naming the cause."""

from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from fdseg.cli import main
from fdseg.models import create_model
from fdseg.training.config import ExperimentConfig
from fdseg.training.run import train_run
from fdseg.training.rundir import CheckpointError, checkpoint_meta, load_model_weights
from fdseg.training.task import NonFiniteLossError, SegmentationTask

Tiny = Callable[..., ExperimentConfig]
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "code", "by"),
    [(signal.SIGINT, 130, ""), (signal.SIGTERM, 143, r" \(SIGTERM\)")],
    ids=["int", "term"],
)
def test_ctrl_c_says_where_and_exits_130(
    tmp_path: Path, data_dir: Path, tiny: Tiny, sig: int, code: int, by: str
) -> None:
    cfg = tiny(data_dir, train={"epochs_phase1": 200, "epochs_phase2": 0})
    config = tmp_path / "c.yaml"
    cfg.to_yaml(config)
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fdseg.cli", "train", "-c", str(config), "-o", str(run), "--device", "cpu"],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if (run / "checkpoints" / "last.ckpt").is_file():  # epoch 0 is done and saved
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err[-2000:]
    last = err.strip().splitlines()[-1]
    message = (
        rf"interrupted at epoch (\d+) \(phase 1\){by}; rerun the same command to resume from epoch (\d+) "
        r"\(last\.ckpt; written every train\.checkpoint_every_s\)"
    )
    found = re.fullmatch(message, last)
    assert found, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    meta = checkpoint_meta(run / "checkpoints" / "last.ckpt")  # still a loadable checkpoint
    # the message counts epochs from 1 (as the epoch lines); the checkpoint's epoch counts from 0 and is
    # the one before the interrupted epoch, or that epoch itself when it had just been saved
    assert meta is not None and int(found.group(1)) - 2 <= meta["epoch"] <= int(found.group(1)) - 1
    assert int(found.group(2)) == meta["epoch"] + 2  # the epoch after the saved one, counted from 1
    assert not (run / "train.lock").exists() and not (run / "DONE").exists()


# -- checkpoints that cannot be loaded ------------------------------------------------------------------
class _Hostile:
    """Unpickling this would call a function of the file's choosing (here a harmless one)."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (os.getpid, ())


def _hostile(path: Path) -> str:
    torch.save({"state_dict": {}, "payload": _Hostile()}, path)
    return r"refused: it holds objects other than tensors and plain containers"


def _truncated(path: Path) -> str:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return r"truncated or not a checkpoint file"


def _garbage(path: Path) -> str:
    # bytes that are no pickle: the first is pickle's STOP opcode, the unpickler fails inside itself
    path.write_bytes(b"." + np.random.default_rng(0).bytes(2000))
    return r"truncated or not a checkpoint file"


def _other_architecture(path: Path) -> str:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    other = create_model("unet", in_channels=3, out_channels=1, base_width=8, depth=2)
    ckpt["state_dict"] = {f"model.{k}": v for k, v in other.state_dict().items()}
    torch.save(ckpt, path)
    return r"weights of another architecture than UNet: .*of another shape \(e\.g\. enc1"


@pytest.fixture
def trained(tmp_path: Path, data_dir: Path, tiny: Tiny) -> Path:
    return train_run(
        tiny(data_dir, train={"epochs_phase1": 1, "epochs_phase2": 0}), tmp_path / "run", evaluate=False
    )


@pytest.mark.parametrize(
    "spoil", [_hostile, _truncated, _garbage, _other_architecture], ids=lambda f: f.__name__[1:]
)
def test_unloadable_checkpoint_is_one_line_naming_file_and_reason(
    trained: Path, capsys: pytest.CaptureFixture[str], spoil: Callable[[Path], str]
) -> None:
    path = trained / "checkpoints" / "best.ckpt"
    reason = spoil(path)
    model = create_model("unet", in_channels=3, out_channels=1, base_width=4, depth=2)
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))}: {reason}") as info:
        load_model_weights(model, path)
    assert "\n" not in str(info.value) and "weights_only=False" not in str(info.value)
    assert main(["evaluate", str(trained), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}: ") and "\n" not in err and re.search(reason, err)


@pytest.mark.parametrize(
    "spoil", [_hostile, _truncated, _garbage, _other_architecture], ids=lambda f: f.__name__[1:]
)
def test_resume_from_an_unloadable_last_ckpt_names_it(
    trained: Path, data_dir: Path, tiny: Tiny, spoil: Callable[[Path], str]
) -> None:
    (trained / "DONE").unlink()
    path = trained / "checkpoints" / "last.ckpt"
    reason = spoil(path)
    hint = "; delete it to train this run from its start$"
    said: list[str] = []
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))}: {reason}.*{hint}"):
        cfg = tiny(data_dir, train={"epochs_phase1": 1, "epochs_phase2": 0})
        train_run(cfg, trained, evaluate=False, echo=said.append)
    assert not [line for line in said if line.startswith("resuming")]  # it did not resume


def test_resume_from_a_best_weights_file_is_refused_before_the_history_is_touched(
    trained: Path, data_dir: Path, tiny: Tiny
) -> None:
    (trained / "DONE").unlink()
    ckpt = trained / "checkpoints"
    (ckpt / "last.ckpt").write_bytes((ckpt / "best.ckpt").read_bytes())  # weights and stamp only
    history = (trained / "history.csv").read_text()
    cfg = tiny(data_dir, train={"epochs_phase1": 1, "epochs_phase2": 0})
    refused = r"not a checkpoint to resume from \(no optimizer_states, loops;"
    with pytest.raises(CheckpointError, match=refused):
        train_run(cfg, trained, evaluate=False)
    assert (trained / "history.csv").read_text() == history


def test_checkpoints_without_config_yaml_are_refused(trained: Path, data_dir: Path, tiny: Tiny) -> None:
    (trained / "config.yaml").unlink()
    cfg = tiny(data_dir, train={"epochs_phase1": 1, "epochs_phase2": 0}).with_overrides(["optim.lr=0.1"])
    with pytest.raises(ValueError, match=r"holds checkpoints but no config\.yaml"):
        train_run(cfg, trained, evaluate=False)
    assert not (trained / "config.yaml").exists()  # nothing written in its place


def test_hostile_pickle_is_never_run(tmp_path: Path) -> None:
    class Trap:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (Path.touch, (str(tmp_path / "ran"),))  # type: ignore[return-value]

    path = tmp_path / "x.ckpt"
    with path.open("wb") as fh:
        pickle.dump({"state_dict": Trap()}, fh)
    model = create_model("unet", in_channels=3, out_channels=1, base_width=4, depth=2)
    with pytest.raises(CheckpointError, match="refused"):
        load_model_weights(model, path)
    assert not (tmp_path / "ran").exists()


# -- divergence -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("lr", "expected"),
    [
        # the first update overflows the activations: step 1's loss is NaN
        (1e30, r"global step 1 \(phase 1, epoch 0, batch 1\): non-finite term seg=nan.*first non-finite in "
               r"layer enc1 \(output of module enc1\.\d+\)"),
        # the weights stay finite, but the last update of epoch 0 makes the validation logits overflow
        (1e6, r"global step 3 \(phase 1, epoch 0\): non-finite term val_loss .*first non-finite in layer "
              r"dec2 \(output of module dec2\.[\w.]+\)"),
    ],
    ids=["train-step", "validation"],
)  # fmt: skip
def test_divergence_names_step_phase_term_and_layer(
    tmp_path: Path, data_dir: Path, tiny: Tiny, lr: float, expected: str
) -> None:
    cfg = tiny(data_dir, optim={"lr": lr})
    with pytest.raises(NonFiniteLossError, match=expected) as info:
        train_run(cfg, tmp_path / "run")
    assert str(info.value).startswith("training diverged at global step") and "\n" not in str(info.value)


def test_deferred_check_still_names_the_first_non_finite_step(
    tmp_path: Path, data_dir: Path, tiny: Tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as on an accelerator: the loss is checked on the host only every 3 steps (a device-side record between)
    monkeypatch.setattr(SegmentationTask, "finite_check_every", property(lambda self: 3))
    cfg = tiny(data_dir, optim={"lr": 1e30})
    with pytest.raises(NonFiniteLossError) as info:
        train_run(cfg, tmp_path / "run")
    message = str(info.value)
    assert re.search(r"global step 1 \(phase 1, epoch 0\): non-finite term seg=nan", message), message
    # the check ran at the third batch, after two updates
    where = r"first non-finite in layer enc1 \(parameter enc1[\w.]+\) \(weights checked at step 2\)"
    assert re.search(where, message), message
