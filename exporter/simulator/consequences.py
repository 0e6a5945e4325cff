"""What the rest of the organisation sees while a server is ``down`` or under ``back_pressure``.

The consequences are a pure function of the scenario, the faults (active ones and the ones that
ended, :meth:`FaultInjector.history`) and the simulator's clock, like everything else.

**A server down** (``down`` fault; its endpoint is refused):

- *Shadow queues.* Every other server's shadow queue for it (``kind: shadow`` whose NextHopDomain is
  its FQDN) stops draining: the primary sends no discard notifications any more. MessageCount stays
  at the count it had when the server went down, plus ``rate_per_minute`` (default 0: a server that
  is off takes in no new mail, so no new shadow copies are made for it; a rate models a primary
  that still accepts mail but neither delivers it nor answers heartbeats). Source: "Shadow
  redundancy in Exchange Server" (OfficeDocs-Exchange ``shadow-redundancy.md``): the shadow server
  heartbeats the primary every ShadowHeartbeatFrequency (2 min) and, when it cannot reach it for
  ShadowResubmitTimeSpan (3 h), "promotes itself as the primary server [...] and transmits the
  messages to the next hop". The decompiled transport (exchange_diff, 15.0.1497, reference only)
  has the same rule: a resubmit after ``ceil(ShadowResubmitTimeSpan / ShadowHeartbeatFrequency)``
  failed heartbeats, which empties the queue, unless resubmission is *suppressed* (the shadow
  server's own transport is not Active), when the queue reports Status ``Retry`` instead of
  ``Ready`` and keeps its messages; a shadow queue's LastError is always empty and it reports no
  rates (NewShadowQueueInfo sets none). Not modelled: the resubmitted messages passing through the
  shadow server's own Submission and delivery queues, the primary's queue database ID change
  (which triggers an earlier resubmit), event log entries.
- *Database copies.* With a DAG (a ``databases`` entry with several copies) the active copy on the
  down server fails over to the next copy by activation preference that is Healthy and not
  activation-suspended, which reports Mounted (Active Manager's best-copy selection also weighs
  copy and replay queues and content index state: not modelled; the failover is immediate). Every
  copy on the down server reports ``ServiceDown`` with the replication service RPC error as
  ErrorMessage (and, inferred, none of the figures the RPC would have returned), as
  Get-MailboxDatabaseCopyStatus does when the replication service of a copy's
  server cannot be reached (status per "Monitor database availability groups"; the cmdlet turns
  a ReplayServiceDownException into ServiceDown entries in exchange_diff; the message text is the
  one quoted in Microsoft Q&A 1189054). When the server comes back, the copies return to the
  scenario's state at once (a real DAG keeps the database on the other copy until it is moved
  back or PreferenceMoveFrequency rebalances it: not modelled).

**Back pressure** (``back_pressure`` fault, level Medium or High on one resource meter):

- the server's Submission queue grows by ``rate_per_minute`` (default 30) from the count it had
  when the pressure began; IncomingRate and Velocity follow. The rate is the scenario's choice
  (inferred: the docs describe what back pressure rejects, not how fast the queue grows);
- ``Get-ExchangeDiagnosticInfo -Process EdgeTransport -Component ResourceThrottling`` reports the
  resource's level (``diagnostics.py``); Get-ServerComponentState is unchanged (back pressure is
  not a component state);
- message tracking: the actions are from "Understanding back pressure" (OfficeDocs-Exchange
  ``back-pressure.md``). At Medium, messages from outside the organisation (non-Exchange servers)
  are rejected at MAIL FROM, so they never get a RECEIVE (for UsedVersionBuckets only once the
  pressure lasted its history depth, 10 polls of 2 s; SystemMemory only dehydrates messages). At
  High, messages from other Exchange servers are rejected too, and submissions from mailbox
  databases are refused: the Mailbox Transport Submission service logs SUBMITDEFER ("The message
  transmission from the Mailbox Transport Submission service to the Transport service was
  deferred", message-tracking.md) where it would have logged SUBMIT, and the message goes no
  further. Which fields a SUBMITDEFER event carries is inferred (those of the SUBMIT it replaces);
  messages accepted before the pressure began finish normally; messages rejected or deferred are
  not retried after it ends (a sender's retry would be a new message: not modelled).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from exporter.simulator.clocks import clock_segments
from exporter.simulator.faults import FaultKind
from exporter.simulator.objects_health import component_states
from exporter.simulator.orgconfig import DatabaseSpec
from exporter.simulator.scenario import QueueSpec, ServerSpec
from exporter.simulator.timeline import QueueSnapshot, Timeline, pattern_value, snapshot_queue
from exporter.simulator.tracking import TrackingEvent, TrackingLog
from exporter.simulator.tracking_wire import SelectableEvent, event_clixml

if TYPE_CHECKING:
    from exporter.simulator.cmdlets import Context

__all__ = [
    "DEFAULT_SUBMISSION_PER_MINUTE",
    "Period",
    "down_servers",
    "effective_databases",
    "periods",
    "queue_snapshots",
    "service_down_message",
    "tracking_sources",
]

DEFAULT_SUBMISSION_PER_MINUTE = 30.0
#: Seconds a Medium pressure lasts before non-Exchange senders are rejected (history depth x 2 s
#: ResourceMeteringInterval, back-pressure.md); 0: at once. SystemMemory never rejects.
_MEDIUM_REJECT_AFTER = {"UsedVersionBuckets": 20.0}
_NEVER_REJECTS = frozenset({"SystemMemory"})


@dataclasses.dataclass(frozen=True)
class Period:
    """A time a fault held on a server (``until`` None: it still does), on the simulator's clock."""

    server: str
    since: float
    until: float | None
    level: str | None = None
    resource: str | None = None
    rate_per_minute: float | None = None

    def covers(self, t: float) -> bool:
        """Whether instant ``t`` lies in the period."""
        return self.since <= t and (self.until is None or t < self.until)


def periods(ctx: Context, server: str, kind: FaultKind) -> list[Period]:
    """Every period of ``kind`` on ``server``: the ended ones first, then the active one."""
    if ctx.faults is None:
        return []
    out = [
        Period(f.server, f.since, max(f.since, until), f.level, f.resource, f.rate_per_minute)
        for f, until in ctx.faults.history(server)
        if f.kind is kind and f.cmdlet is None
    ]
    active = ctx.faults.find(server, kind)
    if active is not None:
        out.append(Period(active.server, active.since, None, active.level, active.resource, active.rate_per_minute))
    return out


def _active(ctx: Context, server: str, kind: FaultKind) -> Period | None:
    fault = None if ctx.faults is None else ctx.faults.find(server, kind)
    if fault is None:
        return None
    return Period(fault.server, fault.since, None, fault.level, fault.resource, fault.rate_per_minute)


def down_servers(ctx: Context) -> dict[str, Period]:
    """The servers that are down now (upper-case name -> period)."""
    if ctx.faults is None:
        return {}
    return {
        f.server.upper(): Period(f.server, f.since, None, rate_per_minute=f.rate_per_minute)
        for f in ctx.faults.active()
        if f.kind is FaultKind.DOWN and f.cmdlet is None
    }


# ---------------------------------------------------------------------------------------------
# Get-Queue
# ---------------------------------------------------------------------------------------------


def queue_snapshots(ctx: Context, target: ServerSpec, timeline: Timeline) -> list[QueueSnapshot]:
    """``target``'s queues at ``timeline``'s time, with the consequences of the faults applied."""
    snapshots = [snapshot_queue(target, spec, timeline) for spec in target.queues]
    down = down_servers(ctx)
    pressure = _active(ctx, target.name, FaultKind.BACK_PRESSURE)
    if not down and pressure is None:
        return snapshots
    by_fqdn = {s.fqdn.upper(): s.name.upper() for s in ctx.scenario.servers}
    out: list[QueueSnapshot] = []
    for spec, snap in zip(target.queues, snapshots, strict=True):
        primary = by_fqdn.get(spec.next_hop_domain.upper()) if spec.kind == "shadow" else None
        if primary is not None and primary in down:
            snap = _shadow_while_down(ctx, target, spec, snap, down[primary], timeline)
        elif spec.kind == "submission" and pressure is not None:
            snap = _submission_under_pressure(spec, snap, pressure, timeline)
        out.append(snap)
    return out


def _count_at(spec: QueueSpec, timeline: Timeline, t: float) -> float:
    """The queue's pattern count at instant ``t`` of the organisation clock."""
    origin = timeline.origin
    return max(0.0, pattern_value(spec.pattern, spec.message_count, t - origin.start))


def _transport_active(server: ServerSpec) -> bool:
    """Whether ``server``'s HubTransport component is Active (ServerWideOffline included)."""
    return next(c.state for c in component_states(server) if c.component == "HubTransport") == "Active"


def _shadow_while_down(
    ctx: Context, target: ServerSpec, spec: QueueSpec, snap: QueueSnapshot, down: Period, timeline: Timeline
) -> QueueSnapshot:
    redundancy = ctx.scenario.shadow_redundancy
    heartbeat = redundancy.heartbeat_frequency_seconds
    resubmit_after = math.ceil(redundancy.resubmit_seconds / heartbeat) * heartbeat
    elapsed = max(0.0, timeline.origin.now() - down.since)
    rate = (down.rate_per_minute or 0.0) / 60.0
    held = _count_at(spec, timeline, down.since)
    status = "Ready"
    if elapsed < resubmit_after:
        count = held + rate * elapsed
    elif not _transport_active(target):
        count, status = held + rate * elapsed, "Retry"  # resubmission suppressed
    else:
        count = rate * ((elapsed - resubmit_after) % resubmit_after)  # resubmitted; new copies since
    total = max(0, round(count))
    return dataclasses.replace(
        snap,
        status=status,
        message_count=total,
        messages_per_priority=(0, total, 0, 0),
        last_error="",
        retry_count=0,
        first_retry_time=None,
        last_retry_time=None,
        next_retry_time=None,
        incoming_rate=0.0,
        outgoing_rate=0.0,
        velocity=0.0,
    )


def _submission_under_pressure(
    spec: QueueSpec, snap: QueueSnapshot, pressure: Period, timeline: Timeline
) -> QueueSnapshot:
    rate = (DEFAULT_SUBMISSION_PER_MINUTE if pressure.rate_per_minute is None else pressure.rate_per_minute) / 60.0
    elapsed = max(0.0, timeline.origin.now() - pressure.since)
    total = max(0, round(_count_at(spec, timeline, pressure.since) + rate * elapsed))
    incoming = round(snap.outgoing_rate + rate, 2)
    return dataclasses.replace(
        snap,
        message_count=total,
        messages_per_priority=(0, total, 0, 0),
        incoming_rate=incoming,
        velocity=round(snap.outgoing_rate - incoming, 2),
    )


# ---------------------------------------------------------------------------------------------
# Get-MailboxDatabaseCopyStatus
# ---------------------------------------------------------------------------------------------


def service_down_message(fqdn: str) -> str:
    """The ErrorMessage of a copy whose server's replication service cannot be reached (Q&A 1189054)."""
    return (
        "A server-side administrative operation has failed. The Microsoft Exchange Replication service may "
        f"not be running on server {fqdn}. Specific RPC error message: Error 0x6ba (The RPC server is "
        f"unavailable) from RpccGetCopyStatusEx4 [Server: {fqdn}]"
    )


def effective_databases(ctx: Context) -> tuple[DatabaseSpec, ...]:
    """The databases as the DAG reports them now: copies on down servers ServiceDown, failed over."""
    databases = ctx.scenario.effective_databases
    down = down_servers(ctx)
    if not down:
        return databases
    return tuple(_fail_over(db, set(down)) for db in databases)


def _fail_over(db: DatabaseSpec, down: set[str]) -> DatabaseSpec:
    if not any(c.server.upper() in down for c in db.copies):
        return db
    active = db.active_server
    copies = list(db.copies)
    if active.upper() in down:
        ranked = sorted(copies, key=lambda c: c.activation_preference)
        healthy = [c for c in ranked if c.status == "Healthy" and not c.activation_suspended]
        target = next((c for c in healthy if c.server.upper() not in down), None)
        if target is not None:
            copies = [dataclasses.replace(c, status="Mounted") if c is target else c for c in copies]
    copies = [dataclasses.replace(c, status="ServiceDown") if c.server.upper() in down else c for c in copies]
    return dataclasses.replace(db, copies=tuple(copies))


# ---------------------------------------------------------------------------------------------
# Get-MessageTrackingLog
# ---------------------------------------------------------------------------------------------


class _DeferredEvent(SelectableEvent):
    """An event the back pressure changed (SUBMIT -> SUBMITDEFER): written afresh, never from the
    log's cache (which holds the unchanged event under the same key)."""

    __slots__ = ("culture",)

    def __init__(self, event: TrackingEvent, log: TrackingLog) -> None:
        super().__init__(event, log)
        self.culture = log.scenario.organisation.culture

    def clixml(self) -> bytes:
        """The event's CLIXML at remoting depth."""
        return event_clixml(self.event, self.tz, self.culture)


def _origin_of(log: TrackingLog, event: TrackingEvent) -> tuple[str, float]:
    """Where the event's message came from (internet, exchange or mailbox) and its arrival (ms)."""
    message = log.message(event.origin or event.server, event.message_index)
    first = message.events[0]
    if first.event_id == "NOTIFYMAPI":
        return "mailbox", message.arrival_ms
    if ("FromEntity", "Internet") in first.event_data:
        return "internet", message.arrival_ms
    return "exchange", message.arrival_ms


def _rejected(origin: str, period: Period, arrival: float) -> bool:
    resource = period.resource or "UsedVersionBuckets"
    if resource in _NEVER_REJECTS:
        return False
    if period.level == "High":
        return origin in ("internet", "exchange")
    return origin == "internet" and arrival >= period.since + _MEDIUM_REJECT_AFTER.get(resource, 0.0)


def tracking_sources(
    ctx: Context,
    target: ServerSpec,
    log: TrackingLog,
    window: tuple[float | None, float | None],
    predicate: Callable[[TrackingEvent], bool] | None,
    limit: int | None,
) -> list[SelectableEvent | _DeferredEvent]:
    """``target``'s events stamped in ``window`` (its clock: see ``clocks.py``) with back pressure's
    rejections and deferrals applied.

    ``log`` is generated on the organisation's clock. Each stretch of time with one clock skew of the
    target (one, unless its clock was stepped) is read from ``log`` and stamped with that skew; the
    stretches are merged in stamp order. Returns the output sources in order (at most ``limit + 1``,
    like ``TrackingLog.events``).
    """
    start, end = window
    found = periods(ctx, target.name, FaultKind.BACK_PRESSURE)
    pressure = [p for p in found if (p.resource or "") not in _NEVER_REJECTS]

    def altered(event: TrackingEvent) -> TrackingEvent | None:
        """The event as back pressure leaves it, or None when it never happened."""
        origin, arrival_ms = _origin_of(log, event)
        arrival = arrival_ms / 1000.0  # the log runs on the organisation clock, as the faults do
        period = next((p for p in pressure if p.covers(arrival)), None)
        if period is None:
            return event
        if origin != "mailbox":
            return None if _rejected(origin, period, arrival) else event
        if period.level != "High":
            return event
        message = log.message(event.origin or event.server, event.message_index)
        submit = next((e.seq for e in message.events if e.event_id == "SUBMIT"), None)
        if submit is None or event.seq < submit:
            return event
        return event._replace(event_id="SUBMITDEFER") if event.seq == submit else None

    def keep(event: TrackingEvent) -> bool:
        changed = altered(event)
        return changed is not None and (predicate is None or predicate(changed))

    stamped: list[tuple[TrackingEvent, bool]] = []  # (event as output, changed by back pressure)
    for since, until, skew in clock_segments(ctx.timeline.origin, target):
        lo = since if start is None else max(since, start - skew)
        hi = until if end is None else min(until, end - skew)
        if hi <= lo:
            continue
        shift = round(skew * 1000)
        chosen = log.events(
            target.name,
            None if math.isinf(lo) else lo,
            None if math.isinf(hi) else hi,
            predicate=keep if pressure else predicate,
            limit=limit,
        )
        for event in chosen:
            changed = altered(event) if pressure else event
            assert changed is not None
            deferred = changed is not event
            if shift:
                changed = changed._replace(ts_ms=changed.ts_ms + shift)
            stamped.append((changed, deferred))
    if len(stamped) > 1:
        stamped.sort(key=lambda pair: (pair[0].ts_ms, pair[0].message_index, pair[0].seq))
    if limit is not None:
        del stamped[limit + 1 :]
    return [_DeferredEvent(e, log) if deferred else SelectableEvent(e, log) for e, deferred in stamped]
