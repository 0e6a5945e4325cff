"""Message tracking events as the collector reads them: the selected properties, the event record
and the decoders of one output object (pypsrp's object, or the raw CLIXML text of one message).

``decode_event`` is the collector's decoder: a text fast path over the CLIXML, then a real XML
parse; both raise ``ValueError`` on any shape they do not expect (and the generic ``parse_event``
over pypsrp's object handles it). ``RecipientStatus`` and ``Recipients`` are parallel string lists
(one entry per recipient).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from exporter.exchange.clixml import flatten, parse_datetime, parse_timespan
from exporter.exchange.wire import unescape_clixml

__all__ = [
    "SELECT_PROPERTIES",
    "TrackingEvent",
    "decode_event",
    "decode_event_text",
    "decode_event_xml",
    "parse_event",
]

SELECT_PROPERTIES = (
    "Timestamp",
    "EventId",
    "Source",
    "InternalMessageId",
    "MessageId",
    "RecipientStatus",
    "Recipients",  # parallel to RecipientStatus: the domain of each recipient a FAIL rejected
    "MessageLatency",
    "MessageLatencyType",
    "Directionality",
    "ConnectorId",
)


@dataclass(frozen=True)
class TrackingEvent:
    """The fields of one tracking event that the collector uses."""

    timestamp: datetime
    event_id: str
    source: str
    internal_id: str
    message_id: str
    recipient_status: tuple[str, ...]
    latency: float | None  # MessageLatency in seconds, when Exchange recorded it
    directionality: str = ""  # Incoming (from outside the organisation), Originating, Undefined
    connector_id: str = ""  # the receive or send connector of SMTP events
    recipients: tuple[str, ...] = ()  # one per RecipientStatus entry; only their domains are kept


def parse_event(obj: Any) -> TrackingEvent | None:
    """One output object to a TrackingEvent; None when it has no usable timestamp."""
    props = flatten(obj)
    ts = parse_datetime(props.get("Timestamp"))
    if ts is None:
        return None
    status = props.get("RecipientStatus")
    if isinstance(status, str):
        status = [status]
    recipients = props.get("Recipients")
    if isinstance(recipients, str):
        recipients = [recipients]
    latency = parse_timespan(props.get("MessageLatency")) if props.get("MessageLatency") else None

    def text(name: str) -> str:  # "" only when absent: an I64 InternalMessageId of 0 is "0", as in the fast paths
        value = props.get(name)
        return "" if value is None else str(value)

    return TrackingEvent(
        timestamp=ts,
        event_id=text("EventId").upper(),
        source=text("Source").upper(),
        internal_id=text("InternalMessageId"),
        message_id=text("MessageId"),
        recipient_status=tuple(str(s) for s in (status or []) if s),
        latency=latency,
        directionality=text("Directionality"),
        connector_id=text("ConnectorId"),
        recipients=tuple(str(r) for r in (recipients or []) if r),
    )


_WANTED = frozenset(SELECT_PROPERTIES)
_NUMBER_TAGS = frozenset({"I16", "I32", "I64", "U16", "U32", "U64"})


_SCALAR = re.compile(
    r'<(?P<tag>S|DT|I64|I32|U64|U32|Nil)\s+N="(?P<name>Timestamp|EventId|Source|InternalMessageId|MessageId'
    r'|Directionality|ConnectorId)"\s*(?:/>|>(?P<text>[^<]*)</(?P=tag)>)'  # <S N="X" />, <Nil N="X" />: ""
)


# An N attribute written other than N="..." (single quotes, whitespace around "=") is legal XML the
# patterns above would misread: such a message goes to the XML parser. (A literal first character
# keeps this scan at about 3 us per event; an alternation starting "&#|" made it 13 us.)
_UNUSUAL_NAME = re.compile(r"N(?:\s+=|=\s|\s*=\s*')")


_SCALAR_NAMES = frozenset(
    {"Timestamp", "EventId", "Source", "InternalMessageId", "MessageId", "Directionality", "ConnectorId"}
)
_NAMED = re.compile(
    r' N="(Timestamp|EventId|Source|InternalMessageId|MessageId|RecipientStatus|Recipients|MessageLatency'
    r'|Directionality|ConnectorId)"'
)
_STATUS = re.compile(
    r'<(?:Obj N="RecipientStatus"[^>]*>(?P<obj>.*?)</Obj>|(?P<nil>Nil) N="RecipientStatus"\s*/>)', re.S
)
_RECIPIENTS = re.compile(r'<(?:Obj N="Recipients"[^>]*>(?P<obj>.*?)</Obj>|(?P<nil>Nil) N="Recipients"\s*/>)', re.S)
_STATUS_ITEM = re.compile(r"<S>([^<]*)</S>")
# MessageLatency is an EnhancedTimeSpan object where Select-Object put it (its notes are written at
# depth 1) and its ToString text in Get-MessageTrackingLog's own output (remoting depth 1).
_LATENCY = re.compile(
    r'<(?:Obj N="MessageLatency"[^>]*>(?:(?!</Obj>).)*?<ToString>(?P<shown>[^<]*)</ToString>'
    r'|S N="MessageLatency">(?P<text>[^<]+)</S>'
    r'|(?P<nil>Nil) N="MessageLatency"\s*/>)',
    re.S,
)


def _timestamp(text: str | None) -> datetime | None:
    """ISO 8601 as pypsrp delivers DateTime (fast), else the tolerant parser; naive means UTC."""
    if text:
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return parse_datetime(text)
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return None


def _xml_text(raw: str) -> str:
    """Element text as XML delivers it: the five predefined entities (character references never
    reach here), then CLIXML's ``_xHHHH_`` escapes."""
    if "&" in raw:
        raw = raw.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"').replace("&apos;", "'")
        raw = raw.replace("&amp;", "&")  # last: "&amp;lt;" is the text "&lt;"
    return unescape_clixml(raw) if "_x" in raw else raw


def decode_event_text(xml: str) -> TrackingEvent | None:
    """Fastest path: the fields straight from the CLIXML text of one tracking event.

    CLIXML is a fixed, machine-written grammar; each field is matched by its element and ``N``
    name. Anything ambiguous (a field present twice, missing, or in an unexpected form) raises,
    and ``decode_event_xml`` parses the message with a real XML parser instead; a test checks the
    two agree on every event the simulator produces.
    """
    if "&#" in xml:
        raise ValueError("character references: leave them to the XML parser")
    if _UNUSUAL_NAME.search(xml):
        raise ValueError("an N attribute in an unusual form: leave it to the XML parser")
    scalars = _SCALAR.findall(xml)  # (tag, name, text) in C: no match objects
    fields = {name: text for _tag, name, text in scalars}
    if len(fields) != len(scalars):
        raise ValueError("a field appears twice")
    if "Timestamp" not in fields or '<DT N="Timestamp"' not in xml:
        raise ValueError("no DateTime Timestamp")
    named = _NAMED.findall(xml)  # a field in another form (an object, a reference) is not guessed at
    unique = set(named)
    if len(named) != len(unique) or not unique.isdisjoint(_SCALAR_NAMES - fields.keys()):
        raise ValueError("a field in an unexpected form")
    status = _text_list(xml, _STATUS, "RecipientStatus")
    recipients = _text_list(xml, _RECIPIENTS, "Recipients")
    latency = None
    found = _LATENCY.search(xml)
    if found is None:
        if ' N="MessageLatency"' in xml:
            raise ValueError("MessageLatency in an unexpected form")
    elif found["nil"] is None:
        latency = parse_timespan(_xml_text(found["shown"] if found["shown"] is not None else found["text"]))
    timestamp = _timestamp(fields["Timestamp"])
    if timestamp is None:
        return None
    return TrackingEvent(
        timestamp=timestamp,
        event_id=_xml_text(fields.get("EventId", "")).upper(),
        source=_xml_text(fields.get("Source", "")).upper(),
        internal_id=_xml_text(fields.get("InternalMessageId", "")),
        message_id=_xml_text(fields.get("MessageId", "")),
        recipient_status=status,
        latency=latency,
        directionality=_xml_text(fields.get("Directionality", "")),
        connector_id=_xml_text(fields.get("ConnectorId", "")),
        recipients=recipients,
    )


def _text_list(xml: str, pattern: re.Pattern[str], name: str) -> tuple[str, ...]:
    """A ``string[]`` property (``<Obj N="name"><LST><S>..``) from the CLIXML text; raises on any other form."""
    found = pattern.search(xml)
    if found is None:
        if f' N="{name}"' in xml:
            raise ValueError(f"{name} in an unexpected form")
        return ()
    if found["obj"] is None:
        return ()
    body = found["obj"]
    if "<Obj" in body or "<Ref" in body or "<LST>" not in body:
        raise ValueError(f"{name} is not a list of strings")
    return tuple(t for t in (_xml_text(m) for m in _STATUS_ITEM.findall(body)) if t)


def decode_event(xml: str) -> TrackingEvent | None:
    """The collector's output decoder: text fast path, then a real XML parse; raises if neither fits."""
    try:
        return decode_event_text(xml)
    except ValueError:
        return decode_event_xml(xml)


def decode_event_xml(xml: str) -> TrackingEvent | None:
    """Fast path: one output message's CLIXML straight to a TrackingEvent.

    Reads only the fields the collector uses, from the same XML pypsrp would decode (``<Props>``
    of a full MessageTrackingEvent or ``<MS>`` of a Select-Object result). Raises on any shape it
    does not expect, and the generic decoder then handles the message.
    """
    root = ET.fromstring(xml)
    if root.tag != "Obj":
        raise ValueError("not an object")
    found: dict[str, ET.Element] = {}
    for tag in ("Props", "MS"):  # adapted properties win over extended ones, as in clixml.flatten
        container = root.find(tag)
        if container is not None:
            for child in container:
                name = child.get("N")
                if name in _WANTED and name not in found:
                    found[name] = child
    stamp = found.get("Timestamp")
    if stamp is None or stamp.tag != "DT":
        raise ValueError("no Timestamp")
    timestamp = _timestamp(stamp.text)
    if timestamp is None:
        return None
    latency_el = found.get("MessageLatency")
    latency = None
    if latency_el is not None and latency_el.tag != "Nil":
        shown = latency_el.find("ToString") if latency_el.tag == "Obj" else latency_el
        if shown is None:
            raise ValueError("MessageLatency without a display value")
        latency = parse_timespan(shown.text)
    return TrackingEvent(
        timestamp=timestamp,
        event_id=_field_text(found.get("EventId")).upper(),
        source=_field_text(found.get("Source")).upper(),
        internal_id=_field_text(found.get("InternalMessageId")),
        message_id=_field_text(found.get("MessageId")),
        recipient_status=_string_list(found.get("RecipientStatus")),
        latency=latency,
        directionality=_field_text(found.get("Directionality")),
        connector_id=_field_text(found.get("ConnectorId")),
        recipients=_string_list(found.get("Recipients")),
    )


def _field_text(el: ET.Element | None) -> str:
    if el is None or el.tag == "Nil":
        return ""
    if el.tag == "S" or el.tag in _NUMBER_TAGS:
        return unescape_clixml(el.text)
    if el.tag == "Obj":  # an enum or value type: its display text
        shown = el.find("ToString")
        if shown is not None:
            return unescape_clixml(shown.text)
    raise ValueError(f"unexpected <{el.tag}>")


def _string_list(el: ET.Element | None) -> tuple[str, ...]:
    if el is None or el.tag == "Nil":
        return ()
    if el.tag == "S":
        return (unescape_clixml(el.text),) if el.text else ()
    items = el.find("LST") if el.tag == "Obj" else None
    if items is None or any(item.tag != "S" for item in items):
        raise ValueError("a string list property is not a list of strings")
    return tuple(text for text in (unescape_clixml(item.text) for item in items) if text)
