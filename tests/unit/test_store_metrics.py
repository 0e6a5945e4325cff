"""SnapshotStore and the scrape-time renderer: staleness, failures, self metrics, isolation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.metrics import MailflowCollector, build_registry
from exporter.store import Snapshot, SnapshotStore


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ValueCollector:
    """A collector whose results are plain numbers, rendered as one gauge per target."""

    def __init__(self, name: str = "fake", broken_render: bool = False) -> None:
        self.name = name
        self.broken_render = broken_render

    def interval(self) -> float:
        return 60.0

    def targets(self) -> list[str]:
        return ["EX01", "EX02"]

    def poll(self, target: str) -> Any:
        raise NotImplementedError

    def render(self, results: Mapping[str, Any]) -> Iterable[Metric]:
        if self.broken_render:
            raise RuntimeError("render bug")
        family = GaugeMetricFamily(f"mailflow_{self.name}_value", "test value", labels=["server"])
        for target, value in sorted(results.items()):
            family.add_metric([target], value)
        return [family]


def snap(target: str, finished: float, ok: bool = True, result: Any = 1.0, reason: str = "") -> Snapshot:
    return Snapshot("fake", target, finished, 0.5, 60.0, ok, result if ok else None, reason, "boom" if not ok else "")


def scrape(store: SnapshotStore, *collectors: ValueCollector) -> Any:
    registry = build_registry(MailflowCollector(store, list(collectors), 3.0), process_metrics=False)
    return registry


def test_success_then_failure_keeps_last_good_result_until_stale() -> None:
    clock = Clock()
    store = SnapshotStore(clock)
    store.put(snap("EX01", clock.now, result=7.0))
    clock.now += 60
    store.put(snap("EX01", clock.now, ok=False, reason="timeout"))
    reg = scrape(store, ValueCollector())
    assert reg.get_sample_value("mailflow_collector_up", {"collector": "fake", "target": "EX01"}) == 0.0
    assert reg.get_sample_value("mailflow_fake_value", {"server": "EX01"}) == 7.0
    assert (
        reg.get_sample_value(
            "mailflow_collector_errors_total", {"collector": "fake", "target": "EX01", "reason": "timeout"}
        )
        == 1.0
    )
    assert (
        reg.get_sample_value(
            "mailflow_collector_last_success_timestamp_seconds", {"collector": "fake", "target": "EX01"}
        )
        == clock.now - 60
    )
    clock.now += 3 * 60  # the good result is now 4 intervals old: dropped
    assert reg.get_sample_value("mailflow_fake_value", {"server": "EX01"}) is None


def test_stale_success_reports_down() -> None:
    clock = Clock()
    store = SnapshotStore(clock)
    store.put(snap("EX01", clock.now))
    reg = scrape(store, ValueCollector())
    assert reg.get_sample_value("mailflow_collector_up", {"collector": "fake", "target": "EX01"}) == 1.0
    clock.now += 181
    assert reg.get_sample_value("mailflow_collector_up", {"collector": "fake", "target": "EX01"}) == 0.0


def test_one_target_failing_leaves_the_other_served() -> None:
    clock = Clock()
    store = SnapshotStore(clock)
    store.put(snap("EX01", clock.now, ok=False, reason="connection"))
    store.put(snap("EX02", clock.now, result=3.0))
    reg = scrape(store, ValueCollector())
    assert reg.get_sample_value("mailflow_collector_up", {"collector": "fake", "target": "EX02"}) == 1.0
    assert reg.get_sample_value("mailflow_fake_value", {"server": "EX02"}) == 3.0
    assert reg.get_sample_value("mailflow_fake_value", {"server": "EX01"}) is None


def test_a_broken_renderer_does_not_break_the_scrape() -> None:
    clock = Clock()
    store = SnapshotStore(clock)
    store.put(snap("EX01", clock.now, result=2.0))
    reg = scrape(store, ValueCollector("broken", broken_render=True), ValueCollector())
    text = generate_latest(reg).decode()
    assert 'mailflow_fake_value{server="EX01"} 2.0' in text
    assert "mailflow_build_info" in text


def test_errors_counter_is_monotonic_per_reason() -> None:
    store = SnapshotStore(Clock())
    for reason in ("timeout", "timeout", "auth"):
        store.put(snap("EX01", 1.0, ok=False, reason=reason))
    assert store.errors() == {("fake", "EX01", "timeout"): 2, ("fake", "EX01", "auth"): 1}


def test_forget_removes_target() -> None:
    store = SnapshotStore(Clock())
    store.put(snap("EX01", 1.0))
    store.forget("fake", "EX01")
    assert store.states() == {}


class Folded(float):
    """A result that reports what it folded, as the collectors' results do."""

    folded = {"connector": 7, "transport_role": 0}


class FoldingCollector(ValueCollector):
    """Results with ``folded``, and a cap on its own targets (``folded_targets``)."""

    def render(self, results: Mapping[str, Any]) -> Iterable[Metric]:
        return super().render({target: float(value) for target, value in results.items()})

    def folded_targets(self) -> dict[str, int]:
        return {"host": 3}


def test_folded_label_values_are_one_family_across_collectors() -> None:
    clock = Clock()
    store = SnapshotStore(clock)
    store.put(snap("EX01", clock.now, result=Folded(2.0)))
    reg = scrape(store, FoldingCollector())

    def folded(target: str, label: str) -> float | None:
        return reg.get_sample_value(
            "mailflow_label_values_folded", {"collector": "fake", "target": target, "label": label}
        )

    assert folded("EX01", "connector") == 7
    assert folded("EX01", "transport_role") is None  # only folds in effect are exposed
    assert folded("all", "host") == 3
    assert reg.get_sample_value("mailflow_fake_value", {"server": "EX01"}) == 2.0
    clock.now += 4 * 60  # stale: the result, and what it folded, are no longer served
    assert folded("EX01", "connector") is None
    text = generate_latest(reg).decode()
    assert text.count("# TYPE mailflow_label_values_folded gauge") == 1


def test_a_target_cap_is_reported_by_one_replica() -> None:
    from exporter.sharding import Shard, ShardedCollector

    reported = []
    for index in range(3):
        reg = scrape(SnapshotStore(Clock()), ShardedCollector(FoldingCollector(), Shard(index, 3)))  # type: ignore[arg-type]
        value = reg.get_sample_value(
            "mailflow_label_values_folded", {"collector": "fake", "target": "all", "label": "host"}
        )
        reported.append(value)
    assert sorted(reported, key=str) == [3.0, None, None]
