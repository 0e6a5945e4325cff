"""Per-server clocks: a server whose clock is skewed or whose time zone differs reports in its own time.

A :class:`ServerTimeline` is a view of the organisation's :class:`~exporter.simulator.timeline.Timeline`
that reads ``clock_skew_seconds`` ahead (its ``now()`` and its reading of the scenario ``start``) and
renders local times in a time zone. Everything a cmdlet computes from a timeline then follows that
server: DateTime offsets, queue retry times and ``%LRT%``, message-tracking Timestamps and which
events exist yet, certificate Status, database copy log times.

Which server's clock applies (inferred from how Exchange builds these objects, not observed):

- the *instant* comes from the server that recorded it: a cross-server ``Get-Queue -Server EX02``
  or ``Get-MessageTrackingLog -Server EX02`` reads EX02's clock (its queue viewer and its tracking
  log files), ``Get-ExchangeCertificate -Server EX02`` compares validity with EX02's clock;
- the *offset* comes from the server whose PowerShell session serialises the object: the reference
  (exchange-cmdlets.md §2.1) says the cmdlet converts the UTC log time with ``ToLocalTime()`` on the
  server it runs on, and ``-Start``/``-End`` are documented in that server's regional settings.

Servers with neither a skew nor a time zone of their own use the organisation timeline itself, so
a scenario without these keys behaves exactly as before.

Message tracking is stamped, not shifted: the events happen on the organisation's clock (real time)
and each is stamped with its server's clock *as it was when the event happened*. A changed
``clock_skew_seconds`` (``Simulator.set_scenario``) is a clock step at that instant
(:func:`record_clocks`): earlier events keep their stamps, later ones get the new clock's, so a step
back makes new events carry stamps the log already holds, as when w32time steps a fast clock back
(Windows writes the log with the system time of the moment; nothing re-stamps old lines). Cross-server
continuations follow from the same rule: a message submitted on EX01 continues on EX02 a moment later
in real time, stamped by EX02's clock.
"""

from __future__ import annotations

import math
import threading
import weakref
from typing import TYPE_CHECKING

from exporter.simulator.faultspec import time_zone_offset_minutes
from exporter.simulator.scenario import ServerSpec
from exporter.simulator.timeline import ServerTimeZone, Timeline

if TYPE_CHECKING:
    from exporter.simulator.cmdlets import Context
    from exporter.simulator.scenario import Scenario

__all__ = [
    "ServerTimeline",
    "clock_segments",
    "record_clocks",
    "server_timeline",
    "target_timeline",
    "zone_timeline",
]


class ServerTimeline(Timeline):
    """A server's view of the organisation timeline: skewed clock, own time zone (see the module doc)."""

    def __init__(self, base: Timeline, skew: float, tz: ServerTimeZone | None) -> None:
        # Deliberately not calling Timeline.__init__: the view delegates to its base.
        self._base = base
        self.skew = skew
        self._tz = tz
        self.start = base.start + skew

    @property
    def origin(self) -> Timeline:
        """The organisation timeline this view reads."""
        return self._base

    @property
    def tz(self) -> ServerTimeZone:
        """The server's zone, or the organisation's (which ``set_scenario`` may change)."""
        return self._tz if self._tz is not None else self._base.tz

    @tz.setter
    def tz(self, value: ServerTimeZone) -> None:
        self._tz = value

    @property
    def culture(self) -> str:
        """The organisation's culture (per-server cultures are not modelled)."""
        return self._base.culture

    @culture.setter
    def culture(self, value: str) -> None:
        raise AttributeError("a server timeline takes the organisation's culture")

    def now(self) -> float:
        """The server's clock: the organisation's plus the skew."""
        return self._base.now() + self.skew

    def elapsed(self) -> float:
        """Seconds since the scenario start (the same on every clock)."""
        return self._base.elapsed()


_VIEWS: weakref.WeakKeyDictionary[Timeline, dict[tuple[float, str | None], ServerTimeline]] = (
    weakref.WeakKeyDictionary()
)
_LOCK = threading.Lock()


def _view(base: Timeline, skew: float, zone: str | None) -> Timeline:
    """The cached view of ``base`` (the same object for the same clock, so per-timeline caches hold)."""
    if not skew and zone is None:
        return base
    with _LOCK:
        views = _VIEWS.setdefault(base, {})
        view = views.get((skew, zone))
        if view is None:
            tz = None if zone is None else ServerTimeZone(time_zone_offset_minutes(zone, base.start))
            view = views[(skew, zone)] = ServerTimeline(base, skew, tz)
        return view


def server_timeline(base: Timeline, server: ServerSpec) -> Timeline:
    """``server``'s own timeline: its clock and its time zone (``base`` itself when it has neither)."""
    return _view(base.origin, server.clock_skew_seconds, server.time_zone)


def target_timeline(ctx: Context, target: ServerSpec) -> Timeline:
    """The timeline for what ``target`` reports through ``ctx``'s session: ``target``'s clock, the
    session server's time zone."""
    if target.name == ctx.server.name:
        return ctx.timeline
    return _view(ctx.timeline.origin, target.clock_skew_seconds, ctx.server.time_zone)


def zone_timeline(ctx: Context) -> Timeline:
    """The organisation's clock in the time zone of ``ctx``'s session server (what a tracking log is
    generated on before its events are stamped by their server's clock)."""
    return _view(ctx.timeline.origin, 0.0, ctx.server.time_zone)


#: origin timeline -> server (upper case) -> [(since, skew)] on the organisation clock, oldest first.
_STEPS: weakref.WeakKeyDictionary[Timeline, dict[str, list[tuple[float, float]]]] = weakref.WeakKeyDictionary()


def record_clocks(origin: Timeline, scenario: Scenario) -> None:
    """Note every server's ``clock_skew_seconds`` from now on: a skew that differs from the last one
    noted is a clock step at the organisation clock's current instant."""
    now = origin.now()
    with _LOCK:
        steps = _STEPS.setdefault(origin, {})
        for server in scenario.servers:
            history = steps.setdefault(server.name.upper(), [])
            if not history:
                history.append((-math.inf, server.clock_skew_seconds))
            elif history[-1][1] != server.clock_skew_seconds:
                history.append((now, server.clock_skew_seconds))


def clock_segments(origin: Timeline, server: ServerSpec) -> list[tuple[float, float, float]]:
    """``(from, until, skew)`` on the organisation clock: an event at instant ``t`` in [from, until) is
    stamped ``t + skew`` by ``server``. One segment unless the server's clock was stepped."""
    with _LOCK:
        history = list(_STEPS.get(origin, {}).get(server.name.upper(), ()))
    if not history:
        return [(-math.inf, math.inf, server.clock_skew_seconds)]
    ends = [since for since, _ in history[1:]] + [math.inf]
    return [(since, until, skew) for (since, skew), until in zip(history, ends, strict=True)]
