"""docs/sizing.md's series per object hold: scraped from a real exporter over the simulator (and NSD and
a DemoSMTP endpoint on loopback) at two sizes, by bench/sizing.py's own measurement."""

from __future__ import annotations

import pytest

from bench.sizing import DOC, Cost, dns_costs, exchange_costs, stated
from tests.conftest import NsdFactory

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def check(costs: list[Cost]) -> None:
    documented = stated(DOC.read_text())
    assert costs
    for cost in costs:
        key = (cost.obj, cost.collector)
        assert key in documented, f"docs/sizing.md states no series per {cost.obj} for {cost.collector}: {cost}"
        assert cost.series <= documented[key], (
            f"{cost.collector} adds {cost.series:g} series per {cost.obj}, docs/sizing.md states "
            f"{documented[key]:g} (families: {', '.join(cost.families)}); re-run bench/sizing.py --write "
            "if the growth is intended"
        )


def test_exchange_collectors_stay_within_the_documented_series_per_object() -> None:
    check(exchange_costs())


def test_dns_collectors_stay_within_the_documented_series_per_object(nsd_factory: NsdFactory) -> None:
    """(``nsd_factory`` only requires NSD as every DNS test does; bench.sizing starts its own.)"""
    check(dns_costs())
