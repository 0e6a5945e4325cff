"""Tracking throughput: events per second of client CPU, simulator -> pypsrp -> aggregates, per transport.

What it measures: the exporter process's CPU time (client CPU) for one tracking poll that reads a
window of a busy server's message-tracking log (Get-MessageTrackingLog, paged), decodes every event
and aggregates it; events counted by the poll divided by that CPU time. The simulator runs in a child
process, so its CPU (generating, serialising and, with Kerberos over HTTP, sealing) is not counted.

Two measurements:

1. **Goal** (>= 10,000 events/s of client CPU): the configuration the exporter uses by default, the
   fast receive path (``exporter/exchange/wire.py``, always installed) with ``select_properties: true``
   (``Select-Object -Property`` with the ten fields the collector reads), on a ``--minutes`` window.
   The default 8 minutes (about 15,600 events) fit one page: a poll asks for at most
   ``max_response_bytes`` / 4 KiB events (16,384 with the default 64 MiB; 8,192 for full objects) and
   leaves the rest of a longer window to the next poll, so a longer window measures one page.
2. **Like for like** (``--compare-minutes`` window, smaller because pypsrp's own deserializer costs
   minutes of CPU on the big one): the fast path against pypsrp's stock deserializer on the *same
   output shape*, ``Select-Object`` against ``Select-Object`` and full objects against full objects.
   The headline ratio is fast / stock for each shape.

Fresh data every poll: the scenario has one tracking server per poll (their logs differ: every
message is a hash of the server's name and its number; no cross-server submission, so each log is
the server's own), and every poll builds a new exporter ``Service`` (new state directory, new
session), so no cursor, dedupe key or session state of an earlier repeat is reused. The session open
(and with Kerberos, the logon) is part of the measured CPU: one per poll of thousands of events.

``--transport`` (``bench/transports.py``): ``basic-http``, ``kerberos-http-sealed`` (every WSMan message
sealed with the Kerberos context), ``kerberos-https`` (TLS with channel binding; no sealing).

    python bench/bench_tracking.py [--per-minute 300] [--minutes 8] [--compare-minutes 2] [--repeat 3]
                                   [--fast-only] [--transport basic-http|kerberos-http-sealed|kerberos-https]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from bench.transports import DESCRIPTIONS, TRANSPORTS, Transport, TransportUnavailable, transport
from exporter.settings import COLLECTOR_NAMES

OTHER_COLLECTORS = tuple(name for name in COLLECTOR_NAMES if name != "tracking")
USER, PASSWORD = "svc@bench.sim", "bench-password"


@dataclass(frozen=True)
class Variant:
    fast: bool
    select: bool

    @property
    def key(self) -> str:
        return f"{'fast' if self.fast else 'stock'}_{'select' if self.select else 'full'}"

    @property
    def label(self) -> str:
        return f"{'fast path' if self.fast else 'stock pypsrp'}, {'Select-Object' if self.select else 'full objects'}"


def run_simulator(servers: int, per_minute: int, minutes: int, options: dict[str, Any], conn: Connection) -> None:
    from exporter.simulator import Scenario, Simulator

    tracking = {
        "messages_per_minute": per_minute,
        "failure_ratio": 0.05,
        "stuck_ratio": 0.02,
        "history_minutes": minutes + 5,
        "cross_server_submission": 0.0,  # each log is its server's own: every poll reads as much
    }
    scenario = Scenario.from_dict(
        {
            "organisation": {"name": "Bench", "domain": "bench.sim"},
            "users": {USER: PASSWORD},
            "session_limit": max(18, servers),
            "servers": [{"name": f"TR{i:03d}", "tracking": tracking} for i in range(1, servers + 1)],
        }
    )
    sim = Simulator(scenario, host="127.0.0.1", **options)
    sim.start()
    conn.send({"ports": {s.name: sim.endpoint(s.name)[1] for s in scenario.servers}, "ca_file": sim.ca_file})
    conn.recv()
    conn.send(sim.stats())
    sim.stop()


def one_poll(
    chosen: Transport, ca_file: str | None, server: tuple[str, int], minutes: int, variant: Variant
) -> tuple[int, float, float]:
    """(events, client CPU s, wall s) of one tracking poll of ``server`` by a new Service."""
    import exporter.exchange.session as session_module
    from exporter.service import Service
    from exporter.settings import Settings

    original = session_module.wire.install
    if not variant.fast:
        session_module.wire.install = lambda pool, guard=None: None
    try:
        name, port = server
        settings = Settings.model_validate(
            {
                "state_dir": tempfile.mkdtemp(prefix="mailflow-bench-tracking-"),
                "exchange": {
                    "defaults": {**chosen.exchange_defaults(ca_file), "call_timeout": 300},
                    "servers": [{"name": name, "host": chosen.host, "port": port}],
                },
                "collectors": {
                    **{other: {"enabled": False} for other in OTHER_COLLECTORS},
                    "tracking": {"initial_lookback": f"{minutes}m", "select_properties": variant.select},
                },
                "dns": {"enabled": False},
            }
        )
        service = Service(settings)
        try:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            (snap,) = service.poll_all()
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        finally:
            service.stop()
    finally:
        session_module.wire.install = original
    if not snap.ok:
        raise SystemExit(f"poll of {name} failed: {snap.message}")
    return snap.result.new_events, cpu, wall


def report(key: str, label: str, runs: list[tuple[int, float, float]], window: int) -> float:
    """Print one variant's line and RESULT; return its events/s of client CPU (median CPU)."""
    events = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    wall = statistics.median(r[2] for r in runs)
    rate = events / cpu
    rates = ", ".join(f"{r[0] / r[1]:,.0f}" for r in runs)
    print(
        f"{label:<40} {window:>2} min  events {events:>7,.0f}  CPU {cpu:6.2f}s  wall {wall:6.2f}s  "
        f"{rate:>8,.0f} events/s  (runs: {rates})"
    )
    print(f"RESULT {key}_events={events:.0f} {key}_cpu_s={cpu:.2f} {key}_events_per_s={rate:.0f}")
    return rate


def polls(args: argparse.Namespace) -> Iterator[tuple[str, Variant, int]]:
    """(what, variant, window minutes) of every measurement, one poll of a fresh server each repeat."""
    for _ in range(args.repeat):
        yield "default", Variant(fast=True, select=True), args.minutes
    if not args.fast_only:
        for variant in (Variant(True, True), Variant(False, True), Variant(True, False), Variant(False, False)):
            for _ in range(args.repeat):
                yield f"cmp_{variant.key}", variant, args.compare_minutes


def measure(args: argparse.Namespace, chosen: Transport) -> dict[str, list[tuple[int, float, float]]]:
    plan = list(polls(args))
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    sim_args = (len(plan), args.per_minute, max(args.minutes, args.compare_minutes), chosen.simulator_options(), child)
    proc = ctx.Process(target=run_simulator, args=sim_args)
    proc.start()  # inside the transport's block: the child inherits the Kerberos variables
    info: dict[str, Any] = parent.recv()
    servers = iter(info["ports"].items())
    results: dict[str, list[tuple[int, float, float]]] = {}
    try:
        for what, variant, window in plan:
            results.setdefault(what, []).append(one_poll(chosen, info["ca_file"], next(servers), window, variant))
    finally:
        parent.send("stop")
        stats: dict[str, Any] = parent.recv()
        proc.join(timeout=30)
    print(
        f"simulator: {stats['shells_created']} shells for {len(plan)} polls, "
        f"{stats.get('kerberos_logons', 0)} Kerberos logons, {stats.get('encrypted_messages', 0)} sealed messages"
    )
    print(
        f"RESULT tracking_logons={stats.get('kerberos_logons', 0)} tracking_sealed={stats.get('encrypted_messages', 0)}"
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-minute", type=int, default=300)
    parser.add_argument("--minutes", type=int, default=8, help="window of the goal measurement")
    parser.add_argument("--compare-minutes", type=int, default=2, help="window of the like-for-like comparison")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fast-only", action="store_true", help="skip the like-for-like comparison (minutes of CPU)")
    parser.add_argument("--transport", choices=TRANSPORTS, default="basic-http")
    args = parser.parse_args()

    print(
        f"tracking: events per second of client CPU for one poll (new session, fresh server log each poll), "
        f"transport {args.transport} ({DESCRIPTIONS[args.transport]}); {args.per_minute} messages/minute; "
        f"median of {args.repeat}"
    )
    print(f"RESULT tracking_transport={args.transport}")
    try:
        with transport(args.transport, USER, PASSWORD) as chosen:
            results = measure(args, chosen)
    except TransportUnavailable as exc:
        print(f"skipped: {exc}")
        print(f"RESULT tracking_skipped={exc.what}")
        sys.exit(0)
    print("goal: the exporter's default configuration (fast path, select_properties: true)")
    report("tracking_default", "fast path, Select-Object (default)", results["default"], args.minutes)
    if args.fast_only:
        return
    print("like for like: fast path against pypsrp's own deserializer on the same output shape")
    rates = {
        key: report(
            f"tracking_cmp_{key}",
            Variant(key.startswith("fast"), key.endswith("select")).label,
            results[f"cmp_{key}"],
            args.compare_minutes,
        )
        for key in ("fast_select", "stock_select", "fast_full", "stock_full")
    }
    select_ratio = rates["fast_select"] / rates["stock_select"]
    full_ratio = rates["fast_full"] / rates["stock_full"]
    print(f"fast / stock: {select_ratio:.1f}x with Select-Object, {full_ratio:.1f}x with full objects")
    print(f"RESULT tracking_ratio_select={select_ratio:.1f} tracking_ratio_full={full_ratio:.1f}")


if __name__ == "__main__":
    main()
