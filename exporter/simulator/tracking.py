"""Message tracking: deterministic Get-MessageTrackingLog events, as a pure function of time.

Every server with a ``tracking:`` spec receives message *k* (an integer counted from the Unix
epoch) at ``(k + jitter(k)) * slot`` seconds, where ``slot = 60 / messages_per_minute`` and the
jitter in [0, 1) comes from a hash of (seed, server, k). Only messages with
``k >= ceil((scenario start - history) / slot)`` exist. Everything else about message *k* (its
kind, recipients, latency, ids, failure text, the whole event sequence) comes from
``random.Random(blake2b(seed|server|k))``, so repeated or overlapping queries return identical
events, and a query only shows the events whose timestamp is at or before the scenario clock.

Kinds (chosen per message from the spec's ratios): ``failed`` (RECEIVE, FAIL with a real
RecipientStatus, DSN), ``stuck`` (RECEIVE only), ``outbound`` (the submission sequence ending in SEND
to the Internet, some with a DEFER first), ``internal`` (NOTIFYMAPI, RECEIVE/STOREDRIVER, SUBMIT,
HAREDIRECT, RECEIVE/SMTP, AGENTINFO, SEND, DELIVER) and ``inbound`` (RECEIVE/SMTP from the Internet,
AGENTINFO, SEND, DELIVER). Use :meth:`TrackingLog.expected_messages` and :meth:`TrackingLog.events`
to compute what a window must contain.

Cross-server submission (``tracking_routes``): an internal or outbound message may be handed by the
submitting server to the Transport service of a partner server; the submitting server's log then
holds NOTIFYMAPI, RECEIVE (STOREDRIVER) and SUBMIT, the partner's log the rest, under the same
MessageId, the partner's own InternalMessageId and later timestamps.

Objects are written by ``tracking_wire.event_clixml``, a dedicated writer producing exactly what
``clixml.write_clixml(objects.message_tracking_event(...))`` produces, ten times faster.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import random
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import NamedTuple

from exporter.simulator.scenario import Scenario, ServerSpec, TrackingSpec
from exporter.simulator.timeline import Timeline
from exporter.simulator.tracking_routes import (
    continuation_internal_id,
    delivery_servers,
    partner_index,
    relay_index,
    relay_internal_id,
    same_delivery_group,
    submission_partners,
)
from exporter.simulator.tracking_steps import (
    INBOUND_PROFILE,
    INTERNAL_PROFILE,
    OUTBOUND_DEFER_PROFILE,
    OUTBOUND_PROFILE,
    between,
    deliver,
    iso_utc,
    steps,
)
from exporter.simulator.tracking_steps import guid as random_guid
from exporter.simulator.tracking_steps import local_text as culture_text
from exporter.simulator.tracking_texts import (
    DEFERS,
    EXTERNAL_DOMAINS,
    FAILURE_CODES,
    FAILURES,
    MAILBOX_DATABASES,
    NDR_SENDER_LOCAL,
    PEOPLE,
    SUBJECTS,
)
from exporter.simulator.tracking_wire import event_clixml

__all__ = [
    "TrackedMessage",
    "TrackingEvent",
    "TrackingLog",
    "tracking_log",
]


class TrackingEvent(NamedTuple):
    """One MessageTrackingEvent, in the property order of the wire object."""

    ts_ms: int  # Timestamp, milliseconds since the epoch (UTC)
    client_ip: str
    client_hostname: str
    server_ip: str
    server_hostname: str
    source_context: str
    connector_id: str
    source: str
    event_id: str
    internal_message_id: str
    message_id: str
    network_message_id: str
    recipients: tuple[str, ...]
    recipient_status: tuple[str, ...]
    total_bytes: int | None
    recipient_count: int | None
    related_recipient_address: str
    reference: tuple[str, ...] | None
    message_subject: str
    sender: str
    return_path: str
    directionality: str
    tenant_id: str
    original_client_ip: str
    message_info: str
    latency_ms: int | None  # MessageLatency (None: Nil)
    latency_type: str  # MessageLatencyType: None or EndToEnd
    event_data: tuple[tuple[str, str], ...]
    transport_traffic_type: str
    schema_version: str
    server: str  # not on the wire: the server whose log holds the event
    message_index: int  # not on the wire: message index k
    seq: int  # not on the wire: position in the message's sequence
    origin: str = ""  # not on the wire: the server whose message k this is ("": ``server``)

    @property
    def timestamp(self) -> float:
        """The event time in seconds since the epoch."""
        return self.ts_ms / 1000.0


class TrackedMessage(NamedTuple):
    """Message *k* of one server (where it arrived) and every event it will ever log, there and on
    the partner server that continues it after a cross-server submission (``event.server``)."""

    server: str
    message_index: int
    kind: str  # internal, inbound, outbound, failed, stuck
    arrival_ms: int
    message_id: str
    internal_message_id: str  # on ``server``
    events: tuple[TrackingEvent, ...]
    partner: str = ""  # the server whose Transport service took it from ``server``; "" when none did
    handoff: int = 0  # events[handoff:] are in the partner's log (only with a partner)
    relay: str = ""  # the server that delivered it when its recipients' mailbox is elsewhere; "" when none

    @property
    def arrival(self) -> float:
        """Arrival (first event) time in seconds since the epoch."""
        return self.arrival_ms / 1000.0

    @property
    def servers(self) -> frozenset[str]:
        """The servers (upper case) whose logs hold events of this message."""
        return frozenset(n.upper() for n in (self.server, self.partner, self.relay) if n)

    def events_on(self, server: str) -> tuple[TrackingEvent, ...]:
        """The message's events in ``server``'s log (in time order)."""
        wanted = server.upper()
        if self.relay:
            return tuple(e for e in self.events if e.server.upper() == wanted)
        if not self.partner:
            return self.events if wanted == self.server.upper() else ()
        if wanted == self.server.upper():
            return self.events[: self.handoff]
        return self.events[self.handoff :] if wanted == self.partner.upper() else ()


def _schema_version(server: ServerSpec) -> str:
    major, minor, build, revision = server.version_parts
    return f"{major}.{minor:02d}.{build:04d}.{revision:03d}"


class _ServerModel:
    """Per-server constants used by every message of that server."""

    def __init__(self, scenario: Scenario, server: ServerSpec, position: int, spec: TrackingSpec) -> None:
        org = scenario.organisation
        self.name = server.name
        self.fqdn = server.fqdn
        self.spec = spec
        self.slot_ms = 60_000.0 / spec.messages_per_minute
        self.ip = f"198.51.100.{10 + position % 240}"
        self.schema = _schema_version(server)
        self.domain = org.domain
        self.culture = org.culture
        digest = hashlib.blake2b(f"{spec.seed}|{server.name.upper()}".encode(), digest_size=8).digest()
        self.id_base = (10 + int.from_bytes(digest, "big") % 89) * 10**14
        self.salt = f"{spec.seed}|{server.name.upper()}|".encode()
        self.max_span_ms = int(spec.latency_max_seconds * 1000) + 2_000  # DSN and minimum steps included
        self.default_connector = f"{server.name}\\Default {server.name}"
        self.frontend_connector = f"{server.name}\\Default Frontend {server.name}"
        self.mailbox_database = MAILBOX_DATABASES[position % len(MAILBOX_DATABASES)]
        wanted = set(spec.failure_codes)
        self.failures = tuple(f for f, code in zip(FAILURES, FAILURE_CODES, strict=True) if code in wanted) or FAILURES
        self.position = position
        self.servers = len(scenario.servers)
        self.share = spec.cross_server_submission
        self.logged = server.message_tracking_log_enabled
        self.partners: tuple[_ServerModel, ...] = ()  # see tracking_routes.submission_partners
        self.relay_share = spec.remote_mailbox_share
        # The Mailbox servers that may hold its recipients' databases (tracking_routes.delivery_servers),
        # and whether this server's Transport service is in each one's delivery group.
        self.deliverers: tuple[_ServerModel, ...] = ()
        self.near: frozenset[str] = frozenset()  # names (upper case) of the deliverers in its delivery group
        # Next-hop domains of its delivery queues in Retry or Suspended: outbound mail for them waits there
        # (no DEFER or SEND is logged while it does).
        self.held_domains = frozenset(
            q.next_hop_domain.lower()
            for q in server.queues
            if q.kind == "delivery" and (q.status or "").lower() in ("retry", "suspended") and q.next_hop_domain
        )


class TrackingLog:
    """The message-tracking log of every server of a scenario on one timeline (thread-safe).

    ``events(server, start, end)`` is what Get-MessageTrackingLog returns for ``-Start``/``-End``
    (seconds since the epoch; End exclusive) before filters, sorted by time; ``expected_messages``
    counts messages whose first event lies in a window. Derived messages are cached.
    """

    def __init__(self, scenario: Scenario, timeline: Timeline, cache_size: int = 200_000) -> None:
        self.scenario = scenario
        self.timeline = timeline
        self.tz = timeline.tz
        # Every server with traffic takes part in routing; only those with their log enabled serve it.
        modelled: dict[str, _ServerModel] = {}
        for position, server in enumerate(scenario.servers):
            if server.tracking is not None and server.tracking.enabled:
                modelled[server.name.upper()] = _ServerModel(scenario, server, position, server.tracking)
        deliverers = tuple(modelled[n] for n in delivery_servers(scenario, modelled))
        for model in modelled.values():
            model.partners = tuple(modelled[n] for n in submission_partners(scenario, model.name, modelled))
            model.deliverers = deliverers
            model.near = frozenset(
                d.name.upper() for d in deliverers if same_delivery_group(scenario, model.name, d.name)
            )
        self._models = {name: model for name, model in modelled.items() if model.logged}
        #: server -> the servers that hand it submissions or mail for its mailboxes (their messages
        #: continue in its log)
        self._feeders = {
            name: tuple(
                m
                for m in modelled.values()
                if m is not model
                and (any(p is model for p in m.partners) or (m.relay_share > 0 and any(d is model for d in deliverers)))
            )
            for name, model in self._models.items()
        }
        self._cache: dict[tuple[str, int], TrackedMessage] = {}
        self._bytes: dict[tuple[str, str, int, int], bytes] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()

    # -- schedule --------------------------------------------------------------------------
    def _model(self, server: str) -> _ServerModel | None:
        found = self.scenario.server(server)
        return None if found is None else self._models.get(found.name.upper())

    def enabled(self, server: str) -> bool:
        """Whether ``server`` logs any message."""
        return self._model(server) is not None

    def first_index(self, server: str) -> int:
        """The first message index that exists (history starts ``history_minutes`` before the start)."""
        model = self._model(server)
        if model is None:
            raise KeyError(server)
        return self._first(model)

    def _first(self, model: _ServerModel) -> int:
        begin_ms = (self.timeline.start - model.spec.history_minutes * 60.0) * 1000.0
        return math.ceil(begin_ms / model.slot_ms)

    def _digest(self, model: _ServerModel, k: int) -> bytes:
        return hashlib.blake2b(model.salt + str(k).encode(), digest_size=32).digest()

    def _arrival_ms(self, model: _ServerModel, k: int, digest: bytes | None = None) -> int:
        digest = digest or self._digest(model, k)
        jitter = int.from_bytes(digest[:6], "big") / 2.0**48
        return math.floor((k + jitter) * model.slot_ms)

    def _indices(self, model: _ServerModel, start_ms: float, end_ms: float) -> range:
        """Indices of the messages whose arrival lies in [start_ms, end_ms)."""
        lo = max(self._first(model), math.floor(start_ms / model.slot_ms) - 1)
        hi = math.ceil(end_ms / model.slot_ms) + 1
        while lo < hi and self._arrival_ms(model, lo) < start_ms:
            lo += 1
        while hi > lo and self._arrival_ms(model, hi - 1) >= end_ms:
            hi -= 1
        return range(lo, max(lo, hi))

    def message_indices(self, server: str, start: float, end: float) -> range:
        """Indices of the messages of ``server`` arriving in [start, end) (seconds since the epoch)."""
        model = self._model(server)
        if model is None:
            return range(0)
        return self._indices(model, start * 1000.0, end * 1000.0)

    def expected_messages(self, server: str, start: float, end: float) -> int:
        """How many messages have their first event in ``server``'s log in [start, end): those arriving
        there and those other servers submitted to it (``messages``; DSNs are not counted)."""
        model = self._model(server)
        if model is None:
            return 0
        own = len(self._indices(model, start * 1000.0, end * 1000.0))
        return own + sum(1 for _ in self._continuations(model, start * 1000.0, end * 1000.0))

    def message(self, server: str, k: int) -> TrackedMessage:
        """Message ``k`` of ``server`` with all its events (including those still in the future)."""
        model = self._model(server)
        if model is None:
            raise KeyError(server)
        return self._message(model, k)

    def messages(self, server: str, start: float, end: float) -> list[TrackedMessage]:
        """The messages whose first event in ``server``'s log lies in [start, end), in that order:
        those arriving at ``server`` (``message.server``) and those another server submitted to it
        (``message.partner``). ``message.events_on(server)`` are its events in that log."""
        model = self._model(server)
        if model is None:
            return []
        own = [self._message(model, k) for k in self._indices(model, start * 1000.0, end * 1000.0)]
        taken = list(self._continuations(model, start * 1000.0, end * 1000.0))
        if not taken:
            return own
        return sorted([*own, *taken], key=lambda m: m.events_on(model.name)[0].ts_ms)

    def _continuations(self, model: _ServerModel, start_ms: float, end_ms: float) -> Iterator[TrackedMessage]:
        """Messages other servers submitted to ``model``'s server whose first event there is in the window."""
        for feeder in self._feeders.get(model.name.upper(), ()):
            lo = max(self._first(feeder), math.floor((start_ms - feeder.max_span_ms) / feeder.slot_ms) - 1)
            for k in range(lo, math.ceil(end_ms / feeder.slot_ms) + 1):
                digest = self._digest(feeder, k)
                if not self._may_reach(feeder, digest, model):
                    continue
                message = self._message(feeder, k, digest)
                here = message.events_on(model.name)
                if here and start_ms <= here[0].ts_ms < end_ms:
                    yield message

    def events(
        self,
        server: str,
        start: float | None = None,
        end: float | None = None,
        now: float | None = None,
        *,
        predicate: Callable[[TrackingEvent], bool] | None = None,
        limit: int | None = None,
    ) -> list[TrackingEvent]:
        """Events of ``server`` with start <= Timestamp < end and Timestamp <= now, sorted by time.

        ``start`` defaults to the beginning of the history, ``end`` to no limit, ``now`` to the
        timeline's clock. With ``predicate`` only matching events are kept; with ``limit`` at most
        ``limit + 1`` events are returned (the first ones; one more tells that there are more) and
        generation stops early.
        """
        model = self._model(server)
        if model is None:
            return []
        now_ms = (self.timeline.now() if now is None else now) * 1000.0
        start_ms = -math.inf if start is None else start * 1000.0
        end_ms = math.inf if end is None else end * 1000.0
        end_ms = min(end_ms, math.floor(now_ms) + 1)  # Timestamp <= now
        if end_ms <= start_ms:
            return []
        found: list[TrackingEvent] = []
        # This server's own messages, then (one stream per feeding server) those submitted to it.
        for stream in (model, *self._feeders.get(model.name.upper(), ())):
            own = stream is model
            lo = self._first(stream)
            if start is not None:
                lo = max(lo, math.floor((start_ms - stream.max_span_ms) / stream.slot_ms) - 1)
            for k in range(lo, math.ceil(end_ms / stream.slot_ms) + 1):
                if own:
                    message = self._message(model, k)
                    arrival = message.arrival_ms
                else:
                    cached = self._cache.get((stream.name, k))
                    if cached is not None:
                        if model.name not in (cached.partner, cached.relay) or cached.arrival_ms >= end_ms:
                            continue
                        arrival = cached.arrival_ms
                    else:
                        digest = self._digest(stream, k)
                        arrival = self._arrival_ms(stream, k, digest)
                if arrival >= end_ms:
                    continue
                if limit is not None and len(found) > limit and k % 64 == 0:
                    found.sort(key=_order)
                    del found[limit + 1 :]
                    if arrival > found[-1].ts_ms:
                        break  # later messages of this stream only have later events
                if own:
                    events = message.events_on(model.name)
                elif cached is not None:
                    events = cached.events_on(model.name)
                else:
                    if not self._may_reach(stream, digest, model):
                        continue
                    message = self._message(stream, k, digest)
                    events = message.events_on(model.name)  # none when it stayed local after all
                for event in events:
                    if start_ms <= event.ts_ms < end_ms and (predicate is None or predicate(event)):
                        found.append(event)
        found.sort(key=_order)
        if limit is not None:
            del found[limit + 1 :]
        return found

    def expected_events(
        self, server: str, start: float | None = None, end: float | None = None, now: float | None = None
    ) -> int:
        """``len(events(...))``: how many events Get-MessageTrackingLog -ResultSize Unlimited returns."""
        return len(self.events(server, start, end, now))

    def clixml(self, event: TrackingEvent) -> bytes:
        """The event's CLIXML (cached; the stamp is part of the key: a server's clock may stamp it)."""
        key = (event.server, event.internal_message_id, event.seq, event.ts_ms)
        data = self._bytes.get(key)
        if data is None:
            data = event_clixml(event, self.tz, self.scenario.organisation.culture)
            with self._lock:
                if len(self._bytes) >= self._cache_size * 8:
                    self._bytes.clear()
                self._bytes[key] = data
        return data

    # -- generation ------------------------------------------------------------------------
    def _partner(self, model: _ServerModel, digest: bytes) -> _ServerModel | None:
        """The server whose Transport service would take a mailbox submission with this hash."""
        index = partner_index(digest, model.share, len(model.partners))
        return None if index < 0 else model.partners[index]

    def _relay(self, model: _ServerModel, digest: bytes, hub: _ServerModel) -> _ServerModel | None:
        """The server holding the recipients' mailbox database of the message with this hash when it is
        not ``hub`` (the Transport service that categorised it), else None."""
        if model.relay_share <= 0.0:
            return None
        others = [d for d in model.deliverers if d is not hub]
        index = relay_index(digest, model.relay_share, len(others))
        return None if index < 0 else others[index]

    def _may_reach(self, stream: _ServerModel, digest: bytes, model: _ServerModel) -> bool:
        """Whether message ``digest`` of ``stream`` may log events on ``model`` (a cheap test before
        generating it): submitted to it, or delivered on it."""
        partner = self._partner(stream, digest)
        if partner is model:
            return True
        hubs = (stream,) if partner is None else (stream, partner)
        return any(self._relay(stream, digest, hub) is model for hub in hubs)

    def _message(self, model: _ServerModel, k: int, digest: bytes | None = None) -> TrackedMessage:
        key = (model.name, k)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        digest = digest or self._digest(model, k)
        partner = self._partner(model, digest)
        relays = (self._relay(model, digest, model), None if partner is None else self._relay(model, digest, partner))
        message = _generate(model, k, digest, self.tz, partner, relays)
        with self._lock:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[key] = message
        return message


def _order(event: TrackingEvent) -> tuple[int, int, int]:
    return event.ts_ms, event.message_index, event.seq


def _generate(
    model: _ServerModel,
    k: int,
    digest: bytes,
    tz: datetime.tzinfo,
    partner: _ServerModel | None = None,
    relays: tuple[_ServerModel | None, _ServerModel | None] = (None, None),
) -> TrackedMessage:
    """Message ``k`` of ``model``. ``partner``: the Transport service that takes a mailbox submission
    (None: the local one); ``relays``: the server holding the recipients' database when the local
    Transport service, resp. the partner's, categorises it (None: that same server)."""
    spec = model.spec
    jitter = int.from_bytes(digest[:6], "big") / 2.0**48
    arrival_ms = math.floor((k + jitter) * model.slot_ms)
    rng = random.Random(int.from_bytes(digest[6:], "big"))
    rnd = rng.random
    u = rnd()
    if u < spec.failure_ratio:
        kind = "failed"
    elif u < spec.failure_ratio + spec.stuck_ratio:
        kind = "stuck"
    elif rnd() < spec.external_ratio:
        kind = "outbound"
    else:
        kind = "internal" if rnd() < 1 - spec.inbound_ratio else "inbound"
    latency_ms = max(10, round(rng.uniform(spec.latency_min_seconds, spec.latency_max_seconds) * 1000))
    domain = model.domain
    fqdn = model.fqdn
    internal_id = str(model.id_base + 2 * k)
    # The Transport service that takes a mailbox submission (internal and outbound messages): this
    # server's own, or the partner's, which then logs everything after SUBMIT (tracking_routes).
    hub = partner if partner is not None and kind in ("internal", "outbound") else model
    # The server holding the recipients' mailbox database, when it is not the hub (tracking_routes).
    relay = (relays[1] if hub is not model else relays[0]) if kind in ("internal", "inbound") else None
    log_name, log_id, log_schema = model.name, internal_id, model.schema
    guid = f"{rng.getrandbits(128):032x}"
    network_id = (
        f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-{rng.getrandbits(16):04x}-"
        f"{rng.getrandbits(16):04x}-08dc{rng.getrandbits(32):08x}"
    )
    external_domain = EXTERNAL_DOMAINS[int(rnd() * len(EXTERNAL_DOMAINS))]
    person = PEOPLE[int(rnd() * len(PEOPLE))]
    count = 1 if (r := rnd()) < 0.7 else (2 if r < 0.9 else 3)
    rcpt_people = [PEOPLE[int(rnd() * len(PEOPLE))] for _ in range(count)]
    subject = SUBJECTS[int(rnd() * len(SUBJECTS))]
    if (r := rnd()) < 0.2:
        subject = "RE: " + subject
    elif r < 0.3:
        subject = "FW: " + subject
    size = int(min(25_000_000, max(2_500, rng.lognormvariate(9.6, 1.1))))
    client_ip = f"{'203.0.113' if rnd() < 0.6 else '192.0.2'}.{1 + int(rnd() * 254)}"
    remote_ip = f"203.0.113.{1 + int(rnd() * 254)}"
    session = f"08DC{rng.getrandbits(28):07X}"
    headers = ("To", "Cc", "Bcc")[:count]

    failure = model.failures[int(rnd() * len(model.failures))] if kind == "failed" else None
    rcpt_domain = domain
    if spec.recipient_domains:  # drawn only then: scenarios without it keep every message as it was
        rcpt_domain = spec.recipient_domains[int(rnd() * len(spec.recipient_domains))]
    incoming = kind in ("inbound", "stuck") if failure is None else failure[3] == "Incoming"
    if incoming:
        sender = f"{person}@{external_domain}"
        recipients = tuple(f"{p}@{rcpt_domain}" for p in rcpt_people)
        message_id = f"<{guid}@mail.{external_domain}>"
        directionality = "Incoming"
    else:
        sender = f"{person}@{domain}"
        if kind == "outbound" or (failure is not None and failure[0].startswith(("550 5.4.1", "552"))):
            recipients = tuple(f"{p}@{external_domain}" for p in rcpt_people)
        else:
            recipients = tuple(f"{p}@{rcpt_domain}" for p in rcpt_people)
        message_id = f"<{guid}@{fqdn}>"
        directionality = "Originating"
    return_path = sender
    base_data = (("DeliveryPriority", "Normal"), ("AccountForest", domain))
    events: list[TrackingEvent] = []

    def add(
        ts: int,
        source: str,
        event_id: str,
        *,
        client_ip: str = "",
        client_hostname: str = "",
        server_ip: str = "",
        server_hostname: str = "",
        source_context: str = "",
        connector_id: str = "",
        recipient_status: tuple[str, ...] = (),
        total_bytes: int | None = size,
        message_info: str = "",
        latency: int | None = None,
        latency_type: str = "None",
        event_data: tuple[tuple[str, str], ...] = base_data,
        related: str = "",
        original_client_ip: str = "",
    ) -> None:
        events.append(
            TrackingEvent(
                ts, client_ip, client_hostname, server_ip, server_hostname, source_context, connector_id, source,
                event_id, log_id, message_id, network_id, recipients, recipient_status, total_bytes, count,
                related, None, subject, sender, return_path, directionality, "", original_client_ip, message_info,
                latency, latency_type, event_data, "Email", log_schema, log_name, k, len(events), model.name,
            )
        )  # fmt: skip

    def local_text(ms: int) -> str:
        return culture_text(ms, tz, model.culture)

    mapi_context = (
        f"MDB:{random_guid(rng)}, Mailbox:{random_guid(rng)}, Event:{100_000 + int(rnd() * 9_900_000)}, "
        f"MessageClass:IPM.Note, CreationTime:{iso_utc(arrival_ms - 200 + int(rnd() * 4800))}, "
        f"ClientType:{('OWA', 'MOMT', 'AirSync', 'EWS')[int(rnd() * 4)]}, "
        "SubmissionAssistant:MailboxTransportSubmissionEmailAssistant"
    )

    def submission(ts: list[int]) -> None:
        """NOTIFYMAPI, RECEIVE (STOREDRIVER), SUBMIT here; HAREDIRECT, RECEIVE (SMTP), AGENTINFO on the hub."""
        nonlocal log_name, log_id, log_schema
        add(ts[0], "STOREDRIVER", "NOTIFYMAPI", server_hostname=model.name, source_context=mapi_context,
            total_bytes=None, event_data=())  # fmt: skip
        add(ts[1], "STOREDRIVER", "RECEIVE", server_ip=model.ip, server_hostname=fqdn, source_context=mapi_context,
            recipient_status=headers, event_data=(("MailboxDatabaseGuid", random_guid(rng)), *base_data))  # fmt: skip
        add(ts[2], "STOREDRIVER", "SUBMIT", client_ip=model.ip, client_hostname=fqdn, server_hostname=fqdn,
            source_context=mapi_context, event_data=())  # fmt: skip
        if hub is not model:  # the rest is in the hub's log, under its own InternalMessageId
            log_name, log_schema = hub.name, hub.schema
            log_id = continuation_internal_id(hub.id_base, k, model.position, model.servers)
        add(ts[3], "SMTP", "HAREDIRECT", client_ip=model.ip, client_hostname=fqdn, server_ip=hub.ip,
            server_hostname=hub.name, connector_id=hub.default_connector,
            source_context=f"{session};{iso_utc(ts[3])};0", event_data=())  # fmt: skip
        add(ts[4], "SMTP", "RECEIVE", client_ip=model.ip, client_hostname=fqdn, server_ip=hub.ip,
            server_hostname=hub.name, connector_id=hub.default_connector,
            source_context=f"{session};{iso_utc(ts[4])};0", recipient_status=headers, message_info="0cI:",
            event_data=(("FirstForestHop", hub.fqdn), *base_data))  # fmt: skip
        add(ts[5], "AGENT", "AGENTINFO", source_context="Transport Rule Agent",
            event_data=(("CompCost", "|ETR=0"), *base_data))  # fmt: skip

    def to_mailbox(send_ms: int, deliver_ms: int, send_data: tuple[tuple[str, str], ...]) -> None:
        """SEND from the hub to the Mailbox Transport Delivery service holding the recipients' database
        (relayed through that server's Transport service from outside its delivery group), DELIVER."""
        nonlocal log_name, log_id, log_schema
        target = relay or hub
        intra = "Intra-Organization SMTP Send Connector"
        sent = f"{session};250 2.1.5 Recipient OK;ClientSubmitTime:{iso_utc(arrival_ms)}"
        add(send_ms, "SMTP", "SEND", client_ip=hub.ip, client_hostname=hub.name, server_ip=target.ip,
            server_hostname=target.fqdn, connector_id=intra, source_context=sent,
            recipient_status=("250 2.1.5 Recipient OK",) * count, message_info=local_text(arrival_ms),
            event_data=send_data)  # fmt: skip
        if relay is not None:
            log_name, log_schema = relay.name, relay.schema
            log_id = relay_internal_id(relay.id_base, k, model.position, model.servers)
            if relay.name.upper() not in hub.near:  # from outside its delivery group: through its Transport
                t = between(send_ms, deliver_ms, 4)
                deliver_ms = max(deliver_ms, t[-1] + 1)
                context = f"{session};{iso_utc(t[1])};0"
                add(t[0], "SMTP", "HAREDIRECT", client_ip=hub.ip, client_hostname=hub.fqdn, server_ip=relay.ip,
                    server_hostname=relay.name, connector_id=relay.default_connector,
                    source_context=f"{session};{iso_utc(t[0])};0", event_data=())  # fmt: skip
                add(t[1], "SMTP", "RECEIVE", client_ip=hub.ip, client_hostname=hub.fqdn, server_ip=relay.ip,
                    server_hostname=relay.name, connector_id=relay.default_connector, source_context=context,
                    recipient_status=headers, message_info="0cI:",
                    event_data=(("FirstForestHop", hub.fqdn), *base_data))  # fmt: skip
                add(t[2], "AGENT", "AGENTINFO", source_context="Transport Rule Agent",
                    event_data=(("CompCost", "|ETR=0"), *base_data))  # fmt: skip
                add(t[3], "SMTP", "SEND", client_ip=relay.ip, client_hostname=relay.name, server_ip=relay.ip,
                    server_hostname=relay.fqdn, connector_id=intra, source_context=sent,
                    recipient_status=("250 2.1.5 Recipient OK",) * count,
                    message_info=local_text(arrival_ms))  # fmt: skip
        deliver(add, target, rng, deliver_ms, arrival_ms, local_text, base_data, fqdn, spec.latency_field_ratio)

    if kind == "internal":
        ts = steps(rng, arrival_ms, latency_ms, INTERNAL_PROFILE)
        submission(ts)
        to_mailbox(ts[6], ts[7], (("E2ELatency", f"{(ts[6] - arrival_ms) / 1000:.3f}"), *base_data))
    elif kind == "inbound":
        ts = steps(rng, arrival_ms, latency_ms, INBOUND_PROFILE)
        host = f"mail.{external_domain}"
        add(ts[0], "SMTP", "RECEIVE", client_ip=client_ip, client_hostname=host, server_ip=model.ip,
            server_hostname=model.name, connector_id=model.frontend_connector,
            source_context=f"{session};{iso_utc(ts[0])};0", recipient_status=headers, message_info="0cI:",
            original_client_ip=client_ip,
            event_data=(("FirstForestHop", fqdn), ("FromEntity", "Internet"), *base_data))  # fmt: skip
        add(ts[1], "AGENT", "AGENTINFO", source_context="Transport Rule Agent",
            event_data=(("CompCost", "|ETR=0"), *base_data))  # fmt: skip
        to_mailbox(ts[2], ts[3], base_data)
    elif kind == "outbound":
        defer = rnd() < spec.defer_ratio
        ts = steps(rng, arrival_ms, latency_ms, OUTBOUND_DEFER_PROFILE if defer else OUTBOUND_PROFILE)
        submission(ts)
        remote_host = f"mx{1 + int(rnd() * 3)}.{external_domain}"
        # The hub's queue for that domain is in Retry (or Suspended): the message waits in it, and no
        # DEFER or SEND is logged (kept strict: the queue, not the log, says why) [inferred].
        held = external_domain in hub.held_domains
        if defer:
            text = DEFERS[int(rnd() * len(DEFERS))]
            text = text.replace("%REMOTE_IP%", remote_ip).replace("%REMOTE_HOST%", remote_host)
            if not held:
                add(ts[6], "SMTP", "DEFER", server_ip=remote_ip, server_hostname=remote_host,
                    connector_id="Outbound to Internet", source_context=f"{session};Deferred",
                    recipient_status=(text,) * count, message_info=local_text(arrival_ms),
                    event_data=(("ToEntity", "Internet"), *base_data))  # fmt: skip
        queued = f"OK {ts[-1] // 1000} {rng.getrandbits(40):010x} - queued"
        if not held:
            add(ts[-1], "SMTP", "SEND", client_ip=hub.ip, client_hostname=hub.fqdn, server_ip=remote_ip,
                server_hostname=remote_host, connector_id="Outbound to Internet",
                source_context=f"{session};250 2.0.0 {queued};ClientSubmitTime:{iso_utc(arrival_ms)}",
                recipient_status=(f"250 2.0.0 {queued}",) * count, message_info=local_text(arrival_ms),
                event_data=(("ToEntity", "Internet"), ("E2ELatency", f"{(ts[-1] - arrival_ms) / 1000:.3f}"),
                            *base_data))  # fmt: skip
    elif kind == "stuck":
        add(arrival_ms, "SMTP", "RECEIVE", client_ip=client_ip, client_hostname=f"mail.{external_domain}",
            server_ip=model.ip, server_hostname=model.name, connector_id=model.frontend_connector,
            source_context=f"{session};{iso_utc(arrival_ms)};0", recipient_status=headers, message_info="0cI:",
            original_client_ip=client_ip,
            event_data=(("FirstForestHop", fqdn), ("FromEntity", "Internet"), *base_data))  # fmt: skip
    else:  # failed
        assert failure is not None
        status, source, context, _direction = failure
        status = status.replace("%CLIENT_IP%", client_ip)
        fail_ms = arrival_ms + max(1, min(latency_ms, round(latency_ms * (0.05 + 0.25 * rnd()))))
        if incoming:
            add(arrival_ms, "SMTP", "RECEIVE", client_ip=client_ip, client_hostname=f"mail.{external_domain}",
                server_ip=model.ip, server_hostname=model.name, connector_id=model.frontend_connector,
                source_context=f"{session};{iso_utc(arrival_ms)};0", recipient_status=headers,
                message_info="0cI:", original_client_ip=client_ip,
                event_data=(("FirstForestHop", fqdn), ("FromEntity", "Internet"), *base_data))  # fmt: skip
        else:
            add(arrival_ms, "SMTP", "RECEIVE", client_ip=model.ip, client_hostname=fqdn, server_ip=model.ip,
                server_hostname=model.name, connector_id=model.default_connector,
                source_context=f"{session};{iso_utc(arrival_ms)};0", recipient_status=headers,
                message_info="0cI:", event_data=(("FirstForestHop", fqdn), *base_data))  # fmt: skip
        add(fail_ms, source, "FAIL", client_ip=client_ip if incoming else model.ip,
            client_hostname=f"mail.{external_domain}" if incoming else fqdn, server_ip=model.ip,
            connector_id=model.frontend_connector if incoming else "", source_context=context,
            recipient_status=(status,) * count, total_bytes=0 if source == "SMTP" and incoming else size,
            event_data=(("ToEntity", "Unknown"), ("FromEntity", "Internet" if incoming else "Hosted"),
                        ("OriginalFromAddress", sender), *base_data))  # fmt: skip
        dsn_ms = fail_ms + 5 + int(rnd() * 300)
        events.append(
            TrackingEvent(
                dsn_ms, "", "", "", model.name, "", "", "DSN", "DSN", str(model.id_base + 2 * k + 1),
                f"<{random_guid(rng)}@{fqdn}>", network_id, (sender,), (), 4_000 + int(rnd() * 6_000), 1, "",
                (message_id,), f"Undeliverable: {subject}", f"{NDR_SENDER_LOCAL}@{domain}", "<>", "Originating",
                "", "", "", None, "None", (("DeliveryPriority", "Normal"),), "Email", model.schema, model.name, k,
                len(events), model.name,
            )
        )  # fmt: skip
    relayed = "" if relay is None else relay.name
    if hub is not model:
        return TrackedMessage(
            model.name, k, kind, arrival_ms, message_id, internal_id, tuple(events), hub.name, 3, relayed
        )
    return TrackedMessage(model.name, k, kind, arrival_ms, message_id, internal_id, tuple(events), relay=relayed)


# ---------------------------------------------------------------------------------------------
# One TrackingLog per (scenario, timeline)
# ---------------------------------------------------------------------------------------------
_LOGS: weakref.WeakKeyDictionary[Timeline, TrackingLog] = weakref.WeakKeyDictionary()
_LOGS_LOCK = threading.Lock()


def tracking_log(scenario: Scenario, timeline: Timeline) -> TrackingLog:
    """The shared :class:`TrackingLog` of a simulator (one per timeline)."""
    with _LOGS_LOCK:
        log = _LOGS.get(timeline)
        if log is None or log.scenario is not scenario:
            log = _LOGS[timeline] = TrackingLog(scenario, timeline)
        return log
