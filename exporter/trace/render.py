"""A trace as text (for a terminal) and as JSON (for scripts): per message, per recipient, a timeline
(time, server, event, source, connector, next hop) ending in the verdict.

Recipients whose events are the same (the usual case: one SEND or DELIVER names them all) share one
timeline, followed by each one's verdict. The servers that could not be searched come first, so a
missing hop is read as such.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import IO, Any

from exporter.trace.events import TraceEvent
from exporter.trace.query import TracedResult, TraceReport
from exporter.trace.stitch import TracedMessage
from exporter.trace.verdict import Verdict

__all__ = ["event_rows", "report_data", "write_json", "write_text"]

_COLUMNS = ("time", "server", "event", "source", "connector", "next_hop", "detail")
_TEXT_DETAIL = 160


def _time(at: datetime) -> str:
    return at.isoformat(sep=" ", timespec="seconds")


def _clip(text: str, limit: int = _TEXT_DETAIL) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _next_hop(event: TraceEvent, targets: dict[int, str]) -> str:
    """Where the event sent the message, or where it came from (``from ...``)."""
    if id(event) in targets:
        return targets[id(event)]
    if event.event_id in ("SEND", "DEFER"):
        return event.server_hostname
    if event.event_id in ("RECEIVE", "HAREDIRECT") and event.source == "SMTP":
        return f"from {event.client_hostname}" if event.client_hostname else ""
    if event.event_id == "RECEIVE" and event.source == "STOREDRIVER":
        return "from a mailbox"
    if event.event_id == "SUBMIT":
        return "a Transport service"
    if event.event_id == "DELIVER":
        return "mailbox"
    return ""


def _detail(event: TraceEvent, recipient: str) -> str:
    if event.event_id in ("SEND", "DEFER", "FAIL", "DELIVERFAIL", "DROP", "DSN"):
        return event.status_for(recipient) if recipient else "; ".join(dict.fromkeys(event.recipient_status))
    return ""


def event_rows(message: TracedMessage, events: Iterable[TraceEvent], recipient: str) -> list[dict[str, str]]:
    """The timeline rows of ``events`` (of ``message``) for ``recipient``."""
    targets = {id(h.sent): h.target for h in message.hops if h.source != h.target}
    return [
        {
            "time": _time(e.timestamp),
            "server": e.server,
            "event": e.event_id,
            "source": e.source,
            "connector": e.connector_id,
            "next_hop": _next_hop(e, targets),
            "detail": _detail(e, recipient),
        }
        for e in events
    ]


def _groups(result: TracedResult) -> list[tuple[tuple[TraceEvent, ...], list[Verdict]]]:
    """Recipients sharing the same events, with their verdicts, in order."""
    out: dict[tuple[int, ...], tuple[tuple[TraceEvent, ...], list[Verdict]]] = {}
    for verdict in result.verdicts:
        events = result.message.events_for(verdict.recipient) if verdict.recipient else result.message.events
        key = tuple(id(e) for e in events)
        out.setdefault(key, (events, []))[1].append(verdict)
    return list(out.values())


def _verdict_data(v: Verdict) -> dict[str, Any]:
    return {
        "status": v.status,
        "server": v.server,
        "at": v.at.isoformat() if v.at else None,
        "summary": v.summary,
        "response": v.response,
        "remote_host": v.remote_host,
        "enhanced_code": v.code,
        "category": v.category,
        "hint": v.hint,
        "queue": v.queue,
        "next_hops": list(v.next_hops),
        "unsearched": list(v.unsearched),
    }


def report_data(report: TraceReport) -> dict[str, Any]:
    """The report as plain data (what ``--format json`` prints)."""
    messages = []
    for result in report.results:
        m = result.message
        recipients = []
        for verdict in result.verdicts:
            events = m.events_for(verdict.recipient) if verdict.recipient else m.events
            recipients.append(
                {
                    "recipient": verdict.recipient,
                    "verdict": _verdict_data(verdict),
                    "timeline": event_rows(m, events, verdict.recipient),
                }
            )
        messages.append(
            {
                "message_id": m.message_id,
                "key": m.key,
                "sender": m.sender,
                "subject": m.subject,
                "first_seen": m.first_seen.isoformat(),
                "servers": list(m.servers),
                "hops": [
                    {
                        "from": h.source,
                        "to": h.target,
                        "kind": h.kind,
                        "sent": h.sent.timestamp.isoformat(),
                        "received": h.received.timestamp.isoformat(),
                    }
                    for h in m.hops
                ],
                "notes": list(result.notes),
                "reports": event_rows(m, m.reports, ""),
                "recipients": recipients,
            }
        )
    return {
        "query": report.query.describe(),
        "servers": [
            {
                "server": s.server,
                "searched": s.ok,
                "events": len(s.events),
                "truncated": s.truncated,
                "error": s.error or None,
                "reason": s.reason or None,
            }
            for s in report.searches
        ],
        "complete": report.complete,
        "matched": report.matched,
        "shown": len(report.results),
        "notes": list(report.notes),
        "messages": messages,
    }


def write_json(report: TraceReport, out: IO[str]) -> None:
    """``--format json``."""
    json.dump(report_data(report), out, indent=2, ensure_ascii=False)
    out.write("\n")


def _table(rows: list[dict[str, str]], indent: str) -> list[str]:
    cells = [[r[c] if c != "detail" else _clip(r[c]) for c in _COLUMNS] for r in rows]
    header = ["TIME", "SERVER", "EVENT", "SOURCE", "CONNECTOR", "NEXT HOP", "DETAIL"]
    widths = [max(len(header[i]), *(len(row[i]) for row in cells)) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *cells]:
        parts = [row[i].ljust(widths[i]) for i in range(len(widths))] + [row[-1]]
        lines.append((indent + "  ".join(parts)).rstrip())
    return lines


def _window(report: TraceReport) -> str:
    q = report.query
    asked = [f"sender {q.sender}"] if q.sender else []
    asked += [f"recipient {r}" for r in q.recipients]
    asked += [f"message id {q.message_id}"] if q.message_id else []
    asked += [f"subject containing {q.subject!r}"] if q.subject else []
    what = ", ".join(asked) or "every message"
    return f"Trace of {what}, {_time(q.start)} to {_time(q.end)}"


def write_text(report: TraceReport, out: IO[str]) -> None:
    """The report for a terminal."""
    w = out.write
    w(_window(report) + "\n")
    searched = [
        f"{s.server} ({len(s.events)} events{', cut off' if s.truncated else ''})" for s in report.searches if s.ok
    ]
    w(f"Searched: {', '.join(searched) or 'no server'}\n")
    if report.unsearched:
        w("Could not search:\n")
        for s in report.unsearched:
            at = f" at {s.endpoint}" if s.endpoint else ""
            w(f"  {s.server}: {s.error}{at}\n")
        w("  (a trail that may continue on one of these is marked 'unsearched', never 'lost')\n")
    for note in report.notes:
        w(f"Note: {note}\n")
    if not report.results:
        w("No message matched.\n")
        return
    shown = len(report.results)
    more = f"; showing the newest {shown} (raise --limit or narrow the search)" if report.matched > shown else ""
    w(f"{report.matched} message(s) matched{more}.\n")
    for index, result in enumerate(report.results, 1):
        m = result.message
        w(f"\n[{index}] {m.message_id or m.key}\n")
        w(f"    From: {m.sender or '(not logged)'}\n")
        w(f"    Subject: {m.subject or '(not logged)'}\n")
        w(f"    Servers: {' -> '.join(m.servers)}; first seen {_time(m.first_seen)}\n")
        for note in result.notes:
            w(f"    Note: {note}\n")
        for events, verdicts in _groups(result):
            w("\n")
            for line in _table(event_rows(m, events, verdicts[0].recipient), "    "):
                w(line + "\n")
            for v in verdicts:
                w(f"    => {v.recipient or '(no recipient logged)'}: {v.status.upper()}: {v.summary}\n")
                if v.response and v.status in ("failed", "queued"):
                    label = "last error" if v.status == "queued" else "status"
                    category = f" [{v.category}]" if v.category else ""
                    w(f"       {label}: {_clip(v.response, 400)}{category}\n")
                if v.hint:
                    w(f"       next step: {v.hint}\n")
        for report_event in m.reports:
            w(f"    Report: {report_event.event_id} at {_time(report_event.timestamp)} on {report_event.server} "
              f"to {', '.join(report_event.recipients)}\n")  # fmt: skip
