"""Discovery parses real Get-ExchangeServer output (Exchange 2019 capture) into transport servers, and
the target inventory keeps Exchange 2013 Client Access servers away from the hub-only collectors."""

from __future__ import annotations

import pytest

from exporter.exchange.clixml import load_clixml
from exporter.exchange.discovery import parse_exchange_servers
from exporter.exchange.session import SessionManager
from exporter.exchange.targets import DiscoveredServer, ExchangeTargets
from exporter.settings import Settings
from tests.fixtures.captures import E19

CAPTURE = E19


def test_real_exchange_2019_server_is_a_transport_target() -> None:
    path = CAPTURE / "GetExchangeServer.xml"
    (server,) = parse_exchange_servers(load_clixml(path.read_text(encoding="utf-8-sig")))
    assert server.name == "SOLO-E19A"
    assert server.fqdn == "Solo-E19A.Solo.com"
    assert server.version == "Version 15.2 (Build 986.5)"
    assert server.site == "Default-First-Site-Name"
    assert server.roles == "Mailbox"
    assert server.hub_transport and server.frontend_transport


def test_edge_and_non_transport_servers_are_skipped() -> None:
    objects = [
        {"Name": "EDGE01", "IsHubTransportServer": False, "IsEdgeServer": True, "IsFrontendTransportServer": False},
        {"Name": "UM01", "IsHubTransportServer": False, "IsEdgeServer": False},
        {"Name": "ex02", "Fqdn": "ex02.contoso.com", "IsHubTransportServer": "True", "IsEdgeServer": "False"},
        {"Name": "", "IsHubTransportServer": True},
    ]
    assert [s.name for s in parse_exchange_servers(objects)] == ["ex02"]


def test_exchange_2013_client_access_server_is_a_frontend_transport_target() -> None:
    cas = {
        "Name": "CAS01",
        "Fqdn": "cas01.contoso.com",
        "AdminDisplayVersion": "Version 15.0 (Build 1497.2)",
        "ServerRole": "ClientAccess",
        "IsHubTransportServer": False,
        "IsFrontendTransportServer": True,
        "IsClientAccessServer": True,
        "IsMailboxServer": False,
        "IsEdgeServer": False,
    }
    (server,) = parse_exchange_servers([cas])
    assert (server.name, server.roles, server.hub_transport, server.frontend_transport) == (
        "CAS01",
        "ClientAccess",
        False,
        True,
    )


def found(name: str, hub: bool) -> DiscoveredServer:
    return DiscoveredServer(name, f"{name.lower()}.contoso.com", "", "", "", hub_transport=hub, frontend_transport=True)


@pytest.mark.parametrize("connect", ["direct", "via_seed"])
def test_client_access_servers_are_not_hub_transport_targets(connect: str) -> None:
    """Configured or discovered, a server discovery reports without hub transport is skipped by the
    hub-only collectors; the seed's host (every via_seed server's host) does not count as its name."""
    settings = Settings.model_validate(
        {
            "exchange": {
                "servers": [{"name": "CAS01", "host": "cas01.contoso.com"}, {"name": "EX09"}],
                "discovery": {"enabled": True, "seed": "CAS01", "connect": connect},
            }
        }
    )
    targets = ExchangeTargets(settings, SessionManager(4))
    assert targets.hub_transport_names() == ["CAS01", "EX09"]  # roles unknown yet: as before
    targets.set_discovered([found("CAS01", False), found("CAS02", False), found("MBX03", True)])
    assert targets.names() == ["CAS01", "CAS02", "EX09", "MBX03"]
    assert targets.hub_transport_names() == ["EX09", "MBX03"]
    targets.set_discovered([found("CAS01", True)])  # the role changed (or came back): polled again
    assert targets.hub_transport_names() == ["CAS01", "EX09"]
