"""The WSMan operations on shells as objects: Enumerate/Pull, Disconnect, Reconnect, Connect.

What a client needs to find the shells it left behind and close or take them over, as MS-WSMV
(Web Services Management Protocol Extensions for Windows Vista) and MS-PSRP describe them:

- Enumerate (MS-WSMV 3.1.4.8.2, note <114>): only on the resource URI
  ``http://schemas.microsoft.com/wbem/wsman/1/windows/shell`` (any other gets ActionNotSupported); the
  items are ``rsp:Shell`` elements as in a Get response (Name, State, ShellRunTime, ShellInactivity...).
  A filter is refused (FilteringNotSupported, 3.1.4.1.13). ``.../windows/shell/Command`` with a
  SelectorFilter on ShellId lists a shell's running commands (note <115>: Windows Server 2012 and later).
  With ``wsman:OptimizeEnumeration`` up to ``wsman:MaxElements`` items (default 1) come in the
  EnumerateResponse, the rest by Pull; without it every item is pulled.
- Each user sees only the shells they own. Inferred: MS-WSMV does not say which shells an Enumerate
  returns; WinRM shows an administrator every user's shells, and a monitoring account is no
  administrator of the Exchange server, so the stricter answer is modelled.
- Disconnect (3.1.4.15) marks the shell Disconnected (its ``rsp:IdleTimeOut``, capped at MaxIdleTimeOut,
  replaces the idle timeout); then every request but Disconnect, Reconnect, Connect and Delete gets an
  InternalError fault (3.1.4.1.31.7). Reconnect (3.1.4.16) from the client holding a Connected shell is
  ignored, from another client refused; a Disconnected shell is reconnected. Connect (3.1.4.17; MS-PSRP
  4.1.2) on a Connected shell is refused, on a Disconnected one runs the PSRP connect sequence.
- A client that vanished (killed, network gone) without Disconnect leaves its shell Connected: "the
  server MUST treat the shell as an idle shell, not a disconnected shell" (3.1.6.5). Such a shell can be
  neither connected nor reconnected from a new client; it stays open, counted against the user's
  session limit, until the idle timeout ends it or its owner deletes it. Delete (3.1.4.4.1, note <108>:
  "forcibly close the Shell") is accepted from any client of the owning user, in either state; MS-WSMV
  puts no client condition on it (that no other check applies is inferred).

The Exchange endpoint is IIS hosting the WinRM IIS extension; that it answers these operations as the
WinRM service does is inferred (no public source covers Enumerate or Connect against /PowerShell).
"""

from __future__ import annotations

import base64
import binascii
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

from exporter.simulator import wsman
from exporter.simulator.shells import Shell, ShellError
from exporter.simulator.wsman import NS, WSManRequest

if TYPE_CHECKING:
    from exporter.simulator.service import EndpointService

__all__ = ["SHELL_RESOURCE_URI", "ShellOps"]

SHELL_RESOURCE_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
COMMAND_RESOURCE_URI = SHELL_RESOURCE_URI + "/Command"
SELECTOR_DIALECT = "http://schemas.dmtf.org/wbem/wsman/1/wsman/SelectorFilter"
_MAX_CONTEXTS = 64  # open enumerations kept per endpoint (WinRM ends idle ones after 60 s; not modelled)


class ShellOps:
    """Enumerate/Pull and Disconnect/Reconnect/Connect for one endpoint's shells."""

    def __init__(self, service: EndpointService) -> None:
        self._service = service
        self._contexts: OrderedDict[str, tuple[str, list[str]]] = OrderedDict()  # context -> (user, items)
        self._lock = threading.Lock()

    # -- enumeration ---------------------------------------------------------------------------
    def enumerate(self, request: WSManRequest, user: str) -> bytes:
        """An Enumerate of the user's shells, or of one shell's commands."""
        uri = request.resource_uri.lower()
        body = request.body
        if body is None or body.tag != f"{{{NS['wsen']}}}Enumerate":
            raise wsman.invalid_request("The Enumerate request has no wsen:Enumerate body.")
        if uri == SHELL_RESOURCE_URI.lower():
            if body.find("wsman:Filter", NS) is not None or body.find("wsen:Filter", NS) is not None:
                raise wsman.filtering_not_supported()
            items = [f"<rsp:Shell>{wsman.shell_body(self._service.view(s))}</rsp:Shell>" for s in self._mine(user)]
        elif uri == COMMAND_RESOURCE_URI.lower():
            items = self._commands(body, user)
        else:
            raise wsman.action_not_supported(request.action)
        optimize = body.find("wsman:OptimizeEnumeration", NS) is not None
        first = _max_elements(body, "wsman:MaxElements") if optimize else 0
        return self._page(request, "EnumerateResponse", user, items, first)

    def pull(self, request: WSManRequest, user: str) -> bytes:
        """A Pull of the next items of an enumeration this user started."""
        body = request.body
        context = body.find("wsen:EnumerationContext", NS) if body is not None else None
        key = (context.text or "").strip() if context is not None else ""
        with self._lock:
            found = self._contexts.pop(key, None)
        if found is None or found[0].lower() != user.lower():
            raise wsman.invalid_enumeration_context()
        return self._page(request, "PullResponse", user, found[1], _max_elements(body, "wsen:MaxElements"))

    def _page(self, request: WSManRequest, response: str, user: str, items: list[str], count: int) -> bytes:
        now, rest = items[:count], items[count:]
        context = None
        if rest or (response == "EnumerateResponse" and count == 0):
            context = f"uuid:{str(uuid.uuid4()).upper()}"
            with self._lock:
                self._contexts[context] = (user, rest)
                while len(self._contexts) > _MAX_CONTEXTS:
                    self._contexts.popitem(last=False)
        return wsman.build_response(request, wsman.enumeration_body(response, now, context))

    def _mine(self, user: str) -> list[Shell]:
        shells = self._service.shells()
        return sorted((s for s in shells if s.user.lower() == user.lower()), key=lambda s: s.created_at)

    def _commands(self, body: Element, user: str) -> list[str]:
        selectors = {}
        flt = body.find("wsman:Filter", NS)
        if flt is None or flt.attrib.get("Dialect") != SELECTOR_DIALECT:
            raise wsman.filtering_not_supported()
        for sel in flt.findall("wsman:SelectorSet/wsman:Selector", NS):
            selectors[sel.attrib.get("Name", "")] = (sel.text or "").strip().upper()
        shell = next((s for s in self._mine(user) if s.id == selectors.get("ShellId")), None)
        if shell is None:
            return []
        return [
            f"<rsp:Command><rsp:CommandId>{str(c.id).upper()}</rsp:CommandId>"
            f"<rsp:CommandLine>{escape(' | '.join(c.names))}</rsp:CommandLine></rsp:Command>"
            for c in list(shell.commands.values())
            if not c.finished
        ]

    # -- connection state ----------------------------------------------------------------------
    def disconnect(self, request: WSManRequest, shell: Shell) -> bytes:
        """Disconnect: the shell stays, Disconnected, with the IdleTimeOut the client asked for."""
        body = request.body
        timeout_el = body.find("rsp:IdleTimeOut", NS) if body is not None else None
        idle = None
        if timeout_el is not None and (timeout_el.text or "").strip():
            idle = min(wsman.MAX_IDLE_TIMEOUT, wsman.parse_duration(timeout_el.text or ""))
        _check(lambda: shell.disconnect(idle))
        return wsman.build_response(request, "<rsp:DisconnectResponse/>")

    def reconnect(self, request: WSManRequest, shell: Shell) -> bytes:
        """Reconnect: ignored from the client that holds the shell, refused from any other."""
        if shell.state == "Connected":
            if shell.client_id and shell.client_id == request.session_id:
                return wsman.build_response(request, "<rsp:ReconnectResponse/>")
            raise wsman.shell_in_use(shell.id)
        _check(lambda: shell.reconnect(request.session_id))
        return wsman.build_response(request, "<rsp:ReconnectResponse/>")

    def connect(self, request: WSManRequest, shell: Shell) -> bytes:
        """Connect from a client without PSRP state: only to a Disconnected shell."""
        if shell.state == "Connected":
            raise wsman.shell_in_use(shell.id)
        version = request.options.get("protocolversion", "")
        if version.split(".")[0] != "2":
            raise wsman.WSManFault(
                wsman.CODE_PROTOCOL_VERSION,
                f"The protocol version {version or '(none)'} of the client is not supported by the server.",
                subcode="w:InvalidOptions",
                value="s:Sender",
            )
        body = request.body
        xml = body.find("pwsh:connectXml", NS) if body is not None else None
        if body is None or body.tag != f"{{{NS['rsp']}}}Connect" or xml is None:
            raise wsman.invalid_request("The Connect request has no rsp:Connect body with connectXml.")
        try:
            data = base64.b64decode(xml.text or "", validate=False)
        except (binascii.Error, ValueError):
            raise wsman.invalid_request("connectXml is not base64.") from None
        answer = _check(lambda: shell.connect(request.session_id, data))
        return wsman.build_response(
            request,
            f"<rsp:ConnectResponse><rsp:InputStreams>{escape(shell.input_streams)}</rsp:InputStreams>"
            f"<rsp:OutputStreams>{escape(shell.output_streams)}</rsp:OutputStreams>"
            f'<pwsh:connectResponseXml xmlns:pwsh="{NS["pwsh"]}">{base64.b64encode(answer).decode()}'
            "</pwsh:connectResponseXml></rsp:ConnectResponse>",
        )


def _check(fn: Callable[[], bytes | None]) -> bytes:
    """Run a shell state change; psrpcore refusing it (a bad state or message) becomes a fault."""
    try:
        return fn() or b""
    except ShellError as exc:
        raise wsman.internal_error(wsman.CODE_PLUGIN_FAILED, str(exc)) from None
    except Exception as exc:  # psrpcore's InvalidRunspacePoolState and friends
        raise wsman.internal_error(wsman.CODE_PLUGIN_FAILED, f"{type(exc).__name__}: {exc}") from None


def _max_elements(body: Element | None, path: str) -> int:
    el = body.find(path, NS) if body is not None else None
    try:
        return max(1, int((el.text or "1").strip())) if el is not None else 1
    except ValueError:
        return 1
