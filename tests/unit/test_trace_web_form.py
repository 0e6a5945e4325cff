"""The trace form's own checks, as WSGI calls: which configurations open it, and what it refuses before
any trace runs (the runner given here records calls; a refused request must not reach it)."""

from __future__ import annotations

import io
import urllib.parse
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from exporter.trace.web import ENVIRON_CONFIG, MAX_BODY, TraceForm, requires_authentication
from exporter.webconfig import load_web_config

HASH = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()


def config(tmp_path: Path, data: dict[str, Any]) -> Any:
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump(data))
    return load_web_config(path)


class Runs:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *_args: Any) -> Any:
        self.calls += 1
        raise RuntimeError("boom: cfo@contoso.com")


def call(form: TraceForm, method: str = "GET", body: bytes = b"", **environ: Any) -> tuple[str, str]:
    seen: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"] = status

    env = {"REQUEST_METHOD": method, "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
           "HTTP_HOST": "exporter:10049", **environ}  # fmt: skip
    page = b"".join(form(env, start_response)).decode()
    return seen["status"], page


def test_which_configurations_require_authentication(tmp_path: Path) -> None:
    assert not requires_authentication(None)
    assert requires_authentication(config(tmp_path, {"basic_auth_users": {"admin": HASH}}))
    assert not requires_authentication(config(tmp_path, {"rate_limit": {"interval": "1s", "burst": 5}}))


def test_refusals_happen_before_any_trace(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    runs = Runs()
    form = TraceForm(runs)
    authed = {ENVIRON_CONFIG: config(tmp_path, {"basic_auth_users": {"admin": HASH}})}
    assert call(form)[0] == "403 Forbidden"  # no web configuration in force
    assert call(form, **authed)[0] == "200 OK"
    assert call(form, "PUT", **authed)[0] == "405 Method Not Allowed"
    assert call(form, "POST", b"x" * (MAX_BODY + 1), **authed)[0] == "413 Content Too Large"
    status, page = call(form, "POST", b"since=2h", **authed)
    assert status == "400 Bad Request" and "Give at least one of" in page
    status, _ = call(form, "POST", b"sender=a%40b.example", HTTP_ORIGIN="https://evil.example", **authed)
    assert status == "403 Forbidden" and runs.calls == 0
    body = urllib.parse.urlencode({"sender": "cfo@contoso.com"}).encode()
    status, page = call(form, "POST", body, HTTP_ORIGIN="http://exporter:10049", **authed)
    assert status == "500 Internal Server Error" and runs.calls == 1 and "boom" not in page
    assert "cfo@contoso.com" not in caplog.text and "RuntimeError" in caplog.text
