"""Scenario keys for faults with consequences and for per-server clocks.

Per server (``servers[i]``):

``down: {since_seconds: 0, shadow_per_minute: 0}``
    The server is down from ``since_seconds`` relative to the scenario start (<= 0: already down
    when the simulator starts). Applied as a ``down`` fault at start (so the control API can heal it).
``back_pressure: {level: High, resource: UsedVersionBuckets, since_seconds: 0, submission_per_minute: 30}``
    The Transport service is under back pressure, likewise applied as a ``back_pressure`` fault.
``clock_skew_seconds: 300``
    The server's clock runs this far ahead of the simulator's clock (negative: behind).
``time_zone: Europe/Berlin | "+05:30" | UTC``
    The server's time zone (default: the organisation's ``timezone_offset_minutes``). An IANA name
    takes the UTC offset it has at the scenario start: a daylight-saving change during a run is not
    modelled.

Organisation-wide (top level), what ``Set-TransportConfig`` holds:

``shadow_redundancy: {heartbeat_frequency_seconds: 120, resubmit_seconds: 10800}``
    ``ShadowHeartbeatFrequency`` (default 2 minutes) and ``ShadowResubmitTimeSpan`` (default 3
    hours) of Microsoft's "Shadow redundancy in Exchange Server" page.
"""

from __future__ import annotations

import datetime
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exporter.simulator.faults import BACK_PRESSURE_LEVELS, BACK_PRESSURE_RESOURCES
from exporter.simulator.fields import FieldReader, ScenarioError

__all__ = [
    "BackPressureSpec",
    "DownSpec",
    "FaultSpecParser",
    "ShadowRedundancySpec",
    "time_zone_offset_minutes",
]

_OFFSET = re.compile(r"^(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?$", re.IGNORECASE)


@dataclass(frozen=True)
class DownSpec:
    """A server that is down from ``since_seconds`` (relative to the scenario start) on."""

    since_seconds: float = 0.0
    shadow_per_minute: float = 0.0


@dataclass(frozen=True)
class BackPressureSpec:
    """A Transport service under back pressure from ``since_seconds`` on."""

    level: str = "High"
    resource: str = "UsedVersionBuckets"
    since_seconds: float = 0.0
    submission_per_minute: float = 30.0


@dataclass(frozen=True)
class ShadowRedundancySpec:
    """The organisation's shadow redundancy timers (``Set-TransportConfig``)."""

    heartbeat_frequency_seconds: float = 120.0
    resubmit_seconds: float = 10800.0


def time_zone_offset_minutes(name: str, at: float) -> int:
    """The UTC offset in minutes of ``name`` (IANA name, ``UTC``, ``+05:30``/``-0800``) at time ``at``.

    Raises ``ValueError`` for a name that is neither an offset nor a known IANA zone.
    """
    text = name.strip()
    if text.upper() in ("UTC", "GMT", "Z"):
        return 0
    match = _OFFSET.match(text)
    if match:
        sign, hours, minutes = match.groups()
        value = int(hours) * 60 + int(minutes or 0)
        if value > 14 * 60:
            raise ValueError(f"{name!r} is not a UTC offset between -14:00 and +14:00")
        return value if sign == "+" else -value
    try:
        zone = zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/Berlin, or +05:30)") from exc
    offset = datetime.datetime.fromtimestamp(at, zone).utcoffset()
    return 0 if offset is None else int(offset.total_seconds() // 60)


class FaultSpecParser(FieldReader):
    """Reads the keys above; the scenario parser inherits it."""

    SERVER_FAULT_KEYS = ("down", "back_pressure", "clock_skew_seconds", "time_zone")
    ORG_FAULT_KEYS = ("shadow_redundancy",)

    def server_faults(self, data: Mapping[str, Any], where: str) -> dict[str, Any]:
        """The ServerSpec fields of a server's fault and clock keys."""
        out: dict[str, Any] = {"down": None, "back_pressure": None}
        if data.get("down") not in (None, False):
            at = f"{where}.down"
            raw = {} if data["down"] is True else self._mapping(data["down"], at)
            self._check_keys(raw, ["since_seconds", "shadow_per_minute"], at)
            out["down"] = DownSpec(
                since_seconds=self._since(raw, at),
                shadow_per_minute=self._rate(raw, "shadow_per_minute", at, 0.0),
            )
        if data.get("back_pressure") not in (None, False):
            at = f"{where}.back_pressure"
            raw = {} if data["back_pressure"] is True else self._mapping(data["back_pressure"], at)
            self._check_keys(raw, ["level", "resource", "since_seconds", "submission_per_minute"], at)
            out["back_pressure"] = BackPressureSpec(
                level=self._choice(self._str(raw, "level", at, "High"), BACK_PRESSURE_LEVELS, f"{at}.level"),
                resource=self._choice(
                    self._str(raw, "resource", at, "UsedVersionBuckets"), BACK_PRESSURE_RESOURCES, f"{at}.resource"
                ),
                since_seconds=self._since(raw, at),
                submission_per_minute=self._rate(raw, "submission_per_minute", at, 30.0),
            )
        skew = self._num(data, "clock_skew_seconds", where, 0.0)
        if abs(skew) > 7 * 86400:
            raise ScenarioError(f"{where}.clock_skew_seconds: must be within a week")
        out["clock_skew_seconds"] = skew
        zone = data.get("time_zone")
        if zone is not None:
            text = self._str(data, "time_zone", where, "")
            try:
                time_zone_offset_minutes(text, 0.0)
            except ValueError as exc:
                raise ScenarioError(f"{where}.time_zone: {exc}") from None
            out["time_zone"] = text
        else:
            out["time_zone"] = None
        return out

    def org_faults(self, top: Mapping[str, Any]) -> dict[str, Any]:
        """The Scenario fields of the organisation-wide keys."""
        where = "shadow_redundancy"
        raw = self._mapping(top.get("shadow_redundancy"), where)
        self._check_keys(raw, ["heartbeat_frequency_seconds", "resubmit_seconds"], where)
        heartbeat = self._num(raw, "heartbeat_frequency_seconds", where, 120.0)
        resubmit = self._num(raw, "resubmit_seconds", where, 10800.0)
        if heartbeat <= 0 or resubmit <= 0:
            raise ScenarioError(f"{where}: heartbeat_frequency_seconds and resubmit_seconds must be > 0")
        return {"shadow_redundancy": ShadowRedundancySpec(heartbeat, resubmit)}

    def _since(self, raw: Mapping[str, Any], where: str) -> float:
        since = self._num(raw, "since_seconds", where, 0.0)
        if since > 0:
            raise ScenarioError(f"{where}.since_seconds: must be <= 0 (a fault that starts later is set at run time)")
        return since

    def _rate(self, raw: Mapping[str, Any], key: str, where: str, default: float) -> float:
        value = self._num(raw, key, where, default)
        if value < 0:
            raise ScenarioError(f"{where}.{key}: must be >= 0")
        return value
