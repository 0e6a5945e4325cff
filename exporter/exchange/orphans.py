"""Shells left open on Exchange by an earlier run of this exporter: named when opened, closed at start.

A process that dies without closing its runspace pools (``kill -9``, OOM, power loss) leaves their
shells open on the server: WinRM treats a client that vanished as idle, not disconnected (MS-WSMV
3.1.6.5), so each shell counts against the account's PowerShellMaxConcurrency (18) until the idle
timeout (15 minutes by default) ends it. A crash loop of 18 restarts used the whole budget.

So every shell is opened with a name, ``mailflow-exporter/<host>/<pid>/<instance>``: the host name,
the process id and an instance id drawn for each session manager (one exporter run). At the first
session to an endpoint (per resolved address and account) the exporter enumerates the account's
shells there (WSMan Enumerate; a user sees their own) and deletes those that are its predecessors':

- the name has this prefix and this host name: another host's exporter (a second replica, a laptop)
  is never touched, even with the same account;
- the instance id is neither this run's nor that of another session manager alive in this process;
- and the process that opened it is gone: its pid is this process's own (a restarted container,
  where the exporter is pid 1 each time), or no process (or only a zombie) has that pid on this host.
  A sibling exporter running on the same host keeps its shells.

A shell a killed client left is still "Connected", so a new client can neither Connect nor
Reconnect to it (MS-WSMV 3.1.4.16/3.1.4.17); WSMan Delete with its ShellId closes it (MS-WSMV 3.1.4.4.1,
"forcibly close the Shell"; the same user may delete their own shells). Disconnected shells are deleted
the same way (Delete is allowed in that state, 3.1.4.1.31.7). What is not caught: a predecessor on
another host name (a replaced Kubernetes pod of a Deployment gets a new name) and a dead predecessor
whose pid another process reuses; both wait for the server's idle timeout as before.

The same sweep closes what this run itself had to give up on (``ShellJanitor.abandon``): a shell whose
close failed (the server hung past the close's wait, refused or cut the connection, rejected the
Delete) and a shell whose open was abandoned after its Create was sent (a hung server may still
create it when it resumes). Their ShellIds (pypsrp sends the pool's id as the ShellId) are kept per
endpoint, at most ``ABANDONED_LIMIT``, and deleted by id at the next sweep: every session open to that
endpoint while any is pending, and after a healthy call at most every ``RECHECK_SECONDS``. Only those
ids are deleted, never a live pool of this run, nor anything else. An id the server no longer knows
is checked ``ABANDONED_CHECKS`` times (a held Create may be processed later), then forgotten.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import requests
from pypsrp.exceptions import AuthenticationError, WinRMTransportError, WSManFaultError
from pypsrp.wsman import NAMESPACES, SelectorSet, WSMan

log = logging.getLogger(__name__)

PREFIX = "mailflow-exporter"
SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"  # MS-WSMV note <114>: shells are enumerated here
_SHELL_GONE = 2150858843
_BATCH = 64  # items asked for per Enumerate/Pull
_MAX_SHELLS = 1024  # a bound on what one enumeration may return (a user has at most a few dozen)
_HOST_CHARS = re.compile(r"[^A-Za-z0-9._-]")
ABANDONED_LIMIT = 32  # abandoned shell ids kept per endpoint (PowerShellMaxConcurrency is 18)
ABANDONED_CHECKS = 3  # sweeps an abandoned id survives while the server does not know it
RECHECK_SECONDS = 30.0  # between sweeps started by healthy calls while abandoned ids are pending

_live_lock = threading.Lock()
_live: set[str] = set()  # instance ids of the session managers alive in this process


@dataclass(frozen=True)
class ShellOwner:
    """Who opened a shell: the host name, process id and instance id its name carries."""

    host: str
    pid: int
    instance: str

    @property
    def name(self) -> str:
        """The shell name (``rsp:Name``) this owner opens its shells with."""
        return f"{PREFIX}/{self.host}/{self.pid}/{self.instance}"

    @classmethod
    def parse(cls, name: str) -> ShellOwner | None:
        """The owner a shell name says opened it, or None for a name this exporter did not make."""
        parts = name.split("/")
        if len(parts) != 4 or parts[0] != PREFIX or not parts[2].isdigit() or not parts[3]:
            return None
        return cls(parts[1], int(parts[2]), parts[3])

    @classmethod
    def this_process(cls) -> ShellOwner:
        """A new owner for this process: this host, this pid, a fresh instance id (registered as live)."""
        host = _HOST_CHARS.sub("_", socket.gethostname())[:63] or "unknown"
        owner = cls(host, os.getpid(), uuid.uuid4().hex[:16])
        with _live_lock:
            _live.add(owner.instance)
        return owner

    def retire(self) -> None:
        """This owner's sessions are closed: other managers in this process may now clean up after it."""
        with _live_lock:
            _live.discard(self.instance)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (a zombie does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, as another user
        return True
    with contextlib.suppress(OSError, IndexError), open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def is_predecessor(found: ShellOwner, me: ShellOwner, alive: Callable[[int], bool] = pid_alive) -> bool:
    """Whether a shell opened by ``found`` was left behind by an earlier run of this exporter here."""
    if found.host != me.host or found.instance == me.instance:
        return False
    with _live_lock:
        if found.instance in _live:
            return False
    return found.pid == me.pid or not alive(found.pid)


@dataclass(frozen=True)
class FoundShell:
    """One shell an Enumerate reported."""

    shell_id: str
    name: str
    state: str
    resource_uri: str


def _text(element: ET.Element, path: str) -> str:
    child = element.find(path, NAMESPACES)
    return (child.text or "").strip() if child is not None else ""


def list_shells(wsman: WSMan) -> list[FoundShell]:
    """The shells the server lists for this account (WSMan Enumerate with OptimizeEnumeration, then Pull)."""
    wsen, wsm = NAMESPACES["wsen"], NAMESPACES["wsman"]
    request = ET.Element(f"{{{wsen}}}Enumerate")
    ET.SubElement(request, f"{{{wsm}}}OptimizeEnumeration")
    ET.SubElement(request, f"{{{wsm}}}MaxElements").text = str(_BATCH)
    body = wsman.enumerate(SHELL_URI, request)
    step, items_path = "wsen:EnumerateResponse", "wsman:Items"
    found: list[FoundShell] = []
    while True:
        for shell in body.findall(f"{step}/{items_path}/rsp:Shell", NAMESPACES):
            found.append(
                FoundShell(
                    _text(shell, "rsp:ShellId"),
                    _text(shell, "rsp:Name"),
                    _text(shell, "rsp:State"),
                    _text(shell, "rsp:ResourceUri"),
                )
            )
        context = _text(body, f"{step}/wsen:EnumerationContext")
        ended = body.find(f"{step}/wsman:EndOfSequence", NAMESPACES) is not None
        ended = ended or body.find(f"{step}/wsen:EndOfSequence", NAMESPACES) is not None
        if ended or not context or len(found) >= _MAX_SHELLS:
            return found[:_MAX_SHELLS]
        pull = ET.Element(f"{{{wsen}}}Pull")
        ET.SubElement(pull, f"{{{wsen}}}EnumerationContext").text = context
        ET.SubElement(pull, f"{{{wsen}}}MaxElements").text = str(_BATCH)
        body = wsman.pull(SHELL_URI, pull)
        step, items_path = "wsen:PullResponse", "wsen:Items"


def delete_shell(wsman: WSMan, shell: FoundShell) -> bool:
    """Close a shell with WSMan Delete; True if it is gone (closed now, or already)."""
    _delete_by_id(wsman, shell.shell_id, shell.resource_uri)
    return True


def _delete_by_id(wsman: WSMan, shell_id: str, resource_uri: str) -> bool:
    """WSMan Delete of one shell; True if it was closed now, False if the server did not know it."""
    selectors = SelectorSet()
    selectors.add_option("ShellId", shell_id)
    try:
        wsman.delete(resource_uri or SHELL_URI, selector_set=selectors)
    except WSManFaultError as exc:
        if exc.code == _SHELL_GONE:
            return False
        raise
    return True


@dataclass
class _Abandoned:
    server: str
    resource_uri: str
    checks: int = 0  # sweeps that found the id unknown to the server


class ShellJanitor:
    """Closes this exporter's orphaned shells: its dead predecessors', once per endpoint and account,
    and the ones this run gave up closing, at every sweep until they are gone."""

    def __init__(
        self, owner: ShellOwner, alive: Callable[[int], bool] = pid_alive, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.owner = owner
        self._alive = alive
        self._clock = clock
        self._lock = threading.Lock()
        self._locks: dict[Hashable, threading.Lock] = {}
        self._done: set[Hashable] = set()
        self._abandoned: dict[Hashable, dict[str, _Abandoned]] = {}  # key -> shell id -> what to delete
        self._recheck: dict[Hashable, float] = {}  # key -> when a healthy call may sweep again
        #: Shells this run could not close (counted once each), and those of them a later sweep closed,
        #: by the server name of the session that gave them up.
        self.abandoned: Counter[str] = Counter()
        self.reclaimed: Counter[str] = Counter()

    @property
    def abandoned_total(self) -> int:
        """Shells this run could not close, over all servers."""
        with self._lock:
            return sum(self.abandoned.values())

    @property
    def reclaimed_total(self) -> int:
        """Abandoned shells a later sweep closed, over all servers."""
        with self._lock:
            return sum(self.reclaimed.values())

    def counts(self) -> dict[str, tuple[int, int]]:
        """Per server: (shells abandoned, of which reclaimed)."""
        with self._lock:
            return {s: (n, self.reclaimed[s]) for s, n in self.abandoned.items()}

    def abandon(self, key: Hashable, server: str, shell_id: str, resource_uri: str) -> None:
        """Remember a shell of this run that may still be open on the endpoint ``key`` although its
        close failed or its open was given up; the next sweep there deletes it. The oldest is
        forgotten beyond ABANDONED_LIMIT (the server's idle timeout ends it)."""
        shell_id = shell_id.upper()
        with self._lock:
            pending = self._abandoned.setdefault(key, {})
            if shell_id in pending:
                return
            while len(pending) >= ABANDONED_LIMIT:
                pending.pop(next(iter(pending)))
            pending[shell_id] = _Abandoned(server, resource_uri)
            self.abandoned[server] += 1

    def pending(self, key: Hashable) -> int:
        """How many abandoned shells are waiting to be deleted at ``key``."""
        with self._lock:
            return len(self._abandoned.get(key, {}))

    def due(self, key: Hashable) -> bool:
        """Whether a healthy call should start a sweep at ``key`` now (pending shells, not swept lately);
        True claims the sweep (the next claim waits RECHECK_SECONDS)."""
        now = self._clock()
        with self._lock:
            if not self._abandoned.get(key) or self._recheck.get(key, 0.0) > now:
                return False
            self._recheck[key] = now + RECHECK_SECONDS
            return True

    def sweep(self, key: Hashable, server: str, wsman: WSMan) -> int:
        """Delete the predecessors' shells the endpoint lists (the first time for ``key``) and this run's
        abandoned shells there; returns how many were closed.

        A failure to connect or authenticate is raised: the session open that follows would fail the
        same way, and a second bad logon would count twice towards the account's lockout. The sweep
        is then tried again with the next open. An endpoint that refuses the enumeration (a WSMan
        fault, an HTTP error other than 401/403, an answer that does not parse) is not asked again;
        a shell whose Delete fails is left to the idle timeout and the sweep tried again next time."""
        with self._lock:
            if key in self._done and not self._abandoned.get(key):
                return 0
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            reclaimed = self._reclaim(key, server, wsman)
            if key in self._done:
                return reclaimed
            try:
                shells = list_shells(wsman)
            except Exception as exc:
                if _unreachable(exc):
                    raise
                # the endpoint does not enumerate shells for this user: do not ask again
                log.info("orphaned shells not looked for server=%s: enumerate refused (%s)", server, _describe(exc))
                self._done.add(key)
                return reclaimed
            closed, kept, failed = self._close(server, wsman, shells)
            if not failed:
                self._done.add(key)
        if closed or kept or failed:
            # kept: shells of another exporter run that is still alive (or on another host)
            log.info("orphaned shells server=%s closed=%d kept=%d failed=%d", server, closed, kept, failed)
        return closed + reclaimed

    def _reclaim(self, key: Hashable, server: str, wsman: WSMan) -> int:
        """Delete this run's abandoned shells at ``key`` by ShellId (per-key lock held). A failure to
        reach or log on to the endpoint is raised and they stay pending."""
        with self._lock:
            pending = list(self._abandoned.get(key, {}).items())
        closed = unknown = failed = 0
        for shell_id, entry in pending:
            try:
                existed = _delete_by_id(wsman, shell_id, entry.resource_uri)
            except Exception as exc:
                if _unreachable(exc):
                    raise
                failed += 1  # rejected now: tried again at the next sweep
                log.debug("closing an abandoned shell failed server=%s error=%s", server, _describe(exc))
                continue
            with self._lock:
                entries = self._abandoned.get(key, {})
                if existed:
                    closed += 1
                    self.reclaimed[entry.server] += 1
                    entries.pop(shell_id, None)
                else:  # closed meanwhile, or not created yet (a held Create): looked for again a few times
                    unknown += 1
                    entry.checks += 1
                    if entry.checks >= ABANDONED_CHECKS:
                        entries.pop(shell_id, None)
        if closed or failed:
            log.info("abandoned shells server=%s closed=%d unknown=%d failed=%d", server, closed, unknown, failed)
        return closed

    def _close(self, server: str, wsman: WSMan, shells: list[FoundShell]) -> tuple[int, int, int]:
        closed = kept = failed = 0
        for shell in shells:
            owner = ShellOwner.parse(shell.name)
            if owner is None or owner.instance == self.owner.instance:
                continue
            if not is_predecessor(owner, self.owner, self._alive):
                kept += 1
                continue
            try:
                delete_shell(wsman, shell)
                closed += 1
            except Exception as exc:
                failed += 1
                log.debug("closing an orphaned shell failed server=%s error=%s", server, type(exc).__name__)
        return closed, kept, failed


def _unreachable(exc: BaseException) -> bool:
    """A failure to reach or log on to the endpoint (as opposed to a refusal of the request itself)."""
    if isinstance(exc, requests.exceptions.RequestException | AuthenticationError | ImportError):
        return True
    if isinstance(exc, WinRMTransportError):
        return exc.code in (401, 403)
    return type(exc).__module__.startswith(("spnego", "gssapi", "krb5"))  # Kerberos (the optional extra)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, WSManFaultError):
        return f"WSMan fault {exc.code}"
    if isinstance(exc, WinRMTransportError):
        return f"HTTP {exc.code}"
    return type(exc).__name__
