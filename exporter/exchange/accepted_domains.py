"""Accepted domains (organisation-wide): the domains Exchange accepts mail for.

They matter twice: a domain that vanished or changed type (Authoritative -> InternalRelay) explains
``550 5.1.1`` bounces for internal recipients, and the DNS checks use them as their domain list.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from publicsuffixlist import PublicSuffixList

from exporter.cardinality import OTHER, fold_enum, keep_top, unknown
from exporter.errors import ParseError
from exporter.exchange.clixml import as_bool, flatten, parse_datetime
from exporter.exchange.cmdlet_collector import OrgCollector, parse_all
from exporter.exchange.session import ExchangeSession
from exporter.exchange.targets import ExchangeTargets

POLLED = "Polled from Get-AcceptedDomain on a schedule."
RELAY_TYPES = ("InternalRelay", "ExternalRelay")


@functools.cache
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList(accept_unknown=False)  # ICANN and private sections; unknown TLDs are not suffixes


def _public_suffix(name: str) -> bool:
    """Whether ``name`` is a public suffix (``com``, ``co.uk``, ``github.io``): domains under it belong
    to many unrelated owners."""
    return bool(name) and _suffixes().is_public(name.lower().rstrip("."))


#: AcceptedDomainType (reference §4); anything else is reported as "other".
DOMAIN_TYPES = frozenset({"Authoritative", "InternalRelay", "ExternalRelay"})


@dataclass(frozen=True)
class AcceptedDomain:
    """One accepted domain, typed. ``domain`` is lower case (``*.contoso.local`` for wildcards)."""

    domain: str
    domain_type: str
    default: bool
    match_subdomains: bool
    changed: datetime | None
    name: str = ""  # the accepted domain object's Name (its identity: "Wild .com"), not the domain

    @property
    def is_wildcard(self) -> bool:
        return self.domain.startswith("*")

    @property
    def relay_scope(self) -> str | None:
        """The namespace no single organisation owns that this wildcard covers: ``"every domain"`` for
        ``*``, ``"every .com domain"`` for ``*.com`` (any public suffix: ``*.co.uk``, ``*.github.io``);
        None for an ordinary domain or a wildcard below a registrable domain (``*.contoso.com``) or
        below a suffix the Public Suffix List does not know (``*.local``, ``*.contoso.local``)."""
        if self.domain == "*":
            return "every domain"
        if self.domain.startswith("*.") and _public_suffix(self.domain[2:]):
            return f"every .{self.domain[2:]} domain"
        return None

    @property
    def relays_everything(self) -> bool:
        """``*`` or ``*.<public suffix>`` (``*.com``) as a relay domain (InternalRelay/ExternalRelay):
        Exchange accepts mail for every such domain from anyone and relays it on (an open relay for
        that namespace). Authoritative wildcards are not relays: unknown recipients get 5.1.1."""
        return self.relay_scope is not None and self.domain_type in RELAY_TYPES


def parse_accepted_domain(obj: Any) -> AcceptedDomain:
    """One Get-AcceptedDomain object."""
    p = flatten(obj)
    domain = str(p.get("DomainName") or "").strip().lower()
    if not domain:
        raise ParseError("a Get-AcceptedDomain object without DomainName")
    return AcceptedDomain(
        domain=domain,
        domain_type=str(p.get("DomainType") or "Authoritative"),
        default=as_bool(p.get("Default")),
        match_subdomains=as_bool(p.get("MatchSubDomains")),
        changed=parse_datetime(p.get("WhenChangedUTC") or p.get("WhenChanged")),
        name=str(p.get("Name") or "").strip(),
    )


@dataclass(frozen=True)
class AcceptedDomainResult:
    """The organisation's accepted domains, sorted by name."""

    domains: tuple[AcceptedDomain, ...]
    kept: frozenset[str] | None = None  # domains with their own series (None: all); the rest are "other"
    folded: Mapping[str, int] = field(default_factory=dict)  # label -> distinct values shown as "other"

    def dns_domains(self) -> list[str]:
        """Domains the DNS checks can query (wildcards such as ``*.contoso.local`` and ``*`` excluded),
        within the cap: the DNS checks' ``domain`` label is bounded by it too."""
        return [d.domain for d in self.domains if not d.is_wildcard and (self.kept is None or d.domain in self.kept)]


class AcceptedDomainCollector(OrgCollector):
    """Polls Get-AcceptedDomain once per interval for the organisation."""

    name = "accepted_domains"

    def __init__(self, targets: ExchangeTargets, interval: float, max_domains: int = 1000) -> None:
        super().__init__(targets, interval)
        self._max_domains = max_domains

    def collect(self, session: ExchangeSession, server: str) -> AcceptedDomainResult:
        result = self.run(session, server, "Get-AcceptedDomain")
        domains = sorted(parse_all("Get-AcceptedDomain", result.objects, parse_accepted_domain), key=lambda d: d.domain)
        return cap_accepted_domains(AcceptedDomainResult(tuple(domains)), self._max_domains)

    def render(self, results: Mapping[str, AcceptedDomainResult]) -> Iterable[Metric]:
        return render_accepted_domains(results.values())


def cap_accepted_domains(result: AcceptedDomainResult, limit: int) -> AcceptedDomainResult:
    """The result with its cardinality cap decided: ``limit`` domains keep their own series (and are
    DNS-checked), the default domain and relay-everything entries first, then by name."""
    first = {d.domain for d in result.domains if d.default or d.relays_everything}
    names = {d.domain for d in result.domains}
    kept = keep_top(names, limit, lambda name: name not in first)
    folded = {
        "domain": len(names) - len(kept),
        "domain_type": unknown((d.domain_type for d in result.domains), DOMAIN_TYPES),
    }
    return replace(result, kept=kept, folded=folded)


def render_accepted_domains(results: Iterable[AcceptedDomainResult]) -> list[Metric]:
    """Metric families for the accepted domains."""
    info = GaugeMetricFamily(
        "mailflow_accepted_domain_info",
        f"Accepted domains (value 1); default is true for the organisation's default domain. {POLLED}",
        labels=["domain", "domain_type", "default"],
    )
    count = GaugeMetricFamily(
        "mailflow_accepted_domains", f"Accepted domains by type. {POLLED}", labels=["domain_type"]
    )
    open_relay = GaugeMetricFamily(
        "mailflow_accepted_domain_open_relay",
        f'1 if an accepted domain "*" or "*.<public suffix>" (such as "*.com") of a relay type makes Exchange '
        f"relay mail for every domain (under that suffix). {POLLED}",
    )
    changed = GaugeMetricFamily(
        "mailflow_accepted_domain_changed_timestamp_seconds",
        f"When the accepted domain was last changed in AD (WhenChangedUTC), unix time. {POLLED}",
        labels=["domain"],
    )
    for result in results:
        per_type = dict.fromkeys(sorted(DOMAIN_TYPES), 0)
        folded: dict[tuple[str, str], int] = {}  # beyond the cap: (type, default) -> domains
        latest: float | None = None  # the latest change of a folded domain
        for d in result.domains:
            domain_type = fold_enum(d.domain_type, DOMAIN_TYPES)
            per_type[domain_type] = per_type.get(domain_type, 0) + 1
            default = "true" if d.default else "false"
            if result.kept is not None and d.domain not in result.kept:
                folded[(domain_type, default)] = folded.get((domain_type, default), 0) + 1
                if d.changed is not None:
                    latest = max(latest or 0.0, d.changed.timestamp())
                continue
            info.add_metric([d.domain, domain_type, default], 1)
            if d.changed is not None:
                changed.add_metric([d.domain], d.changed.timestamp())
        for (domain_type, default), n in sorted(folded.items()):
            info.add_metric([OTHER, domain_type, default], n)
        if latest is not None:
            changed.add_metric([OTHER], latest)
        for domain_type, n in sorted(per_type.items()):
            count.add_metric([domain_type], n)
        open_relay.add_metric([], 1 if any(d.relays_everything for d in result.domains) else 0)
    return [info, count, open_relay, changed]
