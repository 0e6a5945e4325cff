"""The role table: README, the exporter's cmdlet calls and the simulator's role definitions agree with it;
scenario users with roles; the permission failure text and its reading back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from exporter.errors import CollectorError
from exporter.exchange.permissions import CMDLET_ROLES, REQUIRED_ROLES, missing_message, parse_missing, role_of
from exporter.exchange.session import CallResult
from exporter.settings import COLLECTOR_NAMES
from exporter.simulator import Scenario
from exporter.simulator.cmdlets import REGISTRY
from exporter.simulator.fields import ScenarioError
from exporter.simulator.rbac import DEFAULT_ROLES, POWERSHELL_COMMANDS, ROLES, parse_users, runspace
from exporter.triage.facts import Facts
from exporter.triage.rules import missing_role

ROOT = Path(__file__).resolve().parents[2]


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("## Permissions the monitoring account needs", 1)[1].split("\n## ", 1)[0]


def test_the_readme_table_is_the_role_table() -> None:
    rows = re.findall(r"^\s*\| (\w+) \| `([\w-]+)` \| ([\w -]+?) \|$", readme_section(), re.M)
    assert tuple(rows) == CMDLET_ROLES


def test_the_readme_role_group_holds_exactly_the_required_roles() -> None:
    line = next(ln for ln in readme_section().splitlines() if "New-RoleGroup" in ln)
    roles = re.findall(r'"([^"]+)"', line.split("-Roles", 1)[1].split("-Members", 1)[0])
    assert tuple(roles) == REQUIRED_ROLES
    assert {r for _, _, r in CMDLET_ROLES} == set(REQUIRED_ROLES)


def test_every_cmdlet_the_exporter_runs_is_in_the_table() -> None:
    called: set[str] = set()
    for path in [*(ROOT / "exporter" / "exchange").glob("*.py"), *(ROOT / "exporter" / "probe").glob("*.py")]:
        text = path.read_text()
        for call in re.finditer(r"\.(?:invoke|fetch|run)\(", text):
            first = re.search(r'"((?:Get|Test)-[A-Za-z]+)"', text[call.end() : call.end() + 160])
            if first:
                called.add(first.group(1))
    assert called == {c for _, c, _ in CMDLET_ROLES}
    assert {c for c, _, _ in CMDLET_ROLES} == {"discovery", *COLLECTOR_NAMES}


def test_the_simulators_roles_grant_what_the_table_says() -> None:
    for _, cmdlet, role in CMDLET_ROLES:
        assert cmdlet in ROLES[role], (cmdlet, role)
    assert DEFAULT_ROLES == REQUIRED_ROLES
    assert "Get-Queue" in ROLES["Transport Queues"] and "Export-Message" in ROLES["Transport Queues"]
    assert "export-message" not in runspace(REQUIRED_ROLES).commands  # message contents: Transport Queues only


def test_every_exchange_cmdlet_the_simulator_runs_belongs_to_a_role() -> None:
    granted = {c.lower() for cmdlets in ROLES.values() for c in cmdlets}
    powershell = {c.lower() for c in POWERSHELL_COMMANDS}
    assert powershell <= set(REGISTRY)
    assert set(REGISTRY) - powershell <= granted, set(REGISTRY) - powershell - granted
    commands = runspace(("View-Only Configuration",)).commands
    assert "where-object" not in commands and "get-messagetrackinglog" not in commands
    assert commands["get-queue"] == ("Get-Queue", "Function") and commands["select-object"][1] == "Cmdlet"


def test_scenario_users_with_and_without_roles() -> None:
    passwords, roles = parse_users(
        {
            "a@x": "pw",
            "B@x": {"password": "pw2", "roles": ["view-only organization management", "Message Tracking"]},
        }
    )
    assert passwords == {"a@x": "pw", "B@x": "pw2"}
    assert roles["a@x"] == DEFAULT_ROLES
    assert roles["b@x"] == ("Message Tracking", "Monitoring", "View-Only Configuration", "View-Only Recipients")
    _, listed = parse_users([{"username": "c@x", "password": "p", "roles": ["Monitoring"]}])
    assert listed == {"c@x": ("Monitoring",)}
    org = {
        "servers": [{"name": "EX01"}],
        "users": {"svc@contoso.sim": {"password": "p", "roles": ["Monitoring"]}},
    }
    scenario = Scenario.from_dict(org)
    assert scenario.roles_of("SVC@contoso.sim") == ("Monitoring",)
    assert scenario.roles_of("someone-else") == DEFAULT_ROLES
    assert scenario.users == {"svc@contoso.sim": "p"}


@pytest.mark.parametrize(
    ("users", "message"),
    [
        ({"a": {"password": "p", "roles": ["Queue Viewer"]}}, r"users\.a\.roles: unknown role 'Queue Viewer'"),
        ({"a": {"password": "p", "roles": []}}, r"users\.a\.roles: a user needs at least one role"),
        ({"a": {"password": "p", "roles": "Monitoring"}}, r"users\.a\.roles: expected a list"),
        ({"a": {"roles": ["Monitoring"]}}, r"users\.a: needs a password"),
        ({"a": {"password": "p", "role": ["Monitoring"]}}, r"users\.a: unknown key\(s\) role"),
        ([{"username": "a", "password": "p", "roles": [3]}], r"users\[0\]\.roles: unknown role 3"),
    ],
)
def test_bad_user_roles_are_named(users: object, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        Scenario.from_dict({"servers": [{"name": "EX01"}], "users": users})


def test_the_failure_text_reads_back() -> None:
    text = missing_message("get-messagetrackinglog", "svc@contoso.sim")
    assert text == "Get-MessageTrackingLog is not available to svc@contoso.sim: assign the Message Tracking role"
    assert parse_missing(text) == ("Get-MessageTrackingLog", "svc@contoso.sim", "Message Tracking")
    other = missing_message("Get-Mailbox", "")
    assert other == "Get-Mailbox is not available to this account: no role of this account grants it"
    assert parse_missing(other) == ("Get-Mailbox", "this account", None)
    assert parse_missing("Get-Queue -Server EX01: boom") is None
    assert role_of("TEST-SERVICEHEALTH") == "Monitoring" and role_of("Get-Mailbox") is None


def test_a_missing_cmdlet_is_a_permission_failure_other_errors_are_cmdlet_errors() -> None:
    result = CallResult([], errors=["The term 'Test-ServiceHealth' is not recognized"], failed=True,
                        missing=("Test-ServiceHealth",), account="svc@contoso.sim")  # fmt: skip
    with pytest.raises(CollectorError) as caught:
        result.raise_for_errors("Test-ServiceHealth -Server EX01")
    assert caught.value.reason == "permission"
    assert str(caught.value) == "Test-ServiceHealth is not available to svc@contoso.sim: assign the Monitoring role"
    with pytest.raises(CollectorError) as caught:
        CallResult([], errors=["The server is not reachable"]).raise_for_errors("Get-Queue -Server EX01")
    assert caught.value.reason == "cmdlet_error"


def test_the_finding_groups_by_role_and_ignores_other_failures() -> None:
    tracking = missing_message("Get-MessageTrackingLog", "svc@x")
    failures = {
        "tracking": {"EX01": f"permission: {tracking}", "EX02": f"permission: {tracking}"},
        "service_health": {"EX01": f"permission: {missing_message('Test-ServiceHealth', 'svc@x')}"},
        "queues": {"EX01": "timeout: no answer within 5s"},
    }
    findings = missing_role(Facts({}, failures, 0.0))
    assert [f.title for f in findings] == [
        "The monitoring account lacks the Message Tracking role (Get-MessageTrackingLog)",
        "The monitoring account lacks the Monitoring role (Test-ServiceHealth)",
    ]
    assert findings[0].evidence == (f"tracking EX01: {tracking}", f"tracking EX02: {tracking}")
    assert findings[0].severity == "warning" and findings[0].scopes == () and findings[0].weight == 2
    assert missing_role(Facts({}, {"queues": {"EX01": "cmdlet_error: boom"}}, 0.0)) == []
