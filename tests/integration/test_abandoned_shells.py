"""Shells the exporter had to give up on during a fault are closed once the server answers again.

Real pypsrp against the simulator. A server that hangs longer than a close's or an open's wait
(``call_timeout``'s operation timeout + 15 s: 20 s) makes the exporter abandon the request; when the
server resumes it still processes what it held: a held Delete closes its shell, but a held Create
opens a shell nobody knows about. Without reclaiming it, each such episode left one shell counted
against the account's 18 until the idle timeout (bench/bench_soak.py: 5 -> 13 shells, 34 opens
refused at the limit).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from prometheus_client import generate_latest

from exporter.exchange.orphans import ShellOwner
from tests.integration.conftest import USER, SimFactory, only_collectors, settings_for, small_org
from tests.integration.test_simulator_shell_ops import enumerate_shells, named_pool, wsman_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def test_a_shell_created_after_its_open_was_abandoned_is_closed_at_the_next_session(
    sim_factory: SimFactory, service_factory: Any
) -> None:
    sim, scenario = sim_factory(small_org(("EX01",)))
    settings = settings_for(
        sim,
        scenario,
        overrides={
            "collectors": only_collectors(queues={}),
            "exchange": {"defaults": {"call_timeout": 1, "connect_timeout": 1}},
        },
    )
    service = service_factory(settings)
    host, port = sim.endpoint("EX01")

    def ex01() -> dict[str, Any]:
        return dict(sim.stats()["servers"]["EX01"])

    def in_use() -> int:
        return service.sessions.limiter.in_use(USER.lower(), f"{host}:{port}")

    assert all(s.ok for s in service.poll_all())
    # a shell of another program (and one of a live sibling run on this host) under the same account
    other = named_pool(sim, None)
    sibling = ShellOwner.this_process()
    sibling_pool = named_pool(sim, sibling.name)
    assert ex01()["shells_open"] == 3

    sim.faults.set("EX01", "hang")
    assert [s.reason for s in service.poll_all()] == ["timeout"]  # the call hangs: its pool's close is held
    assert [s.reason for s in service.poll_all()] == ["timeout"]  # the new session's Create is held
    # both the close and the reaper of the open give up (20 s each) and free their session slots
    assert wait_until(lambda: in_use() == 0, 40), in_use()
    created = ex01()["shells_created"]
    sim.faults.clear()  # the server resumes: the held Delete closes the first shell, the held Create opens one
    assert wait_until(lambda: ex01()["shells_created"] == created + 1 and ex01()["shells_closed"] >= 1, 10), ex01()
    assert ex01()["shells_open"] == 3  # the shell nobody asked for any more is open

    assert all(s.ok for s in service.poll_all())  # a new session opens, and closes the abandoned shell first
    owner = service.sessions.janitor.owner
    names = sorted(s["Name"] for s in enumerate_shells(wsman_for(sim)))
    assert names == sorted(["Runspace1", sibling.name, owner.name]), names
    assert ex01()["shells_open"] == 3
    assert service.sessions.janitor.reclaimed_total == 1
    assert all(s.ok for s in service.poll_all())
    assert ex01()["shells_open"] == 3
    sibling.retire()
    for pool in (other, sibling_pool):
        pool.close()


@pytest.mark.parametrize("kind", ["refused", "http500"])
def test_a_shell_whose_close_failed_is_closed_once_the_server_answers(
    sim_factory: SimFactory, service_factory: Any, kind: str
) -> None:
    """``refused``: the listener goes away under a call in flight (its connection is cut) and the close
    cannot connect; ``http500``: the endpoint answers every request, the close's Delete too, with 500."""
    sim, scenario = sim_factory(small_org(("EX01",)))
    settings = settings_for(sim, scenario, overrides={"collectors": only_collectors(queues={})})
    service = service_factory(settings)

    def ex01() -> dict[str, Any]:
        return dict(sim.stats()["servers"]["EX01"])

    assert all(s.ok for s in service.poll_all())
    if kind == "refused":
        sim.faults.set("EX01", "cmdlet_latency", cmdlet="Get-Queue", seconds=2.0)
        commands = ex01()["commands"]
        poll = threading.Thread(target=service.poll_all)
        poll.start()
        assert wait_until(lambda: ex01()["commands"] > commands, 5)  # the call is in flight
        sim.faults.set("EX01", kind)
        poll.join(timeout=30)
        sim.faults.clear("EX01", "cmdlet_latency")
    else:
        sim.faults.set("EX01", kind)
        service.poll_all()
    reason = service.store.states()[("queues", "EX01")].last.reason
    assert reason in {"refused": {"connection"}, "http500": {"http_error"}}[kind], reason
    host, port = sim.endpoint("EX01")
    # the close has failed (its session slot is free again) and the shell is still open
    assert wait_until(lambda: service.sessions.limiter.in_use(USER.lower(), f"{host}:{port}") == 0, 20)
    assert ex01()["shells_open"] == 1 and ex01()["shells_closed"] == 0

    sim.faults.clear()
    assert all(s.ok for s in service.poll_all())
    assert ex01()["shells_open"] == 1 and ex01()["shells_closed"] == 1, ex01()
    janitor = service.sessions.janitor
    assert [s["Name"] for s in enumerate_shells(wsman_for(sim))] == [janitor.owner.name]
    assert (janitor.abandoned_total, janitor.reclaimed_total) == (1, 1)
    page = generate_latest(service.registry).decode()
    assert 'mailflow_exchange_shells_abandoned_total{server="EX01"} 1.0' in page
    assert 'mailflow_exchange_shells_reclaimed_total{server="EX01"} 1.0' in page


def test_a_shell_given_up_while_a_session_is_healthy_is_closed_after_a_later_call(
    sim_factory: SimFactory, service_factory: Any
) -> None:
    """A close may fail (or a held Create land) after the next session opened: no open will sweep for a
    while, so healthy calls do, in the background and at most every RECHECK_SECONDS."""
    sim, scenario = sim_factory(small_org(("EX01",)))
    service = service_factory(settings_for(sim, scenario, overrides={"collectors": only_collectors(queues={})}))
    assert all(s.ok for s in service.poll_all())
    janitor = service.sessions.janitor
    host, port = sim.endpoint("EX01")
    slot = service.sessions.limiter.slot(USER, f"{host}:{port}")
    lost = [named_pool(sim, janitor.owner.name) for _ in range(2)]  # this run's shells, as if their close failed
    janitor.abandon(slot, "EX01", lost[0].id, lost[0].shell.resource_uri)
    assert sim.stats()["servers"]["EX01"]["shells_open"] == 3

    assert all(s.ok for s in service.poll_all())  # a healthy call: the sweep runs after it
    assert wait_until(lambda: janitor.reclaimed_total == 1, 10), sim.stats()["servers"]["EX01"]
    assert sim.stats()["servers"]["EX01"]["shells_open"] == 2 and janitor.pending(slot) == 0
    janitor.abandon(slot, "EX01", lost[1].id, lost[1].shell.resource_uri)
    assert all(s.ok for s in service.poll_all())  # swept moments ago: not again before RECHECK_SECONDS
    time.sleep(0.5)
    assert sim.stats()["servers"]["EX01"]["shells_open"] == 2 and janitor.pending(slot) == 1
    assert [s.ok for s in service.poll_all()] == [True]
    assert sim.stats()["servers"]["EX01"]["shells_created"] == 3  # the exporter's session was never reopened
    lost[1].close()
