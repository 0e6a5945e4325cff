"""The latest poll results, as the triage rules read them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from exporter.store import SnapshotStore


@dataclass(frozen=True)
class Poll:
    """The last poll of one collector and target: whether it succeeded, and if not why, in plain words."""

    collector: str
    target: str
    ok: bool
    reason: str = ""  # the bounded reason label ("" when ok); "stale": no recent poll at all
    message: str = ""  # plain language, already redacted
    endpoint: str = ""  # the Exchange endpoint a failed poll went through
    server: str = ""  # the server that endpoint belongs to
    finished: float = 0.0

    def why(self) -> str:
        """The reason with the endpoint: "connection refused at https://ex02:443/PowerShell"."""
        return f"{self.message} at {self.endpoint}" if self.endpoint else self.message


@dataclass(frozen=True)
class Facts:
    """Fresh successful results per collector and target, and the polls that failed or have not run."""

    results: Mapping[str, Mapping[str, Any]]
    failures: Mapping[str, Mapping[str, str]]  # collector -> target -> "reason: message"
    now: float
    polls: Mapping[tuple[str, str], Poll] = field(default_factory=dict)  # the last poll of each (collector, target)
    pending: tuple[tuple[str, str], ...] = ()  # (collector, target) whose first poll has not finished
    timeout: float | None = None  # check's --timeout, when it expired before every poll finished

    def of(self, collector: str) -> Mapping[str, Any]:
        """``{target: result}`` of one collector's fresh successful polls."""
        return self.results.get(collector, {})

    def all(self, collector: str) -> list[Any]:
        return list(self.of(collector).values())

    def failed(self, collector: str) -> Mapping[str, str]:
        return self.failures.get(collector, {})

    def failed_polls(self) -> list[Poll]:
        """Every (collector, target) whose last poll failed or is stale, sorted."""
        return [p for _, p in sorted(self.polls.items()) if not p.ok]


def facts_from_store(
    store: SnapshotStore,
    collectors: Iterable[str],
    stale_after_intervals: float,
    pending: Iterable[tuple[str, str]] = (),
    timeout: float | None = None,
) -> Facts:
    """Build the facts from the snapshot store (the same data the metrics are rendered from).

    ``pending``: the polls the caller still waits for (never finished); ``timeout``: check's --timeout
    when it expired with polls pending. A target whose last poll succeeded but too long ago to be fresh
    (the scheduler fell behind) counts as failed with reason ``stale``: it is a blind spot too."""
    names = set(collectors)
    now = store.now()
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        fresh = store.fresh_results(name, stale_after_intervals)
        if fresh:
            results[name] = dict(fresh)
    failures: dict[str, dict[str, str]] = {}
    polls: dict[tuple[str, str], Poll] = {}
    for (name, target), state in sorted(store.states().items()):
        last = state.last
        if name not in names or last is None:
            continue
        if last.ok and target not in results.get(name, {}):
            age = last.age(now)
            poll = Poll(name, target, False, "stale", f"no poll for {age:.0f}s (every {last.interval:g}s expected)",
                        finished=last.finished)  # fmt: skip
        else:
            poll = Poll(name, target, last.ok, last.reason, last.message, last.endpoint, last.server, last.finished)
        polls[(name, target)] = poll
        if not poll.ok:
            failures.setdefault(name, {})[target] = f"{poll.reason}: {poll.message}"[:300]
    wanted = tuple(sorted((c, t) for c, t in set(pending) if c in names))
    return Facts(results, failures, now, polls, wanted, timeout if wanted else None)
