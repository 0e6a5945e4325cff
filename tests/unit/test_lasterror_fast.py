"""The speed-ups of exporter.exchange.lasterror give what the plain forms give: the memo of
parse_smtp_error (and it stays within MEMO_SIZE entries), the status-code patterns with their
look-behind after the first character, and ASCII-only case folding on SMTP text."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.exchange import lasterror
from exporter.exchange.lasterror import (
    _RULE_SOURCE,
    MEMO_SIZE,
    RULES,
    SmtpError,
    _code,
    classify,
    expiry_cause,
    parse_smtp_error,
)
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


CODES = [
    r"[45]\.4\.7",
    r"5\.4\.300",
    r"5\.7\.(?:124|13[3-6])",
    r"[45]\.7\.(?:5|10|11)",
    r"4\.4\.397",
    r"[45]\.7\.\d{1,3}",
    r"5\.1\.10",
]
_CODE_TEXT = st.lists(
    st.sampled_from(
        ["4", "5", "1", "0", "3", "7", "9", ".", " ", "-", "a", "[", "4.4.7", "5.7.1", "5.1.10", "10.4.4.7"]
    ),
    max_size=14,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(CODES), _CODE_TEXT)
def test_code_pattern_is_the_plain_whole_code_test(code: str, text: str) -> None:
    """``_code`` moves the look-behind after the first character; it must match exactly where the plain
    ``(?<![\\d.])code(?!\\.?\\d)`` matches."""
    plain = re.compile(rf"(?<![\d.]){code}(?!\.?\d)", re.IGNORECASE | re.ASCII)
    fast = re.compile(_code(code), re.IGNORECASE | re.ASCII)
    assert [m.span() for m in fast.finditer(text)] == [m.span() for m in plain.finditer(text)]


def test_every_rule_is_compiled_ascii_case_insensitive() -> None:
    assert len(RULES) == len(_RULE_SOURCE)
    assert all(p.flags & re.IGNORECASE and p.flags & re.ASCII for p, _ in RULES)


@pytest.mark.parametrize("text", TEXTS)
def test_ascii_folding_classifies_the_corpus_as_unicode_folding_does(text: str) -> None:
    """On SMTP text (ASCII) the rules compiled with re.ASCII give what Unicode case folding gives."""
    unicode_rules = [(re.compile(p.pattern, re.IGNORECASE), c) for p, c in RULES]
    expected = next((c for p, c in unicode_rules if p.search(text)), "other")
    assert classify(text) == expected
