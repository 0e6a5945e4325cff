"""The fast output decoder yields exactly what pypsrp's own deserializer yields."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from pypsrp.complex_objects import GenericComplexObject
from pypsrp.exceptions import SerializationError
from pypsrp.serializer import Serializer

from exporter.exchange.clixml import deserialize_linked, flatten
from exporter.exchange.wire import FastOutputSerializer, decode_output
from exporter.simulator.clixml import load_capture, write_clixml
from exporter.simulator.objects import queue_info
from exporter.simulator.objects_server import exchange_server
from exporter.simulator.scenario import build_scenario
from exporter.simulator.timeline import Timeline, snapshot_queue
from tests.fixtures.captures import CAPTURES
from tests.fixtures.queue_clixml import queue_xml


def same(a: Any, b: Any, path: str = "$") -> None:
    """Deep structural equality of two deserialised values, with the path of the first difference."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, GenericComplexObject):
        assert a.types == b.types, f"{path}.types"
        assert a.to_string == b.to_string, f"{path}.to_string: {a.to_string!r} != {b.to_string!r}"
        for attr in ("adapted_properties", "extended_properties"):
            da, db = getattr(a, attr), getattr(b, attr)
            assert list(da) == list(db), f"{path}.{attr} keys"
            for key in da:
                same(da[key], db[key], f"{path}.{key}")
        assert len(a.property_sets) == len(b.property_sets), f"{path}.property_sets"
        for i, (x, y) in enumerate(zip(a.property_sets, b.property_sets, strict=True)):
            same(x, y, f"{path}.property_sets[{i}]")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{path}: length"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys"
        for key in a:
            same(a[key], b[key], f"{path}[{key!r}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def capture_messages() -> list[tuple[str, str]]:
    out = []
    for path in sorted(CAPTURES.rglob("*.xml")):
        for i, element in enumerate(load_capture(path)):
            out.append((f"{path.name}[{i}]", ET.tostring(element, encoding="unicode")))
    return out


def test_equal_to_pypsrp_on_every_real_capture_object() -> None:
    compared = linked = 0
    for name, xml in capture_messages():
        try:
            expected = Serializer().deserialize(xml)
        except KeyError:
            # pypsrp's gap: a <Ref> into an object inside a raw MVP <LST>. Both our paths resolve it
            # like load_clixml's linked deserializer does.
            expected = deserialize_linked([ET.fromstring(xml)])[0]
            same(FastOutputSerializer().deserialize(xml), expected, name)
            linked += 1
        same(decode_output(xml), expected, name)
        compared += 1
    assert compared >= 40
    assert linked >= 1  # the real Get-SendConnector captures


def test_send_connector_source_ip_refers_into_smart_hosts() -> None:
    path = CAPTURES / "E19" / "GetSendConnector.xml"
    xml = ET.tostring(load_capture(path)[0], encoding="unicode")
    with pytest.raises(KeyError):
        Serializer().deserialize(xml)  # if pypsrp fixes this, the workaround can go
    props = flatten(FastOutputSerializer().deserialize(xml))
    assert props["Name"] and "SourceIPAddress" in props


def test_linked_fallback_when_the_fast_path_declines() -> None:
    # An object the fast decoder leaves to pypsrp (a typed dictionary) next to a Ref into a raw list:
    xml = (
        '<Obj RefId="0"><TN RefId="0"><T>Demo.Connector</T><T>System.Object</T></TN><Props>'
        '<Obj N="SmartHosts" RefId="1"><TN RefId="1"><T>Demo.MVP</T></TN>'
        '<LST><Obj RefId="2"><TN RefId="2"><T>System.Net.IPAddress</T><T>System.Object</T></TN>'
        "<ToString>10.0.0.5</ToString></Obj></LST></Obj>"
        '<Ref N="SourceIPAddress" RefId="2" />'
        '<Obj N="D" RefId="3"><TN RefId="3">'
        "<T>System.Collections.Generic.Dictionary`2[[System.String],[System.String]]</T>"
        '<T>System.Object</T></TN><DCT><En><S N="Key">a</S><S N="Value">b</S></En></DCT></Obj>'
        "</Props></Obj>"
    )
    with pytest.raises(KeyError):
        Serializer().deserialize(xml)
    props = flatten(FastOutputSerializer().deserialize(xml))
    assert props["SourceIPAddress"] == "10.0.0.5"


def test_equal_to_pypsrp_on_simulator_and_hand_written_queues() -> None:
    scenario = build_scenario(2, 12, moving=False)
    timeline = Timeline(scenario.organisation, clock=lambda: 1_800_000_000.0)
    messages = [write_clixml(exchange_server(scenario, s, timeline)).decode() for s in scenario.servers]
    for server in scenario.servers:
        messages += [write_clixml(queue_info(snapshot_queue(server, q, timeline))).decode() for q in server.queues]
    messages += [queue_xml({"Identity": "EX01\\3", "Status": "Retry", "LastError": "a _x000A_ b"}, [0])]
    for xml in messages:
        same(decode_output(xml), Serializer().deserialize(xml))


def test_flattened_queue_is_identical() -> None:
    xml = queue_xml({"Identity": "EX01\\3", "Status": "Retry", "NextRetryTime": "2026-11-27T01:30:00+00:00"}, [0])
    assert flatten(decode_output(xml)) == flatten(Serializer().deserialize(xml))


def test_primitives_and_escapes() -> None:
    guid = uuid.uuid4()
    xml = (
        '<Obj RefId="0"><TN RefId="0"><T>System.Object</T></TN><MS>'
        f'<S N="s">tab_x0009_end _x00E9_ _xD83D__xDE00_</S><G N="g">{guid}</G><BA N="b">AAE=</BA>'
        '<Nil N="n" /><B N="t">true</B><Db N="d">1.5</Db><I64 N="i">-7</I64></MS></Obj>'
    )
    same(decode_output(xml), Serializer().deserialize(xml))
    assert decode_output(xml).extended_properties["s"] == "tab\tend é 😀"


def test_unknown_shapes_fall_back_to_pypsrp() -> None:
    xml = (
        '<Obj RefId="0"><TN RefId="0"><T>System.Management.Automation.ErrorRecord</T><T>System.Object</T></TN>'
        '<ToString>boom</ToString><MS><S N="ErrorDetails_Message">x</S></MS></Obj>'
    )
    # pypsrp maps ErrorRecord to its own class and rejects this incomplete one; the fast path must
    # hand the message to pypsrp rather than decode it as a generic object.
    with pytest.raises(SerializationError, match="SerializeExtendedInfo"):
        Serializer().deserialize(xml)
    with pytest.raises(SerializationError, match="SerializeExtendedInfo"):
        FastOutputSerializer().deserialize(xml)


def test_broken_xml_behaves_like_pypsrp() -> None:
    broken = '<Obj RefId="0"><TNRef RefId="9" /><ToString>x</ToString></Obj>'
    with pytest.raises(KeyError):
        Serializer().deserialize(broken)
    with pytest.raises(KeyError):
        FastOutputSerializer().deserialize(broken)
