"""TLS material for the simulator's HTTPS endpoints: a throw-away CA and a server certificate signed by it.

The CA certificate (``ca.pem``) is what clients trust (pypsrp ``cert_validation=<path>``); the server
certificate carries SANs for 127.0.0.1, ::1, localhost and every simulated server's FQDN and name.
The certificates come from ``exporter.pki``, shared with the demo's SMTP endpoints and the tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from exporter.pki import TlsFiles, create_ca, issue_server_certificate, server_tls_context

__all__ = ["TlsFiles", "generate_tls", "server_context"]

ORGANIZATION = "mailflow-exporter simulator"


def generate_tls(directory: Path, names: Iterable[str], days: int = 30) -> TlsFiles:
    """Create ``ca.pem``, ``server.pem`` (certificate + CA) and ``server-key.pem`` in ``directory``."""
    ca = create_ca(directory, days=days, common_name=f"{ORGANIZATION} CA", organization=ORGANIZATION)
    return issue_server_certificate(ca, directory, ["localhost", *names], days=days)


server_context = server_tls_context
