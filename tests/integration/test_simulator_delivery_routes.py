"""The simulator's delivery routes, through real pypsrp: mail delivered on the server holding the
recipients' database (SEND/RECEIVE hops between Transport services, delivery groups), and outbound
mail that waits in a queue in Retry instead of being sent."""

from __future__ import annotations

import contextlib
import datetime
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from pypsrp.powershell import PowerShell, RunspacePool

from exporter.simulator import Scenario, ScenarioError, Simulator
from exporter.simulator.timeline import Timeline
from exporter.simulator.tracking import TrackingLog
from tests.integration.conftest import PASSWORD, USER, raw_pool

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

T0 = 1_800_000_000.0
INTRA = "Intra-Organization SMTP Send Connector"
DNS_ERROR = "451 4.4.0 DNS query failed. The error was: SMTPSEND.DNS.NonExistentDomain; nonexistent domain"


def org(share: float = 1.0, fabrikam_status: str = "Retry") -> dict[str, Any]:
    """EX01 and EX02 share a database (a DAG); EX03 is alone in another site. EX01's queue to
    fabrikam.example is in ``fabrikam_status``."""
    servers = []
    for name, site in (("EX01", "HQ"), ("EX02", "HQ"), ("EX03", "Branch")):
        servers.append({"name": name, "fqdn": f"{name.lower()}.contoso.sim", "site": site})
    servers[0]["queues"] = [
        {"kind": "delivery", "row_id": 4, "next_hop_domain": "fabrikam.example", "status": fabrikam_status,
         "message_count": 12, "last_error": DNS_ERROR if fabrikam_status == "Retry" else ""},
    ]  # fmt: skip
    return {
        "users": {USER: PASSWORD},
        "tracking": {
            "messages_per_minute": 12,
            "external_ratio": 0.4,
            "cross_server_submission": 0.5,
            "remote_mailbox_share": share,
            "latency_seconds": {"min": 1, "max": 20},
            "history_minutes": 30,
        },
        "databases": [
            {
                "name": "DB01",
                "copies": [{"server": "EX01", "status": "Mounted"}, {"server": "EX02", "status": "Healthy"}],
            },
            {"name": "DB03", "copies": [{"server": "EX03", "status": "Mounted"}]},
        ],
        "servers": servers,
    }


@contextlib.contextmanager
def started(data: dict[str, Any]) -> Iterator[Simulator]:
    sim = Simulator(Scenario.from_dict(data), host="127.0.0.1", tls=False, clock=lambda: T0)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


@contextlib.contextmanager
def pool(sim: Simulator) -> Iterator[RunspacePool]:
    with raw_pool(sim) as p:
        yield p


def log_of(p: RunspacePool, server: str, start: float, end: float) -> list[dict[str, Any]]:
    """Get-MessageTrackingLog -Server ``server`` for [start, end), as pypsrp decodes it."""
    ps = PowerShell(p)
    ps.add_cmdlet("Get-MessageTrackingLog").add_parameter("Server", server).add_parameter("ResultSize", "Unlimited")
    ps.add_parameter("Start", datetime.datetime.fromtimestamp(start, datetime.UTC).isoformat())
    ps.add_parameter("End", datetime.datetime.fromtimestamp(end, datetime.UTC).isoformat())
    out = []
    for obj in ps.invoke():
        event = dict(obj.adapted_properties)
        event["Server"] = server
        event["At"] = datetime.datetime.fromisoformat(str(event["Timestamp"])).timestamp()
        out.append(event)
    return out


def test_mail_for_a_database_elsewhere_is_delivered_there_through_the_delivery_group() -> None:
    window = (T0 - 900, T0)
    with started(org()) as sim, pool(sim) as p:
        events = [e for s in ("EX01", "EX02", "EX03") for e in log_of(p, s, *window)]
        trails: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in sorted(events, key=lambda e: e["At"]):
            trails[str(event["MessageId"])].append(event)
        direct = relayed = 0
        for message in (m for s in ("EX01", "EX02", "EX03") for m in sim.tracking.messages(s, *window)):
            if not message.relay or message.events[-1].timestamp >= T0 or message.arrival < window[0]:
                continue
            trail = trails[message.message_id]
            deliver = trail[-1]
            assert (deliver["EventId"], deliver["Server"]) == ("DELIVER", message.relay)
            hub = next(e for e in reversed(trail) if e["EventId"] == "SEND" and e["Server"] != message.relay)
            assert hub["ConnectorId"] == INTRA and hub["ServerHostname"] == f"{message.relay.lower()}.contoso.sim"
            there = [e for e in trail if e["Server"] == message.relay and e["At"] > hub["At"]]
            same_dag = {hub["Server"], message.relay} == {"EX01", "EX02"}
            if same_dag:  # straight to the Mailbox Transport Delivery service of the database's server
                assert [e["EventId"] for e in there] == ["DELIVER"]
                direct += 1
            else:  # relayed to the Transport service inside the destination's delivery group first
                assert [e["EventId"] for e in there] == ["HAREDIRECT", "RECEIVE", "AGENTINFO", "SEND", "DELIVER"]
                receive = there[1]
                assert receive["ClientHostname"] == f"{hub['Server'].lower()}.contoso.sim"
                assert receive["ConnectorId"] == f"{message.relay}\\Default {message.relay}"
                assert there[3]["ConnectorId"] == INTRA
                relayed += 1
            assert len({e["InternalMessageId"] for e in there}) == 1  # the delivering server's own id
            assert there[0]["InternalMessageId"] not in {e["InternalMessageId"] for e in trail if e not in there}
        assert direct > 3 and relayed > 3
        # Each server's InternalMessageIds stay unique: one id, one message.
        owner: dict[tuple[str, str], set[str]] = defaultdict(set)
        for e in events:
            owner[(e["Server"], str(e["InternalMessageId"]))].add(str(e["MessageId"]))
        assert all(len(ids) == 1 for (server, _), ids in owner.items()), "an InternalMessageId names two messages"


def test_without_the_share_every_message_is_delivered_where_it_was_categorised() -> None:
    scenario = Scenario.from_dict(org(share=0.0))
    log = TrackingLog(scenario, Timeline(scenario.organisation, lambda: T0))
    messages = [m for s in ("EX01", "EX02", "EX03") for m in log.messages(s, T0 - 900, T0)]
    assert messages and not any(m.relay for m in messages)
    with pytest.raises(ScenarioError, match="remote_mailbox_share: must be between 0 and 1"):
        Scenario.from_dict({**org(), "tracking": {"messages_per_minute": 1, "remote_mailbox_share": 1.5}})


def test_outbound_mail_for_a_queue_in_retry_waits_in_it() -> None:
    window = (T0 - 900, T0 - 60)
    retry = Scenario.from_dict(org(share=0.0))
    ready = Scenario.from_dict(org(share=0.0, fabrikam_status="Ready"))
    held = TrackingLog(retry, Timeline(retry.organisation, lambda: T0))
    sent = TrackingLog(ready, Timeline(ready.organisation, lambda: T0))
    waiting = 0
    for message in held.messages("EX01", *window):
        if message.kind != "outbound" or message.partner:
            continue  # EX01's own Transport service took it: EX01's queue decides
        domain = message.events[0].recipients[0].rpartition("@")[2]
        ids = [e.event_id for e in message.events]
        twin = sent.message("EX01", message.message_index)  # the same message with the queue Ready
        if domain == "fabrikam.example":
            assert "SEND" not in ids and "DEFER" not in ids and ids[-1] == "AGENTINFO"
            assert [e.event_id for e in twin.events][-1] == "SEND"
            waiting += 1
        else:
            assert ids[-1] == "SEND" and twin.events == message.events
    assert waiting > 0
    with started(org(share=0.0)) as sim, pool(sim) as p:
        ps = PowerShell(p)
        ps.add_cmdlet("Get-Queue").add_parameter("Server", "EX01")
        (queue,) = [
            q.adapted_properties for q in ps.invoke() if q.adapted_properties["NextHopDomain"] == "fabrikam.example"
        ]
        assert str(queue["Status"]) == "Retry" and queue["LastError"] == DNS_ERROR
        logged = log_of(p, "EX01", *window)
        fabrikam = {
            e["MessageId"] for e in logged if any(str(r).endswith("@fabrikam.example") for r in e["Recipients"])
        }
        assert fabrikam and not any(e["EventId"] in ("SEND", "DEFER") and e["MessageId"] in fabrikam for e in logged
                                    if e["Server"] == "EX01" and e["ConnectorId"] != INTRA)  # fmt: skip
