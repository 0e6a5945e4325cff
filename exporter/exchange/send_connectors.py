"""Send connectors (organisation-wide): enabled, routing (DNS or smart host) and expected-state drift."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.cardinality import OTHER, keep_top
from exporter.errors import ParseError
from exporter.exchange.clixml import as_bool, as_int, flatten, parse_datetime
from exporter.exchange.cmdlet_collector import OrgCollector, parse_all
from exporter.exchange.drift import ConnectorDrift, connector_drift
from exporter.exchange.session import ExchangeSession
from exporter.exchange.targets import ExchangeTargets
from exporter.settings import SendConnectorExpectation

POLLED = "Polled from Get-SendConnector on a schedule."


def _strings(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list | tuple) else ([] if value is None else [value])
    return tuple(str(v).strip() for v in items if str(v).strip())


@dataclass(frozen=True)
class SendConnector:
    """One send connector, typed."""

    name: str
    enabled: bool
    dns_routing: bool
    smart_hosts: tuple[str, ...]
    address_spaces: tuple[str, ...]
    source_transport_servers: tuple[str, ...]
    port: int
    require_tls: bool
    tls_auth_level: str
    cloud_services_mail_enabled: bool
    changed: datetime | None
    source_ip: str = ""  # SourceIPAddress; "" when unset (0.0.0.0 / ::)
    fqdn: str = ""  # the HELO/EHLO name the connector announces ("" = the server's FQDN)
    use_external_dns: bool = False  # UseExternalDNSServersEnabled: resolves with ExternalDNSServers

    def settings(self) -> dict[str, Any]:
        """The values expectations compare against, keyed like SendConnectorExpectation."""
        return {
            "enabled": self.enabled,
            "dns_routing": self.dns_routing,
            "smart_hosts": list(self.smart_hosts),
            "address_spaces": list(self.address_spaces),
            "source_transport_servers": list(self.source_transport_servers),
            "port": self.port,
            "require_tls": self.require_tls,
            "tls_auth_level": self.tls_auth_level,
        }


def parse_send_connector(obj: Any) -> SendConnector:
    """One Get-SendConnector object. Exchange forces DNSRoutingEnabled = (no smart hosts) on output;
    when the flag is missing it is derived the same way."""
    p = flatten(obj)
    name = str(p.get("Name") or p.get("Identity") or "").strip()
    if not name:
        raise ParseError("a Get-SendConnector object without Name")
    smart_hosts = _strings(p.get("SmartHosts"))
    dns = p.get("DNSRoutingEnabled")
    return SendConnector(
        name=name,
        enabled=as_bool(p.get("Enabled")),
        dns_routing=as_bool(dns) if dns is not None else not smart_hosts,
        smart_hosts=smart_hosts,
        address_spaces=_strings(p.get("AddressSpaces")),
        source_transport_servers=_strings(p.get("SourceTransportServers")),
        port=as_int(p.get("Port"), 25),
        require_tls=as_bool(p.get("RequireTLS")),
        tls_auth_level=str(p.get("TlsAuthLevel") or ""),
        cloud_services_mail_enabled=as_bool(p.get("CloudServicesMailEnabled")),
        changed=parse_datetime(p.get("WhenChangedUTC") or p.get("WhenChanged")),
        source_ip=_source_ip(p.get("SourceIPAddress")),
        fqdn=str(p.get("Fqdn") or "").strip().lower(),
        use_external_dns=as_bool(p.get("UseExternalDNSServersEnabled")),
    )


def _source_ip(value: Any) -> str:
    text = str(value or "").strip()
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return ""
    return "" if addr.is_unspecified else str(addr)


@dataclass(frozen=True)
class SendConnectorResult:
    """The organisation's send connectors and their drift."""

    connectors: tuple[SendConnector, ...]
    drift: tuple[ConnectorDrift, ...]
    kept: frozenset[str] | None = None  # connectors with their own series (None: all); the rest are "other"
    folded: Mapping[str, int] = field(default_factory=dict)  # label -> distinct values shown as "other"

    def kept_connectors(self) -> list[SendConnector]:
        """The connectors within the cap (the DNS checks take outbound IPs from these only)."""
        return [c for c in self.connectors if self.kept is None or c.name in self.kept]


def send_drift(
    connectors: Sequence[SendConnector], expect: Mapping[str, SendConnectorExpectation]
) -> list[ConnectorDrift]:
    """Drift of the send connectors against each expectation (pattern: connector name glob)."""
    wanted = [(pattern, pattern, expectation) for pattern, expectation in sorted(expect.items())]
    return connector_drift(wanted, [(c.name, c.settings()) for c in connectors])


class SendConnectorCollector(OrgCollector):
    """Polls Get-SendConnector once per interval for the organisation."""

    name = "send_connectors"

    def __init__(
        self,
        targets: ExchangeTargets,
        interval: float,
        expect: Mapping[str, SendConnectorExpectation],
        max_connectors: int = 100,
    ) -> None:
        super().__init__(targets, interval)
        self._expect = dict(expect)
        self._max_connectors = max_connectors

    def collect(self, session: ExchangeSession, server: str) -> SendConnectorResult:
        result = self.run(session, server, "Get-SendConnector")
        connectors = sorted(parse_all("Get-SendConnector", result.objects, parse_send_connector), key=lambda c: c.name)
        found = SendConnectorResult(tuple(connectors), tuple(send_drift(connectors, self._expect)))
        return cap_send_connectors(found, self._max_connectors)

    def render(self, results: Mapping[str, SendConnectorResult]) -> Iterable[Metric]:
        return render_send_connectors(results.values())


def cap_send_connectors(result: SendConnectorResult, limit: int) -> SendConnectorResult:
    """The result with its cardinality cap decided: ``limit`` connectors keep their own series,
    enabled ones first."""
    enabled = {c.name for c in result.connectors if c.enabled}
    names = {c.name for c in result.connectors}
    kept = keep_top(names, limit, lambda name: name not in enabled)
    return replace(result, kept=kept, folded={"connector": len(names) - len(kept)})


def render_send_connectors(results: Iterable[SendConnectorResult]) -> list[Metric]:
    """Metric families for the send connectors."""
    enabled = GaugeMetricFamily(
        "mailflow_send_connector_enabled", f"1 if the send connector is enabled. {POLLED}", labels=["connector"]
    )
    smart = GaugeMetricFamily(
        "mailflow_send_connector_uses_smart_host",
        f"1 if the send connector routes through smart hosts, 0 if it routes by DNS MX lookup. {POLLED}",
        labels=["connector"],
    )
    info = GaugeMetricFamily(
        "mailflow_send_connector_info",
        f"Send connector routing as labels (value 1). {POLLED}",
        labels=["connector", "address_spaces", "smart_hosts", "port", "require_tls"],
    )
    changed = GaugeMetricFamily(
        "mailflow_send_connector_changed_timestamp_seconds",
        f"When the send connector was last changed in AD (WhenChangedUTC), unix time. {POLLED}",
        labels=["connector"],
    )
    drift = GaugeMetricFamily(
        "mailflow_send_connector_drift",
        f'1 if the setting differs from the configured expectation (setting="present": connector missing). {POLLED}',
        labels=["connector", "setting"],
    )
    for result in results:
        kept = result.kept_connectors()
        folded = [c for c in result.connectors if result.kept is not None and c.name not in result.kept]
        for conn in kept:
            enabled.add_metric([conn.name], 1 if conn.enabled else 0)
            smart.add_metric([conn.name], 0 if conn.dns_routing else 1)
            info.add_metric(
                [
                    conn.name,
                    ", ".join(conn.address_spaces),
                    ", ".join(conn.smart_hosts),
                    str(conn.port),
                    "true" if conn.require_tls else "false",
                ],
                1,
            )
            if conn.changed is not None:
                changed.add_metric([conn.name], conn.changed.timestamp())
        if folded:  # beyond the cap: counts summed, the latest change
            enabled.add_metric([OTHER], sum(1 for c in folded if c.enabled))
            smart.add_metric([OTHER], sum(1 for c in folded if not c.dns_routing))
            info.add_metric([OTHER, OTHER, OTHER, OTHER, OTHER], len(folded))
            stamps = [c.changed.timestamp() for c in folded if c.changed is not None]
            if stamps:
                changed.add_metric([OTHER], max(stamps))
        names = {c.name for c in folded}
        drifted: dict[tuple[str, str], bool] = {}
        for item in result.drift:
            key = (OTHER if item.connector in names else item.connector, item.setting)
            drifted[key] = drifted.get(key, False) or item.drifted
        for (name, setting), is_drifted in drifted.items():
            drift.add_metric([name, setting], 1 if is_drifted else 0)
    return [enabled, smart, info, changed, drift]
