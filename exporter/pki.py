"""Throw-away TLS material for the simulator, the demo's SMTP endpoints and the tests: a CA of our own
and server or client certificates from it, valid, about to expire, expired or for the wrong name.

One implementation for every HTTPS/STARTTLS endpoint the project simulates; nothing here is used to
talk to a real Exchange server.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificateAuthority",
    "ClientCert",
    "TlsFiles",
    "create_ca",
    "expired_certificate",
    "issue_client_certificate",
    "issue_server_certificate",
    "not_after",
    "server_tls_context",
]

DEFAULT_ORG = "mailflow-exporter netsim"


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the PEM files: the CA to trust, and the server's certificate chain and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class ClientCert:
    """A client certificate and its key (PEM files)."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA certificate and its key; ``ca_file`` is the PEM clients trust."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    ca_file: Path


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not cert_sign,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf(
    ca: CertificateAuthority,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    start: datetime.datetime,
    end: datetime.datetime,
) -> x509.CertificateBuilder:
    """An end-entity certificate issued by ``ca``, before its usage extensions."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def create_ca(
    directory: Path,
    days: float = 3650,
    common_name: str = f"{DEFAULT_ORG} CA",
    organization: str = DEFAULT_ORG,
) -> CertificateAuthority:
    """A self-signed CA valid from a day ago for ``days`` days, written to ``directory/ca.pem``."""
    now = _now()
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name, organization)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertificateAuthority(cert, key, ca_file)


def issue_server_certificate(
    ca: CertificateAuthority,
    directory: Path,
    names: Iterable[str],
    *,
    days: float = 90,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
    ip_addresses: Iterable[str] = ("127.0.0.1", "::1"),
    stem: str = "server",
) -> TlsFiles:
    """A server certificate for ``names`` (DNS SANs; the first is also the CN) and ``ip_addresses`` (IP SANs).

    Valid from ``not_before`` (default: an hour ago) until ``not_after`` (default: ``days`` days from now;
    a fractional or small ``days`` gives a certificate about to expire). Written as
    ``<stem>.pem`` (certificate + CA) and ``<stem>-key.pem``; ``TlsFiles.ca_file`` is the CA's file.
    """
    dns_names = [n for n in dict.fromkeys(names) if n]
    addresses = list(ip_addresses)
    if not dns_names and not addresses:
        raise ValueError("a server certificate needs at least one name or address")
    now = _now()
    start = not_before or now - datetime.timedelta(hours=1)
    end = not_after or now + datetime.timedelta(days=days)
    if end <= start:
        raise ValueError("not_after must be later than not_before")
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    alt += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    organization = ca.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    subject = _name(dns_names[0] if dns_names else addresses[0], str(organization[0].value))
    cert = (
        _leaf(ca, subject, key, start, end)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(ca.ca_file, directory / f"{stem}.pem", directory / f"{stem}-key.pem")
    files.cert_file.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM) + ca.certificate.public_bytes(serialization.Encoding.PEM)
    )
    _write_key(files.key_file, key)
    return files


def issue_client_certificate(
    ca: CertificateAuthority, directory: Path, name: str, *, expired: bool = False, sans: tuple[str, ...] = ()
) -> ClientCert:
    """A TLS client certificate (clientAuth) for ``name``, with DNS SANs ``sans``; ``expired``: ended yesterday."""
    now = _now()
    if expired:
        start, end = now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)
    else:
        start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=30)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = _leaf(ca, subject, key, start, end).add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    directory.mkdir(parents=True, exist_ok=True)
    out = ClientCert(directory / f"{name}.pem", directory / f"{name}-key.pem")
    out.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(out.key_file, key)
    return out


def expired_certificate(
    ca: CertificateAuthority, directory: Path, names: Iterable[str], days_ago: float = 1, stem: str = "expired"
) -> TlsFiles:
    """A certificate that was valid for 90 days and expired ``days_ago`` days ago."""
    end = _now() - datetime.timedelta(days=days_ago)
    return issue_server_certificate(
        ca, directory, names, not_before=end - datetime.timedelta(days=90), not_after=end, stem=stem
    )


def not_after(cert_file: Path) -> datetime.datetime:
    """The expiry (UTC) of the first certificate in a PEM file."""
    return x509.load_pem_x509_certificate(cert_file.read_bytes()).not_valid_after_utc


def server_tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server-side SSLContext (TLS 1.2+, no client certificates) for a certificate chain and key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert_file), str(key_file))
    return context
