"""Cross-server submission in the simulator's Get-MessageTrackingLog, through real pypsrp over sockets."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator
from typing import Any

import pytest
from pypsrp.powershell import PowerShell, RunspacePool

from exporter.simulator import Scenario, ScenarioError, Simulator, demo_scenario_path, load_scenario
from exporter.simulator.timeline import Timeline
from exporter.simulator.tracking import TrackingLog
from exporter.simulator.tracking_routes import submission_partners
from tests.integration.conftest import PASSWORD, USER, raw_pool

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

T0 = 1_800_000_000.0
TRAFFIC = {"messages_per_minute": 12, "failure_ratio": 0.1, "stuck_ratio": 0.05, "latency_seconds": {"max": 20}}


def scenario(**ex02: Any) -> Scenario:
    return Scenario.from_dict(
        {
            "users": {USER: PASSWORD},
            "tracking": {**TRAFFIC, "history_minutes": 30},
            "servers": [{"name": "EX01"}, {"name": "EX02", **ex02}],
        }
    )


@contextlib.contextmanager
def pool(sim: Simulator, server: str = "EX01") -> Iterator[RunspacePool]:
    with raw_pool(sim, server) as p:
        yield p


def track(p: RunspacePool, server: str, **params: Any) -> list[dict[str, Any]]:
    ps = PowerShell(p)
    ps.add_cmdlet("Get-MessageTrackingLog").add_parameter("Server", server).add_parameter("ResultSize", "Unlimited")
    for key, value in params.items():
        if isinstance(value, float):
            value = datetime.datetime.fromtimestamp(value, datetime.UTC).isoformat()
        ps.add_parameter(key, value)
    return [o.adapted_properties for o in ps.invoke()]


def _utc(text: str) -> float:
    return datetime.datetime.fromisoformat(text).timestamp()


def test_the_submitting_server_logs_the_submission_and_the_partner_the_rest() -> None:
    sc = scenario()
    with Simulator(sc, clock=lambda: T0) as sim, pool(sim) as p:
        messages = sim.tracking.messages("EX01", T0 - 900, T0 - 60)
        crossed = [m for m in messages if m.server == "EX01" and m.partner == "EX02"]
        local = [m for m in messages if m.server == "EX01" and m.kind == "internal" and not m.partner]
        assert crossed and local and len(crossed) > 3 * len(local)  # the default share: most submissions
        assert {m.kind for m in crossed} == {"internal", "outbound"}
        message = next(m for m in crossed if m.kind == "internal")
        here = track(p, "EX01", MessageId=message.message_id.strip("<>"), Start=T0 - 1800)
        there = track(p, "EX02", MessageId=message.message_id.strip("<>"), Start=T0 - 1800)
        assert [(e["EventId"], e["Source"]) for e in here] == [
            ("NOTIFYMAPI", "STOREDRIVER"),
            ("RECEIVE", "STOREDRIVER"),
            ("SUBMIT", "STOREDRIVER"),
        ]
        assert [(e["EventId"], e["Source"]) for e in there] == [
            ("HAREDIRECT", "SMTP"),
            ("RECEIVE", "SMTP"),
            ("AGENTINFO", "AGENT"),
            ("SEND", "SMTP"),
            ("DELIVER", "STOREDRIVER"),
        ]
        assert {e["InternalMessageId"] for e in here} == {message.internal_message_id}
        (theirs,) = {e["InternalMessageId"] for e in there}
        assert theirs != message.internal_message_id and theirs.isdigit()
        assert max(_utc(e["Timestamp"]) for e in here) < min(_utc(e["Timestamp"]) for e in there)
        receive = there[1]
        assert receive["ClientHostname"] == "ex01.contoso.sim" and receive["ConnectorId"] == "EX02\\Default EX02"
        assert receive["ServerHostname"] == "EX02" and receive["Directionality"] == "Originating"
        assert there[-1]["ServerHostname"] == "ex02.contoso.sim" and there[-1]["SchemaVersion"]
        # The partner's own InternalMessageId finds it there, and only there.
        assert [e["EventId"] for e in track(p, "EX02", InternalMessageId=theirs, Start=T0 - 1800)][-1] == "DELIVER"
        assert not track(p, "EX01", InternalMessageId=theirs, Start=T0 - 1800)
        # Locally submitted messages keep the whole sequence on one server.
        assert len(track(p, "EX01", MessageId=local[0].message_id.strip("<>"), Start=T0 - 1800)) == 8


def test_expected_messages_and_events_agree_with_both_logs() -> None:
    sc = scenario()
    log = TrackingLog(sc, Timeline(sc.organisation, lambda: T0))
    later = T0 + 3600  # every message of the window has finished by then
    window = (T0 - 600, T0)
    for server in ("EX01", "EX02"):
        first: dict[str, int] = {}
        for event in log.events(server, now=later):
            if event.source != "DSN":
                first.setdefault(event.internal_message_id, event.ts_ms)
        in_window = sorted(i for i, ts in first.items() if window[0] * 1000 <= ts < window[1] * 1000)
        messages = log.messages(server, *window)
        assert log.expected_messages(server, *window) == len(messages) == len(in_window)
        ids = sorted({e.internal_message_id for m in messages for e in m.events_on(server) if e.source != "DSN"})
        assert ids == in_window
        assert any(m.server != server for m in messages) and any(m.server == server for m in messages)
    # Organisation-wide, each message is one TrackedMessage whose events are split between the logs.
    every = [e for s in ("EX01", "EX02") for e in log.events(s, now=later)]
    mine = [
        e
        for s in ("EX01", "EX02")
        for m in log.messages(s, T0 - 1800, later)
        if m.server == s
        for e in m.events
        if e.ts_ms <= later * 1000
    ]
    assert sorted(every, key=lambda e: (e.server, e.internal_message_id, e.seq)) == sorted(
        mine, key=lambda e: (e.server, e.internal_message_id, e.seq)
    )
    # ResultSize truncation still returns the earliest events of the merged streams.
    full = log.events("EX02", T0 - 900, T0)
    assert log.events("EX02", T0 - 900, T0, limit=150) == full[:151]


def test_partners_follow_dag_then_site_and_the_share_can_be_zero() -> None:
    demo = load_scenario(demo_scenario_path())  # EX01 and EX02 hold copies of DB01; EX03 is alone in its site
    modelled = {s.name.upper() for s in demo.servers}
    assert submission_partners(demo, "EX01", modelled) == ("EX02",)
    assert submission_partners(demo, "EX03", modelled) == ()
    sites = Scenario.from_dict(
        {
            "servers": [
                {"name": "EX01", "site": "A"},
                {"name": "EX02", "site": "A"},
                {"name": "EX03", "site": "B"},
                {"name": "EDGE1", "site": "A", "server_role": ["Edge"]},
            ]
        }
    )
    names = {"EX01", "EX02", "EX03", "EDGE1"}
    assert submission_partners(sites, "EX01", names) == ("EX02",)
    assert submission_partners(sites, "EX01", {"EX01"}) == ()  # EX02 has no traffic: not modelled
    assert submission_partners(sites, "EDGE1", names) == ()
    single = scenario(tracking={"cross_server_submission": 0})
    log = TrackingLog(single, Timeline(single.organisation, lambda: T0))
    assert not any(m.partner for m in log.messages("EX02", T0 - 900, T0) if m.server == "EX02")
    assert all(m.server == "EX01" for m in log.messages("EX01", T0 - 900, T0))  # nothing comes from EX02
    assert any(m.partner == "EX02" for m in log.messages("EX01", T0 - 900, T0))  # EX01 keeps the default share
    with pytest.raises(ScenarioError, match=r"cross_server_submission: must be between 0 and 1"):
        scenario(tracking={"cross_server_submission": 1.5})


def test_a_partner_without_a_tracking_log_leaves_only_the_submission_visible() -> None:
    sc = scenario(message_tracking_log_enabled=False)
    with Simulator(sc, clock=lambda: T0) as sim, pool(sim) as p:
        crossed = [m for m in sim.tracking.messages("EX01", T0 - 900, T0 - 60) if m.partner == "EX02"]
        assert crossed
        assert [
            e["EventId"] for e in track(p, "EX01", MessageId=crossed[0].message_id.strip("<>"), Start=T0 - 1800)
        ] == [
            "NOTIFYMAPI",
            "RECEIVE",
            "SUBMIT",
        ]
        assert not track(p, "EX02", Start=T0 - 1800)
