"""``trace`` through the real client (pypsrp, the exporter's sessions) against the simulator.

Three Mailbox servers: EX01 and EX02 form a DAG, EX03 is alone in another site. Mailbox submissions
cross servers (cross_server_submission), mail for half the mailboxes is delivered on another server
(remote_mailbox_share: SEND/RECEIVE hops between Transport services), outbound mail goes to the
Internet except for the next hops whose queues are in Retry (small_org's fabrikam.example and
tailspin.example), failures are 5.1.1. The expected verdict of every message comes from the
simulator's own ground truth (``sim.tracking``), independently of the trace's stitching.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.cli import main as cli_main
from exporter.exchange.lasterror import CATEGORY_HINTS
from exporter.simulator import Scenario, Simulator
from exporter.simulator.tracking import TrackedMessage
from exporter.trace.query import TraceQuery, TraceReport
from exporter.trace.run import trace
from tests.integration.conftest import DNS_ERROR, PASSWORD, USER, settings_for, small_org

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
WINDOW = (T0 - 900, T0)
SERVERS = ("EX01", "EX02", "EX03")


def org(roles: list[str] | None = None) -> dict[str, Any]:
    data = small_org(SERVERS)
    for server in data["servers"]:
        server["fqdn"] = f"{server['name'].lower()}.contoso.sim"
        server["site"] = "Branch-Site" if server["name"] == "EX03" else "HQ-Site"
        server["tracking"] = {
            "messages_per_minute": 8,
            "failure_ratio": 0.1,
            "stuck_ratio": 0.04,
            "external_ratio": 0.35,
            "defer_ratio": 0.2,
            "failure_codes": ["5.1.1"],
            "latency_seconds": {"min": 0.5, "max": 20},
            "history_minutes": 60,
            "remote_mailbox_share": 0.5,
        }
    data["databases"] = [
        {"name": "DB01", "copies": [{"server": "EX01", "status": "Mounted"}, {"server": "EX02", "status": "Healthy"}]},
        {"name": "DB03", "copies": [{"server": "EX03", "status": "Mounted"}]},
    ]
    if roles is not None:
        data["users"] = {USER: {"password": PASSWORD, "roles": roles}}
    return data


@pytest.fixture
def sim() -> Iterator[tuple[Simulator, Scenario]]:
    scenario = Scenario.from_dict(org())
    simulator = Simulator(scenario, host="127.0.0.1", tls=False, clock=lambda: T0)
    simulator.start()
    yield simulator, scenario
    simulator.stop()


def run(sim: tuple[Simulator, Scenario], **filters: Any) -> TraceReport:
    simulator, scenario = sim
    start, end = filters.pop("window", WINDOW)
    query = TraceQuery.build(
        start=datetime.fromtimestamp(start, UTC), end=datetime.fromtimestamp(end, UTC), limit=500, **filters
    )
    return trace(settings_for(simulator, scenario), query, timeout=60)


def truth(simulator: Simulator, start: float, end: float) -> dict[str, TrackedMessage]:
    """Every message (by MessageId) whose whole trail lies in [start, end - 60 s]: finished or waiting."""
    out = {}
    for server in SERVERS:
        for message in simulator.tracking.messages(server, start, end):
            stamps = [e.timestamp for e in message.events if e.event_id != "DSN"]
            if message.arrival >= start and max(stamps) <= end - 60:
                out[message.message_id] = message
    return out


def expected(message: TrackedMessage) -> tuple[str, str, tuple[str, ...]]:
    """(verdict, server, servers in hop order) as the simulator generated the message."""
    events = [e for e in message.events if e.event_id != "DSN"]
    servers = tuple(dict.fromkeys(e.server for e in events))
    last = events[-1]
    if last.event_id == "DELIVER":
        return "delivered", last.server, servers
    if last.event_id == "SEND":
        return "sent", last.server, servers
    if last.event_id == "FAIL":
        return "failed", last.server, servers
    return "queued", last.server, servers


def by_message(report: TraceReport) -> dict[str, Any]:
    return {r.message.message_id: r for r in report.results}


def test_every_message_is_followed_across_servers_and_hops_to_its_verdict(sim: tuple[Simulator, Scenario]) -> None:
    simulator, _ = sim
    report = run(sim)
    assert report.complete and report.exit_code == 0 and not report.unsearched
    want = truth(simulator, *WINDOW)
    got = by_message(report)
    kinds = {"three servers": 0, "relay hop": 0, "held": 0, "sent": 0, "failed": 0}
    for message_id, message in want.items():
        status, server, servers = expected(message)
        result = got[message_id]
        assert result.message.servers == servers, message_id
        for verdict in result.verdicts:
            assert (verdict.status, verdict.server) == (status, server), (message_id, message.kind, verdict.summary)
        hops = [(h.source, h.target) for h in result.message.hops if h.source != h.target]
        assert all(a[1] == b[0] for a, b in itertools.pairwise(hops)), hops  # one chain of hops
        visited = [servers[0], *(target for _source, target in hops)]
        assert tuple(dict.fromkeys(visited)) == servers, (hops, servers)
        if len(servers) == 3:
            kinds["three servers"] += 1
        if any(h.kind == "smtp" for h in result.message.hops if h.source != h.target):
            kinds["relay hop"] += 1
        if status == "sent":
            kinds["sent"] += 1
            (send,) = [e for e in message.events if e.event_id == "SEND" and e.connector_id != INTRA]
            assert all(v.remote_host == send.server_hostname for v in result.verdicts)
            assert all(
                v.response == send.recipient_status[0] and v.response.startswith("250 ") for v in result.verdicts
            )
        if status == "failed":
            kinds["failed"] += 1
            for verdict in result.verdicts:
                assert (verdict.code, verdict.category) == ("5.1.1", "recipient_unknown")
                assert verdict.hint == CATEGORY_HINTS["recipient_unknown"]
        if message.kind == "outbound" and status == "queued":
            kinds["held"] += 1
            domain = message.events[0].recipients[0].rpartition("@")[2]
            row = {"fabrikam.example": 10, "tailspin.example": 11}[domain]
            for verdict in result.verdicts:
                assert verdict.queue == f"{server}\\{row}" and "Retry" in verdict.summary
                if domain == "fabrikam.example":
                    assert (verdict.response, verdict.category) == (DNS_ERROR, "dns_failure")
                else:
                    assert verdict.category == "connection_refused"
    assert all(count > 0 for count in kinds.values()), kinds
    assert "lost" not in {v.status for r in report.results for v in r.verdicts}


INTRA = "Intra-Organization SMTP Send Connector"


def test_a_server_that_cannot_be_searched_is_named_and_never_makes_a_message_lost(
    sim: tuple[Simulator, Scenario],
) -> None:
    simulator, _ = sim
    full = by_message(run(sim))
    simulator.faults.set("EX02", "refused")
    report = run(sim)
    assert [s.server for s in report.unsearched] == ["EX02"] and report.exit_code == 3 and not report.complete
    (down,) = report.unsearched
    assert down.reason == "connection" and down.error.startswith("connection refused")
    statuses = {v.status for r in report.results for v in r.verdicts}
    assert "lost" not in statuses and "unsearched" in statuses
    crossed = 0
    for message_id, result in by_message(report).items():
        before = full[message_id]
        if all(v.server != "EX02" for v in before.verdicts):  # it ended elsewhere, maybe after passing EX02
            assert [v.status for v in result.verdicts] == [v.status for v in before.verdicts], message_id
        else:  # it ended on EX02 (delivered, sent, failed or waiting there): EX02's part is not known now
            assert all(v.status in ("unsearched", "in_transit") for v in result.verdicts), message_id
            crossed += 1
    assert crossed > 5
    unsearched = [v for r in report.results for v in r.verdicts if v.status == "unsearched"]
    assert all("EX02" in v.unsearched for v in unsearched)
    assert all("connection refused" in v.summary for v in unsearched)


def test_filters_follow_exchanges_matching(sim: tuple[Simulator, Scenario]) -> None:
    simulator, _ = sim
    want = truth(simulator, *WINDOW)
    sample = next(m for m in want.values() if m.kind == "internal" and m.relay)
    first = sample.events[0]
    by_sender = run(sim, sender=first.sender.upper())  # addresses compare case-insensitively
    assert by_sender.results and all(r.message.sender == first.sender for r in by_sender.results)
    assert sample.message_id in by_message(by_sender)
    recipient = first.recipients[-1]
    by_recipient = run(sim, recipients=[recipient, "nobody@nowhere.example"])  # any of them
    assert by_recipient.results
    assert all(recipient in r.message.recipients for r in by_recipient.results)
    word = first.message_subject.split()[-1][1:].upper()  # a substring, other case
    by_subject = run(sim, subject=word)
    assert by_subject.results and all(word.lower() in r.message.subject.lower() for r in by_subject.results)
    by_id = run(sim, message_id=sample.message_id.strip("<>"))  # the brackets are added
    assert [r.message.message_id for r in by_id.results] == [sample.message_id]


def config_file(tmp_path: Path, simulator: Simulator, scenario: Scenario) -> Path:
    servers = []
    for server in scenario.servers:
        host, port = simulator.endpoint(server.name)
        servers.append({"name": server.name, "host": host, "port": port})
    config = {
        "state_dir": str(tmp_path / "state"),
        "exchange": {
            "defaults": {
                "auth": "basic",
                "tls": False,
                "allow_insecure_basic": True,
                "username": USER,
                "password": PASSWORD,
                "call_timeout": 10,
            },
            "servers": servers,
        },
    }
    path = tmp_path / "mailflow.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def test_the_command_prints_one_message_across_three_servers(
    sim: tuple[Simulator, Scenario], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    simulator, scenario = sim
    path = config_file(tmp_path, simulator, scenario)
    want = truth(simulator, *WINDOW)
    message = next(m for m in want.values() if m.kind == "internal" and len(m.servers) == 3)
    window = ["--start", iso(WINDOW[0]), "--end", iso(WINDOW[1])]
    argv = ["trace", "--config.file", str(path), "--message-id", message.message_id, *window]
    assert cli_main([*argv, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    (traced,) = data["messages"]
    order = list(dict.fromkeys(e.server for e in message.events if e.event_id != "DSN"))
    assert traced["servers"] == order and data["complete"] and data["shown"] == 1
    assert [(h["from"], h["to"]) for h in traced["hops"]] == list(itertools.pairwise(order))
    for recipient in traced["recipients"]:
        assert recipient["verdict"]["status"] == "delivered" and recipient["verdict"]["server"] == order[-1]
        rows = recipient["timeline"]
        assert [r["event"] for r in rows][-1] == "DELIVER"
        assert {r["server"] for r in rows} == set(order)
    assert cli_main(argv) == 0
    text = capsys.readouterr().out
    assert f"Servers: {' -> '.join(order)}" in text and "DELIVERED: delivered on" in text
    assert "Searched: EX01" in text and "Could not search" not in text

    simulator.faults.set("EX03", "refused")
    assert cli_main(argv) == 3
    text = capsys.readouterr().out
    assert "Could not search:\n  EX03: connection refused" in text


def test_the_command_refuses_an_unbounded_or_malformed_search(
    sim: tuple[Simulator, Scenario], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    simulator, scenario = sim
    path = str(config_file(tmp_path, simulator, scenario))
    assert cli_main(["trace", "--config.file", path]) == 2
    assert "give at least one of --sender" in capsys.readouterr().err
    assert cli_main(["trace", "--config.file", path, "--sender", "a@b", "--start", iso(T0), "--since", "1h"]) == 2
    assert "not both" in capsys.readouterr().err
    assert cli_main(["trace", "--config.file", path, "--sender", "a@b", "--start", iso(T0), "--end", iso(T0 - 1)]) == 2
    assert "window is empty" in capsys.readouterr().err
    assert cli_main(["trace", "--config.file", path, "--sender", "a@b", "--limit", "0"]) == 2
    assert "--limit" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["trace", "--config.file", path, "--sender", "a@b", "--since", "soon"])
    assert "not a duration" in capsys.readouterr().err


def test_output_is_bounded_by_the_limit(sim: tuple[Simulator, Scenario]) -> None:
    simulator, scenario = sim
    query = TraceQuery.build(start=datetime.fromtimestamp(WINDOW[0], UTC), end=datetime.fromtimestamp(T0, UTC), limit=7)
    report = trace(settings_for(simulator, scenario), query, timeout=60)
    assert len(report.results) == 7 and report.matched > 100
    newest = sorted(r.message.first_seen for r in report.results)
    assert newest == [r.message.first_seen for r in report.results]  # the newest seven, oldest first


def test_an_account_without_the_message_tracking_role_is_told_which_role() -> None:
    scenario = Scenario.from_dict(org(roles=["View-Only Configuration", "Monitoring"]))
    simulator = Simulator(scenario, host="127.0.0.1", tls=False, clock=lambda: T0)
    simulator.start()
    try:
        report = run((simulator, scenario), sender="x@contoso.sim")
        assert {s.reason for s in report.searches} == {"permission"} and report.exit_code == 3
        assert all("Message Tracking" in s.error for s in report.searches)
    finally:
        simulator.stop()


def test_trace_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["trace", "--demo", "--since", "20m", "--limit", "40", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [s["server"] for s in data["servers"]] == ["EX01", "EX02", "EX03"] and data["complete"]
    assert data["shown"] == 40 and data["matched"] > 40
    statuses = {r["verdict"]["status"] for m in data["messages"] for r in m["recipients"]}
    assert statuses <= {"delivered", "sent", "failed", "queued", "in_transit"}
    assert max(len(m["servers"]) for m in data["messages"]) >= 2
