"""Transport faults planted in the simulator, end to end: the exporter polls a three-server DAG once a
minute on an injected clock, triage must name the fault first (a server down is named first as a
server the exporter cannot reach, the shadow copies it strands come with it), and the alert rules, fed
with the exporter's real scrapes through ``promtool test rules``, must fire exactly the expected
alerts. A healthy control has no finding and no alert at all.

Faults: back pressure (High, Medium) on one server; a Submission queue growing on one server while
Exchange reports no resource pressure; a DAG member down while its partners hold its shadow copies;
a server whose clock runs 7 minutes behind.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from exporter.service import Service
from exporter.simulator import Scenario, Simulator
from exporter.triage.model import Report
from tests.integration.conftest import PASSWORD, USER, only_collectors, settings_for
from tests.integration.scrape_rules import Scrapes, alert_names, check_alerts, expected

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

T0 = 1_800_000_000.0
QUEUE_PATH = r"C:\Program Files\Microsoft\Exchange Server\V15\TransportRoles\data\Queue"
TRANSPORT_ALERTS = (
    "MailflowBackPressureHigh",
    "MailflowBackPressureMedium",
    "MailflowShadowRedundancyPrimaryUnreachable",
    "MailflowServerClockSkew",
)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def dag() -> dict[str, Any]:
    """Three DAG members with light traffic; each shadows another's mail (NextHopDomain = its FQDN)."""
    tracking = {"messages_per_minute": 6, "failure_ratio": 0, "stuck_ratio": 0, "history_minutes": 30}
    servers = []
    for name, shadows in (("EX01", "EX02"), ("EX02", "EX03"), ("EX03", "EX02")):
        servers.append(
            {
                "name": name,
                "tracking": dict(tracking),
                "queues": [
                    {"kind": "submission", "message_count": 2, "incoming_rate": 0.5, "outgoing_rate": 0.5},
                    {"kind": "shadow", "row_id": 12, "primary_server": shadows, "message_count": 3},
                ],
            }
        )
    return {
        "organisation": {"name": "Contoso", "domain": "contoso.sim"},
        "users": {USER: PASSWORD},
        "shell_idle_timeout_seconds": 1_000_000,
        "shadow_redundancy": {"heartbeat_frequency_seconds": 120, "resubmit_seconds": 10800},
        "databases": [
            {"name": "DB1", "copies": [{"server": "EX01"}, {"server": "EX02"}, {"server": "EX03"}]},
            {"name": "DB2", "copies": [{"server": "EX02"}, {"server": "EX03"}, {"server": "EX01"}]},
        ],
        "send_connectors": [{"name": "Internet", "address_spaces": ["SMTP:*;1"]}],
        "servers": servers,
    }


def run(data: dict[str, Any], tmp_path: Path, minutes: int, **faults: dict[str, Any]) -> tuple[Report, Scrapes]:
    """Plant ``faults`` ({server: {kind, ...}}) at T0, poll once a minute for ``minutes``, scrape after each
    poll; the triage report of the last poll and the scrapes."""
    clock = Clock(T0)
    scenario = Scenario.from_dict(data)
    collectors = only_collectors(
        queues={"interval": 60},
        back_pressure={"interval": 60},
        tracking={"interval": 60, "initial_lookback": "5m", "stuck_after": "10m"},
        components={"interval": 60},
        database_copies={"interval": 60},
        service_health={"interval": 60},
    )
    with Simulator(scenario, host="127.0.0.1", tls=False, clock=clock) as sim:
        for server, fault in faults.items():
            sim.faults.set(server, **fault)
        settings = settings_for(sim, scenario, overrides={"state_dir": str(tmp_path), "collectors": collectors})
        service = Service(settings, clock=clock)
        scrapes = Scrapes()
        try:
            for minute in range(minutes + 1):
                clock.now = T0 + 60 * minute
                service.poll_all()
                scrapes.scrape(service)
            return service.triage(), scrapes
        finally:
            service.stop()


def first(report: Report) -> Any:
    assert report.findings, "no finding"
    return report.findings[0]


def test_healthy_control_has_no_finding_and_no_alert(tmp_path: Path) -> None:
    report, scrapes = run(dag(), tmp_path, 16)
    assert [(f.rule, f.title) for f in report.findings if f.severity != "info"] == []
    assert report.exit_code == 0 and not report.unchecked
    level = scrapes.value("mailflow_transport_resource_use", server="EX01", resource="UsedDiskSpace", path=QUEUE_PATH)
    assert level == 0
    check_alerts(scrapes, tmp_path, {}, alert_names())


@pytest.mark.parametrize(("level", "severity"), [("High", "critical"), ("Medium", "warning")])
def test_back_pressure_is_named_with_the_resource_exchange_reports(tmp_path: Path, level: str, severity: str) -> None:
    fault = {"kind": "back_pressure", "level": level, "resource": "UsedDiskSpace", "rate_per_minute": 30}
    report, scrapes = run(dag(), tmp_path, 16, EX01=fault)
    finding = first(report)
    count = 2 + 30 * 16
    assert (finding.rule, finding.severity) == (f"back_pressure_{level.lower()}", severity)
    assert finding.title == f"EX01 is under back pressure: Submission {count} and growing; UsedDiskSpace {level}"
    assert any("the other servers' Submission queues hold 2, 2" in e for e in finding.evidence)
    assert "free disk space" in finding.next_step and "Get-ExchangeDiagnosticInfo -Server EX01" in finding.next_step
    alert = f"MailflowBackPressure{level}"
    labels = {"server": "EX01", "resource": "UsedDiskSpace", "path": QUEUE_PATH}
    check_alerts(
        scrapes,
        tmp_path,
        {alert: [expected(alert, 2 if level == "High" else 1, **labels)]},
        TRANSPORT_ALERTS,
    )


def test_submission_growing_without_back_pressure_is_not_blamed_on_resources(tmp_path: Path) -> None:
    data = dag()
    data["servers"][1]["queues"][0] = {
        "kind": "submission",
        "outgoing_rate": 1.0,
        "pattern": {"kind": "grow", "min": 40, "max": 2000, "per_minute": 30},
    }
    report, scrapes = run(data, tmp_path, 16)
    finding = first(report)
    assert (finding.rule, finding.severity) == ("submission_backlog", "warning")
    assert finding.title == "EX02's Submission queue is backing up: 520 and growing"
    assert any("Exchange reports no resource under back pressure (AggregateUse Low)" in e for e in finding.evidence)
    assert finding.next_step.startswith("Not back pressure")
    check_alerts(scrapes, tmp_path, {}, TRANSPORT_ALERTS)


def test_a_dag_member_down_is_named_with_the_shadow_messages_its_partners_hold(tmp_path: Path) -> None:
    report, scrapes = run(dag(), tmp_path, 16, EX02={"kind": "down", "rate_per_minute": 5})
    # The server that does not answer is the root finding (blindness); the shadow copies are its toll.
    assert (first(report).rule, first(report).severity) == ("server_unreachable", "critical")
    assert "EX02" in first(report).title
    (finding,) = [f for f in report.findings if f.rule == "shadow_for_unreachable_server"]
    held = 3 + 5 * 16
    assert finding.severity == "warning"
    assert finding.title == f"EX02 is unreachable; EX01 and EX03 hold {2 * held} shadow message(s) for it"
    assert f"EX01: {held} message(s) in EX01\\Shadow\\12 (shadow for ex02.contoso.sim, Ready)" in finding.evidence
    assert any(e.startswith("EX02 does not answer: ") and "connection" in e for e in finding.evidence)
    alert = "MailflowShadowRedundancyPrimaryUnreachable"
    firing = [
        expected(alert, held, server=s, next_hop_domain="ex02.contoso.sim", primary="EX02") for s in ("EX01", "EX03")
    ]
    check_alerts(scrapes, tmp_path, {alert: firing}, TRANSPORT_ALERTS)


def test_a_server_clock_seven_minutes_behind_is_named_and_alerts(tmp_path: Path) -> None:
    data = copy.deepcopy(dag())
    data["servers"][1]["clock_skew_seconds"] = -420
    report, scrapes = run(data, tmp_path, 8)
    finding = first(report)
    assert (finding.rule, finding.severity) == ("server_clock_skew", "warning")
    assert finding.title == "EX02's clock is 7 minute(s) behind the exporter's"
    assert "beyond Kerberos' 5-minute limit: Kerberos logons to and from it fail" in finding.evidence
    assert [f.rule for f in report.findings if f.severity != "info"] == ["server_clock_skew"]  # no false stuck
    alert = "MailflowServerClockSkew"
    check_alerts(scrapes, tmp_path, {alert: [expected(alert, 420, server="EX02")]}, TRANSPORT_ALERTS)
