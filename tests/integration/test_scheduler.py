"""The real scheduler: polls repeat on their interval, never overlap per target, stop on shutdown, and
slow servers never starve the others (exporter.lanes)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import exporter.service
from tests.integration.conftest import SimFactory, demo_org, only_collectors, settings_for, small_org

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def wait_for(predicate: Callable[[], Any], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def commands(sim: Any, server: str) -> int:
    return int(sim.stats()["servers"][server]["commands"])


def test_polls_repeat_and_a_slow_target_never_overlaps(sim_factory: SimFactory, service_factory: Any) -> None:
    sim, scenario = sim_factory()
    settings = settings_for(
        sim,
        scenario,
        overrides={
            # queues only: the per-server command counts below must come from Get-Queue alone
            "collectors": only_collectors(queues={"interval": 0.5}),
            "scheduler": {"jitter": 0.05, "first_run_spread": 0.05},
        },
    )
    # EX01 takes 1.6 s per Get-Queue: three intervals. Overlapping runs would pile up commands.
    sim.faults.set("EX01", "cmdlet_latency", cmdlet="Get-Queue", seconds=1.6)
    service = service_factory(settings)
    service.start(serve_http=False)
    time.sleep(4.0)
    service.stop()
    fast, slow = commands(sim, "EX02"), commands(sim, "EX01")
    assert fast >= 5, fast  # every 0.5 s for 4 s
    assert 1 <= slow <= 3, slow  # 4 s / 1.6 s per run, one at a time
    assert service.store.states()[("queues", "EX01")].last.ok
    after = commands(sim, "EX02")
    time.sleep(1.0)
    assert commands(sim, "EX02") == after  # nothing polls once stopped


def test_readiness_waits_for_first_poll_of_every_target(sim_factory: SimFactory, service_factory: Any) -> None:
    sim, scenario = sim_factory()
    service = service_factory(settings_for(sim, scenario, overrides={"scheduler": {"first_run_spread": 0.1}}))
    assert service.readiness()[0] is False
    service.start(serve_http=False)
    deadline = time.monotonic() + 20
    while not service.readiness()[0] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.readiness() == (True, "Ready")


def test_targets_a_first_poll_reveals_are_polled_without_the_periodic_reconcile(
    monkeypatch: pytest.MonkeyPatch, service_factory: Any
) -> None:
    """Accepted domains -> their DNS checks -> their MX hosts' SMTP probes: each step's targets exist only
    once the step before has polled. With the periodic reconcile an hour away, every step still runs, and
    the service turns ready (it waited 10 s per step, about 25 s in the demo, before)."""
    monkeypatch.setattr(exporter.service, "RECONCILE_SECONDS", 3600.0)
    overrides = {"collectors": only_collectors(accepted_domains={}), "scheduler": {"first_run_spread": 0.1}}
    with demo_org(overrides) as (_sim, _scenario, settings):
        assert not settings.dns.domains  # every domain checked comes from Get-AcceptedDomain
        service = service_factory(settings)
        service.start(serve_http=False)
        assert wait_for(lambda: service.readiness()[0], 30), service.pending_polls()
        polled = {(c, t) for (c, t), state in service.store.states().items() if state.last.ok}
        domains = {t for c, t in polled if c == "dns_domains"}
        assert {"contoso.sim", "fabrikam.sim"} <= domains, polled
        assert any(c == "smtp" and t.endswith(".contoso.sim") for c, t in polled), polled
        assert [job.id for job in service.scheduler.get_jobs() if ":" not in job.id] == ["reconcile"]
        service.stop()


class SuccessCounter:
    """Samples the store every 50 ms and counts each (collector, target)'s distinct successful polls."""

    def __init__(self, service: Any) -> None:
        self._service = service
        self.seen: dict[tuple[str, str], set[float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="success-counter", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for key, state in self._service.store.states().items():
                if state.last_success is not None:
                    self.seen.setdefault(key, set()).add(state.last_success.finished)

    def count(self, seconds: float) -> dict[tuple[str, str], int]:
        """Successes per key during the next ``seconds`` (one already seen at the start is not counted)."""
        self._thread.start()
        time.sleep(0.2)
        start = {k: set(v) for k, v in self.seen.items()}
        time.sleep(seconds)
        self._stop.set()
        self._thread.join(timeout=5)
        return {k: len(v - start.get(k, set())) for k, v in self.seen.items()}


def test_two_slow_servers_never_starve_the_healthy_one_or_the_organisation_wide_polls(
    sim_factory: SimFactory, service_factory: Any, tmp_path: Path
) -> None:
    interval, window = 1.0, 12.0
    servers = ("EX01", "EX02", "EX03")
    sim, scenario = sim_factory(small_org(servers))
    per_server = ("queues", "components", "service_health", "certificates")
    org_wide = ("send_connectors", "accepted_domains")
    every = {"interval": interval}
    settings = settings_for(
        sim,
        scenario,
        overrides={
            "state_dir": str(tmp_path),
            "exchange": {"defaults": {"call_timeout": 2}, "discovery": {"enabled": True, "interval": interval}},
            "collectors": only_collectors(**{name: every for name in (*per_server, *org_wide)}),
            # Fewer workers than the slow servers' polls: a plain pool fills up with them.
            "scheduler": {"max_workers": 3, "jitter": 0.05, "first_run_spread": 0.1},
        },
    )
    service = service_factory(settings)
    service.start(serve_http=False)
    assert wait_for(lambda: all(service.store.states().get((c, "EX01")) for c in per_server), 15)
    sim.faults.set("EX02", "hang")  # accepts, never answers
    sim.faults.set("EX03", "drip", seconds=0.5)  # answers one byte every half second
    successes = SuccessCounter(service).count(window)
    expected = window / interval  # a poll per interval, were nothing slow
    for collector in per_server:
        assert successes.get((collector, "EX01"), 0) >= expected / 3, (collector, successes)
    for collector in org_wide:
        assert successes.get((collector, "organization"), 0) >= expected / 3, (collector, successes)
    assert successes.get(("discovery", "EX01"), 0) >= expected / 3, successes
    errors = service.store.errors()
    for slow in ("EX02", "EX03"):  # the slow servers themselves fail, by their own deadline
        assert any(n and r == "timeout" for (_c, t, r), n in errors.items() if t == slow), errors


def test_organisation_wide_polls_ask_a_server_that_answers_first(
    sim_factory: SimFactory, service_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sim, scenario = sim_factory(small_org(("EX01", "EX02")))
    settings = settings_for(
        sim,
        scenario,
        overrides={
            "exchange": {"defaults": {"call_timeout": 1}},
            "collectors": only_collectors(accepted_domains={}),
        },
    )
    service = service_factory(settings)
    sim.faults.set("EX01", "hang")  # the seed, asked first
    caplog.set_level(logging.INFO, logger="exporter.exchange.cmdlet_collector")
    for _ in range(3):
        snaps = service.poll_all()
        assert [s.ok for s in snaps] == [True], [s.message for s in snaps]
    # Only the first poll waited for EX01 and failed over; the next ones asked EX02 first.
    failovers = [r for r in caplog.records if "failing over" in r.getMessage()]
    assert len(failovers) == 1, [r.getMessage() for r in failovers]
    sim.faults.clear()
