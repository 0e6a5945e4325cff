"""Configuration against the simulator: which secret a server uses, a password Basic cannot send, and
serve polling with every numeric setting at its documented bound."""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from exporter.service import Service
from exporter.settings import (
    INT32_MAX,
    MAX_INTERVAL,
    MAX_LATENCY_BUCKETS,
    MAX_SPAN,
    MAX_TIMEOUT,
    Settings,
)
from exporter.simulator import Scenario, Simulator
from exporter.triage.report import write_json, write_text
from tests.integration.conftest import PASSWORD, USER, SimFactory, only_collectors, settings_for, small_org
from tests.unit.test_session_helpers import SECRET, leaks

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _service(service_factory: Any, settings: Settings) -> Service:
    service: Service = service_factory(settings)
    return service


def test_a_servers_own_password_file_beats_the_default_password(
    sim: tuple[Simulator, Scenario], service_factory: Any, tmp_path: Path
) -> None:
    """The issue's case: an inline ``defaults.password`` silently won over EX01's ``password_file``."""
    simulator, scenario = sim
    own = tmp_path / "ex01.pw"
    own.write_text(PASSWORD + "\n")
    settings = settings_for(
        simulator,
        scenario,
        overrides={
            "exchange": {
                "defaults": {"password": "a-stale-default-password"},
                "servers": [
                    {**s, "password_file": str(own)} if s["name"] == "EX01" else s
                    for s in settings_for(simulator, scenario).model_dump()["exchange"]["servers"]
                ],
            },
            "collectors": only_collectors(queues={}),
        },
    )
    snaps = {s.target: s for s in _service(service_factory, settings).poll_all()}
    assert snaps["EX01"].ok, snaps["EX01"].message
    assert (snaps["EX02"].ok, snaps["EX02"].reason) == (False, "auth")  # EX02 has only the default


def test_a_password_basic_cannot_send_fails_clearly_and_no_part_of_it_shows(
    sim: tuple[Simulator, Scenario], service_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The password file is rotated to one with a euro sign while serving: each poll says what is wrong
    (reason config) and no log line, metric, status page or triage report carries any part of it."""
    caplog.set_level(logging.DEBUG)
    simulator, scenario = sim
    secret_file = tmp_path / "exchange_password"
    secret_file.write_text(PASSWORD + "\n")
    overrides = {
        "exchange": {"defaults": {"password": None, "password_file": str(secret_file)}},
        "collectors": only_collectors(queues={}, accepted_domains={}),
    }
    service = _service(service_factory, settings_for(simulator, scenario, overrides=overrides))
    assert all(s.ok for s in service.poll_all())
    secret_file.write_text(SECRET + "\n", encoding="utf-8")
    service.sessions.sync([])  # retire the open sessions: the next polls log on again, with the new password
    snaps = service.poll_all()
    assert snaps and all(not s.ok for s in snaps)
    for snap in snaps:
        assert snap.reason == "config"
        assert snap.message == (
            f"the password for {USER} contains characters Basic authentication cannot send (not Latin-1); use auth "
            f"kerberos, negotiate or ntlm (they send any Unicode password) (password file {secret_file})"
        )
    report = io.StringIO()
    write_text(service.triage(), report, color=False)
    write_json(service.triage(), report)
    for where, text in (
        ("logs", caplog.text),
        ("metrics", generate_latest(service.registry).decode()),
        ("status page", service.app.landing_page()),
        ("triage report", report.getvalue()),
    ):
        assert leaks(text) == [], where


def _at_the_bounds(tmp_path: Path) -> dict[str, Any]:
    """Every duration at its bound (the two that must stay below a partner just under it), every count
    and size at its maximum."""
    step = MAX_SPAN / MAX_LATENCY_BUCKETS
    return {
        "state_dir": str(tmp_path / "state"),
        "exchange": {
            "defaults": {"connect_timeout": MAX_TIMEOUT, "call_timeout": MAX_TIMEOUT},
            "max_sessions_per_account": 1000,
            "auth_failure_backoff": MAX_INTERVAL,
        },
        "collectors": {
            **{
                name: {"enabled": True, "interval": MAX_INTERVAL}
                for name in ("queues", "accepted_domains", "components", "database_copies", "certificates")
            },
            "queues": {
                "enabled": True,
                "interval": MAX_INTERVAL,
                "max_next_hop_domains": 1000,
                "result_size": INT32_MAX,
            },
            "tracking": {
                "enabled": True,
                "interval": MAX_INTERVAL,
                "overlap": MAX_SPAN - 1,
                "max_window": MAX_SPAN,
                "initial_lookback": MAX_SPAN,
                "stuck_after": MAX_SPAN - 1,
                "forget_after": MAX_SPAN,
                "max_tracked_messages": 10_000_000,
                "latency_buckets": [step * (i + 1) for i in range(MAX_LATENCY_BUCKETS)],
                "result_size": INT32_MAX,
            },
            "receive_connectors": {"enabled": False},
            "send_connectors": {"enabled": False},
            "service_health": {"enabled": False},
        },
        "scheduler": {
            "max_workers": 256,
            "jitter": MAX_TIMEOUT,
            "stale_after_intervals": 100,
            "first_run_spread": MAX_TIMEOUT,
        },
    }


def test_serve_polls_with_every_setting_at_its_bound(
    sim_factory: SimFactory, service_factory: Any, tmp_path: Path
) -> None:
    simulator, scenario = sim_factory(small_org())
    service = _service(service_factory, settings_for(simulator, scenario, overrides=_at_the_bounds(tmp_path)))
    snaps = service.poll_all()
    assert snaps and all(s.ok for s in snaps), [(s.collector, s.target, s.message) for s in snaps if not s.ok]
    service.start(serve_http=False)  # schedules every poll with those intervals, jitter and spread
    jobs = [job for job in service.scheduler.get_jobs() if ":" in job.id]
    assert jobs and all(math.isfinite(job.trigger.interval_length) for job in jobs)
    assert "mailflow_collector_up" in generate_latest(service.registry).decode()
