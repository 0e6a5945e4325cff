"""docs/triage.md documents every triage rule with its trigger (the rule's docstring)."""

from __future__ import annotations

import inspect
from pathlib import Path

from exporter.triage import blindness
from exporter.triage.rules import RULES

DOC = Path(__file__).resolve().parents[2] / "docs" / "triage.md"


def test_every_rule_is_documented_with_its_trigger() -> None:
    text = DOC.read_text()
    for rule in [*RULES, *blindness.RULES]:
        doc = inspect.getdoc(rule)
        assert doc and doc.startswith("Trigger:"), rule.__name__
        assert f"### {rule.__name__}\n\n{' '.join(doc.split())}\n" in text, (
            f"docs/triage.md is stale for {rule.__name__}"
        )
