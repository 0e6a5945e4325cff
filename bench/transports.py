"""How a benchmark's exporter reaches the simulator: ``--transport`` of the fan-out and tracking benchmarks.

- ``basic-http``: Basic over plain HTTP (``allow_insecure_basic``), the cheapest path and the one the
  benchmarks measured first.
- ``kerberos-http-sealed``: Kerberos (HTTP ``Negotiate``) over plain HTTP, every WSMan message sealed with
  the connection's security context (WinRM message encryption, MS-WSMV 2.2.9.1): what a default
  Exchange ``/PowerShell`` endpoint on port 80 gets from a Kerberos client.
- ``kerberos-https``: Kerberos over HTTPS with the TLS channel binding (Extended Protection); TLS
  protects the session, so nothing is sealed. The client trusts the simulator's throw-away CA.

NTLM is not offered: the simulator accepts Kerberos behind ``Negotiate`` and Basic, not NTLM (see
``exporter/simulator/README.md``, Known gaps), as an Exchange server reached by its Kerberos SPN does.

The Kerberos transports start a throw-away MIT KDC on loopback (``tests/kdc/mitkdc.py``) in a temp
directory, with the benchmark's account as a principal (its password), ``HTTP/localhost`` as the
service (the simulator's keytab), and the variables pointing the Kerberos libraries at it set for the
``with`` block (they are inherited by the simulator's child process when it is spawned inside it). The
exporter connects to ``localhost``, so the SPN is ``HTTP/localhost`` on every port.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRANSPORTS = ("basic-http", "kerberos-http-sealed", "kerberos-https")
#: What the benchmark prints and run_all names its rows by.
DESCRIPTIONS = {
    "basic-http": "Basic over HTTP",
    "kerberos-http-sealed": "Kerberos over HTTP, sealed",
    "kerberos-https": "Kerberos over HTTPS",
}
SERVICE_HOST = "localhost"


class TransportUnavailable(RuntimeError):
    """A Kerberos transport was asked for on a machine without MIT Kerberos or gssapi; ``what`` is
    the missing piece (``krb5kdc`` or ``gssapi``), the message says how to install it."""

    def __init__(self, what: str, message: str) -> None:
        super().__init__(message)
        self.what = what


@dataclass(frozen=True)
class Transport:
    """One transport, ready: what the simulator needs (``simulator_options``) and what the exporter
    needs (``exchange_defaults``, ``host``)."""

    name: str
    username: str
    password: str
    keytab: str | None = None  # the simulator's acceptor keytab (Kerberos)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def kerberos(self) -> bool:
        return self.name.startswith("kerberos")

    @property
    def tls(self) -> bool:
        return self.name.endswith("https")

    @property
    def host(self) -> str:
        """The name the exporter connects to (the SPN's host for Kerberos)."""
        return SERVICE_HOST if self.kerberos else "127.0.0.1"

    def simulator_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Simulator`` (besides the scenario and host)."""
        return {"tls": self.tls, "kerberos_keytab": self.keytab}

    def exchange_defaults(self, ca_file: str | None) -> dict[str, Any]:
        """``exchange.defaults`` for this transport (``ca_file``: the simulator's CA, for HTTPS)."""
        defaults: dict[str, Any] = {"username": self.username, "password": self.password, "tls": self.tls}
        if self.kerberos:
            defaults |= {"auth": "kerberos", "negotiate_service": "HTTP"}
        else:
            defaults |= {"auth": "basic", "allow_insecure_basic": True}
        if self.tls:
            defaults["ca_bundle"] = ca_file
        return defaults


def kerberos_missing() -> TransportUnavailable | None:
    """Why the Kerberos transports cannot run here, or None."""
    import importlib.util

    from tests.kdc.mitkdc import find_kdc

    if find_kdc() is None:
        return TransportUnavailable("krb5kdc", "krb5kdc not installed (Debian: krb5-kdc krb5-admin-server krb5-user)")
    if importlib.util.find_spec("gssapi") is None:
        return TransportUnavailable("gssapi", "gssapi not installed (pip install -e '.[kerberos]')")
    return None


@contextlib.contextmanager
def transport(name: str, username: str, password: str) -> Iterator[Transport]:
    """``name`` set up for the account ``username``/``password``; a KDC runs for the block if needed."""
    if name not in TRANSPORTS:
        raise ValueError(f"unknown transport {name!r}; one of {', '.join(TRANSPORTS)}")
    if not name.startswith("kerberos"):
        yield Transport(name, username, password)
        return
    missing = kerberos_missing()
    if missing is not None:
        raise missing
    from tests.kdc.mitkdc import MitKdc

    # An AD UPN user@domain is the principal user@DOMAIN (the simulator compares case-insensitively).
    user, _, domain = username.partition("@")
    realm = domain.upper()
    directory = Path(tempfile.mkdtemp(prefix="mailflow-bench-kdc-"))
    try:
        with MitKdc(directory, realm=realm) as kdc:
            principal = kdc.add_principal(f"{user}@{realm}", password)
            kdc.add_principal(f"HTTP/{SERVICE_HOST}")
            keytab = kdc.export_keytab(directory / "sim.keytab", f"HTTP/{SERVICE_HOST}")
            with kdc.environment() as env:
                yield Transport(name, principal, password, str(keytab), dict(env))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
