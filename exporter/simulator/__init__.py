"""Protocol-level Microsoft Exchange simulator: real WSMan/PSRP endpoints for tests, demo and benchmarks.

Each simulated Exchange server is its own HTTP(S) endpoint at ``/PowerShell`` speaking PSRP through
psrpcore's server classes, so the exporter's real pypsrp client runs unchanged against it. See
``server.Simulator`` for the API and ``scenario`` for the YAML schema.
"""

from exporter.simulator.faults import Fault, FaultInjector, FaultKind
from exporter.simulator.scenario import Scenario, ScenarioError, build_scenario, load_scenario
from exporter.simulator.server import Simulator

__all__ = [
    "Fault",
    "FaultInjector",
    "FaultKind",
    "Scenario",
    "ScenarioError",
    "Simulator",
    "build_scenario",
    "demo_scenario_path",
    "load_scenario",
]


def demo_scenario_path() -> str:
    """Filesystem path of the bundled demo scenario (``scenarios/demo.yml``)."""
    from importlib.resources import files

    return str(files("exporter.simulator") / "scenarios" / "demo.yml")
