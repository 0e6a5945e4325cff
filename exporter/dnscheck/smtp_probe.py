"""SMTP from the outside: connect to an MX host, read the banner, EHLO, STARTTLS, inspect the certificate.

No mail is sent: the probe says QUIT after STARTTLS. Each phase is timed. The TLS handshake first
verifies the chain against the CA bundle (system CAs by default); when that fails the reason is kept
and a second connection with verification off reads the certificate, so an expired or self-signed
certificate is still reported with its dates and names. Name matching (RFC 6125: SAN DNS names, one
left-most wildcard label) is done here, independently of trust.
"""

from __future__ import annotations

import functools
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509

PHASES = ("connect", "banner", "ehlo", "starttls", "total")


@dataclass(frozen=True)
class SmtpProbeResult:
    """What one probe of one MX host found."""

    host: str
    address: str
    port: int
    success: bool
    error: str = ""  # short reason when not successful: connection, timeout, banner, ehlo, starttls, tls
    detail: str = ""
    banner: str = ""
    starttls_offered: bool | None = None
    starttls_ok: bool | None = None
    tls_version: str = ""
    cert_not_after: datetime | None = None
    cert_name_match: bool | None = None
    cert_trusted: bool | None = None
    trust_error: str = ""
    phases: dict[str, float] = field(default_factory=dict)


def name_matches(host: str, cert: x509.Certificate) -> bool:
    """RFC 6125 host name check against the SAN DNS names (CN only when there is no SAN)."""
    host = host.lower().rstrip(".")
    try:  # a malformed SAN extension raises ValueError: let probe() report it
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        )
    except x509.ExtensionNotFound:
        names = [
            a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME) if isinstance(a.value, str)
        ]
    for pattern in (n.lower().rstrip(".") for n in names):
        if pattern == host:
            return True
        if pattern.startswith("*.") and "." in host:
            label, rest = host.split(".", 1)
            if label and rest == pattern[2:]:
                return True
    return False


class _Probe:
    def __init__(self, host: str, address: str, port: int, timeout: float, helo: str) -> None:
        self.host, self.address, self.port, self.timeout, self.helo = host, address, port, timeout, helo
        self.phases: dict[str, float] = {}
        self.stage = "connect"

    def session(self) -> tuple[smtplib.SMTP, str]:
        """Connect and read the banner, timing both; returns the session and the banner text."""
        t0 = time.monotonic()
        sock = socket.create_connection((self.address, self.port), timeout=self.timeout)
        self.phases["connect"] = time.monotonic() - t0
        smtp = smtplib.SMTP(timeout=self.timeout)
        smtp.sock = sock
        smtp._host = self.host  # type: ignore[attr-defined]  # what starttls() uses for SNI
        self.stage = "banner"
        t1 = time.monotonic()
        code, msg = smtp.getreply()
        self.phases["banner"] = time.monotonic() - t1
        if code != 220:
            smtp.close()
            raise _Failed("banner", f"banner {code} {msg.decode(errors='replace')[:120]}")
        return smtp, msg.decode(errors="replace")

    def ehlo(self, smtp: smtplib.SMTP) -> None:
        self.stage = "ehlo"
        t0 = time.monotonic()
        code, msg = smtp.ehlo(self.helo)
        self.phases["ehlo"] = time.monotonic() - t0
        if code != 250:
            raise _Failed("ehlo", f"EHLO {code} {msg.decode(errors='replace')[:120]}")


class _Failed(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _quit(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def _unverified_cert(probe: _Probe) -> tuple[x509.Certificate | None, str]:
    """A second session with verification off, to read a certificate that failed verification."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        smtp, _ = probe.session()
        try:
            probe.ehlo(smtp)
            smtp.starttls(context=ctx)
            return _peer(smtp)
        finally:
            _quit(smtp)
    except (OSError, smtplib.SMTPException, _Failed, ValueError):
        return None, ""


@functools.lru_cache(maxsize=1)
def _local_fqdn() -> str:
    return socket.getfqdn()  # may block on DNS: once per process, not per probe


def probe(
    host: str, address: str, port: int = 25, timeout: float = 15.0, helo: str = "", ca_file: str | None = None
) -> SmtpProbeResult:
    """Probe ``host`` (connecting to ``address``); never raises (an unexpected error is reason ``tls``
    with its type, e.g. a certificate cryptography cannot parse)."""
    started = time.monotonic()
    try:
        return _probe(host, address, port, timeout, helo or _local_fqdn(), ca_file)
    except Exception as err:
        detail = f"{type(err).__name__}: {str(err)[:160]}"
        total = {"total": time.monotonic() - started}
        return SmtpProbeResult(
            host=host, address=address, port=port, success=False, error="tls", detail=detail, phases=total
        )


def _probe(host: str, address: str, port: int, timeout: float, helo: str, ca_file: str | None) -> SmtpProbeResult:
    p = _Probe(host, address, port, timeout, helo)
    started = time.monotonic()

    def result(**kw: Any) -> SmtpProbeResult:
        return SmtpProbeResult(host=host, address=address, port=port, phases=_total(p, started), **kw)

    try:
        smtp, banner = p.session()
    except _Failed as f:
        return result(success=False, error=f.reason, detail=str(f))
    except TimeoutError as err:
        return result(success=False, error="timeout", detail=str(err)[:160])
    except (OSError, smtplib.SMTPException) as err:
        # smtplib reports a banner that never came as a disconnect whose text says "timed out"
        reason = "timeout" if "timed out" in str(err) else ("banner" if p.stage == "banner" else "connection")
        return result(success=False, error=reason, detail=f"{type(err).__name__}: {str(err)[:160]}")
    try:
        p.ehlo(smtp)
        if not smtp.has_extn("starttls"):
            _quit(smtp)
            return result(success=True, banner=banner, starttls_offered=False)
        ctx = ssl.create_default_context(cafile=ca_file)
        ctx.check_hostname = False  # names are matched below, independently of trust
        p.stage = "starttls"
        t0 = time.monotonic()
        trusted, trust_error = True, ""
        try:
            smtp.starttls(context=ctx)
            p.phases["starttls"] = time.monotonic() - t0
            try:
                cert, version = _peer(smtp)
            finally:
                _quit(smtp)
        except ssl.SSLCertVerificationError as err:
            p.phases["starttls"] = time.monotonic() - t0
            smtp.close()
            trusted, trust_error = False, str(err.verify_message or err)[:160]
            cert, version = _unverified_cert(p)
            if cert is None:
                return result(
                    success=False, error="tls", detail=trust_error, banner=banner, starttls_offered=True,
                    starttls_ok=False, cert_trusted=False, trust_error=trust_error,
                )  # fmt: skip
        return result(
            success=True,
            banner=banner,
            starttls_offered=True,
            starttls_ok=True,
            tls_version=version,
            cert_not_after=cert.not_valid_after_utc if cert else None,
            cert_name_match=name_matches(host, cert) if cert else None,
            cert_trusted=trusted,
            trust_error=trust_error,
        )
    except _Failed as f:
        smtp.close()
        return result(success=False, error=f.reason, detail=str(f), banner=banner)
    except (ssl.SSLError, smtplib.SMTPException, OSError) as err:
        smtp.close()
        in_tls = p.stage == "starttls"
        return result(
            success=False,
            error="timeout" if isinstance(err, TimeoutError) else p.stage,
            detail=f"{type(err).__name__}: {str(err)[:160]}",
            banner=banner,
            starttls_offered=True if in_tls else None,
            starttls_ok=False if in_tls else None,
        )


class SmtpStepError(Exception):
    """A step of :func:`open_session` failed: ``step`` connect, banner, ehlo or starttls; ``code`` the SMTP
    reply code when the server answered with one (0 otherwise)."""

    def __init__(self, step: str, detail: str, code: int = 0) -> None:
        super().__init__(detail)
        self.step = step
        self.code = code


def open_session(host: str, address: str, port: int, timeout: float, helo: str = "") -> tuple[smtplib.SMTP, bool]:
    """An SMTP session to ``address`` (for ``host``) ready for MAIL FROM: banner read, EHLO said, and
    STARTTLS negotiated when offered (opportunistic, as MTAs do: no certificate check; the certificate is
    :func:`probe`'s concern). Returns the session and whether it is encrypted; raises SmtpStepError."""
    p = _Probe(host, address, port, timeout, helo or _local_fqdn())
    try:
        smtp, _banner = p.session()
    except _Failed as f:
        raise SmtpStepError("banner", str(f), _code(str(f))) from None
    except smtplib.SMTPConnectError as err:  # a 4xx/5xx greeting
        raise SmtpStepError("banner", f"{err.smtp_code} {err.smtp_error!r}"[:160], err.smtp_code) from None
    except (OSError, smtplib.SMTPException) as err:
        step = "banner" if p.stage == "banner" else "connect"
        raise SmtpStepError(step, f"{type(err).__name__}: {str(err)[:160]}") from None
    try:
        p.ehlo(smtp)
        if not smtp.has_extn("starttls"):
            return smtp, False
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        p.stage = "starttls"
        smtp.starttls(context=ctx)
        p.ehlo(smtp)
        return smtp, True
    except _Failed as f:
        smtp.close()
        raise SmtpStepError(f.reason, str(f), _code(str(f))) from None
    except smtplib.SMTPResponseException as err:
        smtp.close()
        raise SmtpStepError(p.stage, f"{err.smtp_code} {err.smtp_error!r}"[:160], err.smtp_code) from None
    except (ssl.SSLError, smtplib.SMTPException, OSError) as err:
        smtp.close()
        raise SmtpStepError(p.stage, f"{type(err).__name__}: {str(err)[:160]}") from None


def _code(text: str) -> int:
    for word in text.split():
        if word.isdigit() and len(word) == 3:
            return int(word)
    return 0


def quit_session(smtp: smtplib.SMTP) -> None:
    """QUIT, or close when the server is gone."""
    _quit(smtp)


def _peer(smtp: smtplib.SMTP) -> tuple[x509.Certificate | None, str]:
    """The peer certificate and TLS version of a session after STARTTLS."""
    if not isinstance(smtp.sock, ssl.SSLSocket):
        return None, ""
    der = smtp.sock.getpeercert(binary_form=True)
    return (x509.load_der_x509_certificate(der) if der else None), smtp.sock.version() or ""


def _total(p: _Probe, started: float) -> dict[str, float]:
    return {**p.phases, "total": time.monotonic() - started}
