"""Get-MessageTrackingLog in the Exchange simulator, through the real pypsrp client over real sockets.

The scenario clock is injected and fixed, so every expected count comes from ``sim.tracking``
(the same deterministic generator the cmdlet serves).
"""

from __future__ import annotations

import contextlib
import datetime
import re
import uuid
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from pypsrp.powershell import PowerShell, PSInvocationState, RunspacePool
from pypsrp.wsman import WSMan

from exporter.exchange.clixml import parse_timespan
from exporter.exchange.tracking import decode_event
from exporter.simulator import (
    Scenario,
    ScenarioError,
    Simulator,
    build_scenario,
    demo_scenario_path,
    load_scenario,
    objects,
)
from exporter.simulator.clixml import select_object, write_clixml
from exporter.simulator.depth import UNLIMITED, cut
from exporter.simulator.timeline import Timeline
from exporter.simulator.tracking import TrackedMessage, TrackingLog
from exporter.simulator.tracking_wire import event_clixml, select_clixml

pytestmark = pytest.mark.integration

USER = "svc-mailflow@contoso.sim"
PASSWORD = "S1mulated-Password"
T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
RATE = 12.0  # messages per minute on EX01 (one every 5 s)
WARNING = (
    "There are more results available than are currently displayed. To view them, increase the value of the "
    "ResultSize parameter."
)
INTERNAL_SEQUENCE = [
    ("NOTIFYMAPI", "STOREDRIVER"),
    ("RECEIVE", "STOREDRIVER"),
    ("SUBMIT", "STOREDRIVER"),
    ("HAREDIRECT", "SMTP"),
    ("RECEIVE", "SMTP"),
    ("AGENTINFO", "AGENT"),
    ("SEND", "SMTP"),
    ("DELIVER", "STOREDRIVER"),
]
SELECTED = [
    "Timestamp",
    "EventId",
    "Source",
    "InternalMessageId",
    "MessageId",
    "RecipientStatus",
    "MessageLatency",
    "MessageLatencyType",
    "TotalBytes",
    "RecipientCount",
    "Directionality",
]


def _scenario() -> Scenario:
    return Scenario.from_dict(
        {
            "organisation": {"name": "Contoso", "domain": "contoso.sim", "timezone_offset_minutes": 120},
            "users": {USER: PASSWORD},
            "tracking": {"history_minutes": 30, "latency_seconds": {"min": 1, "max": 20}},
            "servers": [
                {
                    "name": "EX01",
                    "tracking": {
                        "messages_per_minute": RATE,
                        "failure_ratio": 0.2,
                        "stuck_ratio": 0.1,
                        "external_ratio": 0.3,
                        "defer_ratio": 0.5,
                        "latency_field_ratio": 0.5,
                    },
                },
                {"name": "EX02", "tracking": None},
            ],
        }
    )


@pytest.fixture(scope="module")
def clock() -> list[float]:
    return [T0]


@pytest.fixture(scope="module")
def sim(clock: list[float]) -> Iterator[Simulator]:
    with Simulator(_scenario(), clock=lambda: clock[0]) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def pool(sim: Simulator) -> Iterator[RunspacePool]:
    host, port = sim.endpoint("EX01")
    wsman = WSMan(
        host,
        port=port,
        ssl=False,
        path="PowerShell",
        auth="basic",
        username=USER,
        password=PASSWORD,
        encryption="never",
        read_timeout=20,
        operation_timeout=10,
    )
    p = RunspacePool(wsman, configuration_name="Microsoft.Exchange")
    p.open()
    yield p
    with contextlib.suppress(Exception):
        p.close()


@pytest.fixture(autouse=True)
def _reset_clock(clock: list[float]) -> Iterator[None]:
    yield
    clock[0] = T0


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat().replace("+00:00", "Z")


def track(pool: RunspacePool, select: list[str] | None = None, **params: Any) -> PowerShell:
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-MessageTrackingLog")
    params.setdefault("Server", "EX01")
    for key, value in params.items():
        ps.add_parameter(key, _iso(value) if isinstance(value, float) else value)
    if select is not None:
        ps.add_cmdlet("Select-Object").add_parameter("Property", select)
    ps.invoke()
    return ps


def _key(obj: Any) -> tuple[str, str, str]:
    p = obj.adapted_properties
    return p["InternalMessageId"], p["EventId"], p["Timestamp"]


def _plain(value: Any) -> Any:
    """A comparable form of a pypsrp value (complex objects by their ToString and properties)."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "types"):
        props = {k: _plain(v) for k, v in value.adapted_properties.items()}
        return (str(value), value.types, props, value.property_sets)
    return value


def _snapshot(obj: Any) -> dict[str, Any]:
    return {name: _plain(value) for name, value in obj.adapted_properties.items()}


def _find(sim: Simulator, kind: str, start: float, end: float, *, settled: bool = True) -> TrackedMessage:
    for message in sim.tracking.messages("EX01", start, end):
        if message.kind == kind and (not settled or message.events[-1].timestamp <= T0):
            return message
    raise AssertionError(f"no {kind} message in the window")


def _utc(dt_text: str) -> float:
    return datetime.datetime.fromisoformat(dt_text).timestamp()


# ----------------------------------------------------------------------------------------------
# Sequences and wire shape
# ----------------------------------------------------------------------------------------------
@pytest.mark.timeout(20)
def test_normal_sequence_in_order_with_real_shapes(sim: Simulator, pool: RunspacePool) -> None:
    message = _find(sim, "internal", T0 - 900, T0 - 60)
    ps = track(
        pool, InternalMessageId=message.internal_message_id, Start=message.arrival - 1, End=T0, ResultSize="Unlimited"
    )
    assert not ps.had_errors and not ps.streams.warning
    assert [(o.adapted_properties["EventId"], o.adapted_properties["Source"]) for o in ps.output] == INTERNAL_SEQUENCE
    stamps = [o.adapted_properties["Timestamp"] for o in ps.output]
    assert all(s.endswith("+02:00") for s in stamps)  # DT in the server's offset
    assert [_utc(s) for s in stamps] == sorted({_utc(s) for s in stamps})  # strictly increasing
    first = ps.output[0]
    assert first.types == [
        "Microsoft.Exchange.Management.TransportLogSearchTasks.MessageTrackingEvent",
        "System.Object",
    ]
    assert "SerializationData" in first.extended_properties
    props = first.adapted_properties
    assert list(props)[:4] == ["Timestamp", "ClientIp", "ClientHostname", "ServerIp"]
    assert list(props)[-3:] == ["EventData", "TransportTrafficType", "SchemaVersion"]
    assert re.fullmatch(r"<[0-9a-f]{32}@ex01\.contoso\.sim>", props["MessageId"])
    assert props["InternalMessageId"].isdigit() and props["InternalMessageId"] == message.internal_message_id
    uuid.UUID(props["NetworkMessageId"])
    assert isinstance(props["Recipients"], list) and props["RecipientCount"] == len(props["Recipients"])
    assert all(r.endswith("@contoso.sim") for r in props["Recipients"])
    assert props["Reference"] is None and props["TransportTrafficType"] == "Email"
    assert props["SchemaVersion"] == "15.02.1544.004" and props["Directionality"] == "Originating"
    by_event = {(o.adapted_properties["EventId"], o.adapted_properties["Source"]): o for o in ps.output}
    receive = by_event[("RECEIVE", "SMTP")].adapted_properties
    assert receive["RecipientStatus"][0] == "To" and set(receive["RecipientStatus"]) <= {"To", "Cc", "Bcc"}
    assert receive["ConnectorId"] == "EX01\\Default EX01" and receive["MessageInfo"] == "0cI:"
    deliver = by_event[("DELIVER", "STOREDRIVER")].adapted_properties
    # At remoting depth the enum, the EnhancedTimeSpan and each EventData pair are their ToString;
    # the arrays stay lists (containers do not use up depth).
    latency_type = deliver["MessageLatencyType"]
    assert latency_type in ("EndToEnd", "None")
    assert all(isinstance(kv, str) and kv.startswith("[") for kv in deliver["EventData"])
    pairs = dict(kv[1:-1].split(", ", 1) for kv in deliver["EventData"])
    assert pairs["DeliveryPriority"] == "Normal" and "MailboxDatabaseName" in pairs
    if latency_type == "EndToEnd":
        latency = deliver["MessageLatency"]
        assert isinstance(latency, str) and re.fullmatch(r"00:0\d:\d\d\.\d{7}", latency)
        expected_ms = message.events[-1].ts_ms - message.arrival_ms
        assert parse_timespan(latency) == pytest.approx(expected_ms / 1000)
        assert ";SRV=ex01.contoso.sim:" in deliver["MessageInfo"]
    else:
        assert deliver["MessageLatency"] is None
        assert re.fullmatch(r"1/15/2027 \d{1,2}:\d\d:\d\d (AM|PM)", deliver["MessageInfo"])  # local time text


@pytest.mark.timeout(20)
def test_stuck_and_failed_messages(sim: Simulator, pool: RunspacePool) -> None:
    stuck = _find(sim, "stuck", T0 - 1800, T0 - 60)
    ps = track(pool, InternalMessageId=stuck.internal_message_id, Start=T0 - 1800)
    assert [(o.adapted_properties["EventId"], o.adapted_properties["Source"]) for o in ps.output] == [
        ("RECEIVE", "SMTP")
    ]
    assert ps.output[0].adapted_properties["Directionality"] == "Incoming"

    ps = track(pool, EventId="FAIL", Start=T0 - 1800, End=T0, ResultSize="Unlimited")
    fails = [o.adapted_properties for o in ps.output]
    assert len(fails) == sum(1 for e in sim.tracking.events("EX01", T0 - 1800, T0) if e.event_id == "FAIL")
    statuses = [s for f in fails for s in f["RecipientStatus"]]
    assert any(re.match(r"^5\d\d 5\.\d+\.\d+ ", s) for s in statuses)  # plain SMTP response
    assert any(s.startswith("[{LED=5") and s.endswith(";{LRT=}]") for s in statuses)  # structured form
    assert {f["Source"] for f in fails} <= {"SMTP", "ROUTING", "RESOLVER"}
    dsn = track(pool, EventId="DSN", Start=T0 - 1800, End=T0 + 60, ResultSize="Unlimited")
    references = {o.adapted_properties["Reference"][0] for o in dsn.output}
    assert {f["MessageId"] for f in fails} <= references
    assert all(o.adapted_properties["Source"] == "DSN" for o in dsn.output)
    assert all(o.adapted_properties["ReturnPath"] == "<>" for o in dsn.output)


# ----------------------------------------------------------------------------------------------
# Determinism, windows and the clock
# ----------------------------------------------------------------------------------------------
@pytest.mark.timeout(20)
def test_repeated_and_overlapping_windows_are_consistent(sim: Simulator, pool: RunspacePool) -> None:
    a1 = track(pool, Start=T0 - 150, End=T0 - 90, ResultSize="Unlimited").output
    a2 = track(pool, Start=T0 - 150, End=T0 - 90, ResultSize="Unlimited").output
    assert [_snapshot(o) for o in a1] == [_snapshot(o) for o in a2]
    b = track(pool, Start=T0 - 120, End=T0 - 60, ResultSize="Unlimited").output
    union = track(pool, Start=T0 - 150, End=T0 - 60, ResultSize="Unlimited").output
    assert len(a1) == sim.tracking.expected_events("EX01", T0 - 150, T0 - 90)
    in_both_a = [_snapshot(o) for o in a1 if _utc(o.adapted_properties["Timestamp"]) >= T0 - 120]
    in_both_b = [_snapshot(o) for o in b if _utc(o.adapted_properties["Timestamp"]) < T0 - 90]
    assert in_both_a == in_both_b and in_both_a
    deduped = {_key(o) for o in a1} | {_key(o) for o in b}
    assert deduped == {_key(o) for o in union} and len(union) == len(deduped)
    assert all(T0 - 150 <= _utc(o.adapted_properties["Timestamp"]) < T0 - 60 for o in union)  # End exclusive


@pytest.mark.timeout(20)
def test_future_events_appear_when_the_clock_moves(sim: Simulator, pool: RunspacePool, clock: list[float]) -> None:
    message = _find(sim, "internal", T0 + 5, T0 + 300, settled=False)
    assert message.arrival > T0
    assert not track(pool, InternalMessageId=message.internal_message_id).output
    clock[0] = message.events[2].timestamp  # NOTIFYMAPI, RECEIVE and SUBMIT have happened
    ps = track(pool, InternalMessageId=message.internal_message_id)
    assert [o.adapted_properties["EventId"] for o in ps.output] == ["NOTIFYMAPI", "RECEIVE", "SUBMIT"]
    newest = track(pool, Start=clock[0] - 20, ResultSize="Unlimited").output
    assert newest and max(_utc(o.adapted_properties["Timestamp"]) for o in newest) <= clock[0]
    clock[0] = message.events[-1].timestamp + 1
    ps = track(pool, InternalMessageId=message.internal_message_id)
    assert [(o.adapted_properties["EventId"], o.adapted_properties["Source"]) for o in ps.output] == INTERNAL_SEQUENCE


@pytest.mark.timeout(20)
def test_naive_times_are_server_local_and_rates_match(sim: Simulator, pool: RunspacePool) -> None:
    local = datetime.timezone(datetime.timedelta(hours=2))
    start, end = T0 - 600, T0 - 540
    naive = [datetime.datetime.fromtimestamp(t, local).strftime("%Y-%m-%d %H:%M:%S") for t in (start, end)]
    us_format = [datetime.datetime.fromtimestamp(t, local).strftime("%m/%d/%Y %I:%M:%S %p") for t in (start, end)]
    by_iso = [_key(o) for o in track(pool, Start=start, End=end, ResultSize="Unlimited").output]
    by_naive = [_key(o) for o in track(pool, Start=naive[0], End=naive[1], ResultSize="Unlimited").output]
    by_us = [_key(o) for o in track(pool, Start=us_format[0], End=us_format[1], ResultSize="Unlimited").output]
    assert by_iso == by_naive == by_us and by_iso
    bad = track(pool, Start="yesterday-ish")
    assert bad.had_errors and "Cannot convert value" in str(bad.streams.error[0])

    # Rates: 12 messages a minute, one per 5 s slot, the kinds in the configured shares.
    window = (T0 - 1500, T0)
    assert sim.tracking.expected_messages("EX01", *window) in (299, 300, 301)
    kinds = [m.kind for m in sim.tracking.messages("EX01", *window)]
    assert 0.12 < kinds.count("failed") / len(kinds) < 0.28
    assert 0.05 < kinds.count("stuck") / len(kinds) < 0.16
    fails = track(pool, EventId="fail", Start=window[0], End=window[1], ResultSize="Unlimited").output
    expected_fails = sum(1 for e in sim.tracking.events("EX01", *window) if e.event_id == "FAIL")
    assert len(fails) == expected_fails and abs(expected_fails - 0.2 * 300) < 25


# ----------------------------------------------------------------------------------------------
# Parameters, errors, Select-Object
# ----------------------------------------------------------------------------------------------
@pytest.mark.timeout(20)
def test_result_size_event_id_and_errors(sim: Simulator, pool: RunspacePool) -> None:
    ps = track(pool, Start=T0 - 600, ResultSize=5)
    assert len(ps.output) == 5 and [w.message for w in ps.streams.warning] == [WARNING]
    stamps = [_utc(o.adapted_properties["Timestamp"]) for o in ps.output]
    assert stamps == sorted(stamps) and stamps[0] >= T0 - 600
    ps = track(pool, Start=T0 - 30, ResultSize="Unlimited")
    assert not ps.streams.warning and len(ps.output) == sim.tracking.expected_events("EX01", T0 - 30)

    ps = track(pool, EventId="deliver", Start=T0 - 300, ResultSize="Unlimited")
    assert ps.output and {o.adapted_properties["EventId"] for o in ps.output} == {"DELIVER"}
    ps = track(pool, Source="agent", Start=T0 - 120)
    assert ps.output and {o.adapted_properties["EventId"] for o in ps.output} == {"AGENTINFO"}
    subject = ps.output[0].adapted_properties["MessageSubject"]
    sender = ps.output[0].adapted_properties["Sender"]
    ps = track(pool, MessageSubject=subject[2:].upper(), Sender=sender, Start=T0 - 120)
    assert ps.output and all(o.adapted_properties["Sender"] == sender for o in ps.output)
    message_id = ps.output[0].adapted_properties["MessageId"]
    ps = track(pool, MessageId=message_id.strip("<>"), Start=T0 - 900)  # the cmdlet adds the brackets
    assert ps.output and {o.adapted_properties["MessageId"] for o in ps.output} == {message_id}

    ps = track(pool, EventId="DELIVERED")
    assert ps.had_errors and ps.state == PSInvocationState.FAILED and not ps.output
    (error,) = ps.streams.error
    assert "DELIVERED" in str(error) and "LocalizedException" in error.fq_error
    assert error.fq_error.endswith("GetMessageTrackingLog")
    ps = track(pool, Server="EX77")
    assert not ps.output and "couldn't be found on" in str(ps.streams.error[0])
    assert not track(pool, Server="EX02", Start=T0 - 600).output  # no tracking configured there


@pytest.mark.timeout(20)
def test_select_object_keeps_enums_timespans_and_arrays(sim: Simulator, pool: RunspacePool) -> None:
    ps = track(pool, select=SELECTED, EventId="DELIVER", Start=T0 - 600, ResultSize="Unlimited")
    assert not ps.had_errors and ps.output
    obj = ps.output[0]
    assert obj.types == [
        "Selected.Microsoft.Exchange.Management.TransportLogSearchTasks.MessageTrackingEvent",
        "System.Management.Automation.PSCustomObject",
        "System.Object",
    ]
    assert list(obj.extended_properties) == SELECTED
    assert obj.to_string is None  # a property bag has no ToString on the wire (PowerShell renders @{...})
    # Select-Object's notes are written at depth 1: the enum and the EnhancedTimeSpan keep their shape.
    kinds = set()
    for item in ps.output:
        props = item.extended_properties
        assert isinstance(props["RecipientStatus"], list) and isinstance(props["TotalBytes"], int)
        kinds.add(str(props["MessageLatencyType"]))
        if str(props["MessageLatencyType"]) == "EndToEnd":
            assert props["MessageLatencyType"].property_sets == [2]
            assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{7}", str(props["MessageLatency"]))
            assert props["MessageLatency"].types[0] == "Microsoft.Exchange.Data.EnhancedTimeSpan"
        else:
            assert props["MessageLatency"] is None
    assert kinds == {"EndToEnd", "None"}
    ps = track(pool, select=["EventId", "Recipient*"], Start=T0 - 60, ResultSize=2)
    assert list(ps.output[0].extended_properties) == ["EventId", "Recipients", "RecipientStatus", "RecipientCount"]
    assert len(ps.streams.warning) == 1


# ----------------------------------------------------------------------------------------------
# Pure parts: scenario schema, writer fidelity, speed
# ----------------------------------------------------------------------------------------------
@pytest.mark.timeout(20)
def test_tracking_schema_validation_and_builders() -> None:
    with pytest.raises(ScenarioError, match=r"servers\[0\]\.tracking: unknown key\(s\) rate"):
        Scenario.from_dict({"servers": [{"name": "EX01", "tracking": {"rate": 3}}]})
    with pytest.raises(ScenarioError, match=r"tracking\.failure_ratio: must be between 0 and 1"):
        Scenario.from_dict({"tracking": {"failure_ratio": 2}, "servers": [{"name": "EX01"}]})
    with pytest.raises(ScenarioError, match=r"latency_seconds"):
        Scenario.from_dict({"servers": [{"name": "EX01", "tracking": {"latency_seconds": {"min": 5, "max": 1}}}]})
    with pytest.raises(ScenarioError, match=r"latency_seconds: unknown key"):
        Scenario.from_dict({"servers": [{"name": "EX01", "tracking": {"latency_seconds": {"avg": 5}}}]})
    demo = load_scenario(demo_scenario_path())
    assert all(s.tracking is not None and s.tracking.messages_per_minute > 0 for s in demo.servers)
    assert demo.servers[0].tracking is not None and demo.servers[0].tracking.failure_ratio > 0
    bench = build_scenario(3, 2, tracking_per_minute=120)
    assert {s.tracking.messages_per_minute for s in bench.servers if s.tracking} == {120.0}
    assert all(s.tracking is None for s in build_scenario(2, 2).servers)


def _log(rate: float = 300.0) -> TrackingLog:
    scenario = build_scenario(1, 2, tracking_per_minute=rate)
    return TrackingLog(scenario, Timeline(scenario.organisation, lambda: T0))


@pytest.mark.timeout(20)
def test_failure_codes_and_recipient_domains() -> None:
    """``failure_codes`` picks FAIL texts by code (real texts only), ``recipient_domains`` the accepted
    domains the organisation's recipients are in; a scenario without them keeps every message."""
    accepted = [{"domain": "contoso.sim"}, {"domain": "fabrikam.sim"}]
    traffic = {"messages_per_minute": 300, "failure_ratio": 0.5, "history_minutes": 10}
    org = {"organisation": {"domain": "contoso.sim"}, "accepted_domains": accepted}
    planted = Scenario.from_dict(
        {**org, "servers": [{"name": "EX01", "tracking": {
            **traffic, "failure_codes": ["5.1.1", "5.1.10"], "recipient_domains": ["fabrikam.sim"]}}]}
    )  # fmt: skip
    events = TrackingLog(planted, Timeline(planted.organisation, lambda: T0)).events("EX01", T0 - 600, T0)
    fails = [e for e in events if e.event_id == "FAIL"]
    assert len(fails) > 100
    assert {s.split(" ")[1] for e in fails for s in e.recipient_status} == {"5.1.1", "5.1.10"}
    assert {r.rpartition("@")[2] for e in fails for r in e.recipients} == {"fabrikam.sim"}
    assert all(len(e.recipients) == len(e.recipient_status) for e in fails)
    assert {
        e.sender.rpartition("@")[2] for e in events if e.event_id == "RECEIVE" and e.directionality == "Originating"
    } <= {"contoso.sim"}  # senders stay in the organisation domain
    plain = Scenario.from_dict({**org, "servers": [{"name": "EX01", "tracking": traffic}]})
    before = TrackingLog(plain, Timeline(plain.organisation, lambda: T0)).events("EX01", T0 - 600, T0)
    codes = {
        s.split(" ")[1] if s[0] != "[" else "x" for e in before if e.event_id == "FAIL" for s in e.recipient_status
    }
    assert {"5.1.1", "5.1.10", "5.4.1", "5.2.2"} <= codes
    with pytest.raises(ScenarioError, match=r"failure_codes: no real failure text with 5\.1\.6"):
        Scenario.from_dict({"servers": [{"name": "EX01", "tracking": {**traffic, "failure_codes": ["5.1.6"]}}]})
    with pytest.raises(ScenarioError, match=r"recipient_domains: tailspin\.sim is not an accepted domain"):
        Scenario.from_dict(
            {**org, "servers": [{"name": "EX01", "tracking": {**traffic, "recipient_domains": ["tailspin.sim"]}}]}
        )


@pytest.mark.timeout(60)
def test_accepted_domain_changed_recently_over_the_wire(sim_factory: Any) -> None:
    """``changed_minutes_ago`` moves WhenChanged/WhenChangedUTC (as pypsrp reads them); the others keep
    the configuration objects' stable date, days before the start."""
    from tests.integration import conftest

    accepted = [{"domain": "contoso.sim"}, {"name": "Fabrikam", "domain": "fabrikam.sim", "changed_minutes_ago": 40}]
    org = {"accepted_domains": accepted, "servers": [{"name": "EX01"}], "users": {conftest.USER: conftest.PASSWORD}}
    sim, _ = sim_factory(org)
    with conftest.raw_pool(sim) as pool:
        ps = conftest.run_cmdlets(pool, ("Get-AcceptedDomain", {}))
    changed = {
        str(o.adapted_properties["Name"]): datetime.datetime.fromisoformat(str(o.adapted_properties["WhenChangedUTC"]))
        for o in ps.output
    }
    start = sim.tracking.timeline.start
    assert abs(changed["Fabrikam"].timestamp() - (start - 2400)) < 1
    assert changed["Fabrikam"].utcoffset() == datetime.timedelta(0)  # WhenChangedUTC is UTC, as captured
    assert start - changed["contoso.sim"].timestamp() > 2 * 86400
    with pytest.raises(ScenarioError, match="changed_minutes_ago: must be between"):
        Scenario.from_dict(
            {"accepted_domains": [{"domain": "a.sim", "changed_minutes_ago": -1}], "servers": [{"name": "EX01"}]}
        )


@pytest.mark.timeout(20)
def test_fast_writer_and_select_match_the_generic_paths() -> None:
    log = _log()
    events = log.events("EX01", T0 - 600, T0)
    tz = log.tz
    picked = {e.event_id: e for e in events}
    picked |= {f"{e.event_id}-{e.latency_type}": e for e in events if e.event_id == "DELIVER"}
    assert {"FAIL", "DSN", "DEFER", "DELIVER-EndToEnd", "DELIVER-None"} <= set(picked)
    for event in picked.values():
        fast = event_clixml(event, tz)
        model = objects.message_tracking_event(event, tz)
        assert fast == write_clixml(model)  # remoting depth, byte for byte
        assert ET.canonicalize(fast.decode()) == ET.canonicalize(
            ET.tostring(cut(ET.fromstring(write_clixml(model, UNLIMITED))), encoding="unicode")
        )
        # Select-Object reads the whole event on the server; its result is then cut to remoting depth
        names = [*SELECTED, "Reference", "EventData", "Missing"]
        generic = cut(select_object(ET.fromstring(write_clixml(model, UNLIMITED)), names))
        selected = select_clixml(event, names, tz)
        assert ET.canonicalize(selected.decode()) == ET.canonicalize(ET.tostring(generic, encoding="unicode"))
    again = _log().events("EX01", T0 - 600, T0)  # a new log with the same scenario and clock
    assert again == events


@pytest.mark.timeout(60)
def test_generation_at_volume_decodes_on_the_exporter_side() -> None:
    """20,000 events (a busy server's 8 minutes): ordered, and every 97th decodes to the same event.
    How fast this is, is bench/bench_tracking.py's business."""
    log = _log(rate=400.0)
    events = log.events("EX01", T0 - 460, T0)[:20_000]
    assert len(events) == 20_000
    assert [e.ts_ms for e in events] == sorted(e.ts_ms for e in events)
    for event in events[::97]:
        decoded = decode_event(event_clixml(event, log.tz).decode())
        assert decoded is not None
        assert (decoded.event_id, decoded.internal_id, decoded.message_id) == (
            event.event_id,
            event.internal_message_id,
            event.message_id,
        )
        assert int(decoded.timestamp.timestamp() * 1000) == event.ts_ms
