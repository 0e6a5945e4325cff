"""The exporter-toolkit web configuration file: strict parsing with key paths and lines, the SSL context it
builds, basic auth, the rate limit, reloading, and agreement with ``promtool check web-config``."""

from __future__ import annotations

import base64
import logging
import re
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from exporter import webconfig
from exporter.cli import _load, build_parser
from exporter.errors import ConfigError
from exporter.flags import apply_flags
from exporter.pki import create_ca, issue_server_certificate
from exporter.webconfig import (
    AuthVerdict,
    BasicAuth,
    ClientRateLimiter,
    RateLimiter,
    WebConfigReloader,
    bcrypt_problem,
    load_web_config,
    parse_basic_auth,
    parse_go_duration,
)
from tests.tools import tool

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "config").glob("web-config*.yml"))
HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
OTHER_HASH = bcrypt.hashpw(b"other", bcrypt.gensalt(4)).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with ca.pem, server.pem (chain) and server-key.pem, plus other.pem/other-key.pem."""
    directory = tmp_path_factory.mktemp("pki")
    ca = create_ca(directory)
    issue_server_certificate(ca, directory, ["localhost"])
    issue_server_certificate(ca, directory, ["other"], stem="other")
    return directory


def write(directory: Path, text: str, name: str = "web.yml") -> Path:
    """The file in ``directory`` with the test certificates next to it (relative paths find them)."""
    path = directory / name
    path.write_text(text)
    return path


@pytest.fixture
def confdir(tmp_path: Path, pki: Path) -> Path:
    for f in pki.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


TLS = "tls_server_config:\n  cert_file: server.pem\n  key_file: server-key.pem\n"


# --- good files --------------------------------------------------------------------------------------


def test_full_file_loads_with_relative_paths_against_its_directory(
    confdir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        confdir,
        TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"
        "  client_allowed_sans: [prometheus.example, 10.0.0.9]\n"
        "  min_version: TLS13\n  prefer_server_cipher_suites: false\n"
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    Content-Security-Policy: default-src 'none'\n"
        f"basic_auth_users:\n  alice: '{HASH}'\n  1234: '{OTHER_HASH}'\n"
        "rate_limit:\n  interval: 100ms\n  burst: 20\n",
    )
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))  # relative to the file, not the working directory
    config = load_web_config(path)
    assert config.tls and config.ssl_context is not None
    ctx = config.ssl_context
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3 and ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    assert not ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert ctx.cert_store_stats()["x509_ca"] == 1
    assert config.allowed_sans == {"prometheus.example", "10.0.0.9"}
    assert set(config.users) == {b"alice", b"1234"}  # YAML's number 1234 is the user name "1234", as in Go
    assert config.headers == (("X-Frame-Options", "deny"), ("Content-Security-Policy", "default-src 'none'"))
    assert (config.rate_interval, config.rate_burst) == (0.1, 20)
    assert config.files == (confdir / "server.pem", confdir / "server-key.pem", confdir / "ca.pem")
    assert config.warnings == ()
    assert config.describe() == (
        "tls: on; client auth: RequireAndVerifyClientCert; basic auth users: 2; rate limit: 20 burst, 1 per 0.1s"
    )


@pytest.mark.parametrize("text", ["", "tls_server_config:\n", "tls_server_config: {}\nbasic_auth_users:\n"])
def test_empty_sections_mean_plain_http_without_auth(confdir: Path, text: str) -> None:
    config = load_web_config(write(confdir, text))
    assert not config.tls and not config.users and config.warnings == ()


def test_inline_certificate_and_key(confdir: Path) -> None:
    data = {
        "tls_server_config": {
            "cert": (confdir / "server.pem").read_text(),
            "key": (confdir / "server-key.pem").read_text(),
            "client_auth_type": "VerifyClientCertIfGiven",
            "client_ca": (confdir / "ca.pem").read_text(),
        }
    }
    config = load_web_config(write(confdir, yaml.safe_dump(data)))
    assert config.ssl_context is not None and config.ssl_context.verify_mode == ssl.CERT_OPTIONAL
    assert config.files == ()


@pytest.mark.parametrize(
    ("client_auth", "mode", "warning"),
    [
        ("NoClientCert", ssl.CERT_NONE, None),
        ("RequestClientCert", ssl.CERT_NONE, "client_auth_type RequestClientCert: Python's ssl module cannot"),
        ("RequireAnyClientCert", ssl.CERT_REQUIRED, "client_auth_type RequireAnyClientCert: Python's ssl module"),
        ("RequireClientCert", ssl.CERT_REQUIRED, "client_auth_type RequireClientCert: Python's ssl module"),
        ("VerifyClientCertIfGiven", ssl.CERT_OPTIONAL, None),
        ("RequireAndVerifyClientCert", ssl.CERT_REQUIRED, None),
    ],
)
def test_client_auth_types(confdir: Path, client_auth: str, mode: ssl.VerifyMode, warning: str | None) -> None:
    ca = "  client_ca_file: ca.pem\n" if client_auth != "NoClientCert" else ""
    config = load_web_config(write(confdir, TLS + f"  client_auth_type: {client_auth}\n" + ca))
    assert config.ssl_context is not None and config.ssl_context.verify_mode == mode
    about_auth = [w for w in config.warnings if w.startswith("client_auth_type")]
    assert about_auth == [] if warning is None else len(about_auth) == 1 and about_auth[0].startswith(warning)


def test_verifying_without_client_ca_uses_the_system_store(confdir: Path) -> None:
    config = load_web_config(write(confdir, TLS + "  client_auth_type: RequireAndVerifyClientCert\n"))
    assert config.warnings == ("no client_ca_file: client certificates are verified against the system's CA store",)


def test_go_cipher_and_curve_names(confdir: Path) -> None:
    text = TLS + (
        "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,"
        " TLS_AES_128_GCM_SHA256, TLS_RSA_WITH_RC4_128_SHA]\n  curve_preferences: [X25519, CurveP256]\n"
    )
    config = load_web_config(write(confdir, text))
    assert config.ssl_context is not None
    tls12 = [c["name"] for c in config.ssl_context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 == ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"]
    assert config.warnings == (
        "tls_server_config.cipher_suites: TLS_RSA_WITH_RC4_128_SHA is not available in this OpenSSL; skipped",
        "tls_server_config.curve_preferences is checked but not applied: Python's ssl module cannot set a "
        "list of groups, so OpenSSL's defaults are used",
    )


def test_http2_and_auth_over_plain_http_are_warned_about(confdir: Path) -> None:
    config = load_web_config(write(confdir, f"http_server_config:\n  http2: true\nbasic_auth_users:\n  a: '{HASH}'\n"))
    assert config.warnings == (
        "http_server_config.http2: true is accepted, but this server speaks HTTP/1.x only",
        "basic_auth_users without tls_server_config: passwords travel in clear over plain HTTP",
    )


# --- bad files: every problem named with its key path and line ----------------------------------------

BAD: list[tuple[str, str, str]] = [
    ("unknown key", TLS + "  bogus: 1\n", "tls_server_config.bogus (line 4): unknown key (not part of the "
     "exporter-toolkit web configuration format)"),
    ("unknown section", "tls_config: {}\n", "tls_config (line 1): unknown key (not part of the exporter-toolkit "
     "web configuration format)"),
    ("client auth type", TLS + "  client_auth_type: Nope\n", "tls_server_config.client_auth_type (line 4): unknown "
     "client_auth_type 'Nope'; one of: NoClientCert, RequestClientCert, RequireAnyClientCert, "
     "VerifyClientCertIfGiven, RequireAndVerifyClientCert"),
    ("hash too short", "basic_auth_users:\n  alice: notahash\n", "basic_auth_users.alice (line 2): not a bcrypt "
     "hash: too short (make one with: htpasswd -nBC 10 '' | tr -d ':\\n')"),
    ("hash garbage", "basic_auth_users:\n  bob: '$2a$10$" + "!" * 53 + "'\n", "basic_auth_users.bob (line 2): not "
     "a bcrypt hash: expected $2a$, $2b$ or $2y$, a cost and 53 characters (make one with: htpasswd -nBC 10 '' | "
     "tr -d ':\\n')"),
    ("hash cost", "basic_auth_users:\n  carol: '$2b$03$" + HASH[7:] + "'\n", "basic_auth_users.carol (line 2): "
     "bcrypt cost 3 is outside the allowed range 4 to 31"),
    ("missing cert file", "tls_server_config:\n  cert_file: nope.pem\n  key_file: server-key.pem\n",
     "tls_server_config.cert_file (line 2): cannot read {dir}/nope.pem: No such file or directory"),
    ("missing key", "tls_server_config:\n  cert_file: server.pem\n", "tls_server_config (line 2): missing key_file "
     "(or an inline key)"),
    ("key mismatch", "tls_server_config:\n  cert_file: server.pem\n  key_file: other-key.pem\n",
     "tls_server_config.key_file (line 3): the private key does not match the certificate"),
    ("not a certificate", "tls_server_config:\n  cert_file: server-key.pem\n  key_file: server-key.pem\n",
     "tls_server_config.cert_file (line 2): no PEM certificate in {dir}/server-key.pem"),
    ("header not allowed", "http_server_config:\n  headers:\n    X-Powered-By: me\n", "http_server_config.headers."
     "X-Powered-By (line 3): HTTP header 'X-Powered-By' can not be configured; allowed: Strict-Transport-Security, "
     "X-Content-Type-Options, X-Frame-Options, X-XSS-Protection, Content-Security-Policy"),
    ("header value", "http_server_config:\n  headers:\n    X-Frame-Options: allow\n", "http_server_config.headers."
     "X-Frame-Options (line 3): must be one of deny, sameorigin, not 'allow'"),
    ("CA without client auth", TLS + "  client_ca_file: ca.pem\n", "tls_server_config.client_auth_type (line 2): "
     "client_ca_file is set but client_auth_type is NoClientCert: set a client auth type that uses it"),
    ("missing CA", TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: cas.pem\n",
     "tls_server_config.client_ca_file (line 5): cannot read {dir}/cas.pem: No such file or directory"),
    ("TLS version", TLS + "  min_version: TLS14\n", "tls_server_config.min_version (line 4): unknown TLS version "
     "'TLS14'; one of: TLS10, TLS11, TLS12, TLS13"),
    ("max below min", TLS + "  min_version: TLS13\n  max_version: TLS12\n", "tls_server_config.max_version (line 5): "
     "TLS12 is lower than min_version TLS13"),
    ("cipher", TLS + "  cipher_suites: [ECDHE-RSA-AES128-GCM-SHA256]\n", "tls_server_config.cipher_suites[0] "
     "(line 4): unknown cipher suite 'ECDHE-RSA-AES128-GCM-SHA256' (use Go crypto/tls names)"),
    ("curve", TLS + "  curve_preferences: [P256]\n", "tls_server_config.curve_preferences[0] (line 4): unknown "
     "curve 'P256'; one of: CurveP256, CurveP384, CurveP521, X25519"),
    ("sans need a required cert", TLS + "  client_allowed_sans: [a]\n", "tls_server_config.client_allowed_sans "
     "(line 4): needs client_auth_type RequireAndVerifyClientCert (or RequireAnyClientCert)"),
    ("cert and cert_file", TLS + "  cert: x\n", "tls_server_config.cert (line 4): set cert or cert_file, not both"),
    ("http2 type", "http_server_config:\n  http2: maybe\n", "http_server_config.http2 (line 2): Input should be a "
     "valid boolean, unable to interpret input"),
    ("rate interval", "rate_limit:\n  interval: 5\n  burst: 1\n", "rate_limit.interval (line 2): invalid duration "
     "5: use a Go duration such as '1s', '100ms' or '1m30s' (0 is off)"),
    ("rate burst", "rate_limit:\n  interval: 1s\n", "rate_limit.burst (line 2): must be at least 1 when "
     "rate_limit.interval is set (0 refuses all)"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_file_names_key_path_and_line(confdir: Path, text: str, message: str) -> None:
    path = write(confdir, text)
    with pytest.raises(ConfigError) as err:
        load_web_config(path)
    assert str(err.value) == f"{path}: 1 problem:\n  " + message.format(dir=confdir)


def test_every_problem_is_reported(confdir: Path) -> None:
    path = write(confdir, "tls_server_config:\n  min_version: TLS9\n  what: 1\nbasic_auth_users:\n  a: x\n")
    with pytest.raises(ConfigError) as err:
        load_web_config(path)
    assert str(err.value) == (
        f"{path}: 1 problem:\n  tls_server_config.what (line 3): unknown key (not part of the exporter-toolkit "
        "web configuration format)"
    )  # the schema first; its meaning once the schema is right
    path = write(
        confdir, "tls_server_config:\n  client_auth_type: Any\n  min_version: TLS9\nbasic_auth_users:\n  a: x\n"
    )
    with pytest.raises(ConfigError) as err:
        load_web_config(path)
    assert str(err.value).splitlines() == [
        f"{path}: 5 problems:",
        "  basic_auth_users.a (line 5): not a bcrypt hash: too short (make one with: htpasswd -nBC 10 '' | "
        "tr -d ':\\n')",
        "  tls_server_config (line 2): missing cert_file (or an inline cert)",
        "  tls_server_config (line 2): missing key_file (or an inline key)",
        "  tls_server_config.client_auth_type (line 2): unknown client_auth_type 'Any'; one of: NoClientCert, "
        "RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert",
        "  tls_server_config.min_version (line 3): unknown TLS version 'TLS9'; one of: TLS10, TLS11, TLS12, TLS13",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("basic_auth_users:\n  a: x\n  a: y\n", "basic_auth_users.a (line 3): key repeated in a mapping"),
        ("- a\n", "the top level must be a mapping (tls_server_config, http_server_config, basic_auth_users, "
         "rate_limit)"),
        ("tls_server_config: [\n", "not valid YAML (line 2, column 1): expected the node content, but found "
         "'<stream end>'"),
    ],
)  # fmt: skip
def test_yaml_level_problems(confdir: Path, text: str, message: str) -> None:
    path = write(confdir, text)
    with pytest.raises(ConfigError) as err:
        load_web_config(path)
    assert str(err.value) == f"{path}: {message}"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"web\.yml: cannot read configuration file: No such file or directory"):
        load_web_config(tmp_path / "web.yml")


# --- agreement with promtool check web-config (Debian's promtool 2.42, exporter-toolkit 0.8) ------------

#: Files inside the schema promtool 2.42 knows: both must accept the good ones and refuse the bad ones.
AGREE = {
    "good-tls-auth": (True, TLS + f"basic_auth_users:\n  alice: '{HASH}'\n"),
    "good-empty": (True, ""),
    "good-mtls": (True, TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"),
    "good-headers": (True, "http_server_config:\n  http2: false\n  headers:\n    X-Content-Type-Options: nosniff\n"
                     "    Strict-Transport-Security: max-age=1\n    X-XSS-Protection: '1'\n"),
    "good-ciphers": (True, TLS + "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n"
                     "  curve_preferences: [CurveP256]\n  min_version: TLS13\n"),
    "good-legacy-name": (True, TLS + "  client_auth_type: RequireClientCert\n  client_ca_file: ca.pem\n"),
    **{name: (False, text) for name, text, _ in BAD if name not in ("max below min", "hash garbage", "cert and "
       "cert_file", "sans need a required cert", "rate interval", "rate burst")},
    "bad-duplicate": (False, f"basic_auth_users:\n  a: '{HASH}'\n  a: '{HASH}'\n"),
    "bad-top-level-list": (False, "- a\n"),
}  # fmt: skip
#: Where this parser is deliberately stricter than promtool 2.42 (Go would fail at the first handshake
#: or login instead), or knows newer toolkit keys promtool 2.42 does not.
STRICTER = ["max below min", "hash garbage"]
NEWER = {
    "rate_limit": "rate_limit:\n  interval: 1s\n  burst: 5\n",
    "client_allowed_sans": TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"
    "  client_allowed_sans: [a]\n",
}


def promtool_accepts(path: Path) -> tuple[bool, str]:
    result = subprocess.run(
        [tool("promtool"), "check", "web-config", path.name],
        capture_output=True,
        text=True,
        check=False,
        cwd=path.parent,
        timeout=30,
    )
    return result.returncode == 0, result.stdout + result.stderr


def parser_accepts(path: Path) -> bool:
    try:
        load_web_config(path)
    except ConfigError:
        return False
    return True


def test_parser_agrees_with_promtool(confdir: Path) -> None:
    disagree = []
    for name, (good, text) in AGREE.items():
        path = write(confdir, text, re.sub(r"\W+", "-", name) + ".yml")
        tool, output = promtool_accepts(path)
        ours = parser_accepts(path)
        if not tool == ours == good:
            disagree.append((name, good, tool, ours, output))
    assert disagree == []


def test_known_differences_from_promtool(confdir: Path) -> None:
    texts = {name: text for name, text, _ in BAD}
    for name in STRICTER:
        path = write(confdir, texts[name], "stricter.yml")
        assert promtool_accepts(path)[0] and not parser_accepts(path), name
    for name, text in NEWER.items():
        path = write(confdir, text, "newer.yml")
        accepted, output = promtool_accepts(path)
        assert not accepted and f"field {name} not found" in output
        assert parser_accepts(path), name


def referenced_files(example: Path) -> list[str]:
    tls = (yaml.safe_load(example.read_text()) or {}).get("tls_server_config") or {}
    return [tls[k] for k in ("cert_file", "key_file", "client_ca_file") if tls.get(k)]


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_files_pass_promtool_and_the_parser(example: Path, tmp_path: Path, pki: Path) -> None:
    """The examples with real files at the paths they name (relative, next to the file)."""
    path = tmp_path / example.name
    shutil.copy(example, path)
    names = referenced_files(example)
    assert names, "an example without TLS"
    sources = {"crt": pki / "server.pem", "key": pki / "server-key.pem"}
    for name in names:
        source = pki / "ca.pem" if "ca" in name else sources[name.rsplit(".", 1)[-1]]
        shutil.copy(source, tmp_path / name)
    accepted, output = promtool_accepts(path)
    assert accepted, output
    assert output.strip() == f"{example.name} SUCCESS"
    config = load_web_config(path)
    assert config.tls
    for user, hashed in config.users.items():
        assert bcrypt.checkpw(b"change-me", hashed), user  # the documented example password


def test_examples_exist() -> None:
    assert [e.name for e in EXAMPLES] == ["web-config.example.yml", "web-config.mtls.example.yml"]


# --- pieces ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hashed", "ok"),
    [
        (HASH, True),
        ("$2y$" + HASH[4:], True),
        ("$2a$" + HASH[4:], True),
        (HASH[:-1], False),
        ("$3a$" + HASH[4:], False),
        ("$2b$32$" + HASH[7:], False),
        ("", False),
    ],
)
def test_bcrypt_problem(hashed: str, ok: bool) -> None:
    assert (bcrypt_problem(hashed) is None) is ok


@pytest.mark.parametrize(
    ("value", "seconds"), [(0, 0.0), ("0", 0.0), ("1s", 1.0), ("100ms", 0.1), ("1m30s", 90.0), ("1.5h", 5400.0)]
)
def test_go_durations(value: Any, seconds: float) -> None:
    assert parse_go_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [5, "5", "1d", "s", "-1s", "1s ms", True, ""])
def test_bad_go_durations(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(value)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (basic("alice", "pw:with:colons"), (b"alice", b"pw:with:colons")),
        ("basic " + base64.b64encode(b"a:").decode(), (b"a", b"")),
        ("Bearer xyz", None),
        ("Basic !!!", None),
        ("Basic " + base64.b64encode(b"no-colon").decode(), None),
        ("Basic YWxpY2U6cHc", None),  # missing padding: Go's StdEncoding refuses it too
        (None, None),
    ],
)
def test_parse_basic_auth(header: str | None, expected: tuple[bytes, bytes] | None) -> None:
    assert parse_basic_auth(header) == expected


class CountingCheckpw:
    def __init__(self) -> None:
        self.hashes: list[bytes] = []
        self._real = bcrypt.checkpw

    def __call__(self, password: bytes, hashed: bytes) -> bool:
        self.hashes.append(hashed)
        return bool(self._real(password, hashed))


def test_basic_auth_checks_caches_and_hides_unknown_users(monkeypatch: pytest.MonkeyPatch) -> None:
    counting = CountingCheckpw()
    monkeypatch.setattr(webconfig.bcrypt, "checkpw", counting)
    users = {b"alice": HASH.encode()}
    auth = BasicAuth()
    assert auth.check(users, basic("alice", "s3cret")) == (True, "alice")
    assert auth.check(users, basic("alice", "s3cret")) == (True, "alice")
    assert len(counting.hashes) == 1  # the second time from the cache
    assert auth.check(users, basic("alice", "wrong")) == (False, "alice")
    assert auth.check(users, basic("mallory", "s3cret")) == (False, "mallory")
    assert auth.check(users, None) == (False, "")
    assert len(counting.hashes) == 3
    dummy = counting.hashes[-1]
    assert dummy not in users.values() and dummy[:7] == HASH.encode()[:7]  # same cost as the real hashes
    assert auth.check({b"u": ("$2b$04$" + "a" * 53).encode()}, basic("u", "x" * 100)) == (False, "u")


def test_basic_auth_cache_is_bounded_and_guesses_never_evict_a_success(monkeypatch: pytest.MonkeyPatch) -> None:
    counting = CountingCheckpw()
    monkeypatch.setattr(webconfig.bcrypt, "checkpw", counting)
    auth = BasicAuth()
    users = {b"alice": HASH.encode()}
    assert auth.check(users, basic("alice", "s3cret")) == (True, "alice")
    for i in range(BasicAuth.CACHE_SIZE + 20):
        auth.check(users, basic("alice", f"guess{i}"))
    assert len(auth._failures) == BasicAuth.CACHE_SIZE and len(auth._successes) == 1
    checks = len(counting.hashes)
    assert auth.check(users, basic("alice", "s3cret")) == (True, "alice")
    assert len(counting.hashes) == checks  # still cached after 120 guesses: no bcrypt for the real client


def test_basic_auth_asks_before_each_bcrypt_check_only(monkeypatch: pytest.MonkeyPatch) -> None:
    counting = CountingCheckpw()
    monkeypatch.setattr(webconfig.bcrypt, "checkpw", counting)
    auth = BasicAuth()
    users = {b"alice": HASH.encode()}
    asked: list[bool] = []

    def refuse() -> bool:
        asked.append(False)
        return False

    assert auth.verify(users, basic("alice", "s3cret"), refuse) == (AuthVerdict.LIMITED, "alice")
    assert auth.verify(users, None, refuse) == (AuthVerdict.DENIED, "")  # nothing to check: not asked
    assert len(asked) == 1 and counting.hashes == []
    assert auth.verify(users, basic("alice", "s3cret"), lambda: True) == (AuthVerdict.OK, "alice")
    assert auth.verify(users, basic("alice", "wrong"), lambda: True) == (AuthVerdict.DENIED, "alice")
    assert auth.verify(users, basic("alice", "s3cret"), refuse) == (AuthVerdict.OK, "alice")  # cached
    assert auth.verify(users, basic("alice", "wrong"), refuse) == (AuthVerdict.DENIED, "alice")  # cached
    assert len(asked) == 1 and len(counting.hashes) == 2


def test_client_rate_limiter_keeps_a_bucket_per_client_and_forgets_the_oldest() -> None:
    now = [100.0]
    limiter = ClientRateLimiter(clock=lambda: now[0])
    assert [limiter.allow("10.0.0.1", 60.0, 2) for _ in range(3)] == [True, True, False]
    assert limiter.allow("10.0.0.2", 60.0, 2)  # another client: its own bucket
    assert all(limiter.allow("10.0.0.1", 0.0, 0) for _ in range(5))  # interval 0: off
    for i in range(ClientRateLimiter.MAX_CLIENTS + 5):
        limiter.allow(f"192.0.2.{i}", 60.0, 2)
    assert len(limiter._buckets) == ClientRateLimiter.MAX_CLIENTS


def test_rate_limiter_is_a_token_bucket() -> None:
    now = [100.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert [limiter.allow(1.0, 3) for _ in range(4)] == [True, True, True, False]
    now[0] += 1.0
    assert [limiter.allow(1.0, 3) for _ in range(2)] == [True, False]
    assert all(limiter.allow(0.0, 0) for _ in range(10))  # interval 0: off
    assert [limiter.allow(0.5, 1) for _ in range(2)] == [True, False]  # new settings start full


# --- reloading ---------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def users_file(path: Path, hashed: str, extra: str = "") -> None:
    path.write_text(TLS + f"basic_auth_users:\n  alice: '{hashed}'\n" + extra)


def test_reloader_rereads_changes_at_most_once_per_interval(confdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = confdir / "web.yml"
    users_file(path, HASH)
    clock = Clock()
    reloader = WebConfigReloader(path, interval=1.0, clock=clock)
    first = reloader.current()
    users_file(path, OTHER_HASH)
    assert reloader.current() is first  # not checked again within the interval
    clock.now += 1.0
    assert reloader.current().users[b"alice"] == OTHER_HASH.encode()
    assert reloader.reloads == 1

    caplog.set_level(logging.ERROR, logger="exporter.webconfig")
    good = reloader.current()
    users_file(path, "broken")
    for _ in range(3):
        clock.now += 1.0
        assert reloader.current() is good  # the last good configuration stays
    assert not reloader.last_reload_ok
    errors = [r.getMessage() for r in caplog.records]
    assert errors == [
        f"web config reload failed, keeping the previous configuration: {path}: 1 problem:\n"
        "  basic_auth_users.alice (line 5): not a bcrypt hash: too short (make one with: htpasswd -nBC 10 '' | "
        "tr -d ':\\n')"
    ]  # once per broken version, not once per check
    users_file(path, HASH)
    clock.now += 1.0
    assert reloader.current().users[b"alice"] == HASH.encode() and reloader.last_reload_ok


def test_reloader_follows_certificate_renewal_and_refuses_dropping_tls(confdir: Path, pki: Path) -> None:
    path = confdir / "web.yml"
    users_file(path, HASH)
    clock = Clock()
    reloader = WebConfigReloader(path, interval=0.0, clock=clock)
    before = reloader.current()
    assert reloader.current() is before  # nothing changed
    shutil.copy(pki / "other.pem", confdir / "server.pem")
    shutil.copy(pki / "other-key.pem", confdir / "server-key.pem")
    after = reloader.current()
    assert after is not before and reloader.reloads == 1
    path.write_text(f"basic_auth_users:\n  alice: '{HASH}'\n")  # valid, but would turn HTTPS into HTTP
    assert reloader.current() is after and not reloader.last_reload_ok


def test_reloader_refuses_an_invalid_file_at_start(confdir: Path) -> None:
    path = write(confdir, "nope: 1\n")
    with pytest.raises(ConfigError, match=r"nope \(line 1\): unknown key"):
        WebConfigReloader(path)


# --- command line --------------------------------------------------------------------------------------


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args], capture_output=True, text=True, check=False, timeout=60, cwd=cwd
    )


def test_validate_config_checks_the_web_config_file(confdir: Path) -> None:
    web = write(confdir, TLS + "  client_auth_type: RequireAnyClientCert\n  client_ca_file: ca.pem\n")
    main = write(confdir, f"web:\n  config_file: {web}\n", "mailflow.yml")
    good = run_cli("validate-config", "--config.file", str(main))
    assert good.returncode == 0, good.stderr
    assert f"{web}: OK (tls: on; client auth: RequireAnyClientCert; basic auth users: 0)" in good.stdout
    assert "note: client_auth_type RequireAnyClientCert: Python's ssl module cannot require" in good.stdout

    bad = write(confdir, TLS + "  client_auth_type: Nope\n", "bad.yml")
    result = run_cli("validate-config", "--config.file", str(main), "--web.config.file", str(bad))  # the flag wins
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"configuration error: web.config_file (--web.config.file): {bad}: 1 problem:\n"
        "  tls_server_config.client_auth_type (line 4): unknown client_auth_type 'Nope'"
    )


def test_serve_refuses_to_start_with_an_invalid_web_config(confdir: Path) -> None:
    web = write(confdir, f"basic_auth_users:\n  alice: '{HASH}'\n  bob: plain-text\n")
    main = write(confdir, "exchange:\n  servers: [{name: EX01}]\n", "mailflow.yml")
    result = run_cli("serve", "--config.file", str(main), "--web.config.file", str(web))
    assert result.returncode == 2
    assert "basic_auth_users.bob (line 3): not a bcrypt hash: too short" in result.stderr
    assert "starting version" not in result.stderr


def test_flag_wins_over_the_settings_key(confdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    main = write(confdir, "web:\n  config_file: from-settings.yml\n", "mailflow.yml")
    monkeypatch.delenv("MAILFLOW_WEB__CONFIG_FILE", raising=False)
    flag = build_parser().parse_args(["serve", "--config.file", str(main), "--web.config.file", "flag.yml"])
    assert _load(main).web.config_file == Path("from-settings.yml")
    assert apply_flags(_load(main), flag).web.config_file == Path("flag.yml")
    monkeypatch.setenv("MAILFLOW_WEB__CONFIG_FILE", "env.yml")
    assert _load(main).web.config_file == Path("env.yml")
    assert apply_flags(_load(main), flag).web.config_file == Path("flag.yml")  # the flag wins over both
