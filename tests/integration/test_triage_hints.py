"""Hints, counts and titles a tired admin reads first (issue 14, item 4), each planted in the simulator or
the demo DNS server beside a healthy control: recipients rejected as unknown counted per code with the
accepted domain that just changed, certificates whose bindings are unknown (triage and the alert agree,
checked with ``promtool test rules`` on the real scrape), ``*.com`` accepted domains, and blocklists that
refuse our queries. Real pypsrp against the simulator, real DNS."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.core import CollectorRegistry

from exporter.demo import deep_merge, demo_dns_settings
from exporter.netsim.demo_net import DNSBL_ZONE, DOMAIN, DemoNet
from exporter.service import Service
from exporter.settings import Settings
from exporter.simulator import Scenario, Simulator
from exporter.triage.model import Report
from tests.integration.conftest import SimFactory, settings_for
from tests.integration.test_triage import healthy_org
from tests.tools import ci_tool

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "dashboards" / "prometheus" / "alerts.yml"
NO_TRACKING = {"collectors": {"tracking": {"enabled": False}}}
CODE = re.compile(r"(?<![\d.])[245]\.\d{1,3}\.\d{1,3}(?![\d.])")


def run(settings: Settings) -> tuple[Report, CollectorRegistry]:
    """Poll like ``check`` does (then the targets polling revealed), triage, and keep the registry."""
    service = Service(settings)
    try:
        service.poll_all()
        for _ in range(2):
            if not service.poll_all(only_new=True):
                break
        return service.triage(), service.registry
    finally:
        service.stop()


def samples(registry: CollectorRegistry, name: str) -> list[tuple[dict[str, str], float]]:
    return [(dict(s.labels), s.value) for m in registry.collect() for s in m.samples if s.name == name]


# ---------------------------------------------------------------- recipients rejected as unknown


def unknown_recipients_org(codes: list[str], changed: bool) -> dict[str, Any]:
    """Mail from outside to fabrikam.sim, half of it failing with ``codes`` (real Exchange texts)."""
    org = healthy_org()
    org["accepted_domains"] = [
        {"domain": "contoso.sim", "default": True},
        {"name": "Fabrikam", "domain": "fabrikam.sim", **({"changed_minutes_ago": 40} if changed else {})},
        {"name": "Tailspin", "domain": "tailspin.sim", "changed_minutes_ago": 300},
    ]
    traffic = {
        "messages_per_minute": 20,
        "failure_ratio": 0.5,
        "failure_codes": codes,
        "recipient_domains": ["fabrikam.sim"],
        "history_minutes": 4,  # all of it inside the exporter's first window (initial_lookback 5 minutes)
    }
    org["servers"] = [{**s, "tracking": traffic} for s in org["servers"]]
    return org


def fail_counts(sim: Simulator, scenario: Scenario) -> dict[tuple[str, str], int]:
    """Ground truth from the simulator's own log: FAIL recipients by (enhanced code, recipient domain)."""
    counts: dict[tuple[str, str], int] = {}
    t0 = sim.tracking.timeline.start
    for server in scenario.servers:
        for e in sim.tracking.events(server.name, start=t0 - 3600, end=t0 + 1, now=t0):
            if e.event_id != "FAIL":
                continue
            for rcpt, status in zip(e.recipients, e.recipient_status, strict=True):
                key = (CODE.search(status).group(0), rcpt.rpartition("@")[2])  # type: ignore[union-attr]
                counts[key] = counts.get(key, 0) + 1
    return counts


def start_frozen(org: dict[str, Any]) -> tuple[Simulator, Scenario]:
    """A simulator whose clock stands still: the exporter reads a log that no longer grows, so the test
    knows every event it read."""
    scenario = Scenario.from_dict(org)
    t0 = time.time()
    sim = Simulator(scenario, host="127.0.0.1", clock=lambda: t0)
    sim.start()
    return sim, scenario


def test_unknown_recipients_are_counted_per_code_and_the_changed_domain_is_named() -> None:
    sim, scenario = start_frozen(unknown_recipients_org(["5.1.1", "5.1.10", "5.4.1"], changed=True))
    try:
        truth = fail_counts(sim, scenario)
        report, _ = run(settings_for(sim, scenario))
    finally:
        sim.stop()
    ours = {code: n for (code, domain), n in truth.items() if domain == "fabrikam.sim"}
    theirs = sum(n for (_code, domain), n in truth.items() if domain != "fabrikam.sim")
    assert set(ours) == {"5.1.1", "5.1.10"} and theirs, truth  # the 5.4.1 ones go to outside domains
    first = report.findings[0]
    assert first.rule == "internal_recipient_unknown", [(f.rule, f.title) for f in report.findings]
    # most first, ties by code (a fresh-clone run drew 41 of each and the tie followed the log's order)
    breakdown = ", ".join(f"{n} with {c}" for c, n in sorted(ours.items(), key=lambda kv: (-kv[1], kv[0])))
    assert first.title == (
        f"Recipients in fabrikam.sim are rejected as unknown since the accepted domain changed ({breakdown})"
    )
    for code, n in ours.items():
        assert any(e.startswith(f"{n} recipient(s) rejected with {code} in the last") for e in first.evidence), (
            first.evidence
        )
    assert f"fabrikam.sim: {sum(ours.values())} ({breakdown})" in first.evidence
    assert f"not counted: {theirs} recipient(s) outside the accepted domains (refused by their servers)" in (
        first.evidence
    )
    assert any(
        e.startswith("accepted domain fabrikam.sim (Authoritative) changed")
        and e.endswith("its recipients are rejected")
        for e in first.evidence
    )
    assert any(e.startswith("accepted domain tailspin.sim") and "none of the rejected" in e for e in first.evidence)
    assert first.next_step.startswith("The accepted domain fabrikam.sim changed 40 minutes ago")
    assert 'Get-AcceptedDomain "Fabrikam"' in first.next_step
    assert first.weight == sum(ours.values())


def test_unknown_recipients_of_other_domains_are_not_ours() -> None:
    """Control: only 5.4.1 "Recipient address rejected: Access denied" from a remote directory (our users'
    typos to an Exchange Online domain): recipient_unknown in tracking, but not a finding about us."""
    sim, scenario = start_frozen(unknown_recipients_org(["5.4.1"], changed=False))
    try:
        assert fail_counts(sim, scenario)  # there are failures...
        report, _ = run(settings_for(sim, scenario))
    finally:
        sim.stop()
    assert [f.rule for f in report.findings if f.severity != "info"] == []  # ...none of them ours
    assert report.exit_code == 0


# ---------------------------------------------------------------- certificates


def alert_rule(name: str) -> dict[str, Any]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return next(r for g in groups for r in g["rules"] if r.get("alert") == name)


def render(template: str, labels: dict[str, str], value: float) -> str:
    """The two template forms MailflowCertificateExpiring uses, as Prometheus renders them."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), template)
    return re.sub(r'\{\{ printf "%\.0f" \$value \}\}', f"{value:.0f}", text)


def promtool_certificate_alerts(registry: CollectorRegistry, expected: list[dict[str, str]], tmp: Path) -> None:
    """``promtool test rules``: MailflowCertificateExpiring over the scraped expiry series fires exactly for
    ``expected`` (labels of the certificates triage reported). Expiry timestamps are shifted so that the
    evaluation time (61 minutes, past the rule's ``for: 1h``) is now."""
    rule = alert_rule("MailflowCertificateExpiring")
    now, eval_s = time.time(), 61 * 60
    base = {"job": "mailflow", "instance": "exporter:10049"}
    series, exp_alerts = [], []
    for labels, value in samples(registry, "mailflow_certificate_expiry_timestamp_seconds"):
        shown = ",".join(f'{k}="{v}"' for k, v in {**base, **labels}.items())
        series.append({"series": f"mailflow_certificate_expiry_timestamp_seconds{{{shown}}}",
                       "values": f"{value - now + eval_s:.0f}x70"})  # fmt: skip
        if {k: labels[k] for k in ("server", "thumbprint")} in expected:
            all_labels = {**base, **labels}
            days = (value - now) / 86400
            exp_alerts.append(
                {
                    "exp_labels": {**rule["labels"], **all_labels},
                    "exp_annotations": {k: render(v, all_labels, days) for k, v in rule["annotations"].items()},
                }
            )
    assert len(exp_alerts) == len(expected), (expected, series)
    test = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": "61m", "alertname": "MailflowCertificateExpiring", "exp_alerts": exp_alerts}
                ],
            }
        ],
    }
    path = tmp / "certificates_test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    result = subprocess.run([ci_tool("promtool", "prometheus"), "test", "rules", str(path)],
                            capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def certificate_org(hide_select: bool) -> dict[str, Any]:
    org = healthy_org()
    org["servers"][0]["certificates"] = [
        {"subject": "CN=mail.contoso.sim", "services": ["IIS", "SMTP"], "not_after_days": 12},
        {"subject": "CN=old-wmsvc.contoso.sim", "services": [], "not_after_days": 5},  # bound to nothing
        {"subject": "CN=pop.contoso.sim", "services": ["IMAP", "POP"], "not_after_days": 8},
    ]
    if hide_select:  # a session whose runspace lacks Select-Object: only RawData arrives
        org["rbac"] = {"hidden_cmdlets": ["Select-Object"]}
    return org


def expiring(report: Report) -> list[tuple[str, str, str]]:
    return [(f.rule, f.severity, f.title) for f in report.findings if f.rule.startswith("certificate_")]


def test_certificates_with_unknown_services_are_findings_and_alerts(sim_factory: SimFactory, tmp_path: Path) -> None:
    sim, scenario = sim_factory(certificate_org(hide_select=True))
    report, registry = run(settings_for(sim, scenario, overrides=NO_TRACKING))
    found = expiring(report)
    # Bindings unknown: every certificate under 30 days is reported (it may be bound to SMTP), as a warning
    # that says so, and the alert fires for the same certificates.
    assert sorted(found) == sorted(
        ("certificate_expiring", "warning", f"Expiring certificate on EX01: CN={cn} (services unknown)")
        for cn in ("mail.contoso.sim", "old-wmsvc.contoso.sim", "pop.contoso.sim")
    ), found
    first = next(f for f in report.findings if f.rule == "certificate_expiring")
    assert any(e.startswith("services unknown:") for e in first.evidence)
    assert "Get-ExchangeCertificate -Server EX01 -Thumbprint" in first.next_step
    unknown = [lbl for lbl, _ in samples(registry, "mailflow_certificate_expiry_timestamp_seconds")]
    assert unknown and {lbl["services"] for lbl in unknown} == {"unknown"}
    expected = [
        {"server": lbl["server"], "thumbprint": lbl["thumbprint"]}
        for lbl, value in samples(registry, "mailflow_certificate_expiry_timestamp_seconds")
        if value - time.time() < 30 * 86400
    ]
    assert len(expected) == len(found)
    promtool_certificate_alerts(registry, expected, tmp_path)


def test_certificates_bound_to_nothing_do_not_page(sim_factory: SimFactory, tmp_path: Path) -> None:
    """Control with the bindings known: the SMTP/IIS certificate is the only finding and the only alert;
    the ones bound to nothing (Services None) or to IMAP/POP only are neither."""
    sim, scenario = sim_factory(certificate_org(hide_select=False))
    report, registry = run(settings_for(sim, scenario, overrides=NO_TRACKING))
    assert expiring(report) == [
        ("certificate_expiring", "warning", "Expiring certificate on EX01: CN=mail.contoso.sim")
    ]
    by_subject = {lbl["subject"]: lbl for lbl, _ in samples(registry, "mailflow_certificate_expiry_timestamp_seconds")}
    assert by_subject["CN=old-wmsvc.contoso.sim"]["services"] == "None"
    assert by_subject["CN=pop.contoso.sim"]["services"] == "IMAP, POP"
    mail = by_subject["CN=mail.contoso.sim"]
    assert mail["services"] == "IIS, SMTP"
    promtool_certificate_alerts(registry, [{"server": "EX01", "thumbprint": mail["thumbprint"]}], tmp_path)


# ---------------------------------------------------------------- accepted domains relaying for a whole TLD


def accepted_domains_org(domains: list[dict[str, Any]]) -> dict[str, Any]:
    org = healthy_org()
    org["accepted_domains"] = [{"domain": "contoso.sim", "default": True}, *domains]
    return org


@pytest.mark.parametrize(
    ("domain", "kind", "scope"),
    [
        ("*.com", "InternalRelay", "every .com domain"),  # the CSS-Exchange capture's "Wild .com"
        ("*.co.uk", "ExternalRelay", "every .co.uk domain"),  # a public suffix of two labels
        ("*", "ExternalRelay", "every domain"),  # the capture's "Bad Accepted Domain"
    ],
)
def test_wildcard_relay_domain_is_named(sim_factory: SimFactory, domain: str, kind: str, scope: str) -> None:
    org = accepted_domains_org([{"name": f"Wild {domain}", "domain": domain, "type": kind}])
    sim, scenario = sim_factory(org)
    report, registry = run(settings_for(sim, scenario, overrides=NO_TRACKING))
    first = report.findings[0]
    assert (first.rule, first.severity) == ("accepted_domain_relay", "critical"), [f.title for f in report.findings]
    assert first.title == f"Accepted domain {domain} makes Exchange relay mail for {scope}"
    assert f'Remove-AcceptedDomain "Wild {domain}"' in first.next_step
    assert samples(registry, "mailflow_accepted_domain_open_relay") == [({}, 1.0)]


def test_wildcards_below_an_owned_domain_are_not_relays(sim_factory: SimFactory) -> None:
    """Control: *.contoso.local (the capture's "Contoso Wild", Authoritative), an InternalRelay for the
    subdomains of a domain we own, an unknown TLD, and an Authoritative *.com (not a relay)."""
    org = accepted_domains_org(
        [
            {"name": "Contoso Wild", "domain": "*.contoso.local"},
            {"name": "Branches", "domain": "*.contoso.sim", "type": "InternalRelay"},
            {"name": "Legacy", "domain": "*.local", "type": "InternalRelay"},
            {"name": "Authoritative com", "domain": "*.com"},
        ]
    )
    sim, scenario = sim_factory(org)
    report, registry = run(settings_for(sim, scenario, overrides=NO_TRACKING))
    assert [f.rule for f in report.findings if f.severity != "info"] == []
    assert samples(registry, "mailflow_accepted_domain_open_relay") == [({}, 0.0)]


# ---------------------------------------------------------------- blocklists that cannot be used


def dns_only(net: DemoNet, blocklists: list[str]) -> dict[str, Any]:
    """DNS checks of contoso.sim and EX01's address only: everything the demo world plants about them is
    healthy, so a blocklist problem is the only one."""
    dns = deep_merge(demo_dns_settings(net), NO_TRACKING)
    dns["dns"] |= {
        "outbound_ips": [{"ip": "192.0.2.10", "helo": f"ex01.{DOMAIN}"}],
        "blocklists": blocklists,
        "use_accepted_domains": False,
        "domains": [DOMAIN],
        "smtp": {"enabled": False},
    }
    return dns


@pytest.mark.parametrize(
    ("plant", "blocklist", "reason", "title", "explained"),
    [
        (
            {"address": "127.255.255.254", "text": "Error: open resolver; https://check.spamhaus.org/returnc/pub/"},
            DNSBL_ZONE,
            "public_resolver",
            "it refuses queries from this resolver",
            f"{DNSBL_ZONE} refuses queries from this resolver (127.255.255.254: query via a public/open resolver)",
        ),
        (
            {"address": "127.255.255.255"},
            DNSBL_ZONE,
            "rate_limited",
            "it refuses queries from this resolver",
            f"{DNSBL_ZONE} refuses queries from this resolver (127.255.255.255: excessive number of queries)",
        ),
        (
            {"address": "198.51.100.80"},  # a resolver that rewrites NXDOMAIN to its search page
            DNSBL_ZONE,
            "bad_answer",
            "its answers are not blocklist answers",
            f"{DNSBL_ZONE} answers 198.51.100.80, outside 127.0.0.0/8",
        ),
        (None, f"nobl.{DOMAIN}", "test_point_not_listed", "it does not list its test address", "RFC 5782"),
    ],
    ids=["public_resolver", "rate_limited", "bad_answer", "test_point_not_listed"],
)
def test_unusable_blocklist_is_could_not_check(
    sim_factory: SimFactory, plant: dict[str, str] | None, blocklist: str, reason: str, title: str, explained: str
) -> None:
    sim, scenario = sim_factory(healthy_org())
    with DemoNet() as net:
        if plant is not None:
            net.dns.faults.set(f"*.{DNSBL_ZONE}", "answer", **plant)
        report, registry = run(settings_for(sim, scenario, overrides=dns_only(net, [blocklist])))
    first = report.findings[0]
    assert (first.rule, first.severity) == ("blocklist_unusable", "warning"), [f.title for f in report.findings]
    assert first.title == f"Blocklist {blocklist} could not be checked: {title}"
    assert explained in first.evidence[0]
    assert first.evidence[1] == f"not checked against {blocklist}, neither listed nor clean: 192.0.2.10"
    assert [f.rule for f in report.findings if f.severity != "info"] == ["blocklist_unusable"]
    unchecked = [u for u in report.unchecked if u.startswith(f"dnsbl {blocklist}:")]
    assert len(unchecked) == 1 and explained in unchecked[0] and unchecked[0].endswith("(not checked: 192.0.2.10)")
    assert report.exit_code == 3  # a partial picture: not "healthy", not "warnings only"
    assert samples(registry, "mailflow_dnsbl_listed") == []  # neither listed (1) nor clean (0)
    assert samples(registry, "mailflow_dnsbl_check_success") == [({"ip": "192.0.2.10", "zone": blocklist}, 0.0)]
    assert samples(registry, "mailflow_dnsbl_error_info") == [
        ({"ip": "192.0.2.10", "zone": blocklist, "reason": reason}, 1.0)
    ]


def test_usable_blocklist_is_a_clean_bill(sim_factory: SimFactory) -> None:
    """Control: the same list answering for real: EX01's address is not listed, nothing to report."""
    sim, scenario = sim_factory(healthy_org())
    with DemoNet() as net:
        report, registry = run(settings_for(sim, scenario, overrides=dns_only(net, [DNSBL_ZONE])))
    assert [f.rule for f in report.findings if f.severity != "info"] == [] and report.unchecked == ()
    assert report.exit_code == 0
    assert samples(registry, "mailflow_dnsbl_listed") == [({"ip": "192.0.2.10", "zone": DNSBL_ZONE}, 0.0)]
    assert samples(registry, "mailflow_dnsbl_error_info") == []
