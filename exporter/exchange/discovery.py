"""Discovery: find transport servers with Get-ExchangeServer through the seed server's session.

A transport server runs the hub Transport service (a Mailbox server: queues, message tracking) or the
Front End Transport service (the port-25 Frontend receive connectors). Exchange 2016 and later run
both on every Mailbox server; an Exchange 2013 Client Access server runs only the second, so it is
audited (connectors, components, certificates) but never asked for queues or tracking logs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.exchange.clixml import as_bool, flatten
from exporter.exchange.cmdlet_collector import ORG_EXECUTOR
from exporter.exchange.targets import DiscoveredServer, ExchangeTargets

log = logging.getLogger(__name__)


def parse_exchange_servers(objects: Iterable[Any]) -> list[DiscoveredServer]:
    """Transport servers (hub or Front End Transport; not Edge) from Get-ExchangeServer output."""
    servers = []
    for obj in objects:
        props = flatten(obj)
        name = str(props.get("Name") or "").strip()
        hub, frontend = as_bool(props.get("IsHubTransportServer")), as_bool(props.get("IsFrontendTransportServer"))
        if not name or as_bool(props.get("IsEdgeServer")) or not (hub or frontend):
            continue
        servers.append(
            DiscoveredServer(
                name=name,
                fqdn=str(props.get("Fqdn") or name),
                version=str(props.get("AdminDisplayVersion") or ""),
                site=str(props.get("Site") or "").rsplit("/", 1)[-1],
                roles=str(props.get("ServerRole") or ""),
                hub_transport=hub,
                frontend_transport=frontend,
            )
        )
    return sorted(servers, key=lambda s: s.name.lower())


class DiscoveryCollector:
    """Runs Get-ExchangeServer on the seed and updates the target inventory."""

    name = "discovery"
    executor = ORG_EXECUTOR  # organisation-wide: its own workers (exporter.service)

    def __init__(self, targets: ExchangeTargets, interval: float) -> None:
        self._targets = targets
        self._interval = interval

    def interval(self) -> float:
        return self._interval

    def targets(self) -> list[str]:
        return [self._targets.seed().name]

    def poll(self, target: str) -> tuple[DiscoveredServer, ...]:
        result = self._targets.session(target).invoke("Get-ExchangeServer")
        result.raise_for_errors("Get-ExchangeServer")
        found = parse_exchange_servers(result.objects)
        for problem in self._targets.set_discovered(found):
            log.warning('discovered server skipped detail="%s"', problem)
        return tuple(s for s in found if self._targets.accept(s.name))

    def render(self, results: Mapping[str, tuple[DiscoveredServer, ...]]) -> Iterable[Metric]:
        info = GaugeMetricFamily(
            "mailflow_exchange_server_info",
            "Transport servers (hub or Front End Transport) reported by Get-ExchangeServer (discovery).",
            labels=["server", "fqdn", "version", "site"],
        )
        seen = set()
        for found in results.values():
            for s in found:
                if s.name not in seen:
                    seen.add(s.name)
                    info.add_metric([s.name, s.fqdn, s.version, s.site], 1)
        return [info]
