"""Exchange 2013 Client Access servers in the simulator, over real sockets with the real pypsrp client.

A mixed organisation: EX01 (Exchange 2016 Mailbox), MBX13 (2013 Mailbox) and CAS01 (2013 Client
Access). What each server reports and refuses follows the sources listed in ``simulator/roles.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from pypsrp.powershell import PowerShell, PSInvocationState, RunspacePool

from exporter.exchange import wire
from exporter.exchange.clixml import flatten
from exporter.simulator import Scenario, Simulator
from exporter.simulator.orgconfig import COMPONENTS
from exporter.simulator.roles import COMPONENTS_2013
from tests.integration.conftest import raw_pool, small_org
from tests.integration.conftest import run_cmdlets as run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def mixed_org() -> dict[str, Any]:
    org = small_org(("EX01", "MBX13"))
    org["servers"][0]["version"] = "Version 15.1 (Build 2507.6)"
    org["servers"][1].update(version="15.0 (Build 1497.2)", server_role=["Mailbox"])
    org["servers"].append(
        {
            "name": "CAS01",
            "version": "15.0 (Build 1497.2)",
            "server_role": ["ClientAccess"],
            "receive_connectors": [{"name": "Relay CAS01", "remote_ip_ranges": ["10.1.0.0/16"]}],
        }
    )
    org["tracking"] = {"messages_per_minute": 6}
    return org


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    simulator = Simulator(Scenario.from_dict(mixed_org()))
    simulator.start()
    yield simulator
    simulator.stop()


def open_pool(sim: Simulator, server: str) -> RunspacePool:
    pool = raw_pool(sim, server)
    wire.install(pool)
    pool.open()
    return pool


@pytest.fixture(scope="module")
def pool(sim: Simulator) -> Iterator[RunspacePool]:
    p = open_pool(sim, "EX01")
    yield p
    with contextlib.suppress(Exception):
        p.close()


def rows(pool: RunspacePool, cmdlet: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    ps = run(pool, (cmdlet, params))
    assert not ps.streams.error, [str(e) for e in ps.streams.error]
    return [flatten(o) for o in ps.output]


def refused(ps: PowerShell, failure: str, text: str) -> None:
    """No output and one error record of ``failure`` whose message contains ``text``."""
    assert not ps.output
    (error,) = ps.streams.error
    assert f"FailureCategory=Cmdlet-{failure}" in error.fq_error and text in str(error), (error.fq_error, str(error))


def test_get_exchange_server_reports_the_roles(pool: RunspacePool) -> None:
    servers = {s["Name"]: s for s in rows(pool, "Get-ExchangeServer", {})}
    cas, mbx, ex01 = servers["CAS01"], servers["MBX13"], servers["EX01"]
    assert cas["AdminDisplayVersion"] == "Version 15.0 (Build 1497.2)" and cas["ServerRole"] == "ClientAccess"
    flags = ("IsHubTransportServer", "IsFrontendTransportServer", "IsClientAccessServer", "IsMailboxServer")
    assert [cas[f] for f in flags] == [False, True, True, False]
    assert [mbx[f] for f in flags] == [True, False, False, True]  # 2013 Mailbox-only [I]
    assert [ex01[f] for f in flags] == [True, True, True, True]  # 2016 and later: one role
    assert cas["IsE15OrLater"] is True and cas["IsEdgeServer"] is False
    assert [t["Name"] for t in rows(pool, "Get-TransportService", {})] == ["EX01", "MBX13"]
    refused(run(pool, ("Get-TransportService", {"Identity": "CAS01"})), "ManagementObjectNotFoundException", "CAS01")


def test_default_receive_connectors_follow_the_transport_roles(pool: RunspacePool) -> None:
    def names(server: str) -> list[str]:
        return [c["Name"] for c in rows(pool, "Get-ReceiveConnector", {"Server": server})]

    assert names("CAS01") == [
        "Default Frontend CAS01",
        "Outbound Proxy Frontend CAS01",
        "Client Frontend CAS01",
        "Relay CAS01",
    ]
    assert names("MBX13") == ["Default MBX13", "Client Proxy MBX13"]
    assert len(names("EX01")) == 5
    (frontend,) = rows(pool, "Get-ReceiveConnector", {"Identity": "CAS01\\Default Frontend CAS01"})
    perms = rows(
        pool,
        "Get-ADPermission",
        {"Identity": frontend["DistinguishedName"], "User": "NT AUTHORITY\\ANONYMOUS LOGON"},
    )
    assert {p["ExtendedRights"][0] for p in perms} >= {"ms-Exch-SMTP-Submit"}


def test_client_access_server_has_no_queues_tracking_databases_or_service_health(pool: RunspacePool) -> None:
    refused(run(pool, ("Get-Queue", {"Server": "CAS01"})), "QueueViewerException", 'computer "CAS01"')
    tracking = run(pool, ("Get-MessageTrackingLog", {"Server": "CAS01"}))
    assert tracking.state == PSInvocationState.FAILED and not tracking.output  # a terminating error
    assert "isn't a Hub Transport, Edge Transport or Mailbox server" in str(tracking.streams.error[0])
    refused(run(pool, ("Get-MailboxDatabaseCopyStatus", {"Server": "CAS01"})), "ServerRoleOperationException", "")
    refused(
        run(pool, ("Test-ServiceHealth", {"Server": "CAS01"})),
        "LocalizedException",
        "There are no Microsoft Exchange 2007 server roles installed",
    )
    # the 2013 Mailbox server has them all
    assert rows(pool, "Get-Queue", {"Server": "MBX13"})
    assert rows(pool, "Get-MessageTrackingLog", {"Server": "MBX13", "ResultSize": 5})
    assert [c["DatabaseName"] for c in rows(pool, "Get-MailboxDatabaseCopyStatus", {"Server": "MBX13"})] == ["DB-MBX13"]
    assert {r["Role"] for r in rows(pool, "Test-ServiceHealth", {"Server": "MBX13"})} >= {"Hub Transport Server Role"}
    # no database was made up for the Client Access server
    assert {c["MailboxServer"] for c in rows(pool, "Get-MailboxDatabaseCopyStatus", {"Identity": "*"})} == {
        "EX01",
        "MBX13",
    }


def test_component_list_is_the_build_of_the_endpoint(sim: Simulator, pool: RunspacePool) -> None:
    """Every component of the build that runs the cmdlet, HubTransport included, whatever the roles."""
    through_2016 = [s["Component"] for s in rows(pool, "Get-ServerComponentState", {"Identity": "CAS01"})]
    assert through_2016 == list(COMPONENTS)
    cas = open_pool(sim, "CAS01")
    try:
        states = {s["Component"]: s["State"] for s in rows(cas, "Get-ServerComponentState", {"Identity": "CAS01"})}
    finally:
        cas.close()
    assert list(states) == list(COMPONENTS_2013) and "UMCallRouter" in states and "RoutingUpdates" not in states
    assert states["FrontendTransport"] == "Active" and states["HubTransport"] == "Active"
