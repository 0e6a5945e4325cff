"""Broken configuration files, each with the exact message it produces (load_settings and validate-config).

tests/unit/test_settings.py covers several problems in one file, the line of a YAML syntax error, one bad
environment variable and secret files that work; this is the table of single mistakes, one row each, so a
message that gets worse (or a mistake that starts being accepted) shows up here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from exporter.cli import main as cli_main
from exporter.errors import ConfigError
from exporter.settings import load_settings

BASIC = "exchange:\n  defaults: {auth: basic, tls: true, username: svc@contoso.com}\n"
NOT_FINITE = "a duration must be a finite number of seconds (not .inf, .nan or a number that large)"
NOT_LATIN_1 = (
    "the password for svc@contoso.com contains characters Basic authentication cannot send (not Latin-1); use auth "
    "kerberos, negotiate or ntlm (they send any Unicode password)"
)

# (id, file text, exact message). {cfg} is the file's path, {dir} the directory it is in.
ROWS: list[tuple[str, str, str]] = [
    # --- wrong types
    (
        "port-not-a-number",
        "exchange:\n  defaults:\n    port: eighty\n",
        "{cfg}: 1 problem:\n  exchange.defaults.port (line 3): Input should be a valid integer, unable to parse "
        "string as an integer",
    ),
    (
        "enabled-not-a-boolean",
        "collectors:\n  queues:\n    enabled: maybe\n",
        "{cfg}: 1 problem:\n  collectors.queues.enabled (line 3): Input should be a valid boolean, unable to "
        "interpret input",
    ),
    (
        "fractional-worker-count",
        "scheduler:\n  max_workers: 2.5\n",
        "{cfg}: 1 problem:\n  scheduler.max_workers (line 2): Input should be a valid integer, got a number with a "
        "fractional part",
    ),
    (
        "text-where-a-list-belongs",
        "dns:\n  domains: contoso.com\n",
        "{cfg}: 1 problem:\n  dns.domains (line 2): expected a list ('- item' lines, or [a, b]), got the text "
        "'contoso.com'",
    ),
    (
        "mapping-where-a-list-belongs",
        "exchange:\n  servers:\n    name: EX01\n",
        "{cfg}: 1 problem:\n  exchange.servers (line 3): expected a list ('- item' lines, or [a, b]), got a mapping",
    ),
    (
        "list-where-a-section-belongs",
        "exchange: [EX01, EX02]\n",
        "{cfg}: 1 problem:\n  exchange (line 1): expected a mapping (indented 'key: value' lines), got a list",
    ),
    (
        "empty-section",
        "exchange:\n",
        "{cfg}: 1 problem:\n  exchange (line 1): expected a mapping (indented 'key: value' lines), got an empty value",
    ),
    (
        "server-without-name",
        "exchange:\n  servers:\n    - host: ex01.contoso.com\n",
        "{cfg}: 1 problem:\n  exchange.servers[0].name (line 3): Field required",
    ),
    (
        "unknown-auth",
        "exchange:\n  defaults:\n    auth: kerberos5\n",
        "{cfg}: 1 problem:\n  exchange.defaults.auth (line 3): Input should be 'kerberos', 'negotiate', 'ntlm' or "
        "'basic'",
    ),
    (
        "log-level",
        "log:\n  level: verbose\n",
        "{cfg}: 1 problem:\n  log.level (line 2): Input should be 'debug', 'info', 'warning' or 'error'",
    ),
    # --- values
    (
        "duration-in-words",
        "collectors:\n  queues:\n    interval: 5 minutes\n",
        "{cfg}: 1 problem:\n  collectors.queues.interval (line 3): invalid duration '5 minutes': use seconds or a "
        "unit suffix (ms, s, m, h, d), e.g. '30s'",
    ),
    (
        "zero-interval",
        "collectors:\n  queues:\n    interval: 0\n",
        "{cfg}: 1 problem:\n  collectors.queues.interval (line 3): Input should be greater than 0",
    ),
    (
        "bad-ip",
        "dns:\n  outbound_ips:\n    - ip: 192.0.2.300\n",
        "{cfg}: 1 problem:\n  dns.outbound_ips[0].ip (line 3): not an IP address: '192.0.2.300'",
    ),
    (
        "bad-ip-range",
        "collectors:\n  receive_connectors:\n    trusted_networks: [10.0.0.0/33]\n",
        "{cfg}: 1 problem:\n  collectors.receive_connectors.trusted_networks (line 3): not an IP range: "
        "'10.0.0.0/33' ('10.0.0.0/33' does not appear to be an IPv4 or IPv6 network)",
    ),
    (
        "unknown-permission-group",
        "collectors:\n  receive_connectors:\n    expect:\n      Relay: {permission_groups: [Anonymous]}\n",
        "{cfg}: 1 problem:\n  collectors.receive_connectors.expect.Relay.permission_groups (line 4): unknown "
        "permission group 'Anonymous'; one of: AnonymousUsers, ExchangeUsers, ExchangeServers, "
        "ExchangeLegacyServers, Partners, Custom",
    ),
    (
        "listen-address-without-port",
        "web:\n  listen_address: localhost\n",
        "{cfg}: 1 problem:\n  web.listen_address (line 2): listen_address must be [host]:port, e.g. ':10049' or "
        "'127.0.0.1:10049' (port 0 picks a free port)",
    ),
    (
        "missing-ca-bundle",
        "dns:\n  smtp:\n    ca_bundle: /nonexistent/ca.pem\n",
        "{cfg}: 1 problem:\n  dns.smtp.ca_bundle (line 3): no such file: /nonexistent/ca.pem",
    ),
    # --- unknown and repeated keys, with the key's own line
    (
        "unknown-section",
        "exchnage:\n  servers: []\n",
        "{cfg}: 1 problem:\n  exchnage (line 1): unknown setting (check the spelling against the example: "
        "mailflow-exporter example-config)",
    ),
    (
        "unknown-key-in-defaults",
        "exchange:\n  defaults:\n    passwrod: secret\n",
        "{cfg}: 1 problem:\n  exchange.defaults.passwrod (line 3): unknown setting (check the spelling against "
        "the example: mailflow-exporter example-config)",
    ),
    (
        "unknown-key-in-a-list-item",
        "exchange:\n  servers:\n    - name: EX01\n    - name: EX02\n      hots: ex02.contoso.com\n",
        "{cfg}: 1 problem:\n  exchange.servers[1].hots (line 5): unknown setting (check the spelling against "
        "the example: mailflow-exporter example-config)",
    ),
    (
        "repeated-section",  # YAML would silently keep only the last one
        "collectors:\n  queues:\n    interval: 30s\ncollectors:\n  tracking:\n    enabled: false\n",
        "{cfg}: collectors (line 4): key repeated in a mapping",
    ),
    (
        "repeated-key",
        "exchange:\n  defaults:\n    port: 443\n    port: 80\n",
        "{cfg}: exchange.defaults.port (line 4): key repeated in a mapping",
    ),
    # --- not YAML, or not a mapping
    (
        "tab-indent",
        "exchange:\n\tservers: []\n",
        "{cfg}: not valid YAML (line 2, column 1): found character '\\t' that cannot start any token",
    ),
    (
        "bad-indent",
        "exchange:\n  servers:\n    - name: EX01\n   host: x\n",
        "{cfg}: not valid YAML (line 4, column 4): expected <block end>, but found '<block mapping start>'",
    ),
    (
        "unclosed-quote",
        'web:\n  listen_address: ":10049\n',
        "{cfg}: not valid YAML (line 3, column 1): found unexpected end of stream",
    ),
    (
        "colon-in-plain-value",
        "web:\n  listen_address: :10049: x\n",
        "{cfg}: not valid YAML (line 2, column 25): mapping values are not allowed here",
    ),
    (
        "top-level-list",
        "- exchange\n- web\n",
        "{cfg}: the top level must be a mapping of sections (exchange, collectors, web, ...)",
    ),
    (
        "top-level-text",
        "just some text\n",
        "{cfg}: the top level must be a mapping of sections (exchange, collectors, web, ...)",
    ),
    # --- values serve could not run with: infinities, NaN, overflows and beyond the documented bounds
    (
        "interval-infinite",
        "collectors:\n  queues:\n    interval: .inf\n",
        "{cfg}: 1 problem:\n  collectors.queues.interval (line 3): " + NOT_FINITE,
    ),
    (
        "interval-beyond-a-float",  # an integer too large for a float: an OverflowError traceback before
        "collectors:\n  queues:\n    interval: 1" + "0" * 400 + "\n",
        "{cfg}: 1 problem:\n  collectors.queues.interval (line 3): " + NOT_FINITE,
    ),
    (
        "interval-above-its-bound",
        "collectors:\n  certificates:\n    interval: 8d\n",
        "{cfg}: 1 problem:\n  collectors.certificates.interval (line 3): Input should be at most 7d (604800 seconds)",
    ),
    (
        "connect-timeout-infinite",
        "exchange:\n  defaults:\n    connect_timeout: .inf\n",
        "{cfg}: 1 problem:\n  exchange.defaults.connect_timeout (line 3): " + NOT_FINITE,
    ),
    (
        "call-timeout-of-one-server-above-its-bound",
        "exchange:\n  servers:\n    - name: EX01\n      call_timeout: 2h\n",
        "{cfg}: 1 problem:\n  exchange.servers[0].call_timeout (line 4): Input should be at most 1h (3600 seconds)",
    ),
    (
        "tracking-window-nan",
        "collectors:\n  tracking:\n    max_window: .nan\n",
        "{cfg}: 1 problem:\n  collectors.tracking.max_window (line 3): " + NOT_FINITE,
    ),
    (
        "latency-bucket-infinite",
        "collectors:\n  tracking:\n    latency_buckets: [1, 5, .inf]\n",
        "{cfg}: 1 problem:\n  collectors.tracking.latency_buckets[2] (line 3): Input should be a finite number",
    ),
    (
        "latency-buckets-not-increasing",
        "collectors:\n  tracking:\n    enabled: true\n    latency_buckets: [1, 30, 5]\n",
        "{cfg}: 1 problem:\n  collectors.tracking.latency_buckets (line 4): latency_buckets must be strictly "
        "increasing",
    ),
    (
        "stale-after-intervals-infinite",
        "scheduler:\n  stale_after_intervals: .inf\n",
        "{cfg}: 1 problem:\n  scheduler.stale_after_intervals (line 2): Input should be a finite number",
    ),
    (
        "jitter-nan",
        "scheduler:\n  jitter: .nan\n",
        "{cfg}: 1 problem:\n  scheduler.jitter (line 2): " + NOT_FINITE,
    ),
    (
        "result-size-beyond-int32",  # pypsrp would send it as <I32>, which no Int32 can hold
        "collectors:\n  tracking:\n    result_size: 1000000000000000000000000000000\n",
        "{cfg}: 1 problem:\n  collectors.tracking.result_size (line 3): Input should be 'Unlimited' or a whole number "
        "from 1 to 2147483647",
    ),
    (
        "drift-accept-after-infinite",
        "dns:\n  drift_accept_after: .inf\n",
        "{cfg}: 1 problem:\n  dns.drift_accept_after (line 2): " + NOT_FINITE,
    ),
    # --- secrets
    (
        "password-file-missing",
        BASIC + "  servers:\n    - {name: EX01, password_file: /nonexistent/ex01.pw}\n",
        "{cfg}: 1 problem:\n  exchange.servers[0].password_file (line 4): cannot read secret file "
        "/nonexistent/ex01.pw: No such file or directory",
    ),
    (
        "password-file-empty",
        BASIC + "  servers:\n    - {name: EX01, password_file: {dir}/empty.pw}\n",
        "{cfg}: 1 problem:\n  exchange.servers[0].password_file (line 4): secret file {dir}/empty.pw is empty",
    ),
    (
        "password-file-is-a-directory",
        BASIC + "  servers:\n    - {name: EX01, password_file: {dir}}\n",
        "{cfg}: 1 problem:\n  exchange.servers[0].password_file (line 4): cannot read secret file {dir}: Is a "
        "directory",
    ),
    (
        "password-file-not-utf8",  # the decoder's message would quote a byte of the secret and its position
        BASIC + "  servers:\n    - {name: EX01, password_file: {dir}/latin1.pw}\n",
        "{cfg}: 1 problem:\n  exchange.servers[0].password_file (line 4): secret file {dir}/latin1.pw is not UTF-8 "
        "text: save it as UTF-8",
    ),
    (
        "default-password-file-missing",  # set once in defaults: reported once, at the defaults
        "exchange:\n  defaults: {auth: basic, tls: true, username: u, password_file: /run/secrets/nope}\n"
        "  servers: [{name: EX01}, {name: EX02}]\n",
        "{cfg}: 1 problem:\n  exchange.defaults.password_file (line 2): cannot read secret file /run/secrets/nope: No "
        "such file or directory",
    ),
    (
        "password-and-password-file-for-one-server",
        "exchange:\n  servers:\n    - name: EX01\n      password: x\n      password_file: {dir}/empty.pw\n",
        "{cfg}: 1 problem:\n  exchange.servers[0].password_file (line 5): password is set for this server too: set "
        "only one of password, password_file and keytab",
    ),
    (
        "password-and-keytab-in-defaults",
        "exchange:\n  defaults:\n    password_file: {dir}/empty.pw\n    keytab: {dir}/empty.pw\n"
        "  servers: [{name: EX01}]\n",
        "{cfg}: 1 problem:\n  exchange.defaults.keytab (line 4): password_file is set in exchange.defaults too: set "
        "only one of password, password_file and keytab",
    ),
    (
        "basic-password-not-latin-1",  # the message names where it is, never a character of it
        BASIC.replace("}", ", password: 'Zä9€qX-ö7Kw€-jV3'}") + "  servers: [{name: EX01}]\n",
        "{cfg}: 1 problem:\n  exchange.defaults.password (line 2): " + NOT_LATIN_1,
    ),
    (
        "basic-password-file-not-latin-1",
        BASIC + "  servers:\n    - name: EX01\n      password_file: {dir}/euro.pw\n",
        "{cfg}: 1 problem:\n  exchange.servers[0].password_file (line 5): " + NOT_LATIN_1,
    ),
]


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "empty.pw").write_text("\n")
    (tmp_path / "latin1.pw").write_bytes("pässwörd\n".encode("latin-1"))
    (tmp_path / "euro.pw").write_text("Zä9€qX-ö7Kw€-jV3\n", encoding="utf-8")
    path = tmp_path / "config.yml"
    path.write_text(text.replace("{dir}", str(tmp_path)), encoding="utf-8")
    return path


def expected(message: str, path: Path) -> str:
    return message.replace("{cfg}", str(path)).replace("{dir}", str(path.parent))


@pytest.mark.parametrize(("text", "message"), [(t, m) for _, t, m in ROWS], ids=[r[0] for r in ROWS])
def test_broken_file_gives_its_exact_message(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert str(info.value) == expected(message, path)


@pytest.mark.parametrize(("text", "message"), [(t, m) for _, t, m in ROWS], ids=[r[0] for r in ROWS])
def test_validate_config_prints_the_same_message(
    tmp_path: Path, text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SystemExit) as info:
        cli_main(["validate-config", "--config.file", str(path)])
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"configuration error: {expected(message, path)}\n"


# --- files that cannot be read -------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yml"
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == f"{path}: cannot read configuration file: No such file or directory"


def test_directory_instead_of_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path)
    assert str(info.value) == f"{tmp_path}: cannot read configuration file: Is a directory"


def _load_error(path: Path) -> str:
    """What load_settings says about ``path`` (it must refuse it)."""
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return str(info.value)


def _as_nobody(path: Path) -> str:
    """``_load_error(path)`` in a forked child that dropped root for uid/gid 65534 (nobody): chmod 000
    does not stop root from reading, and CI runs the suite as root."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            answer = _load_error(path)
            status = 0
        except BaseException as exc:
            answer = f"child failed: {exc!r}"
        os.write(write_end, answer.encode())
        os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, answer
    return answer


def test_unreadable_file(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        path = write(tmp_path, "web: {}\n")
        path.chmod(0)
        try:
            message = _load_error(path)
        finally:
            path.chmod(0o600)
    else:
        # a directory anyone may enter, so that the file's own mode is what refuses nobody
        directory = Path(tempfile.mkdtemp(prefix="mailflow-unreadable-"))
        try:
            directory.chmod(0o755)
            path = write(directory, "web: {}\n")
            path.chmod(0)
            message = _as_nobody(path)
        finally:
            shutil.rmtree(directory)
    assert message == f"{path}: cannot read configuration file: Permission denied"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_bytes(b"web:\n  runbook_url: caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == f"{path}: not UTF-8 text (line 2, byte 24): save it as UTF-8"


# --- files that are fine -------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "# nothing configured yet\n", "---\n"], ids=["empty", "comments", "document"])
def test_empty_file_is_all_defaults_and_validate_config_says_what_is_missing(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, text)
    assert load_settings(path, environ={}) == load_settings(None, environ={})
    assert cli_main(["validate-config", "--config.file", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out == (
        f"{path}: OK (servers: (none); discovery: False)\n"
        "note: exchange.servers is empty: `serve` needs at least one server to poll (or to seed discovery)\n"
    )


# --- the environment -----------------------------------------------------------------------------

ENV_ROWS = [
    (
        "MAILFLOW_COLLECTORS__QUEUES__ENABLED",
        "maybe",
        "{cfg}: 1 problem:\n  collectors.queues.enabled (from environment MAILFLOW_COLLECTORS__QUEUES__ENABLED): "
        "Input should be a valid boolean, unable to interpret input",
    ),
    (
        "MAILFLOW_EXCHANGE__DEFAULTS__CALL_TIMEOUT",  # the file sets it too: the variable is what is wrong
        "soon",
        "{cfg}: 1 problem:\n  exchange.defaults.call_timeout (from environment "
        "MAILFLOW_EXCHANGE__DEFAULTS__CALL_TIMEOUT): invalid duration 'soon': use seconds or a unit suffix (ms, s, "
        "m, h, d), e.g. '30s'",
    ),
    (
        "MAILFLOW_EXCHANGE__DEFAULTS__PASSWROD",
        "secret",
        "{cfg}: 1 problem:\n  exchange.defaults.passwrod (from environment MAILFLOW_EXCHANGE__DEFAULTS__PASSWROD): "
        "unknown setting (check the spelling against the example: mailflow-exporter example-config)",
    ),
    (
        "MAILFLOW_EXCHANGE__SERVERS",  # a whole list from one variable: that variable is named
        '[{"name": "EX 01"}]',
        "{cfg}: 1 problem:\n  exchange.servers[0].name (from environment MAILFLOW_EXCHANGE__SERVERS): String should "
        "match pattern '^[A-Za-z0-9][A-Za-z0-9._-]*$'",
    ),
    (
        "MAILFLOW_EXCHANGE__SERVERS",
        "[{name: EX01}]",
        "{cfg}: environment: MAILFLOW_EXCHANGE__SERVERS is not valid JSON (Expecting property name enclosed in "
        "double quotes: line 1 column 3 (char 2)); lists and mappings in the environment are JSON",
    ),
]


@pytest.mark.parametrize(("variable", "value", "message"), ENV_ROWS, ids=[f"{r[0]}={r[1]}" for r in ENV_ROWS])
def test_bad_environment_value_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    path = write(tmp_path, "exchange:\n  defaults:\n    call_timeout: 30s\n")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == expected(message, path)


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        (
            "MAILFLOW_EXCHANGE_SERVERS",  # one underscore: would be ignored by pydantic-settings
            "{cfg}: 1 problem:\n  environment MAILFLOW_EXCHANGE_SERVERS: unknown setting 'exchange_servers' "
            "(settings are collectors, dns, exchange, log, scheduler, secrets_dir, sharding, state_dir, web; "
            "'__' separates levels); did you mean MAILFLOW_EXCHANGE__SERVERS?",
        ),
        (
            "MAILFLOW_SCHEDULAR__MAX_WORKERS",
            "{cfg}: 1 problem:\n  environment MAILFLOW_SCHEDULAR__MAX_WORKERS: unknown setting 'schedular' "
            "(settings are collectors, dns, exchange, log, scheduler, secrets_dir, sharding, state_dir, web; "
            "'__' separates levels); did you mean MAILFLOW_SCHEDULER?",
        ),
    ],
)
def test_unknown_top_level_variable_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, message: str
) -> None:
    path = write(tmp_path, "exchange:\n  defaults:\n    call_timeout: 30s\n")
    monkeypatch.setenv(variable, "4")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(info.value) == expected(message, path)


def test_known_variables_and_other_prefixes_are_fine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "exchange:\n  defaults:\n    call_timeout: 30s\n")
    monkeypatch.setenv("MAILFLOW_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("MAILFLOWX_UNRELATED", "1")
    monkeypatch.setenv("mailflow_log__level", "debug")  # variables are case-insensitive, as for the fields
    # Kubernetes service links of a Service named mailflow-exporter are not settings, nor mistakes.
    for link in ("SERVICE_HOST", "SERVICE_PORT", "SERVICE_PORT_METRICS", "PORT", "PORT_10049_TCP",
                 "PORT_10049_TCP_PROTO", "PORT_10049_TCP_PORT", "PORT_10049_TCP_ADDR"):  # fmt: skip
        monkeypatch.setenv(f"MAILFLOW_EXPORTER_{link}", "10.0.0.1")
    settings = load_settings(path)
    assert settings.state_dir == tmp_path and settings.log.level == "debug"
