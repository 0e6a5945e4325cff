"""Sharding: several exporter replicas share one configuration; each polls a stable subset of targets.

Assignment is rendezvous (highest-random-weight) hashing on the target name: every replica computes
the same owner for every target without talking to the others, and when the replica count changes
from n to n+1 only about 1/(n+1) of the targets move (those the new replica wins). The key is the
target alone, so every collector of one Exchange server lands on the same replica (one session per
server). Discovery and the organisation-wide collectors (accepted domains, send connectors) run on
every replica, because each needs their answers to pick its share (the server list; the accepted
domains and send-connector IPs the DNS checks use); they are cheap, and only the replica that owns
``organization`` renders their metrics, so ``sum`` across replicas never counts them twice.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.errors import ConfigError

ORG_KEY = "organization"
#: Polled on every replica (their answers decide the others' targets), rendered by one.
EVERYWHERE = frozenset({"discovery", "accepted_domains", "send_connectors"})
_ORDINAL = re.compile(r"-(\d+)$")


def _weight(key: str, index: int) -> int:
    digest = hashlib.blake2b(f"{index}\x00{key.lower()}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True)
class Shard:
    """This replica's place: ``index`` of ``count`` (0-based)."""

    index: int = 0
    count: int = 1

    def owner(self, key: str) -> int:
        """The replica that owns ``key``."""
        if self.count <= 1:
            return 0
        return max(range(self.count), key=lambda i: _weight(key, i))

    def owns(self, key: str) -> bool:
        return self.owner(key) == self.index

    @property
    def owns_organization(self) -> bool:
        return self.owns(ORG_KEY)


def shard_from(index: int | None, count: int, hostname: str | None = None) -> Shard:
    """The shard from explicit settings, or, with ``index`` unset and several replicas, from the pod
    ordinal at the end of the host name (a StatefulSet's ``mailflow-exporter-2`` is index 2)."""
    if count < 1:
        raise ConfigError(f"sharding.count must be at least 1, not {count}")
    if index is None:
        if count == 1:
            return Shard(0, 1)
        host = hostname if hostname is not None else os.environ.get("HOSTNAME", "")
        match = _ORDINAL.search(host)
        if not match:
            raise ConfigError(
                f"sharding.count is {count} but sharding.index is not set and the host name {host!r} "
                "has no StatefulSet ordinal (-N): set sharding.index or --shard-index"
            )
        index = int(match.group(1))
    if not 0 <= index < count:
        raise ConfigError(f"sharding.index {index} is outside 0..{count - 1}")
    return Shard(index, count)


class ShardedCollector:
    """A collector restricted to the targets this shard owns (everything else is delegated)."""

    def __init__(self, inner: Any, shard: Shard) -> None:
        self._inner = inner
        self._shard = shard
        self.name: str = inner.name
        self._owned: tuple[Sequence[str], tuple[str, ...]] | None = None  # (inner targets, ours)

    def __getattr__(self, attr: str) -> Any:  # interval, poll, render, executor, close...
        return getattr(self._inner, attr)

    def targets(self) -> Sequence[str]:
        """The inner collector's targets this shard owns; the same tuple while the inner collector hands
        out the same sequence (hashing every target after every poll would be quadratic per cycle)."""
        inner = self._inner.targets()
        if self.name in EVERYWHERE:
            return inner
        owned = self._owned
        if owned is None or owned[0] is not inner:
            owned = (inner, tuple(t for t in inner if self._shard.owns(t)))
            self._owned = owned
        return owned[1]

    @property
    def reports(self) -> bool:
        """False when this replica polls the collector only for its answers (see EVERYWHERE)."""
        return not (self.name in EVERYWHERE and not self._shard.owns_organization)

    def folded_targets(self) -> dict[str, int]:
        """A cap on the collector's whole target list (every replica sees the same list): reported by
        the one replica that reports the organisation, so sums across replicas count it once."""
        inner = getattr(self._inner, "folded_targets", None)
        return dict(inner()) if callable(inner) and self._shard.owns_organization else {}

    def render(self, results: Mapping[str, Any]) -> Iterable[Metric]:
        if not self.reports:
            return []  # polled here for its answers; one replica reports it
        return list(self._inner.render(results))


def shard_collectors(collectors: Iterable[Any], shard: Shard) -> list[Any]:
    """Wrap every collector (a single replica gets them unwrapped)."""
    if shard.count <= 1:
        return list(collectors)
    return [ShardedCollector(c, shard) for c in collectors]


class ShardMetrics:
    """``mailflow_shard_info`` and how many targets of each collector this replica owns."""

    def __init__(self, shard: Shard, collectors: Iterable[Any]) -> None:
        self._shard = shard
        self._collectors = list(collectors)

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily(
            "mailflow_shard_info", "This replica's shard: index of count (always 1).", labels=["index", "count"]
        )
        info.add_metric([str(self._shard.index), str(self._shard.count)], 1)
        owned = GaugeMetricFamily(
            "mailflow_shard_targets", "Targets of each collector this replica polls.", labels=["collector"]
        )
        for c in self._collectors:
            try:
                owned.add_metric([c.name], len(c.targets()))
            except Exception:  # listing targets must not fail a scrape
                continue
        return [info, owned]
