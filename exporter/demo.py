"""Demo mode: the bundled simulated Exchange organisation plus the exporter polling it.

Nothing leaves the machine: the simulator listens on loopback, one endpoint per Exchange server.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from exporter.settings import Settings

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
    net = DemoNet()
    sim.start()
    net.start()
    try:
        merged = deep_merge(deep_merge(DEMO_EXPECTATIONS, demo_dns_settings(net)), overrides or {})
        yield scenario, demo_settings(sim, scenario, listen_address, tls, overrides=merged)
    finally:
        net.stop()
        sim.stop()


def run_demo(
    listen_address: str | Sequence[str] = ":10049",
    tls: bool = True,
    web_config_file: Path | None = None,
    telemetry_path: str = "/metrics",
) -> int:
    """Start the simulator and the exporter; serve until SIGTERM/SIGINT. ``listen_address``: one address or
    several (each listener serves the same paths); ``web_config_file``: serve through the exporter-toolkit
    web configuration (TLS, basic auth)."""
    from exporter.service import Service
    from exporter.webconfig import load_web_config

    addresses = [listen_address] if isinstance(listen_address, str) else list(listen_address)
    web: dict[str, Any] = {"listen_address": addresses, "telemetry_path": telemetry_path}
    if web_config_file is not None:
        web["config_file"] = str(web_config_file)
    with demo_organisation(addresses[0], tls, {"web": web}) as (scenario, settings):
        service = Service(settings)
        scheme = "https" if web_config_file is not None and load_web_config(web_config_file).tls else "http"
        bases = []
        for address in addresses:
            host, _, port = address.rpartition(":")
            bases.append(f"{scheme}://{host or 'localhost'}:{port}")  # an IPv6 host keeps its brackets
        log.info(
            "demo running: metrics at %s, status at %s (simulated servers: %s)",
            ", ".join(base + telemetry_path for base in bases),
            ", ".join(base + "/" for base in bases),
            ", ".join(s.name for s in scenario.servers),
        )
        service.run_forever()
    return 0
