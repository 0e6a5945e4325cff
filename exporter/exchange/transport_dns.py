"""The DNS servers each transport server itself uses: what ``451 4.4.0 DNS query failed`` is asked of.

Two sources per server, both in the View-Only Configuration role:

- ``Get-TransportService -Identity S``: ExternalDNSAdapterEnabled / ExternalDNSAdapterGuid /
  ExternalDNSServers / ExternalDNSProtocolOption and the Internal* equivalents (Set-TransportService
  docs). With the adapter enabled (the default), lookups of destinations outside the organisation
  use the DNS servers of the adapter whose GUID is ExternalDNSAdapterGuid, or of any adapter when
  that GUID is all zeros; with it disabled, the ExternalDNSServers list. The list is also what send
  connectors with UseExternalDNSServersEnabled use (Set-SendConnector docs).
- ``Get-NetworkConnectionInfo -Identity S``: each network adapter's Name, DnsServers and AdapterGuid.

What the server's resolvers answer is not observed here (the exporter's own resolver is not the
server's); the triage puts these servers next to queues retrying with DNS failures, and reports a
server whose settings leave it no DNS server at all (an adapter GUID that names no adapter, or the
adapter disabled with an empty list). ``dns_server`` values are IP addresses from the server's
configuration: bounded by ``max_dns_servers`` per server and scope, the rest folded into ``other``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.cardinality import OTHER
from exporter.exchange.clixml import as_bool, flatten
from exporter.exchange.cmdlet_collector import ServerCollector
from exporter.exchange.session import ExchangeSession
from exporter.exchange.targets import ExchangeTargets

POLLED = "Polled from Get-TransportService and Get-NetworkConnectionInfo on a schedule."
ZERO_GUID = "00000000-0000-0000-0000-000000000000"
SCOPES = ("external", "internal")


def _strings(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list | tuple) else ([] if value is None else [value])
    return tuple(str(v).strip() for v in items if str(v).strip())


@dataclass(frozen=True)
class Adapter:
    """One network adapter of the server (Get-NetworkConnectionInfo)."""

    name: str
    guid: str  # lower case
    dns_servers: tuple[str, ...]


@dataclass(frozen=True)
class DnsSetting:
    """The Transport service's DNS setting of one scope (external or internal lookups)."""

    adapter_enabled: bool
    adapter_guid: str  # lower case; ZERO_GUID: any adapter
    servers: tuple[str, ...]  # the configured list (used when adapter_enabled is false)
    protocol: str  # Any, UseUdpOnly, UseTcpOnly


@dataclass(frozen=True)
class Resolvers:
    """The DNS servers one scope's lookups go to, where they come from, and why there are none."""

    servers: tuple[str, ...]
    source: str  # "adapter" (an adapter's DNS settings) or "list" (the configured list)
    problem: str = ""  # plain words when the settings leave no DNS server


@dataclass(frozen=True)
class TransportDnsResult:
    """One server's transport DNS settings and adapters."""

    server: str
    external: DnsSetting
    internal: DnsSetting
    adapters: tuple[Adapter, ...]
    max_dns_servers: int = 16
    folded: Mapping[str, int] = field(default_factory=dict)

    def resolvers(self, scope: str) -> Resolvers:
        """The DNS servers the Transport service asks for ``scope`` ("external" or "internal") lookups."""
        setting = self.external if scope == "external" else self.internal
        prefix = "External" if scope == "external" else "Internal"
        if not setting.adapter_enabled:
            problem = "" if setting.servers else (
                f"{prefix}DNSAdapterEnabled is false and {prefix}DNSServers is empty"
            )  # fmt: skip
            return Resolvers(setting.servers, "list", problem)
        if setting.adapter_guid in ("", ZERO_GUID):
            servers = tuple(dict.fromkeys(s for a in self.adapters for s in a.dns_servers))
            return Resolvers(servers, "adapter", "" if servers else "no network adapter has a DNS server")
        adapter = next((a for a in self.adapters if a.guid == setting.adapter_guid), None)
        if adapter is None:
            missing = f"{prefix}DNSAdapterGuid {setting.adapter_guid} names no adapter of the server"
            return Resolvers((), "adapter", missing)
        if not adapter.dns_servers:
            return Resolvers((), "adapter", f"the adapter {adapter.name} ({prefix}DNSAdapterGuid) has no DNS server")
        return Resolvers(adapter.dns_servers, "adapter")


def _setting(p: Mapping[str, Any], prefix: str) -> DnsSetting:
    enabled = p.get(f"{prefix}DNSAdapterEnabled")
    return DnsSetting(
        adapter_enabled=True if enabled is None else as_bool(enabled),  # Exchange's default: true
        adapter_guid=str(p.get(f"{prefix}DNSAdapterGuid") or ZERO_GUID).strip().lower(),
        servers=_strings(p.get(f"{prefix}DNSServers")),
        protocol=str(p.get(f"{prefix}DNSProtocolOption") or "Any").strip(),
    )


def parse_adapter(obj: Any) -> Adapter:
    """One Get-NetworkConnectionInfo object."""
    p = flatten(obj)
    return Adapter(
        name=str(p.get("Name") or "").strip() or "(unnamed adapter)",
        guid=str(p.get("AdapterGuid") or "").strip().lower(),
        dns_servers=_strings(p.get("DnsServers")),
    )


class TransportDnsCollector(ServerCollector):
    """Polls each transport server's DNS settings and network adapters."""

    name = "transport_dns"
    needs_hub_transport = True  # the Transport service's settings; a 2013 Client Access server has none

    def __init__(self, targets: ExchangeTargets, interval: float, max_dns_servers: int = 16) -> None:
        super().__init__(targets, interval)
        self._max = max_dns_servers

    def collect(self, session: ExchangeSession, server: str) -> TransportDnsResult:
        settings = self.fetch(session, server, "Get-TransportService", {"Identity": server}, lambda o, _s: flatten(o))
        adapters = self.fetch(
            session, server, "Get-NetworkConnectionInfo", {"Identity": server}, lambda o, _s: parse_adapter(o)
        )
        p = settings[0] if settings else {}
        external, internal = _setting(p, "External"), _setting(p, "Internal")
        result = TransportDnsResult(server, external, internal, tuple(adapters), self._max)
        folded = sum(max(0, len(result.resolvers(s).servers) - self._max) for s in SCOPES)
        return replace(result, folded={"dns_server": folded})

    def render(self, results: Mapping[str, TransportDnsResult]) -> Iterable[Metric]:
        return render_transport_dns(results.values())


def render_transport_dns(results: Iterable[TransportDnsResult]) -> list[Metric]:
    """Metric families for the transport servers' DNS servers."""
    info = GaugeMetricFamily(
        "mailflow_transport_dns_server_info",
        'A DNS server the Transport service asks (value 1); scope="external" for destinations outside the '
        'organisation, source="adapter" (a network adapter\'s DNS settings) or "list" (the configured '
        f"External/InternalDNSServers). {POLLED}",
        labels=["server", "scope", "source", "dns_server"],
    )
    count = GaugeMetricFamily(
        "mailflow_transport_dns_servers",
        f"How many DNS servers the Transport service's settings give it per scope; 0: none at all. {POLLED}",
        labels=["server", "scope"],
    )
    for r in results:
        for scope in SCOPES:
            resolvers = r.resolvers(scope)
            count.add_metric([r.server, scope], len(resolvers.servers))
            shown = resolvers.servers[: r.max_dns_servers]
            for address in shown:
                info.add_metric([r.server, scope, resolvers.source, address], 1)
            if len(resolvers.servers) > len(shown):
                info.add_metric([r.server, scope, resolvers.source, OTHER], len(resolvers.servers) - len(shown))
    return [info, count]
