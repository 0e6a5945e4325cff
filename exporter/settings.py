"""Configuration: one YAML file, ``MAILFLOW_*`` environment overrides and secret files.

Precedence, highest first: environment (``MAILFLOW_EXCHANGE__DEFAULTS__PORT=443``; ``__`` separates
nesting levels), the YAML file, built-in defaults. Passwords come from ``password`` (discouraged),
``password_file``, or a secrets directory (``MAILFLOW_SECRETS_DIR`` / ``secrets_dir``) holding
``<server>_password`` or ``exchange_password``.

Every validation problem is reported with its field path and, where the value came from the file,
its line: ``exchange.servers[1].port (line 14): Input should be less than or equal to 65535``.
"""

from __future__ import annotations

import contextvars
import difflib
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from exporter.errors import ConfigError
from exporter.exchange.clixml import AUTH_MECHANISMS, PERMISSION_GROUPS
from exporter.exchange.iprange import PRIVATE_NETWORKS, parse_ip_range

#: Get-ServerComponentState components reported by default ("*" reports all of them).
DEFAULT_COMPONENTS = (
    "ServerWideOffline",
    "HubTransport",
    "FrontendTransport",
    "HighAvailability",
    "Monitoring",
    "RecoveryActionsEnabled",
)

ENV_PREFIX = "MAILFLOW_"
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Accept seconds as a number or a string with a unit: ``500ms``, ``30s``, ``5m``, ``1h``, ``1d``."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string such as '30s' or '5m'")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    raise ValueError(f"invalid duration {value!r}: use seconds or a unit suffix (ms, s, m, h, d), e.g. '30s'")


Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    connect_timeout: Duration | None = None
    call_timeout: Duration | None = None


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
    connect_timeout: Duration = 10.0
    call_timeout: Duration = 60.0


class ServerSettings(ConnectionSettings):
    """One Exchange server to poll. ``name`` is what ``-Server`` receives; ``host`` is what we connect to."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class DiscoverySettings(_Model):
    """Find transport servers with ``Get-ExchangeServer`` through a seed server's session."""

    enabled: bool = False
    seed: str | None = None
    interval: Duration = 3600.0
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
    auth_failure_backoff: Duration = 60.0

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
    interval: Duration = 60.0
    max_next_hop_domains: int = Field(default=20, ge=1, le=1000)
    result_size: Annotated[int, Field(strict=True, ge=1)] | Literal["Unlimited"] = "Unlimited"


class TrackingCollectorSettings(_Model):
    enabled: bool = True
    interval: Duration = 60.0
    overlap: Duration = 120.0
    max_window: Duration = 3600.0
    initial_lookback: Duration = 300.0
    stuck_after: Duration = 900.0
    forget_after: Duration = 86400.0
    max_tracked_messages: int = Field(default=100_000, ge=100, le=10_000_000)
    latency_buckets: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0], min_length=1
    )
    result_size: Annotated[int, Field(strict=True, ge=1)] | Literal["Unlimited"] = "Unlimited"
    select_properties: bool = True
    # A server clock stepped back by up to this much is still counted exactly (dedupe keys kept longer).
    max_clock_step: Duration = 900.0

    @model_validator(mode="after")
    def _check(self) -> TrackingCollectorSettings:
        if list(self.latency_buckets) != sorted(set(self.latency_buckets)):
            raise ValueError("latency_buckets must be strictly increasing")
        if self.stuck_after >= self.forget_after:
            raise ValueError("stuck_after must be shorter than forget_after")
        if self.overlap >= self.max_window:
            raise ValueError("overlap must be shorter than max_window")
        return self


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
    interval: Duration = 300.0
    trusted_networks: IpRanges = Field(default_factory=lambda: list(PRIVATE_NETWORKS))
    check_ad_permissions: bool = True
    expect: dict[str, ReceiveConnectorExpectation] = Field(default_factory=dict)


class SendConnectorCollectorSettings(_Model):
    enabled: bool = True
    interval: Duration = 300.0
    expect: dict[str, SendConnectorExpectation] = Field(default_factory=dict)


class SimpleCollectorSettings(_Model):
    enabled: bool = True
    interval: Duration = 300.0


class ComponentCollectorSettings(_Model):
    enabled: bool = True
    interval: Duration = 60.0
    components: list[str] = Field(default_factory=lambda: list(DEFAULT_COMPONENTS), min_length=1)


class CollectorsSettings(_Model):
    queues: QueueCollectorSettings = Field(default_factory=QueueCollectorSettings)
    back_pressure: SimpleCollectorSettings = Field(default_factory=lambda: SimpleCollectorSettings(interval=60.0))
    tracking: TrackingCollectorSettings = Field(default_factory=TrackingCollectorSettings)
    receive_connectors: ReceiveConnectorCollectorSettings = Field(default_factory=ReceiveConnectorCollectorSettings)
    send_connectors: SendConnectorCollectorSettings = Field(default_factory=SendConnectorCollectorSettings)
    accepted_domains: SimpleCollectorSettings = Field(default_factory=lambda: SimpleCollectorSettings(interval=600.0))
    components: ComponentCollectorSettings = Field(default_factory=ComponentCollectorSettings)
    database_copies: SimpleCollectorSettings = Field(default_factory=lambda: SimpleCollectorSettings(interval=60.0))
    certificates: SimpleCollectorSettings = Field(default_factory=lambda: SimpleCollectorSettings(interval=3600.0))
    service_health: SimpleCollectorSettings = Field(default_factory=SimpleCollectorSettings)


#: Every Exchange collector, by its ``collectors.<name>`` key.
COLLECTOR_NAMES: tuple[str, ...] = tuple(CollectorsSettings.model_fields)


def _check_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ValueError(f"not an IP address: {value!r}") from None


def _check_hostname(value: str) -> str:
    name = value.strip().rstrip(".").lower()
    if not name or any(not label or len(label) > 63 for label in name.split(".")) or " " in name:
        raise ValueError(f"not a host or domain name: {value!r}")
    return name


IpAddress = Annotated[str, AfterValidator(_check_ip)]
HostName = Annotated[str, AfterValidator(_check_hostname)]


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
    interval: Duration = 300.0
    port: int = Field(default=25, ge=1, le=65535)
    timeout: Duration = 15.0
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
    interval: Duration = 300.0
    resolvers: list[IpAddress] = Field(default_factory=list)
    port: int = Field(default=53, ge=1, le=65535)
    timeout: Duration = 5.0
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
    drift_accept_after: Duration | Literal[0] = 86400.0
    smtp: SmtpProbeSettings = Field(default_factory=SmtpProbeSettings)


class ShardingSettings(_Model):
    """Several replicas sharing this configuration; each polls the targets it owns."""

    count: int = Field(default=1, ge=1, le=1000)
    index: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _check(self) -> ShardingSettings:
        if self.index is not None and self.index >= self.count:
            raise ValueError(f"index {self.index} must be below count {self.count}")
        return self


class SchedulerSettings(_Model):
    max_workers: int = Field(default=16, ge=1, le=256)
    jitter: Annotated[float, BeforeValidator(parse_duration), Field(ge=0)] = 5.0
    # Below 1.5 every result would expire before the next (jittered, non-instant) poll lands.
    stale_after_intervals: float = Field(default=3.0, ge=1.5)
    first_run_spread: Duration = 2.0


class WebSettings(_Model):
    listen_address: str = ":10049"
    telemetry_path: str = "/metrics"
    runbook_url: str = "https://github.com/mailflow-exporter/mailflow-exporter/blob/main/docs/runbook.md"
    # An exporter-toolkit web configuration file (TLS, client certificates, basic auth), as
    # ``--web.config.file`` (which wins); validated at startup, re-read when it changes.
    config_file: Path | None = None

    @field_validator("listen_address")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(
                "listen_address must be [host]:port, e.g. ':10049' or '127.0.0.1:10049' (port 0 picks a free port)"
            )
        return value

    @field_validator("telemetry_path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        if not value.startswith("/") or value in ("/", "/-/healthy", "/-/ready"):
            raise ValueError("telemetry_path must start with '/' and not clash with '/', '/-/healthy', '/-/ready'")
        return value


class LogSettings(_Model):
    level: Annotated[
        Literal["debug", "info", "warning", "error"], BeforeValidator(lambda v: v.lower() if isinstance(v, str) else v)
    ] = "info"
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

    def current_password(self) -> str | None:
        """The password as it is now: re-read from its file (a rotated secret needs no restart)."""
        if self.password_file is not None:
            try:
                value = self.password_file.read_text(encoding="utf-8").strip()
            except OSError:
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
    """Apply defaults to one server and load its password (from value, file or secrets directory)."""
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
    password = pick("password")
    password_file = pick("password_file")
    keytab = pick("keytab")
    if keytab is not None:
        _check_keytab(server.name, auth, keytab, password is not None or password_file is not None)
    source: Path | None = None
    if password is None and password_file is not None:
        password = SecretStr(_read_secret(password_file, f"exchange.servers[{server.name}].password_file"))
        source = password_file
    if password is None and keytab is None and settings.secrets_dir is not None:
        for candidate in (f"{server.name.lower()}_password", "exchange_password"):
            path = settings.secrets_dir / candidate
            if path.is_file():
                password = SecretStr(_read_secret(path, f"secrets_dir/{candidate}"))
                source = path
                break
    return ResolvedServer(
        name=server.name,
        host=host or pick("host") or server.name,
        port=pick("port") or (443 if tls else 80),
        tls=tls,
        auth=auth,
        username=pick("username"),
        password=password,
        password_file=source,
        keytab=keytab,
        verify_tls=pick("verify_tls"),
        ca_bundle=pick("ca_bundle"),
        negotiate_service=pick("negotiate_service"),
        connect_timeout=pick("connect_timeout"),
        call_timeout=pick("call_timeout"),
    )


def _check_keytab(server: str, auth: str, keytab: Path, has_password: bool) -> None:
    if auth not in ("kerberos", "negotiate"):
        raise ConfigError(f"server {server}: keytab works with auth kerberos or negotiate, not {auth}")
    if has_password:
        raise ConfigError(f"server {server}: set either keytab or password/password_file, not both")
    if not keytab.is_file():
        raise ConfigError(f"server {server}: keytab {keytab} does not exist or is not a file")


def resolved_servers(settings: Settings) -> list[ResolvedServer]:
    """Every explicitly configured server, resolved."""
    return [resolve_server(settings, s) for s in settings.exchange.servers]


def _read_secret(path: Path, what: str) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read secret file {path}: {exc.strerror}") from None
    if not value:
        raise ConfigError(f"{what}: secret file {path} is empty")
    return value


# --- loading with line numbers --------------------------------------------------------------------


_KEY_LINE = "\0key"  # path suffix under which _line_map keeps a key's own line (its value may start lower)


def _line_map(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[(*path, key)] = out[(*path, key, _KEY_LINE)] = key_node.start_mark.line + 1
            _line_map(value_node, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, (*path, index), out)


def read_yaml(
    path: Path,
    top_level: str = "a mapping of sections (exchange, collectors, web, ...)",
    unique_keys: bool = False,
) -> tuple[dict[str, Any], dict[tuple[Any, ...], int]]:
    """Parse the YAML file once; return the data and a map from field path to line number.
    ``top_level`` names what the document must be; ``unique_keys`` rejects a key repeated in a mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (line {line}, byte {exc.start + 1}): save it as UTF-8") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {exc.problem}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be {top_level}")
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _line_map(node, (), lines)
        if unique_keys:
            _reject_repeated_keys(path, node, ())
    return data, lines


def _reject_repeated_keys(path: Path, node: yaml.Node, loc: tuple[Any, ...]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            if key_node.value in seen:
                where = _format_loc((*loc, key_node.value))
                raise ConfigError(f"{path}: {where} (line {key_node.start_mark.line + 1}): key repeated in a mapping")
            seen.add(key_node.value)
            _reject_repeated_keys(path, value_node, (*loc, key_node.value))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _reject_repeated_keys(path, item, (*loc, index))


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _env_name(loc: tuple[Any, ...]) -> str:
    return ENV_PREFIX + "__".join(str(p).upper() for p in loc if not isinstance(p, int))


def _describe_errors(
    exc: ValidationError, source: str, lines: Mapping[tuple[Any, ...], int], environ: Mapping[str, str]
) -> str:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if p not in ("function-after[_check_targets()]",))
        field = _format_loc(loc)
        line = lines.get((*loc, _KEY_LINE)) if err["type"] == "extra_forbidden" else None  # the key's line
        if line is None:
            line = next((lines[loc[:cut]] for cut in range(len(loc), -1, -1) if loc[:cut] in lines), None)
        env_keys = {k.upper() for k in environ}
        variable = next(
            (_env_name(loc[:cut]) for cut in range(len(loc), 0, -1) if _env_name(loc[:cut]) in env_keys), None
        )
        if variable is not None:  # the variable that is set (a whole list may come from one variable)
            where = f" (from environment {variable})"
        elif line is not None:
            where = f" (line {line})"
        else:
            where = ""
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown setting (check the spelling against config/example.yml)"
        elif err["type"] in ("model_type", "dict_type"):  # not "instance of ExchangeSettings"
            message = f"expected a mapping (indented 'key: value' lines), got {_kind(err['input'])}"
        elif err["type"] == "list_type":
            message = f"expected a list ('- item' lines, or [a, b]), got {_kind(err['input'])}"
        elif err["type"] == "path_not_file":
            message = f"no such file: {err['input']}"
        problems.append(f"  {field}{where}: {message}")
    noun = "problem" if len(problems) == 1 else "problems"
    return f"{source}: {len(problems)} {noun}:\n" + "\n".join(problems)


def _kind(value: Any) -> str:
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _bad_json_variables(exc: SettingsError, environ: Mapping[str, str]) -> list[str]:
    """The MAILFLOW_* variables under the field pydantic-settings names that hold malformed JSON."""
    found = re.search(r'field "(\w+)"', str(exc))
    prefix = (ENV_PREFIX + (found[1] if found else "")).upper()
    bad = []
    for key, value in environ.items():
        if key.upper().startswith(prefix) and value.lstrip()[:1] in ("[", "{"):
            try:
                json.loads(value)
            except ValueError as err:
                bad.append(f"{key.upper()} is not valid JSON ({err})")
    return sorted(bad)


# Kubernetes injects these for every Service whose name starts like ours (service links).
_SERVICE_LINK = re.compile(r"_SERVICE_(HOST|PORT(_[A-Z0-9_]+)?)$|_PORT(_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)?$")


def _unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``MAILFLOW_*`` variables that name no top-level setting. pydantic-settings reads only the
    variables of known fields, so a misspelt one (``MAILFLOW_EXCHANGE_SERVERS``, one underscore) would
    otherwise be ignored without a word; unknown keys below a known one are caught by validation."""
    known = sorted(Settings.model_fields)
    problems = []
    for key in sorted(environ):
        upper = key.upper()
        if not upper.startswith(ENV_PREFIX) or upper == ENV_PREFIX or _SERVICE_LINK.search(upper):
            continue
        top = upper.removeprefix(ENV_PREFIX).split("__", 1)[0].lower()
        if top not in known:
            rest = upper.removeprefix(ENV_PREFIX)
            split = [f"{f.upper()}__{rest[len(f) + 1 :]}" for f in known if top.startswith(f + "_")]
            hint = split or [h.upper() for h in difflib.get_close_matches(top, known, n=1)]
            also = f"; did you mean {ENV_PREFIX}{hint[0]}?" if hint else ""
            problems.append(
                f"  environment {upper}: unknown setting '{top}' (settings are {', '.join(known)}; "
                f"'__' separates levels){also}"
            )
    return problems


def load_settings(path: Path | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Load and validate the configuration; raise ConfigError listing every problem."""
    environ = os.environ if environ is None else environ
    unknown = _unknown_variables(environ)
    if unknown:
        noun = "problem" if len(unknown) == 1 else "problems"
        raise ConfigError(f"{path or 'configuration'}: {len(unknown)} {noun}:\n" + "\n".join(unknown))
    data, lines = read_yaml(path, unique_keys=True) if path is not None else ({}, {})
    token = _yaml_data.set(data)
    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigError(_describe_errors(exc, str(path) if path else "configuration", lines, environ)) from None
    except SettingsError as exc:  # e.g. a MAILFLOW_* variable holding malformed JSON
        bad = _bad_json_variables(exc, environ)
        detail = "; ".join(bad) + "; lists and mappings in the environment are JSON" if bad else str(exc)
        raise ConfigError(f"{path or 'configuration'}: environment: {detail}") from None
    finally:
        _yaml_data.reset(token)
    try:
        resolved_servers(settings)  # surfaces unreadable secret files at load time
    except ConfigError as exc:
        raise ConfigError(f"{path or 'configuration'}: 1 problem:\n  {exc}") from None
    return settings
