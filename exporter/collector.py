"""The collector contract: poll a target into an immutable result, render results into metric families.

A collector never talks to Prometheus and the scrape path never talks to Exchange: ``poll`` runs on
the scheduler and its result lands in the SnapshotStore; ``render`` runs on every scrape over the
fresh results of all targets, so each metric family is emitted once with every target's samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from prometheus_client.metrics_core import Metric


class Collector(Protocol):
    """One concern (queues, tracking, ...). ``name`` is the ``collector`` label value."""

    name: str

    def interval(self) -> float:
        """Seconds between polls of one target."""
        ...

    def targets(self) -> list[str]:
        """The targets to poll now (may change, e.g. after discovery)."""
        ...

    def poll(self, target: str) -> Any:
        """Poll one target; return an immutable result or raise CollectorError."""
        ...

    def render(self, results: Mapping[str, Any]) -> Iterable[Metric]:
        """Metric families for the fresh results, keyed by target."""
        ...
