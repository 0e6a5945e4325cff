"""What a triage produces: findings with evidence and a next step, and a verdict per mail-flow scope."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("critical", "warning", "info")
SCOPES = ("inbound", "outbound", "internal")
#: The expert's order: what cannot be seen at all (a server that cannot be polled qualifies everything
#: after it), queues and their LastError, message tracking, connectors, DNS; then server health and the
#: monitoring itself. Findings are sorted by severity, then by this step.
STEPS = ("visibility", "queues", "tracking", "connectors", "dns", "health", "monitoring")
#: ``polling``: the first polls of the scope's collectors have not all finished (no verdict yet).
STATUSES = ("healthy", "degraded", "failing", "unknown", "polling")
#: Exit codes of ``check``; the first that applies wins (a critical finding pages even from a partial run).
EXIT_CODES = {
    0: "healthy",
    1: "warnings",
    2: "critical",
    3: "could not check",
    4: "did not finish within --timeout",
}


@dataclass(frozen=True)
class Finding:
    """One problem: how bad, where, the evidence, and the concrete next step."""

    rule: str
    severity: str
    step: str
    scopes: tuple[str, ...]
    title: str
    evidence: tuple[str, ...]
    next_step: str
    runbook: str = ""  # anchor in docs/runbook.md
    weight: int = 0  # within one severity and step, the bigger (more messages...) first

    def sort_key(self) -> tuple[int, int, int, str]:
        return (SEVERITIES.index(self.severity), STEPS.index(self.step), -self.weight, self.rule)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "step": self.step,
            "scopes": list(self.scopes),
            "title": self.title,
            "evidence": list(self.evidence),
            "next_step": self.next_step,
            "runbook": self.runbook,
        }


@dataclass(frozen=True)
class Verdict:
    """Is mail flowing in one scope (inbound, outbound, internal)?"""

    scope: str
    status: str
    evidence: tuple[str, ...]


@dataclass(frozen=True)
class Report:
    """A whole triage: verdicts, findings (most important first) and what could not be checked."""

    verdicts: tuple[Verdict, ...]
    findings: tuple[Finding, ...]
    unchecked: tuple[str, ...]  # "collector target: why" of polls that failed
    checked_at: float
    counts: Mapping[str, int] = field(default_factory=dict)
    pending: tuple[str, ...] = ()  # "collector target" of polls that have not finished
    timeout: float | None = None  # check's --timeout, when it expired with polls pending

    @property
    def complete(self) -> bool:
        """Every collector and target was polled successfully: only then is "no problems found" true."""
        return not self.unchecked and not self.pending

    @property
    def exit_code(self) -> int:
        """2 critical; else 4 polls did not finish (--timeout); else 3 something could not be checked;
        else 1 warnings; else 0 healthy."""
        severities = {f.severity for f in self.findings}
        if "critical" in severities:
            return 2
        if self.pending:
            return 4
        if self.unchecked:
            return 3
        return 1 if "warning" in severities else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked_at": self.checked_at,
            "exit_code": self.exit_code,
            "verdicts": [{"scope": v.scope, "status": v.status, "evidence": list(v.evidence)} for v in self.verdicts],
            "findings": [f.as_dict() for f in self.findings],
            "unchecked": list(self.unchecked),
            "pending": list(self.pending),
            "timeout": self.timeout,
        }
