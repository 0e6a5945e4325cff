"""Server roles by Exchange version: what a server runs decides what its cmdlets answer.

Exchange 2016 and later have one server role, Mailbox, that runs every transport service (hub
Transport, Front End Transport, Mailbox Transport) and the client access services. Exchange 2013
(``Version 15.0``) splits them: a **Client Access server** runs the Front End Transport service
(port 25 ``Default Frontend <S>``, ``Outbound Proxy Frontend <S>``, ``Client Frontend <S>``) and
nothing that queues or logs messages; a **Mailbox server** runs the Transport service
(``Default <S>``, ``Client Proxy <S>``), the queues, the message-tracking log and the databases.
A 2013 server may hold both roles ("Mailbox, ClientAccess"). Sources:

- ServerRole text: CSS-Exchange HealthChecker ``Get-ServerRole.ps1`` ("Mailbox, ClientAccess*" is a
  2013 multi-role server, "*ClientAccess*" without Mailbox a Client Access server).
- Default receive connectors per role: OfficeDocs-Exchange ``ExchangeServer2013/
  receive-connectors-exchange-2013-help.md``.
- Get-MessageTrackingLog refuses a server that is neither hub, Edge nor Mailbox (terminating
  ``LocalizedException``, category InvalidOperation; LogSearchTask.InternalValidate of 15.00.1497).
- Test-ServiceHealth "isn't supported on Exchange 2013 Client Access servers" (cmdlet docs); public
  scripts catch an error containing "There are no Microsoft Exchange 2007 server roles installed"
  (cunninghamp/Test-ExchangeServerHealth.ps1).
- Get-MailboxDatabaseCopyStatus -Server writes the server-role error for a non-Mailbox server
  (``GetServerRoleError(ServerRole.Mailbox)``, category InvalidOperation; 15.00.1497).
- Get-Queue asks the target's Transport service over RPC; a Client Access server has none (2013
  docs: the Front End Transport service "doesn't queue any messages locally").
- Get-ServerComponentState lists every ``ServerComponentEnum`` member of the build that runs the
  cmdlet whatever the target's roles (GetServerComponentState.InternalProcessRecord, 15.00.1497), so
  a Client Access server lists HubTransport too.

**Inferred**: the IsClientAccessServer/IsFrontendTransportServer flags of a 2013 Mailbox-only
server (False), the full texts of the error records (only the quoted parts are sourced), and that
the component list follows the endpoint's build rather than a proxied backend's.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from exporter.simulator.fields import ScenarioError

if TYPE_CHECKING:
    from exporter.simulator.orgconfig import DatabaseSpec, ReceiveConnectorSpec
    from exporter.simulator.records import ErrorInfo
    from exporter.simulator.scenario import ServerSpec

__all__ = [
    "COMPONENTS_2013",
    "SERVER_ROLES",
    "check_databases",
    "check_roles",
    "check_server",
    "components_for",
    "copy_status_role_error",
    "hosted_transport_roles",
    "is_client_access_only",
    "is_exchange_2013",
    "normalise_version",
    "queue_viewer_error",
    "restrict_connectors",
    "role_defaults",
    "service_health_error",
    "tracking_role_error",
    "transport_roles",
]

#: ``ServerRole`` flags a scenario server may declare (name -> value).
SERVER_ROLES: dict[str, int] = {
    "None": 0,
    "Mailbox": 2,
    "ClientAccess": 4,
    "UnifiedMessaging": 16,
    "HubTransport": 32,
    "Edge": 64,
}
_VERSION = re.compile(r"^(?:Version\s+)?(\d+)\.(\d+)\s*\(Build\s+(\d+)\.(\d+)\)$", re.IGNORECASE)

#: ``ServerComponentEnum`` of Exchange 2013 CU23 (15.00.1497) without None, TestComponent and
#: ServerWideSettings, which IsValidComponent excludes: what Get-ServerComponentState lists there.
COMPONENTS_2013 = (
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
    "UMCallRouter",
    "XropProxy",
    "HttpProxyAvailabilityGroup",
    "ForwardSyncDaemon",
    "ProvisioningRps",
    "MapiProxy",
    "EdgeTransport",
    "HighAvailability",
    "SharedCache",
)

_TRACKING = "Microsoft.Exchange.Management.TransportLogSearchTasks.GetMessageTrackingLog"
_QUEUE = "Microsoft.Exchange.Management.QueueViewerTasks.GetQueue"
_COPY_STATUS = "Microsoft.Exchange.Management.SystemConfigurationTasks.GetMailboxDatabaseCopyStatus"
_SERVICE_HEALTH = "Microsoft.Exchange.Monitoring.TestServiceHealth"


def normalise_version(text: str, where: str) -> str:
    """``15.0 (Build 1497.2)`` or ``Version 15.0 (Build 1497.2)`` as AdminDisplayVersion prints it."""
    match = _VERSION.match(text.strip())
    if match is None:
        raise ScenarioError(f"{where}.version: expected 'Version 15.2 (Build 1544.4)' or '15.0 (Build 1497.2)'")
    major, minor, build, revision = match.groups()
    return f"Version {int(major)}.{int(minor)} (Build {int(build)}.{int(revision)})"


def is_exchange_2013(version: str) -> bool:
    """Whether an AdminDisplayVersion text is Exchange 2013 (15.0)."""
    match = _VERSION.match(version.strip())
    return match is not None and (int(match.group(1)), int(match.group(2))) == (15, 0)


def role_defaults(roles: Sequence[str], version: str, edge: bool) -> dict[str, bool]:
    """The Is*Server flags a server's roles imply (each may still be overridden in the scenario).

    2016 and later: a Mailbox server runs everything (the 2019 capture has all four flags True).
    2013: Mailbox gives the hub Transport service, ClientAccess the Front End Transport service.
    """
    if edge:
        return {"hub_transport": False, "mailbox": False, "client_access": False, "frontend_transport": False}
    mailbox = "Mailbox" in roles
    client_access = "ClientAccess" in roles or (mailbox and not is_exchange_2013(version))
    return {
        "hub_transport": mailbox or "HubTransport" in roles,
        "mailbox": mailbox,
        "client_access": client_access,
        "frontend_transport": client_access,
    }


def check_roles(roles: Sequence[str], version: str, where: str) -> None:
    """Reject unknown roles, and role sets the version cannot have: only Exchange 2013 has a separate
    Client Access role."""
    for role in roles:
        if role not in SERVER_ROLES:
            raise ScenarioError(f"{where}.server_role: unknown role {role}; known: {', '.join(SERVER_ROLES)}")
    if "ClientAccess" in roles and not is_exchange_2013(version):
        raise ScenarioError(
            f"{where}.server_role: ClientAccess is a separate role only on Exchange 2013 (version 15.0); "
            "Exchange 2016 and later report Mailbox"
        )


def is_client_access_only(server: ServerSpec) -> bool:
    """A server without the hub Transport service and without mailboxes: an Exchange 2013 CAS."""
    return not (server.is_hub_transport or server.is_mailbox or server.is_edge)


def hosted_transport_roles(hub_transport: bool, frontend_transport: bool, edge: bool) -> frozenset[str]:
    """The receive connector TransportRole values a server hosts (an Edge server: both, as before)."""
    if edge:
        return frozenset({"HubTransport", "FrontendTransport"})
    return frozenset(
        role for role, runs in (("HubTransport", hub_transport), ("FrontendTransport", frontend_transport)) if runs
    )


def transport_roles(server: ServerSpec) -> frozenset[str]:
    """The receive connector TransportRole values ``server`` hosts."""
    return hosted_transport_roles(server.is_hub_transport, server.is_frontend_transport, server.is_edge)


def restrict_connectors(
    server: ServerSpec, specs: Iterable[ReceiveConnectorSpec], listed: Iterable[str], where: str
) -> tuple[ReceiveConnectorSpec, ...]:
    """The connectors of a server's transport roles: setup's defaults of a role the server lacks are
    dropped; a connector the scenario lists for such a role is an error (New-ReceiveConnector refuses
    a TransportRole the server does not run; [I] for the exact check)."""
    hosted = transport_roles(server)
    named = {n.lower() for n in listed}
    out = []
    for spec in specs:
        if spec.transport_role in hosted:
            out.append(spec)
        elif spec.name.lower() in named:
            raise ScenarioError(
                f"{where}.receive_connectors: {spec.name} has TransportRole {spec.transport_role}, which "
                f"{server.name} does not run"
            )
    return tuple(out)


def check_server(server: ServerSpec, data: Mapping[str, Any], where: str) -> ServerSpec:
    """Reject what a Client Access-only server cannot have; drop the organisation-wide tracking default."""
    if server.receive_connectors is not None:
        listed = [str(c.get("name", "")) for c in data.get("receive_connectors") or [] if isinstance(c, Mapping)]
        server = dataclasses.replace(
            server, receive_connectors=restrict_connectors(server, server.receive_connectors, listed, where)
        )
    if not is_client_access_only(server):
        return server
    for key, what in (("queues", "queues"), ("tracking", "a message-tracking log"), ("service_health", None)):
        if data.get(key):
            reason = (
                "Test-ServiceHealth does not support Exchange 2013 Client Access servers"
                if what is None
                else f"a Client Access server has no {what} (no Transport service)"
            )
            raise ScenarioError(f"{where}.{key}: {reason}")
    return dataclasses.replace(server, tracking=None)


def check_databases(databases: Iterable[DatabaseSpec], servers: Mapping[str, ServerSpec]) -> None:
    """Database copies live on Mailbox servers only."""
    for db in databases:
        for copy in db.copies:
            server = servers.get(copy.server.upper())
            if server is not None and not server.is_mailbox:
                raise ScenarioError(f"databases.{db.name}: {copy.server} is not a Mailbox server")


def components_for(endpoint: ServerSpec, current: Sequence[str]) -> Sequence[str]:
    """The components Get-ServerComponentState lists when it runs on ``endpoint`` (its build's enum)."""
    return COMPONENTS_2013 if is_exchange_2013(endpoint.version) else current


def _error(endpoint: str, cmdlet: str, class_name: str, failure: str, message: str, **extra: str) -> ErrorInfo:
    # records imports timeline, which imports scenario, which parses roles with this module.
    from exporter.simulator.records import exchange_error

    return exchange_error(endpoint, cmdlet, class_name, failure, message, **extra)


def tracking_role_error(endpoint: str, target: ServerSpec) -> ErrorInfo | None:
    """Get-MessageTrackingLog's terminating NotTransportServer error for a Client Access server."""
    if not is_client_access_only(target):
        return None
    return _error(
        endpoint,
        "Get-MessageTrackingLog",
        _TRACKING,
        "LocalizedException",
        # [I] text: the resource NotTransportServer(server) is not public; the check and category are.
        f"The server {target.name} isn't a Hub Transport, Edge Transport or Mailbox server.",
        exception_type="Microsoft.Exchange.Data.Common.LocalizedException",
        category="InvalidOperation",
        target_name=target.name,
    )


def queue_viewer_error(endpoint: str, target: ServerSpec) -> ErrorInfo | None:
    """Get-Queue's error for a server without the Transport service (its queue RPC is not registered)."""
    if not is_client_access_only(target):
        return None
    return _error(
        endpoint,
        "Get-Queue",
        _QUEUE,
        "QueueViewerException",
        # [I] the RPC failure is mapped to the same text as an unreachable Transport service.
        f'Failed to connect to the Microsoft Exchange Transport service on computer "{target.name}". '
        "Verify that a valid computer name was used and the Microsoft Exchange Transport service is started.",
        category="InvalidOperation",
    )


def copy_status_role_error(endpoint: str, target: ServerSpec) -> ErrorInfo | None:
    """Get-MailboxDatabaseCopyStatus -Server's server-role error for a server without mailboxes."""
    if target.is_mailbox:
        return None
    return _error(
        endpoint,
        "Get-MailboxDatabaseCopyStatus",
        _COPY_STATUS,
        "ServerRoleOperationException",
        # [I] text and exception type of GetServerRoleError(ServerRole.Mailbox).
        f"The server {target.name} doesn't have the Mailbox server role installed.",
        category="InvalidOperation",
        target_name=target.name,
    )


def service_health_error(endpoint: str, target: ServerSpec) -> ErrorInfo | None:
    """Test-ServiceHealth's error on an Exchange 2013 Client Access-only server."""
    if not is_client_access_only(target):
        return None
    return _error(
        endpoint,
        "Test-ServiceHealth",
        _SERVICE_HEALTH,
        "LocalizedException",
        # The sentence up to "installed" is what public scripts match; the rest is [I].
        f"There are no Microsoft Exchange 2007 server roles installed on server {target.fqdn}.",
        exception_type="Microsoft.Exchange.Data.Common.LocalizedException",
        category="InvalidOperation",
        target_name=target.name,
    )
