"""Blindness: plain failure reasons, the unreachable-server and failed-collector findings, verdicts that
never say healthy without seeing, "still polling", exit codes, text that does not wrap when piped, and
library log records kept at debug."""

from __future__ import annotations

import io
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import requests
import urllib3.exceptions
from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError

from exporter.exchange.failures import plain_reason
from exporter.exchange.queues import aggregate
from exporter.logs import setup_logging
from exporter.triage.blindness import check_timeout, collector_failed, server_unreachable
from exporter.triage.facts import Facts, Poll
from exporter.triage.report import build_report, write_text

NOW = 1_800_000_000.0
EP2 = "https://ex02.contoso.com:443/PowerShell"
EXCHANGE = ("queues", "receive_connectors", "components", "database_copies", "certificates", "service_health")
RAW = ("MaxRetryError", "HTTPConnectionPool", "HTTPSConnectionPool", "NewConnectionError", "Errno", "urllib3")


# --- plain reasons from real exception chains ---------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def plain_http() -> Iterator[int]:
    """A plain HTTP server on loopback (TLS to it fails the handshake)."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(500)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def _raised(url: str, **kwargs: object) -> BaseException:
    try:
        requests.post(url, timeout=3, **kwargs)  # type: ignore[arg-type]
    except Exception as exc:
        return exc
    raise AssertionError("the request succeeded")


def test_connection_refused_from_a_real_socket() -> None:
    exc = _raised(f"http://127.0.0.1:{_closed_port()}/PowerShell")
    assert "MaxRetryError" in repr(exc.args[0])  # what used to be shown
    assert plain_reason(exc) == "connection refused"


def test_tls_to_a_plain_http_port(plain_http: int) -> None:
    exc = _raised(f"https://127.0.0.1:{plain_http}/PowerShell", verify=False)
    assert plain_reason(exc) == "TLS handshake failed: the port does not answer in TLS (is it a plain HTTP port?)"


def _wrapped(inner: BaseException, outer: type[requests.exceptions.RequestException]) -> BaseException:
    """The chain requests builds: outer(MaxRetryError(reason=inner)), inner caused by the socket error."""
    pool_error = urllib3.exceptions.MaxRetryError(None, "/PowerShell", reason=inner)  # type: ignore[arg-type]
    return outer(pool_error)


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (
            _wrapped(urllib3.exceptions.NameResolutionError("ex02", None, socket.gaierror(-2, "Name not known")),  # type: ignore[arg-type]
                     requests.exceptions.ConnectionError),
            "host name does not resolve",
        ),
        (
            _wrapped(urllib3.exceptions.ConnectTimeoutError(None, "timed out"), requests.exceptions.ConnectTimeout),
            "connection timed out (no answer to the connect within 10s)",
        ),
        (
            requests.exceptions.ReadTimeout(urllib3.exceptions.ReadTimeoutError(None, "/PowerShell", "timed out")),  # type: ignore[arg-type]
            "no answer within 30s (the connection is open, the server does not reply)",
        ),
        (
            _wrapped(urllib3.exceptions.SSLError(ssl.SSLCertVerificationError(1, "certificate verify failed")),
                     requests.exceptions.SSLError),
            "TLS certificate not accepted",
        ),
        (WinRMTransportError("http", 500, "<html>IIS says boom</html>"), "the server failed the request (HTTP 500)"),
        (WinRMTransportError("http", 401, "Unauthorized"), "authentication failed for svc@contoso.com (HTTP 401)"),
        (AuthenticationError("Failed to authenticate the user svc@contoso.com with basic"),
         "authentication failed for svc@contoso.com"),
        (WSManFaultError(2150858819, "ex02", "The WS-Management service cannot process the request. More text.",
                         "Microsoft.Exchange", "", ""),
         "WSMan fault 2150858819: The WS-Management service cannot process the request"),
        (WSManFaultError(2150859173, "ex02", "", "Microsoft.Exchange", "",
                         "The user has exceeded the maximum number of connections allowed"),
         "session limit reached: Exchange refuses more PowerShell sessions for svc@contoso.com"),
        (ConnectionResetError(104, "Connection reset by peer"), "connection reset by the server"),
    ],
)  # fmt: skip
def test_plain_reason_of_each_failure_kind(exc: BaseException, text: str) -> None:
    assert plain_reason(exc, "svc@contoso.com", 10, 30) == text
    assert not any(raw in text for raw in RAW)


def test_a_certificate_error_keeps_openssl_s_verdict() -> None:
    cert = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    cert.verify_message = "certificate has expired"
    exc = _wrapped(urllib3.exceptions.SSLError(cert), requests.exceptions.SSLError)
    assert plain_reason(exc) == "TLS certificate not accepted (certificate has expired)"


# --- findings --------------------------------------------------------------------------------------


def polls(*items: Poll) -> dict[tuple[str, str], Poll]:
    return {(p.collector, p.target): p for p in items}


def refused(collector: str, target: str = "EX02", server: str = "EX02") -> Poll:
    return Poll(collector, target, False, "connection", "connection refused", EP2, server, NOW - 5)


def ok(collector: str, target: str) -> Poll:
    return Poll(collector, target, True, finished=NOW - 5)


def facts_of(*items: Poll, pending: tuple[tuple[str, str], ...] = (), timeout: float | None = None) -> Facts:
    failures: dict[str, dict[str, str]] = {}
    for p in items:
        if not p.ok:
            failures.setdefault(p.collector, {})[p.target] = f"{p.reason}: {p.message}"
    results = {"queues": {"EX01": aggregate("EX01", [], 100)}}
    return Facts(results, failures, NOW, polls(*items), pending, timeout)


def test_one_finding_per_unreachable_server_naming_endpoint_reason_and_blocked_checks() -> None:
    facts = facts_of(*(refused(c) for c in EXCHANGE), *(ok(c, "EX01") for c in EXCHANGE))
    [finding] = server_unreachable(facts)
    assert finding.severity == "critical" and finding.step == "visibility"
    assert finding.title == f"EX02: connection refused at {EP2}"
    assert finding.evidence[0].startswith("not checked: queues (Get-Queue), receive connectors")
    assert "Test-NetConnection ex02.contoso.com -Port 443" in finding.next_step
    assert finding.scopes == ("inbound", "outbound", "internal")
    report = build_report(facts)
    assert report.findings[0] == finding and report.exit_code == 2
    assert {v.status for v in report.verdicts} == {"unknown"}
    assert all(v.evidence[0] == finding.title for v in report.verdicts)


def test_a_server_polled_through_another_is_listed_under_the_endpoint_that_failed() -> None:
    facts = facts_of(refused("queues", "EX01", "EX01"), refused("queues", "EX03", "EX01"),
                     refused("send_connectors", "organization", "EX01"))  # fmt: skip
    [finding] = server_unreachable(facts)
    assert finding.title == f"EX01: connection refused at {EP2}"
    assert "also not checked, polled through EX01: EX03, organization" in finding.evidence


def test_a_server_that_answers_some_polls_is_a_warning() -> None:
    slow = Poll("tracking", "EX02", False, "timeout", "no answer within 60s", EP2, "EX02", NOW - 5)
    [finding] = server_unreachable(facts_of(slow, ok("queues", "EX02")))
    assert finding.severity == "warning" and "(1 check(s) failed)" in finding.title
    assert "these answered: queues (Get-Queue)" in finding.evidence


def test_other_collector_failures_one_finding_per_collector_permission_excluded() -> None:
    error = Poll("queues", "EX01", False, "cmdlet_error", "Get-Queue -Server EX01: Failed to connect to the "
                 "Microsoft Exchange Transport service", finished=NOW)  # fmt: skip
    denied = Poll("tracking", "EX01", False, "permission", "Get-MessageTrackingLog is not available", finished=NOW)
    findings = collector_failed(facts_of(error, denied))
    assert [(f.rule, f.severity, f.title) for f in findings] == [
        ("collector_failed", "warning", f"Could not check queues (Get-Queue) on EX01: {error.message}")
    ]
    report = build_report(facts_of(error, denied))
    assert report.exit_code == 3 and "No problems found" not in text(report)
    assert {v.scope: v.status for v in report.verdicts}["internal"] == "unknown"


def test_stale_polls_are_blind_spots_too() -> None:
    """The store side: a target whose last poll succeeded too long ago is reported as stale."""
    from exporter.store import Snapshot, SnapshotStore
    from exporter.triage.facts import facts_from_store

    clock = [NOW]
    store = SnapshotStore(lambda: clock[0])
    store.put(Snapshot("queues", "EX01", NOW, 0.1, 60.0, True, aggregate("EX01", [], 100)))
    clock[0] += 600
    facts = facts_from_store(store, ["queues"], 3.0)
    [finding] = collector_failed(facts)
    assert finding.evidence == ("EX01: no poll for 600s (every 60s expected)",)
    assert build_report(facts).exit_code == 3


def test_healthy_control_says_no_problems_only_when_every_poll_succeeded() -> None:
    facts = facts_of(*(ok(c, "EX01") for c in EXCHANGE))
    report = build_report(facts)
    assert report.findings == () and report.exit_code == 0 and report.complete
    assert "No problems found." in text(report)


# --- still polling and --timeout -------------------------------------------------------------------


def test_still_polling_is_not_a_verdict() -> None:
    facts = facts_of(ok("queues", "EX01"), pending=(("components", "EX02"), ("queues", "EX02")))
    report = build_report(facts)
    assert {v.status for v in report.verdicts} == {"polling"}
    assert report.verdicts[0].evidence[0] == "still polling: 1 first poll(s) pending: components EX02"
    out = text(report)
    assert "No problems found" not in out and "Nothing found so far; still polling." in out
    assert "Still polling: 2 first poll(s) have not finished: components EX02, queues EX02" in out


def test_a_timed_out_check_lists_what_did_not_finish_with_its_own_exit_code() -> None:
    facts = facts_of(ok("queues", "EX01"), pending=(("components", "EX02"), ("queues", "EX02")), timeout=20)
    [finding] = check_timeout(facts)
    assert finding.title == "check stopped after --timeout 20s: 2 poll(s) did not finish"
    assert finding.evidence == ("EX02: queues (Get-Queue), component states (maintenance mode)",)
    report = build_report(facts)
    assert report.exit_code == 4 and report.pending == ("components EX02", "queues EX02")
    assert {v.status for v in report.verdicts} == {"unknown"}
    # Something critical still wins: a script must page on it even from a partial run.
    critical = facts_of(refused("queues", "EX03", "EX03"), pending=(("queues", "EX02"),), timeout=20)
    assert build_report(critical).exit_code == 2


# --- text output -----------------------------------------------------------------------------------


def text(report: object, color: bool = False) -> str:
    out = io.StringIO()
    write_text(report, out, color=color)  # type: ignore[arg-type]
    return out.getvalue()


def test_piped_text_does_not_wrap_inside_tokens() -> None:
    long_endpoint = "https://" + "very-long-transport-server-name." * 6 + "example:443/PowerShell"
    poll = Poll("queues", "EX02", False, "connection", "connection refused", long_endpoint, "EX02", NOW)
    report = build_report(facts_of(poll))
    piped = text(report)
    title = f"EX02: connection refused at {long_endpoint}"
    assert f"1. [critical] {title}" in piped.splitlines()
    assert any(line.strip().endswith(long_endpoint) for line in piped.splitlines() if "queues EX02" in line)
    assert f"1. [critical] {title}" not in text(report, color=True).splitlines()  # a terminal wraps at 120


# --- logs ------------------------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def _library_error() -> None:
    try:
        raise requests.exceptions.ReadTimeout("HTTPConnectionPool(host='ex02', port=443): Read timed out.")
    except requests.exceptions.ReadTimeout:
        logging.getLogger("pypsrp.wsman").exception("ReadTimeout during WSMan request - attempt 0")
    logging.getLogger("urllib3.connectionpool").warning("Retrying ... NewConnectionError(...)")
    logging.getLogger("exporter.service").warning('poll failed collector=queues target=EX02 error="no answer"')


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("level", ["info", "warning", "error"])
def test_library_tracebacks_never_reach_the_default_levels(level: str, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(level)
    _library_error()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "pypsrp" not in err and "urllib3" not in err and "HTTPConnectionPool" not in err
    assert ("poll failed" in err) == (level != "error")
    assert len(err.splitlines()) == (0 if level == "error" else 1)


@pytest.mark.usefixtures("restore_logging")
def test_at_debug_the_library_detail_is_there_as_debug(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("debug")
    _library_error()
    lines = capsys.readouterr().err.splitlines()
    wsman = [line for line in lines if "logger=pypsrp.wsman" in line]
    assert len(wsman) == 1 and "level=debug" in wsman[0] and "Traceback" in wsman[0]
    assert any("level=warning logger=exporter.service" in line for line in lines)
    assert all(line.startswith("ts=") for line in lines)  # one line per record, traceback included
