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
InternalMessageId, which is per server, and never followed across servers. Every table is bounded
by ``cap`` (oldest out first); the keys are never labels.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

__all__ = ["MessageTrails", "ServerTrail"]

_NO_OFFSET = timedelta(0)
# A message that reached one of these on a server has left that server's pipeline.
TERMINAL_EVENTS = frozenset({"DELIVER", "SEND", "TRANSFER", "FAIL", "DROP", "DELIVERFAIL", "POISONMESSAGE"})
LATENCY_EVENTS = frozenset({"DELIVER", "SEND"})


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

    pending: OrderedDict[str, datetime] = field(default_factory=OrderedDict)  # message -> RECEIVE time
    received: OrderedDict[str, datetime] = field(default_factory=OrderedDict)  # for latency pairing
    completed: OrderedDict[str, datetime] = field(default_factory=OrderedDict)  # latency observed: at
    handed_off: OrderedDict[str, datetime] = field(default_factory=OrderedDict)  # SUBMIT elsewhere: RECEIVE
    evictions: int = 0


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
        msg = event.message_id or event.internal_id
        at = event.timestamp - offset
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
        received = trail.received.pop(msg, None) or since
        self._put(trail, trail.completed, msg, at)
        if event.latency is not None:
            return event.latency
        return None if received is None else (at - received).total_seconds()

    def counts(self, server: str, stuck_before: datetime, forget_before: datetime) -> tuple[int, int, int]:
        """(stuck, unfollowed, evictions) of ``server`` now; forgets what is older than ``forget_before``."""
        trail = self.server(server)
        for table in (trail.pending, trail.received, trail.handed_off):
            for msg, since in list(table.items()):
                if since < forget_before:
                    del table[msg]  # older than anyone waits: stop carrying it
                else:
                    break  # (nearly) in arrival order
        stuck = sum(1 for since in trail.pending.values() if since <= stuck_before)
        unfollowed = sum(1 for since in trail.handed_off.values() if since <= stuck_before)
        return stuck, unfollowed, trail.evictions

    def drop_before(self, server: str, start: datetime) -> None:
        """Stop carrying ``server``'s messages received before ``start`` (a window was skipped: they
        may have finished unseen)."""
        trail = self.server(server)
        for table in (trail.pending, trail.received, trail.handed_off):
            for msg in [m for m, since in table.items() if since < start]:
                del table[msg]

    # -- across servers ------------------------------------------------------------------------
    def _moved_here(self, server: str, msg: str, at: datetime) -> None:
        """``server`` logged a RECEIVE or terminal event of ``msg`` at ``at``: other servers that
        handed it off, or received it no later than that, no longer carry it."""
        for other in self._others[server]:
            other.handed_off.pop(msg, None)
            since = other.pending.get(msg)
            if since is not None and since <= at:
                del other.pending[msg]

    def _went_on(self, server: str, msg: str, at: datetime) -> bool:
        """Whether another server already logged ``msg`` received or finished at or after ``at``."""
        for other in self._others[server]:
            for table in (other.pending, other.received, other.completed):
                seen = table.get(msg)
                if seen is not None and seen >= at:
                    return True
        return False

    def _held_elsewhere(self, server: str, msg: str) -> bool:
        """Whether another server already logged ``msg`` received or finished (at any time)."""
        return any(msg in o.pending or msg in o.received or msg in o.completed for o in self._others[server])

    def _put(
        self, trail: ServerTrail, table: OrderedDict[str, datetime], msg: str, at: datetime, count: bool = False
    ) -> None:
        table[msg] = at
        if len(table) > self.cap:
            table.popitem(last=False)
            if count:
                trail.evictions += 1
