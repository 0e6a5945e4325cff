"""The Prometheus alert rules and the example Alertmanager configuration: tested, styled, documented.

* ``promtool check rules`` and ``promtool test rules`` (dashboards/prometheus/alerts_test.yml).
* Mixin style of every alert (name, severity, summary, description, runbook_url) and a runbook
  section per alert in docs/runbook.md.
* Every alert has a unit test that shows it firing (each of its severity tiers) and one that shows it quiet.
* A name used by two rules is one fault at two severities (warning and critical tiers).
* Every metric a rule uses is documented in docs/metrics.md. Whether the exporter really emits
  them is checked against its live exposition by the integration test
  (tests/integration/test_prometheus.py).
* ``amtool check-config``, the routing cases of dashboards/alertmanager/routes_test.yml, and the
  inhibition cases against a real Alertmanager; inhibit rules name only alerts that exist.

promtool comes with Debian's ``prometheus``, amtool and the Alertmanager with
``prometheus-alertmanager`` (scripts/test.sh installs both). Without them the tests skip on a
developer machine and fail under CI (CI=true).
"""

from __future__ import annotations

import functools
import json
import re
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.tools import ci_tool

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "dashboards" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "dashboards" / "prometheus" / "alerts_test.yml"
ALERTMANAGER = ROOT / "dashboards" / "alertmanager" / "alertmanager.yml"
ROUTES_TEST = ROOT / "dashboards" / "alertmanager" / "routes_test.yml"
METRICS_DOC = ROOT / "docs" / "metrics.md"
RUNBOOK = ROOT / "docs" / "runbook.md"

RUNBOOK_URL = "https://github.com/mailflow-exporter/mailflow-exporter/blob/main/docs/runbook.md#"
NAME = re.compile(r"^Mailflow([A-Z][a-z0-9]+)+$")
SEVERITIES = {"critical", "warning", "info"}
# Metrics a rule may use that are not the exporter's own (Prometheus' scrape health).
NOT_EXPORTED = {"up"}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False, timeout=60)


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def _load(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=_Loader)  # CSafeLoader or SafeLoader


def _rules() -> list[dict[str, Any]]:
    groups = _load(ALERTS)["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


RULES = _rules()
ALERT_NAMES = {rule["alert"] for rule in RULES}


def test_alerts_file_has_the_expected_rules() -> None:
    """Rules share a name only as severity tiers of one fault: same annotations' runbook, different severity."""
    tiers: dict[str, list[dict[str, Any]]] = {}
    for rule in RULES:
        tiers.setdefault(rule["alert"], []).append(rule)
    for name, rules in tiers.items():
        severities = [r["labels"]["severity"] for r in rules]
        assert len(set(severities)) == len(severities), f"{name}: two rules with one severity"
        assert len({r["annotations"]["runbook_url"] for r in rules}) == 1, name
    assert len(ALERT_NAMES) >= 40 and len(RULES) > len(ALERT_NAMES)


# ---------------------------------------------------------------- promtool


def test_promtool_check_rules() -> None:
    promtool = ci_tool("promtool", "prometheus")
    result = _run(promtool, "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULES)} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    promtool = ci_tool("promtool", "prometheus")
    result = _run(promtool, "test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    tests = _load(ALERTS_TEST)
    assert tests["rule_files"] == ["alerts.yml"]
    firing: set[tuple[str, str]] = set()
    quiet: set[str] = set()
    for group in tests["tests"]:
        for case in group.get("alert_rule_test", []):
            name = case["alertname"]
            assert name in ALERT_NAMES, f"{group['name']}: tests unknown alert {name}"
            if case.get("exp_alerts"):
                for alert in case["exp_alerts"]:
                    annotations = alert.get("exp_annotations", {})
                    assert set(annotations) == {"summary", "description", "runbook_url"}, (name, annotations)
                    assert "severity" in alert.get("exp_labels", {}), name
                    firing.add((name, alert["exp_labels"]["severity"]))
            else:
                quiet.add(name)
    tiers = {(rule["alert"], rule["labels"]["severity"]) for rule in RULES}
    assert sorted(tiers - firing) == [], "alerts (and severity tiers) never shown firing"
    assert ALERT_NAMES - quiet == set(), "alerts never shown quiet"


# ---------------------------------------------------------------- style (monitoring-mixin)


@pytest.mark.parametrize("rule", RULES, ids=[f"{rule['alert']}-{rule['labels']['severity']}" for rule in RULES])
def test_alert_style(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert NAME.match(name), f"{name}: CamelCase with the Mailflow prefix"
    assert rule.get("for"), f"{name}: a for: duration rides out one failed poll"
    assert rule.get("labels", {}).get("severity") in SEVERITIES, name
    annotations = rule.get("annotations", {})
    summary = annotations.get("summary", "")
    assert summary, f"{name}: summary is mandatory"
    assert "{{" not in summary, f"{name}: summary must not be templated"
    assert summary[0].isupper() and summary.endswith("."), f"{name}: summary is a sentence"
    description = annotations.get("description", "")
    assert "{{" in description, f"{name}: description is mandatory and templated"
    url = annotations.get("runbook_url", "")
    assert url == RUNBOOK_URL + name.lower(), f"{name}: runbook_url {url}"


def test_runbook_has_a_section_per_alert() -> None:
    """GitHub makes ``### MailflowQueueGrowing`` the anchor ``#mailflowqueuegrowing``."""
    headings = set(re.findall(r"^### (\S+)\s*$", RUNBOOK.read_text(), re.M))
    missing = sorted(ALERT_NAMES - headings)
    assert missing == [], f"docs/runbook.md lacks '### <AlertName>' sections for {missing}"


# ---------------------------------------------------------------- metrics used are documented

_FUNCTION_OR_KEYWORD = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\(")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (selectors, not functions, keywords or label names)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = _GROUPING.sub(" ", text)  # label lists
    text = _FUNCTION_OR_KEYWORD.sub(" (", text)  # function and aggregation names
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", text))
    return words - {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def test_metric_name_extraction() -> None:
    expr = 'deriv(sum by (job, server) (m_a{k=~"x|y"})[15m:1m]) * 900 > 50 and on (job) m_b unless max(m_c) or up'
    assert metric_names(expr) == {"m_a", "m_b", "m_c", "up"}


def test_every_metric_in_the_rules_is_documented() -> None:
    documented = set(re.findall(r"^\| `([a-z_:][a-z0-9_:]*)` \|", METRICS_DOC.read_text(), re.M))
    assert "mailflow_queue_messages" in documented
    used = {name for rule in RULES for name in metric_names(rule["expr"])}
    assert {"up", "mailflow_queue_messages", "mailflow_dns_spf_lookups"} <= used
    base = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used - NOT_EXPORTED}
    assert sorted(base - documented) == [], "used by alerts.yml but not in docs/metrics.md"


# ---------------------------------------------------------------- Alertmanager


def test_amtool_check_config() -> None:
    amtool = ci_tool("amtool", "prometheus-alertmanager")
    result = _run(amtool, "check-config", str(ALERTMANAGER))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


ROUTES = _load(ROUTES_TEST)


@pytest.mark.parametrize(
    "case", ROUTES["routes"], ids=[",".join(f"{k}={v}" for k, v in c["labels"].items()) for c in ROUTES["routes"]]
)
def test_route(case: dict[str, Any]) -> None:
    amtool = ci_tool("amtool", "prometheus-alertmanager")
    labels = [f"{key}={value}" for key, value in case["labels"].items()]
    result = _run(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER}",
        f"--verify.receivers={case['receiver']}",
        *labels,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [case["receiver"]]


def test_every_severity_has_a_route_case() -> None:
    receivers = {c["labels"].get("severity"): c["receiver"] for c in ROUTES["routes"]}
    assert {rule["labels"]["severity"] for rule in RULES} <= set(receivers)
    assert receivers["critical"] == "pager" and receivers["warning"] == "tickets" and receivers["info"] == "null"


_MATCHER = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"\s*$')


def _matchers(items: list[str]) -> list[tuple[str, str, str]]:
    parsed = []
    for item in items:
        match = _MATCHER.match(item)
        assert match, f"cannot parse matcher {item!r}"
        parsed.append((match.group(1), match.group(2), match.group(3)))
    return parsed


def _matching_alerts(matchers: list[tuple[str, str, str]]) -> set[str]:
    """Alerts of alerts.yml the alertname and severity matchers select."""
    selected = set()
    for rule in RULES:
        values = {"alertname": rule["alert"], "severity": rule["labels"]["severity"]}
        ok = True
        for label, op, value in matchers:
            actual = values.get(label)
            if actual is None:
                continue
            hit = re.fullmatch(value, actual) is not None if "~" in op else actual == value
            ok = ok and (hit if op in ("=", "=~") else not hit)
        if ok:
            selected.add(rule["alert"])
    return selected


def _alert_labels() -> dict[str, set[str]]:
    """Label names each alert carries when it fires, from the exp_labels of alerts_test.yml."""
    carried: dict[str, set[str]] = {}
    for group in _load(ALERTS_TEST)["tests"]:
        for case in group.get("alert_rule_test", []):
            for alert in case.get("exp_alerts") or []:
                carried.setdefault(case["alertname"], set()).update(alert["exp_labels"])
    return carried


def test_inhibit_rules_name_existing_alerts_and_labels_they_carry() -> None:
    config = _load(ALERTMANAGER)
    carried = _alert_labels()
    for number, rule in enumerate(config["inhibit_rules"]):
        sides = {side: _matchers(rule[f"{side}_matchers"]) for side in ("source", "target")}
        for side, matchers in sides.items():
            for label, op, value in matchers:
                if label == "alertname" and "~" not in op:
                    assert value in ALERT_NAMES, f"inhibit rule {number}: unknown alert {value}"
                elif label == "alertname" and re.fullmatch(r"[A-Za-z0-9|]+", value):
                    unknown = set(value.split("|")) - ALERT_NAMES
                    assert not unknown, f"inhibit rule {number}: unknown alerts {unknown}"
                elif label == "severity" and "~" not in op:
                    assert value in SEVERITIES, f"inhibit rule {number}: unknown severity {value}"
            selected = _matching_alerts(matchers)
            assert selected, f"inhibit rule {number}: {side} matches no alert of alerts.yml"
            if not any(label == "alertname" for label, _, _ in matchers):
                continue  # the generic severity rule: equal lists every identifying label
            for label in rule["equal"]:
                lacking = {name for name in selected if label not in carried[name]}
                assert not lacking, f"inhibit rule {number}: {side} alerts {lacking} lack equal label {label}"


# ---------------------------------------------------------------- inhibition in a real Alertmanager


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = ci_tool("prometheus-alertmanager", "prometheus-alertmanager")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    storage = tmp_path_factory.mktemp("alertmanager")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={ALERTMANAGER}",
            f"--storage.path={storage}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"alertmanager did not start: {process.stderr.read()!r}") from None
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def _post(url: str, alerts: list[dict[str, Any]]) -> None:
    request = urllib.request.Request(
        f"{url}/api/v2/alerts",
        data=json.dumps(alerts).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5):
        pass


def _statuses(url: str) -> dict[frozenset[tuple[str, str]], dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as response:
        alerts = json.load(response)
    return {frozenset(a["labels"].items()): a["status"] for a in alerts}


@pytest.mark.integration
def test_inhibitions_in_a_real_alertmanager(alertmanager: str) -> None:
    """Each case gets its own instance value, so cases cannot inhibit each other."""

    def isolate(labels: dict[str, str], number: int) -> dict[str, str]:
        return {**labels, "instance": f"{labels['instance']}/case{number}"}

    cases = ROUTES["inhibitions"]
    sources = [isolate(c["source"], n) for n, c in enumerate(cases)]
    targets = [isolate(c["target"], n) for n, c in enumerate(cases)]
    # A sentinel pair posted last: once it shows inhibited, every source before it is known.
    sentinel_source = {"alertname": "MailflowSmtpProbeFailing", "severity": "critical", "instance": "sentinel"}
    sentinel_target = {"alertname": "MailflowSmtpStarttlsMissing", "severity": "warning", "instance": "sentinel"}
    _post(alertmanager, [{"labels": labels} for labels in [*sources, sentinel_source]])
    _post(alertmanager, [{"labels": labels} for labels in [*targets, sentinel_target]])
    deadline = time.monotonic() + 5
    while True:
        statuses = _statuses(alertmanager)
        sentinel = statuses.get(frozenset(sentinel_target.items()))
        if sentinel and sentinel["inhibitedBy"]:
            break
        assert time.monotonic() < deadline, "the sentinel alert was never inhibited"
        time.sleep(0.05)
    wrong = []
    for case, target in zip(cases, targets, strict=True):
        inhibited = bool(statuses[frozenset(target.items())]["inhibitedBy"])
        if inhibited != case["inhibited"]:
            wrong.append(f"{case['name']}: inhibited={inhibited}")
    assert wrong == []
