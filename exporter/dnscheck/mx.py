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
    addresses: tuple[str, ...]  # its IPv4 addresses; IPv6 ones only when it has no A record

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
    more_hosts: tuple[str, ...] = ()  # beyond max_hosts (least preferred): not resolved, no series

    @property
    def records(self) -> int:
        return 0 if self.null_mx else len(self.hosts) + len(self.more_hosts)

    @property
    def names(self) -> list[str]:
        """Every MX host name, most preferred first (the cap left out none)."""
        return [*(h.host for h in self.hosts), *self.more_hosts]


def check_mx(domain: str, client: DnsClient, expected: Sequence[str] | None = None, max_hosts: int = 20) -> MxResult:
    """Look up MX, resolve the ``max_hosts`` most preferred hosts (a label each: the cap bounds the
    series and the lookups), compare every host with ``expected`` (names, order-insensitive)."""
    answer = client.query(domain, "MX")
    records: dict[str, int] = {}
    null_mx = False
    if answer.ok:
        for record in answer.records:
            pref_text, _, host = record.partition(" ")
            host = host.rstrip(".").lower()
            if host in ("", "."):
                null_mx = True
                continue
            # The same host at two preferences is one host, at its best preference.
            records[host] = min(records.get(host, int(pref_text)), int(pref_text))
    ordered = sorted(records, key=lambda h: (records[h], h))
    hosts: list[MxHost] = []
    for host in ordered[:max_hosts]:
        a = client.query(host, "A")
        # An A record answers "does it resolve?"; AAAA is asked only without one (a query less per host).
        answers = (a,) if a.ok else (a, client.query(host, "AAAA"))
        hosts.append(
            MxHost(records[host], host, combine_status(*answers), tuple(r for x in answers for r in x.records))
        )
    match = None
    if expected is not None and not answer.failed:
        match = {h.lower().rstrip(".") for h in expected} == set(ordered)
    return MxResult(domain, answer, tuple(hosts), null_mx, match, tuple(ordered[max_hosts:]))
