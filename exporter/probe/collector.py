"""The synthetic mail-flow probe collector (``collectors.mailflow_probe``; off by default).

One target per configured probe (its name). Each poll runs the probe once: ``Test-Mailflow`` for an
internal probe (``probe.internal``), an SMTP message through the MX confirmed from message tracking
for an inbound one (``probe.inbound``). Polls run on their own workers (``EXECUTOR``): an inbound probe
waits minutes for its DELIVER and must not hold a server's polling lane.

A probe that could not reach Exchange at all (the Test-Mailflow call failed) fails its poll, so triage
reports it as a blind spot with its reason. A probe whose outcome the exporter could not see
(``unknown``: no Test-Mailflow result, a tracking log that could not be searched) is neither success
nor failure: ``mailflow_probe_success`` is absent and ``mailflow_probe_stage`` names why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.dnscheck.resolver import DnsClient
from exporter.errors import CollectorError
from exporter.exchange.targets import ExchangeTargets
from exporter.probe.inbound import run_inbound
from exporter.probe.internal import run_internal
from exporter.probe.result import UNKNOWN, ProbeResult
from exporter.probe.settings import InboundProbe, InternalProbe, MailflowProbeSettings

__all__ = ["EXECUTOR", "MailflowProbeCollector", "render_probes"]

#: The scheduler executor of the probes (exporter.service): one worker per probe.
EXECUTOR = "probe"


class MailflowProbeCollector:
    """Runs the configured probes; see the module docstring."""

    name = "mailflow_probe"
    executor = EXECUTOR

    def __init__(self, targets: ExchangeTargets, settings: MailflowProbeSettings, dns: DnsClient) -> None:
        self._targets = targets
        self._settings = settings
        self._dns = dns
        self._probes: dict[str, InternalProbe | InboundProbe] = {p.name: p for p in settings.internal}
        self._probes.update({p.name: p for p in settings.inbound})

    def interval(self) -> float:
        return self._settings.interval

    def targets(self) -> list[str]:
        return sorted(self._probes) if self._targets.names() else []

    def workers(self) -> int:
        """How many probes may run at once (all of them)."""
        return max(1, len(self._probes))

    def _server_for(self, name: str) -> str:
        """A configured or discovered server of that name, else the seed (Test-Mailflow -Identity names
        the source; connecting to it is what the cmdlet reference asks, not what it needs)."""
        known = {n.upper(): n for n in self._targets.names()}
        return known.get(name.upper()) or self._targets.seed().name

    def poll(self, target: str) -> ProbeResult:
        probe = self._probes.get(target)
        if probe is None:
            raise CollectorError(f"probe {target} is no longer configured", reason="config")
        if isinstance(probe, InternalProbe):
            server = self._server_for(probe.source)
            call_timeout = self._targets.server(server).call_timeout
            # Its own session: a failing Test-Mailflow holds it for -ExecutionTimeout, the server's polls must not wait.
            return run_internal(self._targets.dedicated_session(server, "probe"), probe, call_timeout)
        call_timeout = self._targets.server(self._targets.seed().name).call_timeout
        return run_inbound(self._targets, self._dns.fresh(), probe, call_timeout)

    def render(self, results: Mapping[str, ProbeResult]) -> Iterable[Metric]:
        return render_probes(results.values())


def render_probes(results: Iterable[ProbeResult]) -> list[Metric]:
    """Metric families of the probes' last runs."""
    success = GaugeMetricFamily(
        "mailflow_probe_success",
        "1 if the last synthetic probe arrived (Test-Mailflow Success; inbound: DELIVER in message tracking), "
        "0 if it stopped; absent while its outcome is unknown (see mailflow_probe_stage).",
        labels=["probe", "kind"],
    )
    duration = GaugeMetricFamily(
        "mailflow_probe_duration_seconds",
        "End-to-end latency of the last probe that arrived: Test-Mailflow's MessageLatencyTime; inbound: "
        "from the end of SMTP DATA to the DELIVER event's Timestamp.",
        labels=["probe", "kind"],
    )
    stage = GaugeMetricFamily(
        "mailflow_probe_stage",
        "1 for the stage at which the last probe stopped (failure) or could not be followed (unknown: "
        "no_result, tracking_blind); absent after a success.",
        labels=["probe", "kind", "stage"],
    )
    for result in sorted(results, key=lambda r: r.probe):
        labels = [result.probe, result.kind]
        if result.outcome != UNKNOWN:
            success.add_metric(labels, 1 if result.success else 0)
        if result.duration is not None and result.success:
            duration.add_metric(labels, result.duration)
        if result.stage:
            stage.add_metric([*labels, result.stage], 1)
    return [success, duration, stage]
