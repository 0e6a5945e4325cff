"""Fault matrix: every fault kind planted on ONE target while the exporter runs on its real scheduler.

For each fault the test checks, against a running Service that serves HTTP:

1. the faulted target reports down with its specific reason (``mailflow_collector_errors_total``); for
   checks whose failure is data rather than a failed poll (a SERVFAIL on one DNS check, an MX host that
   hangs up) the check's own error metrics say so instead;
2. every other target keeps its schedule (its served last-success timestamp keeps advancing);
3. ``GET /metrics`` answers throughout, under a generous bound (real latencies are in bench/);
4. after healing, the target is up again within one interval (+ slack);
5. nothing leaks: the simulator's open shells equal the exporter's live sessions, and the process'
   threads and file descriptors are back near where they were before the fault.

Run with ``-s`` to see the per-fault numbers (detection, recovery, max /metrics latency). The long
soak (1,000 poll cycles with faults toggling) is ``bench/bench_soak.py``.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pypsrp.powershell import RunspacePool

from exporter.netsim.demo_net import DNSBL_ZONE, OUTBOUND, demo_zones, mx_hosts
from exporter.netsim.dns_server import DemoDNS
from exporter.netsim.smtp_server import DemoSMTP
from exporter.service import Service
from exporter.settings import Settings
from exporter.simulator import Simulator
from exporter.simulator.tls import generate_tls
from tests.integration.conftest import SimFactory, only_collectors, raw_pool, settings_for, small_org

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

INTERVAL = 1.0  # every collector's poll interval here
CALL_TIMEOUT = 1.0  # exchange.defaults.call_timeout: bounds the hang and slow-response cases
SCRAPE_BOUND = 2.0  # a correctness guard, not a performance target (measured numbers: bench/bench_load.py)
DETECT_WITHIN = INTERVAL + CALL_TIMEOUT + 3.0
RECOVER_WITHIN = INTERVAL + 2.0  # one interval plus slack (the healing poll itself, jitter, a busy CI box)
SCHEDULE_GAP = 2 * INTERVAL + 1.0  # the most a healthy target's successes may be apart during the fault
SERVERS = ("EX01", "EX02", "EX03")
FAULTED = "EX02"
LAST_SUCCESS = re.compile(
    r'^mailflow_collector_last_success_timestamp_seconds\{collector="([^"]*)",target="([^"]*)"\} (\S+)$'
)

Key = tuple[str, str]  # (collector, target)


def wait_until(predicate: Callable[[], Any], timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Scraper:
    """GETs /metrics every 100 ms in a thread: latencies, failures and the served last-success times."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[tuple[float, float]] = []  # (monotonic start, seconds)
        self.failures: list[str] = []
        self.successes: dict[Key, list[tuple[float, float]]] = {}  # key -> [(monotonic seen, value)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-matrix-scraper", daemon=True)

    def start(self) -> Scraper:
        self._thread.start()
        assert wait_until(lambda: self.latencies or self.failures, 10)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=10) as resp:
                    body = resp.read().decode()
                    status = resp.status
            except Exception as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            else:
                self.latencies.append((started, time.monotonic() - started))
                if status != 200:
                    self.failures.append(f"HTTP {status}")
                for line in body.splitlines():
                    m = LAST_SUCCESS.match(line)
                    if m:
                        self.successes.setdefault((m[1], m[2]), []).append((started, float(m[3])))
            self._stop.wait(0.1)

    def max_latency(self, since: float = 0.0) -> float:
        return max((s for t, s in self.latencies if t >= since), default=0.0)

    def largest_gap(self, key: Key, start: float, end: float) -> float:
        """The longest time within [start, end] during which the served last-success value did not change."""
        seen = self.successes.get(key, [])
        changes = [t for i, (t, v) in enumerate(seen) if i == 0 or v != seen[i - 1][1]]
        marks = [start] + [t for t in changes if start < t < end] + [end]
        return max(b - a for a, b in itertools.pairwise(marks))


@dataclass
class Env:
    """One running exporter and the knobs of the case's fault."""

    service: Service
    key: Key  # the faulted (collector, target)
    others: list[Key]
    plant: Callable[[], None]
    heal: Callable[[], None]
    down: Callable[[], bool]  # the fault is visible
    up: Callable[[float], bool]  # healthy again after the given wall-clock time
    sessions_settled: Callable[[], bool] = lambda: True
    sessions_detail: Callable[[], Any] = lambda: None
    during: Callable[[], None] = lambda: None  # extra assertions while the fault is on
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def value(self, name: str, **labels: str) -> float | None:
        return self.service.registry.get_sample_value(name, labels)

    def errors(self, reason: str) -> float:
        return self.service.store.errors().get((*self.key, reason), 0)


@dataclass(frozen=True)
class Case:
    kind: str
    reason: str | None  # expected errors_total reason; None: the fault must not fail a poll
    cmdlet: str | None = None
    seconds: float | None = None
    family: str = "exchange"  # exchange | dns | smtp
    megabytes: float | None = None


CASES = [
    Case("refused", "connection"),
    Case("down", "connection"),  # the whole server: refused like above, plus consequences for the others
    Case("hang", "timeout"),  # every request of the endpoint accepted and never answered
    Case("latency", "timeout", seconds=0.6),  # slow responses: a call is >= 2 requests > call_timeout
    Case("cmdlet_latency", "timeout", cmdlet="Get-Queue", seconds=1.6),  # a slow cmdlet
    Case("http401", "auth"),
    Case("http500", "http_error"),
    Case("wsman_fault", "wsman_fault"),
    Case("session_limit", "session_limit"),  # the 18-session PowerShellMaxConcurrency throttle
    Case("malformed_clixml", "parse", cmdlet="Get-Queue"),
    Case("error_record", "cmdlet_error", cmdlet="Get-Queue"),
    Case("shell_expiry", None),  # mid-poll: the exporter reopens transparently
    Case("drip", "timeout", cmdlet="Get-Queue", seconds=0.3),  # one byte at a time: no read ever times out
    Case("oversize", "too_large", cmdlet="Get-Queue", megabytes=2),  # over max_response_bytes (1 MiB here)
    Case("servfail_mx", None, family="dns"),  # one check fails: data, not a failed poll
    Case("servfail", "dns", family="dns"),  # every lookup of the domain fails
    Case("timeout", "dns", family="dns"),
    Case("reset_after_banner", None, family="smtp"),  # the MX host hangs up after its banner
]


# --- Exchange ------------------------------------------------------------------------------------


def held_pools(sim: Simulator, count: int, deadline: float) -> list[RunspacePool]:
    """Open ``count`` sessions to the faulted server as the exporter's user (another tool hogging the
    account), retrying while the exporter itself still holds a slot."""
    held: list[RunspacePool] = []
    while len(held) < count and time.monotonic() < deadline:
        pool = raw_pool(sim, FAULTED)
        try:
            pool.open()
        except Exception:
            pool.connection.close()
            time.sleep(0.1)
            continue
        held.append(pool)
    return held


def exchange_env(case: Case, sim_factory: SimFactory) -> Env:
    sim, scenario = sim_factory(small_org(SERVERS))
    settings = settings_for(
        sim,
        scenario,
        overrides={
            "exchange": {
                "defaults": {"call_timeout": CALL_TIMEOUT, "connect_timeout": 1, "max_response_bytes": "1MiB"},
                "auth_failure_backoff": "100ms",  # doubles per failed logon; stays under one interval here
            },
            "collectors": only_collectors(queues={"interval": INTERVAL}),
            "scheduler": {"jitter": 0.05, "first_run_spread": 0.1},
        },
    )
    service = Service(settings)
    held: list[RunspacePool] = []
    created: list[int] = []  # shells created on the faulted server before the shell expiry
    endpoints = [f"{h}:{p}" for h, p in (sim.endpoint(s) for s in SERVERS)]
    account = settings.exchange.defaults.username.lower() if settings.exchange.defaults.username else ""
    key = ("queues", FAULTED)

    def plant() -> None:
        if case.kind == "session_limit":
            # Knock the exporter's session out (a 500 on its Get-Queue discards it), take every slot the
            # server allows for this user, then heal the 500: the exporter's next logon is throttled.
            sim.faults.set(FAULTED, "http500", cmdlet="Get-Queue")
            held.extend(held_pools(sim, scenario.session_limit, time.monotonic() + 15))
            assert len(held) == scenario.session_limit, "could not take every session slot"
            sim.faults.clear(FAULTED)
        elif case.kind == "shell_expiry":
            # Expire the shells while a Get-Queue is running on them (it takes 0.3 s server-side).
            sim.faults.set(FAULTED, "cmdlet_latency", cmdlet="Get-Queue", seconds=0.3)
            created.append(sim.stats()["servers"][FAULTED]["shells_created"])
            commands = sim.stats()["servers"][FAULTED]["commands"]
            assert wait_until(lambda: sim.stats()["servers"][FAULTED]["commands"] > commands, 5)
            time.sleep(0.1)
            sim.faults.set(FAULTED, "shell_expiry")
        else:
            sim.faults.set(FAULTED, case.kind, cmdlet=case.cmdlet, seconds=case.seconds, megabytes=case.megabytes)

    def heal() -> None:
        sim.faults.clear()
        for pool in held:
            with contextlib.suppress(Exception):
                pool.close()
            pool.connection.close()
        held.clear()

    def down() -> bool:
        if case.kind == "shell_expiry":
            return sim.stats()["servers"][FAULTED]["shells_expired"] > 0
        return (
            env.errors(case.reason or "") > 0
            and env.value("mailflow_collector_up", collector="queues", target=FAULTED) == 0
        )

    def up(after: float) -> bool:
        last = service.store.states()[key].last
        return last.ok and last.finished > after

    def during() -> None:
        if case.kind == "shell_expiry":  # the poll in flight re-opened a shell and succeeded
            assert sim.stats()["servers"][FAULTED]["shells_created"] > created[0]
            assert service.store.states()[key].last.ok

    def sessions_in_use() -> int:
        return sum(service.sessions.limiter.in_use(account, e) for e in endpoints)

    def retained_pipelines() -> int:  # finished calls must not keep their PowerShell object (and output)
        return sum(len(s._pool.pipelines) for s in service.sessions.sessions() if s._pool is not None)

    def sessions_settled() -> bool:
        in_use = sessions_in_use()
        shells = sim.stats()["shells_open"]
        return in_use == len(SERVERS) and shells == in_use and not retained_pipelines()

    def sessions_detail() -> Any:
        return {
            "exporter_in_use": sessions_in_use(),
            "retained_pipelines": retained_pipelines(),
            "simulator": sim.stats()["servers"],
        }

    env = Env(
        service,
        key,
        [("queues", s) for s in SERVERS if s != FAULTED],
        plant,
        heal,
        down,
        up,
        sessions_settled,
        sessions_detail,
        during,
        cleanup=[heal],
    )
    return env


# --- DNS and SMTP --------------------------------------------------------------------------------

FAULT_DOMAIN = "fabrikam.sim"
GOOD_MX, FAULT_MX = mx_hosts()  # mail1.contoso.sim on 127.0.0.1, mail2.contoso.sim on 127.0.0.2


def pool_threads() -> int:
    """Workers of concurrent.futures pools (the scheduler's executors): bounded, kept between jobs."""
    return sum(1 for t in threading.enumerate() if t.name.startswith("ThreadPoolExecutor-"))


def other_threads() -> int:
    """Every other live thread: these must come back to their number before the fault."""
    return threading.active_count() - pool_threads()


def outside_env(case: Case, tmp_path: Path) -> Env:
    zones = demo_zones()
    zones["contoso.sim"] = zones["contoso.sim"].replace("mail2 IN A 127.0.0.1", "mail2 IN A 127.0.0.2")
    dns_server = DemoDNS(zones).start()
    tls = generate_tls(tmp_path / "smtp-tls", mx_hosts(), days=90)
    good = DemoSMTP("127.0.0.1", 0, GOOD_MX, tls.cert_file, tls.key_file).start()
    smtp_port = good.port
    smtp: dict[str, DemoSMTP] = {"mx2": DemoSMTP("127.0.0.2", smtp_port, FAULT_MX, tls.cert_file, tls.key_file).start()}

    def restart_mx2(**faults: Any) -> None:
        smtp["mx2"].stop()
        smtp["mx2"] = DemoSMTP("127.0.0.2", smtp_port, FAULT_MX, tls.cert_file, tls.key_file, **faults).start()

    settings = Settings.model_validate(
        {
            "state_dir": str(tmp_path / "state"),
            "exchange": {"servers": []},
            "collectors": only_collectors(),
            "scheduler": {"jitter": 0.05, "first_run_spread": 0.1},
            "web": {"listen_address": "127.0.0.1:0"},
            "dns": {
                "interval": INTERVAL,
                "resolvers": [dns_server.address],
                "port": dns_server.port,
                "timeout": 0.3,
                "domains": ["contoso.sim", FAULT_DOMAIN],
                "use_accepted_domains": False,
                "use_send_connector_ips": False,
                "outbound_ips": [{"ip": o.ip, "helo": o.helo} for o in OUTBOUND],
                "blocklists": [DNSBL_ZONE],
                "smtp": {
                    "enabled": case.family == "smtp",
                    "interval": INTERVAL,
                    "timeout": 1,
                    "port": smtp_port,
                    "ca_bundle": str(tls.ca_file),
                    "helo_name": "probe.contoso.sim",
                    "probe_mx": False,
                    "hosts": [GOOD_MX, FAULT_MX],
                },
            },
        }
    )
    service = Service(settings)

    if case.family == "smtp":
        key = ("smtp", FAULT_MX)
        others = [("smtp", GOOD_MX), ("dns_domains", "contoso.sim"), ("dns_domains", FAULT_DOMAIN)]
    else:
        key = ("dns_domains", FAULT_DOMAIN)
        others = [("dns_domains", "contoso.sim"), *(("dns_ips", o.ip) for o in OUTBOUND)]

    def plant() -> None:
        if case.family == "smtp":
            restart_mx2(reset_after_banner=True)
        elif case.kind == "servfail_mx":
            dns_server.faults.set(FAULT_DOMAIN, "servfail", rtype="MX")
        else:
            dns_server.faults.set(f"*{FAULT_DOMAIN}", case.kind)  # the domain and every name below it

    def heal() -> None:
        if case.family == "smtp":
            restart_mx2()
        else:
            dns_server.faults.clear()

    def down() -> bool:
        if case.family == "smtp":
            return (
                env.value("mailflow_smtp_probe_success", host=FAULT_MX) == 0
                and env.value("mailflow_smtp_probe_error_info", host=FAULT_MX, reason="ehlo") == 1
            )
        if case.kind == "servfail_mx":
            return (
                env.value("mailflow_dns_check_success", domain=FAULT_DOMAIN, check="mx") == 0
                and env.value("mailflow_dns_check_error_info", domain=FAULT_DOMAIN, check="mx", reason="servfail") == 1
                and env.value("mailflow_dns_mx_records", domain=FAULT_DOMAIN) is None  # unknown, not 0
            )
        return (
            env.errors("dns") > 0
            and env.value("mailflow_collector_up", collector="dns_domains", target=FAULT_DOMAIN) == 0
        )

    def up(after: float) -> bool:
        last = service.store.states()[key].last
        if not (last.ok and last.finished > after):
            return False
        if case.family == "smtp":
            return env.value("mailflow_smtp_probe_success", host=FAULT_MX) == 1
        return env.value("mailflow_dns_check_success", domain=FAULT_DOMAIN, check="mx") == 1

    def stop_servers() -> None:
        for server in smtp.values():
            server.stop()
        good.stop()
        dns_server.stop()

    env = Env(service, key, others, plant, heal, down, up, cleanup=[stop_servers])
    return env


# --- the matrix ----------------------------------------------------------------------------------


@pytest.fixture
def make_env(sim_factory: SimFactory, tmp_path: Path) -> Iterator[Callable[[Case], Env]]:
    made: list[Env] = []

    def make(case: Case) -> Env:
        env = exchange_env(case, sim_factory) if case.family == "exchange" else outside_env(case, tmp_path)
        made.append(env)
        return env

    yield make
    for env in made:
        env.service.stop()
        for fn in env.cleanup:
            fn()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.family}-{c.kind}" for c in CASES])
def test_fault_is_reported_contained_and_recovered(case: Case, make_env: Callable[[Case], Env]) -> None:
    env = make_env(case)
    service = env.service
    service.start()
    assert service.web is not None
    keys = [env.key, *env.others]
    assert wait_until(
        lambda: all(k in service.store.states() and service.store.states()[k].last.ok for k in keys), 15
    ), {k: service.store.states().get(k) for k in keys}
    errors_before = dict(service.store.errors())
    scraper = Scraper(f"http://127.0.0.1:{service.web.port}/metrics").start()
    try:
        time.sleep(0.3)  # the scraper's and the web server's own threads and sockets are part of the baseline
        threads_before, fds_before = other_threads(), open_fds()
        # The scheduler's executors start a worker per concurrent job on demand and keep it (bounded by
        # max_workers); a fault that makes jobs overlap grows them to that bound, which is not a leak.
        pool_bound = service.settings.scheduler.max_workers + service.settings.dns.concurrency

        planted = time.monotonic()
        env.plant()
        assert wait_until(env.down, DETECT_WITHIN), (case, service.store.states()[env.key].last)
        detected = time.monotonic() - planted
        time.sleep(1.5 * INTERVAL)  # keep it broken a while: others must keep polling meanwhile
        if case.reason is None:  # nothing may have failed a poll of the faulted target
            assert service.store.errors() == errors_before, service.store.errors()
        else:
            assert service.store.states()[env.key].last.reason == case.reason
            reasons = {r for (c, t, r), n in service.store.errors().items() if (c, t) == env.key and n}
            assert case.reason in reasons, reasons
        for other in env.others:  # nobody else failed, everybody else kept the schedule
            assert service.store.states()[other].last.ok, (other, service.store.states()[other].last)
            gap = scraper.largest_gap(other, planted, time.monotonic())
            assert gap < SCHEDULE_GAP, (other, gap)
        assert not [k for k in service.store.errors() if k[:2] in env.others]
        env.during()

        healed_at, healed = time.time(), time.monotonic()
        env.heal()
        assert wait_until(lambda: env.up(healed_at), RECOVER_WITHIN + 3.0), service.store.states()[env.key].last
        recovered = service.store.states()[env.key].last.finished - healed_at
        assert recovered <= RECOVER_WITHIN, recovered
        scrape_max = scraper.max_latency(planted)
        assert not scraper.failures, scraper.failures[:3]
        assert scrape_max < SCRAPE_BOUND, scrape_max

        # Nothing left behind: sessions on both sides agree, threads and fds back near the baseline
        # (hung calls end when the hang is cleared; discarded sessions are closed in the background).
        assert wait_until(env.sessions_settled, 20, 0.1), env.sessions_detail()

        def back_to_baseline() -> bool:
            # A call abandoned at its deadline may open one more keep-alive connection before it ends; pypsrp's
            # reference cycles keep that socket until the next full garbage collection: run it now.
            gc.collect()
            return (
                other_threads() <= threads_before + 2 and pool_threads() <= pool_bound and open_fds() <= fds_before + 4
            )

        # A leak never settles; a loaded machine (CI's 2 cores) may need longer than an idle one to end
        # the healed target's last threads, so the grace period is generous and ends as soon as it settles.
        settled = wait_until(back_to_baseline, 40, 0.2)
        assert settled, (
            other_threads(),
            threads_before,
            pool_threads(),
            pool_bound,
            open_fds(),
            fds_before,
            sorted(t.name for t in threading.enumerate()),
        )
        print(
            f"\nFAULT {case.family}-{case.kind}: reason={case.reason or '-'} detected={detected:.2f}s "
            f"recovered={recovered:.2f}s scrape_max={scrape_max * 1000:.0f}ms scrapes={len(scraper.latencies)} "
            f"threads {threads_before}->{other_threads()} (+{pool_threads()} pool workers) "
            f"fds {fds_before}->{open_fds()} "
            f"healed_in={time.monotonic() - healed:.2f}s"
        )
    finally:
        scraper.stop()
