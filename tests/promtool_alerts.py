"""Which alerts of dashboards/prometheus/alerts.yml fire for an exposition, by ``promtool test rules``.

Issue 14 wants "the expected alerts through ``promtool test rules`` built from a real scrape":

* :func:`scrape_series` turns an exposition (a real ``/metrics`` scrape, or collector results
  rendered the same way) into promtool ``input_series``: each sample gets the scrape labels
  ``job``/``instance`` as Prometheus adds them, and holds its value for the whole test, as if the
  exporter had been scraped every minute with nothing changing. ``up`` is 1. Values of
  ``*_timestamp_seconds`` metrics are made relative to the scrape (promtool's ``time()`` starts at
  0), so "expires in 20 days" stays 20 days. Non-finite samples (NaN) are left out: promtool's
  series notation has no use for them and no rule compares with them.
* :func:`firing_alerts` runs ``promtool test rules`` over such series for longer than the longest
  ``for:`` in the rules, and returns the labels of every alert firing at the end.

How the firing set is read: the test file asks promtool to compare ``ALERTS{alertstate="firing"}``
with an empty result; when alerts fire, promtool fails the comparison and prints the samples it got
(``got: {labels} value, {labels} value``), which are parsed here. A pass means nothing fires.
"""

from __future__ import annotations

import ast
import math
import re
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.tools import ci_tool

ROOT = Path(__file__).resolve().parents[1]
ALERT_RULES = ROOT / "dashboards" / "prometheus" / "alerts.yml"
JOB = "mailflow"

Series = tuple[str, float]  # (promtool series selector, constant value)

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_SAMPLE = re.compile(r'\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"(?:, )?)*)\} (\S+?)(?:, |$)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def selector(name: str, labels: dict[str, str]) -> str:
    """``name{label="value",...}`` in promtool's series notation."""
    assert _NAME.match(name), name
    return name + "{" + ",".join(f"{k}={_quote(v)}" for k, v in sorted(labels.items())) + "}"


def scrape_series(exposition: str, instance: str, scraped_at: float, job: str = JOB) -> list[Series]:
    """The samples of one scrape as constant promtool series, with the scrape labels, plus ``up``.

    ``scraped_at`` (unix time of the scrape, the exporter's clock) becomes promtool's t=0:
    ``*_timestamp_seconds`` values are shifted by it.
    """
    out: list[Series] = [(selector("up", {"job": job, "instance": instance}), 1.0)]
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            value = float(sample.value)
            if not math.isfinite(value):
                continue
            if sample.name.endswith("_timestamp_seconds"):
                value -= scraped_at
            out.append((selector(sample.name, {**sample.labels, "job": job, "instance": instance}), value))
    return out


def _longest_for(rules: Path) -> int:
    """Minutes of the longest ``for:`` in the rule file."""
    units = {"s": 1 / 60, "m": 1, "h": 60, "d": 1440}
    longest = 0.0
    for group in yaml.safe_load(rules.read_text())["groups"]:
        for rule in group["rules"]:
            for number, unit in re.findall(r"(\d+)([smhd])", str(rule.get("for", "0s"))):
                longest = max(longest, int(number) * units[unit])
    return math.ceil(longest)


def parse_got(output: str) -> list[dict[str, str]]:
    """The label sets of the samples on promtool's ``got:`` line (``[]`` for ``got: nil``)."""
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith("got:")]
    if len(lines) != 1:
        raise AssertionError(f"cannot read promtool's result:\n{output}")
    text = lines[0][len("got:") :].strip()
    if text == "nil":
        return []
    samples = []
    position = 0
    while position < len(text):
        match = _SAMPLE.match(text, position)
        if match is None:
            raise AssertionError(f"cannot parse promtool's samples at {text[position : position + 80]!r}:\n{output}")
        labels = {k: ast.literal_eval(f'"{v}"') for k, v in _LABEL.findall(match.group(1))}
        samples.append(labels)
        position = match.end()
    return samples


def firing_alerts(series: Iterable[Series], rules: Path = ALERT_RULES) -> list[dict[str, str]]:
    """Labels of the alerts (``alertname``, ``severity`` and the rule's labels) firing after every
    ``for:`` of ``rules`` has elapsed over ``series`` held constant, sorted."""
    promtool = ci_tool("promtool", "prometheus")
    minutes = _longest_for(rules) + 3
    input_series = [{"series": s, "values": f"{v!r}x{minutes + 2}"} for s, v in series]
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": input_series,
                "promql_expr_test": [
                    {"expr": 'ALERTS{alertstate="firing"}', "eval_time": f"{minutes}m", "exp_samples": []}
                ],
            }
        ],
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scrape_test.yml"
        path.write_text(yaml.safe_dump(test, sort_keys=False, width=100000))
        result = subprocess.run(
            [promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False, timeout=300
        )
    output = result.stdout + result.stderr
    if result.returncode == 0:
        return []
    fired = parse_got(output)
    if not fired:
        raise AssertionError(f"promtool failed without firing alerts:\n{output[-3000:]}")
    drop = {"__name__", "alertstate"}
    return sorted(({k: v for k, v in s.items() if k not in drop} for s in fired), key=lambda a: sorted(a.items()))


def alert_severities(alerts: Iterable[dict[str, str]]) -> dict[str, set[str]]:
    """``{alertname: {severity, ...}}`` of firing alerts."""
    out: dict[str, set[str]] = {}
    for alert in alerts:
        out.setdefault(alert["alertname"], set()).add(alert.get("severity", ""))
    return out
