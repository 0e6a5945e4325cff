"""Run every benchmark, each in its own process, and print one summary table.

    python bench/run_all.py [--quick] [--only scrape,fanout,...] [--verbose]

Benchmarks: scrape (GET /metrics vs generate_latest), fanout (a 50-server poll cycle), tracking
(events per second of client CPU, fast path), dns (domain checks per second vs checkdmarc; needs NSD;
checkdmarc is optional: ``pip install checkdmarc``), status (the triage report and status page),
soak (1,000 poll cycles of every collector with faults toggling: sessions, threads, fds, RSS
flat), memory (100 servers at 1M tracking events an hour: peak RSS against 512 MiB), load (20 concurrent
scrapers for 60 s), bounds (hostile servers: an oversized answer's memory, a dripping server's threads
and fds, a malformed answer's log, a healthy server beside two slow ones), httpd (slowloris over HTTP
and TLS, a header flood, a connection burst against the listener). ``--quick`` shrinks every size for
a smoke run (about five minutes); the full run takes about an hour on two cores (soak about 25
minutes, memory about 20).

Each benchmark prints ``RESULT key=value ...`` lines, which this script collects; the benchmark's
own output is shown with ``--verbose`` (or when it fails).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


# (what, measured, goal, holds): holds is True/False when the row has a goal it can be checked
# against, None for a row that only informs (a comparison, a reference figure).
Row = tuple[str, str, str, "bool | None"]


def _holds(value: str, limit: float, *, below: bool = True) -> bool:
    """Whether a figure printed by a benchmark meets its goal (``below``: at or under ``limit``)."""
    number = float(value.replace(",", ""))
    return number <= limit if below else number >= limit


@dataclass(frozen=True)
class Bench:
    name: str
    script: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    summary: Callable[[dict[str, str], bool], list[Row]]
    needs: str = ""  # an executable that must be installed


def _scrape(r: dict[str, str], quick: bool) -> list[Row]:
    return [
        (
            f"scrape /metrics ({int(r['scrape_samples']):,} samples)",
            f"gzip {r['scrape_gzip_ms']} ms ({r['scrape_gzip_ratio']}x), identity {r['scrape_identity_ms']} ms "
            f"({r['scrape_identity_ratio']}x) vs floor {r['scrape_floor_ms']} ms",
            "identity <= 1.5x generate_latest()",
            _holds(r["scrape_identity_ratio"], 1.5),
        )
    ]


def _fanout(r: dict[str, str], quick: bool) -> list[Row]:
    return [
        (
            f"poll fan-out, {r['fanout_servers']} servers, 150 ms/cmdlet" if not quick else "poll fan-out (quick)",
            f"{r['fanout_warm_s']} s per warm cycle (first {r['fanout_first_s']} s), "
            f"client CPU {r['fanout_cpu_s']} s, {r['fanout_shells']} shells",
            "< 3 s per cycle",
            _holds(r["fanout_warm_s"], 3.0),
        )
    ]


def _tracking(r: dict[str, str], quick: bool) -> list[Row]:
    return [
        (
            "tracking, fast path + Select-Object",
            f"{int(r['tracking_fast_select_events_per_s']):,} events/s of client CPU "
            f"({int(r['tracking_fast_select_events']):,} events)",
            ">= 10,000 events/s",
            _holds(r["tracking_fast_select_events_per_s"], 10_000, below=False),
        ),
        (
            "tracking, fast path, full objects",
            f"{int(r['tracking_fast_full_events_per_s']):,} events/s",
            "",
            None,
        ),
    ]


def _dns(r: dict[str, str], quick: bool) -> list[Row]:
    rows = [
        (
            f"DNS checks, {r['dns_domains']} domains (NSD, loopback)",
            f"{r['dns_1_thread_per_s']} domains/s (1 thread), {r['dns_n_threads_per_s']} "
            f"({r['dns_concurrency']} threads)",
            "3.3 domains/s = 1,000 domains per 5 min",
            _holds(r["dns_1_thread_per_s"], 3.3, below=False),
        )
    ]
    cd = r.get("dns_checkdmarc_per_s", "missing")
    rows.append(
        (
            "checkdmarc check_domains, same domains",
            f"{cd} domains/s" if cd != "missing" else "skipped: checkdmarc not installed (pip install checkdmarc)",
            "sequential, skip_tls",
            None,
        )
    )
    return rows


def _status(r: dict[str, str], quick: bool) -> list[Row]:
    return [
        (
            f"status page, demo org ({r['status_findings']} findings)",
            f"triage report {r['status_report_ms']} ms, page {r['status_page_ms']} ms (median, cache off)",
            "report < 100 ms, page < 200 ms",
            _holds(r["status_report_ms"], 100) and _holds(r["status_page_ms"], 200),
        )
    ]


def _soak(r: dict[str, str], quick: bool) -> list[Row]:
    start, end = zip(
        *(map(int, r[f"soak_{k}"].split("->")) for k in ("threads", "fds", "shells", "sessions")), strict=True
    )
    return [
        (
            f"soak, {int(r['soak_cycles']):,} poll cycles x {r['soak_servers']} servers, {r['soak_collectors']} "
            "collectors, faults toggling: RSS",
            f"{r['soak_rss_start_mib']} -> {r['soak_rss_end_mib']} MiB (peak {r['soak_rss_peak_mib']}); second "
            f"half slope {r['soak_rss_slope_mib_per_1000']} MiB per 1,000 cycles",
            f"flat: |slope| < {r['soak_flat_threshold']} MiB per 1,000 cycles",
            r["soak_flat"] == "yes",
        ),
        (
            "soak: sessions, shells, threads, fds (start -> end)",
            f"sessions {r['soak_sessions']}, simulator shells {r['soak_shells']}, threads {r['soak_threads']}, "
            f"fds {r['soak_fds']}",
            "no growth; every poll succeeds after healing",
            r["soak_leak"] == "no" and all(b <= a for a, b in zip(start, end, strict=True)),
        ),
        (
            "soak: tracking volume per server",
            f"{int(r['soak_tracking_events_per_hour_per_server']):,} events an hour of log",
            "about 10,000 (1M an hour across 100 servers)",
            None,
        ),
    ]


def _memory(r: dict[str, str], quick: bool) -> list[Row]:
    return [
        (
            f"memory, {r['memory_servers']} servers at {int(r['memory_events_per_hour']):,} tracking events an hour "
            f"({r['memory_hours']} h of log), every Exchange collector",
            f"peak RSS {r['memory_peak_rss_mib']} MiB, end {r['memory_end_rss_mib']} MiB",
            f"< {r['memory_limit_mib']} MiB (the Kubernetes limit)",
            _holds(r["memory_peak_rss_mib"], float(r["memory_limit_mib"])),
        ),
        (
            "memory: tracking state per server (tracemalloc)",
            f"{r['memory_entry_bytes']} B per pairing entry, {r['memory_key_bytes']} B per dedupe key; "
            f"{r['memory_server_kib']} KiB per server at this rate",
            "",
            None,
        ),
        (
            "memory: one server at its worst (every table at max_tracked_messages)",
            f"{r['memory_worst_server_mib']} MiB; the cap is reached above {int(r['memory_cap_rate']):,} messages an "
            "hour per server",
            "",
            None,
        ),
    ]


def _load(r: dict[str, str], quick: bool) -> list[Row]:
    return [
        (
            f"load, {r['load_clients']} scrapers x {r['load_seconds']} s, {r['load_servers']} servers",
            f"{r['load_requests']} requests, {r['load_errors']} errors; p50 {r['load_p50_ms']} / p90 "
            f"{r['load_p90_ms']} / p99 {r['load_p99_ms']} / max {r['load_max_ms']} ms; "
            f"{r.get('load_renders', '?')} renders",
            "zero errors",
            r["load_errors"] == "0",
        )
    ]


def _bounds(r: dict[str, str], quick: bool) -> list[Row]:
    return [
        (
            "bounds, 100 MB answer, default limits" if not quick else "bounds, 10 MB answer (quick)",
            f"{r['bounds_malloc_default_outcome']}, read {r['bounds_malloc_default_read_mb']} MB; RSS "
            f"{r['bounds_malloc_default_before_mib']} -> {r['bounds_malloc_default_peak_mib']} -> "
            f"{r['bounds_malloc_default_dropped_mib']} MiB; drip: threads {r['bounds_drip_threads']}, fds "
            f"{r['bounds_drip_fds']}; malformed answer at debug: {r['bounds_log_mb']} MB of log, longest line "
            f"{r['bounds_log_longest']}; healthy server beside 2 slow: {r['bounds_fair_min']} of "
            f"{r['bounds_fair_expected']} polls",
            "memory back, no leftover threads, bounded lines",
            None,
        )
    ]


def _httpd(r: dict[str, str], quick: bool) -> list[Row]:
    return [
        (
            f"slowloris, {r['slowloris_connections']} slow clients (plain HTTP)",
            f"kept at most {r['slowloris_longest_s']} s ({r['slowloris_open']} left open); scrape meanwhile "
            f"HTTP {r['slowloris_scrape_status']} in {r['slowloris_scrape_s']} s",
            "all closed within 10 s; scrape 200",
            r["slowloris_open"] == "0" and r["slowloris_scrape_status"] == "200",
        ),
        (
            f"slowloris, {r['tls_connections']} slow clients (TLS)",
            f"kept at most {r['tls_longest_s']} s ({r['tls_open']} left open); scrape meanwhile "
            f"HTTP {r['tls_scrape_status']}",
            "all closed within 10 s; scrape 200",
            r["tls_open"] == "0" and r["tls_scrape_status"] == "200",
        ),
        (
            f"header flood, {r['flood_clients']} x {r['flood_mb_each']} MB",
            f"RSS {r['flood_rss_base_mib']} -> peak {r['flood_rss_peak_mib']} -> {r['flood_rss_after_mib']} MiB; "
            f"answers {r['flood_answers']}",
            "growth < 20 MiB; all 431",
            float(r["flood_rss_peak_mib"]) - float(r["flood_rss_base_mib"]) < 20,
        ),
        (
            f"connection burst, {r['burst_connects']} connects",
            f"{r['burst_stalls']} stalled >= 1 s, max {r['burst_max_ms']} ms; answers {r['burst_answers']}",
            "0 stalls",
            r["burst_stalls"] == "0",
        ),
    ]


BENCHES = [
    Bench("scrape", "bench_scrape.py", (), ("--servers", "10", "--runs", "5"), _scrape),
    Bench("fanout", "bench_fanout.py", (), ("--servers", "10", "--cycles", "2", "--latency", "0.05"), _fanout),
    Bench(
        "tracking",
        "bench_tracking.py",
        ("--fast-only", "--repeat", "2"),
        ("--fast-only", "--repeat", "1", "--per-minute", "100", "--minutes", "3"),
        _tracking,
    ),
    Bench("dns", "bench_dns.py", ("--checkdmarc",), ("--checkdmarc", "--domains", "100"), _dns, needs="nsd"),
    Bench("status", "bench_status.py", (), ("--runs", "5"), _status),
    Bench("soak", "bench_soak.py", (), ("--cycles", "100"), _soak, needs="nsd"),
    Bench("memory", "bench_memory.py", (), ("--servers", "10", "--hours", "0.5"), _memory),
    Bench(
        "load",
        "bench_load.py",
        (),
        ("--servers", "10", "--queues", "10", "--clients", "5", "--seconds", "5"),
        _load,
    ),
    Bench("bounds", "bench_bounds.py", (), ("--quick",), _bounds),
    Bench(
        "httpd",
        "bench_httpd.py",
        (),
        ("--connections", "20", "--hold", "12", "--flood-clients", "10", "--burst", "100"),
        _httpd,
    ),
]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split("MemTotal:", 1)[1].split()[0])
        ram = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, IndexError, ValueError):
        pass
    return f"{os.cpu_count()} CPUs ({cpu}){ram}, Python {platform.python_version()}, {platform.system()}"


def parse_results(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("RESULT "):
            out.update(re.findall(r"(\w+)=(\S+)", line))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--only", default="", help="comma-separated subset: " + ",".join(b.name for b in BENCHES))
    parser.add_argument("--verbose", action="store_true", help="show each benchmark's own output")
    args = parser.parse_args()
    wanted = {n.strip() for n in args.only.split(",") if n.strip()}
    unknown = wanted - {b.name for b in BENCHES}
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    print(f"machine: {machine()}")
    print(f"mode: {'quick (smoke sizes)' if args.quick else 'full'}\n")
    rows: list[tuple[str, str, str, str, str]] = []
    failures = 0
    missed = 0
    for bench in BENCHES:
        if wanted and bench.name not in wanted:
            continue
        if bench.needs and shutil.which(bench.needs) is None and not Path(f"/usr/sbin/{bench.needs}").exists():
            rows.append((bench.name, f"skipped: {bench.needs} not installed", "", "", ""))
            continue
        extra = bench.quick if args.quick else bench.full
        command = [sys.executable, str(HERE / bench.script), *extra]
        print(f"== {bench.name}: {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, check=False, cwd=HERE.parent)
        elapsed = time.perf_counter() - started
        results = parse_results(proc.stdout)
        if args.verbose or proc.returncode != 0:
            print(proc.stdout.rstrip())
            if proc.returncode != 0:
                print(proc.stderr.rstrip()[-3000:])
        print(
            f"   {'ok' if proc.returncode == 0 else f'FAILED (exit {proc.returncode})'} in {elapsed:.0f}s", flush=True
        )
        if proc.returncode != 0:
            failures += 1
            rows.append((bench.name, f"FAILED (exit {proc.returncode})", "", "no", f"{elapsed:.0f}s"))
            continue
        try:
            for what, measured, goal, holds in bench.summary(results, args.quick):
                verdict = "" if holds is None else ("yes" if holds else "NO")
                missed += holds is False
                rows.append((what, measured, goal, verdict, f"{elapsed:.0f}s"))
        except KeyError as missing:
            failures += 1
            rows.append((bench.name, f"no result {missing} in its output", "", "no", f"{elapsed:.0f}s"))

    print(f"\nSummary ({'quick' if args.quick else 'full'} run; {machine()})\n")
    print("| benchmark | measured | goal / note | holds | took |")
    print("|---|---|---|---|---|")
    for what, measured, goal, verdict, took in rows:
        print(f"| {what} | {measured} | {goal} | {verdict} | {took} |")
    if missed:
        print(f"\n{missed} goal(s) not met on this run (quick runs use smoke sizes: their goals are indicative)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
