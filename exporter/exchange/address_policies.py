"""Email address policies (organisation-wide): which domains each policy gives recipients addresses in.

Read together with the accepted domains when internal recipients bounce as unknown (``550 5.1.1``):
Exchange delivers to a recipient of an Authoritative domain only if a recipient in AD holds that
address, and recipients get their addresses from the email address policies. A policy edited so it
no longer generates addresses in a domain (or not yet applied: ``RecipientFilterApplied`` false), or
no policy for a domain at all, leaves mail to that domain's addresses with nobody to deliver to.

``EnabledEmailAddressTemplates`` holds the templates (``SMTP:%g.%s@contoso.com``; upper-case
``SMTP:`` is the primary address, ``smtp:`` the secondary ones; Set-EmailAddressPolicy docs). Policy
names are chosen by the administrators: bounded by ``max_policies``, the rest folded into ``other``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.cardinality import OTHER, keep_top
from exporter.errors import ParseError
from exporter.exchange.clixml import as_bool, flatten, parse_datetime
from exporter.exchange.cmdlet_collector import OrgCollector, parse_all
from exporter.exchange.session import ExchangeSession
from exporter.exchange.targets import ExchangeTargets

POLLED = "Polled from Get-EmailAddressPolicy on a schedule."
_SMTP = re.compile(r"^smtp:[^@]*@(?P<domain>\S+)$", re.IGNORECASE)


def _strings(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list | tuple) else ([] if value is None else [value])
    return tuple(str(v).strip() for v in items if str(v).strip())


@dataclass(frozen=True)
class AddressPolicy:
    """One email address policy: the SMTP domains it generates addresses in (the primary's first)."""

    name: str
    priority: str  # "Lowest" for the default policy, else the number as text
    primary_domain: str  # "" when the policy has no SMTP primary template
    domains: tuple[str, ...]  # every SMTP template's domain, lower case, the primary's first
    applied: bool  # RecipientFilterApplied: the last change has been applied to the recipients
    changed: datetime | None

    def generates(self, domain: str) -> bool:
        """Whether the policy gives recipients addresses in ``domain`` (case-insensitive)."""
        return domain.lower() in self.domains


def parse_address_policy(obj: Any) -> AddressPolicy:
    """One Get-EmailAddressPolicy object."""
    p = flatten(obj)
    name = str(p.get("Name") or "").strip()
    if not name:
        raise ParseError("a Get-EmailAddressPolicy object without Name")
    primary = ""
    domains: list[str] = []
    for template in _strings(p.get("EnabledEmailAddressTemplates")):
        match = _SMTP.match(template)
        if match is None:
            continue  # X400:, EUM: and other address types carry no SMTP domain
        domain = match["domain"].lower()
        if template.startswith("SMTP:"):
            primary = domain
        if domain not in domains:
            domains.append(domain)
    if primary:
        domains = [primary, *(d for d in domains if d != primary)]
    return AddressPolicy(
        name=name,
        priority=str(p.get("Priority") or "").strip(),
        primary_domain=primary,
        domains=tuple(domains),
        applied=as_bool(p.get("RecipientFilterApplied")),
        changed=parse_datetime(p.get("WhenChangedUTC") or p.get("WhenChanged")),
    )


@dataclass(frozen=True)
class AddressPolicyResult:
    """The organisation's email address policies, in the order Get-EmailAddressPolicy lists them."""

    policies: tuple[AddressPolicy, ...]
    kept: frozenset[str] | None = None
    folded: Mapping[str, int] = field(default_factory=dict)

    def generating(self, domain: str) -> list[AddressPolicy]:
        """The policies that generate addresses in ``domain``."""
        return [p for p in self.policies if p.generates(domain)]


class AddressPolicyCollector(OrgCollector):
    """Polls Get-EmailAddressPolicy once per interval for the organisation."""

    name = "email_address_policies"

    def __init__(self, targets: ExchangeTargets, interval: float, max_policies: int = 100) -> None:
        super().__init__(targets, interval)
        self._max_policies = max_policies

    def collect(self, session: ExchangeSession, server: str) -> AddressPolicyResult:
        result = self.run(session, server, "Get-EmailAddressPolicy")
        policies = parse_all("Get-EmailAddressPolicy", result.objects, parse_address_policy)
        return cap_address_policies(AddressPolicyResult(tuple(policies)), self._max_policies)

    def render(self, results: Mapping[str, AddressPolicyResult]) -> Iterable[Metric]:
        return render_address_policies(results.values())


def cap_address_policies(result: AddressPolicyResult, limit: int) -> AddressPolicyResult:
    """The cap decided: the default policy (priority Lowest) and the most recently changed keep series."""

    by_name = {p.name: p for p in result.policies}

    def rank(name: str) -> tuple[bool, float]:
        policy = by_name[name]
        return (policy.priority != "Lowest", -(policy.changed.timestamp() if policy.changed else 0.0))

    names = set(by_name)
    kept = keep_top(names, limit, rank)
    return replace(result, kept=kept, folded={"policy": len(names) - len(kept)})


def render_address_policies(results: Iterable[AddressPolicyResult]) -> list[Metric]:
    """Metric families for the email address policies."""
    domains = GaugeMetricFamily(
        "mailflow_email_address_policy_domain_info",
        'SMTP domains an email address policy generates addresses in (value 1); primary="true" for its primary '
        f'address. Beyond the cap: policy="other", the number of policies. {POLLED}',
        labels=["policy", "domain", "primary"],
    )
    applied = GaugeMetricFamily(
        "mailflow_email_address_policy_applied",
        f"1 if the policy's last change has been applied to the recipients (RecipientFilterApplied). {POLLED}",
        labels=["policy"],
    )
    changed = GaugeMetricFamily(
        "mailflow_email_address_policy_changed_timestamp_seconds",
        f"When the email address policy was last changed (WhenChangedUTC), unix time. {POLLED}",
        labels=["policy"],
    )
    for result in results:
        folded: dict[tuple[str, str], int] = {}
        folded_applied: list[bool] = []
        folded_changed: list[float] = []
        for p in result.policies:
            if result.kept is not None and p.name not in result.kept:
                for d in p.domains:
                    key = (d, "true" if d == p.primary_domain else "false")
                    folded[key] = folded.get(key, 0) + 1
                folded_applied.append(p.applied)
                if p.changed is not None:
                    folded_changed.append(p.changed.timestamp())
                continue
            for d in p.domains:
                domains.add_metric([p.name, d, "true" if d == p.primary_domain else "false"], 1)
            applied.add_metric([p.name], 1 if p.applied else 0)
            if p.changed is not None:
                changed.add_metric([p.name], p.changed.timestamp())
        for (d, primary), n in sorted(folded.items()):
            domains.add_metric([OTHER, d, primary], n)
        if folded_applied:
            applied.add_metric([OTHER], 1 if all(folded_applied) else 0)
        if folded_changed:
            changed.add_metric([OTHER], max(folded_changed))
    return [domains, applied, changed]
