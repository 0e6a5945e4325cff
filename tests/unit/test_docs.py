"""Docs stay in step with the code: runbook sections for every LastError category and failure reason."""

from __future__ import annotations

import re
from pathlib import Path

from exporter.exchange.lasterror import CATEGORIES, CATEGORY_HINTS

ROOT = Path(__file__).resolve().parents[2]


def test_runbook_has_a_section_per_category_with_its_hint() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    for category in CATEGORIES:
        section = re.search(rf"^### {category}\n\n(.+?)\n", runbook, re.M)
        assert section, f"docs/runbook.md lacks a section for {category}"
        assert section.group(1) == CATEGORY_HINTS[category], f"runbook text for {category} differs from the code"


def test_metrics_doc_lists_every_category() -> None:
    metrics = (ROOT / "docs" / "metrics.md").read_text()
    for category in CATEGORIES:
        assert f"`{category}`" in metrics


def test_runbook_lists_every_failure_reason() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    metrics = (ROOT / "docs" / "metrics.md").read_text()
    cell = metrics.split("`reason` is one of", 1)[1].split("|", 1)[0]
    reasons = re.findall(r"`([a-z_]+)`", cell)
    assert "timeout" in reasons
    for reason in reasons:
        assert f"`{reason}`" in runbook, reason
