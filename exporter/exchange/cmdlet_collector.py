"""Shared plumbing of collectors that run one Exchange cmdlet per poll and parse its objects.

Per-server collectors (``Get-ServerComponentState -Identity EX01``...) poll every transport
server; those whose cmdlet needs the hub Transport service or mailboxes (``needs_hub_transport``)
skip the Exchange 2013 Client Access servers discovery found. Organisation-wide collectors
(``Get-SendConnector``, ``Get-AcceptedDomain``) return the same answer from any server, so they poll
once per interval under the target ``organization``, through the seed server's session, and fail
over to the next server when that one cannot be reached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from prometheus_client.metrics_core import Metric

from exporter.errors import CollectorError, ParseError
from exporter.exchange.session import CallResult, ExchangeSession
from exporter.exchange.targets import ExchangeTargets

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The ``target`` label of organisation-wide collectors.
ORG_TARGET = "organization"
#: The scheduler executor of organisation-wide collectors: their own workers (exporter.service).
ORG_EXECUTOR = "org"
#: Failures that say "this server cannot be reached", worth trying another server for.
_FAILOVER_REASONS = frozenset({"timeout", "connection", "tls", "http_error", "wsman_fault", "session_limit", "auth"})
_MAX_FAILOVER = 3


def run_cmdlet(
    session: ExchangeSession,
    collector: str,
    target: str,
    cmdlet: str,
    params: Mapping[str, Any] | None = None,
    select: Sequence[str] | None = None,
    decoder: Callable[[str], Any] | None = None,
) -> CallResult:
    """Invoke, turn error records into CollectorError(cmdlet_error), log warnings (partial data).
    ``decoder``: see ``ExchangeSession.invoke``."""
    result = session.invoke(cmdlet, params, select=select, decoder=decoder)
    shown = " ".join([cmdlet, *(f"-{k} {v}" for k, v in (params or {}).items())])
    result.raise_for_errors(shown)
    for warning in result.warnings:
        log.warning('cmdlet warning collector=%s target=%s warning="%s"', collector, target, warning[:300])
    return result


def parse_all(what: str, objects: Iterable[Any], parse: Callable[[Any], T]) -> list[T]:
    """Parse every object; any unexpected exception becomes a ParseError naming the cmdlet."""
    try:
        return [parse(o) for o in objects]
    except CollectorError:
        raise
    except Exception as exc:
        raise ParseError(f"{what}: unexpected output: {type(exc).__name__}: {str(exc)[:200]}") from None


class ServerCollector:
    """Base of collectors that poll each transport server; subclasses implement ``collect``."""

    name = "override"
    #: True when the cmdlet has nothing to ask a server without the hub Transport service (an
    #: Exchange 2013 Client Access server): such servers are then not targets at all.
    needs_hub_transport = False
    targets_from = ("discovery",)  # the servers it finds are targets too

    def __init__(self, targets: ExchangeTargets, interval: float) -> None:
        self._targets = targets
        self._interval = interval

    def interval(self) -> float:
        return self._interval

    def targets(self) -> list[str]:
        return self._targets.hub_transport_names() if self.needs_hub_transport else self._targets.names()

    def poll(self, target: str) -> Any:
        return self.collect(self._targets.session(target), target)

    def collect(self, session: ExchangeSession, server: str) -> Any:
        """Poll one server through ``session``; return an immutable result."""
        raise NotImplementedError

    def render(self, results: Mapping[str, Any]) -> Iterable[Metric]:
        """Metric families for the fresh results, keyed by target."""
        raise NotImplementedError

    def run(
        self,
        session: ExchangeSession,
        target: str,
        cmdlet: str,
        params: Mapping[str, Any] | None = None,
        select: Sequence[str] | None = None,
        decoder: Callable[[str], Any] | None = None,
    ) -> CallResult:
        return run_cmdlet(session, self.name, target, cmdlet, params, select, decoder)

    def fetch(
        self,
        session: ExchangeSession,
        server: str,
        cmdlet: str,
        params: Mapping[str, Any] | None,
        parse: Callable[[Any, str], T],
        select: Sequence[str] | None = None,
        decoder: Callable[[str], T] | None = None,
    ) -> list[T]:
        """Run the cmdlet and parse each output object with ``parse(obj, server)``. ``decoder`` may turn
        an output message's CLIXML straight into the record (``ExchangeSession.invoke``); ``parse`` then
        gets that record, and pypsrp's object for the messages the decoder left alone."""
        result = self.run(session, server, cmdlet, params, select, decoder)
        shown = " ".join([cmdlet, *(f"-{k} {v}" for k, v in (params or {}).items())])
        return parse_all(shown, result.objects, lambda o: parse(o, server))


class CappedServerCollector(ServerCollector):
    """A per-server collector with one cardinality cap: the most values its free-form label (database,
    certificate, service...) keeps per server; the rest are reported as ``other`` (exporter.cardinality)."""

    def __init__(self, targets: ExchangeTargets, interval: float, limit: int) -> None:
        super().__init__(targets, interval)
        self._limit = limit


class OrgCollector(ServerCollector):
    """Base of organisation-wide collectors: one target, ``organization``, with server failover."""

    executor = ORG_EXECUTOR

    def targets(self) -> list[str]:
        return [ORG_TARGET] if self._targets.names() else []

    def candidates(self) -> list[str]:
        """Servers to ask, seed first; servers whose last call could not reach them after the others."""
        seed = self._targets.seed().name
        names = [seed, *(n for n in self._targets.names() if n.upper() != seed.upper())]
        return sorted(names, key=self._unreachable)[:_MAX_FAILOVER]

    def _unreachable(self, name: str) -> bool:
        try:
            return self._targets.session(name).unreachable
        except CollectorError:
            return False

    def poll(self, target: str) -> Any:
        last: CollectorError | None = None
        for server in self.candidates():
            try:
                return self.collect(self._targets.session(server), server)
            except CollectorError as exc:
                if exc.reason not in _FAILOVER_REASONS:
                    raise
                log.info("org-wide poll failing over collector=%s server=%s reason=%s", self.name, server, exc.reason)
                last = exc
        if last is None:
            raise CollectorError("no Exchange server to ask", reason="config")
        raise last
