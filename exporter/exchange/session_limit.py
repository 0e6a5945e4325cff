"""The exporter's own cap on concurrent Exchange sessions, per account and resolved endpoint."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from exporter.errors import CollectorError

__all__ = ["SessionLimiter", "Slot", "endpoint_text", "resolve_addresses", "split_endpoint"]

Slot = tuple[tuple[str, str], ...]  # the (account, address:port) budgets one session counts against


def resolve_addresses(host: str, port: int | None) -> list[str]:
    """The addresses a connection to ``host`` may reach, as urllib3 looks them up (getaddrinfo, TCP)."""
    infos = socket.getaddrinfo(host, port or 0, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def endpoint_text(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_endpoint(endpoint: str) -> tuple[str, int | None]:
    """``host:port``, ``[v6]:port`` or a bare host into (lower-case host, port or None)."""
    if endpoint.startswith("["):
        host, _, rest = endpoint[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif endpoint.count(":") == 1:
        host, _, port_text = endpoint.partition(":")
    else:  # a name, an IPv4 address or a bare IPv6 address
        host, port_text = endpoint, ""
    return host.lower(), int(port_text) if port_text.isdigit() else None


class SessionLimiter:
    """Caps concurrently open sessions per account and endpoint.

    Exchange counts a user's sessions on each server, whatever name the client used for it: the
    endpoint is every address its host name resolves to (with the port), so one server under two
    names (``localhost`` and ``127.0.0.1``, a CNAME and the FQDN) shares one budget. A session counts
    against each address its name may reach. Resolutions are kept ``ttl`` seconds; a name that does not
    resolve is counted by name (its connection fails anyway).
    """

    def __init__(
        self,
        limit: int,
        resolve: Callable[[str, int | None], list[str]] = resolve_addresses,
        ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self._resolve, self._ttl, self._clock = resolve, ttl, clock
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str], int] = {}
        self._resolved: dict[tuple[str, int | None], tuple[float, list[str]]] = {}

    def slot(self, account: str, endpoint: str) -> Slot:
        """The budgets a session to ``endpoint`` (``host:port`` or ``host``) as ``account`` counts against."""
        host, port = split_endpoint(endpoint)
        now = self._clock()
        with self._lock:
            cached = self._resolved.get((host, port))
        if cached is not None and cached[0] > now:
            addresses = cached[1]
        else:
            try:
                addresses = self._resolve(host, port) or [host]
            except (OSError, UnicodeError, ValueError):
                addresses = [host]
            with self._lock:
                self._resolved[(host, port)] = (now + self._ttl, addresses)
        suffix = f":{port}" if port is not None else ""
        return tuple((account.lower(), f"{a}{suffix}") for a in addresses)

    def acquire(self, account: str, endpoint: str) -> Slot:
        """Take a slot on every budget of ``endpoint`` or raise CollectorError(reason="session_limit")."""
        slot = self.slot(account, endpoint)
        with self._lock:
            used = max(self._open.get(key, 0) for key in slot)
            if used >= self.limit:
                where = ", ".join(key[1] for key in slot)
                raise CollectorError(
                    f"{used} sessions for {account} on {endpoint} ({where}) are open or closing; "
                    f"the limit is {self.limit} (Exchange PowerShellMaxConcurrency)",
                    reason="session_limit",
                )
            for key in slot:
                self._open[key] = self._open.get(key, 0) + 1
        return slot

    def release(self, slot: Slot) -> None:
        """Give back a slot ``acquire`` returned."""
        with self._lock:
            for key in slot:
                self._open[key] = max(0, self._open.get(key, 0) - 1)

    def in_use(self, account: str, endpoint: str) -> int:
        """Sessions counted against the busiest budget of ``endpoint``."""
        slot = self.slot(account, endpoint)
        with self._lock:
            return max(self._open.get(key, 0) for key in slot)
