"""One simulated server's PowerShell endpoint: WSMan actions on shells, limits, faults, stats.

:class:`EndpointService` turns an authenticated, parsed WSMan request into a response envelope. It
owns the endpoint's shells, enforces the per-user session limit (Exchange's PowerShellMaxConcurrency)
and applies the cmdlet-scoped transport faults once a Command request reveals which cmdlets run.
Endpoint-wide transport faults (refused, hang, latency, HTTP errors) are applied in ``transport.py``.
"""

from __future__ import annotations

import base64
import binascii
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from exporter.simulator import wsman
from exporter.simulator.clocks import server_timeline
from exporter.simulator.cmdlets import Context
from exporter.simulator.cmdlets_probe import LONG_RUNNING
from exporter.simulator.faults import FaultInjector, FaultKind
from exporter.simulator.scenario import Scenario, ServerSpec
from exporter.simulator.shell_ops import SHELL_RESOURCE_URI, ShellOps
from exporter.simulator.shells import Command, ReceiveTimeout, Shell, ShellError
from exporter.simulator.timeline import Timeline
from exporter.simulator.wsman import NS, ShellView, WSManFault, WSManRequest

__all__ = ["EXCHANGE_RESOURCE_URI", "EndpointService", "HttpFault", "SimState", "Stats"]

EXCHANGE_RESOURCE_URI = "http://schemas.microsoft.com/powershell/Microsoft.Exchange"
_IIS_500 = b"The page cannot be displayed because an internal server error has occurred."


@dataclass
class HttpFault(Exception):
    """Answer with a plain HTTP error instead of a SOAP envelope."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class Stats:
    """Thread-safe counters exposed by ``Simulator.stats()`` and ``GET /sim/stats``."""

    def __init__(self, servers: list[str]) -> None:
        self._lock = threading.Lock()
        self.servers = servers
        self.shells_created: Counter[str] = Counter()
        self.shells_closed: Counter[str] = Counter()
        self.shells_expired: Counter[str] = Counter()
        self.shells_rejected: Counter[str] = Counter()
        self.commands: Counter[str] = Counter()
        self.commands_by_server: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.auth_failures: Counter[str] = Counter()
        self.kerberos_logons: Counter[str] = Counter()  # security contexts established (one per connection)
        self.encrypted_messages: Counter[str] = Counter()  # requests that arrived sealed (message encryption)
        self.responses_cut: Counter[str] = Counter()  # responses the client closed before their last byte
        self.output_bytes_sent: Counter[str] = Counter()  # command stream bytes sent in Receive responses
        self.open_shells: dict[str, int] = dict.fromkeys(servers, 0)

    def add(self, counter: str, server: str, amount: int = 1) -> None:
        """Increment ``counter`` (an attribute name) for ``server``."""
        with self._lock:
            getattr(self, counter)[server] += amount

    def command(self, server: str, names: list[str]) -> None:
        """Count one pipeline run (each cmdlet name in it)."""
        with self._lock:
            self.commands_by_server[server] += 1
            for name in names:
                self.commands[name] += 1

    def set_open(self, server: str, count: int) -> None:
        """Record the number of open shells on ``server``."""
        with self._lock:
            self.open_shells[server] = count

    def snapshot(self) -> dict[str, Any]:
        """All counters as plain data (totals and per server)."""
        with self._lock:
            per_server = {
                s: {
                    "shells_created": self.shells_created[s],
                    "shells_closed": self.shells_closed[s],
                    "shells_expired": self.shells_expired[s],
                    "shells_rejected": self.shells_rejected[s],
                    "shells_open": self.open_shells.get(s, 0),
                    "commands": self.commands_by_server[s],
                    "requests": self.requests[s],
                    "auth_failures": self.auth_failures[s],
                    "kerberos_logons": self.kerberos_logons[s],
                    "encrypted_messages": self.encrypted_messages[s],
                    "responses_cut": self.responses_cut[s],
                    "output_bytes_sent": self.output_bytes_sent[s],
                }
                for s in self.servers
            }
            return {
                "shells_created": sum(self.shells_created.values()),
                "shells_closed": sum(self.shells_closed.values()),
                "shells_expired": sum(self.shells_expired.values()),
                "shells_rejected": sum(self.shells_rejected.values()),
                "shells_open": sum(self.open_shells.values()),
                "commands": dict(self.commands),
                "requests": sum(self.requests.values()),
                "auth_failures": sum(self.auth_failures.values()),
                "kerberos_logons": sum(self.kerberos_logons.values()),
                "encrypted_messages": sum(self.encrypted_messages.values()),
                "responses_cut": sum(self.responses_cut.values()),
                "output_bytes_sent": sum(self.output_bytes_sent.values()),
                "servers": per_server,
            }


@dataclass
class SimState:
    """What all endpoints share: the organisation, time, faults and counters."""

    scenario: Scenario
    timeline: Timeline
    faults: FaultInjector
    stats: Stats
    stopping: threading.Event = field(default_factory=threading.Event)


def _throttle_message(state: SimState, server: ServerSpec, user: str, open_count: int) -> str:
    org = state.scenario.organisation
    limit = state.scenario.session_limit
    dc = ",".join(f"DC={p}" for p in org.domain.split("."))
    policy = uuid.uuid5(uuid.NAMESPACE_DNS, f"throttling.{org.domain}")
    return (
        f"[AuthZRequestId={uuid.uuid4()}][FailureCategory=AuthZ-AuthorizationException] Fail to "
        "create a runspace "
        f"because you have exceeded the maximum number of connections allowed : {limit} for the "
        "policy party : "
        "MaxConcurrency. Please close existing runspace and try again later.\n"
        f"Policy: CN=DefaultThrottlingPolicy_{policy},CN=Global Settings,CN={org.name},CN=Microsoft Exchange,"
        f"CN=Services,CN=Configuration,{dc}; \n"
        f"Snapshot: Owner:\t{user}~WSMan~false\nBudgetType:\tWSMan\nActiveRunspaces:\t{open_count}/{limit}\n"
        f"Locked:\tFalse\nLockRemaining:\t00:00:00"
    )


class EndpointService:
    """The PowerShell endpoint of one simulated server."""

    def __init__(self, state: SimState, server: ServerSpec) -> None:
        self.state = state
        self.server = server
        self._shells: dict[str, Shell] = {}
        self._lock = threading.Lock()
        self._ops = ShellOps(self)
        self._request = threading.local()  # the cmdlets of the command the current request is about

    def request_cmdlets(self) -> list[str] | None:
        """The cmdlets of the command the last request handled on this thread was about (its Command or
        Receive request), None for any other request: cmdlet-scoped response faults (``drip``) use it."""
        return getattr(self._request, "names", None)

    # -- shell registry ------------------------------------------------------------------------
    def _update_open(self) -> None:
        self.state.stats.set_open(self.server.name, len(self._shells))

    def _purge_idle(self) -> None:
        """Forget shells idle for longer than the scenario's shell_idle_timeout_seconds (lock held).

        Like WinRM's IdleTimeOut: a client that vanished without closing its pool stops counting
        against the session limit after a while. 0 disables it.
        """
        default = self.state.scenario.shell_idle_timeout_seconds
        now = self.state.timeline.now()
        idle = [
            s
            for s in self._shells.values()
            if (limit := s.idle_timeout if s.idle_timeout is not None else default)
            and now - s.last_activity > limit
            and not s.busy
        ]
        for shell in idle:
            del self._shells[shell.id]
            shell.close()
        if idle:
            self.state.stats.add("shells_expired", self.server.name, len(idle))
            self._update_open()

    def shells(self) -> list[Shell]:
        """The open shells (after the idle ones are reaped)."""
        with self._lock:
            self._purge_idle()
            return list(self._shells.values())

    def view(self, shell: Shell) -> ShellView:
        """What a Get or Enumerate response reports about ``shell`` now."""
        now = self.state.timeline.now()
        return ShellView(
            shell_id=shell.id,
            resource_uri=shell.resource_uri,
            owner=shell.user,
            client_ip=shell.client_ip,
            input_streams=shell.input_streams,
            output_streams=shell.output_streams,
            idle_timeout=shell.idle_timeout or self.state.scenario.shell_idle_timeout_seconds,
            name=shell.name,
            state=shell.state,
            run_time=now - shell.created_at,
            inactivity=now - shell.last_activity,
        )

    def open_shells(self, user: str | None = None) -> int:
        """Number of open shells (of ``user`` when given, case-insensitive)."""
        with self._lock:
            self._purge_idle()
            if user is None:
                return len(self._shells)
            return sum(1 for s in self._shells.values() if s.user.lower() == user.lower())

    def expire_shells(self) -> int:
        """Forget every shell (``shell_expiry``); their next request gets the unknown-ShellId fault."""
        with self._lock:
            shells = list(self._shells.values())
            self._shells.clear()
            self._update_open()
        for shell in shells:
            shell.close()
        if shells:
            self.state.stats.add("shells_expired", self.server.name, len(shells))
        return len(shells)

    def close_all(self) -> None:
        """Close every shell (shutdown)."""
        with self._lock:
            shells = list(self._shells.values())
            self._shells.clear()
            self._update_open()
        for shell in shells:
            shell.close()

    def _shell(self, request: WSManRequest) -> Shell:
        shell_id = (request.shell_id or "").upper()
        with self._lock:
            shell = self._shells.get(shell_id)
        if shell is None:
            raise wsman.shell_not_found(request.shell_id or "")
        shell.touch(self.state.timeline.now())
        if request.resource_uri.lower() not in (shell.resource_uri.lower(), SHELL_RESOURCE_URI):
            raise wsman.resource_not_found(request.resource_uri)
        return shell

    # -- dispatch ------------------------------------------------------------------------------
    def handle(self, request: WSManRequest, user: str, client_ip: str, address: str) -> bytes:
        """Process one request; returns the response envelope or raises WSManFault / HttpFault."""
        self._request.names = None
        action = request.action
        if action == wsman.ACTION_CREATE:
            return self._create(request, user, client_ip, address)
        if action == wsman.ACTION_ENUMERATE:
            return self._ops.enumerate(request, user)
        if action == wsman.ACTION_PULL:
            return self._ops.pull(request, user)
        handlers = {
            wsman.ACTION_COMMAND: self._command,
            wsman.ACTION_RECEIVE: self._receive,
            wsman.ACTION_SEND: self._send,
            wsman.ACTION_SIGNAL: self._signal,
            wsman.ACTION_DELETE: self._delete,
            wsman.ACTION_GET: self._get,
            wsman.ACTION_DISCONNECT: self._ops.disconnect,
            wsman.ACTION_RECONNECT: self._ops.reconnect,
            wsman.ACTION_CONNECT: self._ops.connect,
        }
        handler = handlers.get(action)
        if handler is None:
            raise wsman.action_not_supported(action)
        shell = self._shell(request)
        if shell.user.lower() != user.lower():
            raise WSManFault(5, "Access is denied.", subcode="w:AccessDenied", value="s:Sender", http_status=500)
        if shell.state == "Disconnected" and action not in _ANY_STATE:
            raise wsman.shell_disconnected(shell.id)
        try:
            return handler(request, shell)
        except ShellError as exc:
            raise wsman.WSManFault(
                wsman.CODE_INVALID_REQUEST,
                f"The PowerShell plug-in rejected the request: {exc}",
                subcode="w:InvalidParameter",
                value="s:Sender",
            ) from None

    def _create(self, request: WSManRequest, user: str, client_ip: str, address: str) -> bytes:
        if request.resource_uri.lower() != EXCHANGE_RESOURCE_URI.lower():
            raise wsman.resource_not_found(request.resource_uri)
        body = request.body
        if body is None or body.tag != f"{{{NS['rsp']}}}Shell":
            raise wsman.invalid_request("The Create request has no rsp:Shell body.")
        creation = body.find("pwsh:creationXml", NS)
        if creation is None or not (creation.text or "").strip():
            raise wsman.invalid_request("The Create request has no creationXml (PowerShell shells need one).")
        try:
            creation_data = base64.b64decode(creation.text or "", validate=False)
        except (binascii.Error, ValueError):
            raise wsman.invalid_request("creationXml is not base64.") from None
        limit = self.state.scenario.session_limit
        requested = (body.attrib.get("ShellId") or "").upper()
        with self._lock:
            self._purge_idle()
            mine = sum(1 for s in self._shells.values() if s.user.lower() == user.lower())
            if mine >= limit:
                self.state.stats.add("shells_rejected", self.server.name)
                raise wsman.plugin_error(_throttle_message(self.state, self.server, user, mine))
            shell_id = requested if requested and requested not in self._shells else str(uuid.uuid4()).upper()
            input_streams = _child_text(body, "rsp:InputStreams", "stdin pr")
            output_streams = _child_text(body, "rsp:OutputStreams", "stdout")
            shell = Shell(
                shell_id,
                self.server.name,
                user,
                EXCHANGE_RESOURCE_URI,
                input_streams,
                output_streams,
                client_ip,
                name=_child_text(body, "rsp:Name", "Runspace1"),
                client_id=request.session_id,
            )
            shell.roles = self.state.scenario.roles_of(user)
            shell.created_at = self.state.timeline.now()
            shell.touch(shell.created_at)
            self._shells[shell_id] = shell  # reserve the slot while the pool opens
            self._update_open()
        try:
            shell.open(creation_data)
        except ShellError as exc:
            with self._lock:
                self._shells.pop(shell_id, None)
                self._update_open()
            raise wsman.plugin_error(f"The runspace pool could not be opened: {exc}") from None
        self.state.stats.add("shells_created", self.server.name)
        return wsman.build_response(request, wsman.create_body(address, self.view(shell)))

    def _get(self, request: WSManRequest, shell: Shell) -> bytes:
        return wsman.build_response(request, f"<rsp:Shell>{wsman.shell_body(self.view(shell))}</rsp:Shell>")

    def _delete(self, request: WSManRequest, shell: Shell) -> bytes:
        with self._lock:
            self._shells.pop(shell.id, None)
            self._update_open()
        shell.close()
        self.state.stats.add("shells_closed", self.server.name)
        return wsman.build_response(request, "")

    def _command(self, request: WSManRequest, shell: Shell) -> bytes:
        body = request.body
        if body is None or body.tag != f"{{{NS['rsp']}}}CommandLine":
            raise wsman.invalid_request("The Command request has no rsp:CommandLine body.")
        raw_id = body.attrib.get("CommandId") or str(uuid.uuid4())
        try:
            command_id = uuid.UUID(raw_id)
        except ValueError:
            raise wsman.invalid_request(f"CommandId {raw_id!r} is not a GUID.") from None
        arguments = b"".join(base64.b64decode(a.text or "") for a in body.findall("rsp:Arguments", NS))
        command = shell.create_command(command_id, arguments)
        self._request.names = command.names
        self._apply_command_faults(shell, command)
        self.state.stats.command(self.server.name, ["<script>" if i.is_script else i.name for i in command.invocations])
        timeline = server_timeline(self.state.timeline, self.server)  # the session server's clock and zone
        ctx = Context(self.state.scenario, timeline, self.server, shell.user, self.state.faults, roles=shell.roles)
        faults = self.state.faults
        delay_fault = faults.find(self.server.name, FaultKind.CMDLET_LATENCY, command.names)
        malformed_fault = faults.find(self.server.name, FaultKind.MALFORMED_CLIXML, command.names)
        oversize = faults.find(self.server.name, FaultKind.OVERSIZE, command.names)
        shell.execute(
            command,
            ctx,
            delay=(delay_fault.seconds or 0.0) if delay_fault else 0.0,
            malformed=malformed_fault.message if malformed_fault else False,
            oversize=(oversize.megabytes or 0.0, oversize.message) if oversize else None,
            background=any(name.lower() in LONG_RUNNING for name in command.names),
        )
        return wsman.build_response(
            request, f"<rsp:CommandResponse><rsp:CommandId>{raw_id}</rsp:CommandId></rsp:CommandResponse>"
        )

    def _apply_command_faults(self, shell: Shell, command: Command) -> None:
        """Transport faults scoped to a cmdlet act on the Command request that runs it."""
        faults = self.state.faults
        server = self.server.name

        def scoped(kind: FaultKind) -> Any:
            fault = faults.find(server, kind, command.names)
            return fault if fault is not None and fault.cmdlet is not None else None

        if scoped(FaultKind.HANG) is not None:
            faults.wait_while(lambda: scoped(FaultKind.HANG) is not None)
            if faults.stopping:
                shell.discard_command(command.id)
                raise HttpFault(503, b"The service is unavailable.")
        latency = scoped(FaultKind.LATENCY)
        if latency is not None:
            faults.sleep(latency.seconds or 0.0)
        error: Exception | None = None
        if (fault := scoped(FaultKind.HTTP401)) is not None:
            error = HttpFault(
                401,
                b"401 - Unauthorized: Access is denied due to invalid credentials.",
                {"WWW-Authenticate": f'Basic realm="{self.server.fqdn}"'},
            )
        elif (fault := scoped(FaultKind.HTTP500)) is not None:
            error = HttpFault(500, (fault.message or "").encode() or _IIS_500)
        elif (fault := scoped(FaultKind.WSMAN_FAULT)) is not None:
            error = injected_wsman_fault(fault.message)
        if error is not None:
            shell.discard_command(command.id)
            raise error

    def _receive(self, request: WSManRequest, shell: Shell) -> bytes:
        body = request.body
        stream = body.find("rsp:DesiredStream", NS) if body is not None else None
        raw_id = stream.attrib.get("CommandId") if stream is not None else None
        command_id = None
        if raw_id:
            try:
                command_id = uuid.UUID(raw_id)
            except ValueError:
                raise wsman.invalid_request(f"CommandId {raw_id!r} is not a GUID.") from None
        budget = max(1024, int((request.max_envelope_size - 4096) * 3 / 4))
        command = shell.commands.get(command_id) if command_id is not None else None
        if command is not None:
            self._request.names = command.names
            if command.one_response:  # oversize "one_response": a server ignoring MaxEnvelopeSize
                budget = 1 << 40
        timeout = max(0.05, min(request.operation_timeout, 60.0))
        try:
            data, done = shell.receive(command_id, budget, timeout, self.state.stopping.is_set)
        except ReceiveTimeout:
            raise wsman.timed_out() from None
        except ShellError:
            raise wsman.shell_not_found(shell.id) from None
        if shell.closed:
            raise wsman.shell_not_found(shell.id)
        attr = f' CommandId="{escape(raw_id)}"' if raw_id else ""
        parts = ["<rsp:ReceiveResponse>"]
        if data and command_id is not None:
            self.state.stats.add("output_bytes_sent", self.server.name, len(data))
        if data:
            parts.append(f'<rsp:Stream Name="stdout"{attr}>{base64.b64encode(data).decode()}</rsp:Stream>')
        if raw_id:
            state = wsman.COMMAND_STATE_DONE if done else wsman.COMMAND_STATE_RUNNING
            parts.append(f'<rsp:CommandState{attr} State="{state}"/>')
        parts.append("</rsp:ReceiveResponse>")
        return wsman.build_response(request, "".join(parts))

    def _send(self, request: WSManRequest, shell: Shell) -> bytes:
        body = request.body
        stream = body.find("rsp:Stream", NS) if body is not None else None
        if stream is None:
            raise wsman.invalid_request("The Send request has no rsp:Stream.")
        raw_id = stream.attrib.get("CommandId")
        command_id = uuid.UUID(raw_id) if raw_id else None
        shell.send(command_id, base64.b64decode(stream.text or ""))
        return wsman.build_response(request, "<rsp:SendResponse/>")

    def _signal(self, request: WSManRequest, shell: Shell) -> bytes:
        body = request.body
        if body is None:
            raise wsman.invalid_request("The Signal request has no rsp:Signal body.")
        raw_id = body.attrib.get("CommandId", "")
        code = _child_text(body, "rsp:Code", "")
        try:
            shell.signal(uuid.UUID(raw_id), code)
        except ValueError:
            raise wsman.invalid_request(f"CommandId {raw_id!r} is not a GUID.") from None
        return wsman.build_response(request, "<rsp:SignalResponse/>")


# The operations MS-WSMV 3.1.4.1.31.7 still accepts on a disconnected shell.
_ANY_STATE = frozenset({wsman.ACTION_DELETE, wsman.ACTION_DISCONNECT, wsman.ACTION_RECONNECT, wsman.ACTION_CONNECT})


def injected_wsman_fault(message: str | None) -> WSManFault:
    """The SOAP fault sent by the ``wsman_fault`` fault kind."""
    return wsman.plugin_error(
        message
        or "The WS-Management service cannot process the request. The PowerShell plug-in of the simulated "
        "Exchange server reported an internal error (injected fault)."
    )


def _child_text(element: Any, path: str, default: str) -> str:
    child = element.find(path, NS)
    return (child.text or "").strip() if child is not None and child.text else default
