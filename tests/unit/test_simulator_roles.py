"""Scenario rules for Exchange 2013 Client Access servers: what such a server can and cannot have."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.simulator import Scenario, ScenarioError


def org(**cas: Any) -> dict[str, Any]:
    server = {"name": "CAS01", "version": "15.0 (Build 1497.2)", "server_role": ["ClientAccess"], **cas}
    return {"organisation": {"domain": "contoso.sim"}, "servers": [{"name": "EX01"}, server]}


def test_a_client_access_server_gets_the_2013_flags_and_no_tracking_log() -> None:
    data = org()
    data["tracking"] = {"messages_per_minute": 10}  # the organisation-wide default skips it
    scenario = Scenario.from_dict(data)
    cas, ex01 = scenario.server("CAS01"), scenario.server("EX01")
    assert cas is not None and ex01 is not None
    assert cas.version == "Version 15.0 (Build 1497.2)"
    assert (cas.is_hub_transport, cas.is_mailbox, cas.is_client_access, cas.is_frontend_transport) == (
        False,
        False,
        True,
        True,
    )
    assert cas.tracking is None and ex01.tracking is not None
    assert [db.name for db in scenario.effective_databases] == ["DB-EX01"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (org(version="Version 15.2 (Build 1544.4)"), "only on Exchange 2013"),
        (org(version="15.0.1497"), "expected 'Version"),
        (org(queues=[{"kind": "submission"}]), "has no queues"),
        (org(tracking={"messages_per_minute": 1}), "has no a message-tracking log"),
        (org(service_health={"Client Access Server Role": {"not_running": ["W3Svc"]}}), "Test-ServiceHealth"),
        (
            org(receive_connectors=[{"name": "Hub CAS01", "transport_role": "HubTransport"}]),
            "TransportRole HubTransport, which CAS01 does not run",
        ),
        (org(receive_connectors=[{"name": "Default CAS01"}]), None),  # a new Frontend connector: allowed
    ],
)
def test_what_a_client_access_server_cannot_have(data: dict[str, Any], message: str | None) -> None:
    if message is None:
        Scenario.from_dict(data)
        return
    with pytest.raises(ScenarioError, match=message):
        Scenario.from_dict(data)


def test_database_copies_live_on_mailbox_servers() -> None:
    data = org()
    data["databases"] = [{"name": "DB01", "copies": [{"server": "EX01"}, {"server": "CAS01"}]}]
    with pytest.raises(ScenarioError, match="CAS01 is not a Mailbox server"):
        Scenario.from_dict(data)
