"""Queues at scale: client CPU of one queue poll cycle over many servers with many queues each.

What it measures: the exporter's process CPU (``time.process_time``: every thread of the process)
for one whole queue cycle of ``--servers`` x ``--queues`` queues (100 x 200 = 20,000 by default):
the WSMan requests and PSRP handling in pypsrp, the CLIXML decoding, queue parsing and LastError
classification, the snapshot store and ``Service.poll_all``'s bookkeeping, plus one render of the
resulting metrics (``generate_latest`` of the service's registry). The simulator runs in its own
process, so its CPU (building 20,000 queue objects per cycle) is not counted. The first cycle opens
the sessions and is reported apart; the figure is the median of the following cycles.

Each server has a Submission queue, a shadow queue and delivery queues, ``--retry-share`` of them
(half by default: a bad day) in Retry with a LastError from a set of real response shapes. Caches are
defeated: every LastError carries the last retry time (``%LRT%``, in the ``LRT`` field and inside the
response text, as Microsoft 365's and Gmail's responses carry a time stamp or session id), the retry
interval is 1 s and the cycles are more than 1 s apart, so each cycle's LastError texts (raw and
response) are new and no memo can answer a row from an earlier cycle. Within a cycle, Exchange's own
texts (DNS, socket errors) are shared by the queues that have them, as in a real organisation, while
the remote servers' answers name the queue's next hop, so two of the seven shapes are distinct on
every queue (the classifier runs for each of those). The message counts follow short waves, so they
change between cycles too. The benchmark checks both, fails if a cycle repeats a LastError response
of the previous cycle, and prints how many rows changed and how many distinct responses there were.

    python bench/bench_queues.py [--servers 100] [--queues 200] [--cycles 4] [--retry-share 0.5] [--profile FILE]

``--profile FILE`` runs the cycles under cProfile, timing each thread's own CPU (the worker threads
from the first cycle on, the main thread from the second), and writes the merged stats to FILE. It
is about six times slower and inflates code made of many small calls the most: read it for where
the time goes, not for the benchmark's figures.
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing as mp
import pstats
import statistics
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.simorg import exchange_settings
from exporter.settings import COLLECTOR_NAMES

OTHER_COLLECTORS = tuple(name for name in COLLECTOR_NAMES if name != "queues")

# Real LastError shapes (tests/unit/test_lasterror_corpus.py has their sources), each with the last
# retry time in the LRT field and, as the remote's time stamp, inside the response: new every cycle.
# Exchange's own texts (DNS, socket) are the same on every queue that has them; remote servers' answers
# carry the queue's next hop (%HOP%), so those are distinct on every queue.
LAST_ERRORS = (
    "[{LRT=%LRT%};{LED=451 4.4.0 DNS query failed. The error was: SMTPSEND.DNS.NonExistentDomain; "
    "nonexistent domain at %LRT%};{FQDN=};{IP=}]",
    "[{LRT=%LRT%};{LED=451 4.4.397 Error communicating with target host. -> 421 4.2.1 Unable to connect -> "
    "SocketTimedout: Socket error code 10060 (%LRT%)};{FQDN=mx.%HOP%};{IP=203.0.113.25}]",
    "[{LRT=%LRT%};{LED=421 4.7.0 [TSS04] Messages from 198.51.100.7 temporarily deferred due to unexpected "
    "volume or user complaints - 4.16.55.1; see https://postmaster.%HOP%/errors/421 %LRT%};"
    "{FQDN=mta7.am0.%HOP%};{IP=192.0.2.44}]",
    "[{LRT=%LRT%};{LED=451 4.7.500 Server busy. Please try again later from [198.51.100.7]. (S77719) "
    "[BN8NAM12FT063.eop-nam12.prod.protection.outlook.com %LRT%]};{FQDN=%HOP%.mail.protection.outlook.com};"
    "{IP=52.101.8.3}]",
    "[{LRT=%LRT%};{LED=450 4.2.2 The email account that you tried to reach at %HOP% is over quota. %LRT% - "
    "gsmtp};{FQDN=aspmx.l.google.example};{IP=142.250.1.27}]",
    "[{LRT=%LRT%};{LED=451 5.7.3 STARTTLS is required to send mail [%LRT%]};{FQDN=mx.%HOP%};{IP=203.0.113.9}]",
    "[{LRT=%LRT%};{LED=421 4.4.2 Connection dropped due to SocketError (%LRT%)};{FQDN=mx.%HOP%};{IP=203.0.113.77}]",
)


def org_data(servers: int, queues: int, retry_share: float) -> dict[str, Any]:
    """The simulated organisation: per server a Submission queue, a shadow queue and delivery queues
    whose counts follow 20-60 s waves, ``retry_share`` of them (evenly spread) in Retry with a LastError
    that changes every second."""
    width = max(2, len(str(servers)))
    names = [f"EX{i:0{width}d}" for i in range(1, servers + 1)]
    out = []
    for index, name in enumerate(names):
        rows: list[dict[str, Any]] = [{"kind": "submission", "message_count": 3, "outgoing_rate": 2.5}]
        if queues > 1:
            rows.append({"kind": "shadow", "primary_server": names[(index + 1) % len(names)], "message_count": 2})
        for q in range(max(0, queues - 2)):
            hop = f"domain{q:03d}.example"
            row: dict[str, Any] = {
                "kind": "delivery",
                "next_hop_domain": hop,
                "outgoing_rate": 0.2,
                "pattern": {
                    "kind": "wave",
                    "min": 0,
                    "max": 40 + q % 60,
                    "period_seconds": 20 + 5 * (q % 9),
                    "phase_seconds": 3 * q + index,
                },
            }
            if int((q + 1) * retry_share) > int(q * retry_share):
                row["status"] = "Retry"
                row["retry_count"] = 3
                row["retry_interval_seconds"] = 1
                row["last_error"] = LAST_ERRORS[(q + index) % len(LAST_ERRORS)].replace("%HOP%", f"{name}.{hop}")
            rows.append(row)
        out.append({"name": name, "queues": rows})
    return {
        "organisation": {"name": "Bench", "domain": "bench.sim"},
        "users": {"svc-mailflow@bench.sim": "bench-password"},
        "session_limit": 18,
        "result_size_default": 5000,
        "servers": out,
    }


def run_simulator(servers: int, queues: int, retry_share: float, conn: Connection) -> None:
    from exporter.simulator import Simulator
    from exporter.simulator.scenario import Scenario

    scenario = Scenario.from_dict(org_data(servers, queues, retry_share))
    sim = Simulator(scenario, host="127.0.0.1", tls=False)
    sim.start()
    conn.send(
        {
            "endpoints": {s.name: sim.endpoint(s.name) for s in scenario.servers},
            "user": next(iter(scenario.users.items())),
        }
    )
    conn.recv()  # "stop"
    sim.stop()


class ThreadProfiles:
    """cProfile in every thread started while installed (cProfile alone sees only its own thread)."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()
        self._run = threading.Thread.run
        self.main = cProfile.Profile(time.thread_time)

    def install(self) -> None:
        original = self._run
        profiles, lock = self.profiles, self._lock

        def run(thread: threading.Thread) -> None:
            profile = cProfile.Profile(time.thread_time)  # CPU of this thread, not its waits
            with lock:
                profiles.append(profile)
            profile.enable()
            try:
                original(thread)
            finally:
                profile.disable()

        threading.Thread.run = run  # type: ignore[method-assign]

    def dump(self, path: str) -> None:
        threading.Thread.run = self._run  # type: ignore[method-assign]
        stats = pstats.Stats(self.main)
        for profile in self.profiles:
            try:
                stats.add(profile)
            except TypeError:  # a thread that never ran anything
                continue
        stats.dump_stats(path)
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumulative").print_stats(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--queues", type=int, default=200, help="queues per server")
    parser.add_argument("--cycles", type=int, default=4, help="measured cycles, after the first")
    parser.add_argument("--retry-share", type=float, default=0.5, help="share of delivery queues in Retry")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--profile", default="", help="write cProfile stats of the measured cycles here")
    args = parser.parse_args()

    from prometheus_client import generate_latest

    from exporter.service import Service
    from exporter.settings import Settings

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=run_simulator, args=(args.servers, args.queues, args.retry_share, child), daemon=True)
    proc.start()
    info: dict[str, Any] = parent.recv()
    settings = Settings.model_validate(
        {
            **exchange_settings(info, "queues"),
            "scheduler": {"max_workers": args.workers},
            "collectors": {name: {"enabled": name == "queues"} for name in (*OTHER_COLLECTORS, "queues")},
        }
    )
    profiles = ThreadProfiles() if args.profile else None
    if profiles is not None:
        profiles.install()
    service = Service(settings)
    cpus: list[float] = []
    walls: list[float] = []
    renders: list[float] = []
    rows: list[int] = []
    errors: list[int] = []  # rows with a LastError per cycle
    distinct: list[int] = []  # distinct LastError responses per cycle
    changed: list[float] = []
    previous: dict[tuple[str, str], tuple[int, str]] = {}
    try:
        for cycle in range(args.cycles + 1):
            if cycle:
                time.sleep(1.1)  # untimed: the LRT stamps (1 s resolution) of this cycle all differ from the last's
            if profiles is not None and cycle == 1:
                profiles.main.enable()
            cpu0, t0 = time.process_time(), time.perf_counter()
            snaps = service.poll_all()
            render_cpu0 = time.process_time()
            body = generate_latest(service.registry)
            cpu1, t1 = time.process_time(), time.perf_counter()
            failed = [s for s in snaps if not s.ok]
            if failed:
                raise SystemExit(f"{len(failed)} polls failed, e.g. {failed[0].target}: {failed[0].message}")
            cpus.append(cpu1 - cpu0)
            walls.append(t1 - t0)
            renders.append(cpu1 - render_cpu0)
            # Not timed: check that this cycle's rows are new (counts or LastError) and that no LastError
            # response repeats one of the previous cycle (what a memo could have served).
            current = {
                (s.target, q.identity): (q.message_count, q.last_error.response if q.last_error else "")
                for s in snaps
                for q in s.result.queues
            }
            rows.append(len(current))
            errors.append(sum(1 for _, text in current.values() if text))
            distinct.append(len({text for _, text in current.values() if text}))
            if previous:
                old = {text for _, text in previous.values() if text}
                repeated = sum(1 for _, text in current.values() if text and text in old)
                if repeated:
                    raise SystemExit(f"cycle {cycle}: {repeated} LastError responses repeat the previous cycle's")
                same = sum(1 for key, row in current.items() if previous.get(key) == row)
                changed.append(1 - same / max(1, len(current)))
            previous = current
            print(
                f"cycle {cycle}: {len(current)} queues, {errors[-1]} with a LastError ({distinct[-1]} distinct), "
                f"wall {walls[-1]:.2f}s, client CPU {cpus[-1]:.2f}s (render {renders[-1]:.2f}s, "
                f"{len(body) / 1e6:.2f} MB)",
                flush=True,
            )
    finally:
        if profiles is not None:
            profiles.main.disable()
        service.stop()
        parent.send("stop")
        proc.join(timeout=30)
    if profiles is not None:
        profiles.dump(args.profile)
    warm = cpus[1:] or cpus
    print(
        f"servers={args.servers} queues/server={args.queues} ({rows[-1]} queues per cycle, {errors[-1]} with a "
        f"LastError, {distinct[-1]} distinct), workers={args.workers}; rows new each cycle (count or LastError): "
        f"min {min(changed or [1.0]) * 100:.0f} %"
    )
    print(
        f"client CPU per cycle: median {statistics.median(warm):.2f}s, max {max(warm):.2f}s "
        f"(first cycle, opening sessions: {cpus[0]:.2f}s); render {statistics.median(renders[1:] or renders):.2f}s; "
        f"wall median {statistics.median(walls[1:] or walls):.2f}s"
    )
    print(
        f"RESULT queues_servers={args.servers} queues_per_server={args.queues} queues_rows={rows[-1]} "
        f"queues_cpu_s={statistics.median(warm):.2f} queues_cpu_max_s={max(warm):.2f} "
        f"queues_first_cpu_s={cpus[0]:.2f} queues_render_s={statistics.median(renders[1:] or renders):.2f} "
        f"queues_wall_s={statistics.median(walls[1:] or walls):.2f} "
        f"queues_changed_pct={min(changed or [1.0]) * 100:.0f} queues_errors={errors[-1]} "
        f"queues_distinct_errors={min(distinct)}"
    )


if __name__ == "__main__":
    main()
