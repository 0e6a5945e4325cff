"""The fan-out and tracking benchmarks really run over the transport they name (``--transport``).

A benchmark that silently fell back to Basic would report Kerberos numbers that are Basic's. This runs
both scripts at smoke sizes as processes, as ``bench/run_all.py`` does, and checks what the simulator
counted: Kerberos logons for the Kerberos transports only, sealed messages over plain HTTP with
Kerberos only (TLS protects the HTTPS session), one shell per server; then feeds the results to
run_all's row functions. No timing is asserted (the goals are ``bench/``'s business).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.run_all import _fanout, _tracking, parse_results
from bench.transports import DESCRIPTIONS, TRANSPORTS, kerberos_missing

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]


def run_bench(script: str, *args: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=150,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return parse_results(proc.stdout)


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    missing = kerberos_missing() if name.startswith("kerberos") else None
    if missing is not None:
        pytest.skip(f"{missing}; scripts/test.sh installs it")
    return name


def test_fanout_runs_over_the_named_transport(transport: str) -> None:
    r = run_bench(
        "bench_fanout.py",
        "--transport",
        transport,
        "--servers",
        "3",
        "--queues",
        "4",
        "--cycles",
        "2",
        "--latency",
        "0",
    )
    assert r["fanout_transport"] == transport
    assert r["fanout_shells"] == "3"  # one session per server, reused by the second cycle
    kerberos, sealed = int(r["fanout_logons"]), int(r["fanout_sealed"])
    if transport == "basic-http":
        assert (kerberos, sealed) == (0, 0)
    else:
        assert kerberos == 3  # one logon per server's connection, none again on the warm cycle
        # Over HTTP every request of both cycles arrived sealed (shell, commands, receives); over HTTPS none.
        assert (sealed >= 3 * 4) if transport == "kerberos-http-sealed" else sealed == 0
    ((what, _, goal, holds),) = _fanout(r, True)
    assert DESCRIPTIONS[transport] in what and goal and isinstance(holds, bool)


def test_tracking_compares_like_with_like_over_the_named_transport(transport: str) -> None:
    r = run_bench(
        "bench_tracking.py",
        *("--transport", transport, "--per-minute", "60", "--minutes", "2", "--compare-minutes", "1", "--repeat", "1"),
    )
    assert r["tracking_transport"] == transport
    polls = 5  # the default configuration, then four variants, each on its own server's log
    kerberos, sealed = int(r["tracking_logons"]), int(r["tracking_sealed"])
    if transport == "basic-http":
        assert (kerberos, sealed) == (0, 0)
    else:
        assert kerberos == polls
        assert (sealed >= 3 * polls) if transport == "kerberos-http-sealed" else sealed == 0
    # Every variant read a window of the same length: about a minute of 60 messages, several events each.
    counts = {
        key: int(r[f"tracking_cmp_{key}_events"]) for key in ("fast_select", "stock_select", "fast_full", "stock_full")
    }
    assert min(counts.values()) > 60 and max(counts.values()) < 1.5 * min(counts.values()), counts
    assert int(r["tracking_default_events"]) > 1.5 * counts["fast_select"]  # the two-minute window
    goal, comparison = _tracking(r, True)
    assert DESCRIPTIONS[transport] in goal[0] and isinstance(goal[3], bool)
    assert "Select-Object" in comparison[1] and "full objects" in comparison[1] and comparison[3] is None
