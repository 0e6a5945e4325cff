"""The memo of exporter.exchange.lasterror: parse_smtp_error gives what the rules give, and the memo
stays within MEMO_SIZE entries."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.exchange import lasterror
from exporter.exchange.lasterror import MEMO_SIZE, SmtpError, classify, expiry_cause, parse_smtp_error
from tests.unit.test_lasterror_corpus import CORPUS

EXPIRED_WITH_CAUSE = "550 4.4.7 QUEUE.Expired; message expired -> 451 4.4.0 DNS query failed"
TEXTS = [text for text, _ in CORPUS] + [
    EXPIRED_WITH_CAUSE,
    "[{LRT=12/7/2026 11:31:05 AM};{LED=451 4.4.0 DNS query failed. The error was: SMTPSEND.DNS.NonExistentDomain; "
    "nonexistent domain};{FQDN=};{IP=}]",
    "250 2.6.0 <id> Queued mail for redundancy",
    "To",
]


def by_the_rules(text: str) -> SmtpError | None:
    """What parse_smtp_error gave before the memo: codes, rules and expiry cause computed for this call."""
    err = parse_smtp_error(text)
    if err is None:
        return None
    smtp_code, enhanced_code = lasterror._codes(err.response)
    category = classify(err.response)
    found = expiry_cause(err.response) if category == "expired" else None
    return SmtpError(
        raw=err.raw,
        response=err.response,
        smtp_code=smtp_code,
        enhanced_code=enhanced_code,
        category=category,
        fqdn=err.fqdn,
        ip=err.ip,
        lrt=err.lrt,
        msg=err.msg,
        cause=found[0] if found else None,
        cause_category=found[1] if found else None,
    )


@pytest.mark.parametrize("text", TEXTS)
def test_memo_gives_what_the_rules_give(text: str) -> None:
    lasterror._analyse.cache_clear()
    cold = parse_smtp_error(text)
    warm = parse_smtp_error(text)  # answered from the memo
    assert lasterror._analyse.cache_info().hits >= 1
    assert cold == warm == by_the_rules(text)


def test_expiry_cause_comes_through_the_memo() -> None:
    lasterror._analyse.cache_clear()
    for _ in range(2):
        err = parse_smtp_error(EXPIRED_WITH_CAUSE)
        assert err is not None
        assert (err.category, err.cause, err.cause_category) == (
            "expired",
            "451 4.4.0 DNS query failed",
            "dns_failure",
        )


def test_same_response_different_fields_keep_their_own_fields() -> None:
    """The memo is keyed on the response: two LastErrors with one response keep their own LRT/FQDN/IP."""
    led = "{LED=421 4.4.2 Connection dropped}"
    one = parse_smtp_error(f"[{{LRT=1/1/2026 1:00:00 AM}};{led};{{FQDN=a.example}};{{IP=192.0.2.1}}]")
    two = parse_smtp_error(f"[{{LRT=1/1/2026 2:00:00 AM}};{led};{{FQDN=b.example}};{{IP=192.0.2.2}}]")
    assert one is not None and two is not None
    assert (one.lrt, one.fqdn, one.ip) == ("1/1/2026 1:00:00 AM", "a.example", "192.0.2.1")
    assert (two.lrt, two.fqdn, two.ip) == ("1/1/2026 2:00:00 AM", "b.example", "192.0.2.2")
    assert one.category == two.category == "connection_failed"


def test_memo_is_bounded() -> None:
    lasterror._analyse.cache_clear()
    first = "451 4.4.0 DNS query failed (0)"
    for i in range(MEMO_SIZE + 500):
        parse_smtp_error(f"451 4.4.0 DNS query failed ({i})")
    info = lasterror._analyse.cache_info()
    assert info.maxsize == MEMO_SIZE
    assert info.currsize == MEMO_SIZE
    assert parse_smtp_error(first) == by_the_rules(first)  # dropped from the memo, computed again
    assert lasterror._analyse.cache_info().misses == MEMO_SIZE + 501


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TEXTS) | st.text(max_size=60), min_size=1, max_size=8))
def test_memo_in_any_order_gives_what_the_rules_give(texts: list[str]) -> None:
    for text in texts + texts:
        assert parse_smtp_error(text) == by_the_rules(text)
