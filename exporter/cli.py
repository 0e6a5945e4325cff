"""Command line: ``serve``, ``check``, ``trace``, ``demo``, ``validate-config``, ``healthcheck``, ``example-config``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from exporter.buildinfo import build_info, version_text
from exporter.errors import ConfigError
from exporter.flags import (
    WEB_CONFIG_HELP,
    add_config_flag,
    add_log_flags,
    add_web_flags,
    apply_flags,
    log_from_flags,
    warn_deprecated,
    web_from_flags,
)
from exporter.logs import setup_logging
from exporter.settings import LogSettings, Settings, ShardingSettings, WebSettings, load_settings
from exporter.sharding import shard_from
from exporter.web import ListenError
from exporter.webconfig import WebConfig, load_web_config

log = logging.getLogger("exporter")


def _load(path: Path | None) -> Settings:
    """The settings from the file and the environment; exit 2 with every problem when invalid."""
    try:
        return load_settings(path)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _with_shard(settings: Settings, index: int | None, count: int | None) -> Settings:
    """``--shard-index`` / ``--shard-count`` win over ``sharding`` in the file; checked like the file."""
    if index is None and count is None:
        return settings
    data = settings.sharding.model_dump()
    data.update({k: v for k, v in (("index", index), ("count", count)) if v is not None})
    try:
        sharding = ShardingSettings.model_validate(data)
        shard_from(sharding.index, sharding.count)
    except (ValidationError, ConfigError) as exc:
        print(
            f"configuration error: sharding (--shard-index/--shard-count): {str(exc).splitlines()[-1].strip()}",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    return settings.model_copy(update={"sharding": sharding})


def _load_web_config(path: Path | None) -> WebConfig | None:
    """Validate the web configuration file (TLS, basic auth) before serving: refuse to start if invalid."""
    if path is None:
        return None
    try:
        return load_web_config(path)
    except ConfigError as exc:
        print(f"configuration error: web.config_file (--web.config.file): {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _check_trace_form(settings: Settings, web: WebConfig | None) -> None:
    """``web.trace_enabled`` only behind authentication: the form shows senders, recipients and subjects."""
    from exporter.trace.web import requires_authentication

    if settings.web.trace_enabled and not requires_authentication(web):
        print(
            "configuration error: web.trace_enabled: the trace form shows senders, recipients and subjects, so it "
            "needs an endpoint that requires authentication: a web configuration file (--web.config.file) with "
            "basic_auth_users, or with client_auth_type RequireAndVerifyClientCert. Set one, or set "
            "web.trace_enabled: false.",
            file=sys.stderr,
        )
        raise SystemExit(2)


def _need_config(args: argparse.Namespace) -> Path:
    """The ``--config.file`` the command cannot run without (argparse's message and exit 2 if missing)."""
    if args.config is None:
        args.parser.error("the following arguments are required: --config.file")
    return Path(args.config)


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate the file; print every problem with its field path; exit non-zero when invalid."""
    path = _need_config(args)
    warn_deprecated(args, to_log=False)
    settings = apply_flags(_load(path), args)
    web = _load_web_config(settings.web.config_file)
    _check_trace_form(settings, web)
    servers = ", ".join(s.name for s in settings.exchange.servers) or "(none)"
    print(f"{path}: OK (servers: {servers}; discovery: {settings.exchange.discovery.enabled})")
    if web is not None:
        print(f"{web.path}: OK ({web.describe()})")
        for warning in web.warnings:
            print(f"note: {warning}")
    if not settings.exchange.servers:
        print("note: exchange.servers is empty: `serve` needs at least one server to poll (or to seed discovery)")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the exporter until SIGTERM/SIGINT."""
    from exporter.service import Service

    path = _need_config(args)
    settings = _with_shard(apply_flags(_load(path), args), args.shard_index, args.shard_count)
    _check_trace_form(settings, _load_web_config(settings.web.config_file))
    if not settings.exchange.servers:
        print(
            f"configuration error: {path}: exchange.servers is empty: nothing to poll. "
            "List at least one Exchange server (it also seeds discovery).",
            file=sys.stderr,
        )
        return 2
    setup_logging(settings.log.level, settings.log.format)
    warn_deprecated(args)
    info = build_info()
    log.info("starting version=%s revision=%s config=%s", info.version, info.revision, path)
    log.debug(
        "build context python=%s platform=%s branch=%s build_user=%s build_date=%s",
        info.python,
        info.platform,
        info.branch,
        info.build_user,
        info.build_date,
    )
    try:
        Service(settings).run_forever()
    except ListenError as exc:
        log.error("%s", exc.strerror)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the simulator with the bundled demo organisation and the exporter against it."""
    from exporter.demo import run_demo

    logs = log_from_flags(LogSettings(), args)
    setup_logging(logs.level, logs.format)
    warn_deprecated(args)
    web = web_from_flags(WebSettings(), args)
    _load_web_config(web.config_file)
    try:
        return run_demo(
            listen_address=web.listen_addresses,
            tls=not args.no_tls,
            web_config_file=web.config_file,
            telemetry_path=web.telemetry_path,
        )
    except ListenError as exc:
        log.error("%s", exc.strerror)
        return 1


def cmd_check(args: argparse.Namespace) -> int:
    """Poll once, print the triage report; exit 0 healthy, 1 warnings, 2 critical, 3 could not check,
    4 did not finish within --timeout."""
    from exporter.check import check, check_demo
    from exporter.triage.report import status_line, write_json, write_text

    logs = log_from_flags(LogSettings(level="error"), args)
    setup_logging(logs.level, logs.format)
    warn_deprecated(args)
    if args.timeout is not None and args.timeout <= 0:
        print("check: --timeout must be a positive number of seconds", file=sys.stderr)
        return 3
    if not args.demo and args.config is None:
        print("check needs --config.file FILE or --demo", file=sys.stderr)
        return 3
    settings = None if args.demo else _load(args.config)
    with _progress_on_terminal() as progress:
        report = check_demo(args.timeout, progress) if settings is None else check(settings, args.timeout, progress)
    if report.timeout is not None:
        print(f"check: {status_line(report)}", file=sys.stderr)
    if args.format == "json":
        write_json(report, sys.stdout)
    else:
        write_text(report, sys.stdout, color=sys.stdout.isatty())
    return report.exit_code


def cmd_trace(args: argparse.Namespace) -> int:
    """Follow messages through every transport server; exit 0 when every server was searched, 3 when one
    could not be, 2 for a bad argument."""
    from exporter.trace.cli import run_trace_command

    logs = log_from_flags(LogSettings(level="error"), args)
    setup_logging(logs.level, logs.format)
    warn_deprecated(args)
    settings = None if args.demo or args.config is None else _load(args.config)
    return run_trace_command(args, settings)


@contextlib.contextmanager
def _progress_on_terminal() -> Iterator[Callable[[int, int, list[str]], None] | None]:
    """A progress line on stderr while ``check`` polls, when stderr is a terminal (nothing when piped)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    with console.status("polling...") as status:

        def show(done: int, total: int, running: list[str]) -> None:
            waiting = ", ".join(running[:4]) + (f" (+{len(running) - 4})" if len(running) > 4 else "")
            status.update(f"polled {done}/{total}" + (f"; waiting for {waiting}" if waiting else ""))

        yield show


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """Probe the local exporter's /-/healthy whatever its web config; exit 0 healthy, 1 not."""
    from exporter.healthcheck import check as probe
    from exporter.healthcheck import listen_address

    warn_deprecated(args, to_log=False)
    health = probe(args.address or listen_address(args.config), timeout=args.timeout)
    print(health.detail, file=sys.stdout if health.ok else sys.stderr)
    return 0 if health.ok else 1


class _VersionAction(argparse.Action):
    """``--version``: version, revision, Python and library versions, like ``node_exporter --version``
    (computed only when asked: it may run ``git``)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> None:
        print(version_text())
        parser.exit()


def example_config() -> str:
    """The annotated example configuration shipped in the package (config/example.yml in the source)."""
    return resources.files("exporter").joinpath("example.yml").read_text(encoding="utf-8")


def cmd_example_config(_args: argparse.Namespace) -> int:
    """Print the example configuration: every option with its default and what it does."""
    sys.stdout.write(example_config())
    return 0


def _parser(sub: Any, name: str, help: str, epilog: str, description: str | None = None) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=description or help[0].upper() + help[1:] + ".",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(parser=parser)
    return parser


_MAIN_EPILOG = """\
examples:
  mailflow-exporter demo                                  # try it against a simulated organisation
  mailflow-exporter validate-config --config.file mailflow.yml
  mailflow-exporter serve --config.file mailflow.yml
  mailflow-exporter check --config.file mailflow.yml      # where is mail stuck, and why?
  mailflow-exporter trace --config.file mailflow.yml --sender cfo@contoso.com   # where is that message?
  mailflow-exporter serve --help                          # every flag of a command

Flags win over MAILFLOW_* environment variables, which win over the YAML file.
"""

_SERVE_EPILOG = """\
precedence: flags > MAILFLOW_* environment variables > the YAML file > built-in defaults.

examples:
  mailflow-exporter serve --config.file /etc/mailflow-exporter/config.yml
  mailflow-exporter serve --config.file mailflow.yml --web.listen-address=127.0.0.1:10049 \\
      --web.listen-address=[::1]:10049 --log.level=debug --log.format=json
  mailflow-exporter serve --config.file mailflow.yml --web.config.file web-config.yml \\
      --web.telemetry-path=/mailflow/metrics
  mailflow-exporter serve --config.file mailflow.yml --shard-index 1 --shard-count 3
"""

_DEMO_EPILOG = """\
examples:
  mailflow-exporter demo                                   # http://localhost:10049/metrics and /
  mailflow-exporter demo --web.listen-address=127.0.0.1:9999 --log.format=json
  mailflow-exporter demo --web.config.file web-config.yml  # HTTPS and/or basic auth
"""

_VALIDATE_EPILOG = """\
examples:
  mailflow-exporter validate-config --config.file mailflow.yml
  mailflow-exporter validate-config --config.file mailflow.yml --web.config.file web-config.yml
"""

_CHECK_EPILOG = """\
exit codes: 0 healthy, 1 warnings, 2 critical findings, 3 could not check, 4 did not finish within
--timeout (unless something critical was found).

examples:
  mailflow-exporter check --config.file mailflow.yml
  mailflow-exporter check --config.file mailflow.yml --format json
  mailflow-exporter check --demo
  mailflow-exporter check --config.file mailflow.yml --timeout 120 | less
"""

_HEALTH_EPILOG = """\
examples:
  mailflow-exporter healthcheck                            # 127.0.0.1:10049
  mailflow-exporter healthcheck --config.file /etc/mailflow-exporter/config.yml --timeout 4
  mailflow-exporter healthcheck --address 127.0.0.1:9999
"""


def build_parser() -> argparse.ArgumentParser:
    """The command line: flags named as in the Prometheus exporters; 0.1's names as deprecated aliases."""
    parser = argparse.ArgumentParser(
        prog="mailflow-exporter",
        description="Prometheus exporter for Microsoft Exchange mail flow.",
        epilog=_MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action=_VersionAction, help="print version, revision, Python and library versions, and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = _parser(sub, "serve", "run the exporter", _SERVE_EPILOG)
    add_config_flag(serve, "the YAML configuration file (required)")
    add_web_flags(serve)
    add_log_flags(serve)
    serve.add_argument(
        "--shard-index", type=int, metavar="N", help="this replica's shard (default: sharding.index or the pod ordinal)"
    )
    serve.add_argument(
        "--shard-count", type=int, metavar="N", help="how many replicas share the configuration (sharding.count)"
    )
    serve.set_defaults(func=cmd_serve)

    validate = _parser(sub, "validate-config", "check a configuration file and exit", _VALIDATE_EPILOG)
    add_config_flag(validate, "the YAML configuration file (required)")
    validate.add_argument("--web.config.file", dest="web_config_file", type=Path, metavar="FILE", help=WEB_CONFIG_HELP)
    validate.set_defaults(func=cmd_validate)

    check = _parser(sub, "check", "poll once and print where mail is stuck and why", _CHECK_EPILOG)
    add_config_flag(check)
    check.add_argument("--demo", action="store_true", help="check the bundled simulated organisation instead")
    check.add_argument("--format", choices=["text", "json"], default="text", help="report format (default text)")
    check.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="stop after this long: the report then lists the polls that did not finish (exit code 4 unless "
        "something critical was found). Default: no limit (each call is bounded by call_timeout)",
    )
    add_log_flags(check, default_level="error", from_file=False)
    check.set_defaults(func=cmd_check)

    from exporter.trace.cli import TRACE_EPILOG, add_trace_flags

    trace = _parser(
        sub,
        "trace",
        "follow messages through every transport server's tracking log",
        TRACE_EPILOG,
        description="Follow messages through every transport server's message tracking log, hop by hop, and say\n"
        "where each recipient's copy ended: delivered, sent out, failed, still in a queue, or lost trail.",
    )
    add_config_flag(trace)
    add_trace_flags(trace)
    add_log_flags(trace, default_level="error", from_file=False)
    trace.set_defaults(func=cmd_trace)

    demo = _parser(
        sub,
        "demo",
        "run against the built-in simulated Exchange organisation",
        _DEMO_EPILOG,
        description="Run the exporter against the built-in simulated Exchange organisation.\n"
        "No Exchange needed: the simulator and its DNS and SMTP servers stay on loopback.",
    )
    add_web_flags(demo, listen_alias=True, from_file=False)
    add_log_flags(demo, from_file=False)
    demo.add_argument("--no-tls", action="store_true", help="talk to the simulator over plain HTTP")
    demo.set_defaults(func=cmd_demo)

    health = _parser(
        sub,
        "healthcheck",
        "exit 0 if the exporter on this host is serving (for container health checks; works with TLS/auth)",
        _HEALTH_EPILOG,
    )
    health.add_argument(
        "--address",
        help="the exporter's listen address (default: $MAILFLOW_WEB__LISTEN_ADDRESS, else web.listen_address "
        "in --config.file, else 127.0.0.1:10049)",
    )
    add_config_flag(health, "the exporter's YAML configuration, for web.listen_address")
    health.add_argument("--timeout", type=float, default=4.0, help="seconds per attempt (default 4)")
    health.set_defaults(func=cmd_healthcheck)

    example = _parser(
        sub,
        "example-config",
        "print the example configuration: every option with its default",
        "examples:\n  mailflow-exporter example-config > mailflow.yml\n",
        description="Print the annotated example configuration (every option, its default and what it does; "
        "config/example.yml in the source, /etc/mailflow-exporter/example.yml in the image).",
    )
    example.set_defaults(func=cmd_example_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mailflow-exporter`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
