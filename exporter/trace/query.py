"""Run a trace: search every transport server's tracking log in parallel, stitch, judge, and read the
queues of the servers where messages still wait.

Every call goes through the exporter's own sessions (``ExchangeTargets.session``: the same runspace
pools, limits, deadlines and failure texts as the collectors). A server that cannot be searched is
reported with the plain reason from ``exporter.exchange.failures``; the verdicts then never call a
message lost where that server might hold the rest of its trail (``verdict.Scope``).

Parameters: ``-Sender``, ``-Recipients``, ``-MessageId``, ``-MessageSubject``, ``-Start``, ``-End``,
``-ResultSize`` and ``-Server`` only, all in the 2013 Message Tracking role entry (which lacks
``-Source``, ``-NetworkMessageId`` and ``-TransportTrafficType``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from exporter.errors import CollectorError
from exporter.exchange.queues import parse_queue
from exporter.exchange.session import start_thread
from exporter.exchange.targets import ExchangeTargets
from exporter.trace.events import TRACE_PROPERTIES, TraceEvent, parse_trace_event
from exporter.trace.limits import MAX_LIMIT, MAX_WINDOW, parse_since
from exporter.trace.stitch import HostNames, TracedMessage, stitch
from exporter.trace.verdict import QueueState, Scope, Verdict, judge, message_notes, queue_servers

__all__ = [
    "MAX_WINDOW",
    "ServerSearch",
    "TraceQuery",
    "TraceReport",
    "TracedResult",
    "parse_since",
    "run_trace",
]

log = logging.getLogger(__name__)

MAX_RESULT_SIZE = 50_000
_MAX_TEXT = 320  # an SMTP path is at most 256 octets (RFC 5321); a subject filter needs no more


def _clean(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > _MAX_TEXT or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{what}: at most {_MAX_TEXT} printable characters")
    return value


def _utc_text(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class TraceQuery:
    """What to look for and when. Use ``TraceQuery.build`` (it checks every value)."""

    start: datetime
    end: datetime
    sender: str | None = None
    recipients: tuple[str, ...] = ()
    message_id: str | None = None
    subject: str | None = None
    limit: int = 20  # messages shown (the newest)
    result_size: int = 5000  # events read per server at most

    @classmethod
    def build(
        cls,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        since: timedelta | None = None,
        sender: str | None = None,
        recipients: Iterable[str] = (),
        message_id: str | None = None,
        subject: str | None = None,
        limit: int = 20,
        result_size: int = 5000,
        now: datetime | None = None,
    ) -> TraceQuery:
        """A checked query; ValueError names the value that is wrong. The window is ``start``..``end``,
        or the last ``since`` before ``end``, by default the last 2 hours; naive times are UTC."""
        if end is None:
            end = now or datetime.now(UTC)
        elif end.tzinfo is None:
            end = end.replace(tzinfo=UTC)
        if start is None:
            start = end - (since if since is not None else timedelta(hours=2))
        elif start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        if start >= end:
            raise ValueError("the window is empty: --start must be before --end")
        if end - start > MAX_WINDOW:
            raise ValueError("the window is longer than 30 days (Exchange keeps 30 days of tracking logs by default)")
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"--limit must be between 1 and {MAX_LIMIT}")
        if not 1 <= result_size <= MAX_RESULT_SIZE:
            raise ValueError(f"the events read per server must be between 1 and {MAX_RESULT_SIZE}")
        wanted = tuple(r for r in (_clean(r, "recipient") for r in recipients) if r)
        if len(wanted) > 20:
            raise ValueError("at most 20 recipients")
        return cls(
            start=start,
            end=end,
            sender=_clean(sender, "sender"),
            recipients=wanted,
            message_id=_clean(message_id, "message id"),
            subject=_clean(subject, "subject"),
            limit=limit,
            result_size=result_size,
        )

    @property
    def filtered(self) -> bool:
        """Whether any of sender, recipient, message id or subject narrows the search."""
        return bool(self.sender or self.recipients or self.message_id or self.subject)

    def parameters(self, server: str) -> dict[str, Any]:
        """The Get-MessageTrackingLog parameters for one server."""
        params: dict[str, Any] = {
            "Server": server,
            "Start": _utc_text(self.start),
            "End": _utc_text(self.end),
            "ResultSize": self.result_size,
        }
        if self.sender:
            params["Sender"] = self.sender
        if self.recipients:
            params["Recipients"] = list(self.recipients)  # any of them (Exchange's own semantics)
        if self.message_id:
            # The docs ask for the full value "which may include angle brackets"; the log keeps them.
            mid = self.message_id
            params["MessageId"] = mid if mid.startswith("<") else f"<{mid}>"
        if self.subject:
            params["MessageSubject"] = self.subject  # a substring match
        return params

    def describe(self) -> dict[str, Any]:
        """The query as data (for the JSON report)."""
        return {
            "start": _utc_text(self.start),
            "end": _utc_text(self.end),
            "sender": self.sender,
            "recipients": list(self.recipients),
            "message_id": self.message_id,
            "subject_contains": self.subject,
            "limit": self.limit,
        }


@dataclass(frozen=True)
class ServerSearch:
    """One server's part of the search: its events, or why it could not be searched."""

    server: str
    events: tuple[TraceEvent, ...] = ()
    truncated: bool = False  # more events matched than were read (-ResultSize)
    error: str = ""  # plain reason, "" when searched
    reason: str = ""  # the failure's bounded reason (timeout, connection, auth, permission...)
    endpoint: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(frozen=True)
class TracedResult:
    """One message, its verdict per recipient, and what its reader must know."""

    message: TracedMessage
    verdicts: tuple[Verdict, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class TraceReport:
    """The whole trace: what was asked, what each server said, and the messages (the newest ``limit``)."""

    query: TraceQuery
    searches: tuple[ServerSearch, ...]
    results: tuple[TracedResult, ...]
    matched: int  # messages found in all
    queues: Mapping[str, QueueState] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def unsearched(self) -> tuple[ServerSearch, ...]:
        return tuple(s for s in self.searches if not s.ok)

    @property
    def complete(self) -> bool:
        """Every server searched, nothing cut off by -ResultSize."""
        return all(s.ok and not s.truncated for s in self.searches) and bool(self.searches)

    @property
    def exit_code(self) -> int:
        """0: every server searched; 3: some server could not be searched (or none was found)."""
        return 0 if self.searches and not self.unsearched else 3


def _search(targets: ExchangeTargets, server: str, query: TraceQuery) -> ServerSearch:
    try:
        session = targets.session(server)
        result = session.invoke("Get-MessageTrackingLog", query.parameters(server), select=TRACE_PROPERTIES)
        result.raise_for_errors(f"Get-MessageTrackingLog -Server {server}")
        events = tuple(e for e in (parse_trace_event(o, server) for o in result.objects if o is not None) if e)
    except CollectorError as exc:
        return ServerSearch(server, error=str(exc), reason=exc.reason, endpoint=exc.endpoint)
    except Exception as exc:  # a bug must not hide the other servers' results
        log.debug("trace search crashed server=%s", server, exc_info=exc)
        return ServerSearch(server, error=f"internal error ({type(exc).__name__})", reason="other")
    truncated = any("more results available" in w.lower() for w in result.warnings)
    truncated = truncated or len(result.objects) >= query.result_size
    return ServerSearch(server, events, truncated)


def _gather(jobs: Mapping[str, Future[Any]], deadline: float | None, late: Any) -> dict[str, Any]:
    """Each job's result by the deadline; ``late(server)`` for those still running then."""
    out: dict[str, Any] = {}
    for server, future in jobs.items():
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            out[server] = future.result(timeout=wait)
        except FutureTimeout:
            out[server] = late(server)
    return out


def search_all(targets: ExchangeTargets, query: TraceQuery, deadline: float | None = None) -> list[ServerSearch]:
    """Search every transport server (hub Transport) in parallel, each through its own session."""
    servers = targets.hub_transport_names()
    jobs = {s: start_thread(lambda s=s: _search(targets, s, query), f"trace-{s}") for s in servers}  # type: ignore[misc]
    found = _gather(jobs, deadline, lambda s: ServerSearch(s, error="no answer within the trace's time limit",
                                                           reason="timeout"))  # fmt: skip
    return [found[s] for s in servers]


def _queues(targets: ExchangeTargets, server: str) -> QueueState:
    try:
        result = targets.session(server).invoke("Get-Queue", {"Server": server, "ResultSize": 1000})
        result.raise_for_errors(f"Get-Queue -Server {server}")
        return QueueState(server, tuple(parse_queue(o, server) for o in result.objects if o is not None))
    except CollectorError as exc:
        return QueueState(server, error=str(exc))
    except Exception as exc:
        log.debug("trace queue read crashed server=%s", server, exc_info=exc)
        return QueueState(server, error=f"internal error ({type(exc).__name__})")


def read_queues(
    targets: ExchangeTargets, servers: Sequence[str], deadline: float | None = None
) -> dict[str, QueueState]:
    """Get-Queue of each server, in parallel."""
    jobs = {s: start_thread(lambda s=s: _queues(targets, s), f"trace-queues-{s}") for s in servers}  # type: ignore[misc]
    return _gather(jobs, deadline, lambda s: QueueState(s, error="no answer within the trace's time limit"))


def configured_hosts(targets: ExchangeTargets) -> dict[str, tuple[str, ...]]:
    """Each target server's configured host name (helps map host names in the logs to servers)."""
    out: dict[str, tuple[str, ...]] = {}
    for name in targets.names():
        try:
            out[name] = (targets.server(name).host,)
        except CollectorError:  # left the inventory meanwhile
            continue
    return out


def run_trace(targets: ExchangeTargets, query: TraceQuery, deadline: float | None = None) -> TraceReport:
    """Search, stitch, judge, read the queues where messages wait, judge again. ``deadline``:
    ``time.monotonic()`` by which to answer (servers still searching then are reported as such)."""
    searches = search_all(targets, query, deadline)
    configured = configured_hosts(targets)
    events = [e for s in searches for e in s.events]
    names = HostNames.learn(events, configured)
    scope = Scope(
        searched=frozenset(s.server for s in searches if s.ok),
        failed={s.server: s.error for s in searches if not s.ok},
        server_of=names.server_of,
        until=query.end,
    )
    messages = stitch(events, configured)
    shown = messages[-query.limit :]
    first = [judge(m, scope) for m in shown]
    wanted = queue_servers(v for verdicts in first for v in verdicts)
    wanted = [s for s in wanted if s in scope.searched]
    queues = read_queues(targets, wanted, deadline) if wanted else {}
    results = tuple(TracedResult(m, judge(m, scope, queues), message_notes(m, scope)) for m in shown)
    notes = []
    if not searches:
        notes.append("no transport server to search (no hub Transport server among the configured servers)")
    for s in searches:
        if s.truncated:
            notes.append(
                f"{s.server}: more than {query.result_size} events matched; only the first were read: narrow the "
                "search (a sender, recipient or subject, a shorter window)"
            )
    log.debug("trace finished servers=%d unsearched=%d messages=%d", len(searches), len(scope.failed), len(messages))
    return TraceReport(query, tuple(searches), results, len(messages), queues, tuple(notes))
