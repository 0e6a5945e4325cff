"""Tracking throughput: events per second of client CPU, simulator -> pypsrp -> aggregates.

The simulator runs in a child process with a busy tracking stream; the exporter reads a window of
it in one poll. Four variants show what the lean path buys: pypsrp's stock deserializer or the
fast decoder (``exporter/exchange/wire.py``), each with and without ``Select-Object -Property``.

    python bench/bench_tracking.py [--per-minute 300] [--minutes 10] [--repeat 3] [--fast-only]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from typing import Any

from exporter.settings import COLLECTOR_NAMES

OTHER_COLLECTORS = tuple(name for name in COLLECTOR_NAMES if name != "tracking")


def run_simulator(per_minute: int, minutes: int, conn: Connection) -> None:
    from exporter.simulator import Scenario, Simulator

    scenario = Scenario.from_dict(
        {
            "organisation": {"name": "Bench", "domain": "bench.sim"},
            "users": {"svc@bench.sim": "bench-password"},
            "servers": [
                {
                    "name": "EX01",
                    "tracking": {
                        "messages_per_minute": per_minute,
                        "failure_ratio": 0.05,
                        "stuck_ratio": 0.02,
                        "history_minutes": minutes + 5,
                    },
                }
            ],
        }
    )
    sim = Simulator(scenario, host="127.0.0.1", tls=False)
    sim.start()
    conn.send(sim.endpoint("EX01"))
    conn.recv()
    sim.stop()


def one_poll(endpoint: tuple[str, int], minutes: int, select: bool, fast: bool) -> tuple[int, float, float]:
    import exporter.exchange.session as session_module
    from exporter.service import Service
    from exporter.settings import Settings

    original = session_module.wire.install
    if not fast:
        session_module.wire.install = lambda pool, guard=None: None  # type: ignore[assignment]
    try:
        settings = Settings.model_validate(
            {
                "state_dir": tempfile.mkdtemp(),
                "exchange": {
                    "defaults": {
                        "auth": "basic",
                        "username": "svc@bench.sim",
                        "password": "bench-password",
                        "allow_insecure_basic": True,
                        "call_timeout": 300,
                    },
                    "servers": [{"name": "EX01", "host": endpoint[0], "port": endpoint[1]}],
                },
                "collectors": {
                    **{name: {"enabled": False} for name in OTHER_COLLECTORS},
                    "tracking": {"initial_lookback": f"{minutes}m", "select_properties": select},
                },
                "dns": {"enabled": False},
            }
        )
        service = Service(settings)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        (snap,) = service.poll_all()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        service.stop()
    finally:
        session_module.wire.install = original  # type: ignore[assignment]
    if not snap.ok:
        raise SystemExit(f"poll failed: {snap.message}")
    return snap.result.new_events, cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-minute", type=int, default=300)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fast-only", action="store_true", help="skip the stock pypsrp variants (minutes of CPU)")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=run_simulator, args=(args.per_minute, args.minutes, child))
    proc.start()
    endpoint: Any = parent.recv()
    try:
        print(f"messages/minute={args.per_minute} window={args.minutes} min (client CPU, median of {args.repeat})")
        for fast in (True,) if args.fast_only else (False, True):
            for select in (False, True):
                runs = [one_poll(endpoint, args.minutes, select, fast) for _ in range(args.repeat)]
                events = runs[0][0]
                cpu = statistics.median(r[1] for r in runs)
                wall = statistics.median(r[2] for r in runs)
                name = f"{'fast decoder' if fast else 'stock pypsrp'}, {'Select-Object' if select else 'full objects'}"
                rate = events / cpu
                print(f"{name:<36} events={events:>6}  CPU {cpu:6.2f}s  wall {wall:6.2f}s  {rate:>8,.0f} events/s")
                key = f"tracking_{'fast' if fast else 'stock'}_{'select' if select else 'full'}"
                print(f"RESULT {key}_events={events} {key}_cpu_s={cpu:.2f} {key}_events_per_s={rate:.0f}")
    finally:
        parent.send("stop")
        proc.join(timeout=30)


if __name__ == "__main__":
    main()
