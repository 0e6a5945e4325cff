"""The HTTP listener under hostile clients: slowloris (plain and TLS), a header flood, a connection burst.

The exporter's web server runs with its default limits in a child process (so its RSS and threads are
its own); the attackers are threads here, on loopback, spread over a few 127.0.0.x source addresses.

* ``slowloris``: ``--connections`` clients from 4 addresses; half stay silent, half send a request line
  and drip a header byte every ``--drip`` seconds. Measured: how long the server keeps them (a client
  gives up after ``--hold`` seconds), the server's threads, and a real scrape in the middle of it.
* ``tls``: the same over TLS: half never start the handshake, half handshake and then drip.
* ``flood``: ``--flood-clients`` clients at once, each sending ``--flood-lines`` header lines of 64,000
  bytes (6.4 MB each by default; within what ``http.server`` accepted). Measured: the answers and the
  server's RSS before, at its peak (VmHWM) and after.
* ``burst``: ``--burst`` clients connect at once (one address) and GET ``/-/healthy``. Measured: connect
  times (a SYN dropped by a full accept queue costs a 1 s retry: a "stall") and the answers.

    python bench/bench_httpd.py [--only slowloris,tls,flood,burst] [--connections 100] [--hold 30]

Each scenario prints its goal beside its figure and a ``RESULT`` line. The same script runs against an
older exporter (it only uses ``WebApp`` and ``WebServer(app, address[, web_config])``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import select
import socket
import ssl
import statistics
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

SOURCES = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"]
STALL = 0.9  # a connect this slow waited for a SYN retry (Linux: 1 s)


def serve(conn: Connection, web_config: str | None) -> None:
    """The child: the exporter's app and server with default limits until told to stop."""
    from exporter.metrics import MailflowCollector, build_registry
    from exporter.store import SnapshotStore
    from exporter.web import WebApp, WebServer

    store = SnapshotStore()
    app = WebApp(build_registry(MailflowCollector(store, [], 3.0)), store, "/metrics", "", lambda: (True, "Ready"))
    server = WebServer(app, "127.0.0.1:0", Path(web_config) if web_config else None)
    server.start()
    conn.send(server.port)
    conn.recv()
    server.stop()


class Server:
    def __init__(self, web_config: Path | None = None) -> None:
        self._parent, child = mp.Pipe()
        self.proc = mp.get_context("spawn").Process(target=serve, args=(child, str(web_config or "")), daemon=True)
        self.proc.start()
        self.port = int(self._parent.recv())

    def status(self, field: str) -> int:
        """A number from /proc/<pid>/status (kB for memory)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def stop(self) -> None:
        self._parent.send("stop")
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.kill()


def wait_closed(sock: socket.socket, until: float, drip: Callable[[], None] | None, every: float) -> str:
    """Wait (dripping if asked) until the server closes the connection or ``until`` passes: "open", "closed"
    or the status the server answered with (408, 503) before closing."""
    while time.monotonic() < until:
        if drip is not None:
            try:
                drip()
            except OSError:
                return "closed"
        readable, _, _ = select.select([sock], [], [], min(every, max(0.0, until - time.monotonic())))
        if readable:
            try:
                answer = sock.recv(65536)
            except (OSError, ssl.SSLError):
                return "closed"
            return answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "closed"
    return "open"


class Attack:
    """What ``attack`` saw."""

    def __init__(self) -> None:
        self.held: list[float] = []  # seconds each connection was kept
        self.outcomes: Counter[str] = Counter()
        self.threads = 0  # the server's, at peak
        self.rss_mib = 0.0  # the server's, at peak during the attack
        self.scrape: tuple[int, float] = (0, 0.0)  # a real scrape in the middle: status, seconds


def attack(
    server: Server,
    n: int,
    hold: float,
    every: float,
    open_one: Callable[[int], tuple[socket.socket, bool]],
    context: ssl.SSLContext | None = None,
) -> Attack:
    """``n`` slow clients at once, and a scrape of /metrics from 127.0.0.1 after 2 s."""
    scheme = "https" if context else "http"
    seen = Attack()
    lock = threading.Lock()

    def client(i: int) -> None:
        started = time.monotonic()
        try:
            sock, dripping = open_one(i)
        except OSError:
            with lock:
                seen.outcomes["refused"] += 1
            return
        with sock:
            data = iter(b"X-Slow: " + b"a" * 10000)

            def drip() -> None:
                sock.sendall(bytes([next(data)]))

            outcome = wait_closed(sock, started + hold, drip if dripping else None, every)
        with lock:
            seen.held.append(time.monotonic() - started if outcome != "open" else hold)
            seen.outcomes[outcome] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
    for th in threads:
        th.start()
    t0 = time.monotonic()
    while any(th.is_alive() for th in threads):
        seen.threads = max(seen.threads, server.status("Threads"))
        seen.rss_mib = max(seen.rss_mib, server.status("VmRSS") / 1024)
        if not seen.scrape[1] and time.monotonic() - t0 > 2.0:
            s0 = time.monotonic()
            try:
                url = f"{scheme}://localhost:{server.port}/metrics"
                with urllib.request.urlopen(url, timeout=10, context=context) as resp:
                    resp.read()
                    seen.scrape = (resp.status, time.monotonic() - s0)
            except urllib.error.HTTPError as exc:
                seen.scrape = (exc.code, time.monotonic() - s0)
            except Exception:
                seen.scrape = (0, time.monotonic() - s0)
        time.sleep(0.25)
    return seen


def report(name: str, seen: Attack, hold: float, key: str) -> None:
    held = seen.held or [0.0]
    kept_all = seen.outcomes["open"]
    longest = f">={hold:.0f}" if kept_all else f"{max(held):.1f}"
    print(
        f"{name}: {len(seen.held)} connections; the server kept them median {statistics.median(held):.1f} s, "
        f"longest {longest} s; {kept_all} still open when the client gave up after {hold:g} s "
        f"(goal: all closed within 10 s)"
    )
    print(
        "  outcomes "
        + ", ".join(f"{k}: {v}" for k, v in sorted(seen.outcomes.items()))
        + f"; server threads at peak {seen.threads}, RSS at peak {seen.rss_mib:.0f} MiB; a scrape during the "
        f"attack: HTTP {seen.scrape[0]} in {seen.scrape[1]:.2f} s (goal: 200)"
    )
    print(
        f"RESULT {key}_connections={len(seen.held)} {key}_longest_s={longest} "
        f"{key}_median_s={statistics.median(held):.1f} {key}_open={kept_all} {key}_threads={seen.threads} "
        f"{key}_rss_mib={seen.rss_mib:.0f} {key}_scrape_status={seen.scrape[0]} {key}_scrape_s={seen.scrape[1]:.2f} "
        f"{key}_outcomes={','.join(f'{k}:{v}' for k, v in sorted(seen.outcomes.items()))}"
    )


def slowloris(args: argparse.Namespace) -> None:
    server = Server()
    try:

        def open_one(i: int) -> tuple[socket.socket, bool]:
            sock = socket.create_connection(("127.0.0.1", server.port), 10, (SOURCES[i % len(SOURCES)], 0))
            dripping = i % 2 == 1
            if dripping:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            return sock, dripping

        seen = attack(server, args.connections, args.hold, args.drip, open_one)
    finally:
        server.stop()
    report("slowloris (plain HTTP: half silent, half dripping headers)", seen, args.hold, "slowloris")


def tls(args: argparse.Namespace) -> None:
    from exporter.pki import create_ca, issue_server_certificate

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        ca = create_ca(directory)
        issue_server_certificate(ca, directory, ["localhost"])
        config = directory / "web.yml"
        config.write_text("tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n")
        context = ssl.create_default_context(cafile=str(ca.ca_file))
        server = Server(config)
        try:

            def open_one(i: int) -> tuple[socket.socket, bool]:
                raw = socket.create_connection(("127.0.0.1", server.port), 10, (SOURCES[i % len(SOURCES)], 0))
                if i % 2 == 0:
                    return raw, False  # never says hello
                conn = context.wrap_socket(raw, server_hostname="localhost")
                conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                return conn, True

            seen = attack(server, args.connections, args.hold, args.drip, open_one, context)
        finally:
            server.stop()
    report("slowloris (TLS: half silent before the handshake, half dripping after it)", seen, args.hold, "tls")


def flood(args: argparse.Namespace) -> None:
    line = b"X-Flood: " + b"v" * 63989 + b"\r\n"  # 64,000 bytes
    server = Server()
    answers: Counter[str] = Counter()
    lock = threading.Lock()
    try:
        time.sleep(1.0)
        base_rss, base_hwm = server.status("VmRSS"), server.status("VmHWM")

        def client(i: int) -> None:
            sock = socket.create_connection(("127.0.0.1", server.port), 30, (SOURCES[i % len(SOURCES)], 0))

            def send() -> None:
                try:
                    sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                    for _ in range(args.flood_lines):
                        sock.sendall(line)
                    sock.sendall(b"\r\n")
                except OSError:
                    pass

            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            answer = b""
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
                    if len(answer) > 200:
                        break
            except OSError:
                pass
            sender.join(60)  # before closing: a close under a blocked send would leave the send blocked
            sock.close()
            status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "closed"
            with lock:
                answers[status] += 1

        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(args.flood_clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(300)
        took = time.monotonic() - started
        time.sleep(2.0)
        rss, hwm = server.status("VmRSS"), server.status("VmHWM")
    finally:
        server.stop()
    mib = 1024.0
    size = args.flood_lines * len(line) / 1e6
    print(
        f"header flood: {args.flood_clients} clients x {size:.1f} MB of headers in {took:.1f} s; answers "
        + ", ".join(f"{k}: {v}" for k, v in sorted(answers.items()))
    )
    print(
        f"  server RSS {base_rss / mib:.0f} MiB -> peak {hwm / mib:.0f} MiB -> after {rss / mib:.0f} MiB "
        f"(growth at peak {(hwm - base_hwm) / mib:+.0f} MiB; goal: under 20 MiB, every answer 431)"
    )
    print(
        f"RESULT flood_clients={args.flood_clients} flood_mb_each={size:.1f} flood_rss_base_mib={base_rss / mib:.0f} "
        f"flood_rss_peak_mib={hwm / mib:.0f} flood_rss_after_mib={rss / mib:.0f} "
        f"flood_answers={','.join(f'{k}:{v}' for k, v in sorted(answers.items()))}"
    )


def burst(args: argparse.Namespace) -> None:
    server = Server()
    connects: list[float] = []
    answers: Counter[str] = Counter()
    lock = threading.Lock()
    gate = threading.Barrier(args.burst)
    try:

        def client() -> None:
            gate.wait()
            started = time.monotonic()
            try:
                sock = socket.create_connection(("127.0.0.1", server.port), 10)
            except OSError as exc:
                with lock:
                    answers[type(exc).__name__] += 1
                return
            took = time.monotonic() - started
            answer = b""
            with sock:
                try:
                    sock.sendall(b"GET /-/healthy HTTP/1.0\r\n\r\n")
                    while chunk := sock.recv(65536):
                        answer += chunk
                except OSError:
                    pass
            status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "closed"
            with lock:
                connects.append(took)
                answers[status] += 1

        threads = [threading.Thread(target=client, daemon=True) for _ in range(args.burst)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
    finally:
        server.stop()
    stalls = sum(1 for t in connects if t >= STALL)
    print(
        f"connection burst: {args.burst} connects at once; {stalls} stalled >= 1 s (goal: 0), connect median "
        f"{statistics.median(connects) * 1000:.1f} ms, max {max(connects) * 1000:.0f} ms; answers "
        + ", ".join(f"{k}: {v}" for k, v in sorted(answers.items()))
    )
    print(
        f"RESULT burst_connects={args.burst} burst_stalls={stalls} burst_max_ms={max(connects) * 1000:.0f} "
        f"burst_answers={','.join(f'{k}:{v}' for k, v in sorted(answers.items()))}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="slowloris,tls,flood,burst")
    parser.add_argument("--connections", type=int, default=100, help="slow clients (slowloris, tls)")
    parser.add_argument("--hold", type=float, default=30.0, help="a slow client gives up after this many seconds")
    parser.add_argument("--drip", type=float, default=1.0, help="seconds between dripped bytes")
    parser.add_argument("--flood-clients", type=int, default=60)
    parser.add_argument("--flood-lines", type=int, default=98, help="header lines of 64,000 bytes per client")
    parser.add_argument("--burst", type=int, default=200)
    args = parser.parse_args()
    scenarios = {"slowloris": slowloris, "tls": tls, "flood": flood, "burst": burst}
    for name in args.only.split(","):
        scenarios[name.strip()](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
