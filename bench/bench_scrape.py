"""Scrape cost: one GET /metrics over HTTP, every request forced to render, versus the library floor.

What is measured, at 1k, 10k and 50k series (at least) (``--sizes``):

* **floor**: prometheus_client's own ``generate_latest`` (text format 0.0.4) over a registry whose only
  collector yields prebuilt metric families equal to ours (captured once from our registry, process
  metrics included). It is what formatting those series costs the library, and nothing of ours.
* **identity**: ``GET /metrics`` over a new loopback connection (as Prometheus opens one per scrape),
  plain text, body read to the end.
* **gzip**: the same with ``Accept-Encoding: gzip`` (what Prometheus sends), compared with the *same*
  floor: the compression is part of the cost. Bytes on the wire are printed beside it.
* **prometheus**: the same with Prometheus' own Accept header (it prefers OpenMetrics 1.0.0) and gzip,
  compared with the library's OpenMetrics ``generate_latest`` over the same prebuilt families.

The shared-render cache (exporter/exposition.py) would answer a repeated request from its last render,
so before every timed request the store gets a new snapshot (same data, new poll time): every request
renders the store afresh, and the benchmark checks that the app rendered once per request. The org is
N servers with a realistic queue mix each (submission, poison, shadow, mailbox and external delivery
queues, some retrying with LastErrors); N is chosen to reach each size. Floors and requests are
interleaved round by round, so drifting background load hits both alike; medians are printed.

    python bench/bench_scrape.py [--sizes 1000,10000,50000] [--runs 15] [--queues 40]

``--gzip-levels`` prints what each zlib level costs and saves on the largest size (the level the
exporter uses is exporter.exposition.GZIP_LEVEL).
"""

from __future__ import annotations

import argparse
import functools
import gzip
import http.client
import math
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_latest_openmetrics

from exporter.exchange.lasterror import parse_smtp_error
from exporter.exchange.queues import QueueInfo, QueueResult, aggregate, render_queues
from exporter.exposition import GZIP_LEVEL
from exporter.metrics import MailflowCollector, build_registry
from exporter.store import Snapshot, SnapshotStore
from exporter.web import WebApp, WebServer

#: What Prometheus 3 sends by default (scrape_protocols without the protobuf one).
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)

ERRORS = [
    "451 4.4.0 DNS query failed. The error was: SMTPSEND.DNS.NonExistentDomain; nonexistent domain",
    "[{LRT=11/27/2026 1:02:03 AM};{LED=451 4.4.397 Error communicating with target host. -> 421 4.2.1 Unable to "
    "connect -> SocketConnectionRefused: Socket error code 10061};{FQDN=mx.example};{IP=203.0.113.25}]",
    '441 4.4.1 Error encountered while communicating with primary target IP address: "Failed to connect. '
    'Winsock error code: 10060, Win32 error code: 10060."',
]


def org_queues(server: str, n: int) -> list[QueueInfo]:
    """A plausible mix of queues for one server."""
    now = datetime.now(UTC)

    def q(ident: str, kind: str, dtype: str, hop: str, cat: str, status: str, count: int, err: str = "") -> QueueInfo:
        return QueueInfo(
            identity=f"{server}\\{ident}",
            server=server,
            kind=kind,
            delivery_type=dtype,
            next_hop_domain=hop,
            next_hop_category=cat,
            status=status,
            message_count=count,
            deferred_count=count // 10,
            incoming_rate=0.5,
            outgoing_rate=0.4,
            retry_count=3 if status == "Retry" else 0,
            next_retry_time=now + timedelta(minutes=5) if status == "Retry" else None,
            last_error=parse_smtp_error(err or None),
        )

    queues = [
        q("Submission", "submission", "Undefined", "Submission", "Internal", "Ready", 3),
        q("Poison", "poison", "Undefined", "Poison Message", "Internal", "Ready", 1),
        q("Shadow\\1", "shadow", "ShadowRedundancy", "ex00.contoso.sim", "Internal", "Ready", 5),
        q("2", "delivery", "SmtpDeliveryToMailbox", "mailbox database 01", "Internal", "Active", 20),
    ]
    for i in range(n - len(queues)):
        retrying = i % 7 == 0
        queues.append(
            q(
                str(100 + i),
                "delivery",
                "DnsConnectorDelivery",
                f"partner{i}.example",
                "External",
                "Retry" if retrying else "Active",
                i % 13,
                ERRORS[i % 3] if retrying else "",
            )
        )
    return queues


class _QueuesOnly:
    """The queues collector's render, without anything to poll (the store is filled directly)."""

    name = "queues"

    def interval(self) -> float:
        return 60.0

    def targets(self) -> list[str]:
        return []

    def poll(self, target: str) -> QueueResult:
        raise NotImplementedError

    def render(self, results: Mapping[str, Any]) -> Iterable[Metric]:
        return render_queues(results.values())


class _Prebuilt:
    """A collector that yields the same prebuilt families on every collect: the floor's input."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def series(body: bytes) -> int:
    return sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))


class Org:
    """``servers`` servers' queue results in a store, served over loopback HTTP by the exporter's web app."""

    def __init__(self, servers: int, queues: int) -> None:
        self.store = SnapshotStore()
        self.results = {}
        for i in range(servers):
            server = f"EX{i:03d}"
            self.results[server] = aggregate(server, org_queues(server, queues), max_domains=20)
            self._put(server)
        self.registry = build_registry(MailflowCollector(self.store, [_QueuesOnly()], 3.0))
        self.app = WebApp(self.registry, self.store, "/metrics", "", lambda: (True, "ok"))
        self.web = WebServer(self.app, "127.0.0.1:0")
        self.floor = CollectorRegistry(auto_describe=False)
        self.floor.register(_Prebuilt(list(self.registry.collect())))
        self._next = 0

    def _put(self, server: str) -> None:
        self.store.put(Snapshot("queues", server, time.time(), 0.2, 60.0, True, self.results[server]))

    def touch(self) -> None:
        """A new snapshot of one server (same data): the store changed, so the next scrape must render."""
        servers = sorted(self.results)
        self._put(servers[self._next % len(servers)])
        self._next += 1

    def get(self, headers: dict[str, str]) -> tuple[bytes, dict[str, str]]:
        """One scrape on a new connection: (body as sent, response headers)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.web.port, timeout=60)
        try:
            conn.request("GET", "/metrics", headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise SystemExit(f"GET /metrics: HTTP {resp.status}")
            return body, {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()


MODES: dict[str, dict[str, str]] = {
    "identity": {},
    "gzip": {"Accept-Encoding": "gzip"},
    "prometheus": {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"},
}


def measure(org: Org, runs: int) -> dict[str, float]:
    """Median wall and CPU seconds of each floor and each mode, rounds interleaved; wire bytes per mode.

    CPU is this process' (``time.process_time``: the client, the listener and the render all run here),
    so it counts what a request costs even when other processes take the cores meanwhile."""
    floors: dict[str, Callable[[], bytes]] = {
        "text": lambda: generate_latest(org.floor),
        "openmetrics": lambda: generate_latest_openmetrics(org.floor),
    }
    wall: dict[str, list[float]] = {k: [] for k in [*floors, *MODES]}
    cpu: dict[str, list[float]] = {k: [] for k in [*floors, *MODES]}
    wire: dict[str, int] = {}
    for fn in floors.values():  # warm up
        fn()
    for headers in MODES.values():
        org.touch()
        org.get(headers)

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        cpu[name].append(time.process_time() - c0)
        wall[name].append(time.perf_counter() - w0)
        return out

    for _ in range(runs):
        for name, fn in floors.items():
            timed(name, fn)
        for mode, headers in MODES.items():
            org.touch()
            before = org.app.metrics_renders
            body, _ = timed(mode, functools.partial(org.get, headers))
            if org.app.metrics_renders != before + 1:
                raise SystemExit("a timed request did not render: the cache answered it")
            wire[mode] = len(body)
    out = {k: statistics.median(v) for k, v in wall.items()}
    out.update({f"{k}_cpu": statistics.median(v) for k, v in cpu.items()})
    out.update({f"{mode}_bytes": float(n) for mode, n in wire.items()})
    return out


def check(org: Org) -> None:
    """The answers are what the library would say about the same store (not timed)."""
    org.touch()
    expected = generate_latest(org.registry)
    plain, _ = org.get({})
    zipped, headers = org.get(MODES["gzip"])
    assert headers.get("content-encoding") == "gzip"
    for body in (plain, gzip.decompress(zipped)):
        # process metrics (CPU seconds, memory) move between renders: compare the mailflow lines only
        ours = [line for line in body.splitlines() if b"mailflow_" in line and b"mailflow_collector_" not in line]
        theirs = [line for line in expected.splitlines() if b"mailflow_" in line and b"mailflow_collector_" not in line]
        if ours != theirs:
            raise SystemExit("GET /metrics differs from generate_latest on the same store")


def servers_for(target: int, queues: int) -> int:
    """How many servers give at least ``target`` series."""
    one, two = (series(generate_latest(Org(n, queues).registry)) for n in (1, 2))
    per_server = two - one
    return max(1, math.ceil((target - (one - per_server)) / per_server))


def _ms(m: dict[str, float], name: str) -> str:
    return f"{m[name] * 1000:7.1f} ms wall {m[name + '_cpu'] * 1000:7.1f} ms CPU"


def gzip_levels(body: bytes) -> None:
    print(f"gzip levels on {len(body) / 1e6:.2f} MB of text:")
    for level in (1, 3, 6, 9):
        t0 = time.process_time()
        for _ in range(3):
            out = zlib.compress(body, level, wbits=31)
        elapsed = (time.process_time() - t0) / 3
        print(f"  level {level}: {elapsed * 1000:6.1f} ms CPU, {len(out) / 1e3:7.1f} kB on the wire")
        print(
            f"RESULT scrape_gzip_level{level}_ms={elapsed * 1000:.1f} scrape_gzip_level{level}_kb={len(out) / 1e3:.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,50000", help="series counts to measure at (at least)")
    parser.add_argument("--queues", type=int, default=40, help="queues per server")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--gzip-levels", action="store_true", help="also time zlib levels on the largest body")
    args = parser.parse_args()

    print(f"gzip level in use: {GZIP_LEVEL}")
    largest = b""
    for target in (int(s) for s in args.sizes.split(",")):
        org = Org(servers_for(target, args.queues), args.queues)
        org.web.start()
        try:
            check(org)
            m = measure(org, args.runs)
        finally:
            org.web.stop()
        body = generate_latest(org.floor)
        largest = body if len(body) > len(largest) else largest
        n, key = series(body), f"{target // 1000}k"
        print(
            f"\n{n} series ({len(org.results)} servers), {len(body) / 1e6:.2f} MB text; medians of {args.runs} "
            f"(every request rendered); wall ms, CPU ms"
        )
        floors = {"identity": "text", "gzip": "text", "prometheus": "openmetrics"}
        for floor in ("text", "openmetrics"):
            print(f"  floor generate_latest ({floor}):{'':<{12 - len(floor)}} {_ms(m, floor)}")
        for mode, floor in floors.items():
            print(
                f"  GET /metrics {mode:<11} {_ms(m, mode)}   {m[mode] / m[floor]:.2f}x floor wall, "
                f"{m[mode + '_cpu'] / m[floor + '_cpu']:.2f}x CPU, {m[mode + '_bytes'] / 1e3:8.1f} kB on the wire"
            )
        print(
            f"RESULT scrape_{key}_series={n} scrape_{key}_floor_ms={m['text'] * 1000:.1f} "
            f"scrape_{key}_floor_cpu_ms={m['text_cpu'] * 1000:.1f} "
            f"scrape_{key}_floor_om_ms={m['openmetrics'] * 1000:.1f} "
            f"scrape_{key}_floor_om_cpu_ms={m['openmetrics_cpu'] * 1000:.1f} "
            + " ".join(
                f"scrape_{key}_{mode}_ms={m[mode] * 1000:.1f} scrape_{key}_{mode}_ratio={m[mode] / m[floor]:.2f} "
                f"scrape_{key}_{mode}_cpu_ms={m[mode + '_cpu'] * 1000:.1f} "
                f"scrape_{key}_{mode}_cpu_ratio={m[mode + '_cpu'] / m[floor + '_cpu']:.2f} "
                f"scrape_{key}_{mode}_kb={m[mode + '_bytes'] / 1e3:.1f}"
                for mode, floor in floors.items()
            )
        )
    if args.gzip_levels:
        gzip_levels(largest)


if __name__ == "__main__":
    main()
