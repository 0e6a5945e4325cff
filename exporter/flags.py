"""Command-line flags named as in every Prometheus exporter (exporter-toolkit and prometheus/common).

``--config.file``, ``--web.listen-address`` (repeatable), ``--web.telemetry-path``, ``--web.config.file``,
``--log.level`` (debug, info, warn, error) and ``--log.format`` (logfmt, json). They win over the
environment, which wins over the YAML file (``apply_flags``).

The names of 0.1 (``--config``, ``--listen-address``, ``--log-level``) still work for one release:
``--help`` marks them as deprecated aliases and using one logs a warning (``warn_deprecated``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from exporter.settings import LogSettings, Settings, WebSettings

log = logging.getLogger("exporter")

REMOVED_IN = "0.3"
LOG_LEVELS = ("debug", "info", "warn", "error")
LOG_FORMATS = ("logfmt", "json")
DEFAULT_LISTEN_ADDRESS = ":10049"
WEB_CONFIG_HELP = (
    "exporter-toolkit web configuration file: TLS, client certificates, basic auth "
    "(https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md)"
)

#: Settings field -> the flag that sets it, for error messages.
_FLAG_OF = {
    "listen_address": "--web.listen-address",
    "telemetry_path": "--web.telemetry-path",
    "config_file": "--web.config.file",
    "level": "--log.level",
    "format": "--log.format",
}


class DeprecatedAlias(argparse.Action):
    """An old flag name: stores into its replacement's destination (appending when the replacement
    is repeatable) and records that it was used, for ``warn_deprecated``."""

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str,
        replacement: str,
        append: bool = False,
        **kwargs: Any,
    ) -> None:
        self.replacement = replacement
        self.append = append
        kwargs.setdefault("help", f"deprecated alias of {replacement}, removed in {REMOVED_IN}")
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if self.append:
            setattr(namespace, self.dest, [*(getattr(namespace, self.dest, None) or []), values])
        else:
            setattr(namespace, self.dest, values)
        used = getattr(namespace, "deprecated_flags", None) or []
        namespace.deprecated_flags = [*used, (option_string or self.option_strings[0], self.replacement)]


def log_level(value: str) -> str:
    """``--log.level``'s value: case-insensitive; ``warning`` (0.1's spelling) is ``warn``."""
    value = value.lower()
    return "warn" if value == "warning" else value


def add_config_flag(parser: argparse.ArgumentParser, help: str = "the YAML configuration file") -> None:
    """``--config.file FILE`` and its deprecated alias ``--config``."""
    parser.add_argument("--config.file", dest="config", type=Path, metavar="FILE", help=help)
    parser.add_argument(
        "--config", dest="config", type=Path, metavar="FILE", action=DeprecatedAlias, replacement="--config.file"
    )


def add_web_flags(parser: argparse.ArgumentParser, *, listen_alias: bool = False, from_file: bool = True) -> None:
    """``--web.listen-address`` (repeatable), ``--web.telemetry-path``, ``--web.config.file``; ``from_file``:
    the command reads a configuration file whose ``web`` settings the flags override."""

    def default(setting: str, value: str) -> str:
        return f"(default: {setting}, else {value})" if from_file else f"(default: {value})"

    parser.add_argument(
        "--web.listen-address",
        dest="listen_addresses",
        action="append",
        metavar="[HOST]:PORT",
        help="address to serve metrics, the status page and /-/healthy on; repeat it to listen on several "
        "(each with the same --web.config.file). Examples: :10049, 127.0.0.1:10049, [::1]:10049 "
        + default("web.listen_address", DEFAULT_LISTEN_ADDRESS),
    )
    if listen_alias:
        parser.add_argument(
            "--listen-address",
            dest="listen_addresses",
            metavar="[HOST]:PORT",
            action=DeprecatedAlias,
            replacement="--web.listen-address",
            append=True,
        )
    parser.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        metavar="PATH",
        help="path under which to expose metrics " + default("web.telemetry_path", "/metrics"),
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        type=Path,
        metavar="FILE",
        help=WEB_CONFIG_HELP + " " + default("web.config_file", "none"),
    )


def add_log_flags(parser: argparse.ArgumentParser, default_level: str = "info", from_file: bool = True) -> None:
    """``--log.level``, ``--log.format`` and the deprecated ``--log-level``."""
    level_default = f"log.level, else {default_level}" if from_file else default_level
    format_default = "log.format, else logfmt" if from_file else "logfmt"
    parser.add_argument(
        "--log.level",
        dest="log_level",
        type=log_level,
        choices=LOG_LEVELS,
        metavar="{" + ",".join(LOG_LEVELS) + "}",
        help=f"only log messages with this severity or above (default: {level_default})",
    )
    parser.add_argument(
        "--log.format",
        dest="log_format",
        choices=LOG_FORMATS,
        help=f"output format of log messages on stderr (default: {format_default})",
    )
    parser.add_argument(
        "--log-level",
        dest="log_level",
        type=log_level,
        choices=LOG_LEVELS,
        metavar="{" + ",".join(LOG_LEVELS) + "}",
        action=DeprecatedAlias,
        replacement="--log.level",
    )


def _flag_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{_FLAG_OF.get(field, field)}: {message}")
    return "; ".join(problems)


def web_from_flags(web: WebSettings, args: argparse.Namespace) -> WebSettings:
    """``web`` with the web flags given on the command line applied and validated like the file;
    a flag that is invalid ends the program (exit 2) naming the flag."""
    update: dict[str, Any] = {}
    if getattr(args, "listen_addresses", None):
        addresses = list(args.listen_addresses)
        update["listen_address"] = addresses[0] if len(addresses) == 1 else addresses
    if getattr(args, "telemetry_path", None) is not None:
        update["telemetry_path"] = args.telemetry_path
    if getattr(args, "web_config_file", None) is not None:
        update["config_file"] = args.web_config_file
    if not update:
        return web
    try:
        return WebSettings.model_validate({**web.model_dump(), **update})
    except ValidationError as exc:
        print(f"configuration error: {_flag_error(exc)}", file=sys.stderr)
        raise SystemExit(2) from None


def log_from_flags(logs: LogSettings, args: argparse.Namespace) -> LogSettings:
    """``logs`` with ``--log.level`` and ``--log.format`` applied."""
    update = {
        k: v
        for k, v in (("level", getattr(args, "log_level", None)), ("format", getattr(args, "log_format", None)))
        if v is not None
    }
    return LogSettings.model_validate({**logs.model_dump(), **update}) if update else logs


def apply_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    """The settings with every flag given applied: flags win over the environment and the file."""
    web = web_from_flags(settings.web, args)
    logs = log_from_flags(settings.log, args)
    return settings.model_copy(update={"web": web, "log": logs})


def warn_deprecated(args: argparse.Namespace, to_log: bool = True) -> None:
    """Say which deprecated flag names were used: as a log warning (in the configured log format),
    or on stderr for the commands that do not log."""
    for old, new in dict.fromkeys(getattr(args, "deprecated_flags", None) or []):
        text = f"flag {old} is deprecated and will be removed in {REMOVED_IN}: use {new}"
        if to_log:
            log.warning(text)
        else:
            print(f"warning: {text}", file=sys.stderr)
