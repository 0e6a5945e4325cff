"""The simulator's hostile-server faults through real pypsrp and raw sockets: ``drip`` (a byte at a time)
and ``oversize`` (runaway output, one huge object, one response ignoring MaxEnvelopeSize)."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from typing import Any

import pytest

from exporter.simulator import Scenario, Simulator
from tests.integration.conftest import SimFactory, raw_pool, run_cmdlets, small_org

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MB = 1_000_000


def test_oversize_repeats_the_output_until_the_size(sim: tuple[Simulator, Scenario]) -> None:
    simulator, _ = sim
    pool = raw_pool(simulator)
    pool.open()
    normal = len(run_cmdlets(pool, ("Get-Queue", {"Server": "EX01"})).output)
    simulator.faults.set("EX01", "oversize", cmdlet="Get-Queue", megabytes=2)
    before = simulator.stats()["servers"]["EX01"]["output_bytes_sent"]
    ps = run_cmdlets(pool, ("Get-Queue", {"Server": "EX01"}))
    assert len(ps.output) > 100 * normal
    assert [o.adapted_properties["Identity"] for o in ps.output[: 2 * normal]] == [
        o.adapted_properties["Identity"] for o in ps.output[:normal] * 2
    ]  # the real objects, then the same again
    assert simulator.stats()["servers"]["EX01"]["output_bytes_sent"] - before >= 2 * MB
    assert len(run_cmdlets(pool, ("Get-ReceiveConnector", {})).output) < 20  # other cmdlets unchanged
    pool.close()


def test_oversize_single_and_one_response(sim: tuple[Simulator, Scenario]) -> None:
    simulator, _ = sim
    pool = raw_pool(simulator)
    sizes: list[int] = []
    pool.connection.transport.session = pool.connection.transport._build_session()
    pool.connection.transport.session.hooks["response"].append(lambda r, *a, **k: sizes.append(len(r.content)))
    pool.open()
    simulator.faults.set("EX01", "oversize", cmdlet="Get-Queue", megabytes=1, message="single")
    ps = run_cmdlets(pool, ("Get-Queue", {}))
    assert [len(o) for o in ps.output] == [MB]
    simulator.faults.set("EX01", "oversize", cmdlet="Get-Queue", megabytes=2, message="one_response")
    sizes.clear()
    ps = run_cmdlets(pool, ("Get-Queue", {}))
    assert len(ps.output) > 100
    assert max(sizes) > 2 * MB  # one HTTP response far over pypsrp's MaxEnvelopeSize (153,600)
    pool.close()


def test_drip_sends_every_byte_and_counts_a_client_that_gives_up(sim_factory: SimFactory) -> None:
    simulator, _ = sim_factory(small_org(("EX01",)))
    pool = raw_pool(simulator)
    pool.open()
    simulator.faults.set("EX01", "drip", cmdlet="Get-Queue", seconds=0.0005)
    ps = run_cmdlets(pool, ("Get-Queue", {}))
    assert len(ps.output) == 4  # slowly, but whole
    pool.close()
    simulator.faults.set("EX01", "drip", seconds=0.2)  # every response of the endpoint
    host, port = simulator.endpoint("EX01")
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(b"GET /PowerShell HTTP/1.1\r\nHost: ex01\r\n\r\n")
        first = conn.recv(1)
        assert first == b"H"  # the status line starts, a byte at a time
    deadline = time.monotonic() + 10
    while simulator.stats()["responses_cut"] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert simulator.stats()["servers"]["EX01"]["responses_cut"] == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "oversize", "cmdlet": "Get-Queue"}, "needs megabytes > 0"),
        ({"kind": "oversize", "megabytes": 5000}, "needs megabytes > 0 and <= 4096"),
        ({"kind": "oversize", "megabytes": 1, "message": "huge"}, "must be one of single, one_response"),
        ({"kind": "hang", "megabytes": 1}, "takes no megabytes"),
        ({"kind": "drip"}, "needs seconds >= 0"),
        ({"kind": "drip", "seconds": 0}, "needs seconds > 0"),
    ],
)
def test_hostile_fault_parameters_are_validated(
    sim: tuple[Simulator, Scenario], kwargs: dict[str, Any], message: str
) -> None:
    simulator, _ = sim
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        simulator.faults.set("EX01", **kwargs)


def test_the_control_api_takes_megabytes() -> None:
    scenario = Scenario.from_dict(small_org(("EX01",)))
    simulator = Simulator(scenario, host="127.0.0.1", control_port=0)
    simulator.start()
    try:
        url = f"{simulator.control_url}/sim/faults"
        body = json.dumps({"server": "EX01", "kind": "oversize", "cmdlet": "Get-Queue", "megabytes": 3}).encode()
        request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            active = json.loads(resp.read())
        assert [(f["kind"], f["megabytes"]) for f in active] == [("oversize", 3.0)]
    finally:
        simulator.stop()
