"""Domain mail policies published in DNS: DMARC (RFC 7489), MTA-STS (RFC 8461), TLS-RPT (RFC 8460).

A domain without its own DMARC record is covered by its organizational domain's (RFC 7489 6.6.3): the
receiver looks up ``_dmarc.<organizational domain>`` and applies its ``sp=`` (else ``p=``). Accepted
domains are often subdomains (``mail.contoso.com``, ``eu.contoso.com``), so treating them as missing
would page on a protected domain. The organizational domain comes from the Public Suffix List.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from publicsuffixlist import PublicSuffixList

from exporter.dnscheck.resolver import Answer, DnsClient

DMARC_POLICIES = ("none", "quarantine", "reject")


@dataclass(frozen=True)
class PolicyRecord:
    """One policy TXT lookup: the answer, how many records carry the version tag, the tags of the first."""

    answer: Answer
    count: int
    tags: dict[str, str]

    @property
    def present(self) -> bool:
        return self.count == 1


def _tags(record: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in record.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key.strip():
            out.setdefault(key.strip().lower(), value.strip())
    return out


def _lookup(client: DnsClient, name: str, version: str) -> PolicyRecord:
    answer = client.query(name, "TXT")
    records = [r for r in answer.records if r.replace(" ", "").lower().startswith(f"v={version.lower()}")]
    return PolicyRecord(answer, len(records), _tags(records[0]) if records else {})


@dataclass(frozen=True)
class PolicyResult:
    """DMARC, MTA-STS and TLS-RPT of one domain."""

    dmarc: PolicyRecord
    mta_sts: PolicyRecord
    tls_rpt: PolicyRecord
    #: The organizational domain whose DMARC record covers this domain ("" when the domain has its own).
    dmarc_inherited_from: str = ""

    @property
    def dmarc_policy(self) -> str:
        """The policy a receiver applies: ``none``/``quarantine``/``reject``; ``invalid`` for a record
        without a valid p=; ``missing``. For an inherited record, its ``sp=`` when valid, else ``p=``."""
        if not self.dmarc.present:
            return "missing" if self.dmarc.count == 0 else "invalid"
        policy = self.dmarc.tags.get("p", "").lower()
        if policy not in DMARC_POLICIES:
            return "invalid"
        subdomain_policy = self.dmarc.tags.get("sp", "").lower()
        if self.dmarc_inherited_from and subdomain_policy in DMARC_POLICIES:
            return subdomain_policy
        return policy


@functools.cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """The registrable domain (public suffix plus one label) of ``domain``; the domain itself when it
    is a public suffix or unknown to the list's rules."""
    name = domain.rstrip(".").lower()
    return _psl().privatesuffix(name) or name


def check_policies(domain: str, client: DnsClient) -> PolicyResult:
    """Look up ``_dmarc`` (falling back to the organizational domain's), ``_mta-sts`` and ``_smtp._tls``."""
    dmarc = _lookup(client, f"_dmarc.{domain}", "DMARC1")
    inherited = ""
    organizational = organizational_domain(domain)
    # Only a real absence falls back: a resolver fault is not "no record" (and a broken own record
    # is what receivers see, so it is not overridden either).
    if dmarc.count == 0 and not dmarc.answer.failed and organizational != domain.rstrip(".").lower():
        parent = _lookup(client, f"_dmarc.{organizational}", "DMARC1")
        if parent.count or parent.answer.failed:
            dmarc, inherited = parent, organizational
    return PolicyResult(
        dmarc=dmarc,
        mta_sts=_lookup(client, f"_mta-sts.{domain}", "STSv1"),
        tls_rpt=_lookup(client, f"_smtp._tls.{domain}", "TLSRPTv1"),
        dmarc_inherited_from=inherited,
    )
