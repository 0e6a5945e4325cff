"""The monitoring mixin (dashboards/mailflow-mixin/), rendered by a real ``jsonnet``.

With its default ``_config`` it must give exactly the shipped alert rules and dashboards; a selector,
runbook URL, severity map or threshold set in ``_config`` must reach every place it stands for. The
selectors of the rendered PromQL are read with the lexer of tests/unit/test_dashboards.py, not with the
generator's own tokenizer, so a generator that misses a selector cannot also hide it from the check.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards.build_mixin import ALERTS, DASHBOARDS, MIXIN, analyse, build_rules, template
from tests.tools import tool
from tests.unit.test_dashboards import promtool_check, selectors, substitute, tokens

ROOT = Path(__file__).resolve().parents[2]
CUSTOM = 'job="mail", cluster="eu"'
CUSTOM_MATCHERS = [("job", "=", "mail"), ("cluster", "=", "eu")]


def jsonnet(code: str) -> Any:
    """Evaluate Jsonnet code with the mixin directory on the import path."""
    result = subprocess.run(
        [tool("jsonnet"), "-J", str(MIXIN), "-e", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@functools.cache
def render(config: str = "") -> dict[str, Any]:
    """alerts, rules, dashboards and _config of the mixin with ``config`` (Jsonnet fields) merged into ``_config``."""
    return jsonnet(
        f"local m = (import 'mixin.libsonnet') + {{ _config+:: {{ {config} }} }};"
        " { alerts: m.prometheusAlerts, rules: m.prometheusRules, dashboards: m.grafanaDashboards, config: m._config }"
    )


def shipped_rules() -> dict[str, Any]:
    return yaml.safe_load(ALERTS.read_text())


def shipped_dashboards() -> dict[str, Any]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def projection(rules: dict[str, Any], kind: str) -> dict[str, Any]:
    """The groups of a rule file with only their ``kind`` (alert or record) rules, empty groups left out."""
    groups = []
    for group in rules["groups"]:
        kept = [r for r in group["rules"] if kind in r]
        if kept:
            groups.append({**group, "rules": kept})
    return {"groups": groups}


def queries(value: Any, key: str = "", variable: bool = False) -> Iterator[str]:
    """Every PromQL string of a rendered dashboard: ``expr`` fields and the queries of query variables."""
    if isinstance(value, dict):
        var = variable or value.get("type") == "query"
        for k, v in value.items():
            yield from queries(v, k, var)
    elif isinstance(value, list):
        for v in value:
            yield from queries(v, key, variable)
    elif isinstance(value, str) and (key == "expr" or (variable and key in ("query", "definition"))):
        match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", value)
        yield match.group(1) if match else value


def all_exprs(rendered: dict[str, Any]) -> list[str]:
    """Every expression of a render: alert and recording rules, then dashboard queries."""
    rules = [r["expr"] for part in ("alerts", "rules") for g in rendered[part]["groups"] for r in g["rules"]]
    return rules + [q for d in rendered["dashboards"].values() for q in queries(d)]


def skeleton(expr: str) -> list[str]:
    """The tokens of an expression without its matcher braces: what a selector may not change."""
    out, inside = [], False
    for _kind, text in tokens(expr):
        if text == "{":
            inside = True
        elif text == "}":
            inside = False
        elif not inside:
            out.append(text)
    return out


def without_exprs(value: Any, key: str = "") -> Any:
    """A render with every string that may hold PromQL blanked, to compare the rest."""
    if isinstance(value, dict):
        return {k: without_exprs(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [without_exprs(v, key) for v in value]
    return "<promql>" if key in ("expr", "query", "definition") else value


# ------------------------------------------------------------------------------------------- defaults


def test_default_render_is_exactly_the_shipped_rules_and_dashboards() -> None:
    rendered = render()
    shipped = shipped_rules()
    assert rendered["alerts"] == projection(shipped, "alert")
    assert rendered["rules"] == projection(shipped, "record")
    if not any("record" in r for g in shipped["groups"] for r in g["rules"]):
        assert rendered["alerts"] == shipped  # the whole file, group for group
        assert rendered["rules"] == {"groups": []}  # node-mixin's shape when there are no recording rules
    dashboards = shipped_dashboards()
    assert len(dashboards) >= 5 and rendered["dashboards"] == dashboards


def test_the_generated_files_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "dashboards" / "build_mixin.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr + "run: python dashboards/build_mixin.py"


def test_default_config_describes_the_shipped_rules() -> None:
    config = render()["config"]
    assert config["mailflowSelector"] == "" and config["jobSelector"] == 'job="mailflow"'
    assert config["severities"] == {"critical": "critical", "warning": "warning", "info": "info"}
    assert config["queueBacklogThreshold"] == 500 and config["spfLookupLimit"] == 10


# ------------------------------------------------------------------------------------------- selector


def test_a_custom_selector_reaches_every_selector_of_every_expression() -> None:
    rendered = render(f"mailflowSelector: {json.dumps(CUSTOM)}")
    exprs = all_exprs(rendered)
    checked = set()
    for expr in exprs:
        for sel in selectors(expr):
            missing = [m for m in CUSTOM_MATCHERS if m not in sel.matchers]
            assert not missing, f"{sel.name} in {expr!r} lacks {missing}"
            checked.add(sel.name)
    assert "up" in checked and "mailflow_queue_messages" in checked and "mailflow_build_info" in checked
    assert len(checked) > 80  # the dashboards' selectors were all read, not only the alerts'


def test_a_custom_selector_changes_nothing_but_the_matchers() -> None:
    default, custom = render(), render(f"mailflowSelector: {json.dumps(CUSTOM)}")
    for part in ("alerts", "rules", "dashboards"):
        assert without_exprs(custom[part]) == without_exprs(default[part]), part
    pairs = list(zip(all_exprs(default), all_exprs(custom), strict=True))
    assert len(pairs) > 200
    for before, after in pairs:
        assert skeleton(after) == skeleton(before), (before, after)
        assert CUSTOM not in before
        for sel_before, sel_after in zip(selectors(before), selectors(after), strict=True):
            kept = [m for m in sel_before.matchers if m != ("job", "=", "mailflow")]  # up's job gives way
            assert sorted(sel_after.matchers) == sorted(CUSTOM_MATCHERS + kept), (before, after)


def test_job_selector_selects_up_alone() -> None:
    default, custom = render(), render("jobSelector: 'job=\"mx\"'")
    for before, after in zip(all_exprs(default), all_exprs(custom), strict=True):
        if 'up{job="mailflow"}' in before:
            assert after == before.replace('up{job="mailflow"}', 'up{job="mx"}')
        else:
            assert after == before
    assert any('up{job="mx"}' in e for e in all_exprs(custom))


def test_promtool_accepts_the_rules_and_queries_rendered_with_a_custom_selector(tmp_path: Path) -> None:
    rendered = render(f"mailflowSelector: {json.dumps(CUSTOM)}")
    path = tmp_path / "mailflow-alerts.yml"
    path.write_text(yaml.safe_dump(rendered["alerts"], sort_keys=False))
    promtool = tool("promtool")
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    count = sum(len(g["rules"]) for g in rendered["alerts"]["groups"])
    assert result.returncode == 0 and f"SUCCESS: {count} rules found" in result.stdout, result.stdout + result.stderr
    queries_ = [substitute(q) for d in rendered["dashboards"].values() for q in queries(d)]
    result = promtool_check(queries_, tmp_path)
    assert result.returncode == 0 and f"SUCCESS: {len(queries_)} rules found" in result.stdout, result.stderr


# ------------------------------------------------------------------------------------------- runbooks, severities


def test_a_custom_runbook_base_or_pattern_reaches_every_runbook_url() -> None:
    shipped = [r for g in shipped_rules()["groups"] for r in g["rules"] if "alert" in r]
    anchors = [r["annotations"]["runbook_url"].split("#", 1)[1] for r in shipped]
    assert all(a == r["alert"].lower() for a, r in zip(anchors, shipped, strict=True))
    for config, expected in (
        ("runbookURLBase: 'https://wiki.example.net/mail/runbook'", "https://wiki.example.net/mail/runbook#{}"),
        ("runbookURLPattern: 'https://runbooks.example.net/%s.md'", "https://runbooks.example.net/{}.md"),
    ):
        rules = [r for g in render(config)["alerts"]["groups"] for r in g["rules"]]
        assert [r["annotations"]["runbook_url"] for r in rules] == [expected.format(a) for a in anchors], config


def test_severities_map_every_severity_label() -> None:
    shipped = [r for g in shipped_rules()["groups"] for r in g["rules"] if "alert" in r]
    rendered = render("severities+: { critical: 'page', warning: 'ticket' }")
    rules = [r for g in rendered["alerts"]["groups"] for r in g["rules"]]
    mapping = {"critical": "page", "warning": "ticket", "info": "info"}
    assert [r["labels"]["severity"] for r in rules] == [mapping[r["labels"]["severity"]] for r in shipped]
    assert {"page", "ticket"} <= {r["labels"]["severity"] for r in rules}


# ------------------------------------------------------------------------------------------- thresholds


def test_every_threshold_field_moves_the_numbers_it_stands_for_and_nothing_else() -> None:
    defaults = render()["config"]
    fields = sorted(k for k, v in defaults.items() if isinstance(v, int) and not isinstance(v, bool))
    assert {"queueBacklogThreshold", "queueGrowingThreshold", "spfLookupLimit"} <= set(fields)
    sentinel = {name: 900001 + i for i, name in enumerate(fields)}
    custom = render(", ".join(f"{name}: {value}" for name, value in sentinel.items()))
    default_rules = [r for g in render()["alerts"]["groups"] for r in g["rules"]]
    custom_rules = [r for g in custom["alerts"]["groups"] for r in g["rules"]]
    back = {str(v): str(defaults[k]) for k, v in sentinel.items()}
    moved: set[str] = set()
    for before, after in zip(default_rules, custom_rules, strict=True):
        pairs = zip(tokens(before["expr"]), tokens(after["expr"]), strict=True)
        changed = [(a, b) for (_k, a), (_j, b) in pairs if a != b]
        for old, new in changed:
            assert back.get(new) == old, (before["alert"], old, new)  # only a field's default became its value
            moved |= {k for k, v in sentinel.items() if str(v) == new}
        for key, text in after["annotations"].items():
            undone = re.sub(r"9000\d\d", lambda m: back[m.group()], text)
            assert undone == before["annotations"][key], (before["alert"], key)
        assert {k: v for k, v in after.items() if k not in ("expr", "annotations")} == {
            k: v for k, v in before.items() if k not in ("expr", "annotations")
        }
    assert moved == set(fields), f"fields that reach no expression: {set(fields) - moved}"
    backlog = next(r for r in custom_rules if r["alert"] == "MailflowQueueBacklog")
    assert f"more than {sentinel['queueBacklogThreshold']} queued" in backlog["annotations"]["description"]


# ------------------------------------------------------------------------------------------- tokenizer


HARD_CASES = [
    # (shipped-style expression, expected template)
    (
        'label_replace(m_a{x="1"} == 0, "server", "$1", "target", "(.*)")',
        'label_replace(m_a{%(mailflowSelector)s, x="1"} == 0, "server", "$1", "target", "(.*)")',
    ),
    (
        "sum by (job, mailflow_not_a_metric) (rate(m_b[5m]))",
        "sum by (job, mailflow_not_a_metric) (rate(m_b{%(mailflowSelector)s}[5m]))",
    ),
    (
        "m_c and on (job, instance) (m_d == 0) unless ignoring (x) m_e",
        "m_c{%(mailflowSelector)s} and on (job, instance) (m_d{%(mailflowSelector)s} == 0)"
        " unless ignoring (x) m_e{%(mailflowSelector)s}",
    ),
    (
        'm_f{re=~"mailflow_x{1,2}|a,b", y!="}"}',
        'm_f{%(mailflowSelector)s, re=~"mailflow_x{1,2}|a,b", y!="}"}',
    ),
    (
        "max without (state) (m_g) * on (a) group_left () m_h * on (a) group_left m_i",
        "max without (state) (m_g{%(mailflowSelector)s}) * on (a) group_left () m_h{%(mailflowSelector)s}"
        " * on (a) group_left m_i{%(mailflowSelector)s}",
    ),
    ('up{job="mailflow"} == 0 and up offset 5m', "up{%(jobSelector)s} == 0 and up{%(mailflowSelector)s} offset 5m"),
    ("label_values(m_j, job)", "label_values(m_j{%(mailflowSelector)s}, job)"),
    ('label_values(m_k{a=~"$a"}, instance)', 'label_values(m_k{%(mailflowSelector)s, a=~"$a"}, instance)'),
    ("label_values(job)", "label_values(job)"),
    ("m_l % 2 > bool 1", "m_l{%(mailflowSelector)s} %% 2 > bool 1"),
    ('{__name__="m_m"}', '{%(mailflowSelector)s, __name__="m_m"}'),
    ("# naming m_x\nm_n[$__rate_interval]", "# naming m_x\nm_n{%(mailflowSelector)s}[$__rate_interval]"),
    ("deriv(sum by (j) (m_o)[15m:1m]) * 900", "deriv(sum by (j) (m_o{%(mailflowSelector)s})[15m:1m]) * 900"),
    ("topk by (a) (5, m_p)", "topk by (a) (5, m_p{%(mailflowSelector)s})"),
]


@pytest.mark.parametrize(("expr", "expected"), HARD_CASES)
def test_template_puts_the_selector_in_every_selector_and_nowhere_else(expr: str, expected: str) -> None:
    assert template(expr) == expected


def test_templates_render_back_to_the_expression_and_take_a_selector() -> None:
    """lib/promql.libsonnet turns each template back into its expression, and into one with the selector."""
    templates = json.dumps([template(e) for e, _ in HARD_CASES])
    each = f"local p = import 'lib/promql.libsonnet'; [p.expr(t, c) for t in {templates}]"
    default = jsonnet(f"local c = {{ mailflowSelector: '', jobSelector: 'job=\"mailflow\"' }}; {each}")
    assert default == [e for e, _ in HARD_CASES]
    custom = jsonnet(f"local c = {{ mailflowSelector: 'c=\"eu\"', jobSelector: 'c=\"eu\"' }}; {each}")
    assert custom[0] == 'label_replace(m_a{c="eu", x="1"} == 0, "server", "$1", "target", "(.*)")'
    assert custom[5] == 'up{c="eu"} == 0 and up{c="eu"} offset 5m'
    assert custom[9] == 'm_l{c="eu"} % 2 > bool 1'


def test_thresholds_are_integers_after_a_comparison_but_not_zero_or_a_factor() -> None:
    expr = "deriv(m[15m:1m]) * 900 > 50 and sum(m) >= 10 or m == 1 or m > 0 or m < bool 3 or (m - time()) / 8 < 30.5"
    assert [t.text for t in analyse(expr).thresholds] == ["50", "10", "3"]


def test_an_alert_added_without_a_threshold_name_gets_one_and_shared_names_must_agree(tmp_path: Path) -> None:
    """Alerts are added in parallel to this generator: a threshold it has no name for still becomes a field."""
    rule = {"alert": "MailflowNewThing", "expr": "m > 7 and n < 3", "labels": {"severity": "warning"}}
    path = tmp_path / "alerts.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [rule]}]}))
    rules = build_rules(path)
    assert [(t.name, t.value) for t in rules.thresholds] == [
        ("newThingWarningThreshold1", 7),
        ("newThingWarningThreshold2", 3),
    ]
    assert rules.records == [] and rules.severities == ["warning"]
    spf = [
        {"alert": "MailflowSpfLookupLimit", "expr": "a > 10 or b > 2", "labels": {"severity": "critical"}},
        {"alert": "MailflowSpfInvalid", "expr": "c == 0 unless (a > 11 or b > 2)", "labels": {"severity": "critical"}},
    ]
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": spf}]}))
    with pytest.raises(ValueError, match="spfLookupLimit is 10 in one rule and 11 in another"):
        build_rules(path)


def test_empty_matcher_braces_are_refused() -> None:
    with pytest.raises(ValueError, match="empty matcher braces"):
        template("m{} == 0")


# ------------------------------------------------------------------------------------------- docs


def test_readme_documents_the_mixin_and_its_config_fields() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Monitoring mixin", 1)[1].split("\n## ", 1)[0]
    for name in ("mailflowSelector", "jobSelector", "runbookURLBase", "runbookURLPattern", "severities", "jb install"):
        assert name in section, name
    assert "dashboards/build_mixin.py" in section
