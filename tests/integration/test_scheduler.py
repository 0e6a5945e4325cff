"""The real scheduler: polls repeat on their interval, never overlap per target, and stop on shutdown."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.integration.conftest import SimFactory, only_collectors, settings_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


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
