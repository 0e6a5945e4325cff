"""Session helpers that need no server: the session cap, deadlines, redaction, failure reasons."""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import requests
from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError

from exporter.errors import CollectorError
from exporter.exchange.session import (
    SessionLimiter,
    build_wsman,
    classify_exception,
    describe_exception,
    redact,
    run_with_deadline,
)
from exporter.exchange.session_limit import split_endpoint
from exporter.settings import ResolvedServer

ADDRESSES = {
    "ex01.contoso.sim": ["10.0.0.1"],
    "mail.contoso.sim": ["10.0.0.1"],  # another name (a CNAME) for EX01
    "ex02.contoso.sim": ["10.0.0.2"],
    "rr.contoso.sim": ["10.0.0.1", "10.0.0.2"],  # round robin over both
}


def fake_resolve(host: str, port: int | None) -> list[str]:
    if host not in ADDRESSES:
        raise OSError("Name or service not known")
    return ADDRESSES[host]


def test_limiter_caps_per_account_and_endpoint() -> None:
    limiter = SessionLimiter(2, resolve=fake_resolve)
    limiter.acquire("svc", "ex01.contoso.sim:5985")
    slot = limiter.acquire("SVC", "EX01.contoso.sim:5985")  # Exchange compares user names case-insensitively
    with pytest.raises(CollectorError) as info:
        limiter.acquire("svc", "ex01.contoso.sim:5985")
    assert info.value.reason == "session_limit"
    limiter.acquire("svc", "ex02.contoso.sim:5985")  # another server has its own budget
    limiter.acquire("other", "ex01.contoso.sim:5985")  # another account too
    limiter.acquire("svc", "ex01.contoso.sim:5986")  # and another port (another endpoint)
    limiter.release(slot)
    limiter.acquire("svc", "ex01.contoso.sim:5985")
    assert limiter.in_use("svc", "ex01.contoso.sim:5985") == 2


def test_limiter_counts_one_server_under_two_names_once() -> None:
    limiter = SessionLimiter(2, resolve=fake_resolve)
    limiter.acquire("svc", "ex01.contoso.sim:443")
    limiter.acquire("svc", "mail.contoso.sim:443")
    with pytest.raises(CollectorError) as info:
        limiter.acquire("svc", "ex01.contoso.sim:443")
    assert "10.0.0.1:443" in str(info.value)
    with pytest.raises(CollectorError):  # a name that may reach EX01 counts against EX01 too
        limiter.acquire("svc", "rr.contoso.sim:443")
    assert limiter.in_use("svc", "mail.contoso.sim:443") == 2
    limiter.acquire("svc", "ex02.contoso.sim:443")
    assert limiter.in_use("svc", "rr.contoso.sim:443") == 2  # the busiest of its addresses


def test_limiter_caches_resolutions_briefly_and_counts_unresolvable_names_by_name() -> None:
    calls: list[str] = []
    now = [0.0]

    def resolve(host: str, port: int | None) -> list[str]:
        calls.append(host)
        return fake_resolve(host, port)

    limiter = SessionLimiter(1, resolve=resolve, ttl=30.0, clock=lambda: now[0])
    slot = limiter.acquire("svc", "ex01.contoso.sim:5985")
    assert limiter.in_use("svc", "ex01.contoso.sim:5985") == 1
    assert calls == ["ex01.contoso.sim"]
    now[0] = 31.0
    limiter.release(slot)
    assert limiter.in_use("svc", "ex01.contoso.sim:5985") == 0
    assert calls == ["ex01.contoso.sim", "ex01.contoso.sim"]
    assert limiter.slot("svc", "nowhere.invalid:5985") == (("svc", "nowhere.invalid:5985"),)


def test_limiter_with_the_system_resolver_counts_localhost_as_its_address() -> None:
    limiter = SessionLimiter(1)
    limiter.acquire("svc", "127.0.0.1:5985")
    with pytest.raises(CollectorError):
        limiter.acquire("svc", "localhost:5985")


@pytest.mark.parametrize(
    ("endpoint", "split"),
    [
        ("EX01:5985", ("ex01", 5985)),
        ("ex01", ("ex01", None)),
        ("[::1]:5986", ("::1", 5986)),
        ("::1", ("::1", None)),
        ("10.0.0.1:80", ("10.0.0.1", 80)),
    ],
)
def test_split_endpoint(endpoint: str, split: tuple[str, int | None]) -> None:
    assert split_endpoint(endpoint) == split


def test_deadline_raises_timeout_and_returns_values() -> None:
    assert run_with_deadline(lambda: 42, 1.0, "t") == 42
    gate = threading.Event()
    with pytest.raises(CollectorError) as info:
        run_with_deadline(gate.wait, 0.05, "t")
    assert info.value.reason == "timeout"
    gate.set()


def test_deadline_propagates_exceptions() -> None:
    def boom() -> None:
        raise ValueError("x")

    with pytest.raises(ValueError):
        run_with_deadline(boom, 1.0, "t")


def test_redact() -> None:
    assert redact("login p@ss failed for p@ss", ["p@ss", ""]) == "login <redacted> failed for <redacted>"


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (AuthenticationError("bad"), "auth"),
        (WinRMTransportError("http", 401, "unauthorized"), "auth"),
        (WinRMTransportError("http", 500, "boom"), "http_error"),
        (WSManFaultError(2150858843, "m", "r", "p", "pid", "pf", "shell not found"), "wsman_fault"),
        (
            WSManFaultError(
                500,
                "m",
                "Fail to create a runspace because you have exceeded the maximum number of connections allowed : 18",
                "p",
                "pid",
                "pf",
                "x",
            ),
            "session_limit",
        ),
        (requests.exceptions.ConnectTimeout(), "timeout"),
        (requests.exceptions.ConnectionError(), "connection"),
        (requests.exceptions.SSLError(), "tls"),
        (ET.ParseError("bad xml"), "parse"),
        (CollectorError("x", reason="cmdlet_error"), "cmdlet_error"),
        (RuntimeError("?"), "other"),
    ],
)
def test_classify_exception(exc: BaseException, reason: str) -> None:
    assert classify_exception(exc) == reason


SECRET = "Zä9€qX-ö7Kw€-jV3"  # Latin-1 letters and a euro sign, which Latin-1 lacks


def leaks(text: str, secret: str = SECRET) -> list[str]:
    """Parts of the secret in ``text``: its substrings of 3 or more characters, and each character
    outside ASCII in any form an exception message may take (itself, its escape, its code point)."""
    found = [secret[i : i + n] for n in range(3, len(secret) + 1) for i in range(len(secret) - n + 1)]
    found = [part for part in dict.fromkeys(found) if part in text]
    for char in {c for c in secret if ord(c) > 127}:
        forms = (char, repr(char)[1:-1], f"\\u{ord(char):04x}", f"\\x{ord(char):02x}", f"U+{ord(char):04X}")
        found += [form for form in forms if form in text]
    return found


def test_an_encoding_error_is_described_without_its_text() -> None:
    try:
        f"svc:{SECRET}".encode("latin-1")
    except UnicodeEncodeError as exc:
        error = exc
    assert leaks(str(error)) == ["\\u20ac"]  # what the old description showed
    text = describe_exception(error)
    assert text.startswith("UnicodeEncodeError: ") and leaks(text) == [] and "position" not in text


def test_basic_auth_refuses_a_password_it_cannot_send_naming_no_part_of_it(tmp_path: Path) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text(SECRET, encoding="utf-8")
    server = ResolvedServer(
        name="EX01", host="ex01", port=443, tls=True, auth="basic", username="svc@contoso.com", password=None,
        verify_tls=True, ca_bundle=None, negotiate_service="HTTP", connect_timeout=5, call_timeout=5,
        password_file=secret_file,
    )  # fmt: skip
    with pytest.raises(CollectorError) as info:
        build_wsman(server)
    assert info.value.reason == "config"
    assert str(info.value) == (
        "the password for svc@contoso.com contains characters Basic authentication cannot send (not Latin-1); use "
        f"auth kerberos, negotiate or ntlm (they send any Unicode password) (password file {secret_file})"
    )
    for auth in ("ntlm", "negotiate", "kerberos"):  # these send any Unicode password
        assert build_wsman(server.model_copy(update={"auth": auth})).transport.password == SECRET
