"""Configuration and health audit end to end: simulator over real sockets, real pypsrp, exporter metrics."""

from __future__ import annotations

import time
from typing import Any

import pytest

from exporter.service import Service
from tests.fixtures.captures import E19
from tests.integration.conftest import SimFactory, settings_for, small_org

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

AUDIT = ("receive_connectors", "send_connectors", "accepted_domains", "components", "database_copies",
         "certificates", "service_health")  # fmt: skip
QUIET = {"queues": {"enabled": False}, "tracking": {"enabled": False}}


def faulty_org() -> dict[str, Any]:
    """Two servers with an open relay, a smart-host drift, an inactive HubTransport, an expiring
    certificate, a failed database copy and a stopped transport service."""
    org = small_org()
    ex01, ex02 = org["servers"]
    ex01["receive_connectors"] = [
        {
            "name": "Partner Relay EX01",
            "transport_role": "FrontendTransport",
            "bindings": ["0.0.0.0:25"],
            "remote_ip_ranges": ["0.0.0.0-255.255.255.255"],
            "permission_groups": ["ExchangeServers"],
            "auth_mechanism": ["ExternalAuthoritative"],
        },
        {
            "name": "Anonymous Relay EX01",
            "transport_role": "FrontendTransport",
            "bindings": ["0.0.0.0:2526"],
            "remote_ip_ranges": ["192.168.0.0/16", "203.0.113.0/24"],
            "permission_groups": ["AnonymousUsers"],
            "auth_mechanism": ["Tls"],
            "anonymous_accept_any_recipient": True,
        },
        {
            "name": "App Relay EX01",
            "transport_role": "FrontendTransport",
            "bindings": ["0.0.0.0:25"],
            "remote_ip_ranges": ["10.20.30.0/24"],
            "permission_groups": ["AnonymousUsers"],
            "auth_mechanism": ["Tls"],
            "anonymous_accept_any_recipient": True,
        },
    ]
    ex02["components"] = {"HubTransport": {"state": "Inactive", "requester": "Maintenance"}}
    ex02["certificates"] = [
        {
            "subject": "CN=mail.contoso.sim",
            "domains": ["mail.contoso.sim"],
            "services": ["IIS", "SMTP"],
            "not_after_days": 5,
        }
    ]
    ex02["service_health"] = {"Hub Transport Server Role": {"not_running": ["MSExchangeTransport"]}}
    org["send_connectors"] = [
        {"name": "Internet", "address_spaces": ["SMTP:*;1"], "smart_hosts": ["smtp.isp.example"]},
        {"name": "To Partner", "address_spaces": ["SMTP:partner.example;1"], "smart_hosts": ["relay.partner.example"]},
    ]
    org["accepted_domains"] = [
        {"domain": "contoso.sim", "type": "Authoritative", "default": True},
        {"domain": "fabrikam.sim", "type": "InternalRelay"},
    ]
    org["databases"] = [
        {
            "name": "DB01",
            "copies": [
                {"server": "EX01", "status": "Mounted"},
                {"server": "EX02", "status": "Failed", "copy_queue_length": 12, "replay_queue_length": 3},
            ],
        }
    ]
    return org


EXPECT = {
    "send_connectors": {
        "expect": {
            "Internet": {"dns_routing": True},
            "To Partner": {"smart_hosts": ["relay.partner.example"]},
            "Backup Route": {"enabled": True},
        }
    },
    "receive_connectors": {"expect": {"EX01\\App Relay*": {"enabled": True, "remote_ip_ranges": ["10.20.30.0/25"]}}},
}


def value(svc: Service, name: str, /, **labels: str) -> float | None:
    return svc.registry.get_sample_value(name, labels)


def audited(sim_factory: SimFactory, service_factory: Any, org: dict[str, Any], extra: dict[str, Any] | None = None):
    sim, scenario = sim_factory(org)
    overrides = {"collectors": {**QUIET, **EXPECT, **(extra or {})}}
    service = service_factory(settings_for(sim, scenario, overrides=overrides))
    snaps = service.poll_all()
    return sim, service, snaps


def test_planted_faults_yield_the_right_metrics(sim_factory: SimFactory, service_factory: Any) -> None:
    _, service, snaps = audited(sim_factory, service_factory, faulty_org())
    assert {(s.collector, s.target) for s in snaps if not s.ok} == set(), [s.message for s in snaps if not s.ok]
    for collector in AUDIT:
        targets = ["organization"] if collector in ("send_connectors", "accepted_domains") else ["EX01", "EX02"]
        for target in targets:
            assert value(service, "mailflow_collector_up", collector=collector, target=target) == 1, (collector, target)

    risk = "mailflow_receive_connector_open_relay_risk"
    assert value(service, risk, server="EX01", connector="Partner Relay EX01", reason="externally_secured") == 1
    assert value(service, risk, server="EX01", connector="Anonymous Relay EX01", reason="anonymous_relay") == 1
    for reason in ("externally_secured", "anonymous_relay", "anonymous_relay_unverified", "exchange_users_cleartext"):
        # a correctly scoped application relay and the default frontend connector are not relays
        assert value(service, risk, server="EX01", connector="App Relay EX01", reason=reason) == 0
        assert value(service, risk, server="EX02", connector="Default Frontend EX02", reason=reason) == 0
    assert value(service, "mailflow_receive_connector_permissions_readable", server="EX01") == 1
    untrusted = value(
        service, "mailflow_receive_connector_untrusted_addresses", server="EX01", connector="Anonymous Relay EX01"
    )
    assert untrusted == 256
    drift = "mailflow_receive_connector_drift"
    assert value(service, drift, server="EX01", connector="App Relay EX01", setting="remote_ip_ranges") == 1
    assert value(service, drift, server="EX01", connector="App Relay EX01", setting="enabled") == 0
    assert value(service, drift, server="EX02", connector="App Relay EX01", setting="present") is None  # EX01 only

    assert value(service, "mailflow_send_connector_drift", connector="Internet", setting="dns_routing") == 1
    assert value(service, "mailflow_send_connector_uses_smart_host", connector="Internet") == 1
    assert value(service, "mailflow_send_connector_drift", connector="To Partner", setting="smart_hosts") == 0
    assert value(service, "mailflow_send_connector_drift", connector="Backup Route", setting="present") == 1

    state = "mailflow_server_component_state"
    assert value(service, state, server="EX02", component="HubTransport", state="Inactive") == 1
    assert value(service, state, server="EX02", component="HubTransport", state="Active") is None  # current only
    assert value(service, state, server="EX01", component="HubTransport", state="Active") == 1
    requester = "mailflow_server_component_requester_state"
    assert (
        value(service, requester, server="EX02", component="HubTransport", requester="Maintenance", state="Inactive")
        == 1
    )

    expiring = [
        s
        for m in service.registry.collect()
        if m.name == "mailflow_certificate_expiry_timestamp_seconds"
        for s in m.samples
        if s.labels["server"] == "EX02" and s.labels["subject"] == "CN=mail.contoso.sim"
    ]
    assert len(expiring) == 1 and expiring[0].labels["services"] == "IIS, SMTP"
    assert 4 * 86400 < expiring[0].value - time.time() < 6 * 86400

    assert value(service, "mailflow_database_copy_status", database="DB01", server="EX02", status="Failed") == 1
    assert value(service, "mailflow_database_copy_status", database="DB01", server="EX01", status="Mounted") == 1
    assert value(service, "mailflow_database_copy_queue_length", database="DB01", server="EX02") == 12
    assert value(service, "mailflow_database_copy_active", database="DB01", server="EX01") == 1

    assert value(service, "mailflow_service_health_required_running", server="EX02", role="HubTransport") == 0
    stopped = value(
        service,
        "mailflow_service_health_service_running",
        server="EX02",
        role="HubTransport",
        service="MSExchangeTransport",
    )
    assert stopped == 0
    assert value(service, "mailflow_service_health_required_running", server="EX01", role="HubTransport") == 1

    info = "mailflow_accepted_domain_info"
    assert value(service, info, domain="contoso.sim", domain_type="Authoritative", default="true") == 1
    assert value(service, info, domain="fabrikam.sim", domain_type="InternalRelay", default="false") == 1
    assert value(service, "mailflow_accepted_domain_open_relay") == 0


def test_internet_facing_anonymous_relay_is_detected_through_its_distinguished_name(
    sim_factory: SimFactory, service_factory: Any
) -> None:
    # Get-ADPermission resolves a DN, GUID or unique name, never Get-ReceiveConnector's SERVER\Name:
    # the classic open relay (AnonymousUsers from anywhere plus the anonymous Accept-Any-Recipient
    # grant) must be found as such, not reported as "could not be checked".
    org = small_org()
    org["servers"][0]["receive_connectors"] = [
        {
            "name": "Internet Relay",
            "transport_role": "FrontendTransport",
            "bindings": ["0.0.0.0:25"],
            "remote_ip_ranges": ["0.0.0.0-255.255.255.255"],
            "permission_groups": ["AnonymousUsers"],
            "auth_mechanism": ["Tls"],
            "anonymous_accept_any_recipient": True,
        }
    ]
    _, service, snaps = audited(sim_factory, service_factory, org)
    assert all(s.ok for s in snaps), [(s.collector, s.message) for s in snaps if not s.ok]
    risk = "mailflow_receive_connector_open_relay_risk"
    assert value(service, risk, server="EX01", connector="Internet Relay", reason="anonymous_relay") == 1
    assert value(service, risk, server="EX01", connector="Internet Relay", reason="anonymous_relay_unverified") == 0
    for server in ("EX01", "EX02"):
        for reason in ("anonymous_relay", "anonymous_relay_unverified"):
            assert value(service, risk, server=server, connector=f"Default Frontend {server}", reason=reason) == 0
        assert value(service, "mailflow_receive_connector_permissions_readable", server=server) == 1


def test_hidden_get_adpermission_reports_unverified_not_safe(sim_factory: SimFactory, service_factory: Any) -> None:
    org = faulty_org()
    org["rbac"] = {"hidden_cmdlets": ["Get-ADPermission"]}
    _, service, _ = audited(sim_factory, service_factory, org)
    assert value(service, "mailflow_collector_up", collector="receive_connectors", target="EX01") == 1
    risk = "mailflow_receive_connector_open_relay_risk"
    assert (
        value(service, risk, server="EX01", connector="Default Frontend EX01", reason="anonymous_relay_unverified") == 1
    )
    assert (
        value(service, risk, server="EX01", connector="Anonymous Relay EX01", reason="anonymous_relay_unverified") == 1
    )
    assert value(service, risk, server="EX01", connector="Anonymous Relay EX01", reason="anonymous_relay") == 0
    # the externally secured relay needs no AD permission to be recognised
    assert value(service, risk, server="EX01", connector="Partner Relay EX01", reason="externally_secured") == 1
    assert value(service, "mailflow_receive_connector_permissions_readable", server="EX01") == 0
    unverified = [f for f in service.triage().findings if f.rule == "relay_unverified"]
    assert unverified and all(
        "Get-ADPermission not available to the account (RBAC)" in f.evidence[0] for f in unverified
    )


def test_a_failing_get_adpermission_call_is_unverified_but_not_blamed_on_rbac(
    sim_factory: SimFactory, service_factory: Any
) -> None:
    sim, scenario = sim_factory(faulty_org())
    sim.faults.set("EX01", "error_record", cmdlet="Get-ADPermission", message="A directory error occurred")
    overrides = {"collectors": {**QUIET, **EXPECT}}
    service = service_factory(settings_for(sim, scenario, overrides=overrides))
    service.poll_all()
    risk = "mailflow_receive_connector_open_relay_risk"
    connector = "Anonymous Relay EX01"
    assert value(service, risk, server="EX01", connector=connector, reason="anonymous_relay_unverified") == 1
    assert value(service, risk, server="EX01", connector=connector, reason="anonymous_relay") == 0
    assert value(service, risk, server="EX02", connector="Default Frontend EX02", reason="anonymous_relay") == 0
    assert (
        value(service, risk, server="EX02", connector="Default Frontend EX02", reason="anonymous_relay_unverified") == 0
    )
    [finding] = [f for f in service.triage().findings if f.rule == "relay_unverified" and connector in f.title]
    assert "call failed" in finding.evidence[0] and "RBAC" not in finding.evidence[0]
    assert "Grant" not in finding.next_step and "Get-ADPermission -User" in finding.next_step


def test_org_wide_collectors_fail_over_and_faults_stay_local(sim_factory: SimFactory, service_factory: Any) -> None:
    sim, service, _ = audited(sim_factory, service_factory, faulty_org())
    sim.faults.set("EX01", "refused")
    sim.faults.set("EX02", "error_record", cmdlet="Get-ServerComponentState", message="The server is not reachable")
    snaps = {(s.collector, s.target): s for s in service.poll_all()}
    assert snaps[("send_connectors", "organization")].ok  # asked of EX02 instead
    assert snaps[("accepted_domains", "organization")].ok
    assert not snaps[("components", "EX02")].ok and snaps[("components", "EX02")].reason == "cmdlet_error"
    assert snaps[("certificates", "EX02")].ok and snaps[("database_copies", "EX02")].ok
    assert not snaps[("receive_connectors", "EX01")].ok and snaps[("receive_connectors", "EX01")].reason == "connection"
    assert value(service, "mailflow_collector_up", collector="components", target="EX02") == 0
    sim.faults.clear()
    assert all(s.ok for s in service.poll_all())


def test_real_captures_replayed_through_the_exporter(sim_factory: SimFactory, service_factory: Any) -> None:
    captures = E19
    org = small_org(("EX01",))
    org["replays"] = {
        "Get-ExchangeCertificate": str(captures / "GetExchangeCertificate.xml"),
        "Get-ReceiveConnector": str(captures / "GetReceiveConnector.xml"),
        "Get-ServerComponentState": str(captures / "GetServerComponentState.xml"),
        "Test-ServiceHealth": str(captures / "TestServiceHealth.xml"),
        "Get-SendConnector": str(captures / "GetSendConnector.xml"),
        "Get-AcceptedDomain": str(captures / "GetAcceptedDomain_Bad.xml"),
    }
    _, service, snaps = audited(sim_factory, service_factory, org)
    assert all(s.ok for s in snaps), [(s.collector, s.message) for s in snaps if not s.ok]
    # Certificates arrive as RawData only: decoded from the DER, services unknown.
    expiry = value(
        service,
        "mailflow_certificate_expiry_timestamp_seconds",
        server="EX01",
        thumbprint="C3EDCF181EF4F9B53D01768ECA99564014BCA6E7",
        subject="CN=Microsoft Exchange Server Auth Certificate",
        services="unknown",
    )
    assert expiry is not None and expiry > 1.7e9
    front = "Default Frontend WIN-CTD3L0RGEN4"
    assert value(service, "mailflow_receive_connector_enabled", server="EX01", connector=front) == 1
    risk = "mailflow_receive_connector_open_relay_risk"
    # The replayed connector's identity is unknown to this simulated org: Get-ADPermission writes a
    # not-found error, so the anonymous relay right is unverified, never "safe".
    assert value(service, risk, server="EX01", connector=front, reason="anonymous_relay") == 0
    assert value(service, risk, server="EX01", connector=front, reason="anonymous_relay_unverified") == 1
    assert value(service, "mailflow_send_connector_uses_smart_host", connector="Mail to O365") == 1
    assert value(service, "mailflow_accepted_domain_open_relay") == 1
    state = "mailflow_server_component_state"
    assert value(service, state, server="EX01", component="HubTransport", state="Active") == 1
    assert value(service, "mailflow_service_health_required_running", server="EX01", role="HubTransport") == 1
