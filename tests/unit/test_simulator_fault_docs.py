"""The simulator's fault kinds and fault/clock scenario keys are documented where users look for them."""

from __future__ import annotations

from pathlib import Path

from exporter.simulator import faults
from exporter.simulator.faults import FaultKind
from exporter.simulator.faultspec import FaultSpecParser

SIMULATOR = Path(__file__).resolve().parents[2] / "exporter" / "simulator"


def test_every_fault_kind_has_a_row_in_the_readme_and_the_module_doc() -> None:
    readme = (SIMULATOR / "README.md").read_text()
    faults_section = readme.split("## Faults", 1)[1].split("\n## ", 1)[0]
    first_cells = [line.split("|")[1] for line in faults_section.splitlines() if line.startswith("| `")]
    for kind in FaultKind:
        assert any(f"`{kind.value}`" in cell for cell in first_cells), kind
        assert f"``{kind.value}``" in (faults.__doc__ or ""), kind


def test_every_fault_and_clock_key_is_in_the_demo_scenario_header() -> None:
    header = "\n".join(
        line for line in (SIMULATOR / "scenarios" / "demo.yml").read_text().splitlines() if line.startswith("#")
    )
    for key in (*FaultSpecParser.SERVER_FAULT_KEYS, *FaultSpecParser.ORG_FAULT_KEYS):
        assert f"{key} (per server)" in header or f"{key}:" in header, key
