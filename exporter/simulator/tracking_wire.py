"""The wire form of message tracking events: a fast CLIXML writer for MessageTrackingEvent.

:func:`event_clixml` writes one event at remoting depth exactly as
``clixml.write_clixml(objects.message_tracking_event(...))`` would, ten times faster (fragments are
cached by value because RefIds follow from the shape); :func:`select_clixml` writes
``Select-Object -Property`` of one event as sent; :class:`SelectableEvent` is the output-record source
the pipeline uses for an event. The type names and ``timespan_text`` are shared with the reference
object graph in ``objects``. The events themselves are generated in ``tracking``.
"""

from __future__ import annotations

import base64
import datetime
import functools
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING
from xml.etree import ElementTree as ET

from exporter.simulator.clixml import _datetime_text, clixml_string, write_clixml
from exporter.simulator.depth import UNLIMITED

if TYPE_CHECKING:
    from exporter.simulator.tracking import TrackingEvent, TrackingLog

__all__ = [
    "LATENCY_TYPE_MEMBERS",
    "MESSAGE_TRACKING_TYPE_NAMES",
    "PROPERTY_NAMES",
    "SelectableEvent",
    "event_clixml",
    "local_datetime",
    "select_clixml",
    "timespan_text",
]

MESSAGE_TRACKING_TYPE_NAMES = [
    "Microsoft.Exchange.Management.TransportLogSearchTasks.MessageTrackingEvent",
    "System.Object",
]
LATENCY_TYPE_NAME = "Microsoft.Exchange.Management.TransportLogSearchTasks.MessageLatencyType"
LATENCY_TYPE_MEMBERS = {"None": 0, "LocalServer": 1, "EndToEnd": 2}
ENHANCED_TIMESPAN_TYPE_NAMES = ["Microsoft.Exchange.Data.EnhancedTimeSpan", "System.ValueType", "System.Object"]
STRING_ARRAY_TYPE_NAMES = ["System.String[]", "System.Array", "System.Object"]
_MSCORLIB = "mscorlib, Version=4.0.0.0, Culture=neutral, PublicKeyToken=b77a5c561934e089"
_KVP = f"System.Collections.Generic.KeyValuePair`2[[System.String, {_MSCORLIB}],[System.Object, {_MSCORLIB}]]"
KEY_VALUE_PAIR_TYPE_NAMES = [_KVP, "System.ValueType", "System.Object"]
KEY_VALUE_ARRAY_TYPE_NAMES = [f"{_KVP}[]", "System.Array", "System.Object"]


def timespan_text(ticks: int) -> str:
    """.NET ``TimeSpan.ToString()`` (``[-][d.]hh:mm:ss[.fffffff]``)."""
    sign = "-" if ticks < 0 else ""
    ticks = abs(ticks)
    seconds, fraction = divmod(ticks, 10_000_000)
    minutes, secs = divmod(seconds, 60)
    hours, mins = divmod(minutes, 60)
    days, hrs = divmod(hours, 24)
    text = f"{sign}{f'{days}.' if days else ''}{hrs:02d}:{mins:02d}:{secs:02d}"
    return f"{text}.{fraction:07d}" if fraction else text


# ---------------------------------------------------------------------------------------------
# Fast CLIXML writer (equal to write_clixml(objects.message_tracking_event(...)))
# ---------------------------------------------------------------------------------------------


def _tn(names: Sequence[str], ref: int) -> str:
    return f'<TN RefId="{ref}">' + "".join(f"<T>{clixml_string(n)}</T>" for n in names) + "</TN>"


@functools.lru_cache(maxsize=4)
def _top_serialization() -> str:
    from exporter.simulator.objects import serialization_data

    name = MESSAGE_TRACKING_TYPE_NAMES[0]
    return base64.b64encode(serialization_data(name, name)).decode()


@functools.lru_cache(maxsize=4096)
def _timespan_serialization(text: str) -> str:
    from exporter.simulator.objects import serialization_data

    return base64.b64encode(serialization_data(ENHANCED_TIMESPAN_TYPE_NAMES[0], text)).decode()


def _latency_type_names() -> list[str]:
    from exporter.simulator.objects import message_latency_type

    return list(type(message_latency_type("None")).PSObject.type_names)


_TN_TEXT: dict[str, str] = {}


def _db(value: float) -> str:
    return str(float(value)).upper()


def local_datetime(ts_ms: int, tz: datetime.tzinfo) -> datetime.datetime:
    """The event time as a server-local datetime (millisecond precision)."""
    return datetime.datetime.fromtimestamp(ts_ms // 1000, tz).replace(microsecond=(ts_ms % 1000) * 1000)


PROPERTY_NAMES: tuple[str, ...] = (
    "Timestamp", "ClientIp", "ClientHostname", "ServerIp", "ServerHostname", "SourceContext", "ConnectorId",
    "Source", "EventId", "InternalMessageId", "MessageId", "NetworkMessageId", "Recipients", "RecipientStatus",
    "TotalBytes", "RecipientCount", "RelatedRecipientAddress", "Reference", "MessageSubject", "Sender",
    "ReturnPath", "Directionality", "TenantId", "OriginalClientIp", "MessageInfo", "MessageLatency",
    "MessageLatencyType", "EventData", "TransportTrafficType", "SchemaVersion",
)  # fmt: skip

_LATENCY_TN: list[str] = []


_NEEDS_ESCAPE = re.compile('[&<>"_\u0000-\u001f\u007f-\u009f\ud800-\udfff\U00010000-\U0010ffff]')


def _esc(value: str) -> str:
    """``clixml_string`` with a fast path for the (usual) strings that need no escaping."""
    return clixml_string(value) if _NEEDS_ESCAPE.search(value) else value


def _sv(name: str, value: str) -> str:
    return f'<S N="{name}">{_esc(value)}</S>' if value else f'<S N="{name}" />'


_SECOND_TEXT: dict[tuple[int, int], str] = {}


def _dt_text(ts_ms: int, tz: datetime.tzinfo) -> str:
    """``clixml._datetime_text(local_datetime(ts_ms, tz))`` with a per-second cache."""
    offset = tz.utcoffset(None)
    minutes = 0 if offset is None else int(offset.total_seconds() // 60)
    key = (ts_ms // 1000, minutes)
    text = _SECOND_TEXT.get(key)
    if text is None:
        if len(_SECOND_TEXT) > 100_000:
            _SECOND_TEXT.clear()
        local = datetime.datetime.fromtimestamp(key[0], tz)
        zone = _datetime_text(local)[19:]
        text = _SECOND_TEXT[key] = local.strftime("%Y-%m-%dT%H:%M:%S") + "\0" + zone
    fraction = ts_ms % 1000
    if fraction:
        return text.replace("\0", f".{fraction:03d}000")
    return text.replace("\0", "")


_TN_CACHE: dict[tuple[str, int], str] = {}


class _Refs:
    """RefId counters of one object graph (Obj and TN ids in order of first appearance)."""

    __slots__ = ("objs", "tns")

    def __init__(self) -> None:
        self.objs = 0
        self.tns: dict[str, int] = {}

    @classmethod
    def after_top(cls) -> _Refs:
        """The counters after the top-level MessageTrackingEvent (Obj 0, TN 0)."""
        refs = cls()
        refs.objs = 1
        refs.tns[MESSAGE_TRACKING_TYPE_NAMES[0]] = 0
        return refs

    def obj(self) -> int:
        self.objs += 1
        return self.objs - 1

    def tn(self, names: Sequence[str]) -> str:
        first = names[0]
        ref = self.tns.get(first)
        if ref is not None:
            return f'<TNRef RefId="{ref}" />'
        ref = self.tns[first] = len(self.tns)
        key = (first, ref)
        text = _TN_CACHE.get(key)
        if text is None:
            text = _TN_CACHE[key] = _tn(names, ref)
        return text


def _str_array(refs: _Refs, name: str, values: Sequence[str]) -> str:
    items = "".join([f"<S>{_esc(v)}</S>" if v else "<S />" for v in values])
    return f'<Obj N="{name}" RefId="{refs.obj()}">{refs.tn(STRING_ARRAY_TYPE_NAMES)}<LST>{items}</LST></Obj>'


def _timespan_text_xml(refs: _Refs, ms: int) -> str:
    ticks = ms * 10_000
    text = timespan_text(ticks)
    total = ticks / 10_000_000
    seconds, frac_ms = divmod(abs(ms), 1000)
    minutes, secs = divmod(seconds, 60)
    hours, mins = divmod(minutes, 60)
    days, hrs = divmod(hours, 24)
    sign = (ms > 0) - (ms < 0)
    return (
        f'<Obj N="MessageLatency" RefId="{refs.obj()}">{refs.tn(ENHANCED_TIMESPAN_TYPE_NAMES)}'
        f"<ToString>{text}</ToString><Props>"
        f'<I32 N="Days">{days}</I32><I32 N="Hours">{hrs}</I32><I32 N="Milliseconds">{frac_ms}</I32>'
        f'<I32 N="Minutes">{mins}</I32><I32 N="Seconds">{secs}</I32><I64 N="Ticks">{ticks}</I64>'
        f'<Db N="TotalDays">{_db(total / 86400)}</Db><Db N="TotalHours">{_db(total / 3600)}</Db>'
        f'<Db N="TotalMilliseconds">{_db(float(ms))}</Db><Db N="TotalMinutes">{_db(total / 60)}</Db>'
        f'<Db N="TotalSeconds">{_db(total)}</Db><I32 N="Sign">{sign}</I32></Props>'
        f'<MS><BA N="SerializationData">{_timespan_serialization(text)}</BA></MS></Obj>'
    )


def _latency_type_xml(refs: _Refs, name: str) -> str:
    if not _LATENCY_TN:
        _LATENCY_TN.extend(_latency_type_names())
    return (
        f'<Obj N="MessageLatencyType" RefId="{refs.obj()}">{refs.tn(_LATENCY_TN)}'
        f"<ToString>{name}</ToString><I32>{LATENCY_TYPE_MEMBERS[name]}</I32></Obj>"
    )


def _event_data_xml(refs: _Refs, items: Sequence[tuple[str, str]]) -> str:
    head = f'<Obj N="EventData" RefId="{refs.obj()}">{refs.tn(KEY_VALUE_ARRAY_TYPE_NAMES)}<LST>'
    body = "".join(
        [
            f'<Obj RefId="{refs.obj()}">{refs.tn(KEY_VALUE_PAIR_TYPE_NAMES)}'
            f"<ToString>{_esc(f'[{key}, {value}]')}</ToString>"
            f"<Props>{_sv('Key', key)}{_sv('Value', value)}</Props></Obj>"
            for key, value in items
        ]
    )
    return f"{head}{body}</LST></Obj>"


_FRAGMENTS: dict[tuple[object, ...], str] = {}


def _fragment(key: tuple[object, ...]) -> str:
    """Cached CLIXML of a group of plain properties; ``key`` is (group, *values)."""
    text = _FRAGMENTS.get(key)
    if text is None:
        if len(_FRAGMENTS) > 200_000:
            _FRAGMENTS.clear()
        names = _GROUPS[key[0]]  # type: ignore[index]
        if key[0] == "recipients":  # always the first nested object: RefId 1, TN 1
            text = _str_array(_Refs.after_top(), "Recipients", key[1])  # type: ignore[arg-type]
        else:
            text = "".join(_sv(name, value) for name, value in zip(names, key[1:], strict=True))  # type: ignore[arg-type]
        _FRAGMENTS[key] = text
    return text


_GROUPS: dict[str, tuple[str, ...]] = {
    "hosts": ("ClientIp", "ClientHostname", "ServerIp", "ServerHostname"),
    "kind": ("ConnectorId", "Source", "EventId"),
    "ids": ("InternalMessageId", "MessageId", "NetworkMessageId"),
    "recipients": ("Recipients",),
    "people": ("MessageSubject", "Sender", "ReturnPath", "Directionality", "TenantId"),
    "tail": ("TransportTrafficType", "SchemaVersion"),
}


def _cached(key: tuple[object, ...], build: Callable[[], str]) -> str:
    text = _FRAGMENTS.get(key)
    if text is None:
        if len(_FRAGMENTS) > 200_000:
            _FRAGMENTS.clear()
        text = _FRAGMENTS[key] = build()
    return text


def _refs_at(objs: int, tns: Sequence[Sequence[str]]) -> _Refs:
    refs = _Refs()
    refs.objs = objs
    for index, names in enumerate(tns):
        refs.tns[names[0]] = index
    return refs


_TNS_BASE = (MESSAGE_TRACKING_TYPE_NAMES, STRING_ARRAY_TYPE_NAMES)


def event_clixml(event: TrackingEvent, tz: datetime.tzinfo, culture: str = "en-US") -> bytes:
    """CLIXML of one MessageTrackingEvent at remoting depth (texts are pre-rendered; ``culture`` is
    for symmetry): equal to ``write_clixml(objects.message_tracking_event(...))``.

    At depth 1 the string arrays stay lists of strings, while MessageLatency, MessageLatencyType
    and each EventData pair are written as their ToString (see ``depth.py``). RefIds follow from
    the shape (Obj 0 the event, 1 Recipients, 2 RecipientStatus, then the optional Reference and
    EventData; TN 0 the event, 1 String[], 2 the pair array), so fragments are cached by value.
    """
    e = event
    status = _cached(
        ("status", e.recipient_status),
        lambda: _str_array(_refs_at(2, _TNS_BASE), "RecipientStatus", e.recipient_status),
    )
    objs = 3
    if e.reference is None:
        reference = '<Nil N="Reference" />'
    else:
        reference = _cached(
            ("reference", e.reference), lambda: _str_array(_refs_at(3, _TNS_BASE), "Reference", e.reference or ())
        )
        objs = 4
    latency = (
        '<Nil N="MessageLatency" />'
        if e.latency_ms is None
        else f'<S N="MessageLatency">{timespan_text(e.latency_ms * 10_000)}</S>'
    )
    at = objs
    event_data = _cached(
        ("pairs", e.event_data, at), lambda: _event_data_strings(_refs_at(at, _TNS_BASE), e.event_data)
    )
    total = '<Nil N="TotalBytes" />' if e.total_bytes is None else f'<I32 N="TotalBytes">{e.total_bytes}</I32>'
    count = (
        '<Nil N="RecipientCount" />'
        if e.recipient_count is None
        else f'<I32 N="RecipientCount">{e.recipient_count}</I32>'
    )
    fragment = _fragment
    return (
        f"{_TOP_HEAD}"
        f'<DT N="Timestamp">{_dt_text(e.ts_ms, tz)}</DT>'
        f"{fragment(('hosts', e.client_ip, e.client_hostname, e.server_ip, e.server_hostname))}"
        f"{_sv('SourceContext', e.source_context)}"
        f"{fragment(('kind', e.connector_id, e.source, e.event_id))}"
        f"{fragment(('ids', e.internal_message_id, e.message_id, e.network_message_id))}"
        f"{fragment(('recipients', e.recipients))}"
        f"{status}{total}{count}{_sv('RelatedRecipientAddress', e.related_recipient_address)}{reference}"
        f"{fragment(('people', e.message_subject, e.sender, e.return_path, e.directionality, e.tenant_id))}"
        f"{_sv('OriginalClientIp', e.original_client_ip)}{_sv('MessageInfo', e.message_info)}"
        f"{latency}{_sv('MessageLatencyType', e.latency_type)}{event_data}"
        f"{fragment(('tail', e.transport_traffic_type, e.schema_version))}"
        f'</Props><MS><BA N="SerializationData">{_top_serialization()}</BA></MS></Obj>'
    ).encode()


def _event_data_strings(refs: _Refs, items: Sequence[tuple[str, str]]) -> str:
    """EventData at depth 0: the pair array (a list keeps its shape), each pair its ``[Key, Value]``."""
    head = f'<Obj N="EventData" RefId="{refs.obj()}">{refs.tn(KEY_VALUE_ARRAY_TYPE_NAMES)}<LST>'
    return head + "".join([f"<S>{_esc(f'[{key}, {value}]')}</S>" for key, value in items]) + "</LST></Obj>"


_TOP_HEAD = (
    f'<Obj RefId="0">{_tn(MESSAGE_TRACKING_TYPE_NAMES, 0)}<ToString>{MESSAGE_TRACKING_TYPE_NAMES[0]}</ToString><Props>'
)


_ATTRS = {
    "ClientIp": "client_ip",
    "ClientHostname": "client_hostname",
    "ServerIp": "server_ip",
    "ServerHostname": "server_hostname",
    "SourceContext": "source_context",
    "ConnectorId": "connector_id",
    "Source": "source",
    "EventId": "event_id",
    "InternalMessageId": "internal_message_id",
    "MessageId": "message_id",
    "NetworkMessageId": "network_message_id",
    "Recipients": "recipients",
    "RecipientStatus": "recipient_status",
    "TotalBytes": "total_bytes",
    "RecipientCount": "recipient_count",
    "RelatedRecipientAddress": "related_recipient_address",
    "Reference": "reference",
    "MessageSubject": "message_subject",
    "Sender": "sender",
    "ReturnPath": "return_path",
    "Directionality": "directionality",
    "TenantId": "tenant_id",
    "OriginalClientIp": "original_client_ip",
    "MessageInfo": "message_info",
    "MessageLatencyType": "latency_type",
    "TransportTrafficType": "transport_traffic_type",
    "SchemaVersion": "schema_version",
}


def select_clixml(event: TrackingEvent, names: Sequence[str], tz: datetime.tzinfo) -> bytes:
    """``Select-Object -Property names`` of one event as sent: equal to ``depth.cut`` of
    ``clixml.select_object`` on the whole event (its notes are written at depth 1, so nested
    objects keep their properties; a property bag has no ToString on the wire).

    ``names`` are already resolved to the wire spelling; unknown names become ``Nil``.
    """
    refs = _Refs()
    head = f'<Obj RefId="{refs.obj()}">' + refs.tn(
        [
            f"Selected.{MESSAGE_TRACKING_TYPE_NAMES[0]}",
            "System.Management.Automation.PSCustomObject",
            "System.Object",
        ]
    )
    # Render only the selected properties, in the selected order (RefIds follow that order).
    rendered = [
        _one_property(event, name, tz, refs) if name in PROPERTY_NAMES else f'<Nil N="{clixml_string(name)}" />'
        for name in names
    ]
    return (f"{head}<MS>" + "".join(rendered) + "</MS></Obj>").encode("utf-8")


def _one_property(event: TrackingEvent, name: str, tz: datetime.tzinfo, refs: _Refs) -> str:
    e = event
    if name == "Timestamp":
        return f'<DT N="Timestamp">{_dt_text(e.ts_ms, tz)}</DT>'
    if name in ("Recipients", "RecipientStatus", "Reference"):
        values = getattr(e, _ATTRS[name])
        return f'<Nil N="{name}" />' if values is None else _str_array(refs, name, values)
    if name in ("TotalBytes", "RecipientCount"):
        number = getattr(e, _ATTRS[name])
        return f'<Nil N="{name}" />' if number is None else f'<I32 N="{name}">{number}</I32>'
    if name == "MessageLatency":
        return '<Nil N="MessageLatency" />' if e.latency_ms is None else _timespan_text_xml(refs, e.latency_ms)
    if name == "MessageLatencyType":
        return _latency_type_xml(refs, e.latency_type)
    if name == "EventData":
        return _event_data_xml(refs, e.event_data)
    return _sv(name, getattr(e, _ATTRS[name]))


class SelectableEvent:
    """An event's output record source: its CLIXML on demand, and Select-Object without parsing it."""

    __slots__ = ("event", "log", "tz")

    def __init__(self, event: TrackingEvent, log: TrackingLog) -> None:
        self.event = event
        self.log = log
        self.tz = log.tz

    def clixml(self) -> bytes:
        """The MessageTrackingEvent's CLIXML at remoting depth (cached by the log)."""
        return self.log.clixml(self.event)

    def live(self) -> ET.Element:
        """The whole MessageTrackingEvent (what Select-Object reads on the server)."""
        from exporter.simulator.objects import message_tracking_event

        return ET.fromstring(write_clixml(message_tracking_event(self.event, self.tz), UNLIMITED))

    def property_names(self) -> list[str]:
        """Wire order: the adapted properties, then SerializationData."""
        return [*PROPERTY_NAMES, "SerializationData"]

    def select(self, names: Sequence[str]) -> bytes | None:
        """The Select-Object result, or None when SerializationData is asked for (generic path)."""
        if "SerializationData" in names:
            return None
        return select_clixml(self.event, names, self.tz)
