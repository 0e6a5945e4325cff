"""Stitch tracking events from every server into messages: a pure function of the events.

What an administrator does by hand with the logs of several servers:

* **MessageId across servers.** The Message-ID header is the same on every server; InternalMessageId
  is "different in the message tracking log of every Exchange server" (message-tracking.md), so it
  only joins the events of one server (an event without MessageId joins its server's message of the
  same InternalMessageId).
* **Hops.** A SEND over the Intra-Organization connector names the next server (ServerHostname); that
  server's RECEIVE over SMTP names the sender (ClientHostname). A SUBMIT of the Mailbox Transport
  Submission service is continued by a Transport service's RECEIVE naming the submitting server,
  on that server (a local submission) or another one. A SEND straight to another server's Mailbox
  Transport Delivery service is continued by its DELIVER.
* **Clocks.** Each log is stamped by its own server's clock. A hop cannot end before it started, so
  when a RECEIVE is stamped earlier than its SEND the receiving server's events are shifted (for
  ordering only: the times shown are the servers' own) and a note says by how much at least.
* **Reports.** A DSN whose Reference names a message (its MessageId, or an InternalMessageId of it) is
  attached to that message rather than shown as a message of its own.

Host names in the logs are mapped to server names by what each log says of its own server (the
receiving host of its RECEIVE and DELIVER events, the sending host of its SEND and SUBMIT events)
and by the configured host names; a name claimed by two servers is not used.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from exporter.trace.events import TraceEvent

__all__ = ["SHADOW_EVENTS", "Hop", "HostNames", "TracedMessage", "stitch"]

#: Shadow redundancy keeps a copy on another server: not where the message itself went.
SHADOW_EVENTS = frozenset({"HARECEIVE", "HADISCARD", "NOTIFYSHADOW"})
_SELF_AS_SERVER = frozenset({"RECEIVE", "DELIVER", "HAREDIRECT"})  # ServerHostname names the logging server
_SELF_AS_CLIENT = frozenset({"SEND", "SUBMIT"})  # ClientHostname names the logging server
_ARRIVALS = frozenset({"RECEIVE", "HAREDIRECT"})
_TICK = timedelta(milliseconds=1)


def _label(host: str) -> str:
    """A host name's first label (an IP address stays whole)."""
    if ":" in host or host.replace(".", "").isdigit():
        return host
    return host.split(".")[0]


class HostNames:
    """Host name (or its first label) -> server name, case-insensitive; ambiguous names are dropped."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}
        self._ambiguous: set[str] = set()

    def add(self, host: str, server: str) -> None:
        """Record that ``host`` (and its first label) names ``server``."""
        host = host.strip().strip("[]").lower()
        if not host:
            return
        for key in {host, _label(host)}:
            if key in self._ambiguous:
                continue
            known = self._names.get(key)
            if known is None:
                self._names[key] = server
            elif known.lower() != server.lower():
                del self._names[key]
                self._ambiguous.add(key)

    def server_of(self, host: str) -> str | None:
        """The server a host name in a log names, or None when unknown or ambiguous."""
        host = host.strip().strip("[]").lower()
        if not host:
            return None
        return self._names.get(host) or self._names.get(_label(host))

    @classmethod
    def learn(cls, events: Iterable[TraceEvent], configured: Mapping[str, Iterable[str]] | None = None) -> HostNames:
        """The names each log gives its own server, plus ``configured`` (server -> its host names)."""
        names = cls()
        for server, hosts in (configured or {}).items():
            names.add(server, server)
            for host in hosts:
                names.add(host, server)
        for event in events:
            names.add(event.server, event.server)
            if event.event_id in _SELF_AS_SERVER and event.source in ("SMTP", "STOREDRIVER"):
                names.add(event.server_hostname, event.server)
            elif event.event_id in _SELF_AS_CLIENT:
                names.add(event.client_hostname, event.server)
        return names


@dataclass(frozen=True)
class Hop:
    """The message passed from ``source`` to ``target``: ``kind`` is "smtp" (SEND, then RECEIVE there),
    "submission" (SUBMIT, then the Transport service's RECEIVE there) or "delivery" (SEND straight to
    the target's Mailbox Transport Delivery service, then DELIVER)."""

    source: str
    target: str
    kind: str
    sent: TraceEvent
    received: TraceEvent


@dataclass(frozen=True)
class TracedMessage:
    """One message as every searched log tells it, events in hop order."""

    key: str  # the MessageId, or "SERVER/InternalMessageId" when the log has none
    message_id: str
    sender: str
    subject: str
    recipients: tuple[str, ...]
    events: tuple[TraceEvent, ...]
    hops: tuple[Hop, ...] = ()
    notes: tuple[str, ...] = ()
    reports: tuple[TraceEvent, ...] = field(default=())  # DSNs about this message

    @property
    def first_seen(self) -> datetime:
        return min(e.timestamp for e in self.events)

    @property
    def last_seen(self) -> datetime:
        return max(e.timestamp for e in self.events)

    @property
    def servers(self) -> tuple[str, ...]:
        """The servers whose logs hold it, in hop order."""
        return tuple(dict.fromkeys(e.server for e in self.events))

    def events_for(self, recipient: str) -> tuple[TraceEvent, ...]:
        """The events that concern ``recipient`` (those naming it, and those naming no recipient)."""
        return tuple(e for e in self.events if e.involves(recipient))


def _group(events: Sequence[TraceEvent]) -> tuple[dict[str, list[TraceEvent]], list[TraceEvent]]:
    """Events by message key, and the DSN events (sorted out afterwards)."""
    by_internal: dict[tuple[str, str], str] = {}
    for e in events:
        if e.message_id and e.internal_id:
            by_internal.setdefault((e.server.lower(), e.internal_id), e.message_id)
    groups: dict[str, list[TraceEvent]] = defaultdict(list)
    reports: list[TraceEvent] = []
    for e in events:
        if e.event_id == "DSN" and e.reference:
            reports.append(e)
            continue
        key = e.message_id or by_internal.get((e.server.lower(), e.internal_id)) or f"{e.server}/{e.internal_id}"
        groups[key].append(e)
    return groups, reports


def _hops(events: Sequence[TraceEvent], names: HostNames) -> list[Hop]:
    """The hops between servers in one message's events (each arrival used once)."""
    by_server: dict[str, list[TraceEvent]] = defaultdict(list)
    for e in events:  # already in each server's own time order
        by_server[e.server].append(e)
    used: set[int] = set()
    hops: list[Hop] = []

    def first(server: str, wanted: Iterable[str], client: str | None) -> TraceEvent | None:
        for e in by_server.get(server, ()):
            if id(e) in used or e.event_id not in wanted:
                continue
            if client is None or (e.source == "SMTP" and names.server_of(e.client_hostname) == client):
                return e
        return None

    def take(source: str, target: str, kind: str, sent: TraceEvent, received: TraceEvent) -> None:
        used.add(id(received))
        if received.event_id == "HAREDIRECT":  # the RECEIVE that follows it belongs to the same hop
            receive = first(target, ("RECEIVE",), source)
            if receive is not None:
                used.add(id(receive))
        hops.append(Hop(source, target, kind, sent, received))

    for sent in sorted(events, key=lambda e: e.timestamp):
        here = sent.server
        if sent.intra_org_send:
            target = names.server_of(sent.server_hostname)
            if target is None or target.lower() == here.lower():
                continue
            arrival = first(target, _ARRIVALS, here)
            if arrival is not None:
                take(here, target, "smtp", sent, arrival)
                continue
            delivered = first(target, ("DELIVER",), None)
            if delivered is not None:
                take(here, target, "delivery", sent, delivered)
        elif sent.event_id == "SUBMIT":
            local = next(
                (e for e in by_server[here] if e.timestamp >= sent.timestamp and id(e) not in used
                 and e.event_id in _ARRIVALS and e.source == "SMTP"
                 and names.server_of(e.client_hostname) == here),
                None,
            )  # fmt: skip
            if local is not None:
                take(here, here, "submission", sent, local)
                continue
            for target in by_server:
                if target.lower() == here.lower():
                    continue
                arrival = first(target, _ARRIVALS, here)
                if arrival is not None:
                    take(here, target, "submission", sent, arrival)
                    break
    return hops


def _order(events: Sequence[TraceEvent], hops: Sequence[Hop]) -> tuple[list[TraceEvent], list[str]]:
    """Events in hop order: each server's own order, shifted so that no hop ends before it began."""
    offsets: dict[str, timedelta] = {}
    notes: list[str] = []
    for hop in sorted(hops, key=lambda h: h.sent.timestamp):
        if hop.source == hop.target:
            continue
        base = offsets.setdefault(hop.source, timedelta(0))
        if hop.target in offsets:
            continue
        behind = hop.sent.timestamp + base - hop.received.timestamp
        if behind >= timedelta(0):
            offsets[hop.target] = behind + _TICK
            if behind >= timedelta(seconds=1):
                notes.append(
                    f"{hop.target}'s clock is at least {behind.total_seconds():.0f}s behind {hop.source}'s (its "
                    f"{hop.received.event_id} is stamped before {hop.source}'s {hop.sent.event_id}); events are "
                    "listed in hop order, with each server's own times"
                )
        else:
            offsets[hop.target] = timedelta(0)
    rank = {e.server: i for i, e in reversed(list(enumerate(events)))}
    position = {id(e): i for i, e in enumerate(events)}
    ordered = sorted(
        events, key=lambda e: (e.timestamp + offsets.get(e.server, timedelta(0)), rank[e.server], position[id(e)])
    )
    return ordered, notes


def stitch(events: Iterable[TraceEvent], configured: Mapping[str, Iterable[str]] | None = None) -> list[TracedMessage]:
    """The messages in ``events`` (from any number of servers' logs), oldest first.

    ``configured``: each server's configured host names (its host, FQDN), which help map the host
    names in the logs to servers. Pure: the same events always give the same messages."""
    events = sorted(events, key=lambda e: (e.timestamp, e.server))
    names = HostNames.learn(events, configured or {})
    groups, reports = _group(events)
    keyed_internal = {(e.server.lower(), e.internal_id): k for k, evs in groups.items() for e in evs if e.internal_id}
    attached: dict[str, list[TraceEvent]] = defaultdict(list)
    for report in reports:
        owner = next((r for r in report.reference if r in groups), None)
        if owner is None:
            owner = next((keyed_internal[(report.server.lower(), r)] for r in report.reference
                          if (report.server.lower(), r) in keyed_internal), None)  # fmt: skip
        if owner is None:
            groups[report.message_id or f"{report.server}/{report.internal_id}"].append(report)
        else:
            attached[owner].append(report)
    out = []
    for key, members in groups.items():
        hops = _hops(members, names)
        ordered, notes = _order(members, hops)
        recipients = tuple(dict.fromkeys(r for e in ordered for r in e.recipients if e.event_id != "DSN"))
        out.append(
            TracedMessage(
                key=key,
                message_id=next((e.message_id for e in ordered if e.message_id), ""),
                sender=next((e.sender for e in ordered if e.sender), ""),
                subject=next((e.subject for e in ordered if e.subject), ""),
                recipients=recipients,
                events=tuple(ordered),
                hops=tuple(hops),
                notes=tuple(notes),
                reports=tuple(attached.get(key, ())),
            )
        )
    return sorted(out, key=lambda m: (m.first_seen, m.key))
