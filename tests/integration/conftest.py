"""Fixtures: the protocol-level Exchange simulator on loopback and the exporter pointed at it."""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from exporter.demo import (
    DEMO_EXPECTATIONS,
    deep_merge,
    demo_dns_settings,
    demo_probe_settings,
    demo_scenario_path,
    demo_settings,
)
from exporter.netsim.demo_net import DemoNet
from exporter.service import Service
from exporter.settings import COLLECTOR_NAMES, Settings
from exporter.simulator import Scenario, Simulator, load_scenario
from exporter.store import Snapshot
from tests.tools import tool

USER = "svc-mailflow@contoso.sim"
# Distinctive so a leak anywhere is unmistakable.
PASSWORD = "Zq8!never-print-me-7731"

DNS_ERROR = "451 4.4.0 DNS query failed. The error was: SMTPSEND.DNS.NonExistentDomain; nonexistent domain"
REFUSED_ERROR = (
    "[{LRT=11/27/2026 1:02:03 AM};{LED=451 4.4.397 Error communicating with target host. -> 421 4.2.1 Unable "
    "to connect -> SocketConnectionRefused: Socket error code 10061};{FQDN=mx.tailspin.example};"
    "{IP=203.0.113.25}]"
)


def small_org(servers: tuple[str, ...] = ("EX01", "EX02"), session_limit: int = 18) -> dict[str, Any]:
    """A constant (non-moving) organisation whose values tests can assert exactly."""
    out = []
    for i, name in enumerate(servers):
        out.append(
            {
                "name": name,
                "queues": [
                    {"kind": "submission", "message_count": 3 + i, "incoming_rate": 4.5, "outgoing_rate": 4.25},
                    {
                        "kind": "delivery",
                        "row_id": 10,
                        "next_hop_domain": "fabrikam.example",
                        "status": "Retry",
                        "message_count": 17 + i,
                        "retry_count": 5,
                        "last_error": DNS_ERROR,
                    },
                    {
                        "kind": "delivery",
                        "row_id": 11,
                        "next_hop_domain": "tailspin.example",
                        "status": "Retry",
                        "message_count": 4,
                        "retry_count": 2,
                        "last_error": REFUSED_ERROR,
                    },
                    {"kind": "poison", "message_count": 1},
                ],
            }
        )
    return {
        "organisation": {"name": "Contoso", "domain": "contoso.sim"},
        "users": {USER: PASSWORD},
        "session_limit": session_limit,
        "servers": out,
    }


SimFactory = Callable[..., tuple[Simulator, Scenario]]


def raw_pool(sim: Simulator, server: str = "EX01", **options: Any) -> RunspacePool:
    """A pypsrp runspace pool (not yet opened) straight to one simulated server, as the test user;
    ``options`` go to pypsrp's WSMan (timeouts)."""
    host, port = sim.endpoint(server)
    wsman = WSMan(
        host,
        port=port,
        ssl=False,
        path="PowerShell",
        auth="basic",
        username=USER,
        password=PASSWORD,
        encryption="never",
        **options,
    )
    return RunspacePool(wsman, configuration_name="Microsoft.Exchange")


@pytest.fixture
def sim_factory() -> Iterator[SimFactory]:
    """Start simulators; every one is stopped at the end of the test."""
    started: list[Simulator] = []

    def make(data: dict[str, Any] | None = None, tls: bool = False) -> tuple[Simulator, Scenario]:
        scenario = Scenario.from_dict(data or small_org())
        sim = Simulator(scenario, host="127.0.0.1", tls=tls)
        sim.start()
        started.append(sim)
        return sim, scenario

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(sim_factory: SimFactory) -> tuple[Simulator, Scenario]:
    return sim_factory()


def settings_for(
    sim: Simulator, scenario: Scenario, tls: bool = False, overrides: dict[str, Any] | None = None
) -> Settings:
    """Exporter settings against this simulator, with short timeouts suited to tests."""
    # DNS checks off unless a test turns them on: they would otherwise query the machine's resolver.
    base: dict[str, Any] = {
        "exchange": {"defaults": {"call_timeout": 5, "connect_timeout": 2}},
        "dns": {"enabled": False},
    }
    return demo_settings(sim, scenario, "127.0.0.1:0", tls, interval=30.0, overrides=deep_merge(base, overrides or {}))


@contextlib.contextmanager
def demo_org(overrides: dict[str, Any] | None = None) -> Iterator[tuple[Simulator, Scenario, Settings]]:
    """The bundled demo organisation (simulator) and its outside world (DemoNet), with test settings
    polling both: the demo's expectations, DNS and synthetic probes, then ``overrides``. Stop any Service
    first."""
    scenario = load_scenario(demo_scenario_path())
    sim = Simulator(scenario, host="127.0.0.1", tls=False)
    sim.start()
    net = DemoNet(sink=sim.smtp_sink()).start()  # as the demo: the MX hands what it accepts to the simulator
    try:
        outside = deep_merge(demo_dns_settings(net), demo_probe_settings(net))
        merged = deep_merge(deep_merge(DEMO_EXPECTATIONS, outside), overrides or {})
        yield sim, scenario, settings_for(sim, scenario, overrides=merged)
    finally:
        net.stop()
        sim.stop()


def poll_demo_with_a_healed_fault(service: Service, sim: Simulator, scenario: Scenario) -> list[Snapshot]:
    """Poll 1 finds the accepted domains, poll 2 their MX hosts, poll 3 probes those hosts. One transient
    cmdlet error in between, healed, so the poll error counter exists as it would after any hiccup; the
    last poll must leave every target healthy."""
    service.poll_all()
    sim.faults.set(scenario.servers[-1].name, "error_record", cmdlet="Get-Queue", message="transient")
    service.poll_all()
    sim.faults.clear()
    snaps = service.poll_all()
    assert all(s.ok for s in snaps), [(s.collector, s.target, s.message) for s in snaps]
    return snaps


@pytest.fixture
def service_factory() -> Iterator[Callable[[Settings], Service]]:
    """Build services; each is stopped (sessions closed) at the end of the test."""
    made: list[Service] = []

    def make(settings: Settings) -> Service:
        service = Service(settings)
        made.append(service)
        return service

    yield make
    for service in made:
        service.stop()


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


def run_cmdlets(pool: RunspacePool, *commands: tuple[str, dict[str, Any]]) -> PowerShell:
    """Run one pipeline of cmdlets, each ``(name, {parameter: value})``, and return the finished PowerShell."""
    ps = PowerShell(pool)
    for name, params in commands:
        ps.add_cmdlet(name)
        for key, value in params.items():
            ps.add_parameter(key, value)
    ps.invoke()
    return ps


ALL_COLLECTORS = COLLECTOR_NAMES


def only_collectors(**enabled: dict[str, Any]) -> dict[str, Any]:
    """``collectors`` overrides that switch every collector off except those named (with their settings)."""
    return {
        name: {"enabled": True, **enabled[name]} if name in enabled else {"enabled": False} for name in ALL_COLLECTORS
    }


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_prometheus(
    config: Path, directory: Path, stderr: Any = subprocess.DEVNULL, ready_timeout: float = 60
) -> tuple[subprocess.Popen[str], int]:
    """A real Prometheus (Debian) with ``config`` and its TSDB under ``directory``, on a free loopback
    port, returned once ``/-/ready`` answers 200; the caller terminates it.

    Before it is ready Prometheus answers its API with a plain-text 503, which is not a test result; a
    process that exits at once (most often another process took the port between ``free_port()`` and
    the bind) is started again on a new port."""
    for _attempt in range(3):
        port = free_port()
        proc = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )
        deadline = time.monotonic() + ready_timeout
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return proc, port
            except OSError:  # refused while starting, or 503 while the TSDB opens
                pass
            time.sleep(0.2)
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
            pytest.fail(f"Prometheus on port {port} was not ready within {ready_timeout:.0f} s")
    pytest.fail(f"Prometheus exited at start three times (last exit code {proc.returncode})")


def counted_events(service: Service, server: str) -> Counter[str]:
    """The tracking events the exporter counted for ``server``, by event id (from its registry)."""
    out: Counter[str] = Counter()
    for metric in service.registry.collect():
        if metric.name == "mailflow_tracking_events":
            for sample in metric.samples:
                if sample.name.endswith("_total") and sample.labels["server"] == server:
                    out[sample.labels["event_id"]] += int(sample.value)
    return out


def events_in_log(sim: Simulator, server: str, since: float, until: float) -> Counter[str]:
    """Every event of ``server``'s log that happened (real time) in [since, until), by event id."""
    return Counter(e.event_id for e in sim.tracking.events(server, since, until, now=until))
