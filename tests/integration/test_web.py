"""The HTTP server over a real socket: metrics, landing page, health, readiness, unknown paths."""

from __future__ import annotations

import gzip
import http.client
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from exporter.metrics import MailflowCollector, build_registry
from exporter.store import Snapshot, SnapshotStore
from exporter.web import WebApp, WebServer, split_listen_address


class Ready:
    def __init__(self) -> None:
        self.value = (False, "waiting for first poll of 1 target(s): queues:EX01")

    def __call__(self) -> tuple[bool, str]:
        return self.value


@pytest.fixture
def served() -> Iterator[tuple[str, SnapshotStore, Ready]]:
    store = SnapshotStore()
    ready = Ready()
    registry = build_registry(MailflowCollector(store, [], 3.0))
    server = WebServer(WebApp(registry, store, "/metrics", "https://example.invalid/runbook.md", ready), "127.0.0.1:0")
    server.start()
    yield f"http://127.0.0.1:{server.port}", store, ready
    server.stop()


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read().decode()


def test_metrics_endpoint(served: tuple[str, SnapshotStore, Ready]) -> None:
    base, store, _ = served
    store.put(Snapshot("queues", "EX01", store.now(), 0.25, 60.0, False, None, "timeout", "no answer within 60s"))
    status, ctype, body = get(base + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    assert 'mailflow_collector_up{collector="queues",target="EX01"} 0.0' in body
    assert 'mailflow_collector_errors_total{collector="queues",reason="timeout",target="EX01"} 1.0' in body
    assert "process_cpu_seconds_total" in body


def test_landing_page_lists_targets_and_escapes(served: tuple[str, SnapshotStore, Ready]) -> None:
    base, store, _ = served
    store.put(Snapshot("queues", "EX01", store.now(), 0.25, 60.0, False, None, "cmdlet_error", "<script>x</script>"))
    status, ctype, body = get(base + "/")
    assert status == 200 and ctype.startswith("text/html")
    assert 'href="/metrics"' in body and "https://example.invalid/runbook.md" in body
    assert "EX01" in body and "down (cmdlet_error)" in body
    assert "<script>x</script>" not in body and "&lt;script&gt;" in body


def test_health_and_readiness(served: tuple[str, SnapshotStore, Ready]) -> None:
    base, _, ready = served
    assert get(base + "/-/healthy")[0] == 200
    status, _, body = get(base + "/-/ready")
    assert status == 503 and "queues:EX01" in body
    ready.value = (True, "Ready")
    assert get(base + "/-/ready")[0] == 200


def test_unknown_path_is_404(served: tuple[str, SnapshotStore, Ready]) -> None:
    assert get(served[0] + "/nope")[0] == 404


@pytest.mark.parametrize(
    ("address", "expected"),
    [(":10049", ("0.0.0.0", 10049)), ("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::]:10049", ("::", 10049))],
)
def test_split_listen_address(address: str, expected: tuple[str, int]) -> None:
    assert split_listen_address(address) == expected


def test_an_address_that_cannot_be_bound_names_itself_and_releases_the_others() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    store = SnapshotStore()
    app = WebApp(build_registry(MailflowCollector(store, [], 3.0)), store, "/metrics", "", Ready())
    busy = f"127.0.0.1:{taken.getsockname()[1]}"
    try:
        with pytest.raises(OSError, match=re.escape(f"cannot listen on {busy}")):
            WebServer(app, [f"127.0.0.1:{free}", busy])
    finally:
        taken.close()
    with socket.socket() as again:  # the first listener was closed, not leaked
        again.bind(("127.0.0.1", free))


def test_every_address_serves_the_same_application() -> None:
    store = SnapshotStore()
    app = WebApp(build_registry(MailflowCollector(store, [], 3.0)), store, "/custom/metrics", "", Ready())
    server = WebServer(app, ["127.0.0.1:0", "127.0.0.1:0"])
    server.start()
    try:
        for port in server.ports:
            status, _, body = get(f"http://127.0.0.1:{port}/custom/metrics")
            assert status == 200 and "mailflow_build_info" in body
            assert get(f"http://127.0.0.1:{port}/metrics")[0] == 404
    finally:
        server.stop()


PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)


def request(base: str, method: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    host, _, port = base.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request(method, "/metrics", headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_prometheus_scrape_gets_openmetrics_gzipped_and_head_the_same_headers(
    served: tuple[str, SnapshotStore, Ready],
) -> None:
    base, store, _ = served
    store.put(Snapshot("queues", "EX01", store.now(), 0.25, 60.0, False, None, "timeout", "no answer within 60s"))
    headers = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
    status, got, body = request(base, "GET", headers)
    assert status == 200 and got["content-encoding"] == "gzip"
    assert got["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    text = gzip.decompress(body).decode()
    assert text.endswith("# EOF\n")
    assert 'mailflow_collector_errors_total{collector="queues",reason="timeout",target="EX01"} 1.0' in text
    assert "# TYPE mailflow_collector_errors counter" in text  # OpenMetrics names the family without _total
    status, head, head_body = request(base, "HEAD", headers)  # the same cached render: same length, no body
    assert status == 200 and head_body == b""
    assert head["content-length"] == got["content-length"] == str(len(body))
    assert head["content-type"] == got["content-type"] and head["content-encoding"] == "gzip"
    status, plain, plain_body = request(base, "GET", {"Accept": PROMETHEUS_ACCEPT})
    assert "content-encoding" not in plain

    def mailflow(lines: str) -> list[str]:  # process metrics move between the two renders
        return [line for line in lines.splitlines() if "mailflow_" in line]

    assert mailflow(plain_body.decode()) == mailflow(text)
