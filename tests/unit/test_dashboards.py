"""The Grafana dashboards: generated, provisioned, and following grafana/dashboard-linter's conventions.

Every query is parsed by promtool (as a recording rule), so a typo in PromQL fails here; the live
test (tests/integration/test_dashboards_live.py) then runs every query against a real Prometheus.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from tests.tools import tool

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "dashboards" / "grafana"
DASHBOARD_DIR = GRAFANA / "dashboards"
GENERATOR = GRAFANA / "build_dashboards.py"

#: The five dashboards and their uids; a uid is a URL (bookmarks, links, alert annotations): never rename one.
EXPECTED_UIDS = {
    "mailflow-overview",
    "mailflow-queues",
    "mailflow-tracking",
    "mailflow-config-health",
    "mailflow-dns",
}
DS_REF = {"type": "prometheus", "uid": "${datasource}"}
PANEL_TYPES = {"stat", "timeseries", "table", "bargauge"}
#: Grafana unit ids (packages/grafana-data/src/valueFormats/categories.ts) this project may use.
GRAFANA_UNITS = {
    "none", "short", "sci", "percent", "percentunit", "bool", "bool_yes_no",
    "s", "ms", "m", "h", "d", "dtdurations", "dtdurationms", "dthms", "dtdhms",
    "dateTimeAsIso", "dateTimeAsSystem", "dateTimeFromNow",
    "cps", "ops", "rps", "cpm", "opm", "rpm", "bytes", "decbytes",
}  # fmt: skip
#: Placeholders for Grafana's global variables when a query is parsed or run.
GLOBAL_DURATIONS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}

# --- loading -----------------------------------------------------------------------------------------------


def load_generator() -> ModuleType:
    name = "mailflow_build_dashboards"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def load_dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON, as committed."""
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows, rows excluded."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


@dataclass(frozen=True)
class Query:
    dashboard: str  # uid
    panel: str  # title
    ref: str
    expr: str
    variables: tuple[str, ...]  # the dashboard's variable names


def all_queries() -> list[Query]:
    out = []
    for dashboard in load_dashboards().values():
        names = tuple(v["name"] for v in dashboard["templating"]["list"])
        for panel in iter_panels(dashboard):
            for target in panel.get("targets", []):
                out.append(Query(dashboard["uid"], panel["title"], target["refId"], target["expr"], names))
    return out


def variable_selectors() -> list[tuple[str, str, str, str]]:
    """(dashboard uid, variable, selector, label) of every ``label_values(selector, label)`` query variable."""
    out = []
    for dashboard in load_dashboards().values():
        for var in dashboard["templating"]["list"]:
            if var["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"])
            assert match, f"{dashboard['uid']} ${var['name']}: not a label_values() query: {var['query']}"
            out.append((dashboard["uid"], var["name"], match.group(1), match.group(2)))
    return out


# --- a small PromQL lexer: enough to find selectors, their matchers and ranges ----------------------------

TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<range>\[[^\]]*\])
  | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>==|!=|=~|!~|>=|<=|[-+*/%^(){},=<>])
    """,
    re.X,
)
AGGREGATIONS = {
    "sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values",
}  # fmt: skip
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
RATE_FUNCTIONS = {"rate", "irate", "increase"}


def tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        match = TOKEN_RE.match(expr, pos)
        if not match:
            raise ValueError(f"cannot lex {expr[pos:]!r} in {expr!r} ($variables belong inside quotes or ranges)")
        kind = match.lastgroup
        assert kind is not None
        if kind != "ws":
            out.append((kind, match.group()))
        pos = match.end()
    return out


@dataclass
class Selector:
    name: str
    matchers: list[tuple[str, str, str]]  # (label, op, value)
    wrapped_by: str | None  # rate/irate/increase when the selector is exactly ``f(name{...}[range])``
    range: str | None


def selectors(expr: str) -> list[Selector]:
    """Every vector selector of ``expr``; a metric name without braces is a selector with no matchers."""
    toks = tokens(expr)
    out: list[Selector] = []
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else None
        if kind == "ident" and text in GROUPING:
            if nxt == "(":  # skip the label list
                i = next(j for j in range(i, len(toks)) if toks[j][1] == ")")
            i += 1
            continue
        if kind != "ident" or nxt == "(" or text in AGGREGATIONS or text in KEYWORDS:
            i += 1
            continue
        matchers: list[tuple[str, str, str]] = []
        end = i
        if nxt == "{":
            j = i + 2
            while toks[j][1] != "}":
                label, op, value = toks[j][1], toks[j + 1][1], toks[j + 2]
                assert value[0] == "str", f"matcher value must be a string in {expr!r}"
                matchers.append((label, op, value[1][1:-1]))
                j += 3
                if toks[j][1] == ",":
                    j += 1
            end = j
        rng = toks[end + 1][1] if end + 1 < len(toks) and toks[end + 1][0] == "range" else None
        after = end + (2 if rng else 1)
        wrapped = None
        if (
            i >= 2
            and toks[i - 1][1] == "("
            and toks[i - 2][1] in RATE_FUNCTIONS
            and after < len(toks)
            and toks[after][1] == ")"
        ):
            wrapped = toks[i - 2][1]
        out.append(Selector(text, matchers, wrapped, rng))
        i = end + 1
    return out


def variable_names(expr: str) -> set[str]:
    return {a or b for a, b in re.findall(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", expr)}


def substitute(expr: str, values: dict[str, str] | None = None, default: str = ".+", **durations: str) -> str:
    """Replace Grafana variables: durations for the global ones, ``values`` (else ``default``) for the others."""
    known = {**GLOBAL_DURATIONS, **durations}
    values = values or {}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return known.get(name) or values.get(name, default)

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", replace, expr)


def metric_types() -> dict[str, str]:
    """Metric name -> type, from the metric tables of docs/metrics.md."""
    doc = (ROOT / "docs" / "metrics.md").read_text()
    return dict(re.findall(r"^\| `(mailflow_[a-z_]+)` \| (\w+) \|", doc, re.M))


def counter_series() -> set[str]:
    """Series names that are counters: counters, and the _bucket/_sum/_count series of histograms."""
    out = set()
    for name, kind in metric_types().items():
        if kind == "counter":
            out.add(name)
        elif kind in ("histogram", "summary"):
            out |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return out


# --- generator and files ------------------------------------------------------------------------------------


def test_committed_json_is_exactly_the_generator_output() -> None:
    generator = load_generator()
    built = generator.build()
    committed = {p.name: p.read_text() for p in DASHBOARD_DIR.glob("*.json")}
    assert set(committed) == set(built), "run: python dashboards/grafana/build_dashboards.py"
    for name, model in built.items():
        assert committed[name] == generator.dump(model), f"{name} is stale: run python {GENERATOR.relative_to(ROOT)}"
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_dashboards_parse_and_have_stable_unique_identities() -> None:
    dashboards = load_dashboards()
    uids = [d["uid"] for d in dashboards.values()]
    titles = [d["title"] for d in dashboards.values()]
    assert set(uids) == EXPECTED_UIDS and len(uids) == len(set(uids))
    assert len(titles) == len(set(titles))
    for name, d in dashboards.items():
        assert name == f"{d['uid']}.json"
        assert re.fullmatch(r"[a-z0-9-]{8,40}", d["uid"]), d["uid"]
        assert d["id"] is None
        assert d["schemaVersion"] == 39
        assert d["tags"] == ["mailflow", "exchange"]
        assert d["refresh"] == "1m"
        assert d["editable"] is False  # provisioned: changes belong in the generator
        assert d["title"] and d["description"]
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), f"{d['uid']}: duplicate panel ids"


def test_every_panel_has_title_description_unit_and_the_datasource_variable() -> None:
    generator = load_generator()
    for d in load_dashboards().values():
        for panel in iter_panels(d):
            where = f"{d['uid']} / {panel.get('title')!r}"
            assert panel["type"] in PANEL_TYPES, where
            assert panel.get("title") and panel.get("description"), where
            assert panel.get("datasource") == DS_REF, where
            assert panel["fieldConfig"]["defaults"].get("unit") in GRAFANA_UNITS, where
            for override in panel["fieldConfig"].get("overrides", []):
                for prop in override["properties"]:
                    if prop["id"] == "unit":
                        assert prop["value"] in GRAFANA_UNITS, where
            assert panel.get("targets"), f"{where}: no targets"
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), where
            for target in panel["targets"]:
                assert target.get("datasource") == DS_REF, where
                assert target.get("expr", "").strip(), where
            for link in panel.get("links", []):
                uid = re.match(r"/d/([a-z0-9-]+)", link["url"])
                assert uid and uid.group(1) in EXPECTED_UIDS, f"{where}: link {link['url']}"
    assert generator.DS == DS_REF


def test_panels_fit_the_grid_without_overlapping() -> None:
    for d in load_dashboards().values():
        cells: dict[tuple[int, int], str] = {}
        for panel in d["panels"]:
            pos = panel["gridPos"]
            assert 1 <= pos["w"] <= 24 and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    assert (x, y) not in cells, f"{d['uid']}: {panel['title']!r} overlaps {cells[(x, y)]!r}"
                    cells[(x, y)] = panel["title"]


def test_dashboards_link_to_each_other() -> None:
    for d in load_dashboards().values():
        tag_links = [link for link in d["links"] if link["type"] == "dashboards"]
        assert any("mailflow" in link["tags"] and link["keepTime"] and link["includeVars"] for link in tag_links), d[
            "uid"
        ]
        assert "mailflow" in d["tags"]  # so the tag link reaches it from the others


# --- templating -----------------------------------------------------------------------------------------------


def test_templating_has_datasource_job_and_instance_as_the_linter_wants() -> None:
    for d in load_dashboards().values():
        variables = {v["name"]: v for v in d["templating"]["list"]}
        datasources = [v for v in variables.values() if v["type"] == "datasource"]
        assert len(datasources) == 1, d["uid"]
        ds = datasources[0]
        assert (ds["name"], ds["label"], ds["query"]) == ("datasource", "Data source", "prometheus")
        assert [v["name"] for v in d["templating"]["list"][:3]] == ["datasource", "job", "instance"]
        assert variables["job"]["label"] == "Job" and variables["instance"]["label"] == "Instance"
        for var in variables.values():
            if var["type"] == "datasource":
                continue
            where = f"{d['uid']} ${var['name']}"
            assert var["type"] == "query", where
            assert var["datasource"] == DS_REF, where
            assert var["multi"] is True and var["includeAll"] is True and var["allValue"] == ".+", where
            assert var["refresh"] == 2, where  # reload on time range change
            assert var["label"], where


def test_query_variables_are_scoped_by_job_and_instance() -> None:
    for uid, name, selector, _label in variable_selectors():
        (sel,) = selectors(selector)
        matchers = set(sel.matchers)
        if name == "job":
            continue
        assert ("job", "=~", "$job") in matchers, f"{uid} ${name}"
        if name != "instance":
            assert ("instance", "=~", "$instance") in matchers, f"{uid} ${name}"


def test_every_variable_is_defined_and_every_defined_variable_is_used() -> None:
    for d in load_dashboards().values():
        defined = {v["name"] for v in d["templating"]["list"]}
        used: set[str] = set()
        for panel in iter_panels(d):
            for target in panel["targets"]:
                names = variable_names(target["expr"])
                assert names <= defined | set(GLOBAL_DURATIONS), f"{d['uid']} {panel['title']!r}: {names - defined}"
                used |= names
        for var in d["templating"]["list"]:
            if var["type"] == "query":
                used |= variable_names(var["query"])
        assert defined - {"datasource"} <= used, f"{d['uid']}: unused variables {defined - used - {'datasource'}}"


# --- queries ------------------------------------------------------------------------------------------------


def test_every_selector_has_the_job_and_instance_matchers() -> None:
    queries = all_queries()
    assert len(queries) > 100
    for q in queries:
        found = selectors(q.expr)
        assert found, f"{q.dashboard} {q.panel!r} {q.ref}: no selector in {q.expr!r}"
        for sel in found:
            matchers = set(sel.matchers)
            where = f"{q.dashboard} {q.panel!r} {q.ref}: {sel.name}"
            assert ("job", "=~", "$job") in matchers, where
            assert ("instance", "=~", "$instance") in matchers, where


def test_rates_use_rate_interval_and_counters_are_only_used_through_rate() -> None:
    counters = counter_series()
    assert (
        "mailflow_tracking_events_total" in counters and "mailflow_tracking_delivery_latency_seconds_bucket" in counters
    )
    for q in all_queries():
        toks = tokens(q.expr)
        for sel in selectors(q.expr):
            where = f"{q.dashboard} {q.panel!r} {q.ref}: {sel.name}"
            if sel.name.endswith("_total") or sel.name in counters:
                assert sel.wrapped_by in RATE_FUNCTIONS, f"{where}: a counter must be wrapped in rate/increase"
            if sel.range is not None:
                assert sel.wrapped_by in RATE_FUNCTIONS, f"{where}: range outside rate/irate/increase"
                assert sel.range == "[$__rate_interval]", f"{where}: {sel.range} instead of [$__rate_interval]"
        for i, (_kind, text) in enumerate(toks):
            if text in RATE_FUNCTIONS and i + 1 < len(toks) and toks[i + 1][1] == "(":
                assert any(s.wrapped_by == text for s in selectors(q.expr)), f"{q.dashboard} {q.panel!r}: {text}"


def test_every_metric_a_dashboard_uses_is_documented() -> None:
    documented = set(metric_types()) | counter_series()
    for q in all_queries():
        for sel in selectors(q.expr):
            assert sel.name in documented or sel.name == "up", f"{q.dashboard} {q.panel!r}: {sel.name} undocumented"


def promtool_check(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``promtool check rules`` on a rule file with each expression as a recording rule."""
    rules = [{"record": f"test:expr_{i}", "expr": e} for i, e in enumerate(exprs)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, sort_keys=False))
    return subprocess.run([tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True, check=False)


def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    exprs = [substitute(q.expr) for q in all_queries()]
    exprs += [substitute(selector) for _uid, _name, selector, _label in variable_selectors()]
    assert not any("$" in e for e in exprs)
    result = promtool_check(exprs, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"SUCCESS: {len(exprs)} rules found" in output, output


def test_the_promtool_check_rejects_invalid_promql(tmp_path: Path) -> None:
    """The harness above can fail: an unbalanced parenthesis and a bad matcher are reported."""
    for bad in ('sum(rate(mailflow_tracking_events_total{job=~".+"}[5m])', 'mailflow_queue_messages{job=~".+",}}'):
        result = promtool_check(['sum(mailflow_queue_messages{job=~".+"})', bad], tmp_path)
        assert result.returncode != 0 and "SUCCESS" not in result.stdout, result.stdout + result.stderr


def test_lexer_finds_selectors_matchers_and_rate_wrapping() -> None:
    expr = (
        'sum by (server) (rate(a_total{job=~"$job", instance=~"$instance"}[$__rate_interval])) * 60'
        ' / on (server) group_left () b{job=~"$job"} or c'
    )
    found = {s.name: s for s in selectors(expr)}
    assert set(found) == {"a_total", "b", "c"}
    assert found["a_total"].wrapped_by == "rate" and found["a_total"].range == "[$__rate_interval]"
    assert found["b"].matchers == [("job", "=~", "$job")] and found["b"].wrapped_by is None
    assert found["c"].matchers == []
    assert selectors("sum(max_over_time(x[5m]))")[0].wrapped_by is None
    assert substitute('rate(x{job=~"$job", s=~"${server}"}[$__rate_interval])', {"job": "mailflow"}) == (
        'rate(x{job=~"mailflow", s=~".+"}[5m])'
    )


# --- provisioning ---------------------------------------------------------------------------------------------


def test_dashboard_provider_points_at_the_mounted_json_folder() -> None:
    generator = load_generator()
    files = sorted((GRAFANA / "provisioning" / "dashboards").glob("*.yaml"))
    assert len(files) == 1
    config = yaml.safe_load(files[0].read_text())
    assert config["apiVersion"] == 1
    (provider,) = config["providers"]
    assert provider["type"] == "file" and provider["folder"] == generator.FOLDER
    assert provider["options"]["path"] == generator.PROVISIONED_PATH
    assert provider["allowUiUpdates"] is False
    # The compose stack mounts the JSON directory exactly there, and the provisioning directory where Grafana reads it.
    compose = yaml.safe_load((ROOT / "deploy" / "compose" / "docker-compose.yml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = {}
    for volume in grafana["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[(ROOT / "deploy" / "compose" / source).resolve()] = target
    assert mounts[DASHBOARD_DIR.resolve()] == generator.PROVISIONED_PATH
    assert mounts[(GRAFANA / "provisioning").resolve()] == "/etc/grafana/provisioning"
    assert grafana["environment"]["PROMETHEUS_URL"]
    # The Grafana-managed alert rules live in the same folder.
    alerting = yaml.safe_load((GRAFANA / "provisioning" / "alerting" / "mailflow-rules.yaml").read_text())
    assert {g["folder"] for g in alerting["groups"]} == {generator.FOLDER}


def test_datasource_is_the_prometheus_the_alert_rules_query() -> None:
    generator = load_generator()
    files = sorted((GRAFANA / "provisioning" / "datasources").glob("*.yaml"))
    assert len(files) == 1
    config = yaml.safe_load(files[0].read_text())
    assert config["apiVersion"] == 1
    (ds,) = config["datasources"]
    assert ds["type"] == "prometheus" and ds["access"] == "proxy" and ds["isDefault"] is True
    assert ds["uid"] == generator.DATASOURCE_UID
    assert ds["url"] == "$PROMETHEUS_URL"
    assert re.fullmatch(r"\d+[smh]", ds["jsonData"]["timeInterval"])  # $__rate_interval is derived from it
    alerting = (GRAFANA / "provisioning" / "alerting" / "mailflow-rules.yaml").read_text()
    uids = set(re.findall(r"datasourceUid: (\S+)", alerting)) - {"__expr__"}
    assert uids == {generator.DATASOURCE_UID}


def test_docs_describe_every_dashboard_and_panel() -> None:
    doc = (ROOT / "docs" / "dashboards.md").read_text()
    for d in load_dashboards().values():
        assert d["title"] in doc and d["uid"] in doc, d["uid"]
        for panel in iter_panels(d):
            assert f"**{panel['title']}**" in doc, f"docs/dashboards.md does not describe {d['uid']} {panel['title']!r}"
