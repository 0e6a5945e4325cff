"""Back pressure collector: the Transport service's resource throttling state, per transport server.

``Get-ExchangeDiagnosticInfo -Server S -Process EdgeTransport -Component ResourceThrottling`` is
what "Understanding back pressure" (learn.microsoft.com, exchange/mail-flow/back-pressure) documents
to view each resource's utilization level; it is in the View-Only Configuration role (Exchange's
built-in role definitions, as the simulator's ``rbac.py`` lists them), which the monitoring account
already has for Get-Queue. The answer is one ``ExchangeDiagnosticInfoResult`` whose ``Result`` is an
XML document (the Exchange 2019 capture in microsoft/CSS-Exchange,
``GetExchangeDiagnosticInfo_EdgeTransportResourceThrottling1.xml``)::

    Diagnostics/Components/ResourceThrottling/ResourceTracker/AggregateUse       Low|Medium|High
    .../ResourceTracker/ResourceMeter[@Resource="UsedDiskSpace[C:\\...\\Queue]"]/CurrentResourceUse
    .../ResourceLevelMediator/ResourceLevelObserver[@Name="SmtpIn"]/Paused      true|false

When the process cannot be reached the document holds ``<error>`` instead (ProcessAccessManager's
RPC error): that poll fails with the text. Levels: Low (normal), Medium (mail from outside the
organisation is delayed or refused at MAIL FROM, depending on the resource), High (all new mail is
refused). In that capture SystemMemory is High while AggregateUse is Low: the aggregate is not the
highest meter, so both are exported and the rules read the meters (SystemMemory aside).

Labels are bounded (``exporter.cardinality``): ``resource`` outside Exchange's documented meters is
``other``; per server, the ``max_meters`` (resource, path) meters at the highest level keep their
own series and the rest share ``path="other"`` (the highest level and pressure among them);
``observer`` outside the observers Exchange 2019 reports is ``other`` (paused if any of them is).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.cardinality import OTHER, fold_enum, keep_top, unknown
from exporter.errors import CollectorError, ParseError
from exporter.exchange.clixml import flatten
from exporter.exchange.cmdlet_collector import CappedServerCollector
from exporter.exchange.session import ExchangeSession

__all__ = [
    "LEVELS",
    "OBSERVERS",
    "RESOURCES",
    "BackPressureCollector",
    "BackPressureResult",
    "ResourceMeter",
    "cap_back_pressure",
    "parse_resource_throttling",
    "render_back_pressure",
]

log = logging.getLogger(__name__)
#: Exchange's resource utilization levels and their metric values.
LEVELS = {"Low": 0, "Medium": 1, "High": 2}
#: Meters whose level Exchange does not act on by refusing mail (see the module doc).
NOT_THROTTLING = frozenset({"SystemMemory"})
POLLED = "Polled from Get-ExchangeDiagnosticInfo -Process EdgeTransport -Component ResourceThrottling."
#: The resource meters "Understanding back pressure" documents (QueueLength is the Submission queue's)
#: plus the two more the Exchange 2019 capture reports (JetSessions, CheckpointDepth).
RESOURCES = frozenset(
    "DatabaseUsedSpace PrivateBytes QueueLength SystemMemory UsedDiskSpace UsedVersionBuckets JetSessions "
    "CheckpointDepth".split()
)
#: The ResourceLevelObservers of the Exchange 2019 capture; other builds may report others ("other").
OBSERVERS = frozenset(
    "BootScanner ContentAggregator DelayedDelivery EnhancedDns IsMemberOfResolver MessageResubmission "
    "MessagingDatabase Pickup RemoteDelivery ShadowRedundancy Replication SmtpIn Categorizer".split()
)
DEFAULT_MAX_METERS = 50


@dataclass(frozen=True)
class ResourceMeter:
    """One back pressure resource meter."""

    resource: str  # UsedDiskSpace, PrivateBytes...
    path: str  # what it measures, e.g. the queue database folder ("" for memory)
    level: str  # CurrentResourceUse: Low, Medium or High
    previous: str  # PreviousResourceUse
    pressure: float | None  # the measured value (percent, or a count for version buckets)

    @property
    def throttling(self) -> bool:
        """Medium or High on a resource Exchange throttles mail for."""
        return LEVELS.get(self.level, 0) > 0 and self.resource not in NOT_THROTTLING


@dataclass(frozen=True)
class BackPressureResult:
    """One server's resource throttling state."""

    server: str
    aggregate: str  # AggregateUse
    meters: tuple[ResourceMeter, ...]
    paused: tuple[str, ...]  # ResourceLevelObservers paused (SmtpIn: no new SMTP mail...)
    observers: tuple[str, ...] = ()  # every observer reported
    kept: frozenset[tuple[str, str]] | None = None  # (resource, path) meters with their own series (None: all)
    folded: Mapping[str, int] = field(default_factory=dict)  # label -> distinct values shown as "other"

    @property
    def level(self) -> str:
        """The highest level among the meters that throttle mail (Low when none does)."""
        worst = max((LEVELS.get(m.level, 0) for m in self.meters if m.resource not in NOT_THROTTLING), default=0)
        return next(name for name, value in LEVELS.items() if value == worst)

    def throttling(self) -> list[ResourceMeter]:
        """The meters at Medium or High that throttle mail, the worst first."""
        return sorted((m for m in self.meters if m.throttling), key=lambda m: -LEVELS.get(m.level, 0))


def _level(text: str | None) -> str:
    value = (text or "").strip()
    return value if value in LEVELS else "Low"


def _number(text: str | None) -> float | None:
    try:
        return float((text or "").strip())
    except ValueError:
        return None


def _split_resource(name: str) -> tuple[str, str]:
    """``UsedDiskSpace[C:\\...\\Queue]`` -> (``UsedDiskSpace``, ``C:\\...\\Queue``)."""
    resource, bracket, rest = name.partition("[")
    return resource.strip(), rest[:-1] if bracket and rest.endswith("]") else ""


def parse_resource_throttling(text: str, server: str) -> BackPressureResult:
    """The ``Result`` XML of the diagnostic call to a BackPressureResult; CollectorError when Exchange
    answered with its error document, ParseError when the XML is not the expected one."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ParseError(f"Get-ExchangeDiagnosticInfo on {server}: the result is not XML ({exc})") from None
    error = root.findtext("error")
    if error is not None:
        message = " ".join(t for t in (error.strip(), (root.findtext("message") or "").strip()) if t)
        raise CollectorError(f"Get-ExchangeDiagnosticInfo -Server {server}: {message[:300]}", reason="cmdlet_error")
    throttling = root.find("Components/ResourceThrottling")
    tracker = None if throttling is None else throttling.find("ResourceTracker")
    if throttling is None or tracker is None:
        raise ParseError(f"Get-ExchangeDiagnosticInfo on {server}: no ResourceThrottling component in the result")
    meters = []
    for meter in tracker.findall("ResourceMeter"):
        resource, path = _split_resource(meter.get("Resource", ""))
        meters.append(
            ResourceMeter(
                resource=resource,
                path=path,
                level=_level(meter.findtext("CurrentResourceUse")),
                previous=_level(meter.findtext("PreviousResourceUse")),
                pressure=_number(meter.findtext("Pressure")),
            )
        )
    observers = throttling.findall("ResourceLevelMediator/ResourceLevelObserver")
    paused = tuple(o.get("Name", "") for o in observers if (o.findtext("Paused") or "").strip().lower() == "true")
    return BackPressureResult(
        server=server,
        aggregate=_level(tracker.findtext("AggregateUse")),
        meters=tuple(meters),
        paused=paused,
        observers=tuple(o.get("Name", "") for o in observers),
    )


class BackPressureCollector(CappedServerCollector):
    """Polls the resource throttling diagnostics per transport server (``limit``: max_meters)."""

    name = "back_pressure"
    needs_hub_transport = True  # EdgeTransport.exe is the Transport service; a 2013 CAS has none

    def collect(self, session: ExchangeSession, server: str) -> BackPressureResult:
        params = {"Server": server, "Process": "EdgeTransport", "Component": "ResourceThrottling"}
        result = self.run(session, server, "Get-ExchangeDiagnosticInfo", params)
        texts = [flatten(o).get("Result") for o in result.objects if o is not None]
        if len(texts) != 1 or not isinstance(texts[0], str):
            raise ParseError(f"Get-ExchangeDiagnosticInfo on {server}: expected one result, got {len(texts)}")
        return cap_back_pressure(parse_resource_throttling(texts[0], server), self._limit)

    def render(self, results: Mapping[str, BackPressureResult]) -> Iterable[Metric]:
        return render_back_pressure(results.values())


def cap_back_pressure(result: BackPressureResult, limit: int = DEFAULT_MAX_METERS) -> BackPressureResult:
    """The result with its cardinality cap decided: ``limit`` (resource, path) meters keep their own
    series, the highest level first; unknown resources and observers are counted as folded."""
    levels: dict[tuple[str, str], int] = {}
    for m in result.meters:
        key = (fold_enum(m.resource, RESOURCES), m.path)
        levels[key] = max(levels.get(key, 0), LEVELS[m.level])
    kept = keep_top(levels, limit, lambda key: -levels[key])
    folded = {
        "resource": unknown((m.resource for m in result.meters), RESOURCES),
        "path": len(levels) - len(kept),  # meters whose path is shown as "other"
        "observer": unknown(result.observers, OBSERVERS),
    }
    return replace(result, kept=kept, folded=folded)


def _meter_key(result: BackPressureResult, meter: ResourceMeter) -> tuple[str, str]:
    key = (fold_enum(meter.resource, RESOURCES), meter.path)
    return key if result.kept is None or key in result.kept else (key[0], OTHER)


def render_back_pressure(results: Iterable[BackPressureResult]) -> list[Metric]:
    """Metric families for the back pressure results of every server."""
    use = GaugeMetricFamily(
        "mailflow_transport_resource_use",
        "Back pressure level of a resource meter (CurrentResourceUse): 0 Low, 1 Medium (mail from outside "
        f"delayed or refused), 2 High (all new mail refused). {POLLED}",
        labels=["server", "resource", "path"],
    )
    pressure = GaugeMetricFamily(
        "mailflow_transport_resource_pressure",
        f"The measured value of a back pressure resource meter (Pressure: percent, or a count). {POLLED}",
        labels=["server", "resource", "path"],
    )
    aggregate = GaugeMetricFamily(
        "mailflow_transport_aggregate_resource_use",
        f"The Transport service's aggregate back pressure level (AggregateUse): 0 Low, 1 Medium, 2 High. {POLLED}",
        labels=["server"],
    )
    paused = GaugeMetricFamily(
        "mailflow_transport_resource_observer_paused",
        f"1 when back pressure paused this part of the Transport service (SmtpIn, Pickup...). {POLLED}",
        labels=["server", "observer"],
    )
    for r in sorted(results, key=lambda r: r.server):
        aggregate.add_metric([r.server], LEVELS[r.aggregate])
        # One series per (folded) meter, whatever the answer repeats: the highest level and pressure.
        levels: dict[tuple[str, str], int] = {}
        pressures: dict[tuple[str, str], float] = {}
        for m in r.meters:
            key = _meter_key(r, m)
            levels[key] = max(levels.get(key, 0), LEVELS[m.level])
            if m.pressure is not None:
                pressures[key] = max(pressures.get(key, m.pressure), m.pressure)
        for key, level in sorted(levels.items()):
            use.add_metric([r.server, *key], level)
        for key, value in sorted(pressures.items()):
            pressure.add_metric([r.server, *key], value)
        observers: dict[str, float] = {}
        paused_now = set(r.paused)  # a set: a tuple made this loop quadratic (44 s of a render at 100k)
        for observer in r.observers:
            name = fold_enum(observer, OBSERVERS)
            observers[name] = max(observers.get(name, 0.0), 1.0 if observer in paused_now else 0.0)
        for name, value in sorted(observers.items()):
            paused.add_metric([r.server, name], value)
    return [use, pressure, aggregate, paused]
