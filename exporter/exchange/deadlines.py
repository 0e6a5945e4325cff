"""Threads with deadlines: how the sessions run pypsrp calls, which cannot be interrupted.

A call runs in a daemon thread; its caller waits until the deadline, then has the call's connections
shut down (``bounds.abort``), which ends the thread at once, and waits for that (``ABORT_GRACE``): no
thread is left behind, also against a server that answers one byte at a time.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from exporter.errors import CollectorError

__all__ = ["ABORT_GRACE", "ended", "run_with_deadline", "start_thread"]

log = logging.getLogger("exporter.exchange.session")
_T = TypeVar("_T")


def start_thread(fn: Callable[[], _T], name: str) -> Future[_T]:
    """Run ``fn`` in a new daemon thread; its outcome lands in the returned future."""
    future: Future[_T] = Future()

    def runner() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=runner, name=name, daemon=True).start()
    return future


#: How long a call's thread may take to end once its connections were shut down at the deadline.
ABORT_GRACE = 3.0


def run_with_deadline(fn: Callable[[], _T], timeout: float, name: str, abort: Callable[[], None] | None = None) -> _T:
    """Run ``fn`` in a daemon thread; raise CollectorError(reason="timeout") after ``timeout`` s.

    pypsrp calls cannot be interrupted, and a per-read timeout never fires on a server that answers one
    byte at a time: at the deadline ``abort`` shuts the call's connections down (``bounds.abort``), which
    ends the thread at once; it is waited for (up to ``ABORT_GRACE``), so no thread is left behind.
    """
    future = start_thread(fn, name)
    try:
        return future.result(timeout=timeout)
    except FutureTimeout:
        if abort is not None:
            abort()
            if not ended(future, ABORT_GRACE):
                log.warning("a call did not end after its connections were closed thread=%s", name)
        raise CollectorError(f"no answer within {timeout:g}s", reason="timeout") from None


def ended(future: Future[Any], wait: float) -> bool:
    """Wait up to ``wait`` s for ``future``'s thread to end (whatever its outcome); True if it did."""
    with contextlib.suppress(BaseException):
        future.exception(timeout=wait)
    return future.done()
