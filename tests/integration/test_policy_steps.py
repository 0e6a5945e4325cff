"""The troubleshooting steps for transport rules, email address policies and the transport servers'
own DNS servers (issue 18, items 4-5), through real pypsrp against the simulator: the cmdlets with
their parameters, output and errors; then the exporter's collectors, metrics and triage on planted
faults beside controls (a rule changed long ago, a rule in Audit mode, a server with working DNS)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prometheus_client.core import CollectorRegistry

from exporter.exchange.clixml import flatten
from exporter.simulator import Scenario, Simulator
from tests.integration.conftest import PASSWORD, USER, SimFactory, raw_pool, run_cmdlets, settings_for, small_org
from tests.integration.test_triage import healthy_org
from tests.integration.test_triage_hints import fail_counts, run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
NOT_FOUND = "couldn't be found on 'DC01.contoso.sim'"
BAD_GUID = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"


def rules_org() -> dict[str, Any]:
    """small_org (queues retrying with 451 4.4.0 on both servers) with rules, policies and DNS settings."""
    org = small_org()
    org["accepted_domains"] = [
        {"domain": "contoso.sim", "default": True},
        {"name": "Fabrikam", "domain": "fabrikam.sim"},
    ]
    org["transport_rules"] = [
        {"name": "Block outside senders", "reject_text": "Not accepted here", "reject_status_code": "5.7.1",
         "changed_minutes_ago": 20},
        {"name": "Divert legal", "redirect_to": ["legal@contoso.sim"], "state": "Disabled"},
        {"name": "Audit deletes", "mode": "Audit", "delete_message": True, "changed_minutes_ago": 10},
        {"name": "Tag only"},
    ]  # fmt: skip
    org["email_address_policies"] = [
        {"name": "Fabrikam Staff", "priority": 1, "templates": ["SMTP:%g.%s@fabrikam.sim", "smtp:%m@contoso.sim"]},
        {"name": "Default Policy", "templates": ["SMTP:@contoso.sim"]},
    ]
    org["servers"][0]["dns"] = {
        "adapters": [{"name": "LAN", "dns_servers": ["192.0.2.53", "192.0.2.54"], "ip_addresses": ["192.0.2.21"]}],
        "external_adapter_guid": BAD_GUID,
    }
    org["servers"][1]["dns"] = {"external_adapter_enabled": False, "external_dns_servers": ["198.51.100.53"]}
    org["send_connectors"] = [
        {"name": "Internet"},
        {"name": "Partner", "address_spaces": ["SMTP:partner.example;1"], "use_external_dns_servers": True},
    ]
    return org


def objects(ps: Any) -> list[dict[str, Any]]:
    assert not ps.had_errors, [str(e) for e in ps.streams.error]
    return [flatten(o) for o in ps.output]


def only_error(ps: Any, terminating: bool = False) -> Any:
    """The one error record of a pipeline without output (non-terminating ones leave had_errors false)."""
    assert ps.had_errors is terminating and not ps.output
    (error,) = ps.streams.error
    return error


def not_found(ps: Any, identity: str) -> None:
    error = only_error(ps)
    assert "FailureCategory=Cmdlet-ManagementObjectNotFoundException" in error.fq_error
    assert str(error) == f"The operation couldn't be performed because object '{identity}' {NOT_FOUND}."


# ---------------------------------------------------------------- the simulated cmdlets


def test_get_transport_rule_parameters_output_and_errors(sim_factory: SimFactory) -> None:
    sim, _ = sim_factory(rules_org())
    pool = raw_pool(sim)
    pool.open()
    try:
        rules = objects(run_cmdlets(pool, ("Get-TransportRule", {})))
        assert [(r["Name"], r["Priority"], r["State"], r["Mode"]) for r in rules] == [
            ("Block outside senders", 0, "Enabled", "Enforce"),
            ("Divert legal", 1, "Disabled", "Enforce"),
            ("Audit deletes", 2, "Enabled", "Audit"),
            ("Tag only", 3, "Enabled", "Enforce"),
        ]
        block, divert, audit, tag = rules
        assert (block["RejectMessageReasonText"], block["RejectMessageEnhancedStatusCode"]) == (
            "Not accepted here",
            "5.7.1",
        )
        assert divert["RedirectMessageTo"] == ["legal@contoso.sim"] and audit["DeleteMessage"] is True
        assert (
            tag["RejectMessageReasonText"] is None
            and tag["RedirectMessageTo"] is None
            and tag["DeleteMessage"] is False
        )
        changed = (
            time.time() - time.mktime(time.strptime(block["WhenChangedUTC"], "%Y-%m-%dT%H:%M:%SZ")) + time.timezone
        )
        assert 19 * 60 <= changed <= 22 * 60, block["WhenChangedUTC"]

        # -Identity: name (any case), GUID or DN; positional; -State filters.
        by_name = objects(run_cmdlets(pool, ("Get-TransportRule", {"Identity": "divert LEGAL"})))
        assert [r["Name"] for r in by_name] == ["Divert legal"]
        by_guid = objects(run_cmdlets(pool, ("Get-TransportRule", {"Identity": str(block["Guid"])})))
        assert [r["Name"] for r in by_guid] == ["Block outside senders"]
        by_dn = objects(run_cmdlets(pool, ("Get-TransportRule", {"Identity": block["DistinguishedName"]})))
        assert [r["Name"] for r in by_dn] == ["Block outside senders"]
        disabled = objects(run_cmdlets(pool, ("Get-TransportRule", {"State": "Disabled"})))
        assert [r["Name"] for r in disabled] == ["Divert legal"]
        first = objects(run_cmdlets(pool, ("Get-TransportRule", {"ResultSize": 2})))
        assert len(first) == 2

        # Errors: an unknown rule (no wildcards either: "Accept wildcard characters: False"), a bad -State.
        for identity in ("No such rule", "Block*"):
            not_found(run_cmdlets(pool, ("Get-TransportRule", {"Identity": identity})), identity)
        error = only_error(run_cmdlets(pool, ("Get-TransportRule", {"State": "On"})), terminating=True)
        assert error.reason == "ParameterBindingException" and "Enabled, Disabled" in str(error)
    finally:
        pool.close()


def test_get_email_address_policy_and_network_connection_info(sim_factory: SimFactory) -> None:
    sim, _ = sim_factory(rules_org())
    pool = raw_pool(sim, "EX02")
    pool.open()
    try:
        policies = objects(run_cmdlets(pool, ("Get-EmailAddressPolicy", {})))
        assert [(p["Name"], p["Priority"]) for p in policies] == [("Fabrikam Staff", "1"), ("Default Policy", "Lowest")]
        assert policies[0]["EnabledEmailAddressTemplates"] == ["SMTP:%g.%s@fabrikam.sim", "smtp:%m@contoso.sim"]
        assert policies[0]["EnabledPrimarySMTPAddressTemplate"] == "%g.%s@fabrikam.sim"
        assert policies[1]["RecipientFilterApplied"] is True
        not_found(run_cmdlets(pool, ("Get-EmailAddressPolicy", {"Identity": "Default*"})), "Default*")

        # No -Identity: the local server (the endpoint's, EX02); -Identity EX01: that server's adapters.
        local = objects(run_cmdlets(pool, ("Get-NetworkConnectionInfo", {})))
        assert [(a["Name"], a["DnsServers"]) for a in local] == [("Ethernet0", ["192.0.2.10"])]
        ex01 = objects(run_cmdlets(pool, ("Get-NetworkConnectionInfo", {"Identity": "EX01"})))
        assert [(a["Name"], a["DnsServers"], a["IPAddresses"]) for a in ex01] == [
            ("LAN", ["192.0.2.53", "192.0.2.54"], ["192.0.2.21"])
        ]
        not_found(run_cmdlets(pool, ("Get-NetworkConnectionInfo", {"Identity": "EX09"})), "EX09")

        (svc,) = objects(run_cmdlets(pool, ("Get-TransportService", {"Identity": "EX01"})))
        assert (svc["ExternalDNSAdapterEnabled"], svc["ExternalDNSAdapterGuid"], svc["ExternalDNSServers"]) == (
            True, BAD_GUID, []
        )  # fmt: skip
        (svc,) = objects(run_cmdlets(pool, ("Get-TransportService", {"Identity": "EX02"})))
        assert (svc["ExternalDNSAdapterEnabled"], svc["ExternalDNSServers"], svc["ExternalDNSProtocolOption"]) == (
            False, ["198.51.100.53"], "Any"
        )  # fmt: skip
    finally:
        pool.close()


def test_the_cmdlets_are_in_view_only_configuration_only(sim_factory: SimFactory) -> None:
    """Exchange's built-in role entries: a session without View-Only Configuration has none of them."""
    org = rules_org()
    org["users"] = {USER: {"password": PASSWORD, "roles": ["Message Tracking", "Monitoring"]}}
    sim, _ = sim_factory(org)
    pool = raw_pool(sim)
    pool.open()
    try:
        for cmdlet in ("Get-TransportRule", "Get-EmailAddressPolicy", "Get-NetworkConnectionInfo"):
            error = only_error(run_cmdlets(pool, (cmdlet, {})), terminating=True)
            assert error.fq_error == "CommandNotFoundException", cmdlet
    finally:
        pool.close()


# ---------------------------------------------------------------- the exporter on planted faults


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def frozen(org: dict[str, Any]) -> tuple[Simulator, Scenario]:
    scenario = Scenario.from_dict(org)
    t0 = time.time()
    sim = Simulator(scenario, host="127.0.0.1", clock=lambda: t0)
    sim.start()
    return sim, scenario


def failing_org(rules: list[dict[str, Any]], failure_ratio: float = 0.5) -> dict[str, Any]:
    """healthy_org with mail failing with 5.7.1 (a transport rule's and Sender ID's texts) and ``rules``."""
    org = healthy_org()
    traffic = {"messages_per_minute": 20, "failure_ratio": failure_ratio, "failure_codes": ["5.7.1"],
               "history_minutes": 4}  # fmt: skip
    org["servers"] = [{**s, "tracking": traffic} for s in org["servers"]]
    org["transport_rules"] = rules
    return org


PLANTED = [
    {"name": "Block outside senders", "reject_status_code": "5.7.1", "changed_minutes_ago": 20},
    {"name": "Old reject", "reject_status_code": "5.7.1", "changed_minutes_ago": 3 * 1440},  # control: long ago
    {"name": "Audit deletes", "mode": "Audit", "delete_message": True, "changed_minutes_ago": 10},  # control: Audit
    {"name": "Disabled redirect", "state": "Disabled", "redirect_to": ["x@contoso.sim"], "changed_minutes_ago": 5},
]


EXPECT = {
    "Block outside*": {"mode": "Audit"},  # drifted: it enforces
    "Audit deletes": {"state": "Enabled", "mode": "Audit", "actions": ["delete"]},  # as expected
    "Journal copy": {"state": "Enabled"},  # no such rule
}


def test_a_rejecting_rule_changed_before_failures_is_named_with_its_code() -> None:
    sim, scenario = frozen(failing_org(PLANTED))
    try:
        truth = fail_counts(sim, scenario)
        report, registry = run(
            settings_for(sim, scenario, overrides={"collectors": {"transport_rules": {"expect": EXPECT}}})
        )
    finally:
        sim.stop()
    found = [f for f in report.findings if f.rule == "transport_rule_changed"]
    assert [f.title for f in found] == [
        "Transport rule Block outside senders (reject) changed 20 minutes ago, shortly before the failures"
    ], [(f.rule, f.title) for f in report.findings]
    (finding,) = found
    total = sum(truth.values())
    with_code = sum(n for (code, _domain), n in truth.items() if code == "5.7.1")
    assert total and with_code == total
    assert f"{total} recipient(s) failed (FAIL) in the last" in finding.evidence[1]
    assert finding.evidence[2] == f"{with_code} of them with 5.7.1, the code this rule rejects with"
    assert finding.severity == "warning" and 'Disable-TransportRule "Block outside senders"' in finding.next_step

    info = "mailflow_transport_rule_info"
    assert value(registry, info, rule="Block outside senders", state="Enabled", mode="Enforce", actions="reject") == 1
    assert value(registry, info, rule="Audit deletes", state="Enabled", mode="Audit", actions="delete") == 1
    assert value(registry, info, rule="Disabled redirect", state="Disabled", mode="Enforce", actions="redirect") == 1
    stamp = value(registry, "mailflow_transport_rule_changed_timestamp_seconds", rule="Block outside senders")
    assert stamp is not None and 19 * 60 <= time.time() - stamp <= 25 * 60
    assert value(registry, "mailflow_transport_rules", state="Enabled", mode="Enforce") == 2
    assert value(registry, "mailflow_collector_up", collector="transport_rules", target="organization") == 1

    # Expected state (drift.py, as for connectors): the metric per setting, one finding naming them.
    drift = "mailflow_transport_rule_drift"
    assert value(registry, drift, rule="Block outside senders", setting="mode") == 1
    assert value(registry, drift, rule="Audit deletes", setting="actions") == 0
    assert value(registry, drift, rule="Journal copy", setting="present") == 1
    (drifted,) = [f for f in report.findings if f.rule == "connector_drift"]
    assert drifted.title == "Transport rules differ from their expected configuration"
    assert set(drifted.evidence) == {
        "transport rule Block outside senders: mode differs",
        "transport rule Journal copy: present differs",
    }


def test_a_recently_changed_rule_without_failures_is_no_finding() -> None:
    sim, scenario = frozen(failing_org(PLANTED, failure_ratio=0.0))
    try:
        report, registry = run(settings_for(sim, scenario))
    finally:
        sim.stop()
    assert not [f for f in report.findings if f.rule == "transport_rule_changed"]
    assert value(registry, "mailflow_transport_rule_info", rule="Block outside senders", state="Enabled",
                 mode="Enforce", actions="reject") == 1  # fmt: skip


def test_internal_unknown_recipients_name_the_policy_that_stopped_generating_their_domain() -> None:
    """The accepted domain fabrikam.sim is unchanged; the policy that gave its recipients their addresses
    was edited 25 minutes ago to generate contoso.sim ones only: the 5.1.1 storm names the policy."""
    org = healthy_org()
    org["accepted_domains"] = [
        {"domain": "contoso.sim", "default": True},
        {"name": "Fabrikam", "domain": "fabrikam.sim"},
    ]
    org["email_address_policies"] = [
        {"name": "Fabrikam Staff", "priority": 1, "templates": ["SMTP:%g.%s@contoso.sim"], "changed_minutes_ago": 25},
        {"name": "Default Policy", "templates": ["SMTP:@contoso.sim"]},
    ]
    traffic = {"messages_per_minute": 20, "failure_ratio": 0.5, "failure_codes": ["5.1.1"],
               "recipient_domains": ["fabrikam.sim"], "history_minutes": 4}  # fmt: skip
    org["servers"] = [{**s, "tracking": traffic} for s in org["servers"]]
    sim, scenario = frozen(org)
    try:
        truth = fail_counts(sim, scenario)
        report, registry = run(settings_for(sim, scenario))
    finally:
        sim.stop()
    ours = sum(n for (code, domain), n in truth.items() if domain == "fabrikam.sim" and code == "5.1.1")
    (finding,) = [f for f in report.findings if f.rule == "internal_recipient_unknown"]
    assert finding.title == (
        f"Recipients in our domains are rejected as unknown since the email address policy Fabrikam Staff changed "
        f"({ours} with 5.1.1)"
    )
    assert "fabrikam.sim: no email address policy generates addresses in it (only addresses set by hand)" in (
        finding.evidence
    )
    assert any(
        e.startswith("email address policy Fabrikam Staff changed") and e.endswith("generates addresses in contoso.sim")
        for e in finding.evidence
    ), finding.evidence
    assert 'Get-EmailAddressPolicy "Fabrikam Staff"' in finding.next_step
    domains = "mailflow_email_address_policy_domain_info"
    assert value(registry, domains, policy="Fabrikam Staff", domain="contoso.sim", primary="true") == 1
    assert value(registry, domains, policy="Default Policy", domain="contoso.sim", primary="true") == 1
    assert value(registry, domains, policy="Fabrikam Staff", domain="fabrikam.sim", primary="true") is None


def test_dns_failures_show_each_servers_dns_servers_and_a_server_without_any(sim_factory: SimFactory) -> None:
    sim, scenario = sim_factory(rules_org())
    report, registry = run(settings_for(sim, scenario, overrides={"collectors": {"tracking": {"enabled": False}}}))
    (dns,) = [f for f in report.findings if f.rule == "outbound_dns_failure"]
    assert (
        f"EX01: no DNS server for external lookups: ExternalDNSAdapterGuid {BAD_GUID} names no adapter of the server"
        in (dns.evidence)
    )
    assert "EX02 asks 198.51.100.53 (from ExternalDNSServers) for external lookups" in dns.evidence
    # Set-SendConnector -UseExternalDNSServersEnabled: that connector resolves with the list, empty on EX01.
    assert "EX01: send connectors Partner use ExternalDNSServers instead (none: the list is empty)" in dns.evidence
    assert not any(e.startswith("EX02: send connectors") for e in dns.evidence)
    assert dns.next_step.startswith("EX01 has no DNS server for external lookups (transport_dns_unconfigured)")
    (unconfigured,) = [f for f in report.findings if f.rule == "transport_dns_unconfigured"]
    assert unconfigured.title == "EX01 has no DNS server for lookups outside the organisation"
    assert "network adapters: LAN: 192.0.2.53, 192.0.2.54" in unconfigured.evidence

    count = "mailflow_transport_dns_servers"
    assert value(registry, count, server="EX01", scope="external") == 0
    assert value(registry, count, server="EX01", scope="internal") == 2
    assert value(registry, count, server="EX02", scope="external") == 1
    info = "mailflow_transport_dns_server_info"
    assert value(registry, info, server="EX02", scope="external", source="list", dns_server="198.51.100.53") == 1
    assert value(registry, info, server="EX01", scope="internal", source="adapter", dns_server="192.0.2.54") == 1


def test_a_session_without_get_network_connection_info_is_a_blind_spot(sim_factory: SimFactory) -> None:
    org = rules_org()
    org["rbac"] = {"hidden_cmdlets": ["Get-NetworkConnectionInfo"]}
    sim, scenario = sim_factory(org)
    report, _ = run(settings_for(sim, scenario, overrides={"collectors": {"tracking": {"enabled": False}}}))
    assert any(u.startswith("transport_dns EX01") for u in report.unchecked), report.unchecked
    (role,) = [f for f in report.findings if f.rule == "missing_role"]
    assert role.title == "The monitoring account lacks the View-Only Configuration role (Get-NetworkConnectionInfo)"
    (dns,) = [f for f in report.findings if f.rule == "outbound_dns_failure"]
    assert any(e.startswith("EX01: its DNS servers are unknown (permission:") for e in dns.evidence), dns.evidence
