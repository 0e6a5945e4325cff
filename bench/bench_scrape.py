"""Scrape cost: GET /metrics over HTTP versus generate_latest() on the same registry in-process.

The org: 50 servers with a realistic queue mix each (submission, poison, shadow, mailbox delivery,
external delivery queues, some retrying with LastErrors). Prints medians and the ratio.

    python bench/bench_scrape.py [--servers 50] [--queues 40] [--runs 30]
"""

from __future__ import annotations

import argparse
import statistics
import time
import urllib.request
from datetime import UTC, datetime, timedelta

from prometheus_client import generate_latest

from exporter.exchange.lasterror import parse_smtp_error
from exporter.exchange.queues import QueueInfo, aggregate
from exporter.metrics import MailflowCollector, build_registry
from exporter.store import Snapshot, SnapshotStore
from exporter.web import WebApp, WebServer

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
    name = "queues"

    def interval(self) -> float:
        return 60.0

    def targets(self) -> list[str]:
        return []

    def poll(self, target: str) -> None:
        raise NotImplementedError

    def render(self, results):  # type: ignore[no-untyped-def]
        from exporter.exchange.queues import render_queues

        return render_queues(results.values())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--queues", type=int, default=40)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    store = SnapshotStore()
    for i in range(args.servers):
        server = f"EX{i:02d}"
        result = aggregate(server, org_queues(server, args.queues), max_domains=20)
        store.put(Snapshot("queues", server, time.time(), 0.2, 60.0, True, result))
    registry = build_registry(MailflowCollector(store, [_QueuesOnly()], 3.0))
    web = WebServer(WebApp(registry, store, "/metrics", "", lambda: (True, "ok")), "127.0.0.1:0")
    web.start()
    url = f"http://127.0.0.1:{web.port}/metrics"
    body = generate_latest(registry)
    samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))

    def timed(fn) -> list[float]:  # type: ignore[no-untyped-def]
        out = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return out

    def http_plain() -> None:
        with urllib.request.urlopen(url) as resp:
            resp.read()

    def http_gzip() -> None:
        req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(req) as resp:
            resp.read()

    for fn in (lambda: generate_latest(registry), http_plain):  # warm up
        fn()
    floor = statistics.median(timed(lambda: generate_latest(registry)))
    plain = statistics.median(timed(http_plain))
    gz = statistics.median(timed(http_gzip))
    web.stop()
    print(f"servers={args.servers} queues/server={args.queues} samples={samples} bytes={len(body)}")
    print(f"generate_latest in-process median: {floor * 1000:.1f} ms")
    print(f"GET /metrics (identity) median:    {plain * 1000:.1f} ms  ratio {plain / floor:.2f}x")
    print(f"GET /metrics (gzip) median:        {gz * 1000:.1f} ms  ratio {gz / floor:.2f}x")
    print(
        f"RESULT scrape_samples={samples} scrape_floor_ms={floor * 1000:.1f} scrape_identity_ms={plain * 1000:.1f} "
        f"scrape_gzip_ms={gz * 1000:.1f} scrape_identity_ratio={plain / floor:.2f} scrape_gzip_ratio={gz / floor:.2f}"
    )


if __name__ == "__main__":
    main()
