"""The internal probe: ``Test-Mailflow`` as Exchange runs and reports it (result and latency).

Run through the source server's session (the cmdlet reference: run it while connected to the source),
with ``-ExecutionTimeout`` set and a call deadline that covers it. ``TestMailflowResult`` is
``Success`` or ``*FAILURE*`` (no delivery receipt within the timeout); ``MessageLatencyTime`` is an
EnhancedTimeSpan. No output at all (a server without mailbox databases: Exchange only warns) is
unknown, not a failure.
"""

from __future__ import annotations

import logging
from typing import Any

from exporter.errors import ParseError
from exporter.exchange.clixml import as_bool, flatten, parse_timespan
from exporter.exchange.session import ExchangeSession
from exporter.probe.result import FAILURE, SUCCESS, UNKNOWN, ProbeResult
from exporter.probe.settings import InternalProbe

log = logging.getLogger(__name__)
COLLECTOR = "mailflow_probe"


def parameters(probe: InternalProbe) -> dict[str, Any]:
    """Test-Mailflow's parameters for one probe."""
    params: dict[str, Any] = {"Identity": probe.source, "ExecutionTimeout": probe.execution_timeout}
    if probe.target_server:
        params["TargetMailboxServer"] = probe.target_server
    elif probe.target_database:
        params["TargetDatabase"] = probe.target_database
    elif probe.target_address:
        params["TargetEmailAddress"] = probe.target_address
    return params


def parse_output(obj: Any) -> tuple[bool, float, bool]:
    """(succeeded, latency seconds, remote) of one TestMailflowOutput."""
    p = flatten(obj)
    result = str(p.get("TestMailflowResult") or "").strip()
    if not result:
        raise ParseError("a Test-Mailflow object without TestMailflowResult")
    latency = parse_timespan(p.get("MessageLatencyTime"))
    return result.lower() == "success", latency or 0.0, as_bool(p.get("IsRemoteTest"))


def run_internal(session: ExchangeSession, probe: InternalProbe, call_timeout: float) -> ProbeResult:
    """Run one Test-Mailflow; CollectorError when the call itself fails (the poll then fails: blindness)."""
    result = session.invoke("Test-Mailflow", parameters(probe), timeout=probe.execution_timeout + call_timeout)
    shown = f"Test-Mailflow -Identity {probe.source}"
    result.raise_for_errors(shown)
    for warning in result.warnings:
        log.warning('cmdlet warning collector=%s probe=%s warning="%s"', COLLECTOR, probe.name, warning[:300])
    outputs = [o for o in result.objects if o is not None]
    if not outputs:
        why = result.warnings[0][:200] if result.warnings else "Test-Mailflow returned no result"
        return ProbeResult(probe.name, "internal", UNKNOWN, "no_result", detail=why, server=probe.source)
    try:
        ok, latency, _remote = parse_output(outputs[0])
    except ParseError:
        raise
    except Exception as exc:  # a shape the parser does not know: a parse failure, not a crash
        raise ParseError(f"{shown}: unexpected output: {type(exc).__name__}") from None
    if ok:
        return ProbeResult(probe.name, "internal", SUCCESS, duration=latency, server=probe.source)
    detail = f"Test-Mailflow reported *FAILURE*: no delivery receipt within {probe.execution_timeout}s"
    return ProbeResult(probe.name, "internal", FAILURE, "test_mailflow", detail=detail, server=probe.source)
