"""exporter.exchange.clixml on real Exchange 2019 CLIXML captures and on synthetic odd input."""

from __future__ import annotations

import datetime as dt
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pypsrp.complex_objects import GenericComplexObject
from pypsrp.serializer import Serializer

from exporter.exchange.clixml import (
    ALLOWED_SERVICES,
    AUTH_MECHANISMS,
    PERMISSION_GROUPS,
    SERVER_ROLES,
    as_bool,
    as_float,
    as_int,
    decode_mvp,
    decode_mvp_objects,
    flatten,
    is_mvp,
    load_clixml,
    parse_byte_quantified,
    parse_datetime,
    parse_flags,
    parse_timespan,
    to_python,
    type_names,
)
from tests.fixtures.captures import CAPTURES

NS = "http://schemas.microsoft.com/powershell/2004/04"


def _capture(relative: str) -> Path:
    return CAPTURES / relative


def _load(relative: str) -> list[Any]:
    return load_clixml(_capture(relative).read_bytes())


def _naive_load(relative: str) -> list[Any]:
    """What the brief describes: one pypsrp Serializer per file, namespace stripped, per <Obj>."""
    root = ET.fromstring(_capture(relative).read_text(encoding="utf-8-sig"))
    for el in root.iter():
        el.tag = el.tag.replace("{" + NS + "}", "")
    ser = Serializer()
    return [ser.deserialize(ET.tostring(child, encoding="unicode"), clear=False) for child in root]


def _by_name(objs: list[Any]) -> dict[str, dict[str, Any]]:
    return {flatten(o)["Name"]: flatten(o) for o in objs}


# ------------------------------------------------------------------ real captures: receive connectors

RECEIVE = "E19/GetReceiveConnector.xml"
ALL_AUTH = frozenset({"Tls", "Integrated", "BasicAuth", "BasicAuthRequireTLS", "ExchangeServer"})


@pytest.mark.parametrize(
    ("name", "port", "role", "groups", "auth"),
    [
        (
            "Default Frontend WIN-CTD3L0RGEN4",
            25,
            "FrontendTransport",
            {"AnonymousUsers", "ExchangeServers", "ExchangeLegacyServers"},
            ALL_AUTH,
        ),
        ("Outbound Proxy Frontend WIN-CTD3L0RGEN4", 717, "FrontendTransport", {"ExchangeServers"}, ALL_AUTH),
        (
            "Client Frontend WIN-CTD3L0RGEN4",
            587,
            "FrontendTransport",
            {"ExchangeUsers"},
            {"Tls", "Integrated", "BasicAuth", "BasicAuthRequireTLS"},
        ),
        (
            "Default WIN-CTD3L0RGEN4",
            2525,
            "HubTransport",
            {"ExchangeUsers", "ExchangeServers", "ExchangeLegacyServers"},
            ALL_AUTH,
        ),
        ("Client Proxy WIN-CTD3L0RGEN4", 465, "HubTransport", {"ExchangeUsers", "ExchangeServers"}, ALL_AUTH),
    ],
)
def test_receive_connectors(name: str, port: int, role: str, groups: set[str], auth: set[str]) -> None:
    conn = _by_name(_load(RECEIVE))[name]
    assert conn["Identity"] == f"WIN-CTD3L0RGEN4\\{name}"
    assert sorted(conn["Bindings"]) == sorted([f"[::]:{port}", f"0.0.0.0:{port}"])
    assert conn["RemoteIPRanges"] == ["::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "0.0.0.0-255.255.255.255"]
    assert parse_flags(conn["PermissionGroups"], PERMISSION_GROUPS) == groups
    assert parse_flags(conn["AuthMechanism"], AUTH_MECHANISMS) == auth
    assert conn["TransportRole"] == role
    assert parse_flags(conn["TransportRole"], SERVER_ROLES) == {role}
    assert conn["Enabled"] is True
    assert conn["RequireTLS"] is False
    assert parse_byte_quantified(conn["MaxMessageSize"]) == 37_748_736
    assert parse_byte_quantified(conn["MaxHeaderSize"]) == 262_144
    assert conn["Fqdn"] == "WIN-CTD3L0RGEN4.exlab.dom"
    assert parse_timespan(conn["ConnectionTimeout"]) == 600.0
    assert parse_timespan(conn["ConnectionInactivityTimeout"]) == 300.0
    expected_tarpit = 0.0 if name.startswith("Outbound Proxy") else 5.0  # as captured
    assert parse_timespan(conn["TarpitInterval"]) == expected_tarpit
    assert conn["Guid"] == str(uuid.UUID(conn["Guid"]))
    assert parse_datetime(conn["WhenChangedUTC"]) == parse_datetime(conn["WhenChanged"])


def test_receive_connector_details() -> None:
    conns = _by_name(_load(RECEIVE))
    frontend = conns["Default Frontend WIN-CTD3L0RGEN4"]
    assert frontend["TlsCertificateName"] == "<I>CN=WIN-CTD3L0RGEN4<S>CN=WIN-CTD3L0RGEN4"
    assert frontend["DomainSecureEnabled"] is True
    assert frontend["MessageRateLimit"] == "Unlimited"
    assert as_int(frontend["MessageRateLimit"], default=-1) == -1
    assert frontend["ObjectClass"] == ["top", "msExchSmtpReceiveConnector"]
    assert frontend["TlsDomainCapabilities"] == ["fabrikam.com:AcceptCloudServicesMail"]
    assert conns["Default WIN-CTD3L0RGEN4"]["TlsDomainCapabilities"] == []
    assert frontend["Server"] == "WIN-CTD3L0RGEN4"
    default = conns["Default WIN-CTD3L0RGEN4"]
    assert default["SizeEnabled"] == "EnabledWithoutValue"
    assert default["MaxLocalHopCount"] == 5
    assert default["Bindings"] == ["0.0.0.0:2525", "[::]:2525"]  # wire order is kept
    client = conns["Client Frontend WIN-CTD3L0RGEN4"]
    assert as_int(client["MaxProtocolErrors"]) == 5
    # the raw pypsrp shapes the flattening relies on
    obj = next(o for o in _load(RECEIVE) if o.adapted_properties["Name"] == "Default Frontend WIN-CTD3L0RGEN4")
    groups = obj.adapted_properties["PermissionGroups"]
    assert isinstance(groups, GenericComplexObject)
    assert groups.to_string == "AnonymousUsers, ExchangeServers, ExchangeLegacyServers"
    assert groups.property_sets == [13]
    assert parse_flags(groups, PERMISSION_GROUPS) == parse_flags(13, PERMISSION_GROUPS)
    assert is_mvp(obj.adapted_properties["Bindings"])
    assert obj.adapted_properties["Bindings"].property_sets[0].lstrip().startswith("<LST>")
    assert not is_mvp(groups)


def test_receive_connector_variant_without_certificate() -> None:
    conns = _by_name(_load("connectors/GetReceiveConnectorEmptyTlsCertificateName.xml"))
    assert conns["Default Frontend WIN-CTD3L0RGEN4"]["TlsCertificateName"] is None
    assert conns["Default Frontend WIN-CTD3L0RGEN4"]["Bindings"] == ["[::]:25", "0.0.0.0:25"]


def test_type_names_and_extended_properties() -> None:
    obj = _load(RECEIVE)[0]
    names = type_names(obj)
    assert names[0] == "Microsoft.Exchange.Data.Directory.SystemConfiguration.ReceiveConnector"
    assert names[-1] == "System.Object"
    props = flatten(obj)
    assert isinstance(props["SerializationData"], bytes)  # from <MS>, kept as bytes
    assert props["PSComputerName"]  # added by the PowerShell client that made the capture
    assert uuid.UUID(props["RunspaceId"])


def test_naive_per_object_deserialization_matches_loader() -> None:
    """One Serializer per file works for the receive connectors and gives the same objects."""
    naive = [flatten(o) for o in _naive_load(RECEIVE)]
    ours = [flatten(o) for o in _load(RECEIVE)]
    assert naive == ours


# ------------------------------------------------------------------ send connectors


def test_send_connector() -> None:
    # pypsrp alone raises KeyError on this capture (a <Ref> outside SmartHosts' <LST> points inside
    # it); load_clixml works around that.
    (conn,) = [flatten(o) for o in _load("E19/GetSendConnector.xml")]
    assert conn["Name"] == "Mail to O365"
    assert conn["AddressSpaces"] == ["SMTP:*;1"]
    assert conn["SmartHosts"] == ["microsoft-com.mail.protection.outlook.com"]
    assert conn["SourceTransportServers"] == ["WIN-CTD3L0RGEN4"]
    assert conn["SourceIPAddress"] == "0.0.0.0"
    assert conn["DNSRoutingEnabled"] is False
    assert conn["CloudServicesMailEnabled"] is True
    assert conn["TlsAuthLevel"] is None
    assert conn["Port"] == 25
    assert conn["Enabled"] is True
    assert conn["ConnectedDomains"] == []
    assert parse_byte_quantified(conn["MaxMessageSize"]) == 36_700_160
    assert parse_timespan(conn["ConnectionInactivityTimeOut"]) == 600.0
    assert conn["ErrorPolicies"] == "Default"


def test_send_connector_relay_to_m365() -> None:
    (conn,) = [flatten(o) for o in _load("connectors/GetSendConnectorConfiguredToRelayToM365.xml")]
    assert conn["AddressSpaces"] == ["smtp:*;1"]
    assert conn["SmartHosts"] == ["ThisTenantDoesntExists-com.mail.protection.outlook.com"]
    assert conn["TlsAuthLevel"] == "CertificateValidation"
    assert conn["RequireTLS"] is True
    assert conn["Fqdn"] == "mail.contoso.com"


# ------------------------------------------------------------------ servers, domains, health


def test_exchange_server() -> None:
    (server,) = [flatten(o) for o in _load("E19/GetExchangeServer.xml")]
    assert server["Name"] == "SOLO-E19A"
    assert server["Fqdn"] == "Solo-E19A.Solo.com"
    assert server["AdminDisplayVersion"] == "Version 15.2 (Build 986.5)"
    assert server["ServerRole"] == "Mailbox"
    assert parse_flags(server["ServerRole"], SERVER_ROLES) == {"Mailbox"}
    assert server["IsHubTransportServer"] is True
    assert server["IsEdgeServer"] is False
    assert server["Site"] == "Solo.com/Configuration/Sites/Default-First-Site-Name"
    assert server["Edition"] == "StandardEvaluation"
    assert server["CurrentDomainControllers"] == ["Solo-DC1.Solo.com"]
    assert "ncacn_ip_tcp:Solo-E19A.Solo.com" in server["NetworkAddress"]
    assert parse_timespan(server["RemainingTrialPeriod"]) == 0.0
    assert parse_datetime(server["WhenCreated"]) == dt.datetime(2019, 12, 3, 22, 44, 44, tzinfo=dt.UTC)


def test_exchange_server_version_props_are_reachable() -> None:
    (obj,) = _load("E19/GetExchangeServer.xml")
    version = obj.adapted_properties["AdminDisplayVersion"]
    assert str(version) == "Version 15.2 (Build 986.5)"
    assert {k: version.adapted_properties[k] for k in ("Major", "Minor", "Build", "Revision")} == {
        "Major": 15,
        "Minor": 2,
        "Build": 986,
        "Revision": 5,
    }


@pytest.mark.parametrize(
    ("capture", "expected"),
    [
        (
            "E19/GetAcceptedDomain.xml",
            [
                ("Solo.com", "Authoritative", True, True),
                ("*.contoso.local", "Authoritative", False, True),
                ("*.com", "InternalRelay", False, False),
            ],
        ),
        (
            "E19/GetAcceptedDomain_Bad.xml",
            [
                ("Solo.com", "Authoritative", True, True),
                ("*.contoso.local", "Authoritative", False, True),
                ("*.com", "InternalRelay", False, False),
                ("*", "ExternalRelay", False, False),
            ],
        ),
    ],
)
def test_accepted_domains(capture: str, expected: list[tuple[str, str, bool, bool]]) -> None:
    got = [
        (d["DomainName"], d["DomainType"], d["Default"], d["AddressBookEnabled"])
        for d in (flatten(o) for o in _load(capture))
    ]
    assert got == expected


def test_service_health() -> None:
    roles = {d["Role"]: d for d in (flatten(o) for o in _load("E19/TestServiceHealth.xml"))}
    assert set(roles) == {"Mailbox Server Role", "Client Access Server Role", "Hub Transport Server Role"}
    hub = roles["Hub Transport Server Role"]
    assert hub["RequiredServicesRunning"] is True
    assert hub["ServicesRunning"] == [
        "IISAdmin",
        "MSExchangeADTopology",
        "MSExchangeEdgeSync",
        "MSExchangeServiceHost",
        "MSExchangeTransport",
        "MSExchangeTransportLogSearch",
        "W3Svc",
        "WinRM",
    ]
    assert hub["ServicesNotRunning"] == []
    assert len(roles["Mailbox Server Role"]["ServicesRunning"]) == 13
    assert hub["Identity"] is None


def test_server_component_state_requester_details() -> None:
    objs = _load("E19/GetServerComponentState.xml")
    assert len(objs) == 34
    states = {flatten(o)["Component"]: flatten(o) for o in objs}
    assert states["HubTransport"]["State"] == "Active"
    assert states["ForwardSyncDaemon"]["State"] == "Inactive"
    swo = states["ServerWideOffline"]
    assert swo["LocalStates"] == ["Requestor:Functional; State:Active; Timestamp:9/28/2021 5:32:01 PM"]
    raw = next(o for o in objs if o.adapted_properties["Component"] == "ServerWideOffline")
    (detail,) = [flatten(x) for x in decode_mvp_objects(raw.adapted_properties["LocalStates"])]
    assert detail["Requester"] == "Functional"
    assert detail["State"] == "Active"
    assert parse_datetime(detail["Timestamp"]) == dt.datetime(2021, 9, 28, 17, 32, 1, 927194, tzinfo=dt.UTC)


def test_certificate_carries_raw_data_only() -> None:
    certs = [flatten(o) for o in _load("E19/GetExchangeCertificate.xml")]
    assert len(certs) == 3
    for cert in certs:
        assert isinstance(cert["RawData"], bytes)
        assert cert["RawData"][:1] == b"\x30"  # DER SEQUENCE
        assert "Thumbprint" not in cert


def test_pscustomobject_nested_values_are_extended_properties() -> None:
    (info,) = _load("E19/GetExchangeServerADInformation.xml")
    assert type_names(info) == ["System.Management.Automation.PSCustomObject", "System.Object"]
    assert info.adapted_properties == {}
    flat = flatten(info)
    computer = flat["ComputerObject"]
    assert isinstance(computer, dict)
    assert any("Exchange Servers" in dn for dn in computer["MemberOf"])
    assert isinstance(flat["GroupMembership"], list)


@pytest.mark.parametrize(
    "capture",
    sorted(p.relative_to(CAPTURES).as_posix() for p in CAPTURES.rglob("*.xml")),
)
def test_every_capture_flattens(capture: str) -> None:
    objs = _load(capture)
    assert objs
    for obj in objs:
        flat = flatten(obj)
        assert flat
        for value in flat.values():
            _assert_plain(value)


def _assert_plain(value: Any) -> None:
    if isinstance(value, list | tuple):
        for v in value:
            _assert_plain(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str)
            _assert_plain(v)
    else:
        assert value is None or isinstance(value, str | int | float | bool | bytes), repr(value)


# ------------------------------------------------------------------ synthetic objects


def _gco(
    to_string: str | None = None,
    types: list[str] | None = None,
    adapted: dict[str, Any] | None = None,
    extended: dict[str, Any] | None = None,
    sets: list[Any] | None = None,
) -> GenericComplexObject:
    obj = GenericComplexObject()
    obj.to_string = to_string
    obj.types = types or []
    obj.adapted_properties = adapted or {}
    obj.extended_properties = extended or {}
    obj.property_sets = sets or []
    return obj


def test_to_python_shapes() -> None:
    enum = _gco("Retry", ["Microsoft.Exchange.Data.QueueViewer.QueueStatus", "System.Enum"], sets=[3])
    assert to_python(enum) == "Retry"
    assert to_python(_gco(None, ["X.Enum", "System.Enum"], sets=[3])) == 3  # enum without ToString
    assert to_python(_gco("36 MB (37,748,736 bytes)", ["Microsoft.Exchange.Data.ByteQuantifiedSize"])) == (
        "36 MB (37,748,736 bytes)"
    )
    assert to_python(uuid.UUID(int=0)) == "00000000-0000-0000-0000-000000000000"
    assert to_python(b"\x00") == b"\x00"
    assert to_python(None) is None
    assert to_python([1, "a", enum]) == [1, "a", "Retry"]
    kvp = _gco(
        "[E2ELatency, 0.701]",
        ["System.Collections.Generic.KeyValuePair`2[[System.String],[System.Object]]"],
        adapted={"Key": "E2ELatency", "Value": "0.701"},
    )
    assert to_python(kvp) == ("E2ELatency", "0.701")
    assert dict(to_python([kvp])) == {"E2ELatency": "0.701"}
    assert to_python({"a": enum}) == {"a": "Retry"}
    nested = _gco(None, ["System.Management.Automation.PSCustomObject"], extended={"X": 1, "Y": enum})
    assert to_python(nested) == {"X": 1, "Y": "Retry"}
    assert to_python(_gco("")) == ""  # OrganizationId has an empty ToString


def test_flatten_adapted_wins_and_custom_objects() -> None:
    obj = _gco("x", adapted={"Name": "adapted", "A": 1}, extended={"Name": "extended", "B": 2})
    assert flatten(obj) == {"Name": "adapted", "A": 1, "B": 2}
    custom = _gco(None, ["System.Management.Automation.PSCustomObject", "System.Object"], extended={"Q": "v"})
    assert flatten(custom) == {"Q": "v"}
    assert flatten(None) == {}
    assert flatten("text") == {}
    assert flatten({"k": uuid.UUID(int=1)}) == {"k": str(uuid.UUID(int=1))}


def test_decode_mvp_variants() -> None:
    xml = (
        "<LST><S>a_x000A_b</S><Obj RefId='9'><TN RefId='1'><T>IPRange</T></TN><ToString>10.0.0.0/8</ToString>"
        "</Obj><Ref RefId='9'/><Nil/><I32>5</I32><B>true</B><Ref RefId='404'/></LST>"
    )
    assert decode_mvp(xml) == ["a\nb", "10.0.0.0/8", "10.0.0.0/8", "5", "True"]
    assert decode_mvp("<IE><S>x</S></IE>") == ["x"]
    assert decode_mvp("<LST />\n   ") == []
    assert decode_mvp(f'<LST xmlns="{NS}"><S>ns</S></LST>') == ["ns"]
    assert decode_mvp("<ns0:LST><ns0:S>prefixed</ns0:S></ns0:LST>") == ["prefixed"]
    assert decode_mvp("<Obj><LST><S>wrapped</S></LST></Obj>") == ["wrapped"]
    assert decode_mvp("<S>x</S>") == []
    assert decode_mvp("<LST><S>broken") == []
    assert decode_mvp("") == []
    assert decode_mvp(None) == []  # type: ignore[arg-type]
    assert decode_mvp("<LST><S>_xD83D__xDE00_</S></LST>") == ["\U0001f600"]  # surrogate pair
    mvp = _gco(None, ["Microsoft.Exchange.Data.MultiValuedProperty`1"], sets=["<LST><S>v</S></LST>"])
    assert is_mvp(mvp)
    assert to_python(mvp) == ["v"]
    assert decode_mvp_objects("not xml") == []
    assert [
        to_python(o)
        for o in decode_mvp_objects("<LST><S>s</S><Obj RefId='1'><TNRef RefId='77'/><ToString>t</ToString></Obj></LST>")
    ] == ["s", "t"]


def test_type_names_strips_deserialized_prefix() -> None:
    obj = _gco("x", ["Deserialized.Microsoft.Exchange.Data.Fqdn", "Deserialized.System.Object"])
    assert type_names(obj) == ["Microsoft.Exchange.Data.Fqdn", "System.Object"]
    assert type_names("plain") == []
    assert type_names(None) == []


# ------------------------------------------------------------------ flags


def test_parse_flags() -> None:
    assert parse_flags("AnonymousUsers, ExchangeServers", PERMISSION_GROUPS) == {
        "AnonymousUsers",
        "ExchangeServers",
    }
    assert parse_flags(13, PERMISSION_GROUPS) == {
        "AnonymousUsers",
        "ExchangeServers",
        "ExchangeLegacyServers",
    }
    assert parse_flags("13", PERMISSION_GROUPS) == parse_flags(13, PERMISSION_GROUPS)
    assert parse_flags(31, AUTH_MECHANISMS) == ALL_AUTH
    assert parse_flags(15, AUTH_MECHANISMS) == {"Tls", "Integrated", "BasicAuth", "BasicAuthRequireTLS"}
    assert parse_flags(36, AUTH_MECHANISMS) == {"BasicAuth", "ExternalAuthoritative"}
    assert parse_flags(None, PERMISSION_GROUPS) == frozenset()
    assert parse_flags("None", PERMISSION_GROUPS) == frozenset()
    assert parse_flags(0, PERMISSION_GROUPS) == frozenset()
    assert parse_flags("", PERMISSION_GROUPS) == frozenset()
    assert parse_flags("anonymoususers , exchangeSERVERS", PERMISSION_GROUPS) == {
        "AnonymousUsers",
        "ExchangeServers",
    }
    assert parse_flags("ExchangeUsers, FutureGroup", PERMISSION_GROUPS) == {"ExchangeUsers", "FutureGroup"}
    assert parse_flags(1 | 128, PERMISSION_GROUPS) == {"AnonymousUsers"}  # unknown bits ignored
    assert parse_flags(["Tls", "BasicAuth"], AUTH_MECHANISMS) == {"Tls", "BasicAuth"}
    assert parse_flags(16384, SERVER_ROLES) == {"FrontendTransport"}
    assert parse_flags("Mailbox, ClientAccess", SERVER_ROLES) == {"Mailbox", "ClientAccess"}
    assert "All" in parse_flags(16503, SERVER_ROLES)
    assert parse_flags("IMAP, POP, IIS, SMTP", ALLOWED_SERVICES) == {"IMAP", "POP", "IIS", "SMTP"}
    assert parse_flags(24, ALLOWED_SERVICES) == {"IIS", "SMTP"}
    enum = _gco("AnonymousUsers, ExchangeServers", ["Microsoft.Exchange.Data.PermissionGroups"], sets=[5])
    assert parse_flags(enum, PERMISSION_GROUPS) == {"AnonymousUsers", "ExchangeServers"}
    assert isinstance(parse_flags(object(), PERMISSION_GROUPS), frozenset)  # odd input: no exception


def test_flag_maps_match_reference() -> None:
    assert PERMISSION_GROUPS == {
        "None": 0,
        "AnonymousUsers": 1,
        "ExchangeUsers": 2,
        "ExchangeServers": 4,
        "ExchangeLegacyServers": 8,
        "Partners": 16,
        "Custom": 32,
    }
    assert AUTH_MECHANISMS["ExternalAuthoritative"] == 32 and AUTH_MECHANISMS["BasicAuthRequireTLS"] == 8
    assert (SERVER_ROLES["Mailbox"], SERVER_ROLES["HubTransport"], SERVER_ROLES["Edge"]) == (2, 32, 64)
    assert SERVER_ROLES["FrontendTransport"] == 16384
    assert ALLOWED_SERVICES == {
        "None": 0,
        "IMAP": 1,
        "POP": 2,
        "UM": 4,
        "IIS": 8,
        "SMTP": 16,
        "Federation": 32,
        "UMCallRouter": 64,
    }


# ------------------------------------------------------------------ scalar parsers


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:10:00", 600.0),
        ("1.02:03:04", 93784.0),
        ("00:00:00.5320000", 0.532),
        ("-00:00:05", -5.0),
        ("12:30", 45000.0),
        ("7.00:00:00", 604800.0),
        ("PT9.5S", 9.5),
        ("P1DT1H", 90000.0),
        ("-PT1M", -60.0),
        (30, 30.0),
        (1.5, 1.5),
        ("42", 42.0),
        (dt.timedelta(minutes=2), 120.0),
        ("Unlimited", None),
        ("", None),
        (None, None),
        ("garbage", None),
        ("P", None),
        (True, None),
    ],
)
def test_parse_timespan(text: Any, seconds: float | None) -> None:
    got = parse_timespan(text)
    if seconds is None:
        assert got is None
    else:
        assert got == pytest.approx(seconds)


def test_parse_timespan_object() -> None:
    assert parse_timespan(_gco("00:05:00", ["Microsoft.Exchange.Data.EnhancedTimeSpan"])) == 300.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2021-08-21T10:43:54+02:00", dt.datetime(2021, 8, 21, 8, 43, 54, tzinfo=dt.UTC)),
        ("2021-08-21T08:43:54Z", dt.datetime(2021, 8, 21, 8, 43, 54, tzinfo=dt.UTC)),
        ("2021-09-28T17:32:01.9271948Z", dt.datetime(2021, 9, 28, 17, 32, 1, 927194, tzinfo=dt.UTC)),
        ("2021-10-06T19:09:42", dt.datetime(2021, 10, 6, 19, 9, 42, tzinfo=dt.UTC)),  # naive -> UTC
        ("9/28/2021 5:32:01 PM", dt.datetime(2021, 9, 28, 17, 32, 1, tzinfo=dt.UTC)),
        ("13.12.2014 19:06:54", dt.datetime(2014, 12, 13, 19, 6, 54, tzinfo=dt.UTC)),
        ("15-01-21 23:50:05", dt.datetime(2021, 1, 15, 23, 50, 5, tzinfo=dt.UTC)),
        (dt.datetime(2020, 1, 1), dt.datetime(2020, 1, 1, tzinfo=dt.UTC)),
        (0, dt.datetime(1970, 1, 1, tzinfo=dt.UTC)),
        (None, None),
        ("", None),
        ("   ", None),
        ("not a date", None),
        ("2021-13-45T99:99:99Z", None),
    ],
)
def test_parse_datetime(value: Any, expected: dt.datetime | None) -> None:
    got = parse_datetime(value)
    assert got == expected
    if got is not None:
        assert got.tzinfo is not None


def test_parse_datetime_keeps_offset() -> None:
    got = parse_datetime("2021-09-28T10:32:01-07:00")
    assert got is not None
    assert got.utcoffset() == dt.timedelta(hours=-7)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("36 MB (37,748,736 bytes)", 37_748_736),
        ("256 KB (262,144 bytes)", 262_144),
        ("35 MB (36.700.160 bytes)", 36_700_160),  # de-DE grouping
        ("10 MB (10 485 760 bytes)", 10_485_760),
        ("1 B (1 byte)", 1),
        ("Unlimited", None),
        ("unlimited", None),
        (12345, 12345),
        ("12,345", 12345),
        ("36 MB", 36 * 1024**2),
        ("1.5 GB", int(1.5 * 1024**3)),
        ("", None),
        (None, None),
        ("lots", None),
        (float("nan"), None),
        (True, None),
    ],
)
def test_parse_byte_quantified(text: Any, expected: int | None) -> None:
    assert parse_byte_quantified(text) == expected


def test_parse_byte_quantified_object() -> None:
    size = _gco("35 MB (36,700,160 bytes)", ["Microsoft.Exchange.Data.ByteQuantifiedSize"])
    assert parse_byte_quantified(size) == 36_700_160
    unlimited = _gco("Unlimited", ["Microsoft.Exchange.Data.Unlimited`1"], adapted={"IsUnlimited": True})
    assert parse_byte_quantified(unlimited) is None


def test_tolerant_converters() -> None:
    assert as_int("12") == 12
    assert as_int("1,234") == 1234
    assert as_int(" 7 ") == 7
    assert as_int("12.9") == 12
    assert as_int(3.7) == 3
    assert as_int(True) == 1
    assert as_int("True") == 1
    assert as_int(None) == 0
    assert as_int("Unlimited", default=-1) == -1
    assert as_int("x", default=9) == 9
    assert as_int(_gco("5000", ["Microsoft.Exchange.Data.Unlimited`1"])) == 5000
    assert as_float("4.62") == 4.62
    assert as_float("1,234.5") == 1234.5
    assert as_float(2) == 2.0
    assert as_float(None, default=-1.0) == -1.0
    assert as_float("nan") == 0.0
    assert as_float("inf", default=3.0) == 3.0
    assert as_bool(True) is True
    assert as_bool("True") is True
    assert as_bool("$true") is True
    assert as_bool(" yes ") is True
    assert as_bool(1) is True
    assert as_bool("False") is False
    assert as_bool(None) is False
    assert as_bool("garbage") is False
    assert as_bool(0) is False


# ------------------------------------------------------------------ robustness


class _Hostile:
    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")

    @property
    def types(self) -> list[str]:
        raise RuntimeError("boom")


def test_garbage_never_raises() -> None:
    hostile = _Hostile()
    weird = _gco(None, adapted={"a": hostile, "b": [hostile, {1: hostile}]}, sets=[object()])
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    for value in (
        hostile,
        weird,
        object(),
        cyclic,
        ET.Element("SS"),
        {"x": {"y": hostile}},
        1j,
        float("inf"),
    ):
        to_python(value)
        flatten(value)
        type_names(value)
        parse_flags(value, PERMISSION_GROUPS)
        parse_timespan(value)
        parse_datetime(value)
        parse_byte_quantified(value)
        as_int(value)
        as_float(value)
        as_bool(value)
    assert isinstance(flatten(weird), dict)
    with pytest.raises(ValueError):
        load_clixml("<Objs><Obj>")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_text_parsers_never_raise(text: str) -> None:
    parse_timespan(text)
    parse_datetime(text)
    parse_byte_quantified(text)
    assert isinstance(parse_flags(text, AUTH_MECHANISMS), frozenset)
    assert isinstance(decode_mvp(text), list)
    assert isinstance(decode_mvp("<LST>" + text + "</LST>"), list)
    as_int(text)
    as_float(text)
    as_bool(text)
    assert to_python(text) == text


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary() | st.uuids(),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
        max_leaves=20,
    )
)
def test_to_python_never_raises(value: Any) -> None:
    to_python(value)
    flatten(_gco(None, adapted={"v": value}, extended={"v": 1, "w": value}))
