"""Message tracking collector: incremental ``Get-MessageTrackingLog`` per transport server.

Each poll asks for ``[watermark - overlap, now)`` **in the server's clock**: Exchange stamps the log
with its own Windows time, so a server whose clock is behind the exporter's has not logged yet what
the exporter's "now" would ask for (3 minutes behind lost most events, beyond the overlap). The
server's clock is read for free from the ``Date`` header of its answers (``server_clock``): the
window ends at our clock plus that skew, and the watermark never claims a time the server had not
reached when it answered. A clock stepped back (w32time correcting a fast clock) makes new events
carry stamps the log already holds: the next window starts that much earlier, and the dedupe keys
are kept ``max_clock_step`` beyond the overlap so that re-read events are not counted twice. Events
already counted (same server, internal message id, event id and timestamp) are skipped, so
overlapping windows never double count. The watermark (and the skew it was set with) survives
restarts in a small JSON state file (``tracking_state``: read strictly, a malformed file is moved
aside, writes are atomic). A watermark ahead of the server's clock by more than a step back the
collector follows (a state file from a clock a day ahead, or a window asked by a clock that jumped,
when the server's own clock could not bound it) would count nothing until the server's clock reached
it: it is repaired (logged, and counted in ``mailflow_tracking_watermark_repairs_total``), the count
resuming from the newest event this process counted or, with none, as on a first start. From the
events: counters by event id and source, failures by enhanced status code and category, a delivery
latency histogram (MessageLatency when Exchange provides it, else RECEIVE paired with the first
DELIVER/SEND of the same message id on the same server), and the number of messages received more
than ``stuck_after`` ago with no terminal event, judged across the polled servers by message id in
the exporter's time (``tracking_trail``: a message handed to another server's Transport service is
followed there; one whose continuation no polled server shows is counted as unfollowed, not stuck).
Senders, recipients, subjects and message ids are used only as in-memory pairing keys, never as
labels; that memory is bounded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.cardinality import OTHER, StickyCap
from exporter.errors import CollectorError, ParseError
from exporter.exchange.bounds import REASON as TOO_LARGE
from exporter.exchange.bounds import result_size as bounded_result_size
from exporter.exchange.lasterror import parse_smtp_error
from exporter.exchange.server_clock import ServerClock
from exporter.exchange.session import ExchangeSession
from exporter.exchange.targets import ExchangeTargets

# The event record and its decoders live in tracking_events; re-exported here for existing callers.
from exporter.exchange.tracking_events import SELECT_PROPERTIES as SELECT_PROPERTIES
from exporter.exchange.tracking_events import TrackingEvent as TrackingEvent
from exporter.exchange.tracking_events import decode_event as decode_event
from exporter.exchange.tracking_events import decode_event_text as decode_event_text
from exporter.exchange.tracking_events import decode_event_xml as decode_event_xml
from exporter.exchange.tracking_events import parse_event as parse_event
from exporter.exchange.tracking_state import REPAIR_REASONS as REPAIR_REASONS
from exporter.exchange.tracking_state import STATE_VERSION as STATE_VERSION
from exporter.exchange.tracking_state import WatermarkStore as WatermarkStore
from exporter.exchange.tracking_trail import MessageTrails

log = logging.getLogger(__name__)

#: The send connector Exchange uses between its own servers (and to Mailbox Transport Delivery).
INTRA_ORG_CONNECTOR = "Intra-Organization SMTP Send Connector"
DIRECTIONS = ("inbound", "outbound", "internal", "unknown")
EVENT_IDS = frozenset(
    "AGENTINFO BADMAIL CLIENTSUBMISSION DEFER DELIVER DELIVERFAIL DROP DSN DUPLICATEDELIVER DUPLICATEEXPAND "
    "DUPLICATEREDIRECT EXPAND FAIL HADISCARD HARECEIVE HAREDIRECT HAREDIRECTFAIL INITMESSAGECREATED LOAD "
    "MODERATIONEXPIRE MODERATORAPPROVE MODERATORREJECT MODERATORSALLNDR NOTIFYMAPI NOTIFYSHADOW POISONMESSAGE "
    "PROCESS PROCESSMEETINGMESSAGE RECEIVE REDIRECT RESOLVE RESUBMIT RESUBMITDEFER RESUBMITFAIL SEND SUBMIT "
    "SUBMITDEFER SUBMITFAIL SUPPRESSED THROTTLE TRANSFER".split()
)
SOURCES = frozenset(
    "ADMIN AGENT APPROVAL BOOTLOADER DNS DSN GATEWAY MAILBOXRULE MEETINGMESSAGEPROCESSOR ORAR PICKUP "
    "POISONMESSAGE PUBLICFOLDER QUEUE REDUNDANCY RESOLVER ROUTING SAFETYNET SMTP STOREDRIVER".split()
)
RECENT_SECONDS = 900.0  # how much log time the recent flow covers (triage's inbound silence)
MAX_UNKNOWN_KEYS = 64  # (code, recipient domain) pairs kept per poll for triage
OTHER_DOMAIN = "(other)"
POLLED = "Polled from Get-MessageTrackingLog on a schedule."
# What one event may weigh on the wire, to size a page (-ResultSize) within max_response_bytes: 1.5 KB
# with the selected properties and 3.2 KB with all of them in the simulator; real events for messages
# with many recipients are larger, hence the margin (and a page is halved after a too_large answer).
EVENT_BYTES = 4096
FULL_EVENT_BYTES = 8192


def flow_direction(event: TrackingEvent) -> str | None:
    """Where a message went, for events that hand it on; None for every other event.

    * ``inbound``/``internal``: a mailbox delivery (DELIVER from STOREDRIVER) of a message from
      outside the organisation (Directionality Incoming) or from inside it (Originating);
      ``unknown`` when Exchange logged no directionality.
    * ``outbound``: a message sent over SMTP through a send connector other than the one between
      Exchange servers, i.e. to the internet, a smart host, an Edge server or a partner.

    Each message is delivered or sent out once per destination, on one server, so sums across
    servers count messages, not hops (a RECEIVE is logged on every server a message passes).
    """
    if event.event_id == "DELIVER" and event.source == "STOREDRIVER":
        direction = event.directionality.lower()
        return "inbound" if direction == "incoming" else "internal" if direction == "originating" else "unknown"
    if event.event_id == "SEND" and event.source == "SMTP":
        connector = event.connector_id.strip()
        if connector and connector.lower() != INTRA_ORG_CONNECTOR.lower():
            return "outbound"
    return None


def _domain(address: str) -> str:
    """The domain of a recipient address, lower case ("" when it has none)."""
    return address.rpartition("@")[2].strip().strip(">").lower() if "@" in address else ""


def received_from_outside(event: TrackingEvent) -> bool:
    """A RECEIVE over SMTP of a message not known to originate inside the organisation (Directionality
    Incoming, or not logged: then every SMTP arrival counts, as before Exchange logged it); logged on
    every server the message passes."""
    return event.event_id == "RECEIVE" and event.source == "SMTP" and event.directionality.lower() != "originating"


@dataclass(frozen=True)
class TrackingResult:
    """One server's cumulative tracking aggregates at the end of a poll (immutable copies)."""

    server: str
    events: Mapping[tuple[str, str], int]
    failures: Mapping[tuple[str, str], int]
    latency_buckets: tuple[int, ...]  # cumulative counts per configured bound, then +Inf
    latency_sum: float
    stuck: int
    last_event: float | None
    truncated_polls: int
    evictions: int
    skipped_seconds: float
    new_events: int  # events counted by this poll
    window_events: Mapping[tuple[str, str], int] = field(default_factory=dict)  # this poll's counts
    window_failures: Mapping[tuple[str, str], int] = field(default_factory=dict)  # this poll's failures
    # This poll's recipients rejected as unknown (category recipient_unknown), by (enhanced code,
    # recipient domain); at most MAX_UNKNOWN_KEYS keys, the rest under the domain "(other)". Triage only.
    window_unknown_recipients: Mapping[tuple[str, str], int] = field(default_factory=dict)
    window_seconds: float = 0.0  # the length of the window this poll read
    flow: Mapping[str, int] = field(default_factory=dict)  # direction -> messages handed on
    received_inbound: int = 0  # RECEIVEs over SMTP of mail from outside (a relayed message on each server)
    # The last RECENT_SECONDS of log read (several polls: one poll's new time is about one interval):
    # how much log time that was, and the flow and arrivals in it. Triage judges silence from it.
    recent_seconds: float = 0.0
    recent_flow: Mapping[str, int] = field(default_factory=dict)
    recent_received_inbound: int = 0
    # Submitted (SUBMIT) longer ago than stuck_after to a Transport service whose log no polled
    # server shows: fate unknown, not stuck.
    unfollowed: int = 0
    # The server's clock minus the exporter's when it last answered (Date header); None when unknown
    # (not answered yet, or polled through another server's session, whose clock that would be).
    clock_skew: float | None = None
    folded: Mapping[str, int] = field(default_factory=dict)  # label -> distinct values this poll counted as "other"
    watermark_repairs: Mapping[str, int] = field(default_factory=dict)  # reason -> repairs since the start


@dataclass
class _ServerState:
    """Mutable per-server state, touched only by that server's (non-overlapping) poll job."""

    watermark: datetime | None = None
    # The server's clock skew (as used: 0 within CLOCK_TOLERANCE) when the watermark was set: the
    # watermark is a time of that clock. A later, smaller skew means the clock was stepped back.
    skew: float = 0.0
    # The next window starts exactly at the watermark (no overlap) after a truncated reply: we are
    # catching up, not re-reading.
    exact_start: bool = False
    # The watermark found in the state file at start-up: the previous process counted everything
    # before it, so no window of this process starts earlier (its dedupe keys are gone).
    floor: datetime | None = None
    # Dedupe keys: (internal id, event id, UTC microseconds) -> the event's timestamp.
    seen: dict[tuple[str, str, int], datetime] = field(default_factory=dict)
    events: dict[tuple[str, str], int] = field(default_factory=dict)
    failures: dict[tuple[str, str], int] = field(default_factory=dict)
    window_unknown: dict[tuple[str, str], int] = field(default_factory=dict)  # reset by every fold
    flow: dict[str, int] = field(default_factory=dict)
    received_inbound: int = 0
    # Per poll, newest last: (watermark after it, new log seconds it read, its flow, its arrivals).
    recent: deque[tuple[datetime, float, dict[str, int], int]] = field(default_factory=deque)
    buckets: list[int] = field(default_factory=list)
    latency_sum: float = 0.0
    last_event: float | None = None
    truncated_polls: int = 0
    skipped_seconds: float = 0.0
    codes: StickyCap = field(default_factory=lambda: StickyCap(50))  # failures' enhanced_code label
    repairs: dict[str, int] = field(default_factory=dict)  # reason -> watermark repairs (REPAIR_REASONS)


@dataclass(frozen=True)
class TrackingOptions:
    """Collector tuning (see ``collectors.tracking`` in the configuration)."""

    interval: float
    overlap: float
    max_window: float
    initial_lookback: float
    stuck_after: float
    forget_after: float
    max_tracked_messages: int
    buckets: tuple[float, ...]
    result_size: int | str
    select: bool
    max_failure_codes: int = 50  # (enhanced code, category) series per server (exporter.cardinality)
    # How far back a server's clock may be stepped with the counting still exact: the dedupe keys
    # are kept this much longer than the overlap (memory: this many seconds of events per server).
    max_clock_step: float = 900.0


#: A skew this small is treated as none: the Date header has a one-second resolution and a network delay.
CLOCK_TOLERANCE = 2.0


#: A Date header this far from the exporter's clock is not a clock (a hostile or broken server; year
#: 9999 overflowed the window arithmetic): the exporter's clock is used instead.
MAX_CLOCK_SKEW = 10 * 366 * 86400.0


def finish_horizon(options: TrackingOptions) -> float:
    """Seconds a message no longer pending on a server (finished, failed, moved on) is remembered there.

    Every window starts at most ``max_window`` before the server's now, so no event any polled server
    can still report is stamped more than ``max_window`` plus a clock step back (``max_clock_step``)
    and the skew tolerance before the exporter's now; the RECEIVE of a finished message is stamped at
    most one more clock step after its finish. Older memories cannot match (docs/design-notes.md,
    "Pairing memory"); ``overlap`` is kept on top as a margin.
    """
    return options.max_window + options.overlap + 2 * (options.max_clock_step + CLOCK_TOLERANCE)


def _effective(skew: float | None) -> float:
    """The skew the collector works with: 0 when unknown, within CLOCK_TOLERANCE or beyond MAX_CLOCK_SKEW."""
    return 0.0 if skew is None or not CLOCK_TOLERANCE < abs(skew) <= MAX_CLOCK_SKEW else skew


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_EVENT_ID_NAMES = {name: name for name in EVENT_IDS}
_EPOCH_FLOOR = 86400.0  # an event stamped before 1970 must not take the dedupe horizon below datetime's range


def _utc_key(ts: datetime) -> int:
    """The same instant always gives the same (exact) key, whatever offset the server printed: its
    microseconds since 1970 (an int costs 16 bytes less than a timedelta in every dedupe key)."""
    return (ts - _EPOCH) // _MICROSECOND


def _summed(counts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in counts:
        for key, value in part.items():
            out[key] = out.get(key, 0) + value
    return out


def _bounded(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else "OTHER"


class TrackingCollector:
    """Polls Get-MessageTrackingLog incrementally per transport server."""

    name = "tracking"
    targets_from = ("discovery",)

    def __init__(
        self,
        targets: ExchangeTargets,
        options: TrackingOptions,
        watermarks: WatermarkStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._targets = targets
        self._opts = options
        self._marks = watermarks
        self._clock = clock
        self._states: dict[str, _ServerState] = {}
        self._lock = threading.Lock()
        # Pairing and stuck detection, shared by the servers' poll jobs (under trails.lock).
        self._trails = MessageTrails(options.max_tracked_messages)
        # -ResultSize per server: at most max_objects and max_response_bytes / EVENT_BYTES, halved after a
        # too_large answer (events heavier than that), doubled back after each answer that fit.
        self._pages: dict[str, int] = {}

    def interval(self) -> float:
        return self._opts.interval

    def memory_entries(self) -> dict[str, int]:
        """Per server, the entries its pairing memory and dedupe keys hold now (for sizing and tests)."""
        trails = self._trails.entries()
        with self._lock:
            seen = {server: len(state.seen) for server, state in self._states.items()}
        return {server: trails.get(server, 0) + seen.get(server, 0) for server in {*trails, *seen}}

    def targets(self) -> list[str]:
        # Get-MessageTrackingLog refuses a server without the hub Transport service or mailboxes.
        return self._targets.hub_transport_names()

    def _state(self, server: str) -> _ServerState:
        with self._lock:
            state = self._states.get(server)
            if state is None:
                mark, ties = self._marks.get(server)
                state = _ServerState(
                    watermark=mark,
                    skew=self._marks.skew(server) if mark is not None else 0.0,
                    floor=mark,
                    buckets=[0] * (len(self._opts.buckets) + 1),
                )
                state.codes = StickyCap(self._opts.max_failure_codes)
                problem = self._marks.take_problem(server)  # its saved watermark was malformed or unreadable
                if problem is not None:
                    state.repairs[problem] = state.repairs.get(problem, 0) + 1
                if mark is not None:
                    state.seen = {(*tie, _utc_key(mark)): mark for tie in ties}
                self._states[server] = state
            return state

    def window(self, server: str, now: datetime, skew: float | None = None) -> tuple[datetime, datetime, float]:
        """The query window for this poll in the server's clock (``now`` is the exporter's, ``skew`` the
        server's latest clock reading), and the seconds skipped by the outage cap."""
        state = self._state(server)
        opts = self._opts
        end = now + timedelta(seconds=_effective(skew))
        back = self._stepped_back(state, skew)
        if state.watermark is None:
            start = end - timedelta(seconds=opts.initial_lookback)
        elif state.exact_start:
            start = state.watermark - back
        else:
            start = state.watermark - timedelta(seconds=opts.overlap) - back
        if state.floor is not None and start < state.floor:
            start = state.floor
        floor = end - timedelta(seconds=opts.max_window)
        skipped = 0.0
        if start < floor:
            skipped = (floor - start).total_seconds()
            start = floor
        return start, end, skipped

    def _stepped_back(self, state: _ServerState, skew: float | None) -> timedelta:
        """How far the server's clock went back since the watermark was set (capped at max_clock_step):
        events logged since may carry stamps that far below it."""
        if state.watermark is None:
            return timedelta(0)
        seconds = max(0.0, state.skew - _effective(skew))
        return timedelta(seconds=min(seconds, self._opts.max_clock_step))

    def repair_future(
        self, server: str, now: datetime, skew: float | None, *, windows_by_exporter: bool = False
    ) -> bool:
        """Repair a watermark in the server's future; True when it was one.

        ``now`` is the exporter's time and ``skew`` a fresh reading of the server's clock (None: the
        exporter's clock stands in). A watermark (or the floor a restart set) further ahead of the
        server's now than a clock step back the collector follows (overlap + ``max_clock_step``)
        would have no window start before the server's clock reached it: nothing counted for that long.
        The count resumes from the newest event this process counted (its dedupe keys are kept, so
        nothing is counted twice and nothing since is missed) or, when it counted none, as on a first
        start (``initial_lookback``). ``windows_by_exporter``: the target's windows are asked in the
        exporter's clock (``via_seed``), ``skew`` being only the judge.
        """
        state = self._state(server)
        opts = self._opts
        server_now = now + timedelta(seconds=_effective(skew))
        allowance = timedelta(seconds=opts.overlap + opts.max_clock_step + CLOCK_TOLERANCE)
        ahead = [t for t in (state.watermark, state.floor) if t is not None and t - server_now > allowance]
        if not ahead:
            return False
        was = max(ahead)
        if state.floor is not None and state.floor - server_now > allowance:
            state.floor = None
        if state.watermark is not None and state.watermark - server_now > allowance:
            if state.last_event is None:
                state.watermark = None
            else:
                newest = datetime.fromtimestamp(state.last_event, UTC)
                # Never further back than a window can reach (an event stamped in year 1 cannot drag it).
                state.watermark = max(min(server_now, newest), server_now - timedelta(seconds=opts.max_window))
            state.exact_start = False
        state.skew = 0.0 if windows_by_exporter else _effective(skew)  # the clock the watermark is now in
        state.repairs["future"] = state.repairs.get("future", 0) + 1
        if state.watermark is None:
            self._marks.discard(server)
        else:
            self._marks.set(server, state.watermark, (), state.skew)
        log.warning(
            "tracking watermark in the future repaired server=%s watermark=%s server_now=%s ahead_seconds=%.0f "
            "clock=%s resume_from=%s",
            server,
            was.isoformat(),
            server_now.isoformat(),
            (was - server_now).total_seconds(),
            "exporter" if skew is None else "server",
            "first_start" if state.watermark is None else state.watermark.isoformat(),
        )
        return True

    @staticmethod
    def _judge(session: ExchangeSession, clock: ServerClock | None) -> float | None:
        """The clock reading a watermark in the future is judged by: the server's own; for a target
        polled through the seed's session (windows in the exporter's clock), the later of the
        exporter's and the seed's clocks. A watermark set while the exporter's clock was ahead is then
        seen once it is back; while it is behind (the seed ahead of it), or with a seed whose own clock
        is behind, nothing is repaired that the exporter's windows would only read again."""
        if clock is not None:
            return clock.skew()
        seed = session.server_clock.skew()
        return None if seed is None else max(0.0, seed)

    def _ahead(self, server: str, now: datetime, skew: float | None) -> bool:
        """The watermark is further ahead of the server's now (as estimated) than the collector follows."""
        state = self._state(server)
        server_now = now + timedelta(seconds=_effective(skew))
        limit = timedelta(seconds=self._opts.overlap + self._opts.max_clock_step + CLOCK_TOLERANCE)
        return any(t is not None and t - server_now > limit for t in (state.watermark, state.floor))

    def poll(self, target: str) -> TrackingResult:
        session = self._targets.session(target)
        # The Date header is the endpoint's clock: a target polled through another server's session
        # (discovery via_seed) would be read by that server's clock, so it is not used for it.
        clock = session.server_clock if session.server.name.upper() == target.upper() else None
        skew_before = clock.skew() if clock is not None else None
        now = datetime.fromtimestamp(self._clock(), UTC)
        start, end, skipped = self.window(target, now, skew_before)
        if end <= start or skipped or self._ahead(target, now, self._judge(session, clock)):
            # A window that ends before it starts, an outage to skip or a watermark in the future; or a
            # reading of the server's clock taken before our own clock jumped (a day ahead for a few
            # seconds left a reading a day off, and a window that asks nothing never renewed it). Ask
            # the server (its answer's Date is read), then judge by that fresh reading.
            self._query(session, target, end, end + timedelta(seconds=1), result_size=1)
            now = datetime.fromtimestamp(self._clock(), UTC)
            skew_before = clock.skew() if clock is not None else None
            self.repair_future(target, now, self._judge(session, clock), windows_by_exporter=clock is None)
            start, end, skipped = self.window(target, now, skew_before)
        if end <= start:  # our clock went back beyond the overlap: nothing new can be asked for yet
            return self.ingest(target, [], start, start, skew_before=skew_before, skew_after=skew_before)
        events, truncated = self._query(session, target, start, end)
        skew_after = clock.skew() if clock is not None else None
        first = self._state(target).watermark is None
        if first and skew_before is None and _effective(skew_after):
            # The very first window was asked before the server had told its clock: ask again in it,
            # so the first window covers the same stretch of real time on every server.
            skew_before = skew_after
            start, end, skipped = self.window(target, datetime.fromtimestamp(self._clock(), UTC), skew_before)
            events, truncated = self._query(session, target, start, end)
            skew_after = clock.skew() if clock is not None else None
        if skipped:
            log.warning("tracking window capped after an outage server=%s skipped_seconds=%.0f", target, skipped)
        return self.ingest(
            target, events, start, end, truncated, skipped, skew_before=skew_before, skew_after=skew_after
        )

    def _query(
        self,
        session: ExchangeSession,
        target: str,
        start: datetime,
        end: datetime,
        result_size: int | str | None = None,
    ) -> tuple[list[TrackingEvent], bool]:
        """One Get-MessageTrackingLog call for [start, end) of ``target``'s clock: (events, truncated).

        Without ``result_size`` the window is paged by bytes: ``-ResultSize`` is at most ``max_objects``
        and ``max_response_bytes`` / the bytes of one event, halved after an answer too large (the next
        poll asks for half as many) and doubled back after one that fitted. A given ``result_size``
        (the clock probe's 1) is asked as is and leaves the paging alone."""
        server = session.server
        paged = result_size is None
        per_event = EVENT_BYTES if self._opts.select else FULL_EVENT_BYTES
        most = min(
            bounded_result_size(self._opts.result_size, server.max_objects), server.max_response_bytes // per_event
        )
        if result_size is None:
            limit = max(1, min(most, self._pages.get(target, most)))
        else:
            limit = max(1, bounded_result_size(result_size, server.max_objects))
        params = {
            "Server": target,
            "Start": start.isoformat().replace("+00:00", "Z"),
            "End": end.isoformat().replace("+00:00", "Z"),
            "ResultSize": limit,
        }
        try:
            result = session.invoke(
                "Get-MessageTrackingLog",
                params,
                select=SELECT_PROPERTIES if self._opts.select else None,
                decoder=decode_event,
            )
        except CollectorError as exc:
            if paged and exc.reason == TOO_LARGE:  # the next poll asks for half as many (the window is paged)
                self._pages[target] = max(1, limit // 2)
            raise
        if paged:
            self._pages[target] = min(most, limit * 2)
        result.raise_for_errors(f"Get-MessageTrackingLog -Server {target}")
        truncated = any("more results available" in w.lower() for w in result.warnings) or (
            len(result.objects) >= limit  # also when the warning is localised
        )
        try:
            decoded = (o if isinstance(o, TrackingEvent) else parse_event(o) for o in result.objects if o is not None)
            return [e for e in decoded if e is not None], truncated
        except Exception as exc:
            raise ParseError(
                f"Get-MessageTrackingLog -Server {target}: unexpected output: {type(exc).__name__}"
            ) from None

    def ingest(
        self,
        server: str,
        events: Sequence[TrackingEvent],
        start: datetime,
        end: datetime,
        truncated: bool = False,
        skipped: float = 0.0,
        *,
        skew_before: float | None = None,
        skew_after: float | None = None,
    ) -> TrackingResult:
        """Fold one window's events into the server's aggregates and advance its watermark.

        ``skew_before`` is the server clock reading the window was computed with, ``skew_after`` the
        reading of its answer (None: unknown, the exporter's clock is used).
        """
        with self._trails.lock:  # other servers' trails are read and trimmed too
            return self._ingest(server, events, start, end, truncated, skipped, skew_before, skew_after)

    def _ingest(
        self,
        server: str,
        events: Sequence[TrackingEvent],
        start: datetime,
        end: datetime,
        truncated: bool,
        skipped: float,
        skew_before: float | None,
        skew_after: float | None,
    ) -> TrackingResult:
        state = self._state(server)
        opts = self._opts
        new = 0
        before, failed_before = dict(state.events), dict(state.failures)
        state.window_unknown = {}
        flow_before, inbound_before = dict(state.flow), state.received_inbound
        previous = state.watermark
        went_back = self._stepped_back(state, skew_before)  # how far this window reached back for a step
        used, answered = _effective(skew_before), _effective(skew_after if skew_after is not None else skew_before)
        # Stuck messages are judged across servers: their times are taken to the exporter's clock.
        offset = timedelta(seconds=answered)
        for event in sorted(events, key=lambda e: e.timestamp):
            # A known event id is kept as the one shared string (each decoded event brings its own copy).
            key = (event.internal_id, _EVENT_ID_NAMES.get(event.event_id, event.event_id), _utc_key(event.timestamp))
            if key in state.seen:
                continue
            state.seen[key] = event.timestamp
            new += 1
            self._count(server, state, event, offset)
        if skipped:
            # Messages received before the gap may have finished inside it: we cannot know, so stop
            # carrying them rather than report them stuck for a day.
            self._trails.drop_before(server, start - offset)
        mark = end
        if truncated and events:
            state.truncated_polls += 1
            # Continue from the last event we got (events at that instant are remembered as ties).
            mark = max(e.timestamp for e in events)
            if mark <= start:
                # A whole reply at one instant: more events share it than -ResultSize returns, and
                # Exchange cannot page. Move on past that instant rather than ask for it forever.
                mark = start + timedelta(milliseconds=1)
        stepped = went_back > timedelta(0)
        if skew_after is not None:
            # The server's clock was behind our estimate when it answered: it had not logged up to ``end``.
            mark = min(mark, end - timedelta(seconds=max(0.0, used - answered)))
            behind = state.skew - answered  # the clock went back since the watermark: seen only now
            if previous is not None and behind > went_back.total_seconds() + 1.0:
                mark = min(mark, previous - timedelta(seconds=min(behind, opts.max_clock_step)))
                stepped = True
        if previous is not None and mark < previous and not stepped:
            mark = previous  # our own clock stepped back: never re-open counted time
        if stepped:
            log.info(
                "server clock stepped back server=%s seconds=%.0f: re-reading from %s",
                server,
                max(went_back.total_seconds(), state.skew - answered),
                mark.isoformat(),
            )
        exact = truncated and bool(events)
        # Keep the keys a later window can still re-read: the next non-truncated poll goes back
        # ``overlap`` from its own watermark (which can be earlier than this one's exact start), and
        # further after a clock step back.
        # Counted from the newest event counted when that is older than the mark: a mark set in the
        # future (a window asked by a clock that jumped ahead, without the server's clock to bound it)
        # must not drop the keys a repaired watermark will re-read.
        anchor = mark
        if state.last_event is not None and state.last_event < mark.timestamp():
            anchor = datetime.fromtimestamp(max(state.last_event, _EPOCH_FLOOR), UTC)
        horizon = anchor - timedelta(seconds=opts.overlap + opts.max_clock_step)
        state.seen = {k: ts for k, ts in state.seen.items() if ts >= horizon}
        state.watermark = mark
        state.skew = answered
        state.exact_start = exact
        state.skipped_seconds += skipped
        ties = [(k[0], k[1]) for k, ts in state.seen.items() if ts == mark] if exact else []
        self._marks.set(server, mark, ties, answered)
        window = {k: v - before.get(k, 0) for k, v in state.events.items() if v != before.get(k, 0)}
        failed = {k: v - failed_before.get(k, 0) for k, v in state.failures.items() if v != failed_before.get(k, 0)}
        seconds = (end - start).total_seconds()
        flowed = {k: v - flow_before.get(k, 0) for k, v in state.flow.items() if v != flow_before.get(k, 0)}
        # New log time this poll read: from where the previous poll stopped (the overlap re-reads
        # counted time) or, on the first poll, from the window start; skipped time was not read.
        read_from = max(start, previous) if previous is not None else start
        state.recent.append(
            (mark, max(0.0, (mark - read_from).total_seconds()), flowed, state.received_inbound - inbound_before)
        )
        while state.recent and state.recent[0][0] < mark - timedelta(seconds=RECENT_SECONDS):
            state.recent.popleft()
        result = self._snapshot(server, state, min(mark, end) - offset, new, (window, failed, seconds))
        return result if skew_after is None else replace(result, clock_skew=skew_after)

    def _count(self, server: str, state: _ServerState, event: TrackingEvent, offset: timedelta) -> None:
        ev_key = (_bounded(event.event_id, EVENT_IDS), _bounded(event.source, SOURCES))
        state.events[ev_key] = state.events.get(ev_key, 0) + 1
        ts = event.timestamp.timestamp()
        state.last_event = ts if state.last_event is None else max(state.last_event, ts)
        direction = flow_direction(event)
        if direction is not None:
            state.flow[direction] = state.flow.get(direction, 0) + 1
        elif received_from_outside(event):
            state.received_inbound += 1
        if event.event_id == "FAIL":
            statuses = event.recipient_status or ("",)
            # RecipientStatus has one entry per recipient, in the order of Recipients.
            domains = [_domain(r) for r in event.recipients] if len(event.recipients) == len(statuses) else []
            for i, text in enumerate(statuses):
                err = parse_smtp_error(text)
                f_key = (err.enhanced_code, err.category) if err else ("", "other")
                f_key = f_key if state.codes.admit(f_key) else (OTHER, f_key[1])  # the category is a closed set
                state.failures[f_key] = state.failures.get(f_key, 0) + 1
                if f_key[1] == "recipient_unknown":
                    u_key = (f_key[0], domains[i] if domains else "")
                    if u_key not in state.window_unknown and len(state.window_unknown) >= MAX_UNKNOWN_KEYS:
                        u_key = (f_key[0], OTHER_DOMAIN)
                    state.window_unknown[u_key] = state.window_unknown.get(u_key, 0) + 1
        latency = self._trails.observe(server, event, offset)
        if latency is not None:
            self._observe(state, max(0.0, latency))

    def _observe(self, state: _ServerState, seconds: float) -> None:
        for i, bound in enumerate(self._opts.buckets):
            if seconds <= bound:
                state.buckets[i] += 1
                break
        else:
            state.buckets[-1] += 1
        state.latency_sum += seconds

    def _snapshot(
        self,
        server: str,
        state: _ServerState,
        end: datetime,
        new: int,
        window: tuple[Mapping[tuple[str, str], int], Mapping[tuple[str, str], int], float] = ({}, {}, 0.0),
    ) -> TrackingResult:
        stuck_before = end - timedelta(seconds=self._opts.stuck_after)
        forget_before = end - timedelta(seconds=self._opts.forget_after)
        finished_before = end - timedelta(seconds=finish_horizon(self._opts))
        stuck, unfollowed, evictions = self._trails.counts(server, stuck_before, forget_before, finished_before)
        cumulative, running = [], 0
        for count in state.buckets:
            running += count
            cumulative.append(running)
        return TrackingResult(
            server=server,
            events=dict(state.events),
            failures=dict(state.failures),
            latency_buckets=tuple(cumulative),
            latency_sum=state.latency_sum,
            stuck=stuck,
            last_event=state.last_event,
            truncated_polls=state.truncated_polls,
            evictions=evictions,
            skipped_seconds=state.skipped_seconds,
            new_events=new,
            window_events=dict(window[0]),
            window_failures=dict(window[1]),
            window_unknown_recipients=dict(state.window_unknown),
            window_seconds=window[2],
            flow=dict(state.flow),
            received_inbound=state.received_inbound,
            recent_seconds=sum(seconds for _, seconds, _, _ in state.recent),
            recent_flow=_summed(flow for _, _, flow, _ in state.recent),
            recent_received_inbound=sum(arrived for _, _, _, arrived in state.recent),
            unfollowed=unfollowed,
            folded={"enhanced_code": state.codes.take_refused()},
            watermark_repairs=dict(state.repairs),
        )

    def render(self, results: Mapping[str, TrackingResult]) -> Iterable[Metric]:
        failed = CounterMetricFamily(
            "mailflow_tracking_state_write_failures",
            "Saves of the tracking state file (the watermarks) that failed: a restart would start from the "
            "last saved watermarks. Counting goes on in memory.",
        )
        failed.add_metric([], self._marks.write_failures)
        return [*render_tracking(results.values(), self._opts.buckets), failed]


def render_tracking(results: Iterable[TrackingResult], buckets: Sequence[float]) -> list[Metric]:
    """Metric families for the tracking results of every server."""
    events = CounterMetricFamily(
        "mailflow_tracking_events",
        f"Message tracking events by event id and source. {POLLED}",
        labels=["server", "event_id", "source"],
    )
    failures = CounterMetricFamily(
        "mailflow_tracking_failures",
        f"Recipients of FAIL events by enhanced status code and classified category. {POLLED}",
        labels=["server", "enhanced_code", "category"],
    )
    flow = CounterMetricFamily(
        "mailflow_tracking_messages",
        "Messages handed on, by direction: inbound and internal are mailbox deliveries of mail from outside "
        "or inside the organisation, outbound are sends over a send connector other than the intra-organisation "
        f"one; unknown is a delivery without directionality. {POLLED}",
        labels=["server", "direction"],
    )
    received_inbound = CounterMetricFamily(
        "mailflow_tracking_received_from_outside",
        "RECEIVE events over SMTP of mail not originating inside the organisation (Directionality Incoming or "
        f"not logged; a message relayed between servers counts on each). {POLLED}",
        labels=["server"],
    )
    latency = HistogramMetricFamily(
        "mailflow_tracking_delivery_latency_seconds",
        f"Time from receipt to DELIVER/SEND on a server (MessageLatency, else paired events). {POLLED}",
        labels=["server"],
    )
    stuck = GaugeMetricFamily(
        "mailflow_tracking_stuck_messages",
        "Messages received longer ago than stuck_after with no DELIVER, SEND, TRANSFER or FAIL since, on that "
        f"server or (same message id) on another polled server. {POLLED}",
        labels=["server"],
    )
    unfollowed = GaugeMetricFamily(
        "mailflow_tracking_unfollowed_messages",
        "Messages submitted (SUBMIT) longer ago than stuck_after to another server's Transport service whose "
        f"log no polled server shows: fate unknown (not polled, poll failed), not counted as stuck. {POLLED}",
        labels=["server"],
    )
    last = GaugeMetricFamily(
        "mailflow_tracking_last_event_timestamp_seconds",
        f"Timestamp of the newest event seen. {POLLED}",
        labels=["server"],
    )
    truncated = CounterMetricFamily(
        "mailflow_tracking_truncated_polls",
        f"Polls whose result hit -ResultSize (Exchange's 'more results available' warning). {POLLED}",
        labels=["server"],
    )
    evicted = CounterMetricFamily(
        "mailflow_tracking_pairing_evictions",
        "Messages dropped from the bounded pairing memory (received, or handed off to another server) before "
        "a terminal event.",
        labels=["server"],
    )
    skipped = CounterMetricFamily(
        "mailflow_tracking_skipped_seconds",
        "Seconds of tracking log not read because the window was capped after an outage.",
        labels=["server"],
    )
    repairs = CounterMetricFamily(
        "mailflow_tracking_watermark_repairs",
        "Tracking watermarks not usable as saved, by reason: future (ahead of the server's clock by more than "
        "overlap + max_clock_step), malformed or unreadable (the state file; moved aside).",
        labels=["server", "reason"],
    )
    for r in sorted(results, key=lambda r: r.server):
        for (event_id, source), count in sorted(r.events.items()):
            events.add_metric([r.server, event_id, source], count)
        for (code, category), count in sorted(r.failures.items()):
            failures.add_metric([r.server, code, category], count)
        for direction in DIRECTIONS:  # every direction from the start, so rate() sees the first message
            flow.add_metric([r.server, direction], r.flow.get(direction, 0))
        received_inbound.add_metric([r.server], r.received_inbound)
        bounds = [*(_bound(b) for b in buckets), "+Inf"]
        latency.add_metric([r.server], list(zip(bounds, r.latency_buckets, strict=True)), r.latency_sum)
        stuck.add_metric([r.server], r.stuck)
        unfollowed.add_metric([r.server], r.unfollowed)
        if r.last_event is not None:
            last.add_metric([r.server], r.last_event)
        truncated.add_metric([r.server], r.truncated_polls)
        evicted.add_metric([r.server], r.evictions)
        skipped.add_metric([r.server], r.skipped_seconds)
        for reason in REPAIR_REASONS:  # every reason from the start, so increase() sees the first repair
            repairs.add_metric([r.server, reason], r.watermark_repairs.get(reason, 0))
    return [
        *(events, failures, flow, received_inbound, latency, stuck, unfollowed, last, truncated, evicted, skipped),
        repairs,
    ]


def _bound(value: float) -> str:
    return str(float(value))
