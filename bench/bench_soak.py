"""Soak: many poll cycles of every collector with faults toggling at random; sessions, threads, fds and
RSS must not grow.

The simulator runs in a child process (so the exporter's threads, file descriptors and memory are
measured on their own), with message-tracking traffic on every server (``--tracking-per-minute``
messages a minute, about 7 events each: 25 is about 10,000 events an hour, a server's share of
1,000,000 an hour across 100 servers). A fake clock shared by both processes advances ``--tick``
seconds per cycle (15: a tracking poll reads about 45 events per server, well within the 2 s
``call_timeout`` even on a busy machine; a poll that times out leaves a larger window for the next),
so 1,000 cycles read about 4 hours of tracking log: beyond the tracking collector's finish horizon
(about 1.5 hours), so its pairing memory is in its steady state for the second half. Every cycle
is one ``Service.poll_all()``: every Exchange collector on every server, and
the DNS collectors (domains, outbound IPs, SMTP probe) against NSD and a DemoSMTP endpoint on
loopback (``simorg.dns_world``). Before each cycle a seeded random generator heals a faulted server or
plants a fault on a healthy one (at most ``--max-faulted`` at once), drawn from the Exchange fault
kinds. Every cycle records the process' RSS (VmRSS); every ``--report`` cycles also the simulator's
open shells against the exporter's sessions in use, threads and open file descriptors. At the end
every fault is healed, a few clean cycles run, and the exporter's discarded sessions get ``--settle``
seconds to finish closing.

RSS is flat when the least-squares slope of RSS over the second half of the cycles is below
``--flat-slope`` MiB per 1,000 cycles (5 by default: a cycle is about 66 polls with 5 servers and
20 domains, so a leak of 1 KiB per poll would show as about 65).

    python bench/bench_soak.py [--cycles 1000] [--servers 5] [--seed 7] [--call-timeout 2]

The HTTP 401/500 and WSMan faults are planted on the Get-Queue Command request. The simulator's idle
timeout is off here, so a shell the exporter gives up on (a close that failed, an open abandoned while
a ``hang`` holds its Create) stays until the exporter deletes it (exchange/orphans.py): the simulator's
shells must come back to one per server, and ``shells_rejected`` counts opens refused at the 18-per-user
limit meanwhile.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.simorg import exchange_settings, start_org

# kind -> (cmdlet, seconds): what one planted fault looks like
FAULTS: dict[str, tuple[str | None, float | None]] = {
    "refused": (None, None),
    "hang": (None, None),
    "latency": (None, 1.2),  # a call is >= 2 requests: past a 2 s call_timeout
    "cmdlet_latency": ("Get-Queue", 3.0),
    "http401": ("Get-Queue", None),
    "http500": ("Get-Queue", None),
    "wsman_fault": ("Get-Queue", None),
    "malformed_clixml": ("Get-Queue", None),
    "error_record": ("Get-Queue", None),
    "shell_expiry": (None, None),  # one-shot: nothing to heal
}


START = 1_800_000_000.0  # the shared fake clock starts here


def run_simulator(servers: int, queues: int, per_minute: float, now: Any, conn: Connection) -> None:
    sim, info = start_org(servers, queues, tracking_per_minute=per_minute, clock=lambda: now.value)
    conn.send(info)
    while True:
        op, args = conn.recv()
        if op == "set":
            sim.faults.set(**args)
            conn.send(None)
        elif op == "clear":
            sim.faults.clear(args)
            conn.send(None)
        elif op == "stats":
            conn.send(sim.stats())
        else:
            conn.send(sim.stats())
            break
    sim.stop()


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def slope_per_1000(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of (cycle, MiB) points, in MiB per 1,000 cycles."""
    if len(points) < 2:
        return 0.0
    return statistics.linear_regression([c for c, _ in points], [r for _, r in points]).slope * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--servers", type=int, default=5)
    parser.add_argument("--queues", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--report", type=int, default=0, help="report every N cycles (default: cycles / 10)")
    parser.add_argument("--call-timeout", type=float, default=2.0)
    parser.add_argument("--toggle", type=float, default=0.25, help="chance per cycle to heal or plant a fault")
    parser.add_argument("--max-faulted", type=int, default=2)
    parser.add_argument("--settle", type=float, default=30.0, help="seconds allowed for background closes")
    parser.add_argument("--tracking-per-minute", type=float, default=25.0, help="messages a minute per server")
    parser.add_argument("--tick", type=float, default=15.0, help="fake-clock seconds per cycle")
    parser.add_argument("--domains", type=int, default=20, help="DNS domains checked every cycle")
    parser.add_argument("--flat-slope", type=float, default=5.0, help="MiB per 1,000 cycles still called flat")
    args = parser.parse_args()
    every = args.report or max(1, args.cycles // 10)
    from bench.simorg import dns_world

    with tempfile.TemporaryDirectory() as tmp, dns_world(Path(tmp), args.domains) as dns:
        soak(args, every, dns)


def soak(args: argparse.Namespace, every: int, dns: dict[str, Any]) -> None:
    """The soak itself, with the DNS world running."""

    from exporter.service import Service
    from exporter.settings import Settings

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    now = ctx.Value("d", START, lock=False)  # written by this process only, between polls
    proc = ctx.Process(
        target=run_simulator, args=(args.servers, args.queues, args.tracking_per_minute, now, child), daemon=True
    )
    proc.start()
    info: dict[str, Any] = parent.recv()

    def sim(op: str, payload: Any = None) -> Any:
        parent.send((op, payload))
        return parent.recv()

    names = list(info["endpoints"])
    base = exchange_settings(info, "soak", call_timeout=args.call_timeout, connect_timeout=1)
    settings = Settings.model_validate(
        {**base, "exchange": {**base["exchange"], "auth_failure_backoff": "50ms"}, "dns": dns}
    )  # every collector on, with its defaults
    service = Service(settings, clock=lambda: now.value)
    account = info["user"][0].lower()
    endpoints = [f"{h}:{p}" for h, p in info["endpoints"].values()]

    def in_use() -> int:
        return sum(service.sessions.limiter.in_use(account, e) for e in endpoints)

    rng = random.Random(args.seed)
    faulted: dict[str, str] = {}
    planted: dict[str, int] = dict.fromkeys(FAULTS, 0)
    failed = polls = 0
    rows: list[tuple[Any, ...]] = []
    rss_points: list[tuple[int, float]] = []  # (cycle, MiB) after every cycle
    by_collector: dict[str, int] = {}

    def record(label: Any, elapsed: float) -> None:
        stats = sim("stats")
        rows.append(
            (label, elapsed, stats["shells_open"], in_use(), threading.active_count(), fds(), rss_mib(), len(faulted))
        )

    started = time.perf_counter()
    try:
        service.poll_all()  # warm: one session per server
        record(0, 0.0)
        for cycle in range(1, args.cycles + 1):
            if rng.random() < args.toggle:
                if faulted and (len(faulted) >= args.max_faulted or rng.random() < 0.5):
                    server = rng.choice(sorted(faulted))
                    sim("clear", server)
                    del faulted[server]
                else:
                    server = rng.choice([n for n in names if n not in faulted])
                    kind = rng.choice(sorted(FAULTS))
                    cmdlet, seconds = FAULTS[kind]
                    sim("set", {"server": server, "kind": kind, "cmdlet": cmdlet, "seconds": seconds})
                    planted[kind] += 1
                    if kind != "shell_expiry":
                        faulted[server] = kind
            now.value += args.tick
            snaps = service.poll_all()
            polls += len(snaps)
            failed += sum(1 for s in snaps if not s.ok)
            for snap in snaps:
                by_collector[snap.collector] = by_collector.get(snap.collector, 0) + 1
            rss_points.append((cycle, rss_mib()))
            if cycle % every == 0:
                record(cycle, time.perf_counter() - started)
        for server in list(faulted):
            sim("clear", server)
        faulted.clear()
        healed = time.perf_counter()
        clean_failures = 0
        clean_failed: set[str] = set()
        for _ in range(3):
            now.value += args.tick
            bad = [s for s in service.poll_all() if not s.ok]
            clean_failures += len(bad)
            clean_failed.update(f"{s.collector} {s.target}: {s.message}" for s in bad)
        deadline = time.monotonic() + args.settle
        while time.monotonic() < deadline and (in_use() != len(names) or sim("stats")["shells_open"] != len(names)):
            time.sleep(0.2)
        gc.collect()
        record("healed", time.perf_counter() - started)
        tracking = service.store.fresh_results("tracking", 1e12)
        events = sum(sum(r.events.values()) for r in tracking.values())
        held: dict[str, int] = next(
            (c.memory_entries() for c in service.collectors if hasattr(c, "memory_entries")), {}
        )
        abandoned = service.sessions.janitor.abandoned_total
        reclaimed = service.sessions.janitor.reclaimed_total
    finally:
        service.stop()
        final = sim("stop")
        proc.join(timeout=30)

    print(
        f"soak: {args.cycles} poll cycles x {len(names)} servers ({polls} polls, {failed} failed while faulted), "
        f"seed {args.seed}, call_timeout {args.call_timeout:g}s, {time.perf_counter() - started:.0f}s"
    )
    print("faults planted: " + ", ".join(f"{k} {v}" for k, v in planted.items() if v))
    print("polls by collector: " + ", ".join(f"{k} {v}" for k, v in sorted(by_collector.items())))
    hours = args.cycles * args.tick / 3600
    print(
        f"tracking: {events:,} events counted over {hours:.1f} h of log ({events / hours / len(names):,.0f} an hour "
        f"per server); pairing memory and dedupe keys at the end: {sum(held.values()):,} entries"
    )
    head = ("cycle", "seconds", "sim shells", "sessions", "threads", "fds", "RSS MiB", "faulted")
    print(" ".join(f"{h:>10}" for h in head))
    for label, elapsed, shells, sessions, threads, nfds, rss, nfaulted in rows:
        cells = (label, f"{elapsed:.1f}", shells, sessions, threads, nfds, f"{rss:.1f}", nfaulted)
        print(" ".join(f"{c!s:>10}" for c in cells))
    first, last = rows[0], rows[-1]
    print(
        f"start -> end: sim shells {first[2]} -> {last[2]}, sessions {first[3]} -> {last[3]}, "
        f"threads {first[4]} -> {last[4]}, fds {first[5]} -> {last[5]}, RSS {first[6]:.1f} -> {last[6]:.1f} MiB "
        f"({last[6] - first[6]:+.1f}); after healing: {clean_failures} failed polls, "
        f"healed in {time.perf_counter() - healed:.1f}s"
    )
    for line in sorted(clean_failed):
        print(f"failed after healing: {line}")
    print(
        f"simulator totals: shells created {final['shells_created']}, closed {final['shells_closed']}, "
        f"expired {final['shells_expired']}, rejected {final['shells_rejected']}; exporter: shells abandoned "
        f"{abandoned}, reclaimed {reclaimed}"
    )
    half = rss_points[len(rss_points) // 2 :]
    slope = slope_per_1000(half)
    flat = abs(slope) < args.flat_slope
    print(
        f"RSS over the second half (cycles {half[0][0]}-{half[-1][0]}): {min(r for _, r in half):.1f}-"
        f"{max(r for _, r in half):.1f} MiB, slope {slope:+.2f} MiB per 1,000 cycles "
        f"({'flat' if flat else 'GROWING'}: threshold {args.flat_slope:g})"
    )
    leaked = last[2] != len(names) or last[3] != len(names) or clean_failures
    print(
        f"RESULT soak_cycles={args.cycles} soak_servers={len(names)} soak_rss_start_mib={first[6]:.1f} "
        f"soak_rss_end_mib={last[6]:.1f} soak_rss_peak_mib={max(r for _, r in rss_points):.1f} "
        f"soak_rss_slope_mib_per_1000={slope:.2f} soak_flat_threshold={args.flat_slope:g} "
        f"soak_flat={'yes' if flat else 'no'} "
        f"soak_tracking_events_per_hour_per_server={events / hours / len(names):.0f} "
        f"soak_collectors={len(by_collector)} "
        f"soak_shells={first[2]}->{last[2]} soak_sessions={first[3]}->{last[3]} soak_threads={first[4]}->{last[4]} "
        f"soak_fds={first[5]}->{last[5]} soak_shells_rejected={final['shells_rejected']} "
        f"soak_shells_abandoned={abandoned} soak_shells_reclaimed={reclaimed} soak_leak={'yes' if leaked else 'no'}"
    )
    if leaked:
        raise SystemExit("sessions did not settle (see the table)")


if __name__ == "__main__":
    main()
