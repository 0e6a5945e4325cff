"""The prometheus_client collector that renders the SnapshotStore on every scrape.

A scrape reads snapshots only: it never waits on Exchange or DNS. A collector whose render fails
is logged and skipped; the rest of the scrape is still served.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.buildinfo import build_info
from exporter.cardinality import fold_samples
from exporter.collector import Collector
from exporter.exchange.server_clock import ClockReading
from exporter.store import SnapshotStore

log = logging.getLogger(__name__)


#: A server clock reading older than this is not shown (the server has not answered since).
CLOCK_READING_FRESH_SECONDS = 900.0


class MailflowCollector:
    """Renders self metrics and every collector's fresh results."""

    def __init__(
        self,
        store: SnapshotStore,
        collectors: Sequence[Collector],
        stale_after_intervals: float,
        server_clocks: Callable[[], Mapping[str, ClockReading]] | None = None,
        shells: Callable[[], Mapping[str, tuple[int, int]]] | None = None,
    ) -> None:
        self._store = store
        self._collectors = list(collectors)
        self._stale_after = stale_after_intervals
        self._server_clocks = server_clocks
        self._shells = shells  # per server: (shells the exporter could not close, of which closed later)

    def collect(self) -> Iterable[Metric]:
        yield from self._self_metrics()
        folded = GaugeMetricFamily(
            "mailflow_label_values_folded",
            'Distinct values of this label reported as "other" in the latest result: a cardinality cap or an '
            'unknown enum value is in effect (target "all": a cap on the collector\'s targets). Only non-zero '
            "counts are exposed.",
            labels=["collector", "target", "label"],
        )
        for collector in self._collectors:
            try:
                results = self._store.fresh_results(collector.name, self._stale_after)
                families = list(collector.render(results))
                if getattr(collector, "reports", True) is not False:
                    for target, label, count in self._folds(collector, results):
                        if count:  # only folds in effect: absent means nothing folded (docs/metrics.md)
                            folded.add_metric([collector.name, target, label], count)
            except Exception:
                log.exception("render failed collector=%s", collector.name)
                continue
            yield from families
        yield folded

    @staticmethod
    def _folds(collector: Collector, results: Any) -> list[tuple[str, str, int]]:
        """What the results folded, plus a cap on the collector's own target list (``folded_targets``)."""
        out = fold_samples(results)
        targets = getattr(collector, "folded_targets", None)
        if callable(targets):
            out.extend(("all", label, count) for label, count in sorted(targets().items()))
        return out

    def _self_metrics(self) -> Iterable[Metric]:
        build = InfoMetricFamily("mailflow_build", "mailflow-exporter build information.")
        info = build_info()
        build.add_metric(
            [],
            {"version": info.version, "revision": info.revision, "branch": info.branch, "pythonversion": info.python},
        )
        yield build
        labels = ["collector", "target"]
        up = GaugeMetricFamily(
            "mailflow_collector_up",
            "1 if the last poll of this collector and target succeeded and is not stale, else 0.",
            labels=labels,
        )
        duration = GaugeMetricFamily(
            "mailflow_collector_duration_seconds", "How long the last poll took, in seconds.", labels=labels
        )
        last_success = GaugeMetricFamily(
            "mailflow_collector_last_success_timestamp_seconds",
            "When the last successful poll finished, unix time.",
            labels=labels,
        )
        now = self._store.now()
        # A shard that polls a collector only for its answers (sharding.EVERYWHERE) leaves its
        # health to the one replica that reports it, so sums across replicas count it once.
        silent = {c.name for c in self._collectors if getattr(c, "reports", True) is False}
        for (name, target), state in sorted(self._store.states().items()):
            if name in silent:
                continue
            last = state.last
            fresh = last.age(now) <= last.interval * self._stale_after
            up.add_metric([name, target], 1.0 if last.ok and fresh else 0.0)
            duration.add_metric([name, target], last.duration)
            if state.last_success is not None:
                last_success.add_metric([name, target], state.last_success.finished)
        errors = CounterMetricFamily(
            "mailflow_collector_errors",
            "Failed polls by reason (timeout, connection, auth, http_error, wsman_fault, session_limit, "
            "permission, cmdlet_error, parse, too_large, tls, protocol, config, other).",
            labels=["collector", "target", "reason"],
        )
        for (name, target, reason), count in sorted(self._store.errors().items()):
            if name not in silent:
                errors.add_metric([name, target, reason], count)
        yield from (up, duration, last_success, errors)
        yield self._clock_skews(now)
        yield from self._abandoned_shells()

    def _abandoned_shells(self) -> Iterable[Metric]:
        abandoned = CounterMetricFamily(
            "mailflow_exchange_shells_abandoned",
            "Remote PowerShell shells this exporter process could not close (the close failed, or an open was "
            "given up after its Create was sent); each counts against the account's 18 until closed later.",
            labels=["server"],
        )
        reclaimed = CounterMetricFamily(
            "mailflow_exchange_shells_reclaimed",
            "Abandoned shells the exporter closed later (deleted by ShellId once the server answered again).",
            labels=["server"],
        )
        counts = self._shells() if self._shells is not None else {}
        for server, (lost, closed) in sorted(counts.items()):
            abandoned.add_metric([server], lost)
            reclaimed.add_metric([server], closed)
        yield from (abandoned, reclaimed)

    def _clock_skews(self, now: float) -> Metric:
        skew = GaugeMetricFamily(
            "mailflow_server_clock_skew_seconds",
            "The Exchange server's clock minus the exporter's, from the HTTP Date header of its remote PowerShell "
            "answers (any collector's, failed logons included); 1-second resolution, biased low by up to about a "
            "second. Kerberos fails beyond 300 s.",
            labels=["server"],
        )
        readings = self._server_clocks() if self._server_clocks is not None else {}
        for server, reading in sorted(readings.items()):
            if now - reading.at <= CLOCK_READING_FRESH_SECONDS:
                skew.add_metric([server], round(reading.skew, 3))
        return skew


def build_registry(collector: MailflowCollector, process_metrics: bool = True) -> CollectorRegistry:
    """A private registry: our collector plus the standard process/platform/GC collectors."""
    # Our collectors describe nothing up front; without support for that, a ``name[]`` filtered
    # scrape would leave every mailflow_ family out.
    registry = CollectorRegistry(auto_describe=False, support_collectors_without_names=True)
    registry.register(collector)
    if process_metrics:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry
