"""The /metrics WSGI app: one render shared by concurrent scrapes.

prometheus_client's ``make_wsgi_app`` renders the whole registry for every request. For a large
organisation that is about half a second of CPU under the GIL, so N concurrent scrapers each wait
for N renders. Here a request is answered by a render that is at least as new as the request:

* the cached render, if the store has not changed since it began and it is at most ``max_age``
  seconds old (only process metrics and staleness move without a store change), or
* the first render that *began after the request arrived*: concurrent requests queue behind one
  render instead of each rendering, and every request that waited for it is answered by it.

So data is never older than the request, and concurrent scrapers cost about one render each round
instead of one per scraper. ``name[]`` filtered requests and non-GET methods are not cached (and
rendered by prometheus_client's own app), and at most a few (content type, encoding) variants are: the
client picks the Accept header.

The format is negotiated by prometheus_client (``choose_encoder``); the encoding is done by
exporter.textformat (the same bytes, faster) and gzip runs at ``GZIP_LEVEL``, not gzip's default 9.
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import choose_encoder

from exporter.textformat import fast_encoder

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


#: zlib level of a gzip answer. Levels 1-3 share zlib's fast strategy (same time, 3 the smallest of them);
#: at 50k series (8.8 MB of text) level 3 took 13-24 ms of CPU for 226 kB, level 6 35-63 ms for 198 kB
#: and level 9 (gzip.compress's default, which prometheus_client uses) 144-330 ms for 160 kB
#: (bench/bench_scrape.py --gzip-levels).
GZIP_LEVEL = 3
_MAX_FORMATS = 8  # cached (content type, gzip) variants; any further Accept header is rendered uncached


@dataclass(frozen=True)
class _Render:
    number: int  # renders begun before this one, plus one: orders renders against arrivals exactly
    generation: int
    began: float  # monotonic time the render began
    headers: tuple[tuple[str, str], ...]
    body: bytes


class _GcPause:
    """Pauses Python's cyclic garbage collector while renders run: process-wide, so concurrent renders
    share one pause and the last to finish ends it; a collector someone else disabled stays disabled.

    Why: a render allocates about two container objects per sample (the library's Sample tuple and its
    label dict), all alive until the render ends and none in a reference cycle. Every 700 allocations
    start a collection that walks them again, and the full ones walk the whole heap: at 218k series
    (the load benchmark's organisation) that was about 40% of the render's CPU. Paused, the render's
    garbage is still freed by reference counting as usual."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._renders = 0
        self._was_enabled = False

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._renders == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._renders += 1
        try:
            yield
        finally:
            with self._lock:
                self._renders -= 1
                if self._renders == 0 and self._was_enabled:
                    gc.enable()


_gc_paused = _GcPause()


def _gzip_accepted(accept_encoding: str) -> bool:
    return any(part.split(";")[0].strip().lower() == "gzip" for part in accept_encoding.split(","))


class SharedRenderApp:
    """WSGI app serving ``registry`` with renders shared between concurrent scrapes."""

    def __init__(
        self,
        registry: CollectorRegistry,
        generation: Callable[[], int],
        max_age: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._generation = generation
        self._max_age = max_age
        self._clock = clock
        self._fallback = make_wsgi_app(registry)
        self._locks: dict[tuple[str, bool], threading.Lock] = {}
        self._cache: dict[tuple[str, bool], _Render] = {}
        self._guard = threading.Lock()
        self._begun = 0  # renders begun so far (read on arrival, bumped under _guard)
        self.renders = 0  # how many renders this app did (benchmarks and tests read it)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "GET" or "name[]" in parse_qs(environ.get("QUERY_STRING", "")):
            return self._fallback(environ, start_response)  # type: ignore[no-any-return,unused-ignore]
        arrived, seen = self._clock(), self._begun
        encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT") or "")
        encoder = fast_encoder(encoder) or encoder
        compress = _gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING") or "")
        key = (content_type, compress)
        with self._guard:
            lock = self._locks.get(key)
            if lock is None:
                if len(self._locks) >= _MAX_FORMATS:  # the client chooses the Accept header: bound the cache
                    return self._fallback(environ, start_response)  # type: ignore[no-any-return,unused-ignore]
                lock = self._locks[key] = threading.Lock()
        render = self._usable(key, arrived, seen)
        if render is None:
            with lock:
                render = self._usable(key, arrived, seen)
                if render is None:
                    render = self._render(key, encoder, content_type, compress)
        start_response("200 OK", list(render.headers))
        return [render.body]

    def _usable(self, key: tuple[str, bool], arrived: float, seen: int) -> _Render | None:
        render = self._cache.get(key)
        if render is None:
            return None
        if render.number > seen:
            return render  # began after this request arrived: as new as a render of its own
        if render.generation == self._generation() and arrived - render.began <= self._max_age:
            return render
        return None

    def _render(
        self, key: tuple[str, bool], encoder: Callable[[CollectorRegistry], bytes], content_type: str, compress: bool
    ) -> _Render:
        # Read the generation before rendering: a poll that lands mid-render makes this render
        # look older than it is (re-rendered next time), never newer.
        with self._guard:
            self._begun += 1
            number = self._begun
        generation = self._generation()
        began = self._clock()
        with _gc_paused():
            body = encoder(self._registry)
        headers = [("Content-Type", content_type)]
        if compress:
            body = gzip.compress(body, GZIP_LEVEL)
            headers.append(("Content-Encoding", "gzip"))
        render = _Render(number, generation, began, tuple(headers), body)
        self._cache[key] = render
        self.renders += 1
        return render
