"""A config is checked completely before anything is written; one process per run directory; env.json history.

Covers: the pre-flight dry run (image size, optimiser values), the strict YAML reader (empty file, duplicate
keys, alias bombs, YAML 1.2 numbers inside ``*_kwargs``), the run-directory lock (live owner refused, a dead
owner's lock taken over), ``env.json`` kept and appended on a rerun, and ``split.json`` ids listed twice.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from fdseg.cli import main
from fdseg.data.errors import SplitError
from fdseg.training.config import ExperimentConfig
from fdseg.training.data import build_run_data
from fdseg.training.run import preflight, train_run
from fdseg.training.rundir import LOCK_NAME, RunLock, RunLockedError

Tiny = Callable[..., ExperimentConfig]


def _write(path: Path, cfg: ExperimentConfig, **replace: str) -> Path:
    text = cfg.to_yaml()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    return path


# -- pre-flight -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("replace", "message"),
    [
        # a depth-2 U-Net needs sides that are multiples of 4
        ({"image_size: 32": "image_size: 30"}, r"data\.image_size=30: model 'unet' cannot take 30x30"),
        ({"lr: 0.001": "lr: .nan"}, r"optim\.lr must be a finite number > 0, got nan"),
        ({"lr: 0.001": "lr: -1e-3"}, r"optim\.lr must be a finite number > 0, got -0\.001"),
        ({"weight_decay: 0.004": "weight_decay: .inf"}, r"optim\.weight_decay must be a finite number >= 0"),
        ({"eps: 1.0e-07": "eps: -1e-7"}, r"optim\.eps must be a finite number >= 0, got -1e-07"),
        # devices and strategies are resolved by Lightning before anything is written
        ({"devices: auto": "devices: '0'"}, r"train\.devices='0' / train\.strategy='auto' on cpu: .*=0"),
        ({"devices: auto": "devices: abc"}, r"train\.devices='abc' / train\.strategy='auto' on cpu: invalid"),
        ({"strategy: auto": "strategy: foo"}, r"train\.devices='auto' / train\.strategy='foo' on cpu: .*foo"),
        ({"log_every_n_steps: 50": "log_every_n_steps: 0"}, r"train\.log_every_n_steps must be an int >= 1"),
        # Lightning would train in bf16 instead, while the run says 16-mixed
        ({"precision: auto": "precision: 16-mixed"}, r"train\.precision='16-mixed' needs a CUDA GPU"),
    ],
    ids=[
        "image-size", "nan-lr", "negative-lr", "inf-weight-decay", "negative-eps", "devices-0", "devices-abc",
        "strategy", "log-every-0", "fp16-on-cpu",
    ],
)  # fmt: skip
def test_bad_config_is_one_line_and_writes_nothing(
    tmp_path: Path,
    data_dir: Path,
    tiny: Tiny,
    capsys: pytest.CaptureFixture[str],
    replace: dict[str, str],
    message: str,
) -> None:
    config = _write(tmp_path / "bad.yaml", tiny(data_dir), **replace)
    out = tmp_path / "runs" / "run"
    assert main(["train", "-c", str(config), "-o", str(out), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert re.search(message, err), err
    assert not out.exists() and not out.parent.exists()  # no run directory, not even its parent


def test_out_that_is_a_file_is_one_line(
    tmp_path: Path, data_dir: Path, tiny: Tiny, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write(tmp_path / "c.yaml", tiny(data_dir))
    out = tmp_path / "notes.txt"
    out.write_text("kept\n")
    assert main(["train", "-c", str(config), "-o", str(out), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {out}: the run directory (--out) is a file" and out.read_text() == "kept\n"


def test_preflight_runs_the_model_at_the_configured_size(data_dir: Path, tiny: Tiny) -> None:
    preflight(tiny(data_dir))  # 32 is a multiple of 4: passes
    with pytest.raises(ValueError, match=r"data\.image_size=36: model 'unet'"):
        # 36 is a multiple of 4 but not of 8: the 3-level U-Net cannot take it
        preflight(tiny(data_dir, data={"image_size": 36}, model={"kwargs": {"base_width": 4, "depth": 3}}))


# -- YAML -----------------------------------------------------------------------------------------------
def test_empty_yaml_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here\n")
    with pytest.raises(ValueError, match=rf"{path}:1: the config file is empty"):
        ExperimentConfig.from_yaml(path)


def test_duplicate_key_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("schema: 1\noptim:\n  lr: 0.1\n  weight_decay: 0.0\n  lr: 0.2\n")
    with pytest.raises(ValueError, match=rf"{path}:5: duplicate key 'lr' \(first on line 3\)"):
        ExperimentConfig.from_yaml(path)


def test_alias_expansion_is_bounded(tmp_path: Path) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefgh"):
        prev = "abcdefgh"[i]
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 10)}]")
    lines.append("model: {name: unet, kwargs: {bomb: *h}}")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    started = time.perf_counter()
    with pytest.raises(ValueError, match=rf"{path}:2: YAML aliases expand to more than 10000 values"):
        ExperimentConfig.from_yaml(path)
    assert time.perf_counter() - started < 5.0  # refused before anything is expanded (10^8 values)


def test_small_aliases_still_work(tmp_path: Path) -> None:
    path = tmp_path / "alias.yaml"
    path.write_text("schema: 1\nloss:\n  layers: &l [enc1, dec1]\n  fd: true\nmodel:\n  kwargs: {depth: 2}\n")
    assert ExperimentConfig.from_yaml(path).loss.layers == ("enc1", "dec1")


def test_exponent_numbers_are_numbers_inside_kwargs(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "schema: 1\nloss:\n  fd: true\n  lambda_kwargs: {lambda_max: 1e-3, warmup_epochs: 2}\n"
        "optim:\n  lr: 3E-4\nmodel:\n  kwargs: {dropout: .5, name_like: 1e3x}\n"
    )
    cfg = ExperimentConfig.from_yaml(path)
    assert cfg.loss.lambda_kwargs == {"lambda_max": 0.001, "warmup_epochs": 2}
    assert isinstance(cfg.loss.lambda_kwargs["lambda_max"], float)
    assert cfg.optim.lr == 3e-4
    assert cfg.model.kwargs == {"dropout": 0.5, "name_like": "1e3x"}
    assert ExperimentConfig().with_overrides(["loss.lambda_kwargs.lambda_max=2e-3"]).loss.lambda_kwargs == {
        "lambda_max": 0.002
    }


# -- one process per run directory ----------------------------------------------------------------------
def _fork_lock_holder(run: Path, *, stay: bool) -> int:
    """A real process that takes the run's lock; it sleeps (``stay``) or dies without releasing it."""
    pid = os.fork()
    if pid == 0:  # child: no pytest, no torch work
        try:
            RunLock(run).acquire()
            if stay:
                time.sleep(60)
        finally:
            os._exit(0)
    deadline = time.monotonic() + 30
    while not (run / LOCK_NAME).is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    return pid


def test_second_training_into_a_live_run_dir_is_refused(
    tmp_path: Path, data_dir: Path, tiny: Tiny, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    holder = _fork_lock_holder(run, stay=True)
    try:
        with pytest.raises(RunLockedError, match=rf"in use by process {holder}"):
            train_run(tiny(data_dir), run)
        config = _write(tmp_path / "c.yaml", tiny(data_dir))
        assert main(["train", "-c", str(config), "-o", str(run), "--device", "cpu"]) == 1
        err = capsys.readouterr().err.strip()
        assert err == err.splitlines()[0] and f"in use by process {holder}" in err and LOCK_NAME in err
    finally:
        os.kill(holder, signal.SIGKILL)
        os.waitpid(holder, 0)
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == holder  # the refused process left it alone


def test_stale_lock_is_taken_over_with_a_message(
    tmp_path: Path, data_dir: Path, tiny: Tiny, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    dead = _fork_lock_holder(run, stay=False)
    os.waitpid(dead, 0)
    cfg = tiny(data_dir, train={"epochs_phase1": 1, "epochs_phase2": 0})
    with caplog.at_level(logging.WARNING, logger="fdseg"):
        train_run(cfg, run, evaluate=False)
    assert f"taking over the stale lock of process {dead}" in caplog.text
    assert (run / "DONE").is_file() and not (run / LOCK_NAME).exists()


# -- env.json and split.json ------------------------------------------------------------------------------
class _Crash(pl.Callback):
    """A crash after epoch 0 and its checkpoint."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 1:
            raise RuntimeError("simulated crash")


def test_rerun_keeps_env_json_and_appends_its_environment(tmp_path: Path, data_dir: Path, tiny: Tiny) -> None:
    cfg = tiny(data_dir, train={"epochs_phase1": 2, "epochs_phase2": 0})
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_run(cfg, run, callbacks=[_Crash()], evaluate=False)
    first = json.loads((run / "env.json").read_text())
    assert "reruns" not in first and first["torch"]
    train_run(cfg, run, evaluate=False)
    env = json.loads((run / "env.json").read_text())
    assert {k: v for k, v in env.items() if k != "reruns"} == first  # the first start's provenance is kept
    assert len(env["reruns"]) == 1 and set(env["reruns"][0]) == set(first)


@pytest.mark.parametrize("where", ["same set", "two sets"])
def test_split_json_with_an_id_listed_twice_is_refused(
    tmp_path: Path, data_dir: Path, tiny: Tiny, where: str
) -> None:
    cfg = tiny(data_dir)
    split = build_run_data(cfg, tmp_path / "run").split
    path = tmp_path / "run" / "split.json"
    payload = json.loads(path.read_text())
    dup = split["train"][0]
    target = "train" if where == "same set" else "test"
    payload["sources"]["base"]["sets"][target].append(dup)
    path.write_text(json.dumps(payload))
    expected = "appears twice in the 'train' set" if where == "same set" else "is in both 'train' and 'test'"
    with pytest.raises(SplitError, match=rf"split\.json.*'{dup}' {expected}"):
        build_run_data(cfg, tmp_path / "run")


def test_train_accelerator_is_read_and_checked(
    tmp_path: Path, data_dir: Path, tiny: Tiny, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ValueError, match=r"train\.accelerator.*'tpu'.*valid.*auto.*cpu.*gpu"):
        ExperimentConfig().with_overrides(["train.accelerator=tpu"])
    cfg = tiny(data_dir, train={"epochs_phase1": 1, "epochs_phase2": 0, "accelerator": "cpu"})
    config = _write(tmp_path / "c.yaml", cfg)
    run = tmp_path / "run"
    assert main(["train", "-c", str(config), "-o", str(run), "--no-eval"]) == 0  # no --device: the config's
    assert "device: cpu" in capsys.readouterr().out
    env = json.loads((run / "env.json").read_text())
    assert env["accelerator"] == "cpu"
    gpu = _write(tmp_path / "g.yaml", cfg.with_overrides(["train.accelerator=gpu"]))
    if not torch.cuda.is_available():  # the config asks for a GPU: refused in one line before any write
        assert main(["train", "-c", str(gpu), "-o", str(tmp_path / "g"), "--no-eval"]) == 1
        assert "CUDA is not available" in capsys.readouterr().err
        assert not (tmp_path / "g").exists()
    # --device overrides the config
    assert main(["train", "-c", str(gpu), "-o", str(tmp_path / "c"), "--no-eval", "--device", "cpu"]) == 0
