"""SharedRenderApp: concurrent scrapes share one render, and no scrape is served data older than itself."""

from __future__ import annotations

import gc
import gzip
import threading
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from exporter import __version__
from exporter.buildinfo import build_info
from exporter.exposition import GZIP_LEVEL, SharedRenderApp
from exporter.metrics import MailflowCollector, build_registry
from exporter.store import SnapshotStore


class Source:
    """A collector whose value, generation and render duration the test controls."""

    def __init__(self) -> None:
        self.value = 1.0
        self.generation = 0
        self.collects = 0
        self.delay = 0.0
        self.started = threading.Event()

    def collect(self) -> Iterable[Metric]:
        self.collects += 1
        self.started.set()
        time.sleep(self.delay)
        gauge = GaugeMetricFamily("demo_value", "A value.", labels=["name"])
        gauge.add_metric(["a"], self.value)
        yield gauge
        other = GaugeMetricFamily("demo_other", "Another value.")
        other.add_metric([], 7.0)
        yield other


def app_for(source: Source, **kwargs: Any) -> SharedRenderApp:
    registry = CollectorRegistry(auto_describe=False, support_collectors_without_names=True)
    registry.register(source)  # type: ignore[arg-type]
    return SharedRenderApp(registry, lambda: source.generation, **kwargs)


def get(app: SharedRenderApp, accept: str = "", encoding: str = "", query: str = "", method: str = "GET") -> Any:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": "/metrics",
        "QUERY_STRING": query,
        "HTTP_ACCEPT": accept,
        "HTTP_ACCEPT_ENCODING": encoding,
    }
    body = b"".join(app(environ, start_response))
    if seen["headers"].get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    return seen["status"], seen["headers"], body.decode()


def test_unchanged_store_is_served_from_one_render() -> None:
    source = Source()
    app = app_for(source, max_age=60)
    first = get(app)
    assert first[0] == "200 OK" and 'demo_value{name="a"} 1.0' in first[2]
    assert get(app) == first
    assert source.collects == 1


def test_a_store_change_is_seen_by_the_next_scrape() -> None:
    source = Source()
    app = app_for(source, max_age=60)
    get(app)
    source.value, source.generation = 2.0, 1
    assert 'demo_value{name="a"} 2.0' in get(app)[2]
    assert source.collects == 2


def test_renders_older_than_max_age_are_not_reused() -> None:
    now = [100.0]
    source = Source()
    app = app_for(source, max_age=1.0, clock=lambda: now[0])
    get(app)
    now[0] += 0.5
    get(app)
    assert source.collects == 1
    now[0] += 1.0
    source.value = 3.0  # e.g. process metrics move without a store change
    assert 'demo_value{name="a"} 3.0' in get(app)[2]
    assert source.collects == 2


def test_concurrent_scrapes_share_a_render_that_began_after_they_arrived() -> None:
    source = Source()
    source.delay = 0.3
    app = app_for(source, max_age=60)
    results: list[Any] = []

    def scrape() -> None:
        results.append(get(app, encoding="gzip"))

    first = threading.Thread(target=scrape)
    first.start()
    assert source.started.wait(5)
    # These arrive while the first render runs, after the store changed: the first render is
    # too old for them, so exactly one more render serves all of them.
    source.value, source.generation = 5.0, 1
    waiting = [threading.Thread(target=scrape) for _ in range(10)]
    for thread in waiting:
        thread.start()
    for thread in [first, *waiting]:
        thread.join(10)
    assert len(results) == 11
    assert source.collects == 2
    later = [body for _, _, body in results[1:]]
    assert all('demo_value{name="a"} 5.0' in body for body in later)
    assert all(body.endswith("demo_other 7.0\n") for body in later)


def test_formats_and_encodings_are_cached_apart() -> None:
    source = Source()
    app = app_for(source, max_age=60)
    plain = get(app)
    zipped = get(app, encoding="gzip, deflate")
    openmetrics = get(app, accept="application/openmetrics-text; version=1.0.0")
    assert "Content-Encoding" not in plain[1] and zipped[1]["Content-Encoding"] == "gzip"
    assert plain[2] == zipped[2]
    assert openmetrics[1]["Content-Type"].startswith("application/openmetrics-text")
    assert openmetrics[2].endswith("# EOF\n")
    assert source.collects == 3
    get(app, encoding="gzip")
    assert source.collects == 3


def test_name_filters_and_other_methods_bypass_the_cache() -> None:
    source = Source()
    app = app_for(source, max_age=60)
    get(app)
    status, _, body = get(app, query="name[]=demo_other")
    assert status == "200 OK" and "demo_other 7.0" in body and "demo_value" not in body
    assert get(app, method="POST")[0].startswith("405")
    assert app.renders == 1


def test_the_exporter_registry_answers_name_filters() -> None:
    store = SnapshotStore()
    registry = build_registry(MailflowCollector(store, [], stale_after_intervals=3))
    app = SharedRenderApp(registry, store.generation)
    status, _, body = get(app, query="name[]=mailflow_build_info")
    info = build_info()
    assert status == "200 OK"
    assert [line for line in body.splitlines() if not line.startswith("#")] == [
        f'mailflow_build_info{{branch="{info.branch}",pythonversion="{info.python}",revision="{info.revision}",'
        f'version="{__version__}"}} 1.0'
    ]


def test_a_coarse_clock_never_serves_a_render_older_than_the_scrape() -> None:
    """Freshness is decided by render order, not clock readings (Windows' monotonic clock ticks 15.6 ms)."""
    source = Source()
    app = app_for(source, max_age=60, clock=lambda: 5.0)
    get(app)
    source.value, source.generation = 9.0, 1  # a poll lands within the same clock tick
    assert 'demo_value{name="a"} 9.0' in get(app)[2]
    assert source.collects == 2


def test_clients_cannot_grow_the_cache_with_accept_headers() -> None:
    source = Source()
    app = app_for(source, max_age=60)
    for minor in range(40):
        status, _, body = get(app, accept=f"application/openmetrics-text; version=1.0.{minor}")
        assert status == "200 OK" and body.endswith("# EOF\n")
    assert len(app._locks) <= 8 and len(app._cache) <= 8
    assert source.collects == 40  # beyond the cached variants each request renders, as without the cache


PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)


def test_answers_are_the_library_encoders_bytes_in_every_format_and_encoding() -> None:
    """The app encodes with exporter.textformat: each negotiated format is what prometheus_client would
    send for the same registry, and its gzip answer decodes to the identity answer."""
    source = Source()
    app = app_for(source, max_age=60)
    registry = app._registry
    formats = (
        "",
        "text/plain;version=1.0.0;escaping=allow-utf-8",
        PROMETHEUS_ACCEPT,
        "text/plain;version=1.0.0;escaping=dots",
    )
    for accept in formats:
        library, content_type = choose_encoder(accept)
        plain = get(app, accept=accept)
        zipped = get(app, accept=accept, encoding="gzip")
        assert plain[1]["Content-Type"] == zipped[1]["Content-Type"] == content_type
        assert zipped[1]["Content-Encoding"] == "gzip"
        assert plain[2].encode() == zipped[2].encode() == library(registry)
    assert choose_encoder(PROMETHEUS_ACCEPT)[1].startswith("application/openmetrics-text; version=1.0.0")


def test_gzip_runs_at_the_chosen_level() -> None:
    source = Source()
    app = app_for(source, max_age=60)
    seen: dict[str, Any] = {}
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": "", "HTTP_ACCEPT_ENCODING": "gzip"}
    body = b"".join(app(environ, lambda status, headers: seen.update(headers=dict(headers))))
    # RFC 1952: XFL (byte 8) is 4 for the fastest levels, 2 for the best, 0 otherwise
    assert body[8] == {1: 4, 9: 2}.get(GZIP_LEVEL, 0)
    plain = gzip.decompress(body)
    assert body[10:] == gzip.compress(plain, GZIP_LEVEL)[10:]  # the deflate stream and trailer, past the header


class GcWitness(Source):
    """Records whether the cyclic garbage collector was enabled while it was collected."""

    def __init__(self) -> None:
        super().__init__()
        self.gc_enabled: list[bool] = []

    def collect(self) -> Iterable[Metric]:
        self.gc_enabled.append(gc.isenabled())
        return super().collect()


def test_the_garbage_collector_is_paused_during_a_render_only() -> None:
    source = GcWitness()
    app = app_for(source, max_age=0)
    assert gc.isenabled()
    get(app)
    assert source.gc_enabled == [False] and gc.isenabled()
    gc.disable()  # disabled by someone else: a render leaves it so
    try:
        source.generation += 1
        get(app)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_concurrent_renders_share_one_pause() -> None:
    slow, fast = GcWitness(), GcWitness()
    slow.delay = 0.3
    slow_app, fast_app = app_for(slow, max_age=0), app_for(fast, max_age=0)
    thread = threading.Thread(target=get, args=(slow_app,))
    thread.start()
    assert slow.started.wait(5)
    get(fast_app)  # begins and ends inside the slow render
    assert fast.gc_enabled == [False] and not gc.isenabled()
    thread.join(5)
    assert slow.gc_enabled == [False] and gc.isenabled()
