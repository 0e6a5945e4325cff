"""The ``trace`` command's flags and its run: arguments to a ``TraceQuery``, the report to stdout."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from exporter.trace.limits import MAX_LIMIT, parse_since

if TYPE_CHECKING:
    from exporter.settings import Settings
    from exporter.trace.query import TraceQuery

__all__ = ["TRACE_EPILOG", "add_trace_flags", "run_trace_command"]

TRACE_EPILOG = """\
Each transport server's Get-MessageTrackingLog is searched in parallel (the account needs the Message
Tracking role, see README "Tracing a message"); the events are stitched by MessageId across servers and
by the SEND/RECEIVE pairs between them. A server that cannot be searched is named first, and a trail that
may go on there is marked "unsearched", never "lost".

exit codes: 0 every server was searched, 2 bad arguments, 3 a server could not be searched.

examples:
  mailflow-exporter trace --config.file mailflow.yml --sender cfo@contoso.com --since 6h
  mailflow-exporter trace --config.file mailflow.yml --recipient treasury@bank.example \\
      --start 2027-01-15T09:00 --end 2027-01-15T09:30
  mailflow-exporter trace --config.file mailflow.yml --message-id '<a1b2c3@ex01.contoso.com>' --format json
  mailflow-exporter trace --config.file mailflow.yml --subject-contains invoice --limit 5
  mailflow-exporter trace --demo --subject-contains Invoice
"""


def _when(text: str) -> datetime:
    """ISO 8601 (``2027-01-15T09:14``, ``2027-01-15 09:14:00+01:00``); without an offset: this machine's
    local time."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time such as 2027-01-15T09:14 or 2027-01-15T09:14Z"
        ) from None
    return value if value.tzinfo is not None else value.astimezone()


def _since(text: str) -> timedelta:
    try:
        return parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_trace_flags(parser: argparse.ArgumentParser) -> None:
    """The filters, the window and the output of ``trace``."""
    parser.add_argument("--demo", action="store_true", help="trace in the bundled simulated organisation instead")
    what = parser.add_argument_group("what to look for (Exchange's own matching; at least one unless --demo)")
    what.add_argument("--sender", metavar="ADDRESS", help="the sender's SMTP address (exact)")
    what.add_argument(
        "--recipient", action="append", default=[], metavar="ADDRESS",
        help="a recipient's SMTP address; repeat it to match any of several",
    )  # fmt: skip
    what.add_argument("--message-id", metavar="ID", help="the Message-ID header (angle brackets optional)")
    what.add_argument("--subject-contains", metavar="TEXT", help="part of the subject (case-insensitive)")
    when = parser.add_argument_group("when (default: the last 2 hours)")
    when.add_argument("--start", type=_when, metavar="TIME", help="from (ISO 8601; without offset: local time)")
    when.add_argument("--end", type=_when, metavar="TIME", help="until, excluded (default: now)")
    when.add_argument("--since", type=_since, metavar="DURATION", help="the last DURATION before --end: 30m, 2h, 1d")
    out = parser.add_argument_group("output")
    out.add_argument(
        "--limit", type=int, default=20, metavar="N",
        help=f"show the newest N messages (default 20, at most {MAX_LIMIT})",
    )  # fmt: skip
    out.add_argument("--format", choices=["text", "json"], default="text", help="report format (default text)")
    out.add_argument(
        "--timeout", type=float, metavar="SECONDS",
        help="stop waiting after this long; servers that have not answered are reported as not searched",
    )  # fmt: skip


def query_from_args(args: argparse.Namespace) -> TraceQuery:
    """The query the flags ask for; ValueError with the flag's problem."""
    from exporter.trace.query import TraceQuery

    if args.since is not None and args.start is not None:
        raise ValueError("give --start or --since, not both")
    since = args.since
    if since is None and args.start is None and args.demo and not _filtered(args):
        since = timedelta(minutes=10)  # a look at the demo's latest traffic, not its whole log
    return TraceQuery.build(
        start=args.start,
        end=args.end,
        since=since,
        sender=args.sender,
        recipients=args.recipient,
        message_id=args.message_id,
        subject=args.subject_contains,
        limit=args.limit,
    )


def _filtered(args: argparse.Namespace) -> bool:
    return bool(args.sender or args.recipient or args.message_id or args.subject_contains)


def run_trace_command(args: argparse.Namespace, settings: Settings | None) -> int:
    """Check the arguments, run the trace (``settings``, or the demo), print the report; the exit code."""
    from exporter.trace.render import write_json, write_text
    from exporter.trace.run import trace, trace_demo

    if not args.demo and settings is None:
        print("trace needs --config.file FILE or --demo", file=sys.stderr)
        return 2
    if not args.demo and not _filtered(args):
        print(
            "trace: give at least one of --sender, --recipient, --message-id, --subject-contains (a trace of every "
            "message would read each server's whole log for the window)",
            file=sys.stderr,
        )
        return 2
    if args.timeout is not None and args.timeout <= 0:
        print("trace: --timeout must be a positive number of seconds", file=sys.stderr)
        return 2
    try:
        query = query_from_args(args)
    except ValueError as exc:
        print(f"trace: {exc}", file=sys.stderr)
        return 2
    report = trace_demo(query, args.timeout) if settings is None else trace(settings, query, args.timeout)
    if args.format == "json":
        write_json(report, sys.stdout)
    else:
        write_text(report, sys.stdout)
    return report.exit_code
