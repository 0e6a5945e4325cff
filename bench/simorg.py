"""The large simulated organisation the load and soak benchmarks run against, and exporter settings for it.

The simulator runs in a child process (``start_org`` there); the parent gets the endpoints and the
account through a pipe and builds its settings with ``exchange_settings``.
"""

from __future__ import annotations

import tempfile
from typing import Any

from exporter.settings import COLLECTOR_NAMES

#: Every collector polling Exchange but message tracking: what the load benchmark polls.
AUDIT_COLLECTORS = tuple(name for name in COLLECTOR_NAMES if name != "tracking")


def start_org(servers: int, queues: int) -> tuple[Any, dict[str, Any]]:
    """Start the simulator with ``servers`` servers of ``queues`` moving queues each; return it and
    ``{"endpoints": {name: (host, port)}, "user": (username, password)}`` for the parent."""
    from exporter.simulator import Simulator
    from exporter.simulator.scenario import build_scenario

    scenario = build_scenario(servers, queues, moving=True)
    sim = Simulator(scenario, host="127.0.0.1", tls=False)
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
