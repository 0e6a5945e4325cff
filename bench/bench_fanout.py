"""Fan-out: one full queue poll cycle over many simulated servers with added latency, per transport.

What it measures: the wall time of ``Service.poll_all()`` with only the queue collector on (every
server's Get-Queue, 16 poll workers), and the exporter process's CPU time over that cycle (client
CPU: pypsrp, the transport's authentication and sealing, decoding, aggregation). The first cycle
opens one session per server (a Kerberos logon each with a Kerberos transport); later cycles reuse
them, as the exporter does in production, and their median is the headline.

What is not cached: the simulator's queues move (``moving``: counts follow waves), so every cycle
decodes fresh output; the exporter keeps no output between cycles. The simulator runs in a child
process, so its CPU (serialising, and unsealing/sealing with Kerberos over HTTP) is not counted. Every
server gets either ``cmdlet_latency`` (each cmdlet call takes that long server-side) or ``latency``
(every HTTP request to that endpoint is delayed, like a network round trip).

``--transport`` (``bench/transports.py``): ``basic-http`` (Basic over plain HTTP), ``kerberos-http-sealed``
(Kerberos over HTTP, every message sealed with WinRM message encryption) or ``kerberos-https``
(Kerberos over HTTPS with channel binding). The Kerberos ones start an MIT KDC on loopback.

    python bench/bench_fanout.py [--servers 50] [--queues 20] [--latency 0.15] [--mode cmdlet|http]
                                 [--transport basic-http|kerberos-http-sealed|kerberos-https]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

from bench.transports import DESCRIPTIONS, TRANSPORTS, Transport, TransportUnavailable, transport
from exporter.settings import COLLECTOR_NAMES

OTHER_COLLECTORS = tuple(name for name in COLLECTOR_NAMES if name != "queues")
USER, PASSWORD = "svc-mailflow@bench.sim", "bench-password"  # build_scenario's account


def run_simulator(
    servers: int, queues: int, latency: float, mode: str, options: dict[str, Any], conn: Connection
) -> None:
    from exporter.simulator import Simulator
    from exporter.simulator.scenario import build_scenario

    scenario = build_scenario(servers, queues, moving=True, username=USER, password=PASSWORD)
    sim = Simulator(scenario, host="127.0.0.1", **options)
    sim.start()
    for server in scenario.servers:
        if mode == "cmdlet":
            sim.faults.set(server.name, "cmdlet_latency", cmdlet="Get-Queue", seconds=latency)
        else:
            sim.faults.set(server.name, "latency", seconds=latency)
    conn.send({"ports": {s.name: sim.endpoint(s.name)[1] for s in scenario.servers}, "ca_file": sim.ca_file})
    conn.recv()  # wait for "stop"
    conn.send(sim.stats())
    sim.stop()


def measure(args: argparse.Namespace, chosen: Transport) -> tuple[list[float], list[float], dict[str, Any]]:
    """Run the cycles; (wall seconds per cycle, client CPU seconds per cycle, simulator stats)."""
    from exporter.service import Service
    from exporter.settings import Settings

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    sim_args = (args.servers, args.queues, args.latency, args.mode, chosen.simulator_options(), child)
    proc = ctx.Process(target=run_simulator, args=sim_args)
    proc.start()  # inside the transport's block: the child inherits the Kerberos variables
    info: dict[str, Any] = parent.recv()
    settings = Settings.model_validate(
        {
            "exchange": {
                "defaults": chosen.exchange_defaults(info["ca_file"]),
                "servers": [{"name": n, "host": chosen.host, "port": p} for n, p in info["ports"].items()],
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
        stats: dict[str, Any] = parent.recv()
        proc.join(timeout=30)
    return walls, cpus, stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--queues", type=int, default=20)
    parser.add_argument("--latency", type=float, default=0.15)
    parser.add_argument("--mode", choices=["cmdlet", "http"], default="cmdlet")
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--transport", choices=TRANSPORTS, default="basic-http")
    args = parser.parse_args()
    if args.cycles < 2:
        parser.error("--cycles must be at least 2 (the first opens the sessions)")

    print(
        f"fan-out: wall time and client CPU of one queue poll cycle (Get-Queue on every server), "
        f"transport {args.transport} ({DESCRIPTIONS[args.transport]}); simulator in a child process, "
        f"queues moving (fresh output every cycle), sessions reused after the first cycle"
    )
    try:
        with transport(args.transport, USER, PASSWORD) as chosen:
            walls, cpus, stats = measure(args, chosen)
    except TransportUnavailable as exc:
        print(f"skipped: {exc}")
        print(f"RESULT fanout_transport={args.transport} fanout_skipped={exc.what}")
        sys.exit(0)
    print(
        f"servers={args.servers} queues/server={args.queues} latency={args.latency * 1000:.0f}ms "
        f"mode={args.mode} workers={args.workers} transport={args.transport}"
    )
    print(f"cycle 1 (opens {args.servers} sessions): wall {walls[0]:.2f}s, client CPU {cpus[0]:.2f}s")
    warm, warm_cpu = walls[1:], cpus[1:]
    print(
        f"cycles 2..{args.cycles} (sessions reused): wall median {statistics.median(warm):.2f}s "
        f"max {max(warm):.2f}s, client CPU median {statistics.median(warm_cpu):.2f}s"
    )
    print(
        f"simulator: {stats['shells_created']} shells created (one per server means reuse worked), "
        f"{stats.get('kerberos_logons', 0)} Kerberos logons, {stats.get('encrypted_messages', 0)} sealed messages"
    )
    print(
        f"RESULT fanout_transport={args.transport} fanout_servers={args.servers} fanout_first_s={walls[0]:.2f} "
        f"fanout_warm_s={statistics.median(warm):.2f} "
        f"fanout_warm_max_s={max(warm):.2f} fanout_cpu_s={statistics.median(warm_cpu):.2f} "
        f"fanout_first_cpu_s={cpus[0]:.2f} fanout_shells={stats['shells_created']} "
        f"fanout_logons={stats.get('kerberos_logons', 0)} fanout_sealed={stats.get('encrypted_messages', 0)}"
    )


if __name__ == "__main__":
    main()
