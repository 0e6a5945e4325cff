"""``trace``'s query (checked values, the cmdlet parameters it sends), its flags and its text/JSON output."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from exporter.cli import build_parser
from exporter.trace.events import TraceEvent
from exporter.trace.query import ServerSearch, TracedResult, TraceQuery, TraceReport, parse_since
from exporter.trace.render import report_data, write_text
from exporter.trace.stitch import stitch
from exporter.trace.verdict import Scope, judge

NOW = datetime(2027, 1, 15, 9, 30, tzinfo=UTC)


def test_the_default_window_is_the_last_two_hours() -> None:
    query = TraceQuery.build(sender="cfo@contoso.com", now=NOW)
    assert (query.start, query.end) == (NOW - timedelta(hours=2), NOW)
    assert TraceQuery.build(since=timedelta(minutes=30), end=NOW).start == NOW - timedelta(minutes=30)


def test_only_the_message_tracking_role_entrys_parameters_are_sent() -> None:
    query = TraceQuery.build(
        sender="cfo@contoso.com",
        recipients=["a@bank.example", " b@bank.example "],
        message_id="abc@ex01.contoso.com",
        subject="wire",
        now=NOW,
    )
    params = query.parameters("EX02")
    assert params == {
        "Server": "EX02",
        "Start": "2027-01-15T07:30:00Z",
        "End": "2027-01-15T09:30:00Z",
        "ResultSize": 5000,
        "Sender": "cfo@contoso.com",
        "Recipients": ["a@bank.example", "b@bank.example"],
        "MessageId": "<abc@ex01.contoso.com>",  # the log keeps the brackets
        "MessageSubject": "wire",
    }
    assert TraceQuery.build(message_id="<x@y>", now=NOW).parameters("EX01")["MessageId"] == "<x@y>"
    # Not in Exchange 2013's Message Tracking role entry: never sent.
    assert not {"Source", "NetworkMessageId", "TransportTrafficType", "EventId"} & set(params)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"start": NOW, "end": NOW}, "window is empty"),
        ({"start": NOW - timedelta(days=31), "end": NOW}, "longer than 30 days"),
        ({"limit": 0}, "--limit"),
        ({"limit": 501}, "--limit"),
        ({"sender": "a\nb@c"}, "printable"),
        ({"subject": "x" * 321}, "printable"),
        ({"recipients": [f"r{i}@x" for i in range(21)]}, "at most 20 recipients"),
    ],
)
def test_bad_values_are_refused(kwargs: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        TraceQuery.build(now=NOW, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("2h", 7200), ("1.5d", 129600), ("1w", 604800)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_since(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "2", "h", "-1h", "0m", "2 hours", "1y"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_since(text)


def test_the_trace_command_line() -> None:
    args = build_parser().parse_args(
        ["trace", "--config.file", "m.yml", "--recipient", "a@x", "--recipient", "b@x", "--start", "2027-01-15T09:14Z",
         "--since", "1h", "--format", "json"]
    )  # fmt: skip
    assert args.recipient == ["a@x", "b@x"] and args.since == timedelta(hours=1) and args.format == "json"
    assert args.start == datetime(2027, 1, 15, 9, 14, tzinfo=UTC)
    naive = build_parser().parse_args(["trace", "--demo", "--end", "2027-01-15T09:14"]).end
    assert naive.tzinfo is not None  # this machine's local time
    help_text = build_parser()._subparsers._group_actions[0].choices["trace"].format_help()  # type: ignore[union-attr]
    assert "exit codes: 0 every server was searched" in help_text and "--subject-contains" in help_text


def test_the_text_report_names_unsearched_servers_first_and_ends_each_timeline_with_verdicts() -> None:
    at = NOW - timedelta(minutes=16)
    events = [
        TraceEvent("EX01", at, "RECEIVE", "SMTP", "1", "<m@x>", "a@out.example", ("x@contoso.com",), ("To",),
                   "<b>Hello</b>", "mail.out.example", "EX01", "EX01\\Default Frontend EX01"),
        TraceEvent("EX01", at + timedelta(seconds=2), "FAIL", "ROUTING", "1", "<m@x>", "a@out.example",
                   ("x@contoso.com",), ("550 5.1.1 RESOLVER.ADR.RecipNotFound; not found",)),
    ]  # fmt: skip
    (message,) = stitch(events)
    scope = Scope(frozenset({"EX01"}), {"EX02": "connection refused"}, until=NOW)
    query = TraceQuery.build(sender="a@out.example", now=NOW)
    refused = ServerSearch("EX02", error="connection refused", reason="connection", endpoint="http://ex02/PowerShell")
    searches = (ServerSearch("EX01", tuple(events)), refused)
    report = TraceReport(query, searches, (TracedResult(message, judge(message, scope)),), 1)
    out = io.StringIO()
    write_text(report, out)
    text = out.getvalue()
    assert text.index("Could not search:\n  EX02: connection refused at http://ex02/PowerShell") < text.index("[1]")
    assert "=> x@contoso.com: FAILED: failed on EX01" in text and "[recipient_unknown]" in text
    assert "next step: " in text and report.exit_code == 3 and not report.complete
    data = json.loads(json.dumps(report_data(report)))
    (msg,) = data["messages"]
    assert msg["subject"] == "<b>Hello</b>" and msg["recipients"][0]["verdict"]["enhanced_code"] == "5.1.1"
    assert [r["event"] for r in msg["recipients"][0]["timeline"]] == ["RECEIVE", "FAIL"]
    assert data["servers"][1] == {"server": "EX02", "searched": False, "events": 0, "truncated": False,
                                  "error": "connection refused", "reason": "connection"}  # fmt: skip
