"""Kerberos (HTTP ``Negotiate``/``Kerberos``) for the simulated endpoints, and WinRM message encryption.

What IIS does for Exchange's ``/PowerShell``, modelled closely enough for pypsrp:

- An unauthenticated request is answered ``401`` with ``WWW-Authenticate: Negotiate`` (plus
  ``Basic realm=...`` when Basic is also enabled). The client's token (``Authorization: Negotiate <b64>``,
  a raw Kerberos AP-REQ or an SPNEGO NegTokenInit carrying one) is accepted by a pyspnego server context
  backed by MIT GSSAPI; the answer carries the mutual-authentication token. The context belongs to the
  TCP connection: later requests on it carry no ``Authorization`` header.
- The acceptor's keys come from a keytab given explicitly (gssapi credential store ``keytab``), not from
  the process-wide ``KRB5_KTNAME``; any service principal in it is accepted (``HTTP/<host>``,
  ``WSMAN/<host>``... as a machine account's keys are), so a ticket for a principal that is not in the
  keytab (a wrong SPN) is rejected.
- The authenticated principal must be one of the scenario's users, compared case-insensitively
  (``svc-mailflow@CONTOSO.SIM`` is the scenario user ``svc-mailflow@contoso.sim``, as an AD UPN maps to
  a principal in the upper-cased realm). Others are refused with 401.
- Over HTTPS the context checks the TLS channel binding (``tls-server-end-point``, RFC 5929) the
  client sends, as IIS with Extended Protection does.
- Message encryption over HTTP (MS-WSMV 2.2.9.1): a ``multipart/encrypted`` body with
  ``protocol="application/HTTP-SPNEGO-session-encrypted"`` (or ``HTTP-Kerberos-session-encrypted``) holds
  the SOAP envelope sealed with the connection's context (``wrap_winrm``); the answer is sealed the same
  way, with the request's protocol. Plain SOAP on an authenticated connection is accepted too.

gssapi/pyspnego are the optional ``kerberos`` extra: they are imported only when Kerberos is enabled.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BOUNDARY",
    "EncryptionError",
    "KerberosAcceptor",
    "KerberosRejected",
    "channel_binding_data",
    "unwrap_message",
    "wrap_message",
]

BOUNDARY = "Encrypted Boundary"
SPNEGO_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
KERBEROS_PROTOCOL = "application/HTTP-Kerberos-session-encrypted"
_PROTOCOLS = {SPNEGO_PROTOCOL.lower(): SPNEGO_PROTOCOL, KERBEROS_PROTOCOL.lower(): KERBEROS_PROTOCOL}
_PARAM_RE = re.compile(r';\s*([A-Za-z-]+)\s*=\s*"?([^";]*)"?')


class KerberosRejected(Exception):
    """The client's token was refused (bad token, no key for the ticket's SPN, wrong channel binding...)."""


class EncryptionError(Exception):
    """An encrypted body could not be parsed or unsealed."""


@dataclass
class GssConnection:
    """The security context of one authenticated TCP connection."""

    context: Any  # spnego.ContextProxy
    user: str
    scheme: str  # "Negotiate" or "Kerberos", as the client sent it


class KerberosAcceptor:
    """Accepts Kerberos tokens with the keys of ``keytab`` (read again for every new context)."""

    def __init__(self, keytab: str | Path) -> None:
        try:
            import gssapi  # noqa: F401
            import spnego  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise RuntimeError(
                "Kerberos in the simulator needs the 'kerberos' extra (pyspnego[kerberos], gssapi)"
            ) from exc
        self.keytab = Path(keytab)
        if not self.keytab.is_file():
            raise FileNotFoundError(f"kerberos keytab {self.keytab} does not exist")

    def new_context(self) -> Any:
        """A fresh acceptor context (pyspnego over MIT GSSAPI; SPNEGO and raw Kerberos tokens)."""
        import gssapi
        import spnego

        try:
            # No mechanism restriction: MIT's own SPNEGO accepts NegTokenInit tokens, krb5 the raw ones.
            credential = gssapi.Credentials(usage="accept", store={"keytab": f"FILE:{self.keytab}"})
        except gssapi.exceptions.GSSError as exc:
            raise KerberosRejected(f"cannot use keytab {self.keytab}: {exc}") from None
        # pyspnego takes a ready GSSAPI credential through this keyword (as its own new_context() does).
        return spnego.server(protocol="kerberos", _gssapi_credential=credential)

    def step(self, context: Any, token: str, binding: bytes | None) -> bytes | None:
        """Feed one base64 token from ``Authorization`` into ``context``; return the answer token."""
        import spnego.channel_bindings
        import spnego.exceptions

        try:
            raw = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise KerberosRejected("the Authorization token is not base64") from None
        if not raw:
            raise KerberosRejected("empty Authorization token")
        bindings = spnego.channel_bindings.GssChannelBindings(application_data=binding) if binding else None
        try:
            out: bytes | None = context.step(raw, channel_bindings=bindings)
        except spnego.exceptions.SpnegoError as exc:
            raise KerberosRejected(str(exc)) from None
        except Exception as exc:  # gssapi errors that pyspnego does not wrap
            raise KerberosRejected(f"{type(exc).__name__}: {exc}") from None
        return out

    @staticmethod
    def user_for(principal: str | None, users: Mapping[str, str]) -> str | None:
        """The scenario user the principal is (case-insensitive full match), or None."""
        if not principal:
            return None
        wanted = principal.lower()
        return next((known for known in users if known.lower() == wanted), None)


def channel_binding_data(cert_file: str | Path) -> bytes:
    """``tls-server-end-point:`` + the hash of the server certificate (RFC 5929 §4.1), as clients send it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    algorithm = cert.signature_hash_algorithm
    if algorithm is None or algorithm.name in ("md5", "sha1"):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(cert.public_bytes(encoding=_der()))
    return b"tls-server-end-point:" + digest.finalize()


def _der() -> Any:
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.DER


def encrypted_protocol(content_type: str) -> str | None:
    """The session-encryption protocol of a ``multipart/encrypted`` content type, else None."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind not in ("multipart/encrypted", "multipart/x-multi-encrypted"):
        return None
    params = {k.lower(): v for k, v in _PARAM_RE.findall(content_type)}
    return _PROTOCOLS.get(params.get("protocol", "").strip().lower(), "")


def unwrap_message(context: Any, body: bytes, content_type: str) -> bytes:
    """The SOAP envelope in an encrypted body (one or more parts), unsealed with ``context``."""
    params = {k.lower(): v for k, v in _PARAM_RE.findall(content_type)}
    boundary = params.get("boundary", BOUNDARY)
    marker = re.compile(rb"--\s*" + re.escape(boundary.encode()) + rb"(?:--)?\r\n")
    parts = [p for p in marker.split(body) if p]
    if len(parts) < 2 or len(parts) % 2:
        raise EncryptionError("the encrypted body does not have header/data part pairs")
    message = b""
    for header, payload in zip(parts[0::2], parts[1::2], strict=True):
        match = re.search(rb"Length=(\d+)", header)
        if match is None:
            raise EncryptionError("an encrypted part has no OriginalContent Length")
        expected = int(match.group(1))
        prefix = b"\tContent-Type: application/octet-stream\r\n"
        if not payload.startswith(prefix):
            raise EncryptionError("an encrypted part is not application/octet-stream")
        data = payload[len(prefix) :]
        if len(data) < 4:
            raise EncryptionError("an encrypted part is truncated")
        header_length = struct.unpack("<i", data[:4])[0]
        if header_length < 0 or 4 + header_length > len(data):
            raise EncryptionError("an encrypted part has an impossible signature length")
        try:
            plain = context.unwrap_winrm(data[4 : 4 + header_length], data[4 + header_length :])
        except Exception as exc:
            raise EncryptionError(f"cannot unseal the message: {type(exc).__name__}: {exc}") from None
        if len(plain) != expected:
            raise EncryptionError(f"unsealed length {len(plain)} != declared {expected}")
        message += plain
    return message


def wrap_message(context: Any, message: bytes, protocol: str) -> tuple[str, bytes]:
    """(content type, body) of ``message`` sealed with ``context`` as one ``multipart/encrypted`` part."""
    result = context.wrap_winrm(message)
    sealed = struct.pack("<i", len(result.header)) + result.header + result.data
    head = "\r\n".join(
        [
            f"--{BOUNDARY}",
            f"\tContent-Type: {protocol}",
            f"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={len(message) + result.padding_length}",
            f"--{BOUNDARY}",
            "\tContent-Type: application/octet-stream",
            "",
        ]
    ).encode()
    content_type = f'multipart/encrypted;protocol="{protocol}";boundary="{BOUNDARY}"'
    return content_type, head + sealed + f"--{BOUNDARY}--\r\n".encode()
