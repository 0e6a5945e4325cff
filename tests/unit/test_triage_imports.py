"""Triage is a pure function of the snapshots: the CLI, ``check`` and the web layer call it; it imports
neither the demo nor the service (nor those callers), and no import circle of the package runs through it.

Every ``import`` statement counts, also those inside functions and under ``TYPE_CHECKING``: a lazy
import is still a dependency, and the one that hid a circle (triage.run <-> service) was lazy."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "exporter"
FORBIDDEN = ("exporter.demo", "exporter.service", "exporter.web", "exporter.cli", "exporter.check",
             "exporter.simulator", "exporter.netsim")  # fmt: skip


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The exporter modules a file imports (``from exporter.x import y`` counts x and x.y if it is a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            out.add(base)
            out |= {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in out if m == "exporter" or m.startswith("exporter.")}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}


def test_triage_imports_no_caller() -> None:
    edges = graph()
    triage = sorted(m for m in edges if m.startswith("exporter.triage"))
    assert "exporter.triage.report" in triage and "exporter.triage.rules" in triage
    bad = {m: sorted(d for d in edges[m] if d.startswith(FORBIDDEN)) for m in triage}
    assert {m: d for m, d in bad.items() if d} == {}


def _cycle_through(edges: dict[str, set[str]], start: str) -> list[str] | None:
    """A path start -> ... -> start, if there is one (depth first)."""
    stack: list[tuple[str, list[str]]] = [(d, [start, d]) for d in sorted(edges[start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        if node == start:
            return path
        if node in seen:
            continue
        seen.add(node)
        stack += [(d, [*path, d]) for d in sorted(edges.get(node, ()))]
    return None


def test_no_import_circle_runs_through_triage() -> None:
    edges = graph()
    circles = {m: _cycle_through(edges, m) for m in edges if m.startswith("exporter.triage")}
    assert {m: c for m, c in circles.items() if c} == {}


def test_the_cycle_finder_finds_one() -> None:
    """The check above can fail: a circle like the old triage.run <-> service is found."""
    edges = {"exporter.triage.run": {"exporter.service"}, "exporter.service": {"exporter.triage.run"}}
    assert _cycle_through(edges, "exporter.triage.run") == ["exporter.triage.run", "exporter.service",
                                                             "exporter.triage.run"]  # fmt: skip


def test_importing_triage_loads_no_service_demo_or_web() -> None:
    code = (
        "import sys, exporter.triage.report, exporter.triage.blindness; "
        f"print(sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r})))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout
