"""WS-Management (MS-WSMV) envelopes: parse requests, build responses and faults.

Only what a PowerShell remoting client uses is handled: transfer Create/Get/Delete, the shell
Command/Receive/Send/Signal actions, enumeration of shells (Enumerate/Pull) and the shell
Disconnect/Reconnect/Connect actions. Every response carries ``wsa:RelatesTo`` equal to the
request's ``wsa:MessageID`` (pypsrp rejects anything else). Faults are HTTP 500 with an
``s:Fault`` whose detail is a ``WSManFault`` (pypsrp raises ``WSManFaultError`` with its code).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

__all__ = [
    "NS",
    "ShellView",
    "WSManFault",
    "WSManRequest",
    "build_response",
    "parse_request",
]

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "wsmv": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "wst": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "wsmanfault": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
    "pwsh": "http://schemas.microsoft.com/powershell",
    "wsen": "http://schemas.xmlsoap.org/ws/2004/09/enumeration",
}

ACTION_CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
ACTION_DELETE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
ACTION_GET = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get"
ACTION_COMMAND = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command"
ACTION_RECEIVE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive"
ACTION_SEND = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send"
ACTION_SIGNAL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal"
ACTION_ENUMERATE = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Enumerate"
ACTION_PULL = "http://schemas.xmlsoap.org/ws/2004/09/enumeration/Pull"
ACTION_CONNECT = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Connect"
ACTION_DISCONNECT = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Disconnect"
ACTION_RECONNECT = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Reconnect"
RESPONSE_ACTIONS = {
    ACTION_CREATE: "http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse",
    ACTION_DELETE: "http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse",
    ACTION_GET: "http://schemas.xmlsoap.org/ws/2004/09/transfer/GetResponse",
    ACTION_COMMAND: "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandResponse",
    ACTION_RECEIVE: "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse",
    ACTION_SEND: "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SendResponse",
    ACTION_SIGNAL: "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SignalResponse",
    ACTION_ENUMERATE: "http://schemas.xmlsoap.org/ws/2004/09/enumeration/EnumerateResponse",
    ACTION_PULL: "http://schemas.xmlsoap.org/ws/2004/09/enumeration/PullResponse",
    ACTION_CONNECT: "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ConnectResponse",
    ACTION_DISCONNECT: "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/DisconnectResponse",
    ACTION_RECONNECT: "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReconnectResponse",
}
COMMAND_STATE_DONE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"
COMMAND_STATE_RUNNING = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Running"
SIGNAL_TERMINATE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate"
SIGNAL_PS_CTRL_C = "powershell/signal/ctrl_c"
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
FAULT_ACTION = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"

# WSManFault codes (unsigned HRESULT values, as Windows reports them).
CODE_TIMED_OUT = 2150858793  # 0x80338029 ERROR_WSMAN_OPERATION_TIMEDOUT
CODE_SHELL_NOT_FOUND = 2150858843  # 0x8033805B ERROR_WSMAN_SHELL_NOT_FOUND ("invalid selectors")
CODE_RESOURCE_NOT_FOUND = 2150858811  # 0x8033803B resource URI not found in the WS-Management catalog
CODE_ACTION_NOT_SUPPORTED = 2150858771  # 0x80338013
CODE_INVALID_REQUEST = 2150858817  # 0x80338041 (malformed message)
CODE_PLUGIN_FAILED = 2150858819  # 0x80338043 (the PowerShell plug-in reported an error; -2144108477)
# 0x803381CD ERROR_WSMAN_INUSE_CANNOT_RECONNECT (-2144108083 in PowerShell's WSManNativeApi.cs): the code
# PowerShell's Connect-PSSession expects when a shell is in use by another client. Which code WinRM puts in
# the InternalError fault MS-WSMV 3.1.4.16/3.1.4.17 require is not documented: inferred.
CODE_IN_USE = 2150859213
CODE_PROTOCOL_VERSION = 2152991685  # MS-PSRP 3.2.5.3.15: the client's protocolversion is not accepted

_DURATION = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?$")


@dataclass
class WSManFault(Exception):
    """A WS-Management fault to send back (HTTP 500 by default)."""

    code: int
    message: str
    subcode: str = "w:InternalError"
    reason: str = ""
    value: str = "s:Receiver"
    http_status: int = 500
    detail: str | None = None

    def __str__(self) -> str:
        return f"WSManFault {self.code}: {self.message}"

    def envelope(self, relates_to: str | None, machine: str) -> bytes:
        """The SOAP fault envelope."""
        detail = f"<w:FaultDetail>{escape(self.detail)}</w:FaultDetail>" if self.detail else ""
        reason = self.reason or self.message
        body = (
            f"<s:Fault><s:Code><s:Value>{self.value}</s:Value><s:Subcode><s:Value>{self.subcode}</s:Value>"
            f'</s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">{escape(reason)}</s:Text></s:Reason>'
            f'<s:Detail><f:WSManFault xmlns:f="{NS["wsmanfault"]}" Code="{self.code}" '
            f"Machine={quoteattr(machine)}>"
            f"<f:Message>{escape(self.message)}</f:Message></f:WSManFault>{detail}</s:Detail></s:Fault>"
        )
        return _envelope(FAULT_ACTION, relates_to, body)


def timed_out() -> WSManFault:
    """The fault for a Receive that found no data within the OperationTimeout (clients retry)."""
    return WSManFault(
        CODE_TIMED_OUT,
        "The WS-Management service cannot complete the operation within the time specified in OperationTimeout.",
        subcode="w:TimedOut",
    )


def shell_not_found(shell_id: str) -> WSManFault:
    """The fault for a request on a shell the server does not know (expired, deleted)."""
    return WSManFault(
        CODE_SHELL_NOT_FOUND,
        f"The request for the Windows Remote Shell with ShellId {shell_id} failed because the shell "
        "was not found "
        "on the server. Possible causes are: the specified ShellId is incorrect or the shell no "
        "longer exists on "
        "the server. Provide the correct ShellId or create a new shell and try again. ",
        subcode="w:InvalidSelectors",
        value="s:Sender",
        reason="The WS-Management service cannot process the request because the request contained invalid "
        "selectors for the resource. ",
        detail="http://schemas.dmtf.org/wbem/wsman/1/wsman/faultDetail/UnexpectedSelectors",
    )


def resource_not_found(resource_uri: str) -> WSManFault:
    """The fault for a resource URI (PowerShell configuration) the endpoint does not serve."""
    return WSManFault(
        CODE_RESOURCE_NOT_FOUND,
        f"The WS-Management service cannot process the request. The resource URI ({resource_uri}) was "
        "not found "
        "in the WS-Management catalog. The catalog contains the metadata that describes resources, "
        "or logical "
        "endpoints.",
        subcode="w:DestinationUnreachable",
        value="s:Sender",
        reason="The WS-Management service cannot process the request because the resource URI is not found.",
    )


def action_not_supported(action: str) -> WSManFault:
    """The fault for an action this endpoint does not implement (Enumerate, Connect, ...)."""
    return WSManFault(
        CODE_ACTION_NOT_SUPPORTED,
        f"The WS-Management service cannot process the request. The action {action} is not supported.",
        subcode="a:ActionNotSupported",
        value="s:Sender",
    )


def internal_error(code: int, text: str) -> WSManFault:
    """A ``wsman:InternalError`` fault (what MS-WSMV prescribes for a request the shell's state refuses)."""
    return WSManFault(code, f"The WS-Management service cannot process the request. {text}", subcode="w:InternalError")


def shell_in_use(shell_id: str) -> WSManFault:
    """Connect or Reconnect to a shell that another client holds (MS-WSMV 3.1.4.16/3.1.4.17). Text inferred."""
    return internal_error(
        CODE_IN_USE,
        f"The shell {shell_id} is in use by another client: it is connected and cannot be connected or "
        "reconnected from this client. Disconnect it from the client that holds it, or delete it.",
    )


def shell_disconnected(shell_id: str) -> WSManFault:
    """A request other than Disconnect/Reconnect/Connect/Delete to a disconnected shell (MS-WSMV 3.1.4.1.31.7)."""
    return internal_error(
        CODE_PLUGIN_FAILED,
        f"The shell {shell_id} is disconnected. Connect or reconnect to it before sending other requests.",
    )


def filtering_not_supported() -> WSManFault:
    """An Enumerate of shells with a filter (MS-WSMV 3.1.4.1.13: only CIM/WMI resources are filtered)."""
    return WSManFault(
        CODE_INVALID_REQUEST,
        "The WS-Management service cannot process the request. Filtering is not supported for this resource.",
        subcode="wsen:FilteringNotSupported",
        value="s:Sender",
    )


def invalid_enumeration_context() -> WSManFault:
    """A Pull with an enumeration context the server does not have (ended, expired or never issued)."""
    return WSManFault(
        CODE_INVALID_REQUEST,
        "The WS-Management service cannot process the request. The enumeration context is not valid.",
        subcode="wsen:InvalidEnumerationContext",
        value="s:Receiver",
    )


def invalid_request(text: str) -> WSManFault:
    """The fault for a request that is not a valid WS-Management message."""
    return WSManFault(
        CODE_INVALID_REQUEST,
        f"The WS-Management service cannot process the request. {text}",
        subcode="w:InvalidMessageInformationHeader",
        value="s:Sender",
    )


def plugin_error(text: str) -> WSManFault:
    """A fault reported by the PowerShell plug-in (Exchange's throttling, injected faults...)."""
    return WSManFault(CODE_PLUGIN_FAILED, text)


@dataclass
class WSManRequest:
    """The parts of a WS-Management request the simulator uses."""

    action: str
    message_id: str
    resource_uri: str
    body: ET.Element | None
    selectors: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    operation_timeout: float = 60.0
    max_envelope_size: int = 153600
    #: ``wsmv:SessionId``: pypsrp sends one per WSMan object; the simulator takes it as MS-WSMV's ClientId.
    session_id: str = ""

    @property
    def shell_id(self) -> str | None:
        """The ShellId selector (how a client addresses an existing shell)."""
        return self.selectors.get("ShellId")


def _duration(text: str | None, default: float) -> float:
    if not text:
        return default
    match = _DURATION.match(text.strip())
    if not match:
        return default
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


def parse_duration(text: str) -> float:
    """Seconds in an xs:duration such as ``PT180.000S`` (0 when it is not one)."""
    return _duration(text, 0.0)


def parse_request(data: bytes) -> WSManRequest:
    """Parse a SOAP request; raises :class:`WSManFault` if it is not a usable WS-Management message."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise invalid_request(f"The request is not well-formed XML: {exc}.") from None
    header = root.find("s:Header", NS)
    if root.tag != f"{{{NS['s']}}}Envelope" or header is None:
        raise invalid_request("The request is not a SOAP 1.2 envelope.")

    def text(path: str) -> str:
        el = header.find(path, NS)
        return (el.text or "").strip() if el is not None else ""

    action = text("wsa:Action")
    message_id = text("wsa:MessageID")
    if not action or not message_id:
        raise invalid_request("The wsa:Action and wsa:MessageID headers are required.")
    selectors = {
        el.attrib.get("Name", ""): (el.text or "").strip()
        for el in header.findall("wsman:SelectorSet/wsman:Selector", NS)
    }
    options = {
        el.attrib.get("Name", ""): (el.text or "").strip() for el in header.findall("wsman:OptionSet/wsman:Option", NS)
    }
    try:
        max_envelope = int(text("wsman:MaxEnvelopeSize") or 153600)
    except ValueError:
        max_envelope = 153600
    body = root.find("s:Body", NS)
    return WSManRequest(
        action=action,
        message_id=message_id,
        resource_uri=text("wsman:ResourceURI"),
        body=body[0] if body is not None and len(body) else None,
        selectors=selectors,
        options=options,
        operation_timeout=_duration(text("wsman:OperationTimeout"), 60.0),
        max_envelope_size=max(8192, max_envelope),
        session_id=text("wsmv:SessionId").lower(),
    )


def _envelope(action: str, relates_to: str | None, body: str) -> bytes:
    relates = f"<a:RelatesTo>{escape(relates_to)}</a:RelatesTo>" if relates_to else ""
    return (
        f'<s:Envelope xml:lang="en-US" xmlns:s="{NS["s"]}" xmlns:a="{NS["wsa"]}" xmlns:x="{NS["wst"]}" '
        f'xmlns:w="{NS["wsman"]}" xmlns:rsp="{NS["rsp"]}" xmlns:p="{NS["wsmv"]}">'
        f"<s:Header><a:Action>{action}</a:Action><a:MessageID>uuid:{str(uuid.uuid4()).upper()}</a:MessageID>"
        f"<a:To>{ANONYMOUS}</a:To>{relates}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def build_response(request: WSManRequest, body: str) -> bytes:
    """The response envelope for ``request`` with the given (already serialised) body XML."""
    action = RESPONSE_ACTIONS.get(request.action, request.action + "Response")
    return _envelope(action, request.message_id, body)


def duration_text(seconds: float) -> str:
    """An xs:duration as WinRM writes ShellRunTime/ShellInactivity: ``P0DT0H4M53S``."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"P{days}DT{hours}H{minutes}M{secs}S"


@dataclass(frozen=True)
class ShellView:
    """What a Create, Get or Enumerate response says about one shell."""

    shell_id: str
    resource_uri: str
    owner: str
    client_ip: str
    input_streams: str
    output_streams: str
    idle_timeout: float
    name: str = "Runspace1"
    state: str = "Connected"
    run_time: float = 0.0
    inactivity: float = 0.0


def create_body(address: str, view: ShellView) -> str:
    """The body of a Create response: ResourceCreated (pypsrp takes the selector from here) + Shell."""
    shell = shell_body(view)
    resource_uri, shell_id = view.resource_uri, view.shell_id
    return (
        f"<x:ResourceCreated><a:Address>{escape(address)}</a:Address><a:ReferenceParameters>"
        f"<w:ResourceURI>{escape(resource_uri)}</w:ResourceURI><w:SelectorSet>"
        f'<w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet></a:ReferenceParameters>'
        f"</x:ResourceCreated><rsp:Shell>{shell}</rsp:Shell>"
    )


MAX_IDLE_TIMEOUT = 43200.0  # what the simulated plug-in reports as MaxIdleTimeOut (seconds)


def shell_body(view: ShellView) -> str:
    """The child elements of ``rsp:Shell`` (Create, Get and Enumerate responses)."""
    return (
        f"<rsp:ShellId>{view.shell_id}</rsp:ShellId><rsp:Name>{escape(view.name)}</rsp:Name>"
        f"<rsp:ResourceUri>{escape(view.resource_uri)}</rsp:ResourceUri><rsp:Owner>{escape(view.owner)}</rsp:Owner>"
        f"<rsp:ClientIP>{escape(view.client_ip)}</rsp:ClientIP>"
        f"<rsp:IdleTimeOut>PT{view.idle_timeout or 7200:.3f}S</rsp:IdleTimeOut>"
        f"<rsp:InputStreams>{escape(view.input_streams)}</rsp:InputStreams>"
        f"<rsp:OutputStreams>{escape(view.output_streams)}</rsp:OutputStreams>"
        f"<rsp:MaxIdleTimeOut>PT{MAX_IDLE_TIMEOUT:.3f}S</rsp:MaxIdleTimeOut><rsp:Locale>en-US</rsp:Locale>"
        f"<rsp:DataLocale>en-US</rsp:DataLocale><rsp:CompressionMode>NoCompression</rsp:CompressionMode>"
        f"<rsp:ProfileLoaded>Yes</rsp:ProfileLoaded><rsp:Encoding>UTF8</rsp:Encoding>"
        f"<rsp:BufferMode>Block</rsp:BufferMode><rsp:State>{view.state}</rsp:State>"
        f"<rsp:ShellRunTime>{duration_text(view.run_time)}</rsp:ShellRunTime>"
        f"<rsp:ShellInactivity>{duration_text(view.inactivity)}</rsp:ShellInactivity>"
    )


def enumeration_body(response: str, items: list[str], context: str | None) -> str:
    """An EnumerateResponse (``wsman:Items``, OptimizeEnumeration) or PullResponse (``wsen:Items``) body.

    ``context`` is given while items remain (the client Pulls them); without it the sequence ends
    (``EndOfSequence``). Each item is already serialised XML.
    """
    prefix = "w" if response == "EnumerateResponse" else "n"
    ctx = f"<n:EnumerationContext>{context}</n:EnumerationContext>" if context else ""
    tail = "" if context else f"<{prefix}:EndOfSequence/>"
    return (
        f'<n:{response} xmlns:n="{NS["wsen"]}">{ctx}<{prefix}:Items>{"".join(items)}</{prefix}:Items>{tail}'
        f"</n:{response}>"
    )
