"""The message tracking events a trace reads, parsed from ``Get-MessageTrackingLog`` output.

A trace needs more of each event than the tracking collector (``exporter.exchange.tracking_events``):
who sent it and to whom, the subject, the hosts on both ends of an SMTP hop and the remote host's
answer. ``Recipients`` and ``RecipientStatus`` are parallel lists (one entry per recipient), except on
RECEIVE where the status is the header the recipient came from (To, Cc, Bcc).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from exporter.exchange.clixml import flatten, parse_datetime

__all__ = ["INTRA_ORG_CONNECTOR", "TRACE_PROPERTIES", "TraceEvent", "parse_trace_event"]

#: The send connector Exchange uses between its own servers and to its Mailbox Transport Delivery service.
INTRA_ORG_CONNECTOR = "Intra-Organization SMTP Send Connector"

#: What a trace selects (``Select-Object -Property``): every field of a MessageTrackingEvent it shows.
TRACE_PROPERTIES = (
    "Timestamp",
    "EventId",
    "Source",
    "InternalMessageId",
    "MessageId",
    "Sender",
    "Recipients",
    "RecipientStatus",
    "MessageSubject",
    "ClientHostname",
    "ServerHostname",
    "ConnectorId",
    "SourceContext",
    "Reference",
    "Directionality",
)


@dataclass(frozen=True)
class TraceEvent:
    """One tracking event as a trace uses it. ``server`` is the server whose log holds it."""

    server: str
    timestamp: datetime
    event_id: str
    source: str = ""
    internal_id: str = ""
    message_id: str = ""
    sender: str = ""
    recipients: tuple[str, ...] = ()
    recipient_status: tuple[str, ...] = ()
    subject: str = ""
    client_hostname: str = ""
    server_hostname: str = ""
    connector_id: str = ""
    source_context: str = ""
    reference: tuple[str, ...] = ()
    directionality: str = ""

    def involves(self, recipient: str) -> bool:
        """Whether this event concerns ``recipient`` (events that list no recipient concern them all)."""
        return not self.recipients or any(r.lower() == recipient.lower() for r in self.recipients)

    def status_for(self, recipient: str) -> str:
        """The RecipientStatus entry of ``recipient`` (the only one when all recipients share it); ""."""
        if len(self.recipient_status) == len(self.recipients):
            for address, status in zip(self.recipients, self.recipient_status, strict=True):
                if address.lower() == recipient.lower():
                    return status
        return self.recipient_status[0] if len(set(self.recipient_status)) == 1 else ""

    @property
    def external_send(self) -> bool:
        """A SEND over SMTP through a connector other than the one between Exchange servers: the message
        left the organisation (the Internet, a smart host, a partner, an Edge server)."""
        connector = self.connector_id.strip().lower()
        return self.event_id == "SEND" and self.source == "SMTP" and bool(connector) and connector != _INTRA.lower()

    @property
    def intra_org_send(self) -> bool:
        """A SEND to another Exchange server's Transport service or to a Mailbox Transport Delivery service."""
        return self.event_id == "SEND" and self.connector_id.strip().lower() == _INTRA.lower()


_INTRA = INTRA_ORG_CONNECTOR


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _texts(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value.strip(),) if value.strip() else ()
    if isinstance(value, list | tuple):
        return tuple(t for t in (_text(v) for v in value) if t)
    return (_text(value),) if _text(value) else ()


def parse_trace_event(obj: Any, server: str) -> TraceEvent | None:
    """One output object of Get-MessageTrackingLog (with or without Select-Object); None without a
    usable Timestamp."""
    props = flatten(obj)
    stamp = parse_datetime(props.get("Timestamp"))
    if stamp is None:
        return None
    return TraceEvent(
        server=server,
        timestamp=stamp,
        event_id=_text(props.get("EventId")).upper(),
        source=_text(props.get("Source")).upper(),
        internal_id=_text(props.get("InternalMessageId")),
        message_id=_text(props.get("MessageId")),
        sender=_text(props.get("Sender")),
        recipients=_texts(props.get("Recipients")),
        recipient_status=_texts(props.get("RecipientStatus")),
        subject=_text(props.get("MessageSubject")),
        client_hostname=_text(props.get("ClientHostname")),
        server_hostname=_text(props.get("ServerHostname")),
        connector_id=_text(props.get("ConnectorId")),
        source_context=_text(props.get("SourceContext")),
        reference=_texts(props.get("Reference")),
        directionality=_text(props.get("Directionality")),
    )
