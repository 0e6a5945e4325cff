"""Organisation configuration beyond queues: connectors, domains, databases, certificates, health, RBAC.

The frozen specs here are what the configuration cmdlets (Get-ReceiveConnector, Get-SendConnector,
Get-AcceptedDomain, Get-MailboxDatabaseCopyStatus, Get-ExchangeCertificate,
Get-ServerComponentState, Test-ServiceHealth, Get-ADPermission) report, and
:class:`OrgConfigParser` reads them from a scenario (the scenario parser inherits it). A key the
scenario leaves out is stored as ``None`` and its Exchange defaults are built on demand by the
``effective_*`` functions (cheap: no certificate or object is built until a cmdlet asks), so a
benchmark organisation of many servers costs nothing extra to load.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from exporter.exchange.clixml import ALLOWED_SERVICES  # Exchange's flag values: one table for both sides
from exporter.simulator.fields import FieldReader, ScenarioError

__all__ = [
    "ACCEPTED_DOMAIN_TYPES",
    "ALLOWED_SERVICES",
    "AUTH_MECHANISMS",
    "COMPONENTS",
    "CONTENT_INDEX_STATES",
    "COPY_STATUSES",
    "PERMISSION_GROUPS",
    "REQUESTERS",
    "SERVICE_HEALTH_ROLES",
    "SERVICE_STATES",
    "TLS_AUTH_LEVELS",
    "TRANSPORT_ROLES",
    "AcceptedDomainSpec",
    "CertificateSpec",
    "ComponentSpec",
    "DatabaseCopySpec",
    "DatabaseSpec",
    "IPBindingSpec",
    "IPRangeSpec",
    "OrgConfigParser",
    "ReceiveConnectorSpec",
    "SendConnectorSpec",
    "default_certificates",
    "default_receive_connectors",
    "parse_binding",
    "parse_ip_range",
]

#: ``Microsoft.Exchange.Data.PermissionGroups`` flags.
PERMISSION_GROUPS: dict[str, int] = {
    "None": 0,
    "AnonymousUsers": 1,
    "ExchangeUsers": 2,
    "ExchangeServers": 4,
    "ExchangeLegacyServers": 8,
    "Partners": 16,
    "Custom": 32,
}
#: ``...SystemConfiguration.AuthMechanisms`` flags (receive connectors).
AUTH_MECHANISMS: dict[str, int] = {
    "None": 0,
    "Tls": 1,
    "Integrated": 2,
    "BasicAuth": 4,
    "BasicAuthRequireTLS": 8,
    "ExchangeServer": 16,
    "ExternalAuthoritative": 32,
}
#: The ``ServerRole`` values a receive connector's TransportRole takes.
TRANSPORT_ROLES: dict[str, int] = {"HubTransport": 32, "FrontendTransport": 16384}
#: ``Microsoft.Exchange.Data.ServiceState`` (Draining's value is inferred).
SERVICE_STATES: dict[str, int] = {"Inactive": 0, "Active": 1, "Draining": 2}
REQUESTERS = ("HealthAPI", "Maintenance", "Sidelined", "Functional", "Deployment")
#: The 34 components of an Exchange 2019 Mailbox server, in Get-ServerComponentState order.
COMPONENTS = (
    "ServerWideOffline",
    "HubTransport",
    "FrontendTransport",
    "Monitoring",
    "RecoveryActionsEnabled",
    "AutoDiscoverProxy",
    "ActiveSyncProxy",
    "EcpProxy",
    "EwsProxy",
    "ImapProxy",
    "OabProxy",
    "OwaProxy",
    "PopProxy",
    "PushNotificationsProxy",
    "RpsProxy",
    "RwsProxy",
    "RpcProxy",
    "XropProxy",
    "HttpProxyAvailabilityGroup",
    "ForwardSyncDaemon",
    "ProvisioningRps",
    "MapiProxy",
    "EdgeTransport",
    "HighAvailability",
    "SharedCache",
    "MailboxDeliveryProxy",
    "RoutingUpdates",
    "RestProxy",
    "DefaultProxy",
    "Lsass",
    "RoutingService",
    "E4EProxy",
    "CafeLAMv2",
    "LogExportProvider",
)
#: Components a healthy server reports Inactive.
NORMALLY_INACTIVE = frozenset({"ForwardSyncDaemon", "ProvisioningRps"})
#: Components ServerWideOffline does not override.
OFFLINE_EXEMPT = frozenset({"Monitoring", "RecoveryActionsEnabled"})
#: ``...SystemConfigurationTasks.CopyStatus`` (names from the docs; the numbers are inferred).
COPY_STATUSES: dict[str, int] = {
    "Unknown": 0,
    "Initializing": 1,
    "Resynchronizing": 2,
    "DisconnectedAndResynchronizing": 3,
    "DisconnectedAndHealthy": 4,
    "Healthy": 5,
    "Failed": 6,
    "FailedAndSuspended": 7,
    "Suspended": 8,
    "Seeding": 9,
    "Mounting": 10,
    "Mounted": 11,
    "Dismounting": 12,
    "Dismounted": 13,
    "NonExchangeReplication": 14,
    "SeedingSource": 15,
    "Misconfigured": 16,
    "ServiceDown": 17,
    "SinglePageRestore": 18,
}
#: Statuses of the copy that holds the database (the active copy).
ACTIVE_STATUSES = frozenset({"Mounted", "Mounting", "Dismounted", "Dismounting"})
#: ``ContentIndexStatusType`` (numbers inferred, in the documented order).
CONTENT_INDEX_STATES: dict[str, int] = {
    "Unknown": 0,
    "Healthy": 1,
    "Crawling": 2,
    "Failed": 3,
    "Seeding": 4,
    "FailedAndSuspended": 5,
    "Suspended": 6,
    "Disabled": 7,
    "AutoSuspended": 8,
    "HealthyAndUpgrading": 9,
}
ACCEPTED_DOMAIN_TYPES: dict[str, int] = {"Authoritative": 0, "ExternalRelay": 1, "InternalRelay": 2}
#: ``Microsoft.Exchange.Data.TlsAuthLevel`` (CertificateValidation = 2 is in a capture; others inferred).
TLS_AUTH_LEVELS: dict[str, int] = {"EncryptionOnly": 1, "CertificateValidation": 2, "DomainValidation": 4}
#: Test-ServiceHealth roles of an Exchange 2019 Mailbox server and their required services.
SERVICE_HEALTH_ROLES: dict[str, tuple[str, ...]] = {
    "Mailbox Server Role": (
        "IISAdmin",
        "MSExchangeADTopology",
        "MSExchangeDelivery",
        "MSExchangeIS",
        "MSExchangeMailboxAssistants",
        "MSExchangeRepl",
        "MSExchangeRPC",
        "MSExchangeServiceHost",
        "MSExchangeSubmission",
        "MSExchangeThrottling",
        "MSExchangeTransportLogSearch",
        "W3Svc",
        "WinRM",
    ),
    "Client Access Server Role": (
        "IISAdmin",
        "MSExchangeADTopology",
        "MSExchangeMailboxReplication",
        "MSExchangeRPC",
        "MSExchangeServiceHost",
        "W3Svc",
        "WinRM",
    ),
    "Hub Transport Server Role": (
        "IISAdmin",
        "MSExchangeADTopology",
        "MSExchangeEdgeSync",
        "MSExchangeServiceHost",
        "MSExchangeTransport",
        "MSExchangeTransportLogSearch",
        "W3Svc",
        "WinRM",
    ),
}
_FULL_V4 = "0.0.0.0-255.255.255.255"
_FULL_V6 = "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
_MAX_128 = (1 << 128) - 1
DAY = 86400.0

# ---------------------------------------------------------------------------------------------
# IP ranges and bindings (Exchange's display notation)
# ---------------------------------------------------------------------------------------------
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class IPRangeSpec:
    """An ``IPRange`` as Exchange shows it: ``192.168.5.10``, ``10.0.0.0/8`` or ``a-b`` (also IPv6)."""

    expression: str
    lower: Address
    upper: Address
    format: str  # SingleAddress | CIDR | LoHi (RangeFormat)

    @property
    def size(self) -> str:
        """The number of addresses written as an IPv6 address, as Exchange's ``Size`` does."""
        return ipaddress.IPv6Address(min(_MAX_128, int(self.upper) - int(self.lower) + 1)).compressed


def parse_ip_range(text: str) -> IPRangeSpec:
    """Parse one RemoteIPRanges entry; raises ValueError for anything Exchange would refuse."""
    value = text.strip()
    if "/" in value:
        network = ipaddress.ip_network(value, strict=False)
        expression = f"{network.network_address.compressed}/{network.prefixlen}"
        return IPRangeSpec(expression, network.network_address, network.broadcast_address, "CIDR")
    if "-" in value:
        low_text, high_text = (part.strip() for part in value.split("-", 1))
        low, high = ipaddress.ip_address(low_text), ipaddress.ip_address(high_text)
        if low.version != high.version or int(high) < int(low):
            raise ValueError(f"{value!r} is not a range from a lower to a higher address of one family")
        return IPRangeSpec(f"{low.compressed}-{high.compressed}", low, high, "LoHi")
    address = ipaddress.ip_address(value)
    return IPRangeSpec(address.compressed, address, address, "SingleAddress")


@dataclass(frozen=True)
class IPBindingSpec:
    """An ``IPBinding`` (a listening address and port): ``0.0.0.0:25`` or ``[::]:25``."""

    address: Address
    port: int

    @property
    def display(self) -> str:
        """The binding as Exchange shows it."""
        host = self.address.compressed if self.address.version == 4 else f"[{self.address.compressed}]"
        return f"{host}:{self.port}"


def parse_binding(text: str) -> IPBindingSpec:
    """Parse ``ip:port`` (IPv6 in brackets); raises ValueError."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r} is not address:port")
    return IPBindingSpec(ipaddress.ip_address(host.strip("[]")), int(port_text))


# ---------------------------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceiveConnectorSpec:
    """One receive connector of one server (the scenario keys, plus the defaults' fixed settings)."""

    name: str
    transport_role: str = "FrontendTransport"
    bindings: tuple[str, ...] = ("0.0.0.0:25",)
    remote_ip_ranges: tuple[str, ...] = (_FULL_V6, _FULL_V4)
    permission_groups: tuple[str, ...] = ()
    auth_mechanism: tuple[str, ...] = ("Tls",)
    enabled: bool = True
    require_tls: bool = False
    fqdn: str | None = None
    max_message_size_bytes: int = 36 << 20
    anonymous_accept_any_recipient: bool = False
    # Fixed per default connector (not scenario keys):
    domain_secure_enabled: bool = False
    max_recipients_per_message: int = 200
    message_rate_limit: int | None = None
    message_rate_source: str = "IPAddress"
    max_inbound_connection_per_source: int | None = 20
    max_inbound_connection_percentage_per_source: int = 2
    enable_auth_gssapi: bool = False
    size_enabled: str = "Enabled"
    protocol_logging_level: str = "None"
    tarpit_seconds: int = 5
    tls_certificate_name: str | None = None

    def identity(self, server: str) -> str:
        """``SERVER\\Name``, the connector's Identity."""
        return f"{server}\\{self.name}"


RECEIVE_CONNECTOR_KEYS = (
    "name",
    "transport_role",
    "bindings",
    "remote_ip_ranges",
    "permission_groups",
    "auth_mechanism",
    "enabled",
    "require_tls",
    "fqdn",
    "max_message_size_bytes",
    "anonymous_accept_any_recipient",
)


def default_receive_connectors(server: str) -> tuple[ReceiveConnectorSpec, ...]:
    """The five receive connectors setup creates on an Exchange 2019 Mailbox server (capture order)."""
    full = (_FULL_V6, _FULL_V4)
    all_auth = ("Tls", "Integrated", "BasicAuth", "BasicAuthRequireTLS", "ExchangeServer")
    return (
        ReceiveConnectorSpec(
            f"Default {server}",
            "HubTransport",
            ("0.0.0.0:2525", "[::]:2525"),
            full,
            ("ExchangeUsers", "ExchangeServers", "ExchangeLegacyServers"),
            all_auth,
            max_recipients_per_message=5000,
            max_inbound_connection_per_source=None,
            max_inbound_connection_percentage_per_source=100,
            size_enabled="EnabledWithoutValue",
        ),
        ReceiveConnectorSpec(
            f"Client Proxy {server}",
            "HubTransport",
            ("[::]:465", "0.0.0.0:465"),
            full,
            ("ExchangeUsers", "ExchangeServers"),
            all_auth,
            message_rate_limit=5,
            message_rate_source="User",
            enable_auth_gssapi=True,
        ),
        ReceiveConnectorSpec(
            f"Default Frontend {server}",
            "FrontendTransport",
            ("[::]:25", "0.0.0.0:25"),
            full,
            ("AnonymousUsers", "ExchangeServers", "ExchangeLegacyServers"),
            all_auth,
            domain_secure_enabled=True,
            protocol_logging_level="Verbose",
            tls_certificate_name=f"<I>CN={server}<S>CN={server}",
        ),
        ReceiveConnectorSpec(
            f"Outbound Proxy Frontend {server}",
            "FrontendTransport",
            ("[::]:717", "0.0.0.0:717"),
            full,
            ("ExchangeServers",),
            all_auth,
            domain_secure_enabled=True,
            protocol_logging_level="Verbose",
            tarpit_seconds=0,
        ),
        ReceiveConnectorSpec(
            f"Client Frontend {server}",
            "FrontendTransport",
            ("[::]:587", "0.0.0.0:587"),
            full,
            ("ExchangeUsers",),
            ("Tls", "Integrated", "BasicAuth", "BasicAuthRequireTLS"),
            message_rate_limit=5,
            message_rate_source="User",
            enable_auth_gssapi=True,
        ),
    )


@dataclass(frozen=True)
class SendConnectorSpec:
    """One organisation send connector (``DNSRoutingEnabled`` is derived: no smart hosts)."""

    name: str
    address_spaces: tuple[str, ...] = ("SMTP:*;1",)
    smart_hosts: tuple[str, ...] = ()
    source_transport_servers: tuple[str, ...] | None = None  # None: every server
    enabled: bool = True
    port: int = 25
    require_tls: bool = False
    tls_auth_level: str | None = None
    cloud_services_mail_enabled: bool = False
    fqdn: str | None = None

    @property
    def dns_routing_enabled(self) -> bool:
        """Exchange forces DNSRoutingEnabled to "no smart hosts" on output."""
        return not self.smart_hosts


@dataclass(frozen=True)
class AcceptedDomainSpec:
    """One accepted domain (``domain`` may be ``*.contoso.com``)."""

    name: str
    domain: str
    type: str = "Authoritative"
    default: bool = False
    match_subdomains: bool = False
    address_book_enabled: bool = True
    # WhenChanged this many minutes before the scenario start (a recent Set-AcceptedDomain); None:
    # the stable default of every configuration object, days before the start.
    changed_minutes_ago: float | None = None


@dataclass(frozen=True)
class DatabaseCopySpec:
    """One copy of a mailbox database on one server."""

    server: str
    status: str = "Healthy"
    copy_queue_length: int = 0
    replay_queue_length: int = 0
    content_index_state: str = "Healthy"
    activation_suspended: bool = False
    activation_preference: int = 1


@dataclass(frozen=True)
class DatabaseSpec:
    """A mailbox database and its copies (the active one has an active status such as Mounted)."""

    name: str
    copies: tuple[DatabaseCopySpec, ...]

    @property
    def active_server(self) -> str:
        """The server holding the active copy (the first copy when none is in an active status)."""
        for copy in self.copies:
            if copy.status in ACTIVE_STATUSES:
                return copy.server
        return self.copies[0].server


@dataclass(frozen=True)
class CertificateSpec:
    """A certificate in a server's store; days are relative to the scenario start."""

    subject: str
    domains: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    not_after_days: float = 365.0
    not_before_days: float = -365.0
    self_signed: bool = False
    friendly_name: str = ""


def default_certificates(server: str, fqdn: str) -> tuple[CertificateSpec, ...]:
    """What setup leaves on a server: its self-signed certificate, the Auth and the WMSvc certificates."""
    year = 365.0
    return (
        CertificateSpec(
            f"CN={server}",
            (server, fqdn),
            ("IMAP", "POP", "IIS", "SMTP"),
            not_after_days=4 * year,
            self_signed=True,
            friendly_name="Microsoft Exchange",
        ),
        CertificateSpec(
            "CN=Microsoft Exchange Server Auth Certificate",
            (),
            ("SMTP",),
            not_after_days=4 * year,
            self_signed=True,
            friendly_name="Microsoft Exchange Server Auth Certificate",
        ),
        CertificateSpec(
            f"CN=WMSvc-SHA2-{server}",
            (f"WMSvc-SHA2-{server}",),
            (),
            not_after_days=9 * year,
            self_signed=True,
            friendly_name="WMSVC-SHA2",
        ),
    )


@dataclass(frozen=True)
class ComponentSpec:
    """A scenario override of one server component's state, set by ``requester``."""

    component: str
    state: str
    requester: str = "Maintenance"


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


class OrgConfigParser(FieldReader):
    """Reads the configuration keys of a server and of the organisation (see ``scenarios/demo.yml``)."""

    SERVER_KEYS = (
        "receive_connectors",
        "default_receive_connectors",
        "components",
        "certificates",
        "default_certificates",
        "service_health",
    )
    ORG_KEYS = ("send_connectors", "accepted_domains", "databases", "rbac")

    # -- per server ------------------------------------------------------------------------
    def server_config(
        self, data: Mapping[str, Any], where: str, name: str, fqdn: str, transport_roles: Collection[str]
    ) -> dict[str, Any]:
        """The ServerSpec fields of the server-level keys (``None`` = Exchange defaults, built lazily);
        ``transport_roles``: the TransportRole values whose setup connectors the server has."""
        out: dict[str, Any] = {
            "receive_connectors": self.receive_connectors(data, where, name, transport_roles),
            "components": self.components(data.get("components"), f"{where}.components"),
            "service_health": self.service_health(data.get("service_health"), f"{where}.service_health"),
            "certificates": None,
        }
        with_defaults = self._bool(data, "default_certificates", where, True)
        if data.get("certificates") is not None or not with_defaults:
            listed = self.certificates(data.get("certificates") or [], f"{where}.certificates")
            out["certificates"] = (default_certificates(name, fqdn) if with_defaults else ()) + listed
        return out

    def receive_connectors(
        self, data: Mapping[str, Any], where: str, server: str, transport_roles: Collection[str]
    ) -> tuple[ReceiveConnectorSpec, ...] | None:
        with_defaults = self._bool(data, "default_receive_connectors", where, True)
        raw = data.get("receive_connectors")
        if raw is None and with_defaults:
            return None
        defaults = (s for s in default_receive_connectors(server) if s.transport_role in transport_roles)
        specs = list(defaults) if with_defaults else []
        for at, entry in self._entries(raw or [], f"{where}.receive_connectors", RECEIVE_CONNECTOR_KEYS):
            conn_name = self._name(entry, at)
            fields = self._connector_fields(entry, at)
            index = next((k for k, s in enumerate(specs) if s.name.lower() == conn_name.lower()), None)
            if index is None:
                specs.append(ReceiveConnectorSpec(name=conn_name, **fields))
            else:
                specs[index] = dataclasses.replace(specs[index], **fields)
        return tuple(specs)

    def _connector_fields(self, entry: Mapping[str, Any], at: str) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        if "transport_role" in entry:
            fields["transport_role"] = self._choice(
                self._str(entry, "transport_role", at, ""), list(TRANSPORT_ROLES), f"{at}.transport_role"
            )
        if "bindings" in entry:
            bindings = self._strs(entry, "bindings", at)
            try:
                fields["bindings"] = tuple(parse_binding(b).display for b in bindings)
            except ValueError as exc:
                raise ScenarioError(f"{at}.bindings: {exc}") from None
        if "remote_ip_ranges" in entry:
            try:
                fields["remote_ip_ranges"] = tuple(
                    parse_ip_range(r).expression for r in self._strs(entry, "remote_ip_ranges", at)
                )
            except ValueError as exc:
                raise ScenarioError(f"{at}.remote_ip_ranges: {exc}") from None
        for key, names in (("permission_groups", PERMISSION_GROUPS), ("auth_mechanism", AUTH_MECHANISMS)):
            if key in entry:
                fields[key] = tuple(
                    self._choice(v, list(names), f"{at}.{key}") for v in self._strs(entry, key, at) if v != "None"
                )
        for key in ("enabled", "require_tls", "anonymous_accept_any_recipient"):
            if key in entry:
                fields[key] = self._bool(entry, key, at, False)
        if "fqdn" in entry:
            fields["fqdn"] = self._str(entry, "fqdn", at, "") or None
        if "max_message_size_bytes" in entry:
            fields["max_message_size_bytes"] = self._int(entry, "max_message_size_bytes", at, 0, minimum=1)
        return fields

    def components(self, raw: Any, where: str) -> tuple[ComponentSpec, ...]:
        specs: list[ComponentSpec] = []
        for component, value in self._mapping(raw, where).items():
            at = f"{where}.{component}"
            name = self._choice(str(component), COMPONENTS, at)
            entry = self._mapping(value, at) if isinstance(value, Mapping) else {"state": value}
            self._check_keys(entry, ["state", "requester"], at)
            state = self._choice(self._str(entry, "state", at, ""), list(SERVICE_STATES), f"{at}.state")
            requester = self._choice(self._str(entry, "requester", at, "Maintenance"), REQUESTERS, f"{at}.requester")
            specs.append(ComponentSpec(name, state, requester))
        return tuple(specs)

    def service_health(self, raw: Any, where: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
        out: list[tuple[str, tuple[str, ...]]] = []
        for role, value in self._mapping(raw, where).items():
            at = f"{where}.{role}"
            name = self._choice(str(role), list(SERVICE_HEALTH_ROLES), at)
            entry = self._mapping(value, at)
            self._check_keys(entry, ["not_running"], at)
            out.append((name, self._strs(entry, "not_running", at)))
        return tuple(out)

    def certificates(self, raw: Any, where: str) -> tuple[CertificateSpec, ...]:
        specs: list[CertificateSpec] = []
        keys = ["subject", "domains", "services", "not_after_days", "not_before_days", "self_signed", "friendly_name"]
        for at, entry in self._entries(raw, where, keys):
            subject = self._str(entry, "subject", at, "").strip()
            if not subject.upper().startswith("CN="):
                raise ScenarioError(f"{at}.subject: expected a distinguished name such as CN=mail.contoso.com")
            services = tuple(
                self._choice(s, list(ALLOWED_SERVICES), f"{at}.services")
                for s in self._strs(entry, "services", at)
                if s != "None"
            )
            not_before = self._num(entry, "not_before_days", at, -365.0)
            not_after = self._num(entry, "not_after_days", at, 365.0)
            if not_after <= not_before:
                raise ScenarioError(f"{at}: not_after_days must be later than not_before_days")
            specs.append(
                CertificateSpec(
                    subject=subject,
                    domains=self._strs(entry, "domains", at, (subject[3:].split(",", 1)[0],)),
                    services=services,
                    not_after_days=not_after,
                    not_before_days=not_before,
                    self_signed=self._bool(entry, "self_signed", at, False),
                    friendly_name=self._str(entry, "friendly_name", at, ""),
                )
            )
        return tuple(specs)

    # -- organisation ----------------------------------------------------------------------
    def org_config(self, top: Mapping[str, Any], servers: Sequence[str]) -> dict[str, Any]:
        """The Scenario fields of the organisation-level keys (``None`` = Exchange defaults)."""
        known = {s.upper(): s for s in servers}
        out: dict[str, Any] = {
            "send_connectors": None,
            "accepted_domains": None,
            "databases": None,
            "hidden_cmdlets": frozenset(),
        }
        if top.get("send_connectors") is not None:
            out["send_connectors"] = self.send_connectors(top["send_connectors"], known)
        if top.get("accepted_domains") is not None:
            out["accepted_domains"] = self.accepted_domains(top["accepted_domains"])
        if top.get("databases") is not None:
            out["databases"] = self.databases(top["databases"], known)
        rbac = self._mapping(top.get("rbac"), "rbac")
        self._check_keys(rbac, ["hidden_cmdlets"], "rbac")
        out["hidden_cmdlets"] = frozenset(c.lower() for c in self._strs(rbac, "hidden_cmdlets", "rbac"))
        return out

    def _entries(self, raw: Any, where: str, keys: Sequence[str]) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """``(path, mapping)`` of each item of the list ``raw``, its keys checked against ``keys``."""
        if not isinstance(raw, list):
            raise ScenarioError(f"{where}: expected a list")
        for i, item in enumerate(raw):
            at = f"{where}[{i}]"
            entry = self._mapping(item, at)
            self._check_keys(entry, keys, at)
            yield at, entry

    def _name(self, entry: Mapping[str, Any], at: str) -> str:
        """The entry's required ``name`` (no backslash: it is part of ``SERVER\\Name`` identities)."""
        name = self._str(entry, "name", at, "").strip()
        if not name or "\\" in name:
            raise ScenarioError(f"{at}.name: required, without a backslash")
        return name

    def _server_names(self, entry: Mapping[str, Any], key: str, at: str, known: Mapping[str, str]) -> tuple[str, ...]:
        names = self._strs(entry, key, at)
        for name in names:
            if name.upper() not in known:
                raise ScenarioError(f"{at}.{key}: unknown server {name}")
        return tuple(known[n.upper()] for n in names)

    def send_connectors(self, raw: Any, known: Mapping[str, str]) -> tuple[SendConnectorSpec, ...]:
        specs: list[SendConnectorSpec] = []
        for at, entry in self._entries(
            raw,
            "send_connectors",
            [
                "name",
                "address_spaces",
                "smart_hosts",
                "source_transport_servers",
                "enabled",
                "port",
                "require_tls",
                "tls_auth_level",
                "cloud_services_mail_enabled",
                "fqdn",
            ],
        ):
            name = self._name(entry, at)
            spaces = self._strs(entry, "address_spaces", at, ("SMTP:*;1",))
            for space in spaces:
                if not space.strip() or space.count(";") > 1:
                    raise ScenarioError(f"{at}.address_spaces: {space!r} is not TYPE:address;cost")
            level = entry.get("tls_auth_level")
            specs.append(
                SendConnectorSpec(
                    name=name,
                    address_spaces=spaces,
                    smart_hosts=tuple(h.strip().strip("[]") for h in self._strs(entry, "smart_hosts", at)),
                    source_transport_servers=(
                        self._server_names(entry, "source_transport_servers", at, known)
                        if entry.get("source_transport_servers") is not None
                        else None
                    ),
                    enabled=self._bool(entry, "enabled", at, True),
                    port=self._int(entry, "port", at, 25, minimum=1),
                    require_tls=self._bool(entry, "require_tls", at, False),
                    tls_auth_level=(
                        None
                        if level is None
                        else self._choice(str(level), list(TLS_AUTH_LEVELS), f"{at}.tls_auth_level")
                    ),
                    cloud_services_mail_enabled=self._bool(entry, "cloud_services_mail_enabled", at, False),
                    fqdn=self._str(entry, "fqdn", at, "") or None,
                )
            )
        self._unique([s.name for s in specs], "send_connectors")
        return tuple(specs)

    @staticmethod
    def _unique(names: Sequence[str], where: str) -> None:
        folded = [n.lower() for n in names]
        for name in names:
            if folded.count(name.lower()) > 1:
                raise ScenarioError(f"{where}: duplicate name {name}")

    def _changed(self, entry: Mapping[str, Any], at: str) -> float | None:
        if entry.get("changed_minutes_ago") is None:
            return None
        minutes = self._num(entry, "changed_minutes_ago", at, 0.0)
        if not 0 <= minutes <= 60 * 24 * 365:
            raise ScenarioError(f"{at}.changed_minutes_ago: must be between 0 and 525600")
        return minutes

    def accepted_domains(self, raw: Any) -> tuple[AcceptedDomainSpec, ...]:
        specs: list[AcceptedDomainSpec] = []
        keys = ["name", "domain", "type", "default", "match_subdomains", "address_book_enabled"]
        keys.append("changed_minutes_ago")
        for at, entry in self._entries(raw, "accepted_domains", keys):
            domain = self._str(entry, "domain", at, "").strip()
            if not domain or " " in domain:
                raise ScenarioError(f"{at}.domain: expected a domain such as contoso.com or *.contoso.com")
            kind = self._choice(
                self._str(entry, "type", at, "Authoritative"), list(ACCEPTED_DOMAIN_TYPES), f"{at}.type"
            )
            specs.append(
                AcceptedDomainSpec(
                    name=self._str(entry, "name", at, domain),
                    domain=domain,
                    type=kind,
                    default=self._bool(entry, "default", at, False),
                    match_subdomains=self._bool(entry, "match_subdomains", at, False),
                    address_book_enabled=self._bool(entry, "address_book_enabled", at, kind == "Authoritative"),
                    changed_minutes_ago=self._changed(entry, at),
                )
            )
        if not specs:
            raise ScenarioError("accepted_domains: an organisation has at least one accepted domain")
        defaults = [s for s in specs if s.default]
        if len(defaults) > 1:
            raise ScenarioError("accepted_domains: only one domain can be the default")
        if not defaults:
            specs[0] = dataclasses.replace(specs[0], default=True)
        self._unique([s.name for s in specs], "accepted_domains")
        return tuple(specs)

    def databases(self, raw: Any, known: Mapping[str, str]) -> tuple[DatabaseSpec, ...]:
        specs: list[DatabaseSpec] = []
        copy_keys = [
            "server",
            "status",
            "copy_queue_length",
            "replay_queue_length",
            "content_index_state",
            "activation_suspended",
        ]
        for at, entry in self._entries(raw, "databases", ["name", "copies"]):
            name = self._name(entry, at)
            copies: list[DatabaseCopySpec] = []
            for k, (cat, copy) in enumerate(self._entries(entry.get("copies"), f"{at}.copies", copy_keys)):
                (server,) = self._server_names({"server": copy.get("server", "")}, "server", cat, known)
                copies.append(
                    DatabaseCopySpec(
                        server=server,
                        status=self._choice(
                            self._str(copy, "status", cat, "Mounted" if k == 0 else "Healthy"),
                            list(COPY_STATUSES),
                            f"{cat}.status",
                        ),
                        copy_queue_length=self._int(copy, "copy_queue_length", cat, 0),
                        replay_queue_length=self._int(copy, "replay_queue_length", cat, 0),
                        content_index_state=self._choice(
                            self._str(copy, "content_index_state", cat, "Healthy"),
                            list(CONTENT_INDEX_STATES),
                            f"{cat}.content_index_state",
                        ),
                        activation_suspended=self._bool(copy, "activation_suspended", cat, False),
                        activation_preference=k + 1,
                    )
                )
            if not copies:
                raise ScenarioError(f"{at}.copies: a database has at least one copy")
            self._unique([c.server for c in copies], f"{at}.copies")
            specs.append(DatabaseSpec(name, tuple(copies)))
        self._unique([s.name for s in specs], "databases")
        return tuple(specs)
