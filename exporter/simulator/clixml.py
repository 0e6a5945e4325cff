"""CLIXML element plumbing: psrpcore serialisation, self-contained re-linking, captures, Select-Object.

Every pipeline output travels as one CLIXML ``<Obj>`` element per PSRP message. Elements come from
psrpcore's serialiser (generated objects) or from an Export-Clixml capture (replays); in a capture,
objects share ``RefId``/``TNRef`` tables across the whole file, so each element is re-linked into a
self-contained one (``relink``) before it is sent: type-name references become a ``<TN>`` the first
time they are used, ``<Ref>`` to objects outside the element are replaced by a copy of the object,
and RefIds are renumbered. Original elements are otherwise kept as they are, so flag enums and
Exchange value types reach the client exactly as Exchange wrote them.
"""

from __future__ import annotations

import base64
import copy
import datetime
import enum
import functools
import os
import re
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from psrpcore.types import (
    PSByte,
    PSCryptoProvider,
    PSDouble,
    PSFlagBase,
    PSInt16,
    PSInt64,
    PSObject,
    serialize,
)

from exporter.simulator.depth import REMOTING_DEPTH, UNLIMITED, is_property_bag, type_depth

__all__ = [
    "CaptureError",
    "RefContext",
    "element_bytes",
    "element_text",
    "expand_property",
    "load_capture",
    "properties_of",
    "property_names",
    "relink",
    "select_object",
    "to_element",
    "write_clixml",
]

_CLIXML_NS = "{http://schemas.microsoft.com/powershell/2004/04}"
_CIPHER = PSCryptoProvider()
_HEAD_ORDER = {"TN": 0, "TNRef": 0, "ToString": 1}


class CaptureError(Exception):
    """An Export-Clixml capture could not be read."""


@dataclass
class RefContext:
    """The ``RefId`` tables an element was written with (a whole capture file, or itself)."""

    type_names: dict[str, list[str]]
    objects: dict[str, ET.Element]

    @classmethod
    def of(cls, roots: Iterable[ET.Element]) -> RefContext:
        """Collect TN and Obj RefIds from ``roots`` and everything below them."""
        ctx = cls({}, {})
        for root in roots:
            for el in root.iter():
                if el.tag == "TN" and "RefId" in el.attrib:
                    ctx.type_names[el.attrib["RefId"]] = [t.text or "" for t in el]
                elif el.tag == "Obj" and "RefId" in el.attrib:
                    ctx.objects.setdefault(el.attrib["RefId"], el)
        return ctx


def to_element(value: Any) -> ET.Element:
    """Serialise a psrpcore object to a CLIXML element, children in PowerShell's order.

    psrpcore writes an enum's value before its ``<TN>``; PowerShell writes ``<TN>``, then
    ``<ToString>``, then the value. The order is fixed here so the wire looks like Exchange's.
    """
    element = serialize(value, _CIPHER)
    for el in element.iter("Obj"):
        el[:] = sorted(el, key=lambda c: _HEAD_ORDER.get(c.tag, 2))
    return element


def element_bytes(element: ET.Element) -> bytes:
    """UTF-8 bytes of an element, without an XML declaration (as PSRP messages carry it)."""
    return ET.tostring(element, encoding="unicode").encode("utf-8")


# ---------------------------------------------------------------------------------------------
# Fast writer for the psrpcore object graphs built in objects.py
# ---------------------------------------------------------------------------------------------
_ESCAPE_X = re.compile("(?i)_(x)")
_ESCAPE_CHARS = re.compile("[\u0000-\u001f\u007f-\u009f\ud800-\udfff\U00010000-\U0010ffff]")


def _escape_char(match: re.Match[str]) -> str:
    raw = match.group(0).encode("utf-16-be", errors="surrogatepass").hex().upper()
    return "".join(f"_x{raw[i : i + 4]}_" for i in range(0, len(raw), 4))


@functools.lru_cache(maxsize=8192)
def clixml_string(value: str) -> str:
    """A string escaped for CLIXML text or attributes (MS-PSRP ``_xHHHH_`` plus XML escaping)."""
    if "_" in value:
        value = _ESCAPE_X.sub("_x005F_\\1", value)
    value = _ESCAPE_CHARS.sub(_escape_char, value)
    # str.replace is several times faster than str.translate with a mapping table.
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _datetime_text(value: datetime.datetime) -> str:
    fraction = value.strftime(".%f") if value.microsecond else ""
    if value.tzinfo is datetime.UTC:
        zone = "Z"
    elif value.tzinfo is not None:
        offset = value.strftime("%z")
        zone = f"{offset[:3]}:{offset[3:]}"
    else:
        zone = ""
    return value.strftime(f"%Y-%m-%dT%H:%M:%S{fraction}{zone}")


class _Writer:
    """Writes the same CLIXML psrpcore would for PSObject graphs (PowerShell child order)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.refs: dict[int, int] = {}
        self.keep: list[Any] = []  # keeps referenced objects alive so their id() stays unique
        self.tns: dict[str, int] = {}

    def _name(self, name: str | None) -> str:
        return "" if name is None else f' N="{clixml_string(name)}"'

    def _type_names(self, names: list[str]) -> None:
        ref = self.tns.get(names[0])
        if ref is not None:
            self.parts.append(f'<TNRef RefId="{ref}" />')
            return
        ref = self.tns[names[0]] = len(self.tns)
        self.parts.append(f'<TN RefId="{ref}">')
        self.parts.extend(f"<T>{clixml_string(n)}</T>" for n in names)
        self.parts.append("</TN>")

    def _new_ref(self, value: Any) -> int:
        # numbered by objects written, not by distinct ids: an enum member written twice in full must
        # not hand its number out again
        ref = self.refs[id(value)] = len(self.keep)
        self.keep.append(value)
        return ref

    def value(self, value: Any, name: str | None = None, depth: int = UNLIMITED) -> None:
        n = self._name(name)
        out = self.parts
        t = type(value)  # type() and issubclass(): isinstance() on a PSObject is slow
        if value is None:
            out.append(f"<Nil{n} />")
        elif t is bool:
            out.append(f"<B{n}>{'true' if value else 'false'}</B>")
        elif t is str:
            out.append(f"<S{n}>{clixml_string(value)}</S>" if value else f"<S{n} />")
        elif t is int:
            tag = "I32" if -(2**31) <= value < 2**31 else "I64"
            out.append(f"<{tag}{n}>{value}</{tag}>")
        elif issubclass(t, enum.Enum):
            self._enum(value, n, depth)
        elif issubclass(t, PSDouble):
            out.append(f"<Db{n}>{str(float(value)).upper()}</Db>")
        elif t is float:
            out.append(f"<Sg{n}>{str(value).upper()}</Sg>")
        elif issubclass(t, PSInt16):
            out.append(f"<I16{n}>{int(value)}</I16>")
        elif issubclass(t, PSByte):
            out.append(f"<By{n}>{int(value)}</By>")
        elif issubclass(t, PSInt64):
            out.append(f"<I64{n}>{int(value)}</I64>")
        elif issubclass(t, int):
            tag = "I32" if -(2**31) <= value < 2**31 else "I64"
            out.append(f"<{tag}{n}>{int(value)}</{tag}>")
        elif issubclass(t, str):
            text = str.__str__(value)
            out.append(f"<S{n}>{clixml_string(text)}</S>" if text else f"<S{n} />")
        elif t is bytes:
            out.append(f"<BA{n}>{base64.b64encode(value).decode()}</BA>")
        elif issubclass(t, datetime.datetime):
            out.append(f"<DT{n}>{_datetime_text(value)}</DT>")
        elif t is uuid.UUID:
            out.append(f"<G{n}>{value}</G>")
        elif issubclass(t, list | PSObject):
            self._object(value, n, depth)
        else:
            raise TypeError(f"cannot write {t.__name__} as CLIXML")

    def _enum(self, value: enum.Enum, n: str, depth: int) -> None:
        number = int(value.value)
        if isinstance(value, PSFlagBase) and number != 0:
            names = [
                name
                for name, member in type(value).__members__.items()
                if int(member.value) and number & int(member.value) == int(member.value)
            ]
            text = ", ".join(names)
        else:
            text = "None" if value.name == "none" else (value.name or str(number))
        if depth <= 0:  # an enum beyond the depth is its name, as any object there
            self.parts.append(f"<S{n}>{clixml_string(text)}</S>" if text else f"<S{n} />")
            return
        ref = self._new_ref(value)
        self.parts.append(f'<Obj{n} RefId="{ref}">')
        self._type_names(list(type(value).PSObject.type_names))  # type: ignore[attr-defined]
        self.parts.append(f"<ToString>{clixml_string(text)}</ToString>")
        tag = "I16" if type(value.value) is PSInt16 else "I32"
        self.parts.append(f"<{tag}>{number}</{tag}></Obj>")

    def _object(self, value: Any, n: str, depth: int) -> None:
        ref = self.refs.get(id(value))
        if ref is not None:
            self.parts.append(f'<Ref{n} RefId="{ref}" />')
            return
        meta = value.PSObject
        is_list = isinstance(value, list)
        to_string = meta.to_string
        depth = type_depth(meta.type_names, depth)  # PowerShell's types.ps1xml SerializationDepth
        if depth <= 0 and not is_list:  # beyond the depth: its ToString, and no RefId
            text = to_string if to_string is not None else (meta.type_names[0] if meta.type_names else "")
            self.parts.append(f"<S{n}>{clixml_string(text)}</S>" if text else f"<S{n} />")
            return
        ref = self._new_ref(value)
        self.parts.append(f'<Obj{n} RefId="{ref}">')
        if meta.type_names:
            self._type_names(meta.type_names)
        if to_string is not None and not is_list:
            self.parts.append(f"<ToString>{clixml_string(to_string)}</ToString>" if to_string else "<ToString />")
        if is_list:  # a container's items are written at its own depth, then only its notes
            self.parts.append("<LST>")
            for item in value:
                self.value(item, None, depth)
            self.parts.append("</LST>")
            if depth > 0:
                self._members("MS", value, meta.extended_properties, depth)
        else:  # adapted properties use up one level; a property bag's notes do not (see depth.py)
            bag = is_property_bag(meta.type_names, to_string is not None)
            self._members("Props", value, meta.adapted_properties, depth - 1)
            self._members("MS", value, meta.extended_properties, depth if bag else depth - 1)
        self.parts.append("</Obj>")

    def _members(self, tag: str, owner: Any, props: list[Any], depth: int) -> None:
        if props:
            self.parts.append(f"<{tag}>")
            for prop in props:
                self.value(prop.get_value(owner), prop.name, depth)
            self.parts.append(f"</{tag}>")


def write_clixml(value: Any, depth: int = REMOTING_DEPTH) -> bytes:
    """CLIXML bytes for one object graph built from psrpcore types (see ``objects.py``).

    ``depth`` is PowerShell's serialization depth (see ``depth.py``): by default what a remote
    session sends (1: the object's properties, nested objects as their ToString); ``UNLIMITED``
    writes the whole graph, which is what ``psrpcore.types.serialize`` produces for it, with the
    children of each ``<Obj>`` in PowerShell's order (TN, ToString, Props, MS, value); about ten
    times faster.
    """
    writer = _Writer()
    writer.value(value, None, depth)
    return "".join(writer.parts).encode("utf-8")


class _Relinker:
    def __init__(self, ctx: RefContext) -> None:
        self.ctx = ctx
        self.obj_ids: dict[str, str] = {}
        self.tn_ids: dict[tuple[str, ...], str] = {}
        self.next_obj = 0

    def copy(self, el: ET.Element) -> ET.Element:
        if el.tag == "Ref":
            src = el.attrib.get("RefId", "")
            if src in self.obj_ids:
                new = ET.Element("Ref", {**el.attrib, "RefId": self.obj_ids[src]})
                new.tail = None
                return new
            target = self.ctx.objects.get(src)
            if target is None:
                raise CaptureError(f"dangling <Ref RefId={src!r}>")
            inlined = self.copy(target)
            if "N" in el.attrib:
                inlined.set("N", el.attrib["N"])
            else:
                inlined.attrib.pop("N", None)
            return inlined
        new = ET.Element(el.tag, dict(el.attrib))
        new.text = el.text if (el.text and el.text.strip()) or len(el) == 0 else None
        if el.tag == "Obj" and "RefId" in el.attrib:
            new_id = str(self.next_obj)
            self.next_obj += 1
            self.obj_ids[el.attrib["RefId"]] = new_id
            new.set("RefId", new_id)
        for child in el:
            if child.tag in ("TN", "TNRef"):
                new.append(self.type_names(child))
            else:
                new.append(self.copy(child))
        return new

    def type_names(self, el: ET.Element) -> ET.Element:
        names = [t.text or "" for t in el] if el.tag == "TN" else self.ctx.type_names.get(el.attrib["RefId"])
        if names is None:
            raise CaptureError(f"dangling <TNRef RefId={el.attrib.get('RefId')!r}>")
        key = tuple(names)
        if key in self.tn_ids:
            return ET.Element("TNRef", RefId=self.tn_ids[key])
        ref = str(len(self.tn_ids))
        self.tn_ids[key] = ref
        tn = ET.Element("TN", RefId=ref)
        for name in names:
            ET.SubElement(tn, "T").text = name
        return tn


def relink(element: ET.Element, ctx: RefContext | None = None) -> ET.Element:
    """A self-contained deep copy of ``element`` (see the module docstring)."""
    return _Relinker(ctx or RefContext.of([element])).copy(element)


def _strip_namespace(root: ET.Element) -> None:
    for el in root.iter():
        if isinstance(el.tag, str) and el.tag.startswith(_CLIXML_NS):
            el.tag = el.tag[len(_CLIXML_NS) :]


_capture_cache: dict[Path, tuple[float, list[ET.Element]]] = {}
_capture_lock = threading.Lock()


def load_capture(path: Path) -> list[ET.Element]:
    """The top-level objects of an Export-Clixml file, each re-linked to be self-contained.

    Results are cached per path and file modification time. Raises :class:`CaptureError`.
    """
    try:
        mtime = os.stat(path).st_mtime
    except OSError as exc:
        raise CaptureError(f"cannot read capture {path}: {exc}") from exc
    with _capture_lock:
        cached = _capture_cache.get(path)
        if cached is not None and cached[0] == mtime:
            return cached[1]
    try:
        root = ET.fromstring(path.read_bytes())
    except (OSError, ET.ParseError) as exc:
        raise CaptureError(f"capture {path} is not readable CLIXML: {exc}") from exc
    _strip_namespace(root)
    if root.tag != "Objs":
        raise CaptureError(f"capture {path}: root element is <{root.tag}>, expected <Objs>")
    ctx = RefContext.of([root])
    objects = [relink(child, ctx) for child in root]
    with _capture_lock:
        _capture_cache[path] = (mtime, objects)
    return objects


def properties_of(element: ET.Element) -> dict[str, ET.Element]:
    """Property elements of an ``<Obj>`` by name: adapted (``<Props>``), then extended (``<MS>``)."""
    props: dict[str, ET.Element] = {}
    for section in ("Props", "MS"):
        container = element.find(section)
        if container is None:
            continue
        for prop in container:
            name = prop.attrib.get("N")
            if name is not None and name not in props:
                props[name] = prop
    return props


def element_text(element: ET.Element, ctx: RefContext | None = None) -> str:
    """How PowerShell would print a value inside ``@{...}``: ToString, text, or True/False."""
    if element.tag == "Ref" and ctx is not None:
        target = ctx.objects.get(element.attrib.get("RefId", ""))
        if target is not None:
            element = target
    if element.tag == "Nil":
        return ""
    if element.tag == "B":
        return "True" if (element.text or "").lower() == "true" else "False"
    if element.tag == "Obj":
        to_string = element.find("ToString")
        if to_string is not None:
            return to_string.text or ""
        items = element.find("LST")
        if items is not None:
            return "{" + ", ".join(element_text(i, ctx) for i in items) + "}"
        main = element.find("TN/T")
        return (main.text or "") if main is not None else ""
    return element.text or ""


def select_object(element: ET.Element, names: list[str]) -> ET.Element:
    """A ``Select-Object -Property`` result: a PSCustomObject with copies of the named properties.

    ``element`` is the object as the server holds it (not cut to a depth). Type names become
    ``Selected.<original type>``, ``System.Management.Automation.PSCustomObject``,
    ``System.Object``; properties are note properties (``<MS>``); missing properties are ``Nil``.
    A property bag has no ``<ToString>`` on the wire (PowerShell's serializer writes none for it;
    the ``@{...}`` text is the client's own rendering). Cut the result with ``depth.cut`` to send
    it: its notes are written at the object's depth (1), one level deeper than adapted properties.
    """
    ctx = RefContext.of([element])
    available = properties_of(element)
    main = element.find("TN/T")
    main_type = main.text if main is not None and main.text else None
    if main_type is None:
        ref = element.find("TNRef")
        if ref is not None:
            main_type = (ctx.type_names.get(ref.attrib["RefId"]) or ["System.Object"])[0]
    out = ET.Element("Obj", RefId="selected")
    tn = ET.SubElement(out, "TN", RefId="selected")
    for type_name in (
        f"Selected.{main_type or 'System.Object'}",
        "System.Management.Automation.PSCustomObject",
        "System.Object",
    ):
        ET.SubElement(tn, "T").text = type_name
    ms = ET.SubElement(out, "MS")
    for name in names:
        prop = available.get(name)
        ms.append(ET.Element("Nil", N=name) if prop is None else copy.deepcopy(prop))
    return relink(out, ctx)


def expand_property(element: ET.Element, name: str) -> list[ET.Element] | None:
    """``Select-Object -ExpandProperty`` results: the property's value, each item of a collection
    value (PowerShell enumerates it), nothing for ``$null`` (and ``$null`` items); None if absent."""
    prop = properties_of(element).get(name)
    if prop is None:
        return None
    ctx = RefContext.of([element])
    value = relink(prop, ctx)
    value.attrib.pop("N", None)
    if value.tag == "Nil":
        return []
    items = next((c for c in value if c.tag in ("LST", "IE", "QUE", "STK")), None) if value.tag == "Obj" else None
    if items is None:
        return [value]
    return [relink(item, RefContext.of([value])) for item in items if item.tag != "Nil"]


def property_names(element: ET.Element) -> list[str]:
    """All property names of an ``<Obj>`` in wire order (adapted first)."""
    return list(properties_of(element))
