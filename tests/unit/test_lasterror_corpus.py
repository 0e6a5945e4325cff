"""Real-world LastError / RecipientStatus texts the classifier used to misread, each with its source.

Sources (the short names used in the comments below):

* ``SmtpResponse.cs`` / ``AckReason.cs``: Exchange's own response texts, as read in a decompiled
  Exchange 15 build, github evilashz/exchange-server-27065,
  Microsoft.Exchange.Data.Transport/Data/Transport/Smtp/SmtpResponse.cs and
  Microsoft.Exchange.Transport's AckReason.
* ``NDR table``: MicrosoftDocs/OfficeDocs-Exchange, "Email non-delivery reports and SMTP errors in
  Exchange Online" (ExchangeOnline/mail-flow-best-practices/non-delivery-reports-in-exchange-online/
  non-delivery-reports-in-exchange-online.md).
* ``5.7.7xx page``: the same folder, fix-error-code-5-7-700-through-5-7-750.md.
* ``4.4.7 page``: Microsoft, "Fix NDR error 550 4.4.7 in Exchange Online" (learn.microsoft.com
  troubleshoot article).
* ``KB 3156771``: Microsoft, "Users in your Exchange 2013-based hybrid deployment experience mail
  issues after April 15, 2016", learn.microsoft.com/en-us/exchange/troubleshoot/email-delivery/
  mails-issues-occur-after-april-15-2016.
* ``M365 groups article``: Microsoft, "Email delivery to Microsoft 365 groups fails in hybrid
  configuration" (learn.microsoft.com troubleshoot article).
* ``Q&A 390821``, ``Q&A 137109``, ``Q&A 112624``: Microsoft Q&A threads
  learn.microsoft.com/en-us/answers/questions/<id>/...
* ``c7solutions``: https://c7solutions.com/category/error ("DNS error Exchange Server", PRX2).
"""

from __future__ import annotations

import pytest

from exporter.exchange.lasterror import classify, expiry_cause, parse_smtp_error

# Q&A 137109: an NDR's two diagnostic lines (the delay notice, then the last error), joined
EDGESYNC_NDR = (
    "Server at edgesync - default-first-site-name to internet (2xx.xx.xx.xx) returned '400 4.4.7 Message "
    "delayed' 10/21/2020 10:43:36 AM - Server at edgesync - default-first-site-name to internet "
    "(2xx.xx.xx.xx) returned '451 4.4.397 Error communicating with target host. -> 421 4.2.1 Unable to "
    "connect -> SocketTimedout: Socket error code 10060'"
)

CORPUS: list[tuple[str, str]] = [
    # NDR table (5.4.1, directory-based edge blocking): Exchange Online puts the recipient in brackets
    (
        "550 5.4.1 [finance@fabrikam.com]: Recipient address rejected: Access denied. AS(201806281) "
        "[DM6NAM12FT057.eop-nam12.prod.protection.outlook.com]",
        "recipient_unknown",
    ),
    # --- the Front End's encoded proxy failures: the hop to the Mailbox Transport service, not a throttle
    # SmtpResponse.cs EncodedProxyFailureResponseNoDestinations .. Shutdown (note the trailing blank)
    ("451 4.7.0 Temporary server error. Please try again later. PRX1 ", "proxy_failure"),
    ("451 4.7.0 Temporary server error. Please try again later. PRX2 ", "proxy_failure"),
    ("451 4.7.0 Temporary server error. Please try again later. PRX3 ", "proxy_failure"),
    ("451 4.7.0 Temporary server error. Please try again later. PRX4 ", "proxy_failure"),
    ("451 4.7.0 Temporary server error. Please try again later. PRX5 ", "proxy_failure"),
    ("451 4.7.0 Temporary server error. Please try again later. PRX6 ", "proxy_failure"),
    # SmtpResponse.cs EncodedProxyFailureResponseBackEndLocatorFailure (client proxy, port 587)
    ("451 4.7.0 Temporary server error. Please try again later. CPRX1 ", "proxy_failure"),
    # SmtpResponse.cs InboundProxyDestinationTrackerReject
    (
        "421 4.3.2 The maximum number of concurrent server connections has exceeded a limit, closing "
        "transmission channel PRX7",
        "proxy_failure",
    ),
    # KB 3156771 (message tracking deferral, Exchange Online -> on-premises)
    ("451 4.7.0 Temporary server error. Please try again later. PRX5", "proxy_failure"),
    # c7solutions (applications relaying through Exchange 2016)
    ("451 4.7.0 Temporary server error. Please try again later. PRX2", "proxy_failure"),
    # Q&A 390821 (Exim's view of an Exchange 2016 Front End)
    (
        "SMTP error from remote mail server after end of data: host 192.168.200.45 [192.168.200.45]: "
        "451 4.7.0 Temporary server error. Please try again later. PRX4",
        "proxy_failure",
    ),
    # Inferred shape: SmtpResponse.cs ProxySessionProtocolSetupTransientFailure ("450 4.7.0 Proxy session
    # setup failed on Frontend with ") wrapping a remote Front End's EncodedProxyFailureResponseConnectionFailure.
    (
        "450 4.7.0 Proxy session setup failed on Frontend with '451 4.7.0 Temporary server error. Please try "
        "again later. PRX3 '",
        "proxy_failure",
    ),
    # --- STARTTLS / certificate failures reported with 5.7.3 are TLS, not credentials
    ("451 5.7.3 STARTTLS is required to send mail", "tls_failure"),  # SmtpResponse.cs RequireTLSToSendMail
    ("554 5.7.3 Unable to initialize security subsystem", "tls_failure"),  # StartTlsNegotiationFailure
    ("451 5.7.3 Require STARTTLS to authenticate", "tls_failure"),  # RequireSTARTTLSToAuth
    # SmtpResponse.cs InternalTransportCertificateNotAvailable
    ("451 5.7.3 Cannot load Internal Transport Certificate. Exchange Server authentication failed.", "tls_failure"),
    # Q&A 112624 (Domain Security: fixed with Set-TransportConfig -TLSSendDomainSecureList)
    (
        '451 4.4.0 Primary target IP address responded with: "451 4.7.3 The admin has temporarily disallowed '
        'this secure domain." Attempted failover to alternate host, but that did not succeed. Either there are '
        "no alternate hosts, or delivery failed to all alternate hosts. The last endpoint attempted was "
        "45.100.187.7:25",
        "tls_failure",
    ),
    # ... while real credential failures stay auth_failure (SmtpResponse.cs CannotExchangeAuthenticate,
    # AuthUnsuccessful, RequireBasicAuthentication)
    ("451 5.7.3 Cannot achieve Exchange Server authentication", "auth_failure"),
    ("535 5.7.3 Authentication unsuccessful", "auth_failure"),
    ("451 5.7.3 Require basic authentication", "auth_failure"),
    # RFC 4954 section 6 (not Exchange): x.7.12 is SMTP AUTH, not Exchange Online's recipient restriction 5.7.12
    ("432 4.7.12 A password transition is needed", "auth_failure"),
    # NDR table 5.7.12 and 5.7.124 (the table's wording; the 550 basic code is added)
    ("550 5.7.12 Sender was not authenticated by organization", "recipient_restricted"),
    ("550 5.7.124 Sender not in allowed-senders list", "recipient_restricted"),
    # SmtpResponse.cs StartTlsTempReject and MessageRateLimitExceeded: rate limits, not TLS or a dropped link
    ("454 4.7.0 Cannot accept TLS as maximum TLS rate exceeded for server", "throttled"),
    ("421 4.4.2 Message submission rate for this client has exceeded the configured limit", "throttled"),
    # --- Microsoft 365 tenant and IP blocks (NDR table, 5.7.7xx page: "error codes 550 5.7.700 through 5.7.750")
    ("550 5.7.705 Access denied, tenant has exceeded threshold", "blocklisted"),
    ("550 5.7.708 Access denied, traffic not accepted from this IP", "blocklisted"),
    ("550 5.7.750 Service unavailable. Client blocked from sending from unregistered domains", "blocklisted"),
    # --- recipient delivery restrictions, not connector credentials
    ("550 5.7.1 RESOLVER.RST.AuthRequired; authentication required", "recipient_restricted"),  # AckReason
    ("550 5.7.1 RESOLVER.RST.NotAuthorized; not authorized", "recipient_restricted"),  # AckReason
    (
        "550 5.7.1 RESOLVER.RST.NotAuthorizedToGroup; not authorized to send to the distribution list",  # AckReason
        "recipient_restricted",
    ),
    # M365 groups article ("Remote Server returned '...'")
    (
        "Remote Server returned '550 5.7.133 RESOLVER.RST.SenderNotAuthenticatedForGroup; authentication "
        "required; Delivery restriction check failed because the sender was not authenticated when sending to "
        "this group'",
        "recipient_restricted",
    ),
    # ... and the RESOLVER.RST size limits stay sizes (AckReason MessageTooLargeFor*)
    ("550 5.2.3 RESOLVER.RST.SendSizeLimit.Sender; message too large for this sender", "message_too_large"),
    ("550 5.2.3 RESOLVER.RST.RecipSizeLimit.DL; message length exceeds administrative limit", "message_too_large"),
    # --- expiry
    ("550 4.4.7 QUEUE.Expired; message expired", "expired"),  # AckReason.MessageExpired, 4.4.7 page
    (EDGESYNC_NDR, "expired"),
]


@pytest.mark.parametrize(("text", "category"), CORPUS)
def test_real_world_texts(text: str, category: str) -> None:
    assert classify(text) == category
    err = parse_smtp_error(text)
    assert err is not None and err.category == category


@pytest.mark.parametrize(
    ("text", "cause", "cause_category"),
    [
        ("550 4.4.7 QUEUE.Expired; message expired", None, None),  # AckReason.MessageExpired: no cause named
        # Inferred shape (Exchange's " -> " chains, as in 451 4.4.397 ... -> 421 4.2.1 ...)
        (
            "550 4.4.7 QUEUE.Expired; message expired -> 451 4.4.0 DNS query failed",
            "451 4.4.0 DNS query failed",
            "dns_failure",
        ),
        # AckReason.UnreachableMessageExpired with an inferred reason text
        (
            "550 4.4.7 QUEUE.Expired; message expired in unreachable destination queue. Reason: There is "
            "currently no route to the mailbox database.",
            "There is currently no route to the mailbox database",
            "other",
        ),
        # SmtpResponse.cs MessageDelayedConcurrentDeliveries
        (
            "400 4.4.7 Message delayed, too many concurrent deliveries at this time",
            "too many concurrent deliveries at this time",
            "throttled",
        ),
    ],
)
def test_expiry_cause(text: str, cause: str | None, cause_category: str | None) -> None:
    err = parse_smtp_error(text)
    assert err is not None and err.category == "expired"
    assert (err.cause, err.cause_category) == (cause, cause_category)


def test_expiry_causes_of_real_ndrs() -> None:
    """Q&A 137109 and Q&A 112624: the NDR's last error after the delay notice is the cause."""
    timeout = parse_smtp_error(EDGESYNC_NDR)
    assert timeout is not None and timeout.cause_category == "connection_timeout"
    assert timeout.cause is not None and not timeout.cause.startswith("Server at")  # the NDR lead-in is dropped
    tls = parse_smtp_error(
        "Remote Server at xxxx.dk (45.100.187.7) returned '400 4.4.7 Message delayed' 9/29/2020 8:13:49 AM - "
        "Remote Server at xxxx.dk (45.100.187.7) returned '451 4.4.0 Primary target IP address responded with: "
        '"451 4.7.3 The admin has temporarily disallowed this secure domain." Attempted failover to alternate '
        "host, but that did not succeed. Either there are no alternate hosts, or delivery failed to all "
        "alternate hosts. The last endpoint attempted was 45.100.187.7:25'"
    )
    assert tls is not None and (tls.category, tls.cause_category) == ("expired", "tls_failure")


def test_bracketed_expiry_from_tracking() -> None:
    """A FAIL event's bracketed RecipientStatus with an expiry and no cause (fields as in §2.1)."""
    err = parse_smtp_error("[{LED=550 4.4.7 QUEUE.Expired; message expired};{MSG=};{FQDN=};{IP=};{LRT=}]")
    assert err is not None
    assert (err.smtp_code, err.enhanced_code, err.category, err.cause) == ("550", "4.4.7", "expired", None)


@pytest.mark.parametrize("text", [None, "", "550 4.4.7", "550 4.4.7 QUEUE.Expired; message expired ->  ;"])
def test_expiry_cause_without_a_cause(text: str | None) -> None:
    assert expiry_cause(text) is None


def test_prx_inside_a_host_name_is_not_a_proxy_code() -> None:
    assert classify("Remote Server at prx2.example.com returned '451 4.4.0 DNS query failed'") == "dns_failure"
    assert classify("451 4.4.0 DNS query failed for PRX3-relay.contoso.com") == "dns_failure"
