"""Demo mode: the bundled simulated Exchange organisation plus the exporter polling it.

Nothing leaves the machine: the simulator listens on loopback, one endpoint per Exchange server.
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from exporter.settings import Settings
from exporter.triage.model import SCOPES, SEVERITIES, Finding, Report

log = logging.getLogger(__name__)


def demo_scenario_path() -> Path:
    """The bundled demo scenario file."""
    return Path(str(resources.files("exporter.simulator") / "scenarios" / "demo.yml"))


#: Expected connector state for the bundled demo organisation, so drift metrics show values.
DEMO_EXPECTATIONS: dict[str, Any] = {
    "collectors": {
        "receive_connectors": {
            "expect": {"EX01\\App Relay*": {"enabled": True, "remote_ip_ranges": ["10.20.30.0/24"]}}
        },
        "send_connectors": {
            "expect": {
                "Internet": {"enabled": True, "dns_routing": True},
                "To Partner": {"smart_hosts": ["relay.partner.example"], "require_tls": True},
            }
        },
    }
}


def demo_dns_settings(net: Any) -> dict[str, Any]:
    """``dns`` settings that check the demo organisation's outside world (a started ``DemoNet``)."""
    from exporter.netsim.demo_net import DNSBL_ZONE, OUTBOUND, mx_hosts

    return {
        "dns": {
            "enabled": True,
            "resolvers": [net.dns_address],
            "port": net.dns_port,
            "timeout": 2,
            "outbound_ips": [{"ip": o.ip, "helo": o.helo} for o in OUTBOUND],
            "blocklists": [DNSBL_ZONE],
            "expect": {net.domain: {"mx": list(mx_hosts(net.domain))}},
            "smtp": {"port": net.smtp_port, "ca_bundle": str(net.ca_file), "helo_name": f"probe.{net.domain}"},
        }
    }


def demo_probe_settings(net: Any) -> dict[str, Any]:
    """``collectors.mailflow_probe`` for the demo: Test-Mailflow from EX01 to EX02, and a message through
    the demo MX (a started ``DemoNet`` whose SMTP endpoint hands mail to the simulator) to a mailbox."""
    return {
        "collectors": {
            "mailflow_probe": {
                "enabled": True,
                "interval": 60,
                "internal": [
                    {"name": "ex01-to-ex02", "source": "EX01", "target_server": "EX02", "execution_timeout": 30}
                ],
                "inbound": [
                    {
                        "name": f"{net.domain.split('.')[0]}-inbound",
                        "domain": net.domain,
                        "recipient": f"mailflow-probe@{net.domain}",
                        "sender": "probe@monitoring.example",
                        "port": net.smtp_port,
                        "helo_name": f"probe.{net.domain}",
                        "deliver_timeout": 30,
                        "tracking_every": 2,
                    }
                ],
            }
        }
    }


def demo_settings(
    sim: Any,
    scenario: Any,
    listen_address: str,
    tls: bool,
    interval: float = 15.0,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Exporter settings that point at a running simulator; ``overrides`` is deep-merged on top."""
    username, password = next(iter(scenario.users.items()))
    servers = []
    for server in scenario.servers:
        host, port = sim.endpoint(server.name)
        servers.append({"name": server.name, "host": host, "port": port})
    defaults: dict[str, Any] = {
        "auth": "basic",
        "tls": tls,
        "username": username,
        "password": password,
        "connect_timeout": 5,
        "call_timeout": 20,
    }
    if tls:
        defaults["ca_bundle"] = sim.ca_file
    else:
        defaults["allow_insecure_basic"] = True  # loopback only, demo only
    data: dict[str, Any] = {
        "state_dir": tempfile.mkdtemp(prefix="mailflow-demo-"),
        "exchange": {"defaults": defaults, "servers": servers},
        "collectors": {"queues": {"interval": interval}, "tracking": {"interval": interval}},
        "scheduler": {"jitter": 1, "first_run_spread": 0.5},
        "web": {"listen_address": listen_address},
    }
    return Settings.model_validate(deep_merge(data, overrides or {}))


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` merged into a copy of ``base``, recursing into nested mappings."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


@contextmanager
def demo_organisation(
    listen_address: str, tls: bool, overrides: dict[str, Any] | None = None
) -> Iterator[tuple[Any, Settings]]:
    """The bundled demo organisation (simulator) and its outside world (DemoNet) running, with
    exporter settings that poll both; stopped on exit. Yields (scenario, settings)."""
    from exporter.netsim.demo_net import DemoNet
    from exporter.simulator import Simulator, load_scenario

    scenario = load_scenario(demo_scenario_path())
    sim = Simulator(scenario, host="127.0.0.1", tls=tls)
    net = DemoNet(sink=sim.smtp_sink())  # the MX hands what it accepts to the simulated organisation
    sim.start()
    net.start()
    try:
        outside = deep_merge(demo_dns_settings(net), demo_probe_settings(net))
        merged = deep_merge(deep_merge(DEMO_EXPECTATIONS, outside), overrides or {})
        yield scenario, demo_settings(sim, scenario, listen_address, tls, overrides=merged)
    finally:
        net.stop()
        sim.stop()


def banner(scenario: Any, settings: Settings, scheme: str) -> list[str]:
    """What the demo prints first: what runs, where to look, how to stop."""
    from exporter.settings import resolved_servers

    bases = []
    for address in settings.web.listen_addresses:
        host, _, port = address.rpartition(":")
        bases.append(f"{scheme}://{host or 'localhost'}:{port}")  # an IPv6 host keeps its brackets
    base = bases[0]
    path = settings.web.telemetry_path
    exchange = ", ".join(f"{s.name} {s.endpoint}" for s in resolved_servers(settings))
    dns, smtp = settings.dns, settings.dns.smtp
    domains = ", ".join(sorted(dns.expect)) or scenario.organisation.domain
    return [
        f"demo: the exporter polls a simulated Exchange organisation ({scenario.organisation.name}, "
        f"{len(scenario.servers)} servers) and its simulated outside world; nothing leaves this machine",
        f"  metrics:      {', '.join(b + path for b in bases)}",
        f"  status page:  {base}/   (the same triage as `mailflow-exporter check --demo`)",
        f"  health:       {base}/-/healthy, {base}/-/ready",
        f"  Exchange:     {exchange}",
        f"  DNS and MX:   DNS {dns.resolvers[0]}:{dns.port} ({domains}), SMTP {dns.resolvers[0]}:{smtp.port}"
        if dns.resolvers
        else "  DNS and MX:   not checked",
        *_probe_lines(settings),
        "  from here on: each problem the triage finds or clears, and each change of mail flow; Ctrl-C stops",
    ]


def _probe_lines(settings: Settings) -> list[str]:
    probe = settings.collectors.mailflow_probe
    if not probe.enabled:
        return []
    names = ", ".join([*(f"{p.name} (Test-Mailflow)" for p in probe.internal),
                       *(f"{p.name} (a message through the MX)" for p in probe.inbound)])  # fmt: skip
    return [f"  probes:       {names}, every {probe.interval:g} s"]


_NUMBERS = re.compile(r"\d+")


class Narrator:
    """Turns successive triage reports into the demo's log lines: what appeared, cleared or changed.

    Findings are told apart by rule and title with the numbers taken out, so a queue that grows
    from 14 to 15 messages is the same finding, not a new one.
    """

    def __init__(self) -> None:
        self._findings: dict[tuple[str, str], Finding] | None = None
        self._verdicts: dict[str, str] = {}

    @staticmethod
    def _key(finding: Finding) -> tuple[str, str]:
        return finding.rule, _NUMBERS.sub("#", finding.title)

    @staticmethod
    def _describe(finding: Finding) -> str:
        return f"{finding.severity}: {finding.title} [{finding.rule}]"

    def lines(self, report: Report) -> list[str]:
        """The log lines for ``report``: everything the first time, then only what changed."""
        current = {self._key(f): f for f in report.findings}
        verdicts = {v.scope: v.status for v in report.verdicts}
        out: list[str] = []
        if self._findings is None:
            counts = Counter(f.severity for f in report.findings)
            found = ", ".join(f"{counts[s]} {s}" for s in SEVERITIES if counts[s]) or "none"
            flow = " ".join(f"{scope}={verdicts.get(scope, 'unknown')}" for scope in SCOPES)
            out.append(f"every target polled: mail flow {flow}; findings: {found}")
            out += [f"finding {self._describe(f)}" for f in report.findings]
        else:
            for scope in SCOPES:
                before, now = self._verdicts.get(scope, "unknown"), verdicts.get(scope, "unknown")
                if before != now:
                    out.append(f"mail flow {scope}: {before} -> {now}")
            for key, finding in current.items():
                previous = self._findings.get(key)
                if previous is None:
                    out.append(f"new finding {self._describe(finding)}")
                elif previous.severity != finding.severity:
                    out.append(f"finding now {self._describe(finding)} (was {previous.severity})")
            out += [f"cleared finding {self._describe(f)}" for k, f in self._findings.items() if k not in current]
        self._findings, self._verdicts = current, verdicts
        return out


def narrate(service: Any, stop: threading.Event, every: float = 5.0, until_ready: float = 0.5) -> None:
    """Log the triage's changes until ``stop`` is set; starts once every target was polled once (asked
    every ``until_ready`` seconds until then, so the first report follows the last first poll closely)."""
    narrator = Narrator()
    pause = until_ready
    while not stop.wait(pause):
        if not service.readiness()[0]:
            continue
        pause = every
        try:
            report = service.triage()
        except Exception:  # the demo goes on; the status page shows the same error
            log.exception("triage failed")
            continue
        for line in narrator.lines(report):
            log.info("%s", line)


def run_demo(
    listen_address: str | Sequence[str] = ":10049",
    tls: bool = True,
    web_config_file: Path | None = None,
    telemetry_path: str = "/metrics",
) -> int:
    """Start the simulator and the exporter; serve until SIGTERM/SIGINT. ``listen_address``: one address or
    several (each listener serves the same paths); ``web_config_file``: serve through the exporter-toolkit
    web configuration (TLS, basic auth). The log starts with a banner (URLs, simulated endpoints), then
    tells each triage finding as it appears or clears."""
    from exporter.service import Service
    from exporter.webconfig import load_web_config

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # aiosmtpd logs every connection of the SMTP probe at info: noise for someone watching the demo
        logging.getLogger("mail.log").setLevel(logging.WARNING)
    addresses = [listen_address] if isinstance(listen_address, str) else list(listen_address)
    web: dict[str, Any] = {"listen_address": addresses, "telemetry_path": telemetry_path}
    if web_config_file is not None:
        web["config_file"] = str(web_config_file)
    with demo_organisation(addresses[0], tls, {"web": web}) as (scenario, settings):
        service = Service(settings)
        scheme = "https" if web_config_file is not None and load_web_config(web_config_file).tls else "http"
        for line in banner(scenario, settings, scheme):
            log.info("%s", line)
        stop = threading.Event()
        watcher = threading.Thread(target=narrate, args=(service, stop), name="demo-narrator", daemon=True)
        watcher.start()
        try:
            service.run_forever()
        finally:
            stop.set()
            watcher.join(timeout=10)
    return 0
