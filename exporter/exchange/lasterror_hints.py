"""The next step for one classified LastError, with the details its text and its queue give.

:data:`exporter.exchange.lasterror.CATEGORY_HINTS` holds one runbook text per category. The
category is a label value and stays coarse; :func:`hint_for` refines the hint where the text or
the queue says more:

* connection failures by Winsock code: 10061 refused, 10060 timed out, 10051/10065 unreachable
  (the sending server has no route), 10054 reset;
* the next hop being the organisation's own smart host ("your smart host X", not "the remote host");
* the Front End's encoded proxy failures PRX1..PRX7 / CPRX1..CPRX2, each with what it means;
* Microsoft 365's 5.7.7xx tenant and IP blocks (support, not the delist portal);
* an expiry with its cause: the expiry hint followed by the cause's own hint.

PRX meanings follow Exchange's own ``SmtpResponse.EncodedProxyFailureResponse*`` names
(NoDestinations, DnsError, ConnectionFailure, ProtocolError, SocketError, Shutdown,
BackEndLocatorFailure, UserLookupFailure) and ``InboundProxyDestinationTrackerReject`` for PRX7, as
read in a decompiled Exchange 15 build (github evilashz/exchange-server-27065,
Microsoft.Exchange.Data.Transport/Data/Transport/Smtp/SmtpResponse.cs). The remedies per code are
inferred from those meanings and public Q&A threads, not from Microsoft documentation.
"""

from __future__ import annotations

import re

from exporter.exchange.lasterror import CATEGORY_HINTS, SmtpError, parse_smtp_error

__all__ = ["PRX_CODES", "hint_for", "proxy_code", "winsock_code"]

#: What each encoded Front End proxy failure means (see the module docstring for the source).
PRX_CODES: dict[str, str] = {
    "PRX1": "the Front End found no Mailbox server to proxy to",
    "PRX2": "the Front End's DNS lookup of the Mailbox server failed",
    "PRX3": "the Front End could not connect to the Mailbox server's Transport service",
    "PRX4": "the Mailbox server's Transport service answered the Front End with a protocol error",
    "PRX5": "a socket error on the Front End's connection to the Mailbox server",
    "PRX6": "the Front End Transport service was shutting down",
    "PRX7": "the Front End refused more concurrent sessions to one Mailbox server",
    "CPRX1": "the Front End could not locate the authenticated client's Mailbox server",
    "CPRX2": "the Front End could not look up the authenticated client",
}

# What to check on the receiving organisation's Front End, per PRX code.
_PRX_STEPS: dict[str, str] = {
    "PRX1": (
        "check that the Microsoft Exchange Transport service runs on the Mailbox servers of its site and that "
        "they are not in maintenance (Get-ServerComponentState <server> -Component HubTransport)"
    ),
    "PRX2": (
        "run Resolve-DnsName <Mailbox server FQDN> on the Front End, check that the Mailbox servers' NICs "
        "register in DNS ('Register this connection's addresses in DNS'), remove stale hosts-file entries, "
        "leave IPv6 enabled on the NICs, and check Get-FrontendTransportService | fl *DNS*"
    ),
    "PRX3": (
        "check that the Microsoft Exchange Transport service runs on the Mailbox servers and that port 2525 "
        "answers from the Front End (Test-NetConnection <Mailbox server> -Port 2525; host firewall, NIC order)"
    ),
    "PRX4": (
        "check the Mailbox server's 'Default <server>' receive connector (port 2525): bindings, permission "
        "groups (ExchangeServers), authentication (TLS, ExchangeServer) and its Exchange certificate"
    ),
    "PRX5": (
        "check the network path from the Front End to port 2525 of the Mailbox servers (NIC drivers and "
        "offloading, firewalls or inspection resetting sessions) and that their Transport service stays up"
    ),
    "PRX6": "check why the Front End Transport service restarted (Application log); it should pass",
    "PRX7": (
        "the Mailbox server's Transport service is slow to take mail: check it for back pressure "
        "(Application log events 15004-15007) and its queues"
    ),
}
_CPRX_STEP = "check that the Front End reaches Active Directory (a Global Catalog) and the user's Mailbox server"
_OTHER_PRX_STEP = "check the Front End's DNS resolution of, and connectivity to port 2525 of, the Mailbox servers"

_PRX = re.compile(r"\b(C?PRX\d{1,2})\b(?![.-]\w)")
_WINSOCK = re.compile(r"error code:?\s*(100\d\d)(?!\d)", re.IGNORECASE)
_REFUSED = re.compile(r"SocketConnectionRefused|\bconnection (?:was )?refused\b|\bactively refused\b", re.I)
_TIMEOUT = re.compile(r"SocketTimedout|\bconnection (?:attempt )?(?:has )?timed? ?out\b|\bno answer from host\b", re.I)
_UNREACHABLE = re.compile(r"\b(?:network|host) (?:is )?unreachable\b|\bno route to host\b", re.IGNORECASE)
_RESET = re.compile(r"\bconnection (?:was )?(?:reset|closed|dropped|lost|aborted|terminated)\b", re.IGNORECASE)
_M365_BLOCK = re.compile(r"(?<![\d.])5\.7\.(7(?:[0-4]\d|50))(?!\.?\d)")


def proxy_code(text: str | None) -> str | None:
    """The encoded proxy failure code in the text (``PRX2``, ``CPRX1``), upper-case, or ``None``."""
    match = _PRX.search(text or "")
    return match.group(1).upper() if match else None


def winsock_code(text: str | None) -> str | None:
    """The first Winsock/socket error code (``10060``) in the text, or ``None``."""
    match = _WINSOCK.search(text or "")
    return match.group(1) if match else None


def _connection_kind(err: SmtpError) -> str:
    """refused / timeout / unreachable / reset / other, by Winsock code first, then by wording."""
    code = winsock_code(err.response)
    by_code = {"10061": "refused", "10060": "timeout", "10051": "unreachable", "10065": "unreachable"}
    if code in by_code:
        return by_code[code]
    if code in ("10053", "10054"):
        return "reset"
    for kind, pattern in (("refused", _REFUSED), ("timeout", _TIMEOUT), ("unreachable", _UNREACHABLE)):
        if pattern.search(err.response):
            return kind
    if _RESET.search(err.response):
        return "reset"
    return {"connection_refused": "refused", "connection_timeout": "timeout"}.get(err.category, "other")


def _connection_hint(err: SmtpError, smart_host: str | None) -> str:
    kind = _connection_kind(err)
    if kind == "unreachable":
        target = f"your smart host {smart_host}" if smart_host else "the next hop"
        return (
            f"The transport server has no route to {target} (Winsock 10051/10065, network or host unreachable): "
            "the fault is on the sending side's network, not at the receiver; check the transport server's "
            "default gateway and routes (route print), the NIC used for outbound SMTP, VPN and firewall routing, "
            "and, when the last endpoint attempted is an IPv6 address, whether the server has IPv6 routing at all."
        )
    if smart_host is None:
        category = {"refused": "connection_refused", "timeout": "connection_timeout"}.get(kind, "connection_failed")
        return CATEGORY_HINTS[category]
    test = f"Test-NetConnection {smart_host} -Port <the send connector's Port> from the transport server"
    if kind == "refused":
        return (
            f"Your smart host {smart_host} actively refused the connection (Winsock 10061): its SMTP service is "
            f"not listening on the send connector's port, or a firewall in front of it rejects the transport "
            f"servers; check the service on {smart_host} and that it accepts (relays for) the transport servers' "
            f"IP addresses, then {test}."
        )
    if kind == "timeout":
        return (
            f"Connections to your smart host {smart_host} time out (Winsock 10060): a firewall between the "
            f"transport servers and {smart_host} drops them, {smart_host} is down, or the send connector's "
            f"SmartHosts/Port point at the wrong address; {test}."
        )
    return (
        f"The session with your smart host {smart_host} could not be set up or was dropped (connection reset): "
        f"check firewalls or SMTP inspection between the transport servers and {smart_host}, TLS between them "
        f"(a reset right after STARTTLS), and the logs of {smart_host}; {test}."
    )


def _proxy_hint(code: str) -> str:
    meaning = PRX_CODES.get(code, "the Front End could not proxy the session to a Mailbox server")
    step = _PRX_STEPS.get(code, _CPRX_STEP if code.startswith("CPRX") else _OTHER_PRX_STEP)
    return (
        f"The receiving Exchange server's Front End Transport service took the connection but could not pass "
        f"it on to a Mailbox server's Transport service ({code}: {meaning}); this is not a throttle. If that next "
        f"hop is one of your own Exchange servers, fix its internal hop from the Front End to the Mailbox "
        f"servers: {step}. If it belongs to another organisation (Exchange Online, a partner), the fault is "
        f"inside it: the queue keeps retrying; contact them if it persists."
    )


def _m365_hint(code: str) -> str:
    what = {
        "705": "the tenant sent too much spam or bulk mail (often a compromised on-premises server or an inbound "
        "connector an attacker created)",
        "708": "the sending IP has a low reputation (typical for new tenants)",
        "750": "too much mail comes from domains that are not accepted and validated domains of the tenant",
    }.get(code[-3:], "Microsoft 365 detected suspicious traffic from the tenant and blocked its sending")
    return (
        f"Microsoft 365 blocks mail from your tenant or its IP (5.7.{code}: {what}). The delist portal does not "
        "lift these: find and fix the cause (compromised accounts and connectors, open relays; for 5.7.750 add "
        "and validate every sending domain in the tenant), then open a case with Microsoft support."
    )


def hint_for(err: SmtpError | None, *, smart_host: str | None = None) -> str:
    """The next step for one LastError: its category's hint, refined by its text and next hop.

    ``smart_host`` is the name of the organisation's own smart host when the queue delivers to
    one (``SmartHostConnectorDelivery``, or a NextHopDomain that is a send connector's smart
    host); the connection hints then speak of it instead of a remote host. Never raises.
    """
    if err is None:
        return CATEGORY_HINTS["other"]
    try:
        category = err.category
        if category in ("connection_refused", "connection_timeout", "connection_failed"):
            return _connection_hint(err, smart_host)
        if category == "proxy_failure":
            code = proxy_code(err.response)
            if code:
                return _proxy_hint(code)
        if category == "blocklisted":
            block = _M365_BLOCK.search(err.response)
            if block:
                return _m365_hint(block.group(1))
        if category == "expired" and err.cause and err.cause_category not in (None, "other", "expired"):
            cause = parse_smtp_error(err.cause)
            return (
                f"{CATEGORY_HINTS['expired']} The cause named is {err.cause_category}: "
                f"{hint_for(cause, smart_host=smart_host)}"
            )
        return CATEGORY_HINTS.get(category, CATEGORY_HINTS["other"])
    except Exception:  # pragma: no cover - defensive: a hint must never break triage
        return CATEGORY_HINTS["other"]
