"""Configuration and health cmdlets, served from the scenario (registered when ``cmdlets`` is imported).

Get-ReceiveConnector, Get-SendConnector, Get-AcceptedDomain, Get-ServerComponentState,
Get-MailboxDatabaseCopyStatus, Get-ExchangeCertificate, Test-ServiceHealth and Get-ADPermission.
Identity/Server resolution and not-found records come from the shared helpers in ``cmdlets``
(``matching``, ``target_server(s)``, ``exclusive``); replays, RBAC, and the ``error_record``,
``cmdlet_latency``, ``malformed_clixml`` and ``hang`` faults apply through the generic pipeline.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any
from xml.etree import ElementTree as ET

from exporter.simulator import certificates, clocks, consequences, objects_config, objects_health, roles
from exporter.simulator.clixml import write_clixml
from exporter.simulator.cmdlets import (
    Args,
    Context,
    Param,
    StopCmdlet,
    cmdlet,
    exclusive,
    has_wildcard,
    matching,
    not_found,
    target_server,
    target_servers,
)
from exporter.simulator.depth import UNLIMITED
from exporter.simulator.orgconfig import (
    COMPONENTS,
    SERVICE_HEALTH_ROLES,
    DatabaseCopySpec,
    DatabaseSpec,
    ReceiveConnectorSpec,
)
from exporter.simulator.records import Output, Record, emit, exchange_error
from exporter.simulator.scenario import ServerSpec

__all__: list[str] = []

_SYSTEM_TASKS = "Microsoft.Exchange.Management.SystemConfigurationTasks"
_DC = Param("DomainController")
_GET_AD_PERMISSION = "Microsoft.Exchange.Management.RecipientTasks.GetADPermission"

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
    for state in objects_health.component_states(server, roles.components_for(ctx.server, COMPONENTS)):
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
    databases = consequences.effective_databases(ctx)  # a down server's copies fail over / ServiceDown
    copies: list[DatabaseCopy] = [(db, c) for db in databases for c in db.copies]
    if args.get("Server") is not None:
        server = target_server(ctx, "Get-MailboxDatabaseCopyStatus", args["Server"])
        not_mailbox = roles.copy_status_role_error(ctx.server.name, server)
        if not_mailbox is not None:
            raise StopCmdlet(not_mailbox)
        copies = [(db, c) for db, c in copies if c.server == server.name]
    if args.get("Local"):
        copies = [(db, c) for db, c in copies if c.server == ctx.server.name]
    if args.get("Active"):
        copies = [(db, c) for db, c in copies if c.server == db.active_server]
    identity = args.get("Identity")
    if identity is not None and "\\" not in identity:
        names = {db.name.lower() for db in databases}
        if identity.lower() not in names and not has_wildcard(identity):
            raise not_found(ctx, "Get-MailboxDatabaseCopyStatus", identity)
        identity = f"{identity}\\*"  # a database name: all its copies
    for db, copy in matching(ctx, "Get-MailboxDatabaseCopyStatus", identity, copies, _copy_keys):
        host = ctx.scenario.server(copy.server)
        assert host is not None
        error = consequences.service_down_message(host.fqdn) if copy.status == "ServiceDown" else None
        view = clocks.target_timeline(ctx, host)  # the copy's replication service reports in its clock
        yield emit(objects_health.database_copy_status(db, copy, view, error))


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
    view = clocks.target_timeline(ctx, server)  # Status by the server's clock
    for cert in found:
        if domains and not domains & {d.lower() for d in cert.spec.domains}:
            continue

        def live(cert: certificates.IssuedCertificate = cert) -> ET.Element:
            return ET.fromstring(write_clixml(certificates.certificate_model(server, cert, view), UNLIMITED))

        yield Output(data=write_clixml(certificates.certificate_wire(cert, view)), live=live)


@cmdlet("Test-ServiceHealth", "Microsoft.Exchange.Monitoring.TestServiceHealth", [Param("Server", position=0), _DC])
def test_service_health(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Test-ServiceHealth [-Server S] (default: the endpoint's server): one object per server role."""
    server = target_server(ctx, "Test-ServiceHealth", args.get("Server"))
    unsupported = roles.service_health_error(ctx.server.name, server)  # a 2013 Client Access server
    if unsupported is not None:
        raise StopCmdlet(unsupported)
    down = dict(server.service_health)
    for role in SERVICE_HEALTH_ROLES:
        yield emit(objects_health.services_status(role, down.get(role, ())))


@cmdlet(
    "Get-ADPermission",
    _GET_AD_PERMISSION,
    [Param("Identity", position=0, mandatory=True), Param("User"), Param("Owner", "switch"), _DC],
)
def get_ad_permission(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Get-ADPermission -Identity DN|GUID|Name [-User DOMAIN\\principal]: a receive connector's extended-right ACEs.

    -Identity is an ``ADRawEntryIdParameter``: it does not know the ``SERVER\\Name`` identity that
    Get-ReceiveConnector prints, so that form is not found (see ``_ad_entry``).
    """
    server, spec = _ad_entry(ctx, str(args["Identity"]))
    user = args.get("User")
    wanted = None if user is None else _principal(ctx, str(user))
    identity = objects_config.receive_connector_id(ctx.scenario, server, spec)
    for principal, right in objects_config.connector_permissions(spec):
        if wanted is None or principal == wanted:
            yield emit(objects_config.ad_permission(identity, principal, right))


_GUID_TEXT = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


def _ad_entry(ctx: Context, text: str) -> Connector:
    """The receive connector an ``ADRawEntryIdParameter`` value names, or Exchange's error record.

    Accepted, following the Get-/Add-/Remove-ADPermission docs ("the distinguished name (DN) of the
    object or the object's name if it's unique"; Microsoft's anonymous-relay article checks
    ``Get-ADPermission "Anonymous Relay"``): the DistinguishedName as Get-ReceiveConnector reports it
    (case-insensitive, as AD compares DNs), the objectGUID (its ``Guid``, 36-character form), or the
    bare connector name when exactly one connector of the organisation carries it. Inferred and kept
    strict: no wildcards (the docs: "Accept wildcard characters: False"), no canonical names and no
    other GUID spellings (the docs name neither), no trimming of blanks. A name shared with a send
    connector or a server is ambiguous too (only receive connectors' ACLs are modelled; a real
    directory can hold still other objects of that name).
    ``SERVER\\Name`` is none of these: not found, as third-party write-ups report for remote sessions
    and as ExchangeDsc works around by passing only the part after the backslash.
    """
    connectors = _connectors(ctx, list(ctx.scenario.servers))
    scenario, wanted = ctx.scenario, text.casefold()
    for server, spec in connectors:
        if objects_config.receive_connector_dn(scenario, server, spec).casefold() == wanted:
            return server, spec
    if _GUID_TEXT.match(wanted):
        for server, spec in connectors:
            if str(objects_config.receive_connector_guid(scenario, server, spec)) == wanted:
                return server, spec
    named = [(server, spec) for server, spec in connectors if spec.name.casefold() == wanted]
    others = [s.name for s in scenario.effective_send_connectors] + [s.name for s in scenario.servers]
    if len(named) > 1 or (named and wanted in {name.casefold() for name in others}):
        raise StopCmdlet(
            exchange_error(
                ctx.server.name,
                "Get-ADPermission",
                _GET_AD_PERMISSION,
                "ManagementObjectAmbiguousException",
                f"The operation couldn't be performed because '{text}' matches multiple entries.",
                target_name=text,
            )
        )
    if not named:
        raise not_found(ctx, "Get-ADPermission", text)
    return named[0]


_PRINCIPALS = (objects_config.ANONYMOUS_LOGON, objects_config.AUTHENTICATED_USERS, objects_config.EXTERNALLY_SECURED)


def _principal(ctx: Context, text: str) -> str:
    """The principal a -User value (``SecurityPrincipalIdParameter``) names, or the not-found record.

    Only the ``DOMAIN\\name`` form of the well-known principals on connectors resolves
    (case-insensitive); the simulated directory holds no users or groups. Inferred and strict: of the
    documented forms (Name, Alias, DN, Domain\\Username, GUID, UPN ...) only Domain\\Username fits a
    well-known principal, which is no directory object with a name or alias of its own, so neither
    ``ANONYMOUS LOGON`` alone nor a SID resolves here; and an unresolved principal must not look like
    "no ACE" (a client would read that as "no relay right"). The error text is Exchange's for a
    referenced object that does not exist (inferred for -User).
    """
    wanted = text.casefold()
    for principal in _PRINCIPALS:
        if principal.casefold() == wanted:
            return principal
    raise StopCmdlet(
        exchange_error(
            ctx.server.name,
            "Get-ADPermission",
            _GET_AD_PERMISSION,
            "ManagementObjectNotFoundException",
            f'Couldn\'t find object "{text}". Please make sure that it was spelled correctly or specify a '
            "different object.",
            target_name=text,
        )
    )
