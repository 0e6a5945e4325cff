"""A crash loop of real exporter processes must not use up the account's Exchange session limit.

Each ``kill -9`` leaves the exporter's shell open on the server (a vanished client's shell stays
Connected until the idle timeout, MS-WSMV 3.1.6.5); without cleanup the 19th start finds the 18-shell
PowerShellMaxConcurrency budget used up and every poll fails with ``session_limit``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from exporter.settings import COLLECTOR_NAMES
from tests.integration.conftest import PASSWORD, USER, SimFactory, free_port, small_org

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LIMIT = 18
RESTARTS = LIMIT + 2
_UP = 'mailflow_collector_up{collector="queues",target="EX01"} '
_ERRORS = re.compile(r'mailflow_collector_errors_total\{collector="queues",reason="(\w+)",target="EX01"\} ([0-9.]+)')


def first_poll(port: int, proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """The outcome of the first queues poll of EX01 ("ok" or the failure reason), read from /metrics."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
                body = resp.read().decode()
        except (urllib.error.URLError, ConnectionError, OSError):
            body = ""
        if _UP + "1.0" in body:
            return "ok"
        failed = [reason for reason, count in _ERRORS.findall(body) if float(count) > 0]
        if failed:
            return failed[0]
        time.sleep(0.1)
    raise AssertionError(f"no queues poll of EX01 within {timeout}s (exit code {proc.poll()})")


def test_kill_9_crash_loop_never_exhausts_the_session_limit(sim_factory: SimFactory, tmp_path: Path) -> None:
    data = small_org(("EX01",), session_limit=LIMIT)
    data["shell_idle_timeout_seconds"] = 3600  # far longer than the test: only a client can free a shell
    sim, _ = sim_factory(data)
    host, sim_port = sim.endpoint("EX01")
    (tmp_path / "pw").write_text(PASSWORD)
    port = free_port()
    config = {
        "state_dir": str(tmp_path / "state"),
        "exchange": {
            "defaults": {
                "auth": "basic",
                "username": USER,
                "password_file": str(tmp_path / "pw"),
                "allow_insecure_basic": True,
                "call_timeout": "10s",
            },
            "servers": [{"name": "EX01", "host": host, "port": sim_port}],
        },
        "collectors": {
            name: {"enabled": name == "queues", **({"interval": "1s"} if name == "queues" else {})}
            for name in COLLECTOR_NAMES
        },
        "dns": {"enabled": False},
        "scheduler": {"first_run_spread": "50ms", "jitter": "0s"},
        "web": {"listen_address": f"127.0.0.1:{port}"},
    }
    path = tmp_path / "mailflow.yml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")}
    outcomes: list[str] = []
    open_after: list[int] = []
    for _ in range(RESTARTS):
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "serve", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            outcomes.append(first_poll(port, proc))
        finally:
            proc.send_signal(signal.SIGKILL)  # no shutdown: its shell stays open on the server
            _, err = proc.communicate(timeout=30)
        open_after.append(sim.stats()["servers"]["EX01"]["shells_open"])
        assert PASSWORD not in err
    print(f"outcomes {outcomes}; shells open after each kill {open_after}")
    assert outcomes == ["ok"] * RESTARTS, outcomes
    # each start closed what the one before left: one shell (the last run's) is left, never a pile
    assert max(open_after) <= 2, open_after
    assert sim.stats()["servers"]["EX01"]["shells_rejected"] == 0
