"""PowerShell remoting sessions (WSMan shells) driven by psrpcore's server classes.

One :class:`Shell` is one client RunspacePool: a psrpcore ``ServerRunspacePool`` plus the
``ServerPipeline`` of each running command. psrpcore produces PSRP fragments; the shell sorts them
into one outbox per target (the pool, or a pipeline) so a WSMan Receive for a command gets exactly
that command's data, split to fit the client's MaxEnvelopeSize. Receive blocks until data arrives,
the command completes, or the OperationTimeout passes (then the WSMan timeout fault, which clients
answer by polling again), as a Windows WinRM service does.

Pipeline output is written as pre-serialised CLIXML (``RawClixml``): generated objects come from
``objects.py`` and replays re-emit capture elements, so psrpcore's own serialiser (which drops the
wrappers of flag enums on a round trip) is only used for its protocol messages and error records.
"""

from __future__ import annotations

import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from psrpcore import (
    ConnectRunspacePoolEvent,
    CreatePipelineEvent,
    GetAvailableRunspacesEvent,
    PSRPPayload,
    ResetRunspaceStateEvent,
    ServerPipeline,
    ServerRunspacePool,
    SetMaxRunspacesEvent,
    SetMinRunspacesEvent,
    StreamType,
)
from psrpcore._payload import PSRPMessage, create_message
from psrpcore.types import (
    ErrorCategory,
    ErrorCategoryInfo,
    ErrorRecord,
    NETException,
    PSInvocationState,
    PSRPMessageType,
    RunspacePoolState,
    add_note_property,
)

from exporter.simulator.cmdlets import Context, Invocation, run_pipeline
from exporter.simulator.records import CmdletError, Error, ErrorInfo, Output, Record, Warning

__all__ = ["RawClixml", "ReceiveTimeout", "Shell", "ShellError"]

_FRAGMENT_HEADER = struct.Struct(">QQBI")  # object id, fragment id, start/end flags, length


class ShellError(Exception):
    """The client sent something the shell cannot process (bad PSRP data, unknown command id)."""


class ReceiveTimeout(Exception):
    """No data arrived within the OperationTimeout."""


@dataclass(frozen=True)
class RawClixml:
    """Pre-serialised CLIXML to send as a PSRP message body (a pipeline output object)."""

    data: bytes


class SimRunspacePool(ServerRunspacePool):
    """psrpcore's server pool, accepting pre-serialised CLIXML for pipeline output messages.

    ``prepare_message`` mirrors psrpcore 0.3's implementation (message framing and fragment
    counter) for :class:`RawClixml` bodies and defers to psrpcore for everything else.
    """

    def prepare_message(
        self,
        message: Any,
        message_type: PSRPMessageType | None = None,
        pipeline_id: uuid.UUID | None = None,
        stream_type: StreamType = StreamType.default,
    ) -> None:
        """Queue a PSRP message; RawClixml bodies are framed without re-serialising them."""
        if not isinstance(message, RawClixml):
            super().prepare_message(message, message_type, pipeline_id, stream_type)
            return
        kind = message_type or PSRPMessageType.PipelineOutput
        body = create_message(self._is_client, kind, message.data, self.runspace_pool_id, pipeline_id)
        self._send_buffer.append(
            PSRPMessage(kind, bytearray(body), self.runspace_pool_id, pipeline_id, self._fragment_counter, stream_type)
        )

    def abort_connect(self) -> None:
        """A Connect failed: back to Disconnected, dropping what it left half-read or queued (psrpcore 0.3's
        buffers), so a later Connect starts clean."""
        self._change_state(RunspacePoolState.Disconnected, emit=False)
        self._receive_buffer = bytearray()
        self._incoming_fragments.clear()
        self._incoming_messages.clear()
        self._send_buffer.clear()

    # pypsrp names the call id of SetMax/SetMinRunspaces "CI" where MS-PSRP (and psrpcore) say "ci".
    def _process_SetMaxRunspaces(self, event: SetMaxRunspacesEvent) -> None:
        _normalise_ci(event)
        super()._process_SetMaxRunspaces(event)

    def _process_SetMinRunspaces(self, event: SetMinRunspacesEvent) -> None:
        _normalise_ci(event)
        super()._process_SetMinRunspaces(event)


def _messages(payload: bytes) -> list[bytes]:
    """Split a psrpcore payload into the fragments of each message, in order (grouped by object id)."""
    out: dict[int, bytearray] = {}
    view, pos = memoryview(payload), 0
    while pos < len(view):
        object_id, _fragment_id, _flags, length = _FRAGMENT_HEADER.unpack_from(view, pos)
        out.setdefault(object_id, bytearray()).extend(view[pos : pos + 21 + length])
        pos += 21 + length
    return [bytes(v) for v in out.values()]


def _normalise_ci(event: Any) -> None:
    message = event._ps_object  # psrpcore keeps the received message here
    if not hasattr(message, "ci") and hasattr(message, "CI"):
        add_note_property(message, "ci", message.CI)


class SimPipeline(ServerPipeline):
    """psrpcore's server pipeline with the two state changes the simulator needs."""

    def begin(self) -> None:
        """Mark the pipeline Running without a state message (PowerShell does not send one)."""
        self._change_state(PSInvocationState.Running, emit=False)

    def fail(self, error: ErrorRecord) -> None:
        """End the pipeline in state Failed with ``error`` (a terminating error)."""
        self._change_state(PSInvocationState.Failed, error)


class _Outbox:
    """PSRP fragments waiting for a Receive, for one target; re-fragments to fit a byte budget."""

    def __init__(self) -> None:
        self.items: deque[list[Any]] = deque()  # [object_id, next_fragment_id, data, offset]

    def __bool__(self) -> bool:
        return bool(self.items)

    def add(self, payload: bytes) -> None:
        """Add the complete-message fragments of one psrpcore payload."""
        view = memoryview(payload)
        pos = 0
        while pos < len(view):
            object_id, fragment_id, flags, length = _FRAGMENT_HEADER.unpack_from(view, pos)
            data = bytes(view[pos + 21 : pos + 21 + length])
            pos += 21 + length
            if flags == 3 and fragment_id == 0:
                self.items.append([object_id, 0, data, 0])
            else:  # psrpcore already split it: pass it through unchanged
                self.items.append(
                    [object_id, -1, _FRAGMENT_HEADER.pack(object_id, fragment_id, flags, length) + data, 0]
                )

    def take(self, budget: int) -> bytes:
        """Up to ``budget`` bytes of fragments (a message larger than the budget is split)."""
        out = bytearray()
        while self.items and budget - len(out) > 21:
            item = self.items[0]
            object_id, fragment_id, data, offset = item
            if fragment_id < 0:
                if out and len(out) + len(data) > budget:
                    break
                out += data
                self.items.popleft()
                continue
            room = budget - len(out) - 21
            chunk = data[offset : offset + room]
            end = offset + len(chunk) >= len(data)
            flags = (1 if fragment_id == 0 else 0) | (2 if end else 0)
            out += _FRAGMENT_HEADER.pack(object_id, fragment_id, flags, len(chunk)) + chunk
            if end:
                self.items.popleft()
            else:
                item[1], item[3] = fragment_id + 1, offset + len(chunk)
                break
        return bytes(out)

    def clear(self) -> None:
        """Drop everything (a stopped or terminated command)."""
        self.items.clear()


@dataclass
class Command:
    """One client command (a pipeline) in a shell."""

    id: uuid.UUID
    pipeline: SimPipeline
    invocations: list[Invocation]
    finished: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)
    #: The ``oversize`` fault's ``one_response`` variant: Receive sends everything at once.
    one_response: bool = False

    @property
    def names(self) -> list[str]:
        """The command names in the pipeline."""
        return [i.name for i in self.invocations]


def _error_record(info: ErrorInfo) -> tuple[NETException, ErrorCategoryInfo]:
    exception = NETException(Message=info.message, HResult=info.hresult)
    exception.PSObject.type_names = [info.exception_type, *info.base_types]
    category = ErrorCategoryInfo(
        Category=ErrorCategory[info.category],
        Activity=info.activity or None,
        Reason=info.reason or None,
        TargetName=info.target_name or None,
        TargetType=info.target_type or None,
    )
    return exception, category


def break_clixml(data: bytes, variant: str | None) -> bytes:
    """Broken CLIXML for the ``malformed_clixml`` fault.

    Default: the object's first ``<TN>`` becomes a ``<TNRef>`` to a table entry that does not
    exist (well-formed XML, but a deserialiser cannot resolve it). ``truncated``: the XML is cut.
    """
    if (variant or "").lower() != "truncated":
        start = data.find(b"<TN RefId=")
        end = data.find(b"</TN>", start)
        if start >= 0 and end > start:
            return data[:start] + b'<TNRef RefId="4242" />' + data[end + 5 :]
    return data[: max(1, len(data) // 2)]


def oversized(records: Sequence[Record], megabytes: float, variant: str | None) -> list[Record]:
    """The records of the ``oversize`` fault: the output objects repeated, in order, after the real records
    until ``megabytes`` MB of CLIXML are written; ``single``: one string object of that size instead of
    the output objects. Records of a cmdlet that writes no output object are returned unchanged."""
    outputs = [r for r in records if isinstance(r, Output)]
    if not outputs:
        return list(records)
    target = int(megabytes * 1_000_000)
    if variant == "single":
        others = [r for r in records if not isinstance(r, Output)]
        return [Output(data=b"<S>" + b"x" * target + b"</S>"), *others]
    out = list(records)
    written = sum(len(r.as_bytes()) for r in outputs)
    while written < target:
        for record in outputs:
            out.append(record)
            written += len(record.as_bytes())
            if written >= target:
                break
    return out


class Shell:
    """One remote RunspacePool (WSMan shell) on one simulated server."""

    def __init__(
        self,
        shell_id: str,
        server: str,
        user: str,
        resource_uri: str,
        input_streams: str = "stdin pr",
        output_streams: str = "stdout",
        client_ip: str = "",
        name: str = "Runspace1",
        client_id: str = "",
    ) -> None:
        self.id = shell_id
        self.server = server
        self.user = user
        self.resource_uri = resource_uri
        self.input_streams = input_streams
        self.output_streams = output_streams
        self.client_ip = client_ip
        #: The client's friendly name for the shell (``rsp:Name`` in the Create request; PowerShell sends
        #: the PSSession's name). A shell created without one reports ``Runspace1`` (inferred).
        self.name = name
        #: MS-WSMV's ClientId of the client the shell is connected to (the request's wsmv:SessionId).
        self.client_id = client_id
        #: MS-WSMV StateType: "Connected" until a Disconnect. A client that vanishes without one leaves
        #: the shell Connected (idle, not disconnected: MS-WSMV 3.1.6.5).
        self.state = "Connected"
        #: IdleTimeOut given in a Disconnect (seconds), overriding the endpoint's for this shell.
        self.idle_timeout: float | None = None
        self.created_at = 0.0  # set by the service with the scenario clock
        #: The user's RBAC roles when the shell opened: Exchange builds the runspace then (set by the service).
        self.roles: tuple[str, ...] | None = None
        self.created = time.time()
        self.last_activity = 0.0  # set by the service with the scenario clock
        self.pool = SimRunspacePool()
        self.commands: dict[uuid.UUID, Command] = {}
        self.closed = False
        self._outboxes: dict[uuid.UUID | None, _Outbox] = {}
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)

    def touch(self, now: float) -> None:
        """Record client activity at ``now`` (scenario clock; for the idle timeout)."""
        self.last_activity = now

    @property
    def busy(self) -> bool:
        """Whether a command is still running (such a shell is never idle)."""
        return any(not c.finished for c in list(self.commands.values()))

    # -- psrpcore plumbing -------------------------------------------------------------------
    def _flush(self) -> None:
        """Move everything psrpcore queued into the per-target outboxes (lock held)."""
        while (payload := self.pool.data_to_send()) is not None:
            self._outboxes.setdefault(payload.pipeline_id, _Outbox()).add(payload.data)
        self._cond.notify_all()

    def _feed(self, data: bytes) -> list[Any]:
        """Give client PSRP data to psrpcore and return the resulting events (lock held)."""
        events = []
        try:
            self.pool.receive_data(PSRPPayload(data, StreamType.default, None))
            while (event := self.pool.next_event()) is not None:
                events.append(event)
        except Exception as exc:  # psrpcore raises assorted errors on bad input
            raise ShellError(f"invalid PSRP data: {exc}") from exc
        return events

    # -- WSMan operations --------------------------------------------------------------------
    def open(self, creation_xml: bytes) -> None:
        """Process the Create request's ``creationXml`` (SessionCapability + InitRunspacePool)."""
        with self._lock:
            self._feed(creation_xml)
            self._flush()
            if self.pool.state != RunspacePoolState.Opened:
                raise ShellError(f"the runspace pool did not open (state {self.pool.state.name})")

    def create_command(self, command_id: uuid.UUID, arguments: bytes) -> Command:
        """Register a command from a Command request (the first CreatePipeline fragment)."""
        with self._lock:
            if command_id in self.commands:
                raise ShellError(f"command {command_id} already exists")
            pipeline = SimPipeline(self.pool, command_id)
            try:
                events = self._feed(arguments)
            except ShellError:
                self.pool.pipeline_table.pop(command_id, None)
                raise
            create = next((e for e in events if isinstance(e, CreatePipelineEvent)), None)
            if create is None:
                self.pool.pipeline_table.pop(command_id, None)
                raise ShellError("the Command request carried no complete CreatePipeline message")
            invocations = [
                Invocation(
                    name=str(cmd.command_text),
                    parameters=list(cmd.parameters),
                    is_script=bool(cmd.is_script),
                    end_of_statement=bool(cmd.end_of_statement),
                )
                for cmd in create.pipeline.commands
            ]
            command = Command(command_id, pipeline, invocations)
            self.commands[command_id] = command
            return command

    def discard_command(self, command_id: uuid.UUID) -> None:
        """Forget a command that will not run (its Command request failed by fault)."""
        with self._lock:
            self.commands.pop(command_id, None)
            self.pool.pipeline_table.pop(command_id, None)
            self._outboxes.pop(command_id, None)

    def send(self, command_id: uuid.UUID | None, data: bytes) -> None:
        """Process a Send request (pipeline input, or pool requests such as SetMaxRunspaces)."""
        with self._lock:
            for event in self._feed(data):
                if isinstance(event, SetMaxRunspacesEvent | SetMinRunspacesEvent | ResetRunspaceStateEvent):
                    self.pool.runspace_availability_response(event.ci, True)
                elif isinstance(event, GetAvailableRunspacesEvent):
                    self.pool.runspace_availability_response(event.ci, max(1, self.pool.max_runspaces))
            self._flush()

    def receive(
        self, command_id: uuid.UUID | None, budget: int, timeout: float, stopping: Callable[[], bool]
    ) -> tuple[bytes, bool]:
        """Wait for data for the pool (``command_id`` None) or a command; returns (data, done).

        ``done`` is True once the command has finished and all its data has been returned.
        Raises :class:`ReceiveTimeout` after ``timeout`` seconds without data.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            command = None
            if command_id is not None:
                command = self.commands.get(command_id)
                if command is None:
                    raise ShellError(f"unknown command {command_id}")
            outbox = self._outboxes.setdefault(command_id, _Outbox())
            while not outbox and not self.closed and not (command is not None and command.finished):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or stopping():
                    raise ReceiveTimeout()
                self._cond.wait(min(remaining, 0.5))
            data = outbox.take(budget)
            done = command is not None and command.finished and not outbox
            if done and command is not None:
                # The client has everything, including the final state. pypsrp's invoke() never sends
                # the terminate signal, so forget the command now or a long-lived shell grows forever.
                self.commands.pop(command.id, None)
                self._outboxes.pop(command.id, None)
                command.pipeline.close()
            return data, done

    def signal(self, command_id: uuid.UUID, code: str) -> None:
        """Process a Signal: PowerShell's ctrl_c stops the pipeline; terminate closes the command."""
        with self._lock:
            command = self.commands.get(command_id)
            if command is None:
                return
            command.cancel.set()
            if code.lower().endswith("ctrl_c"):
                if command.pipeline.state == PSInvocationState.Running:
                    command.pipeline.stop()
                command.finished = True
                self._flush()
                return
            self.commands.pop(command_id, None)
            self._outboxes.pop(command_id, None)
            if command.pipeline.state == PSInvocationState.Running:
                command.pipeline.stop()
            command.pipeline.close()
            self._cond.notify_all()

    def disconnect(self, idle_timeout: float | None) -> None:
        """Process a Disconnect: the shell stays open, commands keep running, clients must (re)connect."""
        with self._lock:
            self.pool.disconnect()
            self.state = "Disconnected"
            if idle_timeout is not None:
                self.idle_timeout = idle_timeout
            self._cond.notify_all()

    def reconnect(self, client_id: str) -> None:
        """Process a Reconnect from a client that kept its PSRP state (MS-WSMV 3.1.4.16)."""
        with self._lock:
            self.pool.reconnect()
            self.state, self.client_id = "Connected", client_id

    def connect(self, client_id: str, connect_xml: bytes) -> bytes:
        """Process a Connect (MS-PSRP 4.1.2): ``connectXml`` carries SESSION_CAPABILITY + CONNECT_RUNSPACEPOOL.

        Returns the ``connectResponseXml`` data (the server's SESSION_CAPABILITY and RUNSPACEPOOL_INIT_DATA);
        what follows them (APPLICATION_PRIVATE_DATA, the pool state) waits for the client's Receive.
        """
        with self._lock:
            self.pool.connect()
            self.pool.prepare_message(self.pool.our_capability)
            try:
                events = self._feed(connect_xml)
            except ShellError:
                self.pool.abort_connect()
                raise
            if not any(isinstance(e, ConnectRunspacePoolEvent) for e in events) or (
                self.pool.state != RunspacePoolState.Opened
            ):
                self.pool.abort_connect()
                raise ShellError("connectXml must hold SESSION_CAPABILITY followed by CONNECT_RUNSPACEPOOL")
            messages: list[bytes] = []
            while (payload := self.pool.data_to_send()) is not None:
                messages += _messages(payload.data)
            for rest in messages[2:]:
                self._outboxes.setdefault(None, _Outbox()).add(rest)
            self.state, self.client_id = "Connected", client_id
            self._cond.notify_all()
            return b"".join(messages[:2])

    def close(self) -> None:
        """Forget the shell (Delete, expiry, shutdown): running commands are cancelled."""
        with self._lock:
            self.closed = True
            for command in self.commands.values():
                command.cancel.set()
            self._cond.notify_all()

    # -- execution -----------------------------------------------------------------------------
    def execute(
        self,
        command: Command,
        ctx: Context,
        *,
        delay: float = 0.0,
        malformed: str | bool | None = False,
        on_done: Callable[[Command], None] | None = None,
        oversize: tuple[float, str | None] | None = None,
        background: bool = False,
    ) -> None:
        """Run the command's pipeline; in a background thread when ``delay`` > 0 or ``background`` (a
        cmdlet that takes long, such as Test-Mailflow: the Command request is answered at once).

        ``malformed``: False for normal output, else the malformed_clixml variant (None = default).
        ``oversize``: (megabytes, variant) of the ``oversize`` fault, None for normal output.
        """
        with self._lock:
            command.pipeline.begin()
            command.one_response = oversize is not None and oversize[1] == "one_response"
        if delay > 0 or background:
            thread = threading.Thread(
                target=self._run,
                args=(command, ctx, delay, malformed, on_done, oversize),
                daemon=True,
                name=f"sim-{self.server}-{command.id}",
            )
            thread.start()
        else:
            self._run(command, ctx, 0.0, malformed, on_done, oversize)

    def _run(
        self,
        command: Command,
        ctx: Context,
        delay: float,
        malformed: str | bool | None,
        on_done: Callable[[Command], None] | None,
        oversize: tuple[float, str | None] | None = None,
    ) -> None:
        if delay > 0 and command.cancel.wait(delay):
            return
        records: list[Record] = []
        failure: ErrorInfo | None = None
        try:
            for record in run_pipeline(ctx, command.invocations):
                records.append(record)
        except CmdletError as exc:
            failure = exc.info
        except Exception as exc:  # a bug in a cmdlet must not kill the endpoint: report it
            failure = ErrorInfo(
                message=f"The simulator failed to run the pipeline: {type(exc).__name__}: {exc}",
                exception_type="System.InvalidOperationException",
                fqid="SimulatorInternalError",
                category="NotSpecified",
                reason=type(exc).__name__,
            )
        if oversize is not None:
            records = oversized(records, *oversize)
        self._write(command, records, failure, malformed)
        if on_done is not None:
            on_done(command)

    def _write(
        self,
        command: Command,
        records: Sequence[Record],
        failure: ErrorInfo | None,
        malformed: str | bool | None,
    ) -> None:
        with self._lock:
            if self.closed or command.cancel.is_set() or command.id not in self.commands:
                return
            pipeline = command.pipeline
            for record in records:
                if isinstance(record, Output):
                    data = record.as_bytes()
                    if malformed is not False:
                        data = break_clixml(data, malformed if isinstance(malformed, str) else None)
                    pipeline.write_output(RawClixml(data))
                elif isinstance(record, Warning):
                    pipeline.write_warning(record.message)
                elif isinstance(record, Error):
                    exception, category = _error_record(record.info)
                    pipeline.write_error(
                        exception,
                        category_info=category,
                        target_object=record.info.target_name or None,
                        fully_qualified_error_id=record.info.fqid,
                    )
            if failure is None:
                pipeline.complete()
            else:
                exception, category = _error_record(failure)
                pipeline.fail(
                    ErrorRecord(
                        Exception=exception,
                        CategoryInfo=category,
                        TargetObject=failure.target_name or None,
                        FullyQualifiedErrorId=failure.fqid,
                    )
                )
            command.finished = True
            self._flush()
