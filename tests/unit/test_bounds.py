"""The pieces of the response bounds that need no Exchange: the bounded HTTP adapter against raw sockets
(a chunked answer without a length, a server that drips), the size settings, the log scrubbing and the
fair executor's lanes."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from apscheduler.schedulers.background import BackgroundScheduler
from pypsrp.wsman import WSMan
from requests.utils import resolve_proxies

from exporter.errors import ConfigError
from exporter.exchange.bounds import BoundedAdapter, CallGuard, Limits, TooLarge, install, result_size
from exporter.lanes import FairExecutor
from exporter.logs import MAX_LIBRARY_MESSAGE, scrub
from exporter.settings import MIB, load_settings

LIMITS = Limits(response_bytes=256 * 1024, objects=10, object_bytes=64 * 1024)


class RawServer:
    """One-connection-at-a-time HTTP server on loopback answering every request with ``respond(conn)``;
    records whether writing to a client failed (the client closed first)."""

    def __init__(self, respond: Callable[[socket.socket], None]) -> None:
        self._respond = respond
        self.cut = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/PowerShell"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                try:
                    self._respond(conn)
                except OSError:
                    self.cut.set()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket], None]], RawServer]]:
    made: list[RawServer] = []

    def make(respond: Callable[[socket.socket], None]) -> RawServer:
        made.append(RawServer(respond))
        return made[-1]

    yield make
    for server in made:
        server.close()


def session_for(guard: CallGuard) -> requests.Session:
    session = requests.Session()
    session.mount("http://", BoundedAdapter(guard))
    return session


def chunked_forever(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/soap+xml\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 16384
    for _ in range(4096):  # 64 MiB, never announced
        conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    conn.sendall(b"0\r\n\r\n")


def test_a_body_without_a_length_is_cut_at_the_byte_cap(raw_server: Any) -> None:
    server = raw_server(chunked_forever)
    guard = CallGuard(LIMITS)
    guard.begin(time.monotonic() + 30)
    with pytest.raises(TooLarge) as info, session_for(guard) as session:
        session.post(server.url, data=b"<s:Envelope/>", timeout=(5, 5))
    assert info.value.reason == "too_large" and "max_response_bytes (256KiB)" in str(info.value)
    assert guard.bytes_read <= LIMITS.response_bytes + 64 * 1024  # at most one chunk past the cap
    assert server.cut.wait(10)  # the client closed the connection; the rest was never read


def drip(conn: socket.socket) -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000
    for index in range(len(response)):
        conn.sendall(response[index : index + 1])
        time.sleep(0.2)


def test_abort_ends_a_read_that_per_read_timeouts_never_would(raw_server: Any) -> None:
    server = raw_server(drip)
    guard = CallGuard(LIMITS)
    guard.begin(time.monotonic() + 60)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            with session_for(guard) as session:
                session.post(server.url, data=b"x", timeout=(5, 5))  # each byte comes well within 5 s
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    time.sleep(1.0)  # connected, headers dripping
    assert thread.is_alive()
    assert guard.abort() == 1
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(outcome[0], requests.exceptions.RequestException), outcome
    assert server.cut.wait(10)
    with pytest.raises(requests.exceptions.ConnectionError), session_for(guard) as session:  # nothing starts after it
        session.post(server.url, data=b"x", timeout=(5, 5))


def silent(conn: socket.socket) -> None:
    time.sleep(10)  # accepts, never answers


def test_no_request_starts_after_the_deadline(raw_server: Any) -> None:
    # A connection error, not a timeout: pypsrp retries a Receive that timed out (after sleeping).
    server = raw_server(silent)
    guard = CallGuard(LIMITS)
    guard.begin(time.monotonic() - 1)
    with pytest.raises(requests.exceptions.ConnectionError, match="deadline") as info, session_for(guard) as session:
        session.post(server.url, data=b"x", timeout=(5, 5))
    assert not isinstance(info.value, requests.exceptions.Timeout)


def test_object_and_record_counts_and_object_size() -> None:
    guard = CallGuard(LIMITS)
    for _ in range(LIMITS.objects):
        guard.add_message(output=True)
        guard.add_message(output=False)  # records are counted apart: a truncation warning never fails a full page
    with pytest.raises(TooLarge, match=r"max_objects \(10\) output objects"):
        guard.add_message(output=True)
    guard.check_object(LIMITS.object_bytes)
    with pytest.raises(TooLarge, match=r"max_object_bytes \(64KiB\)"):
        guard.check_object(LIMITS.object_bytes + 1)
    guard.begin(time.monotonic() + 1)  # a new call starts from zero
    guard.add_message(output=True)


def test_result_size_never_asks_for_more_than_max_objects() -> None:
    assert result_size("Unlimited", 1000) == 1000
    assert result_size(50, 1000) == 50
    assert result_size(5000, 1000) == 1000


# --- settings ----------------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def test_sizes_take_binary_units_and_servers_inherit_or_override_them(tmp_path: Path) -> None:
    settings = load_settings(
        write(
            tmp_path,
            "exchange:\n  defaults:\n    max_response_bytes: 64MiB\n    max_object_bytes: 512KiB\n"
            "  servers:\n    - name: EX01\n    - name: EX02\n      max_response_bytes: 1GiB\n      max_objects: 5000\n",
        ),
        environ={},
    )
    d = settings.exchange.defaults
    assert (d.max_response_bytes, d.max_object_bytes, d.max_objects) == (64 * MIB, 512 * 1024, 100_000)
    from exporter.settings import resolved_servers

    ex01, ex02 = resolved_servers(settings)
    assert (ex01.max_response_bytes, ex01.max_objects) == (64 * MIB, 100_000)
    assert (ex02.max_response_bytes, ex02.max_objects, ex02.max_object_bytes) == (1024 * MIB, 5000, 512 * 1024)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("8GiB", "less than or equal to 4294967296"),
        ("1KiB", "greater than or equal to 65536"),
        ("'256 MB'", "invalid size '256 MB': use bytes or a unit (KiB, MiB, GiB)"),
        (".inf", "finite number"),
        ("1e400", "invalid size '1e400'"),  # YAML reads it as a string
    ],
)
def test_bad_sizes_are_refused_with_field_and_line(tmp_path: Path, value: str, message: str) -> None:
    path = write(tmp_path, f"exchange:\n  defaults:\n    max_response_bytes: {value}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert "exchange.defaults.max_response_bytes (line 3)" in str(info.value)
    assert message in str(info.value), str(info.value)


# --- logs ---------------------------------------------------------------------------------------------------


def test_scrub_cuts_each_line_at_its_first_markup_and_bounds_the_length() -> None:
    raw = 'Failed to parse data \'<Obj RefId="0"><S N="MessageId">secret-id@contoso</S><S>cut off'
    assert "secret-id" not in scrub(raw, MAX_LIBRARY_MESSAGE)
    assert scrub(raw, MAX_LIBRARY_MESSAGE).startswith("Failed to parse data '[")
    text = scrub("Traceback\nWinRMTransportError: <html><body>body text</body>\nnext line", 4000)
    assert text.splitlines()[0] == "Traceback" and "body text" not in text and text.endswith("next line")
    assert "QUJD" * 40 not in scrub("payload " + "QUJD" * 40, 4000)  # base64 runs
    assert len(scrub("a b " * 10_000, 300)) < 400
    kept = "session opened server=EX01 password=<redacted> user=<current-user>"
    assert scrub(kept, 4000) == kept  # the exporter's own placeholders are not markup


# --- lanes --------------------------------------------------------------------------------------------------


def test_a_blocked_lane_holds_one_worker_and_the_others_take_turns() -> None:
    release = threading.Event()
    ran: list[str] = []
    lock = threading.Lock()

    def slow(name: str) -> None:
        with lock:
            ran.append(name)
        release.wait(30)

    def fast(name: str) -> None:
        with lock:
            ran.append(name)

    executor = FairExecutor(2, lambda job: str(job.args[0]).split("-")[0])
    scheduler = BackgroundScheduler(executors={"default": executor})
    scheduler.start(paused=True)
    try:
        for i in range(3):
            scheduler.add_job(slow, args=(f"slow-{i}",), id=f"slow-{i}")
        for i in range(3):
            scheduler.add_job(fast, args=(f"fast-{i}",), id=f"fast-{i}")
        scheduler.resume()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and sum(n.startswith("fast") for n in ran) < 3:
            time.sleep(0.02)
        # One slow job runs (its lane's one), the other two wait without a thread; every fast one ran.
        assert sorted(n for n in ran if n.startswith("fast")) == ["fast-0", "fast-1", "fast-2"], ran
        assert [n for n in ran if n.startswith("slow")] == ["slow-0"], ran
        assert executor.lanes()["slow"] == (1, 2)
        release.set()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and len(ran) < 6:
            time.sleep(0.02)
        assert sorted(ran) == ["fast-0", "fast-1", "fast-2", "slow-0", "slow-1", "slow-2"]
    finally:
        release.set()
        scheduler.shutdown(wait=False)


@pytest.mark.parametrize("host", ["ex01.contoso.example", "ex02.bypass.example"])
def test_bounded_session_keeps_the_environment_proxies_without_reading_them_per_request(
    monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    """pypsrp merges the environment's proxies for its endpoint when it builds the session, so the bounded
    session turns requests' per-request re-read off (trust_env) and still proxies exactly as before."""
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", ".bypass.example")
    wsman = WSMan(host, port=5985, ssl=False, auth="basic", username="u", password="p", encryption="never")
    install(wsman, LIMITS)
    session = wsman.transport._build_session()
    request = session.prepare_request(requests.Request("POST", wsman.transport.endpoint))
    assert session.trust_env is False
    expected = "http://proxy.example:3128" if host.startswith("ex01") else None
    assert resolve_proxies(request, session.proxies, False).get("http") == expected
    assert resolve_proxies(request, session.proxies, True).get("http") == expected  # re-reading the environment
