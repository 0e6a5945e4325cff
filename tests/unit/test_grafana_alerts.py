"""Grafana-managed alerting provisioning: generated from the Prometheus rules, never disagreeing with them."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from dashboards.build_grafana_alerts import OUTPUT, PROMETHEUS_RULES, build, render

ALERTING = Path(OUTPUT).parent


def test_provisioning_file_is_generated_from_the_current_rules() -> None:
    assert OUTPUT.read_text() == render(build()), "run: python dashboards/build_grafana_alerts.py"


def test_each_grafana_rule_queries_exactly_its_prometheus_twin() -> None:
    """Twins pair by name and severity: a fault with a warning and a critical tier has two rules of one
    name in Prometheus; Grafana (before 12) wants unique titles, so a later tier's title names its severity."""
    rules = [r for g in yaml.safe_load(PROMETHEUS_RULES.read_text())["groups"] for r in g["rules"]]
    prometheus = {(r["alert"], r["labels"]["severity"]): r for r in rules}
    assert len(prometheus) == len(rules), "two rules of one name need different severities"
    listed = [r for g in yaml.safe_load(OUTPUT.read_text())["groups"] for r in g["rules"]]
    grafana = {(r["title"].split(" (")[0], r["labels"]["severity"]): r for r in listed}
    assert set(grafana) == set(prometheus) and len(listed) == len(rules)
    titles = [r["title"] for r in listed]
    assert len(set(titles)) == len(titles)  # Grafana 11 rejects a repeated title in one folder
    uids = [r["uid"] for r in grafana.values()]
    assert len(set(uids)) == len(uids) and all(re.fullmatch(r"[a-z0-9-]{1,40}", u) for u in uids)
    for (name, severity), rule in grafana.items():
        twin = prometheus[name, severity]
        query = next(d for d in rule["data"] if d["refId"] == "A")
        assert query["model"]["expr"] == twin["expr"], name
        assert rule["condition"] == "B" and rule["for"] == twin["for"] and rule["labels"] == twin["labels"]
        assert rule["noDataState"] == "OK"  # like Prometheus: no series, no alert
        for key, text in twin["annotations"].items():
            assert rule["annotations"][key] == text.replace("$value", "$values.A.Value"), (name, key)


def test_policy_routes_critical_to_the_pager_and_names_existing_contact_points() -> None:
    points = {c["name"] for c in yaml.safe_load((ALERTING / "contact-points.yaml").read_text())["contactPoints"]}
    policy = yaml.safe_load((ALERTING / "policies.yaml").read_text())["policies"][0]
    receivers = {policy["receiver"], *(r["receiver"] for r in policy["routes"])}
    assert receivers <= points
    critical = [r for r in policy["routes"] if ["severity", "=", "critical"] in r["object_matchers"]]
    assert critical and critical[0]["receiver"] == "mailflow-pager"
    paged = {r["title"] for g in build()["groups"] for r in g["rules"] if r["labels"].get("severity") == "critical"}
    assert {"MailflowQueueGrowing", "MailflowDnsRecordDrift"} <= paged  # pages on queue growth and DNS drift
