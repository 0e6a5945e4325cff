"""Build a triage report from the facts, and print it (rich table on a terminal, plain text, JSON)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import IO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from exporter.triage import blindness
from exporter.triage.blindness import BLIND_RULES, CHECKS, COLLECTOR_SCOPES
from exporter.triage.facts import Facts
from exporter.triage.hints import unchecked_blocklists
from exporter.triage.model import EXIT_CODES, SCOPES, Finding, Report, Verdict
from exporter.triage.rules import run_rules

#: The collectors each scope's verdict depends on: if all of them failed, the verdict is unknown.
SCOPE_SOURCES = {
    "outbound": ("queues", "dns_domains", "dns_ips"),
    "inbound": ("smtp", "dns_domains", "tracking", "components"),
    "internal": ("queues", "database_copies", "components"),
}
_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan", "failing": "bold red",
          "degraded": "yellow", "healthy": "green", "unknown": "magenta", "polling": "blue"}  # fmt: skip
#: The width of the text report when it is not printed on a terminal: wide enough that rich never wraps
#: inside a token (URLs, identities, error texts stay on one line for grep and for pasting).
PLAIN_WIDTH = 10_000


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


def _in_scope(scope: str, collector: str) -> bool:
    return scope in COLLECTOR_SCOPES.get(collector, SCOPES)


def pending_summary(pending: Iterable[tuple[str, str]], limit: int = 6) -> str:
    """``queues EX02, tracking EX02, ... (+3 more)``."""
    items = [f"{c} {t}" for c, t in pending]
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def verdicts(findings: Iterable[Finding], facts: Facts) -> tuple[Verdict, ...]:
    """Per scope: failing (a critical finding), polling (first polls still running), unknown (a collector
    it depends on could not be polled, or nothing to judge by), degraded (warnings), else healthy.
    A scope the exporter cannot fully see is never healthy."""
    out = []
    findings = list(findings)
    for scope in SCOPES:
        mine = [f for f in findings if scope in f.scopes and f.severity in ("critical", "warning")]
        known = [f for f in mine if f.rule not in BLIND_RULES]
        blind = [f for f in findings if scope in f.scopes and f.rule in BLIND_RULES]
        pending = [(c, t) for c, t in facts.pending if _in_scope(scope, c)]
        failed = [p for p in facts.failed_polls() if _in_scope(scope, p.collector)]
        sources = SCOPE_SOURCES[scope]
        evidence: list[str] = []
        if any(f.severity == "critical" for f in known):
            status = "failing"
        elif pending and facts.timeout is None:
            status = "polling"
            evidence = [f"still polling: {len(pending)} first poll(s) pending: {pending_summary(pending)}"]
        elif blind or failed or pending:
            status = "unknown"
            evidence = [f.title for f in blind[:3]] or [
                f"could not check {CHECKS.get(p.collector, p.collector)} on {p.target}" for p in failed[:3]
            ]
            if pending and not blind:
                evidence.append(f"did not finish: {pending_summary(pending)}")
        elif known:
            status = "degraded"
        elif not any(facts.of(s) for s in sources):
            status = "unknown"
        else:
            status = "healthy"
        try:
            evidence += [f.title for f in known[:3]] or _scope_evidence(scope, facts)
        except Exception as exc:  # a result of an unexpected shape must not take the verdicts down
            evidence.append(f"evidence unavailable ({type(exc).__name__})")
        out.append(Verdict(scope, status, tuple(evidence)))
    return tuple(out)


def build_report(facts: Facts) -> Report:
    """Run every rule (the blindness rules too) and judge each scope."""
    findings = sorted(run_rules(facts) + run_rules(facts, blindness.RULES), key=Finding.sort_key)
    failed = tuple(f"{p.collector} {p.target}: {p.why()}" for p in facts.failed_polls())
    unchecked = failed + unchecked_blocklists(facts)
    counts = {s: sum(1 for f in findings if f.severity == s) for s in ("critical", "warning", "info")}
    pending = tuple(f"{c} {t}" for c, t in facts.pending)
    return Report(verdicts(findings, facts), tuple(findings), unchecked, facts.now, counts, pending, facts.timeout)


def write_json(report: Report, out: IO[str]) -> None:
    """Machine-readable report."""
    json.dump(report.as_dict(), out, indent=2)
    out.write("\n")


def status_line(report: Report) -> str:
    """What the report covers, in one sentence ("" when every poll finished)."""
    if not report.pending:
        return ""
    shown = ", ".join(report.pending[:6]) + (f" (+{len(report.pending) - 6} more)" if len(report.pending) > 6 else "")
    if report.timeout is not None:
        return f"Stopped after --timeout {report.timeout:g}s; {len(report.pending)} poll(s) did not finish: {shown}"
    return f"Still polling: {len(report.pending)} first poll(s) have not finished: {shown}"


def no_findings_line(report: Report) -> str:
    """The line shown instead of findings: "No problems found." only when every poll succeeded."""
    if report.complete:
        return "No problems found."
    if report.pending and report.timeout is None:
        return "Nothing found so far; still polling."
    return "Nothing found in what was checked, but the picture is partial (see below)."


def write_text(report: Report, out: IO[str], color: bool | None = None, width: int | None = None) -> None:
    """People-readable report: a colour table on a terminal (``color``), plain text otherwise. ``width``
    defaults to 120 on a terminal and to PLAIN_WIDTH elsewhere, so piped text never wraps inside a token."""
    terminal = color if color is not None else bool(getattr(out, "isatty", lambda: False)())
    console = Console(file=out, force_terminal=terminal, no_color=not terminal, highlight=False,
                      width=width or (120 if terminal else PLAIN_WIDTH))  # fmt: skip
    scope = Table(title="Is mail flowing?", show_lines=False, expand=False)
    for col in ("scope", "verdict", "evidence"):
        scope.add_column(col)
    for v in report.verdicts:
        scope.add_row(v.scope, Text(v.status, style=_STYLE[v.status]), "\n".join(v.evidence))
    console.print(scope)
    if status_line(report):
        console.print(Text(status_line(report), style=_STYLE["polling"]))
    if not report.findings:
        console.print(no_findings_line(report))
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
    if report.pending:
        console.print(Text("Did not finish:" if report.timeout is not None else "Still polling:", style="blue"))
        for line in report.pending:
            console.print(f"     - {line}", markup=False)
    legend = ", ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items())
    console.print(f"exit code {report.exit_code} ({legend})")
