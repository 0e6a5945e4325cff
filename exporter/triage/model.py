"""What a triage produces: findings with evidence and a next step, and a verdict per mail-flow scope."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("critical", "warning", "info")
SCOPES = ("inbound", "outbound", "internal")
#: The expert's order: scope, queues and their LastError, message tracking, connectors, DNS; then
#: server health and the monitoring itself. Findings are sorted by severity, then by this step.
STEPS = ("queues", "tracking", "connectors", "dns", "health", "monitoring")
STATUSES = ("healthy", "degraded", "failing", "unknown")


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
    unchecked: tuple[str, ...]  # "collector target: reason" of polls that failed
    checked_at: float
    counts: Mapping[str, int] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """0 healthy, 1 warnings, 2 critical, 3 something could not be checked (and nothing critical)."""
        severities = {f.severity for f in self.findings}
        if "critical" in severities:
            return 2
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
        }
