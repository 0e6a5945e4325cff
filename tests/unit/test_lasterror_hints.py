"""Hints refined from a LastError's text and its queue, and the triage rules that show them."""

from __future__ import annotations

import pytest

from exporter.exchange.lasterror import CATEGORY_HINTS, parse_smtp_error
from exporter.exchange.lasterror_hints import PRX_CODES, hint_for, proxy_code, winsock_code
from exporter.exchange.queues import QueueInfo, aggregate
from exporter.exchange.send_connectors import SendConnector, SendConnectorResult
from exporter.triage.facts import Facts
from exporter.triage.rules import outbound_connection_failure, queues_retrying_other

CHAIN = "451 4.4.397 Error communicating with target host. -> 421 4.2.1 Unable to connect -> "
TIMEDOUT = CHAIN + "SocketTimedout: Socket error code 10060"  # reference §1.5 [S17]
REFUSED = CHAIN + "SocketConnectionRefused: Socket error code 10061"  # reference §1.5 [S17]
UNREACHABLE = CHAIN + "SocketError: Failed to connect. Winsock error code: 10051, Win32 error code: 10051"  # [S17]
WINSOCK_10060 = (  # reference §1.5 [S17]
    '441 4.4.1 Error encountered while communicating with primary target IP address: "Failed to connect. '
    'Winsock error code: 10060, Win32 error code: 10060." Attempted failover to alternate host, but that '
    "did not succeed. Either there are no alternate hosts, or delivery failed to all alternate hosts. The "
    "last endpoint attempted was 172.24.16.149:475"
)
EXO_REFUSED = "450 4.4.316 Connection refused [Message=Socket error code 10061]"  # NDR table, 4.4.316
PRX2 = "451 4.7.0 Temporary server error. Please try again later. PRX2"  # c7solutions
NOW = 1_800_000_000.0


def hint(text: str, smart_host: str | None = None) -> str:
    return hint_for(parse_smtp_error(text), smart_host=smart_host)


def test_each_winsock_code_gets_its_own_hint() -> None:
    assert winsock_code(WINSOCK_10060) == "10060" and winsock_code("no code") is None
    for text in (TIMEDOUT, WINSOCK_10060):
        assert hint(text) == CATEGORY_HINTS["connection_timeout"]
        assert "actively refused" not in hint(text)
    for text in (REFUSED, EXO_REFUSED):
        assert hint(text) == CATEGORY_HINTS["connection_refused"]
    unreachable = hint(UNREACHABLE)
    assert "no route" in unreachable and "10051/10065" in unreachable
    assert "actively refused" not in unreachable and "time out" not in unreachable
    reset = hint(CHAIN + "SocketError: Winsock error code: 10054")
    assert reset == CATEGORY_HINTS["connection_failed"]


def test_a_smart_host_is_named_as_ours() -> None:
    refused = hint(REFUSED, smart_host="relay.contoso.sim")
    assert refused.startswith("Your smart host relay.contoso.sim actively refused the connection (Winsock 10061)")
    assert "Remote" not in refused and "remote" not in refused
    timeout = hint(TIMEDOUT, smart_host="[192.0.2.5]")
    assert timeout.startswith("Connections to your smart host [192.0.2.5] time out (Winsock 10060)")
    assert "your smart host relay.contoso.sim" in hint(UNREACHABLE, smart_host="relay.contoso.sim")


@pytest.mark.parametrize("code", sorted(PRX_CODES))
def test_prx_codes_point_at_the_front_end_to_mailbox_hop(code: str) -> None:
    text = f"451 4.7.0 Temporary server error. Please try again later. {code} "
    assert proxy_code(text) == code
    step = hint(text)
    assert f"({code}: {PRX_CODES[code]})" in step and "not a throttle" in step
    assert "Front End" in step and "Mailbox" in step


def test_prx_dns_and_connection_hints_differ() -> None:
    dns = hint(PRX2)
    assert "Resolve-DnsName" in dns and "hosts-file" in dns and "IPv6" in dns
    connection = hint("451 4.7.0 Temporary server error. Please try again later. PRX3")
    assert "2525" in connection and "Resolve-DnsName" not in connection


def test_microsoft_365_blocks_need_support_not_the_delist_portal() -> None:
    step = hint("550 5.7.750 Service unavailable. Client blocked from sending from unregistered domains")
    assert "5.7.750" in step and "validate every sending domain" in step and "Microsoft support" in step
    assert "does not lift" in step
    assert hint("550 5.7.606 Access denied, banned sending IP [192.0.2.1]") == CATEGORY_HINTS["blocklisted"]


def test_an_expiry_hint_carries_its_cause() -> None:
    step = hint("550 4.4.7 QUEUE.Expired; message expired -> 451 4.4.0 DNS query failed")
    assert step.startswith(CATEGORY_HINTS["expired"])
    assert "The cause named is dns_failure: " + CATEGORY_HINTS["dns_failure"] in step
    assert hint("550 4.4.7 QUEUE.Expired; message expired") == CATEGORY_HINTS["expired"]


def test_recipient_restrictions_are_not_connector_credentials() -> None:
    step = hint("550 5.7.1 RESOLVER.RST.AuthRequired; authentication required")
    assert step == CATEGORY_HINTS["recipient_restricted"]
    assert "not a send connector credential" in step and "SmartHostAuthMechanism" not in step
    assert hint_for(None) == CATEGORY_HINTS["other"]


# ------------------------------------------------------------------ triage rules


def queue(error: str, delivery_type: str = "DnsConnectorDelivery", hop: str = "fabrikam.example") -> QueueInfo:
    return QueueInfo(
        identity="EX01\\7", server="EX01", kind="delivery", delivery_type=delivery_type,
        next_hop_domain=hop, next_hop_category="External", status="Retry", message_count=25, deferred_count=0,
        incoming_rate=0.0, outgoing_rate=0.0, retry_count=3, next_retry_time=None, last_error=parse_smtp_error(error),
    )  # fmt: skip


def connector(*smart_hosts: str) -> SendConnectorResult:
    conn = SendConnector(
        name="Relay", enabled=True, dns_routing=not smart_hosts, smart_hosts=smart_hosts,
        address_spaces=("SMTP:*;1",), source_transport_servers=("EX01",), port=25, require_tls=False,
        tls_auth_level="", cloud_services_mail_enabled=False, changed=None,
    )  # fmt: skip
    return SendConnectorResult((conn,), ())


def facts(queues: list[QueueInfo], **results: object) -> Facts:
    return Facts({"queues": {"EX01": aggregate("EX01", queues, 20)}, **results}, {}, NOW)  # type: ignore[dict-item]


def test_connection_finding_to_a_remote_host_follows_the_winsock_code() -> None:
    [finding] = outbound_connection_failure(facts([queue(TIMEDOUT)]))
    assert finding.title.startswith("Remote hosts do not accept connections")
    assert finding.next_step == CATEGORY_HINTS["connection_timeout"] and finding.runbook == "connection_timeout"


def test_connection_finding_to_our_smart_host_by_delivery_type() -> None:
    bracketed = "[{LRT=};{LED=" + REFUSED + "};{FQDN=relay.contoso.sim};{IP=192.0.2.5}]"
    [finding] = outbound_connection_failure(facts([queue(bracketed, "SmartHostConnectorDelivery", "contoso.example")]))
    assert finding.title.startswith("Your smart host relay.contoso.sim does not accept connections")
    assert finding.next_step.startswith("Your smart host relay.contoso.sim actively refused")


def test_connection_finding_to_our_smart_host_by_next_hop_domain() -> None:
    [finding] = outbound_connection_failure(
        facts([queue(TIMEDOUT, hop="192.0.2.5")], send_connectors={"organization": connector("[192.0.2.5]")})
    )
    assert finding.title.startswith("Your smart host [192.0.2.5] does not accept connections")
    assert "Connections to your smart host [192.0.2.5] time out" in finding.next_step
    # Without the connector (or another next hop) it is a remote host again.
    [remote] = outbound_connection_failure(facts([queue(TIMEDOUT, hop="192.0.2.5")]))
    assert remote.title.startswith("Remote hosts")


def test_prx_queue_is_a_proxy_failure_finding_with_the_code() -> None:
    findings = queues_retrying_other(facts([queue(PRX2)]))
    assert [f.rule for f in findings] == ["queue_proxy_failure"]
    assert "(PRX2: " in findings[0].next_step and "Resolve-DnsName" in findings[0].next_step


def test_a_mix_of_smart_host_and_remote_queues_names_both() -> None:
    smart = queue(REFUSED, "SmartHostConnectorDelivery", "relay.contoso.sim")
    remote = QueueInfo(**{**queue(TIMEDOUT).__dict__, "identity": "EX01\\8"})
    [finding] = outbound_connection_failure(facts([smart, remote]))
    assert finding.title.startswith("Remote hosts and your smart host relay.contoso.sim do not accept connections")
