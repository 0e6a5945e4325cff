"""The cmdlets the simulated Exchange runspace offers, and how a pipeline of them runs.

Each cmdlet is one function registered with :func:`cmdlet`, declaring its parameters (name, kind,
position). :func:`run_pipeline` binds parameters like PowerShell (case-insensitive names, unique
prefixes, positional arguments, common parameters), rejects scripts (NoLanguage) and unknown
commands, applies replays (a scenario may serve an Export-Clixml capture as a cmdlet's output) and
the ``error_record`` fault, and streams records from one stage to the next.

Adding a cmdlet means writing one function (the configuration cmdlets are in ``cmdlets_config``, Get-Queue
and Get-MessageTrackingLog in ``cmdlets_transport``)::

    @cmdlet("Get-Thing", "Microsoft.Exchange.Management.Tasks.GetThing", [Param("Identity", position=0)])
    def get_thing(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
        server = target_server(ctx, "Get-Thing", args.get("Server"))       # not found: error record
        for thing in matching(ctx, "Get-Thing", args.get("Identity"), things, lambda t: (t.name,)):
            yield emit(objects.thing(...))   # cut to remoting depth on the wire

``matching``/``target_server(s)`` raise :class:`StopCmdlet` with Exchange's not-found record, which
the pipeline writes as a non-terminating error before ending the cmdlet; ``exclusive`` raises the
AmbiguousParameterSet binding error for parameters of different sets.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from exporter.simulator import objects_server
from exporter.simulator.clixml import (
    CaptureError,
    expand_property,
    load_capture,
    property_names,
    select_object,
)
from exporter.simulator.faults import FaultInjector, FaultKind
from exporter.simulator.rbac import Runspace, runspace
from exporter.simulator.records import (
    CmdletError,
    Error,
    ErrorInfo,
    Output,
    Record,
    Warning,
    ambiguous_parameter,
    command_not_found,
    emit,
    emit_element,
    exchange_error,
    exchange_not_found,
    not_simulated,
    parameter_error,
    parameter_not_found,
    scripts_not_allowed,
)
from exporter.simulator.scenario import Scenario, ServerSpec
from exporter.simulator.timeline import Timeline

__all__ = [
    "REGISTRY",
    "Args",
    "CmdletDef",
    "Context",
    "Invocation",
    "Param",
    "cmdlet",
    "run_pipeline",
]

RESULT_SIZE_WARNING = (
    "There are more results available than are currently displayed. To view them, increase the value of "
    "the ResultSize parameter."
)
COMMON_PARAMETERS = (
    "Verbose",
    "Debug",
    "ErrorAction",
    "WarningAction",
    "InformationAction",
    "ErrorVariable",
    "WarningVariable",
    "InformationVariable",
    "OutVariable",
    "OutBuffer",
    "PipelineVariable",
)


@dataclass(frozen=True)
class Param:
    """A cmdlet parameter: ``kind`` is any, string, strings, int, switch or resultsize."""

    name: str
    kind: str = "string"
    position: int | None = None
    mandatory: bool = False


@dataclass(frozen=True)
class Invocation:
    """One command of a pipeline as the client sent it."""

    name: str
    parameters: Sequence[tuple[str | None, Any]] = ()
    is_script: bool = False
    end_of_statement: bool = False


@dataclass
class Context:
    """What a cmdlet can see: the organisation, the time, the endpoint's server and user."""

    scenario: Scenario
    timeline: Timeline
    server: ServerSpec
    user: str = ""
    faults: FaultInjector | None = None
    #: The RBAC roles of the session (fixed when the shell opened); None: the user's current roles.
    roles: tuple[str, ...] | None = None

    @property
    def runspace(self) -> Runspace:
        """The commands this session has (its roles' cmdlets plus the seven PowerShell commands)."""
        return runspace(self.roles if self.roles is not None else self.scenario.roles_of(self.user))

    def fault(self, kind: FaultKind, cmdlet_name: str) -> Any:
        """The active fault of ``kind`` matching ``cmdlet_name`` on this endpoint, or None."""
        if self.faults is None:
            return None
        return self.faults.find(self.server.name, kind, [cmdlet_name])


Args = dict[str, Any]
Impl = Callable[[Context, Args, list[Output]], Iterable[Record]]


@dataclass(frozen=True)
class CmdletDef:
    """A registered cmdlet."""

    name: str
    class_name: str
    params: tuple[Param, ...]
    run: Impl
    any_parameters: bool = False


REGISTRY: dict[str, CmdletDef] = {}


def cmdlet(name: str, class_name: str, params: Sequence[Param]) -> Callable[[Impl], Impl]:
    """Register a cmdlet implementation under ``name`` (case-insensitive)."""

    def register(func: Impl) -> Impl:
        REGISTRY[name.lower()] = CmdletDef(name, class_name, tuple(params), func)
        return func

    return register


# ---------------------------------------------------------------------------------------------
# Parameter binding
# ---------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """psrpcore's deserialised values (PSString, PSInt, PSList...) as plain Python values."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _convert(defn: CmdletDef, param: Param, value: Any) -> Any:
    def fail(target: str) -> CmdletError:
        return CmdletError(
            parameter_error(
                defn.name,
                defn.class_name,
                "ParameterArgumentTransformationError",
                f"Cannot process argument transformation on parameter '{param.name}'. Cannot convert value "
                f'"{value}" to type "{target}".',
            )
        )

    if param.kind == "switch":
        return True if value is None else bool(value)
    if param.kind == "int":
        try:
            return int(value)
        except (TypeError, ValueError):
            raise fail("System.Int32") from None
    if param.kind == "resultsize":
        if isinstance(value, str) and value.strip().lower() == "unlimited":
            return None
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise fail("Microsoft.Exchange.Data.Unlimited`1[System.UInt32]") from None
        if number < 0:
            raise fail("Microsoft.Exchange.Data.Unlimited`1[System.UInt32]")
        return number
    if param.kind == "strings":
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    if param.kind == "string":
        return value if value is None or isinstance(value, str) else str(value)
    return value


def bind(defn: CmdletDef, invocation: Invocation) -> Args:
    """Bind an invocation's parameters like PowerShell; raises CmdletError (ParameterBindingException)."""
    args: Args = {}
    if defn.any_parameters:
        for name, value in invocation.parameters:
            if name is not None:
                args[name.lstrip("-")] = _plain(value)
        return args
    known = {p.name.lower(): p for p in defn.params}
    common = {c.lower(): c for c in COMMON_PARAMETERS}
    positional = sorted((p for p in defn.params if p.position is not None), key=lambda p: p.position or 0)
    for raw_name, raw_value in invocation.parameters:
        value = _plain(raw_value)
        if raw_name is None:
            free = [p for p in positional if p.name not in args]
            if not free:
                raise CmdletError(
                    parameter_error(
                        defn.name,
                        defn.class_name,
                        "PositionalParameterNotFound",
                        f"A positional parameter cannot be found that accepts argument '{value}'.",
                    )
                )
            param = free[0]
        else:
            name = raw_name.lstrip("-")
            key = name.lower()
            if key in common:
                args[common[key]] = value
                continue
            param_or_none = known.get(key)
            if param_or_none is None:
                candidates = [p for k, p in known.items() if k.startswith(key)]
                candidates += [Param(c) for k, c in common.items() if k.startswith(key)]
                if len(candidates) > 1:
                    raise CmdletError(
                        ambiguous_parameter(defn.name, defn.class_name, name, [c.name for c in candidates])
                    )
                if not candidates:
                    raise CmdletError(parameter_not_found(defn.name, defn.class_name, name))
                param_or_none = candidates[0]
                if param_or_none.name in COMMON_PARAMETERS:
                    args[param_or_none.name] = value
                    continue
            param = param_or_none
        if param.name in args:
            raise CmdletError(
                parameter_error(
                    defn.name,
                    defn.class_name,
                    "ParameterAlreadyBound",
                    f"Cannot bind parameter because parameter '{param.name}' is specified more than once. To "
                    "provide multiple values to parameters that can accept multiple values, use the "
                    "array syntax. "
                    'For example, "-parameter value1,value2,value3".',
                )
            )
        args[param.name] = _convert(defn, param, value)
    missing = [p.name for p in defn.params if p.mandatory and p.name not in args]
    if missing:
        raise CmdletError(
            parameter_error(
                defn.name,
                defn.class_name,
                "MissingMandatoryParameter",
                f"Cannot process command because of one or more missing mandatory parameters: {' '.join(missing)}.",
            )
        )
    return args


def _parameter_set_conflict(defn: CmdletDef) -> CmdletError:
    return CmdletError(
        parameter_error(
            defn.name,
            defn.class_name,
            "AmbiguousParameterSet",
            "Parameter set cannot be resolved using the specified named parameters.",
        )
    )


# ---------------------------------------------------------------------------------------------
# Pipeline execution
# ---------------------------------------------------------------------------------------------


def _statements(commands: Sequence[Invocation]) -> list[list[Invocation]]:
    statements: list[list[Invocation]] = [[]]
    for command in commands:
        statements[-1].append(command)
        if command.end_of_statement:
            statements.append([])
    return [s for s in statements if s]


def _replay_target(ctx: Context, args: Args) -> str:
    for key in ("Server", "Identity"):
        value = args.get(key)
        if isinstance(value, str) and ctx.scenario.server(value.split("\\")[0]) is not None:
            server = ctx.scenario.server(value.split("\\")[0])
            assert server is not None
            return server.name
    return ctx.server.name


def _resolve(ctx: Context, invocation: Invocation) -> tuple[CmdletDef, Args]:
    if invocation.is_script:
        raise CmdletError(scripts_not_allowed())
    key = invocation.name.lower()
    if not ctx.runspace.has(key) or key in ctx.scenario.hidden_cmdlets:
        # Not in this user's runspace (RBAC, or a private PowerShell command): an unknown command.
        raise CmdletError(command_not_found(invocation.name))
    defn = REGISTRY.get(key)
    has_replay = any(r.cmdlet.lower() == key for r in ctx.scenario.replays)
    if defn is None and not has_replay:
        raise CmdletError(not_simulated(invocation.name))  # granted, but the simulator lacks it
    if defn is None:
        defn = CmdletDef(invocation.name, f"Microsoft.Exchange.Management.{invocation.name}", (), _no_output, True)
    args = bind(defn, invocation)
    if has_replay and ctx.scenario.replay_for(defn.name, _replay_target(ctx, args)) is not None:
        defn = CmdletDef(defn.name, defn.class_name, defn.params, _replay_impl(defn.name), defn.any_parameters)
    return defn, args


def _no_output(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """A replay-only cmdlet whose replay applies to other servers only: no output here."""
    return iter(())


def _injected_error(ctx: Context, defn: CmdletDef, message: str | None) -> ErrorInfo:
    return exchange_error(
        ctx.server.name,
        defn.name,
        defn.class_name,
        "TaskException",
        message or f"The simulated Exchange server {ctx.server.name} failed to run {defn.name} (injected error).",
    )


def _with_preferences(records: Iterable[Record], args: Args) -> Iterator[Record]:
    error_action = str(args.get("ErrorAction", "Continue")).lower()
    warning_action = str(args.get("WarningAction", "Continue")).lower()
    for record in records:
        if isinstance(record, Error):
            if error_action == "stop":
                raise CmdletError(record.info)
            if error_action in ("silentlycontinue", "ignore"):
                continue
        if isinstance(record, Warning) and warning_action in ("silentlycontinue", "ignore"):
            continue
        yield record


def run_pipeline(ctx: Context, commands: Sequence[Invocation]) -> Iterator[Record]:
    """Run the client's pipeline(s), yielding records; raises CmdletError on a terminating error.

    All commands of a statement are resolved and bound before any of them runs, so an unknown
    command or parameter fails the pipeline without output, as in PowerShell.
    """
    for statement in _statements(commands):
        stages = [_resolve(ctx, invocation) for invocation in statement]
        stream: list[Output] = []
        for defn, args in stages:
            fault = ctx.fault(FaultKind.ERROR_RECORD, defn.name)
            produced: Iterable[Record]
            if fault is not None:
                produced = [Error(_injected_error(ctx, defn, fault.message))]
            else:
                produced = _until_stopped(defn.run(ctx, args, stream))
            next_stream: list[Output] = []
            for record in _with_preferences(produced, args):
                if isinstance(record, Output):
                    next_stream.append(record)
                else:
                    yield record
            stream = next_stream
        yield from stream


# ---------------------------------------------------------------------------------------------
# Helpers shared by cmdlets
# ---------------------------------------------------------------------------------------------


class StopCmdlet(Exception):
    """Raised inside a cmdlet: write ``info`` as a (non-terminating) error record and end the cmdlet."""

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message)
        self.info = info


def _until_stopped(records: Iterable[Record]) -> Iterator[Record]:
    try:
        yield from records
    except StopCmdlet as stop:
        yield Error(stop.info)


def has_wildcard(text: str) -> bool:
    """Whether an -Identity value is a wildcard pattern."""
    return any(ch in text for ch in "*?[")


def _wildcard_match(pattern: str, *candidates: str) -> bool:
    pattern = pattern.casefold()
    if not has_wildcard(pattern):
        return any(pattern == c.casefold() for c in candidates)
    return any(fnmatch.fnmatchcase(c.casefold(), pattern) for c in candidates)


def not_found(ctx: Context, cmdlet_name: str, identity: str) -> StopCmdlet:
    """Exchange's ManagementObjectNotFoundException record for ``identity``, to raise."""
    return StopCmdlet(
        exchange_not_found(
            ctx.server.name,
            cmdlet_name,
            REGISTRY[cmdlet_name.lower()].class_name,
            identity,
            ctx.scenario.organisation.dc_fqdn,
        )
    )


T = TypeVar("T")


def matching(
    ctx: Context, cmdlet_name: str, identity: str | None, items: Iterable[T], keys: Callable[[T], Iterable[str]]
) -> list[T]:
    """The items one of whose ``keys`` matches -Identity (all for None; wildcards allowed).

    A plain identity that matches nothing raises the not-found record; a wildcard may match nothing.
    """
    if identity is None:
        return list(items)
    found = [item for item in items if _wildcard_match(identity, *keys(item))]
    if not found and not has_wildcard(identity):
        raise not_found(ctx, cmdlet_name, identity)
    return found


def target_server(ctx: Context, cmdlet_name: str, name: str | None) -> ServerSpec:
    """The server a -Server/-Identity value names (None: the endpoint's own); raises not-found."""
    if name is None:
        return ctx.server
    server = ctx.scenario.server(str(name))
    if server is None:
        raise not_found(ctx, cmdlet_name, str(name))
    return server


def target_servers(ctx: Context, cmdlet_name: str, name: str | None) -> list[ServerSpec]:
    """The -Server value's server, or every server of the organisation when it is not given."""
    return list(ctx.scenario.servers) if name is None else [target_server(ctx, cmdlet_name, name)]


def exclusive(defn_name: str, args: Args, *groups: Sequence[str]) -> None:
    """Raise AmbiguousParameterSet when parameters of more than one ``groups`` set are bound."""
    used = [g for g in groups if any(name in args for name in g)]
    if len(used) > 1:
        raise _parameter_set_conflict(REGISTRY[defn_name.lower()])


def _server_keys(server: ServerSpec) -> tuple[str, str, str]:
    return server.name, server.fqdn, str(server.guid)


def _server_unreachable(ctx: Context, target: ServerSpec) -> bool:
    """A server whose endpoint is refused or hung, or that is down, is unreachable for cross-server cmdlets."""
    if ctx.faults is None or target.name == ctx.server.name:
        return False
    return any(
        ctx.faults.find(target.name, kind) is not None for kind in (FaultKind.REFUSED, FaultKind.HANG, FaultKind.DOWN)
    )


# ---------------------------------------------------------------------------------------------
# Get-ExchangeServer / Get-TransportService
# ---------------------------------------------------------------------------------------------
_GET_EXCHANGE_SERVER = "Microsoft.Exchange.Management.SystemConfigurationTasks.GetExchangeServer"


@cmdlet(
    "Get-ExchangeServer",
    _GET_EXCHANGE_SERVER,
    [Param("Identity", position=0), Param("Domain"), Param("Status", "switch"), Param("DomainController")],
)
def get_exchange_server(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Get-ExchangeServer [-Identity <name|fqdn|wildcard>] [-Domain] [-Status]."""
    pool = sorted(ctx.scenario.servers, key=lambda s: s.name.lower())
    domain = args.get("Domain")
    if domain:
        pool = [s for s in pool if ctx.scenario.organisation.domain.lower() == str(domain).lower()]
    for server in matching(ctx, "Get-ExchangeServer", args.get("Identity"), pool, _server_keys):
        yield emit(objects_server.exchange_server(ctx.scenario, server, ctx.timeline))


_GET_TRANSPORT_SERVICE = "Microsoft.Exchange.Management.SystemConfigurationTasks.GetTransportService"


@cmdlet(
    "Get-TransportService",
    _GET_TRANSPORT_SERVICE,
    [Param("Identity", position=0), Param("DomainController")],
)
def get_transport_service(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Get-TransportService [-Identity <server>]: TransportServer objects of hub/edge servers."""
    transport = sorted(
        (s for s in ctx.scenario.servers if s.is_hub_transport or s.is_edge), key=lambda s: s.name.lower()
    )
    for server in matching(ctx, "Get-TransportService", args.get("Identity"), transport, _server_keys):
        yield emit(objects_server.transport_server(ctx.scenario, server, ctx.timeline))


# ---------------------------------------------------------------------------------------------
# Select-Object
# ---------------------------------------------------------------------------------------------
_SELECT_OBJECT = "Microsoft.PowerShell.Commands.SelectObjectCommand"


@cmdlet(
    "Select-Object",
    _SELECT_OBJECT,
    [
        Param("Property", "any", position=0),
        Param("ExpandProperty"),
        Param("ExcludeProperty", "strings"),
        Param("First", "int"),
        Param("Last", "int"),
        Param("Skip", "int"),
        Param("Unique", "switch"),
        Param("InputObject", "any"),
    ],
)
def select_object_cmdlet(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Select-Object [-Property names] [-ExpandProperty name] [-First N] [-Last N] [-Skip N]."""
    items = list(stream)
    if "Skip" in args:
        items = items[max(0, args["Skip"]) :]
    if "First" in args:
        items = items[: max(0, args["First"])]
    if "Last" in args:
        items = items[-args["Last"] :] if args["Last"] > 0 else []
    raw = args.get("Property")
    names: list[str] | None = None
    if raw is not None:
        values = raw if isinstance(raw, list) else [raw]
        if not all(isinstance(v, str) for v in values):
            raise CmdletError(
                parameter_error(
                    "Select-Object",
                    _SELECT_OBJECT,
                    "DictionaryKeyUnknownType",
                    "Calculated properties are not supported by this runspace.",
                )
            )
        names = [str(v) for v in values]
    excluded = {e.lower() for e in args.get("ExcludeProperty") or []}
    expand = args.get("ExpandProperty")
    for item in items:
        if item.source is not None and names is not None and not expand:
            data = item.source.select(_choose(names, item.source.property_names(), excluded))
            if data is not None:
                yield Output(data=data)
                continue
        # Select-Object runs on the server's object, not on what the wire would carry of it.
        element = item.live() if item.live is not None else item.as_element()
        if element.tag != "Obj":
            yield item
            continue
        if names is not None:
            element = select_object(element, _choose(names, property_names(element), excluded))
        if expand:
            expanded = expand_property(element, expand)
            if expanded is None:
                yield Error(
                    ErrorInfo(
                        message=f'Property "{expand}" cannot be found.',
                        exception_type="System.Management.Automation.PSArgumentException",
                        fqid=f"ExpandPropertyNotFound,{_SELECT_OBJECT}",
                        category="InvalidArgument",
                        reason="PSArgumentException",
                        activity="Select-Object",
                    )
                )
                continue
            for value in expanded:  # each one a top-level object of its own, at remoting depth
                yield emit_element(value, whole=value)
        elif names is not None:
            yield emit_element(element, whole=element)
        else:
            yield item


def _choose(names: list[str], available: list[str], excluded: set[str]) -> list[str]:
    """Select-Object's property list: wildcards expanded, names in the object's spelling."""
    chosen: list[str] = []
    for name in names:
        if any(ch in name for ch in "*?["):
            chosen += [a for a in available if _wildcard_match(name, a) and a not in chosen]
        elif name not in chosen:
            chosen.append(next((a for a in available if a.lower() == name.lower()), name))
    return [c for c in chosen if c.lower() not in excluded]


# ---------------------------------------------------------------------------------------------
# Replays
# ---------------------------------------------------------------------------------------------


def _run_replay(ctx: Context, name: str, args: Args) -> Iterator[Record]:
    replay = ctx.scenario.replay_for(name, _replay_target(ctx, args))
    if replay is None:  # pragma: no cover - _resolve only routes here when one exists
        return
    try:
        elements = load_capture(replay.path)
    except CaptureError as exc:
        raise CmdletError(
            ErrorInfo(
                message=f"The simulator could not replay {name}: {exc}",
                exception_type="System.IO.IOException",
                fqid=f"ReplayFailed,{name}",
                category="ReadError",
                reason="IOException",
                activity=name,
            )
        ) from None
    for element in elements:  # an Export-Clixml capture is two levels deep: cut to what remoting sends
        yield emit_element(element, capture=True)


def _replay_impl(name: str) -> Impl:
    def run(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
        return _run_replay(ctx, name, args)

    return run


# The transport, configuration, health and diagnostics cmdlets, and the PowerShell commands of every
# session, live in their own modules; importing them registers them.
from exporter.simulator import (  # noqa: E402, F401
    cmdlets_config,
    cmdlets_core,
    cmdlets_policy,
    cmdlets_probe,
    cmdlets_transport,
    diagnostics,
)
