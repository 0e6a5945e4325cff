"""Triage scenarios: each classic fault planted in the simulator (or the DNS server), alone in an otherwise
healthy organisation, and the report must name that cause first. Real sockets, real pypsrp, real DNS."""

from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exporter.check import check
from exporter.demo import deep_merge, demo_dns_settings
from exporter.netsim.demo_net import DOMAIN, DemoNet, demo_zones
from exporter.triage.model import Report
from exporter.triage.report import write_json, write_text
from tests.integration.conftest import PASSWORD, USER, SimFactory, settings_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parents[2]

DNS_451 = "451 4.4.0 DNS query failed. The error was: SMTPSEND.DNS.NonExistentDomain; nonexistent domain"
REFUSED_421 = (
    "[{LRT=11/27/2026 1:02:03 AM};{LED=451 4.4.397 Error communicating with target host. -> 421 4.2.1 Unable to "
    "connect -> SocketConnectionRefused: Socket error code 10061};{FQDN=mx.tailspin.example};{IP=203.0.113.25}]"
)
UNKNOWN_550 = "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found"


def healthy_org() -> dict[str, Any]:
    """Two servers with nothing wrong: a few messages in submission, every database mounted."""
    servers = [
        {"name": n, "tracking": None, "queues": [{"kind": "submission", "message_count": 2}]} for n in ("EX01", "EX02")
    ]
    return {
        "organisation": {"name": "Contoso", "domain": "contoso.sim"},
        "users": {USER: PASSWORD},
        "servers": servers,
        "send_connectors": [{"name": "Internet", "address_spaces": ["SMTP:*;1"]}],
    }


def retrying(error: str, count: int = 30, internal: bool = False) -> dict[str, Any]:
    queue: dict[str, Any] = {
        "kind": "delivery",
        "row_id": 7,
        "next_hop_domain": "contoso.sim" if internal else "fabrikam.example",
        "status": "Retry",
        "message_count": count,
        "retry_count": 4,
        "last_error": error,
    }
    if internal:
        queue["delivery_type"] = "SmtpRelayToMailboxDeliveryGroup"
    return queue


def plant(mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    org = copy.deepcopy(healthy_org())
    mutate(org)
    return org


def _dns_451(o: dict[str, Any]) -> None:
    o["servers"][0]["queues"].append(retrying(DNS_451))


def _refused_421(o: dict[str, Any]) -> None:
    o["servers"][1]["queues"].append(retrying(REFUSED_421))


def _internal_550(o: dict[str, Any]) -> None:
    o["servers"][0]["queues"].append(retrying(UNKNOWN_550, 12, internal=True))


def _poison(o: dict[str, Any]) -> None:
    o["servers"][1]["queues"].append({"kind": "poison", "message_count": 2})


def _open_relay(o: dict[str, Any]) -> None:
    o["servers"][0]["receive_connectors"] = [
        {
            "name": "Partner Relay EX01",
            "remote_ip_ranges": ["0.0.0.0-255.255.255.255"],
            "permission_groups": ["ExchangeServers"],
            "auth_mechanism": ["ExternalAuthoritative"],
        }
    ]


def _maintenance(o: dict[str, Any]) -> None:
    o["servers"][1]["components"] = {"HubTransport": {"state": "Inactive", "requester": "Maintenance"}}


def _dismounted(o: dict[str, Any]) -> None:
    o["databases"] = [{"name": "DB01", "copies": [{"server": "EX01", "status": "Dismounted"}]}]


def _expired(o: dict[str, Any]) -> None:
    cert = {"subject": "CN=mail.contoso.sim", "services": ["IIS", "SMTP"], "not_after_days": -3}
    o["servers"][0]["certificates"] = [cert]


SCENARIOS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "dns_failure_451": (_dns_451, "outbound_dns_failure"),
    "remote_refuses_421": (_refused_421, "outbound_connection_failure"),
    "internal_550_511": (_internal_550, "internal_recipient_unknown"),
    "poison_messages": (_poison, "poison_messages"),
    "open_relay": (_open_relay, "open_relay"),
    "transport_component_inactive": (_maintenance, "transport_component_inactive"),
    "database_dismounted": (_dismounted, "database_not_mounted"),
    "certificate_expired": (_expired, "certificate_expired"),
}


def run(sim_factory: SimFactory, org: dict[str, Any], extra: dict[str, Any] | None = None) -> Report:
    sim, scenario = sim_factory(org)
    settings = settings_for(
        sim, scenario, overrides=deep_merge({"collectors": {"tracking": {"enabled": False}}}, extra or {})
    )
    return check(settings)


def test_a_healthy_organisation_reports_healthy(sim_factory: SimFactory) -> None:
    report = run(sim_factory, healthy_org())
    assert [f.rule for f in report.findings if f.severity != "info"] == []
    assert {v.scope: v.status for v in report.verdicts} == {
        "inbound": "healthy",
        "outbound": "healthy",
        "internal": "healthy",
    }
    assert report.exit_code == 0


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_planted_fault_is_named_first(sim_factory: SimFactory, name: str) -> None:
    mutate, rule = SCENARIOS[name]
    report = run(sim_factory, plant(mutate))
    assert report.findings, name
    assert report.findings[0].rule == rule, [(f.rule, f.severity) for f in report.findings]
    assert report.findings[0].next_step and report.findings[0].evidence
    assert report.exit_code in (1, 2)


def test_dns_failure_next_step_is_the_nic_registration_hint(sim_factory: SimFactory) -> None:
    report = run(sim_factory, plant(SCENARIOS["dns_failure_451"][0]))
    first = report.findings[0]
    assert "Register this connection's addresses in DNS" in first.next_step
    assert first.severity == "critical" and "outbound" in first.scopes
    assert {v.scope: v.status for v in report.verdicts}["outbound"] == "failing"


def test_421_with_a_blocklisted_ip_attaches_the_listing(sim_factory: SimFactory) -> None:
    with DemoNet() as net:
        org = plant(SCENARIOS["remote_refuses_421"][0])
        extra = deep_merge(demo_dns_settings(net), {"dns": {"smtp": {"enabled": False}}})
        report = run(sim_factory, org, extra)
    first = report.findings[0]
    assert first.rule == "outbound_connection_failure" and first.severity == "critical"
    assert any("192.0.2.20 is listed on bl.demo.example" in e for e in first.evidence)
    assert "blocklisted" in first.next_step


def test_inbound_mx_drift_points_at_dns_not_exchange(sim_factory: SimFactory) -> None:
    with DemoNet() as net:
        zones = demo_zones(DOMAIN, "127.0.0.1")
        zones[DOMAIN] = zones[DOMAIN].replace("mail2", "mx.hijacked.example.")  # the MX moved away
        net.dns.set_zones(zones)
        extra = deep_merge(demo_dns_settings(net), {"dns": {"smtp": {"enabled": False}}})
        report = run(sim_factory, healthy_org(), extra)
    first = report.findings[0]
    assert first.rule == "inbound_mx" and "inbound" in first.scopes, [(f.rule, f.severity) for f in report.findings]
    assert any("not the expected set" in e for e in first.evidence)


def traffic_org(inbound_ratio: float) -> dict[str, Any]:
    """healthy_org with message tracking: 20 messages a minute per server, ``inbound_ratio`` from outside."""
    org = healthy_org()
    traffic = {"messages_per_minute": 20, "failure_ratio": 0.0, "stuck_ratio": 0.0, "inbound_ratio": inbound_ratio}
    org["servers"] = [{**server, "tracking": traffic} for server in org["servers"]]
    return org


@pytest.mark.parametrize("inbound_ratio", [0.0, 0.3])
def test_inbound_silence_while_internal_mail_flows_plus_mx_drift(sim_factory: SimFactory, inbound_ratio: float) -> None:
    """Message tracking on: internal and outbound mail flows (RECEIVE over SMTP on every server), but with
    inbound_ratio 0 nothing arrives from outside. With the MX drifted, the report calls inbound silent."""
    org = traffic_org(inbound_ratio)
    with DemoNet() as net:
        zones = demo_zones(DOMAIN, "127.0.0.1")
        zones[DOMAIN] = zones[DOMAIN].replace("mail2", "mx.hijacked.example.")
        net.dns.set_zones(zones)
        extra = deep_merge(
            demo_dns_settings(net),
            {"dns": {"smtp": {"enabled": False}}, "collectors": {"tracking": {"enabled": True}}},
        )
        report = run(sim_factory, org, extra)
    first = report.findings[0]
    assert first.rule == "inbound_mx", [(f.rule, f.severity) for f in report.findings]
    silent = first.next_step.startswith("Inbound mail is silent and the MX is wrong")
    assert silent == (inbound_ratio == 0.0), (first.next_step, first.evidence)
    if silent:
        assert any("no message arrived from outside the organisation" in e for e in first.evidence)


@pytest.mark.parametrize("inbound_ratio", [0.0, 0.3])
def test_inbound_silence_with_dns_in_order(sim_factory: SimFactory, inbound_ratio: float) -> None:
    """Nothing arrives from outside while internal mail flows and the MX is right: the path in is broken."""
    with DemoNet() as net:
        extra = deep_merge(
            demo_dns_settings(net),
            {"dns": {"smtp": {"enabled": False}}, "collectors": {"tracking": {"enabled": True}}},
        )
        report = run(sim_factory, traffic_org(inbound_ratio), extra)
    rules = [f.rule for f in report.findings]
    if inbound_ratio == 0.0:
        assert rules[0] == "inbound_silence", rules
        assert {v.scope: v.status for v in report.verdicts}["inbound"] == "failing"
        assert report.exit_code == 2
    else:
        assert "inbound_silence" not in rules
        assert {v.scope: v.status for v in report.verdicts}["inbound"] != "failing", rules


def test_unreachable_server_means_could_not_check(sim_factory: SimFactory) -> None:
    """A transport server that cannot be polled is critical (tests/integration/test_blindness.py has more)."""
    sim, scenario = sim_factory(healthy_org())
    sim.faults.set("EX02", "refused")
    report = check(settings_for(sim, scenario, overrides={"collectors": {"tracking": {"enabled": False}}}))
    host, port = sim.endpoint("EX02")
    assert report.exit_code == 2 and report.findings[0].rule == "server_unreachable"
    assert f"queues EX02: connection refused at http://{host}:{port}/PowerShell" in report.unchecked


def test_text_and_json_renderings() -> None:
    from exporter.triage.model import Finding, Verdict

    finding = Finding("outbound_dns_failure", "critical", "queues", ("outbound",), "Outbound mail is retrying",
                      ("EX01: 30 message(s) <to> fabrikam",), "Check the NIC.", "dns_failure", 30)  # fmt: skip
    report = Report((Verdict("outbound", "failing", ("x",)),), (finding,), (), 0.0)
    text = io.StringIO()
    write_text(report, text, color=False)
    assert "1. [critical] Outbound mail is retrying" in text.getvalue() and "\x1b[" not in text.getvalue()
    assert "next step: Check the NIC." in text.getvalue() and "docs/runbook.md#dns_failure" in text.getvalue()
    out = io.StringIO()
    write_json(report, out)
    data = json.loads(out.getvalue())
    assert data["exit_code"] == 2 and data["findings"][0]["evidence"] == ["EX01: 30 message(s) <to> fabrikam"]


def test_check_demo_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "check", "--demo", "--format", "json"],
        capture_output=True, text=True, timeout=90, cwd=ROOT, check=False,
    )  # fmt: skip
    data = json.loads(result.stdout)
    assert result.returncode == 2 == data["exit_code"], result.stderr[-2000:]
    rules = [f["rule"] for f in data["findings"]]
    assert rules[0] == "outbound_dns_failure"  # the demo's biggest planted problem
    assert {"blocklisted", "certificate_expiring", "ptr_mismatch", "spf_not_passing", "poison_messages"} <= set(rules)
    plain = subprocess.run(
        [sys.executable, "-m", "exporter", "check"], capture_output=True, text=True, timeout=30, check=False
    )
    assert plain.returncode == 3 and "--config" in plain.stderr
