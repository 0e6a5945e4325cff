"""Configuration error messages: each problem with its field path and where its value came from
(the file's line, or the ``MAILFLOW_*`` variable), and the checks of the environment itself."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from exporter.yamlfile import KEY_LINE, format_loc

ENV_PREFIX = "MAILFLOW_"


def env_name(loc: tuple[Any, ...]) -> str:
    """The ``MAILFLOW_*`` variable that sets the field at ``loc``."""
    return ENV_PREFIX + "__".join(str(p).upper() for p in loc if not isinstance(p, int))


def value_origin(
    loc: tuple[Any, ...], lines: Mapping[tuple[Any, ...], int], environ: Mapping[str, str], key_line: bool
) -> str:
    """Where the value at ``loc`` came from: `` (from environment VAR)``, `` (line N)`` or nothing.
    ``key_line``: the line of the key itself (an unknown key), not of its value."""
    line = lines.get((*loc, KEY_LINE)) if key_line else None
    if line is None:
        line = next((lines[loc[:cut]] for cut in range(len(loc), -1, -1) if loc[:cut] in lines), None)
    env_keys = {k.upper() for k in environ}
    variable = next((env_name(loc[:cut]) for cut in range(len(loc), 0, -1) if env_name(loc[:cut]) in env_keys), None)
    if variable is not None:  # the variable that is set (a whole list may come from one variable)
        return f" (from environment {variable})"
    return f" (line {line})" if line is not None else ""


def describe_errors(
    exc: ValidationError, source: str, lines: Mapping[tuple[Any, ...], int], environ: Mapping[str, str]
) -> str:
    """Every validation error, one line each: field path, where its value came from, message."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if p not in ("function-after[_check_targets()]",))
        field = format_loc(loc)
        where = value_origin(loc, lines, environ, key_line=err["type"] == "extra_forbidden")
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown setting (check the spelling against the example: mailflow-exporter example-config)"
        elif err["type"] in ("model_type", "dict_type"):  # not "instance of ExchangeSettings"
            message = f"expected a mapping (indented 'key: value' lines), got {kind(err['input'])}"
        elif err["type"] == "list_type":
            message = f"expected a list ('- item' lines, or [a, b]), got {kind(err['input'])}"
        elif err["type"] == "path_not_file":
            message = f"no such file: {err['input']}"
        problems.append(f"  {field}{where}: {message}")
    noun = "problem" if len(problems) == 1 else "problems"
    return f"{source}: {len(problems)} {noun}:\n" + "\n".join(problems)


def kind(value: Any) -> str:
    """What a wrong value is, in words (for "expected a list, got ...")."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def bad_json_variables(exc: SettingsError, environ: Mapping[str, str]) -> list[str]:
    """The MAILFLOW_* variables under the field pydantic-settings names that hold malformed JSON."""
    found = re.search(r'field "(\w+)"', str(exc))
    prefix = (ENV_PREFIX + (found[1] if found else "")).upper()
    bad = []
    for key, value in environ.items():
        if key.upper().startswith(prefix) and value.lstrip()[:1] in ("[", "{"):
            try:
                json.loads(value)
            except ValueError as err:
                bad.append(f"{key.upper()} is not valid JSON ({err})")
    return sorted(bad)


# Kubernetes injects these for every Service whose name starts like ours (service links).
_SERVICE_LINK = re.compile(r"_SERVICE_(HOST|PORT(_[A-Z0-9_]+)?)$|_PORT(_\d+_(TCP|UDP|SCTP)(_PROTO|_PORT|_ADDR)?)?$")


def unknown_variables(environ: Mapping[str, str], known: list[str]) -> list[str]:
    """``MAILFLOW_*`` variables that name no top-level setting. pydantic-settings reads only the
    variables of known fields, so a misspelt one (``MAILFLOW_EXCHANGE_SERVERS``, one underscore) would
    otherwise be ignored without a word; unknown keys below a known one are caught by validation."""
    problems = []
    for key in sorted(environ):
        upper = key.upper()
        if not upper.startswith(ENV_PREFIX) or upper == ENV_PREFIX or _SERVICE_LINK.search(upper):
            continue
        top = upper.removeprefix(ENV_PREFIX).split("__", 1)[0].lower()
        if top not in known:
            rest = upper.removeprefix(ENV_PREFIX)
            split = [f"{f.upper()}__{rest[len(f) + 1 :]}" for f in known if top.startswith(f + "_")]
            hint = split or [h.upper() for h in difflib.get_close_matches(top, known, n=1)]
            also = f"; did you mean {ENV_PREFIX}{hint[0]}?" if hint else ""
            problems.append(
                f"  environment {upper}: unknown setting '{top}' (settings are {', '.join(known)}; "
                f"'__' separates levels){also}"
            )
    return problems
