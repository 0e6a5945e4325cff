"""Queue collector: ``Get-Queue -Server X -ResultSize Unlimited`` on every transport server.

Parse: each pypsrp object is flattened and turned into a ``QueueInfo``. Aggregate: queues are
grouped by labels that never include the ephemeral queue row number, every one bounded
(``exporter.cardinality``): DeliveryType and NextHopCategory outside Exchange's enums are
``other``; per server and queue kind, the ``max_next_hop_domains`` next hops (delivery type,
category and domain) with the most messages keep their own series and the rest are summed under
``next_hop_domain="other"`` (shadow queues too: their next hop is a primary server's FQDN); per
server, the ``max_last_errors`` LastError (SMTP code, enhanced code) pairs with the most messages
keep their codes and the rest show ``other``. Render: metric families.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.cardinality import OTHER, fold_enum, keep_top, unknown
from exporter.errors import ParseError
from exporter.exchange import wire
from exporter.exchange.bounds import result_size
from exporter.exchange.clixml import as_float, as_int, flatten, parse_datetime, to_python
from exporter.exchange.cmdlet_collector import ServerCollector
from exporter.exchange.lasterror import SmtpError, parse_smtp_error
from exporter.exchange.session import ExchangeSession
from exporter.exchange.targets import ExchangeTargets

log = logging.getLogger(__name__)
QUEUE_STATUSES = ("Active", "Connecting", "Ready", "Retry", "Suspended", "None")
QUEUE_KINDS = ("delivery", "submission", "poison", "unreachable", "shadow")
#: The DeliveryType enum (reference §1.3, [S4]) plus the two names only the docs list.
DELIVERY_TYPES = frozenset(
    "Undefined DnsConnectorDelivery MapiDelivery NonSmtpGatewayDelivery SmartHostConnectorDelivery "
    "SmtpRelayToRemoteAdSite SmtpRelayToTiRg SmtpRelayWithinAdSite SmtpRelayWithinAdSiteToEdge Unreachable "
    "ShadowRedundancy Heartbeat DeliveryAgent SmtpDeliveryToMailbox SmtpRelayToDag "
    "SmtpRelayToMailboxDeliveryGroup SmtpRelayToConnectorSourceServers SmtpRelayToServers "
    "SmtpDeliveryToExo SmtpRelayToRemoteForest".split()
)
NEXT_HOP_CATEGORIES = frozenset({"Internal", "External"})
DEFAULT_MAX_LAST_ERRORS = 50
LABELS = ("server", "queue_kind", "delivery_type", "next_hop_category", "next_hop_domain")
POLLED = "Polled from Get-Queue on a schedule, not at scrape time."


@dataclass(frozen=True)
class QueueInfo:
    """One row of Get-Queue, typed."""

    identity: str
    server: str
    kind: str
    delivery_type: str
    next_hop_domain: str
    next_hop_category: str
    status: str
    message_count: int
    deferred_count: int
    incoming_rate: float
    outgoing_rate: float
    retry_count: int
    next_retry_time: datetime | None
    last_error: SmtpError | None


def queue_kind(identity: str, delivery_type: str) -> str:
    """Derive the kind from the identity (``EX01\\Submission``, ``EX01\\Shadow\\12``, ``EX01\\3``)."""
    parts = [p for p in identity.split("\\") if p]
    tail = [p.lower() for p in parts[1:]] if len(parts) > 1 else [p.lower() for p in parts]
    if (tail and tail[0] == "shadow") or delivery_type == "ShadowRedundancy":
        return "shadow"
    if tail and tail[-1] in ("submission", "poison", "unreachable"):
        return tail[-1]
    if delivery_type == "Unreachable":
        return "unreachable"
    return "delivery"


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def parse_queue(obj: Any, server: str) -> QueueInfo:
    """One Get-Queue output object to a QueueInfo; raises ParseError when it is not a queue."""
    return queue_from(flatten(obj), server)


#: The Get-Queue properties a QueueInfo is made of.
QUEUE_PROPERTIES = frozenset(
    "Identity QueueIdentity DeliveryType Status NextHopDomain NextHopCategory MessageCount DeferredMessageCount "
    "IncomingRate OutgoingRate RetryCount NextRetryTime LastError".split()
)


def decode_queue(xml: str, server: str) -> QueueInfo:
    """The collector's output decoder: one Get-Queue output message's CLIXML straight to a QueueInfo.

    Reads only :data:`QUEUE_PROPERTIES`, each as the value pypsrp and ``flatten`` would give it, and
    builds the QueueInfo as :func:`parse_queue` does; on the wire (remoting depth 1) every one is a
    primitive. Anything else (an object, a reference) raises ValueError and the message is decoded
    the generic way. Why: pypsrp's objects for all 30 properties of a queue, then ``flatten``, cost
    1.6 times this parse (docs/performance.md, "Queues at scale").
    """
    root = wire.top_object(xml)
    props: dict[str, Any] = {}
    for tag in ("MS", "Props"):  # adapted properties (<Props>) win over extended ones, as in flatten
        container = root.find(tag)
        if container is not None:
            for child in container:
                name = child.get("N")
                if name in QUEUE_PROPERTIES:
                    props[name] = to_python(wire.primitive_value(child))
    return queue_from(props, server)


def _decoded_or_parsed(obj: Any, server: str) -> QueueInfo:
    """A QueueInfo from decode_queue as it is; pypsrp's object for a message it left alone, parsed."""
    return obj if isinstance(obj, QueueInfo) else parse_queue(obj, server)


def queue_from(props: Mapping[str, Any], server: str) -> QueueInfo:
    """A QueueInfo from a Get-Queue object's plain property values; ParseError without an Identity."""
    identity = _text(props.get("Identity") or props.get("QueueIdentity"))
    if not identity:
        raise ParseError("a Get-Queue object without Identity")
    delivery_type = _text(props.get("DeliveryType")) or "Undefined"
    status = _text(props.get("Status")) or "None"
    return QueueInfo(
        identity=identity,
        server=server,
        kind=queue_kind(identity, delivery_type),
        delivery_type=delivery_type,
        next_hop_domain=_text(props.get("NextHopDomain")),
        next_hop_category=_text(props.get("NextHopCategory")) or "Internal",
        status=status if status in QUEUE_STATUSES else "None",
        message_count=as_int(props.get("MessageCount")),
        deferred_count=as_int(props.get("DeferredMessageCount")),
        incoming_rate=as_float(props.get("IncomingRate")),
        outgoing_rate=as_float(props.get("OutgoingRate")),
        retry_count=as_int(props.get("RetryCount")),
        next_retry_time=parse_datetime(props.get("NextRetryTime")),
        last_error=parse_smtp_error(_text(props.get("LastError")) or None),
    )


@dataclass
class QueueGroup:
    """Queues that share one label set (normally exactly one queue)."""

    queues: int = 0
    messages: int = 0
    deferred: int = 0
    incoming_rate: float = 0.0
    outgoing_rate: float = 0.0
    retry_count: int = 0
    next_retry: float | None = None
    statuses: dict[str, int] = field(default_factory=dict)
    errors: dict[tuple[str, str, str], int] = field(default_factory=dict)
    error_messages: dict[str, int] = field(default_factory=dict)  # LastError category -> messages


@dataclass(frozen=True)
class QueueResult:
    """Everything the queue collector learnt from one server in one poll."""

    server: str
    queues: tuple[QueueInfo, ...]
    groups: Mapping[tuple[str, ...], QueueGroup]
    folded_domains: int  # distinct (queue kind, next-hop domain) pairs folded into "other"
    folded: Mapping[str, int] = field(default_factory=dict)  # label -> distinct values shown as "other"
    # A shadow queue's NextHopDomain is the FQDN of the server holding the primary copies: which polled
    # server that is, by name (the join of the shadow alert with that server's poll health). Only the
    # shadow next hops that keep their own series (the max_next_hop_domains cap): the label stays bounded.
    shadow_primaries: Mapping[str, str] = field(default_factory=dict)


def primary_server(next_hop_domain: str, servers: Mapping[str, str]) -> str | None:
    """The polled server a shadow queue's NextHopDomain (the primary server's FQDN) names, from
    ``{name: host}``: by name, host or the FQDN's first label, case-insensitive; None if none."""
    fqdn = next_hop_domain.strip().rstrip(".").lower()
    first = fqdn.split(".")[0]
    for name, host in sorted(servers.items()):
        if fqdn in (name.lower(), host.lower()) or first == name.lower():
            return name
    return None


def with_shadow_primaries(result: QueueResult, servers: Mapping[str, str]) -> QueueResult:
    """The result with the polled server (from ``{name: host}``) each shadow next hop names. Only the
    shadow next hops that keep their own series (never "other"): at most the cap per server."""
    shadows = {key[4] for key in result.groups if key[1] == "shadow" and key[4] not in ("", OTHER)}
    found = {d: n for d in shadows if (n := primary_server(d, servers)) is not None}
    return replace(result, shadow_primaries=found)


def _group_domain(queue: QueueInfo) -> str:
    if queue.kind != "delivery":
        return queue.next_hop_domain  # Exchange's own names (Submission, a shadow primary's FQDN)
    domain = queue.next_hop_domain.lower()
    return domain or "unknown"


def aggregate(
    server: str, queues: Sequence[QueueInfo], max_domains: int, max_last_errors: int = DEFAULT_MAX_LAST_ERRORS
) -> QueueResult:
    """Group queues by bounded labels (the cardinality rules in the module docstring)."""
    hops: dict[tuple[str, str, str, str], list[int]] = {}  # (kind, type, category, domain) -> [messages, queues]
    labelled: list[tuple[QueueInfo, tuple[str, str, str, str]]] = []
    for q in queues:
        hop = (
            q.kind,
            fold_enum(q.delivery_type, DELIVERY_TYPES),
            fold_enum(q.next_hop_category, NEXT_HOP_CATEGORIES),
            _group_domain(q),
        )
        labelled.append((q, hop))
        weight = hops.setdefault(hop, [0, 0])
        weight[0] += q.message_count
        weight[1] += 1
    kept_hops: set[tuple[str, str, str, str]] = set()
    for kind in {hop[0] for hop in hops}:
        kept_hops |= keep_top((h for h in hops if h[0] == kind), max_domains, lambda h: (-hops[h][0], -hops[h][1]))
    groups: dict[tuple[str, ...], QueueGroup] = {}
    errors: dict[tuple[tuple[str, ...], str, str, str], list[int]] = {}  # (group, codes, category) -> weight
    for q, hop in labelled:
        kind, delivery_type, category, domain = hop if hop in kept_hops else (*hop[:3], OTHER)
        key = (server, kind, delivery_type, category, domain)
        group = groups.setdefault(key, QueueGroup())
        group.queues += 1
        group.messages += q.message_count
        group.deferred += q.deferred_count
        group.incoming_rate += q.incoming_rate
        group.outgoing_rate += q.outgoing_rate
        group.retry_count = max(group.retry_count, q.retry_count)
        group.statuses[q.status] = group.statuses.get(q.status, 0) + 1
        if q.next_retry_time is not None:
            ts = q.next_retry_time.timestamp()
            group.next_retry = ts if group.next_retry is None else min(group.next_retry, ts)
        if q.last_error is not None:
            err = q.last_error
            group.error_messages[err.category] = group.error_messages.get(err.category, 0) + q.message_count
            weight = errors.setdefault((key, err.smtp_code, err.enhanced_code, err.category), [0, 0])
            weight[0] += q.message_count
            weight[1] += 1
    # The LastError series with the most messages keep their codes; the rest show smtp_code and
    # enhanced_code "other" (their category stays: it is a closed set, and the alerts need it).
    kept_errors = keep_top(errors, max_last_errors, lambda e: (-errors[e][0], -errors[e][1]))
    for series, (_, count) in errors.items():
        group_key, code, enhanced, category = series
        err_key = (code, enhanced, category) if series in kept_errors else (OTHER, OTHER, category)
        group = groups[group_key]
        group.errors[err_key] = group.errors.get(err_key, 0) + count
    folded_hops = {(h[0], h[3]) for h in hops if h not in kept_hops}
    folded_codes = {e[1:3] for e in errors if e not in kept_errors} - {e[1:3] for e in kept_errors}
    return QueueResult(
        server=server,
        queues=tuple(queues),
        groups=groups,
        folded_domains=len(folded_hops),
        folded={
            "next_hop_domain": len(folded_hops),
            "delivery_type": unknown((q.delivery_type for q in queues), DELIVERY_TYPES),
            "next_hop_category": unknown((q.next_hop_category for q in queues), NEXT_HOP_CATEGORIES),
            "enhanced_code": len(folded_codes),
        },
    )


def parse_queues(
    objects: Iterable[Any], server: str, max_domains: int, max_last_errors: int = DEFAULT_MAX_LAST_ERRORS
) -> QueueResult:
    """Parse and aggregate one server's Get-Queue output."""
    return aggregate(server, [parse_queue(o, server) for o in objects], max_domains, max_last_errors)


class QueueCollector(ServerCollector):
    """Polls Get-Queue per transport server."""

    name = "queues"
    needs_hub_transport = True  # Get-Queue asks the Transport service

    def __init__(
        self,
        targets: ExchangeTargets,
        interval: float,
        max_domains: int,
        result_size: Any,
        max_last_errors: int = DEFAULT_MAX_LAST_ERRORS,
    ) -> None:
        super().__init__(targets, interval)
        self._max_domains = max_domains
        self._result_size = result_size
        self._max_last_errors = max_last_errors

    def collect(self, session: ExchangeSession, server: str) -> QueueResult:
        # Warnings (e.g. ResultSize truncation: the data is partial) are logged by fetch(). At most
        # max_objects: more would fail the call (too_large) rather than be truncated by Exchange.
        params = {"Server": server, "ResultSize": result_size(self._result_size, session.server.max_objects)}
        decoder = functools.partial(decode_queue, server=server)
        queues = self.fetch(session, server, "Get-Queue", params, _decoded_or_parsed, decoder=decoder)
        result = aggregate(server, queues, self._max_domains, self._max_last_errors)
        if not any(key[1] == "shadow" for key in result.groups):
            return result
        return with_shadow_primaries(result, {n: self._targets.server(n).host for n in self._targets.names()})

    def render(self, results: Mapping[str, QueueResult]) -> Iterable[Metric]:
        return render_queues(results.values())


def render_queues(results: Iterable[QueueResult]) -> list[Metric]:
    """Metric families for the queue results of every server."""
    labels = list(LABELS)
    messages = GaugeMetricFamily(
        "mailflow_queue_messages", f"Messages in the queue (MessageCount). {POLLED}", labels=labels
    )
    deferred = GaugeMetricFamily(
        "mailflow_queue_deferred_messages",
        f"Messages deferred after transient errors (DeferredMessageCount). {POLLED}",
        labels=labels,
    )
    incoming = GaugeMetricFamily(
        "mailflow_queue_incoming_rate",
        f"Messages per second entering the queue, 1-minute average. {POLLED}",
        labels=labels,
    )
    outgoing = GaugeMetricFamily(
        "mailflow_queue_outgoing_rate",
        f"Messages per second leaving the queue, 1-minute average. {POLLED}",
        labels=labels,
    )
    retry = GaugeMetricFamily(
        "mailflow_queue_retries",
        f"Connection retries since the queue entered Retry (RetryCount). {POLLED}",
        labels=labels,
    )
    next_retry = GaugeMetricFamily(
        "mailflow_queue_next_retry_timestamp_seconds",
        f"When the queue next retries (NextRetryTime), unix time. {POLLED}",
        labels=labels,
    )
    status = GaugeMetricFamily(
        "mailflow_queue_status",
        "Queues with these labels in this state (Active, Connecting, Ready, Retry, Suspended, None); only "
        f"states some queue is in: a single queue has one series, 1 for its current state. {POLLED}",
        labels=[*labels, "status"],
    )
    last_error = GaugeMetricFamily(
        "mailflow_queue_last_error_info",
        f"Queues whose LastError has this SMTP code, enhanced code and category. {POLLED}",
        labels=[*labels, "smtp_code", "enhanced_code", "category"],
    )
    shadow_primary = GaugeMetricFamily(
        "mailflow_queue_shadow_primary_info",
        "1 for each shadow redundancy queue whose next hop (the FQDN of the server holding the primary "
        f"copies) is a polled server, named in primary. {POLLED}",
        labels=["server", "next_hop_domain", "primary"],
    )
    # Messages per LastError category, exact even when queues of several categories fold into one
    # label set: the alert rules scale severity by it (exporter/triage/severity.py).
    error_messages = GaugeMetricFamily(
        "mailflow_queue_last_error_messages",
        f"Messages in the queues whose LastError has this category. {POLLED}",
        labels=[*labels, "category"],
    )
    folded = GaugeMetricFamily(
        "mailflow_queue_next_hop_domains_folded",
        'Distinct next-hop domains (per queue kind) folded into next_hop_domain="other" by the cardinality cap '
        f"(collectors.queues.max_next_hop_domains). {POLLED}",
        labels=["server"],
    )
    for result in sorted(results, key=lambda r: r.server):
        folded.add_metric([result.server], result.folded_domains)
        for domain, primary in sorted(result.shadow_primaries.items()):
            shadow_primary.add_metric([result.server, domain, primary], 1.0)
        for key in sorted(result.groups):
            g = result.groups[key]
            values = list(key)
            messages.add_metric(values, g.messages)
            deferred.add_metric(values, g.deferred)
            incoming.add_metric(values, g.incoming_rate)
            outgoing.add_metric(values, g.outgoing_rate)
            retry.add_metric(values, g.retry_count)
            if g.next_retry is not None:
                next_retry.add_metric(values, g.next_retry)
            for state in QUEUE_STATUSES:
                if g.statuses.get(state):  # only the states some queue is in: one series for a single queue
                    status.add_metric([*values, state], g.statuses[state])
            for (code, enhanced, category), count in sorted(g.errors.items()):
                last_error.add_metric([*values, code, enhanced, category], count)
            for category, count in sorted(g.error_messages.items()):
                error_messages.add_metric([*values, category], count)
    return [
        messages,
        deferred,
        incoming,
        outgoing,
        retry,
        next_retry,
        status,
        last_error,
        error_messages,
        folded,
        shadow_primary,
    ]
