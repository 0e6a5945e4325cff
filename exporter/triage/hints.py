"""Findings whose wording needs care: certificates whose bindings are unknown, blocklists that
cannot be used, recipients rejected as unknown (counted per status code, correlated with the
accepted domains that just changed and the email address policies that generate their addresses).

The functions here build the findings; ``rules.py`` registers them (its rule functions carry the
triggers in their docstrings, which docs/triage.md repeats). This module imports only the model, the
facts, ``rules_policy`` (which imports no more than that) and the severity table, where every
severity comes from, so the triage package has no import circle.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from exporter.triage.facts import Facts
from exporter.triage.model import Finding
from exporter.triage.rules_policy import address_policy_evidence
from exporter.triage.severity import severity

#: A blocklist answer that cannot be used, grouped per zone and reason: the fix is the same for every IP.
_RESOLVER_FIX = (
    "Point dns.resolvers at a resolver of your own (a local caching resolver, not 8.8.8.8/1.1.1.1 or "
    "your ISP's shared one), or use the list's registered service (Spamhaus DQS with a key: "
    "<key>.zen.dq.spamhaus.net)"
)
_FIXES = {
    "public_resolver": _RESOLVER_FIX,
    "rate_limited": _RESOLVER_FIX,
    "query_refused": _RESOLVER_FIX,
    "zone_name_typo": "Correct the zone name in dns.blocklists (zen.spamhaus.org, not zen.spamhaus.com)",
    "ip_query_not_allowed": "Remove the domain list from dns.blocklists: it lists domains, not IPs",
    "query_error": "Read the list's documentation for the code; until then the IPs are not checked against it",
    "bad_answer": (
        "The resolver rewrites NXDOMAIN (an ISP 'search' resolver) or the zone is no DNSBL: use a resolver "
        "that returns real answers, and check the zone name"
    ),
    "test_point_not_listed": "Check the zone name in dns.blocklists and whether the list still exists",
    "lists_everything": "Remove the list from dns.blocklists: it is dead and answers 'listed' for every IP",
}
_UNREACHABLE_FIX = "Check that the resolver in dns.resolvers answers and can reach the list's name servers"
_REFUSES = "it refuses queries from this resolver"
_TITLES = {
    "public_resolver": _REFUSES,
    "rate_limited": _REFUSES,
    "query_refused": _REFUSES,
    "zone_name_typo": "the zone name is wrong",
    "ip_query_not_allowed": "it is a domain list",
    "query_error": "it answers an error code",
    "bad_answer": "its answers are not blocklist answers",
    "test_point_not_listed": "it does not list its test address",
    "lists_everything": "it lists every address",
}


def certificate_findings(facts: Facts) -> list[Finding]:
    """Expired and expiring certificates bound to SMTP or IIS, or with unknown services (see rules)."""
    out = []
    now = facts.now
    for r in facts.all("certificates"):
        for c in r.certificates:
            mail = c.carries_mail
            if mail is False:
                continue
            days = (c.not_after.timestamp() - now) / 86400
            if days >= 30:
                continue
            expired = days < 0
            when = f"{'expired' if expired else 'expires'} {c.not_after:%Y-%m-%d} ({days:.0f} days)"
            renew = (
                "Renew, Import-ExchangeCertificate on every server, Enable-ExchangeCertificate -Services "
                "SMTP,IIS, and update connectors' TlsCertificateName."
            )
            evidence: tuple[str, ...]
            if mail is None:
                # An old certificate left in the store is common; one still bound to SMTP stops TLS. Not
                # knowing which, report it as MailflowCertificateExpiring does (the table's severity for
                # expiring or expired, as for a bound one) and say how to find out.
                evidence = (
                    f"{c.subject} ({c.thumbprint}): {when}",
                    "services unknown: Get-ExchangeCertificate returned only the certificate (RawData), not "
                    "what it is bound to (the session refused Select-Object)",
                )
                step = (
                    f"Check its bindings: Get-ExchangeCertificate -Server {c.server} -Thumbprint {c.thumbprint} "
                    "| fl Services,NotAfter. Bound to SMTP or IIS: " + renew + " Bound to nothing: remove it "
                    "(Remove-ExchangeCertificate) so it stops alerting."
                )
                suffix = " (services unknown)"
            else:
                evidence = (f"{c.subject} ({c.thumbprint}) bound to {c.services}: {when}",)
                step = renew
                suffix = ""
            finding = "certificate_expired" if expired else "certificate_expiring"
            out.append(
                Finding(
                    finding,
                    severity(finding),
                    "health",
                    ("inbound", "outbound"),
                    f"{'Expired' if expired else 'Expiring'} certificate on {c.server}: {c.subject}{suffix}",
                    evidence,
                    step,
                    "certificate-expiring",
                    int(-days),
                )
            )
    return out


def unusable_blocklists(facts: Facts) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """``{(zone, reason): [(ip, explanation), ...]}`` of every blocklist answer that cannot be used."""
    out: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for r in sorted(facts.all("dns_ips"), key=lambda r: r.ip):
        for b in r.dnsbl:
            if not b.ok:
                out.setdefault((b.zone, b.verdict), []).append((r.ip, b.explain()))
    return out


def unchecked_blocklists(facts: Facts) -> tuple[str, ...]:
    """The "could not check" lines of unusable blocklists: one per list and reason, naming the IPs."""
    return tuple(
        f"dnsbl {zone}: {items[0][1]} (not checked: {', '.join(ip for ip, _ in items)})"
        for (zone, _reason), items in sorted(unusable_blocklists(facts).items())
    )


def blocklist_findings(facts: Facts) -> list[Finding]:
    """One finding per list that gave no usable answer: its IPs are neither listed nor clean."""
    out = []
    for (zone, reason), items in sorted(unusable_blocklists(facts).items()):
        ips = [ip for ip, _ in items]
        fix = _FIXES.get(reason, _UNREACHABLE_FIX)
        out.append(
            Finding(
                "blocklist_unusable",
                severity("blocklist_unusable"),
                "monitoring",
                (),
                f"Blocklist {zone} could not be checked: {_TITLES.get(reason, 'the resolver could not query it')}",
                (items[0][1], f"not checked against {zone}, neither listed nor clean: {', '.join(ips)}"),
                f"{fix}. Until then a listing on {zone} goes unseen.",
                "blocklist-unusable",
                len(ips),
            )
        )
    return out


#: What each recipient-unknown enhanced status code says, from Microsoft's NDR tables ("DSNs and NDRs
#: in Exchange Server", "Email non-delivery reports in Exchange Online") and RFC 3463.
UNKNOWN_CODES = {
    "5.1.1": "recipient not found (RESOLVER.ADR.RecipNotFound / ExRecipNotFound, User unknown)",
    "4.1.1": "recipient not found, temporarily (bad destination mailbox address)",
    "5.1.10": "recipient not found by SMTP address lookup (RESOLVER.ADR.RecipientNotFound)",
    "5.4.1": "recipient address rejected: Access denied (Directory Based Edge Blocking)",
    "5.5.0": "mailbox unavailable",
    "": "recipient unknown, no enhanced status code",
}


def _covers(accepted: str, domain: str) -> bool:
    """Whether an accepted domain (``contoso.com``, ``*.contoso.com``, ``*``) covers ``domain``."""
    if accepted == "*":
        return True
    if accepted.startswith("*."):
        return domain == accepted[2:] or domain.endswith(accepted[1:])
    return domain == accepted


def _most_first(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """``(key, count)`` by count, largest first; ties by key, so a title reads the same on every run."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _codes_text(by_code: Mapping[str, int]) -> str:
    return ", ".join(f"{n} with {code or 'no code'}" for code, n in _most_first(by_code))


def _who(recipients: int) -> str:
    return "Recipients in our domains" if recipients else "Messages to internal recipients"


def _ago(seconds: float) -> str:
    minutes = max(0, round(seconds / 60))
    return f"{minutes} minutes ago" if minutes < 120 else f"{minutes / 60:.0f} hours ago"


def recipient_unknown_findings(facts: Facts, recent: float, hint: str) -> list[Finding]:
    """Recipients in the organisation's own accepted domains rejected as unknown (see rules).

    Counts are exact and per code: messages in internal queues whose LastError is recipient_unknown,
    and recipients of this tracking window's FAIL events, by enhanced status code and recipient
    domain. Recipients outside the accepted domains were refused by their own servers (a typo, a
    partner's directory): counted apart, not ours to fix.
    """
    queues = [
        q
        for r in facts.all("queues")
        for q in r.queues
        if q.kind == "delivery"
        and q.message_count
        and q.next_hop_category == "Internal"
        and q.last_error is not None
        and q.last_error.category == "recipient_unknown"
    ]
    domains = [d for r in facts.all("accepted_domains") for d in r.domains]
    known = bool(facts.of("accepted_domains"))
    ours: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))  # domain -> code -> recipients
    theirs = 0
    for r in facts.all("tracking"):
        for (code, domain), n in r.window_unknown_recipients.items():
            if not known or any(_covers(d.domain, domain) for d in domains):
                ours[domain][code] += n
            else:
                theirs += n
    by_code: dict[str, int] = defaultdict(int)
    for codes in ours.values():
        for code, n in codes.items():
            by_code[code] += n
    recipients = sum(by_code.values())
    if not queues and recipients < 10:
        return []
    queued: dict[str, int] = defaultdict(int)
    for q in queues:
        queued[q.last_error.enhanced_code] += q.message_count
    window = max((r.window_seconds for r in facts.all("tracking")), default=0.0) / 60
    evidence: list[str] = []
    for code, n in _most_first(by_code):
        meaning = UNKNOWN_CODES.get(code, "recipient unknown")
        evidence.append(
            f"{n} recipient(s) rejected with {code or 'no code'} in the last {window:.0f} minutes of tracking log: "
            f"{meaning}"
        )
    for domain, codes in sorted(ours.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])):
        evidence.append(f"{domain or 'recipient domain not logged'}: {sum(codes.values())} ({_codes_text(codes)})")
    for code, n in _most_first(queued):
        evidence.append(f"{n} message(s) in internal queues whose LastError is {code or 'without a code'}")
    evidence += [
        f"{q.server}: {q.message_count} message(s) to {q.next_hop_domain or '?'} ({q.status}): "
        f"{q.last_error.response[:160]}"
        for q in sorted(queues, key=lambda q: -q.message_count)[:4]
    ]
    if theirs:
        evidence.append(f"not counted: {theirs} recipient(s) outside the accepted domains (refused by their servers)")
    if not known and recipients:
        evidence.append("the accepted domains could not be read: recipients of other domains may be counted")
    changed = sorted(
        (d for d in domains if d.changed is not None and facts.now - d.changed.timestamp() < recent),
        key=lambda d: -d.changed.timestamp() if d.changed else 0,
    )
    hit = [d for d in changed if any(_covers(d.domain, dom) for dom in ours)]
    for d in hit + [d for d in changed if d not in hit]:
        assert d.changed is not None
        why = "its recipients are rejected" if d in hit else "none of the rejected recipients is in it"
        evidence.append(
            f"accepted domain {d.domain} ({d.domain_type}) changed {d.changed:%Y-%m-%d %H:%M} UTC, "
            f"{_ago(facts.now - d.changed.timestamp())}: {why}"
        )
    policy_lines, policies_changed = address_policy_evidence(facts, ours)
    evidence += policy_lines
    # The title counts one thing: recipients when tracking saw them, else the queued messages.
    breakdown = _codes_text(by_code) if recipients else _codes_text(queued).replace(" with ", " queued with ")
    step = hint
    if hit:
        names = ", ".join(d.domain for d in hit)
        first = hit[0]
        title = f"Recipients in {names} are rejected as unknown since the accepted domain changed ({breakdown})"
        step = (
            f"The accepted domain {names} changed {_ago(facts.now - first.changed.timestamp())} "
            f'and its recipients are rejected since: check it first (Get-AcceptedDomain "{first.name or first.domain}" '
            "| fl DomainType,WhenChanged: an Authoritative domain rejects every recipient Exchange does not find "
            "in AD, an InternalRelay one forwards them), then the email address policies (Get-EmailAddressPolicy). "
            + hint
        )
    elif policies_changed:
        names = ", ".join(policies_changed)
        title = (
            f"{_who(recipients)} are rejected as unknown since the email address policy {names} changed ({breakdown})"
        )
        step = (
            f"The email address policy {names} changed recently: check which domains it still generates addresses in "
            f'(Get-EmailAddressPolicy "{policies_changed[0]}" | fl EnabledEmailAddressTemplates,RecipientFilterApplied,'
            "WhenChanged) against the accepted domains (Get-AcceptedDomain), and whether the rejected addresses "
            "still exist (Get-Recipient <address>). " + hint
        )
    elif changed:
        title = f"{_who(recipients)} are rejected as unknown ({breakdown})"
        step = (
            f"Accepted domains changed recently ({', '.join(d.domain for d in changed)}): check them and the email "
            "address policies first. " + hint
        )
    else:
        title = f"{_who(recipients)} are rejected as unknown ({breakdown})"
    return [
        Finding(
            "internal_recipient_unknown",
            severity("internal_recipient_unknown"),
            "queues",
            ("internal",),
            title,
            tuple(evidence),
            step,
            "recipient_unknown",
            recipients + sum(queued.values()),
        )
    ]
