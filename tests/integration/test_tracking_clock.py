"""Message tracking read by each server's own clock: skewed servers, clock steps, and the skew metric.

The simulator stamps every tracking event with its server's clock at the moment it happened (a step
leaves earlier stamps as they were) and sends the HTTP ``Date`` header by that clock. The truth is
the organisation's log in real time (``sim.tracking``, unskewed): every event that happened in the
time the exporter covered must be counted exactly once, whatever the server's clock says.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from exporter.service import Service
from exporter.simulator import Scenario, Simulator
from tests.integration.conftest import counted_events, events_in_log, only_collectors, settings_for, small_org

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

START = 1_800_000_000.0
LOOKBACK = 600.0


# The first window is [now - 10 min, now) of each server's clock (a first answer tells the clock; the
# window is then asked again in it): the same stretch of real time on every server.
COVERED_SINCE = START - LOOKBACK


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def org(skews: dict[str, float], stuck_ratio: float = 0.0) -> dict[str, Any]:
    """One server per skew, each with its own traffic (mailbox submissions cross to the other servers)."""
    data = small_org(tuple(skews))
    for server in data["servers"]:
        server["clock_skew_seconds"] = skews[server["name"]]
        # No queue in Retry: outbound mail behind one is really held (the simulator keeps it there), and
        # these tests count only what a clock can make look stuck.
        server["queues"] = [{"kind": "submission", "message_count": 2}]
        server["tracking"] = {
            "messages_per_minute": 20,
            "failure_ratio": 0.05,
            "stuck_ratio": stuck_ratio,
            "latency_seconds": {"min": 0.5, "max": 20},
            "history_minutes": 60,
        }
    data["shell_idle_timeout_seconds"] = 1_000_000
    return data


def start(data: dict[str, Any], tmp_path: Path, clock: Clock) -> tuple[Simulator, Service]:
    scenario = Scenario.from_dict(data)
    sim = Simulator(scenario, host="127.0.0.1", tls=False, clock=clock)
    sim.start()
    tracking = {"interval": 60, "initial_lookback": "10m", "overlap": "2m", "stuck_after": "5m"}
    collectors = only_collectors(tracking=tracking)
    settings = settings_for(sim, scenario, overrides={"state_dir": str(tmp_path), "collectors": collectors})
    return sim, Service(settings, clock=clock)


def poll_minutes(service: Service, clock: Clock, minutes: int) -> None:
    for _ in range(minutes):
        clock.now += 60
        snaps = service.poll_all()
        assert all(s.ok for s in snaps), [(s.target, s.message) for s in snaps]


def gauge(service: Service, name: str, server: str) -> float | None:
    return service.registry.get_sample_value(name, {"server": server})


@pytest.mark.parametrize("skew", [-900, -420, -180, 180, 420, 900])
def test_a_skewed_server_is_counted_exactly_once_without_false_stuck_messages(tmp_path: Path, skew: float) -> None:
    """3 minutes behind used to lose most events (and report their messages stuck), 7 behind all of them."""
    clock = Clock(START)
    sim, service = start(org({"EX01": skew}), tmp_path, clock)
    try:
        assert all(s.ok for s in service.poll_all())
        poll_minutes(service, clock, 12)
        expected = events_in_log(sim, "EX01", COVERED_SINCE, clock.now)
        assert sum(expected.values()) > 300
        assert counted_events(service, "EX01") == expected
        assert gauge(service, "mailflow_tracking_stuck_messages", "EX01") == 0
        assert gauge(service, "mailflow_server_clock_skew_seconds", "EX01") == skew
    finally:
        service.stop()
        sim.stop()


def step(sim: Simulator, data: dict[str, Any], skews: dict[str, float]) -> dict[str, Any]:
    """Step the servers' clocks to ``skews`` now (a scenario swap with new clock_skew_seconds)."""
    data = copy.deepcopy(data)
    for server in data["servers"]:
        server["clock_skew_seconds"] = skews.get(server["name"], server["clock_skew_seconds"])
    sim.set_scenario(Scenario.from_dict(data))
    return data


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (420, 0),  # w32time steps a fast clock back 7 minutes: new events take stamps the log already has
        (900, 0),  # 15 minutes back (max_clock_step)
        (-420, 0),  # a slow clock stepped forward: a gap in the stamps
        (-900, 900),  # half an hour forward
    ],
)
def test_a_clock_step_mid_run_is_counted_exactly_once(tmp_path: Path, before: float, after: float) -> None:
    clock = Clock(START)
    data = org({"EX01": before})
    sim, service = start(data, tmp_path, clock)
    try:
        service.poll_all()
        # Longer than a step back re-reads (15 minutes and the overlap): it must not reach back before
        # the first window, whose events were never counted (they would be now, rightly, but not here).
        poll_minutes(service, clock, 18)
        clock.now += 30
        step(sim, data, {"EX01": after})  # between two polls: the exporter still holds the old reading
        clock.now += 30
        assert all(s.ok for s in service.poll_all())
        poll_minutes(service, clock, 8)
        expected = events_in_log(sim, "EX01", COVERED_SINCE, clock.now)
        assert counted_events(service, "EX01") == expected
        assert gauge(service, "mailflow_tracking_stuck_messages", "EX01") == 0
        assert gauge(service, "mailflow_server_clock_skew_seconds", "EX01") == after
    finally:
        service.stop()
        sim.stop()


def test_servers_with_different_clocks_follow_messages_across_them(tmp_path: Path) -> None:
    """EX01 submits most mailbox mail to EX02's Transport service and the reverse; EX01 runs 7 minutes
    behind and EX02 4 ahead. Each server's log is counted exactly once, and stuck is judged in one time:
    exactly the messages received and never finished (stuck_ratio), none because the clocks differ."""
    clock = Clock(START)
    skews = {"EX01": -420.0, "EX02": 240.0}
    sim, service = start(org(skews, stuck_ratio=0.05), tmp_path, clock)
    try:
        service.poll_all()
        poll_minutes(service, clock, 12)
        for server in skews:
            assert counted_events(service, server) == events_in_log(sim, server, COVERED_SINCE, clock.now), server
        # Truly stuck: a RECEIVE-only message (its only event), received more than 5 minutes ago.
        stuck = {name: 0 for name in skews}
        for server in skews:
            for message in sim.tracking.messages(server, COVERED_SINCE, clock.now - 300):
                if message.kind == "stuck" and message.server == server:
                    stuck[server] += 1
        assert sum(stuck.values()) > 2
        for server in skews:
            assert gauge(service, "mailflow_tracking_stuck_messages", server) == stuck[server], server
            assert gauge(service, "mailflow_tracking_unfollowed_messages", server) == 0, server
    finally:
        service.stop()
        sim.stop()


def test_the_date_header_follows_the_server_clock(tmp_path: Path) -> None:
    """The skew is measured from any answer, so it is known after the first poll of any collector."""
    clock = Clock(START)
    data = org({"EX01": 0.0, "EX02": -437.0})
    scenario = Scenario.from_dict(data)
    with Simulator(scenario, host="127.0.0.1", tls=False, clock=clock) as sim:
        collectors = only_collectors(components={"interval": 60})
        settings = settings_for(sim, scenario, overrides={"state_dir": str(tmp_path), "collectors": collectors})
        service = Service(settings, clock=clock)
        try:
            assert all(s.ok for s in service.poll_all())
            assert gauge(service, "mailflow_server_clock_skew_seconds", "EX02") == -437
            assert gauge(service, "mailflow_server_clock_skew_seconds", "EX01") == 0
            clock.now += 3600  # no answer for an hour: the reading is no longer shown
            assert gauge(service, "mailflow_server_clock_skew_seconds", "EX02") is None
        finally:
            service.stop()
