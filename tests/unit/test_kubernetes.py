"""Kubernetes manifests, validated without a cluster: rendered by kustomize (kubectl), checked against the
Kubernetes OpenAPI schemas (kubernetes-validate), rules by promtool, the config by the exporter itself."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from exporter.settings import load_settings
from tests.tools import ci_tool

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.30"


def render(overlay: str) -> list[dict[str, Any]]:
    """kustomize's output via kubectl when the machine has it (not a Debian package: the image may
    provide it); otherwise the same resources assembled from the kustomization files directly."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return assemble(overlay)
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def assemble(overlay: str) -> list[dict[str, Any]]:
    """The subset of kustomize these files use: resources, configMapGenerator files, JSON-patch replace ops."""
    base = K8S / "base"
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    docs = [d for r in kustomization["resources"] for d in yaml.safe_load_all((base / r).read_text()) if d]
    for gen in kustomization.get("configMapGenerator", []):
        data = {f: (base / f).read_text() for f in gen["files"]}
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data})
    for patch in yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text()).get("patches", []):
        target = next(d for d in docs if d["kind"] == patch["target"]["kind"])
        for op in yaml.safe_load(patch["patch"]):
            assert op["op"] == "replace", op
            *parents, last = op["path"].strip("/").split("/")
            node: Any = target
            for key in parents:
                node = node[int(key)] if isinstance(node, list) else node[key]
            node[int(last) if isinstance(node, list) else last] = op["value"]
    return docs


def test_assembled_resources_equal_kustomize_output() -> None:
    rendered = render("sharded")
    if shutil.which("kubectl") is None:
        pytest.skip(
            "optional: kubectl is not installed (Debian ships no current one; install kubectl from the Kubernetes "
            "project to compare these resources with kustomize's own output)"
        )
    assembled = assemble("sharded")
    assert sorted(d["kind"] for d in rendered) == sorted(d["kind"] for d in assembled)
    sts = by_kind(rendered, "StatefulSet")
    sts_assembled = by_kind(assembled, "StatefulSet")
    volumes = sts["spec"]["template"]["spec"]["volumes"]
    assert volumes[0]["configMap"]["name"].startswith("mailflow-exporter-config-")  # kustomize's hashed name
    sts_assembled["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"] = volumes[0]["configMap"]["name"]
    assert sts == sts_assembled


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


def test_generated_resources_are_current() -> None:
    result = subprocess.run(
        ["python3", str(K8S / "build.py"), "--check"], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("overlay", ["single", "sharded"])
def test_overlays_render_and_validate_against_the_kubernetes_schemas(overlay: str) -> None:
    docs = render(overlay)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "ConfigMap", "PrometheusRule", "Service", "ServiceMonitor", "StatefulSet"]
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com"):
            continue  # CRDs: checked below
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_statefulset_is_locked_down_and_probed() -> None:
    sts = by_kind(render("single"), "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/var/lib/mailflow", "/tmp", "/run/secrets/mailflow", "/etc/mailflow-exporter"} <= mounts


def test_sharded_overlay_keeps_replicas_and_shard_count_together() -> None:
    sts = by_kind(render("sharded"), "StatefulSet")
    env = {e["name"]: e["value"] for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert sts["spec"]["replicas"] == int(env["MAILFLOW_SHARDING__COUNT"]) == 3


def test_prometheus_rule_is_the_alerts_file_and_passes_promtool(tmp_path: Path) -> None:
    rule = by_kind(render("single"), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((ROOT / "dashboards" / "prometheus" / "alerts.yml").read_text())
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    result = subprocess.run(
        [ci_tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    count = sum(len(group["rules"]) for group in rule["spec"]["groups"])
    assert count >= 38  # every alert of alerts.yml, none lost on the way
    assert result.returncode == 0 and f"SUCCESS: {count} rules found" in result.stdout, result.stdout + result.stderr
    monitor = by_kind(render("single"), "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert {"targetLabel": "job", "replacement": "mailflow"} in monitor["spec"]["endpoints"][0]["relabelings"]


def test_configmaps_hold_a_valid_config_and_every_dashboard(tmp_path: Path) -> None:
    docs = render("single")
    configs = [d for d in docs if d["kind"] == "ConfigMap"]
    config = next(d for d in configs if "config.yml" in d.get("data", {}))
    path = tmp_path / "config.yml"
    path.write_text(config["data"]["config.yml"])
    settings = load_settings(path)  # raises ConfigError with the field and line if invalid
    assert settings.exchange.servers and str(settings.state_dir) == "/var/lib/mailflow"
    dashboards = next(d for d in configs if d["metadata"].get("labels", {}).get("grafana_dashboard") == "1")
    assert sorted(dashboards["data"]) == sorted(
        p.name for p in (ROOT / "dashboards" / "grafana" / "dashboards").glob("*.json")
    )
