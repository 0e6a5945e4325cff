"""What a pipeline produces: output objects, warnings and error records, plus the standard errors.

Cmdlet implementations yield :class:`Output`, :class:`Warning` and :class:`Error` records and raise
:class:`CmdletError` for terminating errors (the pipeline then ends in state Failed with that error
record, as PowerShell does for an unknown command or a parameter binding failure).
"""

from __future__ import annotations

import datetime
import functools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from xml.etree import ElementTree as ET

from exporter.simulator.clixml import write_clixml
from exporter.simulator.depth import REMOTING_DEPTH, UNLIMITED, cut
from exporter.simulator.timeline import format_culture_datetime

__all__ = [
    "CmdletError",
    "Error",
    "ErrorInfo",
    "Output",
    "Record",
    "Selectable",
    "Warning",
    "ambiguous_parameter",
    "command_not_found",
    "emit",
    "emit_element",
    "exchange_error",
    "exchange_not_found",
    "not_simulated",
    "parameter_error",
    "parameter_not_found",
    "scripts_not_allowed",
]

RUNTIME_EXCEPTION_CHAIN = (
    "System.Management.Automation.RuntimeException",
    "System.SystemException",
    "System.Exception",
    "System.Object",
)


@dataclass(frozen=True)
class ErrorInfo:
    """The fields of an ErrorRecord the simulator emits."""

    message: str
    exception_type: str
    fqid: str
    category: str = "NotSpecified"
    reason: str = ""
    target_name: str = ""
    target_type: str = ""
    activity: str = ""
    base_types: tuple[str, ...] = RUNTIME_EXCEPTION_CHAIN
    hresult: int = -2146233087


class Selectable(Protocol):
    """An output object that can answer ``Select-Object -Property`` without parsing its CLIXML."""

    def property_names(self) -> list[str]:
        """Property names in wire order (adapted, then extended)."""
        ...

    def select(self, names: Sequence[str]) -> bytes | None:
        """The selected PSCustomObject's CLIXML, or None to use the generic path."""
        ...

    def clixml(self) -> bytes:
        """The object's own CLIXML (computed only when the object itself is sent or parsed)."""
        ...


@dataclass
class Output:
    """One output object: CLIXML bytes and/or an element (each derived from the other lazily).

    ``data``/``element`` are what goes on the wire: the object serialized at remoting depth (see
    ``depth.py``); build records with :func:`emit` / :func:`emit_element`, which cut it there.
    """

    data: bytes | None = None
    element: ET.Element | None = None
    #: Optional fast Select-Object: ``property_names()`` and ``select(names) -> bytes | None``
    #: (None: fall back to selecting on the parsed element).
    source: Selectable | None = None
    #: The whole object as the server holds it, which Select-Object reads (the wire form is cut
    #: to remoting depth; Get-ExchangeCertificate sends RawData only but selects its model's fields).
    live: Callable[[], ET.Element] | None = None

    def as_bytes(self) -> bytes:
        """The CLIXML bytes of the object."""
        if self.data is None and self.element is None and self.source is not None:
            self.data = self.source.clixml()
        if self.data is None:
            assert self.element is not None
            self.data = ET.tostring(self.element, encoding="unicode").encode("utf-8")
        return self.data

    def as_element(self) -> ET.Element:
        """The object as an ElementTree element (parsed on first use)."""
        if self.element is None:
            self.element = ET.fromstring(self.as_bytes())
        return self.element


def _whole(value: Any) -> ET.Element:
    return ET.fromstring(write_clixml(value, UNLIMITED))


def emit(value: Any) -> Output:
    """The record of a server-side object (a psrpcore graph): written at remoting depth for the
    wire, and the whole graph for a Select-Object further down the pipeline."""
    return Output(data=write_clixml(value), live=functools.partial(_whole, value))


def emit_element(element: ET.Element, *, whole: ET.Element | None = None, capture: bool = False) -> Output:
    """The record of an object given as a CLIXML element (a replayed capture, a Select-Object
    result): ``element`` cut to remoting depth for the wire; ``whole`` (default: ``element``
    renumbered) for a Select-Object further down the pipeline. ``capture``: ``element`` comes from
    an Export-Clixml file, whose PowerShell client added notes no server sends: they are dropped."""
    full = whole if whole is not None else cut(element, UNLIMITED, drop_client_notes=capture)
    return Output(element=cut(element, REMOTING_DEPTH, drop_client_notes=capture), live=lambda: full)


@dataclass(frozen=True)
class Warning:
    """A warning record (``ps.streams.warning`` on the client)."""

    message: str


@dataclass(frozen=True)
class Error:
    """A non-terminating error record (``ps.streams.error``; the pipeline still completes)."""

    info: ErrorInfo


Record = Output | Warning | Error


@dataclass
class CmdletError(Exception):
    """A terminating error: the pipeline fails with this error record."""

    info: ErrorInfo
    partial: list[Record] = field(default_factory=list)

    def __str__(self) -> str:
        return self.info.message


def command_not_found(name: str) -> ErrorInfo:
    """PowerShell's error for a command the (NoLanguage, RBAC-trimmed) runspace does not have."""
    return ErrorInfo(
        message=(
            f"The term '{name}' is not recognized as the name of a cmdlet, function, script file, or "
            "operable "
            "program. Check the spelling of the name, or if a path was included, verify that the path is "
            "correct and try again."
        ),
        exception_type="System.Management.Automation.CommandNotFoundException",
        fqid="CommandNotFoundException",
        category="ObjectNotFound",
        reason="CommandNotFoundException",
        target_name=name,
        target_type="String",
    )


def not_simulated(name: str, what: str = "") -> ErrorInfo:
    """The simulator's own error for something real Exchange would do that it does not model.

    Not an Exchange record: a client must not mistake a gap of the simulator for an Exchange answer.
    """
    detail = f" ({what})" if what else ""
    return ErrorInfo(
        message=f"The Exchange simulator does not implement {name}{detail}; real Exchange would run it.",
        exception_type="System.NotImplementedException",
        fqid="SimulatorNotImplemented",
        category="NotImplemented",
        reason="NotImplementedException",
        target_name=name,
        activity=name,
    )


def parameter_not_found(cmdlet: str, class_name: str, parameter: str) -> ErrorInfo:
    """PowerShell's ParameterBindingException for an unknown parameter name."""
    return ErrorInfo(
        message=f"A parameter cannot be found that matches parameter name '{parameter}'.",
        exception_type="System.Management.Automation.ParameterBindingException",
        fqid=f"NamedParameterNotFound,{class_name}",
        category="InvalidArgument",
        reason="ParameterBindingException",
        activity=cmdlet,
    )


def ambiguous_parameter(cmdlet: str, class_name: str, parameter: str, matches: list[str]) -> ErrorInfo:
    """PowerShell's ParameterBindingException for an ambiguous parameter prefix."""
    options = " ".join(f"-{m}" for m in matches)
    return ErrorInfo(
        message=(
            f"Parameter cannot be processed because the parameter name '{parameter}' is ambiguous. "
            f"Possible matches include: {options}."
        ),
        exception_type="System.Management.Automation.ParameterBindingException",
        fqid=f"AmbiguousParameter,{class_name}",
        category="InvalidArgument",
        reason="ParameterBindingException",
        activity=cmdlet,
    )


def parameter_error(cmdlet: str, class_name: str, fqid: str, message: str) -> ErrorInfo:
    """Another ParameterBindingException (positional, duplicate, conversion, parameter set)."""
    return ErrorInfo(
        message=message,
        exception_type="System.Management.Automation.ParameterBindingException",
        fqid=f"{fqid},{class_name}",
        category="InvalidArgument",
        reason="ParameterBindingException",
        activity=cmdlet,
    )


def scripts_not_allowed() -> ErrorInfo:
    """The NoLanguage runspace's rejection of a script (``add_script``)."""
    return ErrorInfo(
        message=(
            "The syntax is not supported by this runspace. This can occur if the runspace is in no-language mode."
        ),
        exception_type="System.Management.Automation.ParseException",
        fqid="ScriptsNotAllowed",
        category="ParserError",
        reason="ParseException",
    )


def exchange_error(
    server: str,
    cmdlet: str,
    class_name: str,
    failure: str,
    message: str,
    *,
    exception_type: str | None = None,
    category: str = "NotSpecified",
    target_name: str = "",
) -> ErrorInfo:
    """An Exchange task error with Exchange's ``[Server=..,RequestId=..,TimeStamp=..]`` error id."""
    stamp = format_culture_datetime(datetime.datetime.now(datetime.UTC), "en-US")
    request = uuid.uuid4()
    code = f"{uuid.uuid4().int & 0xFFFFFFFF:08X}"
    return ErrorInfo(
        message=message,
        exception_type=exception_type or f"Microsoft.Exchange.Configuration.Tasks.{failure}",
        fqid=(
            f"[Server={server},RequestId={request},TimeStamp={stamp}] "
            f"[FailureCategory=Cmdlet-{failure}] {code},{class_name}"
        ),
        category=category,
        reason=failure,
        target_name=target_name,
        activity=cmdlet,
        base_types=(
            "Microsoft.Exchange.Data.LocalizedException",
            "System.Exception",
            "System.Object",
        ),
    )


def exchange_not_found(server: str, cmdlet: str, class_name: str, identity: str, dc: str) -> ErrorInfo:
    """Exchange's ManagementObjectNotFoundException for an identity that does not exist."""
    return exchange_error(
        server,
        cmdlet,
        class_name,
        "ManagementObjectNotFoundException",
        f"The operation couldn't be performed because object '{identity}' couldn't be found on '{dc}'.",
        target_name=identity,
    )
