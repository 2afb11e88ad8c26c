"""A config path that is a directory or a file that is not UTF-8 text: one line naming the path."""

from __future__ import annotations

from pathlib import Path

import pytest

from fdseg.training._yaml import load_yaml_file


def test_a_directory_given_as_config_is_named_as_a_directory(tmp_path: Path) -> None:
    folder = tmp_path / "exp.yaml"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match=r"exp\.yaml is a directory"):
        load_yaml_file(folder)


def test_a_binary_config_file_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ValueError, match=r"exp\.yaml: not a UTF-8 text file \(byte 0\)") as info:
        load_yaml_file(path)
    assert "\n" not in str(info.value)


def test_a_missing_config_file_is_still_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_yaml_file(tmp_path / "absent.yaml")
