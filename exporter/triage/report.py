"""Build a triage report from the facts, and print it (rich table on a terminal, plain text, JSON)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import IO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from exporter.triage.facts import Facts
from exporter.triage.hints import unchecked_blocklists
from exporter.triage.model import SCOPES, Finding, Report, Verdict
from exporter.triage.rules import run_rules

#: The collectors each scope's verdict depends on: if all of them failed, the verdict is unknown.
SCOPE_SOURCES = {
    "outbound": ("queues", "dns_domains", "dns_ips"),
    "inbound": ("smtp", "dns_domains", "tracking", "components"),
    "internal": ("queues", "database_copies", "components"),
}
_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan", "failing": "bold red",
          "degraded": "yellow", "healthy": "green", "unknown": "magenta"}  # fmt: skip


def _scope_evidence(scope: str, facts: Facts) -> list[str]:
    queues = [q for r in facts.all("queues") for q in r.queues]
    if scope == "outbound":
        ext = [q for q in queues if q.kind == "delivery" and q.next_hop_category == "External"]
        retry = [q for q in ext if q.status == "Retry"]
        return [
            f"{sum(q.message_count for q in ext)} messages in {len(ext)} external delivery queue(s), {len(retry)} "
            f"retrying"
        ]
    if scope == "internal":
        internal = [q for q in queues if q.kind in ("delivery", "submission") and q.next_hop_category == "Internal"]
        mounted = {c.database for r in facts.all("database_copies") for c in r.copies if c.status == "Mounted"}
        return [f"{sum(q.message_count for q in internal)} messages in internal/submission queues",
                f"{len(mounted)} database(s) mounted"]  # fmt: skip
    tracking = facts.all("tracking")
    received = sum(r.recent_received_inbound for r in tracking)
    delivered = sum(r.recent_flow.get("inbound", 0) for r in tracking)
    minutes = min((r.recent_seconds for r in tracking), default=0.0) / 60
    probes = facts.all("smtp")
    ok = sum(1 for p in probes if p.success)
    return [f"{received} arrival(s) from outside and {delivered} inbound mailbox deliveries in the last "
            f"{minutes:.0f} minutes of tracking log", f"{ok}/{len(probes)} MX host(s) answer SMTP"]  # fmt: skip


def verdicts(findings: Iterable[Finding], facts: Facts) -> tuple[Verdict, ...]:
    """healthy / degraded (warnings) / failing (critical) / unknown (nothing to judge by) per scope."""
    out = []
    findings = list(findings)
    for scope in SCOPES:
        mine = [f for f in findings if scope in f.scopes and f.severity in ("critical", "warning")]
        sources = SCOPE_SOURCES[scope]
        if any(f.severity == "critical" for f in mine):
            status = "failing"
        elif mine:
            status = "degraded"
        elif not any(facts.of(s) for s in sources):
            status = "unknown"
        else:
            status = "healthy"
        try:
            evidence = [f.title for f in mine[:3]] or _scope_evidence(scope, facts)
        except Exception as exc:  # a result of an unexpected shape must not take the verdicts down
            evidence = [f"evidence unavailable ({type(exc).__name__})"]
        out.append(Verdict(scope, status, tuple(evidence)))
    return tuple(out)


def build_report(facts: Facts) -> Report:
    """Run every rule and judge each scope."""
    findings = run_rules(facts)
    unchecked = tuple(
        f"{collector} {target}: {message}"
        for collector, failed in sorted(facts.failures.items())
        for target, message in sorted(failed.items())
    ) + unchecked_blocklists(facts)
    counts = {s: sum(1 for f in findings if f.severity == s) for s in ("critical", "warning", "info")}
    return Report(verdicts(findings, facts), tuple(findings), unchecked, facts.now, counts)


def write_json(report: Report, out: IO[str]) -> None:
    """Machine-readable report."""
    json.dump(report.as_dict(), out, indent=2)
    out.write("\n")


def write_text(report: Report, out: IO[str], color: bool | None = None) -> None:
    """People-readable report: a colour table on a terminal, plain text otherwise."""
    console = Console(file=out, force_terminal=color, no_color=color is False, width=120, highlight=False)
    scope = Table(title="Is mail flowing?", show_lines=False, expand=False)
    for col in ("scope", "verdict", "evidence"):
        scope.add_column(col)
    for v in report.verdicts:
        scope.add_row(v.scope, Text(v.status, style=_STYLE[v.status]), "\n".join(v.evidence))
    console.print(scope)
    if not report.findings:
        console.print("No problems found.")
    for i, f in enumerate(report.findings, 1):
        console.print(Text(f"{i}. [{f.severity}] {f.title}", style=_STYLE[f.severity]))
        for line in f.evidence:
            console.print(f"     - {line}", markup=False)
        console.print(f"     next step: {f.next_step}", markup=False)
        if f.runbook:
            console.print(f"     runbook: docs/runbook.md#{f.runbook}", markup=False)
    if report.unchecked:
        console.print(Text("Could not check:", style="magenta"))
        for line in report.unchecked:
            console.print(f"     - {line}", markup=False)
    console.print(f"exit code {report.exit_code} (0 healthy, 1 warnings, 2 critical, 3 could not check)")
