"""The simulator's configuration and health objects against real Exchange 2019 captures (no sockets).

For every cmdlet with a capture, the simulator's object for an equivalent scenario must have the
capture's type-name chain, the same adapted and extended property names in the same order, the
same wire tag per property (a capture ``Nil`` accepts any value) and enums/MVPs/value types in the
same form, recursively. Values that are Exchange defaults (the five receive connectors, component
states, service lists) must equal the capture's.

Two levels are compared: the object the simulated server holds, written as Export-Clixml writes it
(``_element``: depth 2), against the capture, and what a remote session puts on the wire (``_wire``:
remoting depth 1) against the same capture cut to remoting depth by ``depth.cut`` (tested on its own
in test_remoting_depth.py).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
from collections.abc import Iterable
from xml.etree import ElementTree as ET

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pypsrp.serializer import Serializer

from exporter.exchange.clixml import decode_mvp, flatten
from exporter.exchange.wire import FastOutputSerializer
from exporter.simulator import Scenario, ScenarioError, build_scenario, objects_server
from exporter.simulator import certificates as certs
from exporter.simulator import objects_config as oc
from exporter.simulator import objects_health as oh
from exporter.simulator.clixml import RefContext, element_text, load_capture, to_element, write_clixml
from exporter.simulator.depth import EXPORT_CLIXML_DEPTH, UNLIMITED, cut
from exporter.simulator.orgconfig import SERVICE_HEALTH_ROLES, parse_binding, parse_ip_range
from exporter.simulator.timeline import Timeline
from tests.fixtures.captures import CAPTURES

#: Note properties the PowerShell client that made a capture adds; never on the wire.
CLIENT_NOTES = {"PSComputerName", "RunspaceId", "PSShowComputerName"}
LAB = "WIN-CTD3L0RGEN4"
START = 1_800_000_000.0


def _capture(relative: str) -> list[ET.Element]:
    path = CAPTURES / relative
    return load_capture(path)


def _element(obj: object) -> ET.Element:
    """What Export-Clixml writes of the server's object (depth 2), as the captures were made."""
    return ET.fromstring(write_clixml(obj, EXPORT_CLIXML_DEPTH))


def _wire(obj: object) -> ET.Element:
    """What a remote session sends of the object (remoting depth)."""
    return ET.fromstring(write_clixml(obj))


def _wire_like_capture(real: ET.Element, obj: object, *, nil_ok: Iterable[str] = ()) -> ET.Element:
    """The object's wire form, checked against the capture cut to remoting depth."""
    wire, expected = _wire(obj), cut(real)
    assert _shape_diff(expected, wire, nil_ok=nil_ok) == []
    return wire


def _types(el: ET.Element, ctx: RefContext) -> list[str]:
    tn = el.find("TN")
    if tn is not None:
        return [t.text or "" for t in tn]
    ref = el.find("TNRef")
    return ctx.type_names[ref.attrib["RefId"]] if ref is not None else []


def _shape_diff(
    real: ET.Element, mine: ET.Element, path: str = "$", *, nil_ok: Iterable[str] = (), root: ET.Element | None = None
) -> list[str]:
    """Differences in shape between a capture element and a simulator element (empty: same shape).

    ``root``: the capture object ``real`` sits in, when ``real`` is a nested element (its TNRefs).
    """
    real_ctx, mine_ctx = RefContext.of([real if root is None else root]), RefContext.of([mine])
    nil_names = set(nil_ok)
    out: list[str] = []

    def walk(a: ET.Element, b: ET.Element, where: str, level: int) -> None:
        if a.tag == "Nil" or (b.tag == "Nil" and where.rsplit(".", 1)[-1] in nil_names):
            return
        if a.tag != b.tag:
            out.append(f"{where}: <{a.tag}> in the capture, <{b.tag}> here")
            return
        if a.tag != "Obj":
            return
        if _types(a, real_ctx) != _types(b, mine_ctx):
            out.append(f"{where}: type names {_types(a, real_ctx)} != {_types(b, mine_ctx)}")
        if (a.find("ToString") is None) != (b.find("ToString") is None):
            out.append(f"{where}: ToString present in one only")
        body = [c.tag for c in a if c.tag not in ("TN", "TNRef", "ToString")]
        if body != [c.tag for c in b if c.tag not in ("TN", "TNRef", "ToString")]:
            out.append(f"{where}: children {body} != {[c.tag for c in b if c.tag not in ('TN', 'TNRef', 'ToString')]}")
        for section in ("Props", "MS"):
            sa, sb = a.find(section), b.find(section)
            if sa is None or sb is None:
                continue
            names_a = [c.attrib["N"] for c in sa if c.attrib.get("N") not in CLIENT_NOTES]
            names_b = [c.attrib["N"] for c in sb]
            if names_a != names_b:
                out.append(f"{where}.{section}: names differ:\n  capture {names_a}\n  here    {names_b}")
            by_name = {c.attrib["N"]: c for c in sb}
            for child in sa:
                name = child.attrib.get("N", "")
                if name in by_name and level < 5:
                    walk(child, by_name[name], f"{where}.{name}", level + 1)
        la, lb = a.find("LST"), b.find("LST")
        if la is not None and lb is not None and len(la) and len(lb):
            walk(la[0], lb[0], f"{where}[0]", level + 1)

    walk(real, mine, path, 0)
    return out


def _texts(el: ET.Element) -> dict[str, str]:
    ctx = RefContext.of([el])
    props = el.find("Props")
    assert props is not None
    return {c.attrib["N"]: element_text(c, ctx) for c in props}


def _org(**extra: object) -> Scenario:
    data: dict[str, object] = {
        "organisation": {"name": "First Organization", "domain": "exlab.dom", "timezone_offset_minutes": 120},
        "servers": [{"name": LAB, "fqdn": f"{LAB}.exlab.dom"}, {"name": "EX02"}],
    }
    data.update(extra)
    return Scenario.from_dict(data)


def _timeline(scenario: Scenario) -> Timeline:
    return Timeline(scenario.organisation, lambda: START)


# ---------------------------------------------------------------------------------------------
# Get-ReceiveConnector
# ---------------------------------------------------------------------------------------------
def test_default_receive_connectors_match_the_capture() -> None:
    captured = _capture("E19/GetReceiveConnector.xml")
    scenario = _org()
    server = scenario.servers[0]
    objs = [oc.receive_connector(scenario, server, s, _timeline(scenario)) for s in server.effective_receive_connectors]
    assert len(objs) == len(captured) == 5
    varying = {"Guid", "WhenChanged", "WhenCreated", "WhenChangedUTC", "WhenCreatedUTC", "OriginatingServer"}
    varying |= {"TlsDomainCapabilities"}  # the lab added fabrikam.com:AcceptCloudServicesMail by hand
    for real, obj in zip(captured, objs, strict=True):
        built = _element(obj)
        assert _shape_diff(real, built) == []
        wire = _wire_like_capture(real, obj)
        for want_el, got_el in ((real, built), (cut(real), wire)):
            want, got = _texts(want_el), _texts(got_el)
            assert {k: v for k, v in got.items() if k not in varying} == {
                k: v for k, v in want.items() if k not in varying and k in got
            }
        assert real.findtext("ToString") == built.findtext("ToString") == wire.findtext("ToString")
        # at remoting depth the list items are their ToString; the IP addresses inside them are gone
        assert [i.tag for i in wire.find("Props/Obj[@N='Bindings']/LST")] == ["S", "S"]  # type: ignore[union-attr]


def test_receive_connector_overrides_and_ip_ranges_decode() -> None:
    scenario = _org(
        servers=[
            {
                "name": "EX01",
                "receive_connectors": [
                    {
                        "name": "App Relay EX01",
                        "bindings": ["10.20.30.5:25", "[fe80::1]:2525"],
                        "remote_ip_ranges": ["192.168.5.10", "10.1.2.3/8", "192.168.1.1-192.168.1.50", "2001:db8::/32"],
                        "permission_groups": ["AnonymousUsers"],
                        "auth_mechanism": ["ExternalAuthoritative", "Tls"],
                        "require_tls": True,
                        "fqdn": "relay.contoso.sim",
                        "max_message_size_bytes": 10 << 20,
                    },
                    {"name": "Default Frontend EX01", "enabled": False, "remote_ip_ranges": ["203.0.113.0/24"]},
                ],
            }
        ]
    )
    server = scenario.servers[0]
    specs = {s.name: s for s in server.effective_receive_connectors}
    assert len(specs) == 6
    value = Serializer().deserialize(
        write_clixml(oc.receive_connector(scenario, server, specs["App Relay EX01"], _timeline(scenario))).decode()
    )
    flat = flatten(value)
    assert flat["Identity"] == "EX01\\App Relay EX01"
    assert flat["Bindings"] == ["10.20.30.5:25", "[fe80::1]:2525"]
    assert flat["RemoteIPRanges"] == ["192.168.5.10", "10.0.0.0/8", "192.168.1.1-192.168.1.50", "2001:db8::/32"]
    # at remoting depth the flags enum is its name; the server's object holds the number too
    assert flat["PermissionGroups"] == "AnonymousUsers" == value.adapted_properties["PermissionGroups"]
    whole = _element(oc.receive_connector(scenario, server, specs["App Relay EX01"], _timeline(scenario)))
    assert whole.findtext("Props/Obj[@N='PermissionGroups']/I32") == "1"
    assert flat["AuthMechanism"] == "Tls, ExternalAuthoritative"
    assert flat["RequireTLS"] is True and flat["Fqdn"] == "relay.contoso.sim"
    assert flat["MaxMessageSize"] == "10 MB (10,485,760 bytes)"
    frontend = flatten(
        Serializer().deserialize(
            write_clixml(
                oc.receive_connector(scenario, server, specs["Default Frontend EX01"], _timeline(scenario))
            ).decode()
        )
    )
    assert frontend["Enabled"] is False and frontend["RemoteIPRanges"] == ["203.0.113.0/24"]
    assert frontend["PermissionGroups"] == "AnonymousUsers, ExchangeServers, ExchangeLegacyServers"  # kept


def test_ip_range_notations() -> None:
    cases = {
        "192.168.5.10": ("192.168.5.10", "192.168.5.10", "192.168.5.10", "SingleAddress", "::1"),
        "10.0.0.0/8": ("10.0.0.0/8", "10.0.0.0", "10.255.255.255", "CIDR", "::100:0"),
        "10.20.30.7/24": ("10.20.30.0/24", "10.20.30.0", "10.20.30.255", "CIDR", "::100"),
        "192.168.1.1 - 192.168.1.50": ("192.168.1.1-192.168.1.50", "192.168.1.1", "192.168.1.50", "LoHi", "::32"),
        "0.0.0.0-255.255.255.255": ("0.0.0.0-255.255.255.255", "0.0.0.0", "255.255.255.255", "LoHi", "::1:0:0"),
        "2001:DB8::1": ("2001:db8::1", "2001:db8::1", "2001:db8::1", "SingleAddress", "::1"),
        "2001:db8::/32": ("2001:db8::/32", "2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "CIDR", "0:1::"),
        "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff": (
            "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "LoHi",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",  # 2**128 does not fit: Exchange shows the maximum
        ),
    }
    for text, (display, low, high, fmt, size) in cases.items():
        spec = parse_ip_range(text)
        assert (spec.expression, spec.lower.compressed, spec.upper.compressed, spec.format) == (display, low, high, fmt)
        el = _element(oc.ip_range(text))
        assert el.findtext("ToString") == display
        props = {c.attrib["N"]: c.text for c in el.find("Props")}  # type: ignore[union-attr]
        assert props == {"LowerBound": low, "UpperBound": high, "RangeFormat": fmt, "Size": size, "Expression": display}
    for bad in ("10.0.0.300", "10.0.0.9-10.0.0.1", "10.0.0.1-::1", "10.0.0.0/33", "not an ip"):
        with pytest.raises(ValueError):
            parse_ip_range(bad)
    assert parse_binding("[::]:25").display == "[::]:25" and parse_binding("0.0.0.0:587").port == 587
    for bad in ("0.0.0.0", "0.0.0.0:0", "host:25"):
        with pytest.raises(ValueError):
            parse_binding(bad)
    connector = _capture("E19/GetReceiveConnector.xml")[0]
    real = connector.find("Props/Obj[@N='RemoteIPRanges']/LST")
    assert real is not None
    for item in real:
        assert _shape_diff(item, _element(oc.ip_range(item.findtext("ToString") or "")), root=connector) == []
        assert _texts(item) == _texts(_element(oc.ip_range(item.findtext("ToString") or "")))
    v4 = _element(oc.ip_address("10.0.0.5"))
    assert v4.findtext("Props/I64[@N='Address']") == str(
        int.from_bytes(ipaddress.ip_address("10.0.0.5").packed, "little")
    )


# ---------------------------------------------------------------------------------------------
# Get-SendConnector
# ---------------------------------------------------------------------------------------------
def test_send_connectors_match_the_captures_including_the_source_ip_reference() -> None:
    real = _capture("E19/GetSendConnector.xml")[0]
    relay = _capture("connectors/GetSendConnectorConfiguredToRelayToM365.xml")[0]
    scenario = _org(
        send_connectors=[
            {
                "name": "Mail to O365",
                "smart_hosts": ["microsoft-com.mail.protection.outlook.com"],
                "cloud_services_mail_enabled": True,
                "source_transport_servers": [LAB],
            },
            {
                "name": "My company to Office 365",
                "address_spaces": ["smtp:*;1"],
                "smart_hosts": ["ThisTenantDoesntExists-com.mail.protection.outlook.com"],
                "require_tls": True,
                "tls_auth_level": "CertificateValidation",
                "cloud_services_mail_enabled": True,
                "fqdn": "mail.contoso.com",
                "source_transport_servers": [LAB],
            },
        ]
    )
    first_obj, second_obj = (
        oc.send_connector(scenario, s, _timeline(scenario)) for s in scenario.effective_send_connectors
    )
    first, second = _element(first_obj), _element(second_obj)
    # TlsCertificateName is set in one capture and Nil in the other: configuration, not shape.
    assert _shape_diff(real, first, nil_ok={"TlsCertificateName"}) == []
    assert _shape_diff(relay, second) == []
    first_wire = _wire_like_capture(real, first_obj, nil_ok={"TlsCertificateName"})
    _wire_like_capture(relay, second_obj)
    varying = {"Guid", "WhenChanged", "WhenCreated", "WhenChangedUTC", "WhenCreatedUTC", "OriginatingServer"}
    varying |= {"TlsCertificateName", "HomeMTA", "Identity", "Id", "DistinguishedName", "ObjectCategory"}
    for want_el, got_el in ((real, first), (relay, second)):
        want, got = _texts(want_el), _texts(got_el)
        assert {k: v for k, v in got.items() if k not in varying} == {k: v for k, v in want.items() if k not in varying}
    # SourceIPAddress is a <Ref> to IPAddress.Any inside the SmartHosts list, in both.
    for el in (real, first):
        ref = el.find("Props/Ref[@N='SourceIPAddress']")
        assert ref is not None
        target = [
            o for o in el.find("Props/Obj[@N='SmartHosts']/LST").iter("Obj") if o.get("RefId") == ref.get("RefId")
        ]  # type: ignore[union-attr]
        assert target and target[0].findtext("ToString") == "0.0.0.0"
    with pytest.raises(KeyError):
        Serializer().deserialize(ET.tostring(first, encoding="unicode"))  # stock pypsrp's gap
    decoded = flatten(FastOutputSerializer().deserialize(ET.tostring(first, encoding="unicode")))
    assert decoded["SourceIPAddress"] == "0.0.0.0" and decoded["SmartHosts"] == [
        "microsoft-com.mail.protection.outlook.com"
    ]
    # On the wire the smart host is a string, so the address inside it is never written: SourceIPAddress
    # is the IPAddress itself (types.ps1xml gives IPAddress depth 1), and stock pypsrp reads it.
    assert first_wire.find("Props/Ref") is None
    source = first_wire.find("Props/Obj[@N='SourceIPAddress']")
    assert source is not None and source.findtext("ToString") == "0.0.0.0" and source.find("Props") is not None
    wire = flatten(Serializer().deserialize(ET.tostring(first_wire, encoding="unicode")))
    assert wire["SourceIPAddress"] == "0.0.0.0" and wire["SmartHosts"] == ["microsoft-com.mail.protection.outlook.com"]


def test_send_connector_smart_host_ips_and_dns_routing() -> None:
    scenario = _org(
        send_connectors=[
            {"name": "Internet"},
            {
                "name": "Relay",
                "smart_hosts": ["10.0.0.5", "[10.0.0.6]", "relay.example"],
                "address_spaces": ["SMTP:partner.example;2"],
            },
        ]
    )
    internet, relay = (
        flatten(
            FastOutputSerializer().deserialize(
                write_clixml(oc.send_connector(scenario, s, _timeline(scenario))).decode()
            )
        )
        for s in scenario.effective_send_connectors
    )
    assert internet["DNSRoutingEnabled"] is True and internet["SmartHosts"] == [] and internet["SmartHostsString"] == ""
    assert internet["SourceTransportServers"] == [LAB, "EX02"] and internet["AddressSpaces"] == ["SMTP:*;1"]
    assert relay["DNSRoutingEnabled"] is False
    assert relay["SmartHosts"] == ["[10.0.0.5]", "[10.0.0.6]", "relay.example"]
    assert relay["SmartHostsString"] == "[10.0.0.5],[10.0.0.6],relay.example"
    assert relay["AddressSpaces"] == ["SMTP:partner.example;2"]
    el = _element(oc.send_connector(scenario, scenario.effective_send_connectors[0], _timeline(scenario)))
    assert el.find("Props/Obj[@N='SourceIPAddress']") is not None  # no smart host by name: a full object


# ---------------------------------------------------------------------------------------------
# Get-ExchangeServer
# ---------------------------------------------------------------------------------------------
def test_exchange_server_matches_the_capture() -> None:
    (real,) = _capture("E19/GetExchangeServer.xml")
    scenario = _org()
    obj = objects_server.exchange_server(scenario, scenario.servers[0], _timeline(scenario))
    assert _shape_diff(real, _element(obj)) == []
    wire = _wire_like_capture(real, obj)
    # remoting depth: the version, site, role and ids are text; NetworkAddress stays a list
    assert wire.findtext("Props/S[@N='AdminDisplayVersion']", "").startswith("Version 15.")
    assert wire.findtext("Props/S[@N='ServerRole']") == _texts(real)["ServerRole"] == "Mailbox"
    addresses = wire.find("Props/Obj[@N='NetworkAddress']/LST")
    assert addresses is not None and {i.tag for i in addresses} == {"S"}


# ---------------------------------------------------------------------------------------------
# Get-AcceptedDomain
# ---------------------------------------------------------------------------------------------
def test_accepted_domains_match_the_captures() -> None:
    good = _capture("E19/GetAcceptedDomain.xml")
    bad = _capture("E19/GetAcceptedDomain_Bad.xml")
    scenario = _org(
        accepted_domains=[
            {"domain": "Solo.com", "default": True},
            {"name": "Contoso Wild", "domain": "*.contoso.local"},
            {"name": "Wild .com", "domain": "*.com", "type": "InternalRelay"},
            {"name": "Bad Accepted Domain", "domain": "*", "type": "ExternalRelay"},
        ]
    )
    objs = [oc.accepted_domain(scenario, s, _timeline(scenario)) for s in scenario.effective_accepted_domains]
    varying = {"Guid", "WhenChanged", "WhenCreated", "WhenChangedUTC", "WhenCreatedUTC", "OriginatingServer"}
    varying |= {"DistinguishedName", "ObjectCategory"}  # the lab's organisation and domain names
    for real, obj in zip([*good, bad[3]], objs, strict=True):
        built = _element(obj)
        assert _shape_diff(real, built) == []
        wire = _wire_like_capture(real, obj)
        for want_el, got_el in ((real, built), (cut(real), wire)):
            want, got = _texts(want_el), _texts(got_el)
            assert {k: v for k, v in got.items() if k not in varying} == {
                k: v for k, v in want.items() if k not in varying
            }
        assert wire.find("Props/S[@N='DomainName']") is not None  # a SmtpDomainWithSubdomains: its text
        domain_real, domain_mine = real.find("Props/Obj[@N='DomainName']"), built.find("Props/Obj[@N='DomainName']")
        assert _texts(domain_real) == _texts(domain_mine)  # type: ignore[arg-type]
    default = _org().effective_accepted_domains
    assert [(d.domain, d.type, d.default) for d in default] == [("exlab.dom", "Authoritative", True)]


# ---------------------------------------------------------------------------------------------
# Get-ServerComponentState / Test-ServiceHealth
# ---------------------------------------------------------------------------------------------
def _requesters(el: ET.Element, which: str) -> list[tuple[str, str]]:
    items = el.find(f"Props/Obj[@N='{which}']/LST")
    assert items is not None
    return [(i.findtext("Props/S[@N='Requester']") or "", i.findtext("Props/S[@N='State']") or "") for i in items]


def test_server_component_states_match_the_capture() -> None:
    captured = _capture("E19/GetServerComponentState.xml")
    scenario = _org()
    server = scenario.servers[0]
    objs = [oh.server_component_state(scenario, server, c, _timeline(scenario)) for c in oh.component_states(server)]
    mine = [_element(o) for o in objs]
    assert len(mine) == len(captured) == 34
    for real, built, obj in zip(captured, mine, objs, strict=True):
        assert _shape_diff(real, built) == []
        wire = _wire_like_capture(real, obj)
        for which in ("LocalStates", "RemoteStates"):  # at remoting depth: the details' ToString
            items = wire.find(f"Props/Obj[@N='{which}']/LST")
            assert items is not None and all(i.tag == "S" for i in items)
            shown = [(i.text or "").split("; Timestamp:")[0] for i in items]
            assert shown == [f"Requestor:{r}; State:{s}" for r, s in _requesters(real, which)]
        assert wire.findtext("Props/S[@N='State']") == _texts(real)["State"]
        want, got = _texts(real), _texts(built)
        for key in ("Component", "State", "ServerWideOfflineIsOffline", "IsValid", "ObjectState"):
            assert got[key] == want[key]
        for which in ("LocalStates", "RemoteStates"):
            assert _requesters(built, which) == _requesters(real, which)
        assert real.findtext("ToString") == built.findtext("ToString")
    details = mine[0].find("Props/Obj[@N='LocalStates']/LST/Obj")
    assert details is not None and details.findtext("ToString", "").startswith(
        "Requestor:Functional; State:Active; Timestamp:"
    )
    assert details.find("MS") is None  # RequesterDetails carry no SerializationData, as captured


def test_component_overrides_and_server_wide_offline() -> None:
    scenario = _org(
        servers=[
            {
                "name": "EX01",
                "components": {
                    "HubTransport": "Draining",
                    "ForwardSyncDaemon": {"state": "Active", "requester": "Functional"},
                },
            },
            {"name": "EX02", "components": {"serverwideoffline": {"state": "Inactive", "requester": "Maintenance"}}},
        ]
    )
    tl = _timeline(scenario)
    ex01 = {
        c.component: _element(oh.server_component_state(scenario, scenario.servers[0], c, tl))
        for c in oh.component_states(scenario.servers[0])
    }
    hub = _texts(ex01["HubTransport"])
    assert hub["State"] == "Draining" and hub["ServerWideOfflineIsOffline"] == "False"
    assert _requesters(ex01["HubTransport"], "LocalStates") == [("Functional", "Active"), ("Maintenance", "Draining")]
    assert _texts(ex01["ForwardSyncDaemon"])["State"] == "Active"
    state_el = ex01["HubTransport"].find("Props/Obj[@N='State']")
    assert state_el is not None and state_el.findtext("I32") == "2"
    ex02 = {
        c.component: _texts(_element(oh.server_component_state(scenario, scenario.servers[1], c, tl)))
        for c in oh.component_states(scenario.servers[1])
    }
    assert all(row["ServerWideOfflineIsOffline"] == "True" for row in ex02.values())
    assert {n for n, row in ex02.items() if row["State"] == "Active"} == {"Monitoring", "RecoveryActionsEnabled"}
    with pytest.raises(ScenarioError, match=r"components\.Transport"):
        Scenario.from_dict({"servers": [{"name": "EX01", "components": {"Transport": "Draining"}}]})
    with pytest.raises(ScenarioError, match="state"):
        Scenario.from_dict({"servers": [{"name": "EX01", "components": {"HubTransport": "Paused"}}]})


def test_service_health_matches_the_capture() -> None:
    captured = _capture("E19/TestServiceHealth.xml")
    objs = [oh.services_status(role, ()) for role in SERVICE_HEALTH_ROLES]
    for real, obj in zip(captured, objs, strict=True):
        built = _element(obj)
        assert _shape_diff(real, built) == []
        assert _texts(real) == _texts(built)
        assert _texts(cut(real)) == _texts(_wire_like_capture(real, obj))
    down = flatten(
        Serializer().deserialize(
            write_clixml(oh.services_status("Hub Transport Server Role", ("MSExchangeTransport",))).decode()
        )
    )
    assert down["RequiredServicesRunning"] is False and down["ServicesNotRunning"] == ["MSExchangeTransport"]
    assert "MSExchangeTransport" not in down["ServicesRunning"] and len(down["ServicesRunning"]) == 7


# ---------------------------------------------------------------------------------------------
# Get-ExchangeCertificate
# ---------------------------------------------------------------------------------------------
def test_certificates_match_the_capture_and_parse() -> None:
    captured = _capture("E19/GetExchangeCertificate.xml")
    scenario = _org(
        servers=[
            {"name": LAB},
            {
                "name": "EX02",
                "certificates": [
                    {
                        "subject": "CN=mail.exlab.dom",
                        "domains": ["mail.exlab.dom", "autodiscover.exlab.dom"],
                        "services": ["IIS", "SMTP"],
                        "not_after_days": 12,
                    },
                    {"subject": "CN=old.exlab.dom", "not_before_days": -800, "not_after_days": -5, "self_signed": True},
                ],
            },
        ]
    )
    tl = _timeline(scenario)
    defaults = certs.server_certificates(scenario, scenario.servers[0], tl)
    for real, cert in zip(captured, defaults, strict=True):
        built = _element(certs.certificate_wire(cert, tl))
        assert _shape_diff(real, built) == []
        _wire_like_capture(real, certs.certificate_wire(cert, tl))
        assert [c.attrib["N"] for c in built.find("Props")] == ["RawData"]  # type: ignore[union-attr]
    assert [c.subject for c in defaults] == [
        f"CN={LAB}",
        "CN=Microsoft Exchange Server Auth Certificate",
        f"CN=WMSvc-SHA2-{LAB}",
    ]
    *setup, mail, old = certs.server_certificates(scenario, scenario.servers[1], tl)  # listed ones come after setup's
    assert [c.subject for c in setup] == [
        "CN=EX02",
        "CN=Microsoft Exchange Server Auth Certificate",
        "CN=WMSvc-SHA2-EX02",
    ]
    value = Serializer().deserialize(write_clixml(certs.certificate_wire(mail, tl)).decode())
    der = value.adapted_properties["RawData"]
    parsed = x509.load_der_x509_certificate(der)
    assert hashlib.sha1(der, usedforsecurity=False).hexdigest().upper() == mail.thumbprint
    assert isinstance(parsed.public_key(), ec.EllipticCurvePublicKey)
    assert parsed.subject.rfc4514_string() == "CN=mail.exlab.dom"
    assert parsed.issuer.rfc4514_string() == "CN=First Organization Issuing CA"
    assert parsed.not_valid_after_utc == dt.datetime.fromtimestamp(int(START + 12 * 86400), dt.UTC)
    assert parsed.not_valid_before_utc == dt.datetime.fromtimestamp(int(START - 365 * 86400), dt.UTC)
    sans = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert sans == ["mail.exlab.dom", "autodiscover.exlab.dom"]
    text = str(value)
    assert text.startswith("[Subject]\r\n  CN=mail.exlab.dom\r\n\r\n[Issuer]\r\n  CN=First Organization Issuing CA\r\n")
    assert text.endswith(f"[Thumbprint]\r\n  {mail.thumbprint}\r\n")
    assert f"[Serial Number]\r\n  {parsed.serial_number:032X}\r\n" in text
    model = flatten(
        Serializer().deserialize(
            write_clixml(certs.certificate_model(scenario.servers[1], mail, tl), UNLIMITED).decode()
        )
    )
    assert model["Services"] == "IIS, SMTP" and model["Status"] == "Valid" and model["IsSelfSigned"] is False
    assert model["ServicesStringForm"] == "...WS.." and model["CertificateDomains"] == [
        "mail.exlab.dom",
        "autodiscover.exlab.dom",
    ]
    assert model["NotAfter"] == dt.datetime.fromtimestamp(int(START + 12 * 86400), tl.tz).isoformat()
    expired = flatten(
        Serializer().deserialize(
            write_clixml(certs.certificate_model(scenario.servers[1], old, tl), UNLIMITED).decode()
        )
    )
    assert expired["Status"] == "DateInvalid" and expired["Issuer"] == "CN=old.exlab.dom"
    default_model = flatten(
        Serializer().deserialize(
            write_clixml(certs.certificate_model(scenario.servers[0], defaults[0], tl), UNLIMITED).decode()
        )
    )
    assert default_model["Services"] == "IMAP, POP, IIS, SMTP" and default_model["ServicesStringForm"] == "IP.WS.."
    # cached per (organisation, server, spec, start): the same DER every time
    assert certs.server_certificates(scenario, scenario.servers[1], tl)[3].der == mail.der
    only = Scenario.from_dict({"servers": [{"name": "EX01", "default_certificates": False}]})
    assert only.servers[0].effective_certificates == ()
    assert base64.b64decode(captured[0].findtext("Props/BA[@N='RawData']") or "")[:2] == der[:2]  # both DER SEQUENCEs


# ---------------------------------------------------------------------------------------------
# Inferred shapes: Get-MailboxDatabaseCopyStatus, Get-ADPermission
# ---------------------------------------------------------------------------------------------
def test_database_copy_status_shape() -> None:
    scenario = _org(
        databases=[
            {
                "name": "DB1",
                "copies": [{"server": LAB}, {"server": "EX02", "copy_queue_length": 3, "replay_queue_length": 1}],
            }
        ]
    )
    tl = _timeline(scenario)
    db = scenario.effective_databases[0]
    active, passive = (_element(oh.database_copy_status(db, c, tl)) for c in db.copies)
    assert [t.text for t in active.find("TN")] == oh.COPY_STATUS_TYPE_NAMES  # type: ignore[union-attr]
    assert (
        active.find("Props/I64[@N='CopyQueueLength']") is not None
        and active.find("Props/I64[@N='LastLogGenerated']") is not None
    )
    status = passive.find("Props/Obj[@N='Status']")
    assert status is not None and [t.text for t in status.find("TN")][1:] == [
        "System.Enum",
        "System.ValueType",
        "System.Object",
    ]  # type: ignore[union-attr]
    a, p = _texts(active), _texts(passive)
    assert (a["Status"], a["ActiveCopy"], a["CopyQueueLength"], a["LastCopiedLogTime"]) == ("Mounted", "True", "0", "")
    assert (p["Status"], p["ActiveCopy"], p["CopyQueueLength"], p["ReplayQueueLength"]) == (
        "Healthy",
        "False",
        "3",
        "1",
    )
    assert (
        p["Identity"] == "DB1\\EX02" and p["ActiveDatabaseCopy"] == LAB.lower() and p["ContentIndexState"] == "Healthy"
    )
    assert int(p["LastLogGenerated"]) - int(p["LastLogCopied"]) == 3
    assert passive.find("Props/DT[@N='LastCopiedLogTime']") is not None
    default = [(d.name, [(c.server, c.status) for c in d.copies]) for d in _org().effective_databases]
    assert default == [(f"DB-{LAB}", [(LAB, "Mounted")]), ("DB-EX02", [("EX02", "Mounted")])]


def test_ad_permission_shape() -> None:
    scenario = _org()
    server = scenario.servers[0]
    spec = server.effective_receive_connectors[2]  # Default Frontend: AnonymousUsers
    identity = oc.receive_connector_id(scenario, server, spec)
    entries = oc.connector_permissions(spec)
    assert {p for p, _ in entries} == {oc.ANONYMOUS_LOGON} and oc.ACCEPT_ANY_RECIPIENT not in {r for _, r in entries}
    el = _element(oc.ad_permission(identity, *entries[0]))
    assert el.findtext("TN/T") == "Microsoft.Exchange.Management.RecipientTasks.ADAcePresentationObject"
    names = [c.attrib["N"] for c in el.find("Props")]  # type: ignore[union-attr]
    assert names[:8] == [
        "AccessRights",
        "ExtendedRights",
        "ChildObjectTypes",
        "InheritedObjectType",
        "Properties",
        "Deny",
        "InheritanceType",
        "User",
    ]
    flat = flatten(Serializer().deserialize(ET.tostring(el, encoding="unicode")))
    assert flat["User"] == "NT AUTHORITY\\ANONYMOUS LOGON" and flat["ExtendedRights"] == ["ms-Exch-SMTP-Submit"]
    assert flat["AccessRights"] == ["ExtendedRight"] and flat["Identity"] == f"{LAB}\\Default Frontend {LAB}"
    assert flat["Deny"] is False and flat["InheritanceType"] == "None"
    rights = el.find("Props/Obj[@N='ExtendedRights']")
    assert rights is not None and decode_mvp(ET.tostring(rights.find("LST"), encoding="unicode")) == [
        "ms-Exch-SMTP-Submit"
    ]  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Writer fidelity, scenario validation, cost of defaults
# ---------------------------------------------------------------------------------------------
def test_fast_writer_matches_psrpcore_for_the_new_objects() -> None:
    scenario = _org(send_connectors=[{"name": "S", "smart_hosts": ["relay.example", "10.0.0.5"]}])
    tl = _timeline(scenario)
    server = scenario.servers[0]
    cert = certs.server_certificates(scenario, server, tl)[0]
    built = [
        oc.send_connector(scenario, scenario.effective_send_connectors[0], tl),
        oc.receive_connector(scenario, server, server.effective_receive_connectors[2], tl),
        oc.accepted_domain(scenario, scenario.effective_accepted_domains[0], tl),
        oh.server_component_state(scenario, server, oh.component_states(server)[0], tl),
        oh.database_copy_status(scenario.effective_databases[0], scenario.effective_databases[0].copies[0], tl),
        oh.services_status("Mailbox Server Role", ("MSExchangeIS",)),
        certs.certificate_wire(cert, tl),
        certs.certificate_model(server, cert, tl),
    ]

    def canonical(text: str) -> str:
        # psrpcore writes CR/LF in a ToString raw; PowerShell (and the fast writer) escape them.
        text = text.replace("<ToString />", "").replace("_x000D_", "\r").replace("_x000A_", "\n")
        return ET.canonicalize(ET.tostring(_inlined(ET.fromstring(text)), encoding="unicode"))

    for obj in built:
        whole = write_clixml(obj, UNLIMITED).decode()
        assert canonical(whole) == canonical(ET.tostring(to_element(obj), encoding="unicode"))


def _inlined(root: ET.Element) -> ET.Element:
    """``root`` with every ``<Ref>``/``<TNRef>`` replaced by what it names and RefIds dropped.

    psrpcore refers back to an enum member it wrote before (one Python object); PowerShell boxes an
    enum afresh at each use and writes it again, as the fast writer does. Compared this way, both
    say the same thing.
    """
    objects = {el.attrib["RefId"]: el for el in root.iter("Obj") if "RefId" in el.attrib}
    names = {el.attrib["RefId"]: el for el in root.iter("TN") if "RefId" in el.attrib}

    def copy(el: ET.Element) -> ET.Element:
        if el.tag == "Ref":
            out = copy(objects[el.attrib["RefId"]])
            out.attrib.pop("N", None)
            out.attrib.update({"N": el.attrib["N"]} if "N" in el.attrib else {})
            return out
        if el.tag == "TNRef":
            return copy(names[el.attrib["RefId"]])
        out = ET.Element(el.tag, {k: v for k, v in el.attrib.items() if k != "RefId"})
        out.text = el.text
        out.extend(copy(child) for child in el)
        return out

    return copy(root)


def test_scenario_validation_of_the_new_keys() -> None:
    def bad(match: str, **extra: object) -> None:
        data: dict[str, object] = {"servers": [{"name": "EX01"}]}
        data.update(extra)
        with pytest.raises(ScenarioError, match=match):
            Scenario.from_dict(data)

    bad(
        r"remote_ip_ranges",
        servers=[{"name": "EX01", "receive_connectors": [{"name": "X", "remote_ip_ranges": ["10.0.0.0/99"]}]}],
    )
    bad(
        r"permission_groups",
        servers=[{"name": "EX01", "receive_connectors": [{"name": "X", "permission_groups": ["Everyone"]}]}],
    )
    bad(
        r"receive_connectors\[0\]: unknown key",
        servers=[{"name": "EX01", "receive_connectors": [{"name": "X", "port": 25}]}],
    )
    bad(
        r"source_transport_servers: unknown server EX09",
        send_connectors=[{"name": "S", "source_transport_servers": ["EX09"]}],
    )
    bad(r"tls_auth_level", send_connectors=[{"name": "S", "tls_auth_level": "Strict"}])
    bad(
        r"only one domain",
        accepted_domains=[{"domain": "a.example", "default": True}, {"domain": "b.example", "default": True}],
    )
    bad(r"copies\[0\].status", databases=[{"name": "DB1", "copies": [{"server": "EX01", "status": "Happy"}]}])
    bad(
        r"certificates\[0\].services",
        servers=[{"name": "EX01", "certificates": [{"subject": "CN=x", "services": ["HTTP"]}]}],
    )
    bad(r"service_health.Mailbox", servers=[{"name": "EX01", "service_health": {"Mailbox": {"not_running": ["X"]}}}])
    bad(r"rbac: unknown key", rbac={"hidden": ["Get-ADPermission"]})
    scenario = Scenario.from_dict(
        {
            "servers": [{"name": "EX01", "default_receive_connectors": False}],
            "rbac": {"hidden_cmdlets": ["Get-ADPermission"]},
        }
    )
    assert scenario.servers[0].effective_receive_connectors == () and scenario.hidden_cmdlets == {"get-adpermission"}


def test_defaults_cost_nothing_for_a_large_organisation() -> None:
    big = build_scenario(50, 25)
    server = big.servers[-1]
    assert server.receive_connectors is None and server.certificates is None and big.send_connectors is None
    assert [s.name for s in server.effective_receive_connectors][2] == f"Default Frontend {server.name}"
    assert len(big.effective_databases) == 50 and big.effective_send_connectors[0].source_transport_servers is None
