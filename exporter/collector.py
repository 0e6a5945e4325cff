"""The collector contract: poll a target into an immutable result, render results into metric families.

A collector never talks to Prometheus and the scrape path never talks to Exchange: ``poll`` runs on
the scheduler and its result lands in the SnapshotStore; ``render`` runs on every scrape over the
fresh results of all targets, so each metric family is emitted once with every target's samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client.metrics_core import Metric


class Collector(Protocol):
    """One concern (queues, tracking, ...). ``name`` is the ``collector`` label value.

    Optional attribute ``targets_from``: the names of the collectors whose results decide this one's
    targets (the DNS domain checks take theirs from ``accepted_domains``). The service reconciles soon
    after such a collector's first successful poll of a target, so derived targets need not wait for the
    periodic reconcile."""

    name: str

    def interval(self) -> float:
        """Seconds between polls of one target."""
        ...

    def targets(self) -> Sequence[str]:
        """The targets to poll now (may change, e.g. after discovery). Asked after every poll: a
        collector with many targets returns the same immutable sequence while they are unchanged, so
        callers can index it once (see ``TargetIndex``)."""
        ...

    def poll(self, target: str) -> Any:
        """Poll one target; return an immutable result or raise CollectorError."""
        ...

    def render(self, results: Mapping[str, Any]) -> Iterable[Metric]:
        """Metric families for the fresh results, keyed by target."""
        ...


class TargetIndex:
    """Whether a target is still one of the collector's targets, in O(1) while ``targets()`` hands out the same
    object: the set is rebuilt only when the collector returns a new sequence. Thread-safe (a race
    rebuilds twice, never answers from a half-built set)."""

    def __init__(self) -> None:
        self._sets: dict[str, tuple[Sequence[str], frozenset[str]]] = {}
        self.rebuilds = 0

    def wants(self, collector: Collector, target: str) -> bool:
        """Whether ``target`` is among ``collector.targets()`` now."""
        targets = collector.targets()
        known = self._sets.get(collector.name)
        if known is None or known[0] is not targets:
            known = (targets, frozenset(targets))
            self._sets[collector.name] = known
            self.rebuilds += 1
        return target in known[1]
