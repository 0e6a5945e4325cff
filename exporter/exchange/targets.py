"""The set of Exchange servers to poll: configured ones plus those found by discovery."""

from __future__ import annotations

import fnmatch
import threading
from dataclasses import dataclass

from pydantic import ValidationError

from exporter.errors import CollectorError, ConfigError
from exporter.exchange.session import ExchangeSession, SessionManager
from exporter.settings import ResolvedServer, ServerSettings, Settings, resolve_server, resolved_servers


@dataclass(frozen=True)
class DiscoveredServer:
    """A transport server reported by Get-ExchangeServer.

    ``hub_transport``: it runs the Transport service (a Mailbox server): queues, message tracking,
    databases. False for an Exchange 2013 Client Access server, which runs only the Front End
    Transport service (the port-25 Frontend receive connectors).
    """

    name: str
    fqdn: str
    version: str
    site: str
    roles: str
    hub_transport: bool = True
    frontend_transport: bool = False


class ExchangeTargets:
    """Thread-safe inventory of servers, each mapped to the session it is polled through."""

    def __init__(self, settings: Settings, sessions: SessionManager) -> None:
        self._settings = settings
        self._sessions = sessions
        self._lock = threading.Lock()
        self._explicit = {s.name.upper(): s for s in resolved_servers(settings)}
        self._discovered: dict[str, ResolvedServer] = {}
        # Keys of the servers discovery reported without the hub Transport service (name, FQDN, host).
        self._frontend_only: frozenset[str] = frozenset()
        sessions.sync(list(self._explicit.values()))

    def names(self) -> list[str]:
        """Every server name to poll, sorted."""
        with self._lock:
            return sorted({s.name for s in self._explicit.values()} | {s.name for s in self._discovered.values()})

    def hub_transport_names(self) -> list[str]:
        """The servers that run the hub Transport service, sorted: every server but those discovery
        reported as Client Access only (a configured server discovery never saw keeps polling)."""
        with self._lock:
            explicit, discovered = list(self._explicit.values()), list(self._discovered.values())
            frontend_only = self._frontend_only
        # A discovered server's host may be the seed's (connect: via_seed): match it by name only.
        keep = {s.name for s in explicit if not _keys(s.name, s.host) & frontend_only}
        keep |= {s.name for s in discovered if s.name.upper() not in frontend_only}
        return sorted(keep)

    def server(self, name: str) -> ResolvedServer:
        with self._lock:
            server = self._explicit.get(name.upper()) or self._discovered.get(name.upper())
        if server is None:
            raise CollectorError(f"server {name} is no longer a target", reason="config")
        return server

    def session(self, name: str) -> ExchangeSession:
        """The session that polls this server."""
        return self._sessions.session_for(self.server(name))

    def dedicated_session(self, name: str, purpose: str) -> ExchangeSession:
        """A session of its own to this server's endpoint (its ``via`` server's, when it has one) for
        calls that hold a session for minutes (``SessionManager.dedicated_session``)."""
        server = self.server(name)
        return self._sessions.dedicated_session(self.server(server.via) if server.via else server, purpose)

    def seed(self) -> ResolvedServer:
        """The server discovery asks (``discovery.seed`` or the first configured server)."""
        wanted = self._settings.exchange.discovery.seed
        with self._lock:
            if wanted:
                return self._explicit[wanted.upper()]
            return next(iter(self._explicit.values()))

    def accept(self, name: str) -> bool:
        """Apply the discovery include/exclude glob patterns (case-insensitive)."""
        d = self._settings.exchange.discovery
        lowered = name.lower()
        if d.include and not any(fnmatch.fnmatch(lowered, p.lower()) for p in d.include):
            return False
        return not any(fnmatch.fnmatch(lowered, p.lower()) for p in d.exclude)

    def is_configured(self, item: DiscoveredServer) -> bool:
        """True if a configured server is this one (by name, FQDN or host, case-insensitive)."""
        names = {item.name.upper(), item.fqdn.upper(), item.fqdn.split(".")[0].upper()}
        for server in self._explicit.values():
            if {server.name.upper(), server.host.upper(), server.host.split(".")[0].upper()} & names:
                return True
        return False

    def set_discovered(self, found: list[DiscoveredServer]) -> list[str]:
        """Replace the discovered set; configured servers win over discovered ones. Sessions of
        servers that went away (or whose address changed) are closed. Returns entries skipped."""
        d = self._settings.exchange.discovery
        seed = self.seed()
        resolved: dict[str, ResolvedServer] = {}
        skipped: list[str] = []
        for item in found:
            if self.is_configured(item) or not self.accept(item.name):
                continue
            try:
                if d.connect == "via_seed":
                    server = resolve_server(self._settings, ServerSettings(name=item.name), host=seed.host)
                    server = server.model_copy(update={"via": seed.name})
                else:
                    server = resolve_server(self._settings, ServerSettings(name=item.name), host=item.fqdn or item.name)
            except (ConfigError, ValidationError) as exc:  # one odd entry must not stop discovery
                skipped.append(f"{item.name}: {str(exc).splitlines()[-1].strip()}")
                continue
            resolved[item.name.upper()] = server
        frontend_only = frozenset(k for item in found if not item.hub_transport for k in _keys(item.name, item.fqdn))
        with self._lock:
            self._discovered = resolved
            self._frontend_only = frontend_only
        self._sessions.sync([*self._explicit.values(), *resolved.values()])
        return skipped


def _keys(name: str, host: str) -> set[str]:
    """How a server may be named: its name, its host or FQDN, and that host's first label (upper case)."""
    return {name.upper(), host.upper(), host.split(".")[0].upper()}
