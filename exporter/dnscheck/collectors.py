"""The DNS and SMTP collectors: per domain, per outbound IP, per MX host.

Targets come from the configuration plus what the Exchange collectors found: accepted domains
(``accepted_domains``) and send-connector source IPs with their HELO names (``send_connectors``),
read from the snapshot store, so a new accepted domain is checked within one reconcile cycle. MX
hosts found by the domain checks become SMTP probe targets. These collectors run on their own
thread pool (``dns.concurrency``), so a thousand domains neither wait on Exchange polls nor starve
them. Each check run has its own answer cache, and the runs of one cycle share dnspython's TTL cache
(:class:`exporter.dnscheck.resolver.CycleCache`), so SPF includes, MX hosts and DMARC records that
many domains share are asked once per cycle.

Bookkeeping is linear per cycle: the service asks ``targets()`` after every poll (is the target still
wanted?), so the target lists are rebuilt only when their inputs (the accepted-domain and
send-connector results, immutable snapshots compared by identity) change, and the same immutable
list is handed out otherwise.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from exporter.dnscheck.baseline import BaselineStore, DriftState
from exporter.dnscheck.dnsbl import DnsblResult, check_dnsbl
from exporter.dnscheck.mx import MxResult, check_mx
from exporter.dnscheck.policy import PolicyResult, check_policies
from exporter.dnscheck.ptr import PtrResult, check_ptr
from exporter.dnscheck.render import render_domains, render_ips, render_smtp
from exporter.dnscheck.resolver import Cycle, CycleCache, DnsClient
from exporter.dnscheck.smtp_probe import SmtpProbeResult, probe
from exporter.dnscheck.spf import SpfAnalysis, analyse, shared_result
from exporter.errors import CollectorError
from exporter.settings import DnsSettings

log = logging.getLogger(__name__)
EXECUTOR = "dns"
T = TypeVar("T")


@dataclass(frozen=True)
class DomainResult:
    """Every check of one domain."""

    domain: str
    mx: MxResult
    spf: SpfAnalysis
    spf_results: Mapping[str, str]  # outbound IP -> pyspf result
    policies: PolicyResult
    drift: Mapping[str, DriftState]  # record type -> state (MX, SPF, DMARC)
    queries: int
    folded: Mapping[str, int] = field(default_factory=dict)  # label -> distinct values left out (MX hosts)


@dataclass(frozen=True)
class IpResult:
    """PTR and blocklist checks of one outbound IP."""

    ip: str
    ptr: PtrResult
    dnsbl: tuple[DnsblResult, ...]
    drift: DriftState | None
    queries: int


def _same(before: list[tuple[str, Any]], now: list[tuple[str, Any]]) -> bool:
    return len(before) == len(now) and all(a[0] == b[0] and a[1] is b[1] for a, b in zip(before, now, strict=True))


class _Derived(Generic[T]):
    """A value derived from one collector's fresh results, rebuilt only when a result changed.

    Results are immutable snapshots, so "changed" is an identity test over (target, result) pairs:
    O(results of that collector), a handful for the organisation-wide collectors."""

    def __init__(self, build: Callable[[Mapping[str, Any]], T]) -> None:
        self._build = build
        self._last: tuple[list[tuple[str, Any]], T] | None = None
        self.rebuilds = 0

    def get(self, results: Mapping[str, Any]) -> T:
        inputs = list(results.items())
        last = self._last  # one read: another thread may replace it meanwhile
        if last is not None and _same(last[0], inputs):
            return last[1]
        value = self._build(results)
        self._last = (inputs, value)
        self.rebuilds += 1
        return value


class Sources:
    """Where the DNS collectors find their targets: settings plus the Exchange collectors' results."""

    def __init__(self, settings: DnsSettings, latest: Callable[[str], Mapping[str, Any]]) -> None:
        self._settings = settings
        self._latest = latest  # collector name -> {target: result} of fresh, successful polls
        self._last_accepted: set[str] = set()  # kept while Exchange is unreachable: DNS checks go on
        self._domains = _Derived(self._build_domains)
        self._outbound = _Derived(self._build_outbound)

    @property
    def rebuilds(self) -> int:
        """How many times the domain and outbound-IP lists were built (they are reused while unchanged)."""
        return self._domains.rebuilds + self._outbound.rebuilds

    def domains(self) -> tuple[str, ...]:
        """Configured domains plus accepted domains (not wildcards), minus excluded globs; sorted."""
        results = self._latest("accepted_domains") if self._settings.use_accepted_domains else {}
        return self._domains.get(results)

    def _build_domains(self, results: Mapping[str, Any]) -> tuple[str, ...]:
        found = set(self._settings.domains)
        if self._settings.use_accepted_domains:
            accepted = {d for result in results.values() for d in result.dns_domains()}
            if accepted:
                self._last_accepted = accepted
            found.update(self._last_accepted)
        excluded = [p.lower() for p in self._settings.exclude_domains]
        return tuple(sorted(d for d in found if not any(fnmatch.fnmatchcase(d, p) for p in excluded)))

    def outbound(self) -> Mapping[str, str]:
        """Outbound IP -> expected HELO name ("" when unknown); sorted by IP text, read-only."""
        results = self._latest("send_connectors") if self._settings.use_send_connector_ips else {}
        return self._outbound.get(results)

    def _build_outbound(self, results: Mapping[str, Any]) -> Mapping[str, str]:
        out = {o.ip: o.helo for o in self._settings.outbound_ips}
        for result in results.values():
            for conn in result.kept_connectors():  # within the send connector cap
                # SourceIPAddress is a local bind address; behind NAT it is private: not checkable.
                if conn.source_ip and conn.enabled and ipaddress.ip_address(conn.source_ip).is_global:
                    out.setdefault(conn.source_ip, conn.fqdn)
        return MappingProxyType(dict(sorted(out.items())))

    def mx_hosts(self, cap: int | None) -> dict[str, str]:
        """MX host -> an address it resolves to, from the latest domain checks (sorted, capped)."""
        hosts: dict[str, str] = {}
        for result in self._latest("dns_domains").values():
            for host in result.mx.hosts:
                if host.addresses:
                    hosts.setdefault(host.host, host.addresses[0])
        return dict(sorted(hosts.items())[:cap])


class _DnsCollector:
    executor = EXECUTOR

    def __init__(self, settings: DnsSettings, sources: Sources, interval: float) -> None:
        self._settings = settings
        self.sources = sources
        self._interval = interval
        self._client = DnsClient(tuple(settings.resolvers), settings.port, settings.timeout)
        self.cycle_cache = CycleCache()

    def interval(self) -> float:
        return self._interval

    def client(self, target: str, cycle: Cycle | None = None) -> DnsClient:
        """A client for one check run of ``target``, sharing the cycle's answer cache (by default the
        current one)."""
        return self._client.fresh((cycle or self.cycle_cache.current(target)).answers)


class DomainCheckCollector(_DnsCollector):
    """MX, SPF (record, limits, per-IP result), DMARC, MTA-STS and TLS-RPT of each domain."""

    name = "dns_domains"
    targets_from = ("accepted_domains",)

    def __init__(self, settings: DnsSettings, sources: Sources, baselines: BaselineStore) -> None:
        super().__init__(settings, sources, settings.interval)
        self._baselines = baselines

    def targets(self) -> Sequence[str]:
        return self.sources.domains()

    def close(self) -> None:
        """Save the DNS baselines (called on shutdown)."""
        self._baselines.flush()

    def poll(self, target: str) -> DomainResult:
        cycle = self.cycle_cache.current(target)
        client = self.client(target, cycle)
        expect = self._settings.expect.get(target)
        mx = check_mx(target, client, expect.mx if expect else None, self._settings.max_mx_hosts)
        spf = analyse(target, client)
        policies = check_policies(target, client)
        spf_results = {
            ip: shared_result(ip, target, client, spf, cycle.derived, helo)
            for ip, helo in self.sources.outbound().items()
        } if (spf.records <= 1 and not spf.temp_errors) else {}  # fmt: skip
        if mx.answer.failed and spf.temp_errors and policies.dmarc.answer.failed:
            raise CollectorError(f"DNS for {target}: {mx.answer.status} ({mx.answer.detail})", reason="dns")
        drift = self._drift(target, mx, spf, policies)
        return DomainResult(target, mx, spf, spf_results, policies, drift, client.queries, {"host": len(mx.more_hosts)})

    def _drift(self, domain: str, mx: MxResult, spf: SpfAnalysis, policies: PolicyResult) -> dict[str, DriftState]:
        """Observe MX hosts, the SPF record and the DMARC policy (skipping any the resolver failed)."""
        expect = self._settings.expect.get(domain)
        observe = self._baselines.observe
        drift: dict[str, DriftState] = {}
        if not mx.answer.failed:
            hosts = mx.names or (["."] if mx.null_mx else [])
            drift["MX"] = observe(domain, "MX", hosts, expect.mx if expect else None)
        if not spf.temp_errors:
            wanted = [expect.spf] if expect and expect.spf else None
            drift["SPF"] = observe(domain, "SPF", [spf.record] if spf.record else [], wanted)
        if not policies.dmarc.answer.failed:
            wanted = [expect.dmarc_policy] if expect and expect.dmarc_policy else None
            drift["DMARC"] = observe(domain, "DMARC", [policies.dmarc_policy] if policies.dmarc.count else [], wanted)
        return drift

    def render(self, results: Mapping[str, DomainResult]) -> Iterable[Any]:
        return render_domains(results.values())


class IpCheckCollector(_DnsCollector):
    """PTR (forward-confirmed, matching HELO) and blocklists of each outbound IP."""

    name = "dns_ips"
    targets_from = ("send_connectors",)

    def __init__(self, settings: DnsSettings, sources: Sources, baselines: BaselineStore) -> None:
        super().__init__(settings, sources, settings.interval)
        self._baselines = baselines
        self._targets: tuple[Mapping[str, str], tuple[str, ...]] | None = None

    def targets(self) -> Sequence[str]:
        outbound = self.sources.outbound()
        last = self._targets
        if last is None or last[0] is not outbound:  # the same tuple while the IPs are unchanged
            last = self._targets = (outbound, tuple(outbound))
        return last[1]

    def poll(self, target: str) -> IpResult:
        client = self.client(target)
        helo = self.sources.outbound().get(target, "")
        ptr = check_ptr(target, client, helo, self.sources.domains())
        listed = tuple(check_dnsbl(target, zone, client) for zone in self._settings.blocklists)
        if ptr.answer.failed and listed and all(not r.ok for r in listed):
            raise CollectorError(f"DNS for {target}: {ptr.answer.status} ({ptr.answer.detail})", reason="dns")
        drift = None if ptr.answer.failed else self._baselines.observe(target, "PTR", list(ptr.names))
        return IpResult(target, ptr, listed, drift, client.queries)

    def render(self, results: Mapping[str, IpResult]) -> Iterable[Any]:
        return render_ips(results.values())


class SmtpProbeCollector(_DnsCollector):
    """Banner, EHLO, STARTTLS and certificate of each MX host (and configured extra hosts)."""

    name = "smtp"
    targets_from = ("dns_domains",)

    def __init__(self, settings: DnsSettings, sources: Sources) -> None:
        super().__init__(settings, sources, settings.smtp.interval)
        self._smtp = settings.smtp

    def _hosts(self) -> dict[str, str]:
        hosts = self.sources.mx_hosts(self._smtp.max_hosts) if self._smtp.probe_mx else {}
        for extra in self._smtp.hosts:
            hosts.setdefault(extra, "")
        return hosts

    def targets(self) -> list[str]:
        return sorted(self._hosts())

    def folded_targets(self) -> dict[str, int]:
        """MX hosts beyond ``dns.smtp.max_hosts``, not probed (``mailflow_label_values_folded``)."""
        found = len(self.sources.mx_hosts(None)) if self._smtp.probe_mx else 0
        return {"host": max(0, found - self._smtp.max_hosts)}

    def poll(self, target: str) -> SmtpProbeResult:
        address = self._hosts().get(target) or self._resolve(target)
        s = self._smtp
        return probe(target, address, s.port, s.timeout, s.helo_name, str(s.ca_bundle) if s.ca_bundle else None)

    def _resolve(self, host: str) -> str:
        client = self.client(host)
        for answer in client.addresses(host):
            if answer.ok:
                return answer.records[0]
        raise CollectorError(f"{host} does not resolve", reason="dns")

    def render(self, results: Mapping[str, SmtpProbeResult]) -> Iterable[Any]:
        return render_smtp(results.values())


def dns_collectors(
    settings: DnsSettings, latest: Callable[[str], Mapping[str, Any]], baselines: BaselineStore
) -> Sequence[Any]:
    """The enabled DNS/SMTP collectors."""
    if not settings.enabled:
        return []
    sources = Sources(settings, latest)
    out: list[Any] = [
        DomainCheckCollector(settings, sources, baselines),
        IpCheckCollector(settings, sources, baselines),
    ]
    if settings.smtp.enabled:
        out.append(SmtpProbeCollector(settings, sources))
    return out
