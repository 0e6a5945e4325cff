"""``trace``'s pure parts on hand-built event lists: stitching across servers and hops, and verdicts."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from exporter.exchange.lasterror import CATEGORY_HINTS, parse_smtp_error
from exporter.exchange.queues import QueueInfo
from exporter.trace.events import INTRA_ORG_CONNECTOR, TraceEvent
from exporter.trace.stitch import HostNames, stitch
from exporter.trace.verdict import IN_TRANSIT, QueueState, Scope, judge, message_notes, queue_servers

T0 = datetime(2027, 1, 15, 9, 14, tzinfo=UTC)
MID = "<cfo-1@ex01.contoso.com>"
SENDER = "cfo@contoso.com"
DNS_ERROR = "451 4.4.0 DNS query failed. The error was: SMTPSEND.DNS.NonExistentDomain; nonexistent domain"


def ev(server: str, seconds: float, event_id: str, source: str = "SMTP", **fields: object) -> TraceEvent:
    """One event; message id, sender and subject default to the CFO's message."""
    values: dict[str, object] = {"message_id": MID, "sender": SENDER, "subject": "Wire transfer", "internal_id": "1"}
    values.update(fields)
    return TraceEvent(server=server, timestamp=T0 + timedelta(seconds=seconds), event_id=event_id, source=source,
                      **values)  # type: ignore[arg-type]  # fmt: skip


def submission(origin: str, hub: str, t: float, rcpt: tuple[str, ...], iid: str = "11") -> list[TraceEvent]:
    """NOTIFYMAPI, RECEIVE, SUBMIT on ``origin``; HAREDIRECT, RECEIVE, AGENTINFO on ``hub``."""
    o = f"{origin.lower()}.contoso.com"
    return [
        ev(origin, t, "NOTIFYMAPI", "STOREDRIVER", server_hostname=origin, internal_id=iid),
        ev(origin, t + 1, "RECEIVE", "STOREDRIVER", server_hostname=o, recipients=rcpt, internal_id=iid),
        ev(origin, t + 2, "SUBMIT", "STOREDRIVER", client_hostname=o, server_hostname=o, internal_id=iid),
        ev(hub, t + 3, "HAREDIRECT", client_hostname=o, server_hostname=hub, connector_id=f"{hub}\\Default {hub}",
           internal_id="22"),
        ev(hub, t + 4, "RECEIVE", client_hostname=o, server_hostname=hub, connector_id=f"{hub}\\Default {hub}",
           recipients=rcpt, internal_id="22"),
        ev(hub, t + 5, "AGENTINFO", "AGENT", recipients=rcpt, internal_id="22"),
    ]  # fmt: skip


def relay(hub: str, target: str, t: float, rcpt: tuple[str, ...], skew: float = 0.0) -> list[TraceEvent]:
    """SEND from ``hub`` to ``target``'s Transport service, which relays it to its own mailbox: DELIVER."""
    hf, tf = f"{hub.lower()}.contoso.com", f"{target.lower()}.contoso.com"
    ok = ("250 2.1.5 Recipient OK",) * len(rcpt)
    return [
        ev(hub, t, "SEND", client_hostname=hub, server_hostname=tf, connector_id=INTRA_ORG_CONNECTOR,
           recipients=rcpt, recipient_status=ok, internal_id="22"),
        ev(target, t + 1 + skew, "RECEIVE", client_hostname=hf, server_hostname=target,
           connector_id=f"{target}\\Default {target}", recipients=rcpt, internal_id="33"),
        ev(target, t + 2 + skew, "SEND", client_hostname=target, server_hostname=tf,
           connector_id=INTRA_ORG_CONNECTOR, recipients=rcpt, recipient_status=ok, internal_id="33"),
        ev(target, t + 3 + skew, "DELIVER", "STOREDRIVER", server_hostname=tf, recipients=rcpt, internal_id="33"),
    ]  # fmt: skip


def scope(*searched: str, failed: dict[str, str] | None = None, events: list[TraceEvent] = (), until=None) -> Scope:  # type: ignore[assignment]
    names = HostNames.learn(events, {server: [] for server in (*searched, *(failed or {}))})
    return Scope(frozenset(searched), failed or {}, names.server_of, until)


def queue(identity: str, hop: str, status: str = "Retry", error: str | None = DNS_ERROR, count: int = 14,
          delivery_type: str = "DnsConnectorDelivery") -> QueueInfo:  # fmt: skip
    return QueueInfo(identity, identity.split("\\")[0], "delivery", delivery_type, hop, "External", status, count, 0,
                     0.0, 0.0, 6, None, parse_smtp_error(error))  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Stitching
# ---------------------------------------------------------------------------------------------
def test_three_servers_two_hops_one_message_in_hop_order() -> None:
    rcpt = ("treasury@contoso.com",)
    events = [*submission("EX01", "EX02", 0, rcpt), *relay("EX02", "EX03", 10, rcpt)]
    random.Random(7).shuffle(events)
    (message,) = stitch(events)
    assert message.key == MID and message.sender == SENDER and message.recipients == rcpt
    assert message.servers == ("EX01", "EX02", "EX03")
    assert [(h.source, h.target, h.kind) for h in message.hops] == [
        ("EX01", "EX02", "submission"),
        ("EX02", "EX03", "smtp"),
    ]
    assert [e.event_id for e in message.events] == [
        "NOTIFYMAPI", "RECEIVE", "SUBMIT", "HAREDIRECT", "RECEIVE", "AGENTINFO", "SEND", "RECEIVE", "SEND", "DELIVER",
    ]  # fmt: skip
    (verdict,) = judge(message, scope("EX01", "EX02", "EX03", events=events))
    assert (verdict.status, verdict.server) == ("delivered", "EX03")
    assert stitch(events) == stitch(list(reversed(events)))  # a pure function of the events


def test_internal_message_id_joins_one_server_only() -> None:
    events = [
        ev("EX01", 0, "RECEIVE", internal_id="7", recipients=("a@contoso.com",)),
        ev(
            "EX01", 1, "AGENTINFO", "AGENT", internal_id="7", message_id=""
        ),  # no MessageId: joined by InternalMessageId
        ev("EX02", 2, "RECEIVE", internal_id="7", message_id="<other@x>", recipients=("b@contoso.com",)),
        ev("EX02", 3, "AGENTINFO", "AGENT", internal_id="7", message_id=""),  # same number, other server
    ]
    messages = {m.key: m for m in stitch(events)}
    assert set(messages) == {MID, "<other@x>"}
    assert [e.event_id for e in messages[MID].events] == ["RECEIVE", "AGENTINFO"]
    assert {e.server for e in messages["<other@x>"].events} == {"EX02"}


def test_a_receiving_server_whose_clock_is_behind_is_ordered_after_the_send() -> None:
    rcpt = ("treasury@contoso.com",)
    events = relay("EX02", "EX03", 10, rcpt, skew=-42)  # EX03 stamps its RECEIVE 41 s before EX02's SEND
    (message,) = stitch(events)
    assert [(e.server, e.event_id) for e in message.events] == [
        ("EX02", "SEND"), ("EX03", "RECEIVE"), ("EX03", "SEND"), ("EX03", "DELIVER"),
    ]  # fmt: skip
    (note,) = message.notes
    assert "EX03's clock is at least 41s behind EX02's" in note
    assert message.events[1].timestamp == T0 + timedelta(seconds=-31)  # shown as EX03 stamped it


def test_a_send_straight_to_another_servers_mailbox_delivery_is_a_delivery_hop() -> None:
    rcpt = ("a@contoso.com",)
    events = [
        *submission("EX01", "EX02", 0, rcpt),
        ev("EX02", 9, "SEND", client_hostname="EX02", server_hostname="ex01.contoso.com",
           connector_id=INTRA_ORG_CONNECTOR, recipients=rcpt, internal_id="22"),
        ev("EX01", 10, "DELIVER", "STOREDRIVER", server_hostname="ex01.contoso.com", recipients=rcpt, internal_id="44"),
    ]  # fmt: skip
    (message,) = stitch(events)
    assert [(h.source, h.target, h.kind) for h in message.hops] == [
        ("EX01", "EX02", "submission"),
        ("EX02", "EX01", "delivery"),
    ]
    assert message.servers == ("EX01", "EX02") and message.events[-1].event_id == "DELIVER"
    assert judge(message, scope("EX01", "EX02", events=events))[0].status == "delivered"


def test_a_dsn_is_attached_to_the_message_it_reports_on() -> None:
    rcpt = ("nobody@contoso.com",)
    events = [
        ev("EX01", 0, "RECEIVE", recipients=rcpt, internal_id="5"),
        ev("EX01", 1, "FAIL", "ROUTING", recipients=rcpt, internal_id="5",
           recipient_status=("550 5.1.1 RESOLVER.ADR.RecipNotFound; not found",)),
        ev("EX01", 2, "DSN", "DSN", message_id="<ndr@ex01>", internal_id="6", reference=(MID,), recipients=(SENDER,)),
        ev("EX01", 3, "DSN", "DSN", message_id="<ndr2@ex01>", internal_id="8", reference=("5",), recipients=(SENDER,)),
    ]  # fmt: skip
    (message,) = stitch(events)
    assert [r.message_id for r in message.reports] == ["<ndr@ex01>", "<ndr2@ex01>"]
    assert message.recipients == rcpt


def test_host_names_claimed_by_two_servers_are_not_used() -> None:
    names = HostNames.learn([], {"EX01": ["127.0.0.1", "ex01.contoso.com"], "EX02": ["127.0.0.1"]})
    assert names.server_of("127.0.0.1") is None
    assert names.server_of("EX01.CONTOSO.COM") == names.server_of("ex01") == "EX01"


# ---------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------
def test_sent_out_with_the_remote_hosts_answer() -> None:
    rcpt = ("treasury@bank.example",)
    answer = "250 2.0.0 OK 1796635271 8a36413058 - queued"
    events = [
        *submission("EX01", "EX02", 0, rcpt),
        ev("EX02", 9, "SEND", client_hostname="ex02.contoso.com", server_hostname="mx1.bank.example",
           connector_id="Outbound to Internet", recipients=rcpt, recipient_status=(answer,), internal_id="22"),
    ]  # fmt: skip
    (message,) = stitch(events)
    (verdict,) = judge(message, scope("EX01", "EX02", events=events))
    assert (verdict.status, verdict.server, verdict.remote_host) == ("sent", "EX02", "mx1.bank.example")
    assert verdict.response == answer and verdict.code == "2.0.0" and verdict.category == ""
    assert "mx1.bank.example" in verdict.summary and answer in verdict.summary


def test_one_recipient_failed_with_5_1_1_the_other_delivered() -> None:
    good, bad = "a@contoso.com", "nobody@contoso.com"
    events = [
        ev("EX01", 0, "RECEIVE", recipients=(good, bad)),
        ev("EX01", 1, "FAIL", "ROUTING", recipients=(bad,), recipient_status=("550 5.1.1 RESOLVER.ADR.RecipNotFound; "
                                                                               "not found",)),
        ev("EX01", 2, "DELIVER", "STOREDRIVER", recipients=(good,)),
        ev("EX02", 3, "HARECEIVE", recipients=(good, bad)),  # a shadow copy elsewhere decides nothing
    ]  # fmt: skip
    (message,) = stitch(events)
    verdicts = {v.recipient: v for v in judge(message, scope("EX01", "EX02"))}
    assert verdicts[good].status == "delivered"
    failed = verdicts[bad]
    assert (failed.status, failed.code, failed.category) == ("failed", "5.1.1", "recipient_unknown")
    assert failed.hint == CATEGORY_HINTS["recipient_unknown"]


def test_still_queued_names_the_queue_and_its_last_error() -> None:
    rcpt = ("ap@fabrikam.example",)
    events = submission("EX01", "EX01", 0, rcpt)
    (message,) = stitch(events)
    until = T0 + timedelta(minutes=30)
    first = judge(message, scope("EX01", events=events, until=until))
    assert first[0].status == "queued" and first[0].next_hops == ("fabrikam.example",)
    assert queue_servers(first) == ["EX01"]
    states = {"EX01": QueueState("EX01", (queue("EX01\\3", "adatum.example", "Ready", None, 2),
                                          queue("EX01\\4", "fabrikam.example")))}  # fmt: skip
    (verdict,) = judge(message, scope("EX01", events=events, until=until), states)
    assert (verdict.status, verdict.queue, verdict.response) == ("queued", "EX01\\4", DNS_ERROR)
    assert (verdict.code, verdict.category) == ("4.4.0", "dns_failure")
    assert verdict.hint == CATEGORY_HINTS["dns_failure"] and "Retry" in verdict.summary
    assert not verdict.wants_queue
    nothing = {"EX01": QueueState("EX01", (queue("EX01\\3", "adatum.example"),))}
    (unmatched,) = judge(message, scope("EX01", events=events, until=until), nothing)
    assert unmatched.status == "queued" and not unmatched.queue and "no queue on EX01" in unmatched.summary
    broken = {"EX01": QueueState("EX01", error="connection refused")}
    assert "could not be read (connection refused)" in judge(message, scope("EX01", until=until), broken)[0].summary


def test_a_smart_host_queue_gets_the_smart_host_hint() -> None:
    refused = (
        "[{LRT=};{LED=451 4.4.397 Error communicating with target host. -> 421 4.2.1 Unable to connect -> "
        "SocketConnectionRefused: Socket error code 10061};{FQDN=mx.tailspin.example};{IP=203.0.113.25}]"
    )
    events = submission("EX01", "EX01", 0, ("x@tailspin.example",))
    states = {"EX01": QueueState("EX01", (queue("EX01\\5", "tailspin.example", error=refused,
                                                delivery_type="SmartHostConnectorDelivery"),))}  # fmt: skip
    (verdict,) = judge(stitch(events)[0], scope("EX01", events=events, until=T0 + timedelta(hours=1)), states)
    assert verdict.category == "connection_refused" and "smart host mx.tailspin.example" in verdict.hint


def test_a_hop_to_a_server_that_could_not_be_searched_is_unsearched_never_lost() -> None:
    rcpt = ("a@contoso.com",)
    events = [*submission("EX01", "EX01", 0, rcpt), relay("EX01", "EX02", 10, rcpt)[0]]
    (message,) = stitch(events)
    later = T0 + timedelta(hours=1)
    (verdict,) = judge(message, scope("EX01", failed={"EX02": "connection refused"}, events=events, until=later))
    assert (verdict.status, verdict.unsearched) == ("unsearched", ("EX02",))
    assert "EX02 could not be searched (connection refused)" in verdict.summary
    (lost,) = judge(message, scope("EX01", "EX02", events=events, until=later))  # searched, and nothing there
    assert lost.status == "lost" and "EX02's log shows nothing after it" in lost.summary
    (elsewhere,) = judge(message, Scope(frozenset({"EX01"}), {}, HostNames().server_of, later))
    assert elsewhere.status == "unsearched" and "not one of the searched servers" in elsewhere.summary


def test_a_submission_that_no_server_continues() -> None:
    events = submission("EX01", "EX02", 0, ("a@contoso.com",))[:3]
    (message,) = stitch(events)
    later = T0 + timedelta(hours=1)
    assert judge(message, scope("EX01", "EX02", until=later))[0].status == "lost"
    (verdict,) = judge(message, scope("EX01", failed={"EX02": "connection refused"}, until=later))
    assert verdict.status == "unsearched" and verdict.unsearched == ("EX02",)


def test_a_message_seconds_old_is_in_transit_not_queued_or_lost() -> None:
    events = submission("EX01", "EX02", 0, ("a@contoso.com",))[:3]
    (message,) = stitch(events)
    just_after = message.last_seen + IN_TRANSIT / 2
    (verdict,) = judge(message, scope("EX01", "EX02", until=just_after))
    assert verdict.status == "in_transit" and not verdict.wants_queue


def test_a_trail_that_starts_with_a_hop_from_an_unsearched_server_says_so() -> None:
    rcpt = ("a@contoso.com",)
    events = relay("EX02", "EX03", 10, rcpt)[1:]  # EX02's SEND is missing: EX02 could not be searched
    (message,) = stitch(events, {"EX02": ["ex02.contoso.com"]})
    names = HostNames.learn(events, {"EX02": ["ex02.contoso.com"]})
    notes = message_notes(message, Scope(frozenset({"EX03"}), {"EX02": "timed out"}, names.server_of))
    assert any("received from EX02, which could not be searched (timed out)" in n for n in notes)


@pytest.mark.parametrize("event_id", ["DROP", "DELIVERFAIL"])
def test_other_failures(event_id: str) -> None:
    events = [ev("EX01", 0, "RECEIVE", recipients=("a@contoso.com",)), ev("EX01", 1, event_id, "AGENT")]
    (verdict,) = judge(stitch(events)[0], scope("EX01"))
    assert verdict.status == "failed"
