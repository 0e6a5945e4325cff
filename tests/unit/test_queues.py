"""Get-Queue parsing, aggregation under the cardinality cap, and rendering."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.exchange.queues import QUEUE_STATUSES, parse_queue, parse_queues, queue_kind, render_queues
from tests.fixtures.queue_clixml import deserialize_queues

DNS = "451 4.4.0 DNS query failed. The error was: SMTPSEND.DNS.NonExistentDomain; nonexistent domain"
REFUSED = (
    "[{LRT=11/27/2026 1:02:03 AM};{LED=451 4.4.397 Error communicating with target host. -> 421 4.2.1 "
    "Unable to connect -> SocketConnectionRefused: Socket error code 10061};{FQDN=mx.tailspin.example};"
    "{IP=203.0.113.25}]"
)

ORG = [
    {
        "Identity": "EX01\\Submission",
        "DeliveryType": "Undefined",
        "NextHopDomain": "Submission",
        "NextHopCategory": "Internal",
        "MessageCount": 3,
        "IncomingRate": 4.5,
        "OutgoingRate": 4.62,
    },
    {
        "Identity": "EX01\\Poison",
        "DeliveryType": "Undefined",
        "NextHopDomain": "Poison Message",
        "NextHopCategory": "Internal",
        "MessageCount": 1,
    },
    {
        "Identity": "EX01\\Unreachable",
        "DeliveryType": "Unreachable",
        "NextHopDomain": "Unreachable Domain",
        "NextHopCategory": "Internal",
        "MessageCount": 2,
    },
    {
        "Identity": "EX01\\Shadow\\12",
        "DeliveryType": "ShadowRedundancy",
        "NextHopDomain": "ex02.contoso.sim",
        "NextHopCategory": "Internal",
        "MessageCount": 5,
    },
    {
        "Identity": "EX01\\7",
        "DeliveryType": "SmtpDeliveryToMailbox",
        "NextHopDomain": "mailbox database 0471695037",
        "NextHopCategory": "Internal",
        "Status": "Active",
        "MessageCount": 42,
        "IncomingRate": 1.2,
        "OutgoingRate": 0.8,
    },
    {
        "Identity": "EX01\\322120",
        "NextHopDomain": "Fabrikam.example",
        "Status": "Retry",
        "MessageCount": 17,
        "DeferredMessageCount": 1,
        "RetryCount": 17,
        "LastError": DNS,
        "FirstRetryTime": "2026-11-27T00:06:02+00:00",
        "LastRetryTime": "2026-11-27T00:50:05+00:00",
        "NextRetryTime": "2026-11-27T01:00:05+00:00",
    },
    {
        "Identity": "EX01\\9",
        "NextHopDomain": "tailspin.example",
        "Status": "Retry",
        "MessageCount": 4,
        "RetryCount": 3,
        "LastError": REFUSED,
        "NextRetryTime": "2026-11-27T01:10:00Z",
    },
]


@pytest.mark.parametrize(
    ("identity", "delivery_type", "kind"),
    [
        ("EX01\\Submission", "Undefined", "submission"),
        ("EX01\\Poison", "Undefined", "poison"),
        ("EX01\\Unreachable", "Unreachable", "unreachable"),
        ("EX01\\Shadow\\12", "ShadowRedundancy", "shadow"),
        ("DAGSERVER5\\322120", "DnsConnectorDelivery", "delivery"),
        ("EX01\\contoso.com", "SmartHostConnectorDelivery", "delivery"),
        ("EX01\\55", "ShadowRedundancy", "shadow"),
    ],
)
def test_queue_kind(identity: str, delivery_type: str, kind: str) -> None:
    assert queue_kind(identity, delivery_type) == kind


def test_parse_single_retrying_queue() -> None:
    q = parse_queue(deserialize_queues([ORG[5]])[0], "EX01")
    assert q.identity == "EX01\\322120"
    assert (q.kind, q.delivery_type, q.status, q.next_hop_category) == (
        "delivery",
        "DnsConnectorDelivery",
        "Retry",
        "External",
    )
    assert (q.message_count, q.deferred_count, q.retry_count) == (17, 1, 17)
    assert q.next_retry_time == datetime(2026, 11, 27, 1, 0, 5, tzinfo=UTC)
    assert q.last_error is not None
    assert (q.last_error.smtp_code, q.last_error.enhanced_code, q.last_error.category) == (
        "451",
        "4.4.0",
        "dns_failure",
    )


def test_bracketed_last_error_is_split() -> None:
    q = parse_queue(deserialize_queues([ORG[6]])[0], "EX01")
    assert q.last_error is not None
    assert q.last_error.category == "connection_refused"
    assert (q.last_error.smtp_code, q.last_error.enhanced_code) == ("451", "4.4.397")
    assert q.last_error.fqdn == "mx.tailspin.example"
    assert q.last_error.ip == "203.0.113.25"


def test_empty_last_error_is_none() -> None:
    assert parse_queue(deserialize_queues([ORG[0]])[0], "EX01").last_error is None


def test_aggregate_labels_and_values() -> None:
    result = parse_queues(deserialize_queues(ORG), "EX01", max_domains=20)
    groups = result.groups
    fab = groups[("EX01", "delivery", "DnsConnectorDelivery", "External", "fabrikam.example")]
    assert (fab.messages, fab.deferred, fab.retry_count, fab.statuses) == (17, 1, 17, {"Retry": 1})
    assert fab.errors == {("451", "4.4.0", "dns_failure"): 1}
    sub = groups[("EX01", "submission", "Undefined", "Internal", "Submission")]
    assert (sub.messages, sub.incoming_rate, sub.outgoing_rate) == (3, 4.5, 4.62)
    assert ("EX01", "poison", "Undefined", "Internal", "Poison Message") in groups
    assert ("EX01", "shadow", "ShadowRedundancy", "Internal", "ex02.contoso.sim") in groups
    assert result.folded_domains == 0


def test_next_hop_domain_cap_folds_smallest_into_other() -> None:
    queues = [
        {"Identity": f"EX01\\{i}", "NextHopDomain": f"d{i}.example", "MessageCount": i, "Status": "Active"}
        for i in range(1, 11)
    ]
    result = parse_queues(deserialize_queues(queues), "EX01", max_domains=3)
    domains = {key[4] for key in result.groups}
    assert domains == {"d10.example", "d9.example", "d8.example", "other"}
    other = result.groups[("EX01", "delivery", "DnsConnectorDelivery", "External", "other")]
    assert other.messages == sum(range(1, 8))
    assert other.queues == 7 and other.statuses == {"Active": 7}
    assert result.folded_domains == 7


def test_status_series_only_for_states_queues_are_in() -> None:
    """A folded label set counts its queues per state; states no queue is in have no series."""
    statuses = ["Retry", "Retry", "Active", "Ready"]
    queues = [
        {"Identity": f"EX01\\{i}", "NextHopDomain": f"d{i}.example", "MessageCount": 1, "Status": status}
        for i, status in enumerate(statuses)
    ]
    result = parse_queues(deserialize_queues(queues), "EX01", max_domains=0)
    status = next(m for m in render_queues([result]) if m.name == "mailflow_queue_status")
    assert {s.labels["status"]: s.value for s in status.samples} == {"Retry": 2, "Active": 1, "Ready": 1}
    assert {s.labels["next_hop_domain"] for s in status.samples} == {"other"}


def test_render_is_valid_exposition_with_every_status() -> None:
    result = parse_queues(deserialize_queues(ORG), "EX01", max_domains=20)

    class Fixed:
        def collect(self):
            return render_queues([result])

    registry = CollectorRegistry()
    registry.register(Fixed())  # type: ignore[arg-type]
    labels = {
        "server": "EX01",
        "queue_kind": "delivery",
        "delivery_type": "DnsConnectorDelivery",
        "next_hop_category": "External",
        "next_hop_domain": "fabrikam.example",
    }
    assert registry.get_sample_value("mailflow_queue_messages", labels) == 17
    for status in QUEUE_STATUSES:  # only the state the queue is in has a series
        expected = 1.0 if status == "Retry" else None
        assert registry.get_sample_value("mailflow_queue_status", {**labels, "status": status}) == expected
    assert (
        registry.get_sample_value(
            "mailflow_queue_last_error_info",
            {**labels, "smtp_code": "451", "enhanced_code": "4.4.0", "category": "dns_failure"},
        )
        == 1
    )
    assert (
        registry.get_sample_value("mailflow_queue_next_retry_timestamp_seconds", labels)
        == datetime(2026, 11, 27, 1, 0, 5, tzinfo=UTC).timestamp()
    )
    text = generate_latest(registry).decode()
    assert "322120" not in text  # the ephemeral queue row number never becomes a label
