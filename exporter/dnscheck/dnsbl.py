"""DNS blocklists: is an outbound IP listed, and can the list's answer be trusted at all?

A listing is an A record in 127.0.0.0/8 for the reversed IP under the list's zone (RFC 5782). A
list that cannot be used must never read as "not listed" (nor as "listed"): the verdict is then a
reason, reported as "could not check".

* Error codes, which lists answer instead of refusing outright (never a listing):

  - Spamhaus reserves 127.255.255.0/24 for errors of the query itself ("should NOT be interpreted as
    any sort of reputation", spamhaus.org/news/article/788, 2019): 127.255.255.252 typing error in
    the DNSBL name, 127.255.255.254 query via a public/open resolver (or generic, unattributable
    rDNS), 127.255.255.255 excessive number of queries (spamhaus.com "help for Spamhaus Project's
    legacy blocklist users"; the DNSBL usage FAQ). Other codes of that range: ``query_error``.
  - Spamhaus DBL 127.0.1.255: IP queries are not allowed (a domain list was given an IP;
    docs.spamhaus.com, datasets "Available zones").
  - URIBL 127.0.0.1: query refused (volume, or a shared/public resolver; uribl.com/refused.shtml).

* Any answer outside 127.0.0.0/8: a resolver rewrote NXDOMAIN (ISP "search" resolvers) or the zone
  is no DNSBL: ``bad_answer``.
* The RFC 5782 section 5 test points, asked only when they decide the verdict: a list MUST list
  127.0.0.2 and MUST NOT list 127.0.0.1 (``::FFFF:7F00:2`` / ``::FFFF:7F00:1`` for IPv6 lists). A
  zone that does not list 127.0.0.2 (a typo outside Spamhaus' zones, a list that was shut down)
  answers NXDOMAIN for every IP, so its "not listed" is ``test_point_not_listed``; a zone that lists
  127.0.0.1 lists everything (a dead zone parked on a wildcard), so its "listed" is
  ``lists_everything``. [Inferred: that every configured list publishes its test points, as the
  RFC requires; one that does not is reported as could-not-check, never as clean.]
* The resolver's own failures (timeout, servfail, refused, error) keep their status.

When an error code came back, the list's TXT answer (Spamhaus and URIBL explain the refusal there,
naming the resolver they saw) is kept as ``reason_text``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from exporter.dnscheck.resolver import Answer, DnsClient

LISTED = "listed"
NOT_LISTED = "not_listed"

#: Return codes that are errors of the query, not listings -> reason.
ERROR_CODES = {
    "127.255.255.252": "zone_name_typo",
    "127.255.255.254": "public_resolver",
    "127.255.255.255": "rate_limited",
    "127.0.1.255": "ip_query_not_allowed",
    "127.0.0.1": "query_refused",
}
_ERROR_RANGE = ipaddress.ip_network("127.255.255.0/24")
_LISTING_RANGE = ipaddress.ip_network("127.0.0.0/8")

#: Every reason a list's answer cannot be used (the bounded values of the ``reason`` label), and
#: what it means, for people: ``{zone} {text}`` reads as a sentence; ``{code}`` is the answer.
REASONS: dict[str, str] = {
    "public_resolver": "refuses queries from this resolver ({code}: query via a public/open resolver)",
    "rate_limited": "refuses queries from this resolver ({code}: excessive number of queries)",
    "query_refused": "refuses queries from this resolver ({code}: query refused)",
    "zone_name_typo": "answers {code}: typing error in the DNSBL name (no such list)",
    "ip_query_not_allowed": "answers {code}: it is a domain list, IP queries are not allowed",
    "query_error": "answers {code}, an error code of the query (127.255.255.0/24), not a listing",
    "bad_answer": "answers {code}, outside 127.0.0.0/8: a resolver rewrites NXDOMAIN, or the zone is no DNSBL",
    "test_point_not_listed": (
        "does not list its RFC 5782 test address 127.0.0.2: the zone name is wrong or the list is gone, "
        "so its 'not listed' means nothing"
    ),
    "lists_everything": (
        "lists 127.0.0.1, which RFC 5782 says no list may list: it answers 'listed' for everything "
        "(a dead zone on a wildcard)"
    ),
    "timeout": "could not be queried: the resolver timed out{code}",
    "servfail": "could not be queried: the resolver answered SERVFAIL{code}",
    "refused": "could not be queried: the resolver refused the query{code}",
    "error": "could not be queried{code}",
}


@dataclass(frozen=True)
class DnsblResult:
    """One IP against one zone. ``verdict``: listed, not_listed, or a reason from :data:`REASONS`."""

    ip: str
    zone: str
    verdict: str
    codes: tuple[str, ...]
    reason_text: str

    @property
    def ok(self) -> bool:
        return self.verdict in (LISTED, NOT_LISTED)

    def explain(self) -> str:
        """Why the answer is unusable, as a sentence naming the zone ("" for a usable answer):
        ``zen.spamhaus.org refuses queries from this resolver (127.255.255.254: query via a
        public/open resolver)``."""
        if self.ok:
            return ""
        template = REASONS.get(self.verdict, "gave no usable answer ({code})")
        code = ", ".join(self.codes)
        if self.verdict in ("timeout", "servfail", "refused", "error"):
            code = f" ({self.reason_text})" if self.reason_text else ""
        text = f"{self.zone} {template.format(code=code)}"
        if self.reason_text and self.codes:
            text += f'; its TXT says "{self.reason_text}"'
        return text


def query_name(ip: str, zone: str) -> str:
    """``192.0.2.20`` + ``zen.example`` -> ``20.2.0.192.zen.example`` (IPv6: reversed nibbles)."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        return ".".join(reversed(str(addr).split("."))) + "." + zone
    return ".".join(reversed(addr.exploded.replace(":", ""))) + "." + zone


def _test_point(ip: str, listed: bool) -> str:
    """RFC 5782 section 5: 127.0.0.2 must be listed, 127.0.0.1 must not (IPv6 lists: ::FFFF:7F00:x)."""
    last = 2 if listed else 1
    return f"127.0.0.{last}" if ipaddress.ip_address(ip).version == 4 else f"::ffff:7f00:{last}"


def _error_reason(codes: tuple[str, ...]) -> str | None:
    for code in codes:
        if code in ERROR_CODES:
            return ERROR_CODES[code]
    for code in codes:
        try:
            if ipaddress.ip_address(code) in _ERROR_RANGE:
                return "query_error"
        except ValueError:
            continue
    return None


def _outside(codes: tuple[str, ...]) -> bool:
    for code in codes:
        try:
            if ipaddress.ip_address(code) not in _LISTING_RANGE:
                return True
        except ValueError:
            return True
    return False


def _txt(client: DnsClient, name: str) -> str:
    txt = client.query(name, "TXT")
    return txt.records[0][:200] if txt.ok and txt.records else ""


def _listing(answer: Answer) -> bool | None:
    """True: a valid listing code; False: a real absence; None: anything else (error, failure)."""
    if answer.missing:
        return False
    if answer.ok and _error_reason(answer.records) is None and not _outside(answer.records):
        return True
    return None


def check_dnsbl(ip: str, zone: str, client: DnsClient) -> DnsblResult:
    """Query one list for one IP and classify the answer (see the module docstring)."""
    name = query_name(ip, zone)
    answer = client.query(name, "A")
    if answer.failed:
        return DnsblResult(ip, zone, answer.status, (), answer.detail)
    if answer.missing:
        test = client.query(query_name(_test_point(ip, listed=True), zone), "A")
        if test.failed:
            return DnsblResult(ip, zone, test.status, (), f"test point 127.0.0.2: {test.detail or test.status}")
        if _listing(test) is not True:
            return DnsblResult(ip, zone, "test_point_not_listed", test.records, "")
        return DnsblResult(ip, zone, NOT_LISTED, (), "")
    codes = answer.records
    reason = _error_reason(codes)
    if reason is not None:
        return DnsblResult(ip, zone, reason, codes, _txt(client, name))
    if _outside(codes):
        return DnsblResult(ip, zone, "bad_answer", codes, "")
    # A listing is believed unless the zone also lists the address no list may list; a failed
    # check of that test point keeps the listing (a false "not listed" would hide a real one).
    if _listing(client.query(query_name(_test_point(ip, listed=False), zone), "A")) is True:
        return DnsblResult(ip, zone, "lists_everything", codes, "")
    return DnsblResult(ip, zone, LISTED, codes, _txt(client, name))
