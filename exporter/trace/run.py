"""Run a trace from a configuration, or against the bundled demo organisation (``trace --demo``).

The daemon's own ``Service`` provides the sessions and the server inventory (discovery included, when
it is enabled), exactly as ``check`` does; nothing else of it runs. Every session is closed at the end.
"""

from __future__ import annotations

import dataclasses
import time

from exporter.settings import Settings
from exporter.trace.query import TraceQuery, TraceReport, run_trace

__all__ = ["trace", "trace_demo"]

#: Seconds kept, within --timeout (at most a fifth of it), to close the Exchange sessions at the end.
CLOSE_RESERVE = 2.0


def trace(settings: Settings, query: TraceQuery, timeout: float | None = None) -> TraceReport:
    """Discover the servers (when discovery is enabled), search them all, close every session.
    ``timeout``: seconds for the whole run; servers that have not answered by then are reported as
    not searched."""
    from exporter.service import Service

    started = time.monotonic()
    deadline = None if timeout is None else started + timeout - min(CLOSE_RESERVE, timeout / 5)
    service = Service(settings)
    notes: list[str] = []
    try:
        for collector in service.collectors:
            if collector.name != "discovery":
                continue
            for target in collector.targets():
                snapshot = service.poll_once(collector, target)
                if snapshot is not None and not snapshot.ok:
                    notes.append(
                        f"discovery failed on {target} ({snapshot.message}): only the configured servers were searched"
                    )
        report = run_trace(service.targets, query, deadline)
    finally:
        left = 8.0 if timeout is None else started + timeout - time.monotonic()
        service.stop(close_timeout=min(8.0, max(0.5, left)))
    return dataclasses.replace(report, notes=(*notes, *report.notes)) if notes else report


def trace_demo(query: TraceQuery, timeout: float | None = None) -> TraceReport:
    """``trace`` against the bundled demo organisation, all in-process."""
    from exporter.demo import demo_organisation

    with demo_organisation("127.0.0.1:0", tls=False) as (_scenario, settings):
        return trace(settings, query, timeout)
