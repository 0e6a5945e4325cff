"""Get-ExchangeCertificate: real X.509 certificates generated from the scenario, and their two shapes.

Over remote PowerShell Exchange serialises a certificate as an ``X509Certificate2`` whose only
adapted property is ``RawData`` (the DER) and whose ToString is the multi-line ``[Subject] ...
[Thumbprint]`` text (the capture's shape; :func:`certificate_wire`). ``Select-Object`` runs inside
the server on the live object, so ``Get-ExchangeCertificate | Select-Object Thumbprint,Services,...``
returns the Exchange properties (Services, Status, NotAfter, CertificateDomains...): that live
object is :func:`certificate_model`.

Certificates use EC P-256 keys and are cached per (organisation, server, spec, scenario start), so
a large organisation costs one key and one signature per certificate, once. ``Thumbprint`` is the
upper-case SHA-1 of the DER, as in Windows. Certificates not marked self-signed are issued by a
simulated ``CN=<Organisation> Issuing CA``.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from psrpcore.types import PSObject

from exporter.simulator.objects import enum_value, ex_object, flags_value, typed_list
from exporter.simulator.orgconfig import ALLOWED_SERVICES, DAY, CertificateSpec
from exporter.simulator.scenario import Scenario, ServerSpec
from exporter.simulator.timeline import Timeline

__all__ = [
    "CERTIFICATE_TYPE_NAMES",
    "IssuedCertificate",
    "certificate_model",
    "certificate_wire",
    "issue",
]

_TASKS = "Microsoft.Exchange.Management.SystemConfigurationTasks"
CERTIFICATE_TYPE_NAMES = [
    f"{_TASKS}.ExchangeCertificate",
    "System.Security.Cryptography.X509Certificates.X509Certificate2",
    "System.Security.Cryptography.X509Certificates.X509Certificate",
    "System.Object",
]
#: ``CertificateStatus`` (names documented; numbers inferred).
CERTIFICATE_STATUSES = {
    "Unknown": 0,
    "Valid": 1,
    "Revoked": 2,
    "DateInvalid": 3,
    "Untrusted": 4,
    "Invalid": 5,
    "RevocationCheckFailure": 6,
    "PendingRequest": 7,
}
_ROOT_CA_TYPES = {"None": 0, "Registry": 1, "ThirdParty": 2, "GroupPolicy": 3, "Enterprise": 4, "Unknown": 5}
#: ServicesStringForm letters, in AllowedServices order (IMAP, POP, UM, IIS, SMTP, Federation, UMCallRouter).
_SERVICE_LETTERS = (("IMAP", "I"), ("POP", "P"), ("UM", "U"), ("IIS", "W"), ("SMTP", "S"), ("Federation", "F"))
_MVP_DOMAINS = (
    "Microsoft.Exchange.Data.MultiValuedProperty`1[[Microsoft.Exchange.Data.SmtpDomainWithSubdomains, "
    "Microsoft.Exchange.Data, Version=15.0.0.0, Culture=neutral, PublicKeyToken=31bf3856ad364e35]]"
)


@dataclass(frozen=True)
class IssuedCertificate:
    """A generated certificate: its DER and the values Exchange derives from it."""

    spec: CertificateSpec
    der: bytes
    thumbprint: str
    serial: str
    subject: str
    issuer: str
    not_before: float
    not_after: float


def _name(text: str) -> x509.Name:
    return x509.Name.from_rfc4514_string(",".join(part.strip() for part in text.split(",")))


def _display(text: str) -> str:
    """A distinguished name as .NET shows it (``CN=a, O=b``)."""
    return ", ".join(part.strip() for part in text.split(","))


@functools.lru_cache(maxsize=16)
def _issuing_ca(organisation: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Name]:
    return ec.generate_private_key(ec.SECP256R1()), _name(f"CN={organisation} Issuing CA")


@functools.lru_cache(maxsize=8192)
def issue(organisation: str, server: str, spec: CertificateSpec, start: float) -> IssuedCertificate:
    """Generate (once) the certificate ``spec`` of ``server``; dates are relative to ``start``."""
    key = ec.generate_private_key(ec.SECP256R1())
    seed = hashlib.sha256(f"{organisation}|{server}|{spec}".encode()).digest()
    serial = int.from_bytes(seed[:16], "big") & ((1 << 127) - 1) | (1 << 120)
    not_before = float(int(start + spec.not_before_days * DAY))
    not_after = float(int(start + spec.not_after_days * DAY))
    subject = _name(spec.subject)
    if spec.self_signed:
        signer, issuer_name = key, subject
    else:
        signer, issuer_name = _issuing_ca(organisation)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(datetime.datetime.fromtimestamp(not_before, datetime.UTC))
        .not_valid_after(datetime.datetime.fromtimestamp(not_after, datetime.UTC))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if spec.domains:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in spec.domains]), critical=False
        )
    der = builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    return IssuedCertificate(
        spec=spec,
        der=der,
        thumbprint=hashlib.sha1(der, usedforsecurity=False).hexdigest().upper(),
        serial=f"{serial:032X}",
        subject=_display(spec.subject),
        issuer=_display(spec.subject if spec.self_signed else issuer_name.rfc4514_string()),
        not_before=not_before,
        not_after=not_after,
    )


def server_certificates(scenario: Scenario, server: ServerSpec, timeline: Timeline) -> list[IssuedCertificate]:
    """Every certificate in ``server``'s store, generated on first use."""
    org = scenario.organisation.name
    return [issue(org, server.name, spec, timeline.origin.start) for spec in server.effective_certificates]


def _x509_text(cert: IssuedCertificate, timeline: Timeline) -> str:
    """``X509Certificate.ToString()``: the sections Exchange's capture shows, CRLF separated."""

    def when(ts: float) -> str:
        return timeline.local(ts).strftime("%m/%d/%Y %H:%M:%S")

    sections = [
        ("Subject", cert.subject),
        ("Issuer", cert.issuer),
        ("Serial Number", cert.serial),
        ("Not Before", when(cert.not_before)),
        ("Not After", when(cert.not_after)),
        ("Thumbprint", cert.thumbprint),
    ]
    return "\r\n".join(f"[{title}]\r\n  {value}\r\n" for title, value in sections)


def certificate_wire(cert: IssuedCertificate, timeline: Timeline) -> PSObject:
    """What the client receives: ``RawData`` only, ToString the X.509 text, SerializationData."""
    return ex_object(CERTIFICATE_TYPE_NAMES, [("RawData", cert.der)], _x509_text(cert, timeline))


def services_string(services: tuple[str, ...]) -> str:
    """``ServicesStringForm``: one letter per service or a dot (``IP.WS..`` for IMAP, POP, IIS, SMTP)."""
    return "".join(letter if name in services else "." for name, letter in _SERVICE_LETTERS) + (
        "C" if "UMCallRouter" in services else "."
    )


def certificate_status(cert: IssuedCertificate, now: float) -> str:
    """Valid, or DateInvalid outside the validity period."""
    return "Valid" if cert.not_before <= now <= cert.not_after else "DateInvalid"


def certificate_model(server: ServerSpec, cert: IssuedCertificate, timeline: Timeline) -> PSObject:
    """The live ``ExchangeCertificate`` that Select-Object reads on the server (never serialised whole)."""
    spec = cert.spec
    domains = typed_list(
        [_MVP_DOMAINS, "Microsoft.Exchange.Data.MultiValuedPropertyBase", "System.Object"],
        [
            ex_object(["Microsoft.Exchange.Data.SmtpDomainWithSubdomains", "System.Object"], [("Address", d)], d)
            for d in spec.domains
        ],
    )
    root = "Registry" if spec.self_signed else "Enterprise"
    return ex_object(
        CERTIFICATE_TYPE_NAMES,
        [
            ("AccessRules", None),
            ("CertificateDomains", domains),
            ("HasPrivateKey", True),
            ("IsSelfSigned", spec.self_signed),
            ("Issuer", cert.issuer),
            ("NotAfter", timeline.local(cert.not_after)),
            ("NotBefore", timeline.local(cert.not_before)),
            ("PublicKeySize", 256),
            ("RootCAType", enum_value(f"{_TASKS}.CertificateTrustType", _ROOT_CA_TYPES, root)),
            ("SerialNumber", cert.serial),
            ("Services", flags_value(f"{_TASKS}.AllowedServices", ALLOWED_SERVICES, spec.services)),
            (
                "Status",
                enum_value(
                    f"{_TASKS}.CertificateStatus", CERTIFICATE_STATUSES, certificate_status(cert, timeline.now())
                ),
            ),
            ("Subject", cert.subject),
            ("Thumbprint", cert.thumbprint),
            ("FriendlyName", spec.friendly_name),
            ("Identity", f"{server.fqdn}\\{cert.thumbprint}"),
            (
                "IISServices",
                typed_list(
                    [
                        _MVP_DOMAINS.replace("SmtpDomainWithSubdomains", "IisService"),
                        "Microsoft.Exchange.Data.MultiValuedPropertyBase",
                        "System.Object",
                    ],
                    [],
                ),
            ),
            ("ServicesStringForm", services_string(spec.services)),
            ("Archived", False),
            ("RawData", cert.der),
            ("Version", 3),
        ],
        _x509_text(cert, timeline),
    )
