"""The simulator's configuration and health cmdlets over real sockets with the real pypsrp client.

Every pool gets ``exporter.exchange.wire.install`` before it opens, as the exporter's own sessions
do: real Get-SendConnector output holds a reference stock pypsrp cannot resolve.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from pypsrp.powershell import PowerShell, RunspacePool

from exporter.exchange import wire
from exporter.exchange.clixml import flatten
from exporter.exchange.components import ComponentResult, parse_component, render_components
from exporter.simulator import Scenario, Simulator
from tests.fixtures.captures import E19
from tests.integration.conftest import SimFactory, raw_pool, small_org
from tests.integration.conftest import run_cmdlets as run

pytestmark = pytest.mark.integration

CAPTURES = E19
CLOCK = [1_800_000_000.0]


def audit_org() -> dict[str, Any]:
    """small_org plus a scoped relay, a draining HubTransport, planted certificates and health faults."""
    org = small_org()
    ex01, ex02 = org["servers"]
    ex01["receive_connectors"] = [
        {
            "name": "App Relay EX01",
            "bindings": ["0.0.0.0:25"],
            "remote_ip_ranges": ["10.20.30.0/24", "192.168.5.10", "192.168.1.1-192.168.1.50"],
            "permission_groups": ["AnonymousUsers"],
            "auth_mechanism": ["Tls"],
            "anonymous_accept_any_recipient": True,
        },
        {
            "name": "Partner EX01",
            "remote_ip_ranges": ["203.0.113.0/24"],
            "permission_groups": ["ExchangeServers"],
            "auth_mechanism": ["ExternalAuthoritative"],
        },
    ]
    ex01["components"] = {"HubTransport": "Draining"}
    ex01["service_health"] = {"Hub Transport Server Role": {"not_running": ["MSExchangeTransport"]}}
    ex02["certificates"] = [
        {
            "subject": "CN=mail.contoso.sim",
            "domains": ["mail.contoso.sim"],
            "services": ["IIS", "SMTP"],
            "not_after_days": 12,
        },
        {"subject": "CN=old.contoso.sim", "not_before_days": -400, "not_after_days": -3},
    ]
    org["send_connectors"] = [
        {"name": "Internet"},
        {
            "name": "To Partner",
            "address_spaces": ["SMTP:partner.example;1"],
            "smart_hosts": ["relay.partner.example", "10.0.0.5"],
            "require_tls": True,
            "tls_auth_level": "DomainValidation",
            "source_transport_servers": ["EX02"],
        },
    ]
    org["accepted_domains"] = [
        {"domain": "contoso.sim", "default": True},
        {"domain": "contoso-mail.example"},
        {"name": "Subsidiary", "domain": "subsidiary.example", "type": "InternalRelay"},
    ]
    org["databases"] = [
        {
            "name": "DB01",
            "copies": [{"server": "EX01"}, {"server": "EX02", "copy_queue_length": 3, "replay_queue_length": 1}],
        },
        {"name": "DB02", "copies": [{"server": "EX02"}]},
    ]
    return org


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    simulator = Simulator(Scenario.from_dict(audit_org()), clock=lambda: CLOCK[0])
    simulator.start()
    yield simulator
    simulator.stop()


def open_pool(sim: Simulator, server: str = "EX01") -> RunspacePool:
    pool = raw_pool(sim, server)
    wire.install(pool)
    pool.open()
    return pool


@pytest.fixture(scope="module")
def pool(sim: Simulator) -> Iterator[RunspacePool]:
    p = open_pool(sim)
    yield p
    with contextlib.suppress(Exception):
        p.close()


def rows(pool: RunspacePool, *commands: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    ps = run(pool, *commands)
    assert not ps.streams.error, [str(e) for e in ps.streams.error]
    return [flatten(o) for o in ps.output]


def not_found(ps: PowerShell, identity: str) -> None:
    assert not ps.output and not ps.had_errors
    (error,) = ps.streams.error
    assert "FailureCategory=Cmdlet-ManagementObjectNotFoundException" in error.fq_error and identity in str(error)


# ---------------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_receive_connectors(pool: RunspacePool) -> None:
    ex01 = {r["Name"]: r for r in rows(pool, ("Get-ReceiveConnector", {"Server": "EX01"}))}
    assert list(ex01) == [
        "Default EX01",
        "Client Proxy EX01",
        "Default Frontend EX01",
        "Outbound Proxy Frontend EX01",
        "Client Frontend EX01",
        "App Relay EX01",
        "Partner EX01",
    ]
    relay = ex01["App Relay EX01"]
    assert relay["Identity"] == "EX01\\App Relay EX01" and relay["TransportRole"] == "FrontendTransport"
    assert relay["Bindings"] == ["0.0.0.0:25"]
    assert relay["RemoteIPRanges"] == ["10.20.30.0/24", "192.168.5.10", "192.168.1.1-192.168.1.50"]
    assert relay["PermissionGroups"] == "AnonymousUsers" and relay["AuthMechanism"] == "Tls"
    frontend = ex01["Default Frontend EX01"]
    assert frontend["Bindings"] == ["[::]:25", "0.0.0.0:25"] and frontend["DomainSecureEnabled"] is True
    assert frontend["RemoteIPRanges"] == ["::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "0.0.0.0-255.255.255.255"]
    assert frontend["PermissionGroups"] == "AnonymousUsers, ExchangeServers, ExchangeLegacyServers"
    assert frontend["AuthMechanism"] == "Tls, Integrated, BasicAuth, BasicAuthRequireTLS, ExchangeServer"
    assert ex01["Client Frontend EX01"]["Bindings"] == ["[::]:587", "0.0.0.0:587"]
    assert (
        ex01["Default EX01"]["TransportRole"] == "HubTransport" and ex01["Default EX01"]["Fqdn"] == "ex01.contoso.sim"
    )

    everything = rows(pool, ("Get-ReceiveConnector", {}))  # no -Server: every server's connectors
    assert len(everything) == 12 and {r["Server"] for r in everything} == {"EX01", "EX02"}
    (one,) = rows(pool, ("Get-ReceiveConnector", {"Identity": "EX02\\Client Proxy EX02"}))
    assert one["Bindings"] == ["[::]:465", "0.0.0.0:465"]
    assert [r["Identity"] for r in rows(pool, ("Get-ReceiveConnector", {"Identity": "*Frontend EX02"}))] == [
        "EX02\\Default Frontend EX02",
        "EX02\\Outbound Proxy Frontend EX02",
        "EX02\\Client Frontend EX02",
    ]
    not_found(run(pool, ("Get-ReceiveConnector", {"Identity": "EX01\\Nope"})), "EX01\\Nope")
    not_found(run(pool, ("Get-ReceiveConnector", {"Server": "EX09"})), "EX09")
    conflict = run(pool, ("Get-ReceiveConnector", {"Identity": "EX01\\Default EX01", "Server": "EX01"}))
    assert conflict.had_errors and conflict.streams.error[0].fq_error.startswith("AmbiguousParameterSet,")


@pytest.mark.timeout(30)
def test_send_connectors_and_accepted_domains(pool: RunspacePool) -> None:
    internet, partner = rows(pool, ("Get-SendConnector", {}))
    assert internet["Name"] == "Internet" and internet["DNSRoutingEnabled"] is True and internet["SmartHosts"] == []
    assert internet["SourceTransportServers"] == ["EX01", "EX02"] and internet["AddressSpaces"] == ["SMTP:*;1"]
    assert partner["DNSRoutingEnabled"] is False
    assert partner["SmartHosts"] == ["relay.partner.example", "[10.0.0.5]"]
    assert partner["SmartHostsString"] == "relay.partner.example,[10.0.0.5]"
    assert partner["SourceIPAddress"] == "0.0.0.0"  # an IPAddress object (types.ps1xml depth 1), not a <Ref>
    assert partner["RequireTLS"] is True and partner["TlsAuthLevel"] == "DomainValidation"
    assert partner["SourceTransportServers"] == ["EX02"] and partner["AddressSpaces"] == ["SMTP:partner.example;1"]
    assert [r["Name"] for r in rows(pool, ("Get-SendConnector", {"Identity": "To*"}))] == ["To Partner"]
    not_found(run(pool, ("Get-SendConnector", {"Identity": "Backup Route"})), "Backup Route")

    domains = rows(pool, ("Get-AcceptedDomain", {}))
    assert [(d["DomainName"], d["DomainType"], d["Default"]) for d in domains] == [
        ("contoso.sim", "Authoritative", True),
        ("contoso-mail.example", "Authoritative", False),
        ("subsidiary.example", "InternalRelay", False),
    ]
    assert [d["Name"] for d in rows(pool, ("Get-AcceptedDomain", {"Identity": "subsidiary.example"}))] == ["Subsidiary"]


@pytest.mark.timeout(30)
def test_server_component_state(pool: RunspacePool) -> None:
    states = rows(pool, ("Get-ServerComponentState", {"Identity": "EX01"}))
    assert len(states) == 34 and states[0]["Component"] == "ServerWideOffline"
    by_name = {s["Component"]: s for s in states}
    assert by_name["HubTransport"]["State"] == "Draining" and by_name["FrontendTransport"]["State"] == "Active"
    assert by_name["ForwardSyncDaemon"]["State"] == "Inactive" and by_name["Monitoring"]["State"] == "Active"
    local = by_name["HubTransport"]["LocalStates"]
    assert [s.split(";")[0] for s in local] == ["Requestor:Functional", "Requestor:Maintenance"]
    (hub,) = rows(pool, ("Get-ServerComponentState", {"Identity": "ex02.contoso.sim", "Component": "hubtransport"}))
    assert hub["State"] == "Active" and hub["ServerFqdn"] == "ex02.contoso.sim" and hub["Identity"] == "EX02"
    not_found(run(pool, ("Get-ServerComponentState", {"Identity": "EX09"})), "EX09")
    missing = run(pool, ("Get-ServerComponentState", {}))
    assert missing.had_errors and missing.streams.error[0].fq_error.startswith("MissingMandatoryParameter,")


@pytest.mark.timeout(30)
def test_component_requesters_arrive_as_text_and_healthapi_counts(sim_factory: SimFactory) -> None:
    """At remoting depth a RequesterDetails is its ToString (culture-formatted time included), and
    Managed Availability's requester is spelled ``HealthApi`` as Exchange returns it: the exporter
    reads requester and state from that text and reports HealthApi under its real name."""
    org = small_org()
    org["organisation"] = {**org.get("organisation", {}), "culture": "de-DE"}
    org["servers"][0]["components"] = {
        "ImapProxy": {"state": "Inactive", "requester": "HealthAPI"},  # as Set-ServerComponentState accepts it
        "HubTransport": {"state": "Draining", "requester": "maintenance"},
    }
    sim, _ = sim_factory(org)
    pool = open_pool(sim)
    try:
        ps = run(pool, ("Get-ServerComponentState", {"Identity": "EX01"}))
    finally:
        pool.close()
    assert not ps.streams.error and len(ps.output) == 34
    by_name = {flatten(o)["Component"]: o for o in ps.output}
    imap = flatten(by_name["ImapProxy"])
    assert imap["State"] == "Inactive"  # an enum beyond the depth: its name
    texts = imap["LocalStates"]
    assert [t.split("; Timestamp:")[0] for t in texts] == [
        "Requestor:Functional; State:Active",
        "Requestor:HealthApi; State:Inactive",
    ]
    assert re.search(r"Timestamp:\d{2}\.\d{2}\.\d{4} \d{2}:\d{2}:\d{2}$", texts[1])  # de-DE DateTime.ToString()
    parsed = {s.component: s for s in (parse_component(o, "EX01") for o in ps.output)}
    assert dict(parsed["ImapProxy"].requesters) == {"Functional": "Active", "HealthApi": "Inactive"}
    assert dict(parsed["HubTransport"].requesters) == {"Functional": "Active", "Maintenance": "Draining"}
    result = ComponentResult("EX01", (parsed["HubTransport"], parsed["ImapProxy"]))
    families = {m.name: m for m in render_components([result])}
    reported = {
        (s.labels["component"], s.labels["requester"], s.labels["state"])
        for s in families["mailflow_server_component_requester_state"].samples
    }
    assert ("ImapProxy", "HealthApi", "Inactive") in reported  # the old client dropped this one
    assert ("HubTransport", "Maintenance", "Draining") in reported


@pytest.mark.timeout(30)
def test_database_copy_status(pool: RunspacePool) -> None:
    copies = {r["Identity"]: r for r in rows(pool, ("Get-MailboxDatabaseCopyStatus", {}))}
    assert list(copies) == ["DB01\\EX01", "DB01\\EX02", "DB02\\EX02"]
    passive = copies["DB01\\EX02"]
    assert passive["Status"] == "Healthy" and passive["ActiveCopy"] is False and passive["ActiveDatabaseCopy"] == "ex01"
    assert (
        passive["CopyQueueLength"] == 3
        and passive["ReplayQueueLength"] == 1
        and passive["ContentIndexState"] == "Healthy"
    )
    assert copies["DB01\\EX01"]["Status"] == "Mounted" and copies["DB01\\EX01"]["ActiveCopy"] is True
    on_ex02 = rows(pool, ("Get-MailboxDatabaseCopyStatus", {"Server": "EX02"}))
    assert [r["Identity"] for r in on_ex02] == ["DB01\\EX02", "DB02\\EX02"]
    assert [
        r["Identity"] for r in rows(pool, ("Get-MailboxDatabaseCopyStatus", {"Server": "EX02", "Active": True}))
    ] == ["DB02\\EX02"]
    assert [r["Identity"] for r in rows(pool, ("Get-MailboxDatabaseCopyStatus", {"Local": True}))] == ["DB01\\EX01"]
    assert [r["Identity"] for r in rows(pool, ("Get-MailboxDatabaseCopyStatus", {"Identity": "DB01"}))] == [
        "DB01\\EX01",
        "DB01\\EX02",
    ]
    before = passive["LastLogGenerated"]
    CLOCK[0] += 300  # ten more logs
    (later,) = rows(pool, ("Get-MailboxDatabaseCopyStatus", {"Identity": "DB01\\EX02"}))
    CLOCK[0] -= 300
    assert later["LastLogGenerated"] == before + 10
    not_found(run(pool, ("Get-MailboxDatabaseCopyStatus", {"Identity": "DB09"})), "DB09")


@pytest.mark.timeout(30)
def test_exchange_certificates_and_select_object(pool: RunspacePool) -> None:
    ps = run(pool, ("Get-ExchangeCertificate", {"Server": "EX02"}))
    assert len(ps.output) == 5 and not ps.streams.error
    first = ps.output[0]
    assert list(first.adapted_properties) == ["RawData"]
    assert str(first).startswith("[Subject]\r\n  CN=EX02\r\n\r\n[Issuer]\r\n  CN=EX02\r\n")
    ders = [o.adapted_properties["RawData"] for o in ps.output]
    parsed = [x509.load_der_x509_certificate(d) for d in ders]
    assert [p.subject.rfc4514_string() for p in parsed][3:] == ["CN=mail.contoso.sim", "CN=old.contoso.sim"]
    thumbprints = [hashlib.sha1(d, usedforsecurity=False).hexdigest().upper() for d in ders]

    props = ["Thumbprint", "Subject", "Issuer", "NotBefore", "NotAfter", "Services", "Status", "IsSelfSigned"]
    props += ["CertificateDomains", "FriendlyName", "HasPrivateKey"]
    selected = rows(pool, ("Get-ExchangeCertificate", {"Server": "EX02"}), ("Select-Object", {"Property": props}))
    assert [list(r) for r in selected] == [props] * 5
    assert [r["Thumbprint"] for r in selected] == thumbprints
    own, auth, wmsvc, mail, old = selected
    assert own["Services"] == "IMAP, POP, IIS, SMTP" and own["IsSelfSigned"] is True and own["Status"] == "Valid"
    assert own["CertificateDomains"] == ["EX02", "ex02.contoso.sim"] and own["HasPrivateKey"] is True
    assert auth["Services"] == "SMTP" and wmsvc["Services"] == "None"
    assert (
        mail["Services"] == "IIS, SMTP" and mail["Issuer"] == "CN=Contoso Issuing CA" and mail["IsSelfSigned"] is False
    )
    not_after = dt.datetime.fromisoformat(mail["NotAfter"])
    assert not_after.timestamp() == int(CLOCK[0] + 12 * 86400) and not_after.utcoffset() == dt.timedelta(0)
    assert parsed[3].not_valid_after_utc == not_after
    assert old["Status"] == "DateInvalid"

    (only,) = rows(pool, ("Get-ExchangeCertificate", {"Thumbprint": thumbprints[3], "Server": "EX02"}))
    assert only["RawData"] == ders[3]
    (expanded,) = run(
        pool,
        ("Get-ExchangeCertificate", {"Identity": f"EX02\\{thumbprints[3]}"}),
        ("Select-Object", {"ExpandProperty": "NotAfter"}),
    ).output
    assert dt.datetime.fromisoformat(expanded) == not_after
    assert len(rows(pool, ("Get-ExchangeCertificate", {}))) == 3  # the endpoint's own server (EX01)
    not_found(run(pool, ("Get-ExchangeCertificate", {"Thumbprint": "00" * 20, "Server": "EX02"})), "00" * 20)


@pytest.mark.timeout(30)
def test_service_health(pool: RunspacePool) -> None:
    roles = {r["Role"]: r for r in rows(pool, ("Test-ServiceHealth", {}))}
    assert list(roles) == ["Mailbox Server Role", "Client Access Server Role", "Hub Transport Server Role"]
    hub = roles["Hub Transport Server Role"]
    assert hub["RequiredServicesRunning"] is False and hub["ServicesNotRunning"] == ["MSExchangeTransport"]
    assert "MSExchangeTransport" not in hub["ServicesRunning"]
    assert roles["Mailbox Server Role"]["RequiredServicesRunning"] is True
    assert all(r["RequiredServicesRunning"] for r in rows(pool, ("Test-ServiceHealth", {"Server": "EX02"})))


@pytest.mark.timeout(30)
def test_ad_permission(pool: RunspacePool) -> None:
    anonymous = "NT AUTHORITY\\ANONYMOUS LOGON"
    ex01 = {r["Name"]: r for r in rows(pool, ("Get-ReceiveConnector", {"Server": "EX01"}))}
    relay_dn = ex01["App Relay EX01"]["DistinguishedName"]
    assert relay_dn.startswith("CN=App Relay EX01,CN=SMTP Receive Connectors,CN=Protocols,CN=EX01,CN=Servers,")
    relay = rows(pool, ("Get-ADPermission", {"Identity": relay_dn, "User": anonymous}))
    rights = [r for row in relay for r in row["ExtendedRights"]]
    assert "ms-Exch-SMTP-Accept-Any-Recipient" in rights and "ms-Exch-SMTP-Submit" in rights
    assert all(r["User"] == anonymous and r["Identity"] == "EX01\\App Relay EX01" for r in relay)
    # the same object by its DN in other case, by its objectGUID, and by its unique name
    for identity in (relay_dn.upper(), str(ex01["App Relay EX01"]["Guid"]), "app relay ex01"):
        assert (
            rows(pool, ("Get-ADPermission", {"Identity": identity, "User": "nt authority\\anonymous logon"})) == relay
        )
    frontend_dn = ex01["Default Frontend EX01"]["DistinguishedName"]
    frontend = rows(pool, ("Get-ADPermission", {"Identity": frontend_dn, "User": anonymous}))
    assert sorted(r for row in frontend for r in row["ExtendedRights"]) == [
        "ms-Exch-Accept-Headers-Routing",
        "ms-Exch-SMTP-Accept-Any-Sender",
        "ms-Exch-SMTP-Accept-Authoritative-Domain-Sender",
        "ms-Exch-SMTP-Submit",
    ]
    partner = rows(pool, ("Get-ADPermission", {"Identity": ex01["Partner EX01"]["DistinguishedName"]}))
    assert {r["User"] for r in partner} == {"MS Exchange\\Externally Secured Servers"}
    assert "ms-Exch-SMTP-Accept-Any-Recipient" in [r for row in partner for r in row["ExtendedRights"]]
    client = rows(pool, ("Get-ADPermission", {"Identity": "Client Frontend EX02"}))
    assert {r["User"] for r in client} == {"NT AUTHORITY\\Authenticated Users"}
    assert rows(pool, ("Get-ADPermission", {"Identity": "Client Frontend EX02", "User": anonymous})) == []


@pytest.mark.timeout(30)
def test_ad_permission_rejects_what_adrawentryidparameter_does_not_resolve(pool: RunspacePool) -> None:
    # Get-ReceiveConnector's Identity (SERVER\Name) is not an ADRawEntryIdParameter form: not found,
    # and so are a DN of no object, a wildcard and a GUID no object has.
    dn = rows(pool, ("Get-ReceiveConnector", {"Identity": "EX01\\Default Frontend EX01"}))[0]["DistinguishedName"]
    for identity in (
        "EX01\\Default Frontend EX01",
        "EX01\\App Relay EX01",
        dn.replace("CN=EX01,", "CN=EX09,"),
        "Default Frontend*",
        "00000000-0000-0000-0000-000000000000",
    ):
        ps = run(pool, ("Get-ADPermission", {"Identity": identity, "User": "NT AUTHORITY\\ANONYMOUS LOGON"}))
        not_found(ps, identity)
        dc = "DC01.contoso.sim"
        assert str(ps.streams.error[0]) == (
            f"The operation couldn't be performed because object '{identity}' couldn't be found on '{dc}'."
        )
    # A principal not in DOMAIN\name form does not resolve: an error, never an empty "no ACE" answer.
    ps = run(pool, ("Get-ADPermission", {"Identity": dn, "User": "ANONYMOUS LOGON"}))
    assert not ps.output
    (error,) = ps.streams.error
    assert "FailureCategory=Cmdlet-ManagementObjectNotFoundException" in error.fq_error
    assert str(error) == (
        'Couldn\'t find object "ANONYMOUS LOGON". Please make sure that it was spelled correctly or specify a '
        "different object."
    )


@pytest.mark.timeout(30)
def test_ad_permission_name_shared_by_two_connectors_is_ambiguous(sim_factory: SimFactory) -> None:
    org = small_org()
    relay = {"name": "Relay", "remote_ip_ranges": ["10.1.2.3"], "permission_groups": ["AnonymousUsers"]}
    for server in org["servers"]:
        server["receive_connectors"] = [dict(relay)]
    sim, _ = sim_factory(org)
    pool = open_pool(sim)
    try:
        (error,) = run(pool, ("Get-ADPermission", {"Identity": "Relay"})).streams.error
        assert "FailureCategory=Cmdlet-ManagementObjectAmbiguousException" in error.fq_error
        assert str(error) == "The operation couldn't be performed because 'Relay' matches multiple entries."
        ex02 = rows(pool, ("Get-ReceiveConnector", {"Identity": "EX02\\Relay"}))[0]
        aces = rows(pool, ("Get-ADPermission", {"Identity": ex02["DistinguishedName"]}))
        assert aces and {r["Identity"] for r in aces} == {"EX02\\Relay"}
    finally:
        pool.close()


# ---------------------------------------------------------------------------------------------
# RBAC, replays, faults, runtime scenario changes
# ---------------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_rbac_hides_get_adpermission(sim_factory: SimFactory) -> None:
    org = audit_org()
    org["rbac"] = {"hidden_cmdlets": ["Get-ADPermission"]}
    sim, _ = sim_factory(org)
    pool = open_pool(sim)
    try:
        ps = run(
            pool, ("Get-ADPermission", {"Identity": "EX01\\App Relay EX01", "User": "NT AUTHORITY\\ANONYMOUS LOGON"})
        )
        assert ps.had_errors and not ps.output
        (error,) = ps.streams.error
        assert error.fq_error == "CommandNotFoundException"
        assert str(error).startswith("The term 'Get-ADPermission' is not recognized as the name of a cmdlet")
        assert len(rows(pool, ("Get-ReceiveConnector", {"Server": "EX01"}))) == 7  # the rest still works
    finally:
        pool.close()


@pytest.mark.timeout(30)
def test_replays_of_real_connector_captures(sim_factory: SimFactory) -> None:
    org = audit_org()
    org["replays"] = {
        "Get-ReceiveConnector": str(CAPTURES / "GetReceiveConnector.xml"),
        "Get-SendConnector": str(CAPTURES / "GetSendConnector.xml"),
    }
    sim, _ = sim_factory(org)
    pool = open_pool(sim)
    try:
        received = rows(pool, ("Get-ReceiveConnector", {"Server": "EX01"}))
        assert received[0]["Identity"] == "WIN-CTD3L0RGEN4\\Default WIN-CTD3L0RGEN4"
        assert len(received) == 5 and received[2]["Bindings"] == ["[::]:25", "0.0.0.0:25"]
        assert received[2]["PermissionGroups"] == "AnonymousUsers, ExchangeServers, ExchangeLegacyServers"
        (sent,) = rows(pool, ("Get-SendConnector", {}))
        assert sent["Name"] == "Mail to O365" and sent["SmartHosts"] == ["microsoft-com.mail.protection.outlook.com"]
        assert sent["SourceIPAddress"] == "0.0.0.0"
        assert len(rows(pool, ("Get-AcceptedDomain", {}))) == 3  # not replayed: served from the scenario
    finally:
        pool.close()


@pytest.mark.timeout(30)
def test_faults_apply_to_the_new_cmdlets(sim: Simulator, pool: RunspacePool) -> None:
    sim.faults.set("EX01", "error_record", cmdlet="Get-ServerComponentState", message="The server is not reachable.")
    try:
        ps = run(pool, ("Get-ServerComponentState", {"Identity": "EX01"}))
        assert not ps.output and [str(e) for e in ps.streams.error] == ["The server is not reachable."]
        assert len(rows(pool, ("Get-ReceiveConnector", {"Server": "EX02"}))) == 5  # other cmdlets unaffected
        sim.faults.set("EX01", "malformed_clixml", cmdlet="Test-ServiceHealth", message="truncated")
        assert all(isinstance(o, str) for o in run(pool, ("Test-ServiceHealth", {})).output)
    finally:
        sim.faults.clear("EX01")
    assert len(rows(pool, ("Get-ServerComponentState", {"Identity": "EX01"}))) == 34


@pytest.mark.timeout(30)
def test_set_scenario_changes_what_is_served(sim_factory: SimFactory) -> None:
    sim, _ = sim_factory(small_org())
    pool = open_pool(sim)
    try:
        (hub,) = rows(pool, ("Get-ServerComponentState", {"Identity": "EX02", "Component": "HubTransport"}))
        assert hub["State"] == "Active"
        changed = small_org()
        changed["servers"][1]["components"] = {"HubTransport": "Draining"}
        sim.set_scenario(Scenario.from_dict(changed))
        (hub,) = rows(pool, ("Get-ServerComponentState", {"Identity": "EX02", "Component": "HubTransport"}))
        assert hub["State"] == "Draining"
        assert len(rows(pool, ("Get-Queue", {}))) == 4  # the same session keeps working
    finally:
        pool.close()
    with pytest.raises(ValueError, match="same servers"):
        sim.set_scenario(Scenario.from_dict(small_org(servers=("EX01", "EX03"))))
