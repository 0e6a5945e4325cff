"""exporter.textformat writes exactly what prometheus_client's encoders write, for every family shape."""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    StateSetMetricFamily,
    SummaryMetricFamily,
    UnknownMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_latest_openmetrics
from prometheus_client.samples import Exemplar

from exporter.exchange.lasterror import parse_smtp_error
from exporter.exchange.queues import QueueInfo, QueueResult, aggregate, render_queues
from exporter.metrics import MailflowCollector, build_registry
from exporter.store import Snapshot, SnapshotStore
from exporter.textformat import encode, fast_encoder

ESCAPINGS = ("underscores", "allow-utf-8", "dots", "values")


class Families:
    """A collector yielding fixed families."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def registry_of(families: list[Metric]) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Families(families))  # type: ignore[arg-type]
    return registry


def every_shape() -> list[Metric]:
    gauge = GaugeMetricFamily("demo_gauge", 'Help with \\ back"slash\nand newline.', labels=["z", "a", "m"])
    gauge.add_metric(["plain", "x", "y"], 1)
    gauge.add_metric(["zero", "x", "y"], 0.0)  # before -0.0: equal as dict keys, written apart
    gauge.add_metric(["true", "x", "y"], True)
    gauge.add_metric(['quote " back \\ nl \n', "ünïcödé ✓", ""], -0.0)
    gauge.add_metric(["inf", "nan", "big"], float("inf"))
    gauge.add_metric(["nan", "b", "c"], float("nan"))
    gauge.add_metric(["big", "b", "c"], 1e22)
    gauge.add_metric(["small", "b", "c"], 1.5e-7)
    gauge.add_metric(["%s %d %%", "b", "c"], 12345678901234.0)
    unlabelled = GaugeMetricFamily("demo_unlabelled", "No labels.", value=3)
    negative_zero = GaugeMetricFamily("demo_negative_zero", "No labels, -0.0.", value=-0.0)
    zeros = GaugeMetricFamily("demo_zeros", "Every kind of zero.", labels=["kind"])
    for kind, zero in (("int", 0), ("false", False), ("negative", -0.0), ("positive", 0.0), ("negative2", -0.0)):
        zeros.add_metric([kind], zero)
    counter = CounterMetricFamily("demo_events", "Events.", labels=["kind"])
    counter.add_metric(["a"], 5)
    created = CounterMetricFamily("demo_created", "With a created time.", labels=["kind"])
    created.add_metric(["a"], 5, created=1700000000.0)
    exemplar = CounterMetricFamily("demo_exemplar", "With an exemplar.", labels=["kind"])
    exemplar.add_metric(["a"], 2)
    exemplar.samples[0] = exemplar.samples[0]._replace(exemplar=Exemplar({"trace_id": "abc"}, 1.0))
    stamped = GaugeMetricFamily("demo_stamped", "With a timestamp.", labels=["kind"])
    stamped.add_metric(["a"], 1, timestamp=1700000000.5)
    info = InfoMetricFamily("demo_build", "Build.")
    info.add_metric([], {"version": "1.2", "revision": "abc"})
    stateset = StateSetMetricFamily("demo_state", "State.", labels=["server"])
    stateset.add_metric(["EX01"], {"ok": True, "bad": False})
    histogram = HistogramMetricFamily("demo_latency_seconds", "Latency.", labels=["server"], unit="seconds")
    histogram.add_metric(["EX01"], [("0.5", 1), ("1.0", 3), ("+Inf", 4)], 2.5)
    gauge_histogram = GaugeHistogramMetricFamily("demo_sizes", "Sizes.", labels=["server"])
    gauge_histogram.add_metric(["EX01"], [("10.0", 1), ("+Inf", 2)], 2, 30)
    summary = SummaryMetricFamily("demo_summary", "Summary.", labels=["server"])
    summary.add_metric(["EX01"], 4, 10.0)
    unknown = UnknownMetricFamily("demo_unknown", "Unknown.", labels=["kind"])
    unknown.add_metric(["a"], 1)
    colon = GaugeMetricFamily("demo:colon", "A recording-rule style name.", labels=["kind"])
    colon.add_metric(["a"], 1)
    utf8_label = GaugeMetricFamily("demo_utf8_label", "A label name outside the legacy set.", labels=["é.name"])
    utf8_label.add_metric(["a"], 1)
    reserved = GaugeMetricFamily("demo_reserved", "A reserved label name.", labels=["__kind"])
    reserved.add_metric(["a"], 1)
    return [gauge, unlabelled, negative_zero, zeros, counter, created, exemplar, stamped, info, stateset,
            histogram, gauge_histogram, summary, unknown, colon, utf8_label, reserved]  # fmt: skip


@pytest.mark.parametrize("escaping", ESCAPINGS)
def test_every_family_shape_encodes_as_the_library_does(escaping: str) -> None:
    registry = registry_of(every_shape())
    assert encode(registry, False, escaping) == generate_latest(registry, escaping=escaping)
    assert encode(registry, True, escaping) == generate_latest_openmetrics(registry, escaping=escaping)


@settings(max_examples=200, deadline=None)
@given(
    names=st.lists(st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True), min_size=1, max_size=4, unique=True),
    rows=st.lists(st.tuples(st.lists(st.text(max_size=12), min_size=4, max_size=4), st.floats()), max_size=6),
)
def test_any_label_values_and_numbers_encode_as_the_library_does(names: list[str], rows: list) -> None:  # type: ignore[type-arg]
    gauge = GaugeMetricFamily("demo_any", "Any values.", labels=names)
    for values, number in rows:
        gauge.add_metric(values[: len(names)], number)
    registry = registry_of([gauge])
    for escaping in ("underscores", "allow-utf-8"):
        assert encode(registry, False, escaping) == generate_latest(registry, escaping=escaping)
        assert encode(registry, True, escaping) == generate_latest_openmetrics(registry, escaping=escaping)


def queue_results(servers: int) -> list[QueueResult]:
    now = datetime.now(UTC)
    results = []
    for n in range(servers):
        server = f"EX{n:02d}"
        queues = [
            QueueInfo(
                identity=f"{server}\\{100 + i}",
                server=server,
                kind="delivery",
                delivery_type="DnsConnectorDelivery",
                next_hop_domain=f"partner{i}.example",
                next_hop_category="External",
                status="Retry" if i % 3 == 0 else "Active",
                message_count=i,
                deferred_count=i // 2,
                incoming_rate=0.5,
                outgoing_rate=0.25,
                retry_count=2 if i % 3 == 0 else 0,
                next_retry_time=now + timedelta(minutes=5) if i % 3 == 0 else None,
                last_error=parse_smtp_error("451 4.4.0 DNS query failed" if i % 3 == 0 else None),
            )
            for i in range(8)
        ]
        results.append(aggregate(server, queues, max_domains=5))
    return results


class QueuesRender:
    name = "queues"

    def interval(self) -> float:
        return 60.0

    def targets(self) -> list[str]:
        return []

    def poll(self, target: str) -> QueueResult:
        raise NotImplementedError

    def render(self, results: dict[str, QueueResult]) -> Iterable[Metric]:
        return render_queues(results.values())


def test_the_exporter_registry_encodes_as_the_library_does() -> None:
    store = SnapshotStore()
    for result in queue_results(3):
        store.put(Snapshot("queues", result.server, time.time(), 0.2, 60.0, True, result))
    store.put(Snapshot("queues", "EX09", time.time(), 1.0, 60.0, False, None, reason="timeout", message="slow"))
    registry = build_registry(MailflowCollector(store, [QueuesRender()], 3.0), process_metrics=False)
    for escaping in ESCAPINGS:
        text = encode(registry, False, escaping)
        assert text == generate_latest(registry, escaping=escaping)
        assert encode(registry, True, escaping) == generate_latest_openmetrics(registry, escaping=escaping)
    assert b"mailflow_queue_messages{" in text and b"mailflow_collector_errors_total{" in text


@pytest.mark.parametrize(
    "accept",
    [
        "",
        "text/plain;version=0.0.4",
        "text/plain;version=1.0.0;escaping=allow-utf-8",
        "text/plain;version=1.0.0;escaping=dots",
        "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,text/plain;version=0.0.4;q=0.2",
        "application/openmetrics-text;version=1.0.0",
        "application/openmetrics-text",
        "application/openmetrics-text;version=2.0.0",
        "application/openmetrics-text;version=1.0.0;escaping=values",
    ],
)
def test_every_negotiated_format_encodes_as_the_library_does(accept: str) -> None:
    registry = registry_of(every_shape())
    library, _ = choose_encoder(accept)
    ours = fast_encoder(library) or library
    assert ours(registry) == library(registry)


def test_formats_it_does_not_produce_are_left_to_the_library() -> None:
    library, _ = choose_encoder("application/openmetrics-text;version=2.0.0")
    assert fast_encoder(library) is None
    library, _ = choose_encoder("text/plain;version=0.0.4")
    assert fast_encoder(library) is not None
