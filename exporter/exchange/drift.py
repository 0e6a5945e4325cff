"""Expected-state drift: compare a connector's actual settings with what the config declares.

Each declared setting yields one (setting, drifted) pair, so a dashboard shows what is checked and
an alert names the setting that moved. Comparisons ignore case and order where Exchange does
(host names, address spaces, server names, flag names); IP ranges compare by the addresses they
cover, so ``10.0.0.0/24`` equals ``10.0.0.0-10.0.0.255``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from exporter.exchange.iprange import parse_ip_ranges, same_addresses

#: The pseudo-setting reported when an expected connector does not exist at all.
PRESENT = "present"


def _norm_set(values: Iterable[Any]) -> frozenset[str]:
    return frozenset(str(v).strip().strip("[]").lower() for v in values if str(v).strip())


def _equal(setting: str, expected: Any, actual: Any) -> bool:
    if setting == "remote_ip_ranges":
        try:
            return same_addresses(parse_ip_ranges(expected), parse_ip_ranges(actual))
        except ValueError:
            return False
    if isinstance(expected, list):
        return _norm_set(expected) == _norm_set(actual or [])
    if isinstance(expected, str):
        return expected.strip().lower() == str(actual or "").strip().lower()
    return bool(expected == actual)


def compare(expectation: BaseModel, actual: Mapping[str, Any]) -> dict[str, bool]:
    """``{setting: drifted}`` for every setting the expectation declares (fields left unset are skipped)."""
    out: dict[str, bool] = {}
    for setting, expected in expectation.model_dump(exclude_none=True).items():
        out[setting] = not _equal(setting, expected, actual.get(setting))
    return out


def matches(pattern: str, *names: str) -> bool:
    """Case-insensitive glob match of a connector pattern against any of its names."""
    lowered = pattern.lower()
    return any(fnmatch.fnmatchcase(n.lower(), lowered) for n in names if n)


@dataclass(frozen=True)
class ConnectorDrift:
    """One checked setting of one expected connector (``connector`` is the pattern when missing)."""

    connector: str
    setting: str
    drifted: bool


def connector_drift(
    expectations: Iterable[tuple[str, str, BaseModel]], connectors: Sequence[tuple[str, Mapping[str, Any]]]
) -> list[ConnectorDrift]:
    """Check (pattern, name glob, expectation) triples against (name, settings) pairs.

    A pattern that matches no connector yields ``present`` drifted under the pattern's own name;
    every matching connector yields ``present`` not drifted plus one entry per declared setting.
    """
    merged: dict[tuple[str, str], bool] = {}  # overlapping patterns: one series, drifted if any says so

    def add(connector: str, setting: str, drifted: bool) -> None:
        merged[(connector, setting)] = merged.get((connector, setting), False) or drifted

    for pattern, name_glob, expectation in expectations:
        found = [(name, values) for name, values in connectors if matches(name_glob, name)]
        if not found:
            add(pattern, PRESENT, True)
        for name, values in found:
            add(name, PRESENT, False)
            for setting, drifted in compare(expectation, values).items():
                add(name, setting, drifted)
    return [ConnectorDrift(c, s, d) for (c, s), d in merged.items()]
