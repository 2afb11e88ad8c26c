"""Reading a run's files for a report: every reader returns ``(value, problem)`` and never raises on a bad
or missing file, so that a report can say what is missing instead of crashing."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

__all__ = ["flatten", "read_csv", "read_json", "read_yaml"]


def read_csv(path: Path) -> tuple[pd.DataFrame | None, str | None]:
    """``(table, None)``, or ``(None, reason)`` when the file is missing, empty or not a CSV table."""
    if not path.is_file():
        return None, f"{path.name} not found in {path.parent}"
    try:
        frame = pd.read_csv(path, dtype={"id": str})  # ids such as "001" stay text
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        return None, f"{path} could not be read as CSV: {err}"
    if frame.empty:
        return None, f"{path} has no rows"
    return frame, None


def read_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(object, None)``, or ``(None, reason)`` when the file is missing or not a JSON object."""
    if not path.is_file():
        return None, f"{path.name} not found in {path.parent}"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        return None, f"{path} could not be read as JSON: {err}"
    if not isinstance(data, dict):
        return None, f"{path} holds a JSON {type(data).__name__}, expected an object"
    return data, None


def read_yaml(path: Path) -> tuple[Any, str | None, str | None]:
    """``(data, text, None)``, or ``(None, text_or_None, reason)`` when missing or not valid YAML."""
    if not path.is_file():
        return None, None, f"{path.name} not found in {path.parent}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return None, None, f"{path} could not be read: {err}"
    try:
        return yaml.safe_load(text), text, None
    except yaml.YAMLError as err:
        return None, text, f"{path} is not valid YAML: {err}"


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level with dotted keys; lists are kept as their text."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, prefix=f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value)
        else:
            out[name] = value
    return out
