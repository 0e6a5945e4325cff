"""Configuration: one YAML file, ``MAILFLOW_*`` environment overrides and secret files.

Precedence, highest first: command-line flags (``--web.listen-address``, ``--web.telemetry-path``,
``--web.config.file``, ``--log.level``, ``--log.format``, ``--shard-index``/``--shard-count``: applied by
``exporter.cli``), environment (``MAILFLOW_EXCHANGE__DEFAULTS__PORT=443``; ``__`` separates nesting
levels), the YAML file, built-in defaults. Passwords come from ``password`` (discouraged),
``password_file``, or a secrets directory (``MAILFLOW_SECRETS_DIR`` / ``secrets_dir``) holding
``<server>_password`` or ``exchange_password``; which one a server uses: ``exporter.credentials``.

Every number is finite and bounded (``MAX_INTERVAL``, ``MAX_TIMEOUT``, ``MAX_SPAN``...) so that what
validates, ``serve`` can run with. Every validation problem is reported with its field path and, where
the value came from the file, its line: ``exchange.servers[1].port (line 14): Input should be less
than or equal to 65535``.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from exporter.config_messages import ENV_PREFIX, bad_json_variables, describe_errors, unknown_variables, value_origin
from exporter.credentials import SecretProblem, basic_auth_problem, read_secret, secret_source
from exporter.errors import ConfigError
from exporter.exchange.clixml import AUTH_MECHANISMS, PERMISSION_GROUPS
from exporter.exchange.iprange import PRIVATE_NETWORKS, parse_ip_range
from exporter.probe.settings import MailflowProbeSettings
from exporter.settings_types import (  # noqa: F401  # re-exported: the configuration value types
    DEFAULT_MAX_OBJECT_BYTES,
    DEFAULT_MAX_OBJECTS,
    DEFAULT_MAX_RESPONSE_BYTES,
    GIB,
    INT32_MAX,
    KIB,
    MAX_INTERVAL,
    MAX_LATENCY_BUCKETS,
    MAX_SPAN,
    MAX_TIMEOUT,
    MIB,
    AtMost,
    Duration,
    HostName,
    Interval,
    IpAddress,
    ObjectBytes,
    ObjectCount,
    ResponseBytes,
    ResultSize,
    Span,
    Timeout,
    _at_most,
    _check_hostname,
    _check_ip,
    _human,
    _Model,
    _ResultSize,
    parse_duration,
    parse_size,
)
from exporter.yamlfile import format_loc as _format_loc
from exporter.yamlfile import read_yaml

#: Get-ServerComponentState components reported by default ("*" reports all of them).
DEFAULT_COMPONENTS = (
    "ServerWideOffline",
    "HubTransport",
    "FrontendTransport",
    "HighAvailability",
    "Monitoring",
    "RecoveryActionsEnabled",
)


class ConnectionSettings(_Model):
    """How to reach one Exchange server's remote PowerShell endpoint. ``None`` inherits the default."""

    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    tls: bool | None = None
    auth: Literal["kerberos", "negotiate", "ntlm", "basic"] | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    # Kerberos from a keytab (the client keys of ``username``, or of the keytab's first principal)
    # instead of a password; kerberos/negotiate only.
    keytab: Path | None = None
    verify_tls: bool | None = None
    ca_bundle: Path | None = None
    negotiate_service: str | None = None
    allow_insecure_basic: bool | None = None
    connect_timeout: Timeout | None = None
    call_timeout: Timeout | None = None
    # What one call may bring from the server (exporter.exchange.bounds): past any of them the call fails
    # with reason too_large, the connection is closed and what was read is dropped.
    max_response_bytes: ResponseBytes | None = None
    max_objects: ObjectCount | None = None
    max_object_bytes: ObjectBytes | None = None


class ExchangeDefaults(ConnectionSettings):
    """Defaults every server inherits."""

    port: int | None = Field(default=None, ge=1, le=65535)  # None: 80, or 443 with tls
    tls: bool = False
    auth: Literal["kerberos", "negotiate", "ntlm", "basic"] = "kerberos"
    verify_tls: bool = True
    # HTTP: what Windows' own WinRM client asks for, what IIS hosting /PowerShell answers for, and the
    # only class registered for a load-balanced namespace's Alternate Service Account.
    negotiate_service: str = "HTTP"
    allow_insecure_basic: bool = False
    connect_timeout: Timeout = 10.0
    call_timeout: Timeout = 60.0
    max_response_bytes: ResponseBytes = DEFAULT_MAX_RESPONSE_BYTES
    max_objects: ObjectCount = DEFAULT_MAX_OBJECTS
    max_object_bytes: ObjectBytes = DEFAULT_MAX_OBJECT_BYTES


class ServerSettings(ConnectionSettings):
    """One Exchange server to poll. ``name`` is what ``-Server`` receives; ``host`` is what we connect to."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class DiscoverySettings(_Model):
    """Find transport servers with ``Get-ExchangeServer`` through a seed server's session."""

    enabled: bool = False
    seed: str | None = None
    interval: Interval = 3600.0
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    connect: Literal["direct", "via_seed"] = "direct"


class ExchangeSettings(_Model):
    defaults: ExchangeDefaults = Field(default_factory=ExchangeDefaults)
    servers: list[ServerSettings] = Field(default_factory=list)
    discovery: DiscoverySettings = Field(default_factory=DiscoverySettings)
    max_sessions_per_account: int = Field(default=18, ge=1, le=1000)
    # After an authentication failure the account is not tried again for this long, doubling up
    # to 15 minutes, so many servers polled with a wrong password cannot lock it out.
    auth_failure_backoff: Interval = 60.0

    @model_validator(mode="after")
    def _check_targets(self) -> ExchangeSettings:
        names = [s.name.lower() for s in self.servers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"server names must be unique; repeated: {', '.join(dupes)}")
        if self.discovery.enabled and not self.servers:
            raise ValueError("discovery needs at least one server in exchange.servers to ask (the seed)")
        if self.discovery.seed and self.discovery.seed.lower() not in names:
            raise ValueError(f"discovery.seed {self.discovery.seed!r} is not one of exchange.servers")
        d = self.defaults
        if self.discovery.enabled and self.discovery.connect == "direct":
            if d.auth == "basic" and not d.tls and not d.allow_insecure_basic:
                raise ValueError(
                    "discovered servers use exchange.defaults: basic auth there needs tls: true "
                    "(or allow_insecure_basic: true), else passwords travel in clear"
                )
            if d.auth in ("basic", "ntlm") and not d.username:
                raise ValueError(f"discovered servers use exchange.defaults: auth {d.auth} needs a username")
        for server in self.servers:
            auth = server.auth or self.defaults.auth
            tls = self.defaults.tls if server.tls is None else server.tls
            insecure_ok = (
                self.defaults.allow_insecure_basic
                if server.allow_insecure_basic is None
                else server.allow_insecure_basic
            )
            if auth == "basic" and not tls and not insecure_ok:
                raise ValueError(
                    f"server {server.name}: basic auth over plain HTTP sends the password in clear; "
                    "set tls: true (recommended) or allow_insecure_basic: true"
                )
            if auth in ("basic", "ntlm") and not (server.username or self.defaults.username):
                raise ValueError(f"server {server.name}: auth {auth} needs a username")
        return self


class QueueCollectorSettings(_Model):
    enabled: bool = True
    interval: Interval = 60.0
    max_next_hop_domains: int = Field(default=20, ge=1, le=1000)
    max_last_errors: int = Field(default=50, ge=1, le=10_000)
    result_size: ResultSize = "Unlimited"


class TrackingCollectorSettings(_Model):
    enabled: bool = True
    interval: Interval = 60.0
    overlap: Span = 120.0
    max_window: Span = Field(default=3600.0, validate_default=True)
    initial_lookback: Span = 300.0
    stuck_after: Span = 900.0
    forget_after: Span = Field(default=86400.0, validate_default=True)
    max_tracked_messages: int = Field(default=100_000, ge=100, le=10_000_000)
    max_failure_codes: int = Field(default=50, ge=1, le=10_000)
    latency_buckets: list[Annotated[float, Field(gt=0, allow_inf_nan=False), _at_most(MAX_SPAN)]] = Field(
        default_factory=lambda: [1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0],
        min_length=1,
        max_length=MAX_LATENCY_BUCKETS,
    )
    result_size: ResultSize = "Unlimited"
    select_properties: bool = True
    # A server clock stepped back by up to this much is still counted exactly (dedupe keys kept longer).
    max_clock_step: Duration = 900.0

    @field_validator("latency_buckets")
    @classmethod
    def _increasing(cls, value: list[float]) -> list[float]:
        if list(value) != sorted(set(value)):
            raise ValueError("latency_buckets must be strictly increasing")
        return value

    # Cross-field rules as validators of the later field, so the error names a field and its line.
    @field_validator("forget_after")
    @classmethod
    def _after_stuck(cls, value: float, info: ValidationInfo) -> float:
        stuck = info.data.get("stuck_after")
        if stuck is not None and stuck >= value:
            raise ValueError(f"forget_after must be longer than stuck_after ({_human(stuck)})")
        return value

    @field_validator("max_window")
    @classmethod
    def _over_overlap(cls, value: float, info: ValidationInfo) -> float:
        overlap = info.data.get("overlap")
        if overlap is not None and overlap >= value:
            raise ValueError(f"max_window must be longer than overlap ({_human(overlap)})")
        return value


def _check_names(values: list[str] | None, allowed: Mapping[str, int], what: str) -> list[str] | None:
    if values is None:
        return None
    known = {k.lower(): k for k in allowed}
    out = []
    for value in values:
        if value.lower() not in known:
            raise ValueError(f"unknown {what} {value!r}; one of: {', '.join(k for k in allowed if k != 'None')}")
        out.append(known[value.lower()])
    return out


def _check_ranges(values: list[str] | None) -> list[str] | None:
    for value in values or []:
        parse_ip_range(value)
    return values


IpRanges = Annotated[list[str], AfterValidator(_check_ranges)]


class ReceiveConnectorExpectation(_Model):
    """What one receive connector must look like; unset fields are not checked."""

    enabled: bool | None = None
    transport_role: Literal["FrontendTransport", "HubTransport"] | None = None
    bindings: list[str] | None = None
    remote_ip_ranges: IpRanges | None = None
    permission_groups: list[str] | None = None
    auth_mechanism: list[str] | None = None
    require_tls: bool | None = None

    @field_validator("permission_groups")
    @classmethod
    def _groups(cls, value: list[str] | None) -> list[str] | None:
        return _check_names(value, PERMISSION_GROUPS, "permission group")

    @field_validator("auth_mechanism")
    @classmethod
    def _auth(cls, value: list[str] | None) -> list[str] | None:
        return _check_names(value, AUTH_MECHANISMS, "auth mechanism")


class SendConnectorExpectation(_Model):
    """What one send connector must look like; unset fields are not checked."""

    enabled: bool | None = None
    dns_routing: bool | None = None
    smart_hosts: list[str] | None = None
    address_spaces: list[str] | None = None
    source_transport_servers: list[str] | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    require_tls: bool | None = None
    tls_auth_level: Literal["EncryptionOnly", "CertificateValidation", "DomainValidation"] | None = None


class ReceiveConnectorCollectorSettings(_Model):
    enabled: bool = True
    interval: Interval = 300.0
    trusted_networks: IpRanges = Field(default_factory=lambda: list(PRIVATE_NETWORKS))
    check_ad_permissions: bool = True
    expect: dict[str, ReceiveConnectorExpectation] = Field(default_factory=dict)
    max_connectors: int = Field(default=100, ge=1, le=10_000)


class SendConnectorCollectorSettings(_Model):
    enabled: bool = True
    interval: Interval = 300.0
    expect: dict[str, SendConnectorExpectation] = Field(default_factory=dict)
    max_connectors: int = Field(default=100, ge=1, le=10_000)


class SimpleCollectorSettings(_Model):
    enabled: bool = True
    interval: Interval = 300.0


# Cardinality caps of the simple collectors (docs/metrics.md, "Cardinality").
class AcceptedDomainCollectorSettings(SimpleCollectorSettings):
    interval: Interval = 600.0
    max_domains: int = Field(default=1000, ge=1, le=100_000)


class TransportRuleExpectation(_Model):
    """What one transport rule must look like; unset fields are not checked."""

    state: Literal["Enabled", "Disabled"] | None = None
    mode: Literal["Enforce", "Audit", "AuditAndNotify"] | None = None
    # The delivery-affecting actions it takes, exactly (reject, delete, redirect, quarantine, moderate).
    actions: list[Literal["reject", "delete", "redirect", "quarantine", "moderate"]] | None = None


class TransportRuleCollectorSettings(SimpleCollectorSettings):
    interval: Interval = 300.0
    max_rules: int = Field(default=100, ge=1, le=10_000)  # rules with delivery-affecting actions
    expect: dict[str, TransportRuleExpectation] = Field(default_factory=dict)  # rule name glob -> expectation


class AddressPolicyCollectorSettings(SimpleCollectorSettings):
    interval: Interval = 600.0
    max_policies: int = Field(default=100, ge=1, le=10_000)


class TransportDnsCollectorSettings(SimpleCollectorSettings):
    interval: Interval = 600.0
    max_dns_servers: int = Field(default=16, ge=1, le=256)  # per server and scope


class DatabaseCopyCollectorSettings(SimpleCollectorSettings):
    interval: Interval = 60.0
    max_databases: int = Field(default=200, ge=1, le=10_000)


class CertificateCollectorSettings(SimpleCollectorSettings):
    interval: Interval = 3600.0
    max_certificates: int = Field(default=50, ge=1, le=10_000)


class ServiceHealthCollectorSettings(SimpleCollectorSettings):
    max_services: int = Field(default=100, ge=1, le=10_000)


class BackPressureCollectorSettings(SimpleCollectorSettings):
    interval: Interval = 60.0
    max_meters: int = Field(default=50, ge=1, le=1000)  # (resource, path) meters per server


class ComponentCollectorSettings(_Model):
    enabled: bool = True
    interval: Interval = 60.0
    components: list[str] = Field(default_factory=lambda: list(DEFAULT_COMPONENTS), min_length=1)
    max_components: int = Field(default=100, ge=1, le=10_000)


class CollectorsSettings(_Model):
    queues: QueueCollectorSettings = Field(default_factory=QueueCollectorSettings)
    back_pressure: BackPressureCollectorSettings = Field(default_factory=BackPressureCollectorSettings)
    tracking: TrackingCollectorSettings = Field(default_factory=TrackingCollectorSettings)
    receive_connectors: ReceiveConnectorCollectorSettings = Field(default_factory=ReceiveConnectorCollectorSettings)
    send_connectors: SendConnectorCollectorSettings = Field(default_factory=SendConnectorCollectorSettings)
    accepted_domains: AcceptedDomainCollectorSettings = Field(default_factory=AcceptedDomainCollectorSettings)
    transport_rules: TransportRuleCollectorSettings = Field(default_factory=TransportRuleCollectorSettings)
    email_address_policies: AddressPolicyCollectorSettings = Field(default_factory=AddressPolicyCollectorSettings)
    transport_dns: TransportDnsCollectorSettings = Field(default_factory=TransportDnsCollectorSettings)
    components: ComponentCollectorSettings = Field(default_factory=ComponentCollectorSettings)
    database_copies: DatabaseCopyCollectorSettings = Field(default_factory=DatabaseCopyCollectorSettings)
    certificates: CertificateCollectorSettings = Field(default_factory=CertificateCollectorSettings)
    service_health: ServiceHealthCollectorSettings = Field(default_factory=ServiceHealthCollectorSettings)
    mailflow_probe: MailflowProbeSettings = Field(default_factory=MailflowProbeSettings)


#: Every Exchange collector, by its ``collectors.<name>`` key.
COLLECTOR_NAMES: tuple[str, ...] = tuple(CollectorsSettings.model_fields)


class OutboundIp(_Model):
    """An address Exchange sends from, and the name it says in HELO/EHLO (its PTR should match)."""

    ip: IpAddress
    helo: HostName | Literal[""] = ""


class DomainExpectation(_Model):
    """Expected DNS for one domain; unset fields fall back to the remembered baseline."""

    mx: list[HostName] | None = None
    spf: str | None = None
    dmarc_policy: Literal["none", "quarantine", "reject"] | None = None


class SmtpProbeSettings(_Model):
    enabled: bool = True
    interval: Interval = 300.0
    port: int = Field(default=25, ge=1, le=65535)
    timeout: Timeout = 15.0
    helo_name: HostName | Literal[""] = ""
    ca_bundle: FilePath | None = None
    probe_mx: bool = True
    hosts: list[HostName] = Field(default_factory=list)
    max_hosts: int = Field(default=50, ge=1, le=10_000)


DEFAULT_BLOCKLISTS = (
    "zen.spamhaus.org",
    "bl.spamcop.net",
    "b.barracudacentral.org",
    "psbl.surriel.com",
    "bl.mailspike.net",
)


class DnsSettings(_Model):
    enabled: bool = True
    interval: Interval = 300.0
    resolvers: list[IpAddress] = Field(default_factory=list)
    port: int = Field(default=53, ge=1, le=65535)
    timeout: Timeout = 5.0
    concurrency: int = Field(default=8, ge=1, le=256)
    domains: list[HostName] = Field(default_factory=list)
    use_accepted_domains: bool = True
    exclude_domains: list[str] = Field(default_factory=lambda: ["*.onmicrosoft.com", "*.local"])
    outbound_ips: list[OutboundIp] = Field(default_factory=list)
    use_send_connector_ips: bool = True
    expect: dict[HostName, DomainExpectation] = Field(default_factory=dict)
    blocklists: Annotated[list[HostName], AfterValidator(lambda v: list(dict.fromkeys(v)))] = Field(
        default_factory=lambda: list(DEFAULT_BLOCKLISTS)
    )
    max_mx_hosts: int = Field(default=20, ge=1, le=1000)
    drift_accept_after: Annotated[float, BeforeValidator(parse_duration), Field(ge=0), _at_most(MAX_SPAN)] = 86400.0
    smtp: SmtpProbeSettings = Field(default_factory=SmtpProbeSettings)


class ShardingSettings(_Model):
    """Several replicas sharing this configuration; each polls the targets it owns."""

    count: int = Field(default=1, ge=1, le=1000)
    index: Annotated[int, Field(ge=0, le=999)] | None = None

    @field_validator("index")
    @classmethod
    def _below_count(cls, value: int | None, info: ValidationInfo) -> int | None:
        count = info.data.get("count")
        if value is not None and count is not None and value >= count:
            raise ValueError(f"index {value} must be below count {count}")
        return value


class SchedulerSettings(_Model):
    max_workers: int = Field(default=16, ge=1, le=256)
    jitter: Annotated[float, BeforeValidator(parse_duration), Field(ge=0), _at_most(MAX_TIMEOUT)] = 5.0
    # Below 1.5 every result would expire before the next (jittered, non-instant) poll lands.
    stale_after_intervals: float = Field(default=3.0, ge=1.5, le=100, allow_inf_nan=False)
    first_run_spread: Timeout = 2.0


class WebSettings(_Model):
    # One address, or a list to listen on several (``--web.listen-address`` given more than once);
    # every listener serves the same paths with the same TLS/auth configuration.
    listen_address: str | list[str] = ":10049"
    telemetry_path: str = "/metrics"
    runbook_url: str = "https://github.com/mailflow-exporter/mailflow-exporter/blob/main/docs/runbook.md"
    # An exporter-toolkit web configuration file (TLS, client certificates, basic auth), as
    # ``--web.config.file`` (which wins); validated at startup, re-read when it changes.
    config_file: Path | None = None
    # The status page's trace form (/trace): it shows senders, recipients and subjects, so serve refuses
    # it unless config_file requires authentication (basic auth users or a client certificate).
    trace_enabled: bool = False

    @field_validator("listen_address")
    @classmethod
    def _check_listen(cls, value: str | list[str]) -> str | list[str]:
        addresses = [value] if isinstance(value, str) else value
        if not addresses:
            raise ValueError("listen_address must name at least one [host]:port, e.g. ':10049'")
        for address in addresses:
            _host, sep, port = address.rpartition(":")
            if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
                which = "" if isinstance(value, str) else f" ({address!r})"
                raise ValueError(
                    f"listen_address must be [host]:port{which}, e.g. ':10049' or '127.0.0.1:10049' "
                    "(port 0 picks a free port)"
                )
        repeated = sorted({a for a in addresses if addresses.count(a) > 1})
        if repeated:
            raise ValueError(f"listen_address repeats {', '.join(repeated)}: each address can be listened on once")
        return value

    @property
    def listen_addresses(self) -> tuple[str, ...]:
        """Every address to listen on (``listen_address`` as a tuple)."""
        return (self.listen_address,) if isinstance(self.listen_address, str) else tuple(self.listen_address)

    @field_validator("telemetry_path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.startswith("/") or value in ("/", "/-/healthy", "/-/ready"):
            raise ValueError("telemetry_path must start with '/' and not clash with '/', '/-/healthy', '/-/ready'")
        return value


def _log_level(value: Any) -> Any:
    """Case-insensitive; ``warn`` (the Prometheus exporters' spelling, ``--log.level=warn``) is ``warning``."""
    if isinstance(value, str):
        value = value.lower()
        return "warning" if value == "warn" else value
    return value


class LogSettings(_Model):
    level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_log_level)] = "info"
    format: Literal["logfmt", "json"] = "logfmt"


_yaml_data: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("_yaml_data", default=None)


class _YamlSource(PydanticBaseSettingsSource):
    """Feeds the already-parsed YAML document (parsed once, with line numbers) to pydantic-settings."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return (_yaml_data.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_yaml_data.get() or {})


class Settings(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True, case_sensitive=False
    )

    exchange: ExchangeSettings = Field(default_factory=ExchangeSettings)
    collectors: CollectorsSettings = Field(default_factory=CollectorsSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    dns: DnsSettings = Field(default_factory=DnsSettings)
    sharding: ShardingSettings = Field(default_factory=ShardingSettings)
    secrets_dir: Path | None = None
    state_dir: Path = Path("state")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))


class ResolvedServer(BaseModel):
    """A server with every connection setting resolved (defaults applied, password loaded)."""

    model_config = ConfigDict(frozen=True)

    name: str
    host: str
    port: int
    tls: bool
    auth: str
    username: str | None
    password: SecretStr | None
    verify_tls: bool
    ca_bundle: Path | None
    negotiate_service: str
    connect_timeout: float
    call_timeout: float
    via: str | None = None  # poll through this server's session instead of connecting directly
    password_file: Path | None = None  # where the password came from, re-read before each logon
    keytab: Path | None = None  # Kerberos client keytab (then no password)
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES  # what one call may bring (exchange.bounds)
    max_objects: int = DEFAULT_MAX_OBJECTS
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES

    def current_password(self) -> str | None:
        """The password as it is now: re-read from its file (a rotated secret needs no restart)."""
        if self.password_file is not None:
            try:
                value = self.password_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError):  # unreadable now: keep the password read before
                value = ""
            if value:
                return value
        return self.password.get_secret_value() if self.password else None

    @property
    def account(self) -> str:
        """The identity Exchange throttles by (PowerShellMaxConcurrency is per user)."""
        return (self.username or "<current-user>").lower()

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}/PowerShell"


def resolve_server(settings: Settings, server: ServerSettings, host: str | None = None) -> ResolvedServer:
    """Apply defaults to one server and load its credential (see ``exporter.credentials`` for which
    one wins). Raises ConfigError (a SecretProblem for a credential) if the server cannot be used."""
    d = settings.exchange.defaults

    def pick(name: str) -> Any:
        value = getattr(server, name)
        return getattr(d, name) if value is None else value

    tls = pick("tls")
    auth = pick("auth")
    if auth == "basic" and not tls and not pick("allow_insecure_basic"):
        raise ConfigError(
            f"server {server.name}: basic auth over plain HTTP sends the password in clear; "
            "set tls: true (recommended) or allow_insecure_basic: true"
        )
    if auth in ("basic", "ntlm") and not pick("username"):
        raise ConfigError(f"server {server.name}: auth {auth} needs a username")
    source = secret_source(server, server.name, d, settings.secrets_dir)
    password: SecretStr | None = None
    password_file: Path | None = None
    keytab: Path | None = None
    if source is not None and source.field == "keytab" and source.path is not None:
        keytab = source.path
        if auth not in ("kerberos", "negotiate"):
            raise SecretProblem(
                server.name, source.level, "keytab", f"works with auth kerberos or negotiate, not {auth}"
            )
        if not keytab.is_file():
            raise SecretProblem(server.name, source.level, "keytab", f"{keytab} does not exist or is not a file")
    elif source is not None and source.path is not None:
        password = SecretStr(read_secret(source.path, server.name, source))
        password_file = source.path
    elif source is not None:
        password = source.password
    if auth == "basic":
        username = pick("username")
        problem = basic_auth_problem(username, password.get_secret_value() if password else None)
        if problem is not None and basic_auth_problem(username, None) is not None:  # the user name
            raise SecretProblem(server.name, "server" if server.username else "defaults", "username", problem)
        if problem is not None and source is not None:
            raise SecretProblem(server.name, source.level, source.field, problem)
    return ResolvedServer(
        name=server.name,
        host=host or pick("host") or server.name,
        port=pick("port") or (443 if tls else 80),
        tls=tls,
        auth=auth,
        username=pick("username"),
        password=password,
        password_file=password_file,
        keytab=keytab,
        verify_tls=pick("verify_tls"),
        ca_bundle=pick("ca_bundle"),
        negotiate_service=pick("negotiate_service"),
        connect_timeout=pick("connect_timeout"),
        call_timeout=pick("call_timeout"),
        max_response_bytes=pick("max_response_bytes"),
        max_objects=pick("max_objects"),
        max_object_bytes=pick("max_object_bytes"),
    )


def resolved_servers(settings: Settings) -> list[ResolvedServer]:
    """Every explicitly configured server, resolved."""
    return [resolve_server(settings, s) for s in settings.exchange.servers]


# --- loading with line numbers --------------------------------------------------------------------


def _server_problems(settings: Settings, lines: Mapping[tuple[Any, ...], int], environ: Mapping[str, str]) -> list[str]:
    """Every server that cannot be resolved (its credential above all), each problem once, with the
    path and line of the setting at fault. Discovered servers (connect: direct) use the defaults:
    those are checked too."""
    problems: list[str] = []
    servers = list(enumerate(settings.exchange.servers))
    discovery = settings.exchange.discovery
    if discovery.enabled and discovery.connect == "direct":
        servers.append((-1, ServerSettings(name="discovered")))
    for index, server in servers:
        try:
            resolve_server(settings, server)
        except SecretProblem as exc:
            if index < 0 and exc.level != "defaults":
                continue
            if exc.field == "secrets_dir":
                loc: tuple[Any, ...] = ("secrets_dir",)
            elif exc.level == "defaults":
                loc = ("exchange", "defaults", exc.field)
            else:
                loc = ("exchange", "servers", index, exc.field)
            problems.append(f"  {_format_loc(loc)}{value_origin(loc, lines, environ, key_line=False)}: {exc.detail}")
        except ConfigError as exc:
            if index >= 0:
                problems.append(f"  {exc}")
    return list(dict.fromkeys(problems))  # a problem of the defaults once, not once per server


def load_settings(path: Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Load and validate the configuration; raise ConfigError listing every problem."""
    environ = os.environ if environ is None else environ
    unknown = unknown_variables(environ, sorted(Settings.model_fields))
    if unknown:
        noun = "problem" if len(unknown) == 1 else "problems"
        raise ConfigError(f"{path or 'configuration'}: {len(unknown)} {noun}:\n" + "\n".join(unknown))
    data, lines = read_yaml(path, unique_keys=True) if path is not None else ({}, {})
    token = _yaml_data.set(data)
    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, str(path) if path else "configuration", lines, environ)) from None
    except SettingsError as exc:  # e.g. a MAILFLOW_* variable holding malformed JSON
        bad = bad_json_variables(exc, environ)
        detail = "; ".join(bad) + "; lists and mappings in the environment are JSON" if bad else str(exc)
        raise ConfigError(f"{path or 'configuration'}: environment: {detail}") from None
    finally:
        _yaml_data.reset(token)
    problems = _server_problems(settings, lines, environ)  # unreadable secrets, conflicting settings
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        raise ConfigError(f"{path or 'configuration'}: {len(problems)} {noun}:\n" + "\n".join(problems))
    return settings
