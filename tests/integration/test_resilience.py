"""Failure paths that must not leak Exchange sessions, lock accounts out or hang shutdown."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from exporter.service import Service
from tests.integration.conftest import PASSWORD, USER, SimFactory, settings_for, small_org

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def test_session_open_that_times_out_is_closed_when_it_completes(sim_factory: SimFactory, service_factory: Any) -> None:
    sim, scenario = sim_factory()
    service = service_factory(settings_for(sim, scenario, overrides={"exchange": {"defaults": {"call_timeout": 1}}}))
    sim.faults.set("EX01", "latency", seconds=0.6)  # opening takes several requests: > 1 s
    for _ in range(3):
        snaps = {s.target: s for s in service.poll_all()}
        assert snaps["EX01"].reason == "timeout"
    sim.faults.clear()
    # every half-open session is closed once its open finishes; none is left on the server
    assert wait_until(lambda: sim.stats()["servers"]["EX01"]["shells_open"] == 0, 20), sim.stats()["servers"]["EX01"]
    host, port = sim.endpoint("EX01")
    assert wait_until(lambda: service.sessions.limiter.in_use(USER.lower(), f"{host}:{port}") == 0, 5)
    assert {s.target: s for s in service.poll_all()}["EX01"].ok
    assert sim.stats()["servers"]["EX01"]["shells_open"] == 1


def test_via_seed_queueing_does_not_eat_the_call_deadline(sim_factory: SimFactory, service_factory: Any) -> None:
    servers = tuple(f"EX0{i}" for i in range(1, 7))
    sim, scenario = sim_factory(small_org(servers))
    settings = settings_for(
        sim,
        scenario,
        overrides={
            "exchange": {"defaults": {"call_timeout": 2}, "discovery": {"enabled": True, "connect": "via_seed"}},
        },
    )
    only_seed = settings.model_copy(
        update={"exchange": settings.exchange.model_copy(update={"servers": settings.exchange.servers[:1]})}
    )
    service = service_factory(only_seed)
    sim.faults.set("EX01", "cmdlet_latency", cmdlet="Get-Queue", seconds=0.7)  # 6 x 0.7 s > 2 s
    snaps = service.poll_all()
    assert all(s.ok for s in snaps), [(s.target, s.reason, s.message) for s in snaps if not s.ok]
    assert sim.stats()["shells_created"] == 1


def test_stop_is_quick_and_closes_sessions_under_a_hung_call(sim_factory: SimFactory) -> None:
    sim, scenario = sim_factory()
    service = Service(settings_for(sim, scenario, overrides={"exchange": {"defaults": {"call_timeout": 60}}}))
    service.poll_all()
    first = service.store.states()[("queues", "EX02")].last.finished
    sim.faults.set("EX01", "hang", cmdlet="Get-Queue")
    poller = threading.Thread(target=service.poll_all, daemon=True)
    poller.start()
    # EX02's second poll has finished, so EX01's (polled in parallel) is hanging by now
    assert wait_until(lambda: service.store.states()[("queues", "EX02")].last.finished > first, 5)
    time.sleep(0.3)
    started = time.monotonic()
    service.stop()
    assert time.monotonic() - started < 9
    assert wait_until(lambda: sim.stats()["shells_open"] == 0, 5), sim.stats()
    assert service.readiness() == (False, "shutting down")
    sim.faults.clear()
    poller.join(timeout=10)
    assert sim.stats()["shells_open"] == 0  # the interrupted poll did not open a new session


def test_wrong_password_backs_off_and_a_rotated_secret_is_used_without_restart(
    sim_factory: SimFactory, service_factory: Any, tmp_path: Path
) -> None:
    sim, scenario = sim_factory()
    secret = tmp_path / "pw"
    secret.write_text("wrong-password")
    settings = settings_for(
        sim, scenario, overrides={"exchange": {"defaults": {"password": None, "password_file": str(secret)}}}
    )
    service = service_factory(settings)
    for _ in range(3):
        assert {s.reason for s in service.poll_all()} == {"auth"}
    assert sim.stats()["auth_failures"] <= 2  # one logon attempt per server, then the account backs off
    secret.write_text(PASSWORD)  # the secret is rotated: the backoff ends and the new one is used
    assert all(s.ok for s in service.poll_all())
