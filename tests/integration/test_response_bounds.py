"""Everything a server sends is bounded: bytes, objects and bytes per object per call, the call's whole
duration (also against a server that answers one byte at a time), the threads and sockets a timed-out
call used, and what reaches the log. Real pypsrp against the simulator's ``oversize`` and ``drip`` faults."""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.logs import MAX_MESSAGE, MAX_TRACEBACK, setup_logging
from exporter.service import Service
from exporter.simulator import Simulator
from exporter.store import Snapshot
from tests.integration.conftest import SimFactory, only_collectors, settings_for, small_org

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MB = 1_000_000
MARKER = "leak-marker"  # in every queue's NextHopDomain: must never reach the log


def wait_until(predicate: Callable[[], Any], timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def queues_service(
    sim: Simulator, scenario: Any, service_factory: Callable[[Any], Service], **defaults: Any
) -> Service:
    """The queue collector alone, against ``sim``, with ``defaults`` under exchange.defaults."""
    settings = settings_for(
        sim,
        scenario,
        overrides={"exchange": {"defaults": {"call_timeout": 3, **defaults}}, "collectors": only_collectors(queues={})},
    )
    return service_factory(settings)


def poll(service: Service, target: str = "EX01") -> Snapshot:
    return {s.target: s for s in service.poll_all()}[target]


def sent(sim: Simulator, server: str = "EX01") -> int:
    return int(sim.stats()["servers"][server]["output_bytes_sent"])


def many_queues(count: int) -> dict[str, Any]:
    data = small_org(("EX01",))
    data["servers"][0]["queues"] += [
        {"kind": "delivery", "row_id": 100 + i, "next_hop_domain": f"{MARKER}-{i:04d}.example", "message_count": i}
        for i in range(count)
    ]
    return data


# --- size ------------------------------------------------------------------------------------------------


def test_an_oversized_answer_fails_too_large_and_reading_stops_at_the_cap(
    sim_factory: SimFactory, service_factory: Any
) -> None:
    sim, scenario = sim_factory()
    service = queues_service(sim, scenario, service_factory, max_response_bytes="1MiB")
    assert poll(service).ok
    before = sent(sim)
    sim.faults.set("EX01", "oversize", cmdlet="Get-Queue", megabytes=8)
    snap = poll(service)
    assert (snap.reason, snap.ok) == ("too_large", False), snap.message
    assert "max_response_bytes (1MiB)" in snap.message
    # The client stopped asking once it had 1 MiB: most of the 8 MB never left the simulator.
    assert sent(sim) - before < 3 * MB, sent(sim) - before
    assert poll(service, "EX02").ok  # the other server is not affected
    sim.faults.clear()
    assert poll(service).ok  # a new session, the old one was closed
    assert wait_until(lambda: sim.stats()["servers"]["EX01"]["shells_open"] == 1, 10), sim.stats()["servers"]["EX01"]


def test_one_response_over_the_cap_is_not_read(sim_factory: SimFactory, service_factory: Any) -> None:
    sim, scenario = sim_factory()
    service = queues_service(sim, scenario, service_factory, max_response_bytes="1MiB")
    # A server (or a proxy) that ignores MaxEnvelopeSize: the whole 16 MB in one HTTP response.
    sim.faults.set("EX01", "oversize", cmdlet="Get-Queue", megabytes=16, message="one_response")
    snap = poll(service)
    assert snap.reason == "too_large", snap.message
    # The connection was closed under the simulator's write of the body.
    assert wait_until(lambda: sim.stats()["servers"]["EX01"]["responses_cut"] >= 1, 10), sim.stats()["servers"]


def test_too_many_objects_and_one_huge_object_fail_too_large(sim_factory: SimFactory, service_factory: Any) -> None:
    sim, scenario = sim_factory()
    service = queues_service(sim, scenario, service_factory, max_objects=200, max_object_bytes="256KiB")
    sim.faults.set("EX01", "oversize", cmdlet="Get-Queue", megabytes=3)  # about 1,100 queue objects
    snap = poll(service)
    assert snap.reason == "too_large" and "max_objects (200)" in snap.message, snap.message
    sim.faults.set("EX01", "oversize", cmdlet="Get-Queue", megabytes=2, message="single")  # one 2 MB object
    snap = poll(service)
    assert snap.reason == "too_large" and "max_object_bytes (256KiB)" in snap.message, snap.message
    assert sent(sim) < 3 * MB  # the big object was not read to its end either


def test_collectors_ask_exchange_for_no_more_than_max_objects(sim_factory: SimFactory, service_factory: Any) -> None:
    # 64 queues, at most 20 objects: Get-Queue is asked for -ResultSize 20 and truncates (with its warning)
    # instead of the call failing.
    sim, scenario = sim_factory(many_queues(60))
    service = queues_service(sim, scenario, service_factory, max_objects=20)
    snap = poll(service)
    assert snap.ok, snap.message


def tracking_service(sim: Simulator, scenario: Any, factory: Any, state: Path, **defaults: Any) -> Service:
    settings = settings_for(
        sim,
        scenario,
        overrides={
            "state_dir": str(state),
            "exchange": {"defaults": {"call_timeout": 30, **defaults}},
            "collectors": only_collectors(tracking={"initial_lookback": "5m"}),
        },
    )
    return factory(settings)  # type: ignore[no-any-return]


def truncated(service: Service) -> float:
    return service.registry.get_sample_value("mailflow_tracking_truncated_polls_total", {"server": "EX01"}) or 0


@pytest.fixture
def busy_tracking(sim_factory: SimFactory) -> tuple[Simulator, Any]:
    data = small_org(("EX01",))
    data["tracking"] = {"messages_per_minute": 30, "history_minutes": 10}  # about 1,000 events in 5 minutes
    return sim_factory(data)


def test_tracking_reads_a_window_larger_than_max_response_bytes_in_pages(
    busy_tracking: tuple[Simulator, Any], service_factory: Any, tmp_path: Path
) -> None:
    sim, scenario = busy_tracking
    # 1 MiB: pages of 256 events (1 MiB / 4 KiB), each answer within the limit; the window is paged.
    service = tracking_service(sim, scenario, service_factory, tmp_path, max_response_bytes="1MiB")
    snaps = [poll(service) for _ in range(3)]
    assert all(s.ok for s in snaps), [s.message for s in snaps]
    assert truncated(service) == 3
    assert all(0 < s.result.new_events <= 256 for s in snaps), [s.result.new_events for s in snaps]


def test_tracking_halves_its_page_after_too_large(
    busy_tracking: tuple[Simulator, Any], service_factory: Any, tmp_path: Path
) -> None:
    sim, scenario = busy_tracking
    limits = {"max_objects": 2000, "max_object_bytes": "1MiB"}
    # The window fits one page of 2,000 events: a first poll is not truncated.
    fresh = tracking_service(sim, scenario, service_factory, tmp_path / "a", **limits)
    assert poll(fresh).ok and truncated(fresh) == 0
    service = tracking_service(sim, scenario, service_factory, tmp_path / "b", **limits)
    sim.faults.set("EX01", "oversize", cmdlet="Get-MessageTrackingLog", megabytes=2, message="single")
    assert [poll(service).reason for _ in range(2)] == ["too_large", "too_large"]  # pages 2,000, then 1,000
    sim.faults.clear()
    assert poll(service).ok  # asked for 500 events: the same window no longer fits
    assert truncated(service) == 1


# --- time, threads and sockets ---------------------------------------------------------------------------


def call_threads(server: str = "EX01") -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == f"call-{server}"]


@pytest.mark.parametrize("tls", [False, True])
def test_a_dripping_server_call_ends_at_its_deadline_and_its_connection_is_closed(
    tls: bool, sim_factory: SimFactory, service_factory: Any
) -> None:
    sim, scenario = sim_factory(tls=tls)
    settings = settings_for(
        sim,
        scenario,
        tls=tls,
        overrides={"exchange": {"defaults": {"call_timeout": 1.5}}, "collectors": only_collectors(queues={})},
    )
    service = service_factory(settings)
    assert poll(service).ok
    # One byte every half second: no single read waits long, a per-read timeout never fires.
    sim.faults.set("EX01", "drip", cmdlet="Get-Queue", seconds=0.5)
    snap = poll(service)
    assert snap.reason == "timeout", snap.message
    assert wait_until(lambda: not call_threads(), 10), call_threads()  # the call's thread ended
    assert wait_until(lambda: sim.stats()["servers"]["EX01"]["responses_cut"] >= 1, 10)  # its socket closed


def test_after_repeated_timeouts_threads_and_fds_return_to_the_baseline(
    sim_factory: SimFactory, service_factory: Any
) -> None:
    sim, scenario = sim_factory(small_org(("EX01",)))
    service = queues_service(sim, scenario, service_factory, call_timeout=1.5)
    assert poll(service).ok
    time.sleep(0.3)
    gc.collect()
    threads_before, fds_before = threading.active_count(), open_fds()
    sim.faults.set("EX01", "drip", cmdlet="Get-Queue", seconds=0.5)  # stays on: nothing may wait for a heal
    for _ in range(4):
        assert poll(service).reason == "timeout"

    def back() -> bool:
        gc.collect()  # pypsrp's reference cycles keep a closed socket object until a full collection
        return threading.active_count() <= threads_before + 1 and open_fds() <= fds_before + 2

    assert wait_until(back, 30, 0.2), (
        threading.active_count(),
        threads_before,
        open_fds(),
        fds_before,
        sorted(t.name for t in threading.enumerate()),
    )


# --- the log ---------------------------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in levels.items():
        logging.getLogger(name).setLevel(value)
    logging.captureWarnings(False)


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_a_malformed_huge_answer_logs_bounded_lines_without_its_payload(
    fmt: str, sim_factory: SimFactory, service_factory: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sim, scenario = sim_factory(many_queues(300))
    service = queues_service(sim, scenario, service_factory)
    setup_logging("debug", fmt)  # the most the log ever shows
    sim.faults.set("EX01", "malformed_clixml", cmdlet="Get-Queue", message="truncated")  # pypsrp logs each object
    assert not poll(service).ok
    sim.faults.set("EX01", "oversize", cmdlet="Get-Queue", megabytes=4, message="single")  # and a 2 MB half of one
    assert not poll(service).ok
    err = capsys.readouterr().err
    assert "poll failed" in err
    lines = err.splitlines()
    longest = max(len(line) for line in lines)
    assert longest <= MAX_MESSAGE + MAX_TRACEBACK + 400, longest
    assert MARKER not in err, next(line[:300] for line in lines if MARKER in line)
