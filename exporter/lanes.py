"""Fair sharing of the poll workers: one lane per Exchange session, taken in turn.

With a plain thread pool, every job of a slow server takes a worker and holds it while it waits for
that server's session (one pipeline at a time) and then for its own deadline: two hung servers out of
three filled the pool, and the healthy server's polls waited, missed their run times and went stale.

``FairExecutor`` is an apscheduler executor that queues each due job in its lane (the session it polls
through) instead. A lane runs at most ``per_lane`` jobs at a time, and free workers take the next job
from the lanes in turn (round robin), so a slow lane holds at most ``per_lane`` workers, each for at most
its call deadline, and never delays another lane's jobs beyond that. Jobs waiting in a lane hold no
thread; apscheduler's own rules still apply (one instance per job, a run time older than the misfire
grace time is skipped when its turn comes).
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from apscheduler.executors.base import BaseExecutor, run_job
from apscheduler.job import Job

__all__ = ["FairExecutor"]


class FairExecutor(BaseExecutor):
    """Runs jobs on ``max_workers`` threads, at most ``per_lane`` per lane, lanes taken in turn."""

    def __init__(self, max_workers: int, lane_of: Callable[[Job], str], per_lane: int = 1) -> None:
        super().__init__()
        self._workers = max_workers
        self._per_lane = per_lane
        self._lane_of = lane_of
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="poll")
        self._lock = threading.Lock()
        self._waiting: dict[str, deque[tuple[Job, list[datetime]]]] = {}
        self._running: dict[str, int] = {}
        self._order: deque[str] = deque()  # lanes with waiting jobs, the next to serve first
        self._busy = 0
        self._closed = False

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        try:
            lane = self._lane_of(job)
        except Exception:  # a lane that cannot be told: the job is its own lane
            lane = str(job.id)
        with self._lock:
            if self._closed:
                return
            queue = self._waiting.setdefault(lane, deque())
            if not queue:
                self._order.append(lane)
            queue.append((job, run_times))
        self._dispatch()

    def _next(self) -> tuple[str, Job, list[datetime]] | None:
        """The next job to start (lock held): from the first lane in turn that may run one more."""
        for _ in range(len(self._order)):
            lane = self._order.popleft()
            queue = self._waiting.get(lane)
            if not queue:
                continue
            if self._running.get(lane, 0) >= self._per_lane:
                self._order.append(lane)  # its turn comes again once its running job ends
                continue
            job, run_times = queue.popleft()
            if queue:
                self._order.append(lane)  # to the back: the other lanes go first
            else:
                del self._waiting[lane]
            return lane, job, run_times
        return None

    def _dispatch(self) -> None:
        starts: list[tuple[str, Job, list[datetime]]] = []
        with self._lock:
            while not self._closed and self._busy < self._workers:
                picked = self._next()
                if picked is None:
                    break
                self._running[picked[0]] = self._running.get(picked[0], 0) + 1
                self._busy += 1
                starts.append(picked)
        for lane, job, run_times in starts:
            try:
                future = self._pool.submit(run_job, job, job._jobstore_alias, run_times, self._logger.name)
            except RuntimeError:  # the pool was shut down meanwhile
                self._release(lane)
                continue
            future.add_done_callback(functools.partial(self._finished, lane, job.id))

    def _release(self, lane: str) -> None:
        with self._lock:
            self._busy -= 1
            left = self._running.get(lane, 0) - 1
            if left > 0:
                self._running[lane] = left
            else:
                self._running.pop(lane, None)

    def _finished(self, lane: str, job_id: str, future: concurrent.futures.Future[Any]) -> None:
        self._release(lane)
        if not future.cancelled():
            exc = future.exception()
            if exc is not None:
                self._run_job_error(job_id, exc, exc.__traceback__)
            else:
                self._run_job_success(job_id, future.result())
        self._dispatch()

    def lanes(self) -> dict[str, tuple[int, int]]:
        """Each lane's (running, waiting) jobs (for tests and debugging)."""
        with self._lock:
            names = set(self._running) | set(self._waiting)
            return {n: (self._running.get(n, 0), len(self._waiting.get(n, ()))) for n in sorted(names)}

    def shutdown(self, wait: bool = True) -> None:
        with self._lock:
            self._closed = True
            self._waiting.clear()
            self._order.clear()
        self._pool.shutdown(wait, cancel_futures=True)
