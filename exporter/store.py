"""SnapshotStore: the latest immutable poll result per (collector, target).

Pollers write, the scrape path reads; neither waits on the other for more than a dict copy.
Failures keep the last good result (served until it goes stale) and count an error by reason.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Snapshot:
    """One finished poll. ``result`` is the collector's typed, immutable result (None on failure)."""

    collector: str
    target: str
    finished: float  # wall-clock time the poll ended (unix seconds)
    duration: float  # seconds the poll took
    interval: float  # the collector's poll interval for this target, seconds
    ok: bool
    result: Any = None
    reason: str = ""  # bounded failure reason label ("" when ok)
    message: str = ""  # human-readable failure detail, already redacted
    endpoint: str = ""  # the Exchange endpoint a failed poll went through ("" when none)
    server: str = ""  # the server that endpoint belongs to (the ``via`` server when polled through one)

    def age(self, now: float) -> float:
        return now - self.finished


@dataclass(frozen=True)
class TargetState:
    """What the store knows about one (collector, target)."""

    last: Snapshot  # the most recent poll, success or failure
    last_success: Snapshot | None  # the most recent successful poll


class SnapshotStore:
    """Thread-safe map of (collector, target) to its latest snapshots and error counters."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str], TargetState] = {}
        self._by_collector: dict[str, dict[str, TargetState]] = {}  # the same states, by collector
        self._errors: dict[tuple[str, str, str], int] = {}
        self._generation = 0

    def put(self, snapshot: Snapshot) -> TargetState | None:
        """Record a finished poll; the target's state before it (None for its first poll)."""
        key = (snapshot.collector, snapshot.target)
        with self._lock:
            previous = self._states.get(key)
            success = snapshot if snapshot.ok else (previous.last_success if previous else None)
            state = TargetState(last=snapshot, last_success=success)
            self._states[key] = state
            self._by_collector.setdefault(snapshot.collector, {})[snapshot.target] = state
            self._generation += 1
            if not snapshot.ok:
                err_key = (snapshot.collector, snapshot.target, snapshot.reason or "other")
                self._errors[err_key] = self._errors.get(err_key, 0) + 1
        return previous

    def states(self) -> dict[tuple[str, str], TargetState]:
        """A consistent copy of every target's state."""
        with self._lock:
            return dict(self._states)

    def errors(self) -> dict[tuple[str, str, str], int]:
        """Failure counts by (collector, target, reason), monotonically increasing."""
        with self._lock:
            return dict(self._errors)

    def fresh_results(self, collector: str, stale_after_intervals: float) -> dict[str, Any]:
        """Latest successful result per target, leaving out those older than N intervals. Costs the
        collector's own targets only (the DNS checks ask for the accepted domains after every poll)."""
        now = self._clock()
        with self._lock:
            states = list(self._by_collector.get(collector, {}).items())
        out: dict[str, Any] = {}
        for target, state in states:
            good = state.last_success
            if good is not None and good.age(now) <= good.interval * stale_after_intervals:
                out[target] = good.result
        return out

    def forget(self, collector: str, target: str) -> None:
        """Drop a target that is no longer polled (e.g. removed by discovery)."""
        with self._lock:
            self._states.pop((collector, target), None)
            self._by_collector.get(collector, {}).pop(target, None)
            self._generation += 1
            for key in [k for k in self._errors if k[:2] == (collector, target)]:
                del self._errors[key]

    def generation(self) -> int:
        """A counter that moves on every change to the store (a finished poll or a forgotten target)."""
        with self._lock:
            return self._generation

    def now(self) -> float:
        return self._clock()
