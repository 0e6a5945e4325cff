"""The Prometheus exporter-toolkit web configuration file (``--web.config.file``): TLS and basic auth.

The format is the one every official exporter reads (``tls_server_config``, ``http_server_config``,
``basic_auth_users``, ``rate_limit``), parsed as strictly as the Go toolkit: unknown or repeated keys
are errors, relative paths resolve against the file's directory, header names and values are checked,
bcrypt hashes are checked, and every problem is reported with its key path and line.

Where Python's ``ssl`` module cannot do what Go's ``crypto/tls`` does, the closest behaviour is used
and a warning is returned with the configuration (see ``CLIENT_AUTH_TYPES``):

* ``RequestClientCert`` requests no certificate (Python cannot request one without verifying it;
  the toolkit never uses an unverified certificate, so what is served to whom is unchanged).
* ``RequireAnyClientCert`` verifies the certificate against the client CAs (Python cannot require a
  certificate without verifying it), i.e. it behaves as ``RequireAndVerifyClientCert``.
* ``curve_preferences`` is checked but not applied (Python's ``ssl`` has no API for a group list);
  OpenSSL's default groups are used. ``http2: true`` is accepted; the server speaks HTTP/1.x.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import hashlib
import logging
import os
import re
import ssl
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from exporter.errors import ConfigError
from exporter.settings import _format_loc, read_yaml

log = logging.getLogger(__name__)

#: client_auth_type -> (ssl verify mode, needs client CAs). ``RequireClientCert`` is the toolkit's
#: old spelling of ``RequireAnyClientCert``.
CLIENT_AUTH_TYPES: dict[str, tuple[ssl.VerifyMode, bool]] = {
    "NoClientCert": (ssl.CERT_NONE, False),
    "RequestClientCert": (ssl.CERT_NONE, False),
    "RequireAnyClientCert": (ssl.CERT_REQUIRED, True),
    "RequireClientCert": (ssl.CERT_REQUIRED, True),
    "VerifyClientCertIfGiven": (ssl.CERT_OPTIONAL, True),
    "RequireAndVerifyClientCert": (ssl.CERT_REQUIRED, True),
}
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
#: Go cipher suite names (crypto/tls CipherSuites and InsecureCipherSuites) -> OpenSSL names.
#: The TLS 1.3 suites map to None: neither Go nor Python lets them be configured.
GO_CIPHERS: dict[str, str | None] = {
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": "ECDHE-RSA-DES-CBC3-SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA": "ECDHE-ECDSA-RC4-SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA": "ECDHE-RSA-RC4-SHA",
    "TLS_RSA_WITH_RC4_128_SHA": "RC4-SHA",
}
GO_CURVES = ("CurveP256", "CurveP384", "CurveP521", "X25519")
#: The only response headers the toolkit lets a file set, with their allowed values (None: any).
ALLOWED_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}
_BCRYPT_RE = re.compile(r"^\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}$")
_HTPASSWD_HINT = "make one with: htpasswd -nBC 10 '' | tr -d ':\\n'"
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


# --- the file's schema (structure and types; meaning is checked afterwards, with better messages) -----


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        """``key:`` with no value means the zero value in Go's YAML decoder: use the default."""
        if data is None:
            return {}
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class TLSServerSection(_Section):
    cert: str = ""
    key: SecretStr = SecretStr("")
    client_ca: str = ""
    cert_file: str = ""
    key_file: str = ""
    client_auth_type: str = ""
    client_ca_file: str = ""
    client_allowed_sans: list[str] | None = None
    min_version: str = "TLS12"
    max_version: str = "TLS13"
    cipher_suites: list[str] = Field(default_factory=list)
    prefer_server_cipher_suites: bool = True
    curve_preferences: list[str] = Field(default_factory=list)

    def enabled(self) -> bool:
        """TLS is on when any certificate, key, CA or client auth setting is given (as in the toolkit)."""
        return any(
            (
                self.cert,
                self.key.get_secret_value(),
                self.client_ca,
                self.cert_file,
                self.key_file,
                self.client_ca_file,
                self.client_auth_type,
            )
        )


class HTTPServerSection(_Section):
    http2: bool = True
    headers: dict[str, str] = Field(default_factory=dict)


class RateLimitSection(_Section):
    interval: str | int | float = 0
    burst: int = 0


class WebConfigFile(_Section):
    tls_server_config: TLSServerSection = Field(default_factory=TLSServerSection)
    http_server_config: HTTPServerSection = Field(default_factory=HTTPServerSection)
    basic_auth_users: dict[str, str] = Field(default_factory=dict)
    rate_limit: RateLimitSection = Field(default_factory=RateLimitSection)

    @field_validator("basic_auth_users", mode="before")
    @classmethod
    def _keys_as_text(cls, value: Any) -> Any:
        """YAML reads ``1234:`` as a number; Go's decoder makes it the user name "1234"."""
        if value is None:
            return {}
        if isinstance(value, dict):
            return {str(k) if isinstance(k, int) and not isinstance(k, bool) else k: v for k, v in value.items()}
        return value


# --- the checked result ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WebConfig:
    """A valid web configuration, ready to serve: the SSL context is built, the hashes are checked."""

    path: Path
    ssl_context: ssl.SSLContext | None
    client_auth_type: str = "NoClientCert"
    allowed_sans: frozenset[str] | None = None
    users: Mapping[bytes, bytes] = field(default_factory=dict)  # user name (UTF-8) -> bcrypt hash
    headers: tuple[tuple[str, str], ...] = ()
    rate_interval: float = 0.0  # seconds per token; 0 disables the limit
    rate_burst: int = 0
    files: tuple[Path, ...] = ()  # the certificate, key and CA files it reads (watched for changes)
    warnings: tuple[str, ...] = ()

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None

    def describe(self) -> str:
        """One line for logs and ``validate-config``."""
        parts = [f"tls: {'on' if self.tls else 'off'}"]
        if self.tls:
            parts.append(f"client auth: {self.client_auth_type}")
        parts.append(f"basic auth users: {len(self.users)}")
        if self.rate_interval:
            parts.append(f"rate limit: {self.rate_burst} burst, 1 per {self.rate_interval:g}s")
        return "; ".join(parts)


class _Problems:
    def __init__(self, path: Path, lines: Mapping[tuple[Any, ...], int]) -> None:
        self.path = path
        self.lines = lines
        self.items: list[str] = []

    def add(self, loc: tuple[Any, ...], message: str) -> None:
        line = None
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in self.lines:
                line = self.lines[loc[:cut]]
                break
        where = f" (line {line})" if line is not None else ""
        self.items.append(f"  {_format_loc(loc)}{where}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            noun = "problem" if len(self.items) == 1 else "problems"
            raise ConfigError(f"{self.path}: {len(self.items)} {noun}:\n" + "\n".join(self.items))


def load_web_config(path: Path) -> WebConfig:
    """Read and check the file, build the server's SSL context; raise ConfigError naming every problem."""
    path = Path(path)
    data, lines = read_yaml(
        path,
        top_level="a mapping (tls_server_config, http_server_config, basic_auth_users, rate_limit)",
        unique_keys=True,
    )
    problems = _Problems(path, lines)
    try:
        raw = WebConfigFile.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown key (not part of the exporter-toolkit web configuration format)"
            problems.add(tuple(err["loc"]), message)
        problems.raise_if_any()
        raise AssertionError("unreachable") from None
    warnings: list[str] = []
    base = path.parent

    users: dict[bytes, bytes] = {}
    for name, hashed in raw.basic_auth_users.items():
        error = bcrypt_problem(hashed)
        if error:
            problems.add(("basic_auth_users", name), error)
        users[name.encode("utf-8")] = hashed.encode("ascii", "replace")

    headers: list[tuple[str, str]] = []
    for name, value in raw.http_server_config.headers.items():
        if name not in ALLOWED_HEADERS:
            problems.add(
                ("http_server_config", "headers", name),
                f"HTTP header {name!r} can not be configured; allowed: {', '.join(ALLOWED_HEADERS)}",
            )
            continue
        allowed = ALLOWED_HEADERS[name]
        if allowed is not None and value not in allowed:
            problems.add(("http_server_config", "headers", name), f"must be one of {', '.join(allowed)}, not {value!r}")
            continue
        if any(c in value for c in "\r\n\0"):
            problems.add(("http_server_config", "headers", name), "the value must not contain line breaks")
            continue
        headers.append((name, value))
    if isinstance(data.get("http_server_config"), dict) and data["http_server_config"].get("http2") is True:
        warnings.append("http_server_config.http2: true is accepted, but this server speaks HTTP/1.x only")

    rate_interval = 0.0
    try:
        rate_interval = parse_go_duration(raw.rate_limit.interval)
    except ValueError as exc:
        problems.add(("rate_limit", "interval"), str(exc))
    if raw.rate_limit.burst < 0:
        problems.add(("rate_limit", "burst"), "must not be negative")
    elif rate_interval > 0 and raw.rate_limit.burst == 0:
        problems.add(("rate_limit", "burst"), "must be at least 1 when rate_limit.interval is set (0 refuses all)")

    tls = raw.tls_server_config
    context: ssl.SSLContext | None = None
    files: list[Path] = []
    client_auth = tls.client_auth_type or "NoClientCert"
    if tls.enabled():
        context = _ssl_context(tls, base, problems, warnings, files)
    elif tls.client_allowed_sans is not None:
        problems.add(("tls_server_config", "client_allowed_sans"), "needs TLS: set cert_file and key_file")
    elif users:
        warnings.append("basic_auth_users without tls_server_config: passwords travel in clear over plain HTTP")
    problems.raise_if_any()
    return WebConfig(
        path=path,
        ssl_context=context,
        client_auth_type=client_auth,
        allowed_sans=frozenset(tls.client_allowed_sans) if tls.client_allowed_sans is not None else None,
        users=users,
        headers=tuple(headers),
        rate_interval=rate_interval,
        rate_burst=raw.rate_limit.burst,
        files=tuple(files),
        warnings=tuple(warnings),
    )


def _join(base: Path, value: str) -> Path:
    """Relative paths resolve against the configuration file's directory (the toolkit's SetDirectory)."""
    path = Path(value)
    return path if path.is_absolute() else base / path


def _read(path: Path, loc: tuple[str, ...], problems: _Problems) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError as exc:
        problems.add(loc, f"cannot read {path}: {exc.strerror}")
        return None


def _ssl_context(
    tls: TLSServerSection, base: Path, problems: _Problems, warnings: list[str], files: list[Path]
) -> ssl.SSLContext | None:
    T = "tls_server_config"
    start = len(problems.items)
    key_text = tls.key.get_secret_value()
    if tls.cert and tls.cert_file:
        problems.add((T, "cert"), "set cert or cert_file, not both")
    if key_text and tls.key_file:
        problems.add((T, "key"), "set key or key_file, not both")
    if tls.client_ca and tls.client_ca_file:
        problems.add((T, "client_ca"), "set client_ca or client_ca_file, not both")
    if not tls.cert and not tls.cert_file:
        problems.add((T,), "missing cert_file (or an inline cert)")
    if not key_text and not tls.key_file:
        problems.add((T,), "missing key_file (or an inline key)")

    client_auth = tls.client_auth_type or "NoClientCert"
    if client_auth not in CLIENT_AUTH_TYPES:
        problems.add(
            (T, "client_auth_type"),
            f"unknown client_auth_type {client_auth!r}; one of: "
            + ", ".join(k for k in CLIENT_AUTH_TYPES if k != "RequireClientCert"),
        )
    for name in ("min_version", "max_version"):
        value = getattr(tls, name)
        if value not in TLS_VERSIONS:
            problems.add((T, name), f"unknown TLS version {value!r}; one of: {', '.join(TLS_VERSIONS)}")
    if tls.min_version in TLS_VERSIONS and tls.max_version in TLS_VERSIONS:
        if TLS_VERSIONS[tls.max_version] < TLS_VERSIONS[tls.min_version]:
            problems.add((T, "max_version"), f"{tls.max_version} is lower than min_version {tls.min_version}")
        elif TLS_VERSIONS[tls.min_version] < ssl.TLSVersion.TLSv1_2:
            warnings.append(
                f"tls_server_config.min_version {tls.min_version}: OpenSSL's security level may still refuse "
                "TLS 1.0 and 1.1"
            )
    for i, name in enumerate(tls.cipher_suites):
        if name not in GO_CIPHERS:
            problems.add((T, "cipher_suites", i), f"unknown cipher suite {name!r} (use Go crypto/tls names)")
    for i, name in enumerate(tls.curve_preferences):
        if name not in GO_CURVES:
            problems.add((T, "curve_preferences", i), f"unknown curve {name!r}; one of: {', '.join(GO_CURVES)}")
    has_ca = bool(tls.client_ca or tls.client_ca_file)
    if client_auth == "NoClientCert" and has_ca:
        problems.add(
            (T, "client_auth_type"),
            "client_ca_file is set but client_auth_type is NoClientCert: set a client auth type that uses it",
        )
    if tls.client_allowed_sans is not None and client_auth not in (
        "RequireAnyClientCert",
        "RequireClientCert",
        "RequireAndVerifyClientCert",
    ):
        problems.add(
            (T, "client_allowed_sans"),
            "needs client_auth_type RequireAndVerifyClientCert (or RequireAnyClientCert)",
        )
    if len(problems.items) > start:
        return None

    # The certificate and key: read once, parsed for clear messages, then loaded into the context.
    cert_path = _join(base, tls.cert_file) if tls.cert_file else None
    key_path = _join(base, tls.key_file) if tls.key_file else None
    cert_loc = (T, "cert_file" if cert_path else "cert")
    key_loc = (T, "key_file" if key_path else "key")
    cert_pem = _read(cert_path, cert_loc, problems) if cert_path else tls.cert.encode()
    key_pem = _read(key_path, key_loc, problems) if key_path else key_text.encode()
    files += [p for p in (cert_path, key_path) if p is not None]
    if cert_pem is not None:
        try:
            x509.load_pem_x509_certificates(cert_pem)
        except ValueError:
            problems.add(cert_loc, f"no PEM certificate in {cert_path or 'the inline cert'}")
            cert_pem = None
    if key_pem is not None:
        try:
            serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            detail = "it is encrypted" if isinstance(exc, TypeError) else "no PEM private key found"
            problems.add(key_loc, f"cannot use the private key in {key_path or 'the inline key'}: {detail}")
            key_pem = None
    if cert_pem is None or key_pem is None:
        return None

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    try:
        _load_chain(context, cert_pem, key_pem, cert_path, key_path)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            problems.add(key_loc, "the private key does not match the certificate")
        else:
            problems.add(cert_loc, f"cannot load the certificate and key: {exc.reason or exc}")
        return None

    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    _set_ciphers(context, tls.cipher_suites, problems, warnings)
    if tls.curve_preferences:
        warnings.append(
            "tls_server_config.curve_preferences is checked but not applied: Python's ssl module cannot set a "
            "list of groups, so OpenSSL's defaults are used"
        )

    mode, wants_ca = CLIENT_AUTH_TYPES[client_auth]
    if client_auth == "RequestClientCert":
        warnings.append(
            "client_auth_type RequestClientCert: Python's ssl module cannot request a certificate without "
            "verifying it, so none is requested (an unverified certificate would not be used anyway)"
        )
    if client_auth in ("RequireAnyClientCert", "RequireClientCert"):
        warnings.append(
            f"client_auth_type {client_auth}: Python's ssl module cannot require a certificate without "
            "verifying it, so it is verified against the client CAs, as with RequireAndVerifyClientCert"
        )
    if wants_ca:
        if tls.client_ca_file:
            ca_path = _join(base, tls.client_ca_file)
            files.append(ca_path)
            ca_pem = _read(ca_path, (T, "client_ca_file"), problems)
            ca_loc: tuple[str, ...] = (T, "client_ca_file")
        else:
            ca_pem, ca_loc = tls.client_ca.encode(), (T, "client_ca")
        if ca_pem is None:
            return None
        if ca_pem:
            try:
                context.load_verify_locations(cadata=ca_pem.decode("ascii", "replace"))
            except (ssl.SSLError, ValueError) as exc:
                problems.add(ca_loc, f"no usable PEM CA certificate: {getattr(exc, 'reason', None) or exc}")
                return None
        else:
            context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
            warnings.append("no client_ca_file: client certificates are verified against the system's CA store")
        context.verify_mode = mode
    return context


def _load_chain(
    context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes, cert_path: Path | None, key_path: Path | None
) -> None:
    """``load_cert_chain`` reads files only: inline PEMs go through a private temporary directory."""
    if cert_path is not None and key_path is not None:
        context.load_cert_chain(str(cert_path), str(key_path))
        return
    with tempfile.TemporaryDirectory(prefix="mailflow-webconfig-") as tmp:
        cert_file, key_file = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        for target, data in ((cert_file, cert_pem), (key_file, key_pem)):
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        context.load_cert_chain(str(cert_file), str(key_file))


def _set_ciphers(context: ssl.SSLContext, names: list[str], problems: _Problems, warnings: list[str]) -> None:
    """Map Go cipher suite names to OpenSSL's (TLS 1.2 and older; TLS 1.3 suites are fixed, as in Go)."""
    usable: list[str] = []
    for name in names:
        openssl_name = GO_CIPHERS[name]
        if openssl_name is None:
            continue
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            probe.set_ciphers(openssl_name)
        except ssl.SSLError:
            warnings.append(f"tls_server_config.cipher_suites: {name} is not available in this OpenSSL; skipped")
            continue
        usable.append(openssl_name)
    if usable:
        context.set_ciphers(":".join(usable))
    elif any(GO_CIPHERS[n] for n in names):
        problems.add(("tls_server_config", "cipher_suites"), "none of these cipher suites is available in OpenSSL")


def bcrypt_problem(hashed: str) -> str | None:
    """Why ``hashed`` is not a usable bcrypt hash, or None (Go's ``bcrypt.Cost`` check, a bit stricter)."""
    if len(hashed) < 59:
        return f"not a bcrypt hash: too short ({_HTPASSWD_HINT})"
    match = _BCRYPT_RE.match(hashed)
    if not match:
        return f"not a bcrypt hash: expected $2a$, $2b$ or $2y$, a cost and 53 characters ({_HTPASSWD_HINT})"
    cost = int(match.group(1))
    if not 4 <= cost <= 31:
        return f"bcrypt cost {cost} is outside the allowed range 4 to 31"
    return None


def parse_go_duration(value: Any) -> float:
    """A Go duration (``1s``, ``100ms``, ``1m30s``) in seconds; 0 (or ``"0"``) means off."""
    if isinstance(value, bool):
        raise ValueError("not a duration: use a Go duration such as '1s' or '100ms'")
    if value == 0 or value == "0":
        return 0.0
    if isinstance(value, str) and value.strip():
        text = value.strip()
        total, pos = 0.0, 0
        for match in _GO_DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _GO_UNITS[match.group(2)]
            pos = match.end()
        if pos == len(text):
            return total
    raise ValueError(f"invalid duration {value!r}: use a Go duration such as '1s', '100ms' or '1m30s' (0 is off)")


def peer_sans(der: bytes) -> set[str]:
    """A certificate's subject alternative names as the toolkit compares them: DNS names, e-mail
    addresses, IP addresses (canonical text) and URIs."""
    try:
        cert = x509.load_der_x509_certificate(der)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return set()
    out = set(san.get_values_for_type(x509.DNSName))
    out |= set(san.get_values_for_type(x509.RFC822Name))
    out |= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    out |= set(san.get_values_for_type(x509.UniformResourceIdentifier))
    return out


# --- basic auth and rate limit -----------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _dummy_hash(cost: int) -> bytes:
    return bcrypt.hashpw(b"mailflow-exporter: not a user", bcrypt.gensalt(cost))


def parse_basic_auth(header: str | None) -> tuple[bytes, bytes] | None:
    """``Authorization: Basic base64(user:password)`` -> (user, password), as Go's ``Request.BasicAuth``."""
    if not header or len(header) < 6 or header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].encode("latin-1"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else None


class AuthVerdict(enum.Enum):
    OK = "ok"
    DENIED = "denied"
    LIMITED = "limited"  # the password needed a bcrypt check and the client may not have one now


class BasicAuth:
    """Checks credentials against bcrypt hashes. An unknown user is checked against a dummy hash of the
    same cost (no user enumeration by timing); bcrypt runs one at a time (it is deliberately CPU-heavy).
    Results are cached per user, hash and password (by digest, so no password is kept), successes and
    failures apart: failures cannot evict a success, so a flood of guesses never sends the real scraper
    back to bcrypt."""

    CACHE_SIZE = 100

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._successes: OrderedDict[bytes, None] = OrderedDict()
        self._failures: OrderedDict[bytes, None] = OrderedDict()

    def check(self, users: Mapping[bytes, bytes], header: str | None) -> tuple[bool, str]:
        """(allowed, user name for logs)."""
        verdict, user = self.verify(users, header)
        return verdict is AuthVerdict.OK, user

    def verify(
        self, users: Mapping[bytes, bytes], header: str | None, may_check: Callable[[], bool] | None = None
    ) -> tuple[AuthVerdict, str]:
        """(verdict, user name for logs). ``may_check`` is asked before a bcrypt check (not for a cached
        answer): False makes the verdict LIMITED without checking."""
        creds = parse_basic_auth(header)
        if creds is None:
            return AuthVerdict.DENIED, ""
        user, password = creds
        name = user.decode("utf-8", "replace")
        hashed = users.get(user)
        known = hashed is not None
        if hashed is None:
            costs = [int(h[4:6]) for h in users.values() if h[4:6].isdigit()]
            hashed = _dummy_hash(max(costs, default=10))
        key = hashlib.sha256(b":".join(part.hex().encode() for part in (user, hashed, password))).digest()
        with self._cache_lock:
            for cache, verdict in ((self._successes, AuthVerdict.OK), (self._failures, AuthVerdict.DENIED)):
                if key in cache:
                    cache.move_to_end(key)
                    return verdict, name
        if may_check is not None and not may_check():
            return AuthVerdict.LIMITED, name
        with self._lock:
            try:
                # bcrypt only ever used the first 72 bytes (htpasswd truncates too); bcrypt>=5 refuses more.
                ok = bcrypt.checkpw(password[:72], hashed) and known  # bcrypt for unknown users too: same timing
            except ValueError:
                ok = False
        with self._cache_lock:
            cache = self._successes if ok else self._failures
            cache[key] = None
            while len(cache) > self.CACHE_SIZE:
                cache.popitem(last=False)
        return (AuthVerdict.OK if ok else AuthVerdict.DENIED), name


class RateLimiter:
    """A token bucket like Go's ``rate.NewLimiter(rate.Every(interval), burst)``, shared by all clients."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._params = (0.0, 0)
        self._tokens = 0.0
        self._last = 0.0

    def allow(self, interval: float, burst: int) -> bool:
        if interval <= 0:
            return True
        with self._lock:
            now = self._clock()
            if self._params != (interval, burst):  # new settings: start full
                self._params, self._tokens, self._last = (interval, burst), float(burst), now
            self._tokens = min(float(burst), self._tokens + (now - self._last) / interval)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False


class ClientRateLimiter:
    """One ``RateLimiter`` per client key (the peer address), for the most recent ``MAX_CLIENTS`` clients."""

    MAX_CLIENTS = 1024

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, RateLimiter] = OrderedDict()

    def allow(self, client: str, interval: float, burst: int) -> bool:
        if interval <= 0:
            return True
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is None:
                bucket = self._buckets[client] = RateLimiter(self._clock)
                while len(self._buckets) > self.MAX_CLIENTS:
                    self._buckets.popitem(last=False)
            self._buckets.move_to_end(client)
        return bucket.allow(interval, burst)


# --- reloading ---------------------------------------------------------------------------------------


class WebConfigReloader:
    """The current configuration: re-read when the file (or a certificate, key or CA file it names)
    changes, checked at most once per ``interval`` seconds. An invalid new version is logged and the last
    good one kept. Switching between HTTP and HTTPS needs a restart (the listener's mode is fixed)."""

    def __init__(self, path: Path, interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._config = load_web_config(self.path)  # invalid at startup: raise, refuse to start
        self._signature = self._sign(self._config.files)
        self._checked = clock()
        self._failed: Any = None
        self.reloads = 0
        self.last_reload_ok = True

    def _sign(self, files: tuple[Path, ...] | list[Path]) -> tuple[Any, ...]:
        try:
            content: Any = self.path.read_bytes()
        except OSError as exc:
            content = ("unreadable", exc.errno)
        stats: list[Any] = []
        for f in files:
            try:
                st = f.stat()
                stats.append((st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns))
            except OSError:
                stats.append(None)
        return (content, tuple(stats))

    def current(self) -> WebConfig:
        with self._lock:
            now = self._clock()
            if now - self._checked < self._interval:
                return self._config
            self._checked = now
            signature = self._sign(self._config.files)
            if signature == self._signature or signature == self._failed:
                return self._config
            try:
                config = load_web_config(self.path)
                if config.tls != self._config.tls:
                    raise ConfigError(
                        f"{self.path}: switching between HTTP and HTTPS needs a restart "
                        f"(the server runs {'HTTPS' if self._config.tls else 'HTTP'})"
                    )
            except ConfigError as exc:
                self._failed = signature
                self.last_reload_ok = False
                log.error("web config reload failed, keeping the previous configuration: %s", exc)
                return self._config
            self._config = config
            self._signature = self._sign(config.files)
            self._failed = None
            self.reloads += 1
            self.last_reload_ok = True
            log.info("web config reloaded path=%s %s", self.path, config.describe())
            for warning in config.warnings:
                log.warning("web config: %s", warning)
            return config
