"""A re-read ``split.json`` is validated like a fresh split: leakage and foreign ids fail, naming the file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from fdseg.data.errors import SplitError
from fdseg.training.config import ExperimentConfig
from fdseg.training.data import build_run_data

Tiny = Callable[..., ExperimentConfig]


def _edit(path: Path, source: str, name: str, ids: list[str]) -> None:
    payload = json.loads(path.read_text())
    payload["sources"][source]["sets"][name] = ids
    path.write_text(json.dumps(payload))


def test_saved_split_reloads_unchanged(tmp_path: Path, data_dir: Path, tiny: Tiny) -> None:
    cfg = tiny(data_dir)
    first = build_run_data(cfg, tmp_path / "run").split
    assert build_run_data(cfg, tmp_path / "run").split == first


def test_saved_split_with_an_id_in_two_sets_is_refused(tmp_path: Path, data_dir: Path, tiny: Tiny) -> None:
    cfg = tiny(data_dir)
    split = build_run_data(cfg, tmp_path / "run").split
    path = tmp_path / "run" / "split.json"
    _edit(path, "base", "val", [*split["val"], split["test"][0]])
    with pytest.raises(SplitError, match=r"split\.json.*" + split["test"][0] + ".*in both") as info:
        build_run_data(cfg, tmp_path / "run")
    assert str(path) in str(info.value)


@pytest.mark.parametrize("source", ["base", "novel"])
def test_saved_split_with_a_path_outside_the_root_is_refused(
    tmp_path: Path, data_dir: Path, tiny: Tiny, source: str
) -> None:
    cfg = tiny(data_dir)
    split = build_run_data(cfg, tmp_path / "run").split
    path = tmp_path / "run" / "split.json"
    name = "test" if source == "base" else "train"
    ids = split[name] if source == "base" else split["novel"]
    _edit(path, source, name, [*ids, "../../../etc/passwd"])
    with pytest.raises(SplitError, match=r"outside the dataset root") as info:
        build_run_data(cfg, tmp_path / "run")
    assert str(path) in str(info.value) and f"source {source!r}" in str(info.value)


def test_saved_split_with_an_unknown_novel_id_is_refused(tmp_path: Path, data_dir: Path, tiny: Tiny) -> None:
    cfg = tiny(data_dir)
    build_run_data(cfg, tmp_path / "run")
    path = tmp_path / "run" / "split.json"
    _edit(path, "novel", "train", ["0000", "nope"])
    with pytest.raises(SplitError, match=r"split\.json.*unknown id 'nope'"):
        build_run_data(cfg, tmp_path / "run")


def test_saved_split_that_leaves_base_images_out_is_refused(
    tmp_path: Path, data_dir: Path, tiny: Tiny
) -> None:
    cfg = tiny(data_dir)
    split = build_run_data(cfg, tmp_path / "run").split
    path = tmp_path / "run" / "split.json"
    _edit(path, "base", "test", split["test"][:1])  # the other test images are in no set now
    left = len(split["test"]) - 1
    with pytest.raises(SplitError, match=rf"split\.json: {left} base image\(s\) are in no set \(e\.g\. "):
        build_run_data(cfg, tmp_path / "run")
