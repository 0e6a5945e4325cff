"""Fan-out: one full queue poll cycle over many simulated servers with added latency.

The simulator runs in a child process (so the exporter's client CPU is measured on its own); every
server gets either ``cmdlet_latency`` (each cmdlet call takes that long server-side) or
``latency`` (every HTTP request to that endpoint is delayed, like a network round trip).

    python bench/bench_fanout.py [--servers 50] [--queues 20] [--latency 0.15] [--mode cmdlet|http]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

from exporter.settings import COLLECTOR_NAMES

OTHER_COLLECTORS = tuple(name for name in COLLECTOR_NAMES if name != "queues")


def run_simulator(servers: int, queues: int, latency: float, mode: str, conn: Connection) -> None:
    from exporter.simulator import Simulator
    from exporter.simulator.scenario import build_scenario

    scenario = build_scenario(servers, queues, moving=False)
    sim = Simulator(scenario, host="127.0.0.1", tls=False)
    sim.start()
    for server in scenario.servers:
        if mode == "cmdlet":
            sim.faults.set(server.name, "cmdlet_latency", cmdlet="Get-Queue", seconds=latency)
        else:
            sim.faults.set(server.name, "latency", seconds=latency)
    conn.send(
        {
            "endpoints": {s.name: sim.endpoint(s.name) for s in scenario.servers},
            "user": next(iter(scenario.users.items())),
        }
    )
    conn.recv()  # wait for "stop"
    conn.send(sim.stats())
    sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--queues", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.15)
    parser.add_argument("--mode", choices=["cmdlet", "http"], default="cmdlet")
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()

    from exporter.service import Service
    from exporter.settings import Settings

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=run_simulator, args=(args.servers, args.queues, args.latency, args.mode, child))
    proc.start()
    info: dict[str, Any] = parent.recv()
    user, password = info["user"]
    settings = Settings.model_validate(
        {
            "exchange": {
                "defaults": {"auth": "basic", "username": user, "password": password, "allow_insecure_basic": True},
                "servers": [{"name": n, "host": h, "port": p} for n, (h, p) in info["endpoints"].items()],
            },
            "scheduler": {"max_workers": args.workers},
            # a queue poll cycle only: every other collector (and the DNS checks) off
            "collectors": {name: {"enabled": name == "queues"} for name in (*OTHER_COLLECTORS, "queues")},
            "dns": {"enabled": False},
        }
    )
    service = Service(settings)
    walls, cpus = [], []
    try:
        for _ in range(args.cycles):
            cpu0, t0 = time.process_time(), time.perf_counter()
            snaps = service.poll_all()
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - cpu0)
            failed = [s for s in snaps if not s.ok]
            if failed:
                raise SystemExit(f"{len(failed)} polls failed, e.g. {failed[0].target}: {failed[0].message}")
    finally:
        service.stop()
        parent.send("stop")
        stats = parent.recv()
        proc.join(timeout=30)
    print(
        f"servers={args.servers} queues/server={args.queues} latency={args.latency * 1000:.0f}ms "
        f"mode={args.mode} workers={args.workers}"
    )
    print(f"cycle 1 (opens {args.servers} sessions): wall {walls[0]:.2f}s, client CPU {cpus[0]:.2f}s")
    warm = walls[1:] or walls
    print(
        f"cycles 2..{args.cycles} (sessions reused): wall median {statistics.median(warm):.2f}s "
        f"max {max(warm):.2f}s, client CPU median {statistics.median(cpus[1:] or cpus):.2f}s"
    )
    print(f"simulator shells created: {stats['shells_created']} (one per server means reuse worked)")
    print(
        f"RESULT fanout_servers={args.servers} fanout_first_s={walls[0]:.2f} "
        f"fanout_warm_s={statistics.median(warm):.2f} "
        f"fanout_warm_max_s={max(warm):.2f} fanout_cpu_s={statistics.median(cpus[1:] or cpus):.2f} "
        f"fanout_shells={stats['shells_created']}"
    )


if __name__ == "__main__":
    main()
