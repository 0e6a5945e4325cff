"""IP range notations, the open-relay rules and expected-state drift."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pypsrp.complex_objects import GenericComplexObject

from exporter.exchange.drift import PRESENT
from exporter.exchange.iprange import (
    PRIVATE_NETWORKS,
    AddressRange,
    merge,
    outside,
    parse_ip_range,
    parse_ip_ranges,
    same_addresses,
    subtract,
)
from exporter.exchange.receive_connectors import ReceiveConnector, receive_drift
from exporter.exchange.relay import REASONS, RelayInputs, anonymous_may_relay, assess, needs_permission_check
from exporter.exchange.send_connectors import SendConnector, send_drift
from exporter.settings import ReceiveConnectorExpectation, SendConnectorExpectation

TRUSTED = parse_ip_ranges(PRIVATE_NETWORKS)
ALL = ["0.0.0.0-255.255.255.255", "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]


@pytest.mark.parametrize(
    ("text", "version", "first", "last"),
    [
        ("192.168.5.10", 4, "192.168.5.10", "192.168.5.10"),
        ("10.0.0.0/8", 4, "10.0.0.0", "10.255.255.255"),
        ("10.1.2.3/24", 4, "10.1.2.0", "10.1.2.255"),  # Exchange keeps host bits; the range is the network
        ("192.168.1.50-192.168.1.1", 4, "192.168.1.1", "192.168.1.50"),
        (" 172.16.0.0(255.240.0.0) ", 4, "172.16.0.0", "172.31.255.255"),
        ("::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 6, "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("2001:db8::/32", 6, "2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"),
        ("fe80::1", 6, "fe80::1", "fe80::1"),
    ],
)
def test_every_exchange_notation(text: str, version: int, first: str, last: str) -> None:
    r = parse_ip_range(text)
    assert (r.version, r.first, r.last) == (version, int(ipaddress.ip_address(first)), int(ipaddress.ip_address(last)))


@pytest.mark.parametrize("text", ["", "10.0.0.0/33", "10.0.0.1-::1", "banana", "10.0.0.0-10.0.0.256"])
def test_bad_ranges_name_the_input(text: str) -> None:
    with pytest.raises(ValueError, match="not an IP range"):
        parse_ip_range(text)


def test_interval_arithmetic() -> None:
    assert outside(parse_ip_ranges(["10.1.2.0/24"]), TRUSTED) == 0
    assert outside(parse_ip_ranges(["10.255.255.250-11.0.0.4"]), TRUSTED) == 5
    assert outside(parse_ip_ranges(ALL), TRUSTED) > 2**127
    assert same_addresses(parse_ip_ranges(["10.0.0.0/24"]), parse_ip_ranges(["10.0.0.0-10.0.0.127", "10.0.0.128/25"]))
    assert not same_addresses(parse_ip_ranges(["10.0.0.0/24"]), parse_ip_ranges(["10.0.0.0/25"]))
    assert merge([AddressRange(4, 5, 9), AddressRange(4, 1, 4), AddressRange(6, 1, 2)]) == [
        AddressRange(4, 1, 9),
        AddressRange(6, 1, 2),
    ]


@given(
    st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), max_size=6),
    st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), max_size=6),
)
def test_subtract_agrees_with_a_set_model_on_small_spaces(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> None:
    # Map into a 64-address space so a Python set is a faithful model.
    ranges = [AddressRange(4, min(x, y) % 64, max(x, y) % 64) for x, y in a if min(x, y) % 64 <= max(x, y) % 64]
    cuts = [AddressRange(4, min(x, y) % 64, max(x, y) % 64) for x, y in b if min(x, y) % 64 <= max(x, y) % 64]
    model = {i for r in ranges for i in range(r.first, r.last + 1)} - {
        i for c in cuts for i in range(c.first, c.last + 1)
    }
    got = subtract(ranges, cuts)
    assert {i for r in got for i in range(r.first, r.last + 1)} == model
    assert outside(ranges, cuts) == len(model)


def conn(
    groups: set[str], auth: set[str], ranges: list[str], *, enabled: bool = True, tls: bool = False
) -> RelayInputs:
    return RelayInputs(enabled, tuple(parse_ip_ranges(ranges)), frozenset(groups), frozenset(auth), tls)


DEFAULT_AUTH = {"Tls", "Integrated", "BasicAuth", "BasicAuthRequireTLS", "ExchangeServer"}


def flagged(risks: dict[str, bool] | object) -> set[str]:
    assert isinstance(risks, dict)
    return {r for r, v in risks.items() if v}


def test_externally_secured_wide_range_is_a_relay_but_not_when_scoped() -> None:
    wide = conn({"ExchangeServers"}, {"ExternalAuthoritative"}, ["0.0.0.0-255.255.255.255"])
    assert flagged(assess(wide, TRUSTED, None)) == {"externally_secured"}
    scoped = conn({"ExchangeServers"}, {"ExternalAuthoritative"}, ["192.168.5.10", "192.168.5.11"])
    assert flagged(assess(scoped, TRUSTED, None)) == set()
    public_host = conn({"ExchangeServers"}, {"ExternalAuthoritative"}, ["203.0.113.7"])
    assert flagged(assess(public_host, TRUSTED, None)) == {"externally_secured"}
    assert flagged(assess(public_host, [*TRUSTED, parse_ip_range("203.0.113.0/24")], None)) == set()


def test_anonymous_route_depends_on_the_ad_permission() -> None:
    anon = conn({"AnonymousUsers"}, {"Tls"}, ALL)
    assert needs_permission_check(anon, TRUSTED)
    assert flagged(assess(anon, TRUSTED, True)) == {"anonymous_relay"}
    assert flagged(assess(anon, TRUSTED, False)) == set()
    assert flagged(assess(anon, TRUSTED, None)) == {"anonymous_relay_unverified"}
    internal_app_relay = conn({"AnonymousUsers"}, {"Tls"}, ["10.20.30.0/24"])
    assert not needs_permission_check(internal_app_relay, TRUSTED)
    assert flagged(assess(internal_app_relay, TRUSTED, None)) == set()
    custom = conn({"Custom"}, set(), ALL)
    assert needs_permission_check(custom, TRUSTED)


def test_exchange_users_without_tls() -> None:
    assert (
        flagged(assess(conn({"ExchangeUsers"}, {"Tls", "BasicAuth", "BasicAuthRequireTLS"}, ALL), TRUSTED, None))
        == set()
    )
    assert flagged(assess(conn({"ExchangeUsers"}, {"Tls", "BasicAuth"}, ALL), TRUSTED, None)) == {
        "exchange_users_cleartext"
    }
    assert flagged(assess(conn({"ExchangeUsers"}, {"Integrated"}, ALL), TRUSTED, None)) == {"exchange_users_cleartext"}
    assert flagged(assess(conn({"ExchangeUsers"}, {"Integrated"}, ALL, tls=True), TRUSTED, None)) == set()
    assert flagged(assess(conn({"ExchangeUsers"}, {"BasicAuth"}, ["10.0.0.0/8"]), TRUSTED, None)) == set()


def test_disabled_connectors_carry_no_risk() -> None:
    risks = assess(
        conn({"ExchangeServers", "AnonymousUsers"}, {"ExternalAuthoritative"}, ALL, enabled=False), TRUSTED, True
    )
    assert set(risks) == set(REASONS) and not any(risks.values())


def ace(user: str, right: str, deny: bool = False) -> GenericComplexObject:
    obj = GenericComplexObject()
    obj.adapted_properties = {"User": user, "ExtendedRights": [right], "Deny": deny}
    return obj


def test_anonymous_may_relay_reads_allow_and_deny() -> None:
    anon = "NT AUTHORITY\\ANONYMOUS LOGON"
    standard = [ace(anon, "ms-Exch-SMTP-Submit"), ace(anon, "ms-Exch-SMTP-Accept-Any-Sender")]
    assert not anonymous_may_relay(standard)
    assert anonymous_may_relay([*standard, ace(anon, "ms-Exch-SMTP-Accept-Any-Recipient")])
    assert not anonymous_may_relay(
        [ace(anon, "ms-Exch-SMTP-Accept-Any-Recipient"), ace(anon, "ms-Exch-SMTP-Accept-Any-Recipient", deny=True)]
    )
    # -User filters on the server, so every ACE is the anonymous principal's whatever name a localized
    # domain controller prints: the principal's name is not compared.
    assert anonymous_may_relay([ace("AUTORITE NT\\ANONYMOUS LOGON", "ms-Exch-SMTP-Accept-Any-Recipient")])


def receive(name: str, **kw: object) -> ReceiveConnector:
    base: dict[str, object] = {
        "server": "EX01",
        "name": name,
        "identity": f"EX01\\{name}",
        "enabled": True,
        "transport_role": "FrontendTransport",
        "bindings": ("0.0.0.0:25",),
        "remote_ip_ranges": ("10.20.30.0/24",),
        "ranges": tuple(parse_ip_ranges(["10.20.30.0/24"])),
        "permission_groups": frozenset({"AnonymousUsers"}),
        "auth_mechanism": frozenset({"Tls"}),
        "permission_groups_text": "AnonymousUsers",
        "auth_mechanism_text": "Tls",
        "require_tls": False,
        "fqdn": "",
        "changed": None,
    }
    base.update(kw)
    return ReceiveConnector(**base)  # type: ignore[arg-type]


def test_receive_drift_per_setting_and_missing() -> None:
    relay = receive("App Relay EX01")
    expect = {
        "App Relay*": ReceiveConnectorExpectation(
            enabled=True, remote_ip_ranges=["10.20.30.0-10.20.30.255"], permission_groups=["anonymoususers"]
        ),
        "EX02\\Only On EX02": ReceiveConnectorExpectation(enabled=True),
        "Partner Inbound": ReceiveConnectorExpectation(require_tls=True),
    }
    drift = {(d.connector, d.setting): d.drifted for d in receive_drift("EX01", [relay], expect)}
    assert drift == {
        ("App Relay EX01", PRESENT): False,
        ("App Relay EX01", "enabled"): False,
        ("App Relay EX01", "remote_ip_ranges"): False,  # same addresses in another notation
        ("App Relay EX01", "permission_groups"): False,
        ("Partner Inbound", PRESENT): True,
    }
    widened = receive("App Relay EX01", remote_ip_ranges=("0.0.0.0-255.255.255.255",), enabled=False)
    drift = {(d.connector, d.setting): d.drifted for d in receive_drift("EX01", [widened], expect)}
    assert drift[("App Relay EX01", "remote_ip_ranges")] and drift[("App Relay EX01", "enabled")]


def send(name: str, smart_hosts: tuple[str, ...] = (), **kw: object) -> SendConnector:
    base: dict[str, object] = {
        "name": name,
        "enabled": True,
        "dns_routing": not smart_hosts,
        "smart_hosts": smart_hosts,
        "address_spaces": ("SMTP:*;1",),
        "source_transport_servers": ("EX01", "EX02"),
        "port": 25,
        "require_tls": False,
        "tls_auth_level": "",
        "cloud_services_mail_enabled": False,
        "changed": None,
    }
    base.update(kw)
    return SendConnector(**base)  # type: ignore[arg-type]


def test_send_drift_smart_host_vs_dns() -> None:
    expect = {
        "Internet": SendConnectorExpectation(dns_routing=True, address_spaces=["smtp:*;1"]),
        "To Partner": SendConnectorExpectation(smart_hosts=["relay.partner.example", "10.0.0.5"], require_tls=True),
    }
    ok = [send("Internet"), send("To Partner", ("[10.0.0.5]", "RELAY.partner.example"), require_tls=True)]
    assert not any(d.drifted for d in send_drift(ok, expect))
    bad = [send("Internet", ("smtp.isp.example",)), send("To Partner", ("relay.partner.example",))]
    drifted = {(d.connector, d.setting) for d in send_drift(bad, expect) if d.drifted}
    assert drifted == {("Internet", "dns_routing"), ("To Partner", "smart_hosts"), ("To Partner", "require_tls")}
    assert {(d.connector, d.setting) for d in send_drift([], expect) if d.drifted} == {
        ("Internet", PRESENT),
        ("To Partner", PRESENT),
    }


def test_expectation_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown permission group 'Everyone'"):
        ReceiveConnectorExpectation(permission_groups=["Everyone"])
    with pytest.raises(ValueError, match="not an IP range"):
        ReceiveConnectorExpectation(remote_ip_ranges=["10.0.0.0/40"])
    with pytest.raises(ValueError):
        SendConnectorExpectation(tls_auth_level="Sometimes")  # type: ignore[arg-type]


def test_unreadable_remote_ip_ranges_fail_the_parse_instead_of_looking_safe() -> None:
    from exporter.errors import ParseError
    from exporter.exchange.receive_connectors import parse_receive_connector

    obj = GenericComplexObject()
    obj.adapted_properties = {"Name": "Broken", "RemoteIPRanges": [], "PermissionGroups": "ExchangeServers"}
    with pytest.raises(ParseError, match="RemoteIPRanges empty or unreadable"):
        parse_receive_connector(obj, "EX01")


def test_overlapping_expectations_give_one_series_per_setting() -> None:
    expect = {
        "*": SendConnectorExpectation(enabled=True),
        "Internet": SendConnectorExpectation(enabled=False, dns_routing=True),
    }
    drift = send_drift([send("Internet")], expect)
    keys = [(d.connector, d.setting) for d in drift]
    assert len(keys) == len(set(keys))
    assert {(d.connector, d.setting): d.drifted for d in drift}[("Internet", "enabled")] is True  # any says drifted
