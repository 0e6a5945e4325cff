"""Parse and classify Exchange queue ``LastError`` and message-tracking ``RecipientStatus`` text.

Two shapes exist (reference/exchange-cmdlets.md §1.5, §2.1):

* Structured: ``[{LRT=...};{LED=<SMTP response>};{FQDN=<host>};{IP=<ip>}]`` (Get-Queue) or
  ``[{LED=...};{MSG=...};{FQDN=...};{IP=...};{LRT=...}]`` (tracking). Fields may come in any
  order; values may contain ``;``, ``{``, ``}``, quotes and ``->``. Fields are split only on a
  ``};{`` boundary followed by an upper-case ``KEY=`` (``\\}\\s*;\\s*\\{(?=[A-Z][A-Z0-9]{1,15}=)``).
* Anything else: the whole string is the SMTP response.

The outer codes come from the start of the response: ``^\\d{3}[ -]\\d.\\d{1,3}.\\d{1,3}`` gives
``smtp_code`` and ``enhanced_code``; a bare basic code (``421 ...``) or a bare enhanced code
(``5.1.1 ...``) is accepted too; failing that, the first embedded ``ddd d.d.d`` pair (``Remote
Server returned '550 5.1.1 ...'``) is used. Empty fields are ``""`` for codes and ``None`` for
fqdn/ip/lrt/msg (an empty ``{FQDN=}`` is also ``None``).

Classification: :func:`classify` searches the WHOLE response text (so nested ``->`` chains and
``responded with: "..."`` quotes are seen) against :data:`RULES`, an ordered list of
``(pattern, category)``; the first match wins, most specific first. Status codes are matched
only as whole codes (``4.4.1`` does not match inside ``10.4.4.17``). The category is a label
value, so the set is fixed (:data:`CATEGORIES`); finer distinctions (the PRX code, the Winsock
code, a Microsoft 365 block, the next hop being our own smart host) only change the hint
(:func:`exporter.exchange.lasterror_hints.hint_for`). Matching ignores case for ASCII letters only
(``re.ASCII``: SMTP replies are ASCII, RFC 5321 §2.4), which halves the time of the rules over
Unicode case folding; ``\\b``, ``\\w`` and ``\\d`` are ASCII too.

Cost: the rules take 15-60 us per text here, and a 20,000-queue poll repeats the same few responses
(Exchange's own DNS and socket texts) on many queues, so :func:`parse_smtp_error` remembers the
analysis of the last :data:`MEMO_SIZE` distinct responses (``bench/bench_queues.py`` measures it;
docs/performance.md, "Queues at scale"). The memo is keyed on the response alone, which is all the
analysis reads, so it returns exactly what the rules would.

==================  ==========================================================================
category            triggers (case-insensitive, anywhere in the response), in rule order
==================  ==========================================================================
other (first)       a response starting with a 2xx basic code (``250 2.6.0 ... Queued mail``) is
                    not an error.
expired             ``QUEUE.Expired``, codes x.4.7 and 5.4.300, ``message expired``: the message
                    outlived its retries. The text after the expiry (``-> 451 4.4.0 DNS query
                    failed``, ``Reason: ...``) is classified on its own as ``cause_category``.
proxy_failure       ``Proxy session setup failed``, ``proxy session/connection ... failed/error``,
                    the Front End's encoded ``PRX1``-``PRX7``/``CPRX1``-``CPRX2`` (``451 4.7.0
                    Temporary server error. Please try again later. PRX2``), ``no proxy
                    destinations``. Checked before the rest: when the frontend could not proxy the
                    session, the inner text (e.g. ``Security status InvalidToken``) is what the
                    next hop said to the frontend; the admin must fix the frontend -> target hop
                    first, and ``try again later`` here is not a throttle.
recipient_restricted ``RESOLVER.RST.*`` but the size limits (``AuthRequired``, ``NotAuthorized``,
                    ``SenderNotAuthenticatedForGroup``...), codes 5.7.124 and 5.7.133-5.7.136,
                    ``Sender was not authenticated by/for ...`` (5.7.12, 5.7.13), ``not in allowed-
                    senders list``: the recipient accepts only authenticated or listed senders.
dns_failure         ``SMTPSEND.DNS.*``, ``DNS query/lookup/resolution ... failed/error/timed out``
                    (not "reverse DNS"), ``nonexistent domain``, ``domain does not exist``,
                    ``SERVFAIL``, ``no MX record``, codes 5.4.4, 4.4.310-312 / 5.4.310-312.
connection_refused  ``SocketConnectionRefused``, Winsock/socket 10061, ``connection refused``,
                    ``actively refused``, ``ECONNREFUSED``.
connection_timeout  ``SocketTimedout``, Winsock/socket 10060, ``ETIMEDOUT``, ``connection timed
                    out``, ``No answer from host``.
throttled (early)   ``maximum TLS rate exceeded``, ``submission rate ... exceeded``.
tls_failure         ``STARTTLS``, ``TLS/SSL negotiation|handshake``, ``TLS ... fail/error/required/
                    not available``, ``certificate ... validation/expired/not found/invalid/
                    untrusted/revoked/mismatch/failed``, ``RemoteCertificate*``, ``UntrustedRoot``,
                    ``Security status <x>``, ``SEC_E_*``, ``InvalidToken``, ``encryption needed/
                    required``, ``security subsystem`` (``554 5.7.3 Unable to initialize security
                    subsystem``), ``Transport Certificate``, ``secure domain``, codes 4.7.5/5.7.5
                    (cryptographic failure), x.7.10, x.7.11.
auth_failure        5.7.57, 5.7.139, x.7.8, x.7.9, ``not authenticated``, ``authentication
                    unsuccessful/failed/required/...``, ``Cannot achieve Exchange Server
                    authentication``, ``SmtpClientAuthentication``, ``Require basic
                    authentication``, ``password transition is needed`` (4.7.12), basic code
                    530/534/535 at the start.
blocklisted         Spamhaus/SpamCop/Barracuda/SORBS/UCEPROTECT/SURBL, ``RBL``/``DNSBL``,
                    ``blocked using``, ``listed at``, ``block list``/``blacklist``/``denylist``,
                    ``Client host [x] blocked``, ``Service unavailable; Client host``,
                    ``banned sending IP``, ``reputation``, codes 5.7.511, 5.7.606-5.7.649 and
                    Microsoft 365's tenant/IP blocks 5.7.700-5.7.750.
recipient_unknown   x.1.1, 5.1.10, ``RESOLVER.ADR.(Ex)RecipNotFound``, ``RecipientNotFound``,
                    ``user unknown``/``unknown user``/``no such user``, ``mailbox/recipient/user
                    does not exist``, ``recipient not found``, ``5.4.1 Recipient address rejected:
                    Access denied`` (Exchange Online directory-based edge blocking).
mailbox_full        x.2.2, ``mailbox full``, ``over quota``, ``quota exceeded``, ``QuotaExceeded``.
message_too_large   x.3.4, x.2.3, ``message size exceeds``, ``message too big/large``, ``size
                    limit``, ``*SizeLimit`` (``RESOLVER.RST.RecipSizeLimit``).
connection_failed   Winsock/socket error 10049-10054, 10064, 10065 (unreachable, reset, down),
                    ``SocketError``, ``failed/unable/cannot/could not connect``, ``error
                    communicating with target``, ``Error encountered while communicating``,
                    ``connection reset/closed/dropped/lost/aborted``, ``network/host
                    unreachable``, ``no route to host``, codes 4.4.397, x.4.2, 4.4.1.
throttled           ``421 4.7.x``, 4.7.500-4.7.699, x.5.3 / ``RecipLimit`` (too many recipients),
                    ``too many connections/messages/recipients/...``, ``rate limit``, ``try again
                    later``, ``throttl*``, ``server busy``, ``back pressure``, ``Insufficient system
                    resources``, 4.3.1, 4.3.2 (not accepting messages), ``greylist``,
                    ``temporarily deferred``.
remote_rejected     any other x.7.x (policy/security), ``TRANSPORT.RULES.*``, ``Sender ID``,
                    relay denied/not permitted, 5.4.1, ``access denied``, ``rejected``, ``not
                    permitted``/``not authorized``, ``policy``, ``SPF/DKIM/DMARC ... fail``.
other               everything else (including 2xx responses and empty text).
==================  ==========================================================================
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

__all__ = [
    "CATEGORIES",
    "CATEGORY_HINTS",
    "MEMO_SIZE",
    "RULES",
    "SmtpError",
    "classify",
    "expiry_cause",
    "parse_smtp_error",
]

CATEGORIES: tuple[str, ...] = (
    "dns_failure",
    "connection_refused",
    "connection_timeout",
    "connection_failed",
    "tls_failure",
    "auth_failure",
    "proxy_failure",
    "recipient_unknown",
    "recipient_restricted",
    "mailbox_full",
    "message_too_large",
    "remote_rejected",
    "blocklisted",
    "throttled",
    "expired",
    "other",
)


def _code(code: str) -> str:
    """Regex for a whole status code (not part of an IP address or a longer code): ``(?<![\\d.])``
    before it, ``(?!\\.?\\d)`` after. The look-behind is written after the code's first character
    (``[45](?<![\\d.][45])\\.4\\.7``, the same test) so that the pattern starts with that character
    and the regex engine skips to where it occurs instead of trying every position: a third less
    time for the rules on a text none of them matches early (docs/performance.md, "Queues at scale")."""
    first = code[: code.index("]") + 1] if code.startswith("[") else code[0]
    return rf"{first}(?<![\d.]{first}){code[len(first) :]}(?!\.?\d)"


# Ordered (pattern, category) rules; first match wins. See the module docstring table.
_RULE_SOURCE: tuple[tuple[str, str], ...] = (
    # --- a success response (2xx at the start) is not an error, whatever its text says
    (r"^\s*2\d\d(?!\d)", "other"),
    # --- expired: the message outlived the queue's retries (AckReason.MessageExpired "550 4.4.7
    # QUEUE.Expired; message expired", MessageDelayed "400 4.4.7 Message delayed", Exchange Online
    # 5.4.300 "Message expired"); whatever follows is the cause (see expiry_cause).
    (r"\bQUEUE\.Expired\b", "expired"),
    (_code(r"[45]\.4\.7"), "expired"),
    (_code(r"5\.4\.300"), "expired"),
    (r"\bmessage (?:has )?expired\b", "expired"),
    # --- proxy_failure: outer failure of the frontend proxy session wins over its inner text
    (r"\bproxy session setup failed\b", "proxy_failure"),
    (r"\bproxy (?:session|connection)\b[^.]{0,80}?\b(?:fail\w*|error)", "proxy_failure"),
    # The Front End's encoded inbound-proxy failures "451 4.7.0 Temporary server error. Please try
    # again later. PRX1".."PRX6" (and "... PRX7" on 421 4.3.2, "CPRX1/2" for client proxy): DNS,
    # connection, protocol and socket failures of the hop to the Mailbox Transport service, not a
    # remote throttle (SmtpResponse.EncodedProxyFailureResponse*, decompiled Exchange 15).
    # Upper-case and not part of a host name (prx1.contoso.com).
    (r"(?-i:\bC?PRX\d{1,2}\b)(?![.-]\w)", "proxy_failure"),
    (r"\bno proxy destinations\b", "proxy_failure"),
    # --- recipient_restricted: delivery restrictions of the recipient object (RESOLVER.RST.*:
    # authenticated senders only, allowed-senders lists), not connector credentials. Size limits
    # share the RESOLVER.RST prefix and stay message_too_large.
    (r"\bRESOLVER\.RST\.(?!\w*SizeLimit)\w+", "recipient_restricted"),
    # Exchange Online's codes for the same (NDR table); 5.7.12/5.7.13 only with their text, as other
    # servers use those codes for SMTP AUTH (RFC 4954 password transition, RFC 5248 user account disabled).
    (_code(r"5\.7\.(?:124|13[3-6])"), "recipient_restricted"),
    (
        r"\bsender (?:was )?not authenticated (?:by|for)\b|\bnot in (?:the )?allowed[- ]senders list\b",
        "recipient_restricted",
    ),
    # --- dns_failure
    (r"\bSMTPSEND\.DNS\.", "dns_failure"),
    (
        r"(?<!reverse )\bDNS (?:query|lookup|resolution|server)\b[^.]{0,60}?\b(?:fail\w*|error|timed? ?out)",
        "dns_failure",
    ),
    (r"\bnon-?existent ?domain\b", "dns_failure"),
    (r"\bdomain (?:name )?(?:does not|doesn't|did not) exist\b", "dns_failure"),
    (r"\bSERVFAIL\b", "dns_failure"),
    (r"\bno MX (?:record|host)s?\b", "dns_failure"),
    (_code(r"5\.4\.4"), "dns_failure"),
    (_code(r"[45]\.4\.31[0-2]"), "dns_failure"),
    # --- connection_refused
    (r"SocketConnectionRefused", "connection_refused"),
    (r"(?<!\d)10061(?!\d)", "connection_refused"),
    (r"\bconnection (?:was )?refused\b|\bactively refused\b|\b(?:WSA)?ECONNREFUSED\b", "connection_refused"),
    # --- connection_timeout
    (r"SocketTimedout", "connection_timeout"),
    (r"(?<!\d)10060(?!\d)", "connection_timeout"),
    (r"\b(?:WSA)?ETIMEDOUT\b", "connection_timeout"),
    (r"\bconnection (?:attempt )?(?:has )?timed? ?out\b", "connection_timeout"),
    (r"\bno answer from host\b", "connection_timeout"),
    # --- throttled before the TLS wording: "454 4.7.0 Cannot accept TLS as maximum TLS rate exceeded for
    # server", "421 4.4.2 Message submission rate for this client has exceeded the configured limit"
    (r"\bmaximum TLS rate exceeded\b|\bsubmission rate\b[^.]{0,60}?\bexceeded\b", "throttled"),
    # --- tls_failure
    (r"STARTTLS", "tls_failure"),
    (r"\b(?:TLS|SSL) (?:negotiation|handshake)\b", "tls_failure"),
    (r"\b(?:TLS|SSL)\b[^.]{0,60}?\b(?:fail\w*|error|required|not available|unavailable)\b", "tls_failure"),
    (
        r"\bcertificate\b[^.]{0,60}?\b(?:validation|verif\w*|expired|not (?:be )?found|invalid|untrusted"
        r"|revoked|mismatch|fail\w*|error)\b",
        "tls_failure",
    ),
    (r"\bRemoteCertificate\w+|\bUntrustedRoot\b|\bSEC_E_\w+|\bInvalidToken\b", "tls_failure"),
    (r"\bSecurity status\b", "tls_failure"),
    (r"\bencryption (?:needed|required)\b", "tls_failure"),
    # Exchange's STARTTLS failure "554 5.7.3 Unable to initialize security subsystem", its missing
    # transport certificate "451 5.7.3 Cannot load Internal Transport Certificate" and Domain
    # Security "451 4.7.3 The admin has temporarily disallowed this secure domain": 5.7.3 and
    # "authentication" in the text, but the fix is TLS/certificates, not credentials.
    (r"\bsecurity subsystem\b|\bTransport Certificate\b|\bsecure domain\b", "tls_failure"),
    (_code(r"[45]\.7\.(?:5|10|11)"), "tls_failure"),
    # --- auth_failure
    (_code(r"5\.7\.(?:57|139)"), "auth_failure"),
    (_code(r"[45]\.7\.[89]"), "auth_failure"),
    (r"\bnot authenticated\b", "auth_failure"),
    (
        r"\bauthentication (?:unsuccessful|failed|failure|required|is required|credentials invalid"
        r"|mechanism is too weak)\b",
        "auth_failure",
    ),
    (r"\bCannot achieve Exchange Server authentication\b|\bSmtpClientAuthentication\b", "auth_failure"),
    (r"\bRequire basic authentication\b|\bpassword transition is needed\b", "auth_failure"),
    (r"^\s*53[045](?!\d)", "auth_failure"),
    # --- blocklisted
    (r"\bspamhaus\b|\bspamcop\b|\bbarracuda\w*|\bsorbs\b|\buceprotect\b|\bsurbl\b", "blocklisted"),
    (r"\b(?:RBL|DNSBL|RHSBL)s?\b", "blocklisted"),
    (r"\bblocked using\b|\blisted at\b", "blocklisted"),
    (r"\b(?:block|black|deny)[ -]?list(?:ed|ing)?\b", "blocklisted"),
    (r"\bClient host \[[^\]]*\] blocked\b|\bService unavailable[;,] Client host\b", "blocklisted"),
    (r"\bbanned sending IP\b|\breputation\b", "blocklisted"),
    (_code(r"5\.7\.(?:511|6[0-4]\d)"), "blocklisted"),
    # Microsoft 365 tenant and IP blocks: 5.7.700-749 (5.7.705 tenant over threshold, 5.7.708 IP
    # not accepted), 5.7.750 unregistered domains (fix-error-code-5-7-700-through-5-7-750).
    (_code(r"5\.7\.7(?:[0-4]\d|50)"), "blocklisted"),
    # --- recipient_unknown
    (_code(r"[45]\.1\.1"), "recipient_unknown"),
    (_code(r"5\.1\.10"), "recipient_unknown"),
    (r"\bRESOLVER\.ADR\.(?:Ex)?RecipNotFound\b|\bRecipientNotFound\b", "recipient_unknown"),
    (
        r"\buser unknown\b|\bunknown (?:user|recipient)\b|\bno such (?:user|recipient|mailbox)\b",
        "recipient_unknown",
    ),
    (r"\b(?:mailbox|recipient|user|address) (?:does not|doesn't) exist\b", "recipient_unknown"),
    (r"\brecipient (?:not found|unknown)\b", "recipient_unknown"),
    # Directory-based edge blocking, with or without the recipient in brackets before the colon.
    (r"(?<![\d.])5\.4\.1 (?:\[[^\]\s]*\]:? )?Recipient address rejected: Access denied", "recipient_unknown"),
    # --- mailbox_full
    (_code(r"[45]\.2\.2"), "mailbox_full"),
    (r"\bmailbox (?:is )?full\b|\bover ?quota\b|\bquota (?:exceeded|full)\b|QuotaExceeded", "mailbox_full"),
    (r"\bexceed(?:s|ed)? (?:the |their |its )?(?:storage |mailbox )?quota\b", "mailbox_full"),
    # --- message_too_large
    (_code(r"[45]\.3\.4"), "message_too_large"),
    (_code(r"[45]\.2\.3"), "message_too_large"),
    (r"\bmessage (?:size |length )?(?:exceeds|too (?:big|large))\b", "message_too_large"),
    (r"\bsize limit\b|SizeLimit\b", "message_too_large"),
    # --- connection_failed (generic transport-level failures, after the specific ones)
    (r"error code:?\s*100(?:49|5[0-4]|6[45])(?!\d)", "connection_failed"),
    (r"\bSocketError\b", "connection_failed"),
    (r"\b(?:failed to|unable to|cannot|can't|could not|couldn't) connect\b", "connection_failed"),
    (r"\berror (?:encountered while )?communicating with\b", "connection_failed"),
    (r"\bconnection (?:was )?(?:reset|closed|dropped|lost|aborted|terminated)\b", "connection_failed"),
    (r"\b(?:network|host) (?:is )?unreachable\b|\bno route to host\b", "connection_failed"),
    (_code(r"4\.4\.397"), "connection_failed"),
    (_code(r"[45]\.4\.2"), "connection_failed"),
    (_code(r"4\.4\.1"), "connection_failed"),
    # --- throttled
    (r"(?<![\d.])421[ -]4\.7\.\d{1,3}(?!\.?\d)", "throttled"),
    (_code(r"4\.7\.[56]\d\d"), "throttled"),
    (_code(r"[45]\.5\.3"), "throttled"),
    (r"RecipLimit\b", "throttled"),
    (
        r"\btoo many (?:connections|concurrent|messages|recipients|errors|sessions|mails|emails|requests)\b",
        "throttled",
    ),
    (r"\brate[ -]?limit\w*|\btry (?:again )?later\b|\bthrottl\w*", "throttled"),
    (
        r"\bserver (?:is )?busy\b|\btoo busy\b|\bback ?pressure\b|\binsufficient system resources\b",
        "throttled",
    ),
    (_code(r"4\.3\.[12]"), "throttled"),
    (r"\bgr[ae]ylist\w*|\btemporarily deferred\b", "throttled"),
    # --- remote_rejected (policy / security rejections not caught above)
    (_code(r"[45]\.7\.\d{1,3}"), "remote_rejected"),
    (r"\bTRANSPORT\.RULES\.|\bSender ID\b", "remote_rejected"),
    (
        r"\brelay(?:ing)? (?:access )?(?:denied|not permitted|not allowed)\b|\bunable to relay\b"
        r"|\bnot permitted to relay\b",
        "remote_rejected",
    ),
    (_code(r"5\.4\.1"), "remote_rejected"),
    (r"\baccess denied\b|\brejected\b|\bnot permitted\b|\bnot authorized\b|\bpolicy\b", "remote_rejected"),
    (r"\b(?:SPF|DKIM|DMARC)\b[^.]{0,40}?\b(?:fail\w*|reject\w*)", "remote_rejected"),
)

#: The compiled classification rules: ordered ``(pattern, category)``, first match wins.
RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE | re.ASCII), category) for pattern, category in _RULE_SOURCE
)

#: One or two actionable sentences per category, rendered into docs/runbook.md.
CATEGORY_HINTS: dict[str, str] = {
    "dns_failure": (
        "The transport server could not resolve the next hop: check the DNS servers it asks (the triage "
        "names them; Get-TransportService <server> | fl External*: with ExternalDNSAdapterEnabled the DNS "
        "servers of the adapter ExternalDNSAdapterGuid names, any adapter when it is all zeros, else the "
        "ExternalDNSServers list, which send connectors with UseExternalDNSServersEnabled use too; "
        "Get-NetworkConnectionInfo <server> lists each adapter's DNS servers), "
        "then run Resolve-DnsName -Type MX <next-hop domain> -Server <each of them> on the transport server "
        "itself, and check that its primary NIC has 'Register this connection's addresses in DNS' set. For a "
        "nonexistent domain check the recipient address for typos."
    ),
    "connection_refused": (
        "The next hop actively refused the TCP connection (Winsock 10061): nothing listens on its SMTP port "
        "or a firewall rejects us; test with Test-NetConnection <host> -Port 25 (or the send connector's "
        "Port) from the transport server, check outbound firewalls, and for a remote MX whether the remote "
        "side blocks our outbound IP (see the DNSBL panels); for your own smart host, check its SMTP "
        "service and that it accepts the transport servers' IP addresses."
    ),
    "connection_timeout": (
        "Connections to the next hop time out (Winsock 10060): usually a firewall or ISP silently dropping "
        "outbound port 25, a wrong smart host/MX address, or a remote host that is down; test with "
        "Test-NetConnection <host> -Port 25 from the transport server and check the send connector's "
        "smart hosts and source IP."
    ),
    "connection_failed": (
        "The TCP session to the next hop could not be set up or was dropped: network or host unreachable "
        "(Winsock 10051/10065) means the transport server itself has no route to that address (check its "
        "default gateway, routes and outbound NIC, and IPv6 routing when the last endpoint attempted is an "
        "IPv6 address); a reset (10054) or dropped session points at a firewall, SMTP inspection or the "
        "remote server; Get-Queue shows the last endpoint attempted."
    ),
    "tls_failure": (
        "TLS negotiation with the next hop failed: check the certificate named in the connector's "
        "TlsCertificateName (present, valid, not expired, private key readable, chain trusted: "
        "Get-ExchangeCertificate), the enabled TLS protocol versions and cipher suites on both sides "
        "(TLS 1.2), and RequireTLS/TlsAuthLevel/TlsDomain on the send connector."
    ),
    "auth_failure": (
        "The next hop requires SMTP authentication we did not provide or rejected our credentials: check the "
        "send connector's SmartHostAuthMechanism and AuthenticationCredential (expired or changed "
        "password), and for Exchange-to-Exchange hops that the receive connector allows ExchangeServer "
        "authentication and the servers' clocks/Kerberos are healthy."
    ),
    "proxy_failure": (
        "A Front End Transport service could not proxy the session. 'Proxy session setup failed on Frontend' "
        "is our outbound proxy (send connector with FrontendProxyEnabled, port 717): read the inner error "
        "(what the target answered the Front End) and check the 'Outbound Proxy Frontend' receive "
        "connector and TLS between the servers. 'Temporary server error ... PRX1'-'PRX7' is a receiving "
        "Front End that could not reach its own Mailbox Transport service (PRX2 DNS, PRX3 connection, "
        "PRX4 protocol, PRX5 socket errors): when that next hop is your Exchange, check on its Front End "
        "the DNS resolution of the Mailbox servers (NIC DNS registration, hosts file, IPv6 left enabled) "
        "and connectivity to their port 2525; otherwise the fault is inside the receiving organisation."
    ),
    "recipient_unknown": (
        "The destination says the recipient does not exist: correct the address or the sender's "
        "autocomplete entry; for internal or hybrid domains check the recipient object (Get-Recipient) "
        "and that the domain is an accepted domain of the right type (Authoritative vs InternalRelay) for "
        "which an email address policy generates addresses (Get-EmailAddressPolicy | fl Name,"
        "EnabledEmailAddressTemplates,RecipientFilterApplied)."
    ),
    "recipient_restricted": (
        "The recipient accepts mail only from authenticated or listed senders (RESOLVER.RST.*: "
        "RequireSenderAuthenticationEnabled, AcceptMessagesOnlyFrom/AcceptMessagesOnlyFromSendersOrMembers, "
        "RejectMessagesFrom on the mailbox or group): this is a delivery restriction of the recipient, not "
        "a send connector credential. If the sender is internal, the message arrived as anonymous: in "
        "hybrid check the 'Outbound to Office 365' send connector's TlsCertificateName and the Microsoft 365 "
        "inbound connector; otherwise the recipient's owner must allow the sender."
    ),
    "mailbox_full": (
        "The recipient's mailbox is over its quota: the recipient (or their administrator, for "
        "internal mailboxes Get-MailboxStatistics and the database/mailbox quotas) must free space or "
        "raise the quota; the message will be retried until the queue expires."
    ),
    "message_too_large": (
        "The message exceeds a size limit: compare the message size with the send connector, receive "
        "connector, organization (Get-TransportConfig MaxSendSize/MaxReceiveSize) and recipient limits, "
        "and with the remote side's advertised SIZE; ask the sender to use a file share link instead."
    ),
    "remote_rejected": (
        "The next hop rejected the message by policy (transport rule, Sender ID/SPF/DMARC, relay not "
        "permitted): read the response text, check our SPF/DKIM/DMARC records and PTR for the outbound "
        "IP, and for relay denials check the remote receive connector's permissions and RemoteIPRanges."
    ),
    "blocklisted": (
        "The remote side refuses our outbound IP because it is on a block list or has poor reputation: "
        "look the IP up on the list named in the response (Spamhaus, Microsoft, ...), find and stop the "
        "source of spam (compromised account, open relay connector), then request delisting. Microsoft 365 "
        "lifts 5.7.606-5.7.649 bans through its delist portal, while 5.7.700-5.7.750 block the tenant or its "
        "IP (5.7.750: sending from domains that are not accepted and validated in the tenant) and need the "
        "cause fixed and Microsoft support."
    ),
    "throttled": (
        "The next hop is rate-limiting or temporarily not accepting mail (too many connections, "
        "recipients or messages, back pressure, greylisting): usually transient; if it persists, lower "
        "the send connector's concurrency (SmtpMaxMessagesPerConnection, MaxPerDomainOutboundConnections "
        "on the transport service) or contact the remote administrator."
    ),
    "expired": (
        "Messages stayed queued longer than the message expiration timeout (Get-TransportService | fl "
        "MessageExpirationTimeout, 2 days by default) and went back to their senders as NDRs (4.4.7): fix "
        "the error the queue kept retrying on (the cause after the expiry text, or the queue's other "
        "LastErrors), then ask the senders to resend; every message still queued for that next hop expires "
        "the same way."
    ),
    "other": (
        "The error did not match a known pattern: read the full LastError text on the queue "
        "(Get-Queue <identity> | fl LastError) and check the protocol logs of the send connector."
    ),
}


@dataclass(frozen=True)
class SmtpError:
    """A parsed LastError / RecipientStatus string.

    ``response`` is the SMTP response (the ``LED`` field of the bracketed form, or the whole
    string); ``smtp_code``/``enhanced_code`` are the outer codes (``""`` when absent);
    ``category`` is one of :data:`CATEGORIES`; ``fqdn``/``ip``/``lrt``/``msg`` come from the
    bracketed form (``None`` when absent or empty). ``lrt`` is the server-culture time text.
    For an ``expired`` response that names what the queue retried on, ``cause`` is that text and
    ``cause_category`` its own category (both ``None`` otherwise, see :func:`expiry_cause`).
    """

    raw: str
    response: str
    smtp_code: str = ""
    enhanced_code: str = ""
    category: str = "other"
    fqdn: str | None = None
    ip: str | None = None
    lrt: str | None = None
    msg: str | None = None
    cause: str | None = None
    cause_category: str | None = None


_BRACKETED = re.compile(r"^\[?\{[A-Z][A-Z0-9]{1,15}=")
_FIELD_SPLIT = re.compile(r"\}\s*;\s*\{(?=[A-Z][A-Z0-9]{1,15}=)")
_LEADING_CODES = re.compile(r"^\s*([2-5]\d\d)(?:[ -]([245]\.\d{1,3}\.\d{1,3})(?!\.?\d))?(?!\d)")
_LEADING_ENHANCED = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})(?!\.?\d)")
_EMBEDDED_CODES = re.compile(r"(?<![\d.])([2-5]\d\d)[ -]([245]\.\d{1,3}\.\d{1,3})(?!\.?\d)")


def _split_fields(text: str) -> dict[str, str]:
    body = text.strip()
    if body.startswith("["):
        body = body[1:]
    if body.endswith("]"):
        body = body[:-1]
    body = body.strip()
    if body.startswith("{"):
        body = body[1:]
    if body.endswith("}"):
        body = body[:-1]
    fields: dict[str, str] = {}
    for part in _FIELD_SPLIT.split(body):
        key, sep, value = part.partition("=")
        key = key.strip().upper()
        if sep and key and key not in fields:
            fields[key] = value.strip()
    return fields


def _codes(response: str) -> tuple[str, str]:
    m = _LEADING_CODES.match(response)
    if m:
        return m.group(1), m.group(2) or ""
    m = _LEADING_ENHANCED.match(response)
    if m:
        return "", m.group(1)
    m = _EMBEDDED_CODES.search(response)
    if m:
        return m.group(1), m.group(2)
    return "", ""


def parse_smtp_error(text: str | None) -> SmtpError | None:
    """Parse a Get-Queue ``LastError`` or a tracking ``RecipientStatus`` entry.

    Returns ``None`` for ``None``/empty/whitespace. A non-string value is converted with
    ``str()``. Never raises.
    """
    if text is None:
        return None
    try:
        raw = text if isinstance(text, str) else str(text)
    except Exception:
        return None
    if not raw.strip():
        return None
    try:
        fqdn = ip = lrt = msg = None
        stripped = raw.strip()
        if _BRACKETED.match(stripped):
            fields = _split_fields(stripped)
            fqdn = fields.get("FQDN") or None
            ip = fields.get("IP") or None
            lrt = fields.get("LRT") or None
            msg = fields.get("MSG") or None
            response = fields.get("LED") or msg or ""
        else:
            response = stripped
        smtp_code, enhanced_code, category, cause, cause_category = _analyse(response)
        return SmtpError(
            raw=raw,
            response=response,
            smtp_code=smtp_code,
            enhanced_code=enhanced_code,
            category=category,
            fqdn=fqdn,
            ip=ip,
            lrt=lrt,
            msg=msg,
            cause=cause,
            cause_category=cause_category,
        )
    except Exception:  # pragma: no cover - defensive: parsing must never break a collector
        return SmtpError(raw=raw, response=raw, category="other")


#: How many distinct responses :func:`parse_smtp_error` remembers the analysis of (least recently
#: used first out). A few thousand covers the distinct texts of a large organisation's queues in one
#: poll cycle; an entry is a response text and five short strings.
MEMO_SIZE = 4096


@functools.lru_cache(maxsize=MEMO_SIZE)
def _analyse(response: str) -> tuple[str, str, str, str | None, str | None]:
    """``(smtp_code, enhanced_code, category, cause, cause_category)`` of one SMTP response."""
    smtp_code, enhanced_code = _codes(response)
    category = classify(response)
    found = expiry_cause(response) if category == "expired" else None
    return smtp_code, enhanced_code, category, found[0] if found else None, found[1] if found else None


def classify(response: str | None) -> str:
    """Classify an SMTP response / error text into one of :data:`CATEGORIES`.

    The first matching rule in :data:`RULES` wins (see the module docstring table); empty or
    unmatched text is ``"other"``. Never raises.
    """
    try:
        if not response:
            return "other"
        text = response if isinstance(response, str) else str(response)
        for pattern, category in RULES:
            if pattern.search(text):
                return category
    except Exception:
        return "other"
    return "other"


# The parts of an expiry response that are the expiry itself; what is left is its cause. Exchange
# writes "550 4.4.7 QUEUE.Expired; message expired", "... message expired in unreachable destination
# queue. Reason: <why>" (AckReason.UnreachableMessageExpired) and "400 4.4.7 Message delayed"; its NDRs
# follow them with the last error ("... returned '451 4.4.397 ...'"); chains use " -> ".
_EXPIRY_PARTS = re.compile(
    r"(?:(?<![\d.])[2-5]\d\d[ -])?(?<![\d.])(?:[45]\.4\.7|5\.4\.300)(?!\.?\d)"
    r"|\bQUEUE\.Expired\b|\bmessage (?:has )?(?:expired|delayed)\b(?: in unreachable destination queue\b)?"
    r"|\bReason:|->",
    re.IGNORECASE,
)
_NDR_LEAD = re.compile(r"^(?:Remote )?Server at .{0,300}\breturned$", re.IGNORECASE)
_CAUSE_TRIM = " \t\r\n;,.:'\"-[]()#"


def expiry_cause(response: str | None) -> tuple[str, str] | None:
    """The cause an expiry response names, as ``(text, category)``; ``None`` when it names none.

    ``550 4.4.7 QUEUE.Expired; message expired -> 451 4.4.0 DNS query failed`` gives
    ``("451 4.4.0 DNS query failed", "dns_failure")``; a bare ``550 4.4.7 QUEUE.Expired; message
    expired`` gives ``None``. A cause that matches no rule is ``"other"``. Never raises.
    """
    try:
        if not response:
            return None
        rest = _EXPIRY_PARTS.sub(" ; ", str(response))
        parts = [part.strip(_CAUSE_TRIM) for part in rest.split(" ; ")]
        text = " -> ".join(part for part in parts if re.search(r"[A-Za-z0-9]", part) and not _NDR_LEAD.match(part))
        if not text:
            return None
        category = classify(text)
        return text, ("other" if category == "expired" else category)
    except Exception:  # pragma: no cover - defensive, like classify
        return None
