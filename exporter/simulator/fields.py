"""Strict readers for scenario fields: the error type and the typed getters every section parser uses.

Every getter names the offending field (``servers[0].queues[2].status: ...``) in its
:class:`ScenarioError`, so a typo in a scenario file is reported where it is.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from exporter.errors import ConfigError

__all__ = ["FieldReader", "ScenarioError"]


class ScenarioError(ConfigError):
    """The scenario file or dictionary is invalid; the message names the offending field."""


class FieldReader:
    """Typed access to the plain data of a scenario (mappings, text, numbers, flags, lists)."""

    @staticmethod
    def _mapping(value: Any, where: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ScenarioError(f"{where}: expected a mapping, got {type(value).__name__}")
        return value

    @staticmethod
    def _check_keys(data: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
        unknown = sorted(set(map(str, data)) - set(allowed))
        if unknown:
            raise ScenarioError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")

    @staticmethod
    def _str(data: Mapping[str, Any], key: str, where: str, default: str) -> str:
        value = data.get(key, default)
        if value is None:
            return default
        if not isinstance(value, str | int | float):
            raise ScenarioError(f"{where}.{key}: expected text")
        return str(value)

    @staticmethod
    def _num(data: Mapping[str, Any], key: str, where: str, default: float) -> float:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ScenarioError(f"{where}.{key}: expected a number, got {value!r}")
        return float(value)

    def _int(self, data: Mapping[str, Any], key: str, where: str, default: int, minimum: int = 0) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScenarioError(f"{where}.{key}: expected an integer, got {value!r}")
        if value < minimum:
            raise ScenarioError(f"{where}.{key}: must be >= {minimum}")
        return value

    @staticmethod
    def _bool(data: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            raise ScenarioError(f"{where}.{key}: expected true or false")
        return value

    @staticmethod
    def _guid(value: Any, where: str) -> uuid.UUID:
        try:
            return uuid.UUID(str(value))
        except ValueError as exc:
            raise ScenarioError(f"{where}: not a GUID: {value!r}") from exc

    @staticmethod
    def _strs(data: Mapping[str, Any], key: str, where: str, default: Sequence[str] = ()) -> tuple[str, ...]:
        """A list of texts (a single text counts as a list of one)."""
        value = data.get(key)
        if value is None:
            return tuple(default)
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in items):
            raise ScenarioError(f"{where}.{key}: expected a list of texts")
        return tuple(str(v) for v in items)

    @staticmethod
    def _choice(value: str, allowed: Sequence[str], where: str) -> str:
        """``value`` spelled as in ``allowed`` (case-insensitive), or a ScenarioError listing them."""
        for name in allowed:
            if name.lower() == value.strip().lower():
                return name
        raise ScenarioError(f"{where}: unknown value {value!r}; known: {', '.join(allowed)}")
