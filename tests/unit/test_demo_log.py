"""The demo's log tells a person watching it what changed: exporter.demo.Narrator and the banner.

(The running demo's whole log is checked in tests/integration/test_processes.py.)
"""

from __future__ import annotations

from exporter.demo import Narrator
from exporter.triage.model import Finding, Report, Verdict


def finding(rule: str, title: str, severity: str = "warning") -> Finding:
    return Finding(rule, severity, "queues", ("outbound",), title, ("evidence",), "next step")


def report(*findings: Finding, outbound: str = "degraded") -> Report:
    verdicts = (
        Verdict("inbound", "healthy", ()),
        Verdict("outbound", outbound, ()),
        Verdict("internal", "healthy", ()),
    )
    return Report(verdicts, tuple(findings), (), 0.0)


DNS = finding("outbound_dns_failure", "Outbound mail is retrying on DNS failures (14 messages)", "critical")
POISON = finding("poison_messages", "Poison messages (1)")


def test_first_report_is_told_whole() -> None:
    assert Narrator().lines(report(DNS, POISON)) == [
        "every target polled: mail flow inbound=healthy outbound=degraded internal=healthy; "
        "findings: 1 critical, 1 warning",
        "finding critical: Outbound mail is retrying on DNS failures (14 messages) [outbound_dns_failure]",
        "finding warning: Poison messages (1) [poison_messages]",
    ]
    assert Narrator().lines(report(outbound="healthy"))[0].endswith("findings: none")


def test_then_only_what_changed() -> None:
    narrator = Narrator()
    narrator.lines(report(DNS, POISON))
    # the same findings with other numbers are no news
    grown = finding("outbound_dns_failure", "Outbound mail is retrying on DNS failures (15 messages)", "critical")
    assert narrator.lines(report(grown, finding("poison_messages", "Poison messages (2)"))) == []
    # a finding clears, another appears, one changes severity, the outbound verdict moves
    expiring = finding("certificate_expiring", "Expiring certificate on EX02: CN=mail.contoso.sim")
    milder = finding("outbound_dns_failure", "Outbound mail is retrying on DNS failures (2 messages)")
    assert narrator.lines(report(milder, expiring, outbound="failing")) == [
        "mail flow outbound: degraded -> failing",
        "finding now warning: Outbound mail is retrying on DNS failures (2 messages) [outbound_dns_failure] "
        "(was critical)",
        "new finding warning: Expiring certificate on EX02: CN=mail.contoso.sim [certificate_expiring]",
        "cleared finding warning: Poison messages (2) [poison_messages]",
    ]
    assert narrator.lines(report(milder, expiring, outbound="failing")) == []
