"""The secured endpoint over real sockets: HTTPS with basic auth, client certificates (missing, expired,
untrusted, wrong SAN), TLS versions, reloading the web config file without a restart, a slow client, the
rate limit, the real ``serve`` command, and a real Prometheus scraping over HTTPS with basic auth and mTLS."""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml
from cryptography import x509

from exporter.healthcheck import Health, listen_address
from exporter.healthcheck import check as healthcheck
from exporter.metrics import MailflowCollector, build_registry
from exporter.pki import ClientCert, create_ca, issue_client_certificate, issue_server_certificate
from exporter.service import Service
from exporter.store import SnapshotStore
from exporter.web import WebApp, WebServer
from tests.integration.conftest import PASSWORD as SIM_PASSWORD
from tests.integration.conftest import USER as SIM_USER
from tests.integration.conftest import SimFactory, free_port, settings_for, start_prometheus

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PASSWORD = "correct horse battery staple"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
NEW_PASSWORD = "rotated-Pa55"
NEW_HASH = bcrypt.hashpw(NEW_PASSWORD.encode(), bcrypt.gensalt(4)).decode()


@dataclass(frozen=True)
class Pki:
    dir: Path
    ca_file: Path
    client: ClientCert
    expired: ClientCert
    untrusted: ClientCert  # from another CA
    scraper: ClientCert  # SAN prometheus.example


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("web-tls")
    ca = create_ca(directory)
    issue_server_certificate(ca, directory, ["localhost"])  # server.pem (chain) and server-key.pem
    issue_server_certificate(ca, directory, ["localhost"], stem="renewed")
    other = create_ca(directory / "other", common_name="someone else's CA")
    return Pki(
        directory,
        ca.ca_file,
        issue_client_certificate(ca, directory, "client"),
        issue_client_certificate(ca, directory, "expired", expired=True),
        issue_client_certificate(other, directory, "untrusted"),
        issue_client_certificate(ca, directory, "scraper", sans=("prometheus.example",)),
    )


def web_config(pki: Pki, directory: Path, **tls: Any) -> dict[str, Any]:
    """A config with server certificate paths relative to ``directory`` (the files are copied there)."""
    for name in ("server.pem", "server-key.pem", "renewed.pem", "renewed-key.pem", "ca.pem"):
        shutil.copy(pki.dir / name, directory / name)
    return {"tls_server_config": {"cert_file": "server.pem", "key_file": "server-key.pem", **tls}}


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


class Ready:
    def __call__(self) -> tuple[bool, str]:
        return True, "Ready"


Serve = Callable[..., WebServer]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start a real WebServer (the app as in production, on 127.0.0.1:0) with a web config file."""
    started: list[WebServer] = []

    def start(config_file: Path, **kwargs: Any) -> WebServer:
        store = SnapshotStore()
        app = WebApp(build_registry(MailflowCollector(store, [], 3.0)), store, "/metrics", "https://x.invalid", Ready())
        server = WebServer(app, "127.0.0.1:0", config_file, **kwargs)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def client_context(pki: Pki, cert: ClientCert | None = None, **versions: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    if cert is not None:
        ctx.load_cert_chain(str(cert.cert_file), str(cert.key_file))
    for attr, value in versions.items():
        setattr(ctx, attr, value)
    return ctx


def get(
    port: int, path: str, ctx: ssl.SSLContext, auth: tuple[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=5)
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read().decode()
    finally:
        conn.close()


def refused(port: int, ctx: ssl.SSLContext) -> str:
    """Connect, handshake and read without sending anything: what the server's refusal looks like to a client
    (the alert is read cleanly because no unread request data makes the server's close a reset)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost") as conn:
                data = conn.recv(1)
        except (ssl.SSLError, OSError) as exc:
            return str(exc)
    return f"closed without an alert (read {data!r})"


# --- basic auth over HTTPS ---------------------------------------------------------------------------


def test_https_with_basic_auth(pki: Pki, tmp_path: Path, serve: Serve) -> None:
    config = web_config(pki, tmp_path)
    config["basic_auth_users"] = {"prometheus": HASH}
    config["http_server_config"] = {"headers": {"X-Frame-Options": "deny", "Strict-Transport-Security": "max-age=60"}}
    server = serve(write_config(tmp_path / "web.yml", config))
    assert server.scheme == "https"
    ctx = client_context(pki)

    status, headers, body = get(server.port, "/metrics", ctx, ("prometheus", PASSWORD))
    assert status == 200 and "process_cpu_seconds_total" in body
    assert headers["X-Frame-Options"] == "deny" and headers["Strict-Transport-Security"] == "max-age=60"
    for auth in [("prometheus", "wrong"), None, ("nobody", PASSWORD), ("prometheus", "")]:
        status, headers, body = get(server.port, "/metrics", ctx, auth)
        assert (status, headers.get("WWW-Authenticate"), body) == (401, "Basic", "Unauthorized\n"), auth
        assert headers["X-Frame-Options"] == "deny"  # the configured headers go on refusals too
    for path in ("/", "/-/healthy", "/-/ready", "/nope"):  # every path, as in the exporter-toolkit
        assert get(server.port, path, ctx)[0] == 401, path
    assert get(server.port, "/-/healthy", ctx, ("prometheus", PASSWORD))[0] == 200

    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:  # plain HTTP to the TLS port
        raw.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        try:
            answer = raw.recv(65536)
        except ConnectionResetError:
            answer = b""
        assert b"process_cpu_seconds_total" not in answer


def test_untrusted_server_certificate_is_refused_by_clients(pki: Pki, tmp_path: Path, serve: Serve) -> None:
    server = serve(write_config(tmp_path / "web.yml", web_config(pki, tmp_path)))
    assert "certificate verify failed" in refused(server.port, ssl.create_default_context())
    assert get(server.port, "/-/healthy", client_context(pki))[0] == 200  # no users: no auth


# --- client certificates -----------------------------------------------------------------------------


def test_require_and_verify_client_cert(pki: Pki, tmp_path: Path, serve: Serve) -> None:
    config = web_config(pki, tmp_path, client_auth_type="RequireAndVerifyClientCert", client_ca_file="ca.pem")
    server = serve(write_config(tmp_path / "web.yml", config))
    assert "alert certificate required" in refused(server.port, client_context(pki))
    assert "alert certificate expired" in refused(server.port, client_context(pki, pki.expired))
    assert "alert unknown ca" in refused(server.port, client_context(pki, pki.untrusted))
    status, _, body = get(server.port, "/metrics", client_context(pki, pki.client))
    assert status == 200 and "process_cpu_seconds_total" in body
    # over TLS 1.2 too (the certificate is checked inside the handshake there)
    tls12 = {"maximum_version": ssl.TLSVersion.TLSv1_2}
    assert "alert handshake failure" in refused(server.port, client_context(pki, **tls12))
    assert "alert certificate expired" in refused(server.port, client_context(pki, pki.expired, **tls12))
    assert get(server.port, "/metrics", client_context(pki, pki.client, **tls12))[0] == 200


def test_verify_client_cert_if_given(pki: Pki, tmp_path: Path, serve: Serve) -> None:
    config = web_config(pki, tmp_path, client_auth_type="VerifyClientCertIfGiven", client_ca_file="ca.pem")
    server = serve(write_config(tmp_path / "web.yml", config))
    assert get(server.port, "/metrics", client_context(pki))[0] == 200
    assert get(server.port, "/metrics", client_context(pki, pki.client))[0] == 200
    assert "alert certificate expired" in refused(server.port, client_context(pki, pki.expired))


def test_require_any_client_cert_still_needs_one(pki: Pki, tmp_path: Path, serve: Serve) -> None:
    config = web_config(pki, tmp_path, client_auth_type="RequireAnyClientCert", client_ca_file="ca.pem")
    server = serve(write_config(tmp_path / "web.yml", config))
    assert "alert certificate required" in refused(server.port, client_context(pki))
    assert get(server.port, "/metrics", client_context(pki, pki.client))[0] == 200


def test_client_allowed_sans(pki: Pki, tmp_path: Path, serve: Serve) -> None:
    config = web_config(
        pki,
        tmp_path,
        client_auth_type="RequireAndVerifyClientCert",
        client_ca_file="ca.pem",
        client_allowed_sans=["prometheus.example"],
    )
    server = serve(write_config(tmp_path / "web.yml", config))
    assert get(server.port, "/metrics", client_context(pki, pki.scraper))[0] == 200
    outcome = refused(server.port, client_context(pki, pki.client))  # trusted, but without the SAN
    assert "closed without an alert (read b'')" in outcome or "EOF" in outcome, outcome


# --- TLS versions --------------------------------------------------------------------------------------


def test_min_version_tls13_refuses_a_tls12_client(pki: Pki, tmp_path: Path, serve: Serve) -> None:
    server = serve(write_config(tmp_path / "web.yml", web_config(pki, tmp_path, min_version="TLS13")))
    tls12_only = client_context(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
    assert "alert protocol version" in refused(server.port, tls12_only)
    assert get(server.port, "/-/healthy", client_context(pki))[0] == 200


def test_max_version_tls12_refuses_a_tls13_client(pki: Pki, tmp_path: Path, serve: Serve) -> None:
    server = serve(write_config(tmp_path / "web.yml", web_config(pki, tmp_path, max_version="TLS12")))
    tls13_only = client_context(pki, minimum_version=ssl.TLSVersion.TLSv1_3)
    assert "alert protocol version" in refused(server.port, tls13_only)
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        client_context(pki).wrap_socket(raw, server_hostname="localhost") as conn,
    ):
        assert conn.version() == "TLSv1.2"


def request(port: int, ctx: ssl.SSLContext, auth: tuple[str, str] | None) -> int:
    """The status of GET /metrics on 127.0.0.1:``port`` over TLS (the certificate names localhost)."""
    return get(port, "/metrics", ctx, auth)[0]


def test_every_listen_address_serves_with_the_same_tls_and_auth(pki: Pki, tmp_path: Path) -> None:
    """``--web.listen-address`` given twice: both listeners answer over TLS with the same certificate and
    basic auth users, and an edit of the web config file reaches both (as with the exporter-toolkit)."""
    path = tmp_path / "web.yml"
    config = web_config(pki, tmp_path)
    config["basic_auth_users"] = {"prometheus": HASH}
    store = SnapshotStore()
    app = WebApp(build_registry(MailflowCollector(store, [], 3.0)), store, "/metrics", "https://x.invalid", Ready())
    server = WebServer(app, ["127.0.0.1:0", "127.0.0.1:0"], write_config(path, config), reload_interval=0.0)
    server.start()
    try:
        first, second = server.ports
        assert first != second and server.addresses == [f"127.0.0.1:{first}", f"127.0.0.1:{second}"]
        assert server.scheme == "https"
        ctx = client_context(pki)
        for port in (first, second):
            assert (request(port, ctx, ("prometheus", PASSWORD)), request(port, ctx, None)) == (200, 401)
        config["basic_auth_users"] = {"prometheus": NEW_HASH}
        write_config(path, config)
        for port in (first, second):
            assert request(port, ctx, ("prometheus", NEW_PASSWORD)) == 200
            assert request(port, ctx, ("prometheus", PASSWORD)) == 401
    finally:
        server.stop()


# --- reloading -----------------------------------------------------------------------------------------


def test_changes_apply_without_restart_and_invalid_edits_keep_the_last_good(
    pki: Pki, tmp_path: Path, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "web.yml"
    config = web_config(pki, tmp_path)
    config["basic_auth_users"] = {"prometheus": HASH}
    server = serve(write_config(path, config), reload_interval=0.0)
    ctx = client_context(pki)
    assert get(server.port, "/metrics", ctx, ("prometheus", PASSWORD))[0] == 200

    config["basic_auth_users"] = {"prometheus": NEW_HASH}
    write_config(path, config)
    assert get(server.port, "/metrics", ctx, ("prometheus", NEW_PASSWORD))[0] == 200
    assert get(server.port, "/metrics", ctx, ("prometheus", PASSWORD))[0] == 401

    path.write_text(path.read_text().replace("basic_auth_users:", "basic_auth_user:"))  # a typo
    assert get(server.port, "/metrics", ctx, ("prometheus", NEW_PASSWORD))[0] == 200
    assert get(server.port, "/metrics", ctx)[0] == 401  # still protected
    assert any(
        "web config reload failed, keeping the previous configuration" in r.getMessage()
        and "basic_auth_user (line 2): unknown key" in r.getMessage()
        for r in caplog.records
    )

    # Certificate renewal: the same file names, new contents; new connections get the new certificate.
    def serial() -> int:
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as conn,
        ):
            der = conn.getpeercert(binary_form=True)
        assert der is not None
        return int(x509.load_der_x509_certificate(der).serial_number)

    write_config(path, config)  # fixed again
    old = serial()
    shutil.copy(tmp_path / "renewed.pem", tmp_path / "server.pem")
    shutil.copy(tmp_path / "renewed-key.pem", tmp_path / "server-key.pem")
    assert serial() != old
    assert get(server.port, "/metrics", ctx, ("prometheus", NEW_PASSWORD))[0] == 200


# --- robustness ----------------------------------------------------------------------------------------


def test_a_silent_client_blocks_nobody_and_is_dropped(pki: Pki, tmp_path: Path, serve: Serve) -> None:
    server = serve(write_config(tmp_path / "web.yml", web_config(pki, tmp_path)), handshake_timeout=1.0)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as silent:
        started = time.monotonic()
        assert get(server.port, "/-/healthy", client_context(pki))[0] == 200  # while the silent one waits
        assert time.monotonic() - started < 1.0
        assert silent.recv(1) == b""  # dropped after the handshake timeout
        assert 0.8 < time.monotonic() - started < 4.0


def test_rate_limit_answers_429(pki: Pki, tmp_path: Path, serve: Serve) -> None:
    config = web_config(pki, tmp_path)
    config["rate_limit"] = {"interval": "1m", "burst": 2}
    server = serve(write_config(tmp_path / "web.yml", config))
    ctx = client_context(pki)
    assert [get(server.port, "/-/healthy", ctx)[0] for _ in range(3)] == [200, 200, 429]


# --- the real command and a real Prometheus ------------------------------------------------------------


def test_serve_command_with_web_config_flag(pki: Pki, tmp_path: Path, sim_factory: SimFactory) -> None:
    sim, scenario = sim_factory()
    port = free_port()
    web = web_config(pki, tmp_path)
    web["basic_auth_users"] = {"prometheus": HASH}
    write_config(tmp_path / "web.yml", web)
    (tmp_path / "pw").write_text(SIM_PASSWORD)
    servers = [
        {"name": s.name, "host": sim.endpoint(s.name)[0], "port": sim.endpoint(s.name)[1]} for s in scenario.servers
    ]
    main = write_config(
        tmp_path / "mailflow.yml",
        {
            "exchange": {
                "defaults": {"auth": "basic", "username": SIM_USER, "password_file": str(tmp_path / "pw"),
                             "allow_insecure_basic": True, "call_timeout": "5s"},
                "servers": servers,
            },
            "dns": {"enabled": False},
            "scheduler": {"first_run_spread": "100ms", "jitter": "100ms"},
            "state_dir": str(tmp_path / "state"),
            "web": {"listen_address": f"127.0.0.1:{port}", "config_file": "ignored-the-flag-wins.yml"},
        },
    )  # fmt: skip
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            "serve",
            "--config",
            str(main),
            "--web.config.file",
            str(tmp_path / "web.yml"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ctx = client_context(pki)
        deadline = time.monotonic() + 20
        while True:
            try:
                status, _, body = get(port, "/metrics", ctx, ("prometheus", PASSWORD))
                if status == 200 and 'mailflow_collector_up{collector="queues",target="EX01"} 1.0' in body:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the exporter never served metrics over HTTPS"
            time.sleep(0.2)
        assert get(port, "/metrics", ctx, ("prometheus", "nope"))[0] == 401
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert f"listening address=127.0.0.1:{port} path=/metrics scheme=https" in err
    assert PASSWORD not in err


def test_real_prometheus_scrapes_over_https_with_basic_auth_and_client_cert(
    pki: Pki, tmp_path: Path, sim_factory: SimFactory
) -> None:
    sim, scenario = sim_factory()
    web = web_config(pki, tmp_path, client_auth_type="RequireAndVerifyClientCert", client_ca_file="ca.pem")
    web["basic_auth_users"] = {"prometheus": HASH}
    web_file = write_config(tmp_path / "w.yml", web)
    settings = settings_for(sim, scenario, overrides={"web": {"config_file": str(web_file)}})
    service = Service(settings)
    service.poll_all()
    service.start()
    assert service.web is not None and service.web.scheme == "https"
    target = f"127.0.0.1:{service.web.port}"
    tls = {"ca_file": str(pki.ca_file), "cert_file": str(pki.client.cert_file), "key_file": str(pki.client.key_file)}
    good = {"username": "prometheus", "password": PASSWORD}
    jobs: list[dict[str, Any]] = [
        {"job_name": "mailflow", "basic_auth": good, "tls_config": tls},
        {"job_name": "wrong-password", "basic_auth": {**good, "password": "x"}, "tls_config": tls},
        {"job_name": "no-client-cert", "basic_auth": good, "tls_config": {"ca_file": str(pki.ca_file)}},
    ]
    for job in jobs:
        job.update(scheme="https", static_configs=[{"targets": [target]}])
    config = write_config(
        tmp_path / "prometheus.yml",
        {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"}, "scrape_configs": jobs},
    )
    proc, prom_port = start_prometheus(config, tmp_path)

    def up() -> dict[str, str]:
        url = f"http://127.0.0.1:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": "up"})
        with urllib.request.urlopen(url, timeout=5) as resp:
            return {r["metric"]["job"]: r["value"][1] for r in json.load(resp)["data"]["result"]}

    try:
        deadline = time.monotonic() + 30
        seen: dict[str, str] = {}
        while time.monotonic() < deadline:
            try:
                seen = up()
            except OSError:
                seen = {}
            if len(seen) == 3:
                break
            time.sleep(0.3)
        assert seen == {"mailflow": "1", "wrong-password": "0", "no-client-cert": "0"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        service.stop()


# --- the container health check follows the endpoint ------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "detail"),
    [
        ("plain", "healthy (http)"),
        ("plain+auth", "alive (http, behind basic auth)"),
        ("tls", "healthy (https)"),
        ("tls+auth", "alive (https, behind basic auth)"),
        ("tls+client-cert", "alive (https, requires a client certificate)"),
        ("tls1.2+client-cert", "alive (https, requires a client certificate)"),
    ],
)
def test_healthcheck_follows_the_web_config(pki: Pki, tmp_path: Path, serve: Serve, setup: str, detail: str) -> None:
    if setup.startswith("plain"):
        config: dict[str, Any] = {}
    elif "client-cert" in setup:
        extra = {"max_version": "TLS12"} if setup.startswith("tls1.2") else {}
        config = web_config(
            pki, tmp_path, client_auth_type="RequireAndVerifyClientCert", client_ca_file="ca.pem", **extra
        )
    else:
        config = web_config(pki, tmp_path)
    if setup.endswith("+auth"):
        config["basic_auth_users"] = {"prometheus": HASH}
    server = serve(write_config(tmp_path / "web.yml", config))
    for _ in range(5):  # TLS 1.3's post-handshake refusal races the request: every outcome must be "alive"
        result = healthcheck(f"127.0.0.1:{server.port}")
        assert result.ok, result
        if "client-cert" in setup and "closed the request after the handshake" in result.detail:
            continue
        assert result.detail == detail


def test_healthcheck_reports_an_unhealthy_or_absent_exporter(pki: Pki, tmp_path: Path) -> None:
    store = SnapshotStore()
    app = WebApp(
        build_registry(MailflowCollector(store, [], 3.0)),
        store,
        "/metrics",
        "https://x.invalid",
        Ready(),
        healthy=lambda: (False, "scheduler not running"),
    )
    server = WebServer(app, "127.0.0.1:0", write_config(tmp_path / "web.yml", web_config(pki, tmp_path)))
    server.start()
    try:
        result = healthcheck(f"127.0.0.1:{server.port}")
        assert result == Health(False, "unhealthy: /-/healthy answered HTTP 503 (https)")
    finally:
        server.stop()
    gone = healthcheck(f"127.0.0.1:{server.port}", timeout=2)
    assert not gone.ok and gone.detail.startswith("unreachable: 127.0.0.1:")
    assert healthcheck("nonsense") == Health(False, "listen address 'nonsense' is not host:port")


def test_healthcheck_command_exit_codes(pki: Pki, tmp_path: Path, serve: Serve) -> None:
    config = web_config(pki, tmp_path)
    config["basic_auth_users"] = {"prometheus": HASH}
    server = serve(write_config(tmp_path / "web.yml", config))
    env = {**os.environ, "MAILFLOW_WEB__LISTEN_ADDRESS": f":{server.port}"}  # as the container sets it
    ok = subprocess.run(
        [sys.executable, "-m", "exporter", "healthcheck"], capture_output=True, text=True, env=env, timeout=60
    )
    assert (ok.returncode, ok.stdout.strip()) == (0, "alive (https, behind basic auth)")
    port = free_port()
    down = subprocess.run(
        [sys.executable, "-m", "exporter", "healthcheck", "--address", f"127.0.0.1:{port}", "--timeout", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 1 and "unreachable" in down.stderr
    # The port from the configuration file, as the image's HEALTHCHECK passes it (no variable set).
    mailflow_yml = tmp_path / "mailflow.yml"
    mailflow_yml.write_text(f"web:\n  listen_address: '0.0.0.0:{server.port}'\n")
    clean = {k: v for k, v in os.environ.items() if k != "MAILFLOW_WEB__LISTEN_ADDRESS"}
    by_config = subprocess.run(
        [sys.executable, "-m", "exporter", "healthcheck", "--config", str(mailflow_yml)],
        capture_output=True,
        text=True,
        env=clean,
        timeout=60,
    )
    assert (by_config.returncode, by_config.stdout.strip()) == (0, "alive (https, behind basic auth)")


def test_healthcheck_listen_address_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILFLOW_WEB__LISTEN_ADDRESS", raising=False)
    config = tmp_path / "mailflow.yml"
    config.write_text("web:\n  listen_address: ':9999'\n")
    assert listen_address(config) == ":9999"
    assert listen_address(None) == "127.0.0.1:10049"
    assert listen_address(tmp_path / "missing.yml") == "127.0.0.1:10049"
    config.write_text("web: [not, a, mapping\n")
    assert listen_address(config) == "127.0.0.1:10049"  # the exporter reports its broken config itself
    monkeypatch.setenv("MAILFLOW_WEB__LISTEN_ADDRESS", "127.0.0.1:8080")
    assert listen_address(config) == "127.0.0.1:8080"  # the variable wins, as in the exporter


def test_healthcheck_calls_a_hung_tls_server_unhealthy(pki: Pki) -> None:
    """A server that completes the TLS handshake and never answers is hung, not alive."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(pki.dir / "server.pem"), str(pki.dir / "server-key.pem"))
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve_forever() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                held.append(context.wrap_socket(conn, server_side=True))  # handshake, then silence
            except (ssl.SSLError, OSError):
                conn.close()  # the plain-HTTP attempt

    thread = threading.Thread(target=serve_forever, daemon=True)
    thread.start()
    try:
        result = healthcheck(f"127.0.0.1:{listener.getsockname()[1]}", timeout=2)
        assert result == Health(False, "unhealthy: no answer within 2 s after the TLS handshake")
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()
