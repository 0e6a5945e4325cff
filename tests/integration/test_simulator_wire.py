"""Wire fidelity of the simulator's CLIXML and its pure helpers (no sockets; fast)."""

from __future__ import annotations

import datetime
from xml.etree import ElementTree as ET

import pytest
from pypsrp.serializer import Serializer

from exporter.simulator import objects, objects_server
from exporter.simulator.clixml import load_capture, relink, select_object, to_element, write_clixml
from exporter.simulator.depth import UNLIMITED, cut
from exporter.simulator.opath import FilterError, compile_filter
from exporter.simulator.scenario import Pattern, Scenario, build_scenario
from exporter.simulator.shells import break_clixml
from exporter.simulator.timeline import Timeline, pattern_value, snapshot_queue
from tests.fixtures.captures import E19

CAPTURES = E19


def _canonical(xml: bytes | str) -> str:
    text = xml.decode() if isinstance(xml, bytes) else xml
    # PowerShell writes an empty ToString as <ToString />; psrpcore omits it. Compare without.
    text = text.replace("<ToString />", "")
    return ET.canonicalize(text)


def _objects() -> list[object]:
    scenario = build_scenario(2, 12)
    timeline = Timeline(scenario.organisation)
    server = scenario.servers[0]
    built: list[object] = [objects.queue_info(snapshot_queue(server, q, timeline)) for q in server.queues]
    built += [
        objects_server.exchange_server(scenario, server, timeline),
        objects_server.transport_server(scenario, server, timeline),
    ]
    return built


@pytest.mark.timeout(30)
def test_fast_writer_matches_psrpcore_serializer() -> None:
    for obj in _objects():
        reference = ET.tostring(to_element(obj), encoding="unicode")
        whole = write_clixml(obj, UNLIMITED)
        assert _canonical(whole) == _canonical(reference)  # the whole graph
        # what the wire carries: the same graph cut to remoting depth
        assert _canonical(write_clixml(obj)) == _canonical(ET.tostring(cut(ET.fromstring(whole))))


@pytest.mark.timeout(30)
def test_generated_objects_deserialise_in_pypsrp() -> None:
    serializer = Serializer()
    for obj in _objects():
        value = serializer.deserialize(write_clixml(obj).decode())
        assert value.types and value.types[-1] == "System.Object"
        assert str(value)


@pytest.mark.timeout(30)
def test_capture_elements_are_self_contained() -> None:
    for name in ("GetReceiveConnector.xml", "GetExchangeServer.xml", "GetServerComponentState.xml"):
        elements = load_capture(CAPTURES / name)
        assert elements
        for element in elements:
            defined_tn = {tn.attrib["RefId"] for tn in element.iter("TN")}
            defined_obj = {o.attrib["RefId"] for o in element.iter("Obj")}
            assert {r.attrib["RefId"] for r in element.iter("TNRef")} <= defined_tn
            assert {r.attrib["RefId"] for r in element.iter("Ref")} <= defined_obj
            # each element alone is readable by pypsrp (one message = one serializer context)
            assert Serializer().deserialize(ET.tostring(element, encoding="unicode")) is not None
    connectors = load_capture(CAPTURES / "GetReceiveConnector.xml")
    groups = [o.find("Props/Obj[@N='PermissionGroups']") for o in connectors]
    assert all(g is not None and g.findtext("ToString", "").startswith(("Exchange", "Anonymous")) for g in groups)
    assert all(g is not None and (g.find("TN") is not None or g.find("TNRef") is not None) for g in groups)


@pytest.mark.timeout(30)
def test_relink_inlines_refs_from_other_objects() -> None:
    root = ET.fromstring(
        '<Objs><Obj RefId="0"><TN RefId="0"><T>A</T><T>System.Object</T></TN><Props>'
        '<Obj N="Id" RefId="1"><TN RefId="1"><T>B</T></TN><ToString>x</ToString></Obj></Props></Obj>'
        '<Obj RefId="2"><TNRef RefId="0" /><Props><Ref N="Other" RefId="1" /></Props></Obj></Objs>'
    )
    from exporter.simulator.clixml import RefContext

    second = relink(root[1], RefContext.of([root]))
    text = ET.tostring(second, encoding="unicode")
    assert "<TNRef" not in text and "<Ref" not in text
    assert second.find("TN/T").text == "A"  # type: ignore[union-attr]
    assert second.find("Props/Obj[@N='Other']/ToString").text == "x"  # type: ignore[union-attr]


@pytest.mark.timeout(30)
def test_select_object_keeps_enum_shapes() -> None:
    scenario = build_scenario(1, 5)
    timeline = Timeline(scenario.organisation)
    server = scenario.servers[0]
    data = write_clixml(objects.queue_info(snapshot_queue(server, server.queues[0], timeline)), UNLIMITED)
    selected = cut(select_object(ET.fromstring(data), ["Identity", "Status", "Missing"]))
    value = Serializer().deserialize(ET.tostring(selected, encoding="unicode"))
    assert value.types[0] == "Selected.Microsoft.Exchange.Data.QueueViewer.PropertyBagBasedQueueInfo"
    status = value.extended_properties["Status"]
    assert str(status) == "Ready" and status.property_sets == [2]  # a note keeps the enum at depth 1
    identity = value.extended_properties["Identity"]
    assert str(identity) == "EX01\\Submission" and identity.adapted_properties["Server"] == "EX01"
    assert value.extended_properties["Missing"] is None
    assert value.to_string is None  # no ToString for a property bag on the wire


@pytest.mark.timeout(30)
def test_break_clixml_variants() -> None:
    data = write_clixml(objects_server.exchange_server(*_server_args()))
    dangling = break_clixml(data, None)
    ET.fromstring(dangling)  # still well-formed XML
    with pytest.raises(KeyError):
        Serializer().deserialize(dangling.decode())
    truncated = break_clixml(data, "truncated")
    with pytest.raises(ET.ParseError):
        ET.fromstring(truncated)


def _server_args() -> tuple[Scenario, object, Timeline]:
    scenario = build_scenario(1, 1)
    return scenario, scenario.servers[0], Timeline(scenario.organisation)


@pytest.mark.timeout(30)
def test_opath_filters() -> None:
    values = {
        "MessageCount": 12,
        "Status": "Retry",
        "NextHopDomain": "fabrikam.example",
        "LastRetryTime": None,
    }
    get = values.__getitem__
    names = list(values)
    assert compile_filter("MessageCount -gt 10 -and Status -eq 'retry'", names)(get)
    assert not compile_filter("MessageCount -le 10", names)(get)
    assert compile_filter("NextHopDomain -like '*.example'", names)(get)
    assert compile_filter("-not (Status -eq 'Ready')", names)(get)
    assert compile_filter('Status -ne "Active" -and MessageCount -ge 12', names)(get)
    assert compile_filter("LastRetryTime -eq $null", names)(get)
    for bad in (
        "MessageCount -gt",
        "Foo -eq 1",
        "MessageCount -gt 1 -or Status -eq 'Retry'",
        "(Status -eq 'x'",
    ):
        with pytest.raises(FilterError):
            compile_filter(bad, names)


@pytest.mark.timeout(30)
def test_patterns_and_retry_times_follow_the_clock() -> None:
    wave = Pattern(kind="wave", min=0, max=80, period_seconds=300)
    assert pattern_value(wave, 0, 0) == 0 and pattern_value(wave, 0, 150) == pytest.approx(80)
    grow = Pattern(kind="grow", per_minute=4, min=0, max=10)
    assert pattern_value(grow, 0, 60) == 4 and pattern_value(grow, 0, 600) == 10
    drain = Pattern(kind="drain", per_minute=6, min=2, max=20, period_seconds=600)
    assert pattern_value(drain, 0, 60) == 14 and pattern_value(drain, 0, 300) == 2
    assert pattern_value(drain, 0, 660) == 14  # the saw tooth restarts each period

    scenario = Scenario.from_dict(
        {
            "organisation": {"timezone_offset_minutes": -300},
            "servers": [
                {
                    "name": "EX01",
                    "queues": [
                        {
                            "next_hop_domain": "a.example",
                            "status": "Retry",
                            "retry_count": 3,
                            "retry_interval_seconds": 600,
                            "last_error": "[{LRT=%LRT%};{LED=451 4.4.0 x}]",
                        },
                        {
                            "next_hop_domain": "b.example",
                            "message_count": 4,
                            "pattern": {"kind": "grow", "per_minute": 6, "max": 100, "min": 4},
                        },
                    ],
                }
            ],
        }
    )
    clock = [1_700_000_000.0]
    timeline = Timeline(scenario.organisation, lambda: clock[0])
    server = scenario.servers[0]
    retry, growing = (snapshot_queue(server, q, timeline) for q in server.queues)
    assert retry.status == "Retry" and retry.retry_count == 3
    assert retry.next_retry_time - retry.last_retry_time == datetime.timedelta(minutes=10)  # type: ignore[operator]
    assert retry.last_retry_time.utcoffset() == datetime.timedelta(hours=-5)  # type: ignore[union-attr]
    assert "%LRT%" not in retry.last_error and retry.last_error.startswith("[{LRT=11/14/2023 ")
    assert growing.status == "Active" and growing.next_retry_time is None
    clock[0] += 600
    later_retry, later_growing = (snapshot_queue(server, q, timeline) for q in server.queues)
    assert later_retry.retry_count == 4 and later_growing.message_count == 4 + 6 * 10
    assert later_growing.incoming_rate > later_growing.outgoing_rate and later_growing.velocity < 0
