"""HTTP(S) listener of one simulated server's ``/PowerShell`` endpoint.

Each endpoint is a ``ThreadingHTTPServer`` (daemon threads, HTTP/1.1 keep-alive) on its own port.
The handler checks the path, applies the endpoint-wide transport faults (hang, latency, HTTP 401/500,
WSMan fault), authenticates the caller (HTTP Basic, and Kerberos through ``Negotiate`` when the endpoint
has a keytab: see :mod:`exporter.simulator.kerberos`; the security context lives as long as the TCP
connection, and sealed bodies are unsealed and answers sealed), parses the WSMan envelope and hands it
to the :class:`~exporter.simulator.service.EndpointService`. ``refused`` is implemented by closing the
listening socket (and cutting open connections) and listening again on the same port when healed.
Passwords are never logged.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email.utils
import hmac
import io
import logging
import socket
import ssl
import threading
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from exporter.simulator import wsman
from exporter.simulator.clocks import server_timeline
from exporter.simulator.faults import FaultKind
from exporter.simulator.kerberos import (
    EncryptionError,
    GssConnection,
    KerberosAcceptor,
    KerberosRejected,
    encrypted_protocol,
    unwrap_message,
    wrap_message,
)
from exporter.simulator.service import EndpointService, HttpFault, SimState, injected_wsman_fault
from exporter.simulator.wsman import WSManFault

__all__ = ["Endpoint"]

log = logging.getLogger("exporter.simulator")

_IIS_404 = b"The resource you are looking for has been removed, had its name changed, or is temporarily unavailable."
_IIS_500 = b"The page cannot be displayed because an internal server error has occurred."
_IIS_401 = b"401 - Unauthorized: Access is denied due to invalid credentials."
_MAX_BODY = 64 * 1024 * 1024

Headers = Mapping[str, str] | Iterable[tuple[str, str]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        # Responses are written in one piece; without TCP_NODELAY, Nagle's algorithm and the
        # client's delayed ACK would add ~40 ms to every request/response turn.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        context = self.endpoint.ssl_context
        if context is not None:  # the handshake runs in the handler thread (see _Handler.setup)
            sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self.connections_lock:
            self.connections.add(sock)
        return sock, address

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
            self.connections.clear()
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("simulator: connection error from %s on %s", client_address, self.endpoint.name, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 256 * 1024  # handle_one_request() flushes once per response
    server_version = "Microsoft-IIS/10.0"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        self._cmdlets: list[str] | None = None  # the cmdlets the current request is about (see _send)
        self._gss: GssConnection | None = None  # this connection's Kerberos context, once authenticated
        self._gss_pending: Any = None  # a context waiting for the client's next token (multi-leg)
        super().setup()
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(30)
            self.request.do_handshake()
            self.request.settimeout(None)

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header, by the endpoint server's clock (its ``clock_skew_seconds``).

        HTTP.sys stamps every answer, errors included (RFC 9110 6.6.1: an origin server with a clock
        MUST send Date in 2xx-4xx answers; a WinRM 500 captured in cloudsoft/winrm4j issue 144 carries
        ``Date`` too), from the Windows clock of the server that answers: with a skewed clock the header
        is skewed by as much (inferred: nothing corrects it).
        """
        if timestamp is None:
            endpoint = self.server.endpoint
            spec = endpoint.state.scenario.server(endpoint.name)
            origin = endpoint.state.timeline
            timestamp = server_timeline(origin, spec).now() if spec is not None else origin.now()
        return email.utils.formatdate(timestamp, usegmt=True)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("simulator %s: %s", self.server.endpoint.name, format % args)

    def _send(self, status: int, body: bytes, headers: Headers | None = None, content_type: str = "text/html") -> None:
        endpoint = self.server.endpoint
        latency = endpoint.state.faults.find(endpoint.name, FaultKind.LATENCY)
        if latency is not None and latency.seconds:
            endpoint.state.faults.sleep(latency.seconds)
        drip = endpoint.state.faults.find(endpoint.name, FaultKind.DRIP, self._cmdlets)
        real, buffer = self.wfile, io.BytesIO()
        if drip is not None:
            self.wfile = buffer  # the whole response, then dripped out
        try:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Powered-By", "ASP.NET")
                pairs = headers.items() if isinstance(headers, Mapping) else headers or ()
                for key, value in pairs:
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)  # buffered (wbufsize): headers and body leave in one send
            finally:
                self.wfile = real
            if drip is not None:
                self._drip(buffer.getvalue(), drip.seconds or 0.0)
            else:
                self.wfile.flush()
        except OSError:  # the client closed the connection before the last byte
            endpoint.state.stats.add("responses_cut", endpoint.name)
            self.close_connection = True

    def _drip(self, data: bytes, seconds: float) -> None:
        """Send ``data`` one byte every ``seconds`` while the ``drip`` fault lasts; the rest at once once it
        is healed; nothing more once the simulator stops."""
        endpoint = self.server.endpoint
        faults = endpoint.state.faults
        for index in range(len(data)):
            if faults.find(endpoint.name, FaultKind.DRIP, self._cmdlets) is None:
                self.wfile.write(data[index:])
                self.wfile.flush()
                return
            self.wfile.write(data[index : index + 1])
            self.wfile.flush()
            if not faults.sleep(seconds):
                self.close_connection = True
                return

    def _soap(self, status: int, body: bytes, headers: Headers | None = None, sealed: str | None = None) -> None:
        """Send a SOAP envelope; ``sealed`` (a session-encryption protocol) seals it with the connection's context."""
        if sealed and self._gss is not None:
            content_type, body = wrap_message(self._gss.context, body, sealed)
            self._send(status, body, headers, content_type=content_type)
            return
        self._send(status, body, headers, content_type="application/soap+xml;charset=UTF-8")

    def _challenge(self) -> list[tuple[str, str]]:
        endpoint = self.server.endpoint
        offers = [("WWW-Authenticate", "Negotiate")] if endpoint.kerberos is not None else []
        return [*offers, ("WWW-Authenticate", f'Basic realm="{endpoint.fqdn}"')]

    def _refuse(self, why: str) -> None:
        endpoint = self.server.endpoint
        endpoint.state.stats.add("auth_failures", endpoint.name)
        log.info("simulator %s: rejected credentials from %s: %s", endpoint.name, self.client_address[0], why)
        self._send(401, _IIS_401, self._challenge())

    def _authenticate(self) -> tuple[str, list[tuple[str, str]]] | None:
        """The caller's scenario user and headers for the answer, or None once a 401 has been sent.

        Basic: checked on every request. Negotiate/Kerberos: a token starts (or continues) a security
        context for this connection; requests without ``Authorization`` on an authenticated connection
        are that context's user. No header and no context: the 401 challenge.
        """
        endpoint = self.server.endpoint
        header = self.headers.get("Authorization") or ""
        scheme, _, token = header.strip().partition(" ")
        if endpoint.kerberos is not None and scheme.lower() in ("negotiate", "kerberos"):
            return self._authenticate_kerberos(endpoint.kerberos, scheme, token)
        if scheme.lower() == "basic":
            user = self._user()
            if user is None:
                self._refuse("bad Basic credentials")
                return None
            return user, []
        if not header and self._gss is not None:
            return self._gss.user, []
        if header:
            self._refuse(f"unsupported scheme {scheme[:20]!r}")
        else:  # the usual first request of Negotiate: not a failure, just the challenge
            self._send(401, _IIS_401, self._challenge())
        return None

    def _authenticate_kerberos(
        self, acceptor: KerberosAcceptor, scheme: str, token: str
    ) -> tuple[str, list[tuple[str, str]]] | None:
        endpoint = self.server.endpoint
        self._gss = None  # a new token restarts authentication on this connection
        context, self._gss_pending = self._gss_pending, None
        try:
            if context is None:
                context = acceptor.new_context()
            out = acceptor.step(context, token, endpoint.channel_binding)
        except KerberosRejected as exc:
            self._refuse(f"Kerberos: {exc}")
            return None
        answer = [("WWW-Authenticate", f"{scheme} {base64.b64encode(out).decode()}")] if out else []
        if not context.complete:
            self._gss_pending = context
            self._send(401, _IIS_401, answer or self._challenge())
            return None
        principal = context.client_principal
        user = acceptor.user_for(principal, endpoint.state.scenario.users)
        if user is None:
            self._refuse(f"Kerberos principal {principal!r} is not a user of this organisation")
            return None
        endpoint.state.stats.add("kerberos_logons", endpoint.name)
        log.debug("simulator %s: Kerberos logon of %s", endpoint.name, principal)
        self._gss = GssConnection(context, user, scheme)
        return user, answer

    def do_GET(self) -> None:
        self._read_body()
        if self._path_ok():
            self._send(405, b"405 - HTTP verb used to access this page is not allowed.", {"Allow": "POST"})
        else:
            self._send(404, _IIS_404)

    def _path_ok(self) -> bool:
        path = self.path.split("?", 1)[0].rstrip("/").lower()
        return path == "/powershell"

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        return self.rfile.read(min(length, _MAX_BODY)) if length > 0 else b""

    def _user(self) -> str | None:
        header = self.headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic" or not token:
            return None
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        username, sep, password = decoded.partition(":")
        if not sep:
            return None
        users = self.server.endpoint.state.scenario.users
        for known, secret in users.items():
            if known.lower() == username.lower() and hmac.compare_digest(secret.encode(), password.encode()):
                return known
        return None

    def do_POST(self) -> None:
        endpoint = self.server.endpoint
        state = endpoint.state
        faults = state.faults
        body = self._read_body()
        self._cmdlets = None
        state.stats.add("requests", endpoint.name)
        if not self._path_ok():
            self._send(404, _IIS_404)
            return
        if faults.find(endpoint.name, FaultKind.HANG) is not None:
            faults.wait_while(lambda: faults.find(endpoint.name, FaultKind.HANG) is not None)
            if faults.stopping:
                self.close_connection = True
                return
        if (fault := faults.find(endpoint.name, FaultKind.HTTP401)) is not None:
            self._send(401, _IIS_401, self._challenge())
            return
        if (fault := faults.find(endpoint.name, FaultKind.HTTP500)) is not None:
            self._send(500, (fault.message or "").encode() or _IIS_500)
            return
        authenticated = self._authenticate()
        if authenticated is None:
            return
        user, auth_headers = authenticated
        sealed = encrypted_protocol(self.headers.get("Content-Type") or "")
        if sealed is not None:
            if self._gss is None or not sealed:
                self._refuse("an encrypted body without a Kerberos context (or an unknown protocol)")
                return
            try:
                body = unwrap_message(self._gss.context, body, self.headers.get("Content-Type") or "")
            except EncryptionError as exc:
                log.info("simulator %s: undecryptable body: %s", endpoint.name, exc)
                self._send(400, b"400 - Bad Request", auth_headers)
                return
            state.stats.add("encrypted_messages", endpoint.name)
        if not body and self._gss is not None:  # pypsrp's empty POST that sets up the context for sealing
            self._send(200, b"", auth_headers)
            return
        request = None
        try:
            request = wsman.parse_request(body)
            if (fault := faults.find(endpoint.name, FaultKind.WSMAN_FAULT)) is not None:
                raise injected_wsman_fault(fault.message)
            scheme = "https" if endpoint.ssl_context is not None else "http"
            address = f"{scheme}://{endpoint.fqdn}:{endpoint.port}/PowerShell"
            try:
                response = endpoint.service.handle(request, user, self.client_address[0], address)
            finally:
                self._cmdlets = endpoint.service.request_cmdlets()
        except WSManFault as exc:
            relates = request.message_id if request is not None else None
            self._soap(exc.http_status, exc.envelope(relates, endpoint.fqdn), auth_headers, sealed)
            return
        except HttpFault as exc:
            if faults.stopping:
                self.close_connection = True
                return
            self._send(exc.status, exc.body, [*exc.headers.items(), *auth_headers])
            return
        self._soap(200, response, auth_headers, sealed)


class Endpoint:
    """One simulated server's listener (host, port) and its service."""

    def __init__(
        self,
        name: str,
        fqdn: str,
        state: SimState,
        service: EndpointService,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        kerberos: KerberosAcceptor | None = None,
        channel_binding: bytes | None = None,
    ) -> None:
        self.name = name
        self.fqdn = fqdn
        self.state = state
        self.service = service
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.kerberos = kerberos  # accept Negotiate/Kerberos with this keytab (None: Basic only)
        self.channel_binding = channel_binding  # tls-server-end-point data checked over HTTPS
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def listening(self) -> bool:
        """Whether the listening socket is open."""
        return self._server is not None

    def start(self) -> None:
        """Open the listening socket (on the configured port; 0 picks a free one, kept afterwards)."""
        with self._lock:
            if self._server is not None:
                return
            server = _Server((self.host, self.port), self)
            self.port = server.server_address[1]
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                daemon=True,
                name=f"sim-endpoint-{self.name}",
            )
            self._thread.start()

    def stop(self) -> None:
        """Close the listening socket and cut open connections (clients then get refused/reset)."""
        with self._lock:
            server, self._server = self._server, None
            thread, self._thread = self._thread, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.cut_connections()
        if thread is not None:
            thread.join(timeout=5)
