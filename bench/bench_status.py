"""Status page cost: the triage report and the page, built from the demo organisation's snapshots.

The demo organisation (simulator + DemoNet) is polled once by every collector; then the triage report
is built ``--runs`` times from the in-memory snapshots, and the status page rendered ``--runs`` times
with its cache off (every render rebuilds the report). Targets: report < 100 ms, page < 200 ms.

    python bench/bench_status.py [--runs 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    from exporter.demo import demo_organisation
    from exporter.service import Service
    from exporter.web import WebApp

    with demo_organisation("127.0.0.1:0", tls=False) as (_, settings):
        service = Service(settings)
        try:
            service.poll_all()
            service.poll_all()  # the DNS checks follow the accepted domains found by the first poll
            report = service.triage()
            reports = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                service.triage()
                reports.append(time.perf_counter() - t0)
            app = WebApp(
                service.registry,
                service.store,
                "/metrics",
                "https://example.invalid/runbook.md",
                lambda: (True, "Ready"),
                triage=lambda: service.triage(),
                triage_cache_seconds=0,
            )
            pages = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                page = app.landing_page()
                pages.append(time.perf_counter() - t0)
        finally:
            service.stop()
    report_ms = statistics.median(reports) * 1000
    page_ms = statistics.median(pages) * 1000
    print(f"{len(report.findings)} findings, page {len(page):,} bytes")
    print(f"triage report: median {report_ms:.1f} ms, max {max(reports) * 1000:.1f} ms (target < 100 ms)")
    print(f"status page:   median {page_ms:.1f} ms, max {max(pages) * 1000:.1f} ms (target < 200 ms)")
    print(
        f"RESULT status_findings={len(report.findings)} status_report_ms={report_ms:.1f} "
        f"status_page_ms={page_ms:.1f} status_page_bytes={len(page)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
