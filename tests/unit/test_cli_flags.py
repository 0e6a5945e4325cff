"""The command line speaks the Prometheus exporters' flag names; 0.1's names still work, marked deprecated;
flags win over the environment and the file; ``--version`` reads like ``node_exporter --version``.

The processes themselves (several listeners, the telemetry path, JSON and debug logs) are exercised in
tests/integration/test_processes.py.
"""

from __future__ import annotations

import argparse
import platform
import re
import shutil
import subprocess
import sys
from importlib.metadata import version as dist_version
from pathlib import Path

import pytest

from exporter.buildinfo import LIBRARIES
from exporter.cli import _load, build_parser
from exporter.flags import REMOVED_IN, apply_flags
from exporter.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
        cwd=cwd,
    )


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file that sets every value the flags can override, and no MAILFLOW_* variable around."""
    for name in ("MAILFLOW_WEB__LISTEN_ADDRESS", "MAILFLOW_WEB__TELEMETRY_PATH", "MAILFLOW_LOG__LEVEL"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "mailflow.yml"
    path.write_text(
        "exchange:\n  servers: [{name: EX01}]\n"
        "web:\n  listen_address: ':10050'\n  telemetry_path: /from-file\n  config_file: file-web.yml\n"
        "log:\n  level: error\n  format: logfmt\n"
    )
    return path


def effective(config: Path, *flags: str) -> Settings:
    return apply_flags(_load(config), parse("serve", "--config.file", str(config), *flags))


@pytest.mark.parametrize(
    ("flags", "field", "value"),
    [
        ((), "web.listen_addresses", (":10050",)),
        (("--web.listen-address", "127.0.0.1:9000"), "web.listen_addresses", ("127.0.0.1:9000",)),
        (
            ("--web.listen-address=127.0.0.1:9000", "--web.listen-address=[::1]:9000"),
            "web.listen_addresses",
            ("127.0.0.1:9000", "[::1]:9000"),
        ),
        (("--web.telemetry-path", "/mailflow"), "web.telemetry_path", "/mailflow"),
        (("--web.config.file", "flag-web.yml"), "web.config_file", Path("flag-web.yml")),
        (("--log.level", "debug"), "log.level", "debug"),
        (("--log.level=warn",), "log.level", "warning"),
        (("--log.level=WARNING",), "log.level", "warning"),  # 0.1's spelling still parses
        (("--log.format", "json"), "log.format", "json"),
        # 0.1's names: same effect
        (("--log-level", "debug"), "log.level", "debug"),
    ],
)
def test_each_flag_wins_over_the_file(config: Path, flags: tuple[str, ...], field: str, value: object) -> None:
    section, name = field.split(".")
    assert getattr(getattr(effective(config, *flags), section), name) == value


def test_flags_win_over_the_environment(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILFLOW_WEB__TELEMETRY_PATH", "/from-env")
    monkeypatch.setenv("MAILFLOW_LOG__LEVEL", "info")
    monkeypatch.setenv("MAILFLOW_WEB__LISTEN_ADDRESS", '[":9001", ":9002"]')  # a list in the environment is JSON
    settings = _load(config)
    assert (settings.web.telemetry_path, settings.log.level) == ("/from-env", "info")  # env beats the file
    assert settings.web.listen_addresses == (":9001", ":9002")
    flagged = effective(config, "--web.telemetry-path=/from-flag", "--log.level=error", "--web.listen-address=:9003")
    assert (flagged.web.telemetry_path, flagged.log.level, flagged.web.listen_addresses) == (
        "/from-flag",
        "error",
        (":9003",),
    )


def test_the_file_can_list_several_listen_addresses(tmp_path: Path) -> None:
    path = tmp_path / "m.yml"
    path.write_text("web:\n  listen_address: ['127.0.0.1:9100', '[::1]:9100']\n")
    assert _load(path).web.listen_addresses == ("127.0.0.1:9100", "[::1]:9100")
    path.write_text("web:\n  listen_address: ['127.0.0.1:9100', '127.0.0.1:9100']\n")
    with pytest.raises(SystemExit):
        _load(path)


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--web.telemetry-path=/", "--web.telemetry-path: telemetry_path must start with '/' and not clash"),
        ("--web.listen-address=localhost", "--web.listen-address: listen_address must be [host]:port"),
    ],
)
def test_an_invalid_flag_is_refused_naming_the_flag(
    config: Path, capsys: pytest.CaptureFixture[str], flag: str, message: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        effective(config, flag)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith(f"configuration error: {message}")


def test_a_repeated_listen_address_is_refused(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        effective(config, "--web.listen-address=:9000", "--web.listen-address=:9000")
    assert "--web.listen-address: listen_address repeats :9000" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "old", "new"),
    [
        ("serve", "--config", "--config.file"),
        ("serve", "--log-level", "--log.level"),
        ("validate-config", "--config", "--config.file"),
        ("check", "--config", "--config.file"),
        ("check", "--log-level", "--log.level"),
        ("demo", "--listen-address", "--web.listen-address"),
        ("demo", "--log-level", "--log.level"),
        ("healthcheck", "--config", "--config.file"),
    ],
)
def test_help_marks_old_names_as_deprecated_aliases(command: str, old: str, new: str) -> None:
    text = " ".join(run_cli(command, "--help").stdout.split())  # argparse wraps help text
    assert f"{old} " in text and f"deprecated alias of {new}, removed in {REMOVED_IN}" in text
    assert new in text


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_serve_and_demo_take_the_toolkit_flags(command: str) -> None:
    text = run_cli(command, "--help").stdout
    for flag in ("--web.listen-address", "--web.telemetry-path", "--web.config.file", "--log.level", "--log.format"):
        assert flag in text
    assert "{debug,info,warn,error}" in text and "{logfmt,json}" in text
    assert "examples:" in text and f"mailflow-exporter {command} " in text.split("examples:", 1)[1]


def test_old_and_new_names_set_the_same_thing_and_the_old_one_is_reported(tmp_path: Path) -> None:
    demo_old = parse("demo", "--listen-address", "127.0.0.1:9000", "--web.listen-address", "127.0.0.1:9001")
    assert demo_old.listen_addresses == ["127.0.0.1:9000", "127.0.0.1:9001"]
    assert demo_old.deprecated_flags == [("--listen-address", "--web.listen-address")]
    assert not getattr(parse("demo", "--web.listen-address", "127.0.0.1:9000"), "deprecated_flags", None)

    path = tmp_path / "m.yml"
    path.write_text("exchange:\n  servers: [{name: EX01}]\n")
    old = run_cli("validate-config", "--config", str(path))
    assert old.returncode == 0, old.stderr
    assert f"{path}: OK" in old.stdout
    assert (
        old.stderr == f"warning: flag --config is deprecated and will be removed in {REMOVED_IN}: use --config.file\n"
    )
    new = run_cli("validate-config", "--config.file", str(path))
    assert (new.returncode, new.stderr) == (0, "")


def test_serve_without_a_config_file_says_which_flag_is_missing() -> None:
    result = run_cli("serve")
    assert result.returncode == 2
    assert "the following arguments are required: --config.file" in result.stderr


# --- --version ---------------------------------------------------------------------------------------


def version_lines(stdout: str) -> tuple[str, dict[str, str]]:
    headline, *rest = stdout.rstrip("\n").split("\n")
    rows = {}
    for line in rest:
        assert line.startswith("  "), line
        name, _, value = line.strip().partition(":")
        rows[name] = value.strip()
    return headline, rows


def test_version_prints_revision_python_and_library_versions() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    headline, rows = version_lines(result.stdout)
    assert re.fullmatch(r"mailflow-exporter, version \S+ \(branch: \S+, revision: \S+\)", headline), headline
    assert rows["python version"] == f"{platform.python_version()} ({platform.python_implementation()})"
    for name in ("build user", "build date", "platform", *LIBRARIES):
        assert name in rows
    for name in ("pypsrp", "psrpcore", "prometheus_client", "dnspython", "pydantic"):
        assert rows[name] == dist_version(name)
    # node_exporter aligns the values in one column
    assert (
        len({line.index(value) for line, value in zip(result.stdout.split("\n")[1:], rows.values(), strict=False)}) == 1
    )
    git = shutil.which("git")
    if git is not None and (ROOT / ".git").exists() and not (ROOT / "exporter" / "_build_info.py").exists():
        head = subprocess.run([git, "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        assert f"revision: {head.stdout.strip()}" in headline  # an editable checkout: git's commit


def test_version_reports_the_revision_recorded_at_build_time(tmp_path: Path) -> None:
    """What the Dockerfile does: record the revision in the package, then the installed copy (no .git
    beside it) reports it; without the record, the revision is unknown."""
    package = tmp_path / "site" / "exporter"
    shutil.copytree(ROOT / "exporter", package, ignore=shutil.ignore_patterns("__pycache__", "_build_info.py"))
    env = {"PYTHONPATH": str(package.parent), "PATH": "/usr/bin:/bin", "SOURCE_DATE_EPOCH": "1700000000"}
    headline, rows = version_lines(run_cli("--version", env=env, cwd=tmp_path).stdout)
    assert "revision: unknown" in headline and rows["build date"] == "unknown"

    record = subprocess.run(
        # -S: no site-packages, as in the Dockerfile, where this runs before the dependencies are installed
        [sys.executable, "-S", "-m", "exporter.buildinfo", "--revision", "0123abc", "--branch", "main"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert record.returncode == 0, record.stderr
    assert (package / "_build_info.py").is_file()
    headline, rows = version_lines(run_cli("--version", env=env, cwd=tmp_path).stdout)
    assert headline.endswith("(branch: main, revision: 0123abc)")
    assert rows["build date"] == "20231114-22:13:20"  # SOURCE_DATE_EPOCH, in promu's format
    assert "@" in rows["build user"]
