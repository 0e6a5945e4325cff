"""The real commands as processes: `demo` serves live metrics; `serve` closes sessions on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

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


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


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
    port, second = free_port(), free_port()
    started = time.monotonic()
    log_file = tmp_path / "demo.log"
    with log_file.open("w") as stderr:
        proc = subprocess.Popen(
            [
                *[sys.executable, "-m", "exporter", "demo"],
                *["--web.listen-address", f"127.0.0.1:{port}", f"--web.listen-address=127.0.0.1:{second}"],
                "--web.telemetry-path=/demo/metrics",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )
    try:
        wanted = ['category="dns_failure"', 'queue_kind="poison"'] + [
            f'mailflow_collector_up{{collector="queues",target="{s}"}} 1.0' for s in ("EX01", "EX02", "EX03")
        ]
        wait_for(f"http://127.0.0.1:{port}/demo/metrics", wanted, timeout=60)
        took = time.monotonic() - started
        wait_for(f"http://127.0.0.1:{second}/demo/metrics", wanted, timeout=5)
        page = wait_for(f"http://127.0.0.1:{second}/", "EX02", timeout=5)
        assert "queues" in page and 'href="/demo/metrics"' in page
        assert status_of(f"http://127.0.0.1:{port}/metrics") == 404
        print(f"demo served queue metrics {took:.1f}s after start")
        # once every target was polled, the log tells the triage's findings
        wait_for_line(log_file, "every target polled: mail flow", timeout=60)
        print(f"demo logged its first triage {time.monotonic() - started:.1f}s after start")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    log = log_file.read_text()
    assert code == 0, log[-2000:]
    # the banner: where to look, on every listener
    for needle in (
        f"metrics:      http://127.0.0.1:{port}/demo/metrics, http://127.0.0.1:{second}/demo/metrics",
        f"status page:  http://127.0.0.1:{port}/",
        "Exchange:     EX01 https://127.0.0.1:",
        "Ctrl-C stops",
    ):
        assert needle in log
    assert "finding critical: Outbound mail is retrying on DNS failures" in log
    # not the fake SMTP server's connection chatter (aiosmtpd's mail.log), and never the demo password
    assert "logger=mail.log" not in log and "handling connection" not in log
    assert "Demo-Passw0rd!" not in log


def serve_config(sim: Any, scenario: Any, tmp_path: Path, port: int) -> Path:
    """A configuration polling the simulator with basic auth (password in a file), listening on ``port``."""
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
    return path


def clean_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")}, **extra}


def test_serve_closes_sessions_on_sigterm(sim_factory: SimFactory, tmp_path: Path) -> None:
    sim, scenario = sim_factory()
    port = free_port()
    path = serve_config(sim, scenario, tmp_path, port)
    # 0.1's flag names, on purpose: they keep working for one release, with a warning in the log.
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "serve", "--config", str(path), "--log-level", "info"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
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
    for old, new in (("--config", "--config.file"), ("--log-level", "--log.level")):
        assert (
            f'level=warning logger=exporter msg="flag {old} is deprecated and will be removed in 0.3: use {new}"' in err
        )


def test_serve_flags_win_over_file_and_environment(sim_factory: SimFactory, tmp_path: Path) -> None:
    """Two listeners, another telemetry path, JSON logs at debug level: all from flags, over a file and
    an environment that say otherwise."""
    sim, scenario = sim_factory()
    from_file, first, second = free_port(), free_port(), free_port()
    path = serve_config(sim, scenario, tmp_path, from_file)  # the file: listen on from_file, log.level info
    env = clean_env(MAILFLOW_WEB__TELEMETRY_PATH="/from-env", MAILFLOW_LOG__FORMAT="logfmt")
    proc = subprocess.Popen(
        [
            *[sys.executable, "-m", "exporter", "serve", "--config.file", str(path)],
            *["--web.listen-address", f"127.0.0.1:{first}", "--web.listen-address", f"127.0.0.1:{second}"],
            *["--web.telemetry-path", "/mailflow/metrics", "--log.level", "debug", "--log.format", "json"],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        wanted = [f'mailflow_collector_up{{collector="queues",target="{s.name}"}} 1.0' for s in scenario.servers]
        for port in (first, second):  # every listener serves the same application
            wait_for(f"http://127.0.0.1:{port}/mailflow/metrics", wanted, timeout=30)
            assert status_of(f"http://127.0.0.1:{port}/metrics") == 404
            assert status_of(f"http://127.0.0.1:{port}/from-env") == 404
            assert wait_for(f"http://127.0.0.1:{port}/-/healthy", "Healthy", timeout=10)
        with pytest.raises(OSError):  # the file's address is not listened on: the flags replaced it
            socket.create_connection(("127.0.0.1", from_file), timeout=2).close()
    finally:
        code, err = stop(proc)
    assert code == 0, err[-2000:]
    records = [json.loads(line) for line in err.splitlines()]  # every line is one JSON object
    messages = [(r["level"], r["msg"]) for r in records]
    for port in (first, second):
        assert ("info", f"listening address=127.0.0.1:{port} path=/mailflow/metrics scheme=http") in messages
    debug = [msg for level, msg in messages if level == "debug"]
    assert any(msg.startswith("poll succeeded collector=queues target=") for msg in debug), messages[:20]
    assert not any("deprecated" in msg for _, msg in messages)


def test_serve_refuses_invalid_config(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("exchange:\n  servers:\n    - name: EX01\n      port: 0\n")
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "serve", "--config.file", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "exchange.servers[0].port (line 4)" in result.stderr


def test_serve_reports_an_address_it_cannot_listen_on(tmp_path: Path) -> None:
    """A busy port: one log line naming the address, exit 1, no traceback; nothing is polled."""
    path = tmp_path / "mailflow.yml"
    path.write_text("exchange:\n  defaults: {auth: basic, username: u, password: p, allow_insecure_basic: true}\n"
                    "  servers: [{name: EX01, host: 127.0.0.1, port: 9}]\n")  # fmt: skip
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        result = subprocess.run(
            [
                *[sys.executable, "-m", "exporter", "serve", "--config.file", str(path)],
                *["--web.listen-address", f"127.0.0.1:{free_port()}", "--web.listen-address", busy],
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=clean_env(),
        )
    assert result.returncode == 1, result.stderr
    assert f'level=error logger=exporter msg="cannot listen on {busy}: Address already in use"' in result.stderr
    assert "Traceback" not in result.stderr
