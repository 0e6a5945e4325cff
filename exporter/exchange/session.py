"""Exchange remote PowerShell sessions: one pypsrp runspace pool per endpoint, reused across polls.

- Cmdlets are built only with ``add_cmdlet``/``add_parameter``: the Exchange runspace is NoLanguage.
- Every call has a hard deadline. The call runs in a daemon thread; when the deadline passes its
  connections are shut down (``bounds.py``), so that thread ends at once; the session is declared
  broken, its pool is closed in the background and the next poll opens a new one. What a call may
  read (bytes, objects, bytes per object) is bounded too (reason ``too_large``).
- Error records and warnings are returned as data, never dropped.
- Exchange throttles remote PowerShell to 18 concurrent sessions per user (PowerShellMaxConcurrency),
  counted by each server. ``SessionLimiter`` keeps the exporter under that cap per account and
  endpoint, including pools that are still being torn down after a failure. The endpoint is the
  address the host name resolves to, so one server configured under two names shares one budget.
- Shells are opened with a name that says which exporter run opened them; at the first session to an
  endpoint the shells an earlier run left open there are closed (``orphans.py``). A shell this run
  could not close (or whose open it gave up after sending the Create) is handed to the same sweep,
  which deletes it by id at the next session open there or after a later healthy call.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests
import urllib3.exceptions
from pypsrp.exceptions import (
    AuthenticationError,
    SerializationError,
    WinRMError,
    WinRMTransportError,
    WSManFaultError,
)
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.wsman import WSMan

from exporter.credentials import basic_auth_problem
from exporter.errors import CollectorError
from exporter.exchange import bounds, permissions, wire
from exporter.exchange.deadlines import ABORT_GRACE, ended, run_with_deadline, start_thread
from exporter.exchange.failures import SESSION_LIMIT_TEXT, plain_reason
from exporter.exchange.orphans import ShellJanitor, ShellOwner
from exporter.exchange.server_clock import ClockReading, ServerClock
from exporter.exchange.session_limit import SessionLimiter, Slot, endpoint_text
from exporter.settings import ResolvedServer

log = logging.getLogger(__name__)

CONFIGURATION_NAME = "Microsoft.Exchange"
ENDPOINT_PATH = "PowerShell"
_SHELL_GONE_CODES = {2150858843}  # the shell is not known to the server (expired or recycled)
# Exchange builds a session's commands from the account's roles when the session opens: after a
# permission failure the session is reopened, at most this often, so a role granted meanwhile counts.
PERMISSION_REOPEN_SECONDS = 600.0
_T = TypeVar("_T")
_DECODE_ERRORS = (ET.ParseError, SerializationError, KeyError, ValueError, TypeError, AttributeError, IndexError)
# Failures to open a session that the calls queued behind the attempt share instead of each waiting out
# its own call_timeout: a hung or refusing server then costs one timeout, not one per collector.
_SHARED_OPEN_FAILURES = frozenset({"timeout", "connection", "tls", "http_error", "wsman_fault", "protocol"})


@dataclass(frozen=True)
class CallResult:
    """What one cmdlet pipeline returned: output objects plus its error records and warnings."""

    objects: list[Any]
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    duration: float = 0.0
    failed: bool = False  # the pipeline ended in the Failed state (a terminating error)
    missing: tuple[str, ...] = ()  # commands the session does not have (its roles do not grant them)
    account: str = ""  # the account the session runs as, named in a permission failure

    def raise_for_errors(self, command: str) -> None:
        """Raise CollectorError if the cmdlet wrote an error record or failed: reason "permission" when
        the session does not have the cmdlet (RBAC), "cmdlet_error" otherwise."""
        if self.missing:
            raise CollectorError(permissions.missing_message(self.missing[0], self.account), reason="permission")
        if self.errors or self.failed:
            detail = self.errors[0] if self.errors else "pipeline failed"
            raise CollectorError(f"{command}: {detail[:300]}", reason="cmdlet_error")


def redact(text: str, secrets: Sequence[str]) -> str:
    """Remove every secret from a text meant for logs, labels or the status page."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text


def classify_exception(exc: BaseException) -> str:
    """Map a transport/protocol exception to a bounded ``reason`` label value."""
    if isinstance(exc, CollectorError):
        return exc.reason
    if isinstance(exc, AuthenticationError):
        return "auth"
    if isinstance(exc, WinRMTransportError):
        return "auth" if exc.code in (401, 403) else "http_error"
    if isinstance(exc, WSManFaultError):
        text = f"{exc.reason} {exc.message}"
        return "session_limit" if SESSION_LIMIT_TEXT in text else "wsman_fault"
    if isinstance(exc, requests.exceptions.Timeout):
        return "timeout"
    if isinstance(exc, requests.exceptions.SSLError):
        return "tls"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "connection"
    if isinstance(exc, ET.ParseError | SerializationError):
        return "parse"
    if isinstance(exc, WinRMError):
        return "protocol"
    kerberos = _kerberos_reason(exc)
    if kerberos is not None:
        return kerberos
    return "other"


# Kerberos failures surface from pyspnego/gssapi/krb5 (the optional ``kerberos`` extra) while the HTTP
# 401 is answered; matched by module so those libraries need not be importable here.
_KERBEROS_MODULES = ("spnego", "gssapi", "krb5")
_KDC_UNREACHABLE = ("Cannot contact any KDC", "Cannot find KDC", "Cannot resolve network address for KDC")
_KERBEROS_HINTS = (
    ("Decrypt integrity check failed", "the password or keytab does not match the account's key"),
    ("Preauthentication failed", "the password or keytab does not match the account's key"),
    ("not found in Kerberos database", "no such service principal: check the host name and negotiate_service"),
    ("No Kerberos credentials available", "no ticket: run kinit (KRB5CCNAME), or set a password or keytab"),
    ("No credentials cache found", "no ticket: run kinit (KRB5CCNAME), or set a password or keytab"),
    ("in cache collection", "no ticket: run kinit (KRB5CCNAME), or set a password or keytab"),
    ("Ticket expired", "the ticket cache has expired: renew it (kinit, k5start) or use a keytab"),
    ("Clock skew too great", "the clocks of this host and the KDC differ by more than 5 minutes"),
    ("Cannot contact any KDC", "no KDC of the realm answered (krb5.conf, DNS SRV records, firewall)"),
)


def _kerberos_reason(exc: BaseException) -> str | None:
    if isinstance(exc, ImportError) and "gssapi" in str(exc):
        return "config"  # auth kerberos without the 'kerberos' extra installed
    if not type(exc).__module__.startswith(_KERBEROS_MODULES):
        return None
    return "connection" if any(marker in str(exc) for marker in _KDC_UNREACHABLE) else "auth"


def _describe_kerberos(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if "Client '" in text and "not found in Kerberos database" in text:
        return f"Kerberos: the KDC does not know this user principal ({text})"
    hint = next((h for marker, h in _KERBEROS_HINTS if marker in text), None)
    return f"Kerberos: {hint} ({text})" if hint else f"Kerberos: {text}"


def describe_exception(exc: BaseException, server: ResolvedServer | None = None) -> str:
    """A plain-language description of a failure (``failures.plain_reason``: connection refused, host
    name does not resolve, TLS certificate not accepted...), never a library's repr; callers redact
    secrets, then truncate. Kerberos failures keep the library's text after the hint (it names the
    principal or the realm, which the admin needs)."""
    if isinstance(exc, CollectorError):
        return str(exc)
    if _kerberos_reason(exc) == "config":
        return "auth kerberos/negotiate needs the 'kerberos' extra (pip install 'mailflow-exporter[kerberos]')"
    if _kerberos_reason(exc) is not None:
        return _describe_kerberos(exc)
    if isinstance(exc, UnicodeError):
        # Its text quotes the character and its position, and the text encoded may be a password.
        return f"{type(exc).__name__}: a text could not be converted (details withheld: it may be a secret)"
    if server is None:
        return plain_reason(exc)
    return plain_reason(exc, server.account, server.connect_timeout, _operation_timeout(server) + 10)


def _shell_gone(exc: BaseException) -> bool:
    return isinstance(exc, WSManFaultError) and exc.code in _SHELL_GONE_CODES


def _never_sent(exc: BaseException) -> bool:
    """True if the request never reached the server (connect refused, unreachable or timed out).

    The pool's shell is then still open on the server: discarding the pool would orphan it there
    (counted against PowerShellMaxConcurrency until IIS's idle timeout), since its close cannot be
    delivered either. Kept, it is reused once the server answers (or reopened if the shell is gone).
    """
    if not isinstance(exc, requests.exceptions.ConnectionError) or not exc.args:
        return False
    return isinstance(getattr(exc.args[0], "reason", None), urllib3.exceptions.ConnectTimeoutError)


def _create_may_have_landed(opening: Future[Any], finished: bool) -> bool:
    """Whether an open that did not open its pool may still have created a shell on the server: it never
    ended, or it ended without an answer (a read timeout, a cut connection), not with the server's
    refusal (an HTTP error, a WSMan fault, a failed logon) nor before its request left (refused
    connect)."""
    if not finished or not opening.done():
        return True
    exc = opening.exception()
    if exc is None or _never_sent(exc):
        return False
    rejected = (WSManFaultError, WinRMTransportError, AuthenticationError, CollectorError)
    return isinstance(exc, requests.exceptions.RequestException) and not isinstance(exc, rejected)


def _missing_command(record: Any, sent: Sequence[str]) -> str | None:
    """The command an error record says the session does not have, if it is one this pipeline sent."""
    if getattr(record, "fq_error", None) != permissions.COMMAND_NOT_FOUND:
        return None
    name = str(getattr(record, "target_name", None) or "")
    return next((c for c in sent if c.lower() == name.lower()), None)


def _record_text(record: Any) -> str:
    for attr in ("exception", "message"):
        value = getattr(record, attr, None)
        if attr == "exception" and value is not None:
            msg = getattr(value, "adapted_properties", {}).get("Message") or getattr(value, "message", None)
            if msg:
                return str(msg)
        elif value:
            return str(value)
    return str(record)


class AuthBackoff:
    """Stops retrying an account after an authentication failure, so polls cannot lock it out.

    N servers polled every minute with a wrong password would be N bad logons a minute against
    Active Directory's lockout threshold. After a failure the account is not tried again for
    ``base`` seconds, doubling up to ``cap``; a changed password (e.g. a rotated secret file)
    ends the backoff at once.
    """

    def __init__(self, base: float = 60.0, cap: float = 900.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._base, self._cap, self._clock = base, cap, clock
        self._lock = threading.Lock()
        self._state: dict[str, tuple[float, float, str]] = {}  # account -> (until, delay, fingerprint)

    def check(self, account: str, fingerprint: str) -> None:
        """Raise CollectorError(reason="auth") while the account is backing off with the same password."""
        with self._lock:
            state = self._state.get(account)
        if state is None:
            return
        until, _, failed_with = state
        remaining = until - self._clock()
        if remaining > 0 and fingerprint == failed_with:
            raise CollectorError(
                f"authentication for {account} failed recently; not retrying for {remaining:.0f}s "
                "(protects the account from lockout; fix the password to retry at once)",
                reason="auth",
            )

    def failed(self, account: str, fingerprint: str) -> None:
        with self._lock:
            previous = self._state.get(account)
            delay = self._base if previous is None else min(self._cap, previous[1] * 2)
            self._state[account] = (self._clock() + delay, delay, fingerprint)

    def succeeded(self, account: str) -> None:
        with self._lock:
            self._state.pop(account, None)


def _fingerprint(secret: str | None) -> str:
    return hashlib.sha256((secret or "").encode("utf-8", "surrogatepass")).hexdigest()


def _credential_fingerprint(server: ResolvedServer) -> str:
    """Changes when the credential does: the password (re-read from its file), or the keytab file."""
    if server.keytab is not None:
        try:
            stat = server.keytab.stat()
        except OSError:
            return _fingerprint(f"keytab:{server.keytab}:missing")
        return _fingerprint(f"keytab:{server.keytab}:{stat.st_mtime_ns}:{stat.st_size}")
    return _fingerprint(server.current_password())


class ExchangeSession:
    """One runspace pool to one Exchange endpoint, opened lazily and re-opened after failure."""

    def __init__(
        self,
        server: ResolvedServer,
        limiter: SessionLimiter,
        wsman_factory: Callable[[ResolvedServer], WSMan] | None = None,
        auth_backoff: AuthBackoff | None = None,
        janitor: ShellJanitor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.server = server
        #: The endpoint server's clock, from the Date header of every answer (the tracking window).
        self.server_clock = ServerClock(clock)
        self._limiter = limiter
        self._janitor = janitor
        self._wsman_factory = wsman_factory or build_wsman
        self._auth = auth_backoff or AuthBackoff()
        self._pool: RunspacePool | None = None
        self._lock = threading.Lock()  # one pipeline at a time on this pool
        self._pool_lock = threading.Lock()  # guards _pool/_closed; never held during network I/O
        self._closed = False
        self.opened = 0  # pools opened over this session's life (a reuse measure)
        self._endpoint = endpoint_text(server.host, server.port)
        self._limits = bounds.Limits(server.max_response_bytes, server.max_objects, server.max_object_bytes)
        self._slots: dict[int, Slot] = {}  # id(pool) -> the limiter slot it holds until its close ends
        self.select_supported: bool | None = None
        self._permission_reopened: float | None = None  # monotonic time of the last reopen for RBAC
        self._open_failure: tuple[float, CollectorError] | None = None  # (monotonic end, error) of the last open
        #: The last call could not reach the server (organisation-wide collectors ask others first).
        self.unreachable = False

    def _secrets(self) -> list[str]:
        values = [self.server.password.get_secret_value()] if self.server.password else []
        current = self.server.current_password()
        return [*values, current] if current else values

    def invoke(
        self,
        cmdlet: str,
        parameters: Mapping[str, Any] | None = None,
        select: Sequence[str] | None = None,
        timeout: float | None = None,
        decoder: Callable[[str], Any] | None = None,
    ) -> CallResult:
        """Run one cmdlet (optionally piped into ``Select-Object -Property``) with a hard deadline.

        ``decoder`` may turn each output message's CLIXML straight into a collector record (see
        ``wire.FastOutputSerializer``); objects it cannot handle arrive decoded the generic way.

        The deadline (``call_timeout``) starts once this session is free: with discovery's
        ``via_seed`` many targets share one session and wait their turn without eating their
        budget. Raises CollectorError with a bounded ``reason`` on transport, protocol or timeout
        failure.
        """
        queued = time.monotonic()
        with self._lock:
            shared = self._open_failure
            if shared is not None and shared[0] >= queued and self._pool is None:
                # This call waited while an open failed: the server was just tried. Say so at once.
                raise self._error(str(shared[1]), shared[1].reason)
            deadline = time.monotonic() + (timeout or self.server.call_timeout)
            for attempt in (1, 2):
                reused = self._pool is not None
                opened = self.opened
                try:
                    result = self._invoke_locked(cmdlet, parameters, select, deadline, decoder)
                    self.unreachable = False
                    self._sweep_if_due()
                    if result.missing:
                        self._reopen_for_permissions()
                    return result
                except CollectorError as exc:
                    if exc.reason not in ("auth", "shutdown", "session_limit"):
                        self._discard(exc.reason)
                    error = self._error(_clip(redact(str(exc), self._secrets())), exc.reason)
                    raise self._failed(error, not reused and self.opened == opened) from None
                except Exception as exc:
                    reason = classify_exception(exc)
                    if not _never_sent(exc):  # a refused connect leaves the shell intact: keep using it
                        self._discard(reason)
                    if attempt == 1 and reused and _shell_gone(exc):
                        # IIS recycled or the shell expired: open a fresh pool and try once more.
                        log.info("shell gone, reopening server=%s", self.server.name)
                        continue
                    if reason == "auth":
                        self._auth.failed(self.server.account, _credential_fingerprint(self.server))
                    message = _clip(redact(describe_exception(exc, self.server), self._secrets()))
                    self._log_detail(exc, reason)
                    raise self._failed(self._error(message, reason), not reused and self.opened == opened) from None
        raise AssertionError("unreachable")

    def _error(self, message: str, reason: str) -> CollectorError:
        """A failure of this session, naming its endpoint and server."""
        return CollectorError(message, reason, endpoint=self.server.endpoint, server=self.server.name)

    def _failed(self, error: CollectorError, opening: bool) -> CollectorError:
        """Remember a failure to open a session (``opening``: the attempt had no pool and opened none),
        for the calls queued behind it (see ``invoke``)."""
        self.unreachable = error.reason in _SHARED_OPEN_FAILURES
        if opening and error.reason in _SHARED_OPEN_FAILURES:
            self._open_failure = (time.monotonic(), error)
        return error

    def _log_detail(self, exc: BaseException, reason: str) -> None:
        """The library's own text and traceback, at debug only (redacted): the one warning line per
        failed poll carries the plain reason."""
        if log.isEnabledFor(logging.DEBUG):
            detail = redact("".join(traceback.format_exception(exc)), self._secrets())
            log.debug("call failed server=%s endpoint=%s reason=%s detail=%s", self.server.name,
                      self.server.endpoint, reason, detail)  # fmt: skip

    def _invoke_locked(
        self,
        cmdlet: str,
        parameters: Mapping[str, Any] | None,
        select: Sequence[str] | None,
        deadline: float,
        decoder: Callable[[str], Any] | None = None,
    ) -> CallResult:
        pool = self._ensure_open(deadline)
        wire.set_decoder(pool, decoder)
        try:
            if select and self.select_supported is not False:
                result = self._run(pool, cmdlet, parameters, select, deadline)
                if self.select_supported is None:
                    self.select_supported = not any("Select-Object" in e for e in result.errors)
                if self.select_supported:
                    return result
            return self._run(pool, cmdlet, parameters, None, deadline)
        finally:
            wire.set_decoder(pool, None)

    def _ensure_open(self, deadline: float) -> RunspacePool:
        with self._pool_lock:
            if self._closed:
                raise CollectorError("the exporter is shutting down", reason="shutdown")
            if self._pool is not None:
                return self._pool
        self._auth.check(self.server.account, _credential_fingerprint(self.server))
        slot = self._limiter.acquire(self.server.account, self._endpoint)
        try:
            wsman = self._wsman_factory(self.server)
            guard = bounds.install(wsman, self._limits)
            # The open may finish after the caller gave up (_reap closes what it made): it gets that long.
            guard.begin(deadline + self._teardown_wait())
            self.server_clock.watch(wsman)
            pool = RunspacePool(wsman, configuration_name=CONFIGURATION_NAME)
            wire.install(pool, guard)
        except BaseException:
            self._limiter.release(slot)
            raise
        self._slots[id(pool)] = slot
        janitor = self._janitor
        if janitor is not None:
            pool.shell.name = janitor.owner.name  # says which exporter run opened it (orphans.py)

        def open_pool() -> None:
            if janitor is not None:  # first free what an earlier run left: it counts against the same limit
                janitor.sweep(slot, self.server.name, wsman)
            pool.open()

        opening = start_thread(open_pool, f"open-{self.server.name}")
        budget = max(0.1, deadline - time.monotonic())
        try:
            opening.result(timeout=budget)
        except FutureTimeout:
            # The server may still finish creating the shell: close it when it does, then free the slot.
            start_thread(lambda: self._reap(pool, opening), f"reap-{self.server.name}")
            raise CollectorError(f"no answer within {budget:.0f}s while opening the session", "timeout") from None
        except BaseException:
            start_thread(lambda: self._reap(pool, opening), f"reap-{self.server.name}")
            raise
        self._auth.succeeded(self.server.account)
        self._open_failure = None
        with self._pool_lock:
            if self._closed:  # shutdown began while we were opening: do not keep it
                start_thread(lambda: self._reap(pool, opening), f"reap-{self.server.name}")
                raise CollectorError("the exporter is shutting down", reason="shutdown")
            self._pool = pool
        self.opened += 1
        log.info("session opened server=%s endpoint=%s", self.server.name, self.server.endpoint)
        return pool

    def _run(
        self,
        pool: RunspacePool,
        cmdlet: str,
        parameters: Mapping[str, Any] | None,
        select: Sequence[str] | None,
        deadline: float,
    ) -> CallResult:
        ps = PowerShell(pool)
        ps.add_cmdlet(cmdlet)
        for name, value in (parameters or {}).items():
            if value is True:
                ps.add_parameter(name)  # a switch parameter
            elif value is not None and value is not False:
                ps.add_parameter(name, value)
        if select:
            ps.add_cmdlet("Select-Object").add_parameter("Property", list(select))
        started = time.monotonic()
        guard = bounds.guard_of(pool.connection)
        if guard is not None:
            guard.begin(deadline)

        def call() -> list[Any]:
            try:
                return ps.invoke()
            finally:  # pypsrp forgets a pipeline (and its output) only on close(), which costs a round trip
                pool.pipelines.pop(ps.id, None)

        too_large: CollectorError | None = None
        try:
            output = run_with_deadline(
                call,
                max(0.1, deadline - started),
                f"call-{self.server.name}",
                abort=lambda: bounds.abort(pool.connection),
            )
        except bounds.TooLarge as exc:
            too_large = CollectorError(f"{cmdlet}: {exc}", exc.reason)
        except bounds.DeadlinePassed:  # the call's thread met the deadline a moment before its caller did
            raise CollectorError(f"no answer within {deadline - started:.3g}s", "timeout") from None
        except _DECODE_ERRORS as exc:
            # pypsrp failed to deserialise the output (broken CLIXML, a dangling RefId/TNRef).
            raise CollectorError(
                f"{cmdlet}: output could not be decoded ({type(exc).__name__}: {exc})", "parse"
            ) from None
        if too_large is not None:
            del ps  # what was read up to the limit: dropped (outside the handler: no traceback holds it)
            bounds.release_memory()
            raise too_large
        if guard is not None and guard.bytes_read > bounds.TRIM_AFTER:
            bounds.release_memory(collect=False)  # the answer's buffers are freed: hand their pages back
        sent = [cmdlet, "Select-Object"] if select else [cmdlet]
        missing = [m for m in (_missing_command(r, sent) for r in ps.streams.error) if m is not None]
        return CallResult(
            objects=list(output or []),
            errors=[_record_text(r) for r in ps.streams.error],
            warnings=[_record_text(w) for w in ps.streams.warning],
            duration=time.monotonic() - started,
            failed=bool(ps.had_errors),
            missing=tuple(dict.fromkeys(missing)),
            account=self.server.account,
        )

    def _reopen_for_permissions(self) -> None:
        """After a permission failure, drop the pool (at most every PERMISSION_REOPEN_SECONDS) so the
        next call opens a session with the account's current roles."""
        now = time.monotonic()
        if self._permission_reopened is not None and now - self._permission_reopened < PERMISSION_REOPEN_SECONDS:
            return
        self._permission_reopened = now
        self._discard("permission")

    def _discard(self, reason: str) -> None:
        """Drop a pool after a failure so the next call opens a fresh one; close it in the background."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return
        log.info("session discarded server=%s reason=%s", self.server.name, reason)
        # Close even after a timeout: a slow (not dead) server would otherwise keep the session
        # counted against PowerShellMaxConcurrency until its idle timeout.
        start_thread(lambda: self._close_pool(pool, self._teardown_wait()), f"close-{self.server.name}")

    def _teardown_wait(self) -> float:
        """How long a background close may take: the HTTP read timeout plus a margin."""
        return _operation_timeout(self.server) + 15.0

    def _reap(self, pool: RunspacePool, opening: Future[Any]) -> None:
        """After an open that failed or timed out: wait for it to end, then close what it created."""
        finished = ended(opening, self._teardown_wait())
        if not finished:  # a failed open may still have created a shell
            bounds.abort(pool.connection)  # it never ended: end it, and do not leave its thread behind
            ended(opening, ABORT_GRACE)
        if not getattr(pool.shell, "opened", False) and _create_may_have_landed(opening, finished):
            # Its Create was sent but its answer never came: a server that hung may still create the
            # shell when it resumes, under the id pypsrp asked for. The sweep deletes it later.
            self._abandon(pool)
        self._close_pool(pool, self._teardown_wait())

    def _close_pool(self, pool: RunspacePool, wait: float) -> None:
        """Close a pool, waiting up to ``wait`` s, then free its session slot (the slot counts
        sessions until their close has finished or given up). A close that failed (rejected, cut,
        refused, or no answer in time) may leave the shell open there: it is handed to the janitor."""
        guard = bounds.guard_of(pool.connection)
        if guard is not None:
            guard.begin(time.monotonic() + wait)
        try:
            closing = start_thread(pool.close, f"closing-{self.server.name}")
            try:
                closing.result(timeout=wait)
            except FutureTimeout:
                bounds.abort(pool.connection)  # end the close's thread too; the shell is left to the idle timeout
                ended(closing, ABORT_GRACE)
                raise
        except Exception as exc:
            log.debug("closing pool failed server=%s error=%s", self.server.name, classify_exception(exc))
            if not _shell_gone(exc) and getattr(pool.shell, "opened", False):
                self._abandon(pool)
        finally:
            # RunspacePool.close() leaves the HTTP keep-alive connections open until garbage collection
            with contextlib.suppress(Exception):
                pool.connection.close()
            slot = self._slots.pop(id(pool), None)  # only the first close of a pool holds one
            if slot is not None:
                self._limiter.release(slot)

    def _abandon(self, pool: RunspacePool) -> None:
        """Hand a shell this session could not close to the janitor, which deletes it by id later."""
        slot = self._slots.get(id(pool)) or self._limiter.slot(self.server.account, self._endpoint)
        if self._janitor is not None:
            self._janitor.abandon(slot, self.server.name, pool.id, pool.shell.resource_uri)
            log.info("shell left open, to be closed later server=%s", self.server.name)

    def _sweep_if_due(self) -> None:
        """After a healthy call: if shells this run gave up on are pending at this endpoint, delete them
        in the background over a connection of their own (no shell is opened: no session slot)."""
        janitor = self._janitor
        if janitor is None:
            return
        pool = self._pool
        slot = self._slots.get(id(pool)) if pool is not None else None  # the budgets its open counted against
        if slot is None or not janitor.due(slot):
            return

        def sweep() -> None:
            try:
                wsman = self._wsman_factory(self.server)
                guard = bounds.install(wsman, self._limits)
                guard.begin(time.monotonic() + self._teardown_wait())
                try:
                    janitor.sweep(slot, self.server.name, wsman)
                finally:
                    wsman.close()
            except Exception as exc:  # tried again after the next healthy call or at the next open
                log.debug("sweep failed server=%s error=%s", self.server.name, classify_exception(exc))

        start_thread(sweep, f"sweep-{self.server.name}")

    def close(self, wait: float = 5.0) -> None:
        """Close the pool for good (shutdown, or the server left the inventory), within ``wait`` s.

        Does not wait for a call in flight: the shell is deleted under it, which ends that call.
        """
        with self._pool_lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            self._close_pool(pool, wait)
            log.info("session closed server=%s", self.server.name)


def _clip(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _operation_timeout(server: ResolvedServer) -> int:
    return int(max(5, min(20, server.call_timeout)))


def build_wsman(server: ResolvedServer) -> WSMan:
    """Create the pypsrp WSMan transport for one server from its resolved settings."""
    cert_validation: bool | str = server.verify_tls
    if server.verify_tls and server.ca_bundle is not None:
        cert_validation = str(server.ca_bundle)
    operation_timeout = _operation_timeout(server)
    kwargs: dict[str, Any] = {}
    if server.auth in ("kerberos", "negotiate", "ntlm"):
        kwargs["negotiate_service"] = server.negotiate_service
    # Basic over plain HTTP needs "never"; settings only allow it with allow_insecure_basic.
    # Kerberos/Negotiate over HTTP: "auto" seals every message (WinRM message encryption).
    encryption = "never" if server.auth == "basic" and not server.tls else "auto"
    username: Any = server.username
    password = server.current_password()
    problem = basic_auth_problem(server.username, password) if server.auth == "basic" else None
    if problem is not None:  # e.g. a password file rotated to such a password since start-up
        origin = f" (password file {server.password_file})" if server.password_file is not None else ""
        raise CollectorError(f"{problem}{origin}", reason="config")
    if server.keytab is not None:
        # pypsrp hands username/password to pyspnego, which also takes a credential object: a
        # KerberosKeytab gets a ticket for the principal (None: the keytab's first) from the keytab.
        import spnego

        username = spnego.KerberosKeytab(keytab=str(server.keytab), principal=server.username)
        password = None
    return WSMan(
        server.host,
        port=server.port,
        ssl=server.tls,
        path=ENDPOINT_PATH,
        auth=server.auth,
        username=username,
        password=password,
        cert_validation=cert_validation,  # type: ignore[arg-type]  # pypsrp also accepts a CA path
        connection_timeout=int(max(1, server.connect_timeout)),
        read_timeout=operation_timeout + 10,
        operation_timeout=operation_timeout,
        encryption=encryption,
        **kwargs,
    )


class SessionManager:
    """Owns every session; maps a target server to the endpoint session it is polled through."""

    def __init__(
        self,
        max_sessions_per_account: int,
        wsman_factory: Callable[[ResolvedServer], WSMan] | None = None,
        auth_backoff: AuthBackoff | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limiter = SessionLimiter(max_sessions_per_account)
        self.auth_backoff = auth_backoff or AuthBackoff()
        #: Names this run's shells and closes those earlier runs left open (see orphans.py).
        self.janitor = ShellJanitor(ShellOwner.this_process())
        self._wsman_factory = wsman_factory
        self._clock = clock
        self._sessions: dict[str, ExchangeSession] = {}
        self._dedicated: dict[str, ExchangeSession] = {}  # (purpose:server) -> a second session to it
        self._lock = threading.Lock()
        self._closed = False

    def dedicated_session(self, server: ResolvedServer, purpose: str) -> ExchangeSession:
        """A session of its own to ``server`` for calls that hold a session for minutes (Test-Mailflow
        waits for its delivery receipt up to -ExecutionTimeout), so the server's polls never wait behind
        them. It counts against ``max_sessions_per_account`` like the server's own session."""
        key = f"{purpose}:{server.name.lower()}"
        with self._lock:
            if self._closed:
                raise CollectorError("the exporter is shutting down", reason="shutdown")
            session = self._dedicated.get(key)
            if session is None or session.server != server:
                stale, session = session, self._new(server)
                self._dedicated[key] = session
                if stale is not None:
                    start_thread(stale.close, f"retire-{purpose}-{server.name}")
            return session

    def session_for(self, server: ResolvedServer) -> ExchangeSession:
        """The session for this server: its own, or the ``via`` server's."""
        key = (server.via or server.name).lower()
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                if server.via is not None:
                    raise CollectorError(f"no session for via server {server.via}", reason="config")
                if self._closed:
                    raise CollectorError("the exporter is shutting down", reason="shutdown")
                session = self._new(server)
                self._sessions[key] = session
            return session

    def _new(self, server: ResolvedServer) -> ExchangeSession:
        return ExchangeSession(server, self.limiter, self._wsman_factory, self.auth_backoff, self.janitor, self._clock)

    def sync(self, servers: Sequence[ResolvedServer]) -> None:
        """Make the direct sessions match ``servers``: new ones are added (they connect on first
        use), sessions of servers that left or whose connection settings changed are closed."""
        wanted = {s.name.lower(): s for s in servers if s.via is None}
        stale: list[ExchangeSession] = []
        with self._lock:
            if self._closed:
                return
            for key, session in list(self._sessions.items()):
                if key not in wanted or session.server != wanted[key]:
                    stale.append(self._sessions.pop(key))
            for key, server in wanted.items():
                if key not in self._sessions:
                    self._sessions[key] = self._new(server)
            for key, session in list(self._dedicated.items()):
                if session.server.name.lower() not in wanted and session.server.via is None:
                    stale.append(self._dedicated.pop(key))
        for session in stale:
            log.info("session retired server=%s", session.server.name)
            start_thread(session.close, f"retire-{session.server.name}")

    def sessions(self) -> list[ExchangeSession]:
        with self._lock:
            return list(self._sessions.values())

    def clock_readings(self) -> dict[str, ClockReading]:
        """The latest clock reading of each endpoint server that has answered, by server name."""
        out = {}
        for session in self.sessions():
            reading = session.server_clock.reading()
            if reading is not None:
                out[session.server.name] = reading
        return out

    def close_all(self, timeout: float = 8.0) -> None:
        """Close every pool in parallel and refuse new ones; returns within about ``timeout`` s
        (container runtimes kill a process 10 s after SIGTERM)."""
        with self._lock:
            self._closed = True
            sessions = [*self._sessions.values(), *self._dedicated.values()]
        closing = [
            start_thread(functools.partial(s.close, wait=timeout), f"shutdown-{s.server.name}") for s in sessions
        ]
        deadline = time.monotonic() + timeout
        for future in closing:
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except Exception:  # a close that fails or overruns must not block shutdown
                continue
        self.janitor.owner.retire()
