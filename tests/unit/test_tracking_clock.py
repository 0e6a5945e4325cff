"""Tracking windows in the server's clock: the Date-header reading, the window end, a clock stepped back
(seen before or only in the answer), the state file, and the exporter's own clock stepping back."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from exporter.exchange.server_clock import ServerClock, parse_http_date
from exporter.exchange.tracking import WatermarkStore
from tests.unit.test_tracking import T0, collector, ev


def test_http_dates_in_every_form_rfc_9110_allows() -> None:
    stamp = 1633432685.0  # Tue, 05 Oct 2021 11:18:05 GMT, a WinRM 500's Date (cloudsoft/winrm4j issue 144)
    for text in ("Tue, 05 Oct 2021 11:18:05 GMT", "Tuesday, 05-Oct-21 11:18:05 GMT", "Tue Oct  5 11:18:05 2021"):
        assert parse_http_date(text) == stamp, text
    for bad in (None, "", "yesterday", "Tue, 99 Oct 2021 11:18:05 GMT"):
        assert parse_http_date(bad) is None


def test_a_clock_reading_is_the_servers_time_minus_ours() -> None:
    now = [1633432685.0 + 420.25]
    clock = ServerClock(lambda: now[0])
    assert clock.skew() is None and clock.reading() is None
    clock.observe("Tue, 05 Oct 2021 11:18:05 GMT")
    reading = clock.reading()
    assert reading is not None and reading.skew == -420.25 and reading.at == now[0]
    clock.observe(None)  # an answer without Date changes nothing
    clock.observe("garbage")
    assert clock.skew() == -420.25


def test_the_window_ends_at_the_servers_now_and_the_answer_bounds_the_watermark(tmp_path: Path) -> None:
    c = collector(tmp_path, overlap=120.0, initial_lookback=300.0)
    start, end, _ = c.window("EX01", T0, skew=-420.0)
    assert (start, end) == (T0 - timedelta(seconds=720), T0 - timedelta(seconds=420))
    r = c.ingest("EX01", [], start, end, skew_before=-420.0, skew_after=-420.0)
    assert r.clock_skew == -420.0
    start, end, _ = c.window("EX01", T0 + timedelta(minutes=1), skew=-420.0)
    assert (start, end) == (T0 - timedelta(seconds=540), T0 - timedelta(seconds=360))
    # A skew within the Date header's resolution is no skew.
    assert c.window("EX02", T0, skew=1.5)[1] == T0
    # The estimate said 0, the answer says 7 minutes behind: the server had not reached ``end``.
    start, end, _ = c.window("EX03", T0, skew=None)
    c.ingest("EX03", [], start, end, skew_before=None, skew_after=-420.0)
    assert c.window("EX03", T0 + timedelta(minutes=1), skew=-420.0)[0] == T0 - timedelta(seconds=420 + 120)


def test_a_clock_stepped_back_re_reads_the_stretch_its_new_events_may_be_stamped_in(tmp_path: Path) -> None:
    c = collector(tmp_path, overlap=120.0, max_clock_step=900.0)
    old = [ev(s, "RECEIVE", f"old{s}") for s in range(200, 400, 20)]  # stamped 7 minutes ahead
    c.ingest("EX01", old, T0, T0 + timedelta(seconds=420), skew_before=420.0, skew_after=420.0)
    # Seen before the next query: the window reaches back by the step.
    start, end, _ = c.window("EX01", T0 + timedelta(seconds=60), skew=0.0)
    assert start == T0 + timedelta(seconds=420 - 120 - 420) and end == T0 + timedelta(seconds=60)
    new = [ev(5, "RECEIVE", "new5"), ev(30, "RECEIVE", "new30")]  # stamps the log already holds
    r = c.ingest("EX01", [*old, *new], start, end, skew_before=0.0, skew_after=0.0)
    assert r.new_events == 2  # the old events are remembered, the new ones counted once


def test_a_step_back_seen_only_in_the_answer_moves_the_watermark_back(tmp_path: Path) -> None:
    c = collector(tmp_path, overlap=120.0, max_clock_step=900.0)
    c.ingest("EX01", [], T0, T0 + timedelta(seconds=420), skew_before=420.0, skew_after=420.0)
    start, end, _ = c.window("EX01", T0 + timedelta(seconds=60), skew=420.0)  # a stale reading
    c.ingest("EX01", [], start, end, skew_before=420.0, skew_after=0.0)
    start, _, _ = c.window("EX01", T0 + timedelta(seconds=120), skew=0.0)
    assert start == T0 - timedelta(seconds=120)  # from where the old watermark was in the new clock


def test_a_step_beyond_max_clock_step_never_recounts(tmp_path: Path) -> None:
    # The window and its dedupe alone. A poll judges this watermark (1740 s ahead of the server's clock,
    # beyond overlap + max_clock_step) to be in the future and repairs it: test_tracking_watermark.py.
    c = collector(tmp_path, overlap=120.0, max_clock_step=300.0)
    events = [ev(s, "RECEIVE", f"m{s}") for s in range(0, 1800, 60)]
    c.ingest("EX01", events, T0, T0 + timedelta(seconds=1800), skew_before=1800.0, skew_after=1800.0)
    start, end, _ = c.window("EX01", T0 + timedelta(seconds=60), skew=0.0)  # 30 minutes back
    assert start == T0 + timedelta(seconds=1800 - 120 - 300)  # only as far as the keys are kept
    r = c.ingest("EX01", [e for e in events if start <= e.timestamp], start, end, skew_before=0.0, skew_after=0.0)
    assert r.new_events == 0


def test_the_skew_of_the_watermark_survives_a_restart(tmp_path: Path) -> None:
    c = collector(tmp_path)
    c.ingest("EX01", [], T0, T0 + timedelta(seconds=420), skew_before=420.0, skew_after=420.0)
    assert WatermarkStore(tmp_path / "marks.json").skew("EX01") == 420.0
    restarted = collector(tmp_path)
    start, end, _ = restarted.window("EX01", T0 + timedelta(seconds=60), skew=420.0)
    assert start == T0 + timedelta(seconds=420)  # the floor: no re-read of what the last process counted
    assert end == T0 + timedelta(seconds=480)


@pytest.mark.parametrize("skew", [None, 300.0])
def test_our_own_clock_stepping_back_never_reopens_counted_time(tmp_path: Path, skew: float | None) -> None:
    c = collector(tmp_path, overlap=120.0)
    shift = timedelta(seconds=skew or 0.0)
    c.ingest("EX01", [], T0, T0 + timedelta(seconds=300) + shift, skew_before=skew, skew_after=skew)
    start, end, _ = c.window("EX01", T0 + timedelta(seconds=200), skew=skew)  # our clock went back 100 s
    c.ingest("EX01", [], start, end, skew_before=skew, skew_after=skew)
    start, _, _ = c.window("EX01", T0 + timedelta(seconds=400), skew=skew)
    assert start == T0 + timedelta(seconds=300 - 120) + shift
