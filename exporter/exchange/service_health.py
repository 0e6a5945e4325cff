"""Required Windows services per Exchange role (``Test-ServiceHealth -Server EX01``).

A stopped MSExchangeTransport or MSExchangeFrontEndTransport stops mail on that server outright.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.cardinality import OTHER, fold_enum, keep_top, unknown
from exporter.errors import ParseError
from exporter.exchange.clixml import as_bool, flatten
from exporter.exchange.cmdlet_collector import CappedServerCollector
from exporter.exchange.session import ExchangeSession

POLLED = "Polled from Test-ServiceHealth on a schedule."
#: Test-ServiceHealth roles (reference §4, "<name> Server Role" shortened); others are reported as "other".
ROLES = frozenset({"Mailbox", "ClientAccess", "HubTransport", "UnifiedMessaging"})


@dataclass(frozen=True)
class RoleServices:
    """One role's required services on one server."""

    server: str
    role: str
    required_running: bool
    running: tuple[str, ...]
    not_running: tuple[str, ...]


def _names(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else ([] if value in (None, "") else [value])
    return tuple(sorted(str(v).strip() for v in items if str(v).strip()))


def role_label(role: str) -> str:
    """``Hub Transport Server Role`` -> ``HubTransport`` (short, stable label values)."""
    words = role.replace("Server Role", "").split()
    return "".join(words) or role


def parse_role_services(obj: Any, server: str) -> RoleServices:
    """One Test-ServiceHealth object."""
    p = flatten(obj)
    role = str(p.get("Role") or "").strip()
    if not role:
        raise ParseError("a Test-ServiceHealth object without Role")
    not_running = _names(p.get("ServicesNotRunning"))
    return RoleServices(
        server=server,
        role=role_label(role),
        required_running=as_bool(p.get("RequiredServicesRunning")) and not not_running,
        running=_names(p.get("ServicesRunning")),
        not_running=not_running,
    )


@dataclass(frozen=True)
class ServiceHealthResult:
    """Every role's service health on one server."""

    server: str
    roles: tuple[RoleServices, ...]
    kept: frozenset[tuple[str, str]] | None = None  # (role, service) with their own series (None: all)
    folded: Mapping[str, int] = field(default_factory=dict)  # label -> distinct values shown as "other"


class ServiceHealthCollector(CappedServerCollector):
    """Polls Test-ServiceHealth per server."""

    name = "service_health"
    # Test-ServiceHealth does not support Exchange 2013 Client Access servers (cmdlet docs).
    needs_hub_transport = True

    def collect(self, session: ExchangeSession, server: str) -> ServiceHealthResult:
        roles = self.fetch(session, server, "Test-ServiceHealth", {"Server": server}, parse_role_services)
        return cap_service_health(ServiceHealthResult(server, tuple(sorted(roles, key=lambda r: r.role))), self._limit)

    def render(self, results: Mapping[str, ServiceHealthResult]) -> Iterable[Metric]:
        return render_service_health(results.values())


def cap_service_health(result: ServiceHealthResult, limit: int) -> ServiceHealthResult:
    """The result with its cardinality cap decided: ``limit`` (role, service) pairs keep their own
    series, stopped services first."""
    stopped = {(fold_enum(r.role, ROLES), s) for r in result.roles for s in r.not_running}
    services = {(fold_enum(r.role, ROLES), s) for r in result.roles for s in (*r.running, *r.not_running)}
    kept = keep_top(services, limit, lambda key: key not in stopped)
    roles = unknown((r.role for r in result.roles), ROLES)
    return replace(result, kept=kept, folded={"service": len(services) - len(kept), "role": roles})


def render_service_health(results: Iterable[ServiceHealthResult]) -> list[Metric]:
    """Metric families for service health."""
    required = GaugeMetricFamily(
        "mailflow_service_health_required_running",
        f"1 if every service the role requires is running (RequiredServicesRunning). {POLLED}",
        labels=["server", "role"],
    )
    running = GaugeMetricFamily(
        "mailflow_service_health_service_running",
        f"1 if the required service is running, 0 if it is listed in ServicesNotRunning. {POLLED}",
        labels=["server", "role", "service"],
    )
    for result in sorted(results, key=lambda r: r.server):
        # Roles outside ROLES share role="other" and services beyond the cap service="other": 1 only if
        # every one of them runs.
        roles: dict[str, int] = {}
        services: dict[tuple[str, str], int] = {}
        for r in result.roles:
            role = fold_enum(r.role, ROLES)
            roles[role] = min(roles.get(role, 1), 1 if r.required_running else 0)
            for service in {*r.running, *r.not_running}:
                key = (role, service) if result.kept is None or (role, service) in result.kept else (role, OTHER)
                services[key] = min(services.get(key, 1), 0 if service in r.not_running else 1)
        for role, up in sorted(roles.items()):
            required.add_metric([result.server, role], up)
        for (role, service), up in sorted(services.items()):
            running.add_metric([result.server, role, service], up)
    return [required, running]
