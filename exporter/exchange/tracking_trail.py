"""Message trails for the tracking collector: per-server pairing, followed across servers by MessageId.

Each server's log holds only its part of a message. In Exchange 2013 and later the Mailbox
Transport Submission service of the server holding the sender's mailbox logs NOTIFYMAPI, RECEIVE
(STOREDRIVER) and SUBMIT, and may hand the message to the Transport service of another Mailbox
server (a DAG member, or a server of the same site), which logs the rest (RECEIVE over SMTP, SEND,
DELIVER...) under the same MessageId. So a message is judged organisation-wide, over the servers
this collector polls:

* **pending** (can become *stuck*): received here (RECEIVE) and not finished here (no DELIVER, SEND,
  TRANSFER, FAIL...). It leaves the table when a terminal event is logged here, or when another
  polled server logs a RECEIVE or terminal event for the same MessageId at or after this RECEIVE
  (the message moved on: it is judged there). A shadow copy (HARECEIVE) is not a move.
* **handed off** (can become *unfollowed*): submitted (SUBMIT) to a Transport service that is not
  this server's own: no RECEIVE over SMTP followed here. It leaves the table as soon as any other
  polled server has the MessageId, whatever that server's clock says. One that no polled server
  shows is not stuck but unknown: the server that took it was not polled (another shard, a poll
  that failed) or has not logged it yet.

Keys are MessageIds only for messages that have one; a message without one is keyed by its
InternalMessageId, which is per server, and never followed across servers. A key is kept as the
64-bit hash of that text (Python's ``hash``, keyed per process: a sender cannot craft collisions)
and a time as integer microseconds in the exporter's clock: 173 bytes an entry instead of 244 (the
MessageId text and a datetime; bench/bench_memory.py). The keys are never labels.

Every table is pruned by time in ``counts`` (docs/design-notes.md, "Pairing memory"): pending and
handed-off messages after ``forget_after``; finished ones (``completed``, and received ones no
longer pending here) after the *finish horizon* the collector passes, beyond which no event any
polled server can still report could need them. ``cap`` per table (oldest out first, counted as
evictions when a pending or handed-off message goes) is only a safety net.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["MessageTrails", "ServerTrail"]

_NO_OFFSET = timedelta(0)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# A message that reached one of these on a server has left that server's pipeline.
TERMINAL_EVENTS = frozenset({"DELIVER", "SEND", "TRANSFER", "FAIL", "DROP", "DELIVERFAIL", "POISONMESSAGE"})
LATENCY_EVENTS = frozenset({"DELIVER", "SEND"})
# Time pruning walks a table from its oldest insertion and stops after this many entries in a row
# that are younger than the bound: tables are nearly in time order, and one entry stamped in the
# future (a clock that jumped) must not shield everything inserted after it.
PRUNE_LOOKAHEAD = 64

Table = OrderedDict[int, int]  # hash of the message key -> microseconds since 1970 (exporter's clock)


def _micros(at: datetime) -> int:
    """An instant as an exact integer (a datetime's resolution), for half the memory of the datetime."""
    return (at - _EPOCH) // _MICROSECOND


class _Event(Protocol):
    @property
    def timestamp(self) -> datetime: ...
    @property
    def event_id(self) -> str: ...
    @property
    def message_id(self) -> str: ...
    @property
    def internal_id(self) -> str: ...
    @property
    def latency(self) -> float | None: ...


@dataclass
class ServerTrail:
    """One server's part of the trails (touched under :attr:`MessageTrails.lock` only)."""

    pending: Table = field(default_factory=OrderedDict)  # message -> RECEIVE time
    received: Table = field(default_factory=OrderedDict)  # for latency pairing
    completed: Table = field(default_factory=OrderedDict)  # latency observed: at
    handed_off: Table = field(default_factory=OrderedDict)  # SUBMIT elsewhere: RECEIVE
    evictions: int = 0

    def entries(self) -> int:
        """Entries in every table (what the memory holds)."""
        return len(self.pending) + len(self.received) + len(self.completed) + len(self.handed_off)


def _prune(table: Table, before: int, keep: Table | None = None) -> None:
    """Delete the entries older than ``before`` (those in ``keep`` stay), from the oldest insertion on."""
    young = 0
    doomed = []
    for msg, since in table.items():
        if since >= before:
            young += 1
            if young >= PRUNE_LOOKAHEAD:
                break
        elif keep is None or msg not in keep:
            doomed.append(msg)
            young = 0
        # else: old but still pending (a burst of stuck messages): kept, and the walk goes on past it
    for msg in doomed:
        del table[msg]


class MessageTrails:
    """The trails of every server one tracking collector polls, bounded by ``cap`` per table."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.lock = threading.RLock()  # held by a server's ingest: other servers' tables are read
        self._servers: dict[str, ServerTrail] = {}
        self._others: dict[str, tuple[ServerTrail, ...]] = {}  # server -> every other server's trail

    def server(self, name: str) -> ServerTrail:
        """The trail of ``name`` (created empty)."""
        trail = self._servers.get(name)
        if trail is None:
            trail = self._servers[name] = ServerTrail()
            self._others = {n: tuple(t for m, t in self._servers.items() if m != n) for n in self._servers}
        return trail

    def observe(self, server: str, event: _Event, offset: timedelta = _NO_OFFSET) -> float | None:
        """Fold one new event of ``server`` into the trails; the latency (seconds) to observe, if any.

        The first DELIVER or SEND of a message on a server gives its one latency observation:
        MessageLatency when Exchange logged it, else the time since the RECEIVE on that server.
        ``offset`` is how far the server's clock is ahead of the exporter's: times are kept in the
        exporter's clock, so that servers whose clocks differ compare (and ``counts`` takes its
        bounds in the exporter's clock too).
        """
        trail = self.server(server)
        follow = bool(event.message_id)  # an InternalMessageId means nothing on another server
        msg = hash(event.message_id or event.internal_id)
        at = _micros(event.timestamp - offset)
        event_id = event.event_id
        if event_id == "RECEIVE":
            if follow:
                self._moved_here(server, msg, at)
            since = trail.handed_off.pop(msg, None)
            if since is not None:  # this server's own Transport service took it: a local submission
                self._put(trail, trail.pending, msg, since, count=True)
                self._put(trail, trail.received, msg, since)
            elif msg not in trail.completed and msg not in trail.received:
                if not (follow and self._went_on(server, msg, at)):
                    self._put(trail, trail.pending, msg, at, count=True)
                self._put(trail, trail.received, msg, at)
            return None
        if event_id == "SUBMIT":
            since = trail.pending.pop(msg, None)
            if since is not None:
                trail.received.pop(msg, None)
                if not (follow and self._held_elsewhere(server, msg)):
                    self._put(trail, trail.handed_off, msg, since, count=True)
            return None
        if event_id not in TERMINAL_EVENTS:
            return None
        if follow:
            self._moved_here(server, msg, at)
        trail.pending.pop(msg, None)  # any terminal event: the message is not stuck here
        since = trail.handed_off.pop(msg, None)  # nor handed off: it ended here after all
        if event_id not in LATENCY_EVENTS or msg in trail.completed:
            return None
        received = trail.received.pop(msg, None)
        if received is None:
            received = since
        self._put(trail, trail.completed, msg, at)
        if event.latency is not None:
            return event.latency
        return None if received is None else (at - received) / 1e6

    def counts(
        self, server: str, stuck_before: datetime, forget_before: datetime, finished_before: datetime | None = None
    ) -> tuple[int, int, int]:
        """(stuck, unfollowed, evictions) of ``server`` now.

        Forgets what is older than ``forget_before`` and, of the messages no longer pending here
        (finished, moved on, failed), what is older than ``finished_before`` (the finish horizon)."""
        trail = self.server(server)
        forget = _micros(forget_before)
        for table in (trail.pending, trail.received, trail.handed_off):
            _prune(table, forget)  # older than anyone waits: stop carrying it
        if finished_before is not None:
            finished = _micros(finished_before)
            _prune(trail.completed, finished)
            _prune(trail.received, finished, keep=trail.pending)  # still pending: kept for its latency
        stuck_at = _micros(stuck_before)
        stuck = sum(1 for since in trail.pending.values() if since <= stuck_at)
        unfollowed = sum(1 for since in trail.handed_off.values() if since <= stuck_at)
        return stuck, unfollowed, trail.evictions

    def drop_before(self, server: str, start: datetime) -> None:
        """Stop carrying ``server``'s messages received before ``start`` (a window was skipped: they
        may have finished unseen)."""
        trail = self.server(server)
        cut = _micros(start)
        for table in (trail.pending, trail.received, trail.handed_off):
            for msg in [m for m, since in table.items() if since < cut]:
                del table[msg]

    def entries(self) -> dict[str, int]:
        """Entries held per server (all tables)."""
        with self.lock:
            return {name: trail.entries() for name, trail in self._servers.items()}

    # -- across servers ------------------------------------------------------------------------
    def _moved_here(self, server: str, msg: int, at: int) -> None:
        """``server`` logged a RECEIVE or terminal event of ``msg`` at ``at``: other servers that
        handed it off, or received it no later than that, no longer carry it."""
        for other in self._others[server]:
            other.handed_off.pop(msg, None)
            since = other.pending.get(msg)
            if since is not None and since <= at:
                del other.pending[msg]

    def _went_on(self, server: str, msg: int, at: int) -> bool:
        """Whether another server already logged ``msg`` received or finished at or after ``at``."""
        for other in self._others[server]:
            for table in (other.pending, other.received, other.completed):
                seen = table.get(msg)
                if seen is not None and seen >= at:
                    return True
        return False

    def _held_elsewhere(self, server: str, msg: int) -> bool:
        """Whether another server already logged ``msg`` received or finished (at any time)."""
        return any(msg in o.pending or msg in o.received or msg in o.completed for o in self._others[server])

    def _put(self, trail: ServerTrail, table: Table, msg: int, at: int, count: bool = False) -> None:
        table[msg] = at
        if len(table) > self.cap:
            table.popitem(last=False)
            if count:
                trail.evictions += 1
