"""Domain mail policies published in DNS: DMARC (RFC 7489), MTA-STS (RFC 8461), TLS-RPT (RFC 8460)."""

from __future__ import annotations

from dataclasses import dataclass

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

    @property
    def dmarc_policy(self) -> str:
        """``none``/``quarantine``/``reject``, ``invalid`` for a record without a valid p=, ``missing``."""
        if not self.dmarc.present:
            return "missing" if self.dmarc.count == 0 else "invalid"
        policy = self.dmarc.tags.get("p", "").lower()
        return policy if policy in DMARC_POLICIES else "invalid"


def check_policies(domain: str, client: DnsClient) -> PolicyResult:
    """Look up ``_dmarc``, ``_mta-sts`` and ``_smtp._tls`` of the domain."""
    return PolicyResult(
        dmarc=_lookup(client, f"_dmarc.{domain}", "DMARC1"),
        mta_sts=_lookup(client, f"_mta-sts.{domain}", "STSv1"),
        tls_rpt=_lookup(client, f"_smtp._tls.{domain}", "TLSRPTv1"),
    )
