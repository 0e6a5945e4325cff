"""Settings: YAML + environment + secret files, and error messages with field paths and lines."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exporter.errors import ConfigError
from exporter.settings import Settings, load_settings, parse_duration, resolved_servers

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def test_example_config_is_valid_and_documents_every_option() -> None:
    settings = load_settings(ROOT / "config" / "example.yml")
    assert settings.web.listen_address == ":10049"
    documented = yaml.safe_load((ROOT / "config" / "example.yml").read_text())

    def walk(model: type, data: dict, path: str) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            if name not in data:
                missing.append(f"{path}{name}")
                continue
            sub = field.annotation
            if isinstance(sub, type) and hasattr(sub, "model_fields") and isinstance(data[name], dict):
                missing += walk(sub, data[name], f"{path}{name}.")
        return missing

    assert walk(Settings, documented, "") == []


def test_defaults_match_example_file() -> None:
    assert load_settings(ROOT / "config" / "example.yml") == load_settings(None)


def test_every_problem_reported_with_path_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
exchange:
  defaults:
    call_timeout: 10x
  servers:
    - name: EX01
    - name: EX02
      port: 99999
collectors:
  queues:
    intervall: 30s
""",
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    text = str(info.value)
    assert "3 problems" in text
    assert "exchange.defaults.call_timeout (line 3)" in text
    assert "exchange.servers[1].port (line 7)" in text
    assert "collectors.queues.intervall (line 10): unknown setting" in text


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "exchange:\n  servers: [\n    - name: EX01\n")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line \d+"):
        load_settings(path)


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "web:\n  listen_address: ':1234'\ncollectors:\n  queues:\n    interval: 30s\n")
    monkeypatch.setenv("MAILFLOW_WEB__LISTEN_ADDRESS", "127.0.0.1:10050")
    settings = load_settings(path)
    assert settings.web.listen_address == "127.0.0.1:10050"
    assert settings.collectors.queues.interval == 30.0  # untouched by the override


def test_environment_error_names_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILFLOW_EXCHANGE__DEFAULTS__PORT", "eighty")
    with pytest.raises(ConfigError, match="from environment MAILFLOW_EXCHANGE__DEFAULTS__PORT"):
        load_settings(write(tmp_path, "{}\n"))


def test_password_from_file_and_secrets_dir(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("s3cret-from-file\n")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "ex02_password").write_text("per-server")
    (secrets / "exchange_password").write_text("shared")
    path = write(
        tmp_path,
        f"""\
exchange:
  defaults: {{auth: basic, tls: true, username: svc@contoso.com}}
  servers:
    - {{name: EX01, password_file: {tmp_path / "pw"}}}
    - {{name: EX02}}
    - {{name: EX03}}
secrets_dir: {secrets}
""",
    )
    servers = {s.name: s for s in resolved_servers(load_settings(path))}
    assert servers["EX01"].password.get_secret_value() == "s3cret-from-file"
    assert servers["EX02"].password.get_secret_value() == "per-server"
    assert servers["EX03"].password.get_secret_value() == "shared"
    assert "s3cret" not in repr(servers["EX01"]) and "s3cret" not in str(servers["EX01"])


# (id, the server's entry, exchange.defaults, files in secrets_dir, what the server uses). Files named in
# entries are created holding their own name, so the password shows where it came from.
PRECEDENCE = [
    ("server-file-beats-default-inline", {"password_file": "ex01.pw"}, {"password": "default"}, [], "ex01.pw"),
    ("server-inline-beats-default-file", {"password": "own"}, {"password_file": "default.pw"}, [], "own"),
    ("server-keytab-beats-default-password", {"keytab": "ex01.keytab"}, {"password": "default"}, [], "keytab"),
    ("server-password-beats-default-keytab", {"password": "own"}, {"keytab": "default.keytab"}, [], "own"),
    ("server-secret-file-beats-defaults", {}, {"password": "default"}, ["ex01_password"], "ex01_password"),
    ("server-entry-beats-its-secret-file", {"password": "own"}, {}, ["ex01_password"], "own"),
    ("defaults-beat-the-shared-secret-file", {}, {"password_file": "default.pw"}, ["exchange_password"], "default.pw"),
    ("shared-secret-file-last", {}, {}, ["exchange_password"], "exchange_password"),
    ("nothing-the-ticket-cache", {}, {}, [], None),
]


@pytest.mark.parametrize(
    ("server", "defaults", "files", "used"), [r[1:] for r in PRECEDENCE], ids=[r[0] for r in PRECEDENCE]
)
def test_anything_set_for_a_server_beats_anything_from_the_defaults(
    tmp_path: Path, server: dict[str, str], defaults: dict[str, str], files: list[str], used: str | None
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in files:
        (secrets / name).write_text(name + "\n")

    def files_made(entry: dict[str, str]) -> dict[str, str]:
        out = dict(entry)
        for key in ("password_file", "keytab"):
            if key in out:
                (tmp_path / out[key]).write_text(out[key] + "\n")
                out[key] = str(tmp_path / out[key])
        return out

    text = yaml.safe_dump(
        {
            "exchange": {
                "defaults": {"auth": "kerberos", "username": "svc@CONTOSO.COM", **files_made(defaults)},
                "servers": [{"name": "EX01", **files_made(server)}],
            },
            "secrets_dir": str(secrets),
        }
    )
    (resolved,) = resolved_servers(load_settings(write(tmp_path, text), environ={}))
    password = resolved.current_password()
    if used == "keytab":
        assert (resolved.keytab, password) == (tmp_path / "ex01.keytab", None)
    else:
        assert resolved.keytab is None
        assert password == used


def test_a_server_password_file_beats_a_default_password_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ex01.pw").write_text("own\n")
    monkeypatch.setenv("MAILFLOW_EXCHANGE__DEFAULTS__PASSWORD", "from-environment")
    path = write(tmp_path, f"exchange:\n  servers:\n    - {{name: EX01, password_file: {tmp_path / 'ex01.pw'}}}\n")
    (resolved,) = resolved_servers(load_settings(path))
    assert resolved.current_password() == "own"


def test_missing_password_file_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "exchange:\n  servers:\n    - {name: EX01, password_file: /nonexistent/pw}\n")
    with pytest.raises(ConfigError, match="cannot read secret file /nonexistent/pw"):
        load_settings(path)


def test_basic_over_http_refused_unless_opted_in(tmp_path: Path) -> None:
    text = "exchange:\n  defaults: {auth: basic, username: u}\n  servers: [{name: EX01}]\n"
    with pytest.raises(ConfigError, match="basic auth over plain HTTP"):
        load_settings(write(tmp_path, text))
    ok = text.replace("username: u", "username: u, allow_insecure_basic: true")
    assert load_settings(write(tmp_path, ok)).exchange.servers[0].name == "EX01"


def test_server_inherits_defaults_and_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
exchange:
  defaults: {tls: true, call_timeout: 2m}
  servers:
    - {name: EX01, host: ex01.contoso.com}
    - {name: EX02, port: 8443, call_timeout: 15s}
""",
    )
    ex01, ex02 = resolved_servers(load_settings(path))
    assert (ex01.host, ex01.port, ex01.call_timeout, ex01.verify_tls) == ("ex01.contoso.com", 443, 120.0, True)
    assert (ex02.host, ex02.port, ex02.call_timeout) == ("EX02", 8443, 15.0)
    assert ex01.endpoint == "https://ex01.contoso.com:443/PowerShell"


def test_duplicate_servers_and_unknown_seed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "exchange:\n  servers: [{name: EX01}, {name: ex01}]\n  discovery: {enabled: true, seed: EX09}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "repeated: ex01" in str(info.value)


@pytest.mark.parametrize(
    ("value", "seconds"), [(30, 30.0), ("45s", 45.0), ("5m", 300.0), ("1h", 3600.0), ("500ms", 0.5), ("1.5", 1.5)]
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["5 minutes", "", True, None, "-3s"])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_validate_config_command_exit_codes(tmp_path: Path) -> None:
    good = subprocess.run(
        [sys.executable, "-m", "exporter", "validate-config", "--config.file", str(ROOT / "config" / "example.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert good.returncode == 0, good.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "exporter", "validate-config", "--config.file", str(write(tmp_path, "web: {x: 1}\n"))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0
    assert re.search(r"web\.x \(line 1\): unknown setting", bad.stderr)


def test_discovery_with_basic_over_http_defaults_is_refused(tmp_path: Path) -> None:
    text = (
        "exchange:\n  defaults: {auth: basic, username: u}\n"
        "  servers: [{name: EX01, tls: true}]\n  discovery: {enabled: true}\n"
    )
    with pytest.raises(ConfigError, match=r"discovered servers use exchange\.defaults: basic auth there needs tls"):
        load_settings(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("collectors: {queues: {result_size: 0}}", "collectors.queues.result_size"),
        ("collectors: {queues: {result_size: true}}", "collectors.queues.result_size"),
        ("scheduler: {stale_after_intervals: 1}", "scheduler.stale_after_intervals"),
    ],
)
def test_values_that_would_break_at_runtime_are_refused(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(field)):
        load_settings(write(tmp_path, text + "\n"))


def test_result_size_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILFLOW_COLLECTORS__QUEUES__RESULT_SIZE", "5000")  # the environment has only text
    assert load_settings(write(tmp_path, "{}\n")).collectors.queues.result_size == 5000
    monkeypatch.setenv("MAILFLOW_COLLECTORS__QUEUES__RESULT_SIZE", "2147483648")
    with pytest.raises(ConfigError, match="from 1 to 2147483647"):
        load_settings(write(tmp_path, "{}\n"))


def test_lenient_where_it_is_harmless(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "log: {level: INFO}\nscheduler: {jitter: 0}\n"))
    assert (settings.log.level, settings.scheduler.jitter) == ("info", 0.0)


def test_malformed_json_in_environment_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILFLOW_EXCHANGE__SERVERS", "[{not json")
    with pytest.raises(ConfigError, match="environment"):
        load_settings(write(tmp_path, "{}\n"))


def test_serve_refuses_a_config_with_nothing_to_poll(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "serve", "--config.file", str(write(tmp_path, "{}\n"))],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 2
    assert "exchange.servers is empty" in result.stderr
