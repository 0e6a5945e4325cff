"""Exchange certificates per server (``Get-ExchangeCertificate -Server EX01``): expiry and services.

Over remote PowerShell an ExchangeCertificate arrives as little more than its ``RawData`` (the DER
bytes): the fields Get-ExchangeCertificate shows locally are computed properties that do not
serialise. So the collector pipes into ``Select-Object -Property`` (run server-side on the live
object, which yields Services and Status as plain values) and, when the runspace refuses the
pipeline or a field is missing, decodes the DER itself with ``cryptography``. ``Services`` (which
of SMTP, IIS, IMAP, POP the certificate is bound to) exists only in Exchange, never in the
certificate: without Select-Object it is reported as ``unknown``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.cardinality import OTHER, fold_enum, keep_top, unknown
from exporter.errors import ParseError
from exporter.exchange.clixml import ALLOWED_SERVICES, as_bool, flatten, parse_datetime, parse_flags
from exporter.exchange.cmdlet_collector import CappedServerCollector
from exporter.exchange.session import ExchangeSession

SELECT = (
    "Thumbprint",
    "Subject",
    "Issuer",
    "NotBefore",
    "NotAfter",
    "Services",
    "Status",
    "IsSelfSigned",
    "FriendlyName",
    "RawData",  # a fallback when the selected fields come back empty (older builds, replays)
)
UNKNOWN = "unknown"
#: Get-ExchangeCertificate Status values (reference §4), and ours when no Status arrived.
STATUSES = frozenset(
    {*"Valid Invalid DateInvalid PendingRequest RevocationCheckFailure Revoked Unknown Untrusted".split(), UNKNOWN}
)
POLLED = "Polled from Get-ExchangeCertificate on a schedule."


@dataclass(frozen=True)
class Certificate:
    """One certificate in one server's store."""

    server: str
    thumbprint: str
    subject: str
    issuer: str
    not_before: datetime | None
    not_after: datetime
    services: str  # "IIS, SMTP", "None", or "unknown" when only RawData arrived
    status: str
    self_signed: bool

    @property
    def serves_smtp(self) -> bool:
        return "SMTP" in parse_flags(self.services, ALLOWED_SERVICES)

    @property
    def services_known(self) -> bool:
        """False when only RawData arrived: the certificate may or may not be bound to SMTP or IIS."""
        return self.services != UNKNOWN

    @property
    def carries_mail(self) -> bool | None:
        """Bound to SMTP or IIS (mail transport, OWA/EWS/ActiveSync/Autodiscover); None when unknown.
        A certificate bound to nothing (``None``) or only to IMAP/POP is not mail flow's business."""
        if not self.services_known:
            return None
        return bool(parse_flags(self.services, ALLOWED_SERVICES) & {"SMTP", "IIS"})


def services_text(value: Any) -> str:
    """``Services`` as Exchange displays the AllowedServices flags (``IMAP, POP, IIS, SMTP``, in the
    enum's order), ``None`` for none, ``unknown`` when the property did not arrive. A replayed capture
    may hold the number (24) instead of the names: both give the same label."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return UNKNOWN
    flags = parse_flags(value, ALLOWED_SERVICES)
    names = [n for n in ALLOWED_SERVICES if n in flags] + sorted(flags - set(ALLOWED_SERVICES))
    return ", ".join(names) or "None"


def _name(name: x509.Name) -> str:
    """X.500 name the way Exchange/.NET prints it: most specific first, ``, `` separated."""
    return ", ".join(rdn.rfc4514_string() for rdn in reversed(name.rdns))


def decode_der(raw: bytes) -> dict[str, Any]:
    """Thumbprint, subject, issuer and validity from the certificate's DER bytes."""
    try:
        cert = x509.load_der_x509_certificate(raw)
    except ValueError as err:
        raise ParseError(f"certificate RawData is not a DER certificate: {err}") from None
    return {
        "Thumbprint": hashlib.sha1(raw, usedforsecurity=False).hexdigest().upper(),
        "Subject": _name(cert.subject),
        "Issuer": _name(cert.issuer),
        "NotBefore": cert.not_valid_before_utc,
        "NotAfter": cert.not_valid_after_utc,
        "IsSelfSigned": cert.subject == cert.issuer,
    }


def parse_certificate(obj: Any, server: str) -> Certificate:
    """One Get-ExchangeCertificate object: selected properties, else the decoded RawData."""
    p = flatten(obj)
    raw = p.get("RawData")
    if isinstance(raw, bytes | bytearray) and (not p.get("NotAfter") or not p.get("Thumbprint")):
        p = {**decode_der(bytes(raw)), **{k: v for k, v in p.items() if v not in (None, "")}}
    not_after = parse_datetime(p.get("NotAfter"))
    thumbprint = str(p.get("Thumbprint") or "").strip().upper()
    if not thumbprint or not_after is None:
        raise ParseError("a Get-ExchangeCertificate object without Thumbprint/NotAfter or RawData")
    services = p.get("Services")
    status = str(p.get("Status") or "").strip()
    if not status:
        status = "DateInvalid" if not_after < datetime.now(UTC) else UNKNOWN
    return Certificate(
        server=server,
        thumbprint=thumbprint,
        subject=str(p.get("Subject") or ""),
        issuer=str(p.get("Issuer") or ""),
        not_before=parse_datetime(p.get("NotBefore")),
        not_after=not_after,
        services=services_text(services),
        status=status,
        self_signed=as_bool(p.get("IsSelfSigned")),
    )


@dataclass(frozen=True)
class CertificateResult:
    """The certificates of one server."""

    server: str
    certificates: tuple[Certificate, ...]
    kept: frozenset[str] | None = None  # thumbprints with their own series (None: all); the rest are "other"
    folded: Mapping[str, int] = field(default_factory=dict)  # label -> distinct values shown as "other"


class CertificateCollector(CappedServerCollector):
    """Polls Get-ExchangeCertificate per server."""

    name = "certificates"

    def collect(self, session: ExchangeSession, server: str) -> CertificateResult:
        certs = self.fetch(session, server, "Get-ExchangeCertificate", {"Server": server}, parse_certificate, SELECT)
        ordered = tuple(sorted(certs, key=lambda c: (c.not_after, c.thumbprint)))
        return cap_certificates(CertificateResult(server, ordered), self._limit)

    def render(self, results: Mapping[str, CertificateResult]) -> Iterable[Metric]:
        return render_certificates(results.values())


def cap_certificates(result: CertificateResult, limit: int) -> CertificateResult:
    """The result with its cardinality cap decided: ``limit`` certificates keep their own series, those
    bound to SMTP and expiring first first."""
    rank: dict[str, tuple[bool, datetime]] = {}
    for c in result.certificates:
        rank[c.thumbprint] = min(rank.get(c.thumbprint, (True, c.not_after)), (not c.serves_smtp, c.not_after))
    kept = keep_top(rank, limit, rank.__getitem__)
    statuses = unknown((c.status for c in result.certificates), STATUSES)
    return replace(result, kept=kept, folded={"thumbprint": len(rank) - len(kept), "status": statuses})


def render_certificates(results: Iterable[CertificateResult]) -> list[Metric]:
    """Metric families for certificates."""
    expiry = GaugeMetricFamily(
        "mailflow_certificate_expiry_timestamp_seconds",
        f"When the certificate expires (NotAfter), unix time; services it is bound to. {POLLED}",
        labels=["server", "thumbprint", "subject", "services"],
    )
    info = GaugeMetricFamily(
        "mailflow_certificate_info",
        f"Certificate issuer, Exchange status (Valid, DateInvalid, Untrusted...) and self-signed flag. {POLLED}",
        labels=["server", "thumbprint", "issuer", "status", "self_signed"],
    )
    for result in sorted(results, key=lambda r: r.server):
        folded = [c for c in result.certificates if result.kept is not None and c.thumbprint not in result.kept]
        for c in result.certificates:
            if result.kept is None or c.thumbprint in result.kept:
                expiry.add_metric([c.server, c.thumbprint, c.subject, c.services], c.not_after.timestamp())
                status = fold_enum(c.status, STATUSES)
                info.add_metric([c.server, c.thumbprint, c.issuer, status, "true" if c.self_signed else "false"], 1)
        if folded:  # the earliest expiry and the number of certificates beyond the cap
            expiry.add_metric([result.server, OTHER, OTHER, OTHER], min(c.not_after.timestamp() for c in folded))
            info.add_metric([result.server, OTHER, OTHER, OTHER, OTHER], len(folded))
    return [expiry, info]
