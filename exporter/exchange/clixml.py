"""Flatten the objects pypsrp returns for Exchange cmdlets into plain Python values.

A remote session serializes output at depth 1 (PowerShell's remoting default): a top-level object's
properties that are enums, Exchange value types or other objects arrive as their ToString, plain
``str``; lists (MultiValuedProperty, arrays) stay lists whose object items are strings too; an
``IPAddress`` keeps its properties (PowerShell's types.ps1xml gives it depth 1). Select-Object's
note properties, and Export-Clixml captures (depth 2), carry one more level, in the shapes below.
Every helper here accepts both: a value is read from its text whenever its object is absent.

What pypsrp (0.8/0.9) hands us for those objects (checked on real Exchange 2019 CLIXML):

* Every cmdlet output object is a ``GenericComplexObject``. Real Exchange objects keep their
  values in ``adapted_properties`` (``<Props>``); objects built by ``Select-Object`` or
  ``[PSCustomObject]`` keep them in ``extended_properties`` (``<MS>``). ``types`` holds the wire
  type names (no ``Deserialized.`` prefix on the wire).
* Enums (``PermissionGroups``, ``QueueStatus``, ``ServerRole``...) are ``GenericComplexObject``:
  ``to_string`` is the display name (``"AnonymousUsers, ExchangeServers"`` for flags) and
  ``property_sets == [<int>]``.
* Exchange value types (ByteQuantifiedSize, EnhancedTimeSpan, ``Unlimited<T>``, Fqdn, ADObjectId,
  ServerVersion, SmtpDomainWithSubdomains...) are ``GenericComplexObject`` whose ``to_string`` is
  the display text; some also carry adapted properties (ServerVersion Major/Minor/Build...).
* Exchange ``MultiValuedProperty<T>`` and ``List<T>`` of Exchange types are NOT decoded: they are a
  ``GenericComplexObject`` with ``to_string is None`` and ``property_sets == ['<LST>...</LST>']``
  (the raw CLIXML text of the list). :func:`decode_mvp` turns that into ``list[str]``.
* ``DT`` arrives as an ISO 8601 string, ``G`` as :class:`uuid.UUID`, ``BA`` as bytes, ``TS`` as an
  ``xs:duration`` string (``PT9.5S``); .NET arrays arrive as Python lists, KeyValuePair items as
  objects with adapted ``Key``/``Value``.

:func:`to_python` maps all of that to str/int/float/bool/None/bytes/list/tuple/dict, and the
``parse_*``/``as_*`` helpers turn display strings into numbers, durations and datetimes.
Nothing in this module raises on odd input: unknown shapes become ``str(value)``.
"""

from __future__ import annotations

import datetime as _dt
import math
import queue
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "ALLOWED_SERVICES",
    "AUTH_MECHANISMS",
    "PERMISSION_GROUPS",
    "SERVER_ROLES",
    "as_bool",
    "as_float",
    "as_int",
    "decode_mvp",
    "decode_mvp_objects",
    "deserialize_linked",
    "flatten",
    "is_mvp",
    "load_clixml",
    "parse_byte_quantified",
    "parse_datetime",
    "parse_flags",
    "parse_timespan",
    "to_python",
    "type_names",
]

# --------------------------------------------------------------------------------------------
# Flag enums (values from the Exchange 15.x enum definitions, see reference/exchange-cmdlets.md)
# --------------------------------------------------------------------------------------------

#: ``Microsoft.Exchange.Data.PermissionGroups`` (receive connector ``PermissionGroups``).
PERMISSION_GROUPS: Mapping[str, int] = {
    "None": 0,
    "AnonymousUsers": 1,
    "ExchangeUsers": 2,
    "ExchangeServers": 4,
    "ExchangeLegacyServers": 8,
    "Partners": 16,
    "Custom": 32,
}

#: ``AuthMechanisms`` (receive connector ``AuthMechanism``).
AUTH_MECHANISMS: Mapping[str, int] = {
    "None": 0,
    "Tls": 1,
    "Integrated": 2,
    "BasicAuth": 4,
    "BasicAuthRequireTLS": 8,
    "ExchangeServer": 16,
    "ExternalAuthoritative": 32,
}

#: ``ServerRole`` (Get-ExchangeServer ``ServerRole``, connector ``TransportRole``). ``All`` is a
#: composite value (Cafe | Mailbox | ClientAccess | UnifiedMessaging | HubTransport | Edge |
#: FrontendTransport).
SERVER_ROLES: Mapping[str, int] = {
    "None": 0,
    "Cafe": 1,
    "Mailbox": 2,
    "ClientAccess": 4,
    "UnifiedMessaging": 16,
    "HubTransport": 32,
    "Edge": 64,
    "Monitoring": 128,
    "CentralAdmin": 256,
    "CentralAdminDatabase": 512,
    "DomainController": 1024,
    "WindowsDeploymentServer": 2048,
    "ProvisionedServer": 4096,
    "LanguagePacks": 8192,
    "FrontendTransport": 16384,
    "All": 16503,
    "CafeArray": 32768,
    "FfoWebService": 65536,
    "OSP": 131072,
    "ARR": 262144,
    "ManagementFrontEnd": 524288,
    "ManagementBackEnd": 1048576,
    "SCOM": 2097152,
    "CentralAdminFrontEnd": 4194304,
    "NAT": 8388608,
    "DHCP": 16777216,
}

#: ``AllowedServices`` (Get-ExchangeCertificate ``Services``).
ALLOWED_SERVICES: Mapping[str, int] = {
    "None": 0,
    "IMAP": 1,
    "POP": 2,
    "UM": 4,
    "IIS": 8,
    "SMTP": 16,
    "Federation": 32,
    "UMCallRouter": 64,
}

_MAX_DEPTH = 8
_PRIMITIVES = (str, int, float, bool, bytes)
_PASSTHROUGH = (*_PRIMITIVES, _dt.datetime, _dt.timedelta)
_MVP_START = re.compile(r"^\s*<(?:[\w.-]+:)?(?:LST|IE)\b")
_XML_ESCAPE = re.compile(r"_[xX]([0-9A-Fa-f]{4})_")
_CLIXML_NS = "http://schemas.microsoft.com/powershell/2004/04"


# --------------------------------------------------------------------------------------------
# Object inspection
# --------------------------------------------------------------------------------------------


def _attr(obj: Any, name: str, default: Any = None) -> Any:
    try:
        return getattr(obj, name, default)
    except Exception:  # a broken property getter must not break parsing
        return default


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        try:
            return repr(value)
        except Exception:
            return f"<{type(value).__name__}>"


def type_names(obj: Any) -> list[str]:
    """Return the wire type names of ``obj`` (most derived first), without ``Deserialized.``.

    Works for pypsrp ``GenericComplexObject`` (``types``) and typed ``ComplexObject`` subclasses
    (``_types``). Anything else gives ``[]``.
    """
    types = _attr(obj, "types")
    if not isinstance(types, list | tuple):
        types = _attr(obj, "_types")
    if not isinstance(types, list | tuple):
        return []
    out: list[str] = []
    for t in types:
        if not isinstance(t, str):
            continue
        out.append(t[len("Deserialized.") :] if t.startswith("Deserialized.") else t)
    return out


def _to_string_of(obj: Any) -> str | None:
    """The object's ``<ToString>`` text, or None when it had none."""
    if hasattr(obj, "adapted_properties") and hasattr(obj, "property_sets"):  # GenericComplexObject
        ts = _attr(obj, "to_string")
        return ts if isinstance(ts, str) else None
    ts = _attr(obj, "_to_string")
    if ts is None:
        return None
    return ts if isinstance(ts, str) else _safe_str(ts)


def is_mvp(obj: Any) -> bool:
    """True if ``obj`` is an undecoded Exchange multi-valued property (raw ``<LST>``/``<IE>``)."""
    if _attr(obj, "to_string", "") is not None:
        return False
    sets = _attr(obj, "property_sets")
    return isinstance(sets, list) and len(sets) > 0 and isinstance(sets[0], str) and bool(_MVP_START.match(sets[0]))


def _is_generic(obj: Any) -> bool:
    adapted, extended = _attr(obj, "adapted_properties"), _attr(obj, "extended_properties")
    return isinstance(adapted, dict) and isinstance(extended, dict)


def _is_kvp(obj: Any) -> bool:
    names = type_names(obj)
    if names and names[0].startswith("System.Collections.Generic.KeyValuePair"):
        return True
    adapted = _attr(obj, "adapted_properties")
    return isinstance(adapted, dict) and set(adapted) == {"Key", "Value"}


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


def to_python(value: Any) -> Any:
    """Convert one deserialized pypsrp value to a plain Python value.

    * ``str``/``int``/``float``/``bool``/``None``/``bytes`` and ``datetime`` pass through;
      :class:`uuid.UUID` becomes its ``str`` form.
    * Undecoded multi-valued properties (``to_string is None`` and ``property_sets[0]`` a string
      starting with ``<LST``/``<IE``) become ``list[str]`` via :func:`decode_mvp`.
    * ``KeyValuePair`` items become a ``(key, value)`` tuple, so ``dict(flatten(ev)["EventData"])``
      gives the tracking event data as a dict when the pairs are objects (Select-Object output);
      at remoting depth each pair is its text, ``"[Key, Value]"``.
    * Enums become their display name (``"Retry"``, ``"AnonymousUsers, ExchangeServers"``); Exchange
      value types (ByteQuantifiedSize, EnhancedTimeSpan, ``Unlimited<T>``, Fqdn, ADObjectId...) and
      any other object with a ``<ToString>`` become that display string.
    * An enum-like object with no ``<ToString>`` but a single primitive in ``property_sets``
      becomes that primitive (e.g. the int value of an enum).
    * Objects with neither (e.g. a nested ``PSCustomObject``) become a dict via :func:`flatten`.
    * Lists/tuples/sets/queues become lists of converted items; dicts (Hashtable) become dicts.
    * Anything else becomes ``str(value)``. Never raises.
    """
    return _convert(value, 0)


def _convert(value: Any, depth: int) -> Any:
    try:
        if value is None or isinstance(value, _PASSTHROUGH):
            return value
        if isinstance(value, uuid.UUID):
            return str(value)
        if depth > _MAX_DEPTH:
            return _safe_str(value)
        if isinstance(value, list | tuple | set | frozenset):
            return [_convert(v, depth + 1) for v in value]
        if isinstance(value, dict):
            return {_hashable(_convert(k, depth + 1)): _convert(v, depth + 1) for k, v in value.items()}
        if isinstance(value, ET.Element):  # e.g. an undecryptable SecureString
            return ET.tostring(value, encoding="unicode")
        queue_items = _queue_items(value)
        if queue_items is not None:
            return [_convert(v, depth + 1) for v in queue_items]
        if _is_generic(value):
            return _convert_generic(value, depth)
        ts = _to_string_of(value)  # typed pypsrp ComplexObject (Enum subclasses...)
        if ts is not None:
            return ts
        return _safe_str(value)
    except Exception:
        return _safe_str(value)


def _hashable(key: Any) -> Any:
    try:
        hash(key)
        return key
    except TypeError:
        return _safe_str(key)


def _queue_items(value: Any) -> list[Any] | None:
    if isinstance(value, queue.Queue):
        with value.mutex:
            return list(value.queue)
    return None


def _convert_generic(obj: Any, depth: int) -> Any:
    if is_mvp(obj):
        return decode_mvp(obj.property_sets[0])
    if _is_kvp(obj):
        return (
            _hashable(_convert(obj.adapted_properties.get("Key"), depth + 1)),
            _convert(obj.adapted_properties.get("Value"), depth + 1),
        )
    ts = _attr(obj, "to_string")
    if isinstance(ts, str):
        return ts
    if obj.adapted_properties or obj.extended_properties:
        return _flatten(obj, depth + 1)
    sets = _attr(obj, "property_sets")
    if not isinstance(sets, list) or not sets:
        return {}
    if len(sets) == 1:  # enum value without ToString, or a list pypsrp did decode inside an object
        return _convert(sets[0], depth + 1)
    return [_convert(v, depth + 1) for v in sets]


def flatten(obj: Any) -> dict[str, Any]:
    """Merge an output object's adapted and extended properties into one dict of plain values.

    Adapted properties (``<Props>``, real Exchange objects) win over extended ones (``<MS>``,
    PSCustomObject / Select-Object output and the ``SerializationData`` blob) on a name clash.
    Every value goes through :func:`to_python`. A plain value (or ``None``) gives ``{}``; a dict
    is converted item by item. Never raises.
    """
    try:
        if isinstance(obj, dict):
            return {_safe_str(k): to_python(v) for k, v in obj.items()}
        if not _is_generic(obj):
            return {}
        return _flatten(obj, 0)
    except Exception:
        return {}


def _flatten(obj: Any, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for source in (obj.extended_properties, obj.adapted_properties):
        for key, val in list(source.items()):
            out[_safe_str(key)] = _convert(val, depth)
    return out


# --------------------------------------------------------------------------------------------
# Multi-valued properties
# --------------------------------------------------------------------------------------------


def _unescape(text: str | None) -> str:
    """Decode the CLIXML ``_xHHHH_`` escapes (incl. UTF-16 surrogate pairs)."""
    if not text:
        return ""
    if "_x" not in text and "_X" not in text:
        return text
    decoded = _XML_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    try:
        return decoded.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeError:
        return decoded


def _strip_ns(root: ET.Element) -> None:
    for el in root.iter():
        if isinstance(el.tag, str) and el.tag.startswith("{"):
            el.tag = el.tag.split("}", 1)[1]


def _parse_fragment(xml: str) -> ET.Element | None:
    text = xml.strip()
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        # a prefixed tag without its namespace declaration (``<ns0:LST>`` cut out of a document)
        text = re.sub(r"(</?)[\w.-]+:", r"\1", text)
        text = re.sub(r'\sxmlns(?::[\w.-]+)?="[^"]*"', "", text)
        try:
            root = ET.fromstring(text)
        except ET.ParseError:
            return None
    _strip_ns(root)
    return root


def _item_text(el: ET.Element, refs: Mapping[str, ET.Element], depth: int = 0) -> str | None:
    tag = el.tag
    if tag == "Nil":
        return None
    if tag == "Ref":
        target = refs.get(el.attrib.get("RefId", ""))
        return _item_text(target, refs, depth + 1) if target is not None and depth < _MAX_DEPTH else None
    if tag == "Obj":
        ts = el.find("ToString")
        if ts is not None:
            return _unescape(ts.text)
        for child in el:  # an enum without ToString, or a nested list
            if child.tag in ("TN", "TNRef", "Props", "MS"):
                continue
            if child.tag in ("LST", "IE"):
                return ", ".join(t for t in (_item_text(c, refs, depth + 1) for c in child) if t is not None)
            return _item_text(child, refs, depth + 1)
        return ""
    if tag == "B":
        return "True" if (el.text or "").strip().lower() == "true" else "False"
    return _unescape(el.text)


def decode_mvp(xml: str) -> list[str]:
    """Decode the raw ``<LST>``/``<IE>`` CLIXML of an Exchange multi-valued property.

    Each child gives one string: an ``<S>`` (or other primitive) element's text, an ``<Obj>``'s
    ``<ToString>`` (``IPBinding`` -> ``"0.0.0.0:25"``, ``IPRange``, ``SmartHost``, ``AddressSpace``
    -> ``"SMTP:*;1"``...), a ``<Ref>`` the ToString of the object it points to (when that object is
    inside the same fragment). ``<Nil>`` items and unresolvable references are skipped. The
    ``_xHHHH_`` escapes are decoded. Malformed XML gives ``[]``; never raises.
    """
    try:
        if not isinstance(xml, str) or not xml.strip():
            return []
        root = _parse_fragment(xml)
        if root is None:
            return []
        if root.tag not in ("LST", "IE"):
            inner = root.find("LST")
            if inner is None:
                inner = root.find("IE")
            if inner is None:
                return []
            root = inner
        refs = {el.attrib["RefId"]: el for el in root.iter("Obj") if "RefId" in el.attrib}
        out: list[str] = []
        for child in root:
            text = _item_text(child, refs)
            if text is not None:
                out.append(text)
        return out
    except Exception:
        return []


def decode_mvp_objects(value: Any) -> list[Any]:
    """Decode an MVP (the object or its raw ``<LST>`` text) into pypsrp objects, one per item.

    Unlike :func:`decode_mvp` this keeps the items' properties: ``flatten()`` an item to read e.g.
    ``RequesterDetails`` (Requester/State/Timestamp) of Get-ServerComponentState ``LocalStates``.
    Type references to type tables outside the fragment are dropped (the item's ``types`` is then
    empty); ``<Ref>`` to objects outside the fragment become ``None``. Never raises.
    """
    try:
        xml = value.property_sets[0] if is_mvp(value) else value
        if not isinstance(xml, str):
            return []
        root = _parse_fragment(xml)
        if root is None or root.tag not in ("LST", "IE"):
            return []
        known_tn = {tn.attrib.get("RefId") for tn in root.iter("TN")}
        known_obj = {el.attrib.get("RefId") for el in root.iter("Obj")}
        for parent in list(root.iter()):
            for child in list(parent):
                if child.tag == "TNRef" and child.attrib.get("RefId") not in known_tn:
                    parent.remove(child)
                elif child.tag == "Ref" and child.attrib.get("RefId") not in known_obj:
                    child.tag = "Nil"
        return [deserialize_linked([child])[0] for child in root]
    except Exception:
        return []


# --------------------------------------------------------------------------------------------
# Whole CLIXML documents (tests, simulator replay)
# --------------------------------------------------------------------------------------------


def deserialize_linked(elements: list[ET.Element]) -> list[Any]:
    """Deserialize sibling CLIXML elements with ONE pypsrp Serializer (shared Ref/TN tables).

    pypsrp does not register the objects and type names that sit inside an undecoded ``<LST>``
    (an Exchange MVP), so a later ``<Ref>``/``<TNRef>`` pointing at them raises ``KeyError`` in
    pypsrp (seen on the real Get-SendConnector capture: ``SourceIPAddress`` refers to the
    ``IPAddress`` inside ``SmartHosts``). We pre-register every ``<TN>`` and, on a missing
    ``<Ref>``, deserialize the referenced element first and retry.
    """
    from pypsrp.serializer import Serializer

    ser = Serializer()
    by_ref: dict[str, ET.Element] = {}
    for top in elements:
        for el in top.iter():
            if el.tag == "TN" and "RefId" in el.attrib:
                ser.tn.setdefault(el.attrib["RefId"], [t.text or "" for t in el.findall("T")])
            elif el.tag == "Obj" and "RefId" in el.attrib:
                by_ref.setdefault(el.attrib["RefId"], el)
    out: list[Any] = []
    for top in elements:
        text = ET.tostring(top, encoding="unicode")
        for _attempt in range(64):
            try:
                out.append(ser.deserialize(text, clear=False))
                break
            except KeyError as err:
                missing = by_ref.get(str(err.args[0]) if err.args else "")
                if missing is None or missing is top:
                    raise
                ser.deserialize(ET.tostring(missing, encoding="unicode"), clear=False)
        else:  # pragma: no cover - pathological reference chains
            raise ValueError("unresolvable CLIXML references")
    return out


def load_clixml(text: str | bytes) -> list[Any]:
    """Turn an ``Export-Clixml`` document (``<Objs>``) into the objects pypsrp would return.

    The default CLIXML namespace is stripped (pypsrp's serializer expects bare tags), every
    top-level ``<Obj>`` is deserialized with one shared serializer, and the pypsrp MVP reference
    gap (see :func:`deserialize_linked`) is worked around. Raises ``ValueError`` on a document
    that is not XML; used by tests and by the simulator to replay captures.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8-sig")
    text = text.lstrip("\ufeff")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as err:
        raise ValueError(f"not CLIXML: {err}") from err
    _strip_ns(root)
    elements = [root] if root.tag != "Objs" else list(root)
    return deserialize_linked(elements)


# --------------------------------------------------------------------------------------------
# Display-string parsers
# --------------------------------------------------------------------------------------------

_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4, "PB": 1024**5}
_BYTES_IN_PARENS = re.compile(r"\(\s*([\d\s,.'\u00a0\u202f]+?)\s*bytes?\s*\)", re.IGNORECASE)
_SIZE_WITH_UNIT = re.compile(r"^\s*([\d.,]+)\s*(B|KB|MB|GB|TB|PB)\b", re.IGNORECASE)


def _text_of(value: Any) -> Any:
    """Primitive values as-is; objects to their display text (via :func:`to_python`)."""
    if value is None or isinstance(value, _PASSTHROUGH):
        return value
    return to_python(value)


def parse_byte_quantified(text: Any) -> int | None:
    """Bytes from an Exchange ByteQuantifiedSize display string (or object, or number).

    ``"36 MB (37,748,736 bytes)"`` -> 37748736 (any digit grouping: ``,`` ``.`` space ``'``);
    ``"Unlimited"``/``None``/``""``/garbage -> None; ``12345``/``"12,345"`` -> 12345;
    ``"36 MB"`` (no byte count) -> 36 * 1024**2.
    """
    try:
        value = _text_of(text)
        if value is None or isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return int(value) if math.isfinite(value) else None
        if not isinstance(value, str):
            return None
        s = value.strip()
        if not s or s.lower() == "unlimited":
            return None
        m = _BYTES_IN_PARENS.search(s)
        if m:
            digits = re.sub(r"\D", "", m.group(1))
            return int(digits) if digits else None
        if re.fullmatch(r"[\d,\s\u00a0']+", s):
            digits = re.sub(r"\D", "", s)
            return int(digits) if digits else None
        m = _SIZE_WITH_UNIT.match(s)
        if m:
            number = float(m.group(1).replace(",", ""))
            return int(number * _UNITS[m.group(2).upper()])
        return None
    except Exception:
        return None


_DOTNET_TS = re.compile(r"^(-)?(?:(\d+)\.)?(\d+):(\d+)(?::(\d+)(?:[.,](\d+))?)?$")
_BARE_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
_ISO_DURATION = re.compile(
    r"^(-)?P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE,
)


def parse_timespan(text: Any) -> float | None:
    """Seconds from a .NET TimeSpan / EnhancedTimeSpan display string (or ``xs:duration``).

    Accepts ``"00:10:00"`` (600.0), ``"1.02:03:04"`` (days.hh:mm:ss), ``"00:00:00.5320000"``,
    ``"-00:00:05"``, ``"hh:mm"``, the ISO ``"PT9.5S"`` form pypsrp gives for ``<TS>``, numbers
    (taken as seconds) and :class:`datetime.timedelta`. ``"Unlimited"``/``None``/garbage -> None.
    """
    try:
        value = _text_of(text)
        if value is None or isinstance(value, bool):
            return None
        if isinstance(value, _dt.timedelta):
            return value.total_seconds()
        if isinstance(value, int | float):
            f = float(value)
            return f if math.isfinite(f) else None
        if not isinstance(value, str):
            return None
        s = value.strip()
        m = _DOTNET_TS.match(s)
        if m:
            neg, days, hours, minutes, seconds, frac = m.groups()
            total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds or 0)
            result = total + (float("0." + frac) if frac else 0.0)
            return -result if neg else float(result)
        if _BARE_NUMBER.match(s):
            return float(s)
        m = _ISO_DURATION.match(s)
        if m and any(m.groups()[1:]):
            neg = m.group(1)
            d, h, mi, sec = (float(x) if x else 0.0 for x in m.groups()[1:])
            result = d * 86400 + h * 3600 + mi * 60 + sec
            return -result if neg else result
        return None
    except Exception:
        return None


_FALLBACK_DT_FORMATS = (
    "%m/%d/%Y %I:%M:%S %p",  # en-US (pypsrp asks for en-US): 9/28/2021 5:32:01 PM
    "%m/%d/%Y %H:%M:%S",
    "%d.%m.%Y %H:%M:%S",  # de-DE and friends: 13.12.2014 19:06:54
    "%Y-%m-%d %H:%M:%S",
    "%d-%m-%y %H:%M:%S",  # seen in a real LastError LRT: 15-01-21 23:50:05
    "%d/%m/%Y %H:%M:%S",
)


def parse_datetime(value: Any) -> _dt.datetime | None:
    """A timezone-aware datetime from what pypsrp gives for ``<DT>`` (an ISO 8601 string).

    ``"2021-08-21T10:43:54+02:00"``, ``"...Z"`` and 7-digit fractions are accepted; a
    :class:`datetime.datetime` is accepted too. A naive value (no offset) is ASSUMED TO BE UTC.
    A few culture-formatted strings (en-US ``9/28/2021 5:32:01 PM`` first, then
    ``dd.mm.yyyy``, ``dd-mm-yy``) are tried as a fallback, also as UTC. Epoch numbers are
    seconds since 1970 UTC. ``None``/``""``/garbage -> None.
    """
    try:
        v = _text_of(value)
        if v is None or isinstance(v, bool):
            return None
        if isinstance(v, _dt.datetime):
            result = v
        elif isinstance(v, int | float):
            return _dt.datetime.fromtimestamp(float(v), tz=_dt.UTC)
        elif isinstance(v, str):
            s = v.strip()
            if not s:
                return None
            parsed = _parse_dt_string(s)
            if parsed is None:
                return None
            result = parsed
        else:
            return None
        if result.tzinfo is None or result.tzinfo.utcoffset(result) is None:
            result = result.replace(tzinfo=_dt.UTC)
        return result
    except Exception:
        return None


def _parse_dt_string(s: str) -> _dt.datetime | None:
    iso = s
    # more than 6 fractional digits: Python 3.11 accepts them, but trim for safety
    iso = re.sub(r"(\.\d{6})\d+", r"\1", iso)
    try:
        return _dt.datetime.fromisoformat(iso)
    except ValueError:
        pass
    for fmt in _FALLBACK_DT_FORMATS:
        try:
            return _dt.datetime.strptime(s, fmt)
        except ValueError:
            continue
    return None


def parse_flags(value: Any, names: Mapping[str, int]) -> frozenset[str]:
    """The set of flag names in a .NET [Flags] enum value.

    ``value`` may be the display string (``"AnonymousUsers, ExchangeServers"``), an int bitmask
    (a replayed capture may deliver ints), a numeric string, the enum object, a list of names, or
    ``None`` (-> empty set). Names are matched case-insensitively and returned as spelled in
    ``names``; the zero name (``"None"``) never appears in the result. A composite name (e.g.
    ``ServerRole.All``) is included whenever all its bits are set, and naming a composite sets
    its bits. Unknown names in a string are kept verbatim; unknown bits of an int are ignored.
    """
    try:
        v = _text_of(value)
        if v is None or isinstance(v, bool):
            return frozenset()
        canonical = {k.lower(): k for k in names}
        extra: set[str] = set()
        mask = 0
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, int):
            mask = v
        elif isinstance(v, str) and re.fullmatch(r"\s*-?\d+\s*", v):
            mask = int(v)
        else:
            tokens: Iterable[Any] = v if isinstance(v, list) else re.split(r"[,;|]", _safe_str(v))
            for token in tokens:
                t = _safe_str(token).strip()
                if not t:
                    continue
                key = canonical.get(t.lower())
                if key is None:
                    if re.fullmatch(r"-?\d+", t):
                        mask |= int(t)
                    else:
                        extra.add(t)
                    continue
                mask |= int(names[key])
        found = {name for name, bits in names.items() if bits and (mask & bits) == bits}
        return frozenset(found | extra)
    except Exception:
        return frozenset()


# --------------------------------------------------------------------------------------------
# Tolerant scalar converters
# --------------------------------------------------------------------------------------------

_TRUE = {"true", "$true", "yes", "y", "on", "1", "enabled"}


def _number_text(s: str) -> str:
    return re.sub(r"[\s,_'\u00a0\u202f]", "", s.strip())


def as_int(value: Any, default: int = 0) -> int:
    """An int from an int/float/bool/numeric string (``"12"``, ``"1,234"``, ``"12.0"``) or an
    Exchange object whose display text is a number (``Unlimited<int>`` ``"5000"``).

    ``"True"``/``"False"`` give 1/0; ``None``, ``"Unlimited"`` and garbage give ``default``.
    """
    try:
        v = _text_of(value)
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, int):
            return v
        if isinstance(v, float):
            return int(v) if math.isfinite(v) else default
        if isinstance(v, str):
            s = _number_text(v)
            if not s:
                return default
            if s.lower() in ("true", "false"):
                return int(s.lower() == "true")
            try:
                return int(s)
            except ValueError:
                f = float(s)
                return int(f) if math.isfinite(f) else default
        return default
    except Exception:
        return default


def as_float(value: Any, default: float = 0.0) -> float:
    """A float from a number or numeric string (``"4.62"``, ``"1,234.5"``; ``,`` is taken as a
    thousands separator). ``None``, NaN/inf text, ``"Unlimited"`` and garbage give ``default``."""
    try:
        v = _text_of(value)
        if isinstance(v, bool):
            return float(v)
        if isinstance(v, int | float):
            f = float(v)
            return f if math.isfinite(f) else default
        if isinstance(v, str):
            s = _number_text(v)
            if not s:
                return default
            if s.lower() in ("true", "false"):
                return float(s.lower() == "true")
            f = float(s)
            return f if math.isfinite(f) else default
        return default
    except Exception:
        return default


def as_bool(value: Any) -> bool:
    """True for ``True``, non-zero numbers and ``"True"``/``"$true"``/``"yes"``/``"1"``/``"on"``/
    ``"enabled"`` (any case); False for everything else, including ``None`` and garbage."""
    try:
        v = _text_of(value)
        if isinstance(v, bool):
            return v
        if isinstance(v, int | float):
            return v != 0
        if isinstance(v, str):
            return v.strip().lower() in _TRUE
        return False
    except Exception:
        return False
