"""Session helpers that need no server: the session cap, deadlines, redaction, failure reasons."""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET

import pytest
import requests
from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError

from exporter.errors import CollectorError
from exporter.exchange.session import SessionLimiter, classify_exception, redact, run_with_deadline


def test_limiter_caps_per_account_and_host() -> None:
    limiter = SessionLimiter(2)
    limiter.acquire("svc", "ex01")
    limiter.acquire("svc", "EX01")
    with pytest.raises(CollectorError) as info:
        limiter.acquire("svc", "ex01")
    assert info.value.reason == "session_limit"
    limiter.acquire("svc", "ex02")  # another server has its own budget
    limiter.acquire("other", "ex01")  # another account too
    limiter.release("svc", "ex01")
    limiter.acquire("svc", "ex01")
    assert limiter.in_use("svc", "ex01") == 2


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
