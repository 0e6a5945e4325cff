"""The per-server specs of a scenario: servers, their queues, time patterns and tracking traffic.

Frozen dataclasses (and the Exchange enum tables they are checked against) that ``scenario``'s parser
builds from YAML and every other simulator module reads; ``scenario`` re-exports them, so code imports
them from there. The organisation-wide configuration specs are in ``orgconfig``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from exporter.simulator import roles as server_roles
from exporter.simulator.faultspec import BackPressureSpec, DownSpec
from exporter.simulator.orgconfig import (
    CertificateSpec,
    ComponentSpec,
    ReceiveConnectorSpec,
    default_certificates,
    default_receive_connectors,
)
from exporter.simulator.orgpolicy import ServerDnsSpec, default_dns

__all__ = [
    "DEFAULT_VERSION",
    "DELIVERY_TYPES",
    "EXTERNAL_DELIVERY_TYPES",
    "PATTERN_KINDS",
    "QUEUE_KINDS",
    "QUEUE_STATUSES",
    "SERVER_ROLES",
    "TRACKING_KEYS",
    "ZERO_GUID",
    "OrganisationSpec",
    "Pattern",
    "QueueSpec",
    "ReplaySpec",
    "ServerSpec",
    "TrackingSpec",
]

#: DeliveryType enum members in declaration order (their position is the wire value).
DELIVERY_TYPES: tuple[str, ...] = (
    "Undefined",
    "DnsConnectorDelivery",
    "MapiDelivery",
    "NonSmtpGatewayDelivery",
    "SmartHostConnectorDelivery",
    "SmtpRelayToRemoteAdSite",
    "SmtpRelayToTiRg",
    "SmtpRelayWithinAdSite",
    "SmtpRelayWithinAdSiteToEdge",
    "Unreachable",
    "ShadowRedundancy",
    "Heartbeat",
    "DeliveryAgent",
    "SmtpDeliveryToMailbox",
    "SmtpRelayToDag",
    "SmtpRelayToMailboxDeliveryGroup",
    "SmtpRelayToConnectorSourceServers",
    "SmtpRelayToServers",
)
#: Delivery types whose NextHopCategory is External; every other type is Internal.
EXTERNAL_DELIVERY_TYPES = frozenset(
    {"DnsConnectorDelivery", "NonSmtpGatewayDelivery", "SmartHostConnectorDelivery", "DeliveryAgent"}
)
#: QueueStatus enum (name -> value).
QUEUE_STATUSES: dict[str, int] = {
    "None": 0,
    "Active": 1,
    "Ready": 2,
    "Retry": 3,
    "Suspended": 4,
    "Connecting": 5,
}
QUEUE_KINDS = ("delivery", "submission", "poison", "unreachable", "shadow")
PATTERN_KINDS = ("constant", "grow", "drain", "wave")
SERVER_ROLES = server_roles.SERVER_ROLES
ZERO_GUID = uuid.UUID(int=0)
DEFAULT_VERSION = "Version 15.2 (Build 1544.4)"  # Exchange 2019 CU14


@dataclass(frozen=True)
class Pattern:
    """How a queue's MessageCount moves over time (a pure function of elapsed seconds).

    ``constant``: the queue's ``message_count``. ``grow``: ``min`` plus ``per_minute`` per minute,
    capped at ``max``. ``drain``: ``max`` minus ``per_minute`` per minute, floored at ``min``.
    ``wave``: a cosine between ``min`` and ``max`` with ``period_seconds``. For grow and drain a
    ``period_seconds`` makes the ramp repeat (a saw tooth), which keeps a demo moving forever.
    """

    kind: str = "constant"
    per_minute: float = 0.0
    period_seconds: float | None = None
    min: float = 0.0
    max: float = 0.0
    phase_seconds: float = 0.0


@dataclass(frozen=True)
class QueueSpec:
    """One transport queue on one server; see ``timeline.snapshot_queue`` for the derived values."""

    kind: str
    row_id: int | None
    delivery_type: str
    next_hop_domain: str
    next_hop_category: str
    status: str | None
    message_count: int = 0
    deferred_message_count: int = 0
    locked_message_count: int = 0
    last_error: str = ""
    retry_count: int = 0
    retry_interval_seconds: float = 600.0
    incoming_rate: float | None = None
    outgoing_rate: float = 0.0
    tls_domain: str = ""
    next_hop_connector: uuid.UUID = ZERO_GUID
    risk_level: str = "Normal"
    outbound_ip_pool: int = 0
    pattern: Pattern | None = None

    def identity(self, server: str) -> str:
        """The queue's Identity as Exchange prints it (``EX01\\3``, ``EX01\\Submission``...)."""
        if self.kind == "submission":
            return f"{server}\\Submission"
        if self.kind == "poison":
            return f"{server}\\Poison"
        if self.kind == "unreachable":
            return f"{server}\\Unreachable"
        if self.kind == "shadow":
            return f"{server}\\Shadow\\{self.row_id}"
        return f"{server}\\{self.row_id}"


@dataclass(frozen=True)
class TrackingSpec:
    """Message-tracking traffic of one server (``tracking:`` per server, or organisation-wide).

    Message *k* of a server arrives at ``k * 60 / messages_per_minute`` seconds after the Unix
    epoch plus a hash-derived jitter below one slot; only messages arriving after the scenario start
    minus ``history_minutes`` exist. Everything about a message is a pure function of the scenario,
    the server and *k* (see ``tracking.py``).
    """

    messages_per_minute: float = 0.0
    failure_ratio: float = 0.0
    stuck_ratio: float = 0.0
    external_ratio: float = 0.3
    # Of the messages that are not outbound: the share from outside the organisation (0: an inbound outage).
    inbound_ratio: float = 0.3
    defer_ratio: float = 0.05
    latency_min_seconds: float = 0.5
    latency_max_seconds: float = 30.0
    latency_field_ratio: float = 0.5
    history_minutes: float = 120.0
    seed: int = 0
    # Of the messages submitted from this server's mailboxes (internal, outbound): the share the
    # Mailbox Transport Submission service hands to the Transport service of another Mailbox server
    # (a DAG member, else a server of the same AD site), which logs the rest of the message.
    cross_server_submission: float = 0.8
    # FAIL events only with these enhanced status codes (from tracking_texts.FAILURES, their real
    # texts); empty: every kind of failure.
    failure_codes: tuple[str, ...] = ()
    # The accepted domains the organisation's recipients are in (one drawn per message); empty: the
    # organisation domain.
    recipient_domains: tuple[str, ...] = ()
    # Of the messages delivered to this server's recipients' mailboxes (internal, inbound): the share
    # whose mailbox database is active on another Mailbox server (delivered there; tracking_routes).
    remote_mailbox_share: float = 0.0

    @property
    def enabled(self) -> bool:
        """Whether the server logs any message at all."""
        return self.messages_per_minute > 0


TRACKING_KEYS = (
    "messages_per_minute",
    "failure_ratio",
    "stuck_ratio",
    "external_ratio",
    "inbound_ratio",
    "defer_ratio",
    "latency_seconds",
    "latency_field_ratio",
    "history_minutes",
    "seed",
    "cross_server_submission",
    "failure_codes",
    "recipient_domains",
    "remote_mailbox_share",
)


@dataclass(frozen=True)
class ServerSpec:
    """One Exchange server; every server gets its own WSMan endpoint."""

    name: str
    fqdn: str
    version: str = DEFAULT_VERSION
    edition: str = "Standard"
    site: str = "Default-First-Site-Name"
    server_role: tuple[str, ...] = ("Mailbox",)
    is_hub_transport: bool = True
    is_mailbox: bool = True
    is_client_access: bool = True
    is_frontend_transport: bool = True
    is_edge: bool = False
    guid: uuid.UUID = ZERO_GUID
    port: int | None = None
    queues: tuple[QueueSpec, ...] = ()
    message_tracking_log_path: str = (
        r"C:\Program Files\Microsoft\Exchange Server\V15\TransportRoles\Logs\MessageTracking"
    )
    message_tracking_log_enabled: bool = True
    tracking: TrackingSpec | None = None
    #: None: the five default connectors (see ``effective_receive_connectors``).
    receive_connectors: tuple[ReceiveConnectorSpec, ...] | None = None
    components: tuple[ComponentSpec, ...] = ()
    #: None: the self-signed, Auth and WMSvc certificates setup creates.
    certificates: tuple[CertificateSpec, ...] | None = None
    #: (role, services not running) overrides of Test-ServiceHealth.
    service_health: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: Network adapters and the Transport service's DNS settings (None: orgpolicy.default_dns).
    dns: ServerDnsSpec | None = None
    #: Faults with consequences declared by the scenario (applied as faults at start; faultspec.py).
    down: DownSpec | None = None
    back_pressure: BackPressureSpec | None = None
    #: The server's clock: seconds ahead of the simulator's clock, and its time zone (None: the organisation's).
    clock_skew_seconds: float = 0.0
    time_zone: str | None = None

    @property
    def effective_receive_connectors(self) -> tuple[ReceiveConnectorSpec, ...]:
        """The server's receive connectors: the scenario's, or setup's defaults of its transport roles."""
        if self.receive_connectors is not None:
            return self.receive_connectors
        return server_roles.restrict_connectors(self, default_receive_connectors(self.name), (), "")

    @property
    def effective_certificates(self) -> tuple[CertificateSpec, ...]:
        """The certificates in the server's store: the scenario's, or setup's three."""
        if self.certificates is not None:
            return self.certificates
        return default_certificates(self.name, self.fqdn)

    @property
    def effective_dns(self) -> ServerDnsSpec:
        """The server's adapters and transport DNS settings (the scenario's, or one adapter using the DC)."""
        return self.dns if self.dns is not None else default_dns(self.name)

    @property
    def version_parts(self) -> tuple[int, int, int, int]:
        """Major, minor, build, revision parsed from ``Version 15.2 (Build 1544.4)``."""
        text = self.version.replace("Version", "").replace("(Build", ".").replace(")", "")
        numbers = [int(p) for p in text.replace(" ", "").split(".") if p.isdigit()]
        numbers += [0] * (4 - len(numbers))
        return numbers[0], numbers[1], numbers[2], numbers[3]


@dataclass(frozen=True)
class OrganisationSpec:
    """Organisation-wide facts used in Exchange object shapes and messages."""

    name: str = "Contoso"
    domain: str = "contoso.sim"
    domain_controller: str = ""
    timezone_offset_minutes: int = 0
    culture: str = "en-US"

    @property
    def dc_fqdn(self) -> str:
        """The domain controller named in 'couldn't be found on ...' messages."""
        return self.domain_controller or f"DC01.{self.domain}"


@dataclass(frozen=True)
class ReplaySpec:
    """Serve the objects of an Export-Clixml file as the output of ``cmdlet``.

    ``server`` is ``*`` for every server, or a server name: the replay is then used when the
    cmdlet's ``-Server``/``-Identity`` names that server, or when it runs on that server's endpoint.
    """

    cmdlet: str
    path: Path
    server: str = "*"
