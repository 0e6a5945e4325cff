"""A faster decoder for pipeline output, producing exactly what pypsrp's own deserializer produces.

Why: pypsrp's ``Serializer.deserialize`` re-serialises every XML element to a string at every
nesting level and rebuilds its type table per element. On Exchange objects (30+ properties, nested
enum objects) that measured 3-7 ms of CPU per Get-Queue row, which alone put a 50-server poll cycle
at 7 s of client CPU. This decoder walks the same CLIXML once and builds the same
``GenericComplexObject``/list/dict/primitive values, so everything downstream (``clixml.flatten``)
is unchanged; ``tests/unit/test_wire.py`` checks equality against pypsrp on the real Exchange
captures. Anything outside the shapes it knows (typed PowerShell records, secure strings, odd
types) is handed to pypsrp itself, and any error falls back to pypsrp, which then raises as before.
"""

from __future__ import annotations

import base64
import functools
import re
import struct
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from pypsrp.complex_objects import GenericComplexObject, ObjectMeta
from pypsrp.exceptions import FragmentError, SerializationError
from pypsrp.messages import Message, MessageType, PipelineOutput
from pypsrp.powershell import Fragmenter
from pypsrp.serializer import Serializer

from exporter.exchange.bounds import CallGuard
from exporter.exchange.clixml import deserialize_linked

_FRAGMENT_HEADER = struct.Struct(">QQBI")  # object id, fragment id, start/end flags, length
_MESSAGE_TYPE = struct.Struct("<I")
#: Messages a pipeline's client keeps (pypsrp holds every record in its streams): counted per call.
_COUNTED = frozenset(
    {
        MessageType.PIPELINE_OUTPUT,
        MessageType.ERROR_RECORD,
        MessageType.WARNING_RECORD,
        MessageType.VERBOSE_RECORD,
        MessageType.DEBUG_RECORD,
        MessageType.PROGRESS_RECORD,
        MessageType.INFORMATION_RECORD,
    }
)
_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def unescape_clixml(text: str | None) -> str:
    """Undo CLIXML's ``_xHHHH_`` escaping (UTF-16 code units, surrogate pairs included)."""
    if not text:
        return ""
    if "_x" not in text:
        return text
    units = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    return units.encode("utf-16", "surrogatepass").decode("utf-16")


_PRIMITIVES: dict[str, Callable[[ET.Element], Any]] = {
    "S": lambda e: unescape_clixml(e.text),
    "ToString": lambda e: unescape_clixml(e.text),
    "C": lambda e: chr(int(e.text or "0")),
    "B": lambda e: (e.text or "").lower() == "true",
    "DT": lambda e: e.text,
    "TS": lambda e: e.text,
    "By": lambda e: int(e.text or "0"),
    "SB": lambda e: int(e.text or "0"),
    "U16": lambda e: int(e.text or "0"),
    "I16": lambda e: int(e.text or "0"),
    "U32": lambda e: int(e.text or "0"),
    "I32": lambda e: int(e.text or "0"),
    "U64": lambda e: int(e.text or "0"),
    "I64": lambda e: int(e.text or "0"),
    "Sg": lambda e: float(e.text or "0"),
    "Db": lambda e: float(e.text or "0"),
    "D": lambda e: e.text,
    "BA": lambda e: base64.b64decode(e.text or ""),
    "G": lambda e: uuid.UUID(e.text),
    "URI": lambda e: unescape_clixml(e.text),
    "Nil": lambda e: None,
    "Version": lambda e: e.text,
    "XD": lambda e: unescape_clixml(e.text),
    "SBK": lambda e: unescape_clixml(e.text),
}
# The type names pypsrp (0.8-0.9) recognises, by what it turns them into. Its first recognised type
# decides an object's shape; unrecognised names are skipped. Kept in step by tests/unit/test_wire.py.
_PYPSRP_PRIMITIVE_TYPES = {
    "System.String",
    "System.Char",
    "System.Boolean",
    "System.DateTime",
    "System.Byte",
    "System.SByte",
    "System.UInt16",
    "System.Int16",
    "System.UInt32",
    "System.Int32",
    "System.UInt64",
    "System.Int64",
    "System.Single",
    "System.Double",
    "System.Decimal",
    "System.Guid",
    "System.Uri",
    "System.Version",
    "System.Xml.XmlDocument",
    "System.Management.Automation.ScriptBlock",
    "System.Security.SecureString",
    "System.Management.Automation.PSTypeName",
}
_PYPSRP_LIST_TYPES = {"System.Array", "System.Collections.ArrayList", "System.Collections.Generic.List"}
_PYPSRP_DICT_TYPES = {
    "System.Collections.Hashtable",
    "System.Management.Automation.PSBoundParametersDictionary",
    "System.Management.Automation.PSPrimitiveDictionary",
}
_PYPSRP_DYNAMIC_TYPES = {"System.Object", "System.Management.Automation.PSObject"}
_PYPSRP_CLASS_TYPES = {  # decoded into pypsrp's own classes: left to pypsrp
    "Selected.Microsoft.PowerShell.Commands.GenericMeasureInfo",
    "System.Collections.Queue",
    "System.Collections.Stack",
    "System.ConsoleColor",
    "System.Management.Automation.CommandOrigin",
    "System.Management.Automation.DebugRecord",
    "System.Management.Automation.ErrorRecord",
    "System.Management.Automation.Host.Coordinates",
    "System.Management.Automation.Host.KeyInfo",
    "System.Management.Automation.Host.Size",
    "System.Management.Automation.InformationalRecord",
    "System.Management.Automation.InformationRecord",
    "System.Management.Automation.ParameterMetadata",
    "System.Management.Automation.ProgressRecordType",
    "System.Management.Automation.PSCredential",
    "System.Management.Automation.Remoting.RemoteHostMethodId",
    "System.Management.Automation.Runspaces.ApartmentState",
    "System.Management.Automation.Runspaces.PipelineResultTypes",
    "System.Management.Automation.Runspaces.PSThreadOptions",
    "System.Management.Automation.Runspaces.RemoteStreamOptions",
    "System.Management.Automation.SessionStateEntryVisibility",
    "System.Management.Automation.VerboseRecord",
    "System.Management.Automation.WarningRecord",
    "System.Globalization.CultureInfo",
}
_GENERIC_LISTS = (
    ("System.Collections.Generic.List`1[[", 35),
    ("System.Collections.ObjectModel.Collection`1[[", 45),
    ("System.Collections.ObjectModel.ReadOnlyCollection`1[[", 53),
)
_KNOWN = _PYPSRP_PRIMITIVE_TYPES | _PYPSRP_LIST_TYPES | _PYPSRP_DICT_TYPES | _PYPSRP_DYNAMIC_TYPES | _PYPSRP_CLASS_TYPES


class _Unsupported(Exception):
    """A shape this decoder leaves to pypsrp."""


class _Decoder:
    def __init__(self, root: ET.Element | None = None) -> None:
        self.refs: dict[str, Any] = {}
        self.tns: dict[str, list[str]] = {}
        self._root = root
        self._index: dict[str, ET.Element] | None = None

    def _hidden(self, ref_id: str) -> ET.Element:
        """An object defined inside a raw ``<LST>`` (an Exchange MVP) that a later ``<Ref>`` names.

        pypsrp never registers such objects and raises KeyError (real Get-SendConnector output:
        ``SourceIPAddress`` refers to the IPAddress inside ``SmartHosts``). Exchange's own
        deserializer resolves them, so do we; a reference to nothing still raises KeyError.
        """
        return self._objects()[ref_id]

    def _objects(self) -> dict[str, ET.Element]:
        """Every ``<Obj RefId>`` of the message (built once, on the first unknown reference); also
        registers every ``<TN>`` so type references into raw lists resolve."""
        if self._index is None:
            self._index = {}
            for el in self._root.iter() if self._root is not None else ():
                if el.tag == "Obj" and "RefId" in el.attrib:
                    self._index.setdefault(el.attrib["RefId"], el)
                elif el.tag == "TN" and "RefId" in el.attrib:
                    self.tns.setdefault(el.attrib["RefId"], [t.text or "" for t in el])
        return self._index

    def value(self, element: ET.Element) -> Any:
        tag = element.tag
        primitive = _PRIMITIVES.get(tag)
        if primitive is not None:
            return primitive(element)
        if tag == "Ref":
            ref_id = element.attrib["RefId"]
            if ref_id not in self.refs:
                return self.obj(self._hidden(ref_id))
            return self.refs[ref_id]
        if tag == "Obj":
            return self.obj(element)
        # A bare container inside an object (an Exchange MultiValuedProperty's <LST>): pypsrp keeps
        # the raw XML text of such elements; so do we, for clixml.decode_mvp to read.
        return ET.tostring(element, encoding="unicode")

    def _item(self, child: ET.Element, typed: bool) -> Any:
        """A list item. In a typed list (``String[]``, ``List`1[[Int32]]``) pypsrp reads items with
        the element type's metadata, so an ``<Obj>`` without type names stays raw XML text there."""
        if typed and child.tag == "Obj" and child.find("TN") is None and child.find("TNRef") is None:
            raw = ET.tostring(child, encoding="unicode")
            if "RefId" in child.attrib:
                self.refs[child.attrib["RefId"]] = raw
            return raw
        return self.value(child)

    def _types(self, element: ET.Element) -> list[str]:
        tn = element.find("TN")
        if tn is not None:
            types = [t.text or "" for t in tn]
            self.tns[tn.attrib["RefId"]] = types
            return types
        ref = element.find("TNRef")
        if ref is not None:
            ref_id = ref.attrib["RefId"]
            if ref_id not in self.tns:
                self._objects()
            return self.tns[ref_id]
        return []

    def obj(self, element: ET.Element) -> Any:
        types = self._types(element)
        shape = _shape(types)
        if shape in ("list", "typed_list"):
            container = element.find("LST")
            children = list(container) if container is not None else []
            result: Any = [self._item(child, typed=shape == "typed_list") for child in children]
        elif shape == "dict":
            result = {}
            dct = element.find("DCT")
            for entry in dct if dct is not None else []:
                key = entry.find("*[@N='Key']")
                val = entry.find("*[@N='Value']")
                result[self.value(key) if key is not None else ""] = self.value(val) if val is not None else ""
        elif shape == "dynamic":
            result = GenericComplexObject()
            self.refs[element.attrib["RefId"]] = result
            self._fill(result, element, types)
        elif shape == "raw":
            result = ET.tostring(element, encoding="unicode")
        else:
            raise _Unsupported(shape)
        self.refs[element.attrib["RefId"]] = result
        return result

    def _fill(self, obj: GenericComplexObject, element: ET.Element, types: list[str]) -> None:
        obj.types = types
        for child in element:
            tag = child.tag
            if tag in ("TN", "TNRef"):
                continue
            if tag == "Props":
                for prop in child:
                    obj.adapted_properties[prop.attrib["N"]] = self.value(prop)
            elif tag == "MS":
                for prop in child:
                    obj.extended_properties[prop.attrib["N"]] = self.value(prop)
            elif tag == "ToString":
                obj.to_string = unescape_clixml(child.text)
            else:
                obj.property_sets.append(self.value(child))


def _shape(types: list[str]) -> str:
    """Mirror pypsrp's choice: the first of the object's types that it recognises decides."""
    return _shape_of(tuple(types))


@functools.lru_cache(maxsize=1024)
def _shape_of(types: tuple[str, ...]) -> str:
    if not types:
        return "dynamic"
    for raw in types:
        name = raw[13:] if raw.startswith("Deserialized.System.") else raw
        is_list = False
        if name.endswith("[]"):
            name, is_list = name[:-2], True
        else:
            for prefix, cut in _GENERIC_LISTS:
                if name.startswith(prefix):
                    name, is_list = name[cut:-1].split(",")[0], True
                    break
            else:
                if name.startswith("System.Collections.Generic.Dictionary`2[["):
                    return "pypsrp"  # typed dictionaries: rare in Exchange output, left to pypsrp
        if name not in _KNOWN:
            continue
        if is_list:
            return "typed_list" if name in _PYPSRP_PRIMITIVE_TYPES | _PYPSRP_DYNAMIC_TYPES else "pypsrp"
        if name in _PYPSRP_LIST_TYPES:
            return "list"
        if name in _PYPSRP_DICT_TYPES:
            return "dict"
        if name in _PYPSRP_DYNAMIC_TYPES:
            return "dynamic"
        return "pypsrp"
    return "raw"  # no recognised type: pypsrp returns the raw XML string


def decode_output(xml: str) -> Any:
    """Decode one PIPELINE_OUTPUT message body; raise if it needs pypsrp's full deserializer."""
    element = ET.fromstring(xml)
    if element.tag == "Obj" and _shape(_Decoder(element)._types(element)) == "raw":
        return xml  # pypsrp returns the message text itself for an object of unknown type
    return _Decoder(element).value(element)


def top_object(xml: str) -> ET.Element:
    """The ``<Obj>`` of one output message, for a collector's own decoder; ValueError unless pypsrp
    would decode the message as a generic object (``GenericComplexObject``), what its parser reads."""
    element = ET.fromstring(xml)
    if element.tag != "Obj" or _shape(_Decoder(element)._types(element)) != "dynamic":
        raise ValueError("not a generic object")
    return element


def primitive_value(element: ET.Element) -> Any:
    """The value pypsrp gives a primitive property element (``<S>``, ``<I32>``, ``<DT>``, ``<Nil>``...);
    ValueError for any other (an object, a reference): a collector's decoder then leaves the message
    to the generic path."""
    convert = _PRIMITIVES.get(element.tag)
    if convert is None or element.tag == "ToString":
        raise ValueError(f"<{element.tag}> is not a primitive")
    return convert(element)


class FastOutputSerializer(Serializer):
    """pypsrp's Serializer with a fast path for top-level pipeline output messages.

    ``decoder``, when set (by the session, for one pipeline at a time), gets first go at each
    output message's XML: a collector can turn the text straight into its own record and skip
    building generic objects. If it raises, the generic path decodes the message as usual.
    """

    decoder: Callable[[str], Any] | None = None

    def deserialize(self, element: ET.Element | str, metadata: ObjectMeta | None = None, clear: bool = True) -> Any:
        if metadata is None and clear and isinstance(element, str):
            if self.decoder is not None:
                try:
                    return self.decoder(element)
                except Exception:  # the generic path below handles anything unexpected
                    pass
            try:
                return decode_output(element)
            except Exception:  # pypsrp decides, and raises its own error if it must
                pass
        try:
            return super().deserialize(element, metadata, clear)
        except KeyError:
            if metadata is not None or not clear or not isinstance(element, str):
                raise
            # pypsrp's own gap: a reference to an object inside a raw MVP list (see _Decoder._hidden)
            return deserialize_linked([ET.fromstring(element)])[0]


def install(pool: Any, guard: CallGuard | None = None) -> None:
    """Give a new (not yet opened) pypsrp RunspacePool the faster receive path and output decoder;
    ``guard`` (``bounds.install``): count its messages and their sizes against the call's limits."""
    serializer = FastOutputSerializer()
    pool._serializer = serializer
    pool._fragmenter = FastFragmenter(pool.connection.max_payload_size, serializer)
    pool._fragmenter.guard = guard


def set_decoder(pool: Any, decoder: Callable[[str], Any] | None) -> None:
    """Use ``decoder`` for this pool's output messages until reset with None (no-op if not installed)."""
    serializer = getattr(pool, "_serializer", None)
    if isinstance(serializer, FastOutputSerializer):
        serializer.decoder = decoder


class _OutputMessage:
    """What pypsrp's receive loop reads from a PIPELINE_OUTPUT message: its type and data."""

    __slots__ = ("data", "message_type")

    def __init__(self, data: PipelineOutput) -> None:
        self.message_type = MessageType.PIPELINE_OUTPUT
        self.data = data


class FastFragmenter(Fragmenter):
    """pypsrp's Fragmenter with a cheaper receive path.

    pypsrp re-slices the remaining response buffer after every fragment (quadratic in the size of
    a Receive response) and parses two GUIDs per message that nothing reads for pipeline output.
    This walks the buffer by offset and builds PIPELINE_OUTPUT messages directly; every other
    message type still goes through pypsrp's ``Message.unpack``. With a ``guard``, a message's size
    is checked as its fragments arrive (before they are joined) and every message is counted.
    """

    guard: CallGuard | None = None

    def defragment(self, data: bytes) -> list[Any]:
        view = memoryview(data)
        offset, size = 0, len(data)
        complete: list[bytes] = []
        guard = self.guard
        while offset < size:
            object_id, fragment_id, flags, length = _FRAGMENT_HEADER.unpack_from(view, offset)
            if guard is not None:
                held = self.incoming_buffer.get(object_id)
                guard.check_object(length + (len(held["data"]) if held is not None else 0))
            body = bytes(view[offset + 21 : offset + 21 + length])
            offset += 21 + length
            buffer = self.incoming_buffer.get(object_id)
            if buffer is None:
                buffer = {"data": b"", "id": 0}
                self.incoming_buffer[object_id] = buffer
            if fragment_id != buffer["id"]:
                raise FragmentError(f"Fragment Fragment Id: {fragment_id} != Expected Fragment Id: {buffer['id']}")
            start, end = bool(flags & 0x1), bool(flags & 0x2)
            if start and end:
                complete.append(body)
                del self.incoming_buffer[object_id]
            elif start:
                buffer["data"] = body
                buffer["id"] += 1
            elif end:
                complete.append(buffer["data"] + body)
                del self.incoming_buffer[object_id]
            else:
                buffer["data"] += body
                buffer["id"] += 1
        return [self._message(raw) for raw in complete]

    def _message(self, raw: bytes) -> Any:
        message_type = _MESSAGE_TYPE.unpack_from(raw, 4)[0]
        if self.guard is not None and message_type in _COUNTED:
            self.guard.add_message(output=message_type == MessageType.PIPELINE_OUTPUT)
        if message_type != MessageType.PIPELINE_OUTPUT:
            return Message.unpack(raw, self.serializer)
        start = 43 if raw[40:43] == b"\xef\xbb\xbf" else 40
        text = raw[start:].decode("utf-8")
        try:
            data = self.serializer.deserialize(text)
        except SerializationError:  # as pypsrp: fall back to a generic object
            data = self.serializer.deserialize(text, ObjectMeta("ObjDynamic", object=GenericComplexObject))
        return _OutputMessage(PipelineOutput(data))
