"""Kubernetes manifests, validated without a cluster: rendered by kustomize (kubectl), checked against the
Kubernetes OpenAPI schemas (kubernetes-validate), rules by promtool, the config by the exporter itself."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
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


OVERLAYS = ["single", "sharded"]
README_OVERLAY = "cat > deploy/kubernetes/overlays/local/kustomization.yaml <<EOF\n"


def render(overlay: str | Path) -> list[dict[str, Any]]:
    """kustomize's output via kubectl when the machine has it (not a Debian package: the image may
    provide it); otherwise the same resources assembled from the kustomization files directly."""
    directory = K8S / "overlays" / overlay if isinstance(overlay, str) else overlay
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return assemble(directory)
    return kustomize(kubectl, directory)


def kustomize(kubectl: str, directory: Path) -> list[dict[str, Any]]:
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


# --- the subset of kustomize these files use, for machines without kubectl ------------------------------


def assemble(directory: Path) -> list[dict[str, Any]]:
    """resources (files and kustomizations), components, configMapGenerator (files; create or replace),
    patches (JSON 6902 add/replace with a target, or a file merged into the object it names), images
    (newName/newTag) and namespace: in kustomize's order. ConfigMap names get no hash suffix."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        docs += assemble(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    for component in kustomization.get("components", []):
        docs = _transform(
            directory / component, yaml.safe_load((directory / component / "kustomization.yaml").read_text()), docs
        )
    return _transform(directory, kustomization, docs)


def _transform(directory: Path, kustomization: dict[str, Any], docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for gen in kustomization.get("configMapGenerator", []):
        data = {}
        for entry in gen["files"]:
            key, _, name = entry.rpartition("=")
            data[key or Path(name).name] = (directory / name).read_text()
        doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data}
        if gen.get("behavior", "create") == "replace":
            [old] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == gen["name"]]
            old["data"] = data
        else:
            assert gen.get("behavior", "create") == "create", gen
            docs.append(doc)
    for patch in kustomization.get("patches", []):
        if "path" in patch:  # a whole object, merged into the one of its kind and name (a CRD: lists replaced)
            merge = yaml.safe_load((directory / patch["path"]).read_text())
            assert merge["apiVersion"].startswith("monitoring.coreos.com/"), "the fallback merges CRDs only"
            [target] = [
                d for d in docs if (d["kind"], d["metadata"]["name"]) == (merge["kind"], merge["metadata"]["name"])
            ]
            _merge(target, merge)
            continue
        for target in [d for d in docs if _selected(d, patch["target"])]:
            for op in yaml.safe_load(patch["patch"]):
                _json_patch(target, op)
    for image in kustomization.get("images", []):
        for doc in docs:
            for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    tag = image.get("newTag", tag)
                    container["image"] = image.get("newName", name) + (f":{tag}" if tag else "")
    if "namespace" in kustomization:
        for doc in docs:
            doc["metadata"]["namespace"] = kustomization["namespace"]
    return docs


def _selected(doc: dict[str, Any], target: dict[str, str]) -> bool:
    group = doc["apiVersion"].rpartition("/")[0]
    actual = {"kind": doc["kind"], "name": doc["metadata"]["name"], "group": group}
    assert set(target) <= set(actual), target
    return all(actual[key] == value for key, value in target.items())


def _json_patch(doc: dict[str, Any], op: dict[str, Any]) -> None:
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].strip("/").split("/")]
    node: Any = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        index = int(last)
        assert op["op"] == "replace" and 0 <= index < len(node), op
        node[index] = op["value"]
    else:
        assert op["op"] == "add" or (op["op"] == "replace" and last in node), op
        node[last] = op["value"]


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """JSON merge patch (RFC 7386): what kustomize's strategic merge amounts to for a custom resource."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        elif value is None:
            target.pop(key, None)
        else:
            target[key] = value


def unhashed(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """kustomize's output with the generated ConfigMap's hash suffix taken off its name and references."""
    text = re.sub(r"\b(mailflow-exporter-config)-[a-z0-9]{10}\b", r"\1", yaml.safe_dump_all(docs))
    return sorted((d for d in yaml.safe_load_all(text) if d), key=lambda d: (d["kind"], d["metadata"]["name"]))


def readme_overlay(tmp_path: Path, registry: str, release: str, rules: bool = False) -> Path:
    """The overlay README's Kubernetes section writes (step 4), written under ``tmp_path``: its variables
    set, its ``resources`` pointing at the real overlay, the configuration copied (step 3), and with
    ``rules`` its commented-out PrometheusRule patch (step 7) switched on."""
    readme = (ROOT / "README.md").read_text()
    assert README_OVERLAY in readme, "README's Kubernetes section no longer writes the overlay"
    text = readme.split(README_OVERLAY, 1)[1].split("\n   EOF\n", 1)[0]
    text = textwrap.dedent(text).replace("$REGISTRY", registry).replace("$RELEASE", release)
    assert "$" not in text, text
    directory = tmp_path / "local"
    directory.mkdir()
    single = os.path.relpath(K8S / "overlays" / "single", directory)
    assert "resources: [../single]" in text
    text = text.replace("resources: [../single]", f"resources: [{single}]")
    if rules:
        assert "# - path: prometheusrule.yaml" in text
        text = text.replace("# - path: prometheusrule.yaml", "- path: prometheusrule.yaml")
    (directory / "kustomization.yaml").write_text(text)
    shutil.copy(K8S / "base" / "config.yml", directory / "config.yml")
    return directory


@pytest.mark.parametrize("overlay", [*OVERLAYS, "README's overlay with its own rules"])
def test_assembled_resources_equal_kustomize_output(overlay: str, tmp_path: Path) -> None:
    """The fallback renders what kustomize renders, so the tests below mean the same without kubectl."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip(
            "optional: kubectl is not installed (Debian ships no current one; install kubectl from the Kubernetes "
            "project to compare these resources with kustomize's own output)"
        )
    if overlay in OVERLAYS:
        directory = K8S / "overlays" / overlay
    else:
        directory = readme_overlay(tmp_path, "registry.example.com/x", "prom", rules=True)
        write_rules(directory, "--selector", 'namespace="mailflow"', "--release", "prom")
    assert unhashed(kustomize(kubectl, directory)) == unhashed(assemble(directory))


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


def test_generated_resources_are_current() -> None:
    result = subprocess.run(
        ["python3", str(K8S / "build.py"), "--check"], capture_output=True, text=True, check=False, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
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


# --- kube-prometheus-stack: release labels, the image parameter, the README's overlay, own rules ----------

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
MONITORING_KINDS = ("ServiceMonitor", "PrometheusRule")


def container_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [container] = by_kind(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"]
    return container


def write_rules(directory: Path, *args: str) -> Path:
    """``build.py rules ARGS > DIRECTORY/prometheusrule.yaml``, as README's step 7 runs it."""
    result = subprocess.run(
        [sys.executable, str(K8S / "build.py"), "rules", *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    path = directory / "prometheusrule.yaml"
    path.write_text(result.stdout)
    return path


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_labels_its_monitor_and_rules_for_kube_prometheus_stack(overlay: str) -> None:
    docs = render(overlay)
    for kind in MONITORING_KINDS:
        assert by_kind(docs, kind)["metadata"]["labels"]["release"] == "kube-prometheus-stack", kind
    others = [
        d["kind"] for d in docs if d["kind"] not in MONITORING_KINDS and "release" in d["metadata"].get("labels", {})
    ]
    assert others == []  # only what kube-prometheus-stack's Prometheus selects


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_sets_the_image_tag_as_a_kustomize_parameter(overlay: str) -> None:
    """The base names the image only (``images:`` replaces it); each overlay sets the released tag and
    no registry (there is no public image: the README's overlay adds the user's registry)."""
    base = yaml.safe_load((K8S / "base" / "statefulset.yaml").read_text())
    assert base["spec"]["template"]["spec"]["containers"][0]["image"] == "mailflow-exporter"
    kustomization = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
    assert kustomization["images"] == [{"name": "mailflow-exporter", "newTag": VERSION}]
    assert container_of(render(overlay))["image"] == f"mailflow-exporter:{VERSION}"


def test_statefulset_runs_serve_with_the_toolkit_flag_names() -> None:
    container = container_of(render("single"))
    assert container["args"] == ["serve", "--config.file=/etc/mailflow-exporter/config.yml"]
    env = {e["name"]: e["value"] for e in container["env"]}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "credentials")
    assert env["MAILFLOW_SECRETS_DIR"] == mount["mountPath"]  # a user's own config.yml needs no secrets_dir


def test_the_readme_overlay_sets_registry_release_namespace_and_configuration(tmp_path: Path) -> None:
    directory = readme_overlay(tmp_path, "registry.example.com/monitoring", "prom-stack")
    docs = render(directory)
    assert {d["metadata"].get("namespace") for d in docs} == {"mailflow"}
    assert container_of(docs)["image"] == f"registry.example.com/monitoring/mailflow-exporter:{VERSION}"
    for kind in MONITORING_KINDS:
        assert by_kind(docs, kind)["metadata"]["labels"]["release"] == "prom-stack", kind
    config = next(d for d in docs if d["kind"] == "ConfigMap" and "config.yml" in d.get("data", {}))
    assert config["data"]["config.yml"] == (directory / "config.yml").read_text()
    volume = next(
        v for v in by_kind(docs, "StatefulSet")["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"
    )
    assert volume["configMap"]["name"] == config["metadata"]["name"]
    rule = by_kind(docs, "PrometheusRule")  # without step 7: the shipped rules
    assert rule["spec"] == yaml.safe_load((ROOT / "dashboards" / "prometheus" / "alerts.yml").read_text())


def test_own_selector_runbook_url_and_release_reach_every_rule(tmp_path: Path) -> None:
    """README step 7: the generated PrometheusRule, patched in by the overlay, carries the selector in
    every metric of every expression and the runbook URL on every alert; promtool accepts it."""
    directory = readme_overlay(tmp_path, "registry.example.com/monitoring", "prom-stack", rules=True)
    selector = 'job="mailflow", namespace="mailflow"'
    write_rules(
        directory,
        *("--selector", 'job="mailflow",namespace="mailflow"', "--release", "prom-stack"),
        *("--runbook-url", "https://wiki.example.com/mailflow/runbook.md"),
    )
    rule = by_kind(render(directory), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prom-stack"
    shipped = yaml.safe_load((ROOT / "dashboards" / "prometheus" / "alerts.yml").read_text())
    pairs = [
        (ours, theirs)
        for g_ours, g_theirs in zip(rule["spec"]["groups"], shipped["groups"], strict=True)
        for ours, theirs in zip(g_ours["rules"], g_theirs["rules"], strict=True)
    ]
    for ours, theirs in pairs:
        metrics = re.findall(r"\b(?:mailflow_[a-z0-9_]+|up)\b(?!\s*\()(\{[^}]*\})?", ours["expr"])
        assert metrics and all(m.startswith("{" + selector) for m in metrics), ours["expr"]
        anchor = theirs["annotations"]["runbook_url"].split("#", 1)[1]
        assert ours["annotations"]["runbook_url"] == f"https://wiki.example.com/mailflow/runbook.md#{anchor}"
        assert ours["annotations"]["summary"] == theirs["annotations"]["summary"]
    assert 'up{job="mailflow", namespace="mailflow"} == 0' in [
        ours["expr"] for ours, _ in pairs
    ]  # replaced, not doubled
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    result = subprocess.run(
        [ci_tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and f"SUCCESS: {len(pairs)} rules found" in result.stdout, (
        result.stdout + result.stderr
    )


def test_the_selector_decides_which_series_alert(tmp_path: Path) -> None:
    """promtool's rule unit tests: with namespace="a", only namespace a's exporter-down and poison
    messages alert; the shipped rules alert for both namespaces (so the selector made the difference)."""

    def spec(*args: str) -> dict[str, Any]:
        out = yaml.safe_load(write_rules(tmp_path, *args).read_text())["spec"]
        for group in out["groups"]:
            for rule in group["rules"]:
                rule.pop("annotations", None)  # templated texts are not what this test is about
        return out

    def severity(rules: dict[str, Any], alert: str) -> str:
        return next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == alert)["labels"]["severity"]

    series = [
        {"series": f'up{{job="mailflow",namespace="{ns}",instance="{ns}:10049"}}', "values": "0x20"}
        for ns in ("a", "b")
    ] + [
        {
            "series": f'mailflow_queue_messages{{job="mailflow",namespace="{ns}",instance="{ns}:10049",'
            f'server="EX01",queue_kind="poison"}}',
            "values": "3x20",
        }
        for ns in ("a", "b")
    ]

    def check(rules: dict[str, Any], namespaces: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
        down = severity(rules, "MailflowExporterDown")
        poison = severity(rules, "MailflowPoisonQueueNotEmpty")
        test = {
            "rule_files": ["rules.yml"],
            "evaluation_interval": "1m",
            "tests": [
                {
                    "interval": "1m",
                    "input_series": series,
                    "alert_rule_test": [
                        {
                            "eval_time": "15m",
                            "alertname": "MailflowExporterDown",
                            "exp_alerts": [
                                {
                                    "exp_labels": {
                                        "severity": down,
                                        "job": "mailflow",
                                        "namespace": ns,
                                        "instance": f"{ns}:10049",
                                    }
                                }
                                for ns in namespaces
                            ],
                        },
                        {
                            "eval_time": "15m",
                            "alertname": "MailflowPoisonQueueNotEmpty",
                            "exp_alerts": [
                                {
                                    "exp_labels": {
                                        "severity": poison,
                                        "job": "mailflow",
                                        "instance": f"{ns}:10049",
                                        "server": "EX01",
                                    }
                                }
                                for ns in namespaces
                            ],
                        },
                    ],
                }
            ],
        }
        (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
        return subprocess.run(
            [ci_tool("promtool"), "test", "rules", "test.yml"],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,
        )

    selected = check(spec("--selector", 'namespace="a"'), ("a",))
    assert selected.returncode == 0, selected.stdout + selected.stderr
    shipped = check(spec(), ("a", "b"))
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    wrong = check(spec("--selector", 'namespace="a"'), ("a", "b"))  # the test can fail
    assert wrong.returncode != 0


@pytest.mark.parametrize("selector", ["job=mailflow", 'job="a" cluster="b"', "", 'job="a",,'])
def test_a_malformed_selector_is_refused(selector: str) -> None:
    result = subprocess.run(
        [sys.executable, str(K8S / "build.py"), "rules", "--selector", selector],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "error:" in result.stderr
