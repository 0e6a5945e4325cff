"""DNS checks per second: the exporter's domain checks, sequential and concurrent, versus checkdmarc.

A real authoritative server (NSD, from Debian) serves N generated domains on loopback, each with two
MX hosts, SPF with a two-level include chain, DMARC, MTA-STS and TLS-RPT. Optionally every query
gets an added network-like delay by asking through a small delaying UDP proxy (``--rtt``), which is
what makes concurrency matter on a real network.

    python bench/bench_dns.py [--domains 1000] [--concurrency 8] [--rtt 0.02] [--checkdmarc]

Measured: the dns_domains collector's poll per domain (MX + host addresses, SPF tree + pyspf for 2
outbound IPs, DMARC, MTA-STS, TLS-RPT) through a thread pool of 1 and of ``--concurrency`` threads;
checkdmarc's ``check_domains`` on the same domains (it checks MX, SPF, DMARC, NS, BIMI... sequentially).
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ZONE = "bench.test"


def zone_text(n: int, mx_addresses: tuple[str, str] = ("192.0.2.25", "198.51.100.25")) -> str:
    """The zone of ``n`` domains d0..; its two MX hosts have ``mx_addresses``."""
    lines = [
        f"$ORIGIN {ZONE}.",
        "$TTL 300",
        f"@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 120",
        f"@ IN NS ns1.{ZONE}.",
        "ns1 IN A 127.0.0.1",
        f"mx1 IN A {mx_addresses[0]}",
        f"mx2 IN A {mx_addresses[1]}",
        'spf-a IN TXT "v=spf1 ip4:192.0.2.0/26 include:spf-b.bench.test -all"',
        'spf-b IN TXT "v=spf1 ip4:198.51.100.0/26 -all"',
    ]
    for i in range(n):
        d = f"d{i}"
        lines += [
            f"{d} IN MX 10 mx1",
            f"{d} IN MX 20 mx2",
            f'{d} IN TXT "v=spf1 include:spf-a.bench.test mx -all"',
            f'_dmarc.{d} IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@{d}.{ZONE}"',
            f'_mta-sts.{d} IN TXT "v=STSv1; id=1"',
            f'_smtp._tls.{d} IN TXT "v=TLSRPTv1; rua=mailto:tls@{d}.{ZONE}"',
        ]
    return "\n".join(lines) + "\n"


class DelayProxy:
    """UDP proxy adding ``rtt`` seconds before forwarding each query (concurrently, one thread per query)."""

    def __init__(self, upstream: tuple[str, int], rtt: float) -> None:
        self.upstream, self.rtt = upstream, rtt
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                return
            threading.Thread(target=self._forward, args=(data, peer), daemon=True).start()

    def _forward(self, data: bytes, peer: Any) -> None:
        time.sleep(self.rtt)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
            up.settimeout(5)
            up.sendto(data, self.upstream)
            try:
                reply, _ = up.recvfrom(65535)
            except OSError:
                return
        self.sock.sendto(reply, peer)

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def run_exporter(domains: list[str], address: str, port: int, workers: int) -> tuple[float, int]:
    from exporter.dnscheck.baseline import BaselineStore
    from exporter.dnscheck.collectors import DomainCheckCollector, Sources
    from exporter.settings import DnsSettings

    settings = DnsSettings.model_validate(
        {
            "resolvers": [address],
            "port": port,
            "timeout": 5,
            "domains": domains,
            "use_accepted_domains": False,
            "outbound_ips": [{"ip": "192.0.2.10"}, {"ip": "203.0.113.9"}],
        }
    )
    collector = DomainCheckCollector(settings, Sources(settings, lambda _n: {}), BaselineStore(None, 0, time.time))
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(collector.poll, domains))
    elapsed = time.perf_counter() - started
    assert all(r.mx.records == 2 and r.spf.valid for r in results), "unexpected check result"
    return elapsed, sum(r.queries for r in results)


def run_checkdmarc(domains: list[str], address: str, port: int) -> float | None:
    try:
        import checkdmarc
        import dns.resolver
    except ImportError:
        return None
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [address]
    resolver.port = port
    resolver.lifetime = 5
    started = time.perf_counter()
    checkdmarc.check_domains(domains, resolver=resolver, skip_tls=True, timeout=5)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rtt", type=float, default=0.0, help="seconds added to every query (UDP proxy)")
    parser.add_argument("--checkdmarc", action="store_true", help="also time checkdmarc (pip install checkdmarc)")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.dnsinfra
    from tests.dnsinfra.nsd import NsdServer

    domains = [f"d{i}.{ZONE}" for i in range(args.domains)]
    with tempfile.TemporaryDirectory() as tmp, NsdServer({ZONE: zone_text(args.domains)}, Path(tmp)) as nsd:
        address, port = nsd.address, nsd.port
        proxy = DelayProxy((address, port), args.rtt) if args.rtt > 0 else None
        if proxy is not None:
            port = proxy.port
        rows = []
        for workers in (1, args.concurrency):
            sample = domains if workers > 1 or args.rtt == 0 else domains[: max(20, args.domains // 10)]
            elapsed, queries = run_exporter(sample, address, port, workers)
            rows.append((f"exporter, {workers} thread(s)", len(sample), elapsed, queries))
        if args.checkdmarc:
            sample = domains if args.rtt == 0 else domains[: max(20, args.domains // 10)]
            elapsed_cd = run_checkdmarc(sample, address, port)
            if elapsed_cd is not None:
                rows.append(("checkdmarc check_domains (sequential)", len(sample), elapsed_cd, 0))
        if proxy is not None:
            proxy.close()
    print(f"{args.domains} domains, NSD on loopback, added RTT {args.rtt * 1000:.0f} ms per query")
    print(f"{'run':42} {'domains':>8} {'seconds':>9} {'domains/s':>10} {'queries/domain':>15}")
    for name, n, elapsed, queries in rows:
        per = f"{queries / n:.1f}" if queries else "-"
        print(f"{name:42} {n:>8} {elapsed:>9.2f} {n / elapsed:>10.1f} {per:>15}")
    results = [f"dns_domains={args.domains}", f"dns_concurrency={args.concurrency}"]
    keys = ("dns_1_thread", "dns_n_threads", "dns_checkdmarc")
    for (_name, n, elapsed, _queries), key in zip(rows, keys, strict=False):
        results.append(f"{key}_per_s={n / elapsed:.1f}")
    if args.checkdmarc and len(rows) < 3:
        print("checkdmarc is not installed (pip install checkdmarc): its row is left out")
        results.append("dns_checkdmarc_per_s=missing")
    print("RESULT " + " ".join(results))


if __name__ == "__main__":
    main()
