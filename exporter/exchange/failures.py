"""Plain-language reasons for a failure to reach an Exchange endpoint.

What a person reads (the status page, ``check``, the one log line per failed poll) is derived from the
kind of failure, found by walking the exception chain: requests wraps urllib3's ``MaxRetryError``,
which wraps a ``NewConnectionError``, which wraps the socket's ``ConnectionRefusedError``. It is never a
library's repr: ``MaxRetryError: HTTPConnectionPool(host=..., port=...): Max retries exceeded ...``
tells an administrator nothing the endpoint URL and "connection refused" do not. The raw text and the
traceback go to the debug log only (see ``ExchangeSession.invoke``).
"""

from __future__ import annotations

import errno
import http.client
import socket
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import requests
import urllib3.exceptions
from pypsrp.exceptions import AuthenticationError, SerializationError, WinRMError, WinRMTransportError, WSManFaultError

__all__ = ["SESSION_LIMIT_TEXT", "exception_chain", "plain_reason"]

#: What Exchange's WSMan fault says when PowerShellMaxConcurrency is reached.
SESSION_LIMIT_TEXT = "exceeded the maximum number of connections"

_HTTP_STATUS = {
    403: "access denied (HTTP 403)",
    404: "no PowerShell endpoint at this URL (HTTP 404)",
    500: "the server failed the request (HTTP 500)",
    503: "the PowerShell endpoint is unavailable (HTTP 503)",
}
_OS_ERRORS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset by the server",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "connection timed out",
}


def exception_chain(exc: BaseException, limit: int = 24) -> Iterator[BaseException]:
    """``exc`` and every exception behind it: causes, contexts, and the ones requests and urllib3 keep in
    ``args[0]`` and ``reason`` (breadth first, each once)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < limit:
        item = todo.pop(0)
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        inner = [item.args[0] if item.args else None, getattr(item, "reason", None), item.__cause__, item.__context__]
        todo += [e for e in inner if isinstance(e, BaseException)]


def _seconds(value: float | None) -> str:
    return f" within {value:g}s" if value else ""


def plain_reason(
    exc: BaseException, account: str = "", connect_timeout: float | None = None, read_timeout: float | None = None
) -> str:
    """One short sentence saying why the endpoint could not be used: "connection refused", "host name does
    not resolve", "TLS certificate not accepted (certificate has expired)", "authentication failed for
    svc@contoso.com (HTTP 401)"... The endpoint itself is not in it (callers add it)."""
    chain = list(exception_chain(exc))
    who = f" for {account}" if account else ""
    for item in chain:  # the most specific first: a WSMan fault also carries its HTTP 500
        if isinstance(item, WSManFaultError):
            # The server's own words (reason, provider fault), not pypsrp's "Received a WSManFault message. (...)".
            said = [str(a) for a in item.args[2:6:3] if a]
            if SESSION_LIMIT_TEXT in " ".join(" ".join(said).split()):
                return f"session limit reached: Exchange refuses more PowerShell sessions{who}"
            first = (said[0] if said else "").strip().split(". ")[0].strip()
            return f"WSMan fault {item.args[0] if item.args else '?'}" + (f": {first[:160]}" if first else "")
        if isinstance(item, AuthenticationError):
            return f"authentication failed{who}" + (" (HTTP 401)" if _http_status(chain) == 401 else "")
        if isinstance(item, WinRMTransportError):
            if item.code == 401:
                return f"authentication failed{who} (HTTP 401)"
            return _HTTP_STATUS.get(item.code, f"the endpoint answered HTTP {item.code}")
    for item in chain:
        if isinstance(item, ssl.SSLCertVerificationError):
            detail = getattr(item, "verify_message", "") or ""
            return "TLS certificate not accepted" + (f" ({detail})" if detail else "")
    for item in chain:
        if isinstance(item, ssl.SSLError):
            if "WRONG_VERSION_NUMBER" in str(item) or "packet length too long" in str(item):
                return "TLS handshake failed: the port does not answer in TLS (is it a plain HTTP port?)"
            return "TLS handshake failed"
    for item in chain:
        text = _socket_reason(item, connect_timeout, read_timeout)
        if text:
            return text
    for item in chain:
        if isinstance(item, ET.ParseError | SerializationError):
            return "the answer could not be decoded"
        if isinstance(item, WinRMError):
            return "PowerShell remoting protocol error"
    return f"unexpected failure ({type(exc).__name__})"


def _http_status(chain: list[BaseException]) -> int | None:
    for item in chain:
        response = getattr(item, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status
    return None


def _socket_reason(item: BaseException, connect_timeout: float | None, read_timeout: float | None) -> str:
    """The reason of one link of the chain if it is a name, connect, read or reset failure, else ""."""
    if isinstance(item, socket.gaierror | urllib3.exceptions.NameResolutionError):
        return "host name does not resolve"
    if isinstance(item, ConnectionRefusedError):
        return "connection refused"
    # urllib3's NewConnectionError subclasses ConnectTimeoutError (history): only the exact class is a timeout.
    if type(item) is urllib3.exceptions.ConnectTimeoutError or isinstance(item, requests.exceptions.ConnectTimeout):
        return f"connection timed out (no answer to the connect{_seconds(connect_timeout)})"
    if isinstance(item, urllib3.exceptions.ReadTimeoutError | requests.exceptions.ReadTimeout):
        return f"no answer{_seconds(read_timeout)} (the connection is open, the server does not reply)"
    if isinstance(item, OSError) and item.errno in _OS_ERRORS:
        return _OS_ERRORS[item.errno]
    if isinstance(item, ConnectionResetError | http.client.RemoteDisconnected | BrokenPipeError):
        return "connection closed by the server before it answered"
    return ""
