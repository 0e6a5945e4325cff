"""The status page's trace form (``/trace``), off by default.

A trace shows senders, recipients and subjects, so the form is served only when ``web.trace_enabled``
is set **and** the endpoint requires authentication: basic auth users, or a verified client
certificate, in the exporter-toolkit web configuration (``--web.config.file``). ``serve`` refuses to
start otherwise; the check is repeated on every request against the configuration as it is now (it is
re-read when the file changes), and a request that is not authenticated never reaches the form.

The form posts (the filters never appear in a URL, a browser history or a proxy log); one trace runs at
a time; every value on the page is escaped; the filters are never logged, counted or labelled.
"""

from __future__ import annotations

import html
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from exporter.trace.query import TraceQuery, TraceReport, parse_since
from exporter.trace.render import event_rows
from exporter.webconfig import WebConfig

__all__ = ["AUTH_CLIENT_TYPES", "ENVIRON_CONFIG", "TRACE_PATH", "TraceForm", "requires_authentication"]

log = logging.getLogger(__name__)

TRACE_PATH = "/trace"
#: The WSGI environ key under which the web configuration guard passes the configuration in force.
ENVIRON_CONFIG = "mailflow.web_config"
#: client_auth_type values under which no request gets through without a verified client certificate.
AUTH_CLIENT_TYPES = frozenset({"RequireAndVerifyClientCert", "RequireAnyClientCert", "RequireClientCert"})
MAX_BODY = 8192
SINCE_CHOICES = ("30m", "1h", "2h", "6h", "24h", "7d")
TRACE_TIMEOUT = 60.0

Runner = Callable[[TraceQuery, float], TraceReport]
StartResponse = Callable[..., Any]


def requires_authentication(config: WebConfig | None) -> bool:
    """Whether every request must authenticate: basic auth users, or a required client certificate."""
    if config is None:
        return False
    return bool(config.users) or config.client_auth_type in AUTH_CLIENT_TYPES


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


class TraceForm:
    """WSGI handler of ``/trace``: GET shows the form, POST runs the trace and shows it under the form.
    ``run(query, deadline)`` runs a trace with the exporter's sessions (``query.run_trace``)."""

    def __init__(self, run: Runner, timeout: float = TRACE_TIMEOUT) -> None:
        self._run = run
        self._timeout = timeout
        self._busy = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if not requires_authentication(environ.get(ENVIRON_CONFIG)):
            return self._page(start_response, "403 Forbidden", _message(
                "The trace form is switched off: this endpoint does not require authentication. It shows senders, "
                "recipients and subjects, so it is served only when the web configuration file sets basic_auth_users "
                "or requires a client certificate."))  # fmt: skip
        method = environ.get("REQUEST_METHOD", "GET").upper()
        if method == "GET":
            return self._page(start_response, "200 OK", _form({}))
        if method != "POST":
            return self._page(
                start_response, "405 Method Not Allowed", _message("Use the form."), [("Allow", "GET, POST")]
            )
        if not _same_origin(environ):
            return self._page(start_response, "403 Forbidden", _message("The form must be posted from this page."))
        fields = _fields(environ)
        if fields is None:
            return self._page(start_response, "413 Content Too Large", _message("The form data is too large."))
        try:
            query = _query(fields)
        except ValueError as exc:
            return self._page(start_response, "400 Bad Request", _form(fields, error=str(exc)))
        if not self._busy.acquire(blocking=False):
            busy = _form(fields, error="A trace is running; try again when it has finished.")
            return self._page(start_response, "429 Too Many Requests", busy, [("Retry-After", "10")])
        try:
            report = self._run(query, time.monotonic() + self._timeout)
        except Exception as exc:  # a bug must not take the page down; its text may quote the filters
            log.error("trace from the status page failed error=%s", type(exc).__name__)
            return self._page(start_response, "500 Internal Server Error", _form(fields, error="The trace failed "
                              "(see the exporter log)."))  # fmt: skip
        finally:
            self._busy.release()
        log.debug("trace from the status page servers=%d messages=%d", len(report.searches), report.matched)
        return self._page(start_response, "200 OK", _form(fields) + render_html(report))

    def _page(
        self, start_response: StartResponse, status: str, body: str, extra: list[tuple[str, str]] | None = None
    ) -> list[bytes]:
        data = _PAGE.format(body=body).encode("utf-8")
        start_response(
            status,
            [
                ("Content-Type", "text/html; charset=utf-8"),
                ("Content-Length", str(len(data))),
                ("Cache-Control", "no-store"),
                ("Referrer-Policy", "no-referrer"),
                ("X-Content-Type-Options", "nosniff"),
                ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"),
                *(extra or []),
            ],
        )
        return [data]


def _same_origin(environ: dict[str, Any]) -> bool:
    """A browser names the page that posted the form in Origin; another site's page is refused."""
    origin = environ.get("HTTP_ORIGIN")
    if not origin or origin == "null":
        return origin is None
    return urllib.parse.urlsplit(origin).netloc.lower() == str(environ.get("HTTP_HOST", "")).lower()


def _fields(environ: dict[str, Any]) -> dict[str, str] | None:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > MAX_BODY:
        return None
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    parsed = urllib.parse.parse_qs(body.decode("utf-8", "replace"), max_num_fields=20)
    return {k: v[0] for k, v in parsed.items() if v}


def _local(text: str) -> datetime | None:
    """A ``datetime-local`` value (no offset) as UTC; the form says so."""
    if not text.strip():
        return None
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a date and time") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _query(fields: dict[str, str]) -> TraceQuery:
    filters = {k: fields.get(k, "").strip() for k in ("sender", "recipient", "message_id", "subject")}
    if not any(filters.values()):
        raise ValueError("Give at least one of sender, recipient, message id or subject.")
    start, end = _local(fields.get("start", "")), _local(fields.get("end", ""))
    since = None if start is not None else parse_since(fields.get("since") or "2h")
    try:
        limit = int(fields.get("limit") or 20)
    except ValueError:
        raise ValueError("The number of messages must be a whole number.") from None
    return TraceQuery.build(
        start=start,
        end=end,
        since=since,
        sender=filters["sender"] or None,
        recipients=[filters["recipient"]] if filters["recipient"] else [],
        message_id=filters["message_id"] or None,
        subject=filters["subject"] or None,
        limit=min(limit, 100),
    )


def _message(text: str) -> str:
    return f"<p class='error' role='alert'>{_e(text)}</p>"


def _input(name: str, label: str, fields: dict[str, str], kind: str = "text", size: int = 320) -> str:
    return (
        f"<label>{_e(label)} <input type='{kind}' name='{name}' value='{_e(fields.get(name, ''))}' "
        f"maxlength='{size}' autocomplete='off'></label>"
    )


def _form(fields: dict[str, str], error: str = "") -> str:
    chosen = fields.get("since") or "2h"
    options = "".join(f"<option value='{s}'{' selected' if s == chosen else ''}>{s}</option>" for s in SINCE_CHOICES)
    return (
        "<section id='trace-form'><h2>Trace a message</h2>"
        "<p class='meta'>Every transport server's message tracking log is searched (Exchange's matching: exact "
        "sender and recipient addresses, part of the subject).</p>"
        + (_message(error) if error else "")
        + "<form method='post' action='/trace'>"
        + _input("sender", "Sender", fields, "email")
        + _input("recipient", "Recipient", fields, "email")
        + _input("message_id", "Message-ID", fields)
        + _input("subject", "Subject contains", fields)
        + f"<label>Last <select name='since'>{options}</select></label>"
        + _input("start", "or from (UTC)", fields, "datetime-local", 32)
        + _input("end", "until (UTC)", fields, "datetime-local", 32)
        + _input("limit", "Messages", {"limit": fields.get("limit", "20")}, "number", 3)
        + "<button type='submit'>Trace</button></form></section>"
    )


def render_html(report: TraceReport) -> str:
    """The report as HTML sections; every value escaped."""
    out = ["<section id='trace-result'><h2>Result</h2>"]
    searched = ", ".join(f"{s.server} ({len(s.events)} events)" for s in report.searches if s.ok) or "no server"
    out.append(f"<p class='meta'>Searched: {_e(searched)}.</p>")
    if report.unsearched:
        items = "".join(f"<li>{_e(s.server)}: {_e(s.error)}</li>" for s in report.unsearched)
        out.append(f"<div class='unsearched' role='alert'><p>Could not search:</p><ul>{items}</ul><p>A trail that "
                   "may continue there is marked <em>unsearched</em>, never <em>lost</em>.</p></div>")  # fmt: skip
    out += [f"<p class='meta'>{_e(note)}</p>" for note in report.notes]
    if not report.results:
        out.append("<p>No message matched.</p></section>")
        return "\n".join(out)
    shown = len(report.results)
    more = f"; the newest {shown} are shown" if report.matched > shown else ""
    out.append(f"<p>{report.matched} message(s) matched{_e(more)}.</p>")
    for result in report.results:
        m = result.message
        out.append(
            f"<article class='message'><h3>{_e(m.subject or '(no subject logged)')}</h3>"
            f"<p class='meta'>From {_e(m.sender or '(not logged)')} · {_e(m.message_id or m.key)} · "
            f"{_e(' → '.join(m.servers))}</p>"
        )
        out += [f"<p class='meta'>Note: {_e(note)}</p>" for note in result.notes]
        for verdict in result.verdicts:
            events = m.events_for(verdict.recipient) if verdict.recipient else m.events
            rows = "".join(
                "<tr>" + "".join(f"<td>{_e(r[c])}</td>" for c in _COLUMNS) + "</tr>"
                for r in event_rows(m, events, verdict.recipient)
            )
            hint = f"<p class='next'><strong>Next step:</strong> {_e(verdict.hint)}</p>" if verdict.hint else ""
            response = (
                f"<p class='meta'>{_e(verdict.response)}</p>"
                if verdict.response and verdict.status in ("failed", "queued")
                else ""
            )
            out.append(
                f"<div class='recipient'><h4>{_e(verdict.recipient or '(no recipient logged)')} "
                f"<span class='badge {_e(verdict.status)}'>{_e(verdict.status)}</span></h4>"
                f"<p>{_e(verdict.summary)}</p>{response}{hint}"
                f"<div class='scroll'><table><tr>{_HEADER}</tr>{rows}</table></div></div>"
            )
        out.append("</article>")
    out.append("</section>")
    return "\n".join(out)


_COLUMNS = ("time", "server", "event", "source", "connector", "next_hop", "detail")
_HEADER = "".join(f"<th>{h}</th>" for h in ("Time", "Server", "Event", "Source", "Connector", "Next hop", "Detail"))

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mailflow-exporter: trace</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<style>
body{{font-family:system-ui,sans-serif;margin:1em auto;padding:0 1em;max-width:80em;color:#222;line-height:1.4}}
h2{{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.5em}}h3{{margin:.8em 0 .2em}}
h4{{margin:.6em 0 .2em;font-size:1em}}.meta{{color:#555;margin:.2em 0;overflow-wrap:anywhere}}
form{{display:flex;flex-wrap:wrap;gap:.6em 1em;align-items:end}}
label{{display:flex;flex-direction:column;font-size:.9em}}
input,select,button{{font:inherit;padding:.2em .4em}}
.badge{{display:inline-block;padding:.05em .5em;border-radius:.8em;font-size:.85em;font-weight:600;color:#fff;
background:#666}}.delivered,.sent{{background:#17702a}}.queued,.in_transit{{background:#e8a300;color:#222}}
.failed,.lost{{background:#b00020}}.unsearched{{background:#6b6b6b}}
div.unsearched{{background:none;border-left:.3em solid #6b6b6b;padding-left:.8em}}
.error{{color:#b00020;font-weight:600}}.next{{margin:.3em 0}}
.scroll{{overflow-x:auto}}table{{border-collapse:collapse;font-size:.9em}}
td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}}
td:last-child{{overflow-wrap:anywhere;min-width:12em}}article.message{{border-top:1px solid #eee;margin-top:1em}}
</style></head><body>
<header><h1>mailflow-exporter</h1><nav><a href="/">Status</a></nav></header>
<main>
{body}
</main></body></html>
"""
