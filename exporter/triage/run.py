"""``mailflow-exporter check``: run every enabled collector once, then triage what they found."""

from __future__ import annotations

from typing import Any

from exporter.settings import Settings
from exporter.triage.facts import facts_from_store
from exporter.triage.model import Report
from exporter.triage.report import build_report


def report_for(service: Any) -> Report:
    """Triage the service's latest snapshots (used by ``check`` and the status page)."""
    stale = service.settings.scheduler.stale_after_intervals
    return build_report(facts_from_store(service.store, [c.name for c in service.collectors], stale))


def check(settings: Settings) -> Report:
    """Poll everything once (plus the targets that polling revealed: DNS checks of the accepted
    domains, SMTP probes of the MX hosts found), triage, close every session."""
    from exporter.service import Service

    service = Service(settings)
    try:
        service.poll_all()
        for _ in range(2):  # accepted domains -> DNS checks -> MX hosts -> SMTP probes
            if not service.poll_all(only_new=True):
                break
        return report_for(service)
    finally:
        service.stop()


def check_demo() -> Report:
    """``check`` against the bundled demo organisation and its outside world, all in-process."""
    from exporter.demo import demo_organisation

    with demo_organisation("127.0.0.1:0", tls=False) as (_scenario, settings):
        return check(settings)
