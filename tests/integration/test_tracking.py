"""The tracking collector against the simulator's tracking streams, over real sockets.

Ground truth comes from querying the simulator directly with pypsrp and counting with plain code,
independently of the collector's dedupe, pairing and windowing logic.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pypsrp.powershell import PowerShell

from exporter.exchange.clixml import flatten
from exporter.service import Service
from tests.integration.conftest import SimFactory, raw_pool, settings_for, small_org

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

START = 1_800_000_000.0  # the shared fake clock starts here (2027-01-15)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def org(**tracking: Any) -> dict[str, Any]:
    data = small_org(("EX01",))
    data["servers"][0]["tracking"] = {
        "messages_per_minute": 20,
        "failure_ratio": 0.1,
        "stuck_ratio": 0.1,
        "latency_seconds": {"min": 0.5, "max": 20},
        "history_minutes": 60,
        **tracking,
    }
    return data


def ground_truth(sim: Any, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Every event in [start, end) straight from the simulator, no Select-Object, no dedupe."""
    with raw_pool(sim) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-MessageTrackingLog").add_parameter("Server", "EX01")
        ps.add_parameter("Start", start.isoformat()).add_parameter("End", end.isoformat())
        ps.add_parameter("ResultSize", "Unlimited")
        return [flatten(o) for o in ps.invoke()]


def counted(service: Service) -> Counter[str]:
    out: Counter[str] = Counter()
    for metric in service.registry.collect():
        if metric.name == "mailflow_tracking_events":
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["event_id"]] += int(sample.value)
    return out


def make(sim_factory: SimFactory, tmp_path: Path, clock: Clock, **overrides: Any) -> tuple[Any, Service]:
    from exporter.simulator import Scenario, Simulator

    scenario = Scenario.from_dict(org())
    sim = Simulator(scenario, host="127.0.0.1", tls=False, clock=clock)
    sim.start()
    tracking = {"initial_lookback": "10m", "overlap": "2m", "stuck_after": "5m", **overrides}
    settings = settings_for(
        sim,
        scenario,
        overrides={"state_dir": str(tmp_path), "collectors": {"queues": {"enabled": False}, "tracking": tracking}},
    )
    return sim, Service(settings, clock=clock)


def window_truth(sim: Any, start: float, end: float) -> Counter[str]:
    events = ground_truth(sim, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC))
    return Counter(str(e["EventId"]).upper() for e in events)


def test_counts_match_and_overlapping_polls_never_double_count(sim_factory: SimFactory, tmp_path: Path) -> None:
    clock = Clock(START)
    sim, service = make(sim_factory, tmp_path, clock)
    try:
        service.poll_all()
        for _ in range(4):
            clock.now += 45  # shorter than the 2 min overlap: every poll re-reads counted events
            snaps = service.poll_all()
            assert all(s.ok for s in snaps), [s.message for s in snaps]
        expected = window_truth(sim, START - 600, clock.now)
        assert sum(expected.values()) > 100
        assert counted(service) == expected
    finally:
        service.stop()
        sim.stop()


def flow(service: Service) -> dict[str, int]:
    out: dict[str, int] = {}
    for metric in service.registry.collect():
        if metric.name == "mailflow_tracking_messages":
            out |= {s.labels["direction"]: int(s.value) for s in metric.samples if s.name.endswith("_total")}
        if metric.name == "mailflow_tracking_received_from_outside":
            out["arrived"] = int(sum(s.value for s in metric.samples if s.name.endswith("_total")))
    return out


def test_mail_flow_by_direction(sim_factory: SimFactory, tmp_path: Path) -> None:
    """Inbound, internal and outbound counts equal a plain count of the raw events: mailbox deliveries by
    Directionality, sends over a connector other than the intra-organisation one, arrivals from outside."""
    clock = Clock(START)
    sim, service = make(sim_factory, tmp_path, clock)
    try:
        service.poll_all()
        clock.now += 300
        assert all(s.ok for s in service.poll_all())
        raw = ground_truth(sim, datetime.fromtimestamp(START - 600, UTC), datetime.fromtimestamp(clock.now, UTC))
        expected = Counter[str]()
        for e in raw:
            event, source, direction = str(e["EventId"]), str(e["Source"]), str(e["Directionality"])
            if event == "DELIVER" and source == "STOREDRIVER":
                expected["inbound" if direction == "Incoming" else "internal"] += 1
            elif event == "SEND" and source == "SMTP" and e["ConnectorId"] != "Intra-Organization SMTP Send Connector":
                expected["outbound"] += 1
            elif event == "RECEIVE" and source == "SMTP" and direction == "Incoming":
                expected["arrived"] += 1
        assert min(expected["inbound"], expected["internal"], expected["outbound"], expected["arrived"]) > 5
        assert flow(service) == {"unknown": 0, **expected}
    finally:
        service.stop()
        sim.stop()


def test_restart_from_the_state_file_neither_loses_nor_repeats(sim_factory: SimFactory, tmp_path: Path) -> None:
    clock = Clock(START)
    sim, first = make(sim_factory, tmp_path, clock)
    first.poll_all()
    before = counted(first)
    first.stop()
    sim.stop()
    clock.now += 90
    sim, second = make(sim_factory, tmp_path, clock)
    try:
        second.poll_all()
        after = counted(second)
        assert after == window_truth(sim, START, clock.now)  # only what happened since the watermark
        assert before + after == window_truth(sim, START - 600, clock.now)
    finally:
        second.stop()
        sim.stop()


def test_truncated_replies_are_counted_and_continued(sim_factory: SimFactory, tmp_path: Path) -> None:
    clock = Clock(START)
    sim, service = make(sim_factory, tmp_path, clock, result_size=50)
    try:
        for _ in range(30):
            service.poll_all()
            clock.now += 1
            result = service.store.fresh_results("tracking", 3.0)["EX01"]
            if result.new_events == 0:
                break
        assert result.truncated_polls >= 2
        assert counted(service) == window_truth(sim, START - 600, clock.now - 1)
    finally:
        service.stop()
        sim.stop()


def test_stuck_messages_and_latency(sim_factory: SimFactory, tmp_path: Path) -> None:
    clock = Clock(START)
    sim, service = make(sim_factory, tmp_path, clock)
    try:
        service.poll_all()
        clock.now += 60
        service.poll_all()
        events = ground_truth(sim, datetime.fromtimestamp(START - 600, UTC), datetime.fromtimestamp(clock.now, UTC))
        by_message: dict[str, list[dict[str, Any]]] = {}
        for e in events:
            by_message.setdefault(str(e["MessageId"]), []).append(e)
        terminal = {"DELIVER", "SEND", "TRANSFER", "FAIL", "DROP"}
        cutoff = datetime.fromtimestamp(clock.now - 300, UTC)
        stuck = 0
        finished = 0
        for evs in by_message.values():
            evs.sort(key=lambda e: datetime.fromisoformat(str(e["Timestamp"])))
            ids = [str(e["EventId"]).upper() for e in evs]
            received = next((e for e, i in zip(evs, ids, strict=True) if i == "RECEIVE"), None)
            first_end = next((e for e, i in zip(evs, ids, strict=True) if i in terminal), None)
            if (
                received is not None
                and first_end is None
                and datetime.fromisoformat(str(received["Timestamp"])) <= cutoff
            ):
                stuck += 1
            # one latency observation per message: at its first terminal event, if that is a
            # DELIVER/SEND carrying MessageLatency or preceded by the RECEIVE
            if first_end is not None and str(first_end["EventId"]).upper() in ("DELIVER", "SEND"):
                received_before = received is not None and evs.index(received) < evs.index(first_end)
                if first_end.get("MessageLatency") or received_before:
                    finished += 1
        assert stuck > 0
        reg = service.registry
        assert reg.get_sample_value("mailflow_tracking_stuck_messages", {"server": "EX01"}) == stuck
        count = reg.get_sample_value("mailflow_tracking_delivery_latency_seconds_count", {"server": "EX01"})
        assert count == finished
        assert sum(
            m.value
            for metric in reg.collect()
            if metric.name == "mailflow_tracking_failures"
            for m in metric.samples
            if m.name.endswith("_total")
        ) == sum(len(e.get("RecipientStatus") or [""]) for e in events if str(e["EventId"]).upper() == "FAIL")
    finally:
        service.stop()
        sim.stop()


def test_select_object_refused_falls_back_to_full_objects(sim_factory: SimFactory, tmp_path: Path) -> None:
    clock = Clock(START)
    sim, service = make(sim_factory, tmp_path, clock)
    try:
        sim.faults.set(
            "EX01",
            "error_record",
            cmdlet="Select-Object",
            message="The term 'Select-Object' is not recognized as the name of a cmdlet, function, script file, "
            "or operable program.",
        )
        snaps = service.poll_all()
        assert all(s.ok for s in snaps), [s.message for s in snaps]
        assert service.sessions.sessions()[0].select_supported is False
        assert counted(service) == window_truth(sim, START - 600, clock.now)
    finally:
        service.stop()
        sim.stop()


def test_window_is_capped_after_a_long_outage(sim_factory: SimFactory, tmp_path: Path) -> None:
    clock = Clock(START)
    sim, service = make(sim_factory, tmp_path, clock, max_window="15m")
    try:
        service.poll_all()
        clock.now += 3600  # an hour without polls
        service.poll_all()
        skipped = service.registry.get_sample_value("mailflow_tracking_skipped_seconds_total", {"server": "EX01"})
        assert skipped == pytest.approx(3600 + 120 - 900)
        assert counted(service) == window_truth(sim, START - 600, START) + window_truth(sim, clock.now - 900, clock.now)
    finally:
        service.stop()
        sim.stop()


@pytest.mark.parametrize("select", [True, False])
def test_fast_decoders_agree_with_the_generic_path(sim_factory: SimFactory, select: bool) -> None:
    """Every event the simulator serves decodes identically via text, XML parser and pypsrp-equivalent objects."""
    from exporter.exchange import wire
    from exporter.exchange.tracking import SELECT_PROPERTIES, decode_event_text, decode_event_xml, parse_event

    sim, _ = sim_factory(org(messages_per_minute=60, failure_ratio=0.2, stuck_ratio=0.1))
    captured: list[str] = []

    def capture(xml: str) -> Any:
        captured.append(xml)
        return wire.decode_output(xml)

    with raw_pool(sim) as pool:
        wire.install(pool)
        wire.set_decoder(pool, capture)
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-MessageTrackingLog").add_parameter("Server", "EX01").add_parameter("ResultSize", "400")
        if select:
            ps.add_cmdlet("Select-Object").add_parameter("Property", list(SELECT_PROPERTIES))
        generic = ps.invoke()
    assert len(captured) == len(generic) == 400
    kinds = set()
    for xml, obj in zip(captured, generic, strict=True):
        expected = parse_event(obj)
        assert decode_event_xml(xml) == expected
        assert decode_event_text(xml) == expected
        assert expected is not None
        kinds.add((expected.event_id, bool(expected.recipient_status), expected.latency is not None))
    assert ("FAIL", True, False) in kinds and ("DELIVER", False, True) in kinds
