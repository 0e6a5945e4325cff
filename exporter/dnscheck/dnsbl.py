"""DNS blocklists: is an outbound IP listed, and is the answer a listing at all?

A listing is an A record in 127.0.0.0/8 for the reversed IP under the list's zone (RFC 5782).
Several lists answer with reserved codes instead of refusing outright, and those are errors of the
query, not listings: Spamhaus 127.255.255.252 (typo or unsupported query), 127.255.255.254 (query
through a public/open resolver), 127.255.255.255 (too many queries); SURBL/URIBL-style 127.0.0.1
(query refused). Any answer outside 127.0.0.0/8 means a resolver rewrote NXDOMAIN (ad-serving ISP
resolvers), so the list cannot be used through it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from exporter.dnscheck.resolver import DnsClient

LISTED = "listed"
NOT_LISTED = "not_listed"
ERROR_CODES = {
    "127.255.255.252": "unsupported_query",
    "127.255.255.254": "query_refused",
    "127.255.255.255": "rate_limited",
    "127.0.0.1": "query_refused",
}


@dataclass(frozen=True)
class DnsblResult:
    """One IP against one zone. ``verdict``: listed, not_listed, or an error reason."""

    ip: str
    zone: str
    verdict: str
    codes: tuple[str, ...]
    reason_text: str

    @property
    def ok(self) -> bool:
        return self.verdict in (LISTED, NOT_LISTED)


def query_name(ip: str, zone: str) -> str:
    """``192.0.2.20`` + ``zen.example`` -> ``20.2.0.192.zen.example`` (IPv6: reversed nibbles)."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        return ".".join(reversed(str(addr).split("."))) + "." + zone
    return ".".join(reversed(addr.exploded.replace(":", ""))) + "." + zone


def check_dnsbl(ip: str, zone: str, client: DnsClient) -> DnsblResult:
    """Query one list for one IP and classify the answer."""
    name = query_name(ip, zone)
    answer = client.query(name, "A")
    if answer.missing:
        return DnsblResult(ip, zone, NOT_LISTED, (), "")
    if answer.failed:
        return DnsblResult(ip, zone, answer.status, (), answer.detail)
    codes = answer.records
    errors = [ERROR_CODES[c] for c in codes if c in ERROR_CODES]
    if errors:
        return DnsblResult(ip, zone, errors[0], codes, "")
    if not all(ipaddress.ip_address(c) in ipaddress.ip_network("127.0.0.0/8") for c in codes):
        return DnsblResult(ip, zone, "bad_answer", codes, "")
    txt = client.query(name, "TXT")
    return DnsblResult(ip, zone, LISTED, codes, txt.records[0][:200] if txt.ok and txt.records else "")
