"""Health objects: server component states, database copy status, service health.

Get-ServerComponentState and Test-ServiceHealth follow the Exchange 2019 captures (a presentation
object with ``ToString`` its type name, ``LocalStates``/``RemoteStates`` as raw ``List<RequesterDetails>``
lists, services as ``MultiValuedProperty<string>``). Get-MailboxDatabaseCopyStatus has no capture:
the ``DatabaseCopyStatusEntry`` shape (property names from the documented ``Format-List`` output,
types, and the enum numbers) is inferred.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Sequence
from typing import Any

from psrpcore.types import PSInt64, PSObject

from exporter.simulator.objects import (
    enum_value,
    ex_object,
    mvp_strings,
    object_state,
    server_id,
    typed_list,
)
from exporter.simulator.orgconfig import (
    COMPONENTS,
    CONTENT_INDEX_STATES,
    COPY_STATUSES,
    NORMALLY_INACTIVE,
    OFFLINE_EXEMPT,
    SERVICE_HEALTH_ROLES,
    SERVICE_STATES,
    DatabaseCopySpec,
    DatabaseSpec,
)
from exporter.simulator.scenario import Scenario, ServerSpec
from exporter.simulator.timeline import Timeline, format_culture_datetime

__all__ = [
    "COMPONENT_STATE_TYPE_NAMES",
    "COPY_STATUS_TYPE_NAMES",
    "SERVICES_STATUS_TYPE_NAMES",
    "ComponentState",
    "component_states",
    "database_copy_status",
    "server_component_state",
    "services_status",
]

_PRESENTATION = "Microsoft.Exchange.Data.Directory.Management.ServerComponentStatePresentationObject"
COMPONENT_STATE_TYPE_NAMES = [_PRESENTATION, "Microsoft.Exchange.Data.ConfigurableObject", "System.Object"]
_REQUESTER_DETAILS = f"{_PRESENTATION}+RequesterDetails"
_REQUESTER_LIST = (
    f"System.Collections.Generic.List`1[[{_REQUESTER_DETAILS}, Microsoft.Exchange.Data.Directory, "
    "Version=15.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35]]"
)
_TASKS = "Microsoft.Exchange.Management.SystemConfigurationTasks"
COPY_STATUS_TYPE_NAMES = [
    f"{_TASKS}.DatabaseCopyStatusEntry",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object",
]
SERVICES_STATUS_TYPE_NAMES = [
    "Microsoft.Exchange.Monitoring.ExchangeServicesStatus",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object",
]
#: Seconds between two transaction logs of a database (LastLogGenerated grows with the clock).
LOG_INTERVAL = 30.0

# ---------------------------------------------------------------------------------------------
# Get-ServerComponentState
# ---------------------------------------------------------------------------------------------

#: (requester, state, seconds before the scenario start it was set)
Requester = tuple[str, str, float]


class ComponentState:
    """One component's effective state and its requester entries on one server."""

    __slots__ = ("component", "offline", "requesters", "state")

    def __init__(self, component: str, state: str, requesters: list[Requester], offline: bool) -> None:
        self.component = component
        self.state = state
        self.requesters = requesters
        self.offline = offline


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("|".join(parts).encode()).digest()[:4], "big")


def component_states(server: ServerSpec, names: Sequence[str] = COMPONENTS) -> list[ComponentState]:
    """A server's components (``names``: the 34 of Exchange 2019 by default, the list of the build that
    runs the cmdlet) with the scenario's overrides and ServerWideOffline applied.

    A healthy server has ForwardSyncDaemon and ProvisioningRps Inactive and a Functional/Active
    requester entry on ServerWideOffline, Monitoring and RecoveryActionsEnabled. An override adds
    its requester's entry (keeping the Functional one). ServerWideOffline Inactive takes every
    other component but Monitoring and RecoveryActionsEnabled to Inactive and sets
    ServerWideOfflineIsOffline on every row.
    """
    overrides = {c.component: c for c in server.components}
    offline_spec = overrides.get("ServerWideOffline")
    offline = offline_spec is not None and offline_spec.state == "Inactive"
    install_age = 400 * 86400.0 + _seed(server.name) % (30 * 86400)
    out: list[ComponentState] = []
    for component in names:
        override = overrides.get(component)
        state = "Inactive" if component in NORMALLY_INACTIVE else "Active"
        requesters: list[Requester] = []
        if component in OFFLINE_EXEMPT or component == "ServerWideOffline" or override is not None:
            requesters.append(("Functional", "Active", install_age))
        if override is not None:
            state = override.state
            requesters.append((override.requester, override.state, 600.0))
        if offline and component not in OFFLINE_EXEMPT:
            state = "Inactive"
        out.append(ComponentState(component, state, requesters, offline))
    return out


def _requester_details(component: str, entry: Requester, timeline: Timeline) -> PSObject:
    requester, state, age = entry
    stamp = datetime.datetime.fromtimestamp(timeline.origin.start - age, tz=datetime.UTC)
    shown = format_culture_datetime(stamp, timeline.culture)
    # State is a ServiceState (a string in the captures only because Export-Clixml cut it at depth 2).
    return ex_object(
        [_REQUESTER_DETAILS, "System.Object"],
        [
            ("Requester", requester),
            ("State", enum_value("Microsoft.Exchange.Data.ServiceState", SERVICE_STATES, state)),
            ("Timestamp", stamp),
            ("Component", component),
        ],
        f"Requestor:{requester}; State:{state}; Timestamp:{shown}",
        serialization=False,
    )


def server_component_state(
    scenario: Scenario, server: ServerSpec, component: ComponentState, timeline: Timeline
) -> PSObject:
    """A Get-ServerComponentState row (``ServerComponentStatePresentationObject``)."""

    def states() -> Any:
        return typed_list(
            [_REQUESTER_LIST, "System.Object"],
            [_requester_details(component.component, r, timeline) for r in component.requesters],
        )

    return ex_object(
        COMPONENT_STATE_TYPE_NAMES,
        [
            ("ServerFqdn", server.fqdn),
            ("Component", component.component),
            ("State", enum_value("Microsoft.Exchange.Data.ServiceState", SERVICE_STATES, component.state)),
            ("ServerWideOfflineIsOffline", component.offline),
            ("RemoteStates", states()),
            ("LocalStates", states()),
            ("Identity", server_id(scenario, server)),
            ("IsValid", True),
            ("ObjectState", object_state("New")),
        ],
        _PRESENTATION,
    )


# ---------------------------------------------------------------------------------------------
# Get-MailboxDatabaseCopyStatus (inferred shape)
# ---------------------------------------------------------------------------------------------


def database_copy_status(
    db: DatabaseSpec, copy: DatabaseCopySpec, timeline: Timeline, error_message: str | None = None
) -> PSObject:
    """A ``DatabaseCopyStatusEntry`` for one copy; log counters follow the clock (one log per 30 s).

    ``error_message``: the copy's replication service did not answer the status RPC (a ServiceDown
    copy). The entry then carries that text as ErrorMessage (no ErrorEventId) and only what is known
    without the RPC: no times, zero queue lengths and log counters, ContentIndexState Unknown
    (inferred: the cmdlet fills the entries it could not query with the exception only).
    """
    now = timeline.now()
    origin = timeline.origin
    active_server = db.active_server
    active = copy.server == active_server
    logs = int(origin.now() // LOG_INTERVAL) - int(origin.start // LOG_INTERVAL)
    generation = 100_000 + _seed(db.name) % 500_000 + logs
    unreachable = error_message is not None
    quiet = active or unreachable  # no copy or replay figures: the active copy has none, an unreachable one sent none
    copied = generation - copy.copy_queue_length
    replayed = copied - copy.replay_queue_length

    def log_time(gen: int) -> datetime.datetime | None:
        if quiet:
            return None  # the active copy neither copies nor replays logs
        seconds = now - (generation - gen) * LOG_INTERVAL
        return timeline.local(seconds).replace(microsecond=0)

    identity_text = f"{db.name}\\{copy.server}"
    identity = ex_object(
        ["Microsoft.Exchange.Data.ConfigObjectId", "Microsoft.Exchange.Data.ObjectId", "System.Object"],
        [],
        identity_text,
    )
    started = (
        None
        if unreachable
        else timeline.local(timeline.start - 3 * 86400 - _seed(identity_text) % 86400).replace(microsecond=0)
    )
    status = copy.status
    failed = status in ("Failed", "FailedAndSuspended", "ServiceDown")
    return ex_object(
        COPY_STATUS_TYPE_NAMES,
        [
            ("Identity", identity),
            ("Id", identity),
            ("Name", identity_text),
            ("DatabaseName", db.name),
            ("Status", enum_value(f"{_TASKS}.CopyStatus", COPY_STATUSES, status)),
            ("InstanceStartTime", started),
            ("LastStatusTransitionTime", started),
            ("MailboxServer", copy.server),
            ("ActiveDatabaseCopy", active_server.lower()),
            ("ActiveCopy", active),
            ("ActivationPreference", copy.activation_preference),
            ("StatusRetrievedTime", timeline.local(now).replace(microsecond=0)),
            ("WorkerProcessId", 0 if unreachable else 4000 + _seed(identity_text) % 4000),
            ("ActivationSuspended", copy.activation_suspended),
            ("ActionInitiator", "Unknown"),
            ("ErrorMessage", error_message or ("The copy reported a failure (simulated)." if failed else None)),
            ("ErrorEventId", 4087 if failed and error_message is None else None),
            ("ExtendedErrorInfo", None),
            ("SuspendComment", None),
            ("RequiredLogsPresent", None),
            ("SinglePageRestore", 0),
            (
                "ContentIndexState",
                enum_value(
                    f"{_TASKS}.ContentIndexStatusType",
                    CONTENT_INDEX_STATES,
                    "Unknown" if unreachable else copy.content_index_state,
                ),
            ),
            ("ContentIndexErrorMessage", None),
            ("ContentIndexErrorCode", None),
            ("ContentIndexVersion", 1),
            ("ContentIndexBacklog", 0),
            ("ContentIndexRetryQueueSize", 0),
            ("ContentIndexMailboxesToCrawl", None),
            ("ContentIndexSeedingPercent", None),
            ("ContentIndexSeedingSource", None),
            ("CopyQueueLength", PSInt64(0 if quiet else copy.copy_queue_length)),
            ("ReplayQueueLength", PSInt64(0 if quiet else copy.replay_queue_length)),
            ("ReplaySuspended", status in ("Suspended", "FailedAndSuspended")),
            ("ResumeBlocked", False),
            ("ReseedBlocked", False),
            ("LatestAvailableLogTime", log_time(generation)),
            ("LastCopyNotificationedLogTime", log_time(generation)),
            ("LastCopiedLogTime", log_time(copied)),
            ("LastInspectedLogTime", log_time(copied)),
            ("LastReplayedLogTime", log_time(replayed)),
            ("LastLogGenerated", PSInt64(0 if unreachable else generation)),
            ("LastLogCopyNotified", PSInt64(0 if quiet else generation)),
            ("LastLogCopied", PSInt64(0 if quiet else copied)),
            ("LastLogInspected", PSInt64(0 if quiet else copied)),
            ("LastLogReplayed", PSInt64(0 if quiet else replayed)),
            ("LogsReplayedSinceInstanceStart", PSInt64(0)),
            ("LogsCopiedSinceInstanceStart", PSInt64(0)),
            ("LatestFullBackupTime", None),
            ("LatestIncrementalBackupTime", None),
            ("LogReplayQueueIncreasing", False),
            ("LogCopyQueueIncreasing", False),
            ("ReplayLagStatus", None),
            ("DatabaseRedundancyCount", len(db.copies)),
            ("IsValid", True),
            ("ObjectState", object_state("New")),
        ],
        identity_text,
    )


# ---------------------------------------------------------------------------------------------
# Test-ServiceHealth
# ---------------------------------------------------------------------------------------------


def services_status(role: str, not_running: tuple[str, ...]) -> PSObject:
    """One role's ``ExchangeServicesStatus``; ``not_running`` services move to ServicesNotRunning."""
    down = {s.lower() for s in not_running}
    running = [s for s in SERVICE_HEALTH_ROLES[role] if s.lower() not in down]
    stopped = [s for s in SERVICE_HEALTH_ROLES[role] if s.lower() in down]
    stopped += [s for s in not_running if s.lower() not in {x.lower() for x in stopped}]
    return ex_object(
        SERVICES_STATUS_TYPE_NAMES,
        [
            ("Role", role),
            ("RequiredServicesRunning", not stopped),
            ("ServicesNotRunning", mvp_strings(stopped)),
            ("ServicesRunning", mvp_strings(running)),
            ("Identity", None),
            ("IsValid", True),
            ("ObjectState", object_state("New")),
        ],
        SERVICES_STATUS_TYPE_NAMES[0],
    )
