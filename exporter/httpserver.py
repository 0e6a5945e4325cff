"""The HTTP/1.x listener: stdlib sockets and threads, hardened against hostile and broken clients.

Why not a server library: see "HTTP server" in docs/design-notes.md. In short, none of the maintained
pure-Python servers available keeps the exporter-toolkit's TLS semantics (a per-connection SSL context
that follows the web config file, client certificates, allowed SANs) *and* bounds a slow client:
waitress has no TLS, cheroot handshakes on its accept thread (one silent TLS client stops it) and
times out per read only, uvicorn has no deadline for a whole request head.

What a connection gets (``ServerLimits``; the defaults suit a Prometheus exporter):

* **Caps**: ``max_connections`` at once and ``max_connections_per_client`` per peer address (per /64
  for IPv6). One over
  either is refused at once on the accept thread: plain HTTP gets a ready-made ``503`` with
  ``Retry-After``, TLS a closed connection (there is no HTTP before a handshake, and a handshake on the
  accept thread would let one slow client stop the listener).
* **Listen backlog** ``socket.SOMAXCONN`` (the kernel caps it at ``net.core.somaxconn``), not
  ``socketserver``'s 5, so a burst of connections waits in the kernel instead of being dropped into
  1 s SYN retries.
* **Deadlines**: the TLS handshake and the whole request head must arrive within ``request_timeout``
  of the accept (``handshake_timeout`` bounds the handshake alone); no byte for ``idle_timeout``
  closes the connection; the whole response must be written within ``write_timeout``. A client that
  drips a byte just inside the idle timeout is still cut at the request deadline (slowloris).
* **Header limits**: the request line and each header line at most ``max_line_bytes`` (414 for the
  request line, 431 for a header line), the head at most ``max_header_bytes`` and
  ``max_header_lines`` fields (431). The server stops reading at the limit, so no client can make it
  hold more than about ``max_header_bytes`` per connection.
* **A request body is read only when the application asks for it**: the exporter's routes are GET and
  HEAD but for the opt-in trace form (a POST of a few fields). A request with a body is authenticated
  and answered (405 for any other method, 401 before that when unauthenticated) from its head alone;
  only an application that reads ``wsgi.input`` (after authentication) gets bytes, at most
  ``max_body_bytes`` of a ``Content-Length`` body, within ``body_timeout``. The unread rest is
  discarded, bounded, while the connection closes.
* **One request per connection** (HTTP/1.0-style responses, as before): there is no keep-alive state
  to bound, and Prometheus opens one connection per scrape anyway.
* ``HEAD`` is answered like ``GET`` with the body dropped here, whatever the application writes.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import ipaddress
import logging
import re
import selectors
import socket
import socketserver
import ssl
import sys
import threading
import time
import urllib.parse
import wsgiref.handlers
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, cast

from exporter.webconfig import peer_sans

if TYPE_CHECKING:
    from exporter.webconfig import WebConfigReloader

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TARGET = re.compile(rb"^[\x21-\x7e]+$")
_VERSION = re.compile(rb"^HTTP/(\d)\.(\d)$")
_LINGER_BYTES = 64 * 1024  # at most this much of an unread request is discarded while closing
_LINGER_SECONDS = 1.0
_WARN_EVERY = 60.0  # seconds between warnings about refused connections


@dataclass(frozen=True)
class ServerLimits:
    """How much any one client may take from the listener (see the module docstring)."""

    idle_timeout: float = 5.0
    request_timeout: float = 10.0
    handshake_timeout: float = 10.0
    write_timeout: float = 30.0
    max_line_bytes: int = 8 * 1024
    max_header_bytes: int = 16 * 1024
    max_header_lines: int = 100
    max_body_bytes: int = 16 * 1024
    body_timeout: float = 10.0
    max_connections: int = 512
    max_connections_per_client: int = 32
    backlog: int = socket.SOMAXCONN

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, not {value!r}")
        if self.max_connections_per_client > self.max_connections:
            raise ValueError("max_connections_per_client must not exceed max_connections")


def client_key(address: str) -> str:
    """What the per-client cap counts by: the IPv4 address, or the /64 of an IPv6 one (one host commonly
    has a whole /64 to pick addresses from)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class _Refused(Exception):
    """The request is answered with ``status`` by the server itself, never reaching the application."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(status)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    has_body: bool  # a body follows the head: read only if the application asks (_BodyReader)
    leftover: bool  # bytes beyond the head were already received
    content_length: int | None = None  # None: no body, or a chunked one (never read)
    rest: bytes = b""  # the body bytes received with the head


def _busy_response() -> bytes:
    body = b"Too many connections; try again shortly.\n"
    return (
        b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )


_BUSY = _busy_response()


class HardenedHTTPServer(socketserver.TCPServer):
    """One listener: accepts on the ``serve_forever`` thread, serves each admitted connection on its own
    thread (at most ``limits.max_connections`` of them). With ``web_config`` every connection is TLS,
    with the SSL context current at its accept (the file is re-read when it changes)."""

    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        app: WSGIApp,
        limits: ServerLimits,
        web_config: WebConfigReloader | None = None,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.request_queue_size = limits.backlog
        self.app = app
        self.limits = limits
        self.web_config = web_config
        self._lock = threading.Lock()
        self._per_client: collections.Counter[str] = collections.Counter()
        self.active = 0  # connections being served now
        self._warned = -_WARN_EVERY
        self.refusals: collections.Counter[str] = collections.Counter()  # why connections were cut (benchmarks read it)
        super().__init__(address, socketserver.BaseRequestHandler)

    # --- accepting (the serve_forever thread: nothing here may block) ---------------------------------

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Admit the connection if both caps allow; else refuse it at once, without blocking."""
        client = client_key(client_address[0])
        with self._lock:
            if self.active < self.limits.max_connections and (
                self._per_client[client] < self.limits.max_connections_per_client
            ):
                self.active += 1
                self._per_client[client] += 1
                return True
            self.refusals["busy"] += 1
            now = time.monotonic()
            warn = now - self._warned >= _WARN_EVERY
            if warn:
                self._warned = now
            open_total, open_client, refused = self.active, self._per_client[client], self.refusals["busy"]
        if warn:
            log.warning(
                "web: refusing connections over the cap: %d open (max %d), %d from client=%s (max %d); "
                "%d refused since start",
                open_total,
                self.limits.max_connections,
                open_client,
                client,
                self.limits.max_connections_per_client,
                refused,
            )
        try:
            if self.web_config is None:
                request.send(_BUSY, socket.MSG_DONTWAIT)  # a fresh socket's send buffer always takes it
            for _ in range(4):  # what the client already sent: unread at close, it would turn the FIN into a reset
                if not request.recv(65536, socket.MSG_DONTWAIT):
                    break
        except OSError:
            pass
        log.debug("connection refused: too many connections client=%s", client)
        return False  # socketserver shuts the socket down and closes it

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            threading.Thread(
                target=self._connection, args=(request, client_address), name="web-conn", daemon=True
            ).start()
        except RuntimeError:  # no thread to be had: as if over the cap
            self._release(client_key(client_address[0]))
            self.shutdown_request(request)

    def _count(self, reason: str) -> None:
        with self._lock:
            self.refusals[reason] += 1

    def _release(self, client: str) -> None:
        with self._lock:
            self.active -= 1
            self._per_client[client] -= 1
            if self._per_client[client] <= 0:
                del self._per_client[client]

    # --- one connection (its own thread) -------------------------------------------------------------

    def _connection(self, sock: socket.socket, client_address: Any) -> None:
        conn: socket.socket = sock
        try:
            conn = self._serve(sock, client_address) or sock
        except Exception:
            log.exception("web: unexpected error serving client=%s", client_address[0])
        finally:
            for s in {id(conn): conn, id(sock): sock}.values():
                with contextlib.suppress(OSError):
                    s.close()
            self._release(client_key(client_address[0]))

    def _serve(self, sock: socket.socket, client_address: Any) -> socket.socket | None:
        """Handshake, read the head, answer; returns the socket to close (the TLS one once wrapped)."""
        accepted = time.monotonic()
        deadline = accepted + self.limits.request_timeout
        conn: socket.socket = sock
        if self.web_config is not None:
            secured = self._tls_accept(sock, client_address, min(deadline, accepted + self.limits.handshake_timeout))
            if secured is None:
                return None
            conn = secured
        reader = _HeadReader(conn, self.limits, deadline)
        try:
            request = reader.read()
        except _Refused as refusal:
            self._count(refusal.status.split()[0])
            if refusal.status.startswith("408") and not reader.received:
                return conn  # never said anything: just close, as Go does
            try:
                _send_all(conn, _plain_response(refusal.status, refusal.message), time.monotonic() + 2.0)
                _linger(conn)
            except OSError:
                pass
            return conn
        except OSError as exc:  # reset, TLS error: the client is gone
            log.debug("web: read failed client=%s error=%s", client_address[0], exc)
            return conn
        if request is None:  # closed before a whole head
            return conn
        environ = self._environ(request, conn, client_address)
        body = cast(IO[bytes], io.BufferedReader(_BodyReader(conn, request, self.limits)))
        handler = _Handler(
            conn, environ, head=request.method == "HEAD", write_timeout=self.limits.write_timeout, body=body
        )
        try:
            handler.run(self.app)
        except OSError as exc:  # writing the 500 page failed too
            handler.write_error = exc
        if handler.write_error is not None:  # not written in time, or the client went away
            self._count("write")
            log.debug("web: response not sent client=%s error=%s", client_address[0], handler.write_error)
            return conn
        if request.has_body or request.leftover:
            _linger(conn)
        else:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_WR)
        return conn

    def _tls_accept(self, sock: socket.socket, client_address: Any, deadline: float) -> ssl.SSLSocket | None:
        """Handshake by ``deadline`` with the current configuration; check the client certificate's SANs if
        the file lists allowed ones. None: the connection was dropped."""
        assert self.web_config is not None
        config = self.web_config.current()
        assert config.ssl_context is not None
        try:
            conn = config.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except OSError:
            return None
        try:
            _handshake(conn, deadline)
            if config.allowed_sans is not None:
                der = conn.getpeercert(binary_form=True)
                if not der or not peer_sans(der) & config.allowed_sans:
                    raise ssl.SSLError("the client certificate has none of client_allowed_sans")
        except (OSError, ValueError) as exc:
            self._count("tls")
            log.debug("TLS handshake failed client=%s error=%s", client_address[0], exc)
            conn.close()
            return None
        return conn

    def _environ(self, request: _Request, conn: socket.socket, client_address: Any) -> dict[str, Any]:
        """The WSGI environ (PEP 3333), as ``wsgiref`` builds it, without the process environment."""
        target = request.target
        if "://" in target:  # absolute-form: keep the path
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        path, _, query = target.partition("?")
        host, port = self.server_address[:2]
        env: dict[str, Any] = {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": urllib.parse.unquote(path, "iso-8859-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": str(host),
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": request.version,
            "GATEWAY_INTERFACE": "CGI/1.1",
            "REMOTE_ADDR": str(client_address[0]),
            "REMOTE_PORT": str(client_address[1]),
        }
        if isinstance(conn, ssl.SSLSocket):
            env["HTTPS"] = "on"  # wsgi.url_scheme: https
        for name, value in request.headers:
            key = name.upper().replace("-", "_")
            if "_" in name or key in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):
                continue  # the length is set below, from the parsed head; "_" in a name could pose as another header
            key = "CONTENT_TYPE" if key == "CONTENT_TYPE" else "HTTP_" + key
            env[key] = f"{env[key]},{value}" if key in env else value
        if request.content_length:  # what wsgi.input offers (at most max_body_bytes of it are read)
            env["CONTENT_LENGTH"] = str(request.content_length)
        return env


class _HeadReader:
    """Reads one request head within the deadlines and limits; never reads past the limits."""

    def __init__(self, conn: socket.socket, limits: ServerLimits, deadline: float) -> None:
        self._conn = conn
        self._limits = limits
        self._deadline = deadline
        self.received = 0

    def read(self) -> _Request | None:
        buf = bytearray()
        limits = self._limits
        while True:
            while buf[:2] == b"\r\n" or buf[:1] == b"\n":  # empty lines before the request line are ignored
                del buf[: 2 if buf[:1] == b"\r" else 1]
            end = _head_end(buf)
            if end > limits.max_header_bytes:
                raise _Refused("431 Request Header Fields Too Large", "The request headers are too large.")
            if end >= 0:
                request = _parse(bytes(buf[:end]), len(buf) > end, limits)
                return dataclasses.replace(request, rest=bytes(buf[end : end + limits.max_body_bytes]))
            first = buf.find(b"\n")
            if first < 0 and len(buf) > limits.max_line_bytes:
                raise _Refused("414 URI Too Long", "The request line is too long.")
            if len(buf) - (buf.rfind(b"\n") + 1) > limits.max_line_bytes:
                raise _Refused("431 Request Header Fields Too Large", "A header line is too long.")
            if len(buf) > limits.max_header_bytes:
                raise _Refused("431 Request Header Fields Too Large", "The request headers are too large.")
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise _Refused("408 Request Timeout", "The request took too long to arrive.")
            self._conn.settimeout(min(limits.idle_timeout, remaining))
            try:
                chunk = self._conn.recv(4096)
            except TimeoutError:
                raise _Refused("408 Request Timeout", "The request took too long to arrive.") from None
            if not chunk:
                return None
            self.received += len(chunk)
            buf += chunk


def _head_end(buf: bytearray) -> int:
    """The index just past the empty line that ends the head, or -1."""
    ends = [i for i in (buf.find(b"\n\r\n"), buf.find(b"\n\n")) if i >= 0]
    if not ends:
        return -1
    i = min(ends)
    return i + (3 if buf[i + 1 : i + 2] == b"\r" else 2)


def _parse(head: bytes, leftover: bool, limits: ServerLimits) -> _Request:
    lines = [line[:-1] if line.endswith(b"\r") else line for line in head.split(b"\n")]
    while lines and not lines[-1]:
        lines.pop()
    if len(lines[0]) > limits.max_line_bytes:
        raise _Refused("414 URI Too Long", "The request line is too long.")
    if any(len(line) > limits.max_line_bytes for line in lines[1:]):
        raise _Refused("431 Request Header Fields Too Large", "A header line is too long.")
    if len(lines) - 1 > limits.max_header_lines:
        raise _Refused("431 Request Header Fields Too Large", "Too many header fields.")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not _TARGET.match(parts[1]):
        raise _Refused("400 Bad Request", "Malformed request line.")
    method, target, version = parts
    match = _VERSION.match(version)
    if not match:
        raise _Refused("400 Bad Request", "Malformed HTTP version.")
    if match.group(1) != b"1":
        raise _Refused("505 HTTP Version Not Supported", "Only HTTP/1.0 and HTTP/1.1 are served.")
    if not (target.startswith(b"/") or target.startswith((b"http://", b"https://")) or target == b"*"):
        raise _Refused("400 Bad Request", "Malformed request target.")
    headers: list[tuple[str, str]] = []
    lengths: set[bytes] = set()
    chunked = False
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):  # also a folded line (leading space) and "Name :"
            raise _Refused("400 Bad Request", "Malformed header field.")
        value = value.strip(b" \t")
        if _CONTROL.search(value):
            raise _Refused("400 Bad Request", "Malformed header field.")
        lowered = name.lower()
        if lowered == b"content-length":
            lengths.update(v.strip() for v in value.split(b","))
        elif lowered == b"transfer-encoding":
            chunked = True
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    if len(lengths) > 1 or any(not v.isdigit() for v in lengths):
        raise _Refused("400 Bad Request", "Malformed Content-Length.")
    has_body = chunked or any(int(v) > 0 for v in lengths)
    length = None if chunked or not lengths else int(next(iter(lengths)))
    return _Request(
        method.decode("ascii"), target.decode("latin-1"), version.decode("ascii"), headers, has_body, leftover,
        length,
    )  # fmt: skip


def _plain_response(status: str, message: str) -> bytes:
    body = (message + "\n").encode("utf-8")
    return (
        f"HTTP/1.0 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1") + body


def _send_all(conn: socket.socket, data: bytes, deadline: float) -> None:
    """Send everything by ``deadline`` (for TLS too, where ``sendall``'s timeout is per send)."""
    view = memoryview(data)
    while view:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the response took too long to send")
        conn.settimeout(remaining)
        sent = conn.send(view)
        view = view[sent:]


def _linger(conn: socket.socket) -> None:
    """Close the sending side, then discard what the client still sends (bounded in bytes and time), so the
    answer is not lost to a reset caused by unread request data."""
    try:
        conn.shutdown(socket.SHUT_WR)  # for TLS: the TLS layer is dropped, what follows is raw bytes
        deadline = time.monotonic() + _LINGER_SECONDS
        discarded = 0
        while discarded < _LINGER_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            conn.settimeout(remaining)
            chunk = conn.recv(16384)
            if not chunk:
                break
            discarded += len(chunk)
    except OSError:
        pass


def _handshake(conn: ssl.SSLSocket, deadline: float) -> None:
    """The TLS handshake, by ``deadline`` in total (a client dripping its ClientHello is cut there)."""
    conn.setblocking(False)
    with selectors.DefaultSelector() as sel:
        while True:
            try:
                conn.do_handshake()
                break
            except ssl.SSLWantReadError:
                events = selectors.EVENT_READ
            except ssl.SSLWantWriteError:
                events = selectors.EVENT_WRITE
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no TLS handshake in time")
            sel.register(conn, events)
            ready = sel.select(remaining)
            sel.unregister(conn)
            if not ready:
                raise TimeoutError("no TLS handshake in time")
    conn.setblocking(True)


class _Output(io.RawIOBase):
    """The response stream: everything written within ``timeout`` of the first write (the application's
    own time before it does not count)."""

    def __init__(self, conn: socket.socket, timeout: float) -> None:
        super().__init__()
        self._conn = conn
        self._timeout = timeout
        self._deadline: float | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        data = bytes(data)
        if self._deadline is None:
            self._deadline = time.monotonic() + self._timeout
        _send_all(self._conn, data, self._deadline)
        return len(data)


class _BodyReader(io.RawIOBase):
    """``wsgi.input``: the request body, read from the socket only when the application asks, at most
    ``max_body_bytes`` of a ``Content-Length`` body and within ``body_timeout`` of the first read."""

    def __init__(self, conn: socket.socket, request: _Request, limits: ServerLimits) -> None:
        super().__init__()
        self._conn = conn
        self._limits = limits
        self._buffered = request.rest
        length = request.content_length or 0
        self._left = min(length, limits.max_body_bytes)
        self._deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._left)
        if want <= 0:
            return 0
        if self._buffered:
            data, self._buffered = self._buffered[:want], self._buffered[want:]
        else:
            if self._deadline is None:
                self._deadline = time.monotonic() + self._limits.body_timeout
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                return 0
            self._conn.settimeout(min(self._limits.idle_timeout, remaining))
            try:
                data = self._conn.recv(want)
            except (TimeoutError, OSError):
                return 0
        self._left -= len(data)
        if not data:
            self._left = 0
        buffer[: len(data)] = data
        return len(data)


class _Handler(wsgiref.handlers.SimpleHandler):
    """``wsgiref``'s WSGI driver (start_response, headers, Content-Length, a 500 page on errors) on our
    socket; drops the body of a HEAD response."""

    os_environ: dict[str, str] = {}  # never the process environment in a request
    http_version = "1.0"

    def __init__(
        self,
        conn: socket.socket,
        environ: dict[str, Any],
        *,
        head: bool,
        write_timeout: float,
        body: IO[bytes] | None = None,
    ) -> None:
        super().__init__(
            body if body is not None else io.BytesIO(),
            cast(IO[bytes], _Output(conn, write_timeout)),
            sys.stderr,
            environ,
            multithread=True,
            multiprocess=False,
        )
        self._head = head
        self.write_error: OSError | None = None

    def write(self, data: bytes) -> None:
        if not self._head:
            super().write(data)
            return
        if not getattr(self, "status", None):
            raise AssertionError("write() before start_response()")
        if not getattr(self, "headers_sent", False):
            self.bytes_sent = len(data)  # for Content-Length when the application did not set it
            self.send_headers()

    def log_exception(self, exc_info: Any) -> None:
        if isinstance(exc_info[1], OSError):  # a client that went away or stopped reading: the server logs it
            self.write_error = exc_info[1]
            return
        log.error("web: the application failed", exc_info=exc_info)
