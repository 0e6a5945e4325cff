"""Server component state (``Get-ServerComponentState -Identity EX01``): maintenance mode and friends.

A server in maintenance has ``HubTransport`` Draining or Inactive (and often ``ServerWideOffline``
Inactive): it accepts no new mail, yet every service runs, so nothing else notices. The requester
(Maintenance, HealthApi, Functional, Sidelined, Deployment) says who set the state: an admin's
maintenance script, or Managed Availability taking the component down itself.

Over remote PowerShell (serialization depth 1) ``LocalStates``/``RemoteStates`` arrive as lists of
each RequesterDetails' ToString, ``Requestor:HealthApi; State:Inactive; Timestamp:<culture-formatted
time>``; a capture or a deeper serializer gives the objects themselves. Both are read. Requester
names are matched case-insensitively (Exchange returns ``HealthApi``, its docs write ``HealthAPI``)
and reported as Exchange spells them.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.cardinality import OTHER, fold_enum, keep_top, unknown
from exporter.errors import ParseError
from exporter.exchange.clixml import as_bool, decode_mvp_objects, flatten, is_mvp
from exporter.exchange.cmdlet_collector import ServerCollector
from exporter.exchange.session import ExchangeSession
from exporter.exchange.targets import ExchangeTargets

STATES = ("Active", "Inactive", "Draining")
#: Spelled as Exchange returns them (``ServerComponentRequest``; a real capture shows ``HealthApi``).
REQUESTERS = ("Maintenance", "HealthApi", "Functional", "Sidelined", "Deployment")
POLLED = "Polled from Get-ServerComponentState on a schedule."
_REQUESTER_TEXT = re.compile(r"Request[eo]r\s*:\s*([A-Za-z]+)\s*;\s*State\s*:\s*([A-Za-z]+)", re.I)
_CANONICAL = {s.lower(): s for s in STATES}
_REQUESTER_NAMES = {r.lower(): r for r in REQUESTERS}


def _requester(name: str) -> str:
    """A requester name in Exchange's spelling (unknown names are kept as given)."""
    return _REQUESTER_NAMES.get(name.strip().lower(), name.strip())


def _state(name: str) -> str:
    return _CANONICAL.get(name.strip().lower(), name.strip())


@dataclass(frozen=True)
class ComponentState:
    """One component of one server; ``requesters`` maps requester -> its latest state."""

    server: str
    component: str
    state: str
    server_wide_offline: bool
    requesters: Mapping[str, str]


def _requesters(raw: Any, value: Any) -> dict[str, str]:
    """Requester -> state from LocalStates/RemoteStates: each item's text (``Requestor:X; State:Y;
    ...``, which is all remoting sends), else the items' Requester/State properties."""
    out: dict[str, str] = {}
    texts = value if isinstance(value, list) else []
    for item in texts:
        if isinstance(item, dict):  # a list the client decoded into objects without a ToString
            if item.get("Requester") and item.get("State"):
                out[_requester(str(item["Requester"]))] = _state(str(item["State"]))
            continue
        m = _REQUESTER_TEXT.search(item if isinstance(item, str) else str(item))
        if m:
            out[_requester(m.group(1))] = _state(m.group(2))
    if not out and is_mvp(raw):
        for item in decode_mvp_objects(raw):
            p = flatten(item)
            if p.get("Requester") and p.get("State"):
                out[_requester(str(p["Requester"]))] = _state(str(p["State"]))
    return out


def parse_component(obj: Any, server: str) -> ComponentState:
    """One Get-ServerComponentState object."""
    p = flatten(obj)
    component = str(p.get("Component") or "").strip()
    if not component:
        raise ParseError("a Get-ServerComponentState object without Component")
    state = str(p.get("State") or "").strip()
    raw = getattr(obj, "adapted_properties", {}) or {}
    requesters = _requesters(raw.get("RemoteStates"), p.get("RemoteStates"))
    requesters.update(_requesters(raw.get("LocalStates"), p.get("LocalStates")))  # local wins, as in Exchange
    return ComponentState(
        server=server,
        component=component,
        state=_CANONICAL.get(state.lower(), state or "Unknown"),
        server_wide_offline=as_bool(p.get("ServerWideOfflineIsOffline")),
        requesters=requesters,
    )


@dataclass(frozen=True)
class ComponentResult:
    """One server's component states (only the configured components)."""

    server: str
    components: tuple[ComponentState, ...]
    server_wide_offline: bool = False  # from every row, not only the reported components
    kept: frozenset[str] | None = None  # components with their own series (None: all); the rest are "other"
    folded: Mapping[str, int] = field(default_factory=dict)  # label -> distinct values shown as "other"


class ComponentCollector(ServerCollector):
    """Polls Get-ServerComponentState per transport server."""

    name = "components"

    def __init__(
        self, targets: ExchangeTargets, interval: float, components: Sequence[str], max_components: int = 100
    ) -> None:
        super().__init__(targets, interval)
        self._all = "*" in components
        self._wanted = {c.lower() for c in components}
        self._max = max_components

    def collect(self, session: ExchangeSession, server: str) -> ComponentResult:
        states = self.fetch(session, server, "Get-ServerComponentState", {"Identity": server}, parse_component)
        if not states:
            raise ParseError(f"Get-ServerComponentState -Identity {server} returned no components")
        return component_result(server, states, None if self._all else self._wanted, self._max)

    def render(self, results: Mapping[str, ComponentResult]) -> Iterable[Metric]:
        return render_components(results.values())


def component_result(
    server: str, states: Sequence[ComponentState], wanted: Collection[str] | None, limit: int
) -> ComponentResult:
    """The components ``wanted`` (lower-case names; None: all), at most ``limit`` with their own series:
    with "*" the names are the server's, and the cap keeps the components not Active first."""
    kept = [s for s in states if wanted is None or s.component.lower() in wanted]
    offline = any(s.server_wide_offline or (s.component == "ServerWideOffline" and s.state != "Active") for s in states)
    inactive = {s.component for s in kept if s.state != "Active"}
    all_names = {s.component for s in kept}
    names = keep_top(all_names, limit, lambda name: name not in inactive)
    ordered = tuple(sorted(kept, key=lambda s: s.component))
    folded = {"component": len(all_names) - len(names), "state": unknown((s.state for s in kept), STATES)}
    return ComponentResult(server, ordered, offline, names, folded)


def render_components(results: Iterable[ComponentResult]) -> list[Metric]:
    """Metric families for component states."""
    state = GaugeMetricFamily(
        "mailflow_server_component_state",
        "Always 1, labelled with the component's current state (Active, Inactive, Draining; other for a "
        'state outside these); only the current state. component="other": the components beyond the cap, '
        f"counted per state. {POLLED}",
        labels=["server", "component", "state"],
    )
    requester = GaugeMetricFamily(
        "mailflow_server_component_requester_state",
        "1 for the state a requester (Maintenance, HealthApi, Functional, Sidelined, Deployment) last set "
        f"on the component; who put it in maintenance. {POLLED}",
        labels=["server", "component", "requester", "state"],
    )
    offline = GaugeMetricFamily(
        "mailflow_server_wide_offline",
        f"1 if ServerWideOffline is in effect (the whole server is in maintenance). {POLLED}",
        labels=["server"],
    )
    for result in sorted(results, key=lambda r: r.server):
        offline.add_metric([result.server], 1 if result.server_wide_offline else 0)
        states: dict[str, int] = {}  # beyond the cap: components per state
        requesters: dict[tuple[str, str], int] = {}  # beyond the cap: components per (requester, state)
        for c in result.components:
            folded = result.kept is not None and c.component not in result.kept
            current = fold_enum(c.state, STATES)
            if folded:
                states[current] = states.get(current, 0) + 1
            else:
                state.add_metric([c.server, c.component, current], 1)
            for who, s in sorted(c.requesters.items()):
                if who in REQUESTERS and s in STATES:
                    if folded:
                        requesters[(who, s)] = requesters.get((who, s), 0) + 1
                    else:
                        requester.add_metric([c.server, c.component, who, s], 1)
        for s, n in sorted(states.items()):  # counts of the folded components (only states some are in)
            state.add_metric([result.server, OTHER, s], n)
        for (who, s), n in sorted(requesters.items()):
            requester.add_metric([result.server, OTHER, who, s], n)
    return [state, requester, offline]
