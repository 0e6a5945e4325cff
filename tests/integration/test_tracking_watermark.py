"""Tracking across jumps of the exporter's clock and hostile watermark files, against the simulator.

The simulator keeps real time (its clock never jumps here) and stamps its log by its server's clock;
the exporter's clock is the simulator's plus an offset the test moves. The truth is the simulator's
log in real time (``sim.tracking``): every event that happened in the time the exporter covered must
be counted exactly once, whatever the exporter's clock or the state file said.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from exporter.service import Service
from exporter.simulator import Scenario, Simulator
from tests.integration.conftest import counted_events, events_in_log, only_collectors, settings_for, small_org

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

START = 1_800_000_000.0
LOOKBACK = 600.0
DAY = 86400.0
STATE = "tracking-watermarks.json"


class Clock:
    """The simulator's (real) time."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Skewed:
    """The exporter's clock: real time plus an offset the test sets (a clock stepped by hand, NTP...)."""

    def __init__(self, real: Clock) -> None:
        self.real = real
        self.offset = 0.0

    def __call__(self) -> float:
        return self.real.now + self.offset


def org(servers: tuple[str, ...] = ("EX01",)) -> dict[str, Any]:
    data = small_org(servers)
    for server in data["servers"]:
        server["tracking"] = {
            "messages_per_minute": 20,
            "failure_ratio": 0.05,
            "stuck_ratio": 0.0,
            "latency_seconds": {"min": 0.5, "max": 20},
            "history_minutes": 60,
        }
    data["shell_idle_timeout_seconds"] = 1_000_000
    return data


def start(
    data: dict[str, Any], state_dir: Path, real: Clock, exporter: Skewed, overrides: dict[str, Any] | None = None
) -> tuple[Simulator, Service]:
    scenario = Scenario.from_dict(data)
    sim = Simulator(scenario, host="127.0.0.1", tls=False, clock=real)
    sim.start()
    return sim, service(sim, scenario, state_dir, exporter, overrides)


def service(
    sim: Simulator, scenario: Scenario, state_dir: Path, exporter: Skewed, overrides: dict[str, Any] | None = None
) -> Service:
    tracking = {"interval": 60, "initial_lookback": "10m", "overlap": "2m", "stuck_after": "5m"}
    settings = settings_for(
        sim,
        scenario,
        overrides={"state_dir": str(state_dir), "collectors": only_collectors(tracking=tracking), **(overrides or {})},
    )
    return Service(settings, clock=exporter)


def poll(service: Service, real: Clock, seconds: float = 60) -> None:
    real.now += seconds
    snaps = service.poll_all()
    assert all(s.ok for s in snaps), [(s.target, s.message) for s in snaps]


def up(service: Service, server: str) -> float | None:
    return service.registry.get_sample_value("mailflow_collector_up", {"collector": "tracking", "target": server})


def repairs(service: Service, server: str, reason: str) -> float | None:
    return service.registry.get_sample_value(
        "mailflow_tracking_watermark_repairs_total", {"server": server, "reason": reason}
    )


@pytest.mark.parametrize("jump", [DAY, -DAY])
def test_an_exporter_clock_jump_of_a_day_for_a_few_seconds_is_counted_exactly_once(tmp_path: Path, jump: float) -> None:
    """The issue's probe: the exporter's clock set a day ahead for 9 s stopped tracking for good (its
    reading of the server's clock was left a day off, and a window that ends before it starts asks
    nothing, so nothing corrected it)."""
    real = Clock(START)
    exporter = Skewed(real)
    sim, svc = start(org(), tmp_path, real, exporter)
    try:
        assert all(s.ok for s in svc.poll_all())
        # Longer than a clock step back re-reads (15 minutes and the overlap; a jump of our clock looks
        # like one of the server's): no re-read may reach before the first window, whose earlier events
        # were never counted (they would be now, rightly, but the truth below starts there).
        for _ in range(18):
            poll(svc, real)
        exporter.offset = jump
        poll(svc, real, 5)  # one poll while the clock is a day off
        real.now += 4
        exporter.offset = 0.0
        for _ in range(8):
            poll(svc, real)
        expected = events_in_log(sim, "EX01", START - LOOKBACK, real.now)
        assert sum(expected.values()) > 200
        assert counted_events(svc, "EX01") == expected
        assert up(svc, "EX01") == 1
    finally:
        svc.stop()
        sim.stop()


def test_an_exporter_clock_jump_through_the_seeds_session_is_repaired_and_counted_once(tmp_path: Path) -> None:
    """A server polled through the seed's session (discovery connect: via_seed) is read by the exporter's
    clock, so a window asked a day ahead left its watermark a day in the future: counted nothing for a
    day. The seed's clock shows it (it answers for the target), and the watermark is repaired."""
    real = Clock(START)
    exporter = Skewed(real)
    data = org(("EX01", "EX02"))
    scenario = Scenario.from_dict(data)
    sim = Simulator(scenario, host="127.0.0.1", tls=False, clock=real)
    sim.start()
    overrides = {"exchange": {"discovery": {"enabled": True, "connect": "via_seed"}}}
    settings = settings_for(
        sim,
        scenario,
        overrides={
            "state_dir": str(tmp_path),
            "collectors": only_collectors(
                tracking={"interval": 60, "initial_lookback": "10m", "overlap": "2m", "stuck_after": "5m"}
            ),
            **overrides,
        },
    )
    only_seed = settings.model_copy(
        update={"exchange": settings.exchange.model_copy(update={"servers": settings.exchange.servers[:1]})}
    )
    svc = Service(only_seed, clock=exporter)
    try:
        snaps = svc.poll_all()  # discovery finds EX02, reached through EX01's session
        assert all(s.ok for s in snaps), [(s.target, s.message) for s in snaps]
        assert {s.target for s in snaps if s.collector == "tracking"} == {"EX01", "EX02"}
        for _ in range(18):
            poll(svc, real)
        exporter.offset = DAY
        poll(svc, real, 5)
        real.now += 4
        exporter.offset = 0.0
        for _ in range(8):
            poll(svc, real)
        ex02 = counted_events(svc, "EX02")
        assert sum(ex02.values()) > 200
        # Every event of EX02's log after its first window started is counted, none twice.
        assert ex02 == events_in_log(sim, "EX02", START - LOOKBACK, real.now)
        assert counted_events(svc, "EX01") == events_in_log(sim, "EX01", START - LOOKBACK, real.now)
        assert repairs(svc, "EX02", "future") == 1
        assert repairs(svc, "EX01", "future") == 0  # its own clock kept its watermark honest
        for server in ("EX01", "EX02"):
            assert up(svc, server) == 1
    finally:
        svc.stop()
        sim.stop()


def write_state(path: Path, watermarks: dict[str, Any]) -> None:
    path.write_text(json.dumps({"version": 2, "watermarks": watermarks}), encoding="utf-8")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def test_a_watermark_file_a_day_ahead_is_repaired_and_counting_resumes_exactly_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A state file written while the exporter's clock was a day ahead (or copied from another host)
    counted nothing for a day, across restarts, with collector_up 1."""
    real = Clock(START)
    exporter = Skewed(real)
    write_state(tmp_path / STATE, {"EX01": {"at": iso(START + DAY), "counted_at_mark": []}})
    caplog.set_level(logging.WARNING, logger="exporter.exchange")
    sim, svc = start(org(), tmp_path, real, exporter)
    try:
        assert all(s.ok for s in svc.poll_all())
        for _ in range(6):
            poll(svc, real)
        # A first start: the initial lookback by the server's clock, then every event once.
        assert counted_events(svc, "EX01") == events_in_log(sim, "EX01", START - LOOKBACK, real.now)
        assert up(svc, "EX01") == 1
        assert repairs(svc, "EX01", "future") == 1  # once, not at every poll
        assert any("watermark" in r.getMessage() and "future" in r.getMessage() for r in caplog.records)
        saved = json.loads((tmp_path / STATE).read_text(encoding="utf-8"))["watermarks"]["EX01"]["at"]
        assert datetime.fromisoformat(saved).timestamp() <= real.now
        # (d) A restart goes on from the repaired watermark: no recount, nothing lost, no new repair.
        svc.stop()
        handover = datetime.fromisoformat(saved).timestamp()
        svc = service(sim, Scenario.from_dict(org()), tmp_path, exporter)
        for _ in range(5):
            poll(svc, real)
        assert repairs(svc, "EX01", "future") == 0
        assert counted_events(svc, "EX01") == events_in_log(sim, "EX01", handover, real.now)
    finally:
        svc.stop()
        sim.stop()


@pytest.mark.parametrize(
    "entry",
    [
        {"at": iso(START - 120), "counted_at_mark": [1]},  # the issue's: every poll failed
        {"at": iso(START - 120), "counted_at_mark": "ab"},
        {"at": iso(START - 120), "counted_at_mark": [["a", "b", "c"]]},
        {"at": "yesterday", "counted_at_mark": []},
        {"at": iso(START - 120), "skew": "7"},
        {"at": iso(START - 120), "counted_at_mark": [], "extra": 1},
    ],
)
def test_a_malformed_watermark_entry_is_replaced_and_counting_starts_fresh(
    tmp_path: Path, entry: dict[str, Any]
) -> None:
    real = Clock(START)
    exporter = Skewed(real)
    write_state(tmp_path / STATE, {"EX01": entry})
    sim, svc = start(org(), tmp_path, real, exporter)
    try:
        for _ in range(4):
            poll(svc, real)
        assert up(svc, "EX01") == 1
        assert repairs(svc, "EX01", "malformed") == 1
        assert counted_events(svc, "EX01") == events_in_log(sim, "EX01", START + 60 - LOOKBACK, real.now)
        aside = sorted(p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name)
        assert len(aside) == 1 and json.loads((tmp_path / aside[0]).read_text())["watermarks"]["EX01"] == entry
        json.loads((tmp_path / STATE).read_text(encoding="utf-8"))  # replaced by a sound file
    finally:
        svc.stop()
        sim.stop()
