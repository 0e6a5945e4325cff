"""Discovery parses real Get-ExchangeServer output (Exchange 2019 capture) into transport servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.exchange.clixml import load_clixml
from exporter.exchange.discovery import parse_exchange_servers

CAPTURE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "exchange-clixml" / "E19"


def test_real_exchange_2019_server_is_a_transport_target() -> None:
    path = CAPTURE / "GetExchangeServer.xml"
    if not path.is_file():
        pytest.skip(f"reference capture not found at {path}")
    (server,) = parse_exchange_servers(load_clixml(path.read_text(encoding="utf-8-sig")))
    assert server.name == "SOLO-E19A"
    assert server.fqdn == "Solo-E19A.Solo.com"
    assert server.version == "Version 15.2 (Build 986.5)"
    assert server.site == "Default-First-Site-Name"
    assert server.roles == "Mailbox"


def test_edge_and_non_transport_servers_are_skipped() -> None:
    objects = [
        {"Name": "EDGE01", "IsHubTransportServer": False, "IsEdgeServer": True},
        {"Name": "CAS01", "IsHubTransportServer": False, "IsEdgeServer": False},
        {"Name": "ex02", "Fqdn": "ex02.contoso.com", "IsHubTransportServer": "True", "IsEdgeServer": "False"},
        {"Name": "", "IsHubTransportServer": True},
    ]
    assert [s.name for s in parse_exchange_servers(objects)] == ["ex02"]
