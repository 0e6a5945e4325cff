"""Memory: the exporter's peak RSS for 100 servers at 1,000,000 message-tracking events an hour in all.

Reading of the goal: 1M events an hour across the organisation, i.e. 10,000 an hour per server for
100 servers (``--per-minute`` 25 messages a minute, about 7 events each, on every server). The
simulator runs in a child process on a fake clock shared with the exporter, which advances
``--tick`` seconds per cycle; each cycle is one ``Service.poll_all()`` of every Exchange collector
(queues with ``--queues`` queues per server, tracking, and the audit collectors; DNS off) over
real pypsrp, until ``--hours`` hours of log were read: beyond the tracking collector's finish horizon
(about 1.5 hours with the defaults), so its pairing memory is in its steady state at the end.
Measured: the process' peak RSS (VmHWM) against ``--limit`` MiB (the Kubernetes manifests' limit),
the RSS at the end, and the entries the tracking collector holds.

Before that, in a child process and with tracemalloc, the bytes one entry of the tracking state costs,
as the collector keeps it (the event objects freed): a pairing entry (a finished message: a
RECEIVE and a DELIVER ingested) and a dedupe key (an event). From them: the state per server at this
rate, and one server at its worst (every pairing table at ``max_tracked_messages``), with the rate at
which a server reaches that cap within the finish horizon.

    python bench/bench_memory.py [--servers 100] [--per-minute 25] [--hours 2] [--tick 600]
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import sys
import tempfile
import time
import tracemalloc
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.simorg import exchange_settings, start_org

START = 1_800_000_000.0
TABLES = 4  # pending, received, completed, handed_off (tracking_trail.ServerTrail)


def run_simulator(servers: int, queues: int, per_minute: float, now: Any, conn: Connection) -> None:
    sim, info = start_org(servers, queues, tracking_per_minute=per_minute, clock=lambda: now.value)
    conn.send(info)
    conn.recv()
    sim.stop()


def status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def per_entry_bytes(n: int = 100_000) -> tuple[float, float]:
    """(bytes per pairing entry, bytes per dedupe key) as the tracking collector keeps them: ``n``
    finished messages (RECEIVE, DELIVER) ingested, the events freed; then the dedupe keys dropped."""
    from exporter.exchange.tracking import TrackingCollector, TrackingEvent, TrackingOptions, WatermarkStore

    base = datetime(2027, 1, 1, tzinfo=UTC)
    opts = TrackingOptions(
        interval=60, overlap=1e6, max_window=1e7, initial_lookback=300, stuck_after=900, forget_after=1e8,
        max_tracked_messages=10**7, buckets=(1.0,), result_size=1000, select=True, max_clock_step=900,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        collector = TrackingCollector(None, opts, WatermarkStore(Path(tmp) / "state.json"))  # type: ignore[arg-type]
        collector.ingest("EX01", [], base, base)
        gc.collect()
        tracemalloc.start()
        batch = []
        for i in range(n):  # fresh strings and datetimes, as decoded from the wire
            mid, iid = f"<{uuid.uuid4().hex}@mail.fabrikam.example>", str(10**12 + 2 * i)
            at = base + timedelta(seconds=i)
            for k, (event_id, source) in enumerate((("receive", "SMTP"), ("deliver", "STOREDRIVER"))):
                batch.append(TrackingEvent(at + timedelta(seconds=k), event_id.upper(), source, iid, mid, (), None))
        collector.ingest("EX01", batch, base, base + timedelta(seconds=n + 2))
        del batch
        gc.collect()
        both, _ = tracemalloc.get_traced_memory()
        keys = len(collector._states["EX01"].seen)  # 2n
        collector._states["EX01"].seen = {}
        gc.collect()
        trails, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return trails / n, (both - trails) / keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--queues", type=int, default=20)
    parser.add_argument("--per-minute", type=float, default=25.0, help="tracking messages a minute per server")
    parser.add_argument("--hours", type=float, default=2.0, help="hours of tracking log to read")
    parser.add_argument("--tick", type=float, default=600.0, help="fake-clock seconds per cycle (log a poll reads)")
    parser.add_argument("--limit", type=float, default=512.0, help="MiB")
    args = parser.parse_args()

    from exporter.exchange.tracking import TrackingCollector, finish_horizon
    from exporter.service import Service
    from exporter.settings import Settings

    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as pool:  # its peak must not count in this process' RSS
        entry_bytes, key_bytes = pool.submit(per_entry_bytes).result()
    parent, child = ctx.Pipe()
    now = ctx.Value("d", START, lock=False)
    proc = ctx.Process(target=run_simulator, args=(args.servers, args.queues, args.per_minute, now, child), daemon=True)
    proc.start()
    info: dict[str, Any] = parent.recv()
    base = exchange_settings(info, "memory", call_timeout=120)
    settings = Settings.model_validate(base)  # every Exchange collector with its defaults; DNS off
    service = Service(settings, clock=lambda: now.value)
    tracking = next(c for c in service.collectors if isinstance(c, TrackingCollector))
    cycles = max(1, round(args.hours * 3600 / args.tick))
    started = time.perf_counter()
    rss: list[tuple[int, float]] = []
    failed = 0
    try:
        for cycle in range(1, cycles + 1):
            now.value += args.tick
            failed += sum(1 for s in service.poll_all() if not s.ok)
            rss.append((cycle, status_mib("VmRSS")))
            if cycle % max(1, cycles // 10) == 0:
                held = sum(tracking.memory_entries().values())
                print(f"cycle {cycle}/{cycles}: RSS {rss[-1][1]:.1f} MiB, tracking entries {held:,}", flush=True)
        results = service.store.fresh_results("tracking", 1e12)
        events = sum(sum(r.events.values()) for r in results.values())
        held_by_server = tracking.memory_entries()
        peak = status_mib("VmHWM")
    finally:
        service.stop()
        parent.send(None)
        proc.join(timeout=60)

    hours = cycles * args.tick / 3600
    per_hour = events / hours  # the first window's lookback (5 min) makes this slightly high
    per_server = sum(held_by_server.values()) / len(held_by_server)
    opts = tracking._opts
    horizon = finish_horizon(opts)
    worst = TABLES * opts.max_tracked_messages * entry_bytes / 2**20
    cap_rate = opts.max_tracked_messages / (horizon / 3600)
    server_kib = per_server * (entry_bytes + key_bytes) / 2 / 1024  # entries are about half keys, half pairing
    print(
        f"{args.servers} servers, {args.queues} queues each, tracking {args.per_minute:g} messages a minute each: "
        f"{events:,} events in {hours:.1f} h of log ({per_hour:,.0f} an hour in all), {cycles} cycles, "
        f"{failed} failed polls, {time.perf_counter() - started:.0f} s"
    )
    print(f"RSS: peak {peak:.1f} MiB, end {rss[-1][1]:.1f} MiB (limit {args.limit:g} MiB)")
    print(
        f"tracking state: {entry_bytes:.0f} B per pairing entry, {key_bytes:.0f} B per dedupe key (tracemalloc); "
        f"{per_server:,.0f} entries per server at the end, about {server_kib:,.0f} KiB"
    )
    print(
        f"one server at its worst: {TABLES} tables x max_tracked_messages {opts.max_tracked_messages:,} = "
        f"{worst:.0f} MiB, reached above {cap_rate:,.0f} messages an hour (finish horizon {horizon / 3600:.2f} h)"
    )
    print(
        f"RESULT memory_servers={args.servers} memory_events_per_hour={per_hour:.0f} memory_hours={hours:.1f} "
        f"memory_peak_rss_mib={peak:.1f} memory_end_rss_mib={rss[-1][1]:.1f} memory_limit_mib={args.limit:g} "
        f"memory_entry_bytes={entry_bytes:.0f} memory_key_bytes={key_bytes:.0f} memory_server_kib={server_kib:.0f} "
        f"memory_worst_server_mib={worst:.0f} memory_cap_rate={cap_rate:.0f} memory_failed_polls={failed}"
    )


if __name__ == "__main__":
    main()
