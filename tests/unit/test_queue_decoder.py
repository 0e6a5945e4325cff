"""The queue collector's output decoder gives exactly what pypsrp's deserializer and parse_queue give."""

from __future__ import annotations

from typing import Any

import pytest
from pypsrp.complex_objects import GenericComplexObject
from pypsrp.serializer import Serializer

from exporter.errors import ParseError
from exporter.exchange.queues import QueueInfo, decode_queue, parse_queue
from exporter.exchange.wire import FastOutputSerializer
from exporter.simulator.clixml import write_clixml
from exporter.simulator.objects import queue_info
from exporter.simulator.scenario import Scenario
from exporter.simulator.timeline import Timeline, snapshot_queue
from tests.fixtures.queue_clixml import queue_xml

ODD = "a <b> & \"c\" 'd'\n\tline _x000A_ é 😀 {LED=x};{IP=y}"


def org() -> dict[str, Any]:
    """Every queue kind and status, rates and retry times, LastErrors plain, bracketed and with characters
    that CLIXML escapes (XML entities, _xHHHH_, control characters, non-ASCII, surrogate pairs)."""
    queues: list[dict[str, Any]] = [
        {"kind": "submission", "message_count": 3, "incoming_rate": 4.5, "outgoing_rate": 4.25},
        {"kind": "shadow", "next_hop_domain": "ex02.contoso.sim", "message_count": 2},
        {"kind": "poison", "message_count": 1},
        {"kind": "unreachable", "message_count": 4, "last_error": "550 5.4.4 SMTPSEND.DNS.NonExistentDomain"},
        {"kind": "delivery", "next_hop_domain": "ready.example", "status": "Ready"},
        {"kind": "delivery", "next_hop_domain": "odd.example", "status": "Retry", "last_error": ODD},
        {
            "kind": "delivery",
            "next_hop_domain": "Mailbox Database 0471695037",
            "delivery_type": "SmtpDeliveryToMailbox",
            "status": "Active",
            "message_count": 42,
            "deferred_message_count": 3,
            "outgoing_rate": 0.8,
        },
        {
            "kind": "delivery",
            "next_hop_domain": "tailspin.example",
            "status": "Retry",
            "retry_count": 7,
            "retry_interval_seconds": 300,
            "last_error": "[{LRT=%LRT%};{LED=451 4.4.397 Error communicating with target host. -> 421 4.2.1 "
            "Unable to connect -> SocketConnectionRefused: Socket error code 10061};{FQDN=mx.tailspin.example};"
            "{IP=203.0.113.25}]",
        },
        {
            "kind": "delivery",
            "next_hop_domain": "suspended.example",
            "status": "Suspended",
            "pattern": {"kind": "wave", "min": 1, "max": 90, "period_seconds": 60},
        },
    ]
    return {
        "organisation": {"name": "Contoso", "domain": "contoso.sim"},
        "users": {"svc@contoso.sim": "x"},
        "servers": [{"name": "EX01", "queues": queues}, {"name": "EX02", "queues": queues[:1]}],
    }


def simulator_messages() -> list[str]:
    """The CLIXML of every queue as the simulator sends it (one output message each, remoting depth 1)."""
    scenario = Scenario.from_dict(org())
    timeline = Timeline(scenario.organisation, clock=lambda: 1_800_000_017.0)
    return [
        write_clixml(queue_info(snapshot_queue(server, q, timeline))).decode()
        for server in scenario.servers
        for q in server.queues
    ]


@pytest.mark.parametrize("xml", simulator_messages())
def test_decoder_equals_pypsrp_and_parse_queue(xml: str) -> None:
    decoded = decode_queue(xml, "EX01")
    assert decoded == parse_queue(Serializer().deserialize(xml), "EX01")


def test_decoder_reads_the_odd_last_error_whole() -> None:
    odd = [decode_queue(xml, "EX01") for xml in simulator_messages() if "odd.example" in xml]
    assert len(odd) == 1
    assert odd[0].last_error is not None
    assert odd[0].last_error.raw == ODD


def test_objects_are_left_to_the_generic_path() -> None:
    """Export-Clixml's depth 2 writes enums and the identity as objects: the decoder raises, and the
    serializer then decodes the message as pypsrp would; parse_queue reads that object."""
    xml = queue_xml({"Identity": "EX01\\3", "Status": "Retry", "LastError": "451 4.4.0 DNS query failed"}, [0])
    with pytest.raises(ValueError, match="not a primitive"):
        decode_queue(xml, "EX01")
    serializer = FastOutputSerializer()
    serializer.decoder = lambda text: decode_queue(text, "EX01")
    obj = serializer.deserialize(xml)
    assert isinstance(obj, GenericComplexObject)
    queue = parse_queue(obj, "EX01")
    assert (queue.identity, queue.status, queue.last_error and queue.last_error.category) == (
        "EX01\\3",
        "Retry",
        "dns_failure",
    )


def test_decoder_output_reaches_the_collector_as_a_queue() -> None:
    serializer = FastOutputSerializer()
    serializer.decoder = lambda text: decode_queue(text, "EX01")
    xml = simulator_messages()[0]
    assert isinstance(serializer.deserialize(xml), QueueInfo)


@pytest.mark.parametrize(
    "xml",
    [
        '<Obj RefId="0"><TN RefId="0"><T>System.Object</T></TN><Props><S N="Status">Retry</S></Props></Obj>',
        '<Obj RefId="0"><TN RefId="0"><T>System.String[]</T><T>System.Array</T><T>System.Object</T></TN>'
        '<LST><S N="Identity">EX01\\3</S></LST></Obj>',
        "<S>EX01\\3</S>",
    ],
)
def test_not_a_queue(xml: str) -> None:
    """No Identity is a ParseError (as parse_queue's); a list or a bare value is not a queue object."""
    with pytest.raises((ParseError, ValueError)):
        decode_queue(xml, "EX01")
