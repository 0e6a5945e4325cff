"""The tracking collector's pairing memory, pruned by time, against the simulator: nothing is counted
twice or missed because a finished message was forgotten.

The finish horizon (``tracking.finish_horizon``) is short here (max_window 15 min, overlap 2 min,
max_clock_step 2 min: about 21 minutes), and every run lasts well beyond it, so the collector forgets
finished messages while the checks run. Ground truth is the simulator's own log, read with plain
pypsrp (``test_tracking_cross_server.truth``) or its message model, and judged with plain code.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from exporter.exchange.tracking import TrackingCollector, finish_horizon
from exporter.service import Service
from exporter.simulator import Scenario, Simulator
from tests.integration.conftest import counted_events, events_in_log, only_collectors, settings_for, small_org
from tests.integration.test_tracking_clock import Clock, gauge
from tests.integration.test_tracking_cross_server import TERMINAL, by_message
from tests.integration.test_tracking_cross_server import truth as raw_truth

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

START = 1_800_000_000.0
COVERED_SINCE = START - 600.0  # the first window: initial_lookback 10 min
TRACKING = {
    "interval": 60,
    "initial_lookback": "10m",
    "overlap": "2m",
    "max_window": "15m",
    "max_clock_step": "2m",
    "stuck_after": "5m",
    "forget_after": "2h",  # nothing stuck is forgotten within a run: every stuck message must show
}


def org(names: tuple[str, ...], skew: float = 0.0) -> dict[str, Any]:
    """Servers with their own traffic, most mailbox submissions crossing to the other server."""
    data = small_org(names)
    for server in data["servers"]:
        server["clock_skew_seconds"] = skew
        server["queues"] = [{"kind": "submission", "message_count": 2}]  # nothing held in a Retry queue
        server["tracking"] = {
            "messages_per_minute": 20,
            "failure_ratio": 0.05,
            "stuck_ratio": 0.05,
            "latency_seconds": {"min": 0.5, "max": 20},
            "history_minutes": 90,
        }
    data["shell_idle_timeout_seconds"] = 1_000_000
    return data


def start(data: dict[str, Any], tmp_path: Path, clock: Clock) -> tuple[Simulator, Service, TrackingCollector]:
    scenario = Scenario.from_dict(data)
    sim = Simulator(scenario, host="127.0.0.1", tls=False, clock=clock)
    sim.start()
    collectors = only_collectors(tracking=TRACKING)
    settings = settings_for(sim, scenario, overrides={"state_dir": str(tmp_path), "collectors": collectors})
    service = Service(settings, clock=clock)
    tracking = next(c for c in service.collectors if isinstance(c, TrackingCollector))
    return sim, service, tracking


def poll(service: Service, clock: Clock, minutes: int, ok: tuple[str, ...]) -> None:
    for _ in range(minutes):
        clock.now += 60
        snaps = service.poll_all()
        assert all(s.ok for s in snaps if s.target in ok), [(s.target, s.message) for s in snaps if not s.ok]


def stuck_truth(sim: Simulator, server: str, until: float) -> int:
    """Messages that really stopped on ``server`` (RECEIVE only) and were received more than 5 minutes ago."""
    return sum(
        1 for m in sim.tracking.messages(server, COVERED_SINCE, until - 300) if m.kind == "stuck" and m.server == server
    )


def latency_truth(sim: Simulator, servers: tuple[str, ...], since: float, until: float) -> int:
    """One observation per message and server whose first terminal event there is a DELIVER or SEND with
    a MessageLatency, or with a RECEIVE before it on that server (as test_tracking_cross_server), of the
    events stamped in [since, until) (the server's clock: what the collector's windows covered)."""
    events = [e for s in servers for e in raw_truth(sim, s, since, until)]
    observed = 0
    for trail in by_message(events).values():
        for server in servers:
            here = [e for e in trail if e["Server"] == server]
            end = next((e for e in here if e["EventId"] in TERMINAL), None)
            if end is None or end["EventId"] not in ("DELIVER", "SEND"):
                continue
            if end.get("MessageLatency") or any(e["EventId"] == "RECEIVE" and e["At"] <= end["At"] for e in here):
                observed += 1
    return observed


def latency_count(service: Service, servers: tuple[str, ...]) -> float:
    return sum(gauge(service, "mailflow_tracking_delivery_latency_seconds_count", s) or 0.0 for s in servers)


def test_a_server_read_late_finds_what_the_other_finished_before_it_was_forgotten(tmp_path: Path) -> None:
    """EX01 submits most mailbox mail to EX02's Transport service. EX01 cannot be polled for 10 minutes
    (within max_window, so nothing is skipped) while EX02 is read every minute and forgets what finished
    more than the horizon ago. When EX01 is read again, its RECEIVEs and SUBMITs of those 10 minutes
    must still find EX02's part: nothing stuck or unfollowed that is not, every event counted once,
    one latency observation per finished message. A horizon without max_window (overlap and clock steps
    only: 6 minutes here) fails this test."""
    servers = ("EX01", "EX02")
    clock = Clock(START)
    sim, service, tracking = start(org(servers), tmp_path, clock)
    try:
        assert finish_horizon(tracking._opts) < 25 * 60
        assert all(s.ok for s in service.poll_all())
        poll(service, clock, 25, servers)  # beyond the horizon: EX02 already forgets
        sim.faults.set("EX01", "http500")
        poll(service, clock, 10, ("EX02",))
        sim.faults.clear("EX01")
        poll(service, clock, 6, servers)
        for server in servers:
            assert counted_events(service, server) == events_in_log(sim, server, COVERED_SINCE, clock.now), server
            assert gauge(service, "mailflow_tracking_skipped_seconds_total", server) == 0
            assert gauge(service, "mailflow_tracking_stuck_messages", server) == stuck_truth(sim, server, clock.now)
            assert gauge(service, "mailflow_tracking_unfollowed_messages", server) == 0, server
        assert sum(stuck_truth(sim, s, clock.now) for s in servers) > 5
        assert latency_count(service, servers) == latency_truth(sim, servers, COVERED_SINCE, clock.now)
        # The memory was pruned: about a horizon of messages, not the 42 minutes read (20 a minute each).
        held = tracking.memory_entries()
        finished_in_run = sum(len(sim.tracking.messages(s, COVERED_SINCE, clock.now)) for s in servers)
        assert sum(held.values()) < 2 * finished_in_run * 0.75, held  # trails hold up to 2 entries a message
    finally:
        service.stop()
        sim.stop()


def test_a_clock_stepped_back_after_the_memory_was_pruned_is_counted_exactly_once(tmp_path: Path) -> None:
    """EX01 runs 2 minutes fast (max_clock_step) and is stepped back after 25 minutes, when its memory is
    already being pruned: new events take stamps the log already holds, RECEIVEs can sort after their
    DELIVER. Every event is counted once, the stuck messages are exactly those that stopped, and each
    finished message gives one latency observation."""
    servers = ("EX01",)
    clock = Clock(START)
    data = org(servers, skew=120.0)
    sim, service, _ = start(data, tmp_path, clock)
    try:
        assert all(s.ok for s in service.poll_all())
        poll(service, clock, 25, servers)
        stepped = copy.deepcopy(data)
        stepped["servers"][0]["clock_skew_seconds"] = 0.0
        clock.now += 30
        sim.set_scenario(Scenario.from_dict(stepped))
        clock.now += 30
        assert all(s.ok for s in service.poll_all())
        poll(service, clock, 12, servers)
        assert counted_events(service, "EX01") == events_in_log(sim, "EX01", COVERED_SINCE, clock.now)
        assert gauge(service, "mailflow_tracking_stuck_messages", "EX01") == stuck_truth(sim, "EX01", clock.now) > 2
        # The first window was asked in EX01's clock, 2 minutes ahead.
        assert latency_count(service, servers) == latency_truth(sim, servers, COVERED_SINCE + 120, clock.now)
    finally:
        service.stop()
        sim.stop()
