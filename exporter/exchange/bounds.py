"""Bounds on what one Exchange endpoint can make the exporter read, hold and wait for.

Every pypsrp transport the sessions build gets a ``CallGuard``: the allowance of the operation running
on it (a cmdlet call, a session's open or close) and the sockets it uses.

- **Bytes**: the HTTP bodies of one operation together are at most ``max_response_bytes``. The body is
  read in chunks (never whole before it is counted; a declared ``Content-Length`` over the allowance is
  refused before its body is read) and the connection is closed at the cap, so an oversized answer is
  never held, only what was read up to the cap. A 401 challenge with a small declared body is counted
  but left to the authentication handler, which needs its socket for the TLS channel binding.
- **Objects**: ``max_objects`` output objects per call (and as many error, warning and other records),
  each message at most ``max_object_bytes`` (checked while its fragments arrive, before they are joined).
  Counted by the pool's fragmenter (``wire.FastFragmenter``).
- **Time**: no request starts after the operation's deadline, and a connect may take only what is left
  of it. A per-read timeout never fires on a server that sends one byte at a time; so when the deadline
  passes, whoever waits for the operation calls ``abort``, which shuts down every socket of the
  transport. The thread blocked in pypsrp then returns at once with an error, and its connection is
  closed: nothing is abandoned. These are connection errors, never timeouts: pypsrp retries a Receive
  that timed out, after a sleep (2 s, then 6 s...), which would keep the thread past the deadline. Read
  timeouts stay pypsrp's (longer than the WSMan OperationTimeout, as a Receive may wait that long).

Any breach raises ``TooLarge`` (reason ``too_large``). After one, the session drops its pool and
``release_memory`` hands freed memory back to the operating system.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import math
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import requests
import requests.adapters
import urllib3.exceptions
from pypsrp.wsman import WSMan

from exporter.errors import CollectorError

log = logging.getLogger(__name__)

__all__ = [
    "CallGuard",
    "DeadlinePassed",
    "Limits",
    "TooLarge",
    "abort",
    "guard_of",
    "install",
    "release_memory",
    "result_size",
]

REASON = "too_large"
_CHUNK = 64 * 1024  # bytes read from a response body at a time (each counted before the next is read)
_CHALLENGE_BODY = 64 * 1024  # the most of a 401's body left for the auth handler to read (IIS sends 1.3 KB)
TRIM_AFTER = 16 * 1024 * 1024  # a call that read more: its freed buffers are handed back (release_memory)
_GUARDS: weakref.WeakKeyDictionary[Any, CallGuard] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Limits:
    """The most one call may bring: body bytes, output objects (and records), bytes per object."""

    response_bytes: int
    objects: int
    object_bytes: int


def size_text(value: int) -> str:
    """A byte count as people write it in the configuration: ``128MiB``, ``64KiB``, ``1000``."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size and value % size == 0:
            return f"{value // size}{unit}"
    return str(value)


class TooLarge(CollectorError):
    """The server answered one call with more than the limits allow (reason ``too_large``)."""

    reason = REASON


class CallGuard:
    """The allowance of the operation running on one transport, and the transport's connections.

    Operations on one transport run one at a time (a session runs one pipeline at a time; a pool is
    opened, then used, then closed), so one allowance at a time is enough: ``begin`` starts the next.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        self.deadline = math.inf  # time.monotonic() after which no request starts and reads end
        self.bytes_read = 0
        self.objects = 0
        self.records = 0
        self.aborted = False

    def begin(self, deadline: float) -> None:
        """Start a new operation's allowance, ending at ``deadline`` (``time.monotonic()``)."""
        with self._lock:
            self.deadline = deadline
            self.bytes_read = self.objects = self.records = 0
            self.aborted = False

    def remaining(self) -> float:
        """Seconds left until the deadline (0 once aborted)."""
        return 0.0 if self.aborted else max(0.0, self.deadline - time.monotonic())

    def add_bytes(self, count: int) -> None:
        """Count ``count`` body bytes read; raise TooLarge past ``response_bytes``."""
        self.bytes_read += count
        if self.bytes_read > self.limits.response_bytes:
            raise TooLarge(
                f"the answer exceeded max_response_bytes ({size_text(self.limits.response_bytes)}) "
                "for one call; reading stopped there"
            )

    def would_exceed(self, declared: int) -> bool:
        """True if a body of ``declared`` bytes would take this operation past ``response_bytes``."""
        return self.bytes_read + declared > self.limits.response_bytes

    def add_message(self, output: bool) -> None:
        """Count one output object (``output``) or one record; raise TooLarge past ``objects``."""
        if output:
            self.objects += 1
            count, what = self.objects, "output objects"
        else:
            self.records += 1
            count, what = self.records, "records (errors, warnings, progress)"
        if count > self.limits.objects:
            raise TooLarge(f"more than max_objects ({self.limits.objects}) {what} in one call; reading stopped there")

    def check_object(self, size: int) -> None:
        """Raise TooLarge if one message (so far) is larger than ``object_bytes``."""
        if size > self.limits.object_bytes:
            raise TooLarge(
                f"one object exceeded max_object_bytes ({size_text(self.limits.object_bytes)}); reading stopped there"
            )

    def track(self, connection: Any) -> None:
        """Remember a connection of this transport (weakly), to shut it down on ``abort``."""
        with self._lock:
            self._connections.add(connection)

    def abort(self) -> int:
        """End the operation now: no request may start, and every socket of the transport is shut down,
        which wakes a thread blocked reading from it. Returns how many sockets were shut down."""
        with self._lock:
            self.aborted = True
            connections = list(self._connections)
        count = 0
        for connection in connections:
            sock = getattr(connection, "sock", None)
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                # socket.socket's own shutdown, also for a TLS socket: SSLSocket.shutdown would drop its
                # SSL object under the thread reading from it.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
                count += 1
        return count


def _clamp(timeout: Any, remaining: float) -> tuple[Any, Any]:
    """A requests timeout (a number or a (connect, read) pair; None: none) with its connect part cut to
    ``remaining`` s."""
    connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    return (remaining if connect is None else min(connect, remaining)), read


class DeadlinePassed(requests.exceptions.ConnectionError):
    """The operation's deadline passed (or it was aborted): nothing more is sent or read."""


def _tracking_pool(pool_cls: Callable[..., Any], guard: CallGuard) -> Callable[..., Any]:
    """A urllib3 pool class (factory) whose new connections are tracked by ``guard``."""

    def make_pool(*args: Any, **kwargs: Any) -> Any:
        pool = pool_cls(*args, **kwargs)
        connection_cls = pool.ConnectionCls

        def make_connection(*c_args: Any, **c_kwargs: Any) -> Any:
            connection = connection_cls(*c_args, **c_kwargs)
            guard.track(connection)
            return connection

        pool.ConnectionCls = make_connection
        return pool

    return make_pool


class BoundedAdapter(requests.adapters.HTTPAdapter):
    """requests' adapter with the guard's deadline on every request and its byte cap on every body."""

    def __init__(self, guard: CallGuard, max_retries: Any = 0) -> None:
        self._guard = guard
        super().__init__(max_retries=max_retries)  # calls init_poolmanager

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        classes = dict(self.poolmanager.pool_classes_by_scheme)  # a copy: the default is urllib3's, shared
        self.poolmanager.pool_classes_by_scheme = {k: _tracking_pool(v, self._guard) for k, v in classes.items()}

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        guard = self._guard
        remaining = guard.remaining()
        if remaining <= 0:
            raise DeadlinePassed("the call's deadline has passed")
        response = super().send(
            request, stream=True, timeout=_clamp(timeout, remaining), verify=verify, cert=cert, proxies=proxies
        )
        if stream:
            return response
        try:
            if not self._challenge(response):
                self._read_body(response)
        except BaseException:
            response.close()  # never back to the pool: the rest of the body is still on the wire
            raise
        return response

    def _challenge(self, response: requests.Response) -> bool:
        """True for an authentication challenge (401) with a small declared body, which is left unread and
        counted: pypsrp's Negotiate handler takes the channel binding token (RFC 5929, which Extended
        Protection requires over HTTPS) from this response's socket before it reads the body itself."""
        declared = _declared(response)
        if response.status_code != 401 or declared is None or declared > _CHALLENGE_BODY:
            return False
        self._guard.add_bytes(declared)
        return True

    def _read_body(self, response: requests.Response) -> None:
        guard = self._guard
        encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            # pypsrp asks for none (Accept-Encoding: identity); decompressing makes any size of a small body.
            raise CollectorError(f"the server compressed its answer ({encoding[:20]}) though asked not to", "protocol")
        declared = _declared(response) or 0
        if declared > 0 and guard.would_exceed(declared):
            guard.add_bytes(declared)  # raises TooLarge before the body is read
        chunks: list[bytes] = []
        for chunk in _raw_chunks(response):
            guard.add_bytes(len(chunk))
            chunks.append(chunk)
            if guard.remaining() <= 0:
                raise DeadlinePassed("the call's deadline passed while reading the answer")
        response._content = b"".join(chunks)
        response._content_consumed = True  # type: ignore[attr-defined]  # as requests' Response.content sets it


def _declared(response: requests.Response) -> int | None:
    """The body length the response declares (Content-Length), None if it declares none."""
    try:
        return max(0, int(response.headers["Content-Length"]))
    except (KeyError, ValueError):
        return None


def _raw_chunks(response: requests.Response) -> Iterator[bytes]:
    """The body as sent (not decoded), with urllib3's errors as requests raises them."""
    try:
        yield from response.raw.stream(_CHUNK, decode_content=False)
    except urllib3.exceptions.ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise requests.exceptions.ConnectionError(exc) from exc
    except urllib3.exceptions.SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc


def install(wsman: WSMan, limits: Limits) -> CallGuard:
    """Bound a pypsrp WSMan transport: every requests session it builds (now and after a reset) gets
    ``BoundedAdapter``s sharing one ``CallGuard``, which is returned (and found again by ``guard_of``)."""
    transport: Any = wsman.transport
    guard = CallGuard(limits)
    build = transport._build_session

    def bounded_session() -> requests.Session:
        session = build()
        # pypsrp has just merged the environment's proxy and CA settings for this endpoint into the session;
        # with trust_env requests would read every environment variable again on each request (0.14 ms
        # per request here, more in a container with many variables: docs/performance.md, "Queues at scale").
        session.trust_env = False
        for prefix in ("http://", "https://"):
            previous = session.adapters.get(prefix)
            retries = getattr(previous, "max_retries", 0)
            session.mount(prefix, BoundedAdapter(guard, max_retries=retries))
        return session

    transport._build_session = bounded_session
    if transport.session is not None:
        transport.session.close()
        transport.session = None  # built again, bounded, on the next request
    _GUARDS[wsman] = guard
    return guard


def guard_of(wsman: Any) -> CallGuard | None:
    """The guard ``install`` gave this transport, if any."""
    try:
        return _GUARDS.get(wsman)
    except TypeError:  # not weakly referenceable: never installed
        return None


def abort(wsman: Any) -> None:
    """Shut down every socket of a bounded transport (no-op for one that is not)."""
    guard = guard_of(wsman)
    if guard is not None:
        closed = guard.abort()
        log.debug("connections shut down at the deadline count=%d", closed)


def result_size(configured: int | str, max_objects: int) -> int:
    """The ``-ResultSize`` to ask for: the configured one, at most ``max_objects`` (``Unlimited`` is
    ``max_objects``), so that a server with more objects truncates its answer (with its "more results"
    warning) rather than the call failing with ``too_large``."""
    return max_objects if not isinstance(configured, int) else min(configured, max_objects)


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def release_memory(collect: bool = True) -> None:
    """Collect garbage (``collect``) and hand freed heap back to the operating system (glibc's
    ``malloc_trim``).

    Once a large answer is dropped CPython has freed its objects, but the C heap keeps the pages of the
    large buffers (HTTP bodies, parsed XML, decoded text), so the process' resident memory would stay at
    its peak; trimming returns them. Done after a ``too_large`` call and after any call that read more
    than ``TRIM_AFTER`` bytes.
    """
    if collect:
        gc.collect()
    if _TRIM is not None:
        _TRIM(0)
