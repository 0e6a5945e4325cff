"""RBAC, as an Exchange remote session enforces it: a user's runspace holds its roles' cmdlets plus
seven PowerShell commands, nothing else. Real pypsrp against the simulator; then the exporter with the
README's roles (everything runs) and with one of them missing (one collector fails, reason
``permission``, and ``check`` and the status page name the role and the cmdlet)."""

from __future__ import annotations

import copy
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from pypsrp.powershell import PowerShell, RunspacePool

from exporter.check import check
from exporter.service import Service
from tests.integration.conftest import (
    PASSWORD,
    USER,
    SimFactory,
    only_collectors,
    raw_pool,
    run_cmdlets,
    settings_for,
    small_org,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
ROOT = Path(__file__).resolve().parents[2]
NOT_RECOGNIZED = "is not recognized as the name of a cmdlet, function, script file, or operable program"


def readme_roles() -> list[str]:
    """The roles of the role group the README tells the administrator to create."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"New-RoleGroup [^\n]*?-Roles ((?:\"[^\"]+\",?)+)", text)
    assert match, "README: no New-RoleGroup ... -Roles line"
    return re.findall(r'"([^"]+)"', match.group(1))


def org_with_roles(roles: list[str] | None, servers: tuple[str, ...] = ("EX01", "EX02")) -> dict[str, Any]:
    """small_org with message tracking traffic, the test user holding ``roles`` (None: name: password)."""
    org = small_org(servers)
    org["users"] = {USER: PASSWORD} if roles is None else {USER: {"password": PASSWORD, "roles": roles}}
    org["tracking"] = {"messages_per_minute": 6, "history_minutes": 15}
    return org


def opened(sim: Any, server: str = "EX01") -> RunspacePool:
    pool = raw_pool(sim, server)
    pool.open()
    return pool


def failure(ps: PowerShell) -> Any:
    assert ps.had_errors and not ps.output
    (error,) = ps.streams.error
    return error


# --- the runspace -------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["Where-Object", "ForEach-Object", "Sort-Object", "Format-List", "select"])
def test_powershell_commands_beyond_the_seven_are_unknown(sim_factory: SimFactory, command: str) -> None:
    sim, _ = sim_factory(org_with_roles(None))
    pool = opened(sim)
    try:
        error = failure(run_cmdlets(pool, ("Get-Queue", {"Server": "EX01"}), (command, {})))
        assert str(error) == (
            f"The term '{command}' {NOT_RECOGNIZED}. Check the spelling of the name, or if a path was included, "
            "verify that the path is correct and try again."
        )
        assert error.fq_error == "CommandNotFoundException" and error.reason == "CommandNotFoundException"
        assert error.target_name == command
        ps = PowerShell(pool)
        ps.add_script("Get-Queue | Where-Object { $_.MessageCount -gt 0 }")
        ps.invoke()
        script_error = failure(ps)
        assert script_error.fq_error == "ScriptsNotAllowed" and script_error.reason == "ParseException"
    finally:
        pool.close()


def test_a_users_roles_decide_which_cmdlets_it_has(sim_factory: SimFactory) -> None:
    sim, _ = sim_factory(org_with_roles(["View-Only Configuration"]))
    pool = opened(sim)
    try:
        assert run_cmdlets(pool, ("Get-Queue", {"Server": "EX01"})).output
        for cmdlet, params in (("Get-MessageTrackingLog", {"Server": "EX01"}), ("Test-ServiceHealth", {})):
            error = failure(run_cmdlets(pool, (cmdlet, params)))
            assert error.fq_error == "CommandNotFoundException" and f"'{cmdlet}' {NOT_RECOGNIZED}" in str(error)
        listed = {str(c): c.adapted_properties for c in run_cmdlets(pool, ("Get-Command", {})).output}
        assert {"Get-Queue", "Get-ADPermission", "Get-ExchangeCertificate", "Select-Object"} <= set(listed)
        assert {"Measure-Object", "Out-Default", "Get-FormatData", "Get-Help", "Get-Command", "Exit-PSSession"} <= set(
            listed
        )
        assert not {"Get-MessageTrackingLog", "Test-ServiceHealth", "Where-Object", "Sort-Object"} & set(listed)
        assert str(listed["Get-Queue"]["CommandType"]) == "Function"  # Exchange's proxy functions
        assert str(listed["Select-Object"]["CommandType"]) == "Cmdlet"
        assert len(listed) == 197 + 7  # the role's entries plus the seven PowerShell commands
    finally:
        pool.close()


def test_view_only_organization_management_is_its_three_roles(sim_factory: SimFactory) -> None:
    sim, _ = sim_factory(org_with_roles(["View-Only Organization Management"]))
    pool = opened(sim)
    try:
        assert not run_cmdlets(pool, ("Get-MessageTrackingLog", {"Server": "EX01"})).had_errors  # View-Only Recipients
        assert run_cmdlets(pool, ("Test-ServiceHealth", {"Server": "EX01"})).output  # Monitoring
        assert run_cmdlets(pool, ("Get-Queue", {"Server": "EX01"})).output  # View-Only Configuration
        error = failure(run_cmdlets(pool, ("Suspend-Queue", {"Identity": "EX01\\10"})))  # Transport Queues only
        assert error.fq_error == "CommandNotFoundException"
    finally:
        pool.close()


def test_a_granted_cmdlet_the_simulator_lacks_is_not_called_unknown(sim_factory: SimFactory) -> None:
    sim, _ = sim_factory(org_with_roles(None))
    pool = opened(sim)
    try:
        error = failure(run_cmdlets(pool, ("Get-Mailbox", {})))  # Message Tracking and Monitoring grant it
        assert error.fq_error == "SimulatorNotImplemented" and NOT_RECOGNIZED not in str(error)
    finally:
        pool.close()


def test_measure_help_and_the_other_powershell_commands(sim_factory: SimFactory) -> None:
    sim, _ = sim_factory(org_with_roles(None))
    pool = opened(sim)
    try:
        queues = run_cmdlets(pool, ("Get-Queue", {"Server": "EX01"})).output
        (measured,) = run_cmdlets(pool, ("Get-Queue", {"Server": "EX01"}), ("Measure-Object", {})).output
        assert measured.types[0] == "Microsoft.PowerShell.Commands.GenericMeasureInfo"
        assert measured.adapted_properties["Count"] == len(queues) and measured.adapted_properties["Sum"] is None
        (summed,) = run_cmdlets(
            pool,
            ("Get-Queue", {"Server": "EX01"}),
            ("Measure-Object", {"Property": "MessageCount", "Sum": True, "Maximum": True}),
        ).output
        counts = [q.adapted_properties["MessageCount"] for q in queues]
        assert summed.adapted_properties["Sum"] == sum(counts) and summed.adapted_properties["Maximum"] == max(counts)
        assert summed.adapted_properties["Average"] is None and summed.adapted_properties["Property"] == "MessageCount"
        ps = run_cmdlets(pool, ("Get-Queue", {"Server": "EX01"}), ("Measure-Object", {"Property": "Nope"}))
        assert ps.streams.error[0].fq_error.startswith("GenericMeasurePropertyNotFound,")

        for tail in ("Out-Default", "Exit-PSSession"):
            ps = run_cmdlets(pool, ("Get-Queue", {"Server": "EX01"}), (tail, {}))
            assert not ps.output and not ps.had_errors
        (help_info,) = run_cmdlets(pool, ("Get-Help", {"Name": "Get-Queue"})).output
        assert help_info.adapted_properties["Name"] == "Get-Queue"
        assert "-Server" in help_info.adapted_properties["Synopsis"]
        ps = run_cmdlets(pool, ("Get-Help", {"Name": "Where-Object"}))
        assert not ps.output and ps.streams.error[0].fq_error.startswith("HelpNotFound,")
        ps = run_cmdlets(pool, ("Get-Command", {"Name": ["Get-Queue", "Where-Object"]}))
        assert [str(c) for c in ps.output] == ["Get-Queue"]
        assert (
            ps.streams.error[0].fq_error == "CommandNotFoundException,Microsoft.PowerShell.Commands.GetCommandCommand"
        )
        assert {str(c) for c in run_cmdlets(pool, ("Get-Command", {"Noun": "Queue", "Verb": "Get"})).output} == {
            "Get-Queue"
        }
        assert failure(run_cmdlets(pool, ("Get-FormatData", {}))).fq_error == "SimulatorNotImplemented"
    finally:
        pool.close()


def test_roles_are_read_when_the_session_opens(sim_factory: SimFactory) -> None:
    sim, scenario = sim_factory(org_with_roles(["View-Only Configuration"]))
    old = opened(sim)
    try:
        granted = scenario.__class__.from_dict(org_with_roles(["View-Only Configuration", "Message Tracking"]))
        sim.set_scenario(granted)
        assert failure(run_cmdlets(old, ("Get-MessageTrackingLog", {"Server": "EX01"}))).fq_error == (
            "CommandNotFoundException"
        )
        new = opened(sim)
        try:
            assert not run_cmdlets(new, ("Get-MessageTrackingLog", {"Server": "EX01"})).had_errors
        finally:
            new.close()
    finally:
        old.close()


def test_hidden_cmdlets_still_leave_every_runspace(sim_factory: SimFactory) -> None:
    org = org_with_roles(None)
    org["rbac"] = {"hidden_cmdlets": ["Get-ADPermission"]}
    sim, _ = sim_factory(org)
    pool = opened(sim)
    try:
        error = failure(run_cmdlets(pool, ("Get-ADPermission", {"Identity": "EX01\\Default EX01"})))
        assert error.fq_error == "CommandNotFoundException"
        assert "Get-ADPermission" not in {str(c) for c in run_cmdlets(pool, ("Get-Command", {})).output}
    finally:
        pool.close()


# --- the exporter ---------------------------------------------------------------------------------------


def exporter_settings(sim: Any, scenario: Any) -> Any:
    overrides = {"exchange": {"discovery": {"enabled": True}}}
    return settings_for(sim, scenario, overrides=overrides)


def test_every_collector_runs_with_the_roles_the_readme_documents(sim_factory: SimFactory) -> None:
    roles = readme_roles()
    assert roles == ["View-Only Configuration", "Message Tracking", "Monitoring"]
    sim, scenario = sim_factory(org_with_roles(roles))
    service = Service(exporter_settings(sim, scenario))
    try:
        snaps = service.poll_all()
        assert all(s.ok for s in snaps), [(s.collector, s.target, s.reason, s.message) for s in snaps if not s.ok]
        polled = {s.collector for s in snaps}
        assert polled == {"discovery", *(c.name for c in service.collectors if c.name != "discovery")}
        assert len(polled) == 14  # discovery and the thirteen collectors, each ran
        relay = [s.result for s in snaps if s.collector == "receive_connectors"]
        assert relay and all(r.permissions_readable for r in relay)  # Get-ADPermission ran too
        commands = sim.stats()["commands"]
        for cmdlet in (
            "Get-ExchangeServer",
            "Get-Queue",
            "Get-MessageTrackingLog",
            "Get-ADPermission",
            "Get-ExchangeDiagnosticInfo",
            "Get-TransportRule",
            "Get-EmailAddressPolicy",
            "Get-TransportService",
            "Get-NetworkConnectionInfo",
        ):
            assert commands.get(cmdlet), (cmdlet, commands)
    finally:
        service.stop()


def without(role: str) -> list[str]:
    roles = readme_roles()
    roles.remove(role)
    return roles


def metric(service: Service, name: str, **labels: str) -> float | None:
    return service.registry.get_sample_value(name, labels)


def test_a_missing_role_is_a_permission_failure_of_that_collector_only(sim_factory: SimFactory) -> None:
    sim, scenario = sim_factory(org_with_roles(without("Message Tracking")))
    service = Service(exporter_settings(sim, scenario))
    try:
        snaps = service.poll_all()
        failed = [s for s in snaps if not s.ok]
        assert {(s.collector, s.target) for s in failed} == {("tracking", "EX01"), ("tracking", "EX02")}, [
            (s.collector, s.reason, s.message) for s in failed
        ]
        for snap in failed:
            assert snap.reason == "permission", snap.message
            assert snap.message == (
                f"Get-MessageTrackingLog is not available to {USER}: assign the Message Tracking role"
            )
        assert metric(service, "mailflow_collector_up", collector="tracking", target="EX01") == 0
        assert metric(service, "mailflow_collector_up", collector="queues", target="EX01") == 1
        assert (
            metric(service, "mailflow_collector_errors_total", collector="tracking", target="EX01", reason="permission")
            == 1
        )
        report = service.triage()
        (finding,) = [f for f in report.findings if f.rule == "missing_role"]
        assert "Message Tracking" in finding.title and "Get-MessageTrackingLog" in finding.title
        assert finding.runbook == "missing-rbac-role"
        assert any("tracking EX01" in e for e in finding.evidence)
        assert '-Role "Message Tracking"' in finding.next_step

        # The status page shows the same finding, role and cmdlet named.
        service.start()
        service.scheduler.pause()
        assert service.web is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{service.web.port}/", timeout=10) as resp:
            body = resp.read().decode("utf-8")
        from tests.integration.test_status_page import check_page, parse

        check_page(parse(body), service.triage(), service.settings.web.runbook_url)
        (node,) = [n for n in parse(body).by_id("findings").find_all("li", "finding") if "Message Tracking" in n.text()]
        assert "Get-MessageTrackingLog" in node.text() and USER in node.text()
    finally:
        service.stop()


def test_check_names_the_missing_role(sim_factory: SimFactory) -> None:
    sim, scenario = sim_factory(org_with_roles(without("Monitoring")))
    report = check(exporter_settings(sim, scenario))
    (finding,) = [f for f in report.findings if f.rule == "missing_role"]
    assert finding.title == "The monitoring account lacks the Monitoring role (Test-ServiceHealth)"
    assert any(u.startswith("service_health EX01: Test-ServiceHealth is not available") for u in report.unchecked)
    assert report.exit_code in (2, 3)  # small_org's retrying queues are critical; otherwise 3, could not check


def test_a_granted_role_is_picked_up_by_the_next_poll(sim_factory: SimFactory) -> None:
    """Exchange builds a session's commands when it opens: after a permission failure the exporter opens
    a new session, so a role granted meanwhile is in effect at the next poll (only the tracking
    collector runs here: another collector would reopen the session at once, before the grant)."""
    org = org_with_roles(without("Message Tracking"), servers=("EX01",))
    sim, scenario = sim_factory(org)
    service = Service(settings_for(sim, scenario, overrides={"collectors": only_collectors(tracking={})}))
    try:
        first = {(s.collector, s.target): s for s in service.poll_all()}
        assert first[("tracking", "EX01")].reason == "permission"
        fixed = copy.deepcopy(org)
        fixed["users"][USER]["roles"] = readme_roles()
        sim.set_scenario(scenario.__class__.from_dict(fixed))
        second = {(s.collector, s.target): s for s in service.poll_all()}
        assert second[("tracking", "EX01")].ok, second[("tracking", "EX01")].message
    finally:
        service.stop()


def test_missing_get_adpermission_leaves_relay_rights_unverified(sim_factory: SimFactory) -> None:
    org = org_with_roles(None, servers=("EX01",))
    org["rbac"] = {"hidden_cmdlets": ["Get-ADPermission"]}
    sim, scenario = sim_factory(org)
    settings = settings_for(sim, scenario, overrides={"collectors": {"tracking": {"enabled": False}}})
    service = Service(settings)
    try:
        snaps = {(s.collector, s.target): s for s in service.poll_all()}
        relay = snaps[("receive_connectors", "EX01")]
        assert relay.ok and relay.result.permissions_readable is False
        risk = metric(
            service,
            "mailflow_receive_connector_open_relay_risk",
            server="EX01",
            connector="Default Frontend EX01",
            reason="anonymous_relay_unverified",
        )
        assert risk == 1
        (finding,) = [f for f in service.triage().findings if f.rule == "relay_unverified"]
        assert "View-Only Configuration" in finding.next_step
    finally:
        service.stop()
