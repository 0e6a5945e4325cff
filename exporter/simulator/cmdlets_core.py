"""The PowerShell commands every Exchange session has besides Select-Object (registered when ``cmdlets`` is imported).

Exchange keeps Out-Default, Get-FormatData, Select-Object, Measure-Object and Exit-PSSession public
and adds Get-Help and Get-Command to every session (see ``rbac``); everything else PowerShell has is
private there. What is modelled, and what is not (a ``not_simulated`` error says so at run time):

- Measure-Object: Count, and -Sum/-Average/-Maximum/-Minimum over -Property (or the input objects
  themselves), as Windows PowerShell 5.1's ``GenericMeasureInfo``. -Line/-Word/-Character are not.
- Get-Command: the session's commands (role cmdlets as functions, the seven PowerShell commands),
  filtered by -Name/-Verb/-Noun (wildcards), -CommandType, -TotalCount; a reduced ``FunctionInfo`` /
  ``CmdletInfo`` property set [inferred]. -Module, -Syntax, -ArgumentList are not.
- Get-Help -Name: a short help object for a command of the session whose parameters the simulator
  knows (name, category, a syntax line as synopsis) [inferred shape]; the real help text is not.
- Out-Default and Exit-PSSession write nothing back: the real ones talk to the host (formatted text,
  PopRunspace) through host calls, which the simulator does not model.
- Get-FormatData: not modelled (Exchange's format data is not in the simulator).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree as ET

from psrpcore.types import PSDouble

from exporter.simulator import objects
from exporter.simulator.clixml import properties_of, write_clixml
from exporter.simulator.cmdlets import REGISTRY, Args, Context, Param, cmdlet
from exporter.simulator.records import (
    CmdletError,
    Error,
    ErrorInfo,
    Output,
    Record,
    command_not_found,
    not_simulated,
    parameter_error,
)

__all__: list[str] = []

_COMMANDS = "Microsoft.PowerShell.Commands"
_MEASURE = f"{_COMMANDS}.MeasureObjectCommand"
_GET_COMMAND = f"{_COMMANDS}.GetCommandCommand"
_GET_HELP = f"{_COMMANDS}.GetHelpCommand"
_NUMERIC = {"I16", "I32", "I64", "U16", "U32", "U64", "By", "SB", "Db", "Sg", "D"}
#: System.Management.Automation.CommandTypes (PowerShell 5.1).
COMMAND_TYPES = {
    "Alias": 1,
    "Function": 2,
    "Filter": 4,
    "Cmdlet": 8,
    "ExternalScript": 16,
    "Application": 32,
    "Script": 64,
    "Workflow": 128,
    "Configuration": 256,
    "All": 511,
}
_COMMAND_TYPE = "System.Management.Automation.CommandTypes"
#: The modules of the public PowerShell cmdlets (Exchange's proxy functions belong to none).
_MODULES = {
    "Exit-PSSession": "Microsoft.PowerShell.Core",
    "Out-Default": "Microsoft.PowerShell.Core",
    "Get-FormatData": "Microsoft.PowerShell.Utility",
    "Measure-Object": "Microsoft.PowerShell.Utility",
    "Select-Object": "Microsoft.PowerShell.Utility",
}
_VISIBILITY = "System.Management.Automation.SessionStateEntryVisibility"


# ---------------------------------------------------------------------------------------------
# Measure-Object
# ---------------------------------------------------------------------------------------------
def _number(element: ET.Element | None) -> float | None:
    """The element as a number, as PowerShell converts it; None when it is not numeric."""
    if element is None:
        return None
    if element.tag in _NUMERIC:
        try:
            return float(element.text or "")
        except ValueError:
            return None
    if element.tag == "Obj":  # an enum converts to its value
        value = element.find("I32")
        if value is None:
            value = element.find("I16")
        if value is not None and element.find("TN") is not None:
            return float(value.text or "0")
    return None


def _measure_info(count: int, stats: dict[str, float | None], prop: str | None) -> bytes:
    names = [f"{_COMMANDS}.GenericMeasureInfo", f"{_COMMANDS}.MeasureInfo", "System.Object"]
    props: list[tuple[str, Any]] = [("Count", count)]
    for key in ("Average", "Sum", "Maximum", "Minimum"):
        value = stats.get(key)
        props.append((key, None if value is None else PSDouble(value)))
    props.append(("Property", prop))
    return write_clixml(objects.ex_object(names, props, names[0], serialization=False))


def _element_of(item: Output) -> ET.Element:
    return item.live() if item.live is not None else item.as_element()


@cmdlet(
    "Measure-Object",
    _MEASURE,
    [
        Param("Property", "strings", position=0),
        Param("Sum", "switch"),
        Param("Average", "switch"),
        Param("Maximum", "switch"),
        Param("Minimum", "switch"),
        Param("Line", "switch"),
        Param("Word", "switch"),
        Param("Character", "switch"),
        Param("IgnoreWhiteSpace", "switch"),
        Param("InputObject", "any"),
    ],
)
def measure_object(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Measure-Object [-Property names] [-Sum] [-Average] [-Maximum] [-Minimum] (Count always)."""
    for unsupported in ("Line", "Word", "Character", "IgnoreWhiteSpace", "InputObject"):
        if unsupported in args:
            raise CmdletError(not_simulated("Measure-Object", f"-{unsupported}"))
    wanted = [k for k in ("Sum", "Average", "Maximum", "Minimum") if args.get(k)]
    elements = [_element_of(item) for item in stream]
    properties: list[str | None] = list(args.get("Property") or []) or [None]
    for prop in properties:
        values: list[ET.Element | None] = []
        for element in elements:
            if prop is None:
                values.append(element)
                continue
            found = properties_of(element) if element.tag == "Obj" else {}
            names = [n for n in found if fnmatch.fnmatchcase(n.casefold(), prop.casefold())]
            values += [found[n] for n in names[:1]]
        if prop is not None and not values and elements:
            yield Error(
                ErrorInfo(
                    message=f'The property "{prop}" cannot be found in the input for any objects.',
                    exception_type="System.Management.Automation.PSArgumentException",
                    fqid=f"GenericMeasurePropertyNotFound,{_MEASURE}",
                    category="InvalidArgument",
                    reason="PSArgumentException",
                    target_name=prop,
                    activity="Measure-Object",
                )
            )
            continue
        numbers: list[float] = []
        if wanted:
            for value in values:
                if value is None or value.tag == "Nil":
                    continue  # [inferred] a null value adds nothing to the statistics
                number = _number(value)
                if number is None:
                    yield Error(
                        ErrorInfo(
                            message=f'Input object "{_text(value)}" is not numeric.',
                            exception_type="System.Management.Automation.PSInvalidOperationException",
                            fqid=f"NonNumericInputObject,{_MEASURE}",
                            category="InvalidType",
                            reason="PSInvalidOperationException",
                            activity="Measure-Object",
                        )
                    )
                    continue
                numbers.append(number)
        stats: dict[str, float | None] = {}
        if numbers:
            stats = {"Sum": sum(numbers), "Average": sum(numbers) / len(numbers)}
            stats.update({"Maximum": max(numbers), "Minimum": min(numbers)})
        shown = {k: stats.get(k) for k in wanted}
        yield Output(data=_measure_info(len(values), shown, prop))


def _text(element: ET.Element) -> str:
    to_string = element.find("ToString")
    return (to_string.text or "") if to_string is not None else (element.text or "")


# ---------------------------------------------------------------------------------------------
# Out-Default, Exit-PSSession, Get-FormatData
# ---------------------------------------------------------------------------------------------
@cmdlet("Out-Default", f"{_COMMANDS}.OutDefaultCommand", [Param("InputObject", "any"), Param("Transcript", "switch")])
def out_default(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Out-Default: consumes its input; the formatted text would go to the host, which is not modelled."""
    return iter(())


@cmdlet("Exit-PSSession", f"{_COMMANDS}.ExitPSSessionCommand", [])
def exit_pssession(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Exit-PSSession: nothing comes back (the real one asks the client host to pop the runspace)."""
    return iter(())


@cmdlet(
    "Get-FormatData",
    f"{_COMMANDS}.GetFormatDataCommand",
    [Param("TypeName", "strings", position=0), Param("PowerShellVersion")],
)
def get_format_data(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Get-FormatData: Exchange's format data is not modelled, so this says so instead of answering."""
    raise CmdletError(not_simulated("Get-FormatData", "format data is not modelled"))


# ---------------------------------------------------------------------------------------------
# Get-Command, Get-Help
# ---------------------------------------------------------------------------------------------
def _command_info(name: str, kind: str) -> bytes:
    verb, _, noun = name.partition("-")
    base = "FunctionInfo" if kind == "Function" else "CmdletInfo"
    names = [f"System.Management.Automation.{base}", "System.Management.Automation.CommandInfo", "System.Object"]
    props: list[tuple[str, Any]] = [
        ("Verb", verb),
        ("Noun", noun),
        ("Name", name),
        ("CommandType", objects.enum_value(_COMMAND_TYPE, COMMAND_TYPES, kind)),
        ("ModuleName", _MODULES.get(name, "")),
        ("Visibility", objects.enum_value(_VISIBILITY, {"Public": 0, "Private": 1}, "Public")),
    ]
    return write_clixml(objects.ex_object(names, props, name, serialization=False))


def _matches(patterns: list[str] | None, value: str) -> bool:
    return not patterns or any(fnmatch.fnmatchcase(value.casefold(), p.casefold()) for p in patterns)


def _command_types(args: Args) -> set[str]:
    raw = args.get("CommandType")
    if raw is None:
        return set(COMMAND_TYPES)
    values = raw if isinstance(raw, list) else str(raw).split(",")
    chosen: set[str] = set()
    for value in (str(v).strip() for v in values):
        match = next((k for k in COMMAND_TYPES if k.lower() == value.lower()), None)
        if match is None:
            raise CmdletError(
                parameter_error(
                    "Get-Command",
                    _GET_COMMAND,
                    "CannotConvertArgumentNoMessage",
                    f"Cannot bind parameter 'CommandType'. Cannot convert value \"{value}\" to type "
                    f'"{_COMMAND_TYPE}". Error: "Unable to match the identifier name {value} to a valid '
                    "enumerator name. Specify one of the following enumerator names and try again:"
                    f'{chr(13)}{chr(10)}{", ".join(COMMAND_TYPES)}"',
                )
            )
        chosen |= set(COMMAND_TYPES) if match == "All" else {match}
    return chosen


@cmdlet(
    "Get-Command",
    _GET_COMMAND,
    [
        Param("Name", "strings", position=0),
        Param("Verb", "strings"),
        Param("Noun", "strings"),
        Param("Module", "strings"),
        Param("CommandType", "any"),
        Param("TotalCount", "int"),
        Param("Syntax", "switch"),
        Param("ArgumentList", "any"),
    ],
)
def get_command(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Get-Command [-Name n] [-Verb v] [-Noun n] [-CommandType t] [-TotalCount N]: the session's commands."""
    for unsupported in ("Module", "Syntax", "ArgumentList"):
        if unsupported in args:
            raise CmdletError(not_simulated("Get-Command", f"-{unsupported}"))
    names = args.get("Name")
    kinds = _command_types(args)
    commands = sorted(ctx.runspace.commands.values(), key=lambda c: (COMMAND_TYPES[c[1]], c[0].casefold()))
    hidden = ctx.scenario.hidden_cmdlets
    chosen = [
        (name, kind)
        for name, kind in commands
        if name.lower() not in hidden
        and kind in kinds
        and _matches(names, name)
        and _matches(args.get("Verb"), name.partition("-")[0])
        and _matches(args.get("Noun"), name.partition("-")[2])
    ]
    for name in names or []:
        if not any(ch in name for ch in "*?[") and not any(c.lower() == name.lower() for c, _ in chosen):
            info = command_not_found(name)
            fqid = f"CommandNotFoundException,{_GET_COMMAND}"
            yield Error(dataclasses.replace(info, fqid=fqid, activity="Get-Command"))
    if "TotalCount" in args and args["TotalCount"] >= 0:
        chosen = chosen[: args["TotalCount"]]
    for name, kind in chosen:
        yield Output(data=_command_info(name, kind))


def _syntax(name: str) -> str:
    defn = REGISTRY[name.lower()]
    parts = [name]
    for param in sorted(defn.params, key=lambda p: (p.position is None, p.position or 0)):
        value = "" if param.kind == "switch" else f" <{'String[]' if param.kind == 'strings' else 'Object'}>"
        flag = f"[-{param.name}]" if param.position is not None else f"-{param.name}"
        text = f"{flag}{value}"
        parts.append(text if param.mandatory else f"[{text}]")
    return " ".join([*parts, "[<CommonParameters>]"])


@cmdlet(
    "Get-Help",
    _GET_HELP,
    [
        Param("Name", position=0),
        Param("Path"),
        Param("Category", "strings"),
        Param("Component", "strings"),
        Param("Functionality", "strings"),
        Param("Role", "strings"),
        Param("Detailed", "switch"),
        Param("Full", "switch"),
        Param("Examples", "switch"),
        Param("Parameter"),
        Param("Online", "switch"),
    ],
)
def get_help(ctx: Context, args: Args, stream: list[Output]) -> Iterator[Record]:
    """Get-Help -Name command: name, category and a syntax line of a command the session has."""
    for unsupported in ("Path", "Component", "Functionality", "Role", "Parameter", "Online"):
        if unsupported in args:
            raise CmdletError(not_simulated("Get-Help", f"-{unsupported}"))
    name = args.get("Name")
    if not name:
        raise CmdletError(not_simulated("Get-Help", "the default help topic"))
    entry = ctx.runspace.commands.get(str(name).lower())
    if entry is None or str(name).lower() in ctx.scenario.hidden_cmdlets:
        yield Error(
            ErrorInfo(
                message=(
                    f"Get-Help could not find {name} in a help file in this session. To download updated help "
                    'topics type: "Update-Help". To get help online, search for the help topic in the TechNet '
                    "library at https:/go.microsoft.com/fwlink/?LinkID=107116."
                ),  # [inferred] Windows PowerShell 5.1's HelpNotFound text
                exception_type="Microsoft.PowerShell.Commands.HelpNotFoundException",
                fqid=f"HelpNotFound,{_GET_HELP}",
                category="ResourceUnavailable",
                reason="HelpNotFoundException",
                target_name=str(name),
                activity="Get-Help",
            )
        )
        return
    command, _kind = entry
    if command.lower() not in REGISTRY:
        raise CmdletError(not_simulated("Get-Help", f"help of {command}"))
    names = ["MamlCommandHelpInfo", "System.Management.Automation.PSCustomObject", "System.Object"]
    props = [("Name", command), ("Category", "Cmdlet"), ("Synopsis", _syntax(command))]
    obj = objects.ex_object(names, props, command, serialization=False)
    yield Output(data=write_clixml(obj))
