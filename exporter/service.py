"""Wires settings to sessions, collectors, the scheduler, the store and the HTTP server."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.jobstores.base import ConflictingIdError
from apscheduler.schedulers.background import BackgroundScheduler
from pypsrp.wsman import WSMan

from exporter.collector import Collector, TargetIndex
from exporter.dnscheck.baseline import BaselineStore
from exporter.dnscheck.collectors import EXECUTOR as DNS_EXECUTOR
from exporter.dnscheck.collectors import dns_collectors
from exporter.dnscheck.resolver import DnsClient
from exporter.errors import CollectorError
from exporter.exchange.accepted_domains import AcceptedDomainCollector
from exporter.exchange.address_policies import AddressPolicyCollector
from exporter.exchange.back_pressure import BackPressureCollector
from exporter.exchange.certificates import CertificateCollector
from exporter.exchange.cmdlet_collector import ORG_EXECUTOR, CappedServerCollector
from exporter.exchange.components import ComponentCollector
from exporter.exchange.database_copies import DatabaseCopyCollector
from exporter.exchange.discovery import DiscoveryCollector
from exporter.exchange.queues import QueueCollector
from exporter.exchange.receive_connectors import ReceiveConnectorCollector
from exporter.exchange.send_connectors import SendConnectorCollector
from exporter.exchange.server_clock import ClockReading
from exporter.exchange.service_health import ServiceHealthCollector
from exporter.exchange.session import AuthBackoff, SessionManager
from exporter.exchange.targets import ExchangeTargets
from exporter.exchange.tracking import TrackingCollector, TrackingOptions, WatermarkStore
from exporter.exchange.transport_dns import TransportDnsCollector
from exporter.exchange.transport_rules import TransportRuleCollector
from exporter.lanes import FairExecutor
from exporter.metrics import MailflowCollector, build_registry
from exporter.probe.collector import EXECUTOR as PROBE_EXECUTOR
from exporter.probe.collector import MailflowProbeCollector
from exporter.settings import ResolvedServer, Settings
from exporter.sharding import ShardMetrics, shard_collectors, shard_from
from exporter.store import Snapshot, SnapshotStore
from exporter.triage.facts import facts_from_store
from exporter.triage.model import Report
from exporter.triage.report import build_report
from exporter.web import WebApp, WebServer

log = logging.getLogger(__name__)
RECONCILE_SECONDS = 10.0
#: After the first successful poll of a collector other collectors take their targets from (discovery,
#: accepted domains, send connectors, the domain checks' MX hosts), reconcile this soon instead of at the
#: next periodic reconcile; first polls finishing meanwhile share that one reconcile.
RECONCILE_SOON_SECONDS = 1.0
#: ``progress(done, total, running)`` after each poll of ``poll_all``: how many finished, how many there
#: are, and the "collector target" of the polls still running.
Progress = Callable[[int, int, list[str]], None]


def build_collectors(
    settings: Settings,
    targets: ExchangeTargets,
    clock: Callable[[], float] = time.time,
    latest: Callable[[str], Mapping[str, Any]] | None = None,
) -> list[Collector]:
    """The enabled collectors, in a stable order. ``latest(name)`` gives a collector's fresh results
    (the DNS checks take accepted domains, send-connector IPs and MX hosts from it)."""
    collectors: list[Collector] = []
    if settings.exchange.discovery.enabled:
        collectors.append(DiscoveryCollector(targets, settings.exchange.discovery.interval))
    q = settings.collectors.queues
    if q.enabled:
        collectors.append(QueueCollector(targets, q.interval, q.max_next_hop_domains, q.result_size, q.max_last_errors))
    t = settings.collectors.tracking
    if t.enabled:
        options = TrackingOptions(
            interval=t.interval,
            overlap=t.overlap,
            max_window=t.max_window,
            initial_lookback=t.initial_lookback,
            stuck_after=t.stuck_after,
            forget_after=t.forget_after,
            max_tracked_messages=t.max_tracked_messages,
            buckets=tuple(t.latency_buckets),
            result_size=t.result_size,
            select=t.select_properties,
            max_failure_codes=t.max_failure_codes,
            max_clock_step=t.max_clock_step,
        )
        marks = WatermarkStore(settings.state_dir / "tracking-watermarks.json")
        collectors.append(TrackingCollector(targets, options, marks, clock))
    collectors += audit_collectors(settings, targets)
    probe = settings.collectors.mailflow_probe
    if probe.enabled and (probe.internal or probe.inbound):
        dns = DnsClient(tuple(settings.dns.resolvers), settings.dns.port, settings.dns.timeout)
        collectors.append(MailflowProbeCollector(targets, probe, dns))
    baselines = BaselineStore(settings.state_dir / "dns-baseline.json", settings.dns.drift_accept_after, clock)
    collectors += dns_collectors(settings.dns, latest or (lambda _name: {}), baselines)
    return collectors


def audit_collectors(settings: Settings, targets: ExchangeTargets) -> list[Collector]:
    """The configuration and health collectors that are enabled (slower intervals than queues)."""
    c = settings.collectors
    out: list[Collector] = []
    r = c.receive_connectors
    if r.enabled:
        out.append(
            ReceiveConnectorCollector(
                targets, r.interval, r.trusted_networks, r.check_ad_permissions, r.expect, r.max_connectors
            )
        )
    s = c.send_connectors
    if s.enabled:
        out.append(SendConnectorCollector(targets, s.interval, s.expect, s.max_connectors))
    if c.accepted_domains.enabled:
        out.append(AcceptedDomainCollector(targets, c.accepted_domains.interval, c.accepted_domains.max_domains))
    if c.transport_rules.enabled:
        t = c.transport_rules
        out.append(TransportRuleCollector(targets, t.interval, t.max_rules, t.expect))
    e = c.email_address_policies
    if e.enabled:
        out.append(AddressPolicyCollector(targets, e.interval, e.max_policies))
    if c.transport_dns.enabled:
        out.append(TransportDnsCollector(targets, c.transport_dns.interval, c.transport_dns.max_dns_servers))
    if c.components.enabled:
        out.append(
            ComponentCollector(targets, c.components.interval, c.components.components, c.components.max_components)
        )
    simple: list[tuple[Any, type[CappedServerCollector], int]] = [
        (c.back_pressure, BackPressureCollector, c.back_pressure.max_meters),
        (c.database_copies, DatabaseCopyCollector, c.database_copies.max_databases),
        (c.certificates, CertificateCollector, c.certificates.max_certificates),
        (c.service_health, ServiceHealthCollector, c.service_health.max_services),
    ]
    out += [cls(targets, cfg.interval, limit) for cfg, cls, limit in simple if cfg.enabled]
    return out


class Service:
    """The running exporter. ``start`` returns once the HTTP server listens and polls are scheduled."""

    def __init__(
        self,
        settings: Settings,
        wsman_factory: Callable[[ResolvedServer], WSMan] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = SnapshotStore(clock)
        backoff = settings.exchange.auth_failure_backoff
        self.sessions = SessionManager(
            settings.exchange.max_sessions_per_account,
            wsman_factory,
            AuthBackoff(base=backoff, cap=max(900.0, backoff)),
            clock=clock,
        )
        self.targets = ExchangeTargets(settings, self.sessions)
        stale = settings.scheduler.stale_after_intervals
        self.shard = shard_from(settings.sharding.index, settings.sharding.count)
        self.collectors = shard_collectors(
            build_collectors(settings, self.targets, clock, lambda name: self.store.fresh_results(name, stale)),
            self.shard,
        )
        self.registry = build_registry(
            MailflowCollector(
                self.store,
                self.collectors,
                settings.scheduler.stale_after_intervals,
                self._clock_readings,
                self.sessions.janitor.counts,
            )
        )
        self.registry.register(ShardMetrics(self.shard, self.collectors))
        sched = settings.scheduler
        # Per-server polls share max_workers fairly, one at a time per session (exporter.lanes); the
        # organisation-wide ones (discovery, send connectors, accepted domains) and DNS have their own
        # workers, so no server's slowness can hold them up.
        org_jobs = sum(1 for c in self.collectors if getattr(c, "executor", "default") == ORG_EXECUTOR)
        probe_workers = sum(c.workers() for c in self.collectors if getattr(c, "executor", "") == PROBE_EXECUTOR)
        probe_workers = max(1, probe_workers)
        self.scheduler = BackgroundScheduler(
            executors={
                "default": FairExecutor(sched.max_workers, self._lane),
                ORG_EXECUTOR: ThreadPoolExecutor(max_workers=max(1, org_jobs)),
                DNS_EXECUTOR: ThreadPoolExecutor(max_workers=settings.dns.concurrency),
                PROBE_EXECUTOR: ThreadPoolExecutor(max_workers=probe_workers),
            },
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=UTC,
        )
        self.app = WebApp(
            self.registry,
            self.store,
            settings.web.telemetry_path,
            settings.web.runbook_url,
            self.readiness,
            self.health,
            triage=self.triage,
            trace=self._trace_form() if settings.web.trace_enabled else None,
        )
        self.web: WebServer | None = None
        self._wanted = TargetIndex()  # after every poll: is the target still wanted?
        # Collectors whose results decide other collectors' targets (``Collector.targets_from``).
        self._feeders = frozenset(name for c in self.collectors for name in getattr(c, "targets_from", ()))
        self._reconciling = threading.Lock()
        self._stopped = threading.Event()
        self._stop_requested = threading.Event()
        self._started = False
        self._ready = False

    def _trace_form(self) -> Any:
        """The status page's trace form, searching through this service's sessions (exporter.trace.web)."""
        from exporter.trace.query import run_trace
        from exporter.trace.web import TraceForm

        return TraceForm(lambda query, deadline: run_trace(self.targets, query, deadline))

    def triage(self, timeout: float | None = None) -> Report:
        """The triage of the latest snapshots (the status page shows it; ``check`` prints it). Polls that
        have not finished yet are reported as pending; ``timeout``: check's --timeout that expired."""
        stale = self.settings.scheduler.stale_after_intervals
        facts = facts_from_store(self.store, [c.name for c in self.collectors], stale, self.pending_polls(), timeout)
        return build_report(facts)

    def pending_polls(self) -> list[tuple[str, str]]:
        """(collector, target) of every wanted poll that has not finished once (success or failure)."""
        states = self.store.states()
        out = []
        for collector in self.collectors:
            try:
                targets = collector.targets()
            except Exception:  # listing targets failing is logged by reconcile; nothing to wait for here
                continue
            out += [(collector.name, t) for t in targets if (collector.name, t) not in states]
        return out

    # --- polling ------------------------------------------------------------------------------------

    def poll_once(self, collector: Collector, target: str) -> Snapshot | None:
        """Poll one target and record the snapshot (None when it is no longer wanted). Never raises."""
        started = time.monotonic()
        endpoint = server = ""
        try:
            result: Any = collector.poll(target)
            ok, reason, message = True, "", ""
        except CollectorError as exc:
            result, ok, reason, message = None, False, exc.reason, str(exc)
            endpoint, server = exc.endpoint, exc.server
        except Exception as exc:  # a bug must not kill the job; it becomes data
            # One line at error; the stack trace (which may hold a library's raw text) at debug only.
            log.error("poll crashed collector=%s target=%s error=%s", collector.name, target, type(exc).__name__)
            log.debug("poll crashed collector=%s target=%s", collector.name, target, exc_info=exc)
            result, ok, reason, message = None, False, "other", f"{type(exc).__name__}: internal error"
        duration = time.monotonic() - started
        if self._stopped.is_set() or not self._wanted.wants(collector, target):
            return None  # shutting down, or the target left the inventory while we polled it
        snapshot = Snapshot(
            collector=collector.name,
            target=target,
            finished=self.store.now(),
            duration=duration,
            interval=collector.interval(),
            ok=ok,
            result=result,
            reason=reason,
            message=message,
            endpoint=endpoint,
            server=server,
        )
        previous = self.store.put(snapshot)
        if ok and collector.name in self._feeders and (previous is None or previous.last_success is None):
            self._reconcile_soon()  # its first success: the targets it reveals need not wait 10 s
        if ok:
            log.debug("poll succeeded collector=%s target=%s duration=%.2fs", collector.name, target, duration)
        else:
            log.warning(
                'poll failed collector=%s target=%s reason=%s duration=%.2fs endpoint=%s error="%s"',
                collector.name,
                target,
                reason,
                duration,
                endpoint or "-",
                message.replace('"', "'"),
            )
        return snapshot

    def poll_all(
        self, only_new: bool = False, deadline: float | None = None, progress: Progress | None = None
    ) -> list[Snapshot]:
        """Poll every collector and target once, in parallel (used by tests, benchmarks and `check`).
        ``only_new``: only targets never polled yet (e.g. DNS checks of newly found domains).
        ``deadline`` (``time.monotonic()``): return then even if polls are still running (they are left
        to finish in the background; ``pending_polls`` lists them). ``progress``: see ``Progress``."""
        known = set(self.store.states()) if only_new else set()
        out: list[Snapshot] = []
        lock = threading.Lock()
        running: dict[tuple[str, str], None] = {}
        counts = [0, 0]  # done, total

        def run(c: Collector, t: str) -> None:
            with lock:
                running[(c.name, t)] = None
            try:
                snap = self.poll_once(c, t)
            finally:
                with lock:
                    running.pop((c.name, t), None)
                    counts[0] += 1
                    now_running = [f"{name} {target}" for name, target in running]
            if snap is not None:
                with lock:
                    out.append(snap)
            if progress is not None:
                progress(counts[0], counts[1], now_running)

        def wait(threads: list[threading.Thread]) -> bool:
            """Join the threads by the deadline; False if it passed first."""
            for th in threads:
                th.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
                if th.is_alive():
                    return False
            return True

        def jobs_of(discovery: bool) -> list[tuple[Collector, str]]:
            return [
                (c, t)
                for c in self.collectors
                if (c.name == "discovery") == discovery
                for t in c.targets()
                if (c.name, t) not in known
            ]

        # Discovery first: it changes the target list of the others, which are listed after it.
        first = jobs_of(discovery=True)
        counts[1] = len(first)
        for c, t in first:
            th = threading.Thread(target=run, args=(c, t), daemon=True)
            th.start()
            if not wait([th]):
                return list(out)
        jobs = jobs_of(discovery=False)
        counts[1] += len(jobs)
        limit = threading.Semaphore(self.settings.scheduler.max_workers)

        def limited(c: Collector, t: str) -> None:
            with limit:
                if deadline is None or time.monotonic() < deadline:
                    run(c, t)

        threads = [threading.Thread(target=limited, args=j, daemon=True) for j in jobs]
        for th in threads:
            th.start()
        wait(threads)
        with lock:
            return list(out)

    def _lane(self, job: Job) -> str:
        """The lane of a scheduled poll: the session its target is polled through (see exporter.lanes)."""
        if len(job.args) != 2:
            return str(job.id)  # reconcile
        target = str(job.args[1])
        try:
            server = self.targets.server(target)
        except CollectorError:
            return target.lower()
        return (server.via or server.name).lower()

    def _job_id(self, collector: Collector, target: str) -> str:
        return f"{collector.name}:{target}"

    def _reconcile_soon(self) -> None:
        """Schedule a reconcile in ``RECONCILE_SOON_SECONDS`` unless one is already due then: the targets
        a first poll just revealed (domains, outbound IPs, MX hosts, servers) are polled in seconds, not at
        the next periodic reconcile, at a cost bounded by time rather than by the number of first polls."""
        if not self.scheduler.running or self._stopped.is_set():
            return  # poll_all without the scheduler (check, tests): it polls new targets itself
        when = datetime.now(UTC) + timedelta(seconds=RECONCILE_SOON_SECONDS)
        with contextlib.suppress(ConflictingIdError):  # one is due already: it sees these targets too
            self.scheduler.add_job(self.reconcile, "date", run_date=when, id="reconcile-soon", misfire_grace_time=30)

    def reconcile(self) -> None:
        """Add jobs for new targets and remove jobs (and snapshots) of targets that went away."""
        with self._reconciling:  # the periodic and the early reconcile never interleave
            self._reconcile()

    def _reconcile(self) -> None:
        wanted: dict[str, tuple[Collector, str]] = {}
        for collector in self.collectors:
            try:
                names = collector.targets()
            except Exception:
                log.exception("listing targets failed collector=%s", collector.name)
                continue
            for target in names:
                wanted[self._job_id(collector, target)] = (collector, target)
        existing = {job.id for job in self.scheduler.get_jobs() if ":" in job.id}
        spread = self.settings.scheduler.first_run_spread
        now = datetime.now(UTC)
        for job_id, (collector, target) in wanted.items():
            if job_id in existing:
                continue
            self.scheduler.add_job(
                self.poll_once,
                "interval",
                args=(collector, target),
                id=job_id,
                executor=getattr(collector, "executor", "default"),
                seconds=collector.interval(),
                jitter=min(self.settings.scheduler.jitter, collector.interval() / 4),
                next_run_time=now + timedelta(seconds=random.uniform(0, spread)),
                misfire_grace_time=max(1, int(collector.interval())),
            )
        for job_id in existing - set(wanted):
            self.scheduler.remove_job(job_id)
            name, _, target = job_id.partition(":")
            self.store.forget(name, target)

    def readiness(self) -> tuple[bool, str]:
        """Ready once every target has finished its first poll (success or failure); stays ready
        (targets added later by discovery do not flip it) until shutdown begins."""
        if self._stopped.is_set():
            return False, "shutting down"
        if self._ready:
            return True, "Ready"
        if not self._started:
            return False, "starting"
        pending = [f"{c}:{t}" for c, t in self.pending_polls()]
        if pending:
            return False, f"waiting for first poll of {len(pending)} target(s): {', '.join(pending[:5])}"
        self._ready = True
        return True, "Ready"

    def health(self) -> tuple[bool, str]:
        """Healthy unless the scheduler died (then only a restart helps)."""
        if self._started and not self._stopped.is_set() and not self.scheduler.running:
            return False, "scheduler not running"
        return True, "Healthy"

    # --- lifecycle ----------------------------------------------------------------------------------

    def _clock_readings(self) -> dict[str, ClockReading]:
        """The servers' clock readings this replica reports: those of the servers it owns (every replica
        talks to the discovery seed, one reports its clock)."""
        return {name: r for name, r in self.sessions.clock_readings().items() if self.shard.owns(name)}

    def start(self, serve_http: bool = True) -> None:
        """Start the HTTP server and the scheduler."""
        if serve_http:
            web = self.settings.web
            self.web = WebServer(self.app, web.listen_addresses, web.config_file)
            self.web.start()
            for address in self.web.addresses:
                log.info("listening address=%s path=%s scheme=%s", address, web.telemetry_path, self.web.scheme)
        self.scheduler.start()
        self.reconcile()
        self.scheduler.add_job(
            self.reconcile, "interval", seconds=RECONCILE_SECONDS, id="reconcile", misfire_grace_time=30
        )
        self._started = True

    def request_stop(self) -> None:
        """Ask ``run_forever`` to return (thread-safe)."""
        self._stop_requested.set()

    def stop(self, close_timeout: float = 8.0) -> None:
        """Stop polling, close every Exchange session (within ``close_timeout`` s), stop serving. Idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()  # readiness turns 503 now; queued polls stop opening sessions
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.sessions.close_all(timeout=close_timeout)
        for collector in self.collectors:
            close = getattr(collector, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    log.exception("closing collector failed collector=%s", collector.name)
        if self.web is not None:
            self.web.stop()
        log.info("stopped")

    def run_forever(self) -> None:
        """Start, then block until SIGTERM or SIGINT, then stop cleanly."""

        def handle(signum: int, _frame: Any) -> None:
            name = signal.Signals(signum).name
            if self._stop_requested.is_set():
                log.warning("second signal, exiting at once signal=%s", name)
                os._exit(1)
            log.info("signal received signal=%s", name)
            self._stop_requested.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
        self.start()
        try:
            while not self._stop_requested.wait(1.0):
                pass
        finally:
            self.stop()
