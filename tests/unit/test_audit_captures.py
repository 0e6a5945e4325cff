"""The configuration and health parsers on every real Exchange 2019 capture in tests/fixtures/exchange-clixml.

Each capture is read twice: as Export-Clixml wrote it (depth 2) and cut to what a remote session
sends (remoting depth 1, PowerShell's rule in ``exporter.simulator.depth.cut``), decoded by the
exporter's own pypsrp decoder. The parsers must give the same answers from both.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree as ET

import pytest

from exporter.exchange.accepted_domains import AcceptedDomainResult, parse_accepted_domain, render_accepted_domains
from exporter.exchange.certificates import UNKNOWN, decode_der, parse_certificate
from exporter.exchange.clixml import load_clixml
from exporter.exchange.components import parse_component
from exporter.exchange.discovery import parse_exchange_servers
from exporter.exchange.iprange import PRIVATE_NETWORKS, parse_ip_ranges
from exporter.exchange.receive_connectors import parse_receive_connector
from exporter.exchange.relay import assess
from exporter.exchange.send_connectors import parse_send_connector
from exporter.exchange.service_health import parse_role_services
from exporter.exchange.wire import FastOutputSerializer
from exporter.simulator.clixml import load_capture
from exporter.simulator.depth import cut
from tests.fixtures.captures import CAPTURES

TRUSTED = parse_ip_ranges(PRIVATE_NETWORKS)


@pytest.fixture(params=["export-clixml", "remoting"])
def form(request: pytest.FixtureRequest) -> str:
    """How the capture reaches the parser: as captured, or cut to remoting depth."""
    return str(request.param)


def load(name: str, form: str = "export-clixml") -> list[Any]:
    path = CAPTURES / name
    if form == "export-clixml":
        return load_clixml(path.read_bytes())
    return [FastOutputSerializer().deserialize(ET.tostring(cut(el), encoding="unicode")) for el in load_capture(path)]


@pytest.mark.parametrize(
    ("name", "changed"),
    [
        ("E19/GetReceiveConnector.xml", datetime(2022, 3, 23, 16, 48, 26, tzinfo=UTC)),
        ("connectors/GetReceiveConnectorEmptyTlsCertificateName.xml", datetime(2022, 3, 24, 16, 18, 53, tzinfo=UTC)),
    ],
)
def test_receive_connectors(name: str, changed: datetime, form: str) -> None:
    conns = {c.name: c for c in (parse_receive_connector(o, "WIN-CTD3L0RGEN4") for o in load(name, form))}
    server = "WIN-CTD3L0RGEN4"
    assert set(conns) == {
        f"Default {server}",
        f"Client Proxy {server}",
        f"Default Frontend {server}",
        f"Outbound Proxy Frontend {server}",
        f"Client Frontend {server}",
    }
    front = conns[f"Default Frontend {server}"]
    assert front.bindings == ("[::]:25", "0.0.0.0:25")
    assert front.permission_groups == {"AnonymousUsers", "ExchangeServers", "ExchangeLegacyServers"}
    assert front.auth_mechanism == {"Tls", "Integrated", "BasicAuth", "BasicAuthRequireTLS", "ExchangeServer"}
    assert front.transport_role == "FrontendTransport"
    assert front.enabled and not front.require_tls
    assert front.remote_ip_ranges == ("::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "0.0.0.0-255.255.255.255")
    assert sum(r.size for r in front.ranges) == 2**128 + 2**32
    assert front.identity == f"{server}\\Default Frontend {server}"
    # What Get-ADPermission -Identity resolves (an ADRawEntryIdParameter): the DN, else the objectGUID.
    assert front.distinguished_name.startswith(
        f"CN=Default Frontend {server},CN=SMTP Receive Connectors,CN=Protocols,CN={server},CN=Servers,"
    )
    assert front.distinguished_name.endswith(",CN=Configuration,DC=exlab,DC=dom")
    assert len(front.guid) == 36 and front.guid.count("-") == 4
    assert front.changed == changed  # WhenChangedUTC
    assert front.fqdn == "WIN-CTD3L0RGEN4.exlab.dom"
    assert conns[f"Client Frontend {server}"].bindings == ("[::]:587", "0.0.0.0:587")
    assert conns[f"Client Frontend {server}"].permission_groups == {"ExchangeUsers"}
    assert conns[f"Default {server}"].transport_role == "HubTransport"
    assert conns[f"Outbound Proxy Frontend {server}"].bindings == ("[::]:717", "0.0.0.0:717")


def test_default_connectors_on_a_standard_install_are_not_open_relays(form: str) -> None:
    for conn in (parse_receive_connector(o, "S") for o in load("E19/GetReceiveConnector.xml", form)):
        # Get-ADPermission on a standard install: no Accept-Any-Recipient for anonymous.
        risks = assess(conn.relay_inputs, TRUSTED, anonymous_relay=False)
        assert not any(risks.values()), (conn.name, risks)
        unverified = assess(conn.relay_inputs, TRUSTED, anonymous_relay=None)
        # Without Get-ADPermission only the anonymous frontend connector is unknown: never "safe".
        expected = conn.name.startswith("Default Frontend")
        assert unverified["anonymous_relay_unverified"] is expected
        assert not unverified["anonymous_relay"]


def test_send_connector_to_m365(form: str) -> None:
    [conn] = [parse_send_connector(o) for o in load("E19/GetSendConnector.xml", form)]
    assert conn.name == "Mail to O365"
    assert conn.smart_hosts == ("microsoft-com.mail.protection.outlook.com",)
    assert not conn.dns_routing and conn.enabled and conn.cloud_services_mail_enabled
    assert conn.address_spaces == ("SMTP:*;1",)
    assert conn.source_transport_servers == ("WIN-CTD3L0RGEN4",)
    assert conn.port == 25 and not conn.require_tls and conn.tls_auth_level == ""


def test_send_connector_configured_to_relay_to_m365(form: str) -> None:
    path = "connectors/GetSendConnectorConfiguredToRelayToM365.xml"
    [conn] = [parse_send_connector(o) for o in load(path, form)]
    assert conn.name == "My company to Office 365"
    assert conn.smart_hosts == ("ThisTenantDoesntExists-com.mail.protection.outlook.com",)
    assert conn.require_tls and conn.tls_auth_level == "CertificateValidation"
    assert conn.address_spaces == ("smtp:*;1",)


@pytest.mark.parametrize(
    ("name", "extra", "open_relay"),
    [
        # "*.com" InternalRelay (in the lab capture) relays mail for every .com address: an open relay too.
        ("E19/GetAcceptedDomain.xml", [], 1),
        ("E19/GetAcceptedDomain_Bad.xml", [("*", "ExternalRelay", False)], 1),
        ("E19/GetAcceptedDomain_Problem.xml", [("*", "InternalRelay", False)], 1),
    ],
)
def test_accepted_domains(name: str, extra: list[tuple[str, str, bool]], open_relay: int, form: str) -> None:
    domains = [parse_accepted_domain(o) for o in load(name, form)]
    assert [(d.domain, d.domain_type, d.default) for d in domains] == [
        ("solo.com", "Authoritative", True),
        ("*.contoso.local", "Authoritative", False),
        ("*.com", "InternalRelay", False),
        *extra,
    ]
    result = AcceptedDomainResult(tuple(domains))
    assert result.dns_domains() == ["solo.com"]
    families = {m.name: m for m in render_accepted_domains([result])}
    assert [s.value for s in families["mailflow_accepted_domain_open_relay"].samples] == [open_relay]


def test_server_component_state(form: str) -> None:
    states = [parse_component(o, "SOLO-E19A") for o in load("E19/GetServerComponentState.xml", form)]
    assert len(states) == 34
    by_name = {s.component: s for s in states}
    assert by_name["HubTransport"].state == "Active"
    assert by_name["FrontendTransport"].state == "Active"
    assert by_name["ServerWideOffline"].state == "Active"
    assert by_name["ForwardSyncDaemon"].state == "Inactive"
    assert by_name["ProvisioningRps"].state == "Inactive"
    assert dict(by_name["ServerWideOffline"].requesters) == {"Functional": "Active"}
    assert not any(s.server_wide_offline for s in states)
    assert sum(s.state == "Active" for s in states) == 32


def test_exchange_certificates_from_raw_data_only(form: str) -> None:
    loaded = load("E19/GetExchangeCertificate.xml", form)
    certs = {c.subject: c for c in (parse_certificate(o, "SOLO-E19A") for o in loaded)}
    assert set(certs) == {"CN=Microsoft Exchange Server Auth Certificate", "CN=Solo-E19A", "CN=WMSvc-WIN-K300A9DA9VA"}
    auth = certs["CN=Microsoft Exchange Server Auth Certificate"]
    assert auth.thumbprint == "C3EDCF181EF4F9B53D01768ECA99564014BCA6E7"  # the capture's own [Thumbprint] text
    assert auth.not_before == datetime(2019, 12, 3, 22, 47, 32, tzinfo=UTC)
    assert auth.self_signed and auth.issuer == auth.subject
    assert auth.services == UNKNOWN  # Services is not in the certificate
    assert certs["CN=Solo-E19A"].not_after == datetime(2024, 12, 3, 22, 45, 58, tzinfo=UTC)
    assert certs["CN=Solo-E19A"].status == "DateInvalid"  # expired, derived from the dates


def test_certificate_thumbprints_match_the_capture_text(form: str) -> None:
    for obj in load("E19/GetExchangeCertificate.xml", form):
        text = obj.to_string.replace("\r", "")
        shown = text.split("[Thumbprint]\n", 1)[1].split()[0]
        assert decode_der(obj.adapted_properties["RawData"])["Thumbprint"] == shown


def test_test_service_health(form: str) -> None:
    loaded = load("E19/TestServiceHealth.xml", form)
    roles = {r.role: r for r in (parse_role_services(o, "SOLO-E19A") for o in loaded)}
    assert set(roles) == {"Mailbox", "ClientAccess", "HubTransport"}
    assert all(r.required_running and not r.not_running for r in roles.values())
    assert "MSExchangeTransport" in roles["HubTransport"].running
    assert "MSExchangeIS" in roles["Mailbox"].running


@pytest.mark.parametrize("name", ["E19/GetExchangeServer.xml"])
def test_exchange_server_discovery(name: str, form: str) -> None:
    [server] = parse_exchange_servers(load(name, form))
    assert server.name == "SOLO-E19A" and server.fqdn == "Solo-E19A.Solo.com"


def test_every_capture_file_is_covered() -> None:
    covered = {
        "GetReceiveConnector.xml",
        "GetReceiveConnectorEmptyTlsCertificateName.xml",
        "GetSendConnector.xml",
        "GetSendConnectorConfiguredToRelayToM365.xml",
        "GetAcceptedDomain.xml",
        "GetAcceptedDomain_Bad.xml",
        "GetAcceptedDomain_Problem.xml",
        "GetServerComponentState.xml",
        "GetExchangeCertificate.xml",
        "TestServiceHealth.xml",
        "GetExchangeServer.xml",
        "GetExchangeServerADInformation.xml",  # parsed in test_clixml (AD information objects)
        "GetExchangeServerADInformation2.xml",
    }
    assert {p.name for p in CAPTURES.rglob("*.xml")} == covered
