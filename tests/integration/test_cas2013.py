"""Exchange 2013 Client Access servers: found by discovery, audited, and not polled for what they lack.

A mixed organisation (an Exchange 2016 Mailbox server as the seed, an Exchange 2013 Mailbox server and
an Exchange 2013 Client Access server) over real sockets and the real pypsrp client. The Client Access
server hosts the port-25 Frontend connectors: an open relay planted there must be reported, and the
collectors whose cmdlets need the hub Transport service (or mailboxes) must leave it alone.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from exporter.service import Service
from tests.integration.conftest import SimFactory, settings_for, small_org

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

V2016 = "Version 15.1 (Build 2507.6)"
V2013 = "15.0 (Build 1497.2)"
#: Collectors whose cmdlet has nothing to ask a Client Access server (or does not support one).
HUB_ONLY = ("queues", "tracking", "database_copies", "service_health")
#: Collectors that audit every server that runs transport, Client Access servers included.
EVERY_TRANSPORT_SERVER = ("receive_connectors", "components", "certificates")


def mixed_org() -> dict[str, Any]:
    """EX01 (2016 Mailbox, the seed), MBX13 (2013 Mailbox) and CAS01 (2013 Client Access) with an
    externally secured open relay and a disabled port-25 connector on CAS01."""
    org = small_org(("EX01", "MBX13"))
    ex01, mbx13 = org["servers"]
    ex01["version"] = V2016
    mbx13["version"] = V2013
    cas01: dict[str, Any] = {
        "name": "CAS01",
        "version": V2013,
        "server_role": ["ClientAccess"],
        "receive_connectors": [
            {"name": "Default Frontend CAS01", "enabled": False},
            {
                "name": "Partner Relay CAS01",
                "bindings": ["0.0.0.0:25"],
                "remote_ip_ranges": ["0.0.0.0-255.255.255.255"],
                "permission_groups": ["ExchangeServers"],
                "auth_mechanism": ["Tls", "ExternalAuthoritative"],
            },
        ],
    }
    org["servers"].append(cas01)
    org["tracking"] = {"messages_per_minute": 6, "history_minutes": 10}
    return org


def value(service: Service, name: str, /, **labels: str) -> float | None:
    return service.registry.get_sample_value(name, labels)


def seed_only(sim: Any, scenario: Any, servers: tuple[str, ...] = ("EX01",)) -> Any:
    """Settings that configure only ``servers`` and find the rest with discovery (polled through the
    seed: the simulated servers' FQDNs do not resolve, and each listens on its own port)."""
    settings = settings_for(
        sim,
        scenario,
        overrides={"exchange": {"discovery": {"enabled": True, "seed": "EX01", "connect": "via_seed"}}},
    )
    kept = [s for s in settings.exchange.servers if s.name in servers]
    return settings.model_copy(update={"exchange": settings.exchange.model_copy(update={"servers": kept})})


def test_client_access_server_is_discovered_and_audited(
    sim_factory: SimFactory, service_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sim, scenario = sim_factory(mixed_org())
    service = service_factory(seed_only(sim, scenario))
    caplog.set_level(logging.WARNING)
    snaps = service.poll_all()
    assert [(s.collector, s.target, s.message) for s in snaps if not s.ok] == []

    cas = scenario.server("CAS01")
    assert cas is not None
    info = {"server": "CAS01", "fqdn": cas.fqdn, "version": "Version 15.0 (Build 1497.2)", "site": cas.site}
    assert value(service, "mailflow_exchange_server_info", **info) == 1

    polled = {(s.collector, s.target) for s in snaps}
    for collector in EVERY_TRANSPORT_SERVER:
        for server in ("EX01", "MBX13", "CAS01"):
            assert (collector, server) in polled, (collector, server)
            assert value(service, "mailflow_collector_up", collector=collector, target=server) == 1
    for collector in HUB_ONLY:
        assert (collector, "MBX13") in polled and (collector, "EX01") in polled, collector
        assert (collector, "CAS01") not in polled, collector
        # skipped cleanly: no up=0, no series at all for the Client Access server
        assert value(service, "mailflow_collector_up", collector=collector, target="CAS01") is None

    risk = "mailflow_receive_connector_open_relay_risk"
    assert value(service, risk, server="CAS01", connector="Partner Relay CAS01", reason="externally_secured") == 1
    enabled = "mailflow_receive_connector_enabled"
    assert value(service, enabled, server="CAS01", connector="Default Frontend CAS01") == 0
    assert value(service, enabled, server="CAS01", connector="Client Frontend CAS01") == 1
    # a Client Access server has only the three Frontend connectors of setup, no hub ones
    assert value(service, enabled, server="CAS01", connector="Default CAS01") is None
    assert value(service, enabled, server="MBX13", connector="Default MBX13") == 1
    assert value(service, enabled, server="MBX13", connector="Default Frontend MBX13") is None
    assert value(service, enabled, server="EX01", connector="Default Frontend EX01") == 1

    state = "mailflow_server_component_state"
    assert value(service, state, server="CAS01", component="FrontendTransport", state="Active") == 1
    assert value(service, "mailflow_server_wide_offline", server="CAS01") == 0
    certs = [
        s
        for m in service.registry.collect()
        if m.name == "mailflow_certificate_expiry_timestamp_seconds"
        for s in m.samples
        if s.labels["server"] == "CAS01"
    ]
    assert len(certs) == 3  # setup's self-signed, Auth and WMSvc certificates

    assert value(service, "mailflow_queue_next_hop_domains_folded", server="MBX13") == 0
    assert value(service, "mailflow_queue_next_hop_domains_folded", server="CAS01") is None
    noisy = [r.getMessage() for r in caplog.records if "CAS01" in r.getMessage()]
    assert noisy == []


def test_hand_listed_client_access_server_takes_its_role_from_discovery(
    sim_factory: SimFactory, service_factory: Any
) -> None:
    sim, scenario = sim_factory(mixed_org())
    service = service_factory(seed_only(sim, scenario, servers=("EX01", "CAS01")))
    snaps = service.poll_all()
    assert [(s.collector, s.target, s.message) for s in snaps if not s.ok] == []
    polled = {(s.collector, s.target) for s in snaps}
    assert ("receive_connectors", "CAS01") in polled
    assert not {(c, "CAS01") for c in HUB_ONLY} & polled


def test_without_discovery_a_hand_listed_server_is_polled_as_before(
    sim_factory: SimFactory, service_factory: Any
) -> None:
    """Its role is unknown: every collector polls it, and Exchange's answer says what it lacks."""
    sim, scenario = sim_factory(mixed_org())
    service = service_factory(settings_for(sim, scenario))
    snaps = {(s.collector, s.target): s for s in service.poll_all()}
    assert snaps[("receive_connectors", "CAS01")].ok
    for collector in HUB_ONLY:
        failed = snaps[(collector, "CAS01")]
        assert not failed.ok and failed.reason == "cmdlet_error", (collector, failed.message)
    assert "isn't a Hub Transport, Edge Transport or Mailbox server" in snaps[("tracking", "CAS01")].message
