"""Test-Mailflow (registered when ``cmdlets`` is imported): Exchange's own synthetic mail-flow test.

The cmdlet submits a message from the source Mailbox server's system mailbox (``-Identity``, default
the endpoint's server) to the target (``-TargetMailboxServer``'s system mailbox, ``-TargetDatabase``'s,
``-TargetEmailAddress``, or the source's own) and waits for its delivery receipt for at most
``-ExecutionTimeout`` seconds. One ``TestMailflowOutput`` object: ``TestMailflowResult`` ``Success``
with ``MessageLatencyTime`` (delivery time minus submit time), or ``*FAILURE*`` with 00:00:00 when no
receipt arrived in time. Sources (docs/fidelity.md, "Test-Mailflow"): the cmdlet reference
(MicrosoftDocs/office-docs-powershell ``exchange/exchange-ps/exchange/Test-Mailflow.md``: parameter
sets, ExecutionTimeout default 240 s, result values, latency format) and the decompiled
``Microsoft.Exchange.Monitoring`` classes ``TestMailflowOutput``/``TestMailflowOutputSchema`` (the
three properties, their types and defaults) and ``LegacyTestMailFlowHelper`` (IsRemoteTest, the source
server without databases: a warning and no output; a source or target that is not a Mailbox server:
an error; failure output with zero latency after the timeout).

The simulated organisation decides the outcome: the test fails (after the whole timeout, as Exchange
waits) when a server on the path is down, under High back pressure, or has its Transport, Submission
or Delivery service stopped, or when the target address is outside the accepted domains (no receipt
comes back from the simulated Internet) [inferred, stricter]. Otherwise it succeeds after a latency
drawn per (source, target, minute) between 0.8 and 4 seconds, which the cmdlet really waits.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator

from exporter.simulator import consequences, roles
from exporter.simulator.cmdlets import Args, Context, Param, StopCmdlet, cmdlet, exclusive, target_server
from exporter.simulator.faults import FaultKind
from exporter.simulator.objects import ex_object, object_state, precise_timespan
from exporter.simulator.records import CmdletError, Output, Record, Warning, emit, exchange_error, not_simulated
from exporter.simulator.scenario import ServerSpec

__all__ = ["LONG_RUNNING", "MAILFLOW_FAILURE", "MAILFLOW_SUCCESS", "path_blocked"]

_TEST_MAILFLOW = "Microsoft.Exchange.Monitoring.TestMailflow"
_OUTPUT_TYPES = (
    "Microsoft.Exchange.Monitoring.TestMailflowOutput",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object",
)
#: Strings.MapiTransactionResultSuccess / MapiTransactionResultFailure as the cmdlet reference prints them.
MAILFLOW_SUCCESS = "Success"
MAILFLOW_FAILURE = "*FAILURE*"
#: Cmdlets whose pipeline runs beside the Command request (it may take minutes, like Exchange's).
LONG_RUNNING = frozenset({"test-mailflow"})
#: Services whose stop stops mail between mailboxes (Test-ServiceHealth names).
_MAIL_SERVICES = ("MSExchangeTransport", "MSExchangeSubmission", "MSExchangeDelivery")
_DEFAULT_TIMEOUT = 240  # seconds: the Exchange Management Shell's default ExecutionTimeout
_TARGETS = (("AutoDiscoverTargetMailboxServer",), ("CrossPremises", "CrossPremisesExpirationTimeout",
            "CrossPremisesPendingErrorCount"), ("TargetDatabase",),
            ("TargetEmailAddress", "TargetEmailAddressDisplayName"), ("TargetMailboxServer",))  # fmt: skip


def _error(ctx: Context, failure: str, message: str, category: str, target: str) -> CmdletError:
    return CmdletError(
        exchange_error(
            ctx.server.name, "Test-Mailflow", _TEST_MAILFLOW, failure, message, category=category, target_name=target
        )
    )


def _mailbox_server(ctx: Context, name: str | None) -> ServerSpec:
    """The server named by ``name`` (None: the endpoint's), which must be a Mailbox server."""
    server = target_server(ctx, "Test-Mailflow", name)
    if not server.is_mailbox or roles.is_client_access_only(server):
        # OperationOnlyOnMailboxServerException; [I] text (the resource string is not public).
        raise _error(ctx, "OperationOnlyOnMailboxServerException",
                     f"This operation can only be performed on a Mailbox server; {server.name} isn't one.",
                     "InvalidArgument", server.name)  # fmt: skip
    return server


def _mounted_on(ctx: Context, server: ServerSpec) -> bool:
    """Whether a mailbox database is active on ``server`` (its system mailbox lives there)."""
    return any(db.active_server.upper() == server.name.upper() for db in consequences.effective_databases(ctx))


def path_blocked(ctx: Context, servers: list[ServerSpec]) -> bool:
    """Whether mail cannot pass one of ``servers``: down, under High back pressure, or a mail service stopped."""
    down = consequences.down_servers(ctx)
    for server in servers:
        if server.name.upper() in down:
            return True
        pressure = ctx.faults.find(server.name, FaultKind.BACK_PRESSURE) if ctx.faults is not None else None
        if pressure is not None and (pressure.level or "High") == "High":
            return True
        stopped = {s.lower() for services in dict(server.service_health).values() for s in services}
        if any(s.lower() in stopped for s in _MAIL_SERVICES):
            return True
    return False


def _latency_ms(source: str, target: str, now: float) -> int:
    digest = hashlib.blake2b(f"{source}|{target}|{int(now // 60)}".encode(), digest_size=4).digest()
    return 800 + int.from_bytes(digest, "big") % 3200


def _output(result: str, latency_ms: int, remote: bool) -> Record:
    return emit(
        ex_object(
            _OUTPUT_TYPES,
            [
                ("TestMailflowResult", result),
                ("MessageLatencyTime", precise_timespan(latency_ms)),
                ("IsRemoteTest", remote),
                ("Identity", None),
                ("IsValid", True),
                ("ObjectState", object_state("New")),
            ],
            _OUTPUT_TYPES[0],
        )
    )


@cmdlet(
    "Test-Mailflow",
    _TEST_MAILFLOW,
    [
        Param("Identity", position=0),
        Param("AutoDiscoverTargetMailboxServer", "switch"),
        Param("CrossPremises", "any"),
        Param("CrossPremisesExpirationTimeout", "any"),
        Param("CrossPremisesPendingErrorCount", "int"),
        Param("TargetDatabase"),
        Param("TargetEmailAddress"),
        Param("TargetEmailAddressDisplayName"),
        Param("TargetMailboxServer"),
        Param("ActiveDirectoryTimeout", "int"),
        Param("ErrorLatency", "int"),
        Param("ExecutionTimeout", "int"),
        Param("MonitoringContext", "any"),
        Param("DomainController"),
        Param("Confirm", "switch"),
        Param("WhatIf", "switch"),
    ],
)
def test_mailflow(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Test-Mailflow [[-Identity] S] [-TargetMailboxServer S | -TargetDatabase D | -TargetEmailAddress A |
    -AutoDiscoverTargetMailboxServer] [-ExecutionTimeout N]: one TestMailflowOutput (see the module docstring)."""
    exclusive("Test-Mailflow", args, *_TARGETS)
    if "CrossPremises" in args:
        raise StopCmdlet(not_simulated("Test-Mailflow", "-CrossPremises"))
    source = _mailbox_server(ctx, args.get("Identity"))
    remote = any(k in args for k in ("TargetEmailAddress", "TargetMailboxServer", "TargetDatabase",
                                     "AutoDiscoverTargetMailboxServer"))  # fmt: skip
    timeout = args.get("ExecutionTimeout", _DEFAULT_TIMEOUT)
    if not _mounted_on(ctx, source):  # the source's system mailbox comes first (LegacyTestMailFlowHelper)
        yield Warning(_no_databases(source.name))
        return
    path = [source]
    foreign = False
    target_name = source.name
    if args.get("AutoDiscoverTargetMailboxServer"):
        others = [s for s in ctx.scenario.servers if s.is_mailbox and s.name.upper() != source.name.upper()]
        target = others[0] if others else source
        path.append(target)
        target_name = target.name
    elif args.get("TargetMailboxServer") is not None:
        target = _mailbox_server(ctx, str(args["TargetMailboxServer"]))
        if not _mounted_on(ctx, target):
            yield Warning(_no_databases(target.name))
            return
        path.append(target)
        target_name = target.name
    elif args.get("TargetDatabase") is not None:
        wanted = str(args["TargetDatabase"]).strip()
        database = next((d for d in consequences.effective_databases(ctx) if d.name.lower() == wanted.lower()), None)
        if database is None:  # ManagementObjectNotFoundException through GetAdDataObject; [I] text
            raise _error(ctx, "ManagementObjectNotFoundException", f'The specified mailbox database "{wanted}" '
                         "doesn't exist.", "NotSpecified", wanted)  # fmt: skip
        holder = ctx.scenario.server(database.active_server)
        if holder is not None:
            path.append(holder)
        target_name = database.name
    elif args.get("TargetEmailAddress") is not None:
        address = str(args["TargetEmailAddress"]).strip()
        local, _, domain = address.rpartition("@")
        if not local or not domain or " " in address:  # TestMailflowInvalidTargetEmailAddress; [I] text
            raise _error(ctx, "RecipientTaskException", f"The target email address {address} isn't valid.",
                         "InvalidData", address)  # fmt: skip
        foreign = not any(_accepts(d.domain, domain) for d in ctx.scenario.effective_accepted_domains)
        target_name = domain.lower()
    if foreign or path_blocked(ctx, path):
        _wait(timeout)
        yield _output(MAILFLOW_FAILURE, 0, remote)
        return
    latency = _latency_ms(source.name.upper(), target_name.upper(), time.time())
    if latency / 1000.0 >= timeout:
        _wait(timeout)
        yield _output(MAILFLOW_FAILURE, 0, remote)
        return
    _wait(latency / 1000.0)
    yield _output(MAILFLOW_SUCCESS, latency, remote)


def _no_databases(server: str) -> str:
    # Strings.TestMailflowServerWithoutMdbs; [I] text
    return f"Server {server} doesn't have any mailbox databases. The mail flow test was skipped."


def _accepts(pattern: str, domain: str) -> bool:
    pattern, domain = pattern.lower().lstrip(), domain.lower()
    if pattern.startswith("*."):
        return domain.endswith(pattern[1:])
    return pattern == domain


def _wait(seconds: float) -> None:
    threading.Event().wait(max(0.0, seconds))
