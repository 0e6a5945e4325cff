"""The transport cmdlets: Get-Queue and Get-MessageTrackingLog (registered when ``cmdlets`` is imported).

Get-Queue serves the timeline's queue snapshots with Exchange's -Identity, -Filter (OPATH),
-Include/-Exclude, -SortOrder and -ResultSize handling; Get-MessageTrackingLog serves the simulated
tracking log with its -Start/-End parsing (server-local, culture-dependent) and field filters. Both
reach other servers like Exchange does (a down or unreachable target is an error record).
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Callable, Iterator
from typing import Any

from exporter.simulator import clocks, consequences, objects, probe_mail, roles
from exporter.simulator.cmdlets import (
    RESULT_SIZE_WARNING,
    Args,
    Context,
    Param,
    _server_unreachable,
    _wildcard_match,
    cmdlet,
    exclusive,
    target_server,
)
from exporter.simulator.opath import FilterError, compile_filter
from exporter.simulator.records import (
    CmdletError,
    Error,
    ErrorInfo,
    Output,
    Record,
    Warning,
    emit,
    exchange_error,
    parameter_error,
)
from exporter.simulator.scenario import DELIVERY_TYPES
from exporter.simulator.timeline import QueueSnapshot
from exporter.simulator.tracking import TrackingEvent, tracking_log
from exporter.simulator.tracking_texts import EVENT_IDS

# ---------------------------------------------------------------------------------------------
# Get-Queue
# ---------------------------------------------------------------------------------------------
_GET_QUEUE = "Microsoft.Exchange.Management.QueueViewerTasks.GetQueue"
QUEUE_FILTER_PROPERTIES = (
    "DeliveryType",
    "Identity",
    "IncomingRate",
    "LastError",
    "LastRetryTime",
    "MessageCount",
    "NextHopCategory",
    "NextHopConnector",
    "NextHopDomain",
    "NextRetryTime",
    "OutgoingRate",
    "RetryCount",
    "Status",
    "TlsDomain",
    "Velocity",
    "DeferredMessageCount",
    "LockedMessageCount",
    "FirstRetryTime",
    "RiskLevel",
)


def queue_property(q: QueueSnapshot, name: str) -> Any:
    """A queue snapshot's value for an OPATH/SortOrder property name."""
    return {
        "DeliveryType": q.delivery_type,
        "Identity": q.identity,
        "IncomingRate": q.incoming_rate,
        "LastError": q.last_error,
        "LastRetryTime": q.last_retry_time,
        "MessageCount": q.message_count,
        "NextHopCategory": q.next_hop_category,
        "NextHopConnector": str(q.next_hop_connector),
        "NextHopDomain": q.next_hop_domain,
        "NextRetryTime": q.next_retry_time,
        "OutgoingRate": q.outgoing_rate,
        "RetryCount": q.retry_count,
        "Status": q.status,
        "TlsDomain": q.tls_domain,
        "Velocity": q.velocity,
        "DeferredMessageCount": q.deferred_message_count,
        "LockedMessageCount": q.locked_message_count,
        "FirstRetryTime": q.first_retry_time,
        "RiskLevel": q.risk_level,
    }[name]


def _queue_matches_identity(q: QueueSnapshot, pattern: str) -> bool:
    candidates = [q.identity, f"{q.server}\\{q.next_hop_domain}"]
    if "\\" not in pattern:
        candidates += [q.next_hop_domain]
    return _wildcard_match(pattern, *candidates)


def _include_exclude(q: QueueSnapshot, values: list[str]) -> bool:
    for value in values:
        v = value.lower()
        if v == "empty" and q.message_count == 0:
            return True
        if v in ("internal", "external") and q.next_hop_category.lower() == v:
            return True
        if v == q.delivery_type.lower():
            return True
    return False


def _sort_key(name: str, q: QueueSnapshot) -> tuple[bool, Any]:
    value = queue_property(q, name)
    if isinstance(value, str):
        return False, value.lower()
    return value is None, value if value is not None else 0


def _sort_queues(queues: list[QueueSnapshot], order: str) -> list[QueueSnapshot]:
    """Apply ``-SortOrder +Prop,-Prop`` (stable sorts, last key first)."""
    for part in reversed([p.strip() for p in order.split(",") if p.strip()]):
        descending = part.startswith("-")
        name = part.lstrip("+-")
        match = next((p for p in QUEUE_FILTER_PROPERTIES if p.lower() == name.lower()), None)
        if match is not None:
            queues.sort(key=functools.partial(_sort_key, match), reverse=descending)
    return queues


@cmdlet(
    "Get-Queue",
    _GET_QUEUE,
    [
        Param("Identity", position=0),
        Param("Server"),
        Param("Filter"),
        Param("ResultSize", "resultsize"),
        Param("Include", "strings"),
        Param("Exclude", "strings"),
        Param("SortOrder", "any"),
        Param("BookmarkIndex", "int"),
        Param("BookmarkObject", "any"),
        Param("IncludeBookmark", "any"),
        Param("SearchForward", "any"),
        Param("ReturnPageInfo", "any"),
    ],
)
def get_queue(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Get-Queue [-Server S] [-Filter OPATH] [-ResultSize N|Unlimited] [-Include/-Exclude] | [-Identity Q]."""
    identity: str | None = args.get("Identity")
    exclusive("Get-Queue", args, ["Identity"], ["Server", "Filter"])
    server_name = args.get("Server")
    if identity is not None and "\\" in identity and not identity.startswith("*"):
        server_name = identity.split("\\", 1)[0]
    target = target_server(ctx, "Get-Queue", server_name)
    no_transport = roles.queue_viewer_error(ctx.server.name, target)  # a 2013 Client Access server
    if no_transport is not None:
        yield Error(no_transport)
        return
    if _server_unreachable(ctx, target):
        yield Error(
            exchange_error(
                ctx.server.name,
                "Get-Queue",
                _GET_QUEUE,
                "QueueViewerException",
                f'Failed to connect to the Microsoft Exchange Transport service on computer "{target.name}". '
                "Verify that a valid computer name was used and the Microsoft Exchange Transport "
                "service is started.",
            )
        )
        return
    predicate = None
    if args.get("Filter"):
        text = str(args["Filter"])
        try:
            predicate = compile_filter(text, QUEUE_FILTER_PROPERTIES)
        except FilterError as exc:
            raise CmdletError(
                parameter_error(
                    "Get-Queue",
                    _GET_QUEUE,
                    "ParameterBindingFailed",
                    f"Cannot bind parameter 'Filter' to the target. Exception setting \"Filter\": "
                    f'"{exc} For a description of the filter parameter syntax see the command help. '
                    f'"{text}" at position {exc.position + 1}."',
                )
            ) from None
    queues = consequences.queue_snapshots(ctx, target, clocks.target_timeline(ctx, target))
    queues = [q for q in queues if q.listed]
    if identity is not None:
        queues = [q for q in queues if _queue_matches_identity(q, identity)]
        if not queues and not any(ch in identity for ch in "*?"):
            yield Error(
                exchange_error(
                    ctx.server.name,
                    "Get-Queue",
                    _GET_QUEUE,
                    "ManagementObjectNotFoundException",
                    f"The queue '{identity}' couldn't be found on server {target.name}.",
                    target_name=identity,
                )
            )
            return
    if args.get("Include"):
        queues = [q for q in queues if _include_exclude(q, args["Include"])]
    if args.get("Exclude"):
        queues = [q for q in queues if not _include_exclude(q, args["Exclude"])]
    for value in list(args.get("Include") or []) + list(args.get("Exclude") or []):
        if value.lower() not in ("internal", "external", "empty") and value not in DELIVERY_TYPES:
            raise CmdletError(
                parameter_error(
                    "Get-Queue",
                    _GET_QUEUE,
                    "CannotConvertArgumentNoMessage",
                    f"Cannot process argument transformation on parameter 'Include'. Cannot convert value "
                    f'"{value}" to type '
                    '"Microsoft.Exchange.Data.QueueViewer.QueueViewerIncludesAndExcludes".',
                )
            )
    if predicate is not None:
        queues = [q for q in queues if predicate(functools.partial(queue_property, q))]
    if args.get("SortOrder"):
        order = args["SortOrder"]
        queues = _sort_queues(queues, ",".join(order) if isinstance(order, list) else str(order))
    limit = args.get("ResultSize", ctx.scenario.result_size_default)
    truncated = limit is not None and len(queues) > limit
    if limit is not None:
        queues = queues[:limit]
    for q in queues:
        yield emit(objects.queue_info(q))
    if truncated:
        yield Warning(RESULT_SIZE_WARNING)


# ---------------------------------------------------------------------------------------------
# Get-MessageTrackingLog
# ---------------------------------------------------------------------------------------------
_GET_TRACKING = "Microsoft.Exchange.Management.TransportLogSearchTasks.GetMessageTrackingLog"
_DAY_FIRST_CULTURES = ("en-GB", "de-DE", "nl-NL", "fr-FR", "da-DK")


def _tracking_time(value: Any, name: str, tz: datetime.tzinfo, culture: str) -> float:
    """A -Start/-End value as seconds since the epoch; naive times are server-local, like Exchange."""
    parsed: datetime.datetime | None = None
    if isinstance(value, datetime.datetime):
        parsed = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" and text else text)
        except ValueError:
            formats = ["%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %I:%M %p", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y"]
            if culture in _DAY_FIRST_CULTURES:
                formats = [
                    f.replace("%m/%d", sep.join(("%d", "%m"))).replace("/%Y", f"{sep}%Y")
                    for sep in ("/", ".", "-")
                    for f in ("%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y")
                ]
            for fmt in formats:
                try:
                    parsed = datetime.datetime.strptime(text, fmt)
                    break
                except ValueError:
                    continue
    if parsed is None:
        raise CmdletError(
            ErrorInfo(
                message=(
                    f'Cannot bind parameter \'{name}\'. Cannot convert value "{value}" to type "System.DateTime". '
                    'Error: "String was not recognized as a valid DateTime."'
                ),
                exception_type="System.Management.Automation.ParameterBindingException",
                fqid=f"CannotConvertArgumentNoMessage,{_GET_TRACKING}",
                category="InvalidArgument",
                reason="ParameterBindingException",
                activity="Get-MessageTrackingLog",
            )
        )
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.timestamp()


def _tracking_filter(args: Args) -> Callable[[TrackingEvent], bool] | None:
    """The -EventId/-Source/-MessageId/... filters as one predicate (None: no filter)."""
    checks: list[Callable[[TrackingEvent], bool]] = []

    def equal(attribute: str, wanted: str) -> None:
        folded = wanted.casefold()
        checks.append(lambda e: str(getattr(e, attribute)).casefold() == folded)

    for param, attribute in (
        ("EventId", "event_id"),
        ("Source", "source"),
        ("InternalMessageId", "internal_message_id"),
        ("NetworkMessageId", "network_message_id"),
        ("Sender", "sender"),
        ("TransportTrafficType", "transport_traffic_type"),
    ):
        if args.get(param) is not None:
            equal(attribute, str(args[param]).strip())
    if args.get("MessageId") is not None:
        message_id = str(args["MessageId"]).strip()
        equal("message_id", message_id if message_id.startswith("<") else f"<{message_id}>")
    if args.get("Recipients"):
        wanted = {r.strip().casefold() for r in args["Recipients"]}
        checks.append(lambda e: any(r.casefold() in wanted for r in e.recipients))
    if args.get("Reference") is not None:
        reference = str(args["Reference"]).strip().casefold()
        checks.append(lambda e: e.reference is not None and any(r.casefold() == reference for r in e.reference))
    if args.get("MessageSubject") is not None:
        subject = str(args["MessageSubject"]).casefold()
        checks.append(lambda e: subject in e.message_subject.casefold())
    if not checks:
        return None
    return lambda e: all(check(e) for check in checks)


@cmdlet(
    "Get-MessageTrackingLog",
    _GET_TRACKING,
    [
        Param("Server"),
        Param("Start", "any"),
        Param("End", "any"),
        Param("ResultSize", "resultsize"),
        Param("EventId"),
        Param("Source"),
        Param("MessageId"),
        Param("InternalMessageId"),
        Param("NetworkMessageId"),
        Param("Sender"),
        Param("Recipients", "strings"),
        Param("MessageSubject"),
        Param("Reference"),
        Param("TransportTrafficType"),
        Param("DomainController"),
    ],
)
def get_message_tracking_log(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Get-MessageTrackingLog [-Server S] [-Start T] [-End T] [-ResultSize N|Unlimited] [-EventId E] [filters]."""
    event_id = args.get("EventId")
    if event_id is not None and str(event_id).strip().upper() not in EVENT_IDS:
        raise CmdletError(
            exchange_error(
                ctx.server.name,
                "Get-MessageTrackingLog",
                _GET_TRACKING,
                "LocalizedException",
                f'The value "{event_id}" isn\'t a valid EventId.',  # [I] text; id/category from the cmdlet
                exception_type="Microsoft.Exchange.Data.Common.LocalizedException",
                category="InvalidArgument",
                target_name=str(event_id),
            )
        )
    target = target_server(ctx, "Get-MessageTrackingLog", args.get("Server"))
    not_transport = roles.tracking_role_error(ctx.server.name, target)  # checked before any RPC
    if not_transport is not None:
        raise CmdletError(not_transport)
    if _server_unreachable(ctx, target):
        yield Error(
            exchange_error(
                ctx.server.name,
                "Get-MessageTrackingLog",
                _GET_TRACKING,
                "LogSearchException",
                "Failed to connect to the Microsoft Exchange Transport Log Search service on computer "
                f'"{target.name}". Verify that a valid computer name was used and the Microsoft Exchange '
                "Transport Log Search "
                "service is started.",
            )
        )
        return
    tz, culture = ctx.timeline.tz, ctx.scenario.organisation.culture
    start = None if args.get("Start") is None else _tracking_time(args["Start"], "Start", tz, culture)
    end = None if args.get("End") is None else _tracking_time(args["End"], "End", tz, culture)
    # Generated on the organisation clock in the session's zone, stamped by the target's clock (clocks.py).
    log = tracking_log(ctx.scenario, clocks.zone_timeline(ctx))
    limit = args.get("ResultSize", ctx.scenario.result_size_default)
    chosen = _tracking_filter(args)
    events = consequences.tracking_sources(ctx, target, log, (start, end), chosen, limit)
    events = probe_mail.add_probe_mail(ctx, target, log, (start, end), chosen, limit, events)
    truncated = limit is not None and len(events) > limit
    if limit is not None:
        events = events[:limit]
    for event in events:
        yield Output(source=event, live=event.live)
    if truncated:
        yield Warning(RESULT_SIZE_WARNING)
