"""HTTP server: ``/metrics`` (configurable), ``/`` landing page, ``/-/healthy`` and ``/-/ready``."""

from __future__ import annotations

import html
import socket
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from exporter import __version__
from exporter.store import SnapshotStore

StartResponse = Callable[..., Any]
Environ = dict[str, Any]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _ThreadingWSGIServerV6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Access logs are noise for an exporter scraped every 15 s."""


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
    ) -> None:
        self._metrics_app = make_wsgi_app(registry)
        self._store = store
        self._path = telemetry_path
        self._runbook = runbook_url
        self._ready = ready
        self._healthy = healthy

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == self._path:
            return self._metrics_app(environ, start_response)
        if path == "/-/healthy":
            ok, detail = self._healthy()
            return _text(start_response, "200 OK" if ok else "503 Service Unavailable", detail + "\n")
        if path == "/-/ready":
            ok, detail = self._ready()
            return _text(start_response, "200 OK" if ok else "503 Service Unavailable", detail + "\n")
        if path in ("/", "/index.html"):
            body = self.landing_page().encode("utf-8")
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))])
            return [body]
        return _text(start_response, "404 Not Found", "Not found. Try / or " + self._path + "\n")

    def landing_page(self) -> str:
        """A small status page: one row per collector and target, from the latest snapshots."""
        now = self._store.now()
        rows = []
        for (collector, target), state in sorted(self._store.states().items()):
            last = state.last
            status = "up" if last.ok else f"down ({last.reason})"
            ok_age = f"{now - state.last_success.finished:.0f}s ago" if state.last_success else "never"
            rows.append(
                "<tr><td>{}</td><td>{}</td><td class='{}'>{}</td><td>{:.2f}s</td><td>{}</td><td>{}</td></tr>".format(
                    html.escape(collector),
                    html.escape(target),
                    "ok" if last.ok else "bad",
                    html.escape(status),
                    last.duration,
                    html.escape(ok_age),
                    html.escape(last.message),
                )
            )
        table = "\n".join(rows) or "<tr><td colspan='6'>No poll has finished yet.</td></tr>"
        return _PAGE.format(
            version=html.escape(__version__),
            metrics=html.escape(self._path),
            runbook=html.escape(self._runbook),
            rows=table,
            generated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now)),
        )


def _text(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    data = body.encode("utf-8")
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))])
    return [data]


class WebServer:
    """Serves the app on a background thread until ``stop``."""

    def __init__(self, app: WebApp, listen_address: str) -> None:
        host, port = split_listen_address(listen_address)
        server_class = _ThreadingWSGIServerV6 if ":" in host else _ThreadingWSGIServer
        self._httpd = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="web", daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mailflow-exporter</title>
<meta http-equiv="refresh" content="30">
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}
.ok{{color:#17702a}}.bad{{color:#b00020;font-weight:600}}
</style></head><body>
<h1>mailflow-exporter</h1>
<p>Prometheus exporter for Microsoft Exchange mail flow, version {version}.</p>
<p><a href="{metrics}">Metrics</a> · <a href="/-/healthy">Health</a> · <a href="/-/ready">Readiness</a> ·
<a href="{runbook}">Runbook</a></p>
<h2>Collectors</h2>
<table><tr><th>Collector</th><th>Target</th><th>Last poll</th><th>Duration</th><th>Last success</th><th>Detail</th></tr>
{rows}
</table>
<p><small>Generated {generated}. Values are polled on a schedule; this page refreshes every 30 s.</small></p>
</body></html>
"""
