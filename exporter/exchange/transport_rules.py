"""Transport (mail flow) rules, organisation-wide: the enabled rules that reject, delete, redirect,
quarantine or hold mail for moderation, and when each last changed.

A rule is a step of the troubleshooting method because one edit can stop mail for everyone: a
condition widened by mistake on a rule that rejects (``RejectMessageReasonText`` /
``RejectMessageEnhancedStatusCode``), deletes (``DeleteMessage``) or redirects (``RedirectMessageTo``)
turns into silence or a bounce storm the moment it is saved. Get-TransportRule shows each action as
a property of its own (the New-TransportRule parameter of the same name); a rule acts only when its
``State`` is Enabled and its ``Mode`` is Enforce (Audit and AuditAndNotify only log).

Only the rules with such an action get series of their own (``rule`` is the rule's name, which the
administrators choose: bounded by ``max_rules``, the rest folded into ``other``); every rule counts
in ``mailflow_transport_rules`` and in the latest change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.cardinality import OTHER, fold_enum, keep_top, unknown
from exporter.errors import ParseError
from exporter.exchange.clixml import as_bool, as_int, flatten, parse_datetime
from exporter.exchange.cmdlet_collector import OrgCollector, parse_all
from exporter.exchange.drift import ConnectorDrift, connector_drift
from exporter.exchange.session import ExchangeSession
from exporter.exchange.targets import ExchangeTargets
from exporter.settings import TransportRuleExpectation

POLLED = "Polled from Get-TransportRule on a schedule."
#: RuleState and RuleMode (Get-TransportRule -State; New-TransportRule -Mode).
STATES = frozenset({"Enabled", "Disabled"})
MODES = frozenset({"Enforce", "Audit", "AuditAndNotify"})
#: The delivery-affecting actions, in the order a label lists them.
ACTIONS = ("reject", "delete", "redirect", "quarantine", "moderate")


def _present(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return any(str(v).strip() for v in value)
    return value is not None and str(value).strip() not in ("", "False", "false")


@dataclass(frozen=True)
class TransportRule:
    """One transport rule, typed: its state, mode and delivery-affecting actions."""

    name: str
    priority: int
    state: str
    mode: str
    actions: tuple[str, ...]  # a subset of ACTIONS, in that order
    reject_code: str  # RejectMessageEnhancedStatusCode ("" when the rule does not reject)
    changed: datetime | None

    def settings(self) -> dict[str, Any]:
        """The values expectations compare against, keyed like TransportRuleExpectation."""
        return {"state": self.state, "mode": self.mode, "actions": list(self.actions)}

    @property
    def acts(self) -> bool:
        """Enabled, in Enforce mode and with a delivery-affecting action: it stops or diverts mail now."""
        return bool(self.actions) and self.state == "Enabled" and self.mode == "Enforce"


def parse_transport_rule(obj: Any) -> TransportRule:
    """One Get-TransportRule object."""
    p = flatten(obj)
    name = str(p.get("Name") or p.get("Identity") or "").strip()
    if not name:
        raise ParseError("a Get-TransportRule object without Name")
    rejects = _present(p.get("RejectMessageReasonText")) or _present(p.get("RejectMessageEnhancedStatusCode"))
    found = {
        "reject": rejects,
        "delete": as_bool(p.get("DeleteMessage")),
        "redirect": _present(p.get("RedirectMessageTo")),
        "quarantine": as_bool(p.get("Quarantine")),
        "moderate": _present(p.get("ModerateMessageByUser")) or as_bool(p.get("ModerateMessageByManager")),
    }
    return TransportRule(
        name=name,
        priority=as_int(p.get("Priority")),
        state=str(p.get("State") or "Enabled").strip(),
        mode=str(p.get("Mode") or "Enforce").strip(),
        actions=tuple(a for a in ACTIONS if found[a]),
        reject_code=str(p.get("RejectMessageEnhancedStatusCode") or "").strip() if rejects else "",
        changed=parse_datetime(p.get("WhenChangedUTC") or p.get("WhenChanged")),
    )


@dataclass(frozen=True)
class TransportRuleResult:
    """The organisation's transport rules, by priority."""

    rules: tuple[TransportRule, ...]
    drift: tuple[ConnectorDrift, ...] = ()  # against collectors.transport_rules.expect
    kept: frozenset[str] | None = None  # rules with actions that keep their own series (None: all)
    drift_kept: frozenset[str] | None = None  # rule names whose drift keeps its own series (None: all)
    folded: Mapping[str, int] = field(default_factory=dict)

    def with_actions(self) -> list[TransportRule]:
        """The rules that reject, delete, redirect, quarantine or moderate (whatever their state)."""
        return [r for r in self.rules if r.actions]


class TransportRuleCollector(OrgCollector):
    """Polls Get-TransportRule once per interval for the organisation."""

    name = "transport_rules"

    def __init__(
        self,
        targets: ExchangeTargets,
        interval: float,
        max_rules: int = 100,
        expect: Mapping[str, TransportRuleExpectation] | None = None,
    ) -> None:
        super().__init__(targets, interval)
        self._max_rules = max_rules
        self._expect = dict(expect or {})

    def collect(self, session: ExchangeSession, server: str) -> TransportRuleResult:
        # -ResultSize Unlimited: the default (1000) would hide rules past it without a word.
        result = self.run(session, server, "Get-TransportRule", {"ResultSize": "Unlimited"})
        rules = sorted(parse_all("Get-TransportRule", result.objects, parse_transport_rule), key=lambda r: r.priority)
        wanted = [(pattern, pattern, expectation) for pattern, expectation in sorted(self._expect.items())]
        drift = connector_drift(wanted, [(r.name, r.settings()) for r in rules])
        return cap_transport_rules(TransportRuleResult(tuple(rules), tuple(drift)), self._max_rules)

    def render(self, results: Mapping[str, TransportRuleResult]) -> Iterable[Metric]:
        return render_transport_rules(results.values())


def cap_transport_rules(result: TransportRuleResult, limit: int) -> TransportRuleResult:
    """The cap decided: ``limit`` rules with actions keep their own series, those acting now first,
    then the most recently changed."""
    rules = {r.name: r for r in result.with_actions()}

    def rank(name: str) -> tuple[bool, float]:
        rule = rules[name]
        return (not rule.acts, -(rule.changed.timestamp() if rule.changed else 0.0))

    kept = keep_top(rules, limit, rank)
    drifted = {d.connector for d in result.drift if d.drifted}
    named = {d.connector for d in result.drift}
    drift_kept = keep_top(named, limit, lambda name: name not in drifted)
    folded = {
        "rule": len((set(rules) - kept) | (named - drift_kept)),
        "state": unknown((r.state for r in result.rules), STATES),
        "mode": unknown((r.mode for r in result.rules), MODES),
    }
    return replace(result, kept=kept, drift_kept=drift_kept, folded=folded)


def render_transport_rules(results: Iterable[TransportRuleResult]) -> list[Metric]:
    """Metric families for the transport rules."""
    count = GaugeMetricFamily(
        "mailflow_transport_rules", f"Transport rules by State and Mode. {POLLED}", labels=["state", "mode"]
    )
    info = GaugeMetricFamily(
        "mailflow_transport_rule_info",
        "Transport rules that reject, delete, redirect, quarantine or moderate mail (value 1; beyond the cap: "
        f'the number of rules under rule="other"); actions lists them. {POLLED}',
        labels=["rule", "state", "mode", "actions"],
    )
    changed = GaugeMetricFamily(
        "mailflow_transport_rule_changed_timestamp_seconds",
        f"When a transport rule with such an action was last changed (WhenChangedUTC), unix time. {POLLED}",
        labels=["rule"],
    )
    drift = GaugeMetricFamily(
        "mailflow_transport_rule_drift",
        f'1 if the setting differs from collectors.transport_rules.expect (setting="present": no such rule). {POLLED}',
        labels=["rule", "setting"],
    )
    latest = GaugeMetricFamily(
        "mailflow_transport_rules_last_changed_timestamp_seconds",
        f"The latest change of any transport rule (WhenChangedUTC), unix time. {POLLED}",
    )
    for result in results:
        counts: dict[tuple[str, str], int] = {(s, m): 0 for s in sorted(STATES) for m in sorted(MODES)}
        for r in result.rules:
            key = (fold_enum(r.state, STATES), fold_enum(r.mode, MODES))
            counts[key] = counts.get(key, 0) + 1
        for (state, mode), n in sorted(counts.items()):
            count.add_metric([state, mode], n)
        folded: dict[tuple[str, str, str], int] = {}
        folded_changed: float | None = None
        for r in result.with_actions():
            labels = (fold_enum(r.state, STATES), fold_enum(r.mode, MODES), ",".join(r.actions))
            stamp = r.changed.timestamp() if r.changed else None
            if result.kept is not None and r.name not in result.kept:
                folded[labels] = folded.get(labels, 0) + 1
                if stamp is not None:
                    folded_changed = max(folded_changed or 0.0, stamp)
                continue
            info.add_metric([r.name, *labels], 1)
            if stamp is not None:
                changed.add_metric([r.name], stamp)
        for labels, n in sorted(folded.items()):
            info.add_metric([OTHER, *labels], n)
        if folded_changed is not None:
            changed.add_metric([OTHER], folded_changed)
        stamps = [r.changed.timestamp() for r in result.rules if r.changed is not None]
        if stamps:
            latest.add_metric([], max(stamps))
        # A glob may match any number of rules: at most max_rules names keep their drift series.
        drifted: dict[tuple[str, str], bool] = {}
        for item in result.drift:
            folded_name = result.drift_kept is not None and item.connector not in result.drift_kept
            key = (OTHER if folded_name else item.connector, item.setting)
            drifted[key] = drifted.get(key, False) or item.drifted
        for (name, setting), is_drifted in sorted(drifted.items()):
            drift.add_metric([name, setting], 1 if is_drifted else 0)
    return [count, info, changed, drift, latest]
