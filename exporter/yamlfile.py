"""Reading a YAML configuration file once, with the line of every field (for error messages).

The data is what ``yaml.safe_load`` returns (no change to YAML's semantics); the line map comes from
the composed node tree (each node's ``start_mark``), keyed by field path: ``("exchange", "servers",
1, "port") -> 14``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from exporter.errors import ConfigError

KEY_LINE = "\0key"  # path suffix under which _line_map keeps a key's own line (its value may start lower)


def _line_map(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[(*path, key)] = out[(*path, key, KEY_LINE)] = key_node.start_mark.line + 1
            _line_map(value_node, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, (*path, index), out)


def read_yaml(
    path: Path,
    top_level: str = "a mapping of sections (exchange, collectors, web, ...)",
    unique_keys: bool = False,
) -> tuple[dict[str, Any], dict[tuple[Any, ...], int]]:
    """Parse the YAML file once; return the data and a map from field path to line number.
    ``top_level`` names what the document must be; ``unique_keys`` rejects a key repeated in a mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (line {line}, byte {exc.start + 1}): save it as UTF-8") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {exc.problem}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be {top_level}")
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _line_map(node, (), lines)
        if unique_keys:
            _reject_repeated_keys(path, node, ())
    return data, lines


def _reject_repeated_keys(path: Path, node: yaml.Node, loc: tuple[Any, ...]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            if key_node.value in seen:
                where = format_loc((*loc, key_node.value))
                raise ConfigError(f"{path}: {where} (line {key_node.start_mark.line + 1}): key repeated in a mapping")
            seen.add(key_node.value)
            _reject_repeated_keys(path, value_node, (*loc, key_node.value))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _reject_repeated_keys(path, item, (*loc, index))


def format_loc(loc: tuple[Any, ...]) -> str:
    """A field path as the user writes it: ``exchange.servers[1].port``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"
