"""Receive connectors per server: enabled state, settings, open-relay risk and expected-state drift.

``Get-ReceiveConnector -Server EX01`` gives the connectors; for each enabled connector that takes
anonymous mail from beyond the trusted networks, ``Get-ADPermission -Identity <DistinguishedName>
-User "NT AUTHORITY\\ANONYMOUS LOGON"`` tells whether anonymous senders may relay (see ``relay.py``).
Get-ADPermission's -Identity is an ADRawEntryIdParameter (a DN, an objectGUID or a unique name), not
the ``EX01\\<name>`` Identity Get-ReceiveConnector prints, so the connector's DistinguishedName (or
else its Guid) from the Get-ReceiveConnector output is passed. If the account may not run
Get-ADPermission (it needs a role beyond View-Only Organization Management) or the call fails, the
answer is recorded as unknown, with the reason (``UNVERIFIED``), without failing the collector.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.cardinality import OTHER, fold_enum, keep_top, unknown
from exporter.errors import CollectorError, ParseError
from exporter.exchange.clixml import AUTH_MECHANISMS, PERMISSION_GROUPS, as_bool, flatten, parse_datetime, parse_flags
from exporter.exchange.cmdlet_collector import ServerCollector
from exporter.exchange.drift import ConnectorDrift, connector_drift, matches
from exporter.exchange.iprange import AddressRange, parse_ip_ranges
from exporter.exchange.relay import (
    ANONYMOUS,
    REASONS,
    RelayInputs,
    anonymous_may_relay,
    assess,
    needs_permission_check,
    untrusted_addresses,
)
from exporter.exchange.session import ExchangeSession
from exporter.exchange.targets import ExchangeTargets
from exporter.settings import ReceiveConnectorExpectation

log = logging.getLogger(__name__)
POLLED = "Polled from Get-ReceiveConnector on a schedule."

# Why an anonymous connector's relay right is unverified: the check is switched off, RBAC hides
# Get-ADPermission from the account, the connector came without DistinguishedName and Guid, or the
# call wrote an error (object not found, a directory error ...).
UNVERIFIED = ("check_disabled", "cmdlet_unavailable", "no_identity", "call_failed")
#: ReceiveConnector.TransportRole values (reference §3.1); anything else is reported as "other".
TRANSPORT_ROLES = frozenset({"FrontendTransport", "HubTransport"})


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list | tuple) else [value]
    return tuple(str(v).strip() for v in items if str(v).strip())


def _flag_names(value: Any) -> tuple[str, ...]:
    """Flag names in a stable order (the enum's), from display text such as 'Tls, Integrated'."""
    return tuple(str(v).strip() for v in str(value or "").split(",") if str(v).strip() and str(v).strip() != "None")


@dataclass(frozen=True)
class ReceiveConnector:
    """One receive connector, typed."""

    server: str
    name: str
    identity: str
    enabled: bool
    transport_role: str
    bindings: tuple[str, ...]
    remote_ip_ranges: tuple[str, ...]
    ranges: tuple[AddressRange, ...]
    permission_groups: frozenset[str]
    auth_mechanism: frozenset[str]
    permission_groups_text: str
    auth_mechanism_text: str
    require_tls: bool
    fqdn: str
    changed: datetime | None
    distinguished_name: str = ""
    guid: str = ""

    @property
    def relay_inputs(self) -> RelayInputs:
        return RelayInputs(self.enabled, self.ranges, self.permission_groups, self.auth_mechanism, self.require_tls)

    def settings(self) -> dict[str, Any]:
        """The values expectations compare against, keyed like ReceiveConnectorExpectation."""
        return {
            "enabled": self.enabled,
            "transport_role": self.transport_role,
            "bindings": list(self.bindings),
            "remote_ip_ranges": list(self.remote_ip_ranges),
            "permission_groups": sorted(self.permission_groups),
            "auth_mechanism": sorted(self.auth_mechanism),
            "require_tls": self.require_tls,
        }


def parse_receive_connector(obj: Any, server: str) -> ReceiveConnector:
    """One Get-ReceiveConnector object; raises ParseError on an object without a name or with an
    unreadable RemoteIPRanges entry (an unreadable range must not make a connector look safe)."""
    p = flatten(obj)
    name = str(p.get("Name") or "").strip()
    if not name:
        raise ParseError("a Get-ReceiveConnector object without Name")
    ranges_text = _strings(p.get("RemoteIPRanges"))
    try:
        ranges = tuple(parse_ip_ranges(ranges_text))
    except ValueError as err:
        raise ParseError(f"receive connector {name}: {err}") from None
    if not ranges:  # Exchange never stores an empty list: it was not readable, and must not look safe
        raise ParseError(f"receive connector {name}: RemoteIPRanges empty or unreadable")
    groups, auth = p.get("PermissionGroups"), p.get("AuthMechanism")
    return ReceiveConnector(
        server=str(p.get("Server") or server).strip() or server,
        name=name,
        identity=str(p.get("Identity") or f"{server}\\{name}"),
        enabled=as_bool(p.get("Enabled")),
        transport_role=str(p.get("TransportRole") or ""),
        bindings=_strings(p.get("Bindings")),
        remote_ip_ranges=ranges_text,
        ranges=ranges,
        permission_groups=parse_flags(groups, PERMISSION_GROUPS) - {"None"},
        auth_mechanism=parse_flags(auth, AUTH_MECHANISMS) - {"None"},
        permission_groups_text=", ".join(_flag_names(groups)) or "None",
        auth_mechanism_text=", ".join(_flag_names(auth)) or "None",
        require_tls=as_bool(p.get("RequireTLS")),
        fqdn=str(p.get("Fqdn") or ""),
        changed=parse_datetime(p.get("WhenChangedUTC") or p.get("WhenChanged")),
        distinguished_name=str(p.get("DistinguishedName") or "").strip(),
        guid=str(p.get("Guid") or "").strip(),
    )


@dataclass(frozen=True)
class ReceiveConnectorResult:
    """One server's receive connectors, their relay risks and drift."""

    server: str
    connectors: tuple[ReceiveConnector, ...]
    risks: Mapping[str, Mapping[str, bool]]  # connector name -> reason -> at risk
    untrusted: Mapping[str, int]  # connector name -> addresses outside the trusted networks
    permissions_readable: bool | None  # None: no connector needed the check
    drift: tuple[ConnectorDrift, ...]
    unverified: Mapping[str, str] = field(default_factory=dict)  # connector name -> one of UNVERIFIED
    kept: frozenset[str] | None = None  # connectors with their own series (None: all); the rest are "other"
    folded: Mapping[str, int] = field(default_factory=dict)  # label -> distinct values shown as "other"


def _applies(pattern: str, server: str) -> tuple[bool, str]:
    """Patterns ``SERVER\\name`` apply to matching servers only; plain ``name`` to every server."""
    if "\\" in pattern:
        server_glob, name_glob = pattern.split("\\", 1)
        return matches(server_glob, server), name_glob
    return True, pattern


def receive_drift(
    server: str, connectors: Sequence[ReceiveConnector], expect: Mapping[str, ReceiveConnectorExpectation]
) -> list[ConnectorDrift]:
    """Drift of this server's connectors against every expectation that applies to the server."""
    wanted = []
    for pattern, expectation in sorted(expect.items()):
        applies, name_glob = _applies(pattern, server)
        if applies:
            wanted.append((pattern, name_glob, expectation))
    return connector_drift(wanted, [(c.name, c.settings()) for c in connectors])


def _is_missing_cmdlet(error: CollectorError) -> bool:
    """Whether the account's session lacks the cmdlet (its RBAC roles do not grant it)."""
    return error.reason == "permission"


class ReceiveConnectorCollector(ServerCollector):
    """Polls Get-ReceiveConnector (and Get-ADPermission where needed) per transport server."""

    name = "receive_connectors"

    def __init__(
        self,
        targets: ExchangeTargets,
        interval: float,
        trusted: Sequence[str],
        check_permissions: bool,
        expect: Mapping[str, ReceiveConnectorExpectation],
        max_connectors: int = 100,
    ) -> None:
        super().__init__(targets, interval)
        self._max_connectors = max_connectors
        self._trusted = tuple(parse_ip_ranges(trusted))
        self._check_permissions = check_permissions
        self._expect = dict(expect)
        self._permission_cmdlet_missing: set[str] = set()  # servers where RBAC hides Get-ADPermission

    def collect(self, session: ExchangeSession, server: str) -> ReceiveConnectorResult:
        connectors = self.fetch(session, server, "Get-ReceiveConnector", {"Server": server}, parse_receive_connector)
        connectors.sort(key=lambda c: c.name.lower())
        risks: dict[str, Mapping[str, bool]] = {}
        untrusted: dict[str, int] = {}
        unverified: dict[str, str] = {}
        readable: bool | None = None
        for conn in connectors:
            relay: bool | None = None
            if needs_permission_check(conn.relay_inputs, self._trusted):
                relay, why = self._anonymous_relay(session, server, conn)
                if relay is None:
                    unverified[conn.name] = why
                if self._check_permissions:
                    readable = (readable is not False) and relay is not None
            risks[conn.name] = assess(conn.relay_inputs, self._trusted, relay)
            untrusted[conn.name] = untrusted_addresses(conn.relay_inputs, self._trusted)
        result = ReceiveConnectorResult(
            server=server,
            connectors=tuple(connectors),
            risks=risks,
            untrusted=untrusted,
            permissions_readable=readable,
            drift=tuple(receive_drift(server, connectors, self._expect)),
            unverified=unverified,
        )
        return cap_receive_connectors(result, self._max_connectors)

    def _anonymous_relay(
        self, session: ExchangeSession, server: str, conn: ReceiveConnector
    ) -> tuple[bool | None, str]:
        """Get-ADPermission answer for the anonymous principal, or None and why it could not be read."""
        if not self._check_permissions:
            return None, "check_disabled"
        if server in self._permission_cmdlet_missing:
            return None, "cmdlet_unavailable"
        identity = conn.distinguished_name or conn.guid
        if not identity:
            log.warning(
                'Get-ReceiveConnector gave neither DistinguishedName nor Guid server=%s connector="%s"; '
                "anonymous relay rights are reported as unverified",
                server,
                conn.name,
            )
            return None, "no_identity"
        try:
            result = self.run(session, server, "Get-ADPermission", {"Identity": identity, "User": ANONYMOUS})
        except CollectorError as exc:
            if _is_missing_cmdlet(exc):
                log.warning(
                    "Get-ADPermission is not available to this account (RBAC); anonymous relay rights "
                    "are reported as unverified server=%s",
                    server,
                )
                self._permission_cmdlet_missing.add(server)
                return None, "cmdlet_unavailable"
            if exc.reason == "cmdlet_error":
                log.warning(
                    "Get-ADPermission call failed; anonymous relay rights are reported as "
                    'unverified server=%s connector="%s" error="%s"',
                    server,
                    conn.name,
                    exc,
                )
                return None, "call_failed"
            raise
        return anonymous_may_relay(result.objects), ""

    def render(self, results: Mapping[str, ReceiveConnectorResult]) -> Iterable[Metric]:
        return render_receive_connectors(results.values())


def cap_receive_connectors(result: ReceiveConnectorResult, limit: int) -> ReceiveConnectorResult:
    """The result with its cardinality cap decided: ``limit`` connectors keep their own series, those
    at risk first, then enabled ones (a cap never hides an open relay behind "other")."""
    enabled = {c.name for c in result.connectors if c.enabled}
    risky = {name for name, risks in result.risks.items() if any(risks.values())}
    names = {c.name for c in result.connectors}
    kept = keep_top(names, limit, lambda name: (name not in risky, name not in enabled))
    folded = {
        "connector": len(names) - len(kept),
        "transport_role": unknown((c.transport_role for c in result.connectors), TRANSPORT_ROLES),
    }
    return replace(result, kept=kept, folded=folded)


def render_receive_connectors(results: Iterable[ReceiveConnectorResult]) -> list[Metric]:
    """Metric families for every server's receive connectors."""
    labels = ["server", "connector"]
    enabled = GaugeMetricFamily(
        "mailflow_receive_connector_enabled", f"1 if the receive connector is enabled. {POLLED}", labels=labels
    )
    info = GaugeMetricFamily(
        "mailflow_receive_connector_info",
        f"Receive connector settings as labels (value 1). {POLLED}",
        labels=[*labels, "transport_role", "bindings", "permission_groups", "auth_mechanism"],
    )
    untrusted = GaugeMetricFamily(
        "mailflow_receive_connector_untrusted_addresses",
        f"Addresses in RemoteIPRanges outside the configured trusted networks. {POLLED}",
        labels=labels,
    )
    risk = GaugeMetricFamily(
        "mailflow_receive_connector_open_relay_risk",
        "1 if the receive connector relays for untrusted senders for this reason "
        f"(anonymous_relay_unverified: relay rights could not be read). {POLLED}",
        labels=[*labels, "reason"],
    )
    changed = GaugeMetricFamily(
        "mailflow_receive_connector_changed_timestamp_seconds",
        f"When the receive connector was last changed in AD (WhenChangedUTC), unix time. {POLLED}",
        labels=labels,
    )
    readable = GaugeMetricFamily(
        "mailflow_receive_connector_permissions_readable",
        "1 if Get-ADPermission answered for every connector that needed it, 0 if not (RBAC, or the call failed); "
        f"absent when no connector needed it. {POLLED}",
        labels=["server"],
    )
    drift = GaugeMetricFamily(
        "mailflow_receive_connector_drift",
        f'1 if the setting differs from the configured expectation (setting="present": connector missing). {POLLED}',
        labels=[*labels, "setting"],
    )
    for result in sorted(results, key=lambda r: r.server):
        server = result.server
        if result.permissions_readable is not None:
            readable.add_metric([server], 1 if result.permissions_readable else 0)
        other = _Folded()
        for conn in result.connectors:
            at_risk = result.risks.get(conn.name, {})
            if result.kept is not None and conn.name not in result.kept:
                other.add(conn, result.untrusted.get(conn.name, 0), at_risk)
                continue
            values = [server, conn.name]
            enabled.add_metric(values, 1 if conn.enabled else 0)
            bindings = ", ".join(conn.bindings)
            role = fold_enum(conn.transport_role, TRANSPORT_ROLES)
            info.add_metric([*values, role, bindings, conn.permission_groups_text, conn.auth_mechanism_text], 1)
            untrusted.add_metric(values, float(result.untrusted.get(conn.name, 0)))
            for reason in REASONS:
                risk.add_metric([*values, reason], 1 if at_risk.get(reason) else 0)
            if conn.changed is not None:
                changed.add_metric(values, conn.changed.timestamp())
        if other.connectors:
            values = [server, OTHER]
            enabled.add_metric(values, other.enabled)
            info.add_metric([*values, OTHER, OTHER, OTHER, OTHER], other.connectors)
            untrusted.add_metric(values, float(other.untrusted))
            for reason in REASONS:
                risk.add_metric([*values, reason], 1 if reason in other.risks else 0)
            if other.changed is not None:
                changed.add_metric(values, other.changed)
        drifted: dict[tuple[str, str], bool] = {}
        for item in result.drift:
            name = OTHER if item.connector in other.names else item.connector
            drifted[(name, item.setting)] = drifted.get((name, item.setting), False) or item.drifted
        for (name, setting), is_drifted in drifted.items():
            drift.add_metric([server, name, setting], 1 if is_drifted else 0)
    return [enabled, info, untrusted, risk, changed, readable, drift]


@dataclass
class _Folded:
    """The connectors of one server beyond the cap, combined into connector="other": counts and
    addresses summed, a risk if any has it, the latest change."""

    connectors: int = 0
    enabled: int = 0
    untrusted: float = 0.0
    risks: set[str] = field(default_factory=set)
    changed: float | None = None
    names: set[str] = field(default_factory=set)

    def add(self, conn: ReceiveConnector, untrusted: float, risks: Mapping[str, bool]) -> None:
        self.connectors += 1
        self.enabled += 1 if conn.enabled else 0
        self.untrusted += untrusted
        self.risks.update(reason for reason, on in risks.items() if on)
        self.names.add(conn.name)
        if conn.changed is not None:
            ts = conn.changed.timestamp()
            self.changed = ts if self.changed is None else max(self.changed, ts)
