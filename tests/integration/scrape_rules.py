"""Alert rules checked against real scrapes: the exporter's exposition, minute by minute, becomes the
input series of a ``promtool test rules`` file, with the alerts a scenario expects (and those it must
not fire) as its cases."""

from __future__ import annotations

import functools
import re
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from exporter.service import Service
from tests.tools import ci_tool

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "dashboards" / "prometheus" / "alerts.yml"
SCRAPE_LABELS = {"job": "mailflow", "instance": "exporter:10049"}
_SKIP_PREFIXES = ("process_", "python_")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class Scrapes:
    """The exporter's samples at one scrape a minute (minute 0 first), as promtool input series."""

    def __init__(self) -> None:
        self.minutes = 0
        self._series: dict[str, dict[int, float]] = {}

    def scrape(self, service: Service) -> None:
        """Record every sample of the service's registry as the next minute's scrape (plus ``up``)."""
        minute = self.minutes
        self._series.setdefault(self._key("up", {}), {})[minute] = 1.0
        for family in service.registry.collect():
            for sample in family.samples:
                if sample.name.startswith(_SKIP_PREFIXES) or sample.name.endswith("_created"):
                    continue
                self._series.setdefault(self._key(sample.name, sample.labels), {})[minute] = float(sample.value)
        self.minutes += 1

    @staticmethod
    def _key(name: str, labels: dict[str, str]) -> str:
        merged = {**labels, **SCRAPE_LABELS}
        return name + "{" + ",".join(f"{k}={_quote(v)}" for k, v in sorted(merged.items())) + "}"

    def value(self, name: str, minute: int | None = None, **labels: str) -> float | None:
        """One series' value at ``minute`` (default: the last scrape)."""
        at = self.minutes - 1 if minute is None else minute
        return self._series.get(self._key(name, labels), {}).get(at)

    def input_series(self) -> list[dict[str, str]]:
        out = []
        for key, values in sorted(self._series.items()):
            points = [repr(values[m]) if m in values else "_" for m in range(self.minutes)]
            out.append({"series": key, "values": " ".join(points)})
        return out


@functools.cache
def _rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def alert_names() -> list[str]:
    """Every alert of alerts.yml."""
    return sorted(_rules())


def _render(template: str, labels: dict[str, str], value: float) -> str:
    """The few template forms the alerts use: ``{{ $labels.x }}``, ``{{ $value }}``, ``printf "%.0f"``."""
    text = re.sub(r'\{\{ printf "%\.0f" \$value \}\}', f"{value:.0f}", template)
    text = re.sub(r"\{\{ \$value \}\}", f"{value:g}", text)
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), text)


def expected(alert: str, value: float, **labels: str) -> dict[str, Any]:
    """One firing alert as promtool expects it: its labels (scrape labels and severity added) and its
    rendered annotations."""
    rule = _rules()[alert]
    every = {**SCRAPE_LABELS, **labels}
    annotations = {k: _render(v, every, value) for k, v in rule["annotations"].items()}
    return {"exp_labels": {**every, **rule["labels"]}, "exp_annotations": annotations}


def check_alerts(
    scrapes: Scrapes, tmp_path: Path, firing: dict[str, list[dict[str, Any]]], quiet: Iterable[str]
) -> None:
    """``promtool test rules`` at the last scrape: the alerts in ``firing`` fire exactly as given, those
    in ``quiet`` do not fire at all."""
    at = f"{scrapes.minutes - 1}m"
    cases = [{"eval_time": at, "alertname": name, "exp_alerts": alerts} for name, alerts in sorted(firing.items())]
    cases += [{"eval_time": at, "alertname": name, "exp_alerts": []} for name in sorted(set(quiet) - set(firing))]
    document = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": scrapes.input_series(), "alert_rule_test": cases}],
    }
    path = tmp_path / "scenario_test.yml"
    path.write_text(yaml.safe_dump(document, sort_keys=False, width=1_000_000))
    promtool = ci_tool("promtool", "prometheus")
    result = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
