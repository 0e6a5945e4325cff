"""The simulator's Test-Mailflow and its probe mail, through the real client (pypsrp) and the real demo
MX (aiosmtpd, smtplib): parameter sets, output shape, warnings and errors as Exchange gives them, and
mail accepted by the demo MX arriving in the simulated tracking log under its own Message-ID."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from pypsrp.powershell import RunspacePool

from exporter.netsim.demo_net import DemoNet
from exporter.simulator import Scenario, Simulator
from exporter.simulator.probe_mail import RESOURCES, UNRELAYED
from tests.integration.conftest import raw_pool, run_cmdlets, small_org

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def org(**changes: Any) -> dict[str, Any]:
    data = small_org(("EX01", "EX02", "EX03"))
    for server in data["servers"]:
        server["fqdn"] = f"{server['name'].lower()}.contoso.sim"
        server["tracking"] = {"messages_per_minute": 2, "history_minutes": 5}
    data["servers"][2]["server_role"] = ["Edge"]  # no Mailbox role: Test-Mailflow refuses it
    data["databases"] = [
        {"name": "DB01", "copies": [{"server": "EX01", "status": "Mounted"}, {"server": "EX02", "status": "Healthy"}]},
    ]
    data.update(changes)
    return data


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator(Scenario.from_dict(org()), host="127.0.0.1", tls=False)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def pool(sim: Simulator) -> Iterator[RunspacePool]:
    with raw_pool(sim, "EX01") as p:
        yield p


def test_test_mailflow_output_shape(pool: RunspacePool) -> None:
    started = time.monotonic()
    ps = run_cmdlets(pool, ("Test-Mailflow", {"Identity": "EX01", "TargetMailboxServer": "EX01"}))
    took = time.monotonic() - started
    assert not ps.had_errors and not ps.streams.warning
    (out,) = ps.output
    assert out.types[:2] == [
        "Microsoft.Exchange.Monitoring.TestMailflowOutput",
        "Microsoft.Exchange.Data.ConfigurableObject",
    ]
    props = out.adapted_properties
    assert props["TestMailflowResult"] == "Success" and props["IsRemoteTest"] is True
    latency = props["MessageLatencyTime"]  # an EnhancedTimeSpan at depth 1: its ToString
    hours, minutes, seconds = str(latency).split(":")
    assert hours == "00" and minutes == "00" and 0.8 <= float(seconds) < 4.0
    assert took >= float(seconds)  # the cmdlet waits for the delivery receipt like Exchange


def test_test_mailflow_local_test_is_not_remote(pool: RunspacePool) -> None:
    ps = run_cmdlets(pool, ("Test-Mailflow", {}))
    (out,) = ps.output
    assert out.adapted_properties["IsRemoteTest"] is False and out.adapted_properties["TestMailflowResult"] == "Success"


def test_test_mailflow_parameter_sets_and_errors(pool: RunspacePool) -> None:
    ps = run_cmdlets(pool, ("Test-Mailflow", {"TargetMailboxServer": "EX02", "TargetDatabase": "DB01"}))
    (error,) = ps.streams.error
    assert str(error) == "Parameter set cannot be resolved using the specified named parameters."
    assert error.fq_error.startswith("AmbiguousParameterSet,")

    ps = run_cmdlets(pool, ("Test-Mailflow", {"Identity": "EX03"}))
    (error,) = ps.streams.error
    assert not ps.output and "can only be performed on a Mailbox server" in str(error)

    ps = run_cmdlets(pool, ("Test-Mailflow", {"Identity": "EX09"}))
    assert not ps.output and "couldn't be found" in str(ps.streams.error[0])

    ps = run_cmdlets(pool, ("Test-Mailflow", {"ExecutionTimeout": "soon"}))
    assert "Cannot process argument transformation on parameter 'ExecutionTimeout'" in str(ps.streams.error[0])


def test_a_server_without_databases_warns_and_returns_nothing(pool: RunspacePool) -> None:
    ps = run_cmdlets(pool, ("Test-Mailflow", {"Identity": "EX01", "TargetMailboxServer": "EX02"}))
    assert not ps.output and not ps.had_errors  # DB01 is active on EX01: EX02 holds no active database
    assert [w.message for w in ps.streams.warning] == [
        "Server EX02 doesn't have any mailbox databases. The mail flow test was skipped."
    ]


def test_a_blocked_path_fails_after_the_execution_timeout(sim: Simulator, pool: RunspacePool) -> None:
    sim.faults.set("EX01", "back_pressure", level="High")
    started = time.monotonic()
    ps = run_cmdlets(pool, ("Test-Mailflow", {"ExecutionTimeout": 3}))
    assert time.monotonic() - started >= 3
    (out,) = ps.output
    assert out.adapted_properties["TestMailflowResult"] == "*FAILURE*"
    assert str(out.adapted_properties["MessageLatencyTime"]) == "00:00:00"


def test_an_address_outside_the_organisation_never_returns_a_receipt(pool: RunspacePool) -> None:
    ps = run_cmdlets(pool, ("Test-Mailflow", {"TargetEmailAddress": "someone@fabrikam.example", "ExecutionTimeout": 2}))
    assert ps.output[0].adapted_properties["TestMailflowResult"] == "*FAILURE*"


# ---------------------------------------------------------------- mail through the demo MX


def _send(net: DemoNet, recipient: str, message_id: str) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Message-ID"] = "probe@outside.example", recipient, "probe", message_id
    msg.set_content("probe\n")
    with smtplib.SMTP(net.host, net.smtp_port, timeout=10) as smtp:
        smtp.starttls()
        smtp.send_message(msg)


def _events(pool: RunspacePool, server: str, message_id: str) -> list[tuple[str, str]]:
    ps = run_cmdlets(pool, ("Get-MessageTrackingLog", {"Server": server, "MessageId": message_id}))
    assert not ps.had_errors
    return [(str(o.adapted_properties["EventId"]), str(o.adapted_properties["Source"])) for o in ps.output]


def test_mail_accepted_by_the_demo_mx_is_received_then_delivered(sim: Simulator, pool: RunspacePool) -> None:
    with DemoNet(sink=sim.smtp_sink()) as net:
        _send(net, "probe@contoso.sim", "<probe-1@outside.example>")
    assert _events(pool, "EX01", "<probe-1@outside.example>") == [("RECEIVE", "SMTP")]
    assert _events(pool, "EX02", "<probe-1@outside.example>") == []
    deadline = time.monotonic() + 10
    while ("DELIVER", "STOREDRIVER") not in _events(pool, "EX01", "probe-1@outside.example"):
        assert time.monotonic() < deadline, "no DELIVER within 10 s"
        time.sleep(0.5)


def test_the_demo_mx_refuses_as_the_organisation_would(sim: Simulator, pool: RunspacePool) -> None:
    with DemoNet(sink=sim.smtp_sink()) as net:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            _send(net, "someone@fabrikam.example", "<probe-2@outside.example>")
        assert refused.value.recipients["someone@fabrikam.example"] == (550, UNRELAYED[4:].encode())
        sim.faults.set("EX01", "back_pressure", level="Medium")
        with pytest.raises(smtplib.SMTPSenderRefused) as sender:
            _send(net, "probe@contoso.sim", "<probe-3@outside.example>")
        assert sender.value.smtp_code == 452 and sender.value.smtp_error == RESOURCES[4:].encode()
        sim.faults.clear()
        for server in ("EX01", "EX02"):
            sim.faults.set(server, "down")
        with pytest.raises(smtplib.SMTPConnectError) as greeting:  # no transport server to take the session
            _send(net, "probe@contoso.sim", "<probe-4@outside.example>")
        assert greeting.value.smtp_code == 421
    for server in ("EX01", "EX02"):
        sim.faults.clear(server)
    assert _events(pool, "EX01", "<probe-3@outside.example>") == []


def test_a_stopped_delivery_service_leaves_the_probe_received_only(sim: Simulator, pool: RunspacePool) -> None:
    data = org()
    data["servers"][0]["service_health"] = {"Mailbox Server Role": {"not_running": ["MSExchangeDelivery"]}}
    sim.set_scenario(Scenario.from_dict(data))
    with DemoNet(sink=sim.smtp_sink()) as net:
        _send(net, "probe@contoso.sim", "<probe-5@outside.example>")
    time.sleep(3.5)  # longer than any simulated delivery takes
    assert _events(pool, "EX01", "<probe-5@outside.example>") == [("RECEIVE", "SMTP")]
