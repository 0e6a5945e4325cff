"""Blindness on the simulator: a transport server that is refused or hangs, in an otherwise healthy
organisation, is the first finding (server, endpoint, one plain reason), no scope is called healthy,
and the exit code says so; ``check --timeout`` stops and lists what did not finish; the status page
says "still polling" until every collector has polled once; the logs carry one plain line per failure.
Real pypsrp against the simulator, real processes for the command line."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.check import check
from exporter.demo import deep_merge
from exporter.service import Service
from exporter.simulator import Scenario, Simulator
from exporter.triage.report import write_json, write_text
from tests.integration.conftest import PASSWORD, USER, SimFactory, settings_for
from tests.integration.test_status_page import check_page, parse
from tests.integration.test_triage import healthy_org

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parents[2]
RAW = ("MaxRetryError", "HTTPConnectionPool", "NewConnectionError", "Errno", "Traceback", "ReadTimeoutError")
NO_TRACKING = {"collectors": {"tracking": {"enabled": False}}}
EXCHANGE_CHECKS = ("queues (Get-Queue)", "back pressure (Get-ExchangeDiagnosticInfo)", "receive connectors",
                   "the transport servers' DNS servers (Get-TransportService, Get-NetworkConnectionInfo)",
                   "component states (maintenance mode)", "database copies", "certificates",
                   "required services (Test-ServiceHealth)")  # fmt: skip
PER_SERVER = len(EXCHANGE_CHECKS)  # the per-server Exchange polls of a server (tracking off)


def endpoint(sim: Simulator, server: str) -> str:
    host, port = sim.endpoint(server)
    return f"http://{host}:{port}/PowerShell"


def rendered(report: Any) -> tuple[str, str]:
    text, data = io.StringIO(), io.StringIO()
    write_text(report, text, color=False)
    write_json(report, data)
    return text.getvalue(), data.getvalue()


@pytest.mark.parametrize(("fault", "reason"), [("refused", "connection refused"),
                                               ("hang", "no answer within 5s while opening the session")])  # fmt: skip
def test_an_unpollable_server_is_the_first_finding(sim_factory: SimFactory, fault: str, reason: str) -> None:
    sim, scenario = sim_factory(healthy_org())
    sim.faults.set("EX02", fault)
    report = check(settings_for(sim, scenario, overrides=NO_TRACKING))

    first = report.findings[0]
    assert (first.rule, first.severity) == ("server_unreachable", "critical"), [f.title for f in report.findings]
    assert first.title == f"EX02: {reason} at {endpoint(sim, 'EX02')}"
    assert first.evidence[0] == "not checked: " + ", ".join(EXCHANGE_CHECKS)
    assert [f.rule for f in report.findings] == ["server_unreachable"]  # one finding, not one per collector
    assert {v.scope: v.status for v in report.verdicts} == {s: "unknown" for s in ("inbound", "outbound", "internal")}
    assert report.exit_code == 2
    text, data = rendered(report)
    assert "No problems found" not in text and not any(raw in text + data for raw in RAW)
    assert json.loads(data)["findings"][0]["title"] == first.title
    if fault == "hang":
        # The polls queued behind the hung open shared its failure: one request reached EX02, not one per
        # collector (each would have waited out its own call_timeout).
        assert sim.stats()["servers"]["EX02"]["requests"] == 1


def test_healthy_control_has_no_findings(sim_factory: SimFactory) -> None:
    sim, scenario = sim_factory(healthy_org())
    report = check(settings_for(sim, scenario, overrides=NO_TRACKING))
    assert report.findings == () and report.unchecked == () and report.pending == ()
    assert {v.status for v in report.verdicts} == {"healthy"} and report.exit_code == 0
    assert "No problems found." in rendered(report)[0]


def test_check_timeout_with_a_hung_server_lists_what_did_not_finish(sim_factory: SimFactory) -> None:
    sim, scenario = sim_factory(healthy_org())
    sim.faults.set("EX02", "hang")
    # call_timeout is longer than --timeout: EX02's polls cannot finish, EX01's do.
    slow = deep_merge(NO_TRACKING, {"exchange": {"defaults": {"call_timeout": 60}}})
    report = check(settings_for(sim, scenario, overrides=slow), timeout=4)
    assert report.timeout == 4 and report.exit_code == 4
    assert set(report.pending) == {
        f"{c} EX02"
        for c in ("queues", "back_pressure", "receive_connectors", "transport_dns", "components", "database_copies",
                  "certificates", "service_health")
    }  # fmt: skip
    first = report.findings[0]
    assert first.rule == "check_timeout" and first.title.endswith(f"{PER_SERVER} poll(s) did not finish")
    assert first.evidence == ("EX02: " + ", ".join(EXCHANGE_CHECKS),)
    assert "healthy" not in {v.status for v in report.verdicts}
    text = rendered(report)[0]
    assert "Did not finish:" in text and "No problems found" not in text


# --- the command line --------------------------------------------------------------------------------


def config_file(sim: Simulator, scenario: Scenario, tmp_path: Path, call_timeout: str = "5s") -> Path:
    (tmp_path / "pw").write_text(PASSWORD)
    config = {
        "state_dir": str(tmp_path / "state"),
        "exchange": {
            "defaults": {"auth": "basic", "username": USER, "password_file": str(tmp_path / "pw"),
                         "allow_insecure_basic": True, "call_timeout": call_timeout, "connect_timeout": "2s"},
            "servers": [{"name": s.name, "host": sim.endpoint(s.name)[0], "port": sim.endpoint(s.name)[1]}
                        for s in scenario.servers],
        },
        "collectors": {"tracking": {"enabled": False}},
        "dns": {"enabled": False},
    }  # fmt: skip
    path = tmp_path / "mailflow.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_check(*args: str, stderr: Any = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")}
    return subprocess.run([sys.executable, "-m", "exporter", "check", *args], stdout=subprocess.PIPE, stderr=stderr,
                          text=True, timeout=90, cwd=ROOT, env=env, check=False)  # fmt: skip


def test_command_line_refused_server_logs_one_plain_line_per_failure(sim_factory: SimFactory, tmp_path: Path) -> None:
    sim, scenario = sim_factory(healthy_org())
    sim.faults.set("EX02", "refused")
    result = run_check("--config", str(config_file(sim, scenario, tmp_path)), "--log-level", "info")
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert f"1. [critical] EX02: connection refused at {endpoint(sim, 'EX02')}" in lines
    failed = [line for line in result.stderr.splitlines() if "poll failed" in line]
    assert len(failed) == PER_SERVER and all('error=\\"connection refused\\"' in line for line in failed), failed
    assert all(line.startswith("ts=") for line in result.stderr.splitlines())  # one line per record
    assert not any(raw in result.stderr + result.stdout for raw in RAW)
    assert PASSWORD not in result.stderr + result.stdout


def test_command_line_timeout_says_what_did_not_finish(sim_factory: SimFactory, tmp_path: Path) -> None:
    sim, scenario = sim_factory(healthy_org())
    sim.faults.set("EX02", "hang")
    result = run_check("--config", str(config_file(sim, scenario, tmp_path, "60s")), "--timeout", "4")
    assert result.returncode == 4, result.stderr[-2000:]
    assert result.stderr.startswith(f"check: Stopped after --timeout 4s; {PER_SERVER} poll(s) did not finish: ")
    assert "polled" not in result.stderr  # no progress when stderr is not a terminal
    assert "Did not finish:" in result.stdout and "     - queues EX02" in result.stdout.splitlines()
    assert "exit code 4 (" in result.stdout


def test_progress_on_a_terminal_stderr(sim_factory: SimFactory, tmp_path: Path) -> None:
    sim, scenario = sim_factory(healthy_org())
    sim.faults.set("EX02", "hang")
    master, slave = pty.openpty()
    try:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("MAILFLOW_")}, "TERM": "xterm"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "check", "--config", str(config_file(sim, scenario, tmp_path, "60s")),
             "--timeout", "3"],
            stdout=subprocess.PIPE, stderr=slave, text=True, cwd=ROOT, env=env,
        )  # fmt: skip
        os.close(slave)
        seen = b""
        while True:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        stdout, _ = proc.communicate(timeout=60)
    finally:
        os.close(master)
    assert proc.returncode == 4
    terminal = seen.decode("utf-8", "replace")
    assert "polled" in terminal and "waiting for" in terminal and "EX02" in terminal, terminal[-2000:]
    assert "\x1b[" not in stdout  # stdout was piped: plain text


# --- the status page before the first polls finish -------------------------------------------------


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")


def wait_until(predicate: Callable[[], bool], seconds: float = 45.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.2)


def test_status_page_says_still_polling_until_every_first_poll_finished(sim_factory: SimFactory) -> None:
    sim, scenario = sim_factory(healthy_org())
    sim.faults.set("EX02", "hang")  # EX02's first polls stay in flight until the fault is cleared
    settings = settings_for(sim, scenario, overrides=deep_merge(NO_TRACKING, {
        "exchange": {"defaults": {"call_timeout": 60}}, "web": {"listen_address": "127.0.0.1:0"}}))  # fmt: skip
    service = Service(settings)
    try:
        service.start()
        assert service.web is not None
        base = f"http://127.0.0.1:{service.web.port}"
        # Every poll but EX02's finishes: the DNS targets appear only once the org-wide polls have named
        # the domains and outbound IPs, so counting EX01's polls alone raced them (a CI run saw 9 pending).
        wait_until(lambda: sorted(t for c, t in service.pending_polls()) == ["EX02"] * PER_SERVER)
        status, body = get(base + "/")
        assert status == 200
        dom = parse(body)
        badges = [b.text() for b in dom.by_id("verdicts").find_all("span", "badge")]
        assert badges == ["polling", "polling", "polling"], badges
        note = dom.find_all("p", "pending-note")[0].text()
        assert note.startswith(f"Still polling: {PER_SERVER} first poll(s) have not finished: ")
        assert "queues EX02" in note
        pending = [li.text() for ul in dom.by_id("unchecked").find_all("ul", "pending") for li in ul.find_all("li")]
        assert "queues EX02" in pending and len(pending) == PER_SERVER
        assert "No problems found" not in body and "every collector's last poll succeeded" not in body
        check_page(dom, service.triage(), settings.web.runbook_url)  # the page says what the report says
        assert get(base + "/-/ready")[0] == 503

        sim.faults.clear("EX02")  # the hung open is answered: the first polls of EX02 finish
        wait_until(lambda: get(base + "/-/ready")[0] == 200)
        wait_until(lambda: "No problems found." in get(base + "/")[1])  # the page caches its triage 5 s
        final = parse(get(base + "/")[1])
        assert [b.text() for b in final.by_id("verdicts").find_all("span", "badge")] == ["healthy"] * 3
    finally:
        service.stop()
