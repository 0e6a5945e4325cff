"""Cross-server submission: the tracking collector against a two-server simulated organisation.

The Mailbox Transport Submission service of EX01 hands most messages to the Transport service of
EX02 (and the reverse): EX01's log has NOTIFYMAPI, RECEIVE (STOREDRIVER), SUBMIT, EX02's the rest
under the same MessageId. Ground truth is read from both servers with plain pypsrp and grouped by
MessageId with plain code, independently of the collector's pairing.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pypsrp.powershell import PowerShell

from exporter.exchange.clixml import flatten
from exporter.service import Service
from exporter.settings import COLLECTOR_NAMES
from tests.integration.conftest import raw_pool, settings_for, small_org

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

START = 1_800_000_000.0
SERVERS = ("EX01", "EX02")
TERMINAL = {"DELIVER", "SEND", "TRANSFER", "FAIL", "DROP", "DELIVERFAIL", "POISONMESSAGE"}
INTRA_ORG = "Intra-Organization SMTP Send Connector"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def org() -> dict[str, Any]:
    """Two Mailbox servers of one site, each with its own traffic; cross_server_submission is the default."""
    data = small_org(SERVERS)
    for server in data["servers"]:
        server["tracking"] = {
            "messages_per_minute": 12,
            "failure_ratio": 0.05,
            "stuck_ratio": 0.08,
            "latency_seconds": {"min": 0.5, "max": 20},
            "history_minutes": 60,
        }
    return data


def start(tmp_path: Path, clock: Clock) -> tuple[Any, Service]:
    from exporter.simulator import Scenario, Simulator

    scenario = Scenario.from_dict(org())
    sim = Simulator(scenario, host="127.0.0.1", tls=False, clock=clock)
    sim.start()
    collectors: dict[str, Any] = {name: {"enabled": False} for name in COLLECTOR_NAMES if name != "tracking"}
    collectors["tracking"] = {"initial_lookback": "10m", "overlap": "2m", "stuck_after": "5m"}
    settings = settings_for(sim, scenario, overrides={"state_dir": str(tmp_path), "collectors": collectors})
    return sim, Service(settings, clock=clock)


def truth(sim: Any, server: str, begin: float, end: float) -> list[dict[str, Any]]:
    """Every event of ``server``'s log in [begin, end), straight from the simulator."""
    with raw_pool(sim) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-MessageTrackingLog").add_parameter("Server", server)
        ps.add_parameter("Start", datetime.fromtimestamp(begin, UTC).isoformat())
        ps.add_parameter("End", datetime.fromtimestamp(end, UTC).isoformat())
        ps.add_parameter("ResultSize", "Unlimited")
        out = []
        for obj in ps.invoke():
            event = flatten(obj)
            event["Server"] = server
            event["EventId"] = str(event["EventId"]).upper()
            event["At"] = datetime.fromisoformat(str(event["Timestamp"])).timestamp()
            out.append(event)
        return out


def by_message(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in sorted(events, key=lambda e: e["At"]):
        out[str(event["MessageId"])].append(event)
    return out


def gauge(service: Service, name: str, server: str) -> float:
    value = service.registry.get_sample_value(name, {"server": server})
    assert value is not None, (name, server)
    return value


def poll_minutes(service: Service, clock: Clock, minutes: int) -> None:
    for _ in range(minutes):
        clock.now += 60
        service.poll_all()


def handed_off(trail: list[dict[str, Any]], server: str) -> bool:
    """Submitted on ``server`` (RECEIVE from STOREDRIVER, SUBMIT) and not received over SMTP there."""
    here = [(e["EventId"], str(e["Source"])) for e in trail if e["Server"] == server]
    return ("SUBMIT", "STOREDRIVER") in here and ("RECEIVE", "SMTP") not in here


def test_messages_submitted_to_the_other_server_are_neither_stuck_nor_counted_twice(tmp_path: Path) -> None:
    clock = Clock(START)
    sim, service = start(tmp_path, clock)
    try:
        service.poll_all()
        poll_minutes(service, clock, 8)
        events = [e for s in SERVERS for e in truth(sim, s, START - 600, clock.now)]
        trails = by_message(events)
        cutoff = clock.now - 300
        crossed = [
            t
            for t in trails.values()
            if any(handed_off(t, s) for s in SERVERS) and {e["Server"] for e in t} == set(SERVERS)
        ]
        assert len(crossed) > 40  # the scenario really hands most submissions to the other server

        # Stuck: received, nothing after it on any server, long enough ago: the RECEIVE-only messages, and
        # outbound mail waiting in a queue in Retry (small_org's fabrikam.example and tailspin.example).
        stuck = {s: 0 for s in SERVERS}
        for trail in trails.values():
            receives = [e for e in trail if e["EventId"] == "RECEIVE"]
            ended = any(e["EventId"] in TERMINAL for e in trail) or any(
                e["EventId"] == "SUBMIT" and e["At"] >= receives[-1]["At"] for e in trail
            )
            if receives and receives[-1]["At"] <= cutoff and not ended:
                stuck[receives[-1]["Server"]] += 1
        assert sum(stuck.values()) > 2
        for server in SERVERS:
            assert gauge(service, "mailflow_tracking_stuck_messages", server) == stuck[server], server
            assert gauge(service, "mailflow_tracking_unfollowed_messages", server) == 0, server

        # Each message is delivered or sent out on one server only, and counted once in the sum.
        delivered: dict[str, set[str]] = defaultdict(set)
        sent_out: dict[str, set[str]] = defaultdict(set)
        for e in events:
            if e["EventId"] == "DELIVER" and e["Source"] == "STOREDRIVER":
                delivered[str(e["MessageId"])].add(e["Server"])
            elif e["EventId"] == "SEND" and e["ConnectorId"] != INTRA_ORG:
                sent_out[str(e["MessageId"])].add(e["Server"])
        assert all(len(where) == 1 for where in [*delivered.values(), *sent_out.values()])
        assert any(where == {"EX02"} for msg, where in delivered.items() if handed_off(trails[msg], "EX01"))
        flow = {
            (s.labels["server"], s.labels["direction"]): s.value
            for metric in service.registry.collect()
            if metric.name == "mailflow_tracking_messages"
            for s in metric.samples
            if s.name.endswith("_total")
        }
        assert sum(v for (_, d), v in flow.items() if d in ("inbound", "internal")) == len(delivered)
        assert sum(v for (_, d), v in flow.items() if d == "outbound") == len(sent_out)

        # One latency observation per finished message, organisation-wide.
        observed = []
        for msg, trail in trails.items():
            for server in SERVERS:
                here = [e for e in trail if e["Server"] == server]
                end = next((e for e in here if e["EventId"] in TERMINAL), None)
                if end is None or end["EventId"] not in ("DELIVER", "SEND"):
                    continue
                if end.get("MessageLatency") or any(e["EventId"] == "RECEIVE" and e["At"] <= end["At"] for e in here):
                    observed.append(msg)
        assert len(observed) == len(set(observed)) > 100
        counts = sum(gauge(service, "mailflow_tracking_delivery_latency_seconds_count", server) for server in SERVERS)
        assert counts == len(observed)
    finally:
        service.stop()
        sim.stop()


def ex01_expectations(
    trails: dict[str, list[dict[str, Any]]], cutoff: float, seen_on_ex02: set[str]
) -> tuple[int, int]:
    """(stuck, unknown) on EX01: received there long enough ago and not finished there; unknown when
    EX01 handed it to EX02's Transport service and the collector has not read EX02's part of it."""
    stuck = unknown = 0
    for msg, trail in trails.items():
        received = next((e for e in trail if e["EventId"] == "RECEIVE"), None)
        if received is None or received["At"] > cutoff or any(e["EventId"] in TERMINAL for e in trail):
            continue
        if not handed_off(trail, "EX01"):
            stuck += 1
        elif msg not in seen_on_ex02:
            unknown += 1
    return stuck, unknown


def test_a_submission_to_a_server_that_cannot_be_polled_is_unknown_not_stuck(tmp_path: Path) -> None:
    clock = Clock(START)
    sim, service = start(tmp_path, clock)
    try:
        sim.faults.set("EX02", "http500")  # EX02's remote PowerShell is broken; its transport works
        service.poll_all()
        poll_minutes(service, clock, 8)
        trails = by_message(truth(sim, "EX01", START - 600, clock.now))
        stuck, unknown = ex01_expectations(trails, clock.now - 300, set())
        assert unknown > 20 and stuck > 0
        assert gauge(service, "mailflow_tracking_stuck_messages", "EX01") == stuck
        assert gauge(service, "mailflow_tracking_unfollowed_messages", "EX01") == unknown

        # EX02 answers again: its first window (initial_lookback) shows the continuations it holds.
        # EX01 is judged at its own poll against what EX02's polls had read by then, so one more
        # poll (both are polled in parallel) before EX01's gauges show it.
        sim.faults.clear("EX02")
        clock.now += 60
        first_window = clock.now - 600
        service.poll_all()
        clock.now += 60
        service.poll_all()
        trails = by_message(truth(sim, "EX01", START - 600, clock.now))
        seen_on_ex02 = {
            str(e["MessageId"])
            for e in truth(sim, "EX02", first_window, clock.now)
            if e["EventId"] == "RECEIVE" or e["EventId"] in TERMINAL
        }
        stuck, still_unknown = ex01_expectations(trails, clock.now - 300, seen_on_ex02)
        assert 0 < still_unknown < unknown
        assert gauge(service, "mailflow_tracking_unfollowed_messages", "EX01") == still_unknown
        assert gauge(service, "mailflow_tracking_stuck_messages", "EX01") == stuck
    finally:
        service.stop()
        sim.stop()
