"""Triage correlation rules on hand-built facts (the collectors' own result types, no mocks)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import yaml

from exporter.dnscheck.baseline import DriftState
from exporter.dnscheck.collectors import DomainResult, IpResult
from exporter.dnscheck.dnsbl import DnsblResult
from exporter.dnscheck.mx import MxHost, MxResult
from exporter.dnscheck.policy import PolicyRecord, PolicyResult
from exporter.dnscheck.ptr import PtrResult
from exporter.dnscheck.resolver import NXDOMAIN, OK, TIMEOUT, Answer
from exporter.dnscheck.spf import SpfAnalysis
from exporter.exchange.accepted_domains import AcceptedDomain, AcceptedDomainResult
from exporter.exchange.certificates import Certificate, CertificateResult, services_text
from exporter.exchange.lasterror import parse_smtp_error
from exporter.exchange.queues import QueueInfo, aggregate
from exporter.exchange.tracking import TrackingResult
from exporter.triage.facts import Facts
from exporter.triage.model import Report
from exporter.triage.report import build_report
from exporter.triage.rules import (
    blocklists_unusable,
    certificates,
    inbound_dns_and_smtp,
    inbound_silence,
    internal_recipient_unknown,
    outbound_dns_failure,
)

NOW = 1_800_000_000.0


def queue(error: str, count: int = 20, internal: bool = False) -> QueueInfo:
    return QueueInfo(
        identity="EX01\\7", server="EX01", kind="delivery", delivery_type="DnsConnectorDelivery",
        next_hop_domain="contoso.sim" if internal else "fabrikam.example",
        next_hop_category="Internal" if internal else "External", status="Retry", message_count=count,
        deferred_count=0, incoming_rate=0.0, outgoing_rate=0.0, retry_count=3, next_retry_time=None,
        last_error=parse_smtp_error(error),
    )  # fmt: skip


def domain(
    name: str, mx_status: str = OK, hosts: tuple[str, ...] = ("mx1.contoso.sim",), drift: bool = False
) -> DomainResult:
    answer = Answer(name, "MX", mx_status, tuple(f"10 {h}" for h in hosts) if mx_status == OK else ())
    mx = MxResult(name, answer, tuple(MxHost(10, h, OK, ("192.0.2.25",)) for h in hosts), False, None)
    ok = Answer(f"_dmarc.{name}", "TXT", OK, ("v=DMARC1; p=reject",))
    policies = PolicyResult(PolicyRecord(ok, 1, {"p": "reject"}), PolicyRecord(ok, 0, {}), PolicyRecord(ok, 0, {}))
    spf = SpfAnalysis(name, records=1, record="v=spf1 -all")
    states = {"MX": DriftState(drift, NOW - 60 if drift else None, ("mx1.contoso.sim",), hosts)}
    return DomainResult(name, mx, spf, {}, policies, states, 5)


def tracking(
    received: int, failures: int = 0, internal: int = 0, unknown: dict[tuple[str, str], int] | None = None
) -> TrackingResult:
    """``received`` messages from outside and ``internal`` ones from inside (each a RECEIVE over SMTP);
    ``unknown``: recipients rejected as unknown by (enhanced code, recipient domain)."""
    return TrackingResult(
        server="EX01", events={}, failures={}, latency_buckets=(0,), latency_sum=0.0, stuck=0, last_event=None,
        truncated_polls=0, evictions=0, skipped_seconds=0.0, new_events=received + internal,
        window_events={("RECEIVE", "SMTP"): received + internal} if received + internal else {},
        window_failures={("5.1.1", "recipient_unknown"): failures} if failures else {}, window_seconds=600.0,
        window_unknown_recipients=unknown or ({("5.1.1", "contoso.sim"): failures} if failures else {}),
        recent_seconds=600.0, recent_flow={"internal": internal} if internal else {},
        recent_received_inbound=received,
    )  # fmt: skip


def facts(**results: dict[str, object]) -> Facts:
    return Facts({k: v for k, v in results.items()}, {}, NOW)


def test_dns_failure_alone_blames_the_next_hop_resolution() -> None:
    q = aggregate("EX01", [queue("451 4.4.0 DNS query failed")], 20)
    [finding] = outbound_dns_failure(facts(queues={"EX01": q}))
    assert finding.severity == "critical" and "resolver fails too" not in " ".join(finding.evidence)


def test_dns_failure_plus_resolver_failures_points_at_dns_itself() -> None:
    q = aggregate("EX01", [queue("451 4.4.0 DNS query failed")], 20)
    dns = {"contoso.sim": domain("contoso.sim", mx_status=TIMEOUT, hosts=())}
    [finding] = outbound_dns_failure(facts(queues={"EX01": q}, dns_domains=dns))
    assert any("the exporter's resolver fails too: MX contoso.sim: timeout" in e for e in finding.evidence)
    assert finding.next_step.startswith("DNS resolution itself is failing")


def accepted(*domains: tuple[str, float | None]) -> AcceptedDomainResult:
    """Accepted domains (Authoritative) with when each changed, in seconds before NOW (None: long ago)."""
    return AcceptedDomainResult(
        tuple(
            AcceptedDomain(d, "Authoritative", False, False, datetime.fromtimestamp(NOW - (ago or 10**7), UTC), d)
            for d, ago in domains
        )
    )


def test_codes_with_the_same_count_are_named_in_code_order_whatever_order_the_log_gave() -> None:
    result = accepted(("contoso.sim", None), ("fabrikam.sim", 2400))
    titles = set()
    for unknown in ({("5.1.10", "fabrikam.sim"): 41, ("5.1.1", "fabrikam.sim"): 41},
                    {("5.1.1", "fabrikam.sim"): 41, ("5.1.10", "fabrikam.sim"): 41}):  # fmt: skip
        [finding] = internal_recipient_unknown(
            facts(tracking={"EX01": tracking(50, unknown=unknown)}, accepted_domains={"organization": result})
        )
        titles.add(finding.title)
        assert finding.evidence[0].startswith("41 recipient(s) rejected with 5.1.1 in the last"), finding.evidence
    assert titles == {
        "Recipients in fabrikam.sim are rejected as unknown since the accepted domain changed "
        "(41 with 5.1.1, 41 with 5.1.10)"
    }


def test_internal_511_after_an_accepted_domain_change_points_at_recipient_policy() -> None:
    unknown = {("5.1.1", "fabrikam.sim"): 20, ("5.1.10", "fabrikam.sim"): 5, ("5.4.1", "partner.example"): 7}
    result = accepted(("contoso.sim", None), ("fabrikam.sim", 2400), ("tailspin.sim", 7200))
    [finding] = internal_recipient_unknown(
        facts(tracking={"EX01": tracking(50, unknown=unknown)}, accepted_domains={"organization": result})
    )
    assert finding.title == (
        "Recipients in fabrikam.sim are rejected as unknown since the accepted domain changed "
        "(20 with 5.1.1, 5 with 5.1.10)"
    )
    assert finding.weight == 25  # recipients in our own domains only: the partner's 5.4.1 is not ours
    assert finding.evidence[0] == (
        "20 recipient(s) rejected with 5.1.1 in the last 10 minutes of tracking log: recipient not found "
        "(RESOLVER.ADR.RecipNotFound / ExRecipNotFound, User unknown)"
    )
    assert finding.evidence[1].startswith("5 recipient(s) rejected with 5.1.10 in the last 10 minutes")
    assert finding.evidence[1].endswith("recipient not found by SMTP address lookup (RESOLVER.ADR.RecipientNotFound)")
    assert "not counted: 7 recipient(s) outside the accepted domains" in " ".join(finding.evidence)
    assert any(e.startswith("accepted domain fabrikam.sim (Authoritative) changed") and "40 minutes ago" in e
               and e.endswith("its recipients are rejected") for e in finding.evidence)  # fmt: skip
    assert any(e.startswith("accepted domain tailspin.sim") and e.endswith("none of the rejected recipients is in it")
               for e in finding.evidence)  # fmt: skip
    assert finding.next_step.startswith("The accepted domain fabrikam.sim changed 40 minutes ago")
    assert 'Get-AcceptedDomain "fabrikam.sim"' in finding.next_step


def test_recipient_unknown_counts_only_our_domains_and_needs_ten() -> None:
    ours = accepted(("contoso.sim", None))
    few = tracking(50, unknown={("5.1.1", "contoso.sim"): 3, ("5.4.1", "partner.example"): 40})
    assert internal_recipient_unknown(facts(tracking={"EX01": few}, accepted_domains={"organization": ours})) == []
    wildcard = AcceptedDomainResult((AcceptedDomain("*.contoso.sim", "Authoritative", False, False, None),))
    many = tracking(50, unknown={("5.1.10", "eu.contoso.sim"): 12})
    [finding] = internal_recipient_unknown(facts(tracking={"EX01": many}, accepted_domains={"organization": wildcard}))
    assert finding.title == "Recipients in our domains are rejected as unknown (12 with 5.1.10)"
    assert not finding.next_step.startswith(("The accepted domain", "Accepted domains changed"))
    # The accepted domains could not be read: everything counts, and the finding says so.
    [blind] = internal_recipient_unknown(facts(tracking={"EX01": few}))
    assert blind.weight == 43 and any("could not be read" in e for e in blind.evidence)


def test_inbound_silence_plus_mx_drift_points_at_dns() -> None:
    drifted = {"contoso.sim": domain("contoso.sim", hosts=("mx.hijacked.example",), drift=True)}
    [finding] = inbound_dns_and_smtp(facts(dns_domains=drifted, tracking={"EX01": tracking(0)}))
    assert finding.rule == "inbound_mx" and finding.next_step.startswith("Inbound mail is silent and the MX is wrong")
    assert any("no message arrived from outside the organisation" in e for e in finding.evidence)
    [busy] = inbound_dns_and_smtp(facts(dns_domains=drifted, tracking={"EX01": tracking(40)}))
    assert not busy.next_step.startswith("Inbound mail is silent")
    # Internal mail is received over SMTP too (submission, hops between servers): it must not hide the silence.
    [internal_only] = inbound_dns_and_smtp(facts(dns_domains=drifted, tracking={"EX01": tracking(0, internal=60)}))
    assert internal_only.next_step.startswith("Inbound mail is silent and the MX is wrong")
    assert inbound_dns_and_smtp(facts(dns_domains={"contoso.sim": domain("contoso.sim")})) == []


def test_missing_mx_is_a_real_absence_only() -> None:
    gone = {"contoso.sim": domain("contoso.sim", mx_status=NXDOMAIN, hosts=())}
    # NXDOMAIN for the whole domain: MX answer is "missing", records 0 -> reported
    assert inbound_dns_and_smtp(facts(dns_domains=gone))[0].rule == "inbound_mx"
    unknown = {"contoso.sim": domain("contoso.sim", mx_status=TIMEOUT, hosts=())}
    assert inbound_dns_and_smtp(facts(dns_domains=unknown)) == []  # a timeout is not a missing MX


def test_a_crashing_rule_is_reported_not_fatal() -> None:
    bad = facts(queues={"EX01": object()})  # not a QueueResult: the queue rules crash on it
    report: Report = build_report(bad)
    assert any(f.rule.startswith("rule_error_") and f.severity == "info" for f in report.findings)


def test_inbound_silence_while_the_rest_flows() -> None:
    [finding] = inbound_silence(facts(tracking={"EX01": tracking(0, internal=60)}))
    assert finding.severity == "critical" and finding.scopes == ("inbound",)
    assert "60 internal and outbound messages" in finding.evidence[1]
    assert inbound_silence(facts(tracking={"EX01": tracking(0, internal=10)})) == []  # a quiet night
    assert inbound_silence(facts(tracking={"EX01": tracking(3, internal=60)})) == []  # outside mail arrives
    drifted = {"contoso.sim": domain("contoso.sim", hosts=("mx.hijacked.example",), drift=True)}
    # The MX explains the silence: inbound_dns_and_smtp names it, this rule stays out of the way.
    assert inbound_silence(facts(dns_domains=drifted, tracking={"EX01": tracking(0, internal=60)})) == []
    # A server whose log could not be read may be the one that receives from outside: no verdict.
    partial = Facts({"tracking": {"EX02": tracking(0, internal=60)}}, {"tracking": {"EX01": "timeout: ..."}}, NOW)
    assert inbound_silence(partial) == []


def cert(services: str, days: float) -> Certificate:
    after = datetime.fromtimestamp(NOW + days * 86400, UTC)
    return Certificate("EX01", f"T{services}{days}", f"CN={services or 'x'}", "CN=CA", None, after, services, "", False)


def test_certificates_report_what_the_alert_reports() -> None:
    """SMTP/IIS or unknown bindings under 30 days are findings (as the alert fires for them); None and
    IMAP/POP-only are not; an expired certificate with unknown bindings is critical, as the alert's
    critical tier (it may be bound to SMTP)."""
    certs = (cert("IIS, SMTP", 10), cert("SMTP", -2), cert("unknown", 5), cert("unknown", -40), cert("None", 3),
             cert("IMAP, POP", 3), cert("IIS, SMTP", 45))  # fmt: skip
    found = certificates(facts(certificates={"EX01": CertificateResult("EX01", certs)}))
    assert sorted((f.title, f.severity) for f in found) == [
        ("Expired certificate on EX01: CN=SMTP", "critical"),
        ("Expired certificate on EX01: CN=unknown (services unknown)", "critical"),
        ("Expiring certificate on EX01: CN=IIS, SMTP", "warning"),
        ("Expiring certificate on EX01: CN=unknown (services unknown)", "warning"),
    ]
    assert services_text(24) == services_text("IIS, SMTP") == "IIS, SMTP"  # a replayed capture's number
    assert services_text(None) == "unknown" and services_text(0) == services_text("None") == "None"


def test_wildcard_relay_scope() -> None:
    def scope(name: str, kind: str = "InternalRelay") -> str | None:
        d = AcceptedDomain(name, kind, False, False, None)
        return d.relay_scope if d.relays_everything else None

    assert scope("*") == "every domain" and scope("*.com") == "every .com domain"
    assert (
        scope("*.co.uk", "ExternalRelay") == "every .co.uk domain" and scope("*.github.io") == "every .github.io domain"
    )
    assert scope("*.contoso.com") is None and scope("*.local") is None and scope("contoso.com") is None
    assert scope("*.com", "Authoritative") is None  # not a relay: unknown recipients get 5.1.1


def ip_result(ip: str, *verdicts: tuple[str, str, tuple[str, ...], str]) -> IpResult:
    ptr = PtrResult(ip, Answer(ip, "PTR", OK, (f"ex.{ip}",)), (f"ex.{ip}",), True, True, f"ex.{ip}")
    return IpResult(ip, ptr, tuple(DnsblResult(ip, z, v, c, t) for z, v, c, t in verdicts), None, 1)


def test_unusable_blocklists_are_one_finding_per_list_and_could_not_check_lines() -> None:
    refused = ("zen.spamhaus.org", "public_resolver", ("127.255.255.254",), "")
    clean = ("bl.spamcop.net", "not_listed", (), "")
    dead = ("dead.example", "test_point_not_listed", (), "")
    ips = {ip: ip_result(ip, refused, clean, dead) for ip in ("192.0.2.10", "192.0.2.20")}
    found = blocklists_unusable(facts(dns_ips=ips))
    assert [(f.title, f.weight) for f in found] == [
        ("Blocklist dead.example could not be checked: it does not list its test address", 2),
        ("Blocklist zen.spamhaus.org could not be checked: it refuses queries from this resolver", 2),
    ]
    assert found[1].evidence == (
        "zen.spamhaus.org refuses queries from this resolver (127.255.255.254: query via a public/open resolver)",
        "not checked against zen.spamhaus.org, neither listed nor clean: 192.0.2.10, 192.0.2.20",
    )
    report = build_report(facts(dns_ips=ips))
    assert report.unchecked == (
        "dnsbl dead.example: dead.example does not list its RFC 5782 test address 127.0.0.2: the zone name is wrong "
        "or the list is gone, so its 'not listed' means nothing (not checked: 192.0.2.10, 192.0.2.20)",
        "dnsbl zen.spamhaus.org: zen.spamhaus.org refuses queries from this resolver (127.255.255.254: query via a "
        "public/open resolver) (not checked: 192.0.2.10, 192.0.2.20)",
    )
    assert report.exit_code == 3 and not any(f.rule == "blocklisted" for f in report.findings)


def test_queued_recipient_unknown_counts_messages_per_code() -> None:
    lookup = "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"
    queues = [
        queue("550 5.1.1 RESOLVER.ADR.RecipNotFound; not found", 12, internal=True),
        queue(lookup, 3, internal=True),
        queue("550 5.1.1 User unknown", 40),  # an external next hop: not internal
    ]
    [finding] = internal_recipient_unknown(facts(queues={"EX01": aggregate("EX01", queues, 20)}))
    assert finding.title == (
        "Messages to internal recipients are rejected as unknown (12 queued with 5.1.1, 3 queued with 5.1.10)"
    )
    assert "12 message(s) in internal queues whose LastError is 5.1.1" in finding.evidence
    assert finding.weight == 15


def test_certificate_alert_matcher_and_triage_agree_on_every_binding() -> None:
    """The services matcher of MailflowCertificateExpiring selects exactly the certificates triage reports."""
    rules = yaml.safe_load((Path(__file__).resolve().parents[2] / "dashboards/prometheus/alerts.yml").read_text())
    expr = next(
        r["expr"] for g in rules["groups"] for r in g["rules"] if r.get("alert") == "MailflowCertificateExpiring"
    )
    matcher = re.compile(re.search(r'services=~"([^"]*)"', expr).group(1))  # type: ignore[union-attr]
    for value in (None, 0, 1, 2, 4, 8, 16, 24, 31, 32, 64, 127, "IMAP, POP", "UM, UMCallRouter", "Federation"):
        services = services_text(value)
        reported = cert(services, 5).carries_mail is not False
        assert bool(matcher.fullmatch(services)) == reported, services
