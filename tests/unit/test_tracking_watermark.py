"""Tracking watermarks in the future and hostile state files: detected, repaired, counted once, reported.

The collector is driven as its poll drives it (``window``, ``repair_future``, ``ingest``), with the
exporter's time and the server's clock reading given explicitly; the log is a list of events and
"counted exactly once" is checked against it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import string
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client.core import Metric

from exporter.exchange.tracking import TrackingCollector, TrackingEvent, TrackingResult, WatermarkStore
from exporter.exchange.tracking_state import MAX_CORRUPT_COPIES, REPAIR_REASONS, STATE_VERSION
from tests.unit.test_tracking import T0, collector, ev, opts

DAY = timedelta(days=1)
NAME = "marks.json"


def write(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


def state(at: datetime, **extra: Any) -> dict[str, Any]:
    return {"version": STATE_VERSION, "watermarks": {"EX01": {"at": at.isoformat(), "counted_at_mark": [], **extra}}}


def copies(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".corrupt-" in p.name)


class Log:
    """A server's tracking log: every event stamped by its clock, returned for a window like Exchange."""

    def __init__(self) -> None:
        self.events: list[TrackingEvent] = []

    def add(self, first: float, last: float, step: float = 10.0) -> None:
        n = len(self.events)
        s = first
        while s < last:
            self.events.append(ev(s, "RECEIVE", f"m{n}"))
            n += 1
            s += step

    def between(self, start: datetime, end: datetime) -> list[TrackingEvent]:
        return [e for e in self.events if start <= e.timestamp < end]


def poll(
    c: TrackingCollector, log: Log, now: datetime, skew: float | None = None, judge: float | None = None
) -> TrackingResult:
    """One poll as TrackingCollector.poll makes it, the server's clock reading fresh (``skew``; None:
    the window is in the exporter's clock), the watermark judged by ``judge`` (default ``skew``)."""
    c.repair_future("EX01", now, skew if judge is None else judge, windows_by_exporter=skew is None)
    start, end, skipped = c.window("EX01", now, skew)
    if end <= start:
        return c.ingest("EX01", [], start, start, skew_before=skew, skew_after=skew)
    return c.ingest("EX01", log.between(start, end), start, end, skipped=skipped, skew_before=skew, skew_after=skew)


def counted(result: TrackingResult) -> int:
    return sum(result.events.values())


def test_a_window_asked_a_day_ahead_without_the_servers_clock_is_repaired_and_counted_once(tmp_path: Path) -> None:
    """A via_seed target is windowed by the exporter's clock: one poll while that clock was a day ahead
    set the watermark a day ahead, and nothing was counted for a day."""
    c, log = collector(tmp_path), Log()
    log.add(-300, 3600)
    for minute in range(0, 10):
        poll(c, log, T0 + timedelta(minutes=minute), judge=0.0)
    # The seed's clock says the exporter's is a day ahead: judged by the later of the two, no repair yet.
    jumped = poll(c, log, T0 + timedelta(minutes=10, seconds=5) + DAY, judge=0.0)
    assert jumped.watermark_repairs == {}
    for minute in range(11, 30):
        result = poll(c, log, T0 + timedelta(minutes=minute), judge=0.0)
    assert result.watermark_repairs == {"future": 1}
    assert counted(result) == len(log.between(T0 - timedelta(seconds=300), T0 + timedelta(minutes=29)))


def test_an_exporter_clock_a_day_behind_repairs_nothing_it_would_only_read_again(tmp_path: Path) -> None:
    """Judged by the later of the exporter's and the seed's clocks: while the exporter's is a day behind
    (the seed a day ahead of it) its windows wait; a repair would re-read (and recount) the last day."""
    c, log = collector(tmp_path), Log()
    log.add(-300, 3600)
    for minute in range(0, 5):
        poll(c, log, T0 + timedelta(minutes=minute), judge=0.0)
    behind = poll(c, log, T0 + timedelta(minutes=5) - DAY, judge=DAY.total_seconds())
    assert behind.watermark_repairs == {}
    for minute in range(6, 10):
        result = poll(c, log, T0 + timedelta(minutes=minute), judge=0.0)
    assert counted(result) == len(log.between(T0 - timedelta(seconds=300), T0 + timedelta(minutes=9)))


def test_a_future_watermark_without_anything_counted_starts_as_a_first_start(tmp_path: Path) -> None:
    write(tmp_path / NAME, state(T0 + 365 * DAY))
    c, log = collector(tmp_path, initial_lookback=300.0), Log()
    log.add(-3600, 3600)
    start, end, _ = c.window("EX01", T0, 0.0)
    assert end <= start  # what stopped the counting: the window ends before it starts
    assert c.repair_future("EX01", T0, 0.0)
    assert not c.repair_future("EX01", T0, 0.0)  # judged once: the watermark is gone
    assert c.window("EX01", T0, 0.0) == (T0 - timedelta(seconds=300), T0, 0.0)
    assert WatermarkStore(tmp_path / NAME).get("EX01") == (None, frozenset())  # not carried into a restart
    for minute in range(0, 5):
        result = poll(c, log, T0 + timedelta(minutes=minute), skew=0.0)
    assert counted(result) == len(log.between(T0 - timedelta(seconds=300), T0 + timedelta(minutes=4)))
    assert result.watermark_repairs == {"future": 1}


def test_the_future_is_judged_by_the_servers_clock_not_the_exporters(tmp_path: Path) -> None:
    """A server a day ahead of the exporter has watermarks a day ahead of the exporter's clock: right."""
    c, log = collector(tmp_path), Log()
    log.add(DAY.total_seconds() - 600, DAY.total_seconds() + 600)
    for minute in range(0, 5):
        result = poll(c, log, T0 + timedelta(minutes=minute), skew=DAY.total_seconds())
    assert result.watermark_repairs == {}
    restarted = collector(tmp_path)
    assert not restarted.repair_future("EX01", T0 + timedelta(minutes=5), DAY.total_seconds())
    assert restarted.repair_future("EX01", T0 + timedelta(minutes=5), 0.0)  # a clock a day behind would be wrong


@pytest.mark.parametrize(("step", "repaired"), [(900 + 120, False), (1800, True), (DAY.total_seconds(), True)])
def test_a_server_clock_stepped_back_beyond_what_the_keys_cover_is_repaired_not_waited_for(
    tmp_path: Path, step: float, repaired: bool
) -> None:
    """Up to overlap + max_clock_step the window reaches back and nothing is counted twice. Beyond that
    no window could start before the server's clock reaches the watermark again (a day back: a day of
    nothing counted); it is repaired, and what the server logs after the step is counted."""
    c, log = collector(tmp_path, overlap=120.0, max_clock_step=900.0), Log()
    log.add(step - 300, step + 60)  # logged by a clock ``step`` ahead, from the first window on
    for minute in range(0, 2):
        poll(c, log, T0 + timedelta(minutes=minute), skew=step)
    stepped_at = len(log.events)
    log.add(90, 600, step=7)  # the clock stepped back to the exporter's: new events, new stamps
    for minute in range(2, 10):
        result = poll(c, log, T0 + timedelta(minutes=minute), skew=0.0)
    assert result.watermark_repairs == ({"future": 1} if repaired else {})
    new = [e for e in log.events[stepped_at:] if e.timestamp < T0 + timedelta(minutes=9)]
    before = len(log.between(T0 + timedelta(seconds=step - 300), T0 + timedelta(seconds=step + 60)))
    # Every event logged after the step is counted once (with the old stamps ahead of the clock, none
    # of which reach back into the re-read stretch here).
    assert counted(result) == before + len(new)


def test_a_date_header_from_year_9999_is_not_a_clock(tmp_path: Path) -> None:
    """A hostile server's Date made the window arithmetic overflow at every poll."""
    c, log = collector(tmp_path), Log()
    log.add(-300, 600)
    absurd = (datetime(9999, 12, 31, tzinfo=UTC) - T0).total_seconds()
    for minute in range(3):
        result = poll(c, log, T0 + timedelta(minutes=minute), skew=absurd)
    assert counted(result) == len(log.between(T0 - timedelta(seconds=300), T0 + timedelta(minutes=2)))


def test_the_repaired_watermark_survives_a_restart(tmp_path: Path) -> None:
    write(tmp_path / NAME, state(T0 + DAY))
    c, log = collector(tmp_path), Log()
    log.add(-600, 1200)
    for minute in range(0, 5):
        poll(c, log, T0 + timedelta(minutes=minute), skew=0.0)
    restarted, again = collector(tmp_path), 0
    for minute in range(5, 10):
        result = poll(restarted, log, T0 + timedelta(minutes=minute), skew=0.0)
        again += result.new_events
    assert result.watermark_repairs == {}
    assert again == len(log.between(T0 + timedelta(minutes=4), T0 + timedelta(minutes=9)))


@pytest.mark.parametrize(
    "garbage",
    [
        b"{not json",
        b"\xff\xfe\x00garbage",  # not UTF-8
        b"[]",
        b"",
        b"[" * 100_000,  # nested too deep for the parser
        b'{"version": 2, "watermarks": {}, "more": 1}',
        b'{"version": true, "watermarks": {}}',
        b'{"version": 2.0, "watermarks": {}}',
        b'{"version": 2, "watermarks": []}',
        b'{"version": 2, "watermarks": {"EX01": {"at": "2026-11-27T01:00:00+00:00", "skew": 1e999}}}',
        b'{"version": 2, "watermarks": {"EX01": {"at": "2026-11-27T01:00:00+00:00", "skew": NaN}}}',
        b'{"version": 2, "watermarks": {"EX01": {"at": "2026-11-27T01:00:00", "counted_at_mark": []}}}',
        b'{"version": 2, "watermarks": {"EX01": {"at": "0001-01-01T00:00:00+00:00"}}}',
        b'{"version": 2, "watermarks": {"EX01": {"at": "9999-12-31T23:59:59-14:00"}}}',
        b'{"version": 2, "watermarks": {"EX01": {"counted_at_mark": []}}}',
        b'{"version": 2, "watermarks": {"EX01": {"at": "2026-11-27T01:00:00+00:00", "counted_at_mark": [[1, 2]]}}}',
        b'{"version": 2, "watermarks": {"EX01": {"at": 1795741200}}}',
        b'{"version": 2, "watermarks": {"EX01": {"at": "x"}, "": {"at": "2026-11-27T01:00:00+00:00"}}}',
        b'{"version": 2, "watermarks": {"EX01": null}}',
        b'{"version": 2, "watermarks": {"EX01": {"at": "2026-11-27T01:00:00+00:00", "skew": 1' + b"0" * 5000 + b"}}}",
    ],
)
def test_every_malformed_file_is_moved_aside_and_reported_once(tmp_path: Path, garbage: bytes) -> None:
    (tmp_path / NAME).write_bytes(garbage)
    c = collector(tmp_path)
    start, end, _ = c.window("EX01", T0)
    assert end - start == timedelta(seconds=300)  # a first start
    result = c.ingest("EX01", [ev(-5, "RECEIVE")], start, end)
    assert result.watermark_repairs == {"malformed": 1}
    assert copies(tmp_path) != [] and (tmp_path / copies(tmp_path)[0]).read_bytes() == garbage
    result = c.ingest("EX01", [], start, end)
    assert result.watermark_repairs == {"malformed": 1}  # once per server, not per poll
    assert WatermarkStore(tmp_path / NAME).get("EX01")[0] == end  # replaced by a sound file
    assert collector(tmp_path).ingest("EX01", [], end, end).watermark_repairs == {}


def test_other_servers_keep_their_watermarks_when_one_entry_is_malformed(tmp_path: Path) -> None:
    good = {"at": T0.isoformat(), "counted_at_mark": [["id-a", "RECEIVE"]]}
    write(tmp_path / NAME, {"version": 2, "watermarks": {"EX01": good, "EX02": {"at": T0.isoformat(), "x": 1}}})
    c = collector(tmp_path)
    assert c.window("EX01", T0 + timedelta(minutes=1))[0] == T0  # the floor of the previous process
    assert c.ingest("EX01", [], T0, T0 + timedelta(minutes=1)).watermark_repairs == {}
    assert c.ingest("EX02", [], T0, T0 + timedelta(minutes=1)).watermark_repairs == {"malformed": 1}
    assert len(copies(tmp_path)) == 1


@pytest.mark.parametrize("kind", ["directory", "fifo", "symlink_loop", "symlink_to_device"])
def test_what_cannot_be_read_is_moved_aside_without_blocking(tmp_path: Path, kind: str) -> None:
    path = tmp_path / NAME
    if kind == "directory":
        path.mkdir()
        (path / "inside").write_text("x")
    elif kind == "fifo":
        os.mkfifo(path)  # opening it for reading would wait for a writer forever
    elif kind == "symlink_loop":
        path.symlink_to(path)
    else:
        path.symlink_to("/dev/zero")  # endless
    c = collector(tmp_path)
    start, end, _ = c.window("EX01", T0)
    assert c.ingest("EX01", [], start, end).watermark_repairs == {"unreadable": 1}
    assert path.is_file() and not path.is_symlink()  # the next save put a sound file in its place
    assert len(copies(tmp_path)) == 1


def test_copies_aside_are_bounded(tmp_path: Path) -> None:
    for i in range(MAX_CORRUPT_COPIES + 3):
        (tmp_path / NAME).write_text(f"broken {i}")
        collector(tmp_path).ingest("EX01", [], T0, T0 + timedelta(minutes=1))
    kept = copies(tmp_path)
    assert len(kept) == MAX_CORRUPT_COPIES
    assert sorted((tmp_path / k).read_text() for k in kept) == [f"broken {i}" for i in range(3, 6)]


def test_an_unwritable_state_is_logged_once_counted_and_counting_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    caplog.set_level(logging.WARNING)
    c = TrackingCollector(None, opts(), WatermarkStore(blocker / NAME))  # type: ignore[arg-type]
    for minute in range(5):
        result = c.ingest("EX01", [ev(minute * 60, "RECEIVE", f"m{minute}")], T0, T0 + timedelta(minutes=minute + 1))
    assert counted(result) == 5
    assert len([r for r in caplog.records if "cannot save tracking state" in r.getMessage()]) == 1
    assert _sample(c.render({"EX01": result}), "mailflow_tracking_state_write_failures_total", {}) == 5
    blocker.unlink()
    c.ingest("EX01", [], T0, T0 + timedelta(minutes=6))
    assert WatermarkStore(blocker / NAME).get("EX01")[0] == T0 + timedelta(minutes=6)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path, monkeypatch: Any) -> None:
    c = collector(tmp_path)
    c.ingest("EX01", [], T0, T0 + timedelta(minutes=1))
    before = (tmp_path / NAME).read_bytes()

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    c.ingest("EX01", [], T0, T0 + timedelta(minutes=2))
    assert (tmp_path / NAME).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAME]


def test_a_temporary_left_by_a_killed_predecessor_is_removed(tmp_path: Path) -> None:
    leftover = tmp_path / f".{NAME}.4242.tmp"
    leftover.write_text('{"version": 2, "wat')
    old = time.time() - 3600
    os.utime(leftover, (old, old))
    collector(tmp_path)
    assert not leftover.exists()


def _sample(metrics: Any, name: str, labels: dict[str, str]) -> float | None:
    for metric in metrics:
        assert isinstance(metric, Metric)
        for sample in metric.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def test_repairs_are_exported_for_every_reason_from_the_start(tmp_path: Path) -> None:
    write(tmp_path / NAME, state(T0 + DAY))
    c = collector(tmp_path)
    c.repair_future("EX01", T0, 0.0)
    result = c.ingest("EX01", [], T0 - timedelta(minutes=5), T0)
    rendered = list(c.render({"EX01": result}))
    values = {
        reason: _sample(rendered, "mailflow_tracking_watermark_repairs_total", {"server": "EX01", "reason": reason})
        for reason in REPAIR_REASONS
    }
    assert values == {"future": 1, "malformed": 0, "unreadable": 0}


# -- Fuzzing: any file content, then polls. Every poll succeeds; the file is used or repaired. --------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(string.printable, max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_times = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.sampled_from([UTC, None])
).map(lambda d: d.isoformat())
_entry = st.fixed_dictionaries(
    {},
    optional={
        "at": _times | _json,
        "counted_at_mark": st.lists(st.lists(st.text(max_size=5) | st.integers(), max_size=3), max_size=3) | _json,
        "skew": st.floats() | st.integers() | _json,
        "extra": _json,
    },
)
_document = st.fixed_dictionaries(
    {"version": st.just(2) | _json, "watermarks": st.dictionaries(st.sampled_from(["EX01", "ex01", ""]), _entry)},
    optional={"other": _json},
)
_content = (
    _document.map(lambda d: json.dumps(d).encode())
    | _json.map(lambda d: json.dumps(d).encode())
    | st.binary(max_size=200)
)


@contextlib.contextmanager
def _directory() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


_ISSUE = {"version": 2, "watermarks": {"EX01": {"at": T0.isoformat(), "counted_at_mark": [1]}}}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=_content, skew=st.none() | st.floats(-3 * 86400, 3 * 86400))
@example(content=json.dumps(_ISSUE).encode(), skew=None)  # the issue's: every poll failed
@example(content=json.dumps(state(T0 + DAY)).encode(), skew=0.0)
@example(content=json.dumps(state(T0 - DAY)).encode(), skew=-DAY.total_seconds())
def test_any_state_file_then_every_poll_succeeds_and_the_file_is_used_or_repaired(
    content: bytes, skew: float | None
) -> None:
    with _directory() as directory:
        (directory / NAME).write_bytes(content)
        c, log = collector(directory), Log()
        log.add(-900, 900, step=30)
        for minute in range(3):
            result = poll(c, log, T0 + timedelta(minutes=minute), skew)  # never raises
        server_now = T0 + timedelta(minutes=2, seconds=skew if skew is not None and abs(skew) > 2 else 0)
        assert counted(result) <= len([e for e in log.events if e.timestamp < server_now])
        assert set(result.watermark_repairs) <= set(REPAIR_REASONS)
        assert sum(result.watermark_repairs.values()) <= 2  # the file's problem and the future, once each
        assert len(copies(directory)) <= 1
        # What is on disk now is sound: a restart takes it as it is, with nothing to repair.
        store = WatermarkStore(directory / NAME)
        assert store.take_problem("EX01") is None
        mark, _ = store.get("EX01")
        limit = timedelta(seconds=120 + 900 + 2)
        assert mark is None or mark - server_now <= limit
