"""Atomic writes (fdseg._io) and the shared argument checks (fdseg._checks)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fdseg._checks import check_int, check_layer_names
from fdseg._io import atomic_path, atomic_write_bytes, atomic_write_text
from fdseg.data.base import official_split_ids


def test_atomic_write_creates_folders_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.txt"
    assert atomic_write_text(target, "first\n") == target
    assert target.read_text(encoding="utf-8") == "first\n"
    atomic_write_bytes(target, "zweite Zeile ü\n".encode())
    assert target.read_text(encoding="utf-8") == "zweite Zeile ü\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]  # no temporary file left


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write_text(target, '{"epoch": 3}')
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text('{"epo')  # half written
        raise RuntimeError("disk full")
    assert target.read_text() == '{"epoch": 3}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_killed_writer_leaves_the_previous_file(tmp_path: Path) -> None:
    """SIGKILL while the temporary file is being written: the target keeps its complete old content."""
    target = tmp_path / "big.bin"
    atomic_write_bytes(target, b"old")
    code = (
        "import os, signal, sys\n"
        "from fdseg._io import atomic_path\n"
        f"with atomic_path({str(target)!r}) as tmp:\n"
        "    tmp.write_bytes(b'partial')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, check=False)
    assert proc.returncode == -9
    assert target.read_bytes() == b"old"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "big.bin"]
    assert len(leftovers) == 1 and leftovers[0].startswith(".big.bin.") and leftovers[0].endswith(".tmp")


def test_atomic_files_get_default_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "report.html", "<p>")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644  # readable by others, unlike a mkstemp file (0o600)


def test_check_int() -> None:
    assert check_int("n", 3) == 3
    assert check_int("warmup", 0, minimum=0) == 0
    with pytest.raises(ValueError, match=r"^base_width must be an int >= 1, got 0$"):
        check_int("base_width", 0)
    with pytest.raises(ValueError, match=r"width must be an int >= 2, got 1"):
        check_int("width", 1, minimum=2)
    with pytest.raises(TypeError, match=r"n must be an int >= 1, got float 2.0"):
        check_int("n", 2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"got bool True"):
        check_int("n", True)


def test_check_layer_names() -> None:
    assert check_layer_names(["enc1", "bottleneck"]) == ("enc1", "bottleneck")
    with pytest.raises(TypeError, match=r"got the string 'enc1'; use \['enc1'\]"):
        check_layer_names("enc1")
    with pytest.raises(ValueError, match="at least one"):
        check_layer_names([])
    with pytest.raises(TypeError, match="expected str tap names, got 3"):
        check_layer_names(["enc1", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"duplicate names \['enc1'\]"):
        check_layer_names(["enc1", "dec1", "enc1"])


def test_official_split_ids_keeps_order_and_names() -> None:
    items = [("b", "test"), ("a", "train"), ("c", None), ("d", "train"), ("e", "val")]
    assert official_split_ids(items) == {"test": ["b"], "train": ["a", "d"], "val": ["e"]}
    assert official_split_ids([("a", None), ("b", None)]) is None
    assert official_split_ids([]) is None
