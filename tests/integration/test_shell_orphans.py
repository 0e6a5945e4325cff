"""The exporter's shells carry its name; at start it closes only the shells its own dead predecessors left.

Real pypsrp against the simulator, several exporter runs (Services) in one process: a run whose
process died is stood in for by a Service whose sessions are abandoned (never closed) and whose
instance is retired, as a new process would see it (same host, same pid as a restarted container).
The crash loop with real processes and ``kill -9`` is in ``test_crash_loop.py``.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from typing import Any

import pytest

from exporter.exchange.orphans import ShellOwner
from tests.integration.conftest import SimFactory, only_collectors, settings_for, small_org
from tests.integration.test_simulator_shell_ops import enumerate_shells, named_pool, wsman_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def queues_only(sim: Any, scenario: Any, extra: dict[str, Any] | None = None) -> Any:
    overrides = {"collectors": only_collectors(queues={}), **(extra or {})}
    return settings_for(sim, scenario, overrides=overrides)


def names(sim: Any) -> list[str]:
    return [s["Name"] for s in enumerate_shells(wsman_for(sim))]


def test_a_restarted_exporter_closes_what_its_dead_predecessors_left_and_nothing_else(
    sim_factory: SimFactory, service_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sim, scenario = sim_factory(small_org(("EX01",)))
    settings = queues_only(sim, scenario)
    crashed = service_factory(settings)
    assert all(s.ok for s in crashed.poll_all())
    crashed_owner = crashed.sessions.janitor.owner
    assert crashed_owner.host == socket.gethostname() and crashed_owner.pid == os.getpid()
    assert names(sim) == [crashed_owner.name]
    sibling = service_factory(settings)  # another exporter run on this host, started while the first ran
    assert all(s.ok for s in sibling.poll_all())
    assert len(names(sim)) == 2  # it left the first run's shell alone
    crashed_owner.retire()  # now that run's process is gone; its shell is not (the fixture's stop() finds it gone)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # an exporter that ran on this host under another pid, and died
    dead_pid = ShellOwner(crashed_owner.host, gone.pid, "d" * 16)
    elsewhere = ShellOwner("another-host", 1, "e" * 16)  # a replica on another host, same account
    leftovers = [named_pool(sim, dead_pid.name), named_pool(sim, elsewhere.name), named_pool(sim, None)]
    assert sim.stats()["servers"]["EX01"]["shells_open"] == 5

    caplog.set_level(logging.INFO, logger="exporter.exchange.orphans")
    restarted = service_factory(settings)
    assert all(s.ok for s in restarted.poll_all())
    left = names(sim)
    assert crashed_owner.name not in left and dead_pid.name not in left
    assert sorted(left) == sorted(
        [sibling.sessions.janitor.owner.name, elsewhere.name, "Runspace1", restarted.sessions.janitor.owner.name]
    )
    assert "orphaned shells server=EX01 closed=2 kept=2 failed=0" in caplog.text
    assert all(s.ok for s in sibling.poll_all())  # the sibling's session was left alone
    assert sim.stats()["servers"]["EX01"]["shells_created"] == 6  # nobody had to reopen
    caplog.clear()
    restarted.poll_all()  # only the first session to an endpoint looks for orphans
    assert "orphaned shells" not in caplog.text
    for pool in leftovers[1:]:
        pool.close()


def test_one_endpoint_under_two_names_never_exceeds_the_session_cap(
    sim_factory: SimFactory, service_factory: Any
) -> None:
    sim, scenario = sim_factory(small_org(("EX01",)))
    host, port = sim.endpoint("EX01")
    assert host == "127.0.0.1"
    extra = {
        "exchange": {
            "max_sessions_per_account": 1,
            "servers": [
                {"name": "EX01", "host": "127.0.0.1", "port": port},
                {"name": "EX01-ALIAS", "host": "localhost", "port": port},
            ],
        }
    }
    service = service_factory(queues_only(sim, scenario, extra))
    for _ in range(3):
        # whichever name polls first holds the one session (the alias's Get-Queue -Server EX01-ALIAS then
        # fails as a cmdlet error: Exchange knows no such server); the other is refused by the cap
        reasons = {s.target: s.reason for s in service.poll_all()}
        assert sorted(r == "session_limit" for r in reasons.values()) == [False, True], reasons
        assert sim.stats()["servers"]["EX01"]["shells_open"] == 1
    assert sim.stats()["servers"]["EX01"]["shells_rejected"] == 0
