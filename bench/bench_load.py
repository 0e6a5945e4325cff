"""Load: Prometheus-like scrapers against /metrics of a large organisation while every collector polls.

The organisation: the simulator (``--servers`` x ``--queues`` moving queues, in a child process) and NSD
on loopback serving ``--domains`` domains (MX, SPF with a two-level include chain, DMARC, MTA-STS,
TLS-RPT: bench/bench_dns.py's zone), the PTR records of ``--ips`` outbound IPs and a DNS blocklist zone.
The exporter runs as in production (exporter.service.Service) with every collector on: queues, message
tracking, the audit collectors (connectors, accepted domains, components, database copies,
certificates, service health, back pressure...) and the DNS checks of the domains and IPs (the SMTP
probe is off: the zone's MX hosts are documentation addresses nothing answers on).

It polls everything once (the state of an exporter that has been running), then starts the scheduler
with ``scheduler.first_run_spread`` equal to the measurement (``--seconds``, a supported setting), so
the first scheduled poll of every target lands at a random moment *inside* the measurement and the
60 s collectors poll again every minute: polls compete with scrapes for the CPU, as in steady state.
The report says how many polls finished during the measurement (store updates), per collector how
many targets were polled in it, and how many renders the scrapes caused.

Meanwhile ``--scrapers`` Prometheus-like scrapers (another child process) each GET /metrics every
``--every`` seconds at their own random phase, with Prometheus' Accept header (OpenMetrics first),
``Accept-Encoding: gzip``, ``X-Prometheus-Scrape-Timeout-Seconds`` and a ``--timeout``; a scrape that
fails or times out counts as an error (and as ``--timeout`` in the percentiles). Every answer must be
200, OpenMetrics ending in ``# EOF``, with ``mailflow_collector_up`` in it.

``--back-to-back`` is the older mode: ``--clients`` threads GET /metrics back to back (no pause),
which measures how concurrent scrapes share renders rather than what Prometheus does.

    python bench/bench_load.py [--servers 50] [--queues 20] [--domains 2000] [--ips 10] [--seconds 300]
                               [--scrapers 2] [--every 15] [--timeout 10] [--back-to-back --clients 20]
"""

from __future__ import annotations

import argparse
import gzip
import multiprocessing as mp
import random
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_dns import ZONE, zone_text
from bench.bench_scrape import PROMETHEUS_ACCEPT
from bench.simorg import exchange_settings, start_org

BLOCKLIST = f"bl.{ZONE}"


def run_simulator(servers: int, queues: int, conn: Connection) -> None:
    sim, info = start_org(servers, queues)
    conn.send(info)
    conn.recv()
    sim.stop()


def outbound_ips(n: int) -> list[str]:
    return [f"192.0.2.{i + 1}" for i in range(n)]


def zones(domains: int, ips: int) -> dict[str, str]:
    """bench_dns's domains, plus a forward-confirmed PTR and HELO name per outbound IP and a blocklist
    that lists nothing but its RFC 5782 test point."""
    forward = zone_text(domains)
    forward += "".join(f"out{i + 1} IN A {ip}\n" for i, ip in enumerate(outbound_ips(ips)))
    forward += '2.0.0.127.bl IN A 127.0.0.2\n2.0.0.127.bl IN TXT "test point"\n'
    reverse = "\n".join(
        [
            "$ORIGIN 2.0.192.in-addr.arpa.",
            "$TTL 300",
            f"@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 120",
            f"@ IN NS ns1.{ZONE}.",
            *(f"{i + 1} IN PTR out{i + 1}.{ZONE}." for i in range(ips)),
        ]
    )
    return {ZONE: forward, "2.0.192.in-addr.arpa": reverse + "\n"}


def run_scrapers(
    url: str, scrapers: int, every: float, timeout: float, seconds: float, back_to_back: bool, conn: Connection
) -> None:
    """Scrape for ``seconds``; send back (latencies, errors, wire bytes). ``back_to_back``: no pause and
    no Prometheus Accept header (the older mode); otherwise each scraper keeps its own 15 s-style phase."""
    latencies: list[float] = []
    errors: list[str] = []
    sizes: list[int] = []
    lock = threading.Lock()
    start = time.monotonic() + 0.5
    end = start + seconds
    headers = {"Accept-Encoding": "gzip"}
    if not back_to_back:
        headers |= {"Accept": PROMETHEUS_ACCEPT, "X-Prometheus-Scrape-Timeout-Seconds": f"{timeout:g}"}

    def scrape() -> None:
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
                body = resp.read()
                status = resp.status
                encoding = resp.headers.get("Content-Encoding", "")
            elapsed = time.perf_counter() - t0
            text = gzip.decompress(body) if encoding == "gzip" else body
            complete = text.endswith(b"# EOF\n") if not back_to_back else text.endswith(b"\n")
            ok = status == 200 and complete and b"mailflow_collector_up" in text
            with lock:
                if ok:
                    latencies.append(elapsed)
                    sizes.append(len(body))
                else:
                    errors.append(f"HTTP {status}, {len(text)} bytes")
                    latencies.append(max(elapsed, timeout))
        except Exception as exc:
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
                latencies.append(timeout)

    def scraper(phase: float) -> None:
        next_at = start + phase
        while True:
            now = time.monotonic()
            if now >= end:
                return
            if not back_to_back:
                if next_at >= end:
                    return
                time.sleep(max(0.0, next_at - now))
                next_at += every
            scrape()

    rng = random.Random(1)
    threads = [
        threading.Thread(target=scraper, args=(0.0 if back_to_back else rng.uniform(0, every),), daemon=True)
        for _ in range(scrapers)
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    conn.send((latencies, errors, sizes))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def render_alone(service: Any) -> float:
    """CPU seconds of one /metrics render as the scrapers ask for it, before anything else runs in
    the process (no polls yet): what a render costs without contention."""
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": service.settings.web.telemetry_path,
        "QUERY_STRING": "",
        "HTTP_ACCEPT": PROMETHEUS_ACCEPT,
        "HTTP_ACCEPT_ENCODING": "gzip",
    }
    runs = []
    for _ in range(3):
        service.store.put(next(iter(service.store.states().values())).last)  # a store change: no cached answer
        t0 = time.process_time()
        b"".join(service.app(environ, lambda status, headers: None))
        runs.append(time.process_time() - t0)
    return statistics.median(runs)


def settings_for(info: dict[str, Any], nsd: Any, args: argparse.Namespace) -> Any:
    from exporter.settings import COLLECTOR_NAMES, Settings

    spread = min(args.seconds, 3600.0)  # scheduler.first_run_spread's bound
    return Settings.model_validate(
        {
            **exchange_settings(info, "load"),
            "collectors": {name: {"enabled": True} for name in COLLECTOR_NAMES},
            "dns": {
                "enabled": True,
                "resolvers": [nsd.address],
                "port": nsd.port,
                "timeout": 5,
                "domains": [f"d{i}.{ZONE}" for i in range(args.domains)],
                "use_accepted_domains": False,
                "use_send_connector_ips": False,
                "outbound_ips": [
                    {"ip": ip, "helo": f"out{i + 1}.{ZONE}"} for i, ip in enumerate(outbound_ips(args.ips))
                ],
                "blocklists": [BLOCKLIST],
                "smtp": {"enabled": False},
            },
            "scheduler": {"first_run_spread": spread},
            "web": {"listen_address": "127.0.0.1:0"},
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--queues", type=int, default=20)
    parser.add_argument("--domains", type=int, default=2000)
    parser.add_argument("--ips", type=int, default=10, help="outbound IPs (SPF is checked per domain and IP)")
    parser.add_argument("--seconds", type=float, default=300.0, help="how long the scrapers run")
    parser.add_argument("--scrapers", type=int, default=2)
    parser.add_argument("--every", type=float, default=15.0, help="scrape interval of each scraper")
    parser.add_argument("--timeout", type=float, default=10.0, help="scrape timeout (Prometheus' default)")
    parser.add_argument("--back-to-back", action="store_true", help="the older mode: --clients scrape non-stop")
    parser.add_argument("--clients", type=int, default=20, help="scrapers in --back-to-back mode")
    args = parser.parse_args()
    scrapers = args.clients if args.back_to_back else args.scrapers

    from prometheus_client import generate_latest

    from exporter.service import Service
    from tests.dnsinfra.nsd import NsdServer

    ctx = mp.get_context("spawn")
    sim_end, sim_child = ctx.Pipe()
    sim_proc = ctx.Process(target=run_simulator, args=(args.servers, args.queues, sim_child), daemon=True)
    sim_proc.start()
    info: dict[str, Any] = sim_end.recv()
    with tempfile.TemporaryDirectory() as tmp, NsdServer(zones(args.domains, args.ips), Path(tmp)) as nsd:
        service = Service(settings_for(info, nsd, args))
        try:
            t0 = time.perf_counter()
            snaps = service.poll_all()
            poll_seconds = time.perf_counter() - t0
            failed = Counter(s.collector for s in snaps if not s.ok)
            body = generate_latest(service.registry)
            samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
            alone = render_alone(service)
            service.start()
            assert service.web is not None
            url = f"http://127.0.0.1:{service.web.port}{service.settings.web.telemetry_path}"
            load_end, load_child = ctx.Pipe()
            load_proc = ctx.Process(
                target=run_scrapers,
                args=(url, scrapers, args.every, args.timeout, args.seconds, args.back_to_back, load_child),
                daemon=True,
            )
            renders_before, updates_before = service.app.metrics_renders, service.store.generation()
            began = service.store.now()
            load_proc.start()
            latencies, errors, sizes = load_end.recv()
            renders = service.app.metrics_renders - renders_before
            updates = service.store.generation() - updates_before
            polled = Counter(
                name for (name, _target), state in service.store.states().items() if state.last.finished >= began
            )
            targets = Counter(name for name, _target in service.store.states())
            load_proc.join(timeout=30)
        finally:
            service.stop()
            sim_end.send("stop")
            sim_proc.join(timeout=30)

    n = len(latencies)
    wire = statistics.median(sizes) / 1e3 if sizes else 0.0
    print(
        f"load: {args.servers} servers x {args.queues} queues, {args.domains} domains, {args.ips} outbound IPs; "
        f"first poll of {len(snaps)} targets in {poll_seconds:.0f} s ({sum(failed.values())} failed"
        + (f": {dict(failed)}" if failed else "")
        + f"); {samples} samples, {len(body) / 1e6:.2f} MB text, {wire:.0f} kB gzip on the wire; "
        f"one render alone {alone * 1000:.0f} ms CPU"
    )
    mode = (
        f"{scrapers} clients back to back"
        if args.back_to_back
        else f"{scrapers} scrapers every {args.every:g} s (timeout {args.timeout:g} s)"
    )
    print(f"{mode} for {args.seconds:g} s, all collectors polling (first_run_spread {min(args.seconds, 3600):g} s)")
    print(
        f"during it: {updates} polls finished; targets polled per collector: "
        + ", ".join(f"{name} {polled[name]}/{targets[name]}" for name in sorted(targets))
    )
    print(f"{'requests':>9} {'errors':>7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'renders':>8}")
    p50, p90, p99 = (percentile(latencies, p) * 1000 for p in (50, 90, 99))
    top = max(latencies, default=float("nan")) * 1000
    print(f"{n:>9} {len(errors):>7} {p50:>8.0f} {p90:>8.0f} {p99:>8.0f} {top:>8.0f} {renders:>8}")
    if errors:
        print("errors, e.g.: " + "; ".join(sorted(set(errors))[:3]))
    silent = sorted(name for name in targets if polled[name] == 0)
    if silent:
        print(f"collectors that did not poll during the measurement: {', '.join(silent)}")
    print(
        f"RESULT load_mode={'back_to_back' if args.back_to_back else 'prometheus'} load_servers={args.servers} "
        f"load_queues={args.queues} load_domains={args.domains} load_ips={args.ips} load_scrapers={scrapers} "
        f"load_every={args.every:g} load_seconds={args.seconds:g} load_samples={samples} "
        f"load_requests={n} load_errors={len(errors)} load_p50_ms={p50:.0f} load_p90_ms={p90:.0f} "
        f"load_p99_ms={p99:.0f} load_max_ms={top:.0f} load_renders={renders} load_polls={updates} "
        f"load_collectors={len(targets)} load_collectors_silent={len(silent)} load_wire_kb={wire:.0f} "
        f"load_render_alone_ms={alone * 1000:.0f}"
    )
    if errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
