"""DemoSMTP endpoints with certificates of every kind the SMTP probe must tell apart, for tests."""

from __future__ import annotations

import smtplib
import socket
from pathlib import Path
from typing import Any

from exporter.netsim.smtp_server import DemoSMTP
from exporter.pki import TlsFiles, create_ca, expired_certificate, issue_server_certificate

__all__ = ["CERT_KINDS", "MX_NAME", "SmtpServerFactory", "SmtpTo"]

#: The name the endpoints greet with and their good certificates are for.
MX_NAME = "mx1.mailflow.test"
#: valid: 90 days; expiring: 5 days left; expired: expired a day ago; wrong_name: for wrong.example.net
#: only (no IP SANs); no_starttls: STARTTLS not offered.
CERT_KINDS = ("valid", "expiring", "expired", "wrong_name", "no_starttls")
EXPIRING_DAYS = 5


class SmtpServerFactory:
    """Makes started ``DemoSMTP`` endpoints (``factory("expired")``); ``stop_all()`` stops them."""

    def __init__(self, directory: Path) -> None:
        self.ca = create_ca(directory / "ca")
        names = [MX_NAME, "mx2.mailflow.test"]
        self.certs: dict[str, TlsFiles] = {
            "valid": issue_server_certificate(self.ca, directory, names, days=90, stem="valid"),
            "expiring": issue_server_certificate(self.ca, directory, names, days=EXPIRING_DAYS, stem="expiring"),
            "expired": expired_certificate(self.ca, directory, names, days_ago=1, stem="expired"),
            "wrong_name": issue_server_certificate(
                self.ca, directory, ["wrong.example.net"], ip_addresses=(), stem="wrong-name"
            ),
        }
        self.started: list[DemoSMTP] = []

    @property
    def ca_file(self) -> Path:
        """The CA every certificate here is issued by."""
        return self.ca.ca_file

    def __call__(self, kind: str = "valid", **kwargs: Any) -> DemoSMTP:
        if kind not in CERT_KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {CERT_KINDS}")
        kwargs.setdefault("hostname", MX_NAME)
        if kind == "no_starttls":
            server = DemoSMTP(starttls=False, **kwargs)
        else:
            files = self.certs[kind]
            server = DemoSMTP(cert_file=files.cert_file, key_file=files.key_file, **kwargs)
        server.start()
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        """Stop every endpoint made here."""
        for server in self.started:
            server.stop()
        self.started.clear()


class SmtpTo(smtplib.SMTP):
    """smtplib client that connects to ``ip`` whatever host name it is given, so TLS checks that name.

    ``SmtpTo("127.0.0.1").connect("mx1.mailflow.test", port)`` is what a probe of an MX host does once the
    MX name is resolved: the socket goes to the address, certificate validation uses the name.
    """

    def __init__(self, ip: str, timeout: float = 5.0) -> None:
        self._ip = ip
        super().__init__(timeout=timeout)

    def connect(self, host: str = "localhost", port: int = 0, source_address: Any = None) -> tuple[int, bytes]:
        """Connect to ``ip``:``port``; ``host`` is the name STARTTLS verifies the certificate against."""
        self._host = host
        return super().connect(host, port, source_address)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return socket.create_connection((self._ip, port), timeout)
