"""MX: records exist, each host resolves, they match the expected set, null MX (RFC 7505) noted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from exporter.dnscheck.resolver import OK, Answer, DnsClient, combine_status


@dataclass(frozen=True)
class MxHost:
    """One MX target and whether it resolves (A or AAAA)."""

    preference: int
    host: str
    status: str  # resolver status of the host's A/AAAA lookups
    addresses: tuple[str, ...]

    @property
    def resolves(self) -> bool:
        return self.status == OK


@dataclass(frozen=True)
class MxResult:
    """The MX check of one domain. ``answer.failed``: nothing is known (resolver fault)."""

    domain: str
    answer: Answer
    hosts: tuple[MxHost, ...]
    null_mx: bool
    expected_match: bool | None  # None: no expectation configured

    @property
    def records(self) -> int:
        return 0 if self.null_mx else len(self.hosts)


def check_mx(domain: str, client: DnsClient, expected: Sequence[str] | None = None) -> MxResult:
    """Look up MX, resolve every host, compare with ``expected`` (host names, order-insensitive)."""
    answer = client.query(domain, "MX")
    hosts: list[MxHost] = []
    null_mx = False
    if answer.ok:
        for record in answer.records:
            pref_text, _, host = record.partition(" ")
            host = host.rstrip(".").lower()
            if host in ("", "."):
                null_mx = True
                continue
            a, aaaa = client.addresses(host)
            hosts.append(MxHost(int(pref_text), host, combine_status(a, aaaa), a.records + aaaa.records))
    unique: dict[str, MxHost] = {}
    for h in sorted(hosts, key=lambda h: (h.preference, h.host)):
        unique.setdefault(h.host, h)  # the same host at two preferences is one host
    hosts = list(unique.values())
    match = None
    if expected is not None and not answer.failed:
        match = {h.lower().rstrip(".") for h in expected} == {h.host for h in hosts}
    return MxResult(domain, answer, tuple(hosts), null_mx, match)
