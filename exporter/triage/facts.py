"""The latest poll results, as the triage rules read them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from exporter.store import SnapshotStore


@dataclass(frozen=True)
class Facts:
    """Fresh successful results per collector and target, and the polls that failed."""

    results: Mapping[str, Mapping[str, Any]]
    failures: Mapping[str, Mapping[str, str]]  # collector -> target -> "reason: message"
    now: float

    def of(self, collector: str) -> Mapping[str, Any]:
        """``{target: result}`` of one collector's fresh successful polls."""
        return self.results.get(collector, {})

    def all(self, collector: str) -> list[Any]:
        return list(self.of(collector).values())

    def failed(self, collector: str) -> Mapping[str, str]:
        return self.failures.get(collector, {})


def facts_from_store(store: SnapshotStore, collectors: Iterable[str], stale_after_intervals: float) -> Facts:
    """Build the facts from the snapshot store (the same data the metrics are rendered from)."""
    names = set(collectors)
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        fresh = store.fresh_results(name, stale_after_intervals)
        if fresh:
            results[name] = dict(fresh)
    failures: dict[str, dict[str, str]] = {}
    for (name, target), state in store.states().items():
        if name in names and state.last is not None and not state.last.ok:
            failures.setdefault(name, {})[target] = f"{state.last.reason}: {state.last.message}"[:300]
    return Facts(results, failures, store.now())
