"""Run every benchmark, each in its own process, and print one summary table.

    python bench/run_all.py [--quick] [--only scrape,fanout,...] [--verbose]

Benchmarks: scrape (GET /metrics, every request rendered, vs generate_latest over the same prebuilt
families, at 1k/10k/50k series), fanout (a 50-server poll cycle), queues (client
CPU of a 20,000-queue poll cycle: 100 servers x 200 queues), tracking
(events per second of client CPU: the default configuration against its goal, and the fast path
against pypsrp's own deserializer on the same output shape); fanout and tracking run once per
transport (``fanout``, ``fanout/kerberos-http-sealed``, ``fanout/kerberos-https``, likewise tracking:
``--only fanout`` picks all three; the Kerberos ones start an MIT KDC on loopback and are skipped
with a note without krb5kdc), dns (domain checks per second vs checkdmarc; needs NSD;
checkdmarc is optional: ``pip install checkdmarc``), status (the triage report and status page),
soak (1,000 poll cycles of every collector with faults toggling: sessions, threads, fds, RSS
flat), memory (100 servers at 1M tracking events an hour: peak RSS against 512 MiB), load (2 Prometheus-like
scrapers every 15 s for 5 minutes while every collector polls 50 servers and 2,000 domains; needs
NSD), bounds (hostile servers: an oversized answer's memory, a dripping server's threads and fds, a
malformed answer's log, a healthy server beside two slow ones), httpd (slowloris over HTTP and TLS, a
header flood, a connection burst against the listener). ``--quick`` shrinks every size for a smoke run
(a few minutes); the full run takes about an hour on two cores (soak about 25 minutes, memory about 20).

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

from bench.transports import DESCRIPTIONS, TRANSPORTS

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

    @property
    def group(self) -> str:
        """``fanout`` for ``fanout/kerberos-https``: what ``--only`` also matches."""
        return self.name.partition("/")[0]


def _scrape(r: dict[str, str], quick: bool) -> list[Row]:
    rows: list[Row] = []
    for size in ("1k", "10k", "50k"):
        if f"scrape_{size}_series" not in r:
            continue
        text = f"text floor {r[f'scrape_{size}_floor_cpu_ms']} ms CPU"
        om = f"OpenMetrics floor {r[f'scrape_{size}_floor_om_cpu_ms']} ms CPU"
        for mode, what, against in (
            ("identity", "plain text", text),
            ("gzip", "gzip", text),
            ("prometheus", "Prometheus Accept (OpenMetrics) + gzip", om),
        ):
            p = f"scrape_{size}_{mode}"
            rows.append(
                (
                    f"scrape /metrics, {int(r[f'scrape_{size}_series']):,} series, {what}, every request rendered",
                    f"{r[p + '_cpu_ms']} ms CPU = {r[p + '_cpu_ratio']}x {against} (wall {r[p + '_ms']} ms, "
                    f"{r[p + '_ratio']}x); {r[p + '_kb']} kB on the wire",
                    "<= 1.3x generate_latest over the same prebuilt families (CPU)",
                    _holds(r[p + "_cpu_ratio"], 1.3),
                )
            )
    return rows


def _transport_label(r: dict[str, str], key: str) -> str:
    return DESCRIPTIONS.get(r[key], r[key])


def _fanout(r: dict[str, str], quick: bool) -> list[Row]:
    label = _transport_label(r, "fanout_transport")
    if r.get("fanout_skipped"):
        return [(f"poll fan-out, {label}", f"skipped: {r['fanout_skipped']} not installed", "< 3 s per cycle", None)]
    size = f"{r['fanout_servers']} servers, 150 ms/cmdlet" if not quick else "quick"
    sealed = f", {int(r['fanout_sealed']):,} sealed messages" if r["fanout_sealed"] != "0" else ""
    return [
        (
            f"poll fan-out, {size}, {label}",
            f"{r['fanout_warm_s']} s per warm cycle (first {r['fanout_first_s']} s), "
            f"client CPU {r['fanout_cpu_s']} s (first {r['fanout_first_cpu_s']} s), {r['fanout_shells']} shells"
            f"{sealed}",
            "< 3 s per cycle",
            _holds(r["fanout_warm_s"], 3.0),
        )
    ]


def _queues(r: dict[str, str], quick: bool) -> list[Row]:
    rows = int(r["queues_rows"])
    return [
        (
            f"queues at scale, {r['queues_servers']} servers x {r['queues_per_server']} queues"
            if not quick
            else "queues at scale (quick)",
            f"client CPU {r['queues_cpu_s']} s per cycle (max {r['queues_cpu_max_s']} s; render "
            f"{r['queues_render_s']} s) for {rows:,} queues, {int(r['queues_errors']):,} with a LastError "
            f"({int(r['queues_distinct_errors']):,} distinct, new each cycle)",
            f"< {5.0 * rows / 20_000:g} s client CPU per cycle (5 s per 20,000 queues)",
            _holds(r["queues_cpu_s"], 5.0 * rows / 20_000),
        )
    ]


def _tracking(r: dict[str, str], quick: bool) -> list[Row]:
    label = _transport_label(r, "tracking_transport")
    if r.get("tracking_skipped"):
        return [(f"tracking, {label}", f"skipped: {r['tracking_skipped']} not installed", ">= 10,000 events/s", None)]
    rows: list[Row] = [
        (
            f"tracking, default (fast path + Select-Object), {label}",
            f"{int(r['tracking_default_events_per_s']):,} events/s of client CPU "
            f"({int(r['tracking_default_events']):,} events per poll)",
            ">= 10,000 events/s",
            _holds(r["tracking_default_events_per_s"], 10_000, below=False),
        )
    ]
    if "tracking_ratio_select" in r:
        rows.append(
            (
                f"tracking, fast path / stock pypsrp, same shape, {label}",
                f"Select-Object {r['tracking_ratio_select']}x ({int(r['tracking_cmp_fast_select_events_per_s']):,} vs "
                f"{int(r['tracking_cmp_stock_select_events_per_s']):,} events/s); full objects "
                f"{r['tracking_ratio_full']}x ({int(r['tracking_cmp_fast_full_events_per_s']):,} vs "
                f"{int(r['tracking_cmp_stock_full_events_per_s']):,}); "
                f"{int(r['tracking_cmp_fast_select_events']):,} events per poll",
                "like for like (informative)",
                None,
            )
        )
    return rows


def _dns(r: dict[str, str], quick: bool) -> list[Row]:
    n = int(r["dns_domains"])
    rows: list[Row] = [
        (
            f"DNS checks, one cycle of {n:,} domains x 2 outbound IPs ({r['dns_concurrency']} threads, NSD)",
            f"first cycle: wall {r['dns_wall_s']} s, CPU {r['dns_cpu_s']} s; a later cycle: wall "
            f"{r.get('dns_later_wall_s', '?')} s, CPU {r.get('dns_later_cpu_s', '?')} s; "
            f"{r['dns_queries_per_domain']} queries/domain sent; load average {r['dns_load']} on {os.cpu_count()} CPUs",
            "1,000 domains: wall < 5 s and CPU < 5 s",
            (_holds(r["dns_wall_s"], 5) and _holds(r["dns_cpu_s"], 5)) if n >= 1000 else None,
        )
    ]
    if "dns_large_cpu_s" in r:
        big, ips = int(r["dns_large_domains"]), int(r["dns_large_ips"])
        rows.append(
            (
                f"DNS checks, one cycle of {big:,} domains x {ips} outbound IPs",
                f"CPU {r['dns_large_cpu_s']} s (wall {r['dns_large_wall_s']} s); mailflow_dns_spf_result "
                f"{int(r['dns_large_spf_series']):,} series, {r['dns_large_spf_mb']} MB",
                "5,000 x 10: CPU <= 75 s (a quarter core per 5-min interval); one SPF series per domain x IP",
                (_holds(r["dns_large_cpu_s"], 75) if big >= 5000 and ips >= 10 else None)
                if int(r["dns_large_spf_series"]) == big * ips
                else False,
            )
        )
    sample = r["dns_compare_domains"]
    if r.get("dns_checkdmarc") == "missing":
        rows.append(
            (
                f"exporter vs checkdmarc, {sample} domains, 1 thread",
                f"exporter {r['dns_ms_per_domain']} ms/domain, {r['dns_ms_per_query']} ms/query; checkdmarc "
                "skipped (not installed: python3 -m venv /work/venv-checkdmarc && "
                "/work/venv-checkdmarc/bin/pip install checkdmarc)",
                ">= 10x faster per domain",
                None,
            )
        )
    else:
        rows.append(
            (
                f"exporter vs checkdmarc {r['dns_checkdmarc_version']}, {sample} domains, 1 thread",
                f"{r['dns_ms_per_domain']} vs {r['dns_checkdmarc_ms_per_domain']} ms/domain "
                f"(x{r['dns_speedup_per_domain']}); {r['dns_ms_per_query']} vs {r['dns_checkdmarc_ms_per_query']} "
                f"ms/query (x{r['dns_speedup_per_query']}); queries/domain {r['dns_compare_queries_per_domain']} vs "
                f"{r['dns_checkdmarc_queries_per_domain']}; CPU ms/domain {r['dns_compare_cpu_ms_per_domain']} vs "
                f"{r['dns_checkdmarc_cpu_ms_per_domain']}",
                ">= 10x faster per domain (checkdmarc also checks SOA, NS, DNSSEC, BIMI, MTA-STS policy)",
                _holds(r["dns_speedup_per_domain"], 10, below=False),
            )
        )
    if "dns_path_checkdmarc_us_cpu" in r:
        rows.append(
            (
                f"DNS query path alone, {r['dns_path_queries']} questions asked once, nothing cached, 1 thread",
                f"exporter {r['dns_path_us_wall']} us wall / {r['dns_path_us_cpu']} us CPU per query, checkdmarc "
                f"{r['dns_path_checkdmarc_us_wall']} / {r['dns_path_checkdmarc_us_cpu']} "
                f"(x{r['dns_path_speedup_wall']} wall, x{r['dns_path_speedup_cpu']} CPU); the floor both share "
                f"(socket, send, receive; NSD's round trip) {r['dns_path_floor_us_wall']} us wall / "
                f"{r['dns_path_floor_us_cpu']} us CPU, CPU above it x{r['dns_path_speedup_above_floor_cpu']}",
                "reported beside the per-domain goal (see docs/performance.md, DNS checks)",
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
            "soak: shells the exporter could not close, closed later; opens refused at the 18-per-user limit",
            f"abandoned {r.get('soak_shells_abandoned', '?')}, reclaimed {r.get('soak_shells_reclaimed', '?')}; "
            f"refused {r.get('soak_shells_rejected', '?')}",
            "every abandoned shell closed (the shell count above returns to one per server)",
            None,
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
    if r["load_mode"] == "back_to_back":
        return [
            (
                f"load, {r['load_scrapers']} clients back to back x {r['load_seconds']} s, {r['load_servers']} servers",
                f"{r['load_requests']} requests, {r['load_errors']} errors; p50 {r['load_p50_ms']} / p99 "
                f"{r['load_p99_ms']} ms; {r['load_renders']} renders, {r['load_polls']} polls meanwhile",
                "zero errors",
                r["load_errors"] == "0",
            )
        ]
    return [
        (
            f"load, {r['load_scrapers']} Prometheus-like scrapers every {r['load_every']} s x {r['load_seconds']} s; "
            f"{r['load_servers']} servers x {r['load_queues']} queues, {r['load_domains']} domains, "
            f"{r['load_ips']} IPs ({int(r['load_samples']):,} series), all collectors polling",
            f"{r['load_requests']} scrapes, {r['load_errors']} errors; p50 {r['load_p50_ms']} / p90 "
            f"{r['load_p90_ms']} / p99 {r['load_p99_ms']} / max {r['load_max_ms']} ms; {r['load_renders']} renders; "
            f"{r['load_polls']} polls meanwhile, {r['load_collectors_silent']} of {r['load_collectors']} "
            "collectors silent",
            "p99 < 1 s, zero errors, every collector polled",
            float(r["load_p99_ms"]) < 1000 and r["load_errors"] == "0" and r["load_collectors_silent"] == "0",
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
    Bench("scrape", "bench_scrape.py", (), ("--sizes", "1000,10000", "--runs", "5"), _scrape),
    Bench("queues", "bench_queues.py", (), ("--servers", "10", "--queues", "200", "--cycles", "2"), _queues),
    *(
        Bench(
            "fanout" if transport == "basic-http" else f"fanout/{transport}",
            "bench_fanout.py",
            ("--transport", transport),
            ("--transport", transport, "--servers", "10", "--cycles", "2", "--latency", "0.05"),
            _fanout,
            needs="" if transport == "basic-http" else "krb5kdc",
        )
        for transport in TRANSPORTS
    ),
    *(
        Bench(
            "tracking" if transport == "basic-http" else f"tracking/{transport}",
            "bench_tracking.py",
            ("--transport", transport, "--repeat", "2"),
            (
                "--transport",
                transport,
                "--repeat",
                "1",
                "--per-minute",
                "100",
                "--minutes",
                "3",
                "--compare-minutes",
                "1",
            ),
            _tracking,
            needs="" if transport == "basic-http" else "krb5kdc",
        )
        for transport in TRANSPORTS
    ),
    Bench("dns", "bench_dns.py", (), ("--domains", "100", "--large", "0", "--compare", "30"), _dns, needs="nsd"),
    Bench("status", "bench_status.py", (), ("--runs", "5"), _status),
    Bench("soak", "bench_soak.py", (), ("--cycles", "100"), _soak, needs="nsd"),
    Bench("memory", "bench_memory.py", (), ("--servers", "10", "--hours", "0.5"), _memory),
    Bench(
        "load",
        "bench_load.py",
        (),
        ("--servers", "10", "--queues", "10", "--domains", "200", "--seconds", "45", "--every", "5"),
        _load,
        needs="nsd",
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
    unknown = wanted - {n for b in BENCHES for n in (b.name, b.group)}
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    print(f"machine: {machine()}")
    print(f"mode: {'quick (smoke sizes)' if args.quick else 'full'}\n")
    rows: list[tuple[str, str, str, str, str]] = []
    failures = 0
    missed = 0
    for bench in BENCHES:
        if wanted and bench.name not in wanted and bench.group not in wanted:
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
