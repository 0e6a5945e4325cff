"""``mailflow-exporter healthcheck``: is the exporter on this host serving? For container health checks.

A plain ``GET http://127.0.0.1:10049/-/healthy`` stops working the moment the endpoint is secured with
``--web.config.file``: over TLS the plain request is dropped, with basic auth it gets 401, with
client certificates required the handshake is refused. This check follows the endpoint instead:

* it asks ``/-/healthy`` over HTTP, then (if the port speaks TLS) over HTTPS without verifying the
  certificate: it checks liveness of a local process, not the identity of a remote one;
* ``200`` is healthy and ``503`` (the scheduler died) is not;
* ``401`` (basic auth), ``429`` (rate limit) and a TLS refusal for want of a client certificate are
  "alive": the exporter's HTTP server accepted the connection and answered, which is all a client
  without credentials can see; a server that completes a handshake and then never answers is not.

Connection refused, a timeout or any other answer is unhealthy. Exit code 0 healthy, 1 not.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from exporter.errors import ConfigError
from exporter.settings import read_yaml

DEFAULT_ADDRESS = "127.0.0.1:10049"


@dataclass(frozen=True)
class Health:
    """The outcome: ``ok`` for the exit code, ``detail`` for the one line printed."""

    ok: bool
    detail: str


def local_address(listen_address: str) -> tuple[str, int]:
    """Where to reach a server listening on ``listen_address`` from this host (``:10049``,
    ``0.0.0.0:10049`` and ``[::]:10049`` are reached over loopback)."""
    host, sep, port = listen_address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen address {listen_address!r} is not host:port")
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, int(port)


def _get(host: str, port: int, timeout: float, context: ssl.SSLContext | None) -> int:
    conn: http.client.HTTPConnection
    if context is None:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    else:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    try:
        conn.connect()  # over TLS: the handshake, whose failures the caller tells apart from later ones
        try:
            conn.request("GET", "/-/healthy", headers={"User-Agent": "mailflow-exporter-healthcheck"})
            return conn.getresponse().status
        except (http.client.HTTPException, OSError) as exc:
            if context is None:
                raise
            raise _ClosedAfterHandshake(exc) from exc
    finally:
        conn.close()


class _ClosedAfterHandshake(Exception):
    """The TLS handshake completed, then the server refused the request (an alert, a reset or EOF)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _verdict(status: int, scheme: str) -> Health:
    if status == 200:
        return Health(True, f"healthy ({scheme})")
    if status == 401:
        return Health(True, f"alive ({scheme}, behind basic auth)")
    if status == 429:
        return Health(True, f"alive ({scheme}, rate limited)")
    return Health(False, f"unhealthy: /-/healthy answered HTTP {status} ({scheme})")


def check(listen_address: str, timeout: float = 4.0) -> Health:
    """Probe the exporter listening on ``listen_address``. Never raises."""
    try:
        host, port = local_address(listen_address)
    except ValueError as exc:
        return Health(False, str(exc))
    try:
        return _verdict(_get(host, port, timeout, None), "http")
    except (ConnectionRefusedError, TimeoutError, socket.gaierror) as exc:
        return Health(False, f"unreachable: {host}:{port}: {exc}")
    except (http.client.HTTPException, ConnectionError, OSError):
        pass  # a TLS listener drops or garbles a plain-text request: try TLS
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # liveness of our own local process, not its identity
    try:
        return _verdict(_get(host, port, timeout, context), "https")
    except _ClosedAfterHandshake as exc:
        # TLS 1.3 sends "certificate required" after the handshake; racing our request, it may reach us
        # as that alert, a reset or an EOF: the server refused us, so it is serving. A server that
        # completes the handshake and then never answers is hung.
        cause = exc.cause
        if isinstance(cause, TimeoutError | socket.timeout):
            return Health(False, f"unhealthy: no answer within {timeout:g} s after the TLS handshake")
        if isinstance(cause, ssl.SSLError) and "CERTIFICATE_REQUIRED" in (cause.reason or "").upper():
            return Health(True, "alive (https, requires a client certificate)")
        if isinstance(cause, ssl.SSLError | ConnectionError | http.client.RemoteDisconnected):
            return Health(True, f"alive (https, closed the request after the handshake: {type(cause).__name__})")
        return Health(False, f"unhealthy: {type(cause).__name__}: {cause}")
    except ssl.SSLError as exc:
        reason = (exc.reason or "").upper()
        if "CERTIFICATE_REQUIRED" in reason or "HANDSHAKE_FAILURE" in reason:
            return Health(True, "alive (https, requires a client certificate)")
        return Health(False, f"unhealthy: TLS error {exc.reason or exc}")
    except (http.client.HTTPException, OSError) as exc:
        return Health(False, f"unhealthy: {type(exc).__name__}: {exc}")


def listen_address(config: Path | None) -> str:
    """Where the exporter listens, as it decides: ``MAILFLOW_WEB__LISTEN_ADDRESS``, else
    ``web.listen_address`` in the configuration file (if it can be read), else :10049. Of several
    addresses (a list) the first is probed: every listener serves the same application."""
    from_env = os.environ.get("MAILFLOW_WEB__LISTEN_ADDRESS")
    if from_env:
        return _first(from_env)
    if config is not None:
        try:
            data, _ = read_yaml(config)
            value = data["web"]["listen_address"]
        except (ConfigError, KeyError, TypeError):
            value = None  # the exporter reports a broken config itself; probe the default then
        if isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, str) and value:
            return value
    return DEFAULT_ADDRESS


def _first(value: str) -> str:
    """The first address of a JSON list (``'[":10049", ":10050"]'``), else the value itself."""
    try:
        parsed = json.loads(value)
    except ValueError:
        return value  # ':10049', '[::]:10049': not JSON
    if isinstance(parsed, list) and parsed and isinstance(parsed[0], str):
        return parsed[0]
    return value
