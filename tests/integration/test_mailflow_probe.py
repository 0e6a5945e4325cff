"""The synthetic mail-flow probe end to end: the exporter's real client (pypsrp sessions, smtplib,
dnspython) against the simulator (Test-Mailflow, the tracking log) and the demo outside world (DemoDNS
with the organisation's MX, DemoSMTP handing accepted mail to the simulator). Each planted fault must
stop the probe at its own stage; a tracking log that cannot be searched makes it unknown, not failed."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import generate_latest

from exporter.netsim.demo_net import DemoNet, demo_zones
from exporter.probe.result import ProbeResult
from exporter.service import Service
from exporter.simulator import Scenario, Simulator
from exporter.triage.report import write_text
from tests.integration.conftest import PASSWORD, USER, only_collectors, settings_for, small_org

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

RECIPIENT = "mailflow-probe@contoso.sim"
SENDER = "probe@monitoring.example"


def org(roles: list[str] | None = None) -> dict[str, Any]:
    data = small_org(("EX01", "EX02"))
    for server in data["servers"]:
        server["fqdn"] = f"{server['name'].lower()}.contoso.sim"
        server["tracking"] = {"messages_per_minute": 2, "history_minutes": 5}
    data["databases"] = [
        {"name": "DB01", "copies": [{"server": "EX01", "status": "Mounted"}, {"server": "EX02", "status": "Healthy"}]},
        {"name": "DB02", "copies": [{"server": "EX02", "status": "Mounted"}]},
    ]
    if roles is not None:
        data["users"] = {USER: {"password": PASSWORD, "roles": roles}}
    return data


World = tuple[Simulator, DemoNet]
# The simulated DELIVER lag (at most 3 s) plus what the Date header's one-second resolution can add (the
# skew read is up to a second low), and a little for the calls in between.
MAX_LATENCY = 3.0 + 1.0 + 0.1


@pytest.fixture
def world() -> Iterator[World]:
    sim = Simulator(Scenario.from_dict(org()), host="127.0.0.1", tls=False)
    sim.start()
    net = DemoNet(sink=sim.smtp_sink()).start()
    yield sim, net
    net.stop()
    sim.stop()


def probe_settings(world: World, internal: bool = True, **inbound: Any) -> dict[str, Any]:
    """The probe collector alone: the inbound probe (``inbound`` overrides its settings), and with
    ``internal`` the two Test-Mailflow probes (each waits for the simulated delivery, 1-3 s)."""
    _sim, net = world
    probe = {
        "name": "contoso-inbound",
        "domain": "contoso.sim",
        "recipient": RECIPIENT,
        "sender": SENDER,
        "port": net.smtp_port,
        "smtp_timeout": 5,
        "deliver_timeout": 6,
        "tracking_every": 0.5,
        **inbound,
    }
    return {
        "collectors": only_collectors(
            mailflow_probe={
                "internal": [
                    {"name": "ex01-to-ex02", "source": "EX01", "target_database": "DB02", "execution_timeout": 5},
                    {"name": "ex01-self", "source": "EX01", "execution_timeout": 5},
                ]
                if internal
                else [],
                "inbound": [probe],
            }
        ),
        "dns": {"enabled": False, "resolvers": [net.dns_address], "port": net.dns_port, "timeout": 2},
    }


@pytest.fixture
def run(world: World, service_factory: Callable[..., Service]) -> Callable[..., tuple[Service, dict[str, ProbeResult]]]:
    def go(internal: bool = True, **inbound: Any) -> tuple[Service, dict[str, ProbeResult]]:
        sim, _net = world
        overrides = probe_settings(world, internal, **inbound)
        service = service_factory(settings_for(sim, sim.scenario, overrides=overrides))
        snaps = service.poll_all()
        assert {s.collector for s in snaps} == {"mailflow_probe"}
        failed = [(s.target, s.reason, s.message) for s in snaps if not s.ok]
        assert failed == [], failed
        return service, {s.target: s.result for s in snaps}

    return go


def sample(service: Service, name: str, **labels: str) -> float | None:
    return service.registry.get_sample_value(name, labels)


def test_a_healthy_path_arrives_end_to_end(world: World, run: Any, all_logs: pytest.LogCaptureFixture) -> None:
    _sim, _net = world
    service, results = run()
    inbound = results["contoso-inbound"]
    assert inbound.outcome == "success" and inbound.stage == "" and inbound.server == "EX01"  # DB01 is on EX01
    # The latency is the simulator's own: DELIVER is logged 1-3 s after RECEIVE, which follows DATA at once,
    # plus up to a second: the server's clock is read from the Date header (one-second resolution), a lower
    # bound of its skew (server_clock.py), and the probe takes that skew out of the DELIVER stamp.
    assert inbound.duration is not None and 0.9 <= inbound.duration <= MAX_LATENCY
    internal = results["ex01-to-ex02"]
    assert internal.outcome == "success" and internal.duration is not None and 0.8 <= internal.duration < 4.0
    assert results["ex01-self"].outcome == "success"
    assert sample(service, "mailflow_probe_success", probe="contoso-inbound", kind="inbound") == 1
    assert sample(service, "mailflow_probe_duration_seconds", probe="contoso-inbound", kind="inbound") == pytest.approx(
        inbound.duration
    )
    assert sample(service, "mailflow_probe_success", probe="ex01-to-ex02", kind="internal") == 1
    exposition = generate_latest(service.registry).decode()
    assert "mailflow_probe_stage{" not in exposition
    # Never the addresses or the message id: not in labels, not in the exporter's logs at info or above.
    logged = "\n".join(r.getMessage() for r in all_logs.records if r.name.startswith("exporter") and r.levelno >= 20)
    for secret in (RECIPIENT, SENDER, "@mailflow-probe.invalid"):
        assert secret not in exposition and secret not in logged
    assert [f.rule for f in service.triage().findings if f.rule.startswith("probe_")] == []


@pytest.mark.parametrize(
    ("plant", "stage", "detail"),
    [
        ("mx_missing", "dns_mx", r"MX lookup for the probe domain: nodata"),
        ("mx_dangling", "dns_mx", r"no MX host of the probe domain has an address \(nxdomain\)"),
        ("mx_closed", "connect", r"no MX host accepted a connection"),
        ("back_pressure", "smtp_4xx", r"refused: 452"),
        ("foreign_recipient", "smtp_5xx", r"RCPT TO refused: 550"),
        ("delivery_stopped", "deliver", r"received by EX01, not delivered after \d+s"),
        ("tracking_off", "tracking_receive", r"no Exchange server logged its RECEIVE"),
    ],
)
def test_a_planted_fault_stops_the_inbound_probe_at_its_stage(
    world: World, run: Any, plant: str, stage: str, detail: str
) -> None:
    sim, net = world
    inbound: dict[str, Any] = {}
    if plant in ("mx_missing", "mx_dangling"):  # the zone loses its MX records, or their hosts' addresses
        zones = demo_zones(net.domain, net.host)
        gone = ("@ IN MX",) if plant == "mx_missing" else ("mail1 IN A", "mail2 IN A")
        zones[net.domain] = "".join(ln for ln in zones[net.domain].splitlines(True) if not ln.startswith(gone))
        net.dns.set_zones(zones)
    elif plant == "mx_closed":
        assert net.smtp is not None
        net.smtp.stop()
    elif plant == "back_pressure":
        sim.faults.set("EX01", "back_pressure", level="Medium")
    elif plant == "foreign_recipient":
        inbound["recipient"] = "probe@fabrikam.example"
    elif plant == "tracking_off":  # mail flows, but the receiving and delivering server log none of it
        data = org()
        data["servers"][0]["message_tracking_log_enabled"] = False
        sim.set_scenario(Scenario.from_dict(data))
    elif plant == "delivery_stopped":
        data = org()
        data["servers"][0]["service_health"] = {"Mailbox Server Role": {"not_running": ["MSExchangeDelivery"]}}
        sim.set_scenario(Scenario.from_dict(data))
    service, results = run(internal=False, **inbound)  # the internal probes have their own tests
    assert set(results) == {"contoso-inbound"}
    result = results["contoso-inbound"]
    assert (result.outcome, result.stage) == ("failure", stage), result
    assert re.search(detail, result.detail), result.detail
    assert sample(service, "mailflow_probe_success", probe="contoso-inbound", kind="inbound") == 0
    assert sample(service, "mailflow_probe_stage", probe="contoso-inbound", kind="inbound", stage=stage) == 1
    assert sample(service, "mailflow_probe_duration_seconds", probe="contoso-inbound", kind="inbound") is None
    [finding] = [f for f in service.triage().findings if f.rule == "probe_failed" and "contoso-inbound" in f.title]
    assert finding.severity == "critical" and finding.scopes == ("inbound",) and stage in finding.title
    assert finding.runbook == "mailflow-probe-failed"
    assert RECIPIENT not in " ".join((finding.title, *finding.evidence, finding.next_step))
    text = io.StringIO()  # what `check` prints
    write_text(service.triage(), text, color=False)
    assert (
        f"[critical] Synthetic inbound probe contoso-inbound did not arrive: it stopped at {stage}" in text.getvalue()
    )
    assert "docs/runbook.md#mailflow-probe-failed" in text.getvalue()


def test_the_latency_is_measured_on_the_exporters_clock(world: World, run: Any) -> None:
    """EX01 runs 90 s ahead: its DELIVER stamp is 90 s late on our clock; the probe takes the skew its
    session read from the Date header back out."""
    sim, _net = world
    data = org()
    data["servers"][0]["clock_skew_seconds"] = 90
    sim.set_scenario(Scenario.from_dict(data))
    _service, results = run()
    inbound = results["contoso-inbound"]
    assert inbound.outcome == "success" and inbound.duration is not None and 0.0 <= inbound.duration <= MAX_LATENCY


def test_a_tracking_log_that_cannot_be_searched_is_blind_not_failed(world: World, run: Any) -> None:
    sim, _net = world
    data = org()
    data["servers"][0]["service_health"] = {"Mailbox Server Role": {"not_running": ["MSExchangeDelivery"]}}
    sim.set_scenario(Scenario.from_dict(data))
    sim.faults.set("EX02", "error_record", cmdlet="Get-MessageTrackingLog", message="Transport Log Search is down")
    service, results = run(internal=False)
    result = results["contoso-inbound"]
    assert (result.outcome, result.stage) == ("unknown", "tracking_blind"), result
    assert "EX02 (cmdlet_error)" in result.detail
    assert sample(service, "mailflow_probe_success", probe="contoso-inbound", kind="inbound") is None
    assert sample(service, "mailflow_probe_stage", probe="contoso-inbound", kind="inbound", stage="tracking_blind") == 1
    findings = {f.rule: f for f in service.triage().findings}
    assert "probe_failed" not in findings or "contoso-inbound" not in findings["probe_failed"].title
    assert findings["probe_blind"].severity == "warning" and findings["probe_blind"].scopes == ()


def test_test_mailflow_failure_and_no_result(world: World, run: Any) -> None:
    sim, _net = world
    sim.faults.set("EX02", "back_pressure", level="High")  # DB02's server: no receipt comes back
    service, results = run()
    failed = results["ex01-to-ex02"]
    assert (failed.outcome, failed.stage, failed.server) == ("failure", "test_mailflow", "EX01")
    assert results["ex01-self"].outcome == "success"  # EX01 to itself does not cross EX02
    assert sample(service, "mailflow_probe_stage", probe="ex01-to-ex02", kind="internal", stage="test_mailflow") == 1
    data = org()
    data["databases"] = [{"name": "DB02", "copies": [{"server": "EX02", "status": "Mounted"}]}]
    sim.set_scenario(Scenario.from_dict(data))  # EX01 has no database: Exchange warns, returns nothing
    sim.faults.clear()
    _service, results = run()
    assert (results["ex01-self"].outcome, results["ex01-self"].stage) == ("unknown", "no_result")
    assert "doesn't have any mailbox databases" in results["ex01-self"].detail


def test_without_the_monitoring_role_the_finding_names_it(
    service_factory: Callable[..., Service], caplog: pytest.LogCaptureFixture
) -> None:
    sim = Simulator(Scenario.from_dict(org(roles=["View-Only Configuration", "Message Tracking"])), tls=False)
    sim.start()
    net = DemoNet(sink=sim.smtp_sink()).start()
    try:
        service = service_factory(settings_for(sim, sim.scenario, overrides=probe_settings((sim, net))))
        snaps = {s.target: s for s in service.poll_all()}
        assert snaps["ex01-to-ex02"].reason == "permission"
        assert snaps["contoso-inbound"].ok and snaps["contoso-inbound"].result.outcome == "success"
        [finding] = [f for f in service.triage().findings if f.rule == "missing_role"]
        assert "the Monitoring role (Test-Mailflow)" in finding.title
        assert logging.getLogger("exporter").level <= logging.WARNING
    finally:
        net.stop()
        sim.stop()


def test_the_demo_runs_both_probes_through_its_own_world(service_factory: Callable[..., Service]) -> None:
    from exporter.demo import demo_organisation

    with demo_organisation("127.0.0.1:0", tls=False) as (_scenario, settings):
        assert settings.collectors.mailflow_probe.enabled
        service = service_factory(settings)
        probes = {c.name: c for c in service.collectors}["mailflow_probe"]
        results = {t: service.poll_once(probes, t) for t in probes.targets()}
        outcomes = {t: (s.result.kind, s.result.outcome) for t, s in results.items() if s is not None and s.ok}
        assert outcomes == {"ex01-to-ex02": ("internal", "success"), "contoso-inbound": ("inbound", "success")}
        service.stop()
