"""Transport rules, email address policies and the transport servers' DNS: parsing what pypsrp hands
over, label bounds with 100,000 unique values, which DNS servers a setting means, and the triage
rules' edges on hand-built facts (the collectors' own result types, no mocks)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from exporter.exchange.accepted_domains import AcceptedDomain, AcceptedDomainResult
from exporter.exchange.address_policies import (
    AddressPolicyResult,
    cap_address_policies,
    parse_address_policy,
    render_address_policies,
)
from exporter.exchange.drift import connector_drift
from exporter.exchange.tracking import TrackingResult
from exporter.exchange.transport_dns import (
    ZERO_GUID,
    Adapter,
    DnsSetting,
    TransportDnsResult,
    parse_adapter,
    render_transport_dns,
)
from exporter.exchange.transport_rules import (
    TransportRuleResult,
    cap_transport_rules,
    parse_transport_rule,
    render_transport_rules,
)
from exporter.settings import TransportRuleExpectation
from exporter.triage.facts import Facts
from exporter.triage.rules import internal_recipient_unknown
from exporter.triage.rules_policy import transport_dns_unconfigured, transport_rule_changed
from tests.unit.test_cardinality import UNIQUE, enum, samples, text_object, values, wire

NOW = 1_800_000_000.0
RULE = ("Microsoft.Exchange.MessagingPolicies.Rules.Tasks.TransportRule", "System.Object")
POLICY = ("Microsoft.Exchange.Data.Directory.SystemConfiguration.EmailAddressPolicy", "System.Object")
GUID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"


def stamp(minutes_ago: float) -> datetime:
    return datetime.fromtimestamp(NOW - minutes_ago * 60, UTC)


def rule_object(name: str, minutes_ago: float = 20, state: str = "Enabled", mode: str = "Enforce", **actions: Any):
    return wire(
        RULE,
        Name=name,
        Priority=0,
        State=enum("Microsoft.Exchange.MessagingPolicies.Rules.Tasks.RuleState", state),
        Mode=enum("Microsoft.Exchange.MessagingPolicies.Rules.RuleMode", mode),
        WhenChangedUTC=stamp(minutes_ago),
        **actions,
    )


# ---------------------------------------------------------------- parsing


def test_a_rule_acts_only_enabled_in_enforce_mode_with_a_delivery_affecting_action() -> None:
    reject = parse_transport_rule(
        rule_object("R", RejectMessageReasonText="No", RejectMessageEnhancedStatusCode="5.7.1")
    )
    assert (reject.actions, reject.reject_code, reject.acts) == (("reject",), "5.7.1", True)
    several = parse_transport_rule(
        rule_object("S", DeleteMessage=True, RedirectMessageTo=["a@x"], Quarantine=True, ModerateMessageByManager=True)
    )
    assert several.actions == ("delete", "redirect", "quarantine", "moderate")
    assert not parse_transport_rule(rule_object("A", mode="Audit", DeleteMessage=True)).acts
    assert not parse_transport_rule(rule_object("D", state="Disabled", DeleteMessage=True)).acts
    tag = parse_transport_rule(
        rule_object("T", RedirectMessageTo=None, DeleteMessage=False, RejectMessageReasonText="")
    )
    assert (tag.actions, tag.acts) == ((), False)


def test_policy_templates_give_the_domains_primary_first() -> None:
    templates = ["smtp:%m@fabrikam.sim", "X400:c=US;a= ;p=Contoso;o=Exchange;", "SMTP:%g.%s@Contoso.SIM"]
    policy = parse_address_policy(
        wire(
            POLICY,
            Name="Staff",
            Priority=text_object("P", "1"),
            EnabledEmailAddressTemplates=templates,
            RecipientFilterApplied=False,
        )
    )
    assert (policy.primary_domain, policy.domains, policy.applied, policy.priority) == (
        "contoso.sim",
        ("contoso.sim", "fabrikam.sim"),
        False,
        "1",
    )
    assert policy.generates("FABRIKAM.sim") and not policy.generates("tailspin.sim")


def dns(external: DnsSetting, adapters: tuple[Adapter, ...]) -> TransportDnsResult:
    return TransportDnsResult("EX01", external, DnsSetting(True, ZERO_GUID, (), "Any"), adapters)


LAN = Adapter("LAN", GUID, ("192.0.2.53", "192.0.2.54"))
DMZ = Adapter("DMZ", "11111111-2222-3333-4444-555555555555", ("198.51.100.1",))


@pytest.mark.parametrize(
    ("setting", "adapters", "servers", "source", "problem"),
    [
        (
            DnsSetting(True, ZERO_GUID, (), "Any"),
            (LAN, DMZ),
            ("192.0.2.53", "192.0.2.54", "198.51.100.1"),
            "adapter",
            "",
        ),
        (DnsSetting(True, DMZ.guid, (), "Any"), (LAN, DMZ), ("198.51.100.1",), "adapter", ""),
        (DnsSetting(True, GUID.replace("3", "9"), (), "Any"), (LAN,), (), "adapter", "names no adapter"),
        (DnsSetting(True, GUID, (), "Any"), (Adapter("LAN", GUID, ()),), (), "adapter", "has no DNS server"),
        (DnsSetting(False, GUID, ("203.0.113.53",), "UseTcpOnly"), (LAN,), ("203.0.113.53",), "list", ""),
        (DnsSetting(False, ZERO_GUID, (), "Any"), (LAN,), (), "list", "ExternalDNSServers is empty"),
    ],
)
def test_which_dns_servers_a_transport_setting_means(
    setting: DnsSetting, adapters: tuple[Adapter, ...], servers: tuple[str, ...], source: str, problem: str
) -> None:
    resolvers = dns(setting, adapters).resolvers("external")
    assert (resolvers.servers, resolvers.source) == (servers, source)
    assert (problem in resolvers.problem) if problem else resolvers.problem == ""


def test_an_adapter_arrives_with_its_dns_servers_as_text() -> None:
    adapter = parse_adapter(
        wire(
            ("NetworkConnectionInfo",),
            Name="LAN",
            AdapterGuid=GUID.upper(),
            DnsServers=[text_object("System.Net.IPAddress", "192.0.2.53")],
        )
    )
    assert adapter == Adapter("LAN", GUID, ("192.0.2.53",))


# ---------------------------------------------------------------- label bounds


def test_transport_rule_labels_stay_bounded_with_100k_unique_values() -> None:
    rules = tuple(
        parse_transport_rule(rule_object(f"rule {i:06d}", minutes_ago=i, state=f"S{i % 3}", DeleteMessage=i % 2 == 0))
        for i in range(UNIQUE)
    )
    result = cap_transport_rules(TransportRuleResult(rules), 100)
    found = samples(render_transport_rules([result]))
    # docs/metrics.md: rules with actions <= max_rules + "other" per (state, mode, actions).
    assert len(found["mailflow_transport_rule_info"]) <= 100 + 3 * 4 * 31
    assert len(found["mailflow_transport_rule_changed_timestamp_seconds"]) <= 101
    assert values(found, "mailflow_transport_rules", "state") <= {"Enabled", "Disabled", "other"}
    assert "rule 000000" in values(found, "mailflow_transport_rule_info", "rule")  # the latest changed first
    assert result.folded["rule"] == UNIQUE // 2 - 100


def test_policy_and_dns_server_labels_stay_bounded_with_100k_unique_values() -> None:
    policies = tuple(
        parse_address_policy(
            wire(
                POLICY,
                Name=f"p{i:06d}",
                Priority=text_object("P", "Lowest" if i == 7 else str(i)),
                EnabledEmailAddressTemplates=[f"SMTP:@d{i % 50}.sim"],
            )
        )
        for i in range(UNIQUE)
    )
    found = samples(render_address_policies([cap_address_policies(AddressPolicyResult(policies), 100)]))
    # policies <= max_policies + "other"; domains: the accepted domains (here 50).
    assert len(values(found, "mailflow_email_address_policy_domain_info", "policy")) == 101
    assert "p000007" in values(found, "mailflow_email_address_policy_domain_info", "policy")  # the default policy
    assert len(found["mailflow_email_address_policy_domain_info"]) <= 100 + 50
    many = Adapter("LAN", GUID, tuple(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(UNIQUE)))
    result = TransportDnsResult("EX01", DnsSetting(True, GUID, (), "Any"), DnsSetting(True, GUID, (), "Any"), (many,))
    found = samples(render_transport_dns([result]))
    assert len(found["mailflow_transport_dns_server_info"]) == 2 * (16 + 1)  # per scope: max_dns_servers + "other"


# ---------------------------------------------------------------- triage edges


def tracking(failed: int, code: str = "5.7.1", inbound: int = 5, unknown: dict[tuple[str, str], int] | None = None):
    return TrackingResult(
        "EX01",
        {},
        {},
        (0,),
        0.0,
        0,
        None,
        0,
        0,
        0.0,
        0,
        window_failures={(code, "other"): failed} if failed else {},
        window_seconds=900.0,
        window_unknown_recipients=unknown or {},
        recent_seconds=900.0,
        recent_flow={"internal": 30, "inbound": inbound},
    )


def facts(**results: Any) -> Facts:
    return Facts({k: {"organization" if k != "tracking" else "EX01": v} for k, v in results.items()}, {}, NOW)


def rules(*objects: Any) -> TransportRuleResult:
    return TransportRuleResult(tuple(parse_transport_rule(o) for o in objects))


@pytest.mark.parametrize(
    ("minutes_ago", "failed", "inbound", "expected"),
    [
        (20, 12, 5, "failures"),  # changed, then mail fails
        (20, 0, 0, "silence from outside"),  # changed, then nothing arrives from outside
        (20, 0, 5, None),  # changed, nothing wrong
        (119, 3, 5, "failures"),
        (121, 3, 5, None),  # too long ago to be "shortly before"
    ],
)
def test_rule_change_shortly_before_failures_or_silence(
    minutes_ago: float, failed: int, inbound: int, expected: str | None
) -> None:
    f = facts(
        transport_rules=rules(
            rule_object("Block", minutes_ago, DeleteMessage=True),
            rule_object("Audit", 5, mode="Audit", DeleteMessage=True),
        ),
        tracking=tracking(failed, inbound=inbound),
    )
    found = transport_rule_changed(f)
    if expected is None:
        assert found == []
        return
    (finding,) = found
    assert finding.title.startswith("Transport rule Block (delete) changed") and finding.title.endswith(expected)
    assert finding.weight == failed


def test_the_rejections_with_the_rules_own_code_are_counted_apart() -> None:
    rule = rule_object("Block", 30, RejectMessageEnhancedStatusCode="5.7.900", RejectMessageReasonText="No")
    (finding,) = transport_rule_changed(facts(transport_rules=rules(rule), tracking=tracking(7, "5.7.900")))
    assert "7 of them with 5.7.900, the code this rule rejects with" in finding.evidence
    (other,) = transport_rule_changed(facts(transport_rules=rules(rule), tracking=tracking(7, "5.1.1")))
    assert not any("the code this rule rejects with" in e for e in other.evidence)


def test_a_server_without_dns_is_a_finding_and_one_with_dns_is_not() -> None:
    broken = dns(DnsSetting(True, GUID.replace("3", "9"), (), "Any"), (LAN,))
    f = Facts(
        {
            "transport_dns": {
                "EX01": broken,
                "EX02": TransportDnsResult("EX02", *[DnsSetting(True, ZERO_GUID, (), "Any")] * 2, (LAN,)),
            }
        },
        {},
        NOW,
    )
    (finding,) = transport_dns_unconfigured(f)
    assert finding.title == "EX01 has no DNS server for lookups outside the organisation"
    assert finding.severity == "warning" and "Set-TransportService EX01" in finding.next_step


def test_unknown_recipients_say_which_policy_generates_their_domain() -> None:
    accepted = AcceptedDomainResult(
        (
            AcceptedDomain("contoso.sim", "Authoritative", True, False, stamp(3000)),
            AcceptedDomain("fabrikam.sim", "Authoritative", False, False, stamp(3000)),
        )
    )
    policy = parse_address_policy(
        wire(
            POLICY,
            Name="Default Policy",
            Priority=text_object("P", "Lowest"),
            EnabledEmailAddressTemplates=["SMTP:@contoso.sim", "smtp:@fabrikam.sim"],
            RecipientFilterApplied=False,
            WhenChangedUTC=stamp(3000),
        )
    )
    unknown = {("5.1.1", "fabrikam.sim"): 15, ("5.1.1", "tailspin.sim"): 2}
    f = facts(
        accepted_domains=accepted,
        email_address_policies=AddressPolicyResult((policy,)),
        tracking=tracking(0, unknown=unknown),
    )
    (finding,) = internal_recipient_unknown(f)
    assert finding.title == "Recipients in our domains are rejected as unknown (15 with 5.1.1)"  # no recent change
    assert (
        "fabrikam.sim: email address policy Default Policy (priority Lowest) generates secondary addresses in it, "
        "not applied yet (RecipientFilterApplied false)"
    ) in finding.evidence
    # The policies could not be read: said, never taken as "no policy generates it".
    blind = Facts(
        {"accepted_domains": {"organization": accepted}, "tracking": {"EX01": tracking(0, unknown=unknown)}},
        {"email_address_policies": {"organization": "permission: Get-EmailAddressPolicy is not available"}},
        NOW,
    )
    (finding,) = internal_recipient_unknown(blind)
    assert "the email address policies could not be read: permission: Get-EmailAddressPolicy is not available" in (
        finding.evidence
    )
    assert not any("no email address policy generates" in e for e in finding.evidence)


def test_transport_rule_drift_of_a_glob_over_100k_rules_stays_bounded() -> None:
    rules = tuple(parse_transport_rule(rule_object(f"rule {i:06d}", state="Disabled" if i % 7 else "Enabled"))
                  for i in range(UNIQUE))  # fmt: skip
    drift = connector_drift(
        [("*", "*", TransportRuleExpectation(state="Enabled"))], [(r.name, r.settings()) for r in rules]
    )
    result = cap_transport_rules(TransportRuleResult(rules, tuple(drift)), 100)
    found = samples(render_transport_rules([result]))
    names = values(found, "mailflow_transport_rule_drift", "rule")
    # per rule: present and state; at most max_rules names (drifted first) + "other".
    assert len(names) == 101 and len(found["mailflow_transport_rule_drift"]) == 2 * 101
    (family,) = [m for m in render_transport_rules([result]) if m.name == "mailflow_transport_rule_drift"]
    drifted = {s.labels["rule"] for s in family.samples if s.labels["setting"] == "state" and s.value == 1}
    assert drifted == names  # the drifted ones keep their names; "other" holds the rest, drifted too
