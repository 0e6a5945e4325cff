"""The simulator's WSMan operations on shells as objects: Enumerate/Pull, Disconnect, Reconnect, Connect.

Real pypsrp against the simulator. A client that vanishes leaves its shell Connected and counted
against the session limit (MS-WSMV 3.1.6.5); a new client can list it and delete it, not connect to it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from pypsrp.exceptions import WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import NAMESPACES, OptionSet, SelectorSet, WSMan

from exporter.simulator import Scenario, Simulator
from tests.integration.conftest import PASSWORD, USER, SimFactory, raw_pool, small_org

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
EXCHANGE_URI = "http://schemas.microsoft.com/powershell/Microsoft.Exchange"
OTHER_USER, OTHER_PASSWORD = "someone-else@contoso.sim", "another-secret-4411"
IN_USE = 2150859213  # ERROR_WSMAN_INUSE_CANNOT_RECONNECT
WSEN, WSM = NAMESPACES["wsen"], NAMESPACES["wsman"]


def wsman_for(sim: Simulator, user: str = USER, password: str = PASSWORD) -> WSMan:
    host, port = sim.endpoint("EX01")
    return WSMan(
        host,
        port=port,
        ssl=False,
        path="PowerShell",
        auth="basic",
        username=user,
        password=password,
        encryption="never",
    )


def named_pool(sim: Simulator, name: str | None, user: str = USER, password: str = PASSWORD) -> RunspacePool:
    pool = RunspacePool(wsman_for(sim, user, password), configuration_name="Microsoft.Exchange")
    pool.shell.name = name
    pool.open()
    return pool


def enumerate_shells(wsman: WSMan, max_elements: int | None = 32000) -> list[dict[str, str]]:
    """Enumerate (optimised when ``max_elements``) then Pull until the end, one item at a time."""
    request = ET.Element(f"{{{WSEN}}}Enumerate")
    if max_elements is not None:
        ET.SubElement(request, f"{{{WSM}}}OptimizeEnumeration")
        ET.SubElement(request, f"{{{WSM}}}MaxElements").text = str(max_elements)
    body = wsman.enumerate(SHELL_URI, request)
    step, items = "wsen:EnumerateResponse", "wsman:Items"
    out: list[dict[str, str]] = []
    while True:
        for shell in body.findall(f"{step}/{items}/rsp:Shell", NAMESPACES):
            out.append({child.tag.split("}")[1]: child.text or "" for child in shell})
        context = body.find(f"{step}/wsen:EnumerationContext", NAMESPACES)
        if context is None:
            ends = [body.find(f"{step}/{prefix}:EndOfSequence", NAMESPACES) for prefix in ("wsman", "wsen")]
            assert any(end is not None for end in ends)
            return out
        pull = ET.Element(f"{{{WSEN}}}Pull")
        ET.SubElement(pull, f"{{{WSEN}}}EnumerationContext").text = context.text
        body = wsman.pull(SHELL_URI, pull)
        step, items = "wsen:PullResponse", "wsen:Items"


def delete(wsman: WSMan, shell_id: str) -> None:
    selectors = SelectorSet()
    selectors.add_option("ShellId", shell_id)
    wsman.delete(EXCHANGE_URI, selector_set=selectors)


def two_users() -> dict[str, Any]:
    data = small_org(("EX01",), session_limit=3)
    data["users"] = {USER: PASSWORD, OTHER_USER: OTHER_PASSWORD}
    return data


def test_enumerate_lists_only_the_users_own_shells_with_name_and_state(sim_factory: SimFactory) -> None:
    now = [1_800_000_000.0]
    scenario = Scenario.from_dict(two_users())
    sim = Simulator(scenario, host="127.0.0.1", tls=False, clock=lambda: now[0])
    sim.start()
    try:
        mine = [named_pool(sim, "mailflow-exporter/host/1/abc"), named_pool(sim, None)]
        theirs = named_pool(sim, "theirs", OTHER_USER, OTHER_PASSWORD)
        now[0] += 300
        shells = enumerate_shells(wsman_for(sim))
        assert [s["ShellId"] for s in shells] == [p.shell.id for p in mine]
        assert [s["Name"] for s in shells] == ["mailflow-exporter/host/1/abc", "Runspace1"]
        assert {s["State"] for s in shells} == {"Connected"}
        assert {s["Owner"] for s in shells} == {USER}
        assert {s["ResourceUri"] for s in shells} == {EXCHANGE_URI}
        assert {s["ShellRunTime"] for s in shells} == {"P0DT0H5M0S"}
        assert {s["ShellInactivity"] for s in shells} == {"P0DT0H5M0S"}
        # one item per Enumerate/Pull, and enumeration without OptimizeEnumeration (all pulled): same list
        assert enumerate_shells(wsman_for(sim), max_elements=1) == shells
        assert enumerate_shells(wsman_for(sim), max_elements=None) == shells
        assert [s["Name"] for s in enumerate_shells(wsman_for(sim, OTHER_USER, OTHER_PASSWORD))] == ["theirs"]
        with pytest.raises(WSManFaultError) as info:  # and nobody deletes another user's shell
            delete(wsman_for(sim, OTHER_USER, OTHER_PASSWORD), str(mine[0].shell.id))
        assert "Access is denied" in str(info.value)
        for pool in [*mine, theirs]:
            pool.close()
    finally:
        sim.stop()


def test_enumerate_is_only_served_on_the_shell_uri_without_filter(sim: Any) -> None:
    simulator, _ = sim
    wsman = wsman_for(simulator)
    request = ET.Element(f"{{{WSEN}}}Enumerate")
    with pytest.raises(WSManFaultError) as info:  # MS-WSMV note <114>
        wsman.enumerate(EXCHANGE_URI, request)
    assert info.value.code == 2150858771
    filtered = ET.Element(f"{{{WSEN}}}Enumerate")
    ET.SubElement(filtered, f"{{{WSM}}}Filter", Dialect="http://schemas.dmtf.org/wbem/wsman/1/wsman/SelectorFilter")
    with pytest.raises(WSManFaultError) as info:
        wsman.enumerate(SHELL_URI, filtered)
    assert "Filtering is not supported" in str(info.value)
    pull = ET.Element(f"{{{WSEN}}}Pull")
    ET.SubElement(pull, f"{{{WSEN}}}EnumerationContext").text = "uuid:00000000-0000-0000-0000-000000000000"
    with pytest.raises(WSManFaultError) as info:
        wsman.pull(SHELL_URI, pull)
    assert "enumeration context is not valid" in str(info.value)


def test_vanished_clients_use_up_the_limit_and_only_a_delete_frees_it(sim_factory: SimFactory) -> None:
    sim, _ = sim_factory(small_org(("EX01",), session_limit=3))
    vanished = [named_pool(sim, f"crashed-{i}") for i in range(3)]  # never closed: their client is gone
    with pytest.raises(WSManFaultError) as info:
        raw_pool(sim).open()
    assert "exceeded the maximum number of connections" in str(info.value)
    assert sim.stats()["servers"]["EX01"]["shells_rejected"] == 1
    newcomer = wsman_for(sim)  # another client (its own wsmv:SessionId), the same user
    listed = enumerate_shells(newcomer)
    assert [s["Name"] for s in listed] == ["crashed-0", "crashed-1", "crashed-2"]
    assert {s["State"] for s in listed} == {"Connected"}  # idle, not disconnected (MS-WSMV 3.1.6.5)
    pools = RunspacePool.get_runspace_pools(newcomer)
    pools[0].shell.resource_uri = EXCHANGE_URI
    with pytest.raises(WSManFaultError) as info:  # held by a client: no Connect (MS-WSMV 3.1.4.17)
        pools[0].connect()
    assert info.value.code == IN_USE
    selectors = SelectorSet()
    selectors.add_option("ShellId", str(vanished[0].shell.id))
    with pytest.raises(WSManFaultError) as info:  # nor Reconnect from another client (3.1.4.16)
        newcomer.reconnect(EXCHANGE_URI, selector_set=selectors)
    assert info.value.code == IN_USE
    delete(newcomer, str(vanished[0].shell.id))  # Delete forcibly closes it (3.1.4.4.1)
    assert sim.stats()["servers"]["EX01"]["shells_open"] == 2
    fresh = raw_pool(sim)
    fresh.open()
    fresh.close()
    with pytest.raises(WSManFaultError) as info:  # the deleted shell is gone for its old client too
        PowerShell(vanished[0]).add_cmdlet("Get-Queue").invoke()
    assert info.value.code == 2150858843
    for pool in vanished[1:]:
        pool.close()


def test_a_disconnected_shell_can_be_connected_from_a_new_client_and_closed(sim_factory: SimFactory) -> None:
    sim, _ = sim_factory(small_org(("EX01",)))
    pool = named_pool(sim, "to-be-disconnected")
    PowerShell(pool).add_cmdlet("Get-Queue").invoke()
    pool.disconnect()
    newcomer = wsman_for(sim)
    assert [s["State"] for s in enumerate_shells(newcomer)] == ["Disconnected"]
    selectors = SelectorSet()
    selectors.add_option("ShellId", str(pool.shell.id))
    with pytest.raises(WSManFaultError):  # only Disconnect, Reconnect, Connect, Delete (3.1.4.1.31.7)
        newcomer.get(EXCHANGE_URI, selector_set=selectors)
    [found] = RunspacePool.get_runspace_pools(newcomer)
    with pytest.raises(WSManFaultError) as info:  # pypsrp's pools name Microsoft.PowerShell: not this endpoint's
        found.connect()
    assert info.value.code == 2150858811
    bad = ET.Element(f"{{{NAMESPACES['rsp']}}}Connect")
    ET.SubElement(bad, "connectXml", xmlns="http://schemas.microsoft.com/powershell").text = "bm90IHBzcnA="
    options = OptionSet()
    options.add_option("protocolversion", "2.3", {"MustComply": "true"})
    with pytest.raises(WSManFaultError):  # connectXml that is no SESSION_CAPABILITY + CONNECT_RUNSPACEPOOL
        newcomer.connect(EXCHANGE_URI, bad, options, selectors)
    [found] = RunspacePool.get_runspace_pools(newcomer)
    found.shell.resource_uri = EXCHANGE_URI
    found.connect()  # the failed attempt left the shell Disconnected and usable
    assert [s["State"] for s in enumerate_shells(newcomer)] == ["Connected"]
    output = PowerShell(found).add_cmdlet("Get-Queue").invoke()
    assert len(output) == 4
    found.close()
    assert sim.stats()["servers"]["EX01"]["shells_open"] == 0


def test_the_client_that_disconnected_can_reconnect(sim_factory: SimFactory) -> None:
    sim, _ = sim_factory(small_org(("EX01",)))
    pool = named_pool(sim, "reconnects")
    pool.disconnect()
    pool.connect()  # pypsrp: the same client (wsmv:SessionId) sends Reconnect
    assert len(PowerShell(pool).add_cmdlet("Get-Queue").invoke()) == 4
    selectors = SelectorSet()
    selectors.add_option("ShellId", str(pool.shell.id))
    pool.connection.reconnect(EXCHANGE_URI, selector_set=selectors)  # Connected, same client: ignored
    pool.close()
