"""Every dashboard query against a real Prometheus scraping the exporter on the demo organisation.

The exporter polls the simulated Exchange organisation and its simulated outside world (DemoNet: DNS,
blocklist and MX endpoint with planted faults); Debian's Prometheus scrapes it every second; then each
target of each panel runs through /api/v1/query with the dashboard variables filled in as Grafana would.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import demo_org, poll_demo_with_a_healed_fault, start_prometheus
from tests.unit.test_dashboards import (
    all_queries,
    iter_panels,
    load_dashboards,
    selectors,
    substitute,
    variable_selectors,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

#: Panels that show only failures the demo organisation does not plant, so they are empty there.
#: Keep this short: each entry is checked to be empty, so a stale entry fails too.
EMPTY_ON_DEMO = {
    ("mailflow-config-health", "Open relay findings"): "the demo's only relay connector is scoped to its subnet",
    ("mailflow-dns", "Last record change seen"): "a record change is only seen when DNS changes during the run",
    ("mailflow-dns", "Resolver, blocklist and probe errors"): "DemoNet's resolver, blocklist and MX always answer",
    ("mailflow-tracking", "Probe stopped at"): "the demo's synthetic probes arrive",
}
#: Series Prometheus adds to every scrape target itself (not in the exposition).
PROMETHEUS_SERIES = {"up"}


class Prom:
    def __init__(self, port: int) -> None:
        self.port = port

    def query(self, expr: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query"
        data = urllib.parse.urlencode({"query": expr}).encode()
        try:
            with urllib.request.urlopen(url, data=data, timeout=10) as resp:
                return dict(json.load(resp))
        except urllib.error.HTTPError as exc:  # 400/422 carry the error in the body
            return dict(json.load(exc))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prom, str, str]]:
    """(Prometheus, the exporter's host:port, its /metrics text) with a few scrapes ingested."""
    from exporter.service import Service

    with demo_org({"exchange": {"discovery": {"enabled": True}}}) as (sim, scenario, settings):
        service = Service(settings)
        proc: subprocess.Popen[str] | None = None
        try:
            snaps = poll_demo_with_a_healed_fault(service, sim, scenario)
            assert {s.collector for s in snaps} >= {"queues", "tracking", "dns_domains", "dns_ips", "smtp"}
            service.start()  # HTTP on an ephemeral port; scheduled polls keep the counters moving
            assert service.web is not None
            target = f"127.0.0.1:{service.web.port}"
            with urllib.request.urlopen(f"http://{target}/metrics", timeout=10) as resp:
                exposition = resp.read().decode()

            tmp = tmp_path_factory.mktemp("prometheus")
            config = tmp / "prometheus.yml"
            config.write_text(
                "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
                "scrape_configs:\n"
                "  - job_name: mailflow\n"
                f"    static_configs: [{{targets: ['{target}']}}]\n"
            )
            proc, port = start_prometheus(config, tmp)
            prom = Prom(port)
            # rate() needs two samples in its window: a few scrapes, then one more poll (new tracking events,
            # latency observations) so the counters move inside the window, then a few more scrapes.
            wait_for_scrapes(prom, 3)
            service.poll_all()
            wait_for_scrapes(prom, 6)
            yield prom, target, exposition
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
            service.stop()


def wait_for_scrapes(prom: Prom, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    scrapes = 0.0
    while time.monotonic() < deadline:
        try:
            result = prom.query('count_over_time(mailflow_build_info{job="mailflow"}[1m])')["data"]["result"]
            scrapes = float(result[0]["value"][1]) if result else 0
        except (OSError, KeyError):
            pass
        if scrapes >= count:
            return
        time.sleep(0.5)
    pytest.fail(f"Prometheus scraped the exporter {scrapes:.0f} times, not {count}")


def grafana_values(target: str) -> dict[str, str]:
    """Variable values as Grafana would send them with job=mailflow and this exporter selected."""
    return {"job": "mailflow", "instance": re.escape(target).replace("\\", "\\\\")}


def run(prom: Prom, target: str, expr: str) -> list[dict[str, Any]]:
    query = substitute(expr, grafana_values(target), __rate_interval="1m", __range="5m", __interval="15s")
    answer = prom.query(query)
    assert answer.get("status") == "success", f"{query}: {answer}"
    return list(answer["data"]["result"])


def test_every_panel_query_runs_and_returns_data(live: tuple[Prom, str, str]) -> None:
    prom, target, _ = live
    empty_panels: dict[tuple[str, str], list[str]] = {}
    no_data = []
    for q in all_queries():
        result = run(prom, target, q.expr)
        key = (q.dashboard, q.panel)
        if key in EMPTY_ON_DEMO:
            empty_panels.setdefault(key, []).extend(q.ref for _ in result)
            continue
        if not result:
            no_data.append(f"{q.dashboard} / {q.panel} / {q.ref}: {q.expr}")
            continue
        # Every sample is a number Grafana can draw; NaN only where no observation fell in the window.
        values = [float(r["value"][1]) for r in result]
        if "histogram_quantile" not in q.expr and " / " not in q.expr:
            assert not any(math.isnan(v) for v in values), f"{q.dashboard} / {q.panel} / {q.ref}: NaN"
    assert not no_data, "queries without data on the demo organisation:\n" + "\n".join(no_data)
    stale = {key for key, refs in empty_panels.items() if refs}
    assert not stale, f"listed as empty on the demo but returned data: {stale}"
    assert set(EMPTY_ON_DEMO) <= {(q.dashboard, q.panel) for q in all_queries()}, "EMPTY_ON_DEMO names a lost panel"


def test_table_results_carry_only_the_labels_the_table_shows(live: tuple[Prom, str, str]) -> None:
    """A label a table neither names nor hides would show up as a stray column."""
    prom, target, _ = live
    for d in load_dashboards().values():
        for panel in iter_panels(d):
            if panel["type"] != "table":
                continue
            organize = next(t for t in panel["transformations"] if t["id"] == "organize")["options"]
            shown = set(organize["renameByName"]) | set(organize["excludeByName"])
            for t in panel["targets"]:
                for series in run(prom, target, t["expr"]):
                    extra = set(series["metric"]) - shown
                    assert not extra, f"{d['uid']} / {panel['title']} / {t['refId']}: stray columns {extra}"


def test_template_variables_list_values(live: tuple[Prom, str, str]) -> None:
    prom, target, _ = live
    for uid, name, selector, label in variable_selectors():
        values = {r["metric"].get(label) for r in run(prom, target, selector)} - {None}
        assert values, f"{uid} ${name}: {selector} has no {label} values"
    assert {r["metric"]["target"] for r in run(prom, target, 'mailflow_collector_up{collector="queues"}')} == {
        "EX01",
        "EX02",
        "EX03",
    }


def test_every_metric_the_dashboards_use_is_in_the_live_exposition(live: tuple[Prom, str, str]) -> None:
    """Every metric is declared (# TYPE) by the running exporter, and has samples unless only panels that are
    empty on the demo use it (metrics present only while something fails)."""
    _, _, exposition = live
    declared = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.M):
        declared |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
    sampled = {line.split("{")[0].split(" ")[0] for line in exposition.splitlines() if line and line[0] != "#"}
    used: dict[str, set[tuple[str, str]]] = {}
    for q in all_queries():
        for s in selectors(q.expr):
            used.setdefault(s.name, set()).add((q.dashboard, q.panel))
    for _uid, _name, selector, _label in variable_selectors():
        used.setdefault(selectors(selector)[0].name, set()).add(("", "variable"))
    assert len(used) > 60
    assert set(used) - PROMETHEUS_SERIES - declared == set(), "not declared by the exporter"
    must_have_samples = {name for name, panels in used.items() if panels - set(EMPTY_ON_DEMO)}
    assert must_have_samples - PROMETHEUS_SERIES - sampled == set(), "no samples on the demo organisation"


def test_planted_faults_show_where_the_dashboards_look(live: tuple[Prom, str, str]) -> None:
    """The panels an admin reads first show the demo's planted problems, not just "some data"."""
    prom, target, _ = live
    panels = {(q.dashboard, q.panel, q.ref): q.expr for q in all_queries()}

    def values(uid: str, panel: str, ref: str = "A") -> list[dict[str, Any]]:
        return run(prom, target, panels[(uid, panel, ref)])

    retry = values("mailflow-overview", "Queues in Retry and why")
    assert {(r["metric"]["next_hop_domain"], r["metric"]["category"]) for r in retry} == {
        ("fabrikam.example", "dns_failure"),
        ("tailspin.example", "connection_refused"),
    }
    assert float(values("mailflow-overview", "Queues in Retry")[0]["value"][1]) == 2
    assert float(values("mailflow-overview", "Failing polls")[0]["value"][1]) == 0
    # SPF fail x3, the EX02 listing, its PTR/HELO mismatch, fabrikam.sim's missing DMARC.
    assert float(values("mailflow-overview", "DNS and reputation findings")[0]["value"][1]) == 6
    days = float(values("mailflow-overview", "SMTP certificate expires in")[0]["value"][1]) / 86400
    assert 11 < days <= 12  # EX02's planted certificate
    spf = {
        (r["metric"]["domain"], r["metric"]["ip"], r["metric"]["result"])
        for r in values("mailflow-dns", "SPF result per outbound IP")
    }
    assert ("contoso.sim", "192.0.2.20", "fail") in spf and ("contoso.sim", "192.0.2.10", "pass") in spf
    listed = {r["metric"]["ip"]: r["value"][1] for r in values("mailflow-dns", "Blocklists")}
    assert listed == {"192.0.2.10": "0", "192.0.2.20": "1"}
    # Mail moved while Prometheus watched: tracking rates and delivery latency are real numbers.
    received = values("mailflow-overview", "Messages per minute")
    assert float(received[0]["value"][1]) > 0
    p95 = values("mailflow-tracking", "Delivery latency percentiles", "B")
    assert 0 < float(p95[0]["value"][1]) < 600
