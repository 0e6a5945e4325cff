"""Load: many concurrent scrapers against /metrics of the large simulated organisation.

The simulator (50 servers x 20 queues by default) runs in one child process; the exporter polls every
Exchange collector once (queues, connectors, accepted domains, components, database copies,
certificates, service health), then serves /metrics while ``--clients`` threads in another child
process GET it back to back for ``--seconds``. Every request opens a new connection, asks for gzip
like Prometheus (``--identity`` for plain text) and must return 200 with a complete body.

    python bench/bench_load.py [--servers 50] [--queues 20] [--clients 20] [--seconds 60] [--poll-interval 0]

``--poll-interval N`` keeps the scheduler polling every N seconds during the load (scrapes then
compete with polls for the CPU); by default nothing polls while the clients scrape.
"""

from __future__ import annotations

import argparse
import gzip
import multiprocessing as mp
import statistics
import sys
import threading
import time
import urllib.request
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.simorg import AUDIT_COLLECTORS, exchange_settings, start_org


def run_simulator(servers: int, queues: int, conn: Connection) -> None:
    sim, info = start_org(servers, queues)
    conn.send(info)
    conn.recv()
    sim.stop()


def run_clients(url: str, clients: int, seconds: float, use_gzip: bool, conn: Connection) -> None:
    """Scrape back to back from ``clients`` threads; send back (latencies, errors, bytes)."""
    latencies: list[float] = []
    errors: list[str] = []
    sizes: list[int] = []
    lock = threading.Lock()
    start = threading.Event()
    deadline = [0.0]
    headers = {"Accept-Encoding": "gzip"} if use_gzip else {}

    def client() -> None:
        start.wait()
        while time.monotonic() < deadline[0]:
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as resp:
                    body = resp.read()
                    status = resp.status
                    encoding = resp.headers.get("Content-Encoding", "")
                elapsed = time.perf_counter() - t0
                text = gzip.decompress(body) if encoding == "gzip" else body
                ok = status == 200 and text.endswith(b"\n") and b"mailflow_collector_up" in text
                with lock:
                    if ok:
                        latencies.append(elapsed)
                        sizes.append(len(body))
                    else:
                        errors.append(f"HTTP {status}, {len(text)} bytes")
            except Exception as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for th in threads:
        th.start()
    deadline[0] = time.monotonic() + seconds
    start.set()
    for th in threads:
        th.join()
    conn.send((latencies, errors, sizes))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--queues", type=int, default=20)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--identity", action="store_true", help="ask for plain text instead of gzip")
    parser.add_argument("--poll-interval", type=float, default=0.0, help="keep polling every N s during the load")
    args = parser.parse_args()

    from prometheus_client import generate_latest

    from exporter.service import Service
    from exporter.settings import Settings

    ctx = mp.get_context("spawn")
    sim_end, sim_child = ctx.Pipe()
    sim_proc = ctx.Process(target=run_simulator, args=(args.servers, args.queues, sim_child), daemon=True)
    sim_proc.start()
    info: dict[str, Any] = sim_end.recv()
    polling = args.poll_interval > 0
    interval = args.poll_interval if polling else 86400.0
    settings = Settings.model_validate(
        {
            **exchange_settings(info, "load"),
            "collectors": {
                "tracking": {"enabled": False},
                **{name: {"interval": interval} for name in AUDIT_COLLECTORS},
            },
            # without polling, the scheduler's first runs are spread over an hour: nearly all beyond the load
            "scheduler": {"first_run_spread": 1.0 if polling else 3600.0},  # the bound settings allow
            "web": {"listen_address": "127.0.0.1:0"},
        }
    )
    service = Service(settings)
    try:
        t0 = time.perf_counter()
        snaps = service.poll_all()
        poll_seconds = time.perf_counter() - t0
        failed = [s for s in snaps if not s.ok]
        if failed:
            raise SystemExit(
                f"{len(failed)} polls failed, e.g. {failed[0].collector}/{failed[0].target}: {failed[0].message}"
            )
        body = generate_latest(service.registry)
        samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
        floor = statistics.median(_timed(lambda: generate_latest(service.registry), 5))
        service.start()
        assert service.web is not None
        url = f"http://127.0.0.1:{service.web.port}{settings.web.telemetry_path}"
        load_end, load_child = ctx.Pipe()
        load_proc = ctx.Process(
            target=run_clients, args=(url, args.clients, args.seconds, not args.identity, load_child), daemon=True
        )
        load_proc.start()
        renders_before = service.app.metrics_renders
        latencies, errors, sizes = load_end.recv()
        renders = service.app.metrics_renders - renders_before
        load_proc.join(timeout=30)
    finally:
        service.stop()
        sim_end.send("stop")
        sim_proc.join(timeout=30)

    n = len(latencies)
    print(
        f"load: {args.servers} servers x {args.queues} queues, {len(snaps)} polls in {poll_seconds:.1f}s, "
        f"{samples} samples, {len(body) / 1e6:.2f} MB text ({statistics.median(sizes) / 1e3 if sizes else 0:.0f} kB "
        f"{'identity' if args.identity else 'gzip'}); generate_latest floor {floor * 1000:.0f} ms"
    )
    during = f" while polling every {args.poll_interval:g}s" if polling else ""
    print(f"{args.clients} clients for {args.seconds:g}s{during}")
    print(f"{'requests':>9} {'errors':>7} {'req/s':>7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    p50, p90, p99 = (percentile(latencies, p) * 1000 for p in (50, 90, 99))
    top = max(latencies, default=float("nan")) * 1000
    print(f"{n:>9} {len(errors):>7} {n / args.seconds:>7.1f} {p50:>8.0f} {p90:>8.0f} {p99:>8.0f} {top:>8.0f}")
    print(f"{renders} renders served {n} requests ({n / max(renders, 1):.1f} requests per render)")
    if errors:
        print("errors, e.g.: " + "; ".join(sorted(set(errors))[:3]))
    print(
        f"RESULT load_servers={args.servers} load_clients={args.clients} load_seconds={args.seconds:g} "
        f"load_requests={n} load_errors={len(errors)} load_p50_ms={p50:.0f} load_p90_ms={p90:.0f} "
        f"load_p99_ms={p99:.0f} load_max_ms={top:.0f} load_renders={renders}"
    )
    if errors:
        raise SystemExit(1)


def _timed(fn: Any, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


if __name__ == "__main__":
    main()
