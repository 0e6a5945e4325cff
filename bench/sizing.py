"""Series and exposition bytes per object (server, queue, connector, accepted domain, DNS domain,
outbound IP, probed MX host), measured by scraping a real exporter at two sizes and taking the difference.

Each dimension starts the simulator (and, for DNS, NSD and a DemoSMTP endpoint on loopback:
``simorg.dns_world``) at a small and a larger size that differ only in that object, polls every
collector once (``Service.poll_all``), and renders what a scrape would show, family by family and
grouped by the collector that rendered it (``exporter``: the per-collector, per-target health
families). The difference divided by the number of objects added is the cost of one object.

    python bench/sizing.py [--write]   # --write: replace the generated table in docs/sizing.md

Tracking series depend on the traffic seen (event id and source pairs, failure codes): the servers
carry the simulator's mix (10 messages a minute, 2 % failures). Queues are the benchmark mix
(build_scenario: one delivery queue in seven in Retry with a LastError).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric

from bench.simorg import dns_world, exchange_settings

DOC = Path(__file__).resolve().parents[1] / "docs" / "sizing.md"
NOW = 1_800_000_000.0
Scrape = dict[tuple[str, str], tuple[int, int]]  # (collector, family) -> (series, exposition bytes)
BEGIN, END = "<!-- sizing:begin (bench/sizing.py --write) -->", "<!-- sizing:end -->"
# A note for a row whose number needs one (e.g. a family being reduced); none today.
NOTES: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Cost:
    """What one more object adds to a scrape, for one collector."""

    obj: str
    collector: str
    series: float
    exposition_bytes: float
    families: tuple[str, ...]  # the families that grew
    per_family: tuple[tuple[str, float], ...] = ()  # (family, series per object)


class _One:
    """A registry-like object with one metric family, for ``generate_latest``."""

    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> Iterable[Metric]:
        return [self._metric]


def scrape(service: Any) -> Scrape:
    """(collector, family) -> (series, exposition bytes) of what the service would expose now."""
    out: Scrape = {}
    stale = service.settings.scheduler.stale_after_intervals
    owned: set[str] = set()
    for collector in service.collectors:
        for metric in collector.render(service.store.fresh_results(collector.name, stale)):
            owned.add(metric.name)
            out[(collector.name, metric.name)] = (len(metric.samples), len(generate_latest(_One(metric))))
    for metric in service.registry.collect():
        if metric.name not in owned and metric.name.startswith("mailflow_"):
            out[("exporter", metric.name)] = (len(metric.samples), len(generate_latest(_One(metric))))
    return out


def _clock() -> float:
    """A fixed time: the simulator's traffic (and so the tracking series) is the same on every run."""
    return NOW


def _measure(settings: dict[str, Any]) -> Scrape:
    from exporter.service import Service
    from exporter.settings import Settings

    service = Service(Settings.model_validate(settings), clock=_clock)
    try:
        snaps = service.poll_all()
        bad = [f"{s.collector} {s.target}: {s.message}" for s in snaps if not s.ok]
        if bad:
            raise RuntimeError("polls failed: " + "; ".join(bad[:5]))
        return scrape(service)
    finally:
        service.stop()


@contextmanager
def exchange(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The simulator for scenario ``data``; yields exporter settings polling every server (DNS off)."""
    from exporter.simulator import Scenario, Simulator

    scenario = Scenario.from_dict(data)
    with Simulator(scenario, host="127.0.0.1", tls=False, clock=_clock) as sim:
        info = {"endpoints": {s.name: sim.endpoint(s.name) for s in scenario.servers}, "user": ("svc@size.sim", "pw")}
        yield exchange_settings(info, "sizing", call_timeout=60)


def org(servers: int, queues: int, *, send_connectors: int = 0, accepted_domains: int = 0) -> dict[str, Any]:
    """build_scenario's organisation as data (constant queue counts, tracking traffic), with extras."""
    from exporter.simulator.scenario import build_scenario

    base = build_scenario(servers, queues, moving=False, tracking_per_minute=10)
    data: dict[str, Any] = {
        "organisation": {"name": "Size", "domain": "size.sim"},
        "users": {"svc@size.sim": "pw"},
        "tracking": {"messages_per_minute": 10, "failure_ratio": 0.02, "stuck_ratio": 0.01, "history_minutes": 60},
        "servers": [{"name": s.name, "queues": _queues(servers, queues, i)} for i, s in enumerate(base.servers)],
    }
    if send_connectors:
        data["send_connectors"] = [
            {"name": f"Outbound {i}", "address_spaces": [f"SMTP:p{i}.example;1"]} for i in range(send_connectors)
        ]
    if accepted_domains:
        data["accepted_domains"] = [{"domain": f"a{i}.size.sim"} for i in range(accepted_domains)]
    return data


def _queues(servers: int, queues: int, index: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"kind": "submission", "message_count": 3}]
    for q in range(queues - 1):
        queue: dict[str, Any] = {"kind": "delivery", "next_hop_domain": f"domain{q:03d}.example"}
        queue["message_count"] = q % 11
        if q % 7 == 3:
            queue |= {"status": "Retry", "retry_count": 4, "last_error": "451 4.4.0 DNS query failed. The error was: "
                      "SMTPSEND.DNS.NonExistentDomain; nonexistent domain"}  # fmt: skip
        out.append(queue)
    return out


def _diff(obj: str, small: Scrape, large: Scrape, n: int) -> list[Cost]:
    by: dict[str, list[tuple[str, int, int]]] = {}
    for key in sorted(set(small) | set(large)):
        s, b = large.get(key, (0, 0))
        s0, b0 = small.get(key, (0, 0))
        if s != s0 or b != b0:
            by.setdefault(key[0], []).append((key[1], s - s0, b - b0))
    costs = [
        Cost(
            obj,
            collector,
            sum(r[1] for r in rows) / n,
            sum(r[2] for r in rows) / n,
            tuple(r[0] for r in rows if r[1]),
            tuple((r[0], r[1] / n) for r in rows if r[1]),
        )
        for collector, rows in sorted(by.items())
    ]
    # Label values that differ by size (a duration's digits, a failure code the traffic happened to
    # draw) move bytes and, for tracking, a series or two: only what grows with the object is a cost.
    return [c for c in costs if c.series > 0]


def exchange_costs() -> list[Cost]:
    """Per server, per queue, per send connector, per accepted domain."""
    out: list[Cost] = []
    pairs = [
        ("transport server", org(1, 3), org(3, 3), 2),
        ("queue", org(2, 3), org(2, 11), 16),
        ("send connector", org(1, 3, send_connectors=1), org(1, 3, send_connectors=3), 2),
        ("accepted domain", org(1, 3, accepted_domains=1), org(1, 3, accepted_domains=3), 2),
    ]
    for obj, small, large, n in pairs:
        measured = []
        for data in (small, large):
            with exchange(data) as settings:
                only_exchange = {**settings, "dns": {"enabled": False}}
                measured.append(_measure(only_exchange))
        out += _diff(obj, measured[0], measured[1], n)
    return out


def dns_costs() -> list[Cost]:
    """Per DNS domain, per outbound IP, per probed MX host (no Exchange server: its collectors see none)."""
    out: list[Cost] = []
    with tempfile.TemporaryDirectory() as tmp, dns_world(Path(tmp), 6) as dns:
        base = {"state_dir": tempfile.mkdtemp(prefix="mailflow-sizing-"), "exchange": {"servers": []}}
        domains, ips = dns["domains"], dns["outbound_ips"]
        one_ip = {**dns, "outbound_ips": ips[:1], "smtp": {**dns["smtp"], "enabled": False}}
        one_domain = {**one_ip, "domains": domains[:1]}

        def probing(*hosts: str) -> dict[str, Any]:
            return {**one_domain, "smtp": {**dns["smtp"], "probe_mx": False, "hosts": list(hosts)}}

        pairs = [
            ("DNS domain", {**one_ip, "domains": domains[:2]}, {**one_ip, "domains": domains[:6]}, 4),
            ("outbound IP", one_domain, {**one_domain, "outbound_ips": ips}, 1),
            (
                "probed MX host",
                probing("mx1.corp.bench.test"),
                probing("mx1.corp.bench.test", "mx2.corp.bench.test", "ns1.bench.test"),
                2,
            ),
        ]
        for obj, small, large, n in pairs:
            out += _diff(obj, _measure({**base, "dns": small}), _measure({**base, "dns": large}), n)
    return out


def table(costs: list[Cost]) -> str:
    """The markdown table docs/sizing.md carries between its markers."""
    lines = [
        "| per | collector | series | exposition bytes | families that grow |",
        "|---|---|---:|---:|---|",
    ]
    for c in costs:
        note = NOTES.get((c.obj, c.collector))
        families = ", ".join(f"`{f}`" for f in c.families) or "-"
        lines.append(
            f"| {c.obj} | {c.collector} | {c.series:g} | {c.exposition_bytes:,.0f} | {families}"
            + (f" ({note})" if note else "")
            + " |"
        )
    totals: dict[str, list[float]] = {}
    for c in costs:
        totals.setdefault(c.obj, [0.0, 0.0])
        totals[c.obj][0] += c.series
        totals[c.obj][1] += c.exposition_bytes
    for obj, (series, size) in totals.items():
        lines.append(f"| {obj} | **all** | {series:g} | {size:,.0f} | |")
    return "\n".join(lines)


ROW = re.compile(r"^\| (?P<obj>[^|]+?) \| (?P<collector>[^|*]+?) \| (?P<series>[\d.]+) \|", re.MULTILINE)


def stated(text: str) -> dict[tuple[str, str], float]:
    """(object, collector) -> series per object, from docs/sizing.md's generated table."""
    section = text[text.index(BEGIN) : text.index(END)]
    return {(m["obj"], m["collector"]): float(m["series"]) for m in ROW.finditer(section)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="replace the generated table in docs/sizing.md")
    parser.add_argument("--families", action="store_true", help="also print series per object by family")
    args = parser.parse_args()
    costs = exchange_costs() + dns_costs()
    text = table(costs)
    print(text)
    if args.families:
        for c in costs:
            for family, series in c.per_family:
                print(f"{c.obj:18} {c.collector:20} {family:60} {series:g}")
    for c in costs:
        print(f"RESULT sizing_{c.obj.replace(' ', '_')}_{c.collector}_series={c.series:g}")
    if args.write:
        doc = DOC.read_text()
        start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
        DOC.write_text(doc[:start] + "\n" + text + "\n" + doc[end:])
        print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
