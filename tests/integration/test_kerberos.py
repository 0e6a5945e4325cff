"""Kerberos end to end: a real MIT KDC on loopback, the simulator accepting tickets, the exporter polling.

The realm CONTOSO.SIM (the test organisation's domain upper-cased, as Active Directory names it) runs in
``krb5kdc`` from a temp directory (``tests/kdc/mitkdc.py``). The exporter connects to ``localhost``
(it resolves to 127.0.0.1 without touching /etc/hosts), so the service principals are
``HTTP/localhost`` and ``WSMAN/localhost``; krb5.conf turns off DNS canonicalisation and reverse
lookups so the SPN is exactly the URL's host, as with Windows clients. The simulator's acceptor keytab
holds those two keys; ``imap/localhost`` exists in the KDC but not in that keytab (a wrong SPN the
simulator must refuse).

Basic over HTTPS without Kerberos is covered by
``test_exporter_simulator.py::test_https_with_certificate_validation``; here Basic and Kerberos share
one Kerberos-enabled HTTPS endpoint.
"""

from __future__ import annotations

import base64
import importlib.util
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from pypsrp.negotiate import HTTPNegotiateAuth
from pypsrp.powershell import RunspacePool
from pypsrp.wsman import WSMan

from exporter.errors import ConfigError
from exporter.service import Service
from exporter.settings import Settings, load_settings
from exporter.simulator import Scenario, Simulator
from tests.integration.conftest import PASSWORD, USER, only_collectors, run_cmdlets, settings_for, small_org
from tests.kdc.mitkdc import MitKdc, find_kdc
from tests.unit.test_session_helpers import SECRET, leaks

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

REALM = "CONTOSO.SIM"
PRINCIPAL = "svc-mailflow@CONTOSO.SIM"  # the scenario user svc-mailflow@contoso.sim
INTRUDER = "intruder@CONTOSO.SIM"  # a valid principal that is no user of the organisation
HOST = "localhost"


def _require_kerberos() -> None:
    """Skip without the MIT KDC or gssapi on a developer machine; under CI (CI=true) fail instead."""
    missing = []
    if find_kdc() is None:
        missing.append("MIT Kerberos (Debian krb5-kdc krb5-admin-server krb5-user)")
    if importlib.util.find_spec("gssapi") is None:
        missing.append("gssapi (pip install -e '.[kerberos]')")
    if not missing:
        return
    message = f"{' and '.join(missing)} not installed; scripts/test.sh installs them"
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(f"{message}, and CI must run the Kerberos tests")
    pytest.skip(message)


@dataclass
class Realm:
    kdc: MitKdc
    sim_keytab: Path  # HTTP/localhost and WSMAN/localhost: the simulated servers' keys
    client_keytab: Path  # svc-mailflow's keys (exported with -norandkey: the password still works)


@pytest.fixture(scope="module")
def realm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Realm]:
    _require_kerberos()
    directory = tmp_path_factory.mktemp("kdc")
    kdc = MitKdc(directory, realm=REALM)
    with kdc:
        kdc.add_principal(PRINCIPAL, PASSWORD)
        kdc.add_principal(INTRUDER, "intruder-password")
        for spn in (f"HTTP/{HOST}", f"WSMAN/{HOST}", f"imap/{HOST}"):
            kdc.add_principal(spn)
        sim_keytab = kdc.export_keytab(directory / "sim.keytab", f"HTTP/{HOST}", f"WSMAN/{HOST}")
        client_keytab = kdc.export_keytab(directory / "client.keytab", PRINCIPAL)
        # Process-wide variables, set for this module's tests only and restored afterwards.
        with kdc.environment():
            yield Realm(kdc, sim_keytab, client_keytab)


@pytest.fixture
def krb_sim(realm: Realm) -> Iterator[Simulator]:
    sim = Simulator(Scenario.from_dict(small_org()), host="127.0.0.1", kerberos_keytab=realm.sim_keytab)
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def services() -> Iterator[list[Service]]:
    made: list[Service] = []
    yield made
    for service in made:
        service.stop()


def kerberos_settings(
    sim: Simulator,
    defaults: dict[str, Any],
    tls: bool = False,
    per_server: dict[str, dict[str, Any]] | None = None,
    default_service: bool = False,
) -> Settings:
    """Exporter settings: Kerberos to ``localhost`` for every server (``per_server`` overrides one)."""
    servers = []
    for name in ("EX01", "EX02"):
        _, port = sim.endpoint(name)
        servers.append({"name": name, "host": HOST, "port": port, **(per_server or {}).get(name, {})})
    base = {
        "auth": "kerberos",
        "username": PRINCIPAL,
        "password": None,
        "negotiate_service": "HTTP",
        "allow_insecure_basic": False,
    }
    if default_service:
        del base["negotiate_service"]
    overrides = {
        "exchange": {"defaults": {**base, **defaults}, "servers": servers},
        "collectors": only_collectors(queues={}),
    }
    return settings_for(sim, sim.scenario, tls=tls, overrides=overrides)


def poll(services: list[Service], settings: Any) -> tuple[Service, list[Any]]:
    service = Service(settings)
    services.append(service)
    return service, service.poll_all()


def up(service: Service, target: str) -> float | None:
    return service.registry.get_sample_value("mailflow_collector_up", {"collector": "queues", "target": target})


def fabrikam_messages(service: Service, server: str) -> float | None:
    labels = {
        "server": server,
        "queue_kind": "delivery",
        "delivery_type": "DnsConnectorDelivery",
        "next_hop_category": "External",
        "next_hop_domain": "fabrikam.example",
    }
    return service.registry.get_sample_value("mailflow_queue_messages", labels)


def assert_polled(service: Service, snaps: list[Any]) -> None:
    assert snaps and all(s.ok for s in snaps), [(s.target, s.reason, s.message) for s in snaps]
    for i, server in enumerate(("EX01", "EX02")):
        assert up(service, server) == 1.0
        assert fabrikam_messages(service, server) == 17 + i  # the scenario's numbers came through


# -- (a) username + password, over HTTP with message encryption ---------------------------------------


@pytest.mark.parametrize(
    ("auth", "service_class"),
    [("kerberos", None), ("negotiate", "WSMAN")],  # None: the default negotiate_service (HTTP)
)
def test_password_over_http_is_sealed(
    krb_sim: Simulator, services: list[Service], auth: str, service_class: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    chosen = {"negotiate_service": service_class} if service_class else {}
    settings = kerberos_settings(krb_sim, {"auth": auth, "password": PASSWORD, **chosen}, default_service=not chosen)
    service, snaps = poll(services, settings)
    assert_polled(service, snaps)
    stats = krb_sim.stats()
    assert stats["servers"]["EX01"]["kerberos_logons"] >= 1 and stats["servers"]["EX02"]["kerberos_logons"] >= 1
    assert stats["auth_failures"] == 0
    # Every WSMan request (shell create, receive, command...) arrived sealed, none in clear.
    assert stats["encrypted_messages"] >= stats["shells_created"] + sum(stats["commands"].values()) >= 4
    assert PASSWORD not in caplog.text
    # The same session is reused: the next poll opens no new shell and needs no new logon.
    logons, shells = stats["kerberos_logons"], stats["shells_created"]
    assert all(s.ok for s in service.poll_all())
    assert (krb_sim.stats()["kerberos_logons"], krb_sim.stats()["shells_created"]) == (logons, shells)


# -- (b) a client keytab ---------------------------------------------------------------------------------


@pytest.mark.parametrize("username", [PRINCIPAL, None], ids=["principal", "first-entry"])
def test_keytab_option(krb_sim: Simulator, services: list[Service], realm: Realm, username: str | None) -> None:
    settings = kerberos_settings(krb_sim, {"keytab": str(realm.client_keytab), "username": username})
    service, snaps = poll(services, settings)
    assert_polled(service, snaps)
    assert krb_sim.stats()["encrypted_messages"] > 0


def test_a_shell_whose_close_was_rejected_is_closed_over_a_fresh_sealed_connection(
    krb_sim: Simulator, services: list[Service]
) -> None:
    """Kerberos over HTTP seals every message with the connection's security context. A close the
    server rejected (HTTP 500) is retried after it heals on a new connection, which needs a new context:
    the exporter must start the transport afresh, or the retried close is undecryptable."""
    service, snaps = poll(services, kerberos_settings(krb_sim, {"password": PASSWORD}))
    assert_polled(service, snaps)
    opened = krb_sim.stats()["shells_open"]
    krb_sim.faults.set("EX01", "http500")
    service.poll_all()  # EX01 fails: its session is discarded and its close is rejected with the rest
    assert krb_sim.stats()["shells_open"] == opened  # the shell is still open on the server
    krb_sim.faults.clear()
    assert all(s.ok for s in service.poll_all())  # a new session on EX01, then the old shell's close again
    deadline = time.monotonic() + 20
    while krb_sim.stats()["shells_open"] != opened and time.monotonic() < deadline:
        time.sleep(0.1)
    assert krb_sim.stats()["shells_open"] == opened, krb_sim.stats()["servers"]["EX01"]


def test_client_keytab_from_environment(
    krb_sim: Simulator, services: list[Service], realm: Realm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No username, password or keytab in the configuration: MIT's default client keytab is used.
    monkeypatch.setenv("KRB5_CLIENT_KTNAME", f"FILE:{realm.client_keytab}")
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{tmp_path / 'cc'}")  # GSSAPI caches the ticket it gets here
    service, snaps = poll(services, kerberos_settings(krb_sim, {"username": None}))
    assert_polled(service, snaps)


# -- (c) a ticket cache filled by kinit -----------------------------------------------------------------


def test_ticket_cache_from_kinit(
    krb_sim: Simulator, services: list[Service], realm: Realm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ccache = f"FILE:{tmp_path / 'krb5cc'}"
    realm.kdc.kinit(PRINCIPAL, realm.client_keytab, ccache)
    monkeypatch.setenv("KRB5CCNAME", ccache)
    as_requests = realm.kdc.count("AS_REQ")
    service, snaps = poll(services, kerberos_settings(krb_sim, {}))  # username, no password, no keytab
    assert_polled(service, snaps)
    assert realm.kdc.count("AS_REQ") == as_requests  # no new logon: the cached TGT was used
    assert realm.kdc.count(f"{PRINCIPAL} for HTTP/{HOST}@{REALM}") >= 1  # a service ticket from it


def test_missing_ticket_cache_is_an_auth_error(
    krb_sim: Simulator, services: list[Service], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{tmp_path / 'never-created'}")
    _, snaps = poll(services, kerberos_settings(krb_sim, {}))
    assert {s.reason for s in snaps} == {"auth"}
    assert any("run kinit" in s.message for s in snaps), [s.message for s in snaps]


# -- (d) a wrong password: reason auth, one KDC attempt per server, then the backoff ---------------------


def test_wrong_password_backs_off_without_a_retry_storm(
    krb_sim: Simulator, services: list[Service], realm: Realm, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = tmp_path / "pw"
    secret.write_text("not-the-password")
    failed_before = realm.kdc.count("PREAUTH_FAILED")
    service = Service(kerberos_settings(krb_sim, {"password_file": str(secret)}))
    services.append(service)
    messages = []
    for _ in range(3):
        snaps = service.poll_all()
        assert {s.reason for s in snaps} == {"auth"}, [(s.target, s.reason, s.message) for s in snaps]
        messages += [s.message for s in snaps]
    # Bad logons reach the KDC (where AD counts them towards lockout) once per server at most.
    assert 1 <= realm.kdc.count("PREAUTH_FAILED") - failed_before <= 2, realm.kdc.log_text()[-2000:]
    assert any("does not match" in m for m in messages), messages
    assert any("not retrying" in m for m in messages), messages
    secret.write_text(PASSWORD)  # rotated: the backoff ends at once
    assert_polled(service, service.poll_all())
    for text in [*messages, caplog.text]:
        assert PASSWORD not in text and "not-the-password" not in text


def test_a_password_beyond_latin_1_works_with_kerberos(
    realm: Realm, services: list[Service], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Basic cannot send it (validate-config says so); Kerberos derives its keys from the UTF-8 password
    (pyspnego encodes it so, MIT's string-to-key takes those bytes), so it logs on."""
    caplog.set_level(logging.DEBUG)
    principal = realm.kdc.add_principal("svc-unicode@CONTOSO.SIM", SECRET)
    org = small_org()
    org["users"] = {**org["users"], "svc-unicode@contoso.sim": "unused-by-kerberos"}
    sim = Simulator(Scenario.from_dict(org), host="127.0.0.1", kerberos_keytab=realm.sim_keytab)
    sim.start()
    try:
        secret = tmp_path / "pw"
        secret.write_text(SECRET + "\n", encoding="utf-8")
        service, snaps = poll(services, kerberos_settings(sim, {"username": principal, "password_file": str(secret)}))
        assert_polled(service, snaps)
        assert leaks(caplog.text) == []
    finally:
        sim.stop()


# -- (e) the simulator refuses principals that are no user, and tickets for a wrong SPN ------------------


def test_simulator_rejects_unknown_principal(
    krb_sim: Simulator, services: list[Service], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="exporter.simulator")
    settings = kerberos_settings(krb_sim, {"username": INTRUDER, "password": "intruder-password"})
    _, snaps = poll(services, settings)
    assert {s.reason for s in snaps} == {"auth"}
    stats = krb_sim.stats()
    assert stats["kerberos_logons"] == 0 and stats["shells_created"] == 0
    assert stats["auth_failures"] >= 1
    assert "'intruder@CONTOSO.SIM' is not a user of this organisation" in caplog.text


def test_simulator_rejects_a_ticket_for_a_wrong_spn(
    krb_sim: Simulator, services: list[Service], realm: Realm, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="exporter.simulator")
    # imap/localhost is a real principal, so the KDC issues the ticket; the simulator holds no key for it.
    tickets = realm.kdc.count(f"for imap/{HOST}@{REALM}")
    _, snaps = poll(services, kerberos_settings(krb_sim, {"password": PASSWORD, "negotiate_service": "imap"}))
    assert {s.reason for s in snaps} == {"auth"}
    assert realm.kdc.count(f"for imap/{HOST}@{REALM}") > tickets
    stats = krb_sim.stats()
    assert stats["kerberos_logons"] == 0 and stats["shells_created"] == 0 and stats["auth_failures"] >= 1
    assert "rejected credentials" in caplog.text and "Kerberos" in caplog.text


def test_spn_unknown_to_the_kdc_is_an_auth_error(krb_sim: Simulator, services: list[Service]) -> None:
    _, snaps = poll(services, kerberos_settings(krb_sim, {"password": PASSWORD, "negotiate_service": "nosuch"}))
    assert {s.reason for s in snaps} == {"auth"}
    assert all("no such service principal" in s.message for s in snaps), [s.message for s in snaps]
    assert krb_sim.stats()["kerberos_logons"] == 0


def test_unreachable_kdc_is_a_connection_error_without_backoff(
    krb_sim: Simulator, services: list[Service], realm: Realm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A krb5.conf whose KDC port has nobody listening: no logon could be judged, so no lockout backoff.
    conf = tmp_path / "krb5.conf"
    conf.write_text(realm.kdc.krb5_conf.read_text().replace(f":{realm.kdc.port}", ":9"))
    monkeypatch.setenv("KRB5_CONFIG", str(conf))
    service, snaps = poll(services, kerberos_settings(krb_sim, {"password": PASSWORD}))
    assert {s.reason for s in snaps} == {"connection"}, [s.message for s in snaps]
    monkeypatch.setenv("KRB5_CONFIG", str(realm.kdc.krb5_conf))
    assert_polled(service, service.poll_all())  # next poll goes through at once


# -- (f) HTTPS: Kerberos (with channel binding) and Basic on one endpoint --------------------------------


def test_https_kerberos_and_basic_side_by_side(realm: Realm, services: list[Service]) -> None:
    sim = Simulator(Scenario.from_dict(small_org()), host="127.0.0.1", tls=True, kerberos_keytab=realm.sim_keytab)
    sim.start()
    try:
        basic = {"auth": "basic", "host": "127.0.0.1", "username": USER}  # EX02: Basic over HTTPS
        settings = kerberos_settings(sim, {"password": PASSWORD}, tls=True, per_server={"EX02": basic})
        service, snaps = poll(services, settings)
        assert_polled(service, snaps)
        stats = sim.stats()["servers"]
        assert stats["EX01"]["kerberos_logons"] >= 1 and stats["EX02"]["kerberos_logons"] == 0
        assert stats["EX01"]["encrypted_messages"] == 0  # TLS protects the session: no sealing
    finally:
        sim.stop()


# -- the Kerberos scheme and its session-encryption protocol (WinRM's own listener offers them) ---------


def test_kerberos_scheme_with_kerberos_session_encryption(krb_sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    # pypsrp answers whatever scheme the server offers first; make it pick "Kerberos" so its messages
    # use multipart/encrypted;protocol="application/HTTP-Kerberos-session-encrypted".
    monkeypatch.setattr(HTTPNegotiateAuth, "_check_auth_supported", staticmethod(lambda response, offers: "Kerberos"))
    _, port = krb_sim.endpoint("EX01")
    wsman = WSMan(
        HOST,
        port=port,
        ssl=False,
        path="PowerShell",
        auth="kerberos",
        username=PRINCIPAL,
        password=PASSWORD,
        negotiate_service="HTTP",
    )
    pool = RunspacePool(wsman, configuration_name="Microsoft.Exchange")
    pool.open()
    try:
        assert wsman.transport.encryption is not None
        assert wsman.transport.encryption.protocol == "application/HTTP-Kerberos-session-encrypted"
        assert len(run_cmdlets(pool, ("Get-Queue", {"Server": "EX01"})).output) == 4
    finally:
        pool.close()
    assert krb_sim.stats()["encrypted_messages"] >= 3


# -- the wire, by hand: challenge, mutual authentication, a tampered sealed body, a body without context --


def test_negotiate_handshake_and_tampered_body_by_hand(krb_sim: Simulator) -> None:
    import spnego

    from exporter.simulator.kerberos import SPNEGO_PROTOCOL, wrap_message

    _, port = krb_sim.endpoint("EX01")
    url = f"http://{HOST}:{port}/PowerShell"
    with requests.Session() as http:
        challenge = http.post(url, data=b"", timeout=5)
        assert challenge.status_code == 401
        assert "Negotiate" in challenge.headers["WWW-Authenticate"]
        assert "Basic" in challenge.headers["WWW-Authenticate"]
        client = spnego.client(
            PRINCIPAL,
            PASSWORD,
            hostname=HOST,
            service="HTTP",
            protocol="kerberos",
            options=spnego.NegotiateOptions.wrapping_winrm,
        )
        token = base64.b64encode(client.step() or b"").decode()
        answer = http.post(url, data=b"", headers={"Authorization": f"Negotiate {token}"}, timeout=5)
        assert answer.status_code == 200 and answer.content == b""
        scheme, _, mutual = answer.headers["WWW-Authenticate"].partition(" ")
        assert scheme == "Negotiate"
        client.step(base64.b64decode(mutual))
        assert client.complete  # the server proved it holds the service key
        content_type, body = wrap_message(client, b"<s:Envelope/>", SPNEGO_PROTOCOL)
        tampered = bytearray(body)
        tampered[-30] ^= 0x01  # one bit of the sealed envelope
        refused = http.post(url, data=bytes(tampered), headers={"Content-Type": content_type}, timeout=5)
        assert refused.status_code == 400
    # A sealed body on a connection that never authenticated has no context to open it.
    stranger = requests.post(url, data=body, headers={"Content-Type": content_type}, timeout=5)
    assert stranger.status_code == 401


# -- configuration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "problem"),
    [
        (
            {"auth": "basic", "tls": True, "username": "u", "keytab": "KT"},
            r"keytab \(line \d\): works with .* not basic",
        ),
        ({"auth": "kerberos", "password": "p", "keytab": "KT"}, "set only one of password, password_file and keytab"),
        ({"auth": "kerberos", "keytab": "/nonexistent/client.keytab"}, "does not exist"),
    ],
)
def test_keytab_option_is_validated(tmp_path: Path, server: dict[str, Any], problem: str) -> None:
    keytab = tmp_path / "client.keytab"
    keytab.write_bytes(b"\x05\x02")
    if server.get("keytab") == "KT":
        server = {**server, "keytab": str(keytab)}
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({"exchange": {"servers": [{"name": "EX01", **server}]}}))
    with pytest.raises(ConfigError, match=problem):
        load_settings(config, environ={})
