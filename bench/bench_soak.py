"""Soak: many poll cycles with faults toggling at random; sessions, threads, fds and RSS must not grow.

The simulator runs in a child process (so the exporter's threads, file descriptors and memory are
measured on their own). Every cycle is one ``Service.poll_all()`` (queue collector, every server);
before each cycle a seeded random generator heals a faulted server or plants a fault on a healthy
one (at most ``--max-faulted`` at once), drawn from the Exchange fault kinds. Every ``--report``
cycles it records the simulator's open shells against the exporter's sessions in use, the
process' threads, open file descriptors and RSS (VmRSS). At the end every fault is healed, a few
clean cycles run, and the exporter's discarded sessions get ``--settle`` seconds to finish closing.

    python bench/bench_soak.py [--cycles 1000] [--servers 5] [--seed 7] [--call-timeout 0.3]

The HTTP 401/500 and WSMan faults are planted on the Get-Queue Command request: when an endpoint
rejects *every* request, the close of the session that was open is rejected too and that shell stays
on the server until IIS's idle timeout (one shell per episode; tests/integration/test_fault_matrix.py
shows it), which would be counted here as a leak that the exporter cannot avoid.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import random
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.simorg import AUDIT_COLLECTORS, exchange_settings, start_org

# kind -> (cmdlet, seconds): what one planted fault looks like
FAULTS: dict[str, tuple[str | None, float | None]] = {
    "refused": (None, None),
    "hang": (None, None),
    "latency": (None, 0.2),  # a call is >= 2 requests: past a 0.3 s call_timeout
    "cmdlet_latency": ("Get-Queue", 0.6),
    "http401": ("Get-Queue", None),
    "http500": ("Get-Queue", None),
    "wsman_fault": ("Get-Queue", None),
    "malformed_clixml": ("Get-Queue", None),
    "error_record": ("Get-Queue", None),
    "shell_expiry": (None, None),  # one-shot: nothing to heal
}


def run_simulator(servers: int, queues: int, conn: Connection) -> None:
    sim, info = start_org(servers, queues)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--servers", type=int, default=5)
    parser.add_argument("--queues", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--report", type=int, default=0, help="report every N cycles (default: cycles / 10)")
    parser.add_argument("--call-timeout", type=float, default=0.3)
    parser.add_argument("--toggle", type=float, default=0.25, help="chance per cycle to heal or plant a fault")
    parser.add_argument("--max-faulted", type=int, default=2)
    parser.add_argument("--settle", type=float, default=30.0, help="seconds allowed for background closes")
    args = parser.parse_args()
    every = args.report or max(1, args.cycles // 10)

    from exporter.service import Service
    from exporter.settings import Settings

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=run_simulator, args=(args.servers, args.queues, child), daemon=True)
    proc.start()
    info: dict[str, Any] = parent.recv()

    def sim(op: str, payload: Any = None) -> Any:
        parent.send((op, payload))
        return parent.recv()

    names = list(info["endpoints"])
    base = exchange_settings(info, "soak", call_timeout=args.call_timeout, connect_timeout=1)
    settings = Settings.model_validate(
        {
            **base,
            "exchange": {**base["exchange"], "auth_failure_backoff": "50ms"},
            "collectors": {name: {"enabled": name == "queues"} for name in ("tracking", *AUDIT_COLLECTORS)},
        }
    )
    service = Service(settings)
    account = info["user"][0].lower()
    endpoints = [f"{h}:{p}" for h, p in info["endpoints"].values()]

    def in_use() -> int:
        return sum(service.sessions.limiter.in_use(account, e) for e in endpoints)

    rng = random.Random(args.seed)
    faulted: dict[str, str] = {}
    planted: dict[str, int] = dict.fromkeys(FAULTS, 0)
    failed = polls = 0
    rows: list[tuple[Any, ...]] = []

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
            snaps = service.poll_all()
            polls += len(snaps)
            failed += sum(1 for s in snaps if not s.ok)
            if cycle % every == 0:
                record(cycle, time.perf_counter() - started)
        for server in list(faulted):
            sim("clear", server)
        faulted.clear()
        healed = time.perf_counter()
        clean_failures = 0
        for _ in range(3):
            clean_failures += sum(1 for s in service.poll_all() if not s.ok)
        deadline = time.monotonic() + args.settle
        while time.monotonic() < deadline and (in_use() != len(names) or sim("stats")["shells_open"] != len(names)):
            time.sleep(0.2)
        gc.collect()
        record("healed", time.perf_counter() - started)
    finally:
        service.stop()
        final = sim("stop")
        proc.join(timeout=30)

    print(
        f"soak: {args.cycles} poll cycles x {len(names)} servers ({polls} polls, {failed} failed while faulted), "
        f"seed {args.seed}, call_timeout {args.call_timeout:g}s, {time.perf_counter() - started:.0f}s"
    )
    print("faults planted: " + ", ".join(f"{k} {v}" for k, v in planted.items() if v))
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
    print(
        f"simulator totals: shells created {final['shells_created']}, closed {final['shells_closed']}, "
        f"expired {final['shells_expired']}, rejected {final['shells_rejected']}"
    )
    leaked = last[2] != len(names) or last[3] != len(names) or clean_failures
    print(
        f"RESULT soak_cycles={args.cycles} soak_rss_start_mib={first[6]:.1f} soak_rss_end_mib={last[6]:.1f} "
        f"soak_shells={first[2]}->{last[2]} soak_sessions={first[3]}->{last[3]} soak_threads={first[4]}->{last[4]} "
        f"soak_fds={first[5]}->{last[5]} soak_leak={'yes' if leaked else 'no'}"
    )
    if leaked:
        raise SystemExit("sessions did not settle (see the table)")


if __name__ == "__main__":
    main()
