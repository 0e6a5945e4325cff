"""Triage of LastError classes Exchange really emits, each planted on one queue of an otherwise healthy
organisation and read back over real pypsrp: the report must name the right cause first, with the hint
for that cause (the Front End's PRX codes, a 4.4.7 expiry and its cause, the Winsock code of a connection
failure, the organisation's own smart host)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import SimFactory
from tests.integration.test_triage import healthy_org, plant, retrying, run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# c7solutions "DNS error Exchange Server"; Exchange's SmtpResponse.EncodedProxyFailureResponseDnsError
PRX2 = "451 4.7.0 Temporary server error. Please try again later. PRX2"
# Exchange's AckReason.MessageExpired followed by its cause in Exchange's " -> " chain style (inferred shape)
EXPIRED_DNS = "550 4.4.7 QUEUE.Expired; message expired -> 451 4.4.0 DNS query failed"
# shared/reference/exchange-cmdlets.md §1.5 [S17], the bracketed Get-Queue form
REFUSED = (
    "[{LRT=11/27/2026 1:02:03 AM};{LED=451 4.4.397 Error communicating with target host. -> 421 4.2.1 Unable to "
    "connect -> SocketConnectionRefused: Socket error code 10061};{FQDN=relay.contoso.sim};{IP=192.0.2.5}]"
)
TIMEDOUT = (
    "451 4.4.397 Error communicating with target host. -> 421 4.2.1 Unable to connect -> SocketTimedout: "
    "Socket error code 10060"
)


def _prx(o: dict[str, Any]) -> None:
    o["servers"][0]["queues"].append(retrying(PRX2))


def _expired(o: dict[str, Any]) -> None:
    o["servers"][1]["queues"].append(retrying(EXPIRED_DNS))


def _smart_host_refuses(o: dict[str, Any]) -> None:
    o["send_connectors"] = [{"name": "Relay", "address_spaces": ["SMTP:*;1"], "smart_hosts": ["relay.contoso.sim"]}]
    queue = retrying(REFUSED)
    queue.update(delivery_type="SmartHostConnectorDelivery", next_hop_domain="relay.contoso.sim")
    o["servers"][0]["queues"].append(queue)


def _remote_times_out(o: dict[str, Any]) -> None:
    o["servers"][1]["queues"].append(retrying(TIMEDOUT))


def test_prx_is_the_front_end_hop_not_a_throttle(sim_factory: SimFactory) -> None:
    first = run(sim_factory, plant(_prx)).findings[0]
    assert first.rule == "queue_proxy_failure", first
    assert "(PRX2: the Front End's DNS lookup of the Mailbox server failed)" in first.next_step
    assert "Resolve-DnsName" in first.next_step and "PRX2" in " ".join(first.evidence)


def test_an_expiry_names_its_cause(sim_factory: SimFactory) -> None:
    first = run(sim_factory, plant(_expired)).findings[0]
    assert first.rule == "queue_expired", first
    assert "MessageExpirationTimeout" in first.next_step
    assert "The cause named is dns_failure: " in first.next_step
    assert "Register this connection's addresses in DNS" in first.next_step


def test_our_smart_host_refusing_is_named_as_ours(sim_factory: SimFactory) -> None:
    first = run(sim_factory, plant(_smart_host_refuses)).findings[0]
    assert first.rule == "outbound_connection_failure", first
    assert first.title.startswith("Your smart host relay.contoso.sim does not accept connections"), first.title
    assert first.next_step.startswith("Your smart host relay.contoso.sim actively refused the connection")
    assert first.runbook == "connection_refused"


def test_a_remote_timeout_is_not_called_refused(sim_factory: SimFactory) -> None:
    first = run(sim_factory, plant(_remote_times_out)).findings[0]
    assert first.rule == "outbound_connection_failure", first
    assert first.title.startswith("Remote hosts do not accept connections")
    assert "(Winsock 10060)" in first.next_step and "actively refused" not in first.next_step
    assert first.runbook == "connection_timeout"


def test_the_healthy_control_has_no_lasterror_finding(sim_factory: SimFactory) -> None:
    report = run(sim_factory, healthy_org())
    assert not [f for f in report.findings if f.step == "queues"]
