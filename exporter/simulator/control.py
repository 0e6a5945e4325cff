"""JSON control API for a simulator running in another process.

``GET /sim/stats``, ``GET /sim/endpoints``, ``GET /sim/faults``, ``POST /sim/faults`` with
``{"server": "EX01", "kind": "hang", "cmdlet": null, "seconds": null, "message": null}`` (``down`` and
``back_pressure`` also take ``rate_per_minute``, ``back_pressure`` ``level`` and ``resource``, ``oversize``
``megabytes``), and
``DELETE /sim/faults?server=EX01`` (no ``server``: heal all; ``kind=...`` to heal one kind).
Bind it to loopback: it has no authentication.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from exporter.simulator.server import Simulator

__all__ = ["ControlServer"]

log = logging.getLogger("exporter.simulator")


class _ControlHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        super().__init__(address, _ControlHandler)


class _ControlHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ControlHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("simulator control: %s", format % args)

    def _json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload, indent=2, sort_keys=True, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _route(self) -> tuple[str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        return parts.path.rstrip("/"), parse_qs(parts.query)

    def do_GET(self) -> None:
        path, _ = self._route()
        sim = self.server.simulator
        if path == "/sim/stats":
            self._json(200, sim.stats())
        elif path == "/sim/endpoints":
            self._json(200, {"servers": sim.endpoints(), "ca_file": sim.ca_file})
        elif path == "/sim/faults":
            self._json(200, [f.to_dict() for f in sim.faults.active()])
        else:
            self._json(404, {"error": f"unknown path {path}"})

    def do_POST(self) -> None:
        path, _ = self._route()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if path != "/sim/faults":
            self._json(404, {"error": f"unknown path {path}"})
            return
        try:
            data = json.loads(raw or b"{}")
            if not isinstance(data, dict) or "server" not in data or "kind" not in data:
                raise ValueError("expected a JSON object with server and kind")
            seconds = data.get("seconds")
            rate = data.get("rate_per_minute")
            megabytes = data.get("megabytes")
            self.server.simulator.faults.set(
                str(data["server"]),
                str(data["kind"]),
                cmdlet=data.get("cmdlet"),
                seconds=None if seconds is None else float(seconds),
                message=data.get("message"),
                level=data.get("level"),
                rate_per_minute=None if rate is None else float(rate),
                resource=data.get("resource"),
                megabytes=None if megabytes is None else float(megabytes),
            )
        except (ValueError, TypeError) as exc:
            self._json(400, {"error": str(exc)})
            return
        self._json(200, [f.to_dict() for f in self.server.simulator.faults.active()])

    def do_DELETE(self) -> None:
        path, query = self._route()
        if path != "/sim/faults":
            self._json(404, {"error": f"unknown path {path}"})
            return
        server = query["server"][0] if query.get("server") else None
        kind = query["kind"][0] if query.get("kind") else None
        try:
            self.server.simulator.faults.clear(server, kind)
        except ValueError as exc:
            self._json(400, {"error": str(exc)})
            return
        self._json(200, [f.to_dict() for f in self.server.simulator.faults.active()])


class ControlServer:
    """The control API listener."""

    def __init__(self, simulator: Simulator, host: str, port: int) -> None:
        self._server = _ControlHTTPServer((host, port), simulator)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True, name="sim-control"
        )

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
