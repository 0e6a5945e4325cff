"""The exposition as the Prometheus ecosystem sees it: promtool lint, the metric docs, a real scrape."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import demo_org, poll_demo_with_a_healed_fault, start_prometheus, tool

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_exposition() -> Any:
    """The exporter's full output against the bundled demo organisation, discovery on."""
    from exporter.service import Service

    with demo_org({"exchange": {"discovery": {"enabled": True}}}) as (sim, scenario, settings):
        service = Service(settings)
        try:
            poll_demo_with_a_healed_fault(service, sim, scenario)
            yield service, generate_latest(service.registry).decode()
        finally:
            service.stop()


def test_promtool_check_metrics_has_no_findings(demo_exposition: Any) -> None:
    _, text = demo_exposition
    result = subprocess.run(
        [tool("promtool"), "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and result.stdout.strip() == "" and result.stderr.strip() == "", (
        result.stdout + result.stderr
    )


def test_every_metric_is_documented_and_every_documented_metric_is_emitted(demo_exposition: Any) -> None:
    _, text = demo_exposition
    emitted = set()
    for line in text.splitlines():
        if line.startswith("# TYPE mailflow_"):
            name = line.split()[2]
            emitted.add(name)
    doc = (ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(mailflow_[a-z_]+)` \|", doc, re.M))
    assert emitted - documented == set(), "emitted but not in docs/metrics.md"
    assert documented - emitted == set(), "documented but not emitted against the demo organisation"


def test_no_unbounded_labels(demo_exposition: Any) -> None:
    _, text = demo_exposition
    # A certificate's subject DN is bounded (a few certificates per server); a message subject is not.
    allowed = {("mailflow_certificate_expiry_timestamp_seconds", "subject")}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for label in sample.labels:
                if label in ("message_id", "sender", "recipient", "subject", "identity"):
                    assert (family.name, label) in allowed, (family.name, label)
    assert not re.search(r'next_hop_domain="[^"]*\\\\\d+"', text)  # no EX01\3 row identities


ALERT_RULES = ROOT / "dashboards" / "prometheus" / "alerts.yml"


def test_every_metric_in_rules_is_emitted(demo_exposition: Any) -> None:
    """Alert rules (Prometheus and the generated Grafana twins) name only metrics the exporter emits."""
    from dashboards.build_grafana_alerts import build

    _, text = demo_exposition
    emitted = {f.name for f in text_string_to_metric_families(text)} | {
        s.name for f in text_string_to_metric_families(text) for s in f.samples
    }
    prometheus = [r["expr"] for g in yaml.safe_load(ALERT_RULES.read_text())["groups"] for r in g["rules"]]
    grafana = [
        d["model"]["expr"] for g in build()["groups"] for r in g["rules"] for d in r["data"] if "expr" in d["model"]
    ]
    assert prometheus == grafana  # the Grafana rules query exactly the Prometheus expressions, in order
    named = {m for expr in prometheus for m in re.findall(r"\b(mailflow_[a-z0-9_]+)", expr)}
    assert named and named <= emitted, named - emitted


def test_real_prometheus_scrapes_the_exporter(demo_exposition: Any, tmp_path: Path) -> None:
    service, _ = demo_exposition
    service.start()  # HTTP server on an ephemeral port (the polls already ran)
    assert service.web is not None
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{ALERT_RULES}']\n"
        "scrape_configs:\n"
        "  - job_name: mailflow\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{service.web.port}']}}]\n"
    )
    proc, prom_port = start_prometheus(config, tmp_path, stderr=subprocess.PIPE)

    def query(expr: str) -> list[Any]:
        url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as resp:
            return list(json.load(resp)["data"]["result"])

    try:
        deadline = time.monotonic() + 60
        result: list[Any] = []
        while time.monotonic() < deadline:
            try:
                result = query('sum by (server) (mailflow_queue_last_error_info{category="dns_failure"})')
                if result:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert result, "Prometheus never ingested the exporter's metrics"
        assert query('up{job="mailflow"}')[0]["value"][1] == "1"
        assert query("count(mailflow_collector_up == 1)")[0]["value"][1] == str(len(service.store.states()))

        # The demo's planted faults drive the real rules to pending (their for: is minutes long).
        planted = {
            "MailflowQueueRetryingDnsFailure": {"server": "EX01"},
            "MailflowPoisonQueueNotEmpty": {},
            "MailflowCertificateExpiring": {"server": "EX02"},
            "MailflowSpfFailingForOutboundIp": {"domain": "contoso.sim", "ip": "192.0.2.20", "result": "fail"},
            "MailflowPtrMismatch": {"ip": "192.0.2.20"},
            "MailflowOutboundIpBlocklisted": {"ip": "192.0.2.20", "zone": "bl.demo.example"},
            "MailflowDmarcMissing": {"domain": "fabrikam.sim"},
        }
        active: list[dict[str, Any]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            active = query('ALERTS{alertstate=~"pending|firing"}')
            names = {a["metric"]["alertname"] for a in active}
            if set(planted) <= names:
                break
            time.sleep(0.5)
        for name, labels in planted.items():
            matching = [a for a in active if a["metric"]["alertname"] == name]
            assert any(labels.items() <= a["metric"].items() for a in matching), (name, matching)
        quiet = {"MailflowOpenRelayConnector", "MailflowSendConnectorDrift", "MailflowReceiveConnectorDrift",
                 "MailflowExporterDown", "MailflowSmtpProbeFailing", "MailflowDnsRecordDrift", "MailflowMxMissing",
                 "MailflowCollectorFailing", "MailflowExchangeUnreachable"}  # fmt: skip
        assert not quiet & {a["metric"]["alertname"] for a in active}, active
    finally:
        proc.terminate()
        proc.wait(timeout=30)
