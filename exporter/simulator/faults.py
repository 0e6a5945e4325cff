"""Fault injection: per server (endpoint) and optionally per cmdlet, switchable at runtime.

A fault is ``(server, kind, cmdlet)`` plus an optional number of ``seconds`` and a ``message``.
Setting the same ``(server, kind, cmdlet)`` again replaces it; ``clear`` heals one server or all.
The registry is thread-safe; request handlers ask it what to do, and blocked requests (``hang``)
wait on it until the fault is cleared or the simulator stops.

Kinds (what each does is implemented in ``transport.py``, ``service.py`` and ``shells.py``):

``latency``           ``seconds`` added to every HTTP response of the endpoint (with ``cmdlet``: only to
                      the Command request that runs that cmdlet).
``cmdlet_latency``    ``seconds`` before a matching cmdlet (all cmdlets without ``cmdlet``) writes output;
                      the client keeps polling with Receive meanwhile.
``hang``              requests are accepted and never answered until cleared or the simulator stops
                      (with ``cmdlet``: only the Command request for that cmdlet).
``refused``           the endpoint's listening socket is closed (connections refused, open ones cut);
                      it listens again on the same port when cleared.
``http401``           HTTP 401 with ``WWW-Authenticate: Basic`` (with ``cmdlet``: on its Command request).
``http500``           HTTP 500 with an IIS-style body (``message`` overrides the body).
``wsman_fault``       HTTP 500 with a SOAP ``s:Fault``/``WSManFault`` (``message`` overrides the text).
``malformed_clixml``  the matching cmdlet's output messages carry broken CLIXML (``message``
                      ``"truncated"`` cuts the XML; default: a dangling ``TNRef``).
``error_record``      the matching cmdlet writes one error record (``message``) and no output.
``shell_expiry``      one-shot: the endpoint forgets its shells now; their next request gets the
                      WSMan fault for an unknown ShellId (2150858843). Not kept as an active fault.
``down``              the whole server is down: its endpoint is refused (as ``refused``) and the rest of
                      the organisation sees the consequences (``consequences.py``): partners' shadow
                      queues for it, database copy failover. ``rate_per_minute``: shadow messages the
                      partners gain per minute (default 0).
``back_pressure``     the Transport service is under resource pressure (``level`` Medium or High, the
                      ``resource`` meter, ``rate_per_minute`` Submission queue growth): see
                      ``consequences.py`` and ``diagnostics.py``.
``drip``              a hostile or broken server (or a proxy in front of it): every HTTP response of the
                      endpoint (with ``cmdlet``: the responses to that cmdlet's Command and Receive
                      requests) is sent one byte every ``seconds``, status line and headers included, so
                      no single read of the client ever waits long. Counted in ``responses_cut`` when the
                      client closes the connection before the last byte.
``oversize``          the matching cmdlet's output is made ``megabytes`` MB of CLIXML: its objects are
                      written again and again until that size is reached (a cmdlet that writes no object
                      is unchanged). ``message`` ``"single"``: one string object of that size instead;
                      ``"one_response"``: repeated objects, all sent in one Receive response regardless of
                      the client's MaxEnvelopeSize. Stream bytes sent in Receive responses are counted
                      in ``output_bytes_sent``.

``since`` is the fault's start on the simulator's (injectable) clock; the consequences are a
function of it. Faults that are cleared or replaced stay in :meth:`FaultInjector.history` with the
time they ended, so what a server logged while it was faulted does not change afterwards.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

__all__ = ["BACK_PRESSURE_LEVELS", "BACK_PRESSURE_RESOURCES", "Fault", "FaultInjector", "FaultKind"]


class FaultKind(StrEnum):
    """The fault kinds (their values are the strings accepted by the API and the control port)."""

    LATENCY = "latency"
    CMDLET_LATENCY = "cmdlet_latency"
    HANG = "hang"
    REFUSED = "refused"
    HTTP401 = "http401"
    HTTP500 = "http500"
    WSMAN_FAULT = "wsman_fault"
    MALFORMED_CLIXML = "malformed_clixml"
    ERROR_RECORD = "error_record"
    SHELL_EXPIRY = "shell_expiry"
    DOWN = "down"
    BACK_PRESSURE = "back_pressure"
    DRIP = "drip"
    OVERSIZE = "oversize"


#: Kinds that act on the HTTP exchange; with a cmdlet they act on that cmdlet's Command request.
TRANSPORT_KINDS = frozenset(
    {FaultKind.LATENCY, FaultKind.HANG, FaultKind.HTTP401, FaultKind.HTTP500, FaultKind.WSMAN_FAULT}
)
_NEEDS_SECONDS = frozenset({FaultKind.LATENCY, FaultKind.CMDLET_LATENCY, FaultKind.DRIP})
#: The most output an ``oversize`` fault makes (the simulator holds it in memory until it is received).
MAX_OVERSIZE_MEGABYTES = 4096.0
OVERSIZE_VARIANTS = ("single", "one_response")
#: Back pressure levels as ResourceThrottling reports them (Low is no pressure: clear the fault).
BACK_PRESSURE_LEVELS = ("Medium", "High")
#: The resource meters of an Exchange 2019 Transport service (the E19 ResourceThrottling capture).
BACK_PRESSURE_RESOURCES = (
    "PrivateBytes",
    "SystemMemory",
    "UsedVersionBuckets",
    "JetSessions",
    "CheckpointDepth",
    "DatabaseUsedSpace",
    "UsedDiskSpace",
)
_HISTORY = 1000  # ended faults remembered (a soak test toggles faults thousands of times)


@dataclass(frozen=True)
class Fault:
    """One active fault."""

    server: str
    kind: FaultKind
    cmdlet: str | None = None
    seconds: float | None = None
    message: str | None = None
    since: float = 0.0
    level: str | None = None
    rate_per_minute: float | None = None
    resource: str | None = None
    megabytes: float | None = None

    def matches_cmdlet(self, names: Iterable[str]) -> bool:
        """True if the fault has no cmdlet, or one of ``names`` is its cmdlet (case-insensitive)."""
        if self.cmdlet is None:
            return True
        wanted = self.cmdlet.lower()
        return any(name.lower() == wanted for name in names)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for the control API and stats)."""
        data = asdict(self)
        data["kind"] = self.kind.value
        return data


Listener = Callable[[str, FaultKind, bool], None]


class FaultInjector:
    """The thread-safe registry of active faults for a set of servers."""

    def __init__(self, servers: Iterable[str], clock: Callable[[], float] = time.time) -> None:
        self._servers = {s.upper(): s for s in servers}
        self._clock = clock
        self._faults: dict[tuple[str, FaultKind, str | None], Fault] = {}
        self._history: deque[tuple[Fault, float]] = deque(maxlen=_HISTORY)
        self._cond = threading.Condition()
        self._listeners: list[Listener] = []
        self._stopping = False
        self._generation = 0

    # -- public API ----------------------------------------------------------------------------
    def set(
        self,
        server: str,
        kind: FaultKind | str,
        cmdlet: str | None = None,
        seconds: float | None = None,
        message: str | None = None,
        *,
        level: str | None = None,
        rate_per_minute: float | None = None,
        resource: str | None = None,
        since: float | None = None,
        megabytes: float | None = None,
    ) -> None:
        """Activate a fault on ``server`` (a server name, or ``*`` for every server).

        ``level``/``resource`` apply to ``back_pressure`` (default High on UsedVersionBuckets),
        ``rate_per_minute`` to ``down`` and ``back_pressure``; ``since`` (default: now on the
        simulator's clock) back-dates the fault. Raises ``ValueError`` for an unknown server, kind,
        level or resource, a parameter the kind does not take, or a missing/negative ``seconds``
        where the kind needs one (latency, cmdlet_latency; drip: > 0), and ``megabytes`` (``oversize``
        only, and needed there: more than 0, at most ``MAX_OVERSIZE_MEGABYTES``).
        """
        fault_kind = FaultKind(kind) if not isinstance(kind, FaultKind) else kind
        if fault_kind in _NEEDS_SECONDS and (seconds is None or seconds < 0):
            raise ValueError(f"fault {fault_kind.value} needs seconds >= 0")
        if seconds is not None and seconds < 0:
            raise ValueError("seconds must be >= 0")
        if fault_kind is FaultKind.DRIP and not seconds:
            raise ValueError("fault drip needs seconds > 0 (the time between two bytes)")
        _check_oversize(fault_kind, megabytes, message)
        level, resource = _consequence_params(fault_kind, level, rate_per_minute, resource)
        names = self._resolve(server)
        if fault_kind is FaultKind.SHELL_EXPIRY:
            for name in names:
                self._notify(name, fault_kind, True)
            return
        start = self._clock() if since is None else since
        with self._cond:
            now = self._clock()
            for name in names:
                key = (name, fault_kind, cmdlet.lower() if cmdlet else None)
                replaced = self._faults.get(key)
                if replaced is not None:
                    self._history.append((replaced, now))
                self._faults[key] = Fault(
                    name, fault_kind, cmdlet, seconds, message, start, level, rate_per_minute, resource, megabytes
                )
            self._generation += 1
            self._cond.notify_all()
        for name in names:
            self._notify(name, fault_kind, True)

    def clear(self, server: str | None = None, kind: FaultKind | str | None = None) -> None:
        """Heal ``server`` (or every server when None/``*``), optionally only faults of ``kind``."""
        names = self._resolve(server) if server not in (None, "*") else list(self._servers.values())
        wanted = None if kind is None else FaultKind(kind)
        removed: list[Fault] = []
        with self._cond:
            now = self._clock()
            for key, fault in list(self._faults.items()):
                if key[0] in names and (wanted is None or fault.kind is wanted):
                    removed.append(self._faults.pop(key))
                    self._history.append((fault, now))
            self._generation += 1
            self._cond.notify_all()
        for fault in removed:
            if not any(f.server == fault.server and f.kind is fault.kind for f in self.active(fault.server)):
                self._notify(fault.server, fault.kind, False)

    def active(self, server: str | None = None) -> list[Fault]:
        """Active faults, for one server or all."""
        with self._cond:
            faults = list(self._faults.values())
        if server is None:
            return faults
        key = server.upper()
        return [f for f in faults if f.server.upper() == key]

    def history(self, server: str | None = None) -> list[tuple[Fault, float]]:
        """Faults that ended (cleared or replaced), with the clock time they ended, oldest first."""
        with self._cond:
            ended = list(self._history)
        if server is None:
            return ended
        key = server.upper()
        return [(f, until) for f, until in ended if f.server.upper() == key]

    def find(self, server: str, kind: FaultKind, cmdlets: Iterable[str] | None = None) -> Fault | None:
        """The active fault of ``kind`` on ``server`` that applies, or None.

        With ``cmdlets`` None only faults without a cmdlet apply (an endpoint-wide effect); with a
        list of cmdlet names, faults with no cmdlet or with one of those names apply.
        """
        names = list(cmdlets) if cmdlets is not None else None
        for fault in self.active(server):
            if fault.kind is not kind:
                continue
            if names is None and fault.cmdlet is None:
                return fault
            if names is not None and fault.matches_cmdlet(names):
                return fault
        return None

    def wait_while(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Block while ``predicate()`` is true (re-checked on every fault change) or until stop.

        Returns True when the predicate became false, False on timeout or when stopping.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while predicate():
                if self._stopping:
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; returns False early if the simulator is stopping."""
        deadline = time.monotonic() + seconds
        with self._cond:
            while not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return True
                self._cond.wait(remaining)
        return False

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stopping

    def stop(self) -> None:
        """Release every waiter (hung requests, latency sleeps); used at shutdown."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(server, kind, active)`` after a fault is set (True) or fully cleared (False)."""
        self._listeners.append(listener)

    # -- helpers -------------------------------------------------------------------------------
    def _resolve(self, server: str | None) -> list[str]:
        if server is None or server == "*":
            return list(self._servers.values())
        name = self._servers.get(server.strip().upper())
        if name is None:
            raise ValueError(f"unknown server {server!r}; known: {', '.join(self._servers.values())}")
        return [name]

    def _notify(self, server: str, kind: FaultKind, active: bool) -> None:
        for listener in list(self._listeners):
            listener(server, kind, active)


def _check_oversize(kind: FaultKind, megabytes: float | None, message: str | None) -> None:
    """``megabytes`` belongs to ``oversize`` (and is needed there); its ``message`` names a variant."""
    if kind is not FaultKind.OVERSIZE:
        if megabytes is not None:
            raise ValueError(f"fault {kind.value} takes no megabytes")
        return
    if megabytes is None or not 0 < megabytes <= MAX_OVERSIZE_MEGABYTES:
        raise ValueError(f"fault oversize needs megabytes > 0 and <= {MAX_OVERSIZE_MEGABYTES:g}")
    if message is not None and message not in OVERSIZE_VARIANTS:
        raise ValueError(f"fault oversize message must be one of {', '.join(OVERSIZE_VARIANTS)} (or none)")


def _consequence_params(
    kind: FaultKind, level: str | None, rate: float | None, resource: str | None
) -> tuple[str | None, str | None]:
    """Validate the parameters of ``down``/``back_pressure``; returns (level, resource) normalised."""
    if kind not in (FaultKind.DOWN, FaultKind.BACK_PRESSURE):
        if level is not None or rate is not None or resource is not None:
            raise ValueError(f"fault {kind.value} takes no level, rate_per_minute or resource")
        return None, None
    if rate is not None and rate < 0:
        raise ValueError("rate_per_minute must be >= 0")
    if kind is FaultKind.DOWN:
        if level is not None or resource is not None:
            raise ValueError("fault down takes no level or resource")
        return None, None
    chosen_level = next((v for v in BACK_PRESSURE_LEVELS if v.lower() == (level or "High").lower()), None)
    if chosen_level is None:
        raise ValueError(f"back_pressure level must be one of {', '.join(BACK_PRESSURE_LEVELS)}")
    chosen = next((r for r in BACK_PRESSURE_RESOURCES if r.lower() == (resource or "UsedVersionBuckets").lower()), None)
    if chosen is None:
        raise ValueError(f"back_pressure resource must be one of {', '.join(BACK_PRESSURE_RESOURCES)}")
    return chosen_level, chosen
