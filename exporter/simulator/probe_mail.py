"""Mail from the Internet into the simulated organisation: what the demo MX hands over (``netsim``).

The demo SMTP endpoint (``exporter.netsim.smtp_server.DemoSMTP`` with a ``sink``) stands in for the
organisation's Front End Transport: it asks :class:`SmtpSink` at each step of a session, as Exchange's
receive connector decides, and hands it every accepted message. The sink logs the message in the
simulated tracking log like an inbound message of ``tracking.py`` (RECEIVE from the Internet on the
receiving server, then DELIVER on the server holding the active copy of the first mailbox database),
under the message's own ``Message-ID``, so the exporter's probe finds it with
``Get-MessageTrackingLog -MessageId``.

The organisation's state decides (docs/fidelity.md, "Probe mail"):

- no transport server up: the connection gets ``421 4.3.2 Service not available`` (Exchange's reply
  when it refuses a session);
- the receiving server under back pressure (Medium or High): ``MAIL FROM`` gets ``452 4.3.1
  Insufficient system resources`` (Microsoft's back-pressure documentation);
- a recipient outside the accepted domains: ``RCPT TO`` gets ``550 5.7.54 SMTP; Unable to relay
  recipient in non-accepted domain`` (Exchange 2013+);
- accepted: ``250 2.6.0 <message-id> [InternalId=..., Hostname=...] Queued mail for delivery``, RECEIVE
  now (on the first transport server that is up); DELIVER 1-3 seconds later unless the path is blocked
  (``cmdlets_probe.path_blocked``: the delivering server down, under High back pressure or with a mail
  service stopped) or no database is mounted: then the message stays received and never delivered,
  like a message stuck in a queue;
- a server with ``message_tracking_log_enabled: false`` logs none of it (mail still flows).

Events happen on the organisation clock and are stamped by their server's current clock skew when read.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import threading
import weakref
from collections.abc import Callable, Sequence
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from exporter.simulator import consequences, roles
from exporter.simulator.cmdlets import Context
from exporter.simulator.cmdlets_probe import path_blocked
from exporter.simulator.faults import FaultKind
from exporter.simulator.scenario import ServerSpec
from exporter.simulator.timeline import Timeline
from exporter.simulator.tracking import TrackingEvent, TrackingLog
from exporter.simulator.tracking_steps import iso_utc
from exporter.simulator.tracking_wire import SelectableEvent

__all__ = ["REFUSED", "RESOURCES", "UNRELAYED", "SmtpSink", "add_probe_mail"]

REFUSED = "421 4.3.2 Service not available"
RESOURCES = "452 4.3.1 Insufficient system resources"
UNRELAYED = "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain"
_BASE_DATA = (("DeliveryPriority", "Normal"),)
_MAIL: weakref.WeakKeyDictionary[Timeline, list[TrackingEvent]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()
_IDS = itertools.count(1)
_MAX_EVENTS = 10_000  # the oldest go first: a long demo sends a probe every few minutes


def _events(origin: Timeline) -> list[TrackingEvent]:
    with _LOCK:
        return list(_MAIL.get(origin, ()))


def _log(origin: Timeline, events: Sequence[TrackingEvent]) -> None:
    with _LOCK:
        kept = _MAIL.setdefault(origin, [])
        kept.extend(events)
        del kept[: max(0, len(kept) - _MAX_EVENTS)]


def add_probe_mail(
    ctx: Context,
    target: ServerSpec,
    log: TrackingLog,
    window: tuple[float | None, float | None],
    predicate: Callable[[TrackingEvent], bool] | None,
    limit: int | None,
    sources: list[Any],
) -> list[Any]:
    """Get-MessageTrackingLog's output sources with the mail the sink took merged in (time order, at most
    ``limit + 1`` like ``consequences.tracking_sources``)."""
    start, end = window
    now_ms = ctx.timeline.origin.now() * 1000.0
    lo = -math.inf if start is None else start * 1000.0
    hi = math.inf if end is None else end * 1000.0
    shift = round(target.clock_skew_seconds * 1000)  # stamped by the target's clock, as its log is
    extra = [
        SelectableEvent(e._replace(ts_ms=e.ts_ms + shift), log)
        for e in _events(ctx.timeline.origin)
        if e.server.upper() == target.name.upper()
        and lo <= e.ts_ms + shift < hi
        and e.ts_ms <= now_ms
        and (predicate is None or predicate(e))
    ]
    if not extra:
        return sources
    merged = sorted([*sources, *extra], key=lambda s: s.event.ts_ms)
    return merged if limit is None else merged[: limit + 1]


def _ip(scenario: Any, server: ServerSpec) -> str:
    position = next(i for i, s in enumerate(scenario.servers) if s.name.upper() == server.name.upper())
    return f"198.51.100.{10 + position % 240}"  # as tracking._ServerModel


def _schema(server: ServerSpec) -> str:
    major, minor, build, revision = server.version_parts
    return f"{major}.{minor:02d}.{build:04d}.{revision:03d}"


class SmtpSink:
    """The organisation's side of the demo MX (see the module docstring). ``state``: the simulator's
    ``SimState`` (scenario, timeline, faults)."""

    def __init__(self, state: Any) -> None:
        self._state = state

    def _ctx(self, server: ServerSpec) -> Context:
        return Context(self._state.scenario, self._state.timeline, server, faults=self._state.faults)

    def receiver(self) -> ServerSpec | None:
        """The first transport server (scenario order) that is up and not a 2013 Client Access server."""
        scenario = self._state.scenario
        down = consequences.down_servers(self._ctx(scenario.servers[0]))
        for server in scenario.servers:
            if server.name.upper() not in down and not roles.is_client_access_only(server) and not server.is_edge:
                return server
        return None

    def connect(self) -> str | None:
        """None to greet, else the reply that refuses the session."""
        return None if self.receiver() is not None else REFUSED

    def mail_from(self, address: str) -> str | None:
        """None to accept the sender, else the rejection."""
        server = self.receiver()
        if server is None:
            return REFUSED
        if self._state.faults.find(server.name, FaultKind.BACK_PRESSURE) is not None:
            return RESOURCES  # Medium already refuses mail from outside (consequences._rejected)
        return None

    def rcpt_to(self, address: str) -> str | None:
        """None to accept the recipient, else the rejection."""
        domain = address.rpartition("@")[2].strip(">").lower()
        for accepted in self._state.scenario.effective_accepted_domains:
            pattern = accepted.domain.lower()
            if pattern == domain or (pattern.startswith("*.") and domain.endswith(pattern[1:])):
                return None
        return UNRELAYED

    def data(self, mail_from: str, recipients: Sequence[str], content: bytes, peer: str) -> str:
        """Take the message: log RECEIVE (and DELIVER unless the path is blocked); the 250 reply."""
        server = self.receiver()
        if server is None:
            return REFUSED
        scenario = self._state.scenario
        headers = BytesHeaderParser(policy=compat32).parsebytes(content)
        now_ms = int(self._state.timeline.origin.now() * 1000)
        serial = next(_IDS)
        message_id = str(headers.get("Message-ID") or "").strip() or f"<{serial:08x}@{server.fqdn}>"
        subject = str(headers.get("Subject") or "")
        internal = str(90_000_000_000_000 + serial)
        digest = hashlib.blake2b(message_id.encode(), digest_size=4).digest()
        latency = 1000 + int.from_bytes(digest, "big") % 2000
        ip = _ip(scenario, server)
        size = len(content)
        count = len(recipients)
        helo = peer or "probe.example"

        def event(ts: int, holder: ServerSpec, source: str, event_id: str, seq: int, **kw: Any) -> TrackingEvent:
            fields: dict[str, Any] = {
                "client_ip": "", "client_hostname": "", "server_ip": "", "server_hostname": "",
                "source_context": "", "connector_id": "", "recipient_status": (), "message_info": "",
                "latency_ms": None, "latency_type": "None", "event_data": _BASE_DATA, "original_client_ip": "",
            }  # fmt: skip
            fields.update(kw)
            return TrackingEvent(
                ts, fields["client_ip"], fields["client_hostname"], fields["server_ip"], fields["server_hostname"],
                fields["source_context"], fields["connector_id"], source, event_id, internal, message_id,
                f"{serial:08x}-0000-4000-8000-{int.from_bytes(digest, 'big'):012x}", tuple(recipients),
                fields["recipient_status"], size, count, "", None, subject, mail_from, mail_from, "Incoming", "",
                fields["original_client_ip"], fields["message_info"], fields["latency_ms"], fields["latency_type"],
                fields["event_data"], "Email", _schema(holder), holder.name, -serial, seq, holder.name,
            )  # fmt: skip

        session = f"08DCPROBE{serial:07X}"
        logged = [
            event(now_ms, server, "SMTP", "RECEIVE", 0, client_ip="192.0.2.250", client_hostname=helo, server_ip=ip,
                  server_hostname=server.name, connector_id=f"{server.name}\\Default Frontend {server.name}",
                  source_context=f"{session};{iso_utc(now_ms)};0", recipient_status=("To",) * count,
                  message_info="0cI:", original_client_ip="192.0.2.250",
                  event_data=(("FirstForestHop", server.fqdn), ("FromEntity", "Internet"), *_BASE_DATA)),
        ]  # fmt: skip
        deliverer = self._deliverer(server)
        if deliverer is not None and not path_blocked(self._ctx(server), [server, deliverer]):
            at = now_ms + latency
            logged.append(
                event(
                    at,
                    deliverer,
                    "STOREDRIVER",
                    "DELIVER",
                    1,
                    server_hostname=deliverer.fqdn,
                    source_context=f"ClientSubmitTime:{iso_utc(now_ms)}",
                    latency_ms=latency,
                    latency_type="EndToEnd",
                    message_info=iso_utc(now_ms),
                    event_data=(("E2ELatency", f"{latency / 1000:.3f}"), *_BASE_DATA),
                )
            )
        # A server with message tracking off (MessageTrackingLogEnabled $false) logs nothing of it.
        _log(self._state.timeline.origin, [e for e in logged if self._logs(e.server)])
        return f"250 2.6.0 {message_id} [InternalId={internal}, Hostname={server.fqdn}] Queued mail for delivery"

    def _logs(self, name: str) -> bool:
        server = self._state.scenario.server(name)
        return server is not None and server.message_tracking_log_enabled

    def _deliverer(self, receiver: ServerSpec) -> ServerSpec | None:
        """The server holding the active copy of the first mailbox database (after failover), if mounted."""
        ctx = self._ctx(receiver)
        down = consequences.down_servers(ctx)
        for database in consequences.effective_databases(ctx):
            active = next((c for c in database.copies if c.status == "Mounted"), None)
            if active is None or active.server.upper() in down:
                return None
            return self._state.scenario.server(active.server)
        return None
