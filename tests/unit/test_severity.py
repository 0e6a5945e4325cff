"""One severity table (exporter/triage/severity.py), held equal on both sides.

For every fault of the table, the triage finding and the alert rules of
dashboards/prometheus/alerts.yml give the same severity at the same volume, at each threshold and
on either side of it. Each case plants a fault in a SnapshotStore (the collectors' own result types,
as a poll leaves them) and reads it the two ways the exporter does: triage from the store
(``facts_from_store``, ``build_report``), and the alert rules over the store's exposition (the real
scrape path, ``MailflowCollector``) through ``promtool test rules`` (tests/promtool_alerts.py). All
cases run in one promtool call, each as its own scrape ``instance``.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from exporter.dnscheck.collectors import DomainResult, IpResult
from exporter.dnscheck.dnsbl import DnsblResult
from exporter.dnscheck.mx import MxHost, MxResult
from exporter.dnscheck.policy import PolicyRecord, PolicyResult
from exporter.dnscheck.ptr import PtrResult
from exporter.dnscheck.render import render_domains, render_ips, render_smtp
from exporter.dnscheck.resolver import NXDOMAIN, OK, Answer
from exporter.dnscheck.smtp_probe import SmtpProbeResult
from exporter.dnscheck.spf import SpfAnalysis
from exporter.exchange.accepted_domains import AcceptedDomain, AcceptedDomainResult, render_accepted_domains
from exporter.exchange.back_pressure import BackPressureResult, ResourceMeter, render_back_pressure
from exporter.exchange.certificates import Certificate, CertificateResult, render_certificates
from exporter.exchange.components import ComponentResult, ComponentState, render_components
from exporter.exchange.database_copies import DatabaseCopy, DatabaseCopyResult, render_database_copies
from exporter.exchange.drift import ConnectorDrift
from exporter.exchange.lasterror import CATEGORIES, SmtpError
from exporter.exchange.permissions import missing_message
from exporter.exchange.queues import QueueInfo, aggregate, render_queues
from exporter.exchange.receive_connectors import ReceiveConnector, ReceiveConnectorResult, render_receive_connectors
from exporter.exchange.send_connectors import SendConnectorResult, render_send_connectors
from exporter.exchange.server_clock import ClockReading
from exporter.exchange.service_health import RoleServices, ServiceHealthResult, render_service_health
from exporter.exchange.tracking import TrackingResult, render_tracking
from exporter.exchange.transport_dns import Adapter, DnsSetting, TransportDnsResult, render_transport_dns
from exporter.metrics import MailflowCollector, build_registry
from exporter.probe.collector import render_probes
from exporter.probe.result import ProbeResult
from exporter.store import Snapshot, SnapshotStore
from exporter.triage.facts import facts_from_store
from exporter.triage.report import build_report
from exporter.triage.severity import FAULTS, RETRYING, Fault, category_fault, fault
from tests.promtool_alerts import ALERT_RULES, firing_alerts, scrape_series

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_800_000_000.0
STALE = 3.0
RANK = {None: 0, "info": 1, "warning": 2, "critical": 3}
# Its alert needs 30 minutes of counters rising (internal mail) and flat (mail from outside), which
# constant series cannot show: tests/unit/test_triage_rules.py and alerts_test.yml hold each side,
# and test_the_alert_rules_carry_the_table_severities its severity.
# inbound_silence needs counters that rise over time; the blindness findings need failed polls with
# their exceptions (tests/integration/test_blindness.py plants them on the simulator).
NOT_BY_SCRAPE = {"inbound_silence", "server_unreachable", "collector_failed"}


# ---------------------------------------------------------------- the table itself


def _rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(ALERT_RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_every_lasterror_category_has_exactly_one_entry() -> None:
    """A category the classifier learns must get a severity (and so an alert) on purpose."""
    named = [c for f in FAULTS for c in f.categories]
    missing = sorted(set(CATEGORIES) - set(named))
    assert missing == [], f"add a Fault for {missing} to FAULTS in exporter/triage/severity.py"
    assert sorted(c for c in set(named) if named.count(c) > 1) == []
    assert sorted(set(named) - set(CATEGORIES)) == [], "an entry names a category lasterror.py does not have"


def test_table_entries_are_well_formed() -> None:
    assert len({f.finding for f in FAULTS}) == len(FAULTS)
    for f in FAULTS:
        assert f.severity in ("critical", "warning", "info") and f.starts_at >= 1, f
        assert f.critical_at is None or (f.severity != "critical" and f.critical_at > f.starts_at), f
        assert f.alerts and all(a.startswith("Mailflow") for a in f.alerts), f
    assert category_fault("a_category_from_the_future").alerts == (RETRYING,)  # never silent at run time


def test_the_alert_rules_carry_the_table_severities() -> None:
    """Each alert the table names has exactly one rule per severity tier of the faults naming it;
    a volume-scaled tier compares with the table's threshold."""
    rules = _rules()
    for name in sorted({a for f in FAULTS for a in f.alerts}):
        tiers = {t for f in FAULTS if name in f.alerts for t in f.tiers}
        mine = [r for r in rules if r["alert"] == name]
        assert mine, f"{name} is in the severity table but not in alerts.yml"
        assert sorted(r["labels"]["severity"] for r in mine) == sorted({s for _, s in tiers}), name
        for volume, severity in tiers:
            if severity == "critical" and volume > 1:
                [rule] = [r for r in mine if r["labels"]["severity"] == "critical"]
                assert re.search(rf">=\s*{volume}\s*$", rule["expr"].strip()), (name, rule["expr"])
    shared: dict[str, set[tuple[tuple[int, str], ...]]] = {}
    for f in FAULTS:
        for alert in f.alerts if f.categories else ():
            shared.setdefault(alert, set()).add(f.tiers)
    assert {a: t for a, t in shared.items() if len(t) > 1} == {}, "faults sharing a queue alert share its tiers"


_CATEGORY_MATCHER = re.compile(r'(?<![\w])category\s*(=~|!~|!=|=)\s*"([^"]*)"')


def test_queue_alerts_select_exactly_their_table_categories() -> None:
    """Every category matcher of a queue alert selects the categories of the faults naming it (the
    generic MailflowQueueRetrying: all those without an alert of their own)."""
    for rule in _rules():
        owners = [f for f in FAULTS if rule["alert"] in f.alerts and f.categories]
        matchers = _CATEGORY_MATCHER.findall(rule["expr"])
        if not owners:
            continue
        assert matchers, rule["alert"]
        internal = 'next_hop_category="Internal"' in rule["expr"]
        assert internal == any(f.internal_only for f in owners), rule["alert"]
        wanted = {c for f in owners for c in f.categories}
        for op, value in matchers:
            hit = {c for c in CATEGORIES if (re.fullmatch(value, c) if "~" in op else c == value)}
            selected = hit if op in ("=", "=~") else set(CATEGORIES) - hit
            assert selected == wanted, (rule["alert"], rule["labels"]["severity"], op, value)


def test_triage_takes_every_severity_from_the_table() -> None:
    """No rule in exporter/triage writes a severity literal (but the crash report of a broken rule)."""
    for path in sorted((ROOT / "exporter" / "triage").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Finding" and len(node.args) > 1:
                rule, severity = node.args[0], node.args[1]
                if isinstance(severity, ast.Constant):
                    crash = isinstance(rule, ast.JoinedStr) and ast.unparse(rule).startswith("f'rule_error_")
                    assert crash, f"{path.name}:{node.lineno}: severity {severity.value!r} is not from the table"


# ---------------------------------------------------------------- faults planted in a store


@dataclass
class Case:
    """A fault planted as poll results; ``expect`` is, per table finding, the volume both sides see."""

    name: str
    results: dict[str, dict[str, Any]]
    volumes: dict[str, float]
    failures: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)
    # Server clocks (skew, seconds) as the sessions read them from Date headers: the scrape shows
    # them (mailflow_server_clock_skew_seconds), the tracking results carry the same to triage.
    clocks: dict[str, float] = field(default_factory=dict)


def _queue(server: str, category: str, messages: int, internal: bool = False, n: int = 0) -> QueueInfo:
    error = SmtpError(raw=f"a LastError classified {category}", response="...", category=category)
    return QueueInfo(
        identity=f"{server}\\{10 + n}", server=server, kind="delivery",
        delivery_type="SmtpRelayToMailboxDeliveryGroup" if internal else "DnsConnectorDelivery",
        next_hop_domain=f"site{n}.contoso.sim" if internal else f"domain{n}.example",
        next_hop_category="Internal" if internal else "External", status="Retry", message_count=messages,
        deferred_count=0, incoming_rate=0.0, outgoing_rate=0.0, retry_count=3, next_retry_time=None, last_error=error,
    )  # fmt: skip


def _system_queue(server: str, kind: str, messages: int) -> QueueInfo:
    name = {"poison": "Poison Message", "unreachable": "Unreachable Domain"}[kind]
    return QueueInfo(
        identity=f"{server}\\{kind.title()}", server=server, kind=kind, delivery_type="Undefined",
        next_hop_domain=name, next_hop_category="Internal", status="Ready", message_count=messages,
        deferred_count=0, incoming_rate=0.0, outgoing_rate=0.0, retry_count=0, next_retry_time=None, last_error=None,
    )  # fmt: skip


def _queues(queues: Iterable[QueueInfo]) -> dict[str, Any]:
    by_server: dict[str, list[QueueInfo]] = {}
    for q in queues:
        by_server.setdefault(q.server, []).append(q)
    return {"queues": {s: aggregate(s, qs, 20) for s, qs in by_server.items()}}


def _queue_volumes(queues: list[QueueInfo]) -> dict[str, float]:
    """Per queue fault, its volume: messages in delivery queues retrying with its categories."""
    out = {}
    for f in FAULTS:
        if f.categories:
            out[f.finding] = sum(
                q.message_count
                for q in queues
                if q.last_error is not None
                and q.last_error.category in f.categories
                and (q.next_hop_category == "Internal" or not f.internal_only)
            )
    return out


def queue_cases(f: Fault) -> list[Case]:
    """One fault's categories at 0 and 1 message, then one below and at its critical threshold (or
    many messages when it has none), split over two servers and, for a family, over its categories."""
    first, last = f.categories[0], f.categories[-1]
    internal = f.internal_only

    def split(total: int) -> list[QueueInfo]:
        low = total // 2
        second = [_queue("EX02", last, low, internal, 2)] if low else []
        return [_queue("EX01", first, total - low, internal, 1), *second]

    plans = {"empty queue": [_queue("EX01", first, 0, internal)], "1 message": [_queue("EX01", first, 1, internal)]}
    if f.critical_at is not None:
        plans[f"{f.critical_at - 1} messages"] = split(f.critical_at - 1)
        plans[f"{f.critical_at} messages"] = split(f.critical_at)
    else:
        plans["60 messages"] = split(60)
    if internal:
        plans["60 messages to an external next hop"] = [_queue("EX01", first, 60, internal=False)]
    return [Case(f"{f.finding}: {plan}", _queues(qs), _queue_volumes(qs)) for plan, qs in plans.items()]


def _mixed_case() -> Case:
    """Two causes of the generic alert, each below the threshold, together above it: two warnings."""
    qs = [_queue("EX01", "auth_failure", 6, n=1), _queue("EX01", "proxy_failure", 6, n=2)]
    return Case("auth_failure and proxy_failure, 6 messages each", _queues(qs), _queue_volumes(qs))


def _tracking(server: str, stuck: int, clock_skew: float | None = None) -> TrackingResult:
    return TrackingResult(server=server, events={}, failures={}, latency_buckets=(0, 0), latency_sum=0.0,
                          stuck=stuck, last_event=None, truncated_polls=0, evictions=0, skipped_seconds=0.0,
                          new_events=0, clock_skew=clock_skew)  # fmt: skip


def _clocks(name: str, skews: dict[str, float], volumes: dict[str, float]) -> Case:
    """Servers whose clocks are off by ``skews`` seconds: both in their tracking results and read by the sessions."""
    tracking = {s: _tracking(s, 0, v) for s, v in skews.items()}
    return Case(name, {"tracking": tracking}, volumes, clocks=dict(skews))


def _back_pressure(server: str, **levels: str) -> dict[str, Any]:
    """One server's back pressure state: ``levels`` by resource (the others Low), SmtpIn paused at High."""
    meters = tuple(
        ResourceMeter(r, "C:\\Queue" if r == "UsedDiskSpace" else "", levels.get(r, "Low"), "Low", 50.0)
        for r in ("PrivateBytes", "SystemMemory", "UsedDiskSpace", "UsedVersionBuckets")
    )
    paused = ("SmtpIn",) if "High" in levels.values() else ()
    aggregate = max(levels.values(), key=("Low", "Medium", "High").index, default="Low")
    result = BackPressureResult(server, aggregate, meters, paused, ("SmtpIn", "Pickup"))
    return {"back_pressure": {server: result}}


def _shadow(server: str, primary: str, messages: int) -> QueueInfo:
    return QueueInfo(
        identity=f"{server}\\Shadow\\12", server=server, kind="shadow", delivery_type="ShadowRedundancy",
        next_hop_domain=f"{primary.lower()}.contoso.sim", next_hop_category="Internal", status="Ready",
        message_count=messages, deferred_count=0, incoming_rate=0.0, outgoing_rate=0.0, retry_count=0,
        next_retry_time=None, last_error=None,
    )  # fmt: skip


def transport_cases() -> list[Case]:
    """Back pressure by level, shadow copies held for a server that does not answer, server clocks."""
    held = aggregate("EX01", [_shadow("EX01", "EX02", 7)], 20)
    held = replace(held, shadow_primaries={"ex02.contoso.sim": "EX02"})  # as the collector names the primary
    down = ("connection", "[Errno 111] Connection refused")
    cases = [
        _one("back_pressure_high", _back_pressure("EX01", UsedDiskSpace="High")),
        _one("back_pressure_medium", _back_pressure("EX01", UsedVersionBuckets="Medium")),
        # Real servers report SystemMemory High while refusing nothing: neither side reports it.
        Case("back_pressure_high: SystemMemory", _back_pressure("EX01", SystemMemory="High"),
             {"back_pressure_high": 0, "back_pressure_medium": 0}),
        Case("shadow_for_unreachable_server", {"queues": {"EX01": held}}, {"shadow_for_unreachable_server": 7},
             {"queues": {"EX02": down}}),
        Case("shadow_for_unreachable_server: primary answers", {"queues": {"EX01": held}},
             {"shadow_for_unreachable_server": 0}),
        _clocks("server_clock_skew: 121 s", {"EX01": 0.0, "EX02": -121.0}, {"server_clock_skew": 1}),
        _clocks("server_clock_skew: 120 s", {"EX01": 0.0, "EX02": 120.0}, {"server_clock_skew": 0}),
        _clocks("exporter_clock_skew", {"EX01": 180.0, "EX02": 185.0}, {"exporter_clock_skew": 1}),
    ]  # fmt: skip
    return cases


def _certificate(days: float, services: str = "IIS, SMTP") -> dict[str, Any]:
    cert = Certificate("EX01", "5A1C0E9D3B7F2A4C6E8D0B1F3A5C7E9D1B3F5A7C", "CN=mail.contoso.sim", "CN=Contoso CA",
                       None, datetime.fromtimestamp(NOW + days * 86400, UTC), services, "Valid", False)  # fmt: skip
    return {"certificates": {"EX01": CertificateResult("EX01", (cert,))}}


def _receive(risk: str, unverified: str = "") -> dict[str, Any]:
    name = "Relay EX01"
    connector = ReceiveConnector("EX01", name, f"EX01\\{name}", True, "FrontendTransport", ("0.0.0.0:25",),
                                 ("0.0.0.0-255.255.255.255",), (), frozenset({"AnonymousUsers"}), frozenset({"None"}),
                                 "AnonymousUsers", "None", False, "ex01.contoso.sim", None)  # fmt: skip
    result = ReceiveConnectorResult("EX01", (connector,), {name: {risk: True}}, {name: 2**32},
                                    not unverified, (), {name: unverified} if unverified else {})  # fmt: skip
    return {"receive_connectors": {"EX01": result}}


def _domain(
    mx_status: str = OK, spf: SpfAnalysis | None = None, spf_results: Mapping[str, str] | None = None,
    dmarc: bool = True,
) -> dict[str, Any]:  # fmt: skip
    name = "contoso.sim"
    answer = Answer(name, "MX", mx_status, ("10 mx1.contoso.sim.",) if mx_status == OK else ())
    hosts = (MxHost(10, "mx1.contoso.sim", OK, ("192.0.2.25",)),) if mx_status == OK else ()
    record = Answer(f"_dmarc.{name}", "TXT", OK if dmarc else NXDOMAIN, ("v=DMARC1; p=reject",) if dmarc else ())
    none = Answer(f"_mta-sts.{name}", "TXT", NXDOMAIN)
    policies = PolicyResult(PolicyRecord(record, int(dmarc), {"p": "reject"} if dmarc else {}),
                            PolicyRecord(none, 0, {}), PolicyRecord(none, 0, {}))  # fmt: skip
    result = DomainResult(name, MxResult(name, answer, hosts, False, None),
                          spf or SpfAnalysis(name, records=1, record="v=spf1 ip4:192.0.2.20 -all", lookups=0),
                          dict(spf_results or {"192.0.2.20": "pass"}), policies, {}, 5)  # fmt: skip
    return {"dns_domains": {name: result}}


def _ip(listed: bool = False, ptr: bool = True, unusable: str = "") -> dict[str, Any]:
    ip = "192.0.2.20"
    names = ("mail.contoso.sim",) if ptr else ()
    answer = Answer("20.2.0.192.in-addr.arpa", "PTR", OK if ptr else NXDOMAIN, tuple(f"{n}." for n in names))
    verdict = unusable or ("listed" if listed else "not_listed")
    codes = ("127.255.255.254",) if unusable else ("127.0.0.2",) if listed else ()
    dnsbl = DnsblResult(ip, "bl.example.net", verdict, codes, "")
    ptr_result = PtrResult(ip, answer, names, True if ptr else None, True if ptr else None, "mail.contoso.sim")
    return {"dns_ips": {ip: IpResult(ip, ptr_result, (dnsbl,), None, 2)}}


def _probe(success: bool, starttls: bool | None) -> dict[str, Any]:
    host = "mx1.contoso.sim"
    probe = SmtpProbeResult(host, "192.0.2.25", 25, success, "" if success else "connection",
                            "" if success else "connection refused", starttls_offered=starttls)  # fmt: skip
    return {"smtp": {host: probe}}


def _mailflow_probe(outcome: str, stage: str = "", duration: float | None = None) -> dict[str, Any]:
    result = ProbeResult("inbound-contoso", "inbound", outcome, stage, duration, "accepted by mail1.contoso.sim")
    return {"mailflow_probe": {"inbound-contoso": result}}


def _dns(server: str, adapter_with_dns: str) -> TransportDnsResult:
    """A server whose ExternalDNSAdapterGuid names its adapter; that adapter has DNS servers or not."""
    guid = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    servers = ("192.0.2.53",) if adapter_with_dns else ()
    setting = DnsSetting(True, guid, (), "Any")
    return TransportDnsResult(server, setting, setting, (Adapter(adapter_with_dns or "LAN", guid, servers),))


def _one(finding: str, results: dict[str, Any], volume: float = 1, **failures: dict[str, tuple[str, str]]) -> Case:
    return Case(finding, results, {finding: volume}, dict(failures))


def other_cases() -> list[Case]:
    database = "DB01"
    copy = DatabaseCopy(database, "EX01", "Mounted", True, 0, 0, "Healthy", False)
    failed = DatabaseCopy(database, "EX02", "FailedAndSuspended", False, 120, 0, "Failed", True)
    dismounted = DatabaseCopy(database, "EX01", "Dismounted", True, 0, 0, "Healthy", False)
    active = ComponentResult("EX01", (ComponentState("EX01", "HubTransport", "Active", False, {}),))
    inactive = ComponentResult(
        "EX02", (ComponentState("EX02", "HubTransport", "Inactive", False, {"Maintenance": "Inactive"}),)
    )
    stopped = RoleServices("EX01", "Mailbox Server Role", False, ("MSExchangeIS",), ("MSExchangeTransport",))
    relay_domain = AcceptedDomain("*", "ExternalRelay", False, False, None)
    drift = SendConnectorResult((), (ConnectorDrift("Internet", "smart_hosts", True),))
    cases = [
        _one("poison_messages", _queues([_system_queue("EX01", "poison", 2)])),
        _one("unreachable_messages", _queues([_system_queue("EX02", "unreachable", 3)])),
        _one("transport_component_inactive", {"components": {"EX01": active, "EX02": inactive}}),
        _one("database_not_mounted", {"database_copies": {"EX01": DatabaseCopyResult("EX01", (dismounted,))}}),
        _one("database_copy_unhealthy", {"database_copies": {"EX01": DatabaseCopyResult("EX01", (copy,)),
                                                             "EX02": DatabaseCopyResult("EX02", (failed,))}}),
        _one("certificate_expiring", _certificate(10)),
        _one("certificate_expired", _certificate(-3)),
        # Bindings unknown (only RawData arrived): it may be bound to SMTP, so both sides report it alike.
        Case("certificate_expiring: services unknown", _certificate(10, "unknown"), {"certificate_expiring": 1}),
        Case("certificate_expired: services unknown", _certificate(-3, "unknown"), {"certificate_expired": 1}),
        Case("certificate_expired: bound to nothing", _certificate(-3, "None"), {"certificate_expired": 0}),
        _one("service_stopped", {"service_health": {"EX01": ServiceHealthResult("EX01", (stopped,))}}),
        _one("open_relay", _receive("anonymous_relay")),
        _one("relay_unverified", _receive("anonymous_relay_unverified", "cmdlet_unavailable")),
        _one("accepted_domain_relay", {"accepted_domains": {"organization": AcceptedDomainResult((relay_domain,))}}),
        _one("connector_drift", {"send_connectors": {"organization": drift}}),
        _one("transport_dns_unconfigured", {"transport_dns": {"EX01": _dns("EX01", ""), "EX02": _dns("EX02", "LAN")}}),
        _one("inbound_mx", _domain(mx_status=NXDOMAIN)),
        _one("inbound_smtp_probe", _probe(False, None)),
        _one("inbound_starttls", _probe(True, False)),
        _one("blocklisted", _ip(listed=True)),
        _one("blocklist_unusable", _ip(unusable="public_resolver")),
        _one("spf_not_passing", _domain(spf_results={"192.0.2.20": "fail"})),
        _one("spf_invalid", _domain(spf=SpfAnalysis("contoso.sim", records=2, record="v=spf1 -all", lookups=0,
                                                    errors=["2 v=spf1 records"]))),
        _one("ptr_mismatch", _ip(ptr=False)),
        _one("dmarc_missing", _domain(dmarc=False)),
        _one("probe_failed", _mailflow_probe("failure", "deliver")),
        _one("probe_slow", _mailflow_probe("success", duration=300.0)),
        Case("probe_slow: 120 seconds is not slow", _mailflow_probe("success", duration=120.0), {"probe_slow": 0}),
        _one("probe_blind", _mailflow_probe("unknown", "tracking_blind")),
        _one("missing_role", {}, certificates={
            "EX01": ("permission", missing_message("Get-ExchangeCertificate", "svc-mailflow@contoso.sim"))}),
    ]  # fmt: skip
    for stuck in ((5,), (6,), (3, 3)):
        tracking = {f"EX0{i + 1}": _tracking(f"EX0{i + 1}", n) for i, n in enumerate(stuck)}
        cases.append(Case(f"stuck_messages: {' + '.join(map(str, stuck))}", {"tracking": tracking},
                          {"stuck_messages": max(stuck)}))  # fmt: skip
    return cases


def all_cases() -> list[Case]:
    cases = [c for f in FAULTS if f.categories for c in queue_cases(f)]
    return [*cases, _mixed_case(), *other_cases(), *transport_cases()]


# ---------------------------------------------------------------- both sides of each case


class _Rendered:
    """What MailflowCollector needs of a collector to render: its name and its render function."""

    def __init__(self, name: str, render: Callable[[Iterable[Any]], list[Any]]) -> None:
        self.name = name
        self._render = render

    def render(self, results: Mapping[str, Any]) -> list[Any]:
        return self._render(results.values())


RENDERERS = [
    _Rendered("queues", render_queues),
    _Rendered("back_pressure", render_back_pressure),
    _Rendered("tracking", lambda rs: render_tracking(rs, (60.0,))),
    _Rendered("components", render_components),
    _Rendered("database_copies", render_database_copies),
    _Rendered("certificates", render_certificates),
    _Rendered("service_health", render_service_health),
    _Rendered("receive_connectors", render_receive_connectors),
    _Rendered("send_connectors", render_send_connectors),
    _Rendered("accepted_domains", render_accepted_domains),
    _Rendered("transport_dns", render_transport_dns),
    _Rendered("dns_domains", render_domains),
    _Rendered("dns_ips", render_ips),
    _Rendered("smtp", render_smtp),
    _Rendered("mailflow_probe", render_probes),
]


def _store(case: Case) -> SnapshotStore:
    store = SnapshotStore(clock=lambda: NOW)
    for collector, by_target in case.results.items():
        for target, result in by_target.items():
            store.put(Snapshot(collector, target, NOW - 1, 0.5, 60.0, True, result))
    for collector, failed in case.failures.items():
        for target, (reason, message) in failed.items():
            store.put(Snapshot(collector, target, NOW - 1, 0.5, 60.0, False, None, reason, message))
    return store


@dataclass(frozen=True)
class Seen:
    """Per case: triage findings' severities and firing alerts, by table finding."""

    triage: dict[str, dict[str, set[str]]]
    alerts: dict[str, list[dict[str, str]]]


def _collector(store: SnapshotStore, case: Case) -> MailflowCollector:
    """The scrape of ``case``: its store, and its server clocks as the sessions would have read them."""
    clocks = {server: ClockReading(skew, NOW - 1) for server, skew in case.clocks.items()}
    return MailflowCollector(store, RENDERERS, STALE, lambda: clocks)  # type: ignore[arg-type]


@functools.cache
def seen() -> Seen:
    cases = all_cases()
    triage: dict[str, dict[str, set[str]]] = {}
    series = []
    for number, case in enumerate(cases):
        store = _store(case)
        report = build_report(facts_from_store(store, [r.name for r in RENDERERS], STALE))
        found: dict[str, set[str]] = {}
        for finding in report.findings:
            found.setdefault(finding.rule, set()).add(finding.severity)
        triage[case.name] = found
        registry = build_registry(_collector(store, case), process_metrics=False)
        series += scrape_series(generate_latest(registry).decode(), f"case{number}", NOW)
    alerts: dict[str, list[dict[str, str]]] = {c.name: [] for c in cases}
    for alert in firing_alerts(series):
        alerts[cases[int(alert["instance"][len("case") :])].name].append(alert)
    return Seen(triage, alerts)


def _alert_severity(f: Fault, alerts: list[dict[str, str]]) -> str | None:
    mine = [a for a in alerts if a["alertname"] in f.alerts]
    if f.categories:  # a queue alert shared by several faults tells them apart by its category label
        mine = [a for a in mine if a.get("category", f.categories[0]) in f.categories]
    return max((a["severity"] for a in mine), key=lambda s: RANK[s], default=None)


CASES = all_cases()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_triage_and_alerts_agree_with_the_table(case: Case) -> None:
    result = seen()
    for finding, volume in case.volumes.items():
        f = fault(finding)
        triage = result.triage[case.name].get(finding, set())
        expected = f.severity_at(volume) if volume > 0 else None
        assert triage == ({expected} if expected else set()), (finding, volume, "triage", triage)
        if finding in NOT_BY_SCRAPE:
            continue
        alert = _alert_severity(f, result.alerts[case.name])
        wanted = expected if volume >= f.starts_at else None  # below the start: triage info, no alert
        assert alert == wanted, (finding, volume, "alerts", result.alerts[case.name])


def test_every_table_entry_is_held_by_a_case() -> None:
    planted = {finding for c in CASES for finding, volume in c.volumes.items() if volume > 0}
    assert {f.finding for f in FAULTS} - planted == NOT_BY_SCRAPE


def test_a_healthy_store_gives_no_finding_and_no_alert() -> None:
    """The control: healthy results of every kind the cases use, nothing reported on either side."""
    copy = DatabaseCopy("DB01", "EX01", "Mounted", True, 0, 0, "Healthy", False)
    healthy = {
        **_queues([_system_queue("EX01", "poison", 0)]),
        "components": {"EX01": ComponentResult("EX01", (ComponentState("EX01", "HubTransport", "Active", False, {}),))},
        "database_copies": {"EX01": DatabaseCopyResult("EX01", (copy,))},
        **_certificate(200),
        **_domain(),
        **_ip(),
        **_probe(True, True),
        **_mailflow_probe("success", duration=4.0),
        "tracking": {"EX01": _tracking("EX01", 0, 1.0)},
        **_back_pressure("EX01"),
    }
    case = Case("healthy", healthy, {}, clocks={"EX01": 1.0})
    store = _store(case)
    report = build_report(facts_from_store(store, [r.name for r in RENDERERS], STALE))
    assert [(f.rule, f.severity) for f in report.findings] == []
    registry = build_registry(_collector(store, case), process_metrics=False)
    assert firing_alerts(scrape_series(generate_latest(registry).decode(), "healthy", NOW)) == []
