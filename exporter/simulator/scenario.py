"""Scenario model: the simulated Exchange organisation, loaded from YAML or built in code.

A scenario describes one organisation (name, domain, domain controller), its Exchange servers
(each one gets its own WSMan endpoint), their transport queues with time patterns, the users who
may log in, the session limit, and optional Export-Clixml replays. All values that change over
time are computed later from these immutable specs and a clock (see ``timeline.py``). The per-server
specs are defined in ``scenario_specs`` (re-exported here); this module holds the organisation, its
loading and the strict parser.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from exporter.simulator import rbac
from exporter.simulator import roles as server_roles
from exporter.simulator.faultspec import FaultSpecParser, ShadowRedundancySpec
from exporter.simulator.fields import ScenarioError
from exporter.simulator.orgconfig import (
    AcceptedDomainSpec,
    DatabaseCopySpec,
    DatabaseSpec,
    SendConnectorSpec,
)
from exporter.simulator.orgconfig_parser import OrgConfigParser
from exporter.simulator.orgpolicy import (
    EmailAddressPolicySpec,
    TransportRuleSpec,
    check_policy_domains,
    default_email_address_policies,
)
from exporter.simulator.scenario_specs import (
    DEFAULT_VERSION,
    DELIVERY_TYPES,
    EXTERNAL_DELIVERY_TYPES,
    PATTERN_KINDS,
    QUEUE_KINDS,
    QUEUE_STATUSES,
    SERVER_ROLES,
    TRACKING_KEYS,
    ZERO_GUID,
    OrganisationSpec,
    Pattern,
    QueueSpec,
    ReplaySpec,
    ServerSpec,
    TrackingSpec,
)
from exporter.simulator.tracking_texts import FAILURE_CODES

# The specs live in ``scenario_specs``; they are re-exported here, where the rest of the simulator imports them.
__all__ = [
    "DELIVERY_TYPES",
    "EXTERNAL_DELIVERY_TYPES",
    "QUEUE_KINDS",
    "QUEUE_STATUSES",
    "SERVER_ROLES",
    "OrganisationSpec",
    "Pattern",
    "QueueSpec",
    "ReplaySpec",
    "Scenario",
    "ScenarioError",
    "ServerSpec",
    "TrackingSpec",
    "build_scenario",
    "load_scenario",
]


@dataclass(frozen=True)
class Scenario:
    """A whole simulated organisation. Build with :func:`load_scenario` or :meth:`from_dict`."""

    organisation: OrganisationSpec
    servers: tuple[ServerSpec, ...]
    users: Mapping[str, str] = field(default_factory=dict)
    #: Lower-case user name -> the RBAC roles of its sessions (a user not listed: rbac.DEFAULT_ROLES).
    user_roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    session_limit: int = 18
    result_size_default: int = 1000
    replays: tuple[ReplaySpec, ...] = ()
    shell_idle_timeout_seconds: float = 900.0
    #: None: one "Internet" connector (SMTP:*;1, DNS routing, every server as source).
    send_connectors: tuple[SendConnectorSpec, ...] | None = None
    #: None: the organisation domain, Authoritative and default.
    accepted_domains: tuple[AcceptedDomainSpec, ...] | None = None
    #: None: one database "DB-<SERVER>" mounted on each server, without other copies.
    databases: tuple[DatabaseSpec, ...] | None = None
    #: None: no transport rules (setup creates none).
    transport_rules: tuple[TransportRuleSpec, ...] | None = None
    #: None: setup's "Default Policy" (SMTP:@<organisation domain>).
    email_address_policies: tuple[EmailAddressPolicySpec, ...] | None = None
    #: Cmdlets RBAC hides from the users (lower case): they do not exist in their runspace.
    hidden_cmdlets: frozenset[str] = frozenset()
    #: ShadowHeartbeatFrequency and ShadowResubmitTimeSpan (Set-TransportConfig).
    shadow_redundancy: ShadowRedundancySpec = field(default_factory=ShadowRedundancySpec)

    @property
    def effective_send_connectors(self) -> tuple[SendConnectorSpec, ...]:
        """The organisation's send connectors (the scenario's, or one DNS-routed "Internet")."""
        if self.send_connectors is not None:
            return self.send_connectors
        return (SendConnectorSpec("Internet"),)

    @property
    def effective_accepted_domains(self) -> tuple[AcceptedDomainSpec, ...]:
        """The accepted domains (the scenario's, or the organisation domain as the default)."""
        if self.accepted_domains is not None:
            return self.accepted_domains
        domain = self.organisation.domain
        return (AcceptedDomainSpec(domain, domain, "Authoritative", default=True),)

    @property
    def effective_databases(self) -> tuple[DatabaseSpec, ...]:
        """The mailbox databases (the scenario's, or one mounted database per Mailbox server)."""
        if self.databases is not None:
            return self.databases
        mailbox = (s for s in self.servers if s.is_mailbox)
        return tuple(DatabaseSpec(f"DB-{s.name}", (DatabaseCopySpec(s.name, "Mounted"),)) for s in mailbox)

    @property
    def effective_email_address_policies(self) -> tuple[EmailAddressPolicySpec, ...]:
        """The email address policies (the scenario's, or setup's Default Policy for the default domain)."""
        if self.email_address_policies is not None:
            return self.email_address_policies
        default = next(d.domain for d in self.effective_accepted_domains if d.default)
        return default_email_address_policies(default.lstrip("*.") or self.organisation.domain)

    def roles_of(self, user: str) -> tuple[str, ...]:
        """The management roles of ``user``'s sessions (case-insensitive name)."""
        return self.user_roles.get(user.lower(), rbac.DEFAULT_ROLES)

    def server(self, name: str) -> ServerSpec | None:
        """The server called ``name`` (case-insensitive), or None."""
        wanted = name.strip().upper()
        for server in self.servers:
            if server.name.upper() == wanted or server.fqdn.upper() == wanted:
                return server
        return None

    def replay_for(self, cmdlet: str, server: str | None) -> ReplaySpec | None:
        """The replay registered for ``cmdlet`` (case-insensitive), preferring a per-server one."""
        fallback = None
        for replay in self.replays:
            if replay.cmdlet.lower() != cmdlet.lower():
                continue
            if server is not None and replay.server.upper() == server.upper():
                return replay
            if replay.server == "*":
                fallback = replay
        return fallback

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: Path | str | None = None) -> Scenario:
        """Build and validate a scenario from plain data (the parsed YAML document).

        Relative replay paths are resolved against ``base_dir`` (the scenario file's directory).
        Raises :class:`ScenarioError` naming the field for any invalid or unknown key.
        """
        return _Parser(Path(base_dir) if base_dir is not None else None).scenario(data)


def load_scenario(path: str | Path) -> Scenario:
    """Load a scenario YAML file (relative replay paths are resolved against its directory)."""
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {file}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ScenarioError(f"scenario {file} is not valid YAML: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ScenarioError(f"scenario {file}: the top level must be a mapping")
    return Scenario.from_dict(data, base_dir=file.parent)


def build_scenario(
    n_servers: int,
    queues_per_server: int,
    *,
    domain: str = "bench.sim",
    username: str = "svc-mailflow@bench.sim",
    password: str = "bench-password",
    session_limit: int = 18,
    result_size_default: int = 1000,
    moving: bool = True,
    tracking_per_minute: float = 0.0,
) -> Scenario:
    """A synthetic organisation for benchmarks: ``n_servers`` servers EX01.. with N queues each.

    Each server has a Submission queue, a shadow queue and delivery queues to ``domainNNN.example``
    (every seventh in Retry with a DNS LastError); with ``moving`` the counts follow waves.
    ``tracking_per_minute`` > 0 gives every server message-tracking traffic at that rate (2 %
    failures, 1 % stuck, 30 % external, 60 minutes of history).
    """
    if n_servers < 1 or queues_per_server < 1:
        raise ScenarioError("build_scenario needs at least one server and one queue per server")
    width = max(2, len(str(n_servers)))
    names = [f"EX{i:0{width}d}" for i in range(1, n_servers + 1)]
    servers: list[dict[str, Any]] = []
    for index, name in enumerate(names):
        queues: list[dict[str, Any]] = [{"kind": "submission", "message_count": 3 + index % 5, "outgoing_rate": 2.5}]
        if queues_per_server > 1:
            queues.append({"kind": "shadow", "primary_server": names[(index + 1) % len(names)], "message_count": 2})
        for q in range(max(0, queues_per_server - 2)):
            queue: dict[str, Any] = {
                "kind": "delivery",
                "next_hop_domain": f"domain{q:03d}.example",
                "message_count": q % 11,
                "outgoing_rate": 0.2,
            }
            if moving:
                queue["pattern"] = {
                    "kind": "wave",
                    "min": 0,
                    "max": 10 + q % 40,
                    "period_seconds": 120 + 15 * (q % 8),
                    "phase_seconds": 7 * q,
                }
            if q % 7 == 3:
                queue["status"] = "Retry"
                queue["last_error"] = (
                    "451 4.4.0 DNS query failed. The error was: SMTPSEND.DNS.NonExistentDomain; nonexistent domain"
                )
                queue["retry_count"] = 4
            queues.append(queue)
        servers.append({"name": name, "queues": queues})
    data: dict[str, Any] = {
        "organisation": {"name": "Bench", "domain": domain},
        "users": {username: password},
        "session_limit": session_limit,
        "result_size_default": result_size_default,
        "servers": servers,
    }
    if tracking_per_minute > 0:
        data["tracking"] = {
            "messages_per_minute": tracking_per_minute,
            "failure_ratio": 0.02,
            "stuck_ratio": 0.01,
            "external_ratio": 0.3,
            "history_minutes": 60,
        }
    return Scenario.from_dict(data)


class _Parser(OrgConfigParser, FaultSpecParser):
    """Strict conversion of plain data into the frozen specs, with field paths in errors."""

    def __init__(self, base_dir: Path | None) -> None:
        self.base_dir = base_dir
        self.default_tracking: Mapping[str, Any] = {}

    # -- sections ----------------------------------------------------------------------------
    def scenario(self, data: Mapping[str, Any]) -> Scenario:
        top = self._mapping(data, "scenario")
        self._check_keys(
            top,
            [
                "organisation",
                "organization",
                "servers",
                "users",
                "session_limit",
                "result_size_default",
                "shell_idle_timeout_seconds",
                "replays",
                "tracking",
                *self.ORG_KEYS,
                *self.ORG_FAULT_KEYS,
            ],
            "scenario",
        )
        default_tracking = self._mapping(top.get("tracking"), "tracking")
        if default_tracking:
            self.tracking(default_tracking, "tracking")  # validate the default on its own
        self.default_tracking = default_tracking
        org = self.organisation(self._mapping(top.get("organisation", top.get("organization")), "organisation"))
        raw_servers = top.get("servers")
        if not isinstance(raw_servers, list) or not raw_servers:
            raise ScenarioError("servers: expected a non-empty list of servers")
        names = [str(self._mapping(s, f"servers[{i}]").get("name", "")) for i, s in enumerate(raw_servers)]
        fqdns = {
            n.upper(): str(s.get("fqdn") or f"{n.lower()}.{org.domain}")
            for n, s in zip(names, raw_servers, strict=True)
        }
        servers = tuple(self.server(s, f"servers[{i}]", org, fqdns) for i, s in enumerate(raw_servers))
        passwords, user_roles = rbac.parse_users(top.get("users"))
        seen: set[str] = set()
        for server in servers:
            if server.name.upper() in seen:
                raise ScenarioError(f"servers: duplicate server name {server.name}")
            seen.add(server.name.upper())
        config = self.org_config(top, [s.name for s in servers])
        server_roles.check_databases(config.get("databases") or (), {s.name.upper(): s for s in servers})
        accepted = {d.domain.lower() for d in (config.get("accepted_domains") or ())} or {org.domain.lower()}
        for server in servers:
            strange = [d for d in (server.tracking.recipient_domains if server.tracking else ()) if d not in accepted]
            if strange:
                raise ScenarioError(
                    f"servers {server.name}.tracking.recipient_domains: {', '.join(strange)} is not an accepted "
                    "domain of the organisation (Exchange delivers only to its accepted domains)"
                )
        check_policy_domains(config.get("email_address_policies") or (), accepted)
        return Scenario(
            organisation=org,
            servers=servers,
            users=passwords,
            user_roles=user_roles,
            session_limit=self._int(top, "session_limit", "scenario", 18, minimum=1),
            result_size_default=self._int(top, "result_size_default", "scenario", 1000, minimum=1),
            shell_idle_timeout_seconds=max(0.0, self._num(top, "shell_idle_timeout_seconds", "scenario", 900.0)),
            replays=self.replays(top.get("replays"), {s.name.upper() for s in servers}),
            **config,
            **self.org_faults(top),
        )

    def organisation(self, data: Mapping[str, Any]) -> OrganisationSpec:
        where = "organisation"
        self._check_keys(data, ["name", "domain", "domain_controller", "timezone_offset_minutes", "culture"], where)
        return OrganisationSpec(
            name=self._str(data, "name", where, "Contoso"),
            domain=self._str(data, "domain", where, "contoso.sim"),
            domain_controller=self._str(data, "domain_controller", where, ""),
            timezone_offset_minutes=int(self._num(data, "timezone_offset_minutes", where, 0)),
            culture=self._str(data, "culture", where, "en-US"),
        )

    def replays(self, data: Any, servers: set[str]) -> tuple[ReplaySpec, ...]:
        replays: list[ReplaySpec] = []
        for cmdlet, target in self._mapping(data, "replays").items():
            where = f"replays.{cmdlet}"
            per_server = target if isinstance(target, Mapping) else {"*": target}
            for server, path in per_server.items():
                if not isinstance(path, str):
                    raise ScenarioError(f"{where}: expected a file path or a mapping server -> path")
                key = str(server)
                if key != "*" and key.upper() not in servers:
                    raise ScenarioError(f"{where}: unknown server {key}")
                file = Path(path).expanduser()
                if not file.is_absolute() and self.base_dir is not None:
                    file = self.base_dir / file
                replays.append(ReplaySpec(cmdlet=str(cmdlet), path=file, server=key))
        return tuple(replays)

    def server(self, raw: Any, where: str, org: OrganisationSpec, fqdns: Mapping[str, str]) -> ServerSpec:
        data = self._mapping(raw, where)
        self._check_keys(
            data,
            [
                "name",
                "fqdn",
                "version",
                "edition",
                "site",
                "roles",
                "server_role",
                "hub_transport",
                "mailbox",
                "client_access",
                "frontend_transport",
                "edge",
                "guid",
                "port",
                "queues",
                "message_tracking_log_path",
                "message_tracking_log_enabled",
                "tracking",
                *self.SERVER_KEYS,
                *self.SERVER_FAULT_KEYS,
            ],
            where,
        )
        name = self._str(data, "name", where, "")
        if not name or "\\" in name or " " in name:
            raise ScenarioError(f"{where}.name: a server needs a simple name such as EX01")
        raw_roles = data.get("server_role", data.get("roles", ["Mailbox"]))
        roles = tuple(str(r) for r in (raw_roles if isinstance(raw_roles, list) else [raw_roles]))
        edge = self._bool(data, "edge", where, "Edge" in roles)
        version = server_roles.normalise_version(self._str(data, "version", where, DEFAULT_VERSION), where)
        server_roles.check_roles(roles, version, where)
        defaults = server_roles.role_defaults(roles, version, edge)
        flags = {key: self._bool(data, key, where, default) for key, default in defaults.items()}
        hosted = server_roles.hosted_transport_roles(flags["hub_transport"], flags["frontend_transport"], edge)
        guid = (
            self._guid(data["guid"], f"{where}.guid")
            if "guid" in data
            else uuid.uuid5(uuid.NAMESPACE_DNS, f"{name.lower()}.{org.domain}")
        )
        port = data.get("port")
        if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port < 65536):
            raise ScenarioError(f"{where}.port: expected a TCP port number")
        spec = ServerSpec(
            name=name,
            fqdn=fqdns[name.upper()],
            version=version,
            edition=self._str(data, "edition", where, "Standard"),
            site=self._str(data, "site", where, "Default-First-Site-Name"),
            server_role=roles,
            is_hub_transport=flags["hub_transport"],
            is_mailbox=flags["mailbox"],
            is_client_access=flags["client_access"],
            is_frontend_transport=flags["frontend_transport"],
            is_edge=edge,
            guid=guid,
            port=port,
            message_tracking_log_path=self._str(
                data, "message_tracking_log_path", where, ServerSpec.message_tracking_log_path
            ),
            message_tracking_log_enabled=self._bool(data, "message_tracking_log_enabled", where, True),
            tracking=self.server_tracking(data, where),
            **self.server_config(data, where, name, fqdns[name.upper()], hosted),
            **self.server_faults(data, where),
        )
        raw_queues = data.get("queues", [])
        if not isinstance(raw_queues, list):
            raise ScenarioError(f"{where}.queues: expected a list")
        queues = self.queues(raw_queues, f"{where}.queues", fqdns)
        return server_roles.check_server(ServerSpec(**{**spec.__dict__, "queues": queues}), data, where)

    def server_tracking(self, data: Mapping[str, Any], where: str) -> TrackingSpec | None:
        """The server's ``tracking:`` merged key by key over the organisation-wide default."""
        if "tracking" in data and data["tracking"] is None:
            return None  # an explicit null switches the default off for this server
        own = self._mapping(data.get("tracking"), f"{where}.tracking")
        merged = {**self.default_tracking, **own}
        if not merged:
            return None
        spec = self.tracking(merged, f"{where}.tracking")
        return spec if spec.enabled else None

    def tracking(self, data: Mapping[str, Any], where: str) -> TrackingSpec:
        self._check_keys(data, TRACKING_KEYS, where)

        def ratio(key: str, default: float) -> float:
            value = self._num(data, key, where, default)
            if not 0.0 <= value <= 1.0:
                raise ScenarioError(f"{where}.{key}: must be between 0 and 1")
            return value

        rate = self._num(data, "messages_per_minute", where, 0.0)
        if rate < 0 or rate > 600_000:
            raise ScenarioError(f"{where}.messages_per_minute: must be between 0 and 600000")
        failure, stuck = ratio("failure_ratio", 0.0), ratio("stuck_ratio", 0.0)
        if failure + stuck > 1.0:
            raise ScenarioError(f"{where}: failure_ratio + stuck_ratio must be <= 1")
        latency = data.get("latency_seconds", {"min": 0.5, "max": 30.0})
        if isinstance(latency, bool):
            raise ScenarioError(f"{where}.latency_seconds: expected a number or {{min, max}}")
        if isinstance(latency, int | float):
            latency = {"min": latency, "max": latency}
        lat = self._mapping(latency, f"{where}.latency_seconds")
        self._check_keys(lat, ["min", "max"], f"{where}.latency_seconds")
        low = self._num(lat, "min", f"{where}.latency_seconds", 0.5)
        high = self._num(lat, "max", f"{where}.latency_seconds", max(low, 30.0))
        if low < 0.01 or high < low or high > 86400:
            raise ScenarioError(f"{where}.latency_seconds: need 0.01 <= min <= max <= 86400")
        history = self._num(data, "history_minutes", where, 120.0)
        if not 0 <= history <= 60 * 24 * 30:
            raise ScenarioError(f"{where}.history_minutes: must be between 0 and 43200")
        return TrackingSpec(
            messages_per_minute=rate,
            failure_ratio=failure,
            stuck_ratio=stuck,
            external_ratio=ratio("external_ratio", 0.3),
            inbound_ratio=ratio("inbound_ratio", 0.3),
            defer_ratio=ratio("defer_ratio", 0.05),
            latency_min_seconds=low,
            latency_max_seconds=high,
            latency_field_ratio=ratio("latency_field_ratio", 0.5),
            history_minutes=history,
            seed=self._int(data, "seed", where, 0),
            failure_codes=self._failure_codes(data, where),
            recipient_domains=tuple(d.lower() for d in self._strs(data, "recipient_domains", where)),
            cross_server_submission=ratio("cross_server_submission", 0.8),
            remote_mailbox_share=ratio("remote_mailbox_share", 0.0),
        )

    def _failure_codes(self, data: Mapping[str, Any], where: str) -> tuple[str, ...]:
        codes = self._strs(data, "failure_codes", where)
        unknown = [c for c in codes if c not in FAILURE_CODES]
        if unknown:
            raise ScenarioError(
                f"{where}.failure_codes: no real failure text with {', '.join(unknown)}; known: "
                f"{', '.join(sorted(set(FAILURE_CODES)))}"
            )
        return codes

    def queues(self, raw: list[Any], where: str, fqdns: Mapping[str, str]) -> tuple[QueueSpec, ...]:
        explicit = {
            int(q["row_id"])
            for q in raw
            if isinstance(q, Mapping) and isinstance(q.get("row_id"), int) and not isinstance(q.get("row_id"), bool)
        }
        next_row = 3
        specs: list[QueueSpec] = []
        singletons: set[str] = set()
        for i, item in enumerate(raw):
            spec = self.queue(self._mapping(item, f"{where}[{i}]"), f"{where}[{i}]", fqdns)
            if spec.kind in ("delivery", "shadow") and spec.row_id is None:
                while next_row in explicit:
                    next_row += 1
                spec = QueueSpec(**{**spec.__dict__, "row_id": next_row})
                explicit.add(next_row)
            if spec.kind in ("submission", "poison", "unreachable"):
                if spec.kind in singletons:
                    raise ScenarioError(f"{where}[{i}]: a server has only one {spec.kind} queue")
                singletons.add(spec.kind)
            specs.append(spec)
        ids = [s.identity("X") for s in specs]
        if len(ids) != len(set(ids)):
            raise ScenarioError(f"{where}: two queues have the same row_id")
        return tuple(specs)

    def queue(self, data: Mapping[str, Any], where: str, fqdns: Mapping[str, str]) -> QueueSpec:
        self._check_keys(
            data,
            [
                "kind",
                "row_id",
                "delivery_type",
                "next_hop_domain",
                "next_hop_category",
                "status",
                "message_count",
                "deferred_message_count",
                "locked_message_count",
                "last_error",
                "retry_count",
                "retry_interval_seconds",
                "incoming_rate",
                "outgoing_rate",
                "tls_domain",
                "next_hop_connector",
                "risk_level",
                "outbound_ip_pool",
                "pattern",
                "primary_server",
            ],
            where,
        )
        kind = self._str(data, "kind", where, "delivery").lower()
        if kind not in QUEUE_KINDS:
            raise ScenarioError(f"{where}.kind: unknown queue kind {kind}; known: {', '.join(QUEUE_KINDS)}")
        defaults = {
            "submission": ("Undefined", "Submission"),
            "poison": ("Undefined", "Poison Message"),
            "unreachable": ("Unreachable", "Unreachable Domain"),
            "shadow": ("ShadowRedundancy", ""),
            "delivery": ("DnsConnectorDelivery", ""),
        }[kind]
        delivery_type = self._str(data, "delivery_type", where, defaults[0])
        if delivery_type not in DELIVERY_TYPES:
            raise ScenarioError(f"{where}.delivery_type: unknown DeliveryType {delivery_type}")
        next_hop = self._str(data, "next_hop_domain", where, defaults[1])
        if kind == "shadow" and not next_hop:
            primary = self._str(data, "primary_server", where, "")
            if primary.upper() not in fqdns:
                raise ScenarioError(f"{where}: a shadow queue needs next_hop_domain or a known primary_server")
            next_hop = fqdns[primary.upper()]
        if not next_hop:
            raise ScenarioError(f"{where}.next_hop_domain: required for a delivery queue")
        category = self._str(
            data,
            "next_hop_category",
            where,
            "External" if delivery_type in EXTERNAL_DELIVERY_TYPES else "Internal",
        )
        if category not in ("Internal", "External"):
            raise ScenarioError(f"{where}.next_hop_category: Internal or External")
        status = data.get("status")
        if status is not None and str(status) not in QUEUE_STATUSES:
            raise ScenarioError(f"{where}.status: unknown status {status}; known: {', '.join(QUEUE_STATUSES)}")
        risk = self._str(data, "risk_level", where, "Normal")
        if risk not in ("Normal", "Bulk", "High", "Low"):
            raise ScenarioError(f"{where}.risk_level: Normal, Bulk, High or Low")
        row_id = data.get("row_id")
        if row_id is not None and (isinstance(row_id, bool) or not isinstance(row_id, int) or row_id < 1):
            raise ScenarioError(f"{where}.row_id: expected a positive integer")
        if kind not in ("delivery", "shadow") and row_id is not None:
            raise ScenarioError(f"{where}.row_id: only delivery and shadow queues have a row id")
        incoming = data.get("incoming_rate")
        connector = data.get("next_hop_connector")
        return QueueSpec(
            kind=kind,
            row_id=row_id,
            delivery_type=delivery_type,
            next_hop_domain=next_hop,
            next_hop_category=category,
            status=None if status is None else str(status),
            message_count=self._int(data, "message_count", where, 0),
            deferred_message_count=self._int(data, "deferred_message_count", where, 0),
            locked_message_count=self._int(data, "locked_message_count", where, 0),
            last_error=self._str(data, "last_error", where, ""),
            retry_count=self._int(data, "retry_count", where, 0),
            retry_interval_seconds=self._num(data, "retry_interval_seconds", where, 600.0),
            incoming_rate=None if incoming is None else self._num(data, "incoming_rate", where, 0.0),
            outgoing_rate=self._num(data, "outgoing_rate", where, 0.0),
            tls_domain=self._str(data, "tls_domain", where, ""),
            next_hop_connector=ZERO_GUID if connector is None else self._guid(connector, f"{where}.next_hop_connector"),
            risk_level=risk,
            outbound_ip_pool=self._int(data, "outbound_ip_pool", where, 0),
            pattern=None if data.get("pattern") is None else self.pattern(data, where),
        )

    def pattern(self, queue: Mapping[str, Any], where: str) -> Pattern:
        where = f"{where}.pattern"
        data = self._mapping(queue.get("pattern"), where)
        self._check_keys(data, ["kind", "per_minute", "period_seconds", "min", "max", "phase_seconds"], where)
        kind = self._str(data, "kind", where, "constant")
        if kind not in PATTERN_KINDS:
            raise ScenarioError(f"{where}.kind: unknown pattern {kind}; known: {', '.join(PATTERN_KINDS)}")
        base = float(queue.get("message_count", 0) or 0)
        low = self._num(data, "min", where, 0.0)
        high = self._num(data, "max", where, max(base, low))
        if high < low:
            raise ScenarioError(f"{where}: max must be >= min")
        period = data.get("period_seconds")
        if period is not None and (isinstance(period, bool) or not isinstance(period, int | float) or period <= 0):
            raise ScenarioError(f"{where}.period_seconds: expected a positive number")
        if kind == "wave" and period is None:
            period = 300.0
        return Pattern(
            kind=kind,
            per_minute=self._num(data, "per_minute", where, 0.0),
            period_seconds=None if period is None else float(period),
            min=low,
            max=high,
            phase_seconds=self._num(data, "phase_seconds", where, 0.0),
        )
