"""The bounded value types of the configuration: durations, sizes, result sizes, host names and IPs.

Every number is finite and bounded (``MAX_INTERVAL``, ``MAX_TIMEOUT``, ``MAX_SPAN``...) so that what
validates, ``serve`` can run with. ``exporter.settings`` builds the configuration from these; sections
that live in their own module (``exporter.probe.settings``) use them too, without importing the whole
configuration (which imports them).
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

# Upper bounds of durations, far below what serve's libraries accept: threading.TIMEOUT_MAX and socket
# timeouts (2**63 ns, about 292 years), timedelta (999999999 days), datetime arithmetic around now (years
# 1 to 9999) and apscheduler's interval trigger (a timedelta added to the last fire time).
MAX_INTERVAL = 7 * 86400.0  # poll and discovery intervals, auth_failure_backoff
MAX_TIMEOUT = 3600.0  # connect, call, DNS and SMTP timeouts; scheduler jitter and first_run_spread
MAX_SPAN = 366 * 86400.0  # tracking windows and ages, latency buckets, DNS drift acceptance
MAX_LATENCY_BUCKETS = 50  # each bucket is one series per server
INT32_MAX = 2**31 - 1  # pypsrp sends a Python int as <I32>; Exchange's ResultSize is Unlimited<UInt32>
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
# What one call may bring (exporter.exchange.bounds). The defaults fit the largest real organisations and
# the 512 MiB container memory limit (docs/sizing.md): 100,000 tracking events are about 150 MB on the wire
# with the selected properties (1.5 KB each in the simulator, 3.2 KB with every property), more than one
# call should carry, so the tracking collector pages (-ResultSize <= max_response_bytes / 4 KiB: 16,384
# events, minutes of the busiest server's log); 64 MiB hold about 25,000 Get-Queue objects (2.6 KB each),
# far more queues than a transport server has. A 100 MB answer peaked at 368 MiB of RSS: bench_bounds.py.
DEFAULT_MAX_RESPONSE_BYTES = 64 * MIB
DEFAULT_MAX_OBJECTS = 100_000
DEFAULT_MAX_OBJECT_BYTES = 16 * MIB
_SIZE_RE = re.compile(r"^\s*(\d{1,13})\s*(B|KiB|MiB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {None: 1, "b": 1, "kib": KIB, "mib": MIB, "gib": GIB}


def parse_duration(value: Any) -> float:
    """Accept seconds as a number or a string with a unit: ``500ms``, ``30s``, ``5m``, ``1h``, ``1d``."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string such as '30s' or '5m'")
    seconds: float | None = None
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an integer beyond a float's range
            seconds = math.inf
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds is None:
        raise ValueError(f"invalid duration {value!r}: use seconds or a unit suffix (ms, s, m, h, d), e.g. '30s'")
    if not math.isfinite(seconds):
        raise ValueError("a duration must be a finite number of seconds (not .inf, .nan or a number that large)")
    return seconds


def parse_size(value: Any) -> Any:
    """Accept bytes as a whole number or a string with a binary unit: ``65536``, ``64KiB``, ``256MiB``, ``1GiB``
    (numbers go on to the field's own checks: whole, finite, within its bounds)."""
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match is None:
            raise ValueError(f"invalid size {value[:40]!r}: use bytes or a unit (KiB, MiB, GiB), e.g. '256MiB'")
        return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower() or None]
    return value


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


class AtMost:
    """An upper bound (seconds) that names itself in a unit and in seconds when exceeded."""

    def __init__(self, limit: float) -> None:
        self.limit = limit

    def __call__(self, value: float) -> float:
        if value > self.limit:
            raise ValueError(f"Input should be at most {_human(self.limit)} ({self.limit:.0f} seconds)")
        return value


def _at_most(limit: float) -> AfterValidator:
    return AfterValidator(AtMost(limit))


def _resolvable(value: float) -> float:
    """A positive duration below a millisecond is zero to the scheduler and to timedelta arithmetic."""
    if 0 < value < 0.001:
        raise ValueError("Input should be at least 1ms (0.001 seconds)")
    return value


_RESOLVABLE = AfterValidator(_resolvable)
Interval = Annotated[float, BeforeValidator(parse_duration), Field(gt=0), _RESOLVABLE, _at_most(MAX_INTERVAL)]
Timeout = Annotated[float, BeforeValidator(parse_duration), Field(gt=0), _RESOLVABLE, _at_most(MAX_TIMEOUT)]
Span = Annotated[float, BeforeValidator(parse_duration), Field(gt=0), _RESOLVABLE, _at_most(MAX_SPAN)]
Duration = Span  # any other duration: finite, positive, at most MAX_SPAN
#: Bytes one call may read in all (64 KiB to 4 GiB), bytes of one object (4 KiB to 1 GiB).
ResponseBytes = Annotated[int, BeforeValidator(parse_size), Field(ge=64 * KIB, le=4 * GIB)]
ObjectBytes = Annotated[int, BeforeValidator(parse_size), Field(ge=4 * KIB, le=GIB)]
ObjectCount = Annotated[int, Field(ge=1, le=10_000_000)]


class _ResultSize:
    """A cmdlet's ``-ResultSize``: ``Unlimited`` or a whole number from 1 to ``limit``."""

    limit = INT32_MAX

    def __call__(self, value: Any) -> int | Literal["Unlimited"]:
        if isinstance(value, str) and value.strip().lower() == "unlimited":
            return "Unlimited"
        if isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,12}\s*", value):  # from the environment
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= self.limit:
            raise ValueError(f"Input should be 'Unlimited' or a whole number from 1 to {self.limit}")
        return value


ResultSize = Annotated[int | Literal["Unlimited"], PlainValidator(_ResultSize())]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ValueError(f"not an IP address: {value!r}") from None


def _check_hostname(value: str) -> str:
    name = value.strip().rstrip(".").lower()
    if not name or any(not label or len(label) > 63 for label in name.split(".")) or " " in name:
        raise ValueError(f"not a host or domain name: {value!r}")
    return name


IpAddress = Annotated[str, AfterValidator(_check_ip)]
HostName = Annotated[str, AfterValidator(_check_hostname)]
