"""Configuration and health cmdlets, served from the scenario (registered when ``cmdlets`` is imported).

Get-ReceiveConnector, Get-SendConnector, Get-AcceptedDomain, Get-ServerComponentState,
Get-MailboxDatabaseCopyStatus, Get-ExchangeCertificate, Test-ServiceHealth and Get-ADPermission.
Identity/Server resolution and not-found records come from the shared helpers in ``cmdlets``
(``matching``, ``target_server(s)``, ``exclusive``); replays, RBAC, and the ``error_record``,
``cmdlet_latency``, ``malformed_clixml`` and ``hang`` faults apply through the generic pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from xml.etree import ElementTree as ET

from exporter.simulator import certificates, objects_config, objects_health
from exporter.simulator.clixml import write_clixml
from exporter.simulator.cmdlets import (
    Args,
    Context,
    Param,
    cmdlet,
    exclusive,
    has_wildcard,
    matching,
    not_found,
    target_server,
    target_servers,
)
from exporter.simulator.depth import UNLIMITED
from exporter.simulator.orgconfig import SERVICE_HEALTH_ROLES, DatabaseCopySpec, DatabaseSpec, ReceiveConnectorSpec
from exporter.simulator.records import Output, Record, emit
from exporter.simulator.scenario import ServerSpec

__all__: list[str] = []

_SYSTEM_TASKS = "Microsoft.Exchange.Management.SystemConfigurationTasks"
_DC = Param("DomainController")

Connector = tuple[ServerSpec, ReceiveConnectorSpec]

_STATIC: dict[tuple[Any, ...], Output] = {}
_STATIC_MAX = 8192


def _static(key: tuple[Any, ...], build: Callable[[], object]) -> Output:
    """The output record of an object that does not change with the clock, built once per ``key``.

    ``key`` must hold everything the object is built from (organisation, server identity, spec,
    scenario start); connectors and component states are then written once, not on every call.
    A fresh record shares the cached wire bytes (remoting depth) and the object behind them.
    """
    cached = _STATIC.get(key)
    if cached is None:
        if len(_STATIC) >= _STATIC_MAX:
            _STATIC.clear()
        cached = _STATIC[key] = emit(build())
    return Output(data=cached.data, live=cached.live)


def _server_key(ctx: Context, server: ServerSpec) -> tuple[Any, ...]:
    return (ctx.scenario.organisation, server.name, server.fqdn, server.guid, ctx.timeline.start)


def _connector_keys(item: Connector) -> tuple[str, str]:
    server, spec = item
    return spec.identity(server.name), spec.name


def _connectors(ctx: Context, servers: list[ServerSpec]) -> list[Connector]:
    return [(server, spec) for server in servers for spec in server.effective_receive_connectors]


@cmdlet(
    "Get-ReceiveConnector",
    f"{_SYSTEM_TASKS}.GetReceiveConnector",
    [Param("Identity", position=0), Param("Server"), _DC],
)
def get_receive_connector(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Get-ReceiveConnector [-Identity SERVER\\Name|Name] | [-Server S]; no -Server: every server's."""
    exclusive("Get-ReceiveConnector", args, ["Identity"], ["Server"])
    connectors = _connectors(ctx, target_servers(ctx, "Get-ReceiveConnector", args.get("Server")))
    for server, spec in matching(ctx, "Get-ReceiveConnector", args.get("Identity"), connectors, _connector_keys):
        yield _static(
            ("receive", spec, *_server_key(ctx, server)),
            lambda: objects_config.receive_connector(ctx.scenario, server, spec, ctx.timeline),  # noqa: B023
        )


@cmdlet("Get-SendConnector", f"{_SYSTEM_TASKS}.GetSendConnector", [Param("Identity", position=0), _DC])
def get_send_connector(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Get-SendConnector [-Identity Name]: the organisation's send connectors."""
    specs = ctx.scenario.effective_send_connectors
    servers = tuple((s.name, s.guid) for s in ctx.scenario.servers)
    for spec in matching(ctx, "Get-SendConnector", args.get("Identity"), specs, lambda s: (s.name,)):
        yield _static(
            ("send", spec, ctx.scenario.organisation, servers, ctx.timeline.start),
            lambda: objects_config.send_connector(ctx.scenario, spec, ctx.timeline),  # noqa: B023
        )


@cmdlet("Get-AcceptedDomain", f"{_SYSTEM_TASKS}.GetAcceptedDomain", [Param("Identity", position=0), _DC])
def get_accepted_domain(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Get-AcceptedDomain [-Identity Name|domain]."""
    specs = ctx.scenario.effective_accepted_domains
    for spec in matching(ctx, "Get-AcceptedDomain", args.get("Identity"), specs, lambda s: (s.name, s.domain)):
        yield emit(objects_config.accepted_domain(ctx.scenario, spec, ctx.timeline))


@cmdlet(
    "Get-ServerComponentState",
    f"{_SYSTEM_TASKS}.GetServerComponentState",
    [Param("Identity", position=0, mandatory=True), Param("Component"), _DC],
)
def get_server_component_state(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Get-ServerComponentState -Identity SERVER [-Component Name]."""
    server = target_server(ctx, "Get-ServerComponentState", args["Identity"])
    wanted = args.get("Component")
    for state in objects_health.component_states(server):
        if wanted is None or state.component.lower() == str(wanted).lower():
            yield _static(
                ("component", state.component, server.components, *_server_key(ctx, server)),
                lambda: objects_health.server_component_state(ctx.scenario, server, state, ctx.timeline),  # noqa: B023
            )


DatabaseCopy = tuple[DatabaseSpec, DatabaseCopySpec]


def _copy_keys(item: DatabaseCopy) -> tuple[str]:
    return (f"{item[0].name}\\{item[1].server}",)


@cmdlet(
    "Get-MailboxDatabaseCopyStatus",
    f"{_SYSTEM_TASKS}.GetMailboxDatabaseCopyStatus",
    [Param("Identity", position=0), Param("Server"), Param("Active", "switch"), Param("Local", "switch"), _DC],
)
def get_mailbox_database_copy_status(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Get-MailboxDatabaseCopyStatus [-Identity DB[\\SERVER]] | [-Server S] | [-Local] [-Active]."""
    exclusive("Get-MailboxDatabaseCopyStatus", args, ["Identity"], ["Server"], ["Local"])
    copies: list[DatabaseCopy] = [(db, c) for db in ctx.scenario.effective_databases for c in db.copies]
    if args.get("Server") is not None:
        server = target_server(ctx, "Get-MailboxDatabaseCopyStatus", args["Server"])
        copies = [(db, c) for db, c in copies if c.server == server.name]
    if args.get("Local"):
        copies = [(db, c) for db, c in copies if c.server == ctx.server.name]
    if args.get("Active"):
        copies = [(db, c) for db, c in copies if c.server == db.active_server]
    identity = args.get("Identity")
    if identity is not None and "\\" not in identity:
        names = {db.name.lower() for db in ctx.scenario.effective_databases}
        if identity.lower() not in names and not has_wildcard(identity):
            raise not_found(ctx, "Get-MailboxDatabaseCopyStatus", identity)
        identity = f"{identity}\\*"  # a database name: all its copies
    for db, copy in matching(ctx, "Get-MailboxDatabaseCopyStatus", identity, copies, _copy_keys):
        yield emit(objects_health.database_copy_status(db, copy, ctx.timeline))


@cmdlet(
    "Get-ExchangeCertificate",
    f"{_SYSTEM_TASKS}.GetExchangeCertificate",
    [Param("Thumbprint", position=0), Param("Identity"), Param("Server"), Param("DomainName", "strings"), _DC],
)
def get_exchange_certificate(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Get-ExchangeCertificate [-Server S] [-Thumbprint T] [-Identity SERVER\\T]: the server's store."""
    exclusive("Get-ExchangeCertificate", args, ["Identity"], ["Thumbprint", "Server"])
    identity = args.get("Identity")
    server_name, _, thumbprint = (identity or "").rpartition("\\")
    server = target_server(ctx, "Get-ExchangeCertificate", server_name or args.get("Server"))
    wanted = thumbprint or args.get("Thumbprint")
    found = matching(
        ctx,
        "Get-ExchangeCertificate",
        wanted,
        certificates.server_certificates(ctx.scenario, server, ctx.timeline),
        lambda c: (c.thumbprint,),
    )
    domains = {d.lower() for d in args.get("DomainName") or []}
    for cert in found:
        if domains and not domains & {d.lower() for d in cert.spec.domains}:
            continue

        def live(cert: certificates.IssuedCertificate = cert) -> ET.Element:
            return ET.fromstring(write_clixml(certificates.certificate_model(server, cert, ctx.timeline), UNLIMITED))

        yield Output(data=write_clixml(certificates.certificate_wire(cert, ctx.timeline)), live=live)


@cmdlet("Test-ServiceHealth", "Microsoft.Exchange.Monitoring.TestServiceHealth", [Param("Server", position=0), _DC])
def test_service_health(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Test-ServiceHealth [-Server S] (default: the endpoint's server): one object per server role."""
    server = target_server(ctx, "Test-ServiceHealth", args.get("Server"))
    down = dict(server.service_health)
    for role in SERVICE_HEALTH_ROLES:
        yield emit(objects_health.services_status(role, down.get(role, ())))


@cmdlet(
    "Get-ADPermission",
    "Microsoft.Exchange.Management.RecipientTasks.GetADPermission",
    [Param("Identity", position=0, mandatory=True), Param("User"), Param("Owner", "switch"), _DC],
)
def get_ad_permission(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Get-ADPermission -Identity SERVER\\Connector [-User principal]: the connector's extended-right ACEs."""
    connectors = _connectors(ctx, list(ctx.scenario.servers))
    user = args.get("User")
    for server, spec in matching(ctx, "Get-ADPermission", args["Identity"], connectors, _connector_keys):
        identity = objects_config.receive_connector_id(ctx.scenario, server, spec)
        for principal, right in objects_config.connector_permissions(spec):
            if user is None or _same_principal(user, principal):
                yield emit(objects_config.ad_permission(identity, principal, right))


def _same_principal(wanted: str, principal: str) -> bool:
    """``NT AUTHORITY\\ANONYMOUS LOGON`` matches itself or ``ANONYMOUS LOGON`` (case-insensitive)."""
    wanted = wanted.strip().casefold()
    return wanted in (principal.casefold(), principal.rpartition("\\")[2].casefold())
