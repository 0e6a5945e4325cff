"""The HTTP listener under hostile clients, with raw sockets on loopback: idle and slowly dripping
connections (plain HTTP and TLS, the handshake included), header floods, the connection cap, the listen
backlog, HEAD and other methods, and an unauthenticated flood against the rate limit.

No assertion here measures time: a slow client is "cut" when the server closes the connection before
the client has finished dripping (the drip lasts several times the server's deadline)."""

from __future__ import annotations

import base64
import http.client
import shutil
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from exporter.metrics import MailflowCollector, build_registry
from exporter.pki import create_ca, issue_server_certificate
from exporter.store import SnapshotStore
from exporter.web import WebApp, WebServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

PASSWORD = "correct horse battery staple"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
ATTACKER = "127.0.0.2"  # another loopback address: the server tells the attacker from the scraper by it
OTHER = "127.0.0.3"


def limits(**values: Any) -> Any:
    """Server limits with short timeouts for a test (imported here: the module must import without them)."""
    from exporter.httpserver import ServerLimits

    return ServerLimits(**values)


class Ready:
    def __call__(self) -> tuple[bool, str]:
        return True, "Ready"


Serve = Callable[..., WebServer]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start a real WebServer on 127.0.0.1:0 (optionally with a web config file and limits)."""
    started: list[WebServer] = []

    def start(config_file: Path | None = None, **kwargs: Any) -> WebServer:
        store = SnapshotStore()
        app = WebApp(build_registry(MailflowCollector(store, [], 3.0)), store, "/metrics", "https://x.invalid", Ready())
        server = WebServer(app, "127.0.0.1:0", config_file, **kwargs)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("web-limits")
    ca = create_ca(directory)
    issue_server_certificate(ca, directory, ["localhost"])
    return directory


def tls_config(tls_dir: Path, target: Path, **extra: Any) -> Path:
    for name in ("server.pem", "server-key.pem", "ca.pem"):
        shutil.copy(tls_dir / name, target / name)
    data = {"tls_server_config": {"cert_file": "server.pem", "key_file": "server-key.pem"}, **extra}
    path = target / "web.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def client_tls(tls_dir: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls_dir / "ca.pem"))


def connect(port: int, source: str = "127.0.0.1", timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    return sock


def read_all(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """Everything until the server closes (a reset after its answer counts as the close)."""
    out = b""
    while len(out) < limit:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            break
        if not chunk:
            break
        out += chunk
    return out


def exchange(port: int, request: bytes, source: str = "127.0.0.1") -> bytes:
    with connect(port, source) as sock:
        sock.sendall(request)
        return read_all(sock)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/") else 0


def headers_of(response: bytes) -> dict[str, str]:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head)}


def body_of(response: bytes) -> bytes:
    return response.split(b"\r\n\r\n", 1)[1]


def drip(sock: socket.socket | ssl.SSLSocket, data: bytes, pause: float) -> bytes | None:
    """Send ``data`` a byte at a time, ``pause`` seconds apart. None: every byte went out and the connection
    is still open; else what the server answered before it closed the connection (maybe b"")."""
    sock.settimeout(pause)
    for i in range(len(data)):
        try:
            sock.sendall(data[i : i + 1])
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            return b""
        try:
            answer = sock.recv(65536)
        except TimeoutError:
            continue
        except (ConnectionResetError, ssl.SSLError):
            return b""
        return answer  # an answer or b"": the server gave up on us
    return None


# --- idle and slow clients -------------------------------------------------------------------------------


def test_an_idle_plain_connection_is_closed(serve: Serve) -> None:
    server = serve(limits=limits(idle_timeout=0.5, request_timeout=2.0))
    with connect(server.port, timeout=20) as sock:
        assert sock.recv(1) == b""  # the server closed it; before, it waited forever


def test_a_slowloris_drip_on_plain_http_is_cut_at_the_request_deadline(serve: Serve) -> None:
    server = serve(limits=limits(idle_timeout=5.0, request_timeout=1.0))
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Drip: " + b"a" * 100
    with connect(server.port) as sock:
        answer = drip(sock, request, 0.1)  # 12 s of drip, each byte well inside the idle timeout
    assert answer is not None, "the server kept a dripping client for the whole drip"
    assert answer == b"" or status_of(answer) == 408, answer


def test_a_slowloris_drip_over_tls_is_cut_at_the_request_deadline(serve: Serve, tls_dir: Path, tmp_path: Path) -> None:
    server = serve(tls_config(tls_dir, tmp_path), limits=limits(idle_timeout=5.0, request_timeout=1.5))
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Drip: " + b"a" * 100
    with (
        connect(server.port) as raw,
        client_tls(tls_dir).wrap_socket(raw, server_hostname="localhost") as conn,
    ):
        answer = drip(conn, request, 0.1)
    assert answer is not None, "the server kept a dripping TLS client for the whole drip"
    assert answer == b"" or status_of(answer) == 408, answer


def client_hello(tls_dir: Path) -> bytes:
    """The bytes of a real TLS ClientHello (from an in-memory handshake that is never finished)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_tls(tls_dir).wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_a_dripped_tls_handshake_is_cut_at_the_request_deadline(serve: Serve, tls_dir: Path, tmp_path: Path) -> None:
    server = serve(tls_config(tls_dir, tmp_path), limits=limits(idle_timeout=5.0, request_timeout=1.0))
    hello = client_hello(tls_dir)
    assert len(hello) > 100
    with connect(server.port) as sock:
        answer = drip(sock, hello[:120], 0.1)
    assert answer is not None, "the server waited for the whole dripped ClientHello"


def test_a_silent_connection_delays_no_one(serve: Serve) -> None:
    server = serve()
    with connect(server.port) as silent:
        response = exchange(server.port, b"GET /-/healthy HTTP/1.0\r\n\r\n")
        assert status_of(response) == 200
        silent.sendall(b"GET /-/healthy HTTP/1.0\r\n\r\n")  # and it is still served when it speaks
        assert status_of(read_all(silent)) == 200


# --- header limits ---------------------------------------------------------------------------------------


def test_too_many_header_bytes_get_431(serve: Serve) -> None:
    server = serve()
    many = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 1000) for i in range(20))  # 20 KiB in 1 KiB lines
    response = exchange(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert status_of(response) == 431, response[:200]
    long_line = b"X-Long: " + b"v" * 9000 + b"\r\n"  # one line over 8 KiB
    response = exchange(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + long_line + b"\r\n")
    assert status_of(response) == 431, response[:200]
    lines = b"".join(b"X-%d: v\r\n" % i for i in range(101))  # more than 100 fields
    response = exchange(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
    assert status_of(response) == 431, response[:200]
    response = exchange(server.port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(response) == 414, response[:200]
    normal = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 500) for i in range(10))  # 5 KiB: fine
    assert status_of(exchange(server.port, b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n" + normal + b"\r\n")) == 200


def test_a_header_flood_is_refused_before_it_is_read(serve: Serve) -> None:
    """98 header lines of 60 KiB (6 MB, within the 100 lines of 64 KiB http.server accepted): refused with 431
    after the first 16 KiB, while the client is still sending; the rest is never read."""
    server = serve()
    chunk = b"X-Flood: " + b"v" * 60000 + b"\r\n"

    def flood(sock: socket.socket) -> None:
        try:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            for _ in range(98):
                sock.sendall(chunk)
            sock.sendall(b"\r\n")
        except OSError:
            pass

    with connect(server.port) as sock:
        sender = threading.Thread(target=flood, args=(sock,), daemon=True)
        sender.start()
        response = read_all(sock)
        sender.join(30)
    assert status_of(response) == 431, response[:200]


def test_malformed_requests_get_400(serve: Serve) -> None:
    server = serve()
    for request in (
        b"GET /metrics\r\n\r\n",  # HTTP/0.9
        b"GET  /metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nX: a\r\n folded\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET metrics HTTP/1.1\r\n\r\n",
    ):
        assert status_of(exchange(server.port, request)) == 400, request
    assert status_of(exchange(server.port, b"GET /metrics HTTP/2.0\r\n\r\n")) == 505


# --- connections -----------------------------------------------------------------------------------------


def tcp_backlog(sock: socket.socket) -> int:
    """The accept queue's maximum length of a listening socket (Linux TCP_INFO's tcpi_sacked)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int(struct.unpack_from("I", info, 28)[0])


def test_listen_backlog_is_not_five() -> None:
    """A burst of connections must not overflow the accept queue (each overflow costs the client a 1 s SYN
    retry). Read from the kernel: the listening socket's maximum accept queue."""
    store = SnapshotStore()
    app = WebApp(build_registry(MailflowCollector(store, [], 3.0)), store, "/metrics", "", Ready())
    server = WebServer(app, ["127.0.0.1:0", "127.0.0.1:0"])
    server.start()
    try:
        for listener in server.sockets:
            assert tcp_backlog(listener) >= 128
    finally:
        server.stop()


def test_connection_caps_answer_503_and_keep_other_clients_served(serve: Serve) -> None:
    server = serve(limits=limits(max_connections=4, max_connections_per_client=2, idle_timeout=30, request_timeout=60))
    held = [connect(server.port, ATTACKER), connect(server.port, ATTACKER)]
    try:
        with connect(server.port, ATTACKER) as third:  # over the per-client cap: refused at once
            refusal = read_all(third)
        assert status_of(refusal) == 503 and headers_of(refusal).get("retry-after"), refusal
        assert status_of(exchange(server.port, b"GET /-/healthy HTTP/1.0\r\n\r\n")) == 200  # the scraper
        # The scraper's slot is freed when the server's reader returns, which can be after the client has
        # read the answer; until then a fifth connection would find a free slot and wait for a request.
        listener = server._servers[0]
        deadline = time.monotonic() + 5
        while listener.active != 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert listener.active == 2
        held += [connect(server.port, OTHER), connect(server.port, OTHER)]  # four held: the total cap
        with connect(server.port, "127.0.0.4") as fifth:
            assert status_of(read_all(fifth)) == 503
        held.pop().close()  # a slot frees: served again
        for _ in range(50):
            response = exchange(server.port, b"GET /-/healthy HTTP/1.0\r\n\r\n")
            if status_of(response) == 200:
                break
            time.sleep(0.1)  # the server notices the close when its reader returns
        assert status_of(response) == 200
    finally:
        for sock in held:
            sock.close()


# --- methods ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/index.html", "/metrics", "/-/healthy", "/-/ready", "/nope"])
def test_head_is_answered_like_get_without_a_body(serve: Serve, path: str) -> None:
    server = serve()
    get = exchange(server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = exchange(server.port, f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert status_of(head) == status_of(get) != 0
    assert body_of(head) == b""
    assert headers_of(head)["content-type"] == headers_of(get)["content-type"]
    assert int(headers_of(head)["content-length"]) > 0


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"])
def test_other_methods_get_405_with_allow(serve: Serve, method: str) -> None:
    server = serve()
    for path in ("/", "/metrics", "/-/healthy"):
        response = exchange(server.port, f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        assert status_of(response) == 405, (method, path)
        assert headers_of(response)["allow"] == "GET, HEAD"
    assert status_of(exchange(server.port, f"{method} /nope HTTP/1.1\r\nHost: x\r\n\r\n".encode())) == 404


# --- authentication and the rate limit -------------------------------------------------------------------


def auth_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def tls_get(
    port: int, ctx: ssl.SSLContext, auth: str | None, source: str = "127.0.0.1", method: str = "GET", body: bytes = b""
) -> int:
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10, source_address=(source, 0))
    try:
        conn.request(method, "/metrics", body=body or None, headers={"Authorization": auth} if auth else {})
        return conn.getresponse().status
    finally:
        conn.close()


def test_an_unauthenticated_flood_does_not_spend_the_scrapers_rate_limit(
    serve: Serve, tls_dir: Path, tmp_path: Path
) -> None:
    config = tls_config(
        tls_dir, tmp_path, basic_auth_users={"prometheus": HASH}, rate_limit={"interval": "1m", "burst": 3}
    )
    server = serve(config)
    ctx = client_tls(tls_dir)
    good = auth_header("prometheus", PASSWORD)
    assert tls_get(server.port, ctx, good) == 200
    outcomes = set()
    for i in range(15):
        outcomes.add(tls_get(server.port, ctx, auth_header("prometheus", f"guess{i}"), ATTACKER))
        outcomes.add(tls_get(server.port, ctx, None, ATTACKER))
    assert outcomes <= {401, 429} and 401 in outcomes
    assert tls_get(server.port, ctx, good) == 200  # before: 429, the flood had spent the bucket
    assert tls_get(server.port, ctx, good) == 200
    assert tls_get(server.port, ctx, good) == 429  # the scraper's own budget (burst 3) still applies


def test_a_scraper_not_yet_verified_gets_in_during_a_password_guessing_flood(
    serve: Serve, tls_dir: Path, tmp_path: Path
) -> None:
    """The first request of a scraper (its password not yet checked) during a flood of guesses: the guesses
    exhaust the attacker's own allowance of password checks, not the scraper's."""
    config = tls_config(
        tls_dir, tmp_path, basic_auth_users={"prometheus": HASH}, rate_limit={"interval": "1m", "burst": 3}
    )
    server = serve(config)
    ctx = client_tls(tls_dir)
    guesses = [tls_get(server.port, ctx, auth_header("prometheus", f"guess{i}"), ATTACKER) for i in range(10)]
    assert guesses[:3] == [401, 401, 401] and set(guesses[3:]) == {429}  # checks for the attacker: limited
    assert tls_get(server.port, ctx, auth_header("prometheus", PASSWORD)) == 200


def test_an_unauthenticated_request_body_is_never_read(serve: Serve, tls_dir: Path, tmp_path: Path) -> None:
    server = serve(tls_config(tls_dir, tmp_path, basic_auth_users={"prometheus": HASH}))
    ctx = client_tls(tls_dir)
    with (
        connect(server.port) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as conn,
    ):
        conn.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n" + b"x" * 1000)
        response = read_all(conn)  # answered without waiting for the 100 MB
    assert status_of(response) == 401
    good = auth_header("prometheus", PASSWORD)
    assert tls_get(server.port, ctx, good, method="POST", body=b"x" * 10) == 405  # after auth: the method


def test_a_client_that_stops_reading_is_dropped_at_the_write_deadline(caplog: pytest.LogCaptureFixture) -> None:
    """A 64 MB answer to a client that never reads: the server gives up at its write deadline, frees the
    connection, and logs no error."""
    from exporter.httpserver import HardenedHTTPServer

    body = b"x" * (64 << 20)

    def big(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [body]

    httpd = HardenedHTTPServer(("127.0.0.1", 0), big, limits(write_timeout=1.0))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(10)
            sock.connect(("127.0.0.1", httpd.server_address[1]))
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            for _ in range(300):  # the server gives up by itself: nothing here reads
                if httpd.refusals["write"]:
                    break
                time.sleep(0.1)
            assert httpd.refusals["write"] == 1
            received = len(read_all(sock, limit=len(body)))
        assert received < len(body)
        for _ in range(100):
            if httpd.active == 0:
                break
            time.sleep(0.05)
        assert httpd.active == 0
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
