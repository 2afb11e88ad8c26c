"""A strict YAML reader for configs: YAML 1.2 numbers, no duplicate keys, bounded alias expansion.

PyYAML's ``safe_load`` follows YAML 1.1, which reads ``1e-3`` (no dot) as a string, silently keeps the last
of two equal keys, and lets a few aliases expand into millions of values ("billion laughs"). A config is
small and hand-written, so each of these is an error naming the file and the line here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

#: Values a config may expand to through aliases (every scalar, list and mapping counts once per use).
MAX_EXPANDED_NODES = 10_000

# YAML 1.2 core-schema floats: "1e-3", "1.5E+2", ".5", "-2.", plus PyYAML's .inf / .nan spellings.
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that reads YAML 1.2 floats and refuses duplicate mapping keys."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key]})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _expanded_size(node: Node, memo: dict[int, int]) -> int:
    """Nodes ``node`` stands for once every alias is expanded (memoised on shared, aliased nodes)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1  # a recursive alias counts once (PyYAML builds it as a self-reference)
    size = 1
    if isinstance(node, SequenceNode):
        size += sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, MappingNode):
        size += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    memo[key] = size
    return size


def _first_alias_line(text: str) -> int:
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent) and event.start_mark is not None:
            return event.start_mark.line + 1
    return 1


def load_yaml_text(text: str, *, source: str) -> Any:
    """Parse one YAML document strictly.

    Args:
        text: the YAML text.
        source: the file name (or another label) that errors name.

    Returns:
        The parsed value (``None`` for an empty document).

    Raises:
        ValueError: ``"<source>:<line>: <problem>"`` for invalid YAML, a duplicate key, or aliases that
            expand to more than :data:`MAX_EXPANDED_NODES` values.
    """
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_EXPANDED_NODES:
            raise ValueError(
                f"{source}:{_first_alias_line(text)}: YAML aliases expand to more than "
                f"{MAX_EXPANDED_NODES} values; write the values out instead"
            )
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ValueError(f"{source}{line}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: not valid YAML ({exc})") from None
    finally:
        loader.dispose()


def load_yaml_file(path: Path) -> Any:
    """Read ``path`` with :func:`load_yaml_text`; an empty file is an error naming it.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        IsADirectoryError: ``path`` is a directory.
        ValueError: the file is empty or not UTF-8 text, or :func:`load_yaml_text` refuses it.
    """
    if path.is_dir():
        raise IsADirectoryError(f"config file {path} is a directory, not a YAML file")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a UTF-8 text file (byte {exc.start}); expected YAML") from None
    data = load_yaml_text(text, source=str(path))
    if data is None:
        raise ValueError(f"{path}:1: the config file is empty (expected a mapping with data, model, …)")
    return data
