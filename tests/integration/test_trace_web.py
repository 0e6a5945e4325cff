"""The status page's trace form: off by default, only behind authentication, escaped, and private.

A real ``Service`` (its sessions to the simulator, its WebApp) behind a real ``WebServer`` with an
exporter-toolkit web configuration file; requests over real sockets.
"""

from __future__ import annotations

import base64
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from exporter.cli import main as cli_main
from exporter.service import Service
from exporter.simulator import Scenario, Simulator
from exporter.web import WebServer
from tests.integration.conftest import settings_for
from tests.integration.test_trace import T0, WINDOW, org, truth

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

USER, SECRET = "admin", "trace-form-Secret-1"
HASH = bcrypt.hashpw(SECRET.encode(), bcrypt.gensalt(4)).decode()


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


class Site:
    def __init__(self, base: str, service: Service, config: Path, sim: Simulator) -> None:
        self.base, self.service, self.config, self.sim = base, service, config, sim

    def request(
        self, path: str, form: dict[str, str] | None = None, auth: bool = True, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(self.base + path, data=data, headers=headers or {})
        if auth:
            token = base64.b64encode(f"{USER}:{SECRET}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, dict(resp.headers), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    scenario = Scenario.from_dict(org())
    sim = Simulator(scenario, host="127.0.0.1", tls=False, clock=lambda: T0)
    sim.start()
    config = write(tmp_path / "web.yml", {"basic_auth_users": {USER: HASH}})
    settings = settings_for(sim, scenario, overrides={"web": {"trace_enabled": True, "config_file": str(config)}})
    service = Service(settings)
    server = WebServer(service.app, "127.0.0.1:0", config, reload_interval=0.1)
    server.start()
    try:
        yield Site(f"http://127.0.0.1:{server.port}", service, config, sim)
    finally:
        server.stop()
        service.stop()
        sim.stop()


def window() -> dict[str, str]:
    def local(seconds: float) -> str:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M")

    return {"start": local(WINDOW[0]), "end": local(WINDOW[1])}


def test_the_form_traces_behind_basic_auth(site: Site) -> None:
    status, _, _ = site.request("/trace", auth=False)
    assert status == 401  # the web configuration's guard: nothing without credentials
    status, headers, page = site.request("/trace")
    assert status == 200 and "<form method='post' action='/trace'>" in page
    assert headers["Cache-Control"] == "no-store" and headers["Referrer-Policy"] == "no-referrer"
    assert "Trace a message" in site.request("/")[2]  # linked from the status page

    message = next(m for m in truth(site.sim, *WINDOW).values() if m.kind == "internal" and len(m.servers) > 1)
    sender = message.events[0].sender
    status, _, page = site.request("/trace", {"sender": sender, **window(), "limit": "100"})
    assert status == 200
    assert "Searched: EX01" in page and "Could not search" not in page
    assert f"&lt;{message.message_id.strip('<>')}&gt;" in page and message.message_id not in page  # escaped
    assert "class='badge delivered'" in page


def test_every_value_on_the_page_is_escaped(site: Site) -> None:
    hostile = "<script>alert(1)</script>@example.com"
    status, _, page = site.request("/trace", {"sender": hostile, "subject": "'\"><b>", **window()})
    assert status == 200 and "<script>" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;@example.com" in page and "No message matched." in page
    status, _, page = site.request("/trace", {"since": "2h"})
    assert status == 400 and "Give at least one of sender, recipient, message id or subject." in page


def test_a_post_from_another_site_is_refused(site: Site) -> None:
    status, _, page = site.request("/trace", {"sender": "a@b.example"}, headers={"Origin": "https://evil.example"})
    assert status == 403 and "posted from this page" in page


def test_senders_recipients_and_subjects_stay_out_of_metrics_and_info_logs(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    message = next(m for m in truth(site.sim, *WINDOW).values() if m.kind == "failed")
    first = message.events[0]
    form = {"sender": first.sender, "recipient": first.recipients[0], "subject": first.message_subject[:8]}
    status, _, page = site.request("/trace", {**form, **window()})
    assert status == 200 and "class='badge failed'" in page
    private = [first.sender, first.recipients[0], first.message_subject[:8], message.message_id]
    _, _, metrics = site.request("/metrics")
    logged = "\n".join(f"{r.getMessage()} {r.args}" for r in caplog.records if r.levelno >= logging.INFO)
    assert "session opened server=EX01" in logged  # the trace's own work is logged, at info
    for value in private:
        assert value not in metrics and value not in logged, value


def test_the_form_closes_when_the_endpoint_stops_requiring_authentication(site: Site) -> None:
    assert site.request("/trace")[0] == 200
    write(site.config, {"http_server_config": {"headers": {"X-Content-Type-Options": "nosniff"}}})
    for _ in range(600):  # the file is re-read within reload_interval: wait until the guard has no users
        if site.request("/", auth=False)[0] == 200:
            break
        time.sleep(0.05)
    assert site.request("/", auth=False)[0] == 200
    status, _, page = site.request("/trace", auth=False)
    assert status == 403 and "does not require authentication" in page


def test_off_by_default_and_refused_without_authentication(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = Scenario.from_dict(org())
    sim = Simulator(scenario, host="127.0.0.1", tls=False, clock=lambda: T0)
    sim.start()
    try:
        service = Service(settings_for(sim, scenario))
        server = WebServer(service.app, "127.0.0.1:0")
        server.start()
        try:
            site = Site(f"http://127.0.0.1:{server.port}", service, tmp_path, sim)
            assert site.request("/trace", auth=False)[0] == 404  # not enabled: no such page
            assert "Trace a message" not in site.request("/", auth=False)[2]
        finally:
            server.stop()
            service.stop()
    finally:
        sim.stop()

    # Enabled without a web configuration, or with one that asks for no authentication: refused at start.
    plain = write(tmp_path / "plain-web.yml", {"rate_limit": {"interval": "1s", "burst": 10}})
    for extra in ([], ["--web.config.file", str(plain)]):
        config = write(
            tmp_path / "mailflow.yml",
            {
                "exchange": {"servers": [{"name": "EX01", "host": "ex01.contoso.sim"}]},
                "web": {"trace_enabled": True},
            },
        )
        for command in ("serve", "validate-config"):
            with pytest.raises(SystemExit) as exit_info:
                cli_main([command, "--config.file", str(config), *extra])
            assert exit_info.value.code == 2
            err = capsys.readouterr().err
            assert "web.trace_enabled" in err and "requires authentication" in err
    authed = write(tmp_path / "auth-web.yml", {"basic_auth_users": {USER: HASH}})
    assert cli_main(["validate-config", "--config.file", str(config), "--web.config.file", str(authed)]) == 0
