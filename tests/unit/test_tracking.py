"""Tracking aggregation: dedupe, latency, stuck messages, bounded memory, truncation, state file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from exporter.exchange.tracking import (
    TrackingCollector,
    TrackingEvent,
    TrackingOptions,
    WatermarkStore,
    flow_direction,
    parse_event,
    render_tracking,
)
from exporter.settings import Settings

T0 = datetime(2026, 11, 27, 1, 0, 0, tzinfo=UTC)
SENDER_ID = "[{LED=550 5.7.1 Sender ID (PRA) Not Permitted};{MSG=};{FQDN=};{IP=192.0.2.1};{LRT=}]"


def opts(**kw: Any) -> TrackingOptions:
    base = dict(
        interval=60.0,
        overlap=120.0,
        max_window=3600.0,
        initial_lookback=300.0,
        stuck_after=900.0,
        forget_after=86400.0,
        max_tracked_messages=1000,
        buckets=(1.0, 5.0, 30.0),
        result_size="Unlimited",
        select=True,
    )
    base.update(kw)
    return TrackingOptions(**base)  # type: ignore[arg-type]


def collector(tmp_path: Path, **kw: Any) -> TrackingCollector:
    return TrackingCollector(None, opts(**kw), WatermarkStore(tmp_path / "marks.json"))  # type: ignore[arg-type]


def ev(
    seconds: float,
    event_id: str,
    msg: str = "m1",
    source: str = "SMTP",
    status: tuple[str, ...] = (),
    latency: float | None = None,
    internal: str | None = None,
) -> TrackingEvent:
    return TrackingEvent(
        timestamp=T0 + timedelta(seconds=seconds),
        event_id=event_id,
        source=source,
        internal_id=internal or f"id-{msg}",
        message_id=f"<{msg}@ex01.contoso.sim>",
        recipient_status=status,
        latency=latency,
    )


def test_overlapping_windows_count_each_event_once(tmp_path: Path) -> None:
    c = collector(tmp_path)
    first = [ev(0, "RECEIVE"), ev(2, "SEND")]
    r1 = c.ingest("EX01", first, T0 - timedelta(minutes=1), T0 + timedelta(seconds=10))
    r2 = c.ingest("EX01", [*first, ev(20, "RECEIVE", "m2")], T0, T0 + timedelta(seconds=30))
    assert (r1.new_events, r2.new_events) == (2, 1)
    assert r2.events == {("RECEIVE", "SMTP"): 2, ("SEND", "SMTP"): 1}


def test_latency_from_field_or_pairing_once_per_message(tmp_path: Path) -> None:
    c = collector(tmp_path)
    events = [
        ev(0, "RECEIVE", "a"),
        ev(3, "SEND", "a"),
        ev(4, "DELIVER", "a", source="STOREDRIVER", latency=4.0),
        ev(0, "RECEIVE", "b"),
        ev(0.5, "DELIVER", "b", source="STOREDRIVER", latency=0.5),
        ev(10, "DELIVER", "c", source="STOREDRIVER", latency=40.0),  # RECEIVE before our window
        ev(12, "DELIVER", "d", source="STOREDRIVER"),  # neither field nor RECEIVE: no observation
    ]
    r = c.ingest("EX01", events, T0, T0 + timedelta(minutes=1))
    # a: paired 3 s at SEND (DELIVER not counted again); b: field 0.5 s; c: field 40 s
    assert r.latency_buckets == (1, 2, 2, 3)
    assert r.latency_sum == pytest.approx(43.5)


def test_stuck_messages_and_failures(tmp_path: Path) -> None:
    c = collector(tmp_path, stuck_after=600.0)
    events = [
        ev(0, "RECEIVE", "stuck"),
        ev(1, "RECEIVE", "failed"),
        ev(2, "FAIL", "failed", source="ROUTING", status=("550 5.1.1 RESOLVER.ADR.RecipNotFound; not found",)),
        ev(3, "RECEIVE", "fresh"),
        ev(4, "FAIL", "x", status=(SENDER_ID, "550 5.1.1 user unknown")),
    ]
    r = c.ingest("EX01", events, T0, T0 + timedelta(seconds=300))
    assert r.stuck == 0  # nothing older than 10 minutes yet
    r = c.ingest("EX01", [], T0 + timedelta(seconds=300), T0 + timedelta(seconds=700))
    assert r.stuck == 2  # "stuck" and "fresh": received > 600 s ago, no terminal event
    assert r.failures == {("5.1.1", "recipient_unknown"): 2, ("5.7.1", "remote_rejected"): 1}


def test_pairing_memory_is_bounded_and_evictions_counted(tmp_path: Path) -> None:
    c = collector(tmp_path, max_tracked_messages=100)
    events = [ev(i, "RECEIVE", f"m{i}") for i in range(150)]
    r = c.ingest("EX01", events, T0, T0 + timedelta(seconds=200))
    assert r.evictions == 50


def test_forgotten_after_forget_after(tmp_path: Path) -> None:
    c = collector(tmp_path, stuck_after=60.0, forget_after=3600.0)
    c.ingest("EX01", [ev(0, "RECEIVE")], T0, T0 + timedelta(seconds=10))
    assert c.ingest("EX01", [], T0, T0 + timedelta(seconds=120)).stuck == 1
    assert c.ingest("EX01", [], T0, T0 + timedelta(seconds=3700)).stuck == 0


def test_window_overlap_first_start_and_outage_cap(tmp_path: Path) -> None:
    c = collector(tmp_path, overlap=120.0, max_window=3600.0, initial_lookback=300.0)
    now = T0 + timedelta(hours=5)
    start, end, skipped = c.window("EX01", now)
    assert (end - start, skipped) == (timedelta(seconds=300), 0.0)
    c.ingest("EX01", [], start, T0)  # watermark at T0
    start, _, skipped = c.window("EX01", now)
    assert start == now - timedelta(seconds=3600)
    assert skipped == pytest.approx(5 * 3600 + 120 - 3600)
    r = c.ingest("EX01", [], start, now, skipped=skipped)
    assert r.skipped_seconds == skipped
    start, _, skipped = c.window("EX01", now + timedelta(minutes=1))
    assert (start, skipped) == (now - timedelta(seconds=120), 0.0)


def test_truncated_reply_continues_from_the_last_event(tmp_path: Path) -> None:
    c = collector(tmp_path)
    events = [ev(i, "RECEIVE", f"m{i}") for i in range(5)]
    r = c.ingest("EX01", events, T0, T0 + timedelta(minutes=10), truncated=True)
    assert r.truncated_polls == 1
    assert WatermarkStore(tmp_path / "marks.json").get("EX01") == (
        T0 + timedelta(seconds=4),
        frozenset({("id-m4", "RECEIVE")}),
    )


def test_truncation_at_one_instant_does_not_livelock(tmp_path: Path) -> None:
    c = collector(tmp_path)
    tie = [ev(0, "RECEIVE", f"m{i}") for i in range(3)]  # -ResultSize 3, more events at T0
    c.ingest("EX01", tie, T0, T0 + timedelta(minutes=1), truncated=True)
    start, _, _ = c.window("EX01", T0 + timedelta(minutes=1))
    assert start > T0  # moved past the instant instead of asking for it again


def test_restart_after_a_truncated_poll_does_not_recount_ties(tmp_path: Path) -> None:
    c = collector(tmp_path)
    batch = [ev(0, "RECEIVE", "a"), ev(5, "RECEIVE", "b"), ev(5, "RECEIVE", "c")]
    c.ingest("EX01", batch, T0, T0 + timedelta(minutes=1), truncated=True)
    restarted = collector(tmp_path)
    start, end, _ = restarted.window("EX01", T0 + timedelta(minutes=1))
    assert start == T0 + timedelta(seconds=5)
    r = restarted.ingest("EX01", [ev(5, "RECEIVE", "b"), ev(5, "RECEIVE", "c"), ev(5, "RECEIVE", "d")], start, end)
    assert r.new_events == 1  # only "d" is new


def test_clock_stepping_back_does_not_recount(tmp_path: Path) -> None:
    c = collector(tmp_path, overlap=120.0)
    events = [ev(i, "RECEIVE", f"m{i}") for i in range(0, 300, 10)]
    c.ingest("EX01", events, T0 - timedelta(minutes=1), T0 + timedelta(seconds=300))
    back = T0 + timedelta(seconds=200)  # the exporter's clock jumped back 100 s
    start, end, _ = c.window("EX01", back)
    r = c.ingest("EX01", [e for e in events if start <= e.timestamp < end], start, end)
    assert r.new_events == 0
    start, _, _ = c.window("EX01", T0 + timedelta(seconds=400))
    assert start == T0 + timedelta(seconds=300 - 120)


def test_same_instant_in_another_offset_is_one_event(tmp_path: Path) -> None:
    from datetime import timezone

    c = collector(tmp_path)
    utc = ev(0, "RECEIVE")
    shifted = TrackingEvent(**{**utc.__dict__, "timestamp": utc.timestamp.astimezone(timezone(timedelta(hours=2)))})
    assert c.ingest("EX01", [utc, shifted], T0, T0 + timedelta(seconds=5)).new_events == 1


def test_latency_survives_transfer_or_partial_failure_and_is_never_negative(tmp_path: Path) -> None:
    c = collector(tmp_path)
    events = [
        ev(0, "RECEIVE", "t"),
        ev(1, "TRANSFER", "t"),
        ev(4, "DELIVER", "t", source="STOREDRIVER"),
        ev(0, "RECEIVE", "f"),
        ev(1, "FAIL", "f", status=("550 5.1.1 unknown",)),
        ev(2, "DELIVER", "f", latency=2.0),
        ev(3, "DELIVER", "n", latency=-5.0),
    ]
    r = c.ingest("EX01", events, T0, T0 + timedelta(seconds=10))
    assert r.latency_buckets == (1, 3, 3, 3)  # 0 s (clamped), 2 s and 4 s (buckets 1, 5, 30 s)
    assert r.latency_sum == pytest.approx(6.0)
    assert r.stuck == 0


def test_a_skipped_gap_does_not_leave_phantom_stuck_messages(tmp_path: Path) -> None:
    c = collector(tmp_path, stuck_after=60.0, max_window=600.0)
    c.ingest("EX01", [ev(0, "RECEIVE", "gone")], T0 - timedelta(minutes=1), T0 + timedelta(seconds=10))
    now = T0 + timedelta(hours=2)
    start, end, skipped = c.window("EX01", now)
    assert skipped > 0
    assert c.ingest("EX01", [], start, end, skipped=skipped).stuck == 0


def test_watermark_survives_restart_and_bad_files_are_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "marks.json"
    c = collector(tmp_path)
    c.ingest("EX01", [], T0, T0 + timedelta(minutes=1))
    restarted = collector(tmp_path)
    start, _, _ = restarted.window("EX01", T0 + timedelta(minutes=2))
    assert start == T0 + timedelta(minutes=1)  # no overlap right after a restart: no double count
    restarted.ingest("EX01", [], start, T0 + timedelta(minutes=2))
    start, _, _ = restarted.window("EX01", T0 + timedelta(minutes=3))
    assert start == T0 + timedelta(minutes=1)  # the overlap never reaches back before the restart point
    restarted.ingest("EX01", [], start, T0 + timedelta(minutes=5))
    start, _, _ = restarted.window("EX01", T0 + timedelta(minutes=6))
    assert start == T0 + timedelta(minutes=5) - timedelta(seconds=120)
    for garbage in ("{not json", '{"version": 99, "watermarks": {}}', "[]", ""):
        path.write_text(garbage)
        fresh = collector(tmp_path)
        start, end, _ = fresh.window("EX01", T0)
        assert end - start == timedelta(seconds=300)  # treated as a first start


def test_unknown_event_ids_and_sources_are_bounded(tmp_path: Path) -> None:
    c = collector(tmp_path)
    r = c.ingest("EX01", [ev(0, "SOMETHINGNEW", source="NEWSOURCE")], T0, T0 + timedelta(seconds=5))
    assert r.events == {("OTHER", "OTHER"): 1}


def test_parse_event_from_selected_object_shape() -> None:
    obj = {
        "Timestamp": "2026-11-27T02:00:00.1234567+01:00",
        "EventId": "Deliver",
        "Source": "StoreDriver",
        "InternalMessageId": "25769803777",
        "MessageId": "<x@ex01>",
        "RecipientStatus": ["250 2.0.0 OK"],
        "MessageLatency": "00:00:01.5000000",
        "MessageLatencyType": "EndToEnd",
    }
    e = parse_event(obj)
    assert e is not None
    assert (e.event_id, e.source, e.latency) == ("DELIVER", "STOREDRIVER", 1.5)
    assert e.timestamp == datetime(2026, 11, 27, 1, 0, 0, 123456, tzinfo=UTC)
    assert parse_event({"EventId": "RECEIVE"}) is None


def test_render_histogram_and_counters(tmp_path: Path) -> None:
    c = collector(tmp_path)
    r = c.ingest("EX01", [ev(0, "RECEIVE"), ev(2, "SEND")], T0, T0 + timedelta(seconds=10))

    class Fixed:
        def collect(self):  # type: ignore[no-untyped-def]
            return render_tracking([r], (1.0, 5.0, 30.0))

    reg = CollectorRegistry()
    reg.register(Fixed())  # type: ignore[arg-type]
    bucket = {"server": "EX01", "le": "5.0"}
    assert reg.get_sample_value("mailflow_tracking_delivery_latency_seconds_bucket", bucket) == 1
    assert reg.get_sample_value("mailflow_tracking_delivery_latency_seconds_count", {"server": "EX01"}) == 1
    assert (
        reg.get_sample_value("mailflow_tracking_events_total", {"server": "EX01", "event_id": "SEND", "source": "SMTP"})
        == 1
    )


def test_settings_reject_inconsistent_tracking_options() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        Settings.model_validate({"collectors": {"tracking": {"latency_buckets": [5, 1]}}})
    with pytest.raises(ValueError, match="forget_after must be longer than stuck_after"):
        Settings.model_validate({"collectors": {"tracking": {"stuck_after": "2d"}}})


SELECTED = (
    '<Obj RefId="0"><TN RefId="0"><T>Selected.Microsoft.Exchange.Management.TransportLogSearchTasks.'
    "MessageTrackingEvent</T><T>System.Management.Automation.PSCustomObject</T><T>System.Object</T></TN>"
    "<ToString>@{{...}}</ToString><MS>"
    '<DT N="Timestamp">2026-11-27T02:39:46.990000+01:00</DT><S N="EventId">FAIL</S><S N="Source">ROUTING</S>'
    '<S N="InternalMessageId">1900003591494372</S><S N="MessageId">&lt;a_x005F_b@ex01&gt;</S>'
    "{status}{latency}</MS></Obj>"
)
LIST = (
    '<Obj N="RecipientStatus" RefId="1"><TN RefId="1"><T>System.String[]</T><T>System.Array</T>'
    "<T>System.Object</T></TN><LST><S>550 5.1.1 user &amp; co unknown</S><S>_x000A_</S></LST></Obj>"
)
LATENCY = (
    '<Obj N="MessageLatency" RefId="2"><TN RefId="2"><T>Microsoft.Exchange.Data.EnhancedTimeSpan</T>'
    "<T>System.ValueType</T><T>System.Object</T></TN><ToString>00:00:01.5000000</ToString>"
    '<Props><I32 N="Days">0</I32></Props></Obj>'
)


@pytest.mark.parametrize(
    ("status", "latency"),
    [(LIST, LATENCY), ('<Nil N="RecipientStatus" />', '<Nil N="MessageLatency" />'), ("", "")],
)
def test_text_decoder_matches_xml_decoder(status: str, latency: str) -> None:
    from exporter.exchange.tracking import decode_event_text, decode_event_xml

    xml = SELECTED.format(status=status, latency=latency)
    fast = decode_event_text(xml)
    assert fast == decode_event_xml(xml)
    assert fast is not None and fast.message_id == "<a_b@ex01>"
    assert fast.timestamp == datetime(2026, 11, 27, 1, 39, 46, 990000, tzinfo=UTC)
    if status == LIST:
        assert fast.recipient_status == ("550 5.1.1 user & co unknown", "\n")
        assert fast.latency == 1.5


def test_text_decoder_refuses_ambiguous_shapes() -> None:
    from exporter.exchange.tracking import decode_event, decode_event_text

    doubled = SELECTED.format(status="", latency="").replace("</MS>", '<S N="EventId">SEND</S></MS>')
    with pytest.raises(ValueError, match=r"twice|unexpected form"):
        decode_event_text(doubled)
    referenced = SELECTED.format(status='<Ref N="RecipientStatus" RefId="9" />', latency="")
    with pytest.raises(ValueError):
        decode_event_text(referenced)
    with pytest.raises(ValueError):  # the XML path refuses it too: the generic decoder takes over
        decode_event(referenced)


def test_text_decoder_leaves_other_field_forms_to_the_xml_parser() -> None:
    from exporter.exchange.tracking import decode_event, decode_event_text

    enum_event = SELECTED.format(status="", latency="").replace(
        '<S N="EventId">FAIL</S>',
        '<Obj N="EventId" RefId="5"><TN RefId="5"><T>X.EventId</T><T>System.Enum</T></TN>'
        "<ToString>DELIVER</ToString><I32>3</I32></Obj>",
    )
    with pytest.raises(ValueError, match="a field in an unexpected form"):
        decode_event_text(enum_event)
    decoded = decode_event(enum_event)
    assert decoded is not None and decoded.event_id == "DELIVER"
    with pytest.raises(ValueError, match="character references"):
        decode_event_text(SELECTED.format(status="", latency="").replace("ROUTING", "ROUT&#73;NG"))


def flowing(
    seconds: float, event_id: str, source: str, directionality: str = "", connector: str = "", msg: str = "m1"
) -> TrackingEvent:
    base = ev(seconds, event_id, msg, source)
    return TrackingEvent(**{**base.__dict__, "directionality": directionality, "connector_id": connector})


@pytest.mark.parametrize(
    ("event", "direction"),
    [
        (("DELIVER", "STOREDRIVER", "Incoming"), "inbound"),
        (("DELIVER", "STOREDRIVER", "Originating"), "internal"),
        (("DELIVER", "STOREDRIVER", "Undefined"), "unknown"),
        (("DELIVER", "STOREDRIVER", ""), "unknown"),
        (("SEND", "SMTP", "Originating", "Outbound to Internet"), "outbound"),
        (("SEND", "SMTP", "Incoming", "EdgeSync - Default-First-Site-Name to Internet"), "outbound"),
        (("SEND", "SMTP", "Originating", "Intra-Organization SMTP Send Connector"), None),
        (("SEND", "SMTP", "Originating", "intra-organization smtp send connector"), None),
        (("SEND", "SMTP", "Originating", ""), None),  # no connector logged: not known to leave
        (("RECEIVE", "SMTP", "Incoming", "EX01\\Default Frontend EX01"), None),
        (("SEND", "STOREDRIVER", "Originating"), None),
        (("FAIL", "SMTP", "Incoming"), None),
    ],
)
def test_flow_direction(event: tuple[str, ...], direction: str | None) -> None:
    assert flow_direction(flowing(0, *event)) == direction


def test_flow_and_arrivals_are_counted_once_and_per_window(tmp_path: Path) -> None:
    c = collector(tmp_path)
    first = [
        flowing(0, "RECEIVE", "SMTP", "Incoming", "EX01\\Default Frontend EX01", msg="in"),
        flowing(1, "RECEIVE", "SMTP", "Originating", "EX01\\Default EX01", msg="out"),  # a submission: not arrived
        flowing(2, "DELIVER", "STOREDRIVER", "Incoming", msg="in"),
        flowing(3, "SEND", "SMTP", "Originating", "Outbound to Internet", msg="out"),
    ]
    r1 = c.ingest("EX01", first, T0 - timedelta(minutes=1), T0 + timedelta(seconds=10))
    assert (r1.flow, r1.received_inbound) == ({"inbound": 1, "outbound": 1}, 1)
    more = [flowing(20, "DELIVER", "STOREDRIVER", "Originating", msg="int")]
    r2 = c.ingest("EX01", [*first, *more], T0, T0 + timedelta(seconds=30))  # overlapping window
    assert (r2.flow, r2.received_inbound) == ({"inbound": 1, "outbound": 1, "internal": 1}, 1)
    assert (r2.recent_flow, r2.recent_received_inbound) == ({"inbound": 1, "outbound": 1, "internal": 1}, 1)
    families = {m.name: m for m in render_tracking([r2], opts().buckets)}
    samples = {s.labels["direction"]: s.value for s in families["mailflow_tracking_messages"].samples}
    assert samples == {"inbound": 1, "outbound": 1, "internal": 1, "unknown": 0}


def test_recent_flow_covers_the_new_log_time_of_several_polls(tmp_path: Path) -> None:
    """The daemon polls every minute with a 2-minute overlap: each poll reads about one minute of new log,
    so silence is judged over the recent polls together (up to 15 minutes), not over one poll."""
    c = collector(tmp_path)
    arrived = flowing(10, "RECEIVE", "SMTP", "Incoming", "EX01\\Default Frontend EX01", msg="in")
    first = c.ingest("EX01", [], T0 - timedelta(minutes=5), T0)
    assert (first.recent_seconds, first.recent_received_inbound) == (300.0, 0)
    results = {}
    for minute in range(1, 20):
        end = T0 + timedelta(minutes=minute)
        events = [arrived] if minute == 1 else []  # at T0+10s: read by the poll ending at T0+1m
        results[minute] = c.ingest("EX01", events, end - timedelta(minutes=3), end)
    assert (results[1].recent_seconds, results[1].recent_received_inbound) == (360.0, 1)
    assert results[10].recent_seconds == 900.0  # 5 + 10 minutes read, none of it twice
    assert results[16].recent_received_inbound == 1  # the poll that read it is 15 minutes old
    assert results[17].recent_received_inbound == 0  # aged out: 15 minutes without an arrival
    assert results[19].recent_seconds == 960.0  # the polls of the last 15 minutes, both ends included


@pytest.mark.parametrize(
    "field",
    ['<Nil N="ConnectorId" />', '<S N="ConnectorId" />', '<S N="ConnectorId">EX01\\Default EX01</S>'],
)
def test_text_decoder_reads_direction_fields_in_every_form(field: str) -> None:
    """Real Select-Object output writes a null string as Nil: the text path must take it, not fall back."""
    from exporter.exchange.tracking import decode_event_text, decode_event_xml

    xml = SELECTED.format(status="", latency='<S N="Directionality">Incoming</S>' + field)
    fast = decode_event_text(xml)
    assert fast == decode_event_xml(xml)
    assert fast is not None and fast.directionality == "Incoming"
    assert fast.connector_id == ("EX01\\Default EX01" if "Default" in field else "")


@pytest.mark.parametrize("odd", ["<S N='EventId'>SEND</S>", '<S N ="EventId">SEND</S>', '<S N= "EventId">SEND</S>'])
def test_text_decoder_declines_unusual_attribute_forms(odd: str) -> None:
    from exporter.exchange.tracking import decode_event, decode_event_text, decode_event_xml

    xml = SELECTED.format(status="", latency="").replace('<S N="EventId">FAIL</S>', odd)
    with pytest.raises(ValueError, match="unusual form"):
        decode_event_text(xml)
    event = decode_event(xml)
    assert event == decode_event_xml(xml) and event is not None and event.event_id == "SEND"
