"""The Exchange simulator through the real pypsrp client over real sockets.

Nothing of the simulator is mocked: every test talks WSMan/PSRP to a listening endpoint.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError
from pypsrp.powershell import PowerShell, PSInvocationState, RunspacePool
from pypsrp.wsman import WSMan

from exporter.simulator import (
    Scenario,
    ScenarioError,
    Simulator,
    build_scenario,
    demo_scenario_path,
    load_scenario,
)
from exporter.simulator.timeline import Timeline, snapshot_queue
from tests.fixtures.captures import E19
from tests.integration.conftest import run_cmdlets as invoke

pytestmark = pytest.mark.integration

USER = "svc-mailflow@contoso.sim"
PASSWORD = "S1mulated-Password"
LIMIT_USER = "svc-limits@contoso.sim"
CAPTURES = E19
RECEIVE_CONNECTORS = CAPTURES / "GetReceiveConnector.xml"
QUEUE_TYPES = [
    "Microsoft.Exchange.Data.QueueViewer.PropertyBagBasedQueueInfo",
    "Microsoft.Exchange.Data.QueueViewer.ExtensibleQueueInfo",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object",
]
DNS_ERROR = "451 4.4.0 DNS query failed. The error was: SMTPSEND.DNS.NonExistentDomain; nonexistent domain"


def _scenario() -> Scenario:
    return Scenario.from_dict(
        {
            "organisation": {"name": "Contoso", "domain": "contoso.sim", "timezone_offset_minutes": 120},
            "users": {USER: PASSWORD, LIMIT_USER: PASSWORD},
            "result_size_default": 5,
            "servers": [
                {
                    "name": "EX01",
                    "queues": [
                        {"kind": "submission", "message_count": 7, "outgoing_rate": 2.0},
                        {
                            "kind": "delivery",
                            "row_id": 3,
                            "next_hop_domain": "fabrikam.example",
                            "status": "Retry",
                            "message_count": 12,
                            "retry_count": 4,
                            "last_error": DNS_ERROR,
                            "next_hop_connector": "137c0a63-cbc7-4261-b49b-b4850e63593b",
                        },
                        {
                            "kind": "delivery",
                            "row_id": 4,
                            "next_hop_domain": "mailbox database 0471695037",
                            "delivery_type": "SmtpDeliveryToMailbox",
                            "message_count": 42,
                        },
                        {"kind": "shadow", "row_id": 12, "primary_server": "EX02", "message_count": 5},
                        {"kind": "poison", "message_count": 0},
                        *[
                            {"kind": "delivery", "next_hop_domain": f"d{i}.example", "message_count": i}
                            for i in range(6)
                        ],
                    ],
                },
                {"name": "EX02", "queues": [{"kind": "poison", "message_count": 1}]},
            ],
            "replays": {"Get-ReceiveConnector": str(RECEIVE_CONNECTORS)},
        }
    )


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    simulator = Simulator(_scenario())
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture(autouse=True)
def _heal(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "sim" in request.fixturenames:
        request.getfixturevalue("sim").faults.clear()


def connect(
    sim: Simulator,
    server: str = "EX01",
    user: str = USER,
    password: str = PASSWORD,
    read_timeout: int = 10,
    operation_timeout: int = 5,
) -> WSMan:
    host, port = sim.endpoint(server)
    return WSMan(
        host,
        port=port,
        ssl=sim.tls,
        path="PowerShell",
        auth="basic",
        username=user,
        password=password,
        encryption="never" if not sim.tls else "auto",
        cert_validation=sim.ca_file or False,
        read_timeout=read_timeout,
        connection_timeout=5,
        operation_timeout=operation_timeout,
    )


def open_pool(sim: Simulator, server: str = "EX01", **kwargs: Any) -> RunspacePool:
    pool = RunspacePool(connect(sim, server, **kwargs), configuration_name="Microsoft.Exchange")
    pool.open()
    return pool


@pytest.fixture
def pool(sim: Simulator) -> Iterator[RunspacePool]:
    p = open_pool(sim)
    yield p
    with contextlib.suppress(Exception):  # a test may have expired or refused it
        p.close()


# ----------------------------------------------------------------------------------------------
# Sessions and wire shapes
# ----------------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_pool_open_close_counts_shells(sim: Simulator) -> None:
    before = sim.stats()
    p = open_pool(sim, "EX02")
    during = sim.stats()
    assert during["servers"]["EX02"]["shells_open"] == before["servers"]["EX02"]["shells_open"] + 1
    assert during["shells_created"] == before["shells_created"] + 1
    p.close()
    after = sim.stats()
    assert after["servers"]["EX02"]["shells_open"] == before["servers"]["EX02"]["shells_open"]
    assert after["shells_closed"] == before["shells_closed"] + 1


@pytest.mark.timeout(30)
def test_get_queue_wire_shapes(pool: RunspacePool) -> None:
    ps = invoke(pool, ("Get-Queue", {"Server": "EX01", "ResultSize": "Unlimited"}))
    assert not ps.streams.error and not ps.streams.warning and not ps.had_errors
    by_id = {str(o): o for o in ps.output}
    assert {"EX01\\Submission", "EX01\\3", "EX01\\4", "EX01\\Shadow\\12"} <= set(by_id)
    assert "EX01\\Poison" not in by_id  # listed only when it holds messages
    retry = by_id["EX01\\3"]
    assert retry.types == QUEUE_TYPES
    props = retry.adapted_properties
    # Remoting depth 1: enums and value types are their ToString; Identity and QueueIdentity (one
    # object) are written twice as text, since an object written as a string gets no RefId.
    assert props["Status"] == "Retry" and props["DeliveryType"] == "DnsConnectorDelivery"
    assert props["NextHopCategory"] == "External" and props["RiskLevel"] == "Normal"
    assert props["Identity"] == props["QueueIdentity"] == "EX01\\3"
    assert props["NextHopDomain"] == "fabrikam.example" and props["LastError"] == DNS_ERROR
    assert props["MessageCount"] == 12 and props["RetryCount"] >= 4
    assert props["MessageCountsPerPriority"] == [0, 12, 0, 0]
    assert props["PriorityDescriptions"] == ["High", "Normal", "Low", "None"]
    assert str(props["NextHopConnector"]) == "137c0a63-cbc7-4261-b49b-b4850e63593b"
    for name in ("FirstRetryTime", "LastRetryTime", "NextRetryTime"):
        assert props[name].endswith("+02:00"), props[name]  # DT with the server's UTC offset
    assert props["LastRetryTime"] < props["NextRetryTime"]
    assert isinstance(props["IncomingRate"], float) and isinstance(props["Velocity"], float)
    assert "SerializationData" in retry.extended_properties
    submission = by_id["EX01\\Submission"].adapted_properties
    assert submission["NextHopDomain"] == "Submission" and str(submission["DeliveryType"]) == "Undefined"
    assert submission["NextRetryTime"] is None and str(submission["Status"]) == "Ready"
    mailbox = by_id["EX01\\4"].adapted_properties
    assert str(mailbox["DeliveryType"]) == "SmtpDeliveryToMailbox"
    assert mailbox["NextHopDomain"] == "mailbox database 0471695037"
    assert str(mailbox["NextHopCategory"]) == "Internal" and str(mailbox["Status"]) == "Active"
    shadow = by_id["EX01\\Shadow\\12"].adapted_properties
    assert str(shadow["DeliveryType"]) == "ShadowRedundancy" and shadow["NextHopDomain"] == "ex02.contoso.sim"


@pytest.mark.timeout(30)
def test_get_queue_across_servers_and_identity(pool: RunspacePool) -> None:
    ps = invoke(pool, ("Get-Queue", {"Server": "EX02"}))
    assert [str(o) for o in ps.output] == ["EX02\\Poison"]
    assert ps.output[0].adapted_properties["NextHopDomain"] == "Poison Message"
    ps = invoke(pool, ("Get-Queue", {"Identity": "EX01\\3"}))
    assert [str(o) for o in ps.output] == ["EX01\\3"]
    ps = invoke(pool, ("Get-Queue", {"Server": "EX77"}))
    assert not ps.output and not ps.had_errors
    error = ps.streams.error[0]
    assert "The operation couldn't be performed because object 'EX77' couldn't be found on" in str(error)
    assert "ManagementObjectNotFoundException" in error.fq_error


@pytest.mark.timeout(30)
def test_result_size_default_and_warning(pool: RunspacePool) -> None:
    ps = invoke(pool, ("Get-Queue", {"Server": "EX01"}))
    assert len(ps.output) == 5  # the scenario's default ResultSize
    assert [w.message for w in ps.streams.warning] == [
        "There are more results available than are currently displayed. To view them, increase the value of "
        "the ResultSize parameter."
    ]
    ps = invoke(pool, ("Get-Queue", {"Server": "EX01", "ResultSize": 2}))
    assert len(ps.output) == 2 and len(ps.streams.warning) == 1
    ps = invoke(pool, ("Get-Queue", {"Server": "EX01", "ResultSize": "Unlimited"}))
    assert len(ps.output) == 10 and not ps.streams.warning


@pytest.mark.timeout(30)
def test_get_queue_filter(pool: RunspacePool) -> None:
    ps = invoke(pool, ("Get-Queue", {"Server": "EX01", "Filter": "MessageCount -gt 10 -and Status -eq 'Retry'"}))
    assert [str(o) for o in ps.output] == ["EX01\\3"]
    ps = invoke(pool, ("Get-Queue", {"Filter": "NextHopDomain -like 'mailbox*'", "ResultSize": "Unlimited"}))
    assert [str(o) for o in ps.output] == ["EX01\\4"]
    ps = invoke(pool, ("Get-Queue", {"Filter": "MessageCount -gt 1 -or Status -eq 'Retry'"}))
    assert ps.had_errors and "Invalid filter syntax" in str(ps.streams.error[0])


@pytest.mark.timeout(30)
def test_select_object_pipeline(pool: RunspacePool) -> None:
    ps = invoke(
        pool,
        ("Get-Queue", {"Identity": "EX01\\3"}),
        ("Select-Object", {"Property": ["Identity", "MessageCount", "Status"]}),
    )
    (obj,) = ps.output
    assert obj.types == [
        "Selected.Microsoft.Exchange.Data.QueueViewer.PropertyBagBasedQueueInfo",
        "System.Management.Automation.PSCustomObject",
        "System.Object",
    ]
    assert obj.to_string is None  # a property bag carries no ToString on the wire
    notes = obj.extended_properties
    assert notes["MessageCount"] == 12
    # Select-Object's notes are written at depth 1 (they do not use up a level): full objects again
    assert str(notes["Status"]) == "Retry" and notes["Status"].property_sets == [3]
    assert notes["Status"].types[:2] == ["Microsoft.Exchange.Data.QueueViewer.QueueStatus", "System.Enum"]
    assert str(notes["Identity"]) == "EX01\\3" and notes["Identity"].adapted_properties["Server"] == "EX01"
    assert notes["Identity"].types[0] == "Microsoft.Exchange.Data.QueueViewer.QueueIdentity"
    assert notes["Identity"].adapted_properties["Type"] == "Delivery"  # its own enum: depth 0 inside
    ps = invoke(pool, ("Get-ExchangeServer", {}), ("Select-Object", {"ExpandProperty": "Fqdn", "First": 1}))
    assert ps.output == ["ex01.contoso.sim"]


@pytest.mark.timeout(30)
def test_get_exchange_server_and_transport_service(pool: RunspacePool) -> None:
    ps = invoke(pool, ("Get-ExchangeServer", {}))
    assert [str(o) for o in ps.output] == ["EX01", "EX02"]
    ex01 = ps.output[0]
    assert ex01.types[0] == "Microsoft.Exchange.Data.Directory.Management.ExchangeServer"
    props = ex01.adapted_properties
    assert props["Fqdn"] == "ex01.contoso.sim" and props["IsHubTransportServer"] is True
    assert props["IsEdgeServer"] is False and props["IsMailboxServer"] is True
    # remoting depth: value types and enums are their ToString, lists stay lists of their items' text
    assert props["AdminDisplayVersion"] == "Version 15.2 (Build 1544.4)" and props["ServerRole"] == "Mailbox"
    assert props["Site"] == "contoso.sim/Configuration/Sites/Default-First-Site-Name"
    assert props["Identity"] == props["Id"] == "EX01"
    assert "<LST>" in props["ObjectClass"].property_sets[0]  # MVPs stay undecoded, as with real Exchange
    ps = invoke(pool, ("Get-ExchangeServer", {"Identity": "ex0*"}))
    assert len(ps.output) == 2
    ps = invoke(pool, ("Get-ExchangeServer", {"Identity": "EX09"}))
    assert not ps.output and "couldn't be found on 'DC01.contoso.sim'" in str(ps.streams.error[0])
    ps = invoke(pool, ("Get-TransportService", {"Identity": "EX02"}))
    (transport,) = ps.output
    assert transport.types[0] == "Microsoft.Exchange.Data.Directory.SystemConfiguration.TransportServer"
    assert transport.adapted_properties["MessageTrackingLogEnabled"] is True
    assert "MessageTracking" in transport.adapted_properties["MessageTrackingLogPath"]


# ----------------------------------------------------------------------------------------------
# Runspace constraints
# ----------------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_unknown_cmdlet_parameter_and_script(pool: RunspacePool) -> None:
    ps = invoke(pool, ("Get-Foo", {}))
    assert ps.had_errors and not ps.output
    (error,) = ps.streams.error
    assert str(error).startswith("The term 'Get-Foo' is not recognized as the name of a cmdlet, function, script")
    assert error.fq_error == "CommandNotFoundException"
    assert error.exception.types[0] == "System.Management.Automation.CommandNotFoundException"

    ps = invoke(pool, ("Get-Queue", {"Bogus": 1}))
    (error,) = ps.streams.error
    assert str(error) == "A parameter cannot be found that matches parameter name 'Bogus'."
    assert error.fq_error.startswith("NamedParameterNotFound,")

    ps = PowerShell(pool)
    ps.add_script("Get-Queue | Where-Object { $_.MessageCount -gt 0 }")
    ps.invoke()
    (error,) = ps.streams.error
    assert str(error) == (
        "The syntax is not supported by this runspace. This can occur if the runspace is in no-language mode."
    )
    assert error.fq_error == "ScriptsNotAllowed" and error.reason == "ParseException"

    ps = invoke(pool, ("Get-Queue", {"Res": "Unlimited", "Serv": "EX01"}))  # unique prefixes bind
    assert len(ps.output) == 10


@pytest.mark.timeout(30)
def test_async_invoke_poll_and_stop(sim: Simulator, pool: RunspacePool) -> None:
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-Queue").add_parameter("ResultSize", "Unlimited")
    ps.begin_invoke()
    while ps.state == PSInvocationState.RUNNING:
        ps.poll_invoke()
    assert len(ps.end_invoke()) == 10

    sim.faults.set("EX01", "cmdlet_latency", cmdlet="Get-ExchangeServer", seconds=10)
    slow = PowerShell(pool)
    slow.add_cmdlet("Get-ExchangeServer")
    slow.begin_invoke()
    started = time.monotonic()
    slow.stop()
    assert slow.state == PSInvocationState.STOPPED and time.monotonic() - started < 5
    # the pool is still usable afterwards
    assert len(invoke(pool, ("Get-Queue", {"Identity": "EX01\\3"})).output) == 1


@pytest.mark.timeout(30)
def test_session_limit(sim: Simulator) -> None:
    pools = [open_pool(sim, user=LIMIT_USER) for _ in range(18)]
    try:
        with pytest.raises(WSManFaultError) as info:
            open_pool(sim, user=LIMIT_USER)
        assert (
            "Fail to create a runspace because you have exceeded the maximum number of connections "
            "allowed : 18 "
            "for the policy party : MaxConcurrency. Please close existing runspace and try again later."
        ) in str(info.value)
        other = open_pool(sim, "EX02", user=LIMIT_USER)  # the limit is per endpoint
        other.close()
        pools.pop().close()
        pools.append(open_pool(sim, user=LIMIT_USER))  # closing one frees a slot
        assert sim.stats()["shells_rejected"] >= 1
    finally:
        for p in pools:
            p.close()


@pytest.mark.timeout(30)
def test_idle_shells_expire_with_the_scenario_clock() -> None:
    data = _scenario()
    clock = [1_800_000_000.0]
    scenario = Scenario(data.organisation, data.servers, data.users, session_limit=1, shell_idle_timeout_seconds=600)
    with Simulator(scenario, clock=lambda: clock[0]) as local:
        leaked = open_pool(local)  # a client that never closes its pool
        with pytest.raises(WSManFaultError):
            open_pool(local)
        clock[0] += 601
        fresh = open_pool(local)  # the idle shell was reaped, freeing the slot
        assert local.stats()["shells_expired"] == 1
        with pytest.raises(WSManFaultError) as info:
            invoke(leaked, ("Get-Queue", {}))
        assert info.value.code == 2150858843
        fresh.close()


# ----------------------------------------------------------------------------------------------
# Authentication and TLS
# ----------------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_wrong_password_and_path(sim: Simulator) -> None:
    before = sim.stats()["auth_failures"]
    with pytest.raises(AuthenticationError):
        open_pool(sim, password="not-the-password")
    assert sim.stats()["auth_failures"] == before + 1
    host, port = sim.endpoint("EX01")
    response = requests.post(f"http://{host}:{port}/wsman", data=b"<x/>", timeout=5)
    assert response.status_code == 404
    response = requests.post(f"http://{host}:{port}/PowerShell/", data=b"<x/>", timeout=5)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Basic realm=")


@pytest.mark.timeout(30)
def test_other_resource_uri_is_not_in_catalog(sim: Simulator) -> None:
    p = RunspacePool(connect(sim), configuration_name="Microsoft.PowerShell")
    with pytest.raises(WSManFaultError) as info:
        p.open()
    assert info.value.code == 2150858811
    assert "was not found in the WS-Management catalog" in str(info.value)


@pytest.mark.timeout(30)
def test_https_with_generated_ca() -> None:
    with Simulator(_scenario(), tls=True) as tls_sim:
        assert tls_sim.ca_file and Path(tls_sim.ca_file).exists()
        p = open_pool(tls_sim)
        try:
            assert len(invoke(p, ("Get-ExchangeServer", {})).output) == 2
        finally:
            p.close()
        host, port = tls_sim.endpoint("EX01")
        with pytest.raises(requests.exceptions.SSLError):  # validation is really on
            requests.post(f"https://{host}:{port}/PowerShell", timeout=5, verify=True)
    assert not Path(tls_sim.ca_file).exists()


# ----------------------------------------------------------------------------------------------
# Faults
# ----------------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_fault_latency(sim: Simulator, pool: RunspacePool) -> None:
    sim.faults.set("EX01", "latency", seconds=0.5)
    started = time.monotonic()
    invoke(pool, ("Get-Queue", {"Identity": "EX01\\3"}))
    assert time.monotonic() - started >= 1.0  # at least Command + Receive were delayed
    sim.faults.clear("EX01")
    started = time.monotonic()
    invoke(pool, ("Get-Queue", {"Identity": "EX01\\3"}))
    assert time.monotonic() - started < 1.0  # no longer delayed (the delayed call took >= 1.0 s)


@pytest.mark.timeout(30)
def test_fault_cmdlet_latency(sim: Simulator) -> None:
    p = open_pool(sim, operation_timeout=1, read_timeout=5)  # Receive times out and polls again
    try:
        sim.faults.set("EX01", "cmdlet_latency", cmdlet="Get-Queue", seconds=1.5)
        started = time.monotonic()
        assert len(invoke(p, ("Get-Queue", {"Identity": "EX01\\3"})).output) == 1
        assert time.monotonic() - started >= 1.5
        started = time.monotonic()
        invoke(p, ("Get-ExchangeServer", {}))  # other cmdlets are not delayed
        assert time.monotonic() - started < 1.5  # not delayed: the delayed cmdlet took >= 1.5 s
    finally:
        p.close()


@pytest.mark.timeout(30)
def test_fault_hang_heals_and_does_not_block_shutdown() -> None:
    local = Simulator(_scenario())
    local.start()
    try:
        local.faults.set("EX01", "hang")
        with pytest.raises(requests.exceptions.ReadTimeout):
            open_pool(local, read_timeout=1)
        local.faults.clear("EX01")
        p = open_pool(local, read_timeout=1, operation_timeout=1)
        local.faults.set("EX01", "hang", cmdlet="Get-Queue")
        with pytest.raises(requests.exceptions.ReadTimeout):
            invoke(p, ("Get-Queue", {}))
        assert invoke(open_pool(local), ("Get-ExchangeServer", {})).output  # other cmdlets answer
        # a request still hanging must not block stop()
        blocked = threading.Thread(target=lambda: _swallow(lambda: open_pool(local, "EX02", read_timeout=20)))
        local.faults.set("EX02", "hang")
        blocked.start()
        time.sleep(0.2)
    finally:
        started = time.monotonic()
        local.stop()
    assert time.monotonic() - started < 5
    blocked.join(timeout=5)
    assert not blocked.is_alive()


def _swallow(func: Any) -> None:
    with contextlib.suppress(Exception):
        func()


@pytest.mark.timeout(30)
def test_fault_refused_closes_and_reopens_same_port(sim: Simulator, pool: RunspacePool) -> None:
    port = sim.endpoint("EX01")[1]
    sim.faults.set("EX01", "refused")
    with pytest.raises(requests.exceptions.ConnectionError):
        open_pool(sim)
    with pytest.raises(requests.exceptions.ConnectionError):
        invoke(pool, ("Get-Queue", {}))  # open keep-alive connections are cut too
    assert sim.endpoints()["EX01"]["listening"] is False
    sim.faults.clear("EX01")
    assert sim.endpoint("EX01")[1] == port
    p = open_pool(sim)
    assert invoke(p, ("Get-Queue", {"Identity": "EX01\\3"})).output
    p.close()


@pytest.mark.timeout(30)
def test_fault_http_errors(sim: Simulator, pool: RunspacePool) -> None:
    sim.faults.set("EX01", "http401")
    with pytest.raises(AuthenticationError):
        invoke(pool, ("Get-Queue", {}))
    sim.faults.clear("EX01")
    sim.faults.set("EX01", "http500")
    with pytest.raises(WinRMTransportError) as info:
        invoke(pool, ("Get-Queue", {}))
    assert info.value.code == 500
    sim.faults.clear("EX01")
    assert invoke(pool, ("Get-Queue", {"Identity": "EX01\\3"})).output


@pytest.mark.timeout(30)
def test_fault_wsman_fault(sim: Simulator, pool: RunspacePool) -> None:
    sim.faults.set("EX01", "wsman_fault", cmdlet="Get-Queue", message="The backend refused the call.")
    with pytest.raises(WSManFaultError) as info:
        invoke(pool, ("Get-Queue", {}))
    assert info.value.code == 2150858819 and "The backend refused the call." in str(info.value)
    assert invoke(pool, ("Get-ExchangeServer", {})).output
    sim.faults.clear("EX01")
    assert invoke(pool, ("Get-Queue", {"Identity": "EX01\\3"})).output


@pytest.mark.timeout(30)
def test_fault_error_record(sim: Simulator, pool: RunspacePool) -> None:
    sim.faults.set("EX01", "error_record", cmdlet="Get-Queue", message="Active Directory server DC01 is down.")
    ps = invoke(pool, ("Get-Queue", {}))
    assert not ps.output and not ps.had_errors
    assert [str(e) for e in ps.streams.error] == ["Active Directory server DC01 is down."]
    sim.faults.clear("EX01")
    assert invoke(pool, ("Get-Queue", {"Identity": "EX01\\3"})).output


@pytest.mark.timeout(30)
def test_fault_malformed_clixml(sim: Simulator, pool: RunspacePool) -> None:
    sim.faults.set("EX01", "malformed_clixml", cmdlet="Get-ExchangeServer")
    with pytest.raises(KeyError):  # pypsrp's deserializer cannot resolve the dangling TNRef
        invoke(pool, ("Get-ExchangeServer", {}))
    fresh = open_pool(sim)
    sim.faults.set("EX01", "malformed_clixml", cmdlet="Get-ExchangeServer", message="truncated")
    ps = invoke(fresh, ("Get-ExchangeServer", {}))
    assert all(isinstance(o, str) for o in ps.output)  # pypsrp hands back the unparsable text
    sim.faults.clear("EX01")
    assert str(invoke(fresh, ("Get-ExchangeServer", {})).output[0]) == "EX01"
    fresh.close()


@pytest.mark.timeout(30)
def test_fault_shell_expiry(sim: Simulator) -> None:
    p = open_pool(sim)
    before = sim.stats()["shells_expired"]
    sim.faults.set("EX01", "shell_expiry")
    assert sim.stats()["shells_expired"] > before
    with pytest.raises(WSManFaultError) as info:
        invoke(p, ("Get-Queue", {}))
    assert info.value.code == 2150858843
    assert "the shell was not found on the server" in str(info.value)
    assert not sim.faults.active("EX01")  # one-shot
    assert invoke(open_pool(sim), ("Get-Queue", {"Identity": "EX01\\3"})).output


@pytest.mark.timeout(30)
def test_cross_server_get_queue_sees_a_down_server(sim: Simulator, pool: RunspacePool) -> None:
    sim.faults.set("EX02", "refused")
    ps = invoke(pool, ("Get-Queue", {"Server": "EX02"}))
    assert not ps.output and "Microsoft Exchange Transport service" in str(ps.streams.error[0])


@pytest.mark.timeout(30)
def test_control_api() -> None:
    with Simulator(_scenario(), control_port=0) as local:
        base = local.control_url
        assert base is not None
        with urllib.request.urlopen(f"{base}/sim/endpoints", timeout=5) as response:
            endpoints = json.load(response)["servers"]
        assert endpoints["EX01"]["port"] == local.endpoint("EX01")[1]
        body = json.dumps({"server": "EX01", "kind": "error_record", "cmdlet": "Get-Queue"}).encode()
        request = urllib.request.Request(f"{base}/sim/faults", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.load(response)[0]["kind"] == "error_record"
        p = open_pool(local)
        assert invoke(p, ("Get-Queue", {})).streams.error
        request = urllib.request.Request(f"{base}/sim/faults?server=EX01", method="DELETE")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.load(response) == []
        assert invoke(p, ("Get-Queue", {"Identity": "EX01\\3"})).output
        p.close()
        with urllib.request.urlopen(f"{base}/sim/stats", timeout=5) as response:
            stats = json.load(response)
        assert stats["commands"]["Get-Queue"] == 2 and stats["shells_closed"] == 1


# ----------------------------------------------------------------------------------------------
# Replays and scenarios
# ----------------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_replay_receive_connectors_keeps_flag_enums(pool: RunspacePool) -> None:
    ps = invoke(pool, ("Get-ReceiveConnector", {"Server": "EX01"}))
    assert len(ps.output) == 5 and not ps.streams.error
    first = ps.output[0]
    assert first.types[0] == "Microsoft.Exchange.Data.Directory.SystemConfiguration.ReceiveConnector"
    # the capture cut to remoting depth: the flags enum is its name, the MVP a list of strings
    assert first.adapted_properties["PermissionGroups"] == "ExchangeUsers, ExchangeServers, ExchangeLegacyServers"
    assert all(not str(o.adapted_properties["PermissionGroups"]).isdigit() for o in ps.output)
    assert "<LST>" in first.adapted_properties["Bindings"].property_sets[0]
    assert "PSComputerName" not in first.extended_properties  # added by the client that made the capture
    ps = invoke(pool, ("Get-ReceiveConnector", {}), ("Select-Object", {"Property": ["Identity", "PermissionGroups"]}))
    groups = ps.output[0].extended_properties["PermissionGroups"]  # a note at depth 1: the enum object
    assert len(ps.output) == 5 and str(groups).startswith("Exchange") and groups.property_sets == [14]


def _moving_queue_counts(scenario: Scenario, clock_value: list[float]) -> dict[str, int]:
    timeline = Timeline(scenario.organisation, lambda: clock_value[0])
    return {
        f"{s.name}:{q.identity(s.name)}": snapshot_queue(s, q, timeline).message_count
        for s in scenario.servers
        for q in s.queues
    }


@pytest.mark.timeout(30)
def test_demo_scenario_loads_and_moves_over_time() -> None:
    demo = load_scenario(demo_scenario_path())
    assert [s.name for s in demo.servers] == ["EX01", "EX02", "EX03"]
    assert all(s.version.startswith("Version 15.2 (Build 1544") for s in demo.servers)
    ex01 = demo.server("EX01")
    assert ex01 is not None
    errors = [q.last_error for q in ex01.queues if q.last_error]
    assert any(e.startswith("451 4.4.0 DNS query failed") for e in errors)
    assert any(e.startswith("[{LRT=") and "SocketConnectionRefused" in e for e in errors)

    clock = [1_800_000_000.0]
    with Simulator(demo, clock=lambda: clock[0]) as demo_sim:
        p = open_pool(demo_sim, user="svc-mailflow@contoso.sim", password="Demo-Passw0rd!")
        try:
            first = {str(o): o.adapted_properties for o in invoke(p, ("Get-Queue", {})).output}
            clock[0] += 75  # a wave moves within a quarter period
            second = {str(o): o.adapted_properties for o in invoke(p, ("Get-Queue", {})).output}
            poison = invoke(p, ("Get-Queue", {"Server": "EX02"})).output
        finally:
            p.close()
    assert any(first[k]["MessageCount"] != second[k]["MessageCount"] for k in first)
    lrt = first["EX01\\5"]["LastError"]
    assert lrt.startswith("[{LRT=") and "%LRT%" not in lrt
    assert str(first["EX01\\5"]["Status"]) == "Retry" and first["EX01\\5"]["NextRetryTime"]
    assert any(str(o) == "EX02\\Poison" and o.adapted_properties["MessageCount"] == 1 for o in poison)
    counts = _moving_queue_counts(demo, [1_800_000_000.0])
    assert counts["EX02:EX02\\Poison"] == 1


@pytest.mark.timeout(30)
def test_scenario_validation_and_builder() -> None:
    with pytest.raises(ScenarioError, match="unknown key"):
        Scenario.from_dict({"servers": [{"name": "EX01", "queus": []}]})
    with pytest.raises(ScenarioError, match="next_hop_domain"):
        Scenario.from_dict({"servers": [{"name": "EX01", "queues": [{"kind": "delivery"}]}]})
    with pytest.raises(ScenarioError, match="duplicate"):
        Scenario.from_dict({"servers": [{"name": "EX01"}, {"name": "ex01"}]})
    big = build_scenario(40, 25)
    assert len(big.servers) == 40 and all(len(s.queues) == 25 for s in big.servers)
    assert big.servers[0].name == "EX01" and big.server("ex40") is not None
