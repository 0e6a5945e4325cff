"""WS-Management (MS-WSMV) envelopes: parse requests, build responses and faults.

Only what a PowerShell remoting client uses is handled: transfer Create/Get/Delete and the shell
Command/Receive/Send/Signal actions. Every response carries ``wsa:RelatesTo`` equal to the
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
}

ACTION_CREATE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Create"
ACTION_DELETE = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Delete"
ACTION_GET = "http://schemas.xmlsoap.org/ws/2004/09/transfer/Get"
ACTION_COMMAND = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Command"
ACTION_RECEIVE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Receive"
ACTION_SEND = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Send"
ACTION_SIGNAL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/Signal"
RESPONSE_ACTIONS = {
    ACTION_CREATE: "http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse",
    ACTION_DELETE: "http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse",
    ACTION_GET: "http://schemas.xmlsoap.org/ws/2004/09/transfer/GetResponse",
    ACTION_COMMAND: "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandResponse",
    ACTION_RECEIVE: "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/ReceiveResponse",
    ACTION_SEND: "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SendResponse",
    ACTION_SIGNAL: "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/SignalResponse",
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


def create_body(
    idle_timeout: float,
    address: str,
    resource_uri: str,
    shell_id: str,
    owner: str,
    client_ip: str,
    input_streams: str,
    output_streams: str,
) -> str:
    """The body of a Create response: ResourceCreated (pypsrp takes the selector from here) + Shell."""
    shell = shell_body(idle_timeout, shell_id, resource_uri, owner, client_ip, input_streams, output_streams)
    return (
        f"<x:ResourceCreated><a:Address>{escape(address)}</a:Address><a:ReferenceParameters>"
        f"<w:ResourceURI>{escape(resource_uri)}</w:ResourceURI><w:SelectorSet>"
        f'<w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet></a:ReferenceParameters>'
        f"</x:ResourceCreated><rsp:Shell>{shell}</rsp:Shell>"
    )


def shell_body(
    idle_timeout: float,
    shell_id: str,
    resource_uri: str,
    owner: str,
    client_ip: str,
    input_streams: str,
    output_streams: str,
    state: str = "Connected",
) -> str:
    """The child elements of ``rsp:Shell`` (Create and Get responses)."""
    return (
        f"<rsp:ShellId>{shell_id}</rsp:ShellId><rsp:Name>Runspace1</rsp:Name>"
        f"<rsp:ResourceUri>{escape(resource_uri)}</rsp:ResourceUri><rsp:Owner>{escape(owner)}</rsp:Owner>"
        f"<rsp:ClientIP>{escape(client_ip)}</rsp:ClientIP>"
        f"<rsp:IdleTimeOut>PT{idle_timeout or 7200:.3f}S</rsp:IdleTimeOut>"
        f"<rsp:InputStreams>{escape(input_streams)}</rsp:InputStreams>"
        f"<rsp:OutputStreams>{escape(output_streams)}</rsp:OutputStreams>"
        f"<rsp:MaxIdleTimeOut>PT43200.000S</rsp:MaxIdleTimeOut><rsp:Locale>en-US</rsp:Locale>"
        f"<rsp:DataLocale>en-US</rsp:DataLocale><rsp:CompressionMode>NoCompression</rsp:CompressionMode>"
        f"<rsp:ProfileLoaded>Yes</rsp:ProfileLoaded><rsp:Encoding>UTF8</rsp:Encoding>"
        f"<rsp:BufferMode>Block</rsp:BufferMode><rsp:State>{state}</rsp:State>"
        f"<rsp:ShellRunTime>P0DT0H0M0S</rsp:ShellRunTime><rsp:ShellInactivity>P0DT0H0M0S</rsp:ShellInactivity>"
    )
