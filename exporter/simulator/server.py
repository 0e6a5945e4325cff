"""The simulator: one HTTP(S) WSMan endpoint per simulated Exchange server, sharing one organisation.

>>> sim = Simulator(load_scenario("demo.yml"), tls=True)       # doctest: +SKIP
>>> sim.start()                                                 # doctest: +SKIP
>>> host, port = sim.endpoint("EX01")                           # doctest: +SKIP
>>> sim.faults.set("EX02", "refused"); sim.faults.clear("EX02") # doctest: +SKIP
>>> sim.stop()                                                  # doctest: +SKIP
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from exporter.simulator.clocks import record_clocks
from exporter.simulator.faults import FaultInjector, FaultKind
from exporter.simulator.kerberos import KerberosAcceptor, channel_binding_data
from exporter.simulator.probe_mail import SmtpSink
from exporter.simulator.scenario import Scenario
from exporter.simulator.service import EndpointService, SimState, Stats
from exporter.simulator.timeline import ServerTimeZone, Timeline
from exporter.simulator.tls import generate_tls, server_context
from exporter.simulator.tracking import TrackingLog, tracking_log
from exporter.simulator.transport import Endpoint

__all__ = ["Simulator"]


class Simulator:
    """Runs the endpoints of a scenario; see the module docstring for the API in one glance.

    ``port_base``: when given, server *i* (in scenario order) listens on ``port_base + i`` unless the
    scenario fixes its port; otherwise ports are ephemeral (port 0). ``tls``: HTTPS with a generated
    CA and certificate (``ca_file`` is the CA to trust), or ``cert_file``/``key_file`` to use your own.
    ``control_port``: also serve the JSON control API (``/sim/...``) on that port (0 = ephemeral).
    ``kerberos_keytab``: also accept Kerberos (HTTP ``Negotiate``, with WinRM message encryption over
    HTTP) for the scenario's users, with the service keys in this keytab; Basic keeps working.
    """

    def __init__(
        self,
        scenario: Scenario,
        host: str = "127.0.0.1",
        tls: bool = False,
        clock: Callable[[], float] = time.time,
        *,
        port_base: int | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        control_port: int | None = None,
        kerberos_keytab: str | Path | None = None,
    ) -> None:
        self.scenario = scenario
        self.host = host
        self.tls = tls
        self.faults = FaultInjector((s.name for s in scenario.servers), clock=clock)
        self.stats_counters = Stats([s.name for s in scenario.servers])
        self.state = SimState(scenario, Timeline(scenario.organisation, clock), self.faults, self.stats_counters)
        record_clocks(self.state.timeline, scenario)
        self._port_base = port_base
        self._cert_file = Path(cert_file) if cert_file else None
        self._key_file = Path(key_file) if key_file else None
        self._control_port = control_port
        self.kerberos = KerberosAcceptor(kerberos_keytab) if kerberos_keytab is not None else None
        self._tmpdir: Path | None = None
        self._ca_file: Path | None = None
        self._endpoints: dict[str, Endpoint] = {}
        self._services: dict[str, EndpointService] = {}
        self._control: Any = None
        self._started = False
        self._lock = threading.Lock()
        self.faults.subscribe(self._on_fault)

    @property
    def tracking(self) -> TrackingLog:
        """The message-tracking log in real time (``expected_messages``, ``events``): what
        Get-MessageTrackingLog serves, stamped by each server's clock (see ``clocks.py``)."""
        return tracking_log(self.scenario, self.state.timeline)

    def smtp_sink(self) -> SmtpSink:
        """The organisation's side of the demo MX: give it to ``netsim.DemoSMTP(sink=...)`` and the mail
        that endpoint accepts arrives in the tracking log (``probe_mail``)."""
        return SmtpSink(self.state)

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Open every endpoint's listener (and the control API when configured)."""
        with self._lock:
            if self._started:
                return
            context = None
            binding = None
            if self.tls:
                if self._cert_file and self._key_file:
                    context = server_context(self._cert_file, self._key_file)
                    self._ca_file = self._cert_file
                    cert_file = self._cert_file
                else:
                    self._tmpdir = Path(tempfile.mkdtemp(prefix="mailflow-sim-tls-"))
                    names = [n for s in self.scenario.servers for n in (s.fqdn, s.name.lower())]
                    files = generate_tls(self._tmpdir, names)
                    context = server_context(files.cert_file, files.key_file)
                    self._ca_file = files.ca_file
                    cert_file = files.cert_file
                if self.kerberos is not None:
                    binding = channel_binding_data(cert_file)
            try:
                for index, server in enumerate(self.scenario.servers):
                    port = (
                        server.port
                        if server.port is not None
                        else (self._port_base + index if self._port_base is not None else 0)
                    )
                    service = EndpointService(self.state, server)
                    endpoint = Endpoint(
                        server.name, server.fqdn, self.state, service, self.host, port, context, self.kerberos, binding
                    )
                    self._services[server.name] = service
                    self._endpoints[server.name] = endpoint
                    endpoint.start()
                if self._control_port is not None:
                    from exporter.simulator.control import ControlServer

                    self._control = ControlServer(self, self.host, self._control_port)
                    self._control.start()
            except BaseException:
                self._teardown()
                raise
            self._started = True
        self._apply_scenario_faults()

    def _apply_scenario_faults(self) -> None:
        """The scenario's ``down``/``back_pressure`` servers, as faults dated from the scenario start."""
        start = self.state.timeline.start
        for server in self.scenario.servers:
            if server.down is not None:
                self.faults.set(
                    server.name,
                    FaultKind.DOWN,
                    rate_per_minute=server.down.shadow_per_minute,
                    since=start + server.down.since_seconds,
                )
            if server.back_pressure is not None:
                spec = server.back_pressure
                self.faults.set(
                    server.name,
                    FaultKind.BACK_PRESSURE,
                    level=spec.level,
                    resource=spec.resource,
                    rate_per_minute=spec.submission_per_minute,
                    since=start + spec.since_seconds,
                )

    def stop(self) -> None:
        """Close listeners and shells, release hung requests, remove generated TLS files."""
        with self._lock:
            if not self._started:
                return
            self._started = False
        self._teardown()

    def _teardown(self) -> None:
        self.state.stopping.set()
        self.faults.stop()
        if self._control is not None:
            self._control.stop()
            self._control = None
        for endpoint in self._endpoints.values():
            endpoint.stop()
        for service in self._services.values():
            service.close_all()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_scenario(self, scenario: Scenario) -> None:
        """Serve ``scenario``'s organisation from now on: same servers (names, in the same order).

        Endpoints, open shells, faults, counters and the clock carry on; queues, connectors,
        component states, certificates, users... come from the new scenario at the next command
        (so a test can put HubTransport into Draining while an exporter runs). Server ports of the
        new scenario are ignored: the endpoints keep listening where they are. A server whose
        ``clock_skew_seconds`` changed has its clock stepped now: tracking events logged before keep
        their stamps (see ``clocks.py``).
        """
        old = [s.name.upper() for s in self.scenario.servers]
        new = [s.name.upper() for s in scenario.servers]
        if old != new:
            raise ValueError(f"set_scenario needs the same servers in the same order: {old} != {new}")
        with self._lock:
            self.scenario = scenario
            self.state.scenario = scenario
            self.state.timeline.tz = ServerTimeZone(scenario.organisation.timezone_offset_minutes)
            self.state.timeline.culture = scenario.organisation.culture
            record_clocks(self.state.timeline, scenario)
            for name, service in self._services.items():
                spec = scenario.server(name)
                assert spec is not None
                service.server = spec

    # -- queries -------------------------------------------------------------------------------
    def endpoint(self, server: str) -> tuple[str, int]:
        """(host, port) of ``server``'s endpoint (case-insensitive name)."""
        spec = self.scenario.server(server)
        if spec is None or spec.name not in self._endpoints:
            raise KeyError(f"unknown server {server!r}")
        ep = self._endpoints[spec.name]
        return ep.host, ep.port

    def endpoints(self) -> dict[str, dict[str, Any]]:
        """Every endpoint: host, port, fqdn, URL and whether it is listening."""
        scheme = "https" if self.tls else "http"
        return {
            name: {
                "host": ep.host,
                "port": ep.port,
                "fqdn": ep.fqdn,
                "url": f"{scheme}://{ep.host}:{ep.port}/PowerShell",
                "listening": ep.listening,
            }
            for name, ep in self._endpoints.items()
        }

    @property
    def ca_file(self) -> str | None:
        """PEM file to trust when ``tls`` (pass to pypsrp as ``cert_validation``), else None."""
        return str(self._ca_file) if self._ca_file is not None else None

    @property
    def control_url(self) -> str | None:
        """Base URL of the control API, when enabled."""
        if self._control is None:
            return None
        return f"http://{self.host}:{self._control.port}"

    def stats(self) -> dict[str, Any]:
        """Counters: shells created/closed/expired/rejected/open (total and per server), commands per
        cmdlet, requests, auth failures, plus the active faults."""
        data = self.stats_counters.snapshot()
        data["faults"] = [f.to_dict() for f in self.faults.active()]
        data["elapsed_seconds"] = round(self.state.timeline.elapsed(), 3)
        return data

    # -- fault side effects --------------------------------------------------------------------
    def _on_fault(self, server: str, kind: FaultKind, active: bool) -> None:
        if not self._started:
            return
        if kind is FaultKind.SHELL_EXPIRY:
            service = self._services.get(server)
            if service is not None:
                service.expire_shells()
        elif kind in (FaultKind.REFUSED, FaultKind.DOWN):  # a down server refuses connections too
            endpoint = self._endpoints.get(server)
            if endpoint is None:
                return
            if active:
                endpoint.stop()
            elif not any(self.faults.find(server, k) for k in (FaultKind.REFUSED, FaultKind.DOWN)):
                endpoint.start()
