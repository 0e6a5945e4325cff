"""Exchange objects as psrpcore objects, with real Exchange type names and wire shapes.

Top-level objects carry their values as adapted properties (``<Props>``) plus a ``SerializationData``
note property (``<MS>``), like Exchange's remote PowerShell output. Enums are ``<Obj>`` with the enum's
type-name chain, ``<ToString>`` (the name) and the integer (``I32``; ``I16`` for DeliveryType), so
pypsrp gives objects whose ``str()`` is the name. Exchange value types (ADObjectId, ServerVersion,
EnhancedTimeSpan, ...) are objects whose ToString is the display text; multi-valued properties are
``MultiValuedProperty`1[...]`` objects holding an ``<LST>``; .NET arrays are ``System.Int32[]`` or
``System.String[]``; DateTimes are ``<DT>`` with the server's UTC offset.

The property lists follow the real Exchange 2019 captures (Get-ExchangeServer, built in
``objects_server``) and the Get-Queue reference (``reference/exchange-cmdlets.md`` §1.1/§1.7). Items
not seen in a capture (QueueIdentity props, QueueType values) are inferred and documented as such in
``docs``; Get-Queue and Get-MessageTrackingLog objects have no capture at all (inferred shapes).
These are the objects the server holds: what a remote session sends of them is their cut to
serialization depth 1 (``depth.py``).
"""

from __future__ import annotations

import datetime
import hashlib
import struct
import types
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from psrpcore.types import (
    PSByte,
    PSDouble,
    PSEnumBase,
    PSFlagBase,
    PSInt,
    PSInt16,
    PSInt64,
    PSList,
    PSNoteProperty,
    PSObject,
    PSType,
    add_note_property,
)

from exporter.simulator.scenario import DELIVERY_TYPES, QUEUE_STATUSES, SERVER_ROLES, Scenario, ServerSpec
from exporter.simulator.timeline import QueueSnapshot, Timeline

__all__ = [
    "QUEUE_TYPE_NAMES",
    "message_latency_type",
    "message_tracking_event",
    "queue_info",
]

QUEUE_TYPE_NAMES = [
    "Microsoft.Exchange.Data.QueueViewer.PropertyBagBasedQueueInfo",
    "Microsoft.Exchange.Data.QueueViewer.ExtensibleQueueInfo",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object",
]
_MSCORLIB = "mscorlib, Version=4.0.0.0, Culture=neutral, PublicKeyToken=b77a5c561934e089"
_MVP_STRING = f"Microsoft.Exchange.Data.MultiValuedProperty`1[[System.String, {_MSCORLIB}]]"
_ADMIN_GROUP = "Exchange Administrative Group (FYDIBOHF23SPDLT)"

# ---------------------------------------------------------------------------------------------
# Enums
# ---------------------------------------------------------------------------------------------
_ENUMS: dict[str, type] = {}


def _enum_class(
    type_name: str, members: Mapping[str, int], *, flags: bool = False, int16: bool = False, twin: int = 0
) -> type:
    """A psrpcore enum class for a .NET enum (cached; not registered for rehydration)."""
    key = f"{type_name}#{twin}" if twin else type_name
    cached = _ENUMS.get(key)
    if cached is not None:
        return cached

    def body(ns: dict[str, Any]) -> None:
        for name, value in members.items():
            # psrpcore normalises a member called 'none' to 'None' in ToString.
            ns["none" if name == "None" else name] = value

    base: type = PSFlagBase if flags else PSEnumBase
    cls = types.new_class(type_name.rsplit(".", 1)[-1], (base,), {"base_type": PSInt16 if int16 else PSInt}, body)
    cls = PSType([type_name], rehydrate=False)(cls)
    _ENUMS[key] = cls
    return cls


def enum_value(type_name: str, members: Mapping[str, int], name: str, *, int16: bool = False, twin: int = 0) -> Any:
    """The member ``name`` of the .NET enum ``type_name`` (serialised as Obj + TN + ToString + I32).

    ``twin`` gives the member of a separate but identical class: PowerShell writes every enum value in
    full (a value type is never a ``<Ref>``), while a Python enum member is one object that psrpcore and
    the fast writer would reference the second time one object holds it; a second property of the same
    object with the same enum type takes ``twin=1``."""
    cls = _enum_class(type_name, members, int16=int16, twin=twin)
    return cls["none" if name == "None" else name]  # type: ignore[index]


def flags_value(type_name: str, members: Mapping[str, int], names: Iterable[str]) -> Any:
    """A flags enum value combining ``names`` (ToString ``A, B``; ``None`` for no flag)."""
    cls = _enum_class(type_name, members, flags=True)
    value = 0
    for name in names:
        value |= members[name]
    return cls(value)


_DELIVERY_TYPE_MEMBERS = {name: i for i, name in enumerate(DELIVERY_TYPES)}
SERVER_ROLE_TYPE = "Microsoft.Exchange.Data.Directory.SystemConfiguration.ServerRole"
#: ServerRole flags (one class per type name: connectors' TransportRole uses FrontendTransport too).
SERVER_ROLE_MEMBERS = {**SERVER_ROLES, "FrontendTransport": 16384}
OBJECT_STATES = {"New": 0, "Unchanged": 1, "Changed": 2, "Deleted": 3}
_NEXT_HOP_CATEGORY = {"Internal": 0, "External": 1}
_RISK_LEVEL = {"Normal": 0, "Bulk": 1, "High": 2, "Low": 3}
_QUEUE_TYPE = {"Undefined": 0, "Delivery": 1, "Poison": 2, "Submission": 3, "Unreachable": 4, "Shadow": 5}


def object_state(name: str) -> Any:
    """An ``ObjectState`` enum value (New, Unchanged, Changed, Deleted)."""
    return enum_value("Microsoft.Exchange.Data.ObjectState", OBJECT_STATES, name)


# ---------------------------------------------------------------------------------------------
# Generic builders
# ---------------------------------------------------------------------------------------------


def serialization_data(type_name: str, payload: str = "") -> bytes:
    """A small BinaryFormatter-like blob standing in for Exchange's ``SerializationData``.

    Clients must ignore it (it is opaque, and signed since the Jan-2023 SU); it is here so objects
    have the same members as real ones. The bytes are deterministic for a given type and payload.
    """
    assembly = b"Microsoft.Exchange.Data, Version=15.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35"
    name = type_name.encode()
    digest = hashlib.sha256(f"{type_name}|{payload}".encode()).digest()[:16]
    return b"".join(
        [
            b"\x00\x01\x00\x00\x00\xff\xff\xff\xff\x01\x00\x00\x00\x00\x00\x00\x00\x0c\x02\x00\x00\x00",
            bytes([len(assembly)]),
            assembly,
            b"\x05\x01\x00\x00\x00",
            bytes([len(name)]),
            name,
            struct.pack("<I", 1),
            digest,
            b"\x0b",
        ]
    )


def ex_object(
    type_names: Sequence[str],
    props: Sequence[tuple[str, Any]],
    to_string: str | None = None,
    *,
    serialization: bool = True,
) -> PSObject:
    """A PSObject with explicit type names, adapted properties and optional SerializationData."""
    obj = PSObject()
    obj.PSObject.type_names = list(type_names)
    if to_string is not None:
        obj.PSObject.to_string = to_string
    adapted = obj.PSObject.adapted_properties
    for name, value in props:
        prop = PSNoteProperty(name)  # set the value afterwards: cheaper than PSNoteProperty(name, value)
        prop.set_value(value, obj)
        adapted.append(prop)
    if serialization:
        add_note_property(obj, "SerializationData", serialization_data(type_names[0], to_string or ""))
    return obj


def typed_list(type_names: Sequence[str], values: Iterable[Any]) -> PSList:
    """A list serialised as ``<Obj><TN>...</TN><LST>...</LST></Obj>`` with the given type names."""
    items = PSList(values)
    items.PSObject.type_names = list(type_names)
    return items


def int_array(values: Iterable[int]) -> PSList:
    """A .NET ``int[]``."""
    return typed_list(["System.Int32[]", "System.Array", "System.Object"], values)


def string_array(values: Iterable[str]) -> PSList:
    """A .NET ``string[]``."""
    return typed_list(["System.String[]", "System.Array", "System.Object"], values)


def mvp_strings(values: Iterable[str]) -> PSList:
    """An Exchange ``MultiValuedProperty<string>``."""
    return typed_list([_MVP_STRING, "Microsoft.Exchange.Data.MultiValuedPropertyBase", "System.Object"], values)


def _domain_dn(domain: str) -> str:
    return ",".join(f"DC={part}" for part in domain.split("."))


def ad_object_id(
    scenario: Scenario, dn: str, canonical: str, name: str, guid: uuid.UUID, *, parent: str | None = None
) -> PSObject:
    """An ``ADObjectId`` (Identity, Site, ObjectCategory ...): ToString is the canonical name.

    ``Parent`` is the canonical name's parent unless given (configuration objects whose ToString is
    short, such as a server or a connector, show their container's name there).
    """
    domain = scenario.organisation.domain
    parts = dn.split(",")
    if parent is None:
        parent = canonical.rsplit("/", 1)[0] if "/" in canonical else ""
    return ex_object(
        ["Microsoft.Exchange.Data.Directory.ADObjectId", "Microsoft.Exchange.Data.ObjectId", "System.Object"],
        [
            ("OrgHierarchyToIgnore", None),
            ("IsDeleted", False),
            ("Rdn", parts[0]),
            ("Parent", parent),
            ("Depth", len(parts) - 1),
            ("DistinguishedName", dn),
            ("IsRelativeDn", False),
            ("DomainId", domain),
            ("PartitionGuid", uuid.uuid5(uuid.NAMESPACE_DNS, f"partition.{domain}")),
            ("PartitionFQDN", domain),
            ("ObjectGuid", guid),
            ("Name", name),
        ],
        canonical,
    )


def schema_category(scenario: Scenario, class_name: str) -> PSObject:
    """The ``ObjectCategory`` of an AD object: the schema class ``class_name`` (ms-Exch-...)."""
    domain = scenario.organisation.domain
    return ad_object_id(
        scenario,
        f"CN={class_name},CN=Schema,CN=Configuration,{_domain_dn(domain)}",
        f"{domain}/Configuration/Schema/{class_name}",
        class_name,
        uuid.uuid5(uuid.NAMESPACE_DNS, f"schema.{class_name.lower()}.{domain}"),
    )


def enhanced_timespan(value: datetime.timedelta) -> PSObject:
    """An ``EnhancedTimeSpan`` (ToString like ``30.00:00:00`` / ``00:05:00``)."""
    total = int(value.total_seconds())
    days, rest = divmod(abs(total), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    if days:
        text = f"{days}.{text}"
    ticks = total * 10_000_000
    return ex_object(
        ["Microsoft.Exchange.Data.EnhancedTimeSpan", "System.ValueType", "System.Object"],
        [
            ("Days", days),
            ("Hours", hours),
            ("Milliseconds", 0),
            ("Minutes", minutes),
            ("Seconds", seconds),
            ("Ticks", PSInt64(ticks)),
            ("TotalDays", PSDouble(total / 86400)),
            ("TotalHours", PSDouble(total / 3600)),
            ("TotalMilliseconds", PSDouble(total * 1000)),
            ("TotalMinutes", PSDouble(total / 60)),
            ("TotalSeconds", PSDouble(total)),
            ("Sign", (total > 0) - (total < 0)),
        ],
        text,
    )


_UNLIMITED_BYTES_TYPE_NAMES = [
    "Microsoft.Exchange.Data.Unlimited`1[[Microsoft.Exchange.Data.ByteQuantifiedSize, Microsoft.Exchange.Data, "
    "Version=15.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35]]",
    "System.ValueType",
    "System.Object",
]


def byte_quantified_size(num_bytes: int | None) -> PSObject:
    """An ``Unlimited<ByteQuantifiedSize>`` (ToString like ``10 MB (10,485,760 bytes)``)."""
    if num_bytes is None:
        return ex_object(
            _UNLIMITED_BYTES_TYPE_NAMES,
            [("IsUnlimited", True)],
            "Unlimited",
        )
    units = [("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)]
    text = f"{num_bytes} B ({num_bytes:,} bytes)"
    for unit, size in units:
        if num_bytes >= size:
            amount = num_bytes / size
            shown = f"{amount:.0f}" if amount == int(amount) else f"{amount:.3g}"
            text = f"{shown} {unit} ({num_bytes:,} bytes)"
            break
    return ex_object(
        ["Microsoft.Exchange.Data.ByteQuantifiedSize", "System.ValueType", "System.Object"],
        [],
        text,
    )


def unlimited_int(value: int | None) -> PSObject:
    """An ``Unlimited<int>`` (ToString is the number, or ``Unlimited``; no ``Value`` when unlimited)."""
    return ex_object(
        [
            f"Microsoft.Exchange.Data.Unlimited`1[[System.Int32, {_MSCORLIB}]]",
            "System.ValueType",
            "System.Object",
        ],
        [("IsUnlimited", True)] if value is None else [("IsUnlimited", False), ("Value", value)],
        "Unlimited" if value is None else str(value),
    )


def unlimited_bytes(num_bytes: int | None) -> PSObject:
    """An ``Unlimited<ByteQuantifiedSize>`` with a limit: ``Value`` is the size's display text."""
    if num_bytes is None:
        return byte_quantified_size(None)
    text = byte_quantified_size(num_bytes).PSObject.to_string
    return ex_object(
        _UNLIMITED_BYTES_TYPE_NAMES,
        [("IsUnlimited", False), ("Value", text)],
        text,
    )


def fqdn_object(name: str) -> PSObject:
    """A ``Fqdn`` (ToString the name)."""
    return ex_object(
        ["Microsoft.Exchange.Data.Fqdn", "Microsoft.Exchange.Data.SmtpDomain", "System.Object"],
        [("Domain", name)],
        name,
    )


def local_long_full_path(path: str) -> PSObject:
    """A ``LocalLongFullPath`` (DataPath, log paths)."""
    return ex_object(
        ["Microsoft.Exchange.Data.LocalLongFullPath", "Microsoft.Exchange.Data.LongPath", "System.Object"],
        [("PathName", path), ("IsLocalFull", True), ("IsUnc", False), ("DriveName", path[:2])],
        path,
    )


def server_version(server: ServerSpec) -> PSObject:
    """A ``ServerVersion`` (AdminDisplayVersion): ToString ``Version 15.2 (Build 1544.4)``."""
    major, minor, build, revision = server.version_parts
    return ex_object(
        ["Microsoft.Exchange.Data.ServerVersion", "System.Object"],
        [
            ("Major", major),
            ("Minor", minor),
            ("Build", build),
            ("Revision", revision),
            ("FilePatchLevelDescription", None),
        ],
        server.version,
    )


def exchange_object_version(text: str = "0.1 (8.0.535.0)") -> PSObject:
    """An ``ExchangeObjectVersion`` (ExchangeVersion)."""
    major, minor = text.split(" ", 1)[0].split(".")
    build = text.split("(", 1)[1].rstrip(")")
    return ex_object(
        ["Microsoft.Exchange.Data.ExchangeObjectVersion", "System.Object"],
        [
            ("NextMajorVersion", f"{int(major) + 1}.0 (0.0.0.0)"),
            ("NextMinorVersion", f"{major}.{int(minor) + 1} (0.0.0.0)"),
            ("Major", PSByte(int(major))),
            ("Minor", PSByte(int(minor))),
            ("ExchangeBuild", build),
        ],
        text,
    )


def organization_id() -> PSObject:
    """The on-premises (first organisation) ``OrganizationId``."""
    return ex_object(
        ["Microsoft.Exchange.Data.Directory.OrganizationId", "System.Object"],
        [
            ("OrganizationalUnit", None),
            ("ConfigurationUnit", None),
            ("IsConsumerOrganization", False),
            ("IdForEventLog", ""),
        ],
        "",
    )


def exchange_config_dn(scenario: Scenario, *rdns: str) -> str:
    """A DN below ``CN=<org>,CN=Microsoft Exchange,CN=Services,CN=Configuration`` (``rdns`` innermost first)."""
    org = scenario.organisation
    inner = "".join(f"{rdn}," for rdn in rdns)
    return f"{inner}CN={org.name},CN=Microsoft Exchange,CN=Services,CN=Configuration,{_domain_dn(org.domain)}"


def admin_group_dn(scenario: Scenario, *rdns: str) -> str:
    """A DN inside the Exchange administrative group (``rdns`` innermost first)."""
    return exchange_config_dn(scenario, *rdns, f"CN={_ADMIN_GROUP}", "CN=Administrative Groups")


def _server_dn(scenario: Scenario, server: ServerSpec) -> str:
    return admin_group_dn(scenario, f"CN={server.name}", "CN=Servers")


def server_id(scenario: Scenario, server: ServerSpec) -> PSObject:
    """The ``ADObjectId`` of a server as other objects reference it (``Server``, ``Identity``)."""
    return ad_object_id(scenario, _server_dn(scenario, server), server.name, server.name, server.guid, parent="Servers")


def _created(server: ServerSpec, timeline: Timeline) -> tuple[datetime.datetime, datetime.datetime]:
    """Stable WhenCreated / WhenChanged times (derived from the server name, before the start)."""
    return created_times(server.name, timeline)


def created_times(key: str, timeline: Timeline) -> tuple[datetime.datetime, datetime.datetime]:
    """Stable WhenCreated / WhenChanged times derived from ``key``, before the scenario start."""
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")
    created = timeline.origin.start - 400 * 86400 - seed % (200 * 86400)
    changed = timeline.origin.start - 3 * 86400 - seed % 86400
    return timeline.local(created).replace(microsecond=0), timeline.local(changed).replace(microsecond=0)


# ---------------------------------------------------------------------------------------------
# Get-Queue
# ---------------------------------------------------------------------------------------------


def queue_identity(q: QueueSnapshot) -> PSObject:
    """A ``QueueIdentity`` whose ToString is ``EX01\\3`` / ``EX01\\Submission`` / ``EX01\\Shadow\\12``."""
    queue_type = {
        "delivery": "Delivery",
        "submission": "Submission",
        "poison": "Poison",
        "unreachable": "Unreachable",
        "shadow": "Shadow",
    }[q.kind]
    return ex_object(
        [
            "Microsoft.Exchange.Data.QueueViewer.QueueIdentity",
            "Microsoft.Exchange.Data.ObjectId",
            "System.Object",
        ],
        [
            ("Type", enum_value("Microsoft.Exchange.Data.QueueViewer.QueueType", _QUEUE_TYPE, queue_type)),
            ("RowId", PSInt64(q.row_id or 0)),
            ("Server", q.server),
            ("NextHopDomain", q.next_hop_domain),
            ("IsFullySpecified", True),
            ("IsEmpty", False),
        ],
        q.identity,
    )


def queue_info(q: QueueSnapshot) -> PSObject:
    """A Get-Queue result (``PropertyBagBasedQueueInfo``) for one queue snapshot."""
    identity = queue_identity(q)
    return ex_object(
        QUEUE_TYPE_NAMES,
        [
            (
                "DeliveryType",
                enum_value(
                    "Microsoft.Exchange.Data.DeliveryType",
                    _DELIVERY_TYPE_MEMBERS,
                    q.delivery_type,
                    int16=True,
                ),
            ),
            ("NextHopDomain", q.next_hop_domain),
            ("TlsDomain", q.tls_domain),
            ("NextHopConnector", q.next_hop_connector),
            ("Status", enum_value("Microsoft.Exchange.Data.QueueViewer.QueueStatus", QUEUE_STATUSES, q.status)),
            ("MessageCount", q.message_count),
            ("LastError", q.last_error),
            ("RetryCount", q.retry_count),
            ("LastRetryTime", q.last_retry_time),
            ("NextRetryTime", q.next_retry_time),
            ("FirstRetryTime", q.first_retry_time),
            ("DeferredMessageCount", q.deferred_message_count),
            ("LockedMessageCount", q.locked_message_count),
            ("MessageCountsPerPriority", int_array(q.messages_per_priority)),
            ("DeferredMessageCountsPerPriority", int_array(q.deferred_per_priority)),
            ("RiskLevel", enum_value("Microsoft.Exchange.Data.Transport.RiskLevel", _RISK_LEVEL, q.risk_level)),
            ("OutboundIPPool", q.outbound_ip_pool),
            (
                "NextHopCategory",
                enum_value(
                    "Microsoft.Exchange.Data.Transport.NextHopCategory",
                    _NEXT_HOP_CATEGORY,
                    q.next_hop_category,
                ),
            ),
            ("IncomingRate", PSDouble(q.incoming_rate)),
            ("OutgoingRate", PSDouble(q.outgoing_rate)),
            ("Velocity", PSDouble(q.velocity)),
            ("OverrideSource", ""),
            ("QueueIdentity", identity),
            ("PriorityDescriptions", string_array(["High", "Normal", "Low", "None"])),
            ("Identity", identity),  # the same object: serialised as <Ref>, as Exchange does
            ("IsValid", True),
            ("ObjectState", object_state("New")),
        ],
        q.identity,
    )


# ---------------------------------------------------------------------------------------------
# Get-MessageTrackingLog (the reference graph; the cmdlet uses tracking_wire.event_clixml, tested equal)
# ---------------------------------------------------------------------------------------------


def message_latency_type(name: str) -> Any:
    """A ``MessageLatencyType`` enum value (None, LocalServer, EndToEnd)."""
    from exporter.simulator.tracking_wire import LATENCY_TYPE_MEMBERS, LATENCY_TYPE_NAME

    return enum_value(LATENCY_TYPE_NAME, LATENCY_TYPE_MEMBERS, name)


def precise_timespan(milliseconds: int) -> PSObject:
    """An ``EnhancedTimeSpan`` with milliseconds (ToString like ``00:00:01.2340000``)."""
    from exporter.simulator.tracking_wire import ENHANCED_TIMESPAN_TYPE_NAMES, timespan_text

    ticks = milliseconds * 10_000
    text = timespan_text(ticks)
    total = ticks / 10_000_000
    seconds, fraction = divmod(abs(milliseconds), 1000)
    minutes, secs = divmod(seconds, 60)
    hours, mins = divmod(minutes, 60)
    days, hrs = divmod(hours, 24)
    return ex_object(
        ENHANCED_TIMESPAN_TYPE_NAMES,
        [
            ("Days", days),
            ("Hours", hrs),
            ("Milliseconds", fraction),
            ("Minutes", mins),
            ("Seconds", secs),
            ("Ticks", PSInt64(ticks)),
            ("TotalDays", PSDouble(total / 86400)),
            ("TotalHours", PSDouble(total / 3600)),
            ("TotalMilliseconds", PSDouble(float(milliseconds))),
            ("TotalMinutes", PSDouble(total / 60)),
            ("TotalSeconds", PSDouble(total)),
            ("Sign", (milliseconds > 0) - (milliseconds < 0)),
        ],
        text,
    )


def message_tracking_event(event: Any, tz: datetime.tzinfo) -> PSObject:
    """A Get-MessageTrackingLog result (``MessageTrackingEvent``) for a ``tracking.TrackingEvent``."""
    from exporter.simulator.tracking_wire import (
        KEY_VALUE_ARRAY_TYPE_NAMES,
        KEY_VALUE_PAIR_TYPE_NAMES,
        MESSAGE_TRACKING_TYPE_NAMES,
        local_datetime,
    )

    e = event
    return ex_object(
        MESSAGE_TRACKING_TYPE_NAMES,
        [
            ("Timestamp", local_datetime(e.ts_ms, tz)),
            ("ClientIp", e.client_ip),
            ("ClientHostname", e.client_hostname),
            ("ServerIp", e.server_ip),
            ("ServerHostname", e.server_hostname),
            ("SourceContext", e.source_context),
            ("ConnectorId", e.connector_id),
            ("Source", e.source),
            ("EventId", e.event_id),
            ("InternalMessageId", e.internal_message_id),
            ("MessageId", e.message_id),
            ("NetworkMessageId", e.network_message_id),
            ("Recipients", string_array(e.recipients)),
            ("RecipientStatus", string_array(e.recipient_status)),
            ("TotalBytes", e.total_bytes),
            ("RecipientCount", e.recipient_count),
            ("RelatedRecipientAddress", e.related_recipient_address),
            ("Reference", None if e.reference is None else string_array(e.reference)),
            ("MessageSubject", e.message_subject),
            ("Sender", e.sender),
            ("ReturnPath", e.return_path),
            ("Directionality", e.directionality),
            ("TenantId", e.tenant_id),
            ("OriginalClientIp", e.original_client_ip),
            ("MessageInfo", e.message_info),
            ("MessageLatency", None if e.latency_ms is None else precise_timespan(e.latency_ms)),
            ("MessageLatencyType", message_latency_type(e.latency_type)),
            (
                "EventData",
                typed_list(
                    KEY_VALUE_ARRAY_TYPE_NAMES,
                    [
                        ex_object(
                            KEY_VALUE_PAIR_TYPE_NAMES,
                            [("Key", key), ("Value", value)],
                            f"[{key}, {value}]",
                            serialization=False,
                        )
                        for key, value in e.event_data
                    ],
                ),
            ),
            ("TransportTrafficType", e.transport_traffic_type),
            ("SchemaVersion", e.schema_version),
        ],
        MESSAGE_TRACKING_TYPE_NAMES[0],
    )
