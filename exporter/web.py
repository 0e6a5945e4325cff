"""HTTP server: ``/metrics`` (configurable), ``/`` status page (triage, collectors), ``/-/healthy``, ``/-/ready``.

With a web configuration file (``--web.config.file``, the exporter-toolkit format; see
``exporter.webconfig``) every path is served over TLS and/or behind basic auth, as in the Go toolkit.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.exposition import SharedRenderApp
from exporter.httpserver import HardenedHTTPServer, ServerLimits, client_key
from exporter.store import SnapshotStore
from exporter.triage.report import no_findings_line, status_line
from exporter.webconfig import AuthVerdict, BasicAuth, ClientRateLimiter, RateLimiter, WebConfigReloader

if TYPE_CHECKING:
    from exporter.triage.model import Report

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
Environ = dict[str, Any]


class _Guard:
    """What the web configuration file asks of every request, on every path (as the exporter-toolkit
    does: ``/-/healthy`` and ``/-/ready`` too): basic auth (401 with ``WWW-Authenticate: Basic``), the
    rate limit (429) and the extra response headers.

    Unlike the toolkit, the rate limit counts authenticated requests only, so a flood of unauthenticated
    ones cannot spend the real scraper's budget: a request without credentials, or with credentials
    already known to be wrong, costs nothing and gets 401; a password that needs a bcrypt check spends
    the client's own allowance of checks (per peer address or IPv6 /64, at the configured rate), so a guessing flood
    is refused with 429 without burning CPU, while a scraper whose password was verified before goes
    straight through. Without ``basic_auth_users`` every request counts, as in the toolkit."""

    def __init__(self, app: Callable[[Environ, StartResponse], Iterable[bytes]], config: WebConfigReloader) -> None:
        self._app = app
        self._config = config
        self._auth = BasicAuth()
        self._limiter = RateLimiter()
        self._checks = ClientRateLimiter()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        config = self._config.current()
        extra = list(config.headers)
        names = {name.lower() for name, _ in extra}

        def respond(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            kept = [h for h in headers if h[0].lower() not in names]
            return start_response(status, kept + extra, exc_info) if exc_info else start_response(status, kept + extra)

        environ["mailflow.web_config"] = config  # the configuration in force (the trace form checks it)
        if config.users:
            client = client_key(str(environ.get("REMOTE_ADDR", "")))
            verdict, user = self._auth.verify(
                config.users,
                environ.get("HTTP_AUTHORIZATION"),
                may_check=lambda: self._checks.allow(client, config.rate_interval, config.rate_burst),
            )
            if verdict is AuthVerdict.LIMITED:
                return _text(respond, "429 Too Many Requests", "Too Many Requests\n")
            if verdict is not AuthVerdict.OK:
                if user:
                    log.debug("basic auth failed user=%s client=%s", user, client)
                body = b"Unauthorized\n"
                respond(
                    "401 Unauthorized",
                    [
                        ("WWW-Authenticate", "Basic"),
                        ("Content-Type", "text/plain; charset=utf-8"),
                        ("Content-Length", str(len(body))),
                    ],
                )
                return [body]
        if not self._limiter.allow(config.rate_interval, config.rate_burst):
            return _text(respond, "429 Too Many Requests", "Too Many Requests\n")
        return self._app(environ, respond)


def split_listen_address(address: str) -> tuple[str, int]:
    """``:10049`` -> ("0.0.0.0", 10049); ``[::]:10049`` -> ("::", 10049)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class WebApp:
    """The WSGI application."""

    def __init__(
        self,
        registry: CollectorRegistry,
        store: SnapshotStore,
        telemetry_path: str,
        runbook_url: str,
        ready: Callable[[], tuple[bool, str]],
        healthy: Callable[[], tuple[bool, str]] = lambda: (True, "Healthy"),
        triage: Callable[[], Report] | None = None,
        triage_cache_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        trace: Callable[[Environ, StartResponse], Iterable[bytes]] | None = None,
    ) -> None:
        self._metrics_app = SharedRenderApp(registry, store.generation)
        self._store = store
        self._path = telemetry_path
        self._runbook = runbook_url
        self._ready = ready
        self._healthy = healthy
        self._triage = triage
        self._triage_ttl = triage_cache_seconds
        self._triage_lock = threading.Lock()
        self._triage_cached: tuple[float, str] | None = None  # (monotonic time, rendered HTML)
        self._clock = clock
        self._trace = trace  # the /trace form (exporter.trace.web), when web.trace_enabled

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Route by path; GET and HEAD only (HEAD is answered as GET: the server drops the body), any other
        method on a known path gets 405 with ``Allow``."""
        route = self._route(environ.get("PATH_INFO", "/"))
        if route is None:
            return _text(start_response, "404 Not Found", "Not found. Try / or " + self._path + "\n")
        method = environ.get("REQUEST_METHOD", "GET")
        if method == "HEAD":
            environ = {**environ, "REQUEST_METHOD": "GET"}  # the same answer, from the same (shared) render
        elif method == "POST" and route is self._trace:
            pass  # the trace form posts its filters (a small body, read only once authenticated)
        elif method != "GET":
            body = b"Method Not Allowed\n"
            start_response(
                "405 Method Not Allowed",
                [
                    ("Allow", "GET, HEAD"),
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Length", str(len(body))),
                ],
            )
            return [body]
        return route(environ, start_response)

    def _route(self, path: str) -> Callable[[Environ, StartResponse], Iterable[bytes]] | None:
        if path == self._path:
            return self._metrics_app
        if path == "/-/healthy":
            return lambda environ, start_response: _probe(start_response, self._healthy)
        if path == "/-/ready":
            return lambda environ, start_response: _probe(start_response, self._ready)
        if path in ("/", "/index.html"):
            return self._landing
        if path == "/trace" and self._trace is not None:
            return self._trace
        return None

    def _landing(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        body = self.landing_page().encode("utf-8")
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/html; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-cache"),
            ],
        )
        return [body]

    @property
    def metrics_renders(self) -> int:
        """How many times /metrics was rendered (concurrent scrapes share renders)."""
        return self._metrics_app.renders

    def landing_page(self) -> str:
        """The status page: the triage of the latest snapshots (verdicts, findings, what could not be
        checked), then one row per collector and target."""
        now = self._store.now()
        rows = []
        for (collector, target), state in sorted(self._store.states().items()):
            last = state.last
            status = "up" if last.ok else f"down ({last.reason})"
            ok_age = f"{now - state.last_success.finished:.0f}s ago" if state.last_success else "never"
            rows.append(
                "<tr><td>{}</td><td>{}</td><td class='{}'>{}</td><td>{:.2f}s</td><td>{}</td><td>{}</td></tr>".format(
                    _e(collector),
                    _e(target),
                    "ok" if last.ok else "bad",
                    _e(status),
                    last.duration,
                    _e(ok_age),
                    _e(f"{last.message} at {last.endpoint}" if last.endpoint else last.message),
                )
            )
        table = "\n".join(rows) or "<tr><td colspan='6'>No poll has finished yet.</td></tr>"
        return _PAGE.format(
            version=_e(__version__),
            metrics=_e(self._path),
            runbook=_e(self._runbook),
            trace=" · <a href='/trace'>Trace a message</a>" if self._trace is not None else "",
            triage=self._triage_html(),
            rows=table,
            generated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now)),
        )

    def _triage_html(self) -> str:
        """The triage sections, rendered at most once per ``triage_cache_seconds`` (a failure too, so a
        broken rule is logged once per period, not once per request). Never raises."""
        if self._triage is None:
            return ""
        with self._triage_lock:  # one build at a time; concurrent requests wait and reuse it
            cached = self._triage_cached
            if cached is not None and self._clock() - cached[0] < self._triage_ttl:
                return cached[1]
            try:
                rendered = render_triage(self._triage(), self._runbook)
            except Exception as exc:  # the page must survive a broken rule
                log.exception("status page: triage failed")
                rendered = (
                    f"<p class='triage-error' role='alert'>triage failed: {_e(type(exc).__name__)} "
                    "(see the exporter log); the collectors below are still current.</p>"
                )
            self._triage_cached = (self._clock(), rendered)
            return rendered


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def runbook_link(runbook_url: str, anchor: str) -> str:
    """``<runbook_url>#<anchor>`` (an anchor already in the base URL is replaced)."""
    return runbook_url.split("#", 1)[0] + "#" + urllib.parse.quote(anchor, safe="-_.~")


def _items(lines: Iterable[str], css: str = "evidence") -> str:
    items = "".join(f"<li>{_e(line)}</li>" for line in lines)
    return f"<ul class='{css}'>{items}</ul>" if items else ""


def render_triage(report: Report, runbook_url: str) -> str:
    """The report as HTML sections: verdicts, findings, could-not-check (and what is still being polled).
    Every value is escaped. "No problems found" only when every collector's last poll succeeded."""
    out = ["<section id='verdicts'><h2>Is mail flowing?</h2>"]
    if status_line(report):
        out.append(f"<p class='pending-note' role='status'>{_e(status_line(report))}</p>")
    out.append("<ul class='verdicts'>")
    for v in report.verdicts:
        out.append(
            f"<li class='verdict' id='verdict-{_e(v.scope)}'><h3>{_e(v.scope.capitalize())}: "
            f"<span class='badge {_e(v.status)}'>{_e(v.status)}</span></h3>{_items(v.evidence)}</li>"
        )
    out.append("</ul></section>")

    counts = ", ".join(f"{n} {s}" for s, n in report.counts.items() if n)
    checked = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(report.checked_at))
    summary = counts or no_findings_line(report).rstrip(".").lower()
    out.append(
        f"<section id='findings'><h2>Findings ({len(report.findings)})</h2>"
        f"<p class='meta'>{_e(summary)}; from the latest snapshots at {_e(checked)}.</p>"
    )
    if report.findings:
        out.append("<ol class='findings'>")
        for i, f in enumerate(report.findings, 1):
            where = " · ".join([*f.scopes, f.step])
            link = ""
            if f.runbook:
                link = (
                    f"<p class='runbook'><a href='{_e(runbook_link(runbook_url, f.runbook))}'>"
                    f"Runbook: {_e(f.runbook)}</a></p>"
                )
            out.append(
                f"<li class='finding {_e(f.severity)}' id='finding-{i}' data-rule='{_e(f.rule)}'>"
                f"<h3><span class='badge {_e(f.severity)}'>{_e(f.severity)}</span> "
                f"<span class='title'>{_e(f.title)}</span></h3>"
                f"<p class='meta'>{_e(where)}</p>{_items(f.evidence)}"
                f"<p class='next'><strong>Next step:</strong> {_e(f.next_step)}</p>{link}</li>"
            )
        out.append("</ol>")
    else:
        out.append(f"<p>{_e(no_findings_line(report))}</p>")
    out.append("</section>")

    out.append(f"<section id='unchecked'><h2>Could not check ({len(report.unchecked) + len(report.pending)})</h2>")
    if report.unchecked:
        out.append("<p>These polls failed, so the findings above cannot cover them:</p>")
        out.append(_items(report.unchecked, "unchecked"))
    if report.pending:
        done = "did not finish" if report.timeout is not None else "have not finished their first poll yet"
        out.append(f"<p>These {_e(done)}:</p>")
        out.append(_items(report.pending, "pending"))
    if report.complete:
        out.append("<p>Nothing: every collector's last poll succeeded.</p>")
    out.append("</section>")
    return "\n".join(out)


def _probe(start_response: StartResponse, check: Callable[[], tuple[bool, str]]) -> list[bytes]:
    ok, detail = check()
    return _text(start_response, "200 OK" if ok else "503 Service Unavailable", detail + "\n")


def _text(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    data = body.encode("utf-8")
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))])
    return [data]


class ListenError(OSError):
    """An address to listen on could not be bound (in use, not local, no permission)."""


class WebServer:
    """Serves the app on background threads until ``stop``: one listener per address in ``listen_address``
    (a ``[host]:port`` or a sequence of them, as ``--web.listen-address`` repeated), each with the same
    web configuration, as the exporter-toolkit does. With ``web_config_file`` (the exporter-toolkit format)
    every listener serves HTTPS and/or asks for basic auth; the file is validated here (ConfigError when it
    is invalid) and re-read when it changes, checked at most every ``reload_interval`` seconds. An address
    that cannot be bound raises ListenError naming it, after closing the listeners already bound.

    ``limits`` bound what any client may take (timeouts, header sizes, connections: see
    ``exporter.httpserver``); ``handshake_timeout``, when given, overrides its TLS handshake timeout."""

    def __init__(
        self,
        app: WebApp,
        listen_address: str | Sequence[str],
        web_config_file: Path | None = None,
        *,
        reload_interval: float = 1.0,
        handshake_timeout: float | None = None,
        limits: ServerLimits | None = None,
    ) -> None:
        addresses = [listen_address] if isinstance(listen_address, str) else list(listen_address)
        if not addresses:
            raise ValueError("no listen address")
        self.web_config: WebConfigReloader | None = None
        wsgi_app: Any = app
        if web_config_file is not None:
            self.web_config = WebConfigReloader(Path(web_config_file), reload_interval)
            wsgi_app = _Guard(app, self.web_config)  # one guard: the rate limit counts every listener's requests
        tls = self.web_config is not None and self.web_config.current().tls
        limits = limits or ServerLimits()
        if handshake_timeout is not None:
            limits = dataclasses.replace(limits, handshake_timeout=handshake_timeout)
        self.limits = limits
        self._servers: list[HardenedHTTPServer] = []
        try:
            for address in addresses:
                host, port = split_listen_address(address)
                tls_config = self.web_config if tls else None
                self._servers.append(HardenedHTTPServer((host, port), wsgi_app, limits, tls_config))
        except OSError as exc:
            for httpd in self._servers:
                httpd.server_close()
            raise ListenError(exc.errno, f"cannot listen on {address}: {exc.strerror or exc}") from exc
        if self.web_config is not None:
            config = self.web_config.current()
            log.info("web config loaded path=%s %s", web_config_file, config.describe())
            for warning in config.warnings:
                log.warning("web config: %s", warning)
        self._threads = [
            threading.Thread(target=httpd.serve_forever, name=f"web-{i}", daemon=True)
            for i, httpd in enumerate(self._servers)
        ]

    @property
    def port(self) -> int:
        """The first listener's port (the one port when there is one address)."""
        return self.ports[0]

    @property
    def ports(self) -> list[int]:
        """Every listener's port, in the order of the addresses (port 0 becomes the port picked)."""
        return [int(httpd.server_address[1]) for httpd in self._servers]

    @property
    def addresses(self) -> list[str]:
        """Every listener's bound address as ``host:port`` (``[host]:port`` for IPv6)."""
        out = []
        for httpd in self._servers:
            host, port = str(httpd.server_address[0]), int(httpd.server_address[1])  # (host, port[, flow, scope])
            out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        return out

    @property
    def sockets(self) -> list[socket.socket]:
        """Every listener's listening socket, in the order of the addresses."""
        return [httpd.socket for httpd in self._servers]

    @property
    def scheme(self) -> str:
        return "https" if self._servers[0].web_config is not None else "http"

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        for httpd in self._servers:
            httpd.shutdown()
            httpd.server_close()


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mailflow-exporter</title>
<meta http-equiv="refresh" content="30">
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font-family:system-ui,sans-serif;margin:1em auto;padding:0 1em;max-width:72em;color:#222;line-height:1.4}}
h1{{margin-bottom:.2em}}h2{{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.5em}}
h3{{font-size:1.05em;margin:.2em 0}}nav a{{margin-right:.2em}}.meta{{color:#555;margin:.2em 0}}
.badge{{display:inline-block;padding:.05em .5em;border-radius:.8em;font-size:.85em;font-weight:600;color:#fff;
background:#666;vertical-align:baseline}}
.healthy{{background:#17702a}}.degraded,.warning{{background:#e8a300;color:#222}}
.failing,.critical{{background:#b00020}}.unknown{{background:#6b6b6b}}.info{{background:#1f5fa8}}
.polling{{background:#3d5a80}}.pending-note{{font-weight:600;color:#3d5a80}}
ul.verdicts{{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.8em}}
li.verdict{{flex:1 1 16em;border:1px solid #ddd;border-radius:.4em;padding:.5em .8em}}
ol.findings{{padding-left:1.5em}}li.finding{{margin-bottom:1em;background:none}}
li.finding>h3 .badge{{margin-right:.3em}}ul.evidence,ul.unchecked,ul.pending{{margin:.2em 0;padding-left:1.2em}}
ul.evidence li,ul.unchecked li,ul.pending li{{overflow-wrap:anywhere;font-size:.95em}}
.next{{margin:.3em 0}}.runbook{{margin:.2em 0}}
.triage-error{{color:#b00020;font-weight:600}}
.scroll{{overflow-x:auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}}
td:last-child{{overflow-wrap:anywhere;min-width:12em}}
td.ok{{color:#17702a}}td.bad{{color:#b00020;font-weight:600}}
</style></head><body>
<header><h1>mailflow-exporter</h1>
<p>Prometheus exporter for Microsoft Exchange mail flow, version {version}.</p>
<nav><a href="{metrics}">Metrics</a> · <a href="/-/healthy">Health</a> · <a href="/-/ready">Readiness</a> ·
<a href="{runbook}">Runbook</a>{trace}</nav></header>
<main>
{triage}
<section id="collectors"><h2>Collectors</h2>
<div class="scroll"><table>
<tr><th>Collector</th><th>Target</th><th>Last poll</th><th>Duration</th><th>Last success</th><th>Detail</th></tr>
{rows}
</table></div></section>
</main>
<footer><p><small>Generated {generated}. Values are polled on a schedule; this page refreshes every 30 s.
</small></p></footer>
</body></html>
"""
