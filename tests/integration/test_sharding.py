"""Three replicas share one configuration against one simulated organisation: together they poll every
target exactly once, and summing their expositions counts nothing twice."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.service import Service
from exporter.simulator.scenario import build_scenario
from tests.integration.conftest import SimFactory, settings_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
COUNT = 3


def org() -> dict[str, Any]:
    scenario = build_scenario(7, 3, moving=False)
    return {
        "organisation": {"name": scenario.organisation.name, "domain": scenario.organisation.domain},
        "users": dict(scenario.users),
        "servers": [{"name": s.name, "tracking": None, "queues": [{"kind": "submission", "message_count": 1}]}
                    for s in scenario.servers],
    }  # fmt: skip


def test_replicas_cover_every_target_once_and_sums_do_not_double_count(
    sim_factory: SimFactory, service_factory: Any
) -> None:
    sim, scenario = sim_factory(org())
    overrides = {"collectors": {"tracking": {"enabled": False}}, "exchange": {"discovery": {"enabled": True}}}
    services: list[Service] = []
    for index in range(COUNT):
        shard = {"sharding": {"count": COUNT, "index": index}}
        services.append(service_factory(settings_for(sim, scenario, overrides={**overrides, **shard})))
    for service in services:
        service.poll_all()
        service.poll_all(only_new=True)  # discovered servers

    polled: Counter[tuple[str, str]] = Counter()
    for service in services:
        for collector in service.collectors:
            for target in collector.targets():
                if getattr(collector, "reports", True):
                    polled[(collector.name, target)] += 1
    servers = {s.name for s in scenario.servers}
    for name in ("queues", "components", "certificates", "receive_connectors"):
        assert {t for (c, t) in polled if c == name} == servers, name  # full coverage
    assert all(n == 1 for n in polled.values()), [k for k, n in polled.items() if n > 1]  # no overlap
    assert sum(1 for (c, _t) in polled if c == "send_connectors") == 1  # org-wide: one replica reports

    series: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
    for service in services:
        text = generate_latest(service.registry).decode()
        for family in text_string_to_metric_families(text):
            if not family.name.startswith("mailflow_"):
                continue
            for sample in family.samples:
                series[(sample.name, tuple(sorted(sample.labels.items())))] += 1
    per_replica = ("mailflow_build_info", "mailflow_shard_")  # one per replica by design
    duplicated = [k for k, n in series.items() if n > 1 and not k[0].startswith(per_replica)]
    assert not duplicated, duplicated[:5]  # `sum by (...)` over the replicas counts each series once
    infos = [
        s.labels
        for svc in services
        for f in text_string_to_metric_families(generate_latest(svc.registry).decode())
        if f.name == "mailflow_shard_info"
        for s in f.samples
    ]
    assert sorted(i["index"] for i in infos) == ["0", "1", "2"] and {i["count"] for i in infos} == {"3"}
