"""Stuck and unfollowed messages judged across servers by MessageId (the collector's ``ingest``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from exporter.exchange.tracking import (
    TrackingCollector,
    TrackingEvent,
    finish_horizon,
    render_tracking,
)
from tests.unit.test_tracking import collector as tracking_collector

T0 = datetime(2026, 11, 27, 1, 0, 0, tzinfo=UTC)
LATER = T0 + timedelta(minutes=20)  # every message below is older than stuck_after (10 min) by then


def collector(tmp_path: Path, **kw: Any) -> TrackingCollector:
    """test_tracking's collector, with messages stuck after 10 minutes unless told otherwise."""
    return tracking_collector(tmp_path, **{"stuck_after": 600.0, **kw})


def ev(seconds: float, event_id: str, msg: str, source: str = "SMTP", internal: str = "") -> TrackingEvent:
    return TrackingEvent(
        timestamp=T0 + timedelta(seconds=seconds),
        event_id=event_id,
        source=source,
        internal_id=internal or f"{abs(hash((msg, seconds))) % 10**9}",
        message_id=f"<{msg}@ex01.contoso.sim>" if msg else "",
        recipient_status=(),
        latency=None,
    )


def submitted(msg: str, at: float = 0.0) -> list[TrackingEvent]:
    """What the submitting server logs: NOTIFYMAPI, RECEIVE (STOREDRIVER), SUBMIT."""
    return [
        ev(at, "NOTIFYMAPI", msg, "STOREDRIVER"),
        ev(at + 0.2, "RECEIVE", msg, "STOREDRIVER"),
        ev(at + 0.5, "SUBMIT", msg, "STOREDRIVER"),
    ]


def continued(msg: str, at: float = 1.0) -> list[TrackingEvent]:
    """What the Transport service that took it logs: HAREDIRECT, RECEIVE (SMTP), AGENTINFO, SEND, DELIVER."""
    return [
        ev(at, "HAREDIRECT", msg),
        ev(at + 0.1, "RECEIVE", msg),
        ev(at + 0.2, "AGENTINFO", msg, "AGENT"),
        ev(at + 2, "SEND", msg),
        ev(at + 3, "DELIVER", msg, "STOREDRIVER"),
    ]


def judge(c: TrackingCollector, server: str) -> tuple[int, int]:
    result = c.ingest(server, [], LATER, LATER + timedelta(seconds=1))
    return result.stuck, result.unfollowed


def test_continued_on_the_other_server_whichever_is_read_first(tmp_path: Path) -> None:
    c = collector(tmp_path)
    c.ingest("EX01", submitted("a"), T0, T0 + timedelta(seconds=60))  # submitter first
    c.ingest("EX02", continued("a"), T0, T0 + timedelta(seconds=60))
    c.ingest("EX02", continued("b", 5), T0, T0 + timedelta(seconds=60))  # taker first
    c.ingest("EX01", submitted("b", 4), T0, T0 + timedelta(seconds=60))
    assert judge(c, "EX01") == (0, 0)
    result = c.ingest("EX02", [], LATER, LATER + timedelta(seconds=1))
    assert (result.stuck, result.unfollowed, sum(result.latency_buckets[-1:])) == (0, 0, 2)  # one observation each


def test_a_submission_nobody_polled_shows_is_unknown_then_followed_when_read(tmp_path: Path) -> None:
    c = collector(tmp_path)
    c.ingest("EX01", submitted("a"), T0, T0 + timedelta(seconds=60))
    assert judge(c, "EX01") == (0, 1)
    metrics = {m.name: m for m in render_tracking([c.ingest("EX01", [], LATER, LATER)], (1.0, 5.0, 30.0))}
    assert metrics["mailflow_tracking_unfollowed_messages"].samples[0].value == 1
    c.ingest("EX02", continued("a")[-2:], T0, LATER)  # only its SEND and DELIVER are still in EX02's window
    assert judge(c, "EX01") == (0, 0)


def test_taken_by_its_own_transport_service_it_is_judged_here(tmp_path: Path) -> None:
    c = collector(tmp_path)
    local = [*submitted("a"), *continued("a")[:3]]  # received over SMTP here, never sent on
    c.ingest("EX01", local, T0, T0 + timedelta(seconds=60))
    assert judge(c, "EX01") == (1, 0)
    done = [*submitted("b"), *continued("b")]
    result = c.ingest("EX01", done, T0, T0 + timedelta(seconds=60))
    assert result.latency_sum == 3.0 - 0.2  # from the RECEIVE from STOREDRIVER to the SEND


def test_a_genuinely_stuck_message_stays_stuck_whatever_other_servers_saw(tmp_path: Path) -> None:
    c = collector(tmp_path)
    # EX02 sent "loop" to EX01 before EX01 received it: EX01 is where it stopped.
    c.ingest("EX02", [ev(0, "RECEIVE", "loop"), ev(1, "SEND", "loop")], T0, T0 + timedelta(seconds=60))
    c.ingest("EX01", [ev(2, "RECEIVE", "loop"), ev(3, "RECEIVE", "alone")], T0, T0 + timedelta(seconds=60))
    # A shadow copy on EX02 (HARECEIVE) is not the message moving on.
    c.ingest("EX02", [ev(4, "HARECEIVE", "alone", "REDUNDANCY")], T0, T0 + timedelta(seconds=60))
    assert judge(c, "EX01") == (2, 0)


def test_received_here_then_taken_by_another_server_is_not_stuck_here(tmp_path: Path) -> None:
    c = collector(tmp_path)
    c.ingest("EX01", [ev(0, "RECEIVE", "relayed")], T0, T0 + timedelta(seconds=60))  # no SEND logged here
    c.ingest("EX02", [ev(1, "RECEIVE", "relayed"), ev(2, "DELIVER", "relayed", "STOREDRIVER")], T0, LATER)
    assert judge(c, "EX01") == (0, 0)


def test_without_a_message_id_nothing_is_followed_across_servers(tmp_path: Path) -> None:
    c = collector(tmp_path)
    c.ingest("EX01", [ev(0, "RECEIVE", "", internal="42")], T0, T0 + timedelta(seconds=60))
    c.ingest("EX02", [ev(1, "RECEIVE", "", internal="42"), ev(2, "SEND", "", internal="42")], T0, LATER)
    assert judge(c, "EX01") == (1, 0)  # InternalMessageId 42 on EX02 is another message


def test_handed_off_memory_is_bounded_and_evictions_counted(tmp_path: Path) -> None:
    c = collector(tmp_path, max_tracked_messages=100)
    events = [e for i in range(150) for e in submitted(f"m{i}", i)]
    result = c.ingest("EX01", events, T0, T0 + timedelta(seconds=200))
    assert result.evictions == 50
    assert judge(c, "EX01") == (0, 100)


def test_a_finished_message_is_remembered_for_the_finish_horizon_then_forgotten(tmp_path: Path) -> None:
    """Its DELIVER keeps it (a late RECEIVE must not make it pending) until the finish horizon has
    passed, then nothing of it is held; a stuck message is kept until forget_after."""
    c = collector(tmp_path)
    horizon = timedelta(seconds=finish_horizon(c._opts))
    done = [ev(0, "RECEIVE", "done"), ev(1, "DELIVER", "done", "STOREDRIVER"), ev(2, "RECEIVE", "waits")]
    c.ingest("EX01", done, T0, T0 + timedelta(seconds=60))
    finished = T0 + timedelta(seconds=1)
    c.ingest("EX01", [], finished + horizon - timedelta(seconds=1), finished + horizon - timedelta(seconds=1))
    assert c.memory_entries()["EX01"] == 3 + 3  # completed "done"; pending and received "waits"; 3 dedupe keys
    c.ingest("EX01", [ev(1, "RECEIVE", "done")], finished, finished + timedelta(seconds=1))  # read late
    assert judge(c, "EX01") == (1, 0)  # only "waits"
    assert c.memory_entries()["EX01"] == 3 + 4  # and the late RECEIVE's dedupe key
    later = finished + horizon + timedelta(seconds=1)
    result = c.ingest("EX01", [], later, later)
    # "done" is forgotten; "waits" is still stuck (pending and received). The dedupe keys go only
    # when newer events are counted (overlap + max_clock_step behind the newest).
    assert c.memory_entries()["EX01"] == 2 + 4 and result.stuck == 1


def test_a_burst_of_stuck_messages_does_not_stop_finished_ones_behind_it_from_being_forgotten(
    tmp_path: Path,
) -> None:
    """100 stuck messages in a row (a queue outage) stay until forget_after; the messages received
    with them that moved on to another server are forgotten after the finish horizon all the same."""
    c = collector(tmp_path)
    horizon = timedelta(seconds=finish_horizon(c._opts))
    here = [ev(i, "RECEIVE", f"stuck{i}") for i in range(100)]
    here += [ev(100 + i, "RECEIVE", f"moved{i}") for i in range(100)]
    c.ingest("EX01", here, T0, T0 + timedelta(seconds=300))
    c.ingest("EX02", [ev(101 + i, "RECEIVE", f"moved{i}") for i in range(100)], T0, T0 + timedelta(seconds=300))
    later = T0 + timedelta(seconds=300) + horizon
    result = c.ingest("EX01", [], later, later)
    assert result.stuck == 100
    assert c._trails.server("EX01").entries() == 2 * 100  # the stuck ones, pending and received; no "moved"


def test_one_message_stamped_in_the_future_does_not_shield_the_rest_from_being_forgotten(tmp_path: Path) -> None:
    """A clock that jumped a day ahead for one message: the messages finished after it in the table
    are still forgotten after the finish horizon; it stays until its own time has passed too."""
    c = collector(tmp_path)
    horizon = timedelta(seconds=finish_horizon(c._opts))
    day = 86400.0
    ahead = [ev(day, "RECEIVE", "ahead"), ev(day + 1, "DELIVER", "ahead", "STOREDRIVER")]
    c.ingest("EX01", ahead, T0, T0 + timedelta(seconds=60))  # first in the table
    rest = [e for i in range(100) for e in (ev(i, "RECEIVE", f"m{i}"), ev(i + 1, "DELIVER", f"m{i}", "STOREDRIVER"))]
    c.ingest("EX01", rest, T0, T0 + timedelta(seconds=200))
    later = T0 + timedelta(seconds=200) + horizon
    c.ingest("EX01", [], later, later)
    assert c._trails.server("EX01").entries() == 1  # only "ahead"
