"""Bounds under hostile servers: memory after oversized answers, threads and fds after dripping ones,
log volume of a malformed huge answer, and a healthy server's polls next to two slow ones.

The simulator runs in a child process (its own memory is not the exporter's); the exporter polls it
from this process, whose resident memory (VmRSS) is sampled every 20 ms.

    python bench/bench_bounds.py [--megabytes 100] [--queues 2000] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import logging
import multiprocessing as mp
import os
import subprocess
import sys
import threading
import time
import urllib.request
from multiprocessing.connection import Connection
from typing import Any

from exporter.settings import COLLECTOR_NAMES


def run_simulator(queues: int, conn: Connection) -> None:
    from exporter.simulator import Simulator
    from exporter.simulator.scenario import build_scenario

    scenario = build_scenario(3, queues, moving=False)
    sim = Simulator(scenario, host="127.0.0.1", tls=False, control_port=0)
    sim.start()
    endpoints = {s.name: sim.endpoint(s.name) for s in scenario.servers}
    conn.send({"endpoints": endpoints, "user": next(iter(scenario.users.items())), "control": sim.control_url})
    conn.recv()  # "stop"
    sim.stop()


class Sim:
    """The simulator in the child process, through its control API."""

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.info['control']}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=600) as resp:
            return json.loads(resp.read())

    def set(self, server: str, kind: str, **kwargs: Any) -> None:
        self._call("POST", "/sim/faults", {"server": server, "kind": kind, **kwargs})

    def clear(self) -> None:
        self._call("DELETE", "/sim/faults")

    def sent(self, server: str = "EX01") -> int:
        return int(self._call("GET", "/sim/stats")["servers"][server]["output_bytes_sent"])


def make_service(
    info: dict[str, Any], collectors: tuple[str, ...] = ("queues",), interval: float = 60.0, **defaults: Any
) -> Any:
    from exporter.service import Service
    from exporter.settings import Settings

    user, password = info["user"]
    settings = Settings.model_validate(
        {
            "exchange": {
                "defaults": {
                    "auth": "basic",
                    "username": user,
                    "password": password,
                    "allow_insecure_basic": True,
                    "call_timeout": 60,
                    **defaults,
                },
                "servers": [{"name": n, "host": h, "port": p} for n, (h, p) in info["endpoints"].items()],
            },
            "collectors": {n: {"enabled": n in collectors, "interval": interval} for n in COLLECTOR_NAMES},
            "dns": {"enabled": False},
            "scheduler": {"max_workers": 4, "jitter": 0.1, "first_run_spread": 0.5},
        }
    )
    return Service(settings)


class Rss:
    """Samples this process' resident memory every 20 ms; ``peak`` since the last ``reset``."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True, name="rss-sampler").start()

    @staticmethod
    def now() -> float:
        with open("/proc/self/status") as status:
            line = next(row for row in status if row.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.now())

    def reset(self) -> float:
        self.peak = self.now()
        return self.peak


def poll(rss: Rss, svc: Any, target: str = "EX01") -> tuple[Any, float, float, float]:
    """One queue poll of ``target``: (snapshot, RSS before, peak RSS, seconds)."""
    collector = next(c for c in svc.collectors if c.name == "queues")
    before = rss.reset()
    started = time.perf_counter()
    snap = svc.poll_once(collector, target)
    took = time.perf_counter() - started
    gc.collect()
    time.sleep(0.3)
    return snap, before, rss.peak, took


def memory_case(info: dict[str, Any], case: str, megabytes: float, cap: str) -> None:
    """One oversized answer in a fresh process: RSS before, at its peak, after, and once the result is gone."""
    from exporter.exchange import bounds

    sim = Sim(info)
    if case == "notrim":
        bounds._TRIM = None  # what the exporter did before: freed memory stays with the process
    limits = {"max_response_bytes": cap} if case in ("capped", "raised") else {}
    svc = make_service(info, **limits)
    rss = Rss()
    snap, _b, _p, _t = poll(rss, svc)
    assert snap is not None and snap.ok, snap
    sim.set("EX01", "oversize", cmdlet="Get-Queue", megabytes=megabytes)
    sent = sim.sent()
    snap, before, peak, took = poll(rss, svc)
    after = rss.now()
    read = (sim.sent() - sent) / 1e6
    outcome = "ok" if snap.ok else snap.reason
    del snap
    svc.store.forget("queues", "EX01")  # a kept result is data, not a leak: drop it
    gc.collect()
    if bounds._TRIM is not None:
        bounds._TRIM(0)
    dropped = rss.now()
    sim.clear()
    svc.stop()
    print(
        f"RESULT bounds_{case}_outcome={outcome} bounds_{case}_s={took:.1f} bounds_{case}_read_mb={read:.0f} "
        f"bounds_{case}_before_mib={before:.0f} bounds_{case}_peak_mib={peak:.0f} "
        f"bounds_{case}_after_mib={after:.0f} bounds_{case}_dropped_mib={dropped:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=float, default=100.0, help="size of the oversized answer")
    parser.add_argument("--queues", type=int, default=2000, help="Get-Queue objects of a normal answer")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--memory", help=argparse.SUPPRESS)  # internal: one memory case in this process
    parser.add_argument("--info", help=argparse.SUPPRESS)
    parser.add_argument("--cap", default="32MiB", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory:
        memory_case(json.loads(args.info), args.memory, args.megabytes, args.cap)
        return
    if args.quick:
        args.megabytes, args.queues = 10.0, 200
    cap = "4MiB" if args.quick else "32MiB"

    from exporter.logs import setup_logging

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=run_simulator, args=(args.queues, child), daemon=True)
    proc.start()
    info: dict[str, Any] = parent.recv()
    sim = Sim(info)
    results: dict[str, str] = {}

    # --- memory: each case in a fresh process, with glibc malloc (as the image runs) or CPython's pymalloc
    cases = (
        ("default", "malloc", ""),
        ("notrim", "malloc", ""),
        ("default", "pymalloc", ""),
        ("capped", "malloc", cap),
        ("raised", "malloc", "256MiB"),
    )
    for case, allocator, limit in cases:
        label = f"max_response_bytes {limit or '64MiB (default)'}" + (", no malloc_trim" if case == "notrim" else "")
        out = subprocess.run(
            [sys.executable, __file__, "--memory", case, "--info", json.dumps(info), "--megabytes", str(args.megabytes),
             "--cap", limit or cap],
            capture_output=True, text=True, check=True, env={**os.environ, "PYTHONMALLOC": allocator},
        )  # fmt: skip
        line = next(row for row in out.stdout.splitlines() if row.startswith("RESULT "))
        found = {
            k.replace("bounds_", f"bounds_{allocator}_"): v for k, v in (i.split("=", 1) for i in line.split()[1:])
        }
        results.update(found)
        key = f"bounds_{allocator}_{case}"
        print(
            f"{args.megabytes:g} MB Get-Queue answer, {label}, {allocator}: {found[f'{key}_outcome']} in "
            f"{found[f'{key}_s']}s, read {found[f'{key}_read_mb']} MB; RSS {found[f'{key}_before_mib']} -> peak "
            f"{found[f'{key}_peak_mib']} -> after {found[f'{key}_after_mib']} -> result dropped "
            f"{found[f'{key}_dropped_mib']} MiB"
        )
    rss = Rss()

    # --- a dripping server: threads and fds --------------------------------------------------------------
    drip = make_service(info, call_timeout=2)
    poll(rss, drip)
    gc.collect()
    threads0, fds0 = threading.active_count(), len(os.listdir("/proc/self/fd"))
    sim.set("EX01", "drip", cmdlet="Get-Queue", seconds=1.0)
    durations = []
    for _ in range(5):
        snap, _b, _p, took = poll(rss, drip)
        assert snap.reason == "timeout", snap
        durations.append(took)
    threads1, fds1 = threading.active_count(), len(os.listdir("/proc/self/fd"))
    sim.clear()
    print(
        f"drip (1 byte/s), 5 polls, call_timeout 2s: {min(durations):.2f}-{max(durations):.2f}s each; "
        f"threads {threads0} -> {threads1}, fds {fds0} -> {fds1}"
    )
    results.update(
        bounds_drip_poll_max_s=f"{max(durations):.2f}",
        bounds_drip_threads=f"{threads0}->{threads1}",
        bounds_drip_fds=f"{fds0}->{fds1}",
    )

    # --- a malformed huge answer at debug level ----------------------------------------------------------
    size = 20.0 if not args.quick else 5.0
    sim.set("EX01", "oversize", cmdlet="Get-Queue", megabytes=size)
    sim.set("EX01", "malformed_clixml", cmdlet="Get-Queue", message="truncated")
    log_svc = make_service(info)
    sink = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    real_stderr, sys.stderr = sys.stderr, sink
    try:
        setup_logging("debug")
        started = time.perf_counter()
        snap, _b, _p, _t = poll(rss, log_svc)
        took = time.perf_counter() - started
    finally:
        sys.stderr = real_stderr
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    text = sink.getvalue()
    longest = max((len(line) for line in text.splitlines()), default=0)
    sim.clear()
    print(
        f"malformed {size:g} MB answer at --log.level debug: {snap.reason} in {took:.1f}s, "
        f"{len(text) / 1e6:.2f} MB of log in {len(text.splitlines())} lines, longest {longest} characters"
    )
    results.update(bounds_log_mb=f"{len(text) / 1e6:.2f}", bounds_log_longest=str(longest))

    # --- two slow servers next to a healthy one (the real scheduler) -------------------------------------
    window = 30.0 if not args.quick else 10.0
    interval = 2.0
    fair = make_service(
        info, ("queues", "components", "certificates", "service_health"), interval=interval, call_timeout=5
    )
    logging.getLogger("apscheduler").setLevel(logging.ERROR)  # its skipped and missed runs are expected here
    fair.start(serve_http=False)
    time.sleep(3)
    sim.set("EX02", "hang")
    sim.set("EX03", "drip", seconds=0.5)
    seen: dict[tuple[str, str], set[float]] = {}
    end = time.monotonic() + window
    while time.monotonic() < end:
        for key, state in fair.store.states().items():
            if state.last_success is not None:
                seen.setdefault(key, set()).add(state.last_success.finished)
        time.sleep(0.05)
    fair.stop()
    sim.clear()
    healthy = [len(v) - 1 for k, v in seen.items() if k[1] == "EX01"]
    expected = window / interval
    print(
        f"EX02 hung, EX03 dripping, {window:g}s at {interval:g}s intervals, 4 workers: EX01's collectors "
        f"succeeded {min(healthy)}-{max(healthy)} times each (expected about {expected:g})"
    )
    results.update(bounds_fair_min=str(min(healthy)), bounds_fair_expected=f"{expected:g}")

    for svc in (drip, log_svc):
        svc.stop()
    parent.send("stop")
    proc.join(timeout=30)
    print("RESULT " + " ".join(f"{k}={v}" for k, v in results.items()))


if __name__ == "__main__":
    main()
