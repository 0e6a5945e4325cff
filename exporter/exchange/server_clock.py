"""The clock of an Exchange server, read from the ``Date`` header of its remote PowerShell answers.

Message tracking Timestamps are written by the transport server's own Windows clock, so the tracking
collector asks for windows in that clock (``tracking.py``). Nothing an Exchange session offers under
the monitoring roles says "now" cheaply: Get-ServerComponentState's requester timestamps and database
copy times are past events, Test-ServiceHealth has no time at all, and Get-ExchangeDiagnosticInfo's
``currentTime`` costs a call into EdgeTransport. Every HTTP answer, however, carries a ``Date``
header stamped by the answering server's HTTP.sys (RFC 9110 6.6.1; also on WinRM's 401 and 500
answers), so each call the exporter already makes measures the clock for free, even a Kerberos logon
that fails because the clocks differ.

The header has a resolution of one second and is stamped before the answer reaches us, so
``Date - local time at receipt`` is a lower bound of the skew, at most about a second (plus the
network) too low: for a window end that errs on the side of "not yet logged", which the overlap
absorbs. The reading belongs to the server that answers the endpoint, i.e. the session's own server.
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any

__all__ = ["ClockReading", "ServerClock", "parse_http_date"]


@dataclass(frozen=True)
class ClockReading:
    """One measurement: the server's clock minus ours (seconds, lower bound), and when (our clock)."""

    skew: float
    at: float


def parse_http_date(value: str | None) -> float | None:
    """An HTTP ``Date`` (IMF-fixdate, or the obsolete RFC 850 / asctime forms) as a Unix time; None
    when absent or unreadable."""
    if not value:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # asctime has no zone: HTTP dates are always GMT
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class ServerClock:
    """The latest ``Date``-header reading of one endpoint's clock (thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._reading: ClockReading | None = None

    def reading(self) -> ClockReading | None:
        """The latest reading, or None before the server answered anything."""
        with self._lock:
            return self._reading

    def skew(self) -> float | None:
        """The latest skew (server minus exporter, seconds), or None."""
        reading = self.reading()
        return None if reading is None else reading.skew

    def observe(self, date_header: str | None) -> None:
        """Record one answer's ``Date`` header (ignored when absent or unreadable)."""
        stamped = parse_http_date(date_header)
        if stamped is None:
            return
        now = self._clock()
        with self._lock:
            self._reading = ClockReading(stamped - now, now)

    def watch(self, wsman: Any) -> None:
        """Read the ``Date`` of every HTTP answer of this pypsrp ``WSMan`` (its requests session is
        built lazily, and again after a reset: the hook is added each time one is built)."""
        transport = getattr(wsman, "transport", None)
        build = getattr(transport, "_build_session", None)
        if transport is None or build is None:
            return

        def hook(response: Any, *args: Any, **kwargs: Any) -> Any:
            self.observe(getattr(response, "headers", {}).get("Date"))
            return response

        def build_watched() -> Any:
            session = build()
            session.hooks["response"].append(hook)
            return session

        transport._build_session = build_watched
