"""PowerShell's serialization depth as the simulator applies it (``exporter.simulator.depth``).

``depth.cut`` is checked on its own against CLIXML written by hand from PowerShell's rules
(``engine/serialization.cs``), then against every real capture (an Export-Clixml file at the default
depth 2 must be a fixed point of the cut at 2), then against the simulator's writer at depths 1 and
2. Last, the pipeline: what each cmdlet sends is its object at remoting depth 1, replays and
Select-Object included, and the exporter's parsers read it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from pypsrp.complex_objects import GenericComplexObject
from pypsrp.serializer import Serializer

from exporter.exchange.clixml import flatten
from exporter.exchange.components import parse_component
from exporter.simulator import Scenario, build_scenario, objects, objects_server
from exporter.simulator import certificates as certs
from exporter.simulator import objects_config as oc
from exporter.simulator import objects_health as oh
from exporter.simulator.clixml import load_capture, write_clixml
from exporter.simulator.cmdlets import Context, Invocation, run_pipeline
from exporter.simulator.depth import EXPORT_CLIXML_DEPTH, REMOTING_DEPTH, UNLIMITED, cut
from exporter.simulator.records import Output
from exporter.simulator.timeline import Timeline, snapshot_queue
from exporter.simulator.tracking import TrackingLog
from tests.fixtures.captures import CAPTURES

START = 1_800_000_000.0


def _xml(text: str) -> str:
    """Canonical form of hand-written CLIXML (whitespace between elements removed)."""
    return ET.canonicalize("".join(line.strip() for line in text.splitlines()))


def _canon(el: ET.Element) -> str:
    return ET.canonicalize(ET.tostring(el, encoding="unicode"))


_ENUM_TN = "<T>System.Enum</T><T>System.ValueType</T><T>System.Object</T>"
# A server-side object: an enum, a value type referenced twice, a list of objects, an IP address
# (types.ps1xml SerializationDepth 1), SerializationData and a note a PowerShell client adds.
THING = f"""
<Obj RefId="0"><TN RefId="0"><T>Ex.Thing</T><T>System.Object</T></TN><ToString>thing</ToString>
<Props>
  <S N="Name">x</S><I32 N="Count">3</I32><DT N="When">2021-01-01T00:00:00Z</DT><Nil N="Nothing" />
  <Obj N="State" RefId="1"><TN RefId="1"><T>Ex.State</T>{_ENUM_TN}</TN><ToString>Active</ToString><I32>1</I32></Obj>
  <Obj N="Id" RefId="2"><TN RefId="2"><T>Ex.Id</T><T>System.Object</T></TN><ToString>EX01\\3</ToString>
    <Props><S N="Server">EX01</S>
      <Obj N="Kind" RefId="3"><TNRef RefId="1" /><ToString>Inactive</ToString><I32>0</I32></Obj></Props></Obj>
  <Ref N="Identity" RefId="2" />
  <Obj N="Items" RefId="4"><TN RefId="3"><T>Ex.MultiValuedProperty</T><T>System.Object</T></TN>
    <LST><Obj RefId="5"><TNRef RefId="2" /><ToString>a</ToString><Props><S N="Server">s</S></Props></Obj><S>b</S></LST>
  </Obj>
  <Obj N="Address" RefId="6"><TN RefId="4"><T>System.Net.IPAddress</T><T>System.Object</T></TN>
    <ToString>0.0.0.0</ToString><Props><I64 N="Address">0</I64>
      <Obj N="AddressFamily" RefId="7"><TN RefId="5"><T>System.Net.Sockets.AddressFamily</T>{_ENUM_TN}</TN>
        <ToString>InterNetwork</ToString><I32>2</I32></Obj></Props></Obj>
</Props>
<MS><BA N="SerializationData">AAEC</BA><S N="PSComputerName">ex01.contoso.sim</S></MS>
</Obj>
"""


def test_cut_at_remoting_depth_writes_nested_objects_as_their_text() -> None:
    expected = """
    <Obj RefId="0"><TN RefId="0"><T>Ex.Thing</T><T>System.Object</T></TN><ToString>thing</ToString>
    <Props>
      <S N="Name">x</S><I32 N="Count">3</I32><DT N="When">2021-01-01T00:00:00Z</DT><Nil N="Nothing" />
      <S N="State">Active</S>
      <S N="Id">EX01\\3</S>
      <S N="Identity">EX01\\3</S>
      <Obj N="Items" RefId="1"><TN RefId="1"><T>Ex.MultiValuedProperty</T><T>System.Object</T></TN>
        <LST><S>a</S><S>b</S></LST></Obj>
      <Obj N="Address" RefId="2"><TN RefId="2"><T>System.Net.IPAddress</T><T>System.Object</T></TN>
        <ToString>0.0.0.0</ToString><Props><I64 N="Address">0</I64><S N="AddressFamily">InterNetwork</S></Props></Obj>
    </Props>
    <MS><BA N="SerializationData">AAEC</BA></MS>
    </Obj>
    """
    assert REMOTING_DEPTH == 1
    assert _canon(cut(ET.fromstring(THING))) == _xml(expected)


def test_cut_at_export_clixml_depth_keeps_one_more_level_and_references() -> None:
    expected = f"""
    <Obj RefId="0"><TN RefId="0"><T>Ex.Thing</T><T>System.Object</T></TN><ToString>thing</ToString>
    <Props>
      <S N="Name">x</S><I32 N="Count">3</I32><DT N="When">2021-01-01T00:00:00Z</DT><Nil N="Nothing" />
      <Obj N="State" RefId="1"><TN RefId="1"><T>Ex.State</T>{_ENUM_TN}</TN><ToString>Active</ToString><I32>1</I32></Obj>
      <Obj N="Id" RefId="2"><TN RefId="2"><T>Ex.Id</T><T>System.Object</T></TN><ToString>EX01\\3</ToString>
        <Props><S N="Server">EX01</S><S N="Kind">Inactive</S></Props></Obj>
      <Ref N="Identity" RefId="2" />
      <Obj N="Items" RefId="3"><TN RefId="3"><T>Ex.MultiValuedProperty</T><T>System.Object</T></TN>
        <LST><Obj RefId="4"><TNRef RefId="2" /><ToString>a</ToString><Props><S N="Server">s</S></Props></Obj>
        <S>b</S></LST></Obj>
      <Obj N="Address" RefId="5"><TN RefId="4"><T>System.Net.IPAddress</T><T>System.Object</T></TN>
        <ToString>0.0.0.0</ToString><Props><I64 N="Address">0</I64><S N="AddressFamily">InterNetwork</S></Props></Obj>
    </Props>
    <MS><BA N="SerializationData">AAEC</BA><S N="PSComputerName">ex01.contoso.sim</S></MS>
    </Obj>
    """
    assert EXPORT_CLIXML_DEPTH == 2
    assert _canon(cut(ET.fromstring(THING), 2, drop_client_notes=False)) == _xml(expected)
    whole = cut(ET.fromstring(THING), UNLIMITED, drop_client_notes=False)  # only renumbers
    assert _canon(whole) == _xml(THING)


def test_cut_property_bags_containers_and_references_to_strings() -> None:
    # Select-Object output: no ToString, notes written at the object's own depth (not one less).
    selected = f"""
    <Obj RefId="0"><TN RefId="0"><T>Selected.Ex.Thing</T><T>System.Management.Automation.PSCustomObject</T>
    <T>System.Object</T></TN><MS>
      <Obj N="State" RefId="1"><TN RefId="1"><T>Ex.State</T>{_ENUM_TN}</TN><ToString>Active</ToString><I32>1</I32></Obj>
      <Obj N="Id" RefId="2"><TN RefId="2"><T>Ex.Id</T><T>System.Object</T></TN><ToString>EX01\\3</ToString>
        <Props><Obj N="Kind" RefId="3"><TNRef RefId="1" /><ToString>Inactive</ToString><I32>0</I32></Obj></Props></Obj>
      <Obj N="Bag" RefId="4"><TN RefId="3"><T>System.Management.Automation.PSCustomObject</T><T>System.Object</T></TN>
        <MS><S N="a">1</S><B N="b">true</B></MS></Obj>
    </MS></Obj>
    """
    expected = f"""
    <Obj RefId="0"><TN RefId="0"><T>Selected.Ex.Thing</T><T>System.Management.Automation.PSCustomObject</T>
    <T>System.Object</T></TN><MS>
      <Obj N="State" RefId="1"><TN RefId="1"><T>Ex.State</T>{_ENUM_TN}</TN><ToString>Active</ToString><I32>1</I32></Obj>
      <Obj N="Id" RefId="2"><TN RefId="2"><T>Ex.Id</T><T>System.Object</T></TN><ToString>EX01\\3</ToString>
        <Props><S N="Kind">Inactive</S></Props></Obj>
      <Obj N="Bag" RefId="3"><TN RefId="3"><T>System.Management.Automation.PSCustomObject</T><T>System.Object</T></TN>
        <MS><S N="a">1</S><B N="b">true</B></MS></Obj>
    </MS></Obj>
    """
    assert _canon(cut(ET.fromstring(selected))) == _xml(expected)
    # a property bag beyond the depth is PowerShell's @{...} rendering of it
    bag = ET.fromstring(selected).find("MS/Obj[@N='Bag']")
    assert bag is not None and _canon(cut(bag, 0)) == _xml('<S N="Bag">@{a=1; b=True}</S>')

    # A non-list enumerable (IE) writes its properties above depth 0; a dictionary's entries keep
    # the container's depth; a reference to an object written as a string is written again.
    other = f"""
    <Obj RefId="0"><TN RefId="0"><T>Ex.Top</T><T>System.Object</T></TN><ToString>top</ToString><Props>
      <Obj N="Seq" RefId="1"><TN RefId="1"><T>Ex.Seq</T><T>System.Object</T></TN><IE><S>x</S></IE>
        <Props><I32 N="Count">1</I32></Props></Obj>
      <Obj N="Map" RefId="2"><TN RefId="2"><T>System.Collections.Hashtable</T><T>System.Object</T></TN>
        <DCT><En><S N="Key">k</S><Obj N="Value" RefId="3"><TN RefId="3"><T>Ex.State</T>{_ENUM_TN}</TN>
        <ToString>Active</ToString><I32>1</I32></Obj></En></DCT></Obj>
      <Obj N="First" RefId="4"><TNRef RefId="3" /><ToString>Draining</ToString><I32>2</I32></Obj>
    </Props></Obj>
    """
    root = ET.fromstring(other)
    root.find("Props").append(ET.fromstring('<Ref N="Again" RefId="4" />'))  # type: ignore[union-attr]
    expected_1 = """
    <Obj RefId="0"><TN RefId="0"><T>Ex.Top</T><T>System.Object</T></TN><ToString>top</ToString><Props>
      <Obj N="Seq" RefId="1"><TN RefId="1"><T>Ex.Seq</T><T>System.Object</T></TN><IE><S>x</S></IE></Obj>
      <Obj N="Map" RefId="2"><TN RefId="2"><T>System.Collections.Hashtable</T><T>System.Object</T></TN>
        <DCT><En><S N="Key">k</S><S N="Value">Active</S></En></DCT></Obj>
      <S N="First">Draining</S><S N="Again">Draining</S>
    </Props></Obj>
    """
    assert _canon(cut(root)) == _xml(expected_1)
    seq = cut(root, 2).find("Props/Obj[@N='Seq']")
    assert seq is not None and [c.tag for c in seq] == ["TN", "IE", "Props"]
    assert cut(root, 2).find("Props/Ref[@N='Again']") is not None  # written as an object first: a reference


def _captures() -> list[Path]:
    found = sorted(CAPTURES.rglob("*.xml"))
    assert found, f"no captures under {CAPTURES}"
    return found


def test_every_capture_is_a_fixed_point_of_the_cut_at_export_clixml_depth() -> None:
    """Export-Clixml writes at depth 2: cutting a capture at 2 must change nothing, for every object
    of every file. (IP addresses nested deeper are kept by their types.ps1xml SerializationDepth.)"""
    seen = 0
    for path in _captures():
        for element in load_capture(path):
            assert _canon(cut(element, EXPORT_CLIXML_DEPTH, drop_client_notes=False)) == _canon(element), path.name
            seen += 1
    assert seen >= 60


def test_cut_captures_reach_pypsrp_without_the_client_notes() -> None:
    for path in _captures():
        for element in load_capture(path):
            wire = cut(element)
            assert wire.find("MS/*[@N='PSComputerName']") is None and wire.find("MS/*[@N='RunspaceId']") is None
            value = Serializer().deserialize(ET.tostring(wire, encoding="unicode"))  # stock pypsrp reads it
            assert isinstance(value, GenericComplexObject)
            assert all(not isinstance(v, GenericComplexObject) or v.types for v in value.adapted_properties.values())


def _builders() -> Iterator[tuple[str, Any]]:
    scenario = Scenario.from_dict(
        {
            "organisation": {"timezone_offset_minutes": 60},
            "servers": [
                {
                    "name": "EX01",
                    "tracking": {"messages_per_minute": 120},
                    "components": {"ImapProxy": {"state": "Inactive", "requester": "HealthApi"}},
                    "queues": [{"next_hop_domain": "fabrikam.example", "status": "Retry", "retry_count": 2}],
                },
                {"name": "EX02"},
            ],
            "send_connectors": [{"name": "S", "smart_hosts": ["relay.example", "10.0.0.5"]}],
        }
    )
    tl = Timeline(scenario.organisation, lambda: START)
    server = scenario.servers[0]
    cert = certs.server_certificates(scenario, server, tl)[0]
    copy = scenario.effective_databases[0]
    yield "queue", objects.queue_info(snapshot_queue(server, server.queues[0], tl))
    yield "exchange server", objects_server.exchange_server(scenario, server, tl)
    yield "transport server", objects_server.transport_server(scenario, server, tl)
    log = TrackingLog(scenario, tl)
    for event in log.events("EX01", START - 300, START)[:12]:
        yield f"tracking {event.event_id}", objects.message_tracking_event(event, log.tz)
    yield "send connector", oc.send_connector(scenario, scenario.effective_send_connectors[0], tl)
    for spec in server.effective_receive_connectors:
        yield f"receive connector {spec.name}", oc.receive_connector(scenario, server, spec, tl)
    yield "accepted domain", oc.accepted_domain(scenario, scenario.effective_accepted_domains[0], tl)
    for state in oh.component_states(server)[:12]:
        yield f"component {state.component}", oh.server_component_state(scenario, server, state, tl)
    yield "database copy", oh.database_copy_status(copy, copy.copies[0], tl)
    yield "service health", oh.services_status("Mailbox Server Role", ("MSExchangeIS",))
    yield "certificate", certs.certificate_wire(cert, tl)
    yield "certificate model", certs.certificate_model(server, cert, tl)
    spec = server.effective_receive_connectors[2]
    identity = oc.receive_connector_id(scenario, server, spec)
    for principal, right in oc.connector_permissions(spec):
        yield f"ad permission {right}", oc.ad_permission(identity, principal, right)


def test_the_fast_writer_cuts_as_depth_cut_does() -> None:
    """Every object the simulator builds, written at depths 1 and 2, equals the cut of its whole graph."""
    count = 0
    for name, obj in _builders():
        whole = ET.fromstring(write_clixml(obj, UNLIMITED))
        for depth in (REMOTING_DEPTH, EXPORT_CLIXML_DEPTH):
            written = ET.fromstring(write_clixml(obj, depth))
            assert _canon(written) == _canon(cut(whole, depth)), (name, depth)
        count += 1
    assert count > 30
    assert write_clixml(obj) == write_clixml(obj, REMOTING_DEPTH)  # the default is what remoting sends


# ---------------------------------------------------------------------------------------------
# The pipeline sends depth 1
# ---------------------------------------------------------------------------------------------
def _run(scenario: Scenario, *commands: tuple[str, dict[str, Any]]) -> list[Output]:
    timeline = Timeline(scenario.organisation, lambda: START)
    ctx = Context(scenario, timeline, scenario.servers[0], "svc")
    invocations = [Invocation(name, list(params.items())) for name, params in commands]
    return [r for r in run_pipeline(ctx, invocations) if isinstance(r, Output)]


def _wire(record: Output) -> ET.Element:
    return ET.fromstring(record.as_bytes())


def test_cmdlet_output_is_cut_to_remoting_depth() -> None:
    scenario = build_scenario(2, 3)
    timeline = Timeline(scenario.organisation, lambda: START)
    server = scenario.servers[0]
    (queue,) = _run(scenario, ("Get-Queue", {"Identity": server.queues[0].identity(server.name)}))
    assert queue.as_bytes() == write_clixml(objects.queue_info(snapshot_queue(server, server.queues[0], timeline)))
    props = _wire(queue).find("Props")
    assert props is not None and props.find("Ref") is None
    assert [p.attrib["N"] for p in props if p.tag == "Obj"] == [
        "MessageCountsPerPriority",
        "DeferredMessageCountsPerPriority",
        "PriorityDescriptions",
    ]  # only the lists stay objects; enums and QueueIdentity are text

    states = _run(scenario, ("Get-ServerComponentState", {"Identity": server.name}))
    assert len(states) == 34
    swo = _wire(states[0]).find("Props/Obj[@N='LocalStates']/LST")
    assert swo is not None and [i.tag for i in swo] == ["S"]
    assert (swo[0].text or "").startswith("Requestor:Functional; State:Active; Timestamp:")

    # Select-Object reads the server's whole object; its notes are sent at depth 1
    (selected,) = _run(
        scenario,
        ("Get-Queue", {"Identity": server.queues[0].identity(server.name)}),
        ("Select-Object", {"Property": ["Identity", "Status", "LastRetryTime"]}),
    )
    notes = _wire(selected).find("MS")
    assert notes is not None and [n.tag for n in notes] == ["Obj", "Obj", "Nil"]
    assert _wire(selected).find("ToString") is None
    identity = notes.find("Obj[@N='Identity']")
    assert identity is not None and identity.find("Props/S[@N='Type']") is not None  # its enum: text at depth 0

    # -ExpandProperty: each item of a collection, nothing for $null, every one cut to depth 1
    expanded = _run(
        scenario,
        ("Get-ExchangeServer", {"Identity": server.name}),
        ("Select-Object", {"ExpandProperty": "ObjectClass"}),
    )
    assert [_wire(o).text for o in expanded] == ["top", "server", "msExchExchangeServer"]
    assert not _run(
        scenario,
        ("Get-ExchangeServer", {"Identity": server.name}),
        ("Select-Object", {"ExpandProperty": "InternetWebProxy"}),
    )
    (site,) = _run(
        scenario, ("Get-ExchangeServer", {"Identity": server.name}), ("Select-Object", {"ExpandProperty": "Site"})
    )
    assert _wire(site).find("Props/S[@N='Rdn']") is not None and _wire(site).findtext("ToString", "").endswith(
        server.site
    )


def test_replays_are_cut_to_remoting_depth() -> None:
    path = CAPTURES / "E19" / "GetServerComponentState.xml"
    scenario = Scenario.from_dict({"servers": [{"name": "EX01"}], "replays": {"Get-ServerComponentState": str(path)}})
    sent = _run(scenario, ("Get-ServerComponentState", {"Identity": "EX01"}))
    captured = load_capture(path)
    assert len(sent) == len(captured) == 34
    for record, element in zip(sent, captured, strict=True):
        assert _canon(_wire(record)) == _canon(cut(element))
    parsed = parse_component(Serializer().deserialize(sent[0].as_bytes().decode()), "EX01")
    assert parsed.component == "ServerWideOffline" and dict(parsed.requesters) == {"Functional": "Active"}
    # Select-Object reads the capture's objects (its notes go one level deeper than the row's props)
    selected = _run(
        scenario,
        ("Get-ServerComponentState", {"Identity": "EX01"}),
        ("Select-Object", {"Property": ["Component", "LocalStates", "PSComputerName"], "First": 1}),
    )
    details = _wire(selected[0]).find("MS/Obj[@N='LocalStates']/LST/Obj")
    assert details is not None and details.findtext("Props/S[@N='Requester']") == "Functional"
    assert _wire(selected[0]).find("MS/Nil[@N='PSComputerName']") is not None  # never the server's


def test_component_parser_reads_text_objects_and_any_requester_case() -> None:
    """The exporter's parser on the three forms requester details take: ToString text (remoting),
    the objects (a capture), a decoded list whose type names carry ``Deserialized.``."""

    def row(local: Any) -> GenericComplexObject:
        obj = GenericComplexObject()
        obj.types = ["Deserialized.Microsoft.Exchange.Data.Directory.Management.ServerComponentStatePresentationObject"]
        obj.adapted_properties = {"Component": "ImapProxy", "State": "Inactive", "LocalStates": local}
        return obj

    texts = [
        "Requestor:Functional; State:Active; Timestamp:28.09.2021 17:32:01",
        "Requestor:HEALTHAPI; State:inactive; Timestamp:9/28/2021 5:32:01 PM",
    ]
    assert dict(parse_component(row(texts), "EX01").requesters) == {"Functional": "Active", "HealthApi": "Inactive"}
    decoded = [{"Requester": "healthApi", "State": "Inactive", "Timestamp": dt.datetime(2021, 9, 28)}]
    assert dict(parse_component(row(decoded), "EX01").requesters) == {"HealthApi": "Inactive"}
    details = (
        '<LST><Obj RefId="1"><TN RefId="1"><T>Deserialized.Microsoft.Exchange.Data.Directory.Management.'
        "ServerComponentStatePresentationObject+RequesterDetails</T><T>Deserialized.System.Object</T></TN>"
        '<Props><S N="Requester">HealthApi</S><S N="State">Inactive</S></Props></Obj></LST>'
    )
    raw = GenericComplexObject()
    raw.property_sets = [details]
    raw.to_string = None
    assert dict(parse_component(row(raw), "EX01").requesters) == {"HealthApi": "Inactive"}
    assert flatten(row(texts))["State"] == "Inactive"
