"""Label cardinality through the simulator and a real scrape: a server with thousands of shadow
queues and a LastError code per queue that changes on every poll (a remote server answering
differently on every retry) keeps the queue series under the bound docs/metrics.md documents."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.exchange.lasterror import CATEGORIES
from exporter.exchange.queues import DELIVERY_TYPES, QUEUE_STATUSES
from exporter.service import Service
from exporter.settings import Settings
from exporter.simulator import Scenario
from exporter.web import WebServer
from tests.integration.conftest import SimFactory, only_collectors, settings_for, small_org

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SHADOWS = 1500
RETRYING = 1500
MAX_DOMAINS = 20
MAX_LAST_ERRORS = 50


def hostile_org(epoch: int) -> dict[str, Any]:
    """EX01 holds SHADOWS shadow queues, each for another primary FQDN, and RETRYING delivery queues,
    each with its own next hop and LastError code; ``epoch`` changes every code."""
    org = small_org(("EX01",))
    queues = org["servers"][0]["queues"]
    for i in range(SHADOWS):
        queues.append(
            {"kind": "shadow", "row_id": 1000 + i, "next_hop_domain": f"primary{i}.contoso.sim", "message_count": i % 5}
        )
    for i in range(RETRYING):
        code = i + epoch * RETRYING
        queues.append(
            {
                "kind": "delivery",
                "row_id": 5000 + i,
                "next_hop_domain": f"d{i}.example",
                "status": "Retry",
                "message_count": 1 + i % 9,
                "retry_count": 2,
                "last_error": f"451 4.{code % 1000}.{code // 1000} Temporary failure {code}, try again later",
            }
        )
    return org


def queue_series_bound(groups: int) -> int:
    """docs/metrics.md "Cardinality": per server and G label sets, 6 gauges and 6 statuses per label
    set, last_error_info <= max_last_errors + G x categories, last_error_messages <= G x categories,
    one folded gauge."""
    return groups * (6 + len(QUEUE_STATUSES)) + MAX_LAST_ERRORS + 2 * groups * len(CATEGORIES) + 1


def scrape(web: WebServer) -> dict[str, list[dict[str, Any]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{web.port}/metrics", timeout=30) as response:
        text = response.read().decode()
    return {f.name: [{**s.labels, "_value": s.value} for s in f.samples] for f in text_string_to_metric_families(text)}


def test_shadow_queues_and_changing_lasterror_codes_stay_bounded_through_a_real_scrape(
    sim_factory: SimFactory, service_factory: Callable[[Settings], Service]
) -> None:
    sim, scenario = sim_factory(hostile_org(0))
    queues = {"max_next_hop_domains": MAX_DOMAINS, "max_last_errors": MAX_LAST_ERRORS}
    service = service_factory(settings_for(sim, scenario, overrides={"collectors": only_collectors(queues=queues)}))
    web = WebServer(service.app, "127.0.0.1:0")
    web.start()
    # G <= per queue kind, max_next_hop_domains + the (delivery type, category) pairs folded: at most
    # all of them (hostile enums), one with Exchange's own values as here.
    bound = queue_series_bound(4 * (MAX_DOMAINS + (len(DELIVERY_TYPES) + 1) * 3))  # 4 kinds
    practical = queue_series_bound(1 + 1 + 2 * (MAX_DOMAINS + 1))  # submission, poison, delivery, shadow
    seen: set[tuple[str, ...]] = set()
    try:
        for epoch in range(3):
            if epoch:
                sim.set_scenario(Scenario.from_dict(hostile_org(epoch)))
            snaps = service.poll_all()
            assert all(s.ok for s in snaps), [(s.collector, s.target, s.message) for s in snaps]
            found = scrape(web)
            series = [
                (name, *sorted(f"{k}={v}" for k, v in labels.items() if k != "_value"))
                for name, samples in found.items()
                if name.startswith("mailflow_queue_")
                for labels in samples
            ]
            assert len(series) <= practical <= bound, (len(series), practical)
            seen.update(series)
            info = found["mailflow_queue_last_error_info"]
            assert sum(s["_value"] for s in info) == RETRYING + 2  # every retrying queue still counted
            codes = {s["enhanced_code"] for s in info}
            assert len(codes - {"other"}) <= MAX_LAST_ERRORS and "other" in codes
            shadows = {s["next_hop_domain"] for s in found["mailflow_queue_messages"] if s["queue_kind"] == "shadow"}
            assert len(shadows - {"other"}) == MAX_DOMAINS and "other" in shadows
            folded = {
                s["label"]: s["_value"]
                for s in found["mailflow_label_values_folded"]
                if (s["collector"], s["target"]) == ("queues", "EX01")
            }
            assert folded["next_hop_domain"] == SHADOWS - MAX_DOMAINS + RETRYING + 2 - MAX_DOMAINS
            assert folded["enhanced_code"] >= RETRYING - MAX_LAST_ERRORS
    finally:
        web.stop()
    # Churn: every poll replaced its codes, yet the series ever exposed grow by at most the bound per poll.
    assert len(seen) <= 3 * practical
