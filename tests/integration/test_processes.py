"""The real commands as processes: `demo` serves live metrics; `serve` closes sessions on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import PASSWORD, USER, SimFactory

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, needle: str | list[str], timeout: float) -> str:
    needles = [needle] if isinstance(needle, str) else needle
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                last = resp.read().decode()
                if all(n in last for n in needles):
                    return last
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} not served at {url} within {timeout}s; last body: {last[:500]}")


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err


def wait_for_line(path: Path, needle: str, timeout: float) -> str:
    """The text of ``path`` once it contains ``needle`` (a process's log being written)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text()
        if needle in text:
            return text
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} not logged within {timeout}s; log so far: {path.read_text()[-2000:]}")


def test_demo_serves_live_metrics_within_seconds(tmp_path: Path) -> None:
    port = free_port()
    started = time.monotonic()
    log_file = tmp_path / "demo.log"
    with log_file.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "demo", "--listen-address", f"127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )
    try:
        wanted = ['category="dns_failure"', 'queue_kind="poison"'] + [
            f'mailflow_collector_up{{collector="queues",target="{s}"}} 1.0' for s in ("EX01", "EX02", "EX03")
        ]
        wait_for(f"http://127.0.0.1:{port}/metrics", wanted, timeout=60)
        took = time.monotonic() - started
        page = wait_for(f"http://127.0.0.1:{port}/", "EX02", timeout=5)
        assert "queues" in page
        print(f"demo served queue metrics {took:.1f}s after start")
        # once every target was polled, the log tells the triage's findings
        wait_for_line(log_file, "every target polled: mail flow", timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    log = log_file.read_text()
    assert code == 0, log[-2000:]
    # the banner: where to look
    for needle in (
        f"metrics:      http://127.0.0.1:{port}/metrics",
        f"status page:  http://127.0.0.1:{port}/",
        "Exchange:     EX01 https://127.0.0.1:",
        "Ctrl-C stops",
    ):
        assert needle in log
    assert "finding critical: Outbound mail is retrying on DNS failures" in log
    # not the fake SMTP server's connection chatter (aiosmtpd's mail.log), and never the demo password
    assert "logger=mail.log" not in log and "handling connection" not in log
    assert "Demo-Passw0rd!" not in log


def test_serve_closes_sessions_on_sigterm(sim_factory: SimFactory, tmp_path: Path) -> None:
    sim, scenario = sim_factory()
    port = free_port()
    (tmp_path / "pw").write_text(PASSWORD)
    config = {
        "exchange": {
            "defaults": {
                "auth": "basic",
                "username": USER,
                "password_file": str(tmp_path / "pw"),
                "allow_insecure_basic": True,
                "call_timeout": "5s",
            },
            "servers": [
                {"name": s.name, "host": sim.endpoint(s.name)[0], "port": sim.endpoint(s.name)[1]}
                for s in scenario.servers
            ],
        },
        "scheduler": {"first_run_spread": "100ms", "jitter": "100ms"},
        "web": {"listen_address": f"127.0.0.1:{port}"},
    }
    path = tmp_path / "mailflow.yml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "serve", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/-/ready", "Ready", timeout=30)
        assert sim.stats()["shells_open"] == 2
    finally:
        code, err = stop(proc)
    assert code == 0, err[-2000:]
    assert sim.stats()["shells_open"] == 0
    assert "signal received signal=SIGTERM" in err
    assert PASSWORD not in err


def test_serve_refuses_invalid_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("exchange:\n  servers:\n    - name: EX01\n      port: 0\n")
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "exchange.servers[0].port (line 4)" in result.stderr
