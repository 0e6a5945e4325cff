"""Triage correlation rules on hand-built facts (the collectors' own result types, no mocks)."""

from __future__ import annotations

from datetime import UTC, datetime

from exporter.dnscheck.baseline import DriftState
from exporter.dnscheck.collectors import DomainResult
from exporter.dnscheck.mx import MxHost, MxResult
from exporter.dnscheck.policy import PolicyRecord, PolicyResult
from exporter.dnscheck.resolver import NXDOMAIN, OK, TIMEOUT, Answer
from exporter.dnscheck.spf import SpfAnalysis
from exporter.exchange.accepted_domains import AcceptedDomain, AcceptedDomainResult
from exporter.exchange.lasterror import parse_smtp_error
from exporter.exchange.queues import QueueInfo, aggregate
from exporter.exchange.tracking import TrackingResult
from exporter.triage.facts import Facts
from exporter.triage.model import Report
from exporter.triage.report import build_report
from exporter.triage.rules import (
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


def tracking(received: int, failures: int = 0, internal: int = 0) -> TrackingResult:
    """``received`` messages from outside and ``internal`` ones from inside (each a RECEIVE over SMTP)."""
    return TrackingResult(
        server="EX01", events={}, failures={}, latency_buckets=(0,), latency_sum=0.0, stuck=0, last_event=None,
        truncated_polls=0, evictions=0, skipped_seconds=0.0, new_events=received + internal,
        window_events={("RECEIVE", "SMTP"): received + internal} if received + internal else {},
        window_failures={("5.1.1", "recipient_unknown"): failures} if failures else {}, window_seconds=600.0,
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


def test_internal_511_after_an_accepted_domain_change_points_at_recipient_policy() -> None:
    changed = AcceptedDomain("fabrikam.sim", "InternalRelay", False, False, datetime.fromtimestamp(NOW - 3600, UTC))
    result = AcceptedDomainResult((changed,))
    [finding] = internal_recipient_unknown(
        facts(tracking={"EX01": tracking(50, failures=25)}, accepted_domains={"organization": result})
    )
    assert any("accepted domain fabrikam.sim (InternalRelay) changed" in e for e in finding.evidence)
    assert finding.next_step.startswith("Accepted domains changed recently")
    assert internal_recipient_unknown(facts(tracking={"EX01": tracking(50, failures=3)})) == []  # a few typos


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
