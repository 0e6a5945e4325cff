"""Time: what each queue looks like at a given moment, as a pure function of the clock.

``Timeline`` holds the clock and the scenario start; ``snapshot_queue`` turns a ``QueueSpec`` into
the values Get-Queue reports at ``now`` (message counts following the pattern, rates consistent
with the slope, retry times consistent with Status=Retry, LastError with its LRT stamp).
"""

from __future__ import annotations

import datetime
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from exporter.simulator.scenario import OrganisationSpec, Pattern, QueueSpec, ServerSpec

__all__ = ["QueueSnapshot", "ServerTimeZone", "Timeline", "format_culture_datetime", "snapshot_queue"]

#: Placeholder in a scenario's LastError text replaced by the last retry time in server culture.
LRT_PLACEHOLDER = "%LRT%"

_CULTURE_FORMATS: dict[str, str] = {
    "en-US": "{month}/{day}/{year} {hour12}:{minute:02d}:{second:02d} {ampm}",
    "en-GB": "{day:02d}/{month:02d}/{year} {hour:02d}:{minute:02d}:{second:02d}",
    "de-DE": "{day:02d}.{month:02d}.{year} {hour:02d}:{minute:02d}:{second:02d}",
    "nl-NL": "{day}-{month}-{year} {hour:02d}:{minute:02d}:{second:02d}",
    "fr-FR": "{day:02d}/{month:02d}/{year} {hour:02d}:{minute:02d}:{second:02d}",
    "da-DK": "{day:02d}-{month:02d}-{year2:02d} {hour:02d}:{minute:02d}:{second:02d}",
}


class ServerTimeZone(datetime.tzinfo):
    """A fixed UTC offset that serialises as ``+00:00`` (never ``Z``), like a Windows local time."""

    def __init__(self, offset_minutes: int) -> None:
        self._offset = datetime.timedelta(minutes=offset_minutes)

    def utcoffset(self, dt: datetime.datetime | None) -> datetime.timedelta:
        """The fixed offset."""
        return self._offset

    def dst(self, dt: datetime.datetime | None) -> datetime.timedelta:
        """No daylight saving time."""
        return datetime.timedelta(0)

    def tzname(self, dt: datetime.datetime | None) -> str:
        """A name such as ``UTC+01:00``."""
        minutes = int(self._offset.total_seconds() // 60)
        sign = "+" if minutes >= 0 else "-"
        return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def format_culture_datetime(value: datetime.datetime, culture: str) -> str:
    """Format like .NET ``DateTime.ToString()`` in a few cultures (en-US default)."""
    fmt = _CULTURE_FORMATS.get(culture, _CULTURE_FORMATS["en-US"])
    hour12 = value.hour % 12 or 12
    return fmt.format(
        month=value.month,
        day=value.day,
        year=value.year,
        year2=value.year % 100,
        hour=value.hour,
        hour12=hour12,
        minute=value.minute,
        second=value.second,
        ampm="AM" if value.hour < 12 else "PM",
    )


class Timeline:
    """The simulator's notion of time: an injectable clock and the scenario start."""

    def __init__(self, org: OrganisationSpec, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.start = clock()
        self.tz = ServerTimeZone(org.timezone_offset_minutes)
        self.culture = org.culture

    @property
    def origin(self) -> Timeline:
        """The organisation's timeline (a server's skewed view answers its base; see ``clocks.py``).

        Values that are the same instant wherever they are read (certificate validity, AD creation
        times) are anchored on ``origin.start``, not on a server clock's reading of it.
        """
        return self

    def now(self) -> float:
        """Current clock value (seconds since the epoch)."""
        return self.clock()

    def elapsed(self) -> float:
        """Seconds since the scenario started (may be negative if a test clock goes back)."""
        return self.clock() - self.start

    def local(self, timestamp: float) -> datetime.datetime:
        """A timestamp as server-local time with its UTC offset."""
        return datetime.datetime.fromtimestamp(timestamp, tz=self.tz)


def pattern_value(pattern: Pattern | None, base: float, t: float) -> float:
    """The value of ``pattern`` at ``t`` seconds after the start (``base`` when there is none)."""
    if pattern is None or pattern.kind == "constant":
        return base
    t = t + pattern.phase_seconds
    if pattern.kind == "wave":
        period = pattern.period_seconds or 300.0
        return pattern.min + (pattern.max - pattern.min) * (1 - math.cos(2 * math.pi * t / period)) / 2
    if pattern.period_seconds:
        t = t % pattern.period_seconds
    t = max(t, 0.0)
    if pattern.kind == "grow":
        return min(pattern.max, pattern.min + pattern.per_minute * t / 60.0)
    return max(pattern.min, pattern.max - pattern.per_minute * t / 60.0)  # drain


@dataclass(frozen=True)
class QueueSnapshot:
    """The Get-Queue values of one queue at one moment."""

    server: str
    identity: str
    kind: str
    row_id: int | None
    delivery_type: str
    next_hop_domain: str
    next_hop_category: str
    next_hop_connector: uuid.UUID
    tls_domain: str
    status: str
    message_count: int
    deferred_message_count: int
    locked_message_count: int
    messages_per_priority: tuple[int, int, int, int]
    deferred_per_priority: tuple[int, int, int, int]
    last_error: str
    retry_count: int
    first_retry_time: datetime.datetime | None
    last_retry_time: datetime.datetime | None
    next_retry_time: datetime.datetime | None
    risk_level: str
    outbound_ip_pool: int
    incoming_rate: float
    outgoing_rate: float
    velocity: float

    @property
    def listed(self) -> bool:
        """Whether Get-Queue shows it (the Poison queue only when it holds messages)."""
        return self.kind != "poison" or self.message_count > 0


def snapshot_queue(server: ServerSpec, spec: QueueSpec, timeline: Timeline) -> QueueSnapshot:
    """Compute a queue's Get-Queue values at the timeline's current time."""
    now = timeline.now()
    t = now - timeline.start
    count = max(0, round(pattern_value(spec.pattern, spec.message_count, t)))
    slope = (
        pattern_value(spec.pattern, spec.message_count, t + 1) - pattern_value(spec.pattern, spec.message_count, t - 1)
    ) / 2.0  # messages per second
    outgoing = max(0.0, spec.outgoing_rate)
    incoming = spec.incoming_rate if spec.incoming_rate is not None else max(0.0, outgoing + slope)
    outgoing_r, incoming_r = round(outgoing, 2), round(incoming, 2)

    status = spec.status
    if status is None:
        if spec.kind == "delivery" and spec.last_error:
            status = "Retry"
        elif spec.kind == "delivery":
            status = "Active" if count > 0 else "Ready"
        else:
            status = "Ready"

    retry_count = 0
    first = last = nxt = None
    last_error = spec.last_error
    if status == "Retry":
        interval = max(1.0, spec.retry_interval_seconds)
        first_ts = timeline.start - max(1, spec.retry_count) * interval
        n = max(1, math.floor((now - first_ts) / interval))
        last_ts = first_ts + n * interval
        retry_count = n
        first, last, nxt = (
            timeline.local(first_ts),
            timeline.local(last_ts),
            timeline.local(last_ts + interval),
        )
        if LRT_PLACEHOLDER in last_error:
            last_error = last_error.replace(LRT_PLACEHOLDER, format_culture_datetime(last, timeline.culture))
    elif LRT_PLACEHOLDER in last_error:
        last_error = last_error.replace(
            LRT_PLACEHOLDER, format_culture_datetime(timeline.local(timeline.start), timeline.culture)
        )

    deferred = spec.deferred_message_count
    return QueueSnapshot(
        server=server.name,
        identity=spec.identity(server.name),
        kind=spec.kind,
        row_id=spec.row_id,
        delivery_type=spec.delivery_type,
        next_hop_domain=spec.next_hop_domain,
        next_hop_category=spec.next_hop_category,
        next_hop_connector=spec.next_hop_connector,
        tls_domain=spec.tls_domain,
        status=status,
        message_count=count,
        deferred_message_count=deferred,
        locked_message_count=spec.locked_message_count,
        messages_per_priority=(0, count, 0, 0),
        deferred_per_priority=(0, deferred, 0, 0),
        last_error=last_error,
        retry_count=retry_count,
        first_retry_time=first,
        last_retry_time=last,
        next_retry_time=nxt,
        risk_level=spec.risk_level,
        outbound_ip_pool=spec.outbound_ip_pool,
        incoming_rate=incoming_r,
        outgoing_rate=outgoing_r,
        velocity=round(outgoing_r - incoming_r, 2),
    )
