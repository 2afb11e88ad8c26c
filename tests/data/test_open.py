"""Opening a dataset from a spec: ``fdseg.data.open`` sits above the record contract and the loaders."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fdseg.data
import fdseg.data.base
from fdseg.data.base import parse_spec
from fdseg.data.open import open_dataset


def test_the_contract_module_never_imports_the_loaders() -> None:
    """Every import statement of data/base.py (top level or inside functions) stays below the loaders."""
    source = Path(fdseg.data.base.__file__).read_text(encoding="utf-8")
    imported: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            imported += [a.name for a in node.names]
    assert "fdseg.data.errors" in imported  # the walk sees the module's real imports
    assert not [m for m in imported if m.startswith(("fdseg.data.formats", "fdseg.data.open"))]


def test_package_exports_the_opener() -> None:
    assert fdseg.data.open_dataset is open_dataset


def test_parse_spec_and_open_a_folder_dataset(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.full((8, 8, 3), 120, np.uint8)).save(tmp_path / "images" / "a.png")
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 255
    Image.fromarray(mask).save(tmp_path / "masks" / "a.png")
    assert parse_spec(f"folder:{tmp_path}?strict=false&x=1") == (
        "folder",
        str(tmp_path),
        {"strict": "false", "x": "1"},
    )
    raw = open_dataset(f"folder:{tmp_path}")
    assert [r.id for r in raw.records] == ["a"]
    assert int(raw[0]["mask"].sum()) == 9
    with pytest.raises(ValueError, match=r"must look like NAME:PATH \(formats: .*'folder'"):
        parse_spec(str(tmp_path).lstrip("/").replace(":", ""))
    with pytest.raises(ValueError, match="option 'oops' must be key=value"):
        parse_spec("folder:/x?oops")
    with pytest.raises(KeyError, match="fodler"):
        open_dataset(f"fodler:{tmp_path}")
