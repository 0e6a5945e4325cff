"""Organisation configuration beyond queues: connectors, domains, databases, certificates, health, RBAC.

The frozen specs here are what the configuration cmdlets (Get-ReceiveConnector, Get-SendConnector,
Get-AcceptedDomain, Get-MailboxDatabaseCopyStatus, Get-ExchangeCertificate,
Get-ServerComponentState, Test-ServiceHealth, Get-ADPermission) report, and
``orgconfig_parser.OrgConfigParser`` reads them from a scenario (the scenario parser inherits it). A key the
scenario leaves out is stored as ``None`` and its Exchange defaults are built on demand by the
``effective_*`` functions (cheap: no certificate or object is built until a cmdlet asks), so a
benchmark organisation of many servers costs nothing extra to load.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from exporter.exchange.clixml import ALLOWED_SERVICES  # Exchange's flag values: one table for both sides

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
#: ``ServerComponentRequest`` names as Exchange stores and returns them: Managed Availability is
#: ``HealthApi`` (real E16 capture in CSS-Exchange; the docs spell the -Requester input "HealthAPI",
#: which Exchange accepts in any case). A scenario may spell them in any case.
REQUESTERS = ("HealthApi", "Maintenance", "Sidelined", "Functional", "Deployment")
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
    #: UseExternalDNSServersEnabled: the connector resolves with the Transport service's ExternalDNSServers.
    use_external_dns_servers: bool = False

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
