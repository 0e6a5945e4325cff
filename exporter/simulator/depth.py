"""Serialization depth: what a remote session puts on the wire, as PowerShell's serializer decides it.

PowerShell serializes pipeline output for remoting with depth 1 (``Fragmentor.SerializationDepth
ForRemoting`` in PowerShell's ``remoting/common/fragmentor.cs``); ``Export-Clixml`` uses depth 2
(``SerializationContext.DefaultSerializationDepth``). The real captures this project holds are
Export-Clixml files, so they nest one level deeper than a remote session's output. The rules below
are those of ``InternalSerializer.WriteOneObject`` and its helpers (``engine/serialization.cs``):

* ``null`` is ``<Nil>``; primitive known types (string, numbers, bool, DateTime, Guid, byte[],
  TimeSpan, Uri, Version...) are written as themselves at any depth.
* An object already written as an ``<Obj>`` in the same message is a ``<Ref>`` to it, at any depth.
* Known containers (IDictionary ``<DCT>``, IList ``<LST>``, other IEnumerable ``<IE>``, Stack,
  Queue) are written at any depth, with their type names and no ToString; their items are written
  at the container's own depth (containers do not use up depth). Above depth 0 a non-list
  enumerable also writes its properties, a list only its instance (note) properties.
* Any other object (an enum, an Exchange value type, an ADObjectId, a RequesterDetails...) at
  depth 0 becomes a plain string: ``<S>`` with its ToString. It gets no RefId then, so a second
  occurrence is written again (as a string).
* Above depth 0 an object is ``<Obj>``: type names, ToString (not for property bags such as
  Select-Object output), adapted properties (``<Props>``) at depth - 1, extended members
  (``<MS>``): type-table members at depth - 1, instance (note) properties at the same depth;
  an enum writes its underlying integer.
* ``Deserialized.`` is prepended to type names by PowerShell's deserializer (``ReadTypeNames``); it is
  never on the wire. ``PSComputerName``, ``RunspaceId`` and ``PSShowComputerName`` are note
  properties the PowerShell client adds (``remoting/client/Job.cs``); never on the wire either.

A ``SerializationDepth`` in a types.ps1xml overrides the depth of an object of that type (or a
derived one) wherever it sits (``GetDepthOfSerialization``; remoting honours it). PowerShell's own
types give ``System.Net.IPAddress`` and ``X509Certificate2`` depth 1 (``TypeTable_Types_Ps1Xml.cs``):
an IP address inside a connector is an object with its properties even where its neighbours are
strings, exactly as the real captures show at depth 2. No public source says Exchange declares a
SerializationDepth for its own types, so none is applied to them (inferred; the stricter choice).
"""

from __future__ import annotations

from collections.abc import Iterable
from xml.etree import ElementTree as ET

__all__ = [
    "CLIENT_NOTES",
    "EXPORT_CLIXML_DEPTH",
    "PROPERTY_BAG_TYPE",
    "REMOTING_DEPTH",
    "TYPE_DEPTHS",
    "UNLIMITED",
    "cut",
    "is_property_bag",
    "type_depth",
]

#: Depth of pipeline output in a remote session (PowerShell ``Fragmentor.SerializationDepthForRemoting``).
REMOTING_DEPTH = 1
#: Depth of ``Export-Clixml`` without ``-Depth`` (``SerializationContext.DefaultSerializationDepth``).
EXPORT_CLIXML_DEPTH = 2
#: No cut: the whole object graph (what the server-side object holds, for Select-Object).
UNLIMITED = 1 << 30
#: Note properties a PowerShell client adds to what it receives; never sent by the server.
CLIENT_NOTES = frozenset({"PSComputerName", "RunspaceId", "PSShowComputerName"})
PROPERTY_BAG_TYPE = "System.Management.Automation.PSCustomObject"

#: ``SerializationDepth`` from PowerShell's built-in types.ps1xml for the .NET types Exchange objects
#: hold (``TypeTable_Types_Ps1Xml.cs``): System.Net.IPAddress and X509Certificate2 (ExchangeCertificate
#: derives from it).
TYPE_DEPTHS = {
    "System.Net.IPAddress": 1,
    "System.Security.Cryptography.X509Certificates.X509Certificate2": 1,
}
_CONTAINERS = ("LST", "IE", "DCT", "QUE", "STK")
_HEAD = ("TN", "TNRef", "ToString")


def type_depth(type_names: Iterable[str], depth: int) -> int:
    """The depth an object with these type names is written at: its types.ps1xml SerializationDepth
    if it has one (``GetDepthOfSerialization``), else ``depth``. Never applied under ``UNLIMITED``."""
    if depth >= UNLIMITED >> 1:  # UNLIMITED, or what is left of it a few levels down
        return depth
    for name in type_names:
        found = TYPE_DEPTHS.get(name)
        if found is not None:
            return found
    return depth


def is_property_bag(type_names: Iterable[str], has_to_string: bool) -> bool:
    """True for a PSCustomObject (Select-Object output): no ToString, and its members are instance notes."""
    return not has_to_string and any(
        name in (PROPERTY_BAG_TYPE, f"Deserialized.{PROPERTY_BAG_TYPE}") for name in type_names
    )


class _Cutter:
    """One serializer pass: RefIds and type-name ids renumbered in writing order."""

    def __init__(self, root: ET.Element, drop_client_notes: bool) -> None:
        self.objects: dict[str, ET.Element] = {}
        self.type_names: dict[str, list[str]] = {}
        for el in root.iter():
            if el.tag == "Obj" and "RefId" in el.attrib:
                self.objects.setdefault(el.attrib["RefId"], el)
            elif el.tag == "TN" and "RefId" in el.attrib:
                self.type_names[el.attrib["RefId"]] = [t.text or "" for t in el]
        self.written: dict[str, str] = {}  # source RefId -> RefId of the <Obj> written for it
        self.tn_ids: dict[tuple[str, ...], str] = {}
        self.drop_client_notes = drop_client_notes

    def names_of(self, el: ET.Element) -> list[str]:
        tn = el.find("TN")
        if tn is not None:
            return [t.text or "" for t in tn]
        ref = el.find("TNRef")
        return list(self.type_names.get(ref.attrib.get("RefId", ""), [])) if ref is not None else []

    def start(self, el: ET.Element, names: list[str]) -> ET.Element:
        """A new ``<Obj>`` with the next RefId and the type names (``<TN>`` once, then ``<TNRef>``)."""
        out = ET.Element("Obj", {k: v for k, v in el.attrib.items() if k == "N"})
        new_id = str(len(self.written))
        if "RefId" in el.attrib:
            self.written[el.attrib["RefId"]] = new_id
        else:
            self.written[f"anonymous-{id(el)}"] = new_id
        out.set("RefId", new_id)
        if names:
            key = tuple(names)
            ref = self.tn_ids.get(key)
            if ref is not None:
                ET.SubElement(out, "TNRef", RefId=ref)
            else:
                ref = self.tn_ids[key] = str(len(self.tn_ids))
                tn = ET.SubElement(out, "TN", RefId=ref)
                for name in names:
                    ET.SubElement(tn, "T").text = name
        return out

    def value(self, el: ET.Element, depth: int, top: bool = False) -> ET.Element:
        if el.tag == "Ref":
            source = el.attrib.get("RefId", "")
            if source in self.written:
                return _ref(el, self.written[source])
            target = self.objects.get(source)
            if target is None:
                raise ValueError(f"dangling <Ref RefId={source!r}>")
            out = self.value(target, depth)
            out.attrib.pop("N", None)
            if "N" in el.attrib:
                out.set("N", el.attrib["N"])
            return out
        if el.tag != "Obj":
            return _copy(el)
        own_id = el.attrib.get("RefId")
        if own_id is not None and own_id in self.written:
            return _ref(el, self.written[own_id])
        names = self.names_of(el)
        depth = type_depth(names, depth)
        to_string = el.find("ToString")
        container = next((c for c in el if c.tag in _CONTAINERS), None)
        members = [c for c in el if c.tag not in _HEAD and c.tag not in _CONTAINERS and c.tag not in ("Props", "MS")]
        bag = is_property_bag(names, to_string is not None)
        if container is not None:
            out = self.start(el, names)
            out.append(self.container(container, depth))
            if depth > 0:
                if container.tag == "IE":
                    self.section(el, out, "Props", depth - 1, top)
                self.section(el, out, "MS", depth, top)
            return out
        if members and "System.Enum" not in names:
            # a primitive with notes (WritePrimitiveTypePSObjectWithNotes): kept at any depth
            out = self.start(el, names if el.find("TN") is not None or el.find("TNRef") is not None else [])
            if to_string is not None:
                out.append(_copy(to_string))
            out.extend(_copy(m) for m in members)
            self.section(el, out, "MS", depth, top)
            return out
        if depth <= 0:
            text = to_string.text if to_string is not None else self.display(el, names, bag)
            return _string(text, el.attrib.get("N"))
        out = self.start(el, names)
        if to_string is not None and not bag:
            out.append(_copy(to_string))
        out.extend(_copy(m) for m in members)  # an enum's underlying value
        self.section(el, out, "Props", depth - 1, top)
        self.section(el, out, "MS", depth if bag else depth - 1, top)
        return out

    def container(self, container: ET.Element, depth: int) -> ET.Element:
        out = ET.Element(container.tag)
        for item in container:
            if container.tag == "DCT" and item.tag == "En":
                entry = ET.SubElement(out, "En")
                entry.extend(self.value(part, depth) for part in item)
            else:
                out.append(self.value(item, depth))
        return out

    def section(self, el: ET.Element, out: ET.Element, tag: str, depth: int, top: bool) -> None:
        found = el.find(tag)
        if found is None:
            return
        props = [
            p
            for p in found
            if not (tag == "MS" and top and self.drop_client_notes and p.attrib.get("N") in CLIENT_NOTES)
        ]
        if props:
            section = ET.SubElement(out, tag)
            section.extend(self.value(p, max(depth, 0)) for p in props)

    def display(self, el: ET.Element, names: list[str], bag: bool) -> str:
        """ToString of an object that carries none: ``@{a=1; b=2}`` for a property bag, else its type."""
        if not bag:
            return names[0] if names else ""
        shown = [
            f"{prop.attrib.get('N', '')}={self.text(prop)}"
            for section in (el.find("Props"), el.find("MS"))
            if section is not None
            for prop in section
        ]
        return "@{" + "; ".join(shown) + "}"

    def text(self, el: ET.Element) -> str:
        if el.tag == "Ref":
            target = self.objects.get(el.attrib.get("RefId", ""))
            return self.text(target) if target is not None else ""
        if el.tag == "Nil":
            return ""
        if el.tag == "B":
            return "True" if (el.text or "").lower() == "true" else "False"
        if el.tag == "Obj":
            shown = el.find("ToString")
            if shown is not None:
                return shown.text or ""
            items = next((c for c in el if c.tag in _CONTAINERS), None)
            if items is not None:
                return "{" + ", ".join(self.text(i) for i in items) + "}"
            return self.display(el, self.names_of(el), True)
        return el.text or ""


def _ref(el: ET.Element, ref_id: str) -> ET.Element:
    """A ``<Ref>`` to an object already written, keeping ``el``'s property name."""
    out = ET.Element("Ref", {"N": el.attrib["N"]} if "N" in el.attrib else {})
    out.set("RefId", ref_id)
    return out


def _copy(el: ET.Element) -> ET.Element:
    out = ET.Element(el.tag, dict(el.attrib))
    out.text = el.text
    for child in el:
        out.append(_copy(child))
    return out


def _string(text: str | None, name: str | None) -> ET.Element:
    out = ET.Element("S", {"N": name} if name is not None else {})
    out.text = text or None
    return out


def cut(element: ET.Element, depth: int = REMOTING_DEPTH, *, drop_client_notes: bool = True) -> ET.Element:
    """``element`` as PowerShell's serializer would write the same object at ``depth``.

    ``element`` is a self-contained CLIXML element (a top-level output object, as
    ``clixml.load_capture`` returns them, or a property/list item); ``<Ref>``s to objects written
    as strings are written again, the others stay references, and RefIds/type-name ids are
    renumbered in writing order as a fresh serializer numbers them. Objects already cut (strings
    where a capture has objects) stay as they are: cutting only removes detail. With
    ``drop_client_notes`` the top-level ``PSComputerName``/``RunspaceId``/``PSShowComputerName``
    notes a PowerShell client added to a capture are removed. ``depth=UNLIMITED`` only renumbers.
    """
    return _Cutter(element, drop_client_notes).value(element, depth, top=True)
