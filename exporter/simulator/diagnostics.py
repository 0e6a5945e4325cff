"""Get-ExchangeDiagnosticInfo: the Transport service's ResourceThrottling (back pressure) diagnostics.

The output follows the real Exchange 2019 CU14 capture in microsoft/CSS-Exchange
(``Diagnostics/HealthChecker/Tests/DataCollection/E19/Exchange/
GetExchangeDiagnosticInfo_EdgeTransportResourceThrottling1.xml``): one
``Microsoft.Exchange.Management.Powershell.Support.ExchangeDiagnosticInfoResult`` whose ``Result``
(and ToString) is the XML text, CRLF-separated and indented by two spaces: ``Diagnostics/ProcessInfo``
(id, serverName, startTime, currentTime, lifetime, threadCount, handleCount, workingSet,
fastTrainExchangeVersion) and ``Diagnostics/Components/ResourceThrottling`` with the
``ResourceTracker`` (AggregateUse, one ``ResourceMeter Resource="..."`` per meter with
CurrentResourceUse, PreviousResourceUse, PressureTransitions, Pressure), the
``ResourceLevelMediator`` observers and the ``Configuration``. Meter names, transitions and the
configuration are the capture's; "Understanding back pressure" (back-pressure.md) documents the
resources, levels and actions.

Inferred (no capture of a server under pressure): the Pressure value of a faulted meter (midway
between LowToMedium and MediumToHigh for Medium, MediumToHigh for High), AggregateUse (the faulted
level; the capture shows Low beside High meters, so Exchange's aggregation is not a plain maximum),
which observers report Paused (from the documented actions: Pickup, MessageResubmission and
ShadowRedundancy at Medium; SmtpIn at High; RemoteDelivery at High on UsedVersionBuckets;
BootScanner for PrivateBytes), empty SubStatus, the ProcessLocator listing without ``-Process``,
and the RPC error documents for an unknown process or an unreachable server (shapes from
exchange_diff's ProcessAccessManager, reference only).
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterator

from exporter.simulator.clixml import write_clixml
from exporter.simulator.clocks import target_timeline
from exporter.simulator.cmdlets import Args, Context, Param, _server_unreachable, cmdlet, target_server
from exporter.simulator.consequences import periods
from exporter.simulator.faults import FaultKind
from exporter.simulator.objects import ex_object, object_state
from exporter.simulator.records import Output, Record
from exporter.simulator.scenario import ServerSpec
from exporter.simulator.timeline import Timeline
from exporter.simulator.tracking_wire import timespan_text

__all__ = ["DIAGNOSTIC_INFO_TYPE_NAMES", "resource_throttling_xml"]

DIAGNOSTIC_INFO_TYPE_NAMES = [
    "Microsoft.Exchange.Management.Powershell.Support.ExchangeDiagnosticInfoResult",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object",
]
_INSTALL = r"C:\Program Files\Microsoft\Exchange Server\V15"
#: (meter, path suffix or None, (MediumToHigh, HighToMedium, LowToMedium, MediumToLow), healthy Pressure)
_METERS: tuple[tuple[str, str | None, tuple[int, int, int, int], int], ...] = (
    ("PrivateBytes", None, (75, 73, 72, 71), 6),
    ("SystemMemory", None, (94, 89, 88, 84), 62),  # the capture's server sat at 92 (High)
    ("UsedVersionBuckets", r"\TransportRoles\data\Queue\mail.que", (1500, 1000, 999, 800), 2),
    ("JetSessions", r"\TransportRoles\data\Queue\mail.que", (1500, 1400, 1000, 900), 14),
    ("CheckpointDepth", r"\TransportRoles\data\Queue\mail.que", (300, 280, 250, 230), 0),
    ("DatabaseUsedSpace", r"\TransportRoles\data\Queue", (99, 97, 96, 94), 33),
    ("UsedDiskSpace", r"\TransportRoles\data\Queue", (99, 94, 90, 88), 33),
    ("UsedDiskSpace", r"\TransportRoles\data", (99, 94, 90, 88), 33),
)
_OBSERVERS = (
    "BootScanner",
    "ContentAggregator",
    "DelayedDelivery",
    "EnhancedDns",
    "IsMemberOfResolver",
    "MessageResubmission",
    "MessagingDatabase",
    "Pickup",
    "RemoteDelivery",
    "ShadowRedundancy",
    "Replication",
    "SmtpIn",
    "Categorizer",
)
_CONFIGURATION = (
    '<ResourceThrottlingConfiguration DehydrateMessagesUnderMemoryPressure="true" '
    'DisabledResourceLevelObservers="System.String[]" MaxTransientExceptionsAllowed="5" '
    'ResourceLevelObserverTimeout="PT5M" ResourceThrottlingEnabled="true" SmtpBaseThrottlingDelayInterval="PT0S" '
    'SmtpMaxThrottlingDelayInterval="PT55S" SmtpStepThrottlingDelayInterval="PT1S" '
    'SmtpStartThrottlingDelayInterval="PT1S" PeriodicDehydrationEnabled="true" PeriodicDehydrationInterval="PT5M" />'
)
_OVERRIDES = (
    '<Status OverrideCount="0" OverrideableProperties="resourcethrottling.processortime.mediumtohigh,'
    "resourcethrottling.processortime.hightomedium,resourcethrottling.processortime.lowtomedium,"
    'resourcethrottling.processortime.mediumtolow" />'
)


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("|".join(parts).encode()).digest()[:4], "big")


def _lines(items: list[tuple[int, str]]) -> str:
    """The XML as XDocument writes it: two spaces per level, CRLF between lines."""
    return "\r\n".join("  " * depth + text for depth, text in items)


def _utc(ts: float) -> str:
    """``2024-05-22T15:12:38.3041278Z`` (a UTC DateTime in an XElement)."""
    moment = datetime.datetime.fromtimestamp(int(ts), datetime.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{round((ts % 1) * 10_000_000) % 10_000_000:07d}Z"


def _install_path(server: ServerSpec) -> str:
    path = server.message_tracking_log_path
    cut = path.lower().find(r"\transportroles")
    return path[:cut] if cut > 0 else _INSTALL


def _process_info(server: ServerSpec, timeline: Timeline) -> list[tuple[int, str]]:
    seed = _seed(server.name)
    started = timeline.start - 86400 - seed % 172_800 - (seed % 9973) / 10_000
    now = timeline.now()
    working = 90_000_000 + seed % 60_000_000
    major, minor, build, revision = server.version_parts
    return [
        (1, "<ProcessInfo>"),
        (2, f"<id>{1000 + seed % 9000}</id>"),
        (2, f"<serverName>{server.name.upper()}</serverName>"),
        (2, f"<startTime>{_utc(started)}</startTime>"),
        (2, f"<currentTime>{_utc(now)}</currentTime>"),
        (2, f"<lifetime>{timespan_text(round((now - started) * 10_000_000))}</lifetime>"),
        (2, f"<threadCount>{40 + seed % 20}</threadCount>"),
        (2, f"<handleCount>{1500 + seed % 500}</handleCount>"),
        (2, f"<workingSet>{working / 1048576:.1f} MB ({working:,} bytes)</workingSet>"),
        (2, f"<fastTrainExchangeVersion>{major}.{minor}.{build}.{revision}</fastTrainExchangeVersion>"),
        (1, "</ProcessInfo>"),
    ]


def _paused(observer: str, level: str | None, resource: str | None) -> bool:
    if level is None or resource == "SystemMemory":
        return False
    if observer in ("Pickup", "MessageResubmission", "ShadowRedundancy"):
        return True
    if observer == "BootScanner":
        return resource == "PrivateBytes"
    if observer == "SmtpIn":
        return level == "High"
    return observer == "RemoteDelivery" and level == "High" and resource == "UsedVersionBuckets"


def resource_throttling_xml(ctx: Context, server: ServerSpec, timeline: Timeline) -> str:
    """The ``Result`` text for ``-Process EdgeTransport -Component ResourceThrottling`` on ``server``."""
    found = periods(ctx, server.name, FaultKind.BACK_PRESSURE)
    active = found[-1] if found and found[-1].until is None else None
    previous = "Low"
    if active is not None and len(found) > 1 and found[-2].until == active.since:
        previous = found[-2].level or "Low"  # a Medium -> High change is one fault replacing another
    install = _install_path(server)
    items: list[tuple[int, str]] = [(0, "<Diagnostics>"), *_process_info(server, timeline)]
    items += [(1, "<Components>"), (2, "<ResourceThrottling>"), (3, "<ResourceTracker>")]
    aggregate = "Low" if active is None or active.resource == "SystemMemory" else active.level or "High"
    items.append((4, f"<AggregateUse>{aggregate}</AggregateUse>"))
    faulted_meter = False
    for name, suffix, (m2h, h2m, l2m, m2l), healthy in _METERS:
        current, before, pressure = "Low", "Low", healthy
        if active is not None and active.resource == name and not faulted_meter:
            faulted_meter = True  # UsedDiskSpace: the queue drive (the first of the two meters)
            current, before = active.level or "High", previous
            pressure = m2h if current == "High" else (l2m + m2h) // 2
        resource = name if suffix is None else f"{name}[{install}{suffix}]"
        items += [
            (4, f'<ResourceMeter Resource="{resource}">'),
            (5, f"<CurrentResourceUse>{current}</CurrentResourceUse>"),
            (5, f"<PreviousResourceUse>{before}</PreviousResourceUse>"),
            (
                5,
                f"<PressureTransitions>[PressureTransitions: MediumToHigh={m2h} HighToMedium={h2m} "
                f"LowToMedium={l2m} MediumToLow={m2l}]</PressureTransitions>",
            ),
            (5, f"<Pressure>{pressure}</Pressure>"),
            (4, "</ResourceMeter>"),
        ]
    items += [(3, "</ResourceTracker>"), (3, "<ResourceLevelMediator>")]
    for observer in _OBSERVERS:
        paused = _paused(observer, active.level if active else None, active.resource if active else None)
        items += [
            (4, f'<ResourceLevelObserver Name="{observer}">'),
            (5, f"<Paused>{'true' if paused else 'false'}</Paused>"),
            (5, "<SubStatus></SubStatus>"),
            (4, "</ResourceLevelObserver>"),
        ]
    items += [
        (3, "</ResourceLevelMediator>"),
        (3, "<Configuration>"),
        (4, _CONFIGURATION),
        (4, "<Overrides>"),
        (5, _OVERRIDES),
        (4, "</Overrides>"),
        (3, "</Configuration>"),
        (2, "</ResourceThrottling>"),
        (1, "</Components>"),
        (0, "</Diagnostics>"),
    ]
    return _lines(items)


def _unsupported_component(server: ServerSpec, timeline: Timeline, component: str) -> str:
    items = [
        (0, "<Diagnostics>"),
        *_process_info(server, timeline),
        (1, f"<{component}>"),
        (2, f'<message>Component "{component}" is not supported by this process.</message>'),
        (1, f"</{component}>"),
        (1, "<Components>"),
        (2, "<Component>ResourceThrottling</Component>"),
        (1, "</Components>"),
        (0, "</Diagnostics>"),
    ]
    return _lines(items)


def _rpc_error(error: str, message: str) -> str:
    """ProcessAccessManager's answer when the RPC fails (one line, unformatted)."""
    action = "<action>RunComponentCommand</action>"
    return f"<Diagnostics><error>{error}</error>{action}<message>{message}</message></Diagnostics>"


def _process_locator(server: ServerSpec) -> str:
    processes = ("EdgeTransport", "MSExchangeFrontendTransport", "MSExchangeTransport")
    items: list[tuple[int, str]] = [(0, "<Diagnostics>"), (1, "<ProcessLocator>")]
    items.append((2, f"<count>{len(processes)}</count>"))
    for name in processes:
        seed = _seed(server.name, name)
        guid = hashlib.sha256(f"{server.name}|{name}".encode()).hexdigest()
        items += [
            (2, "<Process>"),
            (3, f"<guid>{guid[:8]}-{guid[8:12]}-{guid[12:16]}-{guid[16:20]}-{guid[20:32]}</guid>"),
            (3, f"<id>{1000 + seed % 9000}</id>"),
            (3, f"<name>{name}</name>"),
            (2, "</Process>"),
        ]
    items += [(1, "</ProcessLocator>"), (0, "</Diagnostics>")]
    return _lines(items)


@cmdlet(
    "Get-ExchangeDiagnosticInfo",
    "Microsoft.Exchange.Management.Powershell.Support.GetExchangeDiagnosticInfo",
    [Param("Server"), Param("Process"), Param("Component"), Param("Argument"), Param("Unlimited", "switch")],
)
def get_exchange_diagnostic_info(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Get-ExchangeDiagnosticInfo [-Server S] [-Process P] [-Component C] [-Argument A] [-Unlimited]."""
    server = target_server(ctx, "Get-ExchangeDiagnosticInfo", args.get("Server"))
    timeline = target_timeline(ctx, server)
    process = args.get("Process")
    component = args.get("Component")
    if _server_unreachable(ctx, server):
        text = _rpc_error("ProcessAccessManager RPC Error 6BA", "The RPC server is unavailable")
    elif process is None:
        text = _process_locator(server)
    elif str(process).lower() != "edgetransport":
        text = _rpc_error(f"No processes have registered on {server.name} to support this task.", "")
    elif component is None or str(component).lower() == "resourcethrottling":
        text = resource_throttling_xml(ctx, server, timeline)
    else:
        text = _unsupported_component(server, timeline, str(component))
    props = [("Result", text), ("Identity", None), ("IsValid", True), ("ObjectState", object_state("New"))]
    yield Output(data=write_clixml(ex_object(DIAGNOSTIC_INFO_TYPE_NAMES, props, text)))
