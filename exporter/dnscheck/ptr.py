"""Reverse DNS of an outbound IP: a PTR exists, is forward-confirmed and matches the HELO name.

Receivers (and Exchange Online) reject or junk mail from IPs whose PTR is missing, generic
(``static-20.isp.example``) or does not resolve back to the IP (FCrDNS).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from exporter.dnscheck.resolver import Answer, DnsClient


@dataclass(frozen=True)
class PtrResult:
    """The PTR check of one IP. ``answer.failed``: nothing is known (resolver fault)."""

    ip: str
    answer: Answer
    names: tuple[str, ...]
    forward_confirmed: bool | None  # None: a forward lookup failed at the resolver
    matches_helo: bool | None  # None: nothing to compare with
    expected_helo: str


def _matches(name: str, helo: str, domains: Sequence[str]) -> bool | None:
    if helo:
        return name == helo.lower().rstrip(".")
    if domains:
        return any(name == d or name.endswith("." + d) for d in (x.lower().rstrip(".") for x in domains))
    return None


def check_ptr(ip: str, client: DnsClient, helo: str = "", domains: Sequence[str] = ()) -> PtrResult:
    """PTR names of ``ip``; forward-confirmed if any name's A/AAAA includes the IP; matches if that
    name equals the expected HELO (or, without one, lies in one of the sending ``domains``)."""
    answer = client.ptr(ip)
    names = tuple(sorted({n.rstrip(".").lower() for n in answer.records})) if answer.ok else ()
    wanted = ipaddress.ip_address(ip)
    confirmed: list[str] = []
    forward_failed = False
    for name in names:
        forward = client.query(name, "A" if wanted.version == 4 else "AAAA")
        forward_failed = forward_failed or forward.failed
        if forward.ok and any(ipaddress.ip_address(a) == wanted for a in forward.records):
            confirmed.append(name)
    matches = None
    if names:
        verdicts = [_matches(n, helo, domains) for n in (confirmed or names)]
        matches = None if all(v is None for v in verdicts) else any(bool(v) for v in verdicts)
    elif helo or domains:
        matches = False if answer.missing else None
    # A forward lookup the resolver failed proves nothing: unknown, not "not confirmed".
    forward_confirmed: bool | None = True if confirmed else (None if forward_failed else False)
    return PtrResult(ip, answer, names, forward_confirmed, matches, helo)
