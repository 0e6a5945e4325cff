"""The expected alerts through ``promtool test rules`` built from a real scrape (issue 14, item 8).

A fault is planted in the simulator; the exporter polls it with real pypsrp and serves ``/metrics``
over HTTP; the scrape, held constant for longer than every ``for:``, goes through the alert rules
with ``promtool test rules`` (tests/promtool_alerts.py). The alerts that fire must be exactly the
expected ones, at the severity the triage report of the same poll gives its first finding (one
severity table, exporter/triage/severity.py). A healthy organisation is the control: no finding,
no alert.
"""

from __future__ import annotations

import copy
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from exporter.service import Service
from exporter.settings import Settings
from exporter.triage.model import Report
from exporter.web import WebServer
from tests.integration.conftest import PASSWORD, USER, SimFactory, settings_for
from tests.promtool_alerts import firing_alerts, scrape_series

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

DNS_451 = "451 4.4.0 DNS query failed. The error was: SMTPSEND.DNS.NonExistentDomain; nonexistent domain"
# A Front End Transport proxy failure as Get-Queue shows it (the bracketed form), quoted in
# shared/reference/exchange-cmdlets.md §1.5 from a public Q&A thread (also tests/unit/test_lasterror.py).
PROXY_450 = (
    "[{LRT=15-01-21 23:50:05};{LED=450 4.7.0 Proxy session setup failed on Frontend with '451 4.4.0 Primary "
    'target IP address responded with: "451 4.4.0 Security status InvalidToken." Attempted failover to '
    "alternate host, but that did not succeed. Either there are no alternate hosts, or delivery failed to all "
    "alternate hosts. The last endpoint attempted was 10.0.0.12:717'};{FQDN=EX02.contoso.sim};{IP=10.0.0.12}]"
)


def healthy_org() -> dict[str, Any]:
    """Two servers with nothing wrong: a few messages in submission."""
    servers = [
        {"name": n, "tracking": None, "queues": [{"kind": "submission", "message_count": 2}]} for n in ("EX01", "EX02")
    ]
    return {
        "organisation": {"name": "Contoso", "domain": "contoso.sim"},
        "users": {USER: PASSWORD},
        "servers": servers,
        "send_connectors": [{"name": "Internet", "address_spaces": ["SMTP:*;1"]}],
    }


def with_retrying(server: int, error: str, messages: int) -> dict[str, Any]:
    """healthy_org with one external delivery queue to fabrikam.example in Retry on ``error``."""
    org = copy.deepcopy(healthy_org())
    org["servers"][server]["queues"].append(
        {
            "kind": "delivery",
            "row_id": 7,
            "next_hop_domain": "fabrikam.example",
            "status": "Retry",
            "message_count": messages,
            "retry_count": 4,
            "last_error": error,
        }
    )
    return org


def scrape_and_triage(
    sim_factory: SimFactory, service_factory: Callable[[Settings], Service], org: dict[str, Any]
) -> tuple[list[dict[str, str]], Report]:
    """Poll the planted organisation once, scrape /metrics over HTTP, run the alert rules over the
    scrape with promtool; return the firing alerts and the triage report of the same poll."""
    sim, scenario = sim_factory(org)
    service = service_factory(settings_for(sim, scenario, overrides={"collectors": {"tracking": {"enabled": False}}}))
    snaps = service.poll_all()
    assert all(s.ok for s in snaps), [(s.collector, s.target, s.message) for s in snaps]
    web = WebServer(service.app, "127.0.0.1:0")
    web.start()
    try:
        scraped_at = time.time()
        with urllib.request.urlopen(f"http://127.0.0.1:{web.port}/metrics", timeout=10) as response:
            exposition = response.read().decode()
    finally:
        web.stop()
    alerts = firing_alerts(scrape_series(exposition, f"127.0.0.1:{web.port}", scraped_at))
    return alerts, service.triage()


def names(alerts: list[dict[str, str]]) -> set[tuple[str, str]]:
    return {(a["alertname"], a["severity"]) for a in alerts}


def test_healthy_organisation_fires_no_alert(sim_factory: SimFactory, service_factory: Callable[..., Service]) -> None:
    alerts, report = scrape_and_triage(sim_factory, service_factory, healthy_org())
    assert alerts == []
    assert [(f.rule, f.severity) for f in report.findings] == []


def test_dns_failure_at_volume_pages(sim_factory: SimFactory, service_factory: Callable[..., Service]) -> None:
    alerts, report = scrape_and_triage(sim_factory, service_factory, with_retrying(0, DNS_451, 30))
    assert names(alerts) == {
        ("MailflowQueueRetryingDnsFailure", "warning"),
        ("MailflowQueueRetryingDnsFailure", "critical"),
    }
    assert all(a["server"] == "EX01" and a["next_hop_domain"] == "fabrikam.example" for a in alerts), alerts
    first = report.findings[0]
    assert (first.rule, first.severity) == ("outbound_dns_failure", "critical")


def test_dns_failure_of_a_few_messages_is_a_ticket(
    sim_factory: SimFactory, service_factory: Callable[..., Service]
) -> None:
    alerts, report = scrape_and_triage(sim_factory, service_factory, with_retrying(0, DNS_451, 3))
    assert names(alerts) == {("MailflowQueueRetryingDnsFailure", "warning")}
    assert [(f.rule, f.severity) for f in report.findings] == [("outbound_dns_failure", "warning")]


def test_proxy_failure_fires_an_alert(sim_factory: SimFactory, service_factory: Callable[..., Service]) -> None:
    """Before issue 14 a queue retrying with proxy_failure fired nothing and triage said warning at any volume."""
    alerts, report = scrape_and_triage(sim_factory, service_factory, with_retrying(1, PROXY_450, 12))
    assert names(alerts) == {("MailflowQueueRetrying", "warning"), ("MailflowQueueRetrying", "critical")}
    assert {(a["server"], a["category"]) for a in alerts} == {("EX02", "proxy_failure")}
    first = report.findings[0]
    assert (first.rule, first.severity) == ("queue_proxy_failure", "critical")
