"""The pypsrp internals that exporter/exchange/wire.py relies on are there, with the shapes it expects.

wire.py sets a RunspacePool's private ``_serializer`` and ``_fragmenter`` before the pool opens,
subclasses ``Serializer`` and ``Fragmenter``, reads the PSRP fragment and message layout itself and
mirrors pypsrp's table of known type names. pyproject.toml pins pypsrp to the release line this was
checked against; when a new pypsrp moves any of it, these tests say what moved (and the pin says
which release to check before widening it).
"""

from __future__ import annotations

import ast
import inspect
import struct
import textwrap
import tomllib
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from pypsrp.complex_objects import GenericComplexObject, ObjectMeta
from pypsrp.messages import Destination, MessageType, PipelineOutput
from pypsrp.powershell import Fragment, Fragmenter, RunspacePool
from pypsrp.serializer import Serializer
from pypsrp.wsman import WSMan

from exporter.exchange import wire
from exporter.exchange.clixml import flatten

ROOT = Path(__file__).resolve().parents[2]


def parameters(function: Any) -> list[tuple[str, Any]]:
    return [(p.name, p.default) for p in inspect.signature(function).parameters.values()]


def test_installed_pypsrp_is_the_pinned_release_line() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [Requirement(d) for d in dependencies if Requirement(d).name == "pypsrp"]
    assert any(s.operator == "<" for s in pin.specifier), "pypsrp needs an upper bound: wire.py uses its internals"
    assert pin.specifier.contains(version("pypsrp")), f"pypsrp {version('pypsrp')} is outside {pin}"


def pool() -> RunspacePool:
    """A pool that never connects (WSMan connects on the first request)."""
    connection = WSMan("localhost", ssl=False, auth="basic", encryption="never", username="u", password="p", port=5985)
    return RunspacePool(connection, configuration_name="Microsoft.Exchange")


def test_runspace_pool_private_attributes_and_their_readers() -> None:
    p = pool()
    assert type(p._serializer) is Serializer
    assert type(p._fragmenter) is Fragmenter
    assert p._fragmenter.serializer is p._serializer
    assert isinstance(p.connection.max_payload_size, int)
    assert p._fragmenter.max_size == p.connection.max_payload_size - 21  # the fragment header
    # the pool decodes what it receives through these attributes (so replacing them takes effect)
    receive = inspect.getsource(RunspacePool._parse_responses)
    assert "self._fragmenter.defragment(" in receive
    wire.install(p)
    assert isinstance(p._fragmenter, wire.FastFragmenter) and isinstance(p._serializer, wire.FastOutputSerializer)
    assert p._fragmenter.serializer is p._serializer
    assert p._fragmenter.max_size == p.connection.max_payload_size - 21
    decoder = lambda xml: xml  # noqa: E731
    wire.set_decoder(p, decoder)
    assert p._serializer.decoder is decoder


def test_subclassed_signatures_and_attributes() -> None:
    assert parameters(Fragmenter.__init__) == [
        ("self", inspect.Parameter.empty),
        ("max_size", inspect.Parameter.empty),
        ("serializer", inspect.Parameter.empty),
    ]
    assert parameters(Fragmenter.defragment) == [("self", inspect.Parameter.empty), ("data", inspect.Parameter.empty)]
    assert parameters(Serializer.deserialize) == [
        ("self", inspect.Parameter.empty),
        ("element", inspect.Parameter.empty),
        ("metadata", None),
        ("clear", True),
    ]
    fragmenter = Fragmenter(1000, Serializer())
    assert fragmenter.incoming_buffer == {}
    obj = GenericComplexObject()
    assert (obj.types, obj.adapted_properties, obj.extended_properties, obj.property_sets, obj.to_string) == (
        [],
        {},
        {},
        [],
        None,
    )
    meta = ObjectMeta("ObjDynamic", object=GenericComplexObject)
    assert (meta.tag, meta.object) == ("ObjDynamic", GenericComplexObject)
    assert PipelineOutput("x").data == "x"
    assert MessageType.PIPELINE_OUTPUT == 0x00041004


def message(message_type: int, xml: str, bom: bool = True) -> bytes:
    """A PSRP message as MS-PSRP 2.2.1 lays it out (what pypsrp's Message.unpack reads)."""
    rpid, pid = uuid.uuid4(), uuid.uuid4()
    body = (b"\xef\xbb\xbf" if bom else b"") + xml.encode()
    return struct.pack("<II", Destination.CLIENT, message_type) + rpid.bytes_le + pid.bytes_le + body


def test_fast_fragmenter_reads_what_pypsrp_reads() -> None:
    output = (
        '<Obj RefId="0"><TN RefId="0"><T>Demo.Queue</T><T>System.Object</T></TN><ToString>EX01\\3</ToString>'
        '<Props><S N="Identity">EX01\\3</S><I32 N="MessageCount">42</I32><S N="LastError">a _x000A_ b</S></Props></Obj>'
    )
    state = '<Obj RefId="0"><MS><I32 N="PipelineState">4</I32></MS></Obj>'
    long_message = message(MessageType.PIPELINE_OUTPUT, output)
    third = len(long_message) // 3
    chunks = [long_message[:third], long_message[third : 2 * third], long_message[2 * third :]]
    # pypsrp's own fragment packing: object 1 in three fragments, objects 2 and 3 whole
    data = b"".join(
        Fragment(1, i, chunk, start=i == 0, end=i == len(chunks) - 1).pack() for i, chunk in enumerate(chunks)
    )
    data += Fragment(2, 0, message(MessageType.PIPELINE_OUTPUT, output, bom=False), True, True).pack()
    data += Fragment(3, 0, message(MessageType.PIPELINE_STATE, state), True, True).pack()
    # two responses, the first ending after object 1's first fragment: the incoming buffer carries over
    cut = 21 + third
    stock, fast = Fragmenter(100_000, Serializer()), wire.FastFragmenter(100_000, wire.FastOutputSerializer())
    expected: list[Any] = stock.defragment(data[:cut]) + stock.defragment(data[cut:])
    got: list[Any] = fast.defragment(data[:cut]) + fast.defragment(data[cut:])
    assert [m.message_type for m in got] == [m.message_type for m in expected]
    assert [m.message_type for m in got] == [MessageType.PIPELINE_OUTPUT] * 2 + [MessageType.PIPELINE_STATE]
    for mine, theirs in zip(got[:2], expected[:2], strict=True):
        assert flatten(mine.data.data) == flatten(theirs.data.data)
        assert mine.data.data.types == theirs.data.data.types == ["Demo.Queue", "System.Object"]
    assert got[2].data.state == expected[2].data.state == 4
    assert stock.incoming_buffer == fast.incoming_buffer == {}


def _deserialize_tables() -> tuple[set[str], dict[str, str]]:
    """From pypsrp's Serializer.deserialize source: the primitive element tags, and each known type name
    with what it becomes (its ListMeta/DictionaryMeta/ObjectMeta call)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(Serializer.deserialize)))
    tags: set[str] = set()
    structures: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "structures" for t in node.targets):
            assert isinstance(node.value, ast.Dict)
            for key, value in zip(node.value.keys, node.value.values, strict=True):
                assert isinstance(key, ast.Constant) and isinstance(value, ast.Call)
                structures[str(key.value)] = ast.unparse(value)
        if isinstance(node, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == "Ref" for k in node.keys):
            tags = {str(k.value) for k in node.keys if isinstance(k, ast.Constant)}
    assert tags and structures, "pypsrp's Serializer.deserialize no longer has the tables wire.py mirrors"
    return tags, structures


def test_wire_mirrors_pypsrps_type_table() -> None:
    tags, structures = _deserialize_tables()
    # every primitive tag pypsrp decodes, wire decodes the same way (SS: secure strings, left to pypsrp;
    # Ref: handled by the decoder itself)
    assert tags == set(wire._PRIMITIVES) | {"SS", "Ref"}
    kinds: dict[str, set[str]] = {"list": set(), "dict": set(), "dynamic": set(), "primitive": set(), "class": set()}
    for name, call in structures.items():
        if call.startswith("ListMeta("):
            kinds["list"].add(name)
        elif call.startswith("DictionaryMeta("):
            kinds["dict"].add(name)
        elif call == "ObjectMeta('ObjDynamic', object=GenericComplexObject)":
            kinds["dynamic"].add(name)
        elif call.startswith("ObjectMeta('") and "object=" not in call:
            kinds["primitive"].add(name)
        else:
            kinds["class"].add(name)
    assert kinds["list"] == wire._PYPSRP_LIST_TYPES
    assert kinds["dict"] == wire._PYPSRP_DICT_TYPES
    assert kinds["dynamic"] == wire._PYPSRP_DYNAMIC_TYPES
    assert kinds["primitive"] == wire._PYPSRP_PRIMITIVE_TYPES
    assert kinds["class"] == wire._PYPSRP_CLASS_TYPES


@pytest.mark.parametrize(("prefix", "cut"), wire._GENERIC_LISTS)
def test_generic_list_prefixes_match_pypsrp(prefix: str, cut: int) -> None:
    source = inspect.getsource(Serializer.deserialize)
    assert len(prefix) == cut
    assert f'obj_type.startswith("{prefix}")' in source and f"obj_type[{cut}:-1]" in source
