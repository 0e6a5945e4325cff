"""exporter.exchange.lasterror: LastError / RecipientStatus parsing and classification."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.exchange.lasterror import (
    CATEGORIES,
    CATEGORY_HINTS,
    RULES,
    SmtpError,
    classify,
    parse_smtp_error,
)

# Real strings quoted in shared/reference/exchange-cmdlets.md §1.5 (Get-Queue LastError) and
# §2.1 / §2.5 (Get-MessageTrackingLog RecipientStatus / SourceContext), from public sources.
PROXY_LED = (
    "450 4.7.0 Proxy session setup failed on Frontend with '451 4.4.0 Primary target IP address responded "
    'with: "451 4.4.0 Security status InvalidToken." Attempted failover to alternate host, but that did '
    "not succeed. Either there are no alternate hosts, or delivery failed to all alternate hosts. The last "
    "endpoint attempted was 2a0X:…:25'"
)
REAL_PROXY = f"[{{LRT=15-01-21 23:50:05}};{{LED={PROXY_LED}}};{{FQDN=MAILSERVER.DOMAIN.LOCAL}};{{IP=192.168.12.4}}]"
REAL_WINSOCK_10060 = (
    '441 4.4.1 Error encountered while communicating with primary target IP address: "Failed to connect. '
    'Winsock error code: 10060, Win32 error code: 10060." Attempted failover to alternate host, but that '
    "did not succeed. Either there are no alternate hosts, or delivery failed to all alternate hosts. The "
    "last endpoint attempted was 172.24.16.149:475"
)
REAL_DNS = "451 4.4.0 DNS query failed. The error was: SMTPSEND.DNS.NonExistentDomain; nonexistent domain"
CHAIN = "451 4.4.397 Error communicating with target host. -> 421 4.2.1 Unable to connect -> "
REAL_TIMEDOUT = CHAIN + "SocketTimedout: Socket error code 10060"
REAL_REFUSED = CHAIN + "SocketConnectionRefused: Socket error code 10061"
REAL_10051 = CHAIN + "SocketError: Failed to connect. Winsock error code: 10051, Win32 error code: 10051"
REAL_TRANSPORT_RULE = (
    "[{LED=550 5.7.1 TRANSPORT.RULES.RejectMessage; the message was rejected by organization policy};"
    "{MSG=};{FQDN=};{IP=};{LRT=}]"
)
REAL_SENDER_ID = "[{LED=550 5.7.1 Sender ID (PRA) Not Permitted};{MSG=};{FQDN=};{IP=x.x.x.x};{LRT=}]"
REAL_QUEUED = "250 2.6.0 <id> [InternalId=…, Hostname=…] Queued mail for redundancy"


@pytest.mark.parametrize(
    ("text", "smtp_code", "enhanced_code", "category", "fqdn", "ip"),
    [
        (REAL_PROXY, "450", "4.7.0", "proxy_failure", "MAILSERVER.DOMAIN.LOCAL", "192.168.12.4"),
        (REAL_WINSOCK_10060, "441", "4.4.1", "connection_timeout", None, None),
        (REAL_DNS, "451", "4.4.0", "dns_failure", None, None),
        (REAL_TIMEDOUT, "451", "4.4.397", "connection_timeout", None, None),
        (REAL_REFUSED, "451", "4.4.397", "connection_refused", None, None),
        (REAL_10051, "451", "4.4.397", "connection_failed", None, None),
        (REAL_TRANSPORT_RULE, "550", "5.7.1", "remote_rejected", None, None),
        (REAL_SENDER_ID, "550", "5.7.1", "remote_rejected", None, "x.x.x.x"),
        (REAL_QUEUED, "250", "2.6.0", "other", None, None),
        ("To", "", "", "other", None, None),
    ],
)
def test_real_strings(
    text: str, smtp_code: str, enhanced_code: str, category: str, fqdn: str | None, ip: str | None
) -> None:
    err = parse_smtp_error(text)
    assert err is not None
    assert (err.smtp_code, err.enhanced_code, err.category, err.fqdn, err.ip) == (
        smtp_code,
        enhanced_code,
        category,
        fqdn,
        ip,
    )
    assert err.raw == text
    assert classify(err.response) == category


def test_real_queue_form_fields() -> None:
    err = parse_smtp_error(REAL_PROXY)
    assert err is not None
    assert err.response == PROXY_LED
    assert err.lrt == "15-01-21 23:50:05"
    assert err.msg is None


def test_real_tracking_form_fields() -> None:
    err = parse_smtp_error(REAL_TRANSPORT_RULE)
    assert err is not None
    assert err.response == ("550 5.7.1 TRANSPORT.RULES.RejectMessage; the message was rejected by organization policy")
    assert (err.fqdn, err.ip, err.lrt, err.msg) == (None, None, None, None)


def test_unstructured_string_is_the_response() -> None:
    err = parse_smtp_error(REAL_DNS)
    assert err is not None
    assert err.response == REAL_DNS
    assert (err.fqdn, err.ip, err.lrt, err.msg) == (None, None, None, None)


# ------------------------------------------------------------------ bracketed forms


def test_both_field_orders_give_the_same_fields() -> None:
    led = "451 4.4.0 DNS query failed. The error was: SMTPSEND.DNS.NonExistentDomain; nonexistent domain"
    queue_order = f"[{{LRT=1/2/2024 3:04:05 PM}};{{LED={led}}};{{FQDN=mx.example.com}};{{IP=192.0.2.7}}]"
    tracking_order = (
        f"[{{LED={led}}};{{MSG=queued}};{{FQDN=mx.example.com}};{{IP=192.0.2.7}};{{LRT=1/2/2024 3:04:05 PM}}]"
    )
    a, b = parse_smtp_error(queue_order), parse_smtp_error(tracking_order)
    assert a is not None and b is not None
    for err in (a, b):
        assert err.response == led
        assert (err.smtp_code, err.enhanced_code, err.category) == ("451", "4.4.0", "dns_failure")
        assert (err.fqdn, err.ip, err.lrt) == ("mx.example.com", "192.0.2.7", "1/2/2024 3:04:05 PM")
    assert a.msg is None
    assert b.msg == "queued"


def test_values_with_separators_quotes_and_braces() -> None:
    led = (
        "550 5.7.1 Rejected; reason={policy};{x} \"quoted; text\" 'single' -> "
        "421 4.2.1 Unable to connect -> SocketConnectionRefused: Socket error code 10061"
    )
    text = f"[{{IP=2001:db8::1}};{{LED={led}}};{{FQDN=host;with;semicolons}};{{LRT=}}]"
    err = parse_smtp_error(text)
    assert err is not None
    assert err.response == led
    assert err.fqdn == "host;with;semicolons"
    assert err.ip == "2001:db8::1"
    assert err.lrt is None
    assert (err.smtp_code, err.enhanced_code) == ("550", "5.7.1")
    assert err.category == "connection_refused"  # looks inside the nested chain


def test_value_containing_boundary_like_text_in_lower_case() -> None:
    led = "554 5.7.1 Message rejected};{see=https://example.com/why"
    err = parse_smtp_error(f"[{{LED={led}}};{{IP=192.0.2.1}}]")
    assert err is not None
    assert err.response == led
    assert err.ip == "192.0.2.1"


def test_led_missing_falls_back_to_msg_and_odd_brackets() -> None:
    err = parse_smtp_error("[{LRT=x};{MSG=550 5.1.1 User unknown};{FQDN=a}]")
    assert err is not None
    assert err.response == "550 5.1.1 User unknown"
    assert err.category == "recipient_unknown"
    truncated = parse_smtp_error("[{LED=421 4.7.0 Too many connections};{FQDN=mx.exa")
    assert truncated is not None
    assert truncated.category == "throttled"
    assert truncated.fqdn == "mx.exa"
    no_outer = parse_smtp_error("{LED=452 4.5.3 Too many recipients};{IP=192.0.2.9}")
    assert no_outer is not None
    assert (no_outer.enhanced_code, no_outer.ip) == ("4.5.3", "192.0.2.9")
    empty = parse_smtp_error("[{LED=};{MSG=};{FQDN=};{IP=};{LRT=}]")
    assert empty is not None
    assert (empty.response, empty.smtp_code, empty.enhanced_code, empty.category) == ("", "", "", "other")


@pytest.mark.parametrize("text", [None, "", "   ", "\n"])
def test_empty_gives_none(text: str | None) -> None:
    assert parse_smtp_error(text) is None


def test_smtp_error_is_frozen() -> None:
    err = parse_smtp_error(REAL_DNS)
    assert err is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        err.category = "other"  # type: ignore[misc]
    assert isinstance(err, SmtpError)


# ------------------------------------------------------------------ codes


@pytest.mark.parametrize(
    ("text", "smtp_code", "enhanced_code"),
    [
        ("550 5.1.1 User unknown", "550", "5.1.1"),
        ("550-5.1.1 The email account does not exist", "550", "5.1.1"),
        ("5.1.1 user unknown", "", "5.1.1"),
        ("421 Service not available", "421", ""),
        (
            "Remote Server returned '554 5.4.4 SMTPSEND.DNS.NonExistentDomain; nonexistent domain'",
            "554",
            "5.4.4",
        ),
        ("  451 4.4.397 Error communicating with target host.", "451", "4.4.397"),
        ("4510 not a code", "", ""),
        ("Delivery failed to 10.4.4.1", "", ""),
        ("no code here", "", ""),
    ],
)
def test_codes(text: str, smtp_code: str, enhanced_code: str) -> None:
    err = parse_smtp_error(text)
    assert err is not None
    assert (err.smtp_code, err.enhanced_code) == (smtp_code, enhanced_code)


# ------------------------------------------------------------------ classification


@pytest.mark.parametrize(
    ("text", "category"),
    [
        # proxy precedence: the outer frontend proxy failure wins over the inner text
        (
            "450 4.7.0 Proxy session setup failed on Frontend with '451 4.4.0 DNS query failed'",
            "proxy_failure",
        ),
        # dns
        ("554 5.4.4 SMTPSEND.DNS.NonExistentDomain; nonexistent domain", "dns_failure"),
        ("554 5.4.4 SMTPSEND.DNS.MxLoopback; DNS config error", "dns_failure"),
        ("550 5.4.310 DNS domain contoso.example does not exist", "dns_failure"),
        ("451 4.4.0 DNS query failed. The error was: DNS query failed with error ErrorRetry", "dns_failure"),
        ("451 4.4.312 DNS query failed", "dns_failure"),
        # refused / timeout / failed
        ("441 4.4.1 Error encountered: Failed to connect. Winsock error code: 10061", "connection_refused"),
        ("421 4.4.316 Connection refused", "connection_refused"),
        ("Winsock error code: 10060", "connection_timeout"),
        ("421 4.2.1 Unable to connect", "connection_failed"),
        (
            "SocketError: Failed to connect. Winsock error code: 10065, Win32 error code: 10065",
            "connection_failed",
        ),
        (CHAIN + "SocketError: Winsock error code: 10054", "connection_failed"),
        ("421 4.4.2 Connection dropped due to SocketError", "connection_failed"),
        ("451 4.4.397 Error communicating with target host.", "connection_failed"),
        # tls
        (
            "454 4.7.5 The certificate specified in TlsCertificateName of the SendConnector could not be found.",
            "tls_failure",
        ),
        ("451 5.7.3 STARTTLS is required to send mail", "tls_failure"),
        ("530 5.7.0 Must issue a STARTTLS command first", "tls_failure"),
        ("454 4.7.0 TLS not available due to local problem", "tls_failure"),
        ("421 4.4.317 TLS negotiation failed with error UnknownCredentials", "tls_failure"),
        (
            '451 4.4.0 Primary target IP address responded with: "451 4.4.0 Security status InvalidToken."',
            "tls_failure",
        ),
        ("Remote certificate validation failed: RemoteCertificateChainErrors", "tls_failure"),
        # auth
        ("530 5.7.1 Client was not authenticated", "auth_failure"),
        ("535 5.7.3 Authentication unsuccessful", "auth_failure"),
        ("530 5.7.57 Client not authenticated to send mail. [AM0PR0xxx]", "auth_failure"),
        ("535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled", "auth_failure"),
        ("535 5.7.8 Error: authentication failed", "auth_failure"),
        # blocklisted
        (
            "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
            "blocklisted",
        ),
        ("550 5.7.1 Service unavailable, Client host [192.0.2.1] blocked using Spamhaus.", "blocklisted"),
        ("550 5.7.606 Access denied, banned sending IP [192.0.2.1]", "blocklisted"),
        ("550 5.7.511 Access denied, banned sender[192.0.2.1]", "blocklisted"),
        ("554 5.7.1 Your IP 192.0.2.1 is listed at bl.spamcop.net", "blocklisted"),
        (
            "550 SC-001 Mail rejected by Outlook.com for policy reasons. part of their network is on our block list",
            "blocklisted",
        ),
        ("550 5.7.1 Rejected: 192.0.2.1 is in an RBL", "blocklisted"),
        (
            "554 Your access to this mail system has been rejected due to the sending MTA's poor reputation",
            "blocklisted",
        ),
        # recipient unknown
        ("550 5.1.1 User unknown", "recipient_unknown"),
        ("550 5.1.1 RESOLVER.ADR.RecipNotFound; not found", "recipient_unknown"),
        (
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
            "recipient_unknown",
        ),
        (
            "450 4.1.1 <a@b.example>: Recipient address rejected: User unknown in local recipient table",
            "recipient_unknown",
        ),
        ("550 5.4.1 Recipient address rejected: Access denied. AS(201806281)", "recipient_unknown"),
        ("550 No such user here", "recipient_unknown"),
        # mailbox full / size
        ("552 5.2.2 Mailbox full", "mailbox_full"),
        ("452 4.2.2 The email account that you tried to reach is over quota", "mailbox_full"),
        ("554 5.2.2 STOREDRV.Deliver; mailbox full: MapiExceptionShutoffQuotaExceeded", "mailbox_full"),
        ("552 5.3.4 Message size exceeds fixed maximum message size", "message_too_large"),
        ("550 5.2.3 RESOLVER.RST.RecipSizeLimit; message too large for this recipient", "message_too_large"),
        ("552 Message size exceeds maximum permitted", "message_too_large"),
        # throttled
        ("421 4.7.0 Too many connections from your IP, try again later", "throttled"),
        ("421 4.7.0 Temporary System Problem.", "throttled"),
        ("451 4.7.500 Server busy. Please try again later from [192.0.2.1]. (S77719)", "throttled"),
        ("452 4.5.3 Too many recipients", "throttled"),
        ("550 5.5.3 RESOLVER.ADR.RecipLimit; too many recipients", "throttled"),
        ("421 4.3.2 Service not available", "throttled"),
        ("452 4.3.1 Insufficient system resources", "throttled"),
        ("450 4.2.0 Greylisted, please retry", "throttled"),
        ("451 Rate limit exceeded", "throttled"),
        # remote rejected
        (
            "550 5.7.1 TRANSPORT.RULES.RejectMessage; the message was rejected by organization policy",
            "remote_rejected",
        ),
        ("550 5.7.1 Sender ID (PRA) Not Permitted", "remote_rejected"),
        ("550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain", "remote_rejected"),
        ("550 5.7.64 TenantAttribution; Relay Access Denied", "remote_rejected"),
        ("550 5.7.1 Unable to relay", "remote_rejected"),
        ("550 5.4.1 Relay Access Denied", "remote_rejected"),
        ("450 4.7.1 Client host rejected: cannot find your reverse hostname", "remote_rejected"),
        ("550 Reverse DNS lookup failed for 192.0.2.1, rejected", "remote_rejected"),
        (
            "550 5.7.23 The message was rejected because of Sender Policy Framework violation",
            "remote_rejected",
        ),
        # other
        ("", "other"),
        ("To", "other"),
        ("250 2.6.0 <id> Queued mail for delivery; policy ok", "other"),
        ("550 5.6.0 Corrupt message content", "other"),
        ("Message deferred by 10.5.2.2 for 10.5.3.4", "other"),
        ("554 5.4.14 Hop count exceeded - possible mail loop", "other"),
    ],
)
def test_classify(text: str, category: str) -> None:
    assert classify(text) == category


def test_classify_odd_input() -> None:
    assert classify(None) == "other"
    assert classify(12345) == "other"  # type: ignore[arg-type]


def test_rules_and_hints_cover_the_categories() -> None:
    assert len(set(CATEGORIES)) == len(CATEGORIES) == 16
    assert set(CATEGORY_HINTS) == set(CATEGORIES)
    for category, hint in CATEGORY_HINTS.items():
        assert len(hint) > 40, category
        assert hint.strip().endswith("."), category
    rule_categories = [category for _pattern, category in RULES]
    assert set(rule_categories) <= set(CATEGORIES)
    assert set(CATEGORIES) - {"other"} <= set(rule_categories)


# ------------------------------------------------------------------ properties

_FRAGMENTS = st.sampled_from(
    [
        "[{",
        "}]",
        "};{",
        "{",
        "}",
        ";",
        "LED=",
        "LRT=",
        "FQDN=",
        "IP=",
        "MSG=",
        "550 5.1.1 ",
        "451 4.4.0 ",
        "5.7.1",
        " -> ",
        '"',
        "'",
        "10061",
        "DNS query failed",
        "Proxy session setup failed",
        "\x00",
        "\u2026",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.lists(st.one_of(_FRAGMENTS, st.text(max_size=8)), max_size=12).map("".join)))
def test_parse_never_raises_and_category_is_known(text: str) -> None:
    err = parse_smtp_error(text)
    if not text.strip():
        assert err is None
    else:
        assert err is not None
        assert err.category in CATEGORIES
        assert err.raw == text
    assert classify(text) in CATEGORIES
