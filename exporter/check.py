"""``mailflow-exporter check``: run every enabled collector once, then triage what they found.

It drives the daemon's own ``Service`` (the same collectors, sessions and snapshot store) and reads
the report through ``Service.triage``: the triage itself is a pure function of the snapshots.
"""

from __future__ import annotations

import time

from exporter.service import Progress, Service
from exporter.settings import Settings
from exporter.triage.model import Report

#: Polling rounds after the first: accepted domains -> DNS checks -> MX hosts -> SMTP probes, and spare.
FOLLOW_UP_ROUNDS = 4
#: Seconds kept, within --timeout (at most a fifth of it), to close the Exchange sessions after polling.
CLOSE_RESERVE = 2.0


def check(settings: Settings, timeout: float | None = None, progress: Progress | None = None) -> Report:
    """Poll everything once (plus the targets that polling revealed: DNS checks of the accepted domains,
    SMTP probes of the MX hosts found), triage, close every session.

    Every server is polled in parallel; the polls of one server share its session, and those queued behind
    a failed attempt to open it fail with it, so a hung server costs one ``call_timeout``, not one per
    collector. ``timeout``: seconds for the whole run; when they pass, the polls still running are left
    behind and reported as not finished (exit code 4 unless something critical was found)."""
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout - min(CLOSE_RESERVE, timeout / 5)
    service = Service(settings)
    expired = False
    try:
        service.poll_all(deadline=deadline, progress=progress)
        for _ in range(FOLLOW_UP_ROUNDS):
            if deadline is not None and time.monotonic() >= deadline:
                break
            if not service.poll_all(only_new=True, deadline=deadline, progress=progress):
                break
        expired = bool(service.pending_polls())
    finally:
        left = 8.0 if timeout is None else started + timeout - time.monotonic()
        service.stop(close_timeout=min(8.0, max(0.5, left)))
    return service.triage(timeout if expired and timeout is not None else None)


def check_demo(timeout: float | None = None, progress: Progress | None = None) -> Report:
    """``check`` against the bundled demo organisation and its outside world, all in-process."""
    from exporter.demo import demo_organisation

    with demo_organisation("127.0.0.1:0", tls=False) as (_scenario, settings):
        return check(settings, timeout, progress)
