"""Command line: ``serve``, ``check``, ``demo``, ``validate-config``."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import ValidationError

from exporter import __version__
from exporter.errors import ConfigError
from exporter.logs import setup_logging
from exporter.settings import Settings, ShardingSettings, load_settings
from exporter.sharding import shard_from
from exporter.webconfig import WebConfig, load_web_config

log = logging.getLogger("exporter")


def _load(path: Path | None, web_config_file: Path | None = None) -> Settings:
    """The settings; ``--web.config.file`` (when given) wins over ``web.config_file``."""
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if web_config_file is not None:
        settings = settings.model_copy(update={"web": settings.web.model_copy(update={"config_file": web_config_file})})
    return settings


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


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate the file; print every problem with its field path; exit non-zero when invalid."""
    settings = _load(args.config, args.web_config_file)
    web = _load_web_config(settings.web.config_file)
    servers = ", ".join(s.name for s in settings.exchange.servers) or "(none)"
    print(f"{args.config}: OK (servers: {servers}; discovery: {settings.exchange.discovery.enabled})")
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

    settings = _with_shard(_load(args.config, args.web_config_file), args.shard_index, args.shard_count)
    _load_web_config(settings.web.config_file)
    if not settings.exchange.servers:
        print(
            f"configuration error: {args.config}: exchange.servers is empty: nothing to poll. "
            "List at least one Exchange server (it also seeds discovery).",
            file=sys.stderr,
        )
        return 2
    setup_logging(args.log_level or settings.log.level, settings.log.format)
    log.info("starting version=%s config=%s", __version__, args.config)
    Service(settings).run_forever()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the simulator with the bundled demo organisation and the exporter against it."""
    from exporter.demo import run_demo

    setup_logging(args.log_level or "info")
    _load_web_config(args.web_config_file)
    return run_demo(listen_address=args.listen_address, tls=not args.no_tls, web_config_file=args.web_config_file)


def cmd_check(args: argparse.Namespace) -> int:
    """Poll once, print the triage report; exit 0 healthy, 1 warnings, 2 critical, 3 could not check,
    4 did not finish within --timeout."""
    from exporter.check import check, check_demo
    from exporter.triage.report import status_line, write_json, write_text

    setup_logging(args.log_level or "error")
    if args.timeout is not None and args.timeout <= 0:
        print("check: --timeout must be a positive number of seconds", file=sys.stderr)
        return 3
    if not args.demo and args.config is None:
        print("check needs --config FILE or --demo", file=sys.stderr)
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

    health = probe(args.address or listen_address(args.config), timeout=args.timeout)
    print(health.detail, file=sys.stdout if health.ok else sys.stderr)
    return 0 if health.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailflow-exporter", description="Prometheus exporter for Microsoft Exchange mail flow."
    )
    parser.add_argument("--version", action="version", version=f"mailflow-exporter {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the exporter")
    serve.add_argument("--config", type=Path, required=True, help="YAML configuration file")
    serve.add_argument(
        "--shard-index", type=int, help="this replica's shard (default: sharding.index or the pod ordinal)"
    )
    serve.add_argument("--shard-count", type=int, help="how many replicas share the configuration (sharding.count)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--web.config.file",
        dest="web_config_file",
        type=Path,
        metavar="FILE",
        help="exporter-toolkit web config file: TLS, client certificates, basic auth (wins over web.config_file)",
    )
    serve.set_defaults(func=cmd_serve)

    validate = sub.add_parser("validate-config", help="check a configuration file and exit")
    validate.add_argument("--config", type=Path, required=True, help="YAML configuration file")
    validate.add_argument(
        "--web.config.file",
        dest="web_config_file",
        type=Path,
        metavar="FILE",
        help="exporter-toolkit web config file: TLS, client certificates, basic auth (wins over web.config_file)",
    )
    validate.set_defaults(func=cmd_validate)

    check = sub.add_parser("check", help="poll once and print where mail is stuck and why")
    check.add_argument("--config", type=Path, help="YAML configuration file")
    check.add_argument("--demo", action="store_true", help="check the bundled simulated organisation instead")
    check.add_argument("--format", choices=["text", "json"], default="text")
    check.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="stop after this long: the report then lists the polls that did not finish (exit code 4 unless "
        "something critical was found). Default: no limit (each call is bounded by call_timeout)",
    )
    check.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    check.set_defaults(func=cmd_check)

    demo = sub.add_parser("demo", help="run against the built-in simulated Exchange organisation")
    demo.add_argument("--listen-address", default=":10049", help="where to serve /metrics (default :10049)")
    demo.add_argument("--no-tls", action="store_true", help="talk to the simulator over plain HTTP")
    demo.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    demo.add_argument(
        "--web.config.file",
        dest="web_config_file",
        type=Path,
        metavar="FILE",
        help="exporter-toolkit web config file: TLS, client certificates, basic auth (wins over web.config_file)",
    )
    demo.set_defaults(func=cmd_demo)

    health = sub.add_parser(
        "healthcheck",
        help="exit 0 if the exporter on this host is serving (for container health checks; works with TLS/auth)",
    )
    health.add_argument(
        "--address",
        help="the exporter's listen address (default: $MAILFLOW_WEB__LISTEN_ADDRESS, else web.listen_address "
        "in --config, else 127.0.0.1:10049)",
    )
    health.add_argument("--config", type=Path, help="the exporter's YAML configuration, for web.listen_address")
    health.add_argument("--timeout", type=float, default=4.0, help="seconds per attempt (default 4)")
    health.set_defaults(func=cmd_healthcheck)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mailflow-exporter`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
