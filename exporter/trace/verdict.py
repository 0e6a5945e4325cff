"""Where each recipient's copy of a message ended: a pure function of the stitched message.

The verdicts, in the words an administrator uses:

* ``delivered``: DELIVER into the recipient's mailbox (on the server holding its database);
* ``sent``: SEND through a connector other than the intra-organisation one (the Internet, a smart
  host, a partner, an Edge server), with the remote host and its answer;
* ``failed``: FAIL (or DROP, DELIVERFAIL), the RecipientStatus classified like a queue's LastError
  (``exporter.exchange.lasterror``) with the hint for it;
* ``queued``: still on a server (received there, nothing after it that hands it on): which queue holds
  it, matched by its next hop in that server's Get-Queue, with the queue's LastError;
* ``lost``: handed to a server whose log was searched and shows nothing after it;
* ``unsearched``: handed to (or possibly continued on) a server that could not be searched, or that
  is not one of the searched servers. Never called lost: the missing hop may be there;
* ``in_transit``: not finished, and its last event is less than ``IN_TRANSIT`` before the end of the
  searched window: it may simply be on its way (neither queued nor lost yet).

Shadow copies (HARECEIVE, HADISCARD, NOTIFYSHADOW) are not the message's path and decide nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from exporter.exchange.lasterror import SmtpError, parse_smtp_error
from exporter.exchange.lasterror_hints import hint_for
from exporter.exchange.queues import QueueInfo
from exporter.trace.events import TraceEvent
from exporter.trace.stitch import SHADOW_EVENTS, TracedMessage

__all__ = ["STATUSES", "QueueState", "Scope", "Verdict", "judge", "message_notes", "queue_servers"]

STATUSES = ("delivered", "sent", "failed", "queued", "lost", "unsearched", "in_transit")
#: A message whose last event is this recent (before the end of the window) is on its way, not stuck.
IN_TRANSIT = timedelta(seconds=60)
_FAILED = frozenset({"FAIL", "DROP", "DELIVERFAIL"})
_TERMINAL = frozenset({"delivered", "sent", "failed", "poison"})


@dataclass(frozen=True)
class Scope:
    """What was searched: the servers whose logs were read, those that could not be (server -> the
    plain reason), and how a host name in a log maps to a server (None: not a searched server)."""

    searched: frozenset[str]
    failed: Mapping[str, str]
    server_of: Callable[[str], str | None] = lambda _host: None
    until: datetime | None = None  # the end of the searched window (None: never "in transit")

    def known(self, server: str) -> str | None:
        """``server`` as the scope spells it, when it was searched or could not be."""
        for name in (*self.searched, *self.failed):
            if name.lower() == server.lower():
                return name
        return None


@dataclass(frozen=True)
class QueueState:
    """Get-Queue of one server: its queues, or why they could not be read."""

    server: str
    queues: tuple[QueueInfo, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class Verdict:
    """Where one recipient's copy ended (``status``: one of STATUSES), in one sentence and its parts."""

    recipient: str
    status: str
    server: str  # where it ended or was last seen ("" when nowhere)
    at: datetime | None
    summary: str
    response: str = ""  # the remote host's answer, the RecipientStatus, or the queue's LastError
    remote_host: str = ""
    code: str = ""  # enhanced status code of the response
    category: str = ""  # its LastError category
    hint: str = ""
    queue: str = ""  # the queue's Identity
    next_hops: tuple[str, ...] = ()  # what a queue holding it would be named after
    unsearched: tuple[str, ...] = ()  # servers that could not be searched, where the trail may go on

    @property
    def wants_queue(self) -> bool:
        """A message still on a server whose queues say where (and why) it waits."""
        return self.status == "queued" and bool(self.next_hops) and not self.queue


def _time(at: datetime) -> str:
    return at.isoformat(sep=" ", timespec="seconds")


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().strip(">").lower() if "@" in address else ""


_REPLY = re.compile(r"(?<![\w.])[245]\d\d[ -][^;]*")


def _answer(context: str) -> str:
    """The remote host's reply in a SEND's SourceContext (``08DC...;250 2.0.0 OK ...;ClientSubmitTime:``)."""
    found = _REPLY.search(context or "")
    return found.group(0).strip() if found else ""


def _classified(text: str) -> tuple[SmtpError | None, str, str, str]:
    """(parsed, enhanced code, category, hint) of a RecipientStatus or LastError text."""
    err = parse_smtp_error(text) if text else None
    if err is None:
        return None, "", "", ""
    # The hint for an unknown text speaks of a queue's LastError: no help for a message's status.
    return err, err.enhanced_code, err.category, "" if err.category == "other" else hint_for(err)


def _state(events: Sequence[TraceEvent]) -> tuple[str, TraceEvent | None]:
    """The path's last decisive state and the event that set it: a terminal event always wins over what
    came before; anything else only replaces a state that is not terminal."""
    state, last = "", None
    for e in events:
        if e.event_id in SHADOW_EVENTS:
            continue
        if e.event_id == "DELIVER":
            kind = "delivered"
        elif e.external_send:
            kind = "sent"
        elif e.event_id in _FAILED:
            kind = "failed"
        elif e.event_id == "POISONMESSAGE":
            kind = "poison"
        elif e.intra_org_send:
            kind = "handoff"
        elif e.event_id == "SUBMIT":
            kind = "submitted"
        elif e.event_id in ("SUBMITDEFER", "SUBMITFAIL"):
            kind = "submission_deferred"
        else:
            kind = "pipeline"
        if kind in _TERMINAL or state not in _TERMINAL:
            state, last = kind, e
    return state, last


def _unsearched_text(scope: Scope) -> str:
    return "; ".join(f"{server}: {reason}" for server, reason in sorted(scope.failed.items()))


def _queued(recipient: str, last: TraceEvent, path: Sequence[TraceEvent], queues: Mapping[str, QueueState]) -> Verdict:
    """Still on ``last.server``: the queue that holds it, when its Get-Queue names the next hop."""
    server = last.server
    here = [e for e in path if e.server == server]
    defers = [e for e in here if e.event_id == "DEFER"]
    hops = [_domain(recipient)] + [e.server_hostname.lower() for e in defers if e.server_hostname]
    hops = [h for h in dict.fromkeys(hops) if h]
    deferred = defers[-1].status_for(recipient) if defers else ""
    base = (
        f"still on {server}: received, and no DELIVER, SEND or FAIL since (last event {last.event_id} at "
        f"{_time(last.timestamp)})"
    )
    state = queues.get(server)
    if state is None:
        err, code, category, hint = _classified(deferred)
        return Verdict(recipient, "queued", server, last.timestamp, base, deferred, "", code, category, hint, "",
                       tuple(hops))  # fmt: skip
    if state.error:
        err, code, category, hint = _classified(deferred)
        return Verdict(recipient, "queued", server, last.timestamp, f"{base}; its queues could not be read "
                       f"({state.error})", deferred, "", code, category, hint, "", tuple(hops))  # fmt: skip
    queue = _match(state.queues, hops)
    if queue is None:
        err, code, category, hint = _classified(deferred)
        holding = sum(1 for q in state.queues if q.kind == "delivery" and q.message_count)
        return Verdict(
            recipient, "queued", server, last.timestamp,
            f"{base}; no queue on {server} has next hop {' or '.join(hops) or '(unknown)'} "
            f"({holding} delivery queue(s) hold messages; a mailbox recipient's queue is named after its database)",
            deferred, "", code, category, hint, "", tuple(hops),
        )  # fmt: skip
    text = queue.last_error.raw if queue.last_error is not None else deferred
    err, code, category, hint = _classified(text)
    if err is not None and queue.last_error is not None:
        smart = None
        if queue.delivery_type == "SmartHostConnectorDelivery":
            smart = err.fqdn or err.ip or queue.next_hop_domain
        hint = hint_for(err, smart_host=smart)
    retried = f", retried {queue.retry_count} times" if queue.retry_count else ""
    return Verdict(
        recipient, "queued", server, last.timestamp,
        f"still in queue {queue.identity} on {server} (next hop {queue.next_hop_domain}, {queue.status}{retried}, "
        f"{queue.message_count} message(s))",
        text, "", code, category, hint, queue.identity, tuple(hops),
    )  # fmt: skip


def _match(queues: Iterable[QueueInfo], hops: Sequence[str]) -> QueueInfo | None:
    """The delivery (or unreachable) queue whose NextHopDomain is one of ``hops``; one holding messages first."""
    wanted = {h.strip("[]").lower() for h in hops}
    found = [
        q for q in queues if q.kind in ("delivery", "unreachable") and q.next_hop_domain.strip("[]").lower() in wanted
    ]
    found.sort(key=lambda q: (q.message_count == 0, q.status != "Retry"))
    return found[0] if found else None


def _recipient_verdict(
    message: TracedMessage, recipient: str, scope: Scope, queues: Mapping[str, QueueState]
) -> Verdict:
    path = message.events_for(recipient) if recipient else message.events
    state, last = _state(path)
    if last is None:
        return Verdict(recipient, "lost", "", None, "no event of this message concerns this recipient")
    where, at = last.server, last.timestamp
    unfinished = state in ("pipeline", "handoff", "submitted")
    if unfinished and scope.until is not None and scope.until - at < IN_TRANSIT:
        age = max(0.0, (scope.until - at).total_seconds())
        return Verdict(recipient, "in_transit", where, at, f"on its way: last event {last.event_id} on {where} at "
                       f"{_time(at)}, {age:.0f}s before the end of the search window")  # fmt: skip
    if state == "delivered":
        return Verdict(recipient, "delivered", where, at, f"delivered on {where} at {_time(at)}")
    if state == "sent":
        response = last.status_for(recipient) or _answer(last.source_context)
        _err, code, category, _hint = _classified(response)
        category = "" if response[:1] == "2" else category  # an accepted answer is no error to classify
        return Verdict(
            recipient, "sent", where, at,
            f"sent out by {where} at {_time(at)} to {last.server_hostname or '(host not logged)'}"
            f" through {last.connector_id}: {response or '(no response logged)'}",
            response, last.server_hostname, code, category,
        )  # fmt: skip
    if state == "failed":
        text = last.status_for(recipient) or last.source_context
        _err, code, category, hint = _classified(text)
        what = "dropped without a report" if last.event_id == "DROP" and not text else text
        return Verdict(recipient, "failed", where, at, f"failed on {where} at {_time(at)} ({last.event_id}): {what}",
                       text, "", code, category, hint)  # fmt: skip
    if state == "poison":
        return Verdict(recipient, "queued", where, at, f"in the poison message queue of {where} since {_time(at)}",
                       queue=f"{where}\\Poison")  # fmt: skip
    if state == "submission_deferred":
        return Verdict(recipient, "queued", where, at, f"still in the mailbox on {where}: the Mailbox Transport "
                       f"Submission service could not submit it ({last.event_id} at {_time(at)})")  # fmt: skip
    if state == "handoff":
        return _handoff(recipient, last, scope)
    if state == "submitted":
        text = f"last seen on {where}: submitted (SUBMIT) at {_time(at)} to a Transport service"
        if scope.failed:
            return Verdict(recipient, "unsearched", where, at,
                           f"{text}; it may continue on a server that could not be searched "
                           f"({_unsearched_text(scope)})", unsearched=tuple(sorted(scope.failed)))  # fmt: skip
        return Verdict(recipient, "lost", where, at, f"{text}; no searched server shows it received")
    return _queued(recipient, last, path, queues)


def _handoff(recipient: str, last: TraceEvent, scope: Scope) -> Verdict:
    """A SEND to another Exchange server (or the local Mailbox Transport Delivery) that nothing follows."""
    where, at, host = last.server, last.timestamp, last.server_hostname
    mapped = scope.server_of(host)
    target = scope.known(mapped) if mapped else None
    text = f"last seen on {where}: sent at {_time(at)} to {host or '(host not logged)'}"
    if target is not None and target in scope.failed:
        return Verdict(recipient, "unsearched", where, at,
                       f"{text}; {target} could not be searched ({scope.failed[target]})", remote_host=host,
                       unsearched=(target,))  # fmt: skip
    if target is None:
        return Verdict(recipient, "unsearched", where, at,
                       f"{text}, which is not one of the searched servers (add it to the configuration, or "
                       "enable discovery)", remote_host=host)  # fmt: skip
    if target.lower() == where.lower():
        return Verdict(recipient, "lost", where, at, f"{text} (its own Mailbox Transport Delivery service); "
                       "no DELIVER logged since", remote_host=host)  # fmt: skip
    return Verdict(recipient, "lost", where, at, f"{text}; {target}'s log shows nothing after it",
                   remote_host=host)  # fmt: skip


def judge(message: TracedMessage, scope: Scope, queues: Mapping[str, QueueState] | None = None) -> tuple[Verdict, ...]:
    """One verdict per recipient of ``message`` (in the order they were first logged); a message that
    names no recipient gets one verdict for "" . ``queues``: Get-Queue per server, for the messages still
    in one (see ``queue_servers``)."""
    recipients = message.recipients or ("",)
    return tuple(_recipient_verdict(message, r, scope, queues or {}) for r in recipients)


def queue_servers(verdicts: Iterable[Verdict]) -> list[str]:
    """The servers whose Get-Queue would say where a message still waits, sorted."""
    return sorted({v.server for v in verdicts if v.wants_queue})


def message_notes(message: TracedMessage, scope: Scope) -> tuple[str, ...]:
    """What the reader of a message's timeline must know about the searched logs: a trail that begins
    with a hop from a server that could not be searched."""
    notes = list(message.notes)
    first = next((e for e in message.events if e.event_id not in SHADOW_EVENTS), None)
    if first is not None and first.event_id == "RECEIVE" and first.source == "SMTP":
        origin = scope.server_of(first.client_hostname)
        known = scope.known(origin) if origin else None
        if known is not None and known in scope.failed:
            notes.append(
                f"the trail starts on {first.server}, received from {known}, which could not be searched "
                f"({scope.failed[known]}): its part of the trail is missing"
            )
    return tuple(notes)
