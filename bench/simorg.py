"""The large simulated organisation the load and soak benchmarks run against, and exporter settings for it.

The simulator runs in a child process (``start_org`` there); the parent gets the endpoints and the
account through a pipe and builds its settings with ``exchange_settings``.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from exporter.settings import COLLECTOR_NAMES

#: Every collector polling Exchange but message tracking: what the load benchmark polls.
AUDIT_COLLECTORS = tuple(name for name in COLLECTOR_NAMES if name != "tracking")


def start_org(
    servers: int,
    queues: int,
    *,
    tracking_per_minute: float = 0.0,
    clock: Callable[[], float] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Start the simulator with ``servers`` servers of ``queues`` moving queues each; return it and
    ``{"endpoints": {name: (host, port)}, "user": (username, password)}`` for the parent.

    ``tracking_per_minute``: message-tracking traffic per server (``build_scenario``). ``clock``: the
    simulator's clock (a shared fake clock runs hours of traffic in minutes); shells are then never
    dropped as idle, since the clock jumps between polls."""
    from dataclasses import replace

    from exporter.simulator import Simulator
    from exporter.simulator.scenario import build_scenario

    scenario = build_scenario(servers, queues, moving=True, tracking_per_minute=tracking_per_minute)
    if clock is None:
        sim = Simulator(scenario, host="127.0.0.1", tls=False)
    else:
        scenario = replace(scenario, shell_idle_timeout_seconds=1e9)
        sim = Simulator(scenario, host="127.0.0.1", tls=False, clock=clock)
    sim.start()
    info = {
        "endpoints": {s.name: sim.endpoint(s.name) for s in scenario.servers},
        "user": next(iter(scenario.users.items())),
    }
    return sim, info


def exchange_settings(info: dict[str, Any], prefix: str, **defaults: Any) -> dict[str, Any]:
    """Settings (as a mapping) polling every server of ``info`` with Basic auth over loopback HTTP,
    the DNS checks off and a fresh state directory; ``defaults`` add to ``exchange.defaults``."""
    user, password = info["user"]
    return {
        "state_dir": tempfile.mkdtemp(prefix=f"mailflow-{prefix}-"),
        "exchange": {
            "defaults": {
                "auth": "basic",
                "username": user,
                "password": password,
                "allow_insecure_basic": True,
                **defaults,
            },
            "servers": [{"name": n, "host": h, "port": p} for n, (h, p) in info["endpoints"].items()],
        },
        "dns": {"enabled": False},
    }


@contextlib.contextmanager
def dns_world(directory: Path, domains: int) -> Iterator[dict[str, Any]]:
    """NSD on loopback serving ``domains`` domains (``bench_dns.zone_text``: MX, SPF with includes, DMARC,
    MTA-STS, TLS-RPT), their MX hosts on 127.0.0.1 answered by a DemoSMTP endpoint with STARTTLS, and an
    empty blocklist zone; yields the ``dns`` settings (as a mapping) that check them."""
    from bench.bench_dns import ZONE, zone_text
    from tests.dnsinfra.nsd import NsdServer
    from tests.dnsinfra.smtp import SmtpServerFactory

    def zone(origin: str, *records: str) -> str:
        head = f"$ORIGIN {origin}.\n$TTL 300\n@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 120\n"
        return head + "\n".join((f"@ IN NS ns1.{ZONE}.", *records)) + "\n"

    blocklist = f"bl.{ZONE}"
    outbound = {"192.0.2.10": "out1", "198.51.100.9": "out2"}  # forward-confirmed reverse DNS
    forward = [f"{name} IN A {ip}" for ip, name in outbound.items()]
    zones = {
        ZONE: zone_text(domains, "127.0.0.1") + "\n".join(forward) + "\n",
        blocklist: zone(blocklist),  # empty: no address is listed
        **{
            ".".join(reversed(ip.split(".")[:3])) + ".in-addr.arpa": zone(
                ".".join(reversed(ip.split(".")[:3])) + ".in-addr.arpa", f"{ip.split('.')[3]} IN PTR {name}.{ZONE}."
            )
            for ip, name in outbound.items()
        },
    }
    for sub in ("smtp", "nsd"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    smtp = SmtpServerFactory(directory / "smtp")
    try:
        endpoint = smtp("valid", host="127.0.0.1")
        with NsdServer(zones, directory / "nsd") as nsd:
            yield {
                "enabled": True,
                "resolvers": [nsd.address],
                "port": nsd.port,
                "timeout": 2,
                "domains": [f"d{i}.{ZONE}" for i in range(domains)],
                "use_accepted_domains": False,
                "use_send_connector_ips": False,
                "outbound_ips": [{"ip": ip} for ip in outbound],
                "blocklists": [blocklist],
                "smtp": {"port": endpoint.port, "timeout": 5, "ca_bundle": str(smtp.ca_file)},
            }
    finally:
        smtp.stop_all()
