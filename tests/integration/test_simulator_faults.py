"""Faults with consequences in the Exchange simulator, through the real pypsrp client over real sockets.

A server down (partners' shadow queues, database copy failover), back pressure (Submission growth,
ResourceThrottling diagnostics, rejected and deferred messages in tracking) and per-server clocks
(skew and time zones). The scenario clock is injected: every step moves it, nothing sleeps.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from pypsrp.exceptions import WinRMTransportError
from pypsrp.powershell import PowerShell, RunspacePool
from requests.exceptions import ConnectionError as RequestsConnectionError

from exporter.service import Service
from exporter.settings import Settings
from exporter.simulator import Scenario, ScenarioError, Simulator
from tests.integration.conftest import PASSWORD, USER, only_collectors, raw_pool, settings_for

pytestmark = pytest.mark.integration

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
DNS_ERROR = "451 4.4.0 DNS query failed. The error was: SMTPSEND.DNS.NonExistentDomain; nonexistent domain"
LRT_ERROR = "[{LRT=%LRT%};{LED=451 4.4.397 Error communicating with target host.};{FQDN=mx.example};{IP=192.0.2.1}]"


def _retry_queue() -> dict[str, Any]:
    return {
        "kind": "delivery",
        "row_id": 3,
        "next_hop_domain": "fabrikam.example",
        "status": "Retry",
        "message_count": 9,
        "retry_count": 4,
        "retry_interval_seconds": 600,
        "last_error": LRT_ERROR,
    }


def _org(**overrides: Any) -> dict[str, Any]:
    """Three DAG members; EX01 and EX03 shadow for EX02, EX02 shadows for EX01."""
    servers: list[dict[str, Any]] = [
        {
            "name": "EX01",
            "queues": [
                {"kind": "submission", "message_count": 5, "outgoing_rate": 2.0},
                {"kind": "shadow", "row_id": 12, "primary_server": "EX02", "message_count": 4},
                _retry_queue(),
            ],
        },
        {
            "name": "EX02",
            "queues": [
                {"kind": "submission", "message_count": 3},
                {"kind": "shadow", "row_id": 15, "primary_server": "EX01", "message_count": 6},
                _retry_queue(),
            ],
        },
        {
            "name": "EX03",
            "queues": [{"kind": "shadow", "row_id": 9, "primary_server": "EX02", "message_count": 2}],
        },
    ]
    for server in servers:
        server.update(overrides.pop(server["name"], {}))
    data: dict[str, Any] = {
        "organisation": {"name": "Contoso", "domain": "contoso.sim", "timezone_offset_minutes": 60},
        "users": {USER: PASSWORD},
        "shell_idle_timeout_seconds": 1_000_000,  # the clock jumps hours between commands
        "shadow_redundancy": {"heartbeat_frequency_seconds": 120, "resubmit_seconds": 1800},
        "databases": [
            {"name": "DB1", "copies": [{"server": "EX02"}, {"server": "EX01"}, {"server": "EX03"}]},
            {"name": "DB2", "copies": [{"server": "EX01"}, {"server": "EX02", "copy_queue_length": 7}]},
            {
                "name": "DB3",
                "copies": [
                    {"server": "EX02"},
                    {"server": "EX03", "activation_suspended": True},
                    {"server": "EX01"},
                ],
            },
        ],
        "servers": servers,
    }
    data.update(overrides)
    return data


@pytest.fixture
def clock() -> list[float]:
    return [T0]


@contextlib.contextmanager
def running(data: dict[str, Any], clock: list[float], **kwargs: Any) -> Iterator[Simulator]:
    with Simulator(Scenario.from_dict(data), clock=lambda: clock[0], **kwargs) as sim:
        yield sim


@contextlib.contextmanager
def session(sim: Simulator, server: str = "EX01") -> Iterator[RunspacePool]:
    pool = raw_pool(sim, server, read_timeout=20, operation_timeout=10, connection_timeout=3)
    pool.open()
    try:
        yield pool
    finally:
        with contextlib.suppress(Exception):
            pool.close()


def run(pool: RunspacePool, cmdlet: str, **params: Any) -> PowerShell:
    ps = PowerShell(pool)
    ps.add_cmdlet(cmdlet)
    for key, value in params.items():
        ps.add_parameter(key, value)
    ps.invoke()
    return ps


def queue(pool: RunspacePool, identity: str) -> dict[str, Any]:
    ps = run(pool, "Get-Queue", Identity=identity)
    assert len(ps.output) == 1, ps.streams.error
    return dict(ps.output[0].adapted_properties)


def copies(pool: RunspacePool, database: str) -> dict[str, dict[str, Any]]:
    ps = run(pool, "Get-MailboxDatabaseCopyStatus", Identity=database)
    assert not ps.streams.error
    return {str(o.adapted_properties["MailboxServer"]): dict(o.adapted_properties) for o in ps.output}


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat().replace("+00:00", "Z")


def _time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


# ----------------------------------------------------------------------------------------------
# A server down
# ----------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_down_grows_partner_shadow_queues_until_the_shadow_server_resubmits(clock: list[float]) -> None:
    with running(_org(), clock) as sim, session(sim, "EX01") as ex01, session(sim, "EX03") as ex03:
        before = queue(ex01, "EX01\\Shadow\\12")
        assert before["MessageCount"] == 4 and str(before["Status"]) == "Ready"
        sim.faults.set("EX02", "down", rate_per_minute=6)
        with pytest.raises((WinRMTransportError, RequestsConnectionError)):  # the server is off
            raw_pool(sim, "EX02", connection_timeout=3).open()
        unreachable = run(ex01, "Get-Queue", Server="EX02")
        assert not unreachable.output and "Microsoft Exchange Transport service" in str(unreachable.streams.error[0])

        clock[0] = T0 + 600  # ten minutes without discard notifications: 4 held + 6 a minute
        shadow = queue(ex01, "EX01\\Shadow\\12")
        assert shadow["MessageCount"] == 64 and str(shadow["Status"]) == "Ready"
        assert str(shadow["DeliveryType"]) == "ShadowRedundancy" and shadow["NextHopDomain"] == "ex02.contoso.sim"
        assert shadow["LastError"] == "" and shadow["IncomingRate"] == 0 and shadow["LastRetryTime"] is None
        assert queue(ex03, "EX03\\Shadow\\9")["MessageCount"] == 62
        assert queue(ex01, "EX01\\Submission")["MessageCount"] == 5  # nothing else changes

        # ShadowResubmitTimeSpan 1800 s / ShadowHeartbeatFrequency 120 s = 15 failed heartbeats:
        # the shadow server takes the messages over and the queue starts again from empty.
        clock[0] = T0 + 1799
        assert queue(ex01, "EX01\\Shadow\\12")["MessageCount"] == 4 + 180
        clock[0] = T0 + 1800 + 100
        shadow = queue(ex01, "EX01\\Shadow\\12")
        assert shadow["MessageCount"] == 10 and str(shadow["Status"]) == "Ready"

        sim.faults.clear("EX02")
        assert queue(ex01, "EX01\\Shadow\\12")["MessageCount"] == 4
    with running(_org(EX03={"components": {"HubTransport": "Draining"}}), clock) as sim, session(sim, "EX03") as ex03:
        # Resubmission suppressed: the shadow server's own transport is not Active -> Retry, messages kept.
        clock[0] = T0
        sim.faults.set("EX02", "down")
        clock[0] = T0 + 1900
        shadow = queue(ex03, "EX03\\Shadow\\9")
        assert str(shadow["Status"]) == "Retry" and shadow["MessageCount"] == 2
        assert shadow["RetryCount"] == 0 and shadow["LastError"] == ""


@pytest.mark.timeout(60)
def test_down_fails_database_copies_over_by_activation_preference(clock: list[float]) -> None:
    with running(_org(), clock) as sim, session(sim, "EX01") as ex01:
        db1 = copies(ex01, "DB1")
        assert str(db1["EX02"]["Status"]) == "Mounted" and db1["EX01"]["ActiveDatabaseCopy"] == "ex02"
        assert copies(ex01, "DB2")["EX02"]["CopyQueueLength"] == 7
        sim.faults.set("EX02", "refused")  # only its remote PowerShell endpoint: the DAG does not notice
        assert str(copies(ex01, "DB1")["EX02"]["Status"]) == "Mounted"
        sim.faults.clear("EX02")
        sim.faults.set("EX02", "down")
        db1 = copies(ex01, "DB1")
        assert str(db1["EX01"]["Status"]) == "Mounted" and db1["EX01"]["ActiveCopy"] is True
        assert str(db1["EX02"]["Status"]) == "ServiceDown" and db1["EX02"]["ActiveCopy"] is False
        assert str(db1["EX03"]["Status"]) == "Healthy"
        assert {c["ActiveDatabaseCopy"] for c in db1.values()} == {"ex01"}
        error = db1["EX02"]["ErrorMessage"]
        assert "Microsoft Exchange Replication service may not be running on server ex02.contoso.sim" in error
        assert "0x6ba (The RPC server is unavailable)" in error and db1["EX02"]["ErrorEventId"] is None
        # DB3: EX03 is next by preference but activation-suspended, so EX01 takes it.
        db3 = copies(ex01, "DB3")
        assert str(db3["EX01"]["Status"]) == "Mounted" and str(db3["EX03"]["Status"]) == "Healthy"
        # DB2 stays where it is; its passive copy on EX02 is unreachable.
        db2 = copies(ex01, "DB2")
        assert str(db2["EX01"]["Status"]) == "Mounted" and str(db2["EX02"]["Status"]) == "ServiceDown"
        # Nothing came back from EX02's replication service: no queue lengths, times or index state.
        assert db2["EX02"]["CopyQueueLength"] == 0 and db2["EX02"]["LastCopiedLogTime"] is None
        assert db2["EX02"]["InstanceStartTime"] is None and str(db2["EX02"]["ContentIndexState"]) == "Unknown"
        on_ex02 = run(ex01, "Get-MailboxDatabaseCopyStatus", Server="EX02")
        assert {str(o.adapted_properties["Status"]) for o in on_ex02.output} == {"ServiceDown"}
        assert len(on_ex02.output) == 3 and not on_ex02.streams.error
        active = run(ex01, "Get-MailboxDatabaseCopyStatus", Server="EX01", Active=True)
        assert sorted(str(o.adapted_properties["DatabaseName"]) for o in active.output) == ["DB1", "DB2", "DB3"]
        sim.faults.clear("EX02", "down")
        assert str(copies(ex01, "DB1")["EX02"]["Status"]) == "Mounted"


@pytest.mark.timeout(60)
def test_down_from_the_scenario_and_the_control_api(clock: list[float]) -> None:
    data = _org(EX02={"down": {"since_seconds": -600, "shadow_per_minute": 3}})
    with running(data, clock, control_port=0) as sim:
        assert not sim.endpoints()["EX02"]["listening"]
        with session(sim, "EX01") as ex01:
            assert queue(ex01, "EX01\\Shadow\\12")["MessageCount"] == 4 + 30
            assert str(copies(ex01, "DB1")["EX01"]["Status"]) == "Mounted"
            base = sim.control_url
            request = urllib.request.Request(f"{base}/sim/faults?server=EX02&kind=down", method="DELETE")
            with urllib.request.urlopen(request, timeout=5) as response:
                assert json.load(response) == []
            assert sim.endpoints()["EX02"]["listening"]
            assert str(copies(ex01, "DB1")["EX02"]["Status"]) == "Mounted"
            body = json.dumps({"server": "EX02", "kind": "down", "rate_per_minute": 12}).encode()
            request = urllib.request.Request(f"{base}/sim/faults", data=body, method="POST")
            with urllib.request.urlopen(request, timeout=5) as response:
                (fault,) = json.load(response)
            assert fault["kind"] == "down" and fault["since"] == T0 and fault["rate_per_minute"] == 12
            clock[0] = T0 + 300
            assert queue(ex01, "EX01\\Shadow\\12")["MessageCount"] == 4 + 60


@pytest.mark.timeout(60)
def test_the_exporter_polls_the_consequences_of_a_down_server(
    clock: list[float], service_factory: Callable[[Settings], Service]
) -> None:
    with running(_org(), clock) as sim:
        collectors = only_collectors(queues={"interval": 30}, database_copies={"interval": 30})
        service = service_factory(settings_for(sim, sim.scenario, overrides={"collectors": collectors}))
        assert all(s.ok for s in service.poll_all())
        value = service.registry.get_sample_value
        assert value("mailflow_database_copy_active", {"database": "DB1", "server": "EX02"}) == 1
        sim.faults.set("EX02", "down", rate_per_minute=6)
        clock[0] = T0 + 600
        failed = {(s.collector, s.target, s.reason) for s in service.poll_all() if not s.ok}
        assert failed == {("queues", "EX02", "connection"), ("database_copies", "EX02", "connection")}
        assert value("mailflow_database_copy_active", {"database": "DB1", "server": "EX01"}) == 1
        shadow = {
            "server": "EX01",
            "queue_kind": "shadow",
            "delivery_type": "ShadowRedundancy",
            "next_hop_category": "Internal",
            "next_hop_domain": "ex02.contoso.sim",
        }
        assert value("mailflow_queue_messages", shadow) == 64


# ----------------------------------------------------------------------------------------------
# Back pressure
# ----------------------------------------------------------------------------------------------
def _meters(pool: RunspacePool, server: str) -> tuple[ET.Element, dict[str, dict[str, str]]]:
    ps = run(pool, "Get-ExchangeDiagnosticInfo", Server=server, Process="EdgeTransport", Component="ResourceThrottling")
    (result,) = ps.output
    assert result.types[0] == "Microsoft.Exchange.Management.Powershell.Support.ExchangeDiagnosticInfoResult"
    text = result.adapted_properties["Result"]
    assert text == str(result) and "\r\n  <ProcessInfo>" in text
    root = ET.fromstring(text)
    tracker = root.find("Components/ResourceThrottling/ResourceTracker")
    assert tracker is not None
    meters = {m.get("Resource", ""): {c.tag: c.text or "" for c in m} for m in tracker.findall("ResourceMeter")}
    return root, meters


@pytest.mark.timeout(60)
def test_back_pressure_grows_submission_and_reports_resource_throttling(clock: list[float]) -> None:
    with running(_org(), clock) as sim, session(sim, "EX01") as ex01:
        root, meters = _meters(ex01, "EX01")
        assert root.findtext("Components/ResourceThrottling/ResourceTracker/AggregateUse") == "Low"
        assert {m["CurrentResourceUse"] for m in meters.values()} == {"Low"} and len(meters) == 8
        queue_meter = (
            r"UsedVersionBuckets[C:\Program Files\Microsoft\Exchange Server\V15\TransportRoles\data\Queue\mail.que]"
        )
        assert meters[queue_meter]["PressureTransitions"] == (
            "[PressureTransitions: MediumToHigh=1500 HighToMedium=1000 LowToMedium=999 MediumToLow=800]"
        )

        sim.faults.set("EX01", "back_pressure", level="medium", rate_per_minute=120)
        clock[0] = T0 + 300
        submission = queue(ex01, "EX01\\Submission")
        assert submission["MessageCount"] == 5 + 600
        assert submission["IncomingRate"] == 4.0 and submission["Velocity"] == -2.0
        root, meters = _meters(ex01, "EX01")
        assert meters[queue_meter]["CurrentResourceUse"] == "Medium" and meters[queue_meter]["Pressure"] == "1249"
        assert root.findtext("Components/ResourceThrottling/ResourceTracker/AggregateUse") == "Medium"
        assert root.findtext("ProcessInfo/serverName") == "EX01"
        assert root.findtext("ProcessInfo/currentTime", "").startswith(_iso(T0 + 300)[:19])

        sim.faults.set("EX01", "back_pressure", level="High", rate_per_minute=120)  # Medium -> High
        clock[0] = T0 + 360
        root, meters = _meters(ex01, "EX01")
        assert meters[queue_meter]["CurrentResourceUse"] == "High"
        assert meters[queue_meter]["PreviousResourceUse"] == "Medium" and meters[queue_meter]["Pressure"] == "1500"
        paused = {
            o.get("Name"): o.findtext("Paused")
            for o in root.findall("Components/ResourceThrottling/ResourceLevelMediator/ResourceLevelObserver")
        }
        assert paused["SmtpIn"] == "true" and paused["RemoteDelivery"] == "true" and paused["Categorizer"] == "false"
        # Back pressure is not a component state: HubTransport stays Active.
        state = run(ex01, "Get-ServerComponentState", Identity="EX01", Component="HubTransport").output
        assert str(state[0].adapted_properties["State"]) == "Active"
        # Another server's diagnostics are its own; a down server's RPC fails.
        assert {m["CurrentResourceUse"] for m in _meters(ex01, "EX02")[1].values()} == {"Low"}
        sim.faults.set("EX03", "down")
        down = run(ex01, "Get-ExchangeDiagnosticInfo", Server="EX03", Process="EdgeTransport")
        assert "<error>ProcessAccessManager RPC Error 6BA</error>" in down.output[0].adapted_properties["Result"]
        other = run(ex01, "Get-ExchangeDiagnosticInfo", Process="EdgeTransport", Component="NoSuchThing")
        assert (
            'Component "NoSuchThing" is not supported by this process.' in other.output[0].adapted_properties["Result"]
        )


def _tracking_org() -> dict[str, Any]:
    ex01 = {
        "tracking": {
            "messages_per_minute": 30,
            "history_minutes": 30,
            "external_ratio": 0.3,
            "inbound_ratio": 0.5,
            "failure_ratio": 0.05,
            "latency_seconds": {"min": 1, "max": 10},
        }
    }
    return _org(EX01=ex01)


def _events(pool: RunspacePool, start: float, end: float) -> list[dict[str, Any]]:
    ps = run(pool, "Get-MessageTrackingLog", Server="EX01", Start=_iso(start), End=_iso(end), ResultSize="Unlimited")
    return [dict(o.adapted_properties) for o in ps.output]


def _key(event: dict[str, Any]) -> tuple[str, str, str]:
    return event["InternalMessageId"], event["EventId"], event["Timestamp"]


def _from_internet(event: dict[str, Any]) -> bool:
    data = event["EventData"] or []
    return event["EventId"] == "RECEIVE" and event["Source"] == "SMTP" and any("Internet" in str(d) for d in data)


@pytest.mark.timeout(90)
def test_back_pressure_rejects_and_defers_in_message_tracking(clock: list[float]) -> None:
    with running(_tracking_org(), clock) as sim, session(sim, "EX01") as ex01:
        clock[0] = T0 + 1200
        normal = _events(ex01, T0, T0 + 600)
        assert any(_from_internet(e) for e in normal) and any(e["EventId"] == "SUBMIT" for e in normal)

        clock[0] = T0 + 1200
        sim.faults.set("EX01", "back_pressure", level="Medium", resource="DatabaseUsedSpace", since=T0 + 1200)
        clock[0] = T0 + 1800
        medium = _events(ex01, T0 + 1260, T0 + 1800)  # messages that arrived under Medium pressure
        assert medium and not any(_from_internet(e) for e in medium)  # non-Exchange senders rejected
        assert any(e["EventId"] == "SUBMIT" for e in medium)  # mailbox submissions still accepted
        sim.faults.set("EX01", "back_pressure", level="High", resource="DatabaseUsedSpace")
        clock[0] = T0 + 2400
        high = _events(ex01, T0 + 1860, T0 + 2400)
        ids = [e["EventId"] for e in high]
        assert "SUBMITDEFER" in ids and "SUBMIT" not in ids and not any(_from_internet(e) for e in high)
        assert not any(e["EventId"] in ("SEND", "DELIVER", "HAREDIRECT") for e in high)
        deferred = next(e for e in high if e["EventId"] == "SUBMITDEFER")
        assert deferred["Source"] == "STOREDRIVER"
        only = run(ex01, "Get-MessageTrackingLog", Server="EX01", EventId="SUBMITDEFER", ResultSize="Unlimited")
        assert len(only.output) == ids.count("SUBMITDEFER") + sum(
            e["EventId"] == "SUBMITDEFER" for e in _events(ex01, T0, T0 + 1860) + _events(ex01, T0 + 2400, T0 + 2401)
        )
        # The past does not change when the pressure ends: what was rejected stays rejected.
        sim.faults.clear("EX01")
        clock[0] = T0 + 3000
        assert [_key(e) for e in _events(ex01, T0 + 1860, T0 + 2400)] == [_key(e) for e in high]
        later = _events(ex01, T0 + 2460, T0 + 3000)
        assert any(_from_internet(e) for e in later) and "SUBMITDEFER" not in [e["EventId"] for e in later]


# ----------------------------------------------------------------------------------------------
# Per-server clocks
# ----------------------------------------------------------------------------------------------
def _skew_org() -> dict[str, Any]:
    tracking = {"messages_per_minute": 30, "history_minutes": 30}
    cert = [{"subject": "CN=mail.contoso.sim", "services": ["SMTP"], "not_after_days": 0.002}]  # 172.8 s
    return _org(
        EX01={"tracking": tracking, "certificates": cert},
        EX02={"tracking": tracking, "certificates": cert, "clock_skew_seconds": 300, "time_zone": "+05:30"},
        EX03={"time_zone": "America/New_York"},
    )


@pytest.mark.timeout(60)
def test_a_skewed_server_reports_in_its_own_clock_and_zone(clock: list[float]) -> None:
    with running(_skew_org(), clock) as sim, session(sim, "EX01") as ex01, session(sim, "EX02") as ex02:
        # Tracking: EX02's newest Timestamp is ahead of the exporter's clock (T0), by up to the skew.
        ps = run(ex02, "Get-MessageTrackingLog", Start=_iso(T0 - 120), ResultSize="Unlimited")
        stamps = [_time(o.adapted_properties["Timestamp"]) for o in ps.output]
        newest = max(stamps)
        assert T0 < newest.timestamp() <= T0 + 300 and newest.utcoffset() == datetime.timedelta(hours=5, minutes=30)
        ahead = run(ex02, "Get-MessageTrackingLog", Start=_iso(T0), ResultSize="Unlimited").output
        assert ahead  # events an exporter asking for [..., now) on its own clock does not see yet
        own = run(ex01, "Get-MessageTrackingLog", Start=_iso(T0 - 120), ResultSize="Unlimited").output
        assert max(_time(o.adapted_properties["Timestamp"]).timestamp() for o in own) <= T0
        assert _time(own[0].adapted_properties["Timestamp"]).utcoffset() == datetime.timedelta(hours=1)

        # Queue retry times and %LRT%: the same queue spec, five minutes later on EX02's clock.
        q1, q2 = queue(ex01, "EX01\\3"), queue(ex02, "EX02\\3")
        assert (_time(q2["LastRetryTime"]) - _time(q1["LastRetryTime"])).total_seconds() == 300
        assert _time(q2["LastRetryTime"]).utcoffset() == datetime.timedelta(hours=5, minutes=30)
        lrt = _time(q2["LastRetryTime"])
        assert q2["LastError"].startswith(f"[{{LRT={lrt.month}/{lrt.day}/{lrt.year} {lrt.hour % 12 or 12}:")

        # Certificate Status by each server's clock: valid for 172.8 s after the start, EX02 is 300 s ahead.
        def status(pool: RunspacePool, server: str) -> set[str]:
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-ExchangeCertificate").add_parameter("Server", server)
            ps.add_cmdlet("Select-Object").add_parameter("Property", ["Subject", "Status"])
            ps.invoke()
            return {
                str(o.extended_properties["Status"])
                for o in ps.output
                if "mail" in str(o.extended_properties["Subject"])
            }

        assert status(ex01, "EX01") == {"Valid"} and status(ex02, "EX02") == {"DateInvalid"}
        assert status(ex01, "EX02") == {"DateInvalid"}  # EX02's clock, asked from EX01


@pytest.mark.timeout(60)
def test_cross_server_times_take_the_target_clock_and_the_session_zone(clock: list[float]) -> None:
    with running(_skew_org(), clock) as sim, session(sim, "EX01") as ex01, session(sim, "EX03") as ex03:
        remote = run(ex01, "Get-MessageTrackingLog", Server="EX02", Start=_iso(T0 - 120), ResultSize="Unlimited")
        newest = max(_time(o.adapted_properties["Timestamp"]) for o in remote.output)
        assert newest.timestamp() > T0 and newest.utcoffset() == datetime.timedelta(hours=1)  # EX01 renders
        # EX03 is in New York (UTC-5 in January): naive -Start/-End are its local time.
        local = datetime.timezone(datetime.timedelta(hours=-5))
        naive = [datetime.datetime.fromtimestamp(t, local).strftime("%Y-%m-%dT%H:%M:%S") for t in (T0 - 600, T0 - 300)]
        by_naive = run(
            ex03, "Get-MessageTrackingLog", Server="EX01", Start=naive[0], End=naive[1], ResultSize="Unlimited"
        )
        by_iso = run(
            ex03,
            "Get-MessageTrackingLog",
            Server="EX01",
            Start=_iso(T0 - 600),
            End=_iso(T0 - 300),
            ResultSize="Unlimited",
        )
        keys = [(o.adapted_properties["InternalMessageId"], o.adapted_properties["EventId"]) for o in by_naive.output]
        assert keys and keys == [
            (o.adapted_properties["InternalMessageId"], o.adapted_properties["EventId"]) for o in by_iso.output
        ]
        assert _time(by_iso.output[0].adapted_properties["Timestamp"]).utcoffset() == datetime.timedelta(hours=-5)


@pytest.mark.timeout(30)
def test_fault_and_clock_keys_are_validated() -> None:
    with pytest.raises(ScenarioError, match="time_zone"):
        Scenario.from_dict(_org(EX01={"time_zone": "Mars/Olympus"}))
    with pytest.raises(ScenarioError, match="since_seconds"):
        Scenario.from_dict(_org(EX01={"down": {"since_seconds": 60}}))
    with pytest.raises(ScenarioError, match="level"):
        Scenario.from_dict(_org(EX01={"back_pressure": {"level": "Low"}}))
    with pytest.raises(ScenarioError, match="resource"):
        Scenario.from_dict(_org(EX01={"back_pressure": {"resource": "Cpu"}}))
    with pytest.raises(ScenarioError, match="resubmit_seconds"):
        Scenario.from_dict(_org(shadow_redundancy={"resubmit_seconds": 0}))
    scenario = Scenario.from_dict(_org(EX01={"back_pressure": True, "clock_skew_seconds": -90}))
    ex01 = scenario.server("EX01")
    assert ex01 is not None and ex01.back_pressure is not None and ex01.back_pressure.level == "High"
    with Simulator(scenario) as sim:
        with pytest.raises(ValueError, match="level"):
            sim.faults.set("EX02", "back_pressure", level="Severe")
        with pytest.raises(ValueError, match="takes no"):
            sim.faults.set("EX02", "hang", level="High")
        (fault,) = sim.faults.active("EX01")
        assert fault.kind.value == "back_pressure" and fault.resource == "UsedVersionBuckets"
