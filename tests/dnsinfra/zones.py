"""Test zones for the DNS checks, with the intended verdict of every case next to it.

Served by NSD (``tests.dnsinfra.nsd.NsdServer``) and by ``DemoDNS``; every zone passes ``nsd-checkzone``.
Addresses are from the documentation ranges (192.0.2.0/24, 198.51.100.0/24, 2001:db8::/32) and only appear
as DNS data. ``servfail.test`` is configured in NSD with an unloadable zone file (see ``BROKEN_ZONES``), so
NSD answers SERVFAIL for it; DemoDNS does not serve it (REFUSED) unless a fault is set.

Verdict vocabularies:

* SPF: pyspf's ``check2`` results: ``pass``, ``fail``, ``softfail``, ``neutral``, ``none``, ``permerror``,
  ``temperror``.
* MX: ``ok``, ``null_mx`` (RFC 7505), ``implicit_mx`` (no MX, an A: RFC 5321 5.1), ``nxdomain``, ``nodata``
  (the name exists, no MX and no address), ``mx_target_missing`` (an MX host that does not resolve),
  ``mx_target_cname`` (an MX host that is a CNAME, RFC 2181 10.3).
* PTR (outbound IP vs its HELO name): ``ok`` (one PTR, it resolves back to the IP and equals the HELO),
  ``helo_mismatch`` (forward-confirmed, but another name), ``not_forward_confirmed`` (the PTR name does
  not resolve, or not to the IP), ``missing`` (no PTR: NXDOMAIN), ``multiple`` (more than one PTR).
* DNSBL (``exporter.dnscheck.dnsbl``'s verdicts): ``listed``, ``not_listed``, and answers that are
  NOT listings: ``public_resolver`` (127.255.255.254), ``rate_limited`` (127.255.255.255),
  ``zone_name_typo`` (127.255.255.252), ``query_error`` (127.255.255.253, the rest of Spamhaus'
  error range), ``ip_query_not_allowed`` (127.0.1.255, Spamhaus DBL), ``query_refused`` (127.0.0.1,
  URIBL), ``bad_answer`` (outside 127.0.0.0/8). ``DNSBL_ZONE_CASES``: whole zones that cannot be
  used: ``dead.test`` lists nothing, not even its RFC 5782 test point 127.0.0.2
  (``test_point_not_listed``); ``everything.test`` lists 127.0.0.1 too (``lists_everything``).
* DMARC: ``ok``, ``malformed``, ``missing``.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.netsim.dns_server import split_txt

__all__ = [
    "BROKEN_ZONES",
    "DMARC_CASES",
    "DMARC_EFFECTIVE",
    "DNSBL_CASES",
    "DNSBL_ZONE",
    "DNSBL_ZONE_CASES",
    "DOMAIN",
    "MX_CASES",
    "PTR_CASES",
    "SPF_CASES",
    "SPF_IPS",
    "TEST_ZONES",
    "PtrCase",
    "SpfCase",
    "all_zones",
]

DOMAIN = "mailflow.test"
DNSBL_ZONE = "bl.test"
#: Zones NSD is configured with but cannot load: it answers SERVFAIL for every name in them.
BROKEN_ZONES = ("servfail.test",)

#: The two outbound addresses every SPF case is evaluated for.
GOOD_IP = "192.0.2.10"
BAD_IP = "192.0.2.20"
SPF_IPS = (GOOD_IP, BAD_IP)


@dataclass(frozen=True)
class SpfCase:
    """An SPF test domain: the pyspf result per outbound IP, and the RFC 7208 counters for the record."""

    verdicts: dict[str, str]
    lookups: int | None = None  # DNS-querying terms evaluated (for GOOD_IP), None when not meaningful
    note: str = ""


def _both(verdict: str) -> dict[str, str]:
    return {GOOD_IP: verdict, BAD_IP: verdict}


def _pf(good: str = "pass", bad: str = "fail") -> dict[str, str]:
    return {GOOD_IP: good, BAD_IP: bad}


_LONG_SPF = "v=spf1 " + " ".join(f"ip4:198.51.100.{n}" for n in range(1, 25)) + f" ip4:{GOOD_IP} ip6:2001:db8::10 -all"
assert len(_LONG_SPF) > 255

SPF_CASES: dict[str, SpfCase] = {
    f"spf-simple.{DOMAIN}": SpfCase(_pf(), 0, "ip4:192.0.2.10 -all"),
    f"spf-include-ok.{DOMAIN}": SpfCase(_pf(), 3, "include chain three levels deep, the last one lists the IP"),
    f"spf-loop.{DOMAIN}": SpfCase(_both("permerror"), None, "a includes b includes a"),
    f"spf-toomany.{DOMAIN}": SpfCase(_both("permerror"), 11, "11 DNS-querying terms through includes"),
    f"spf-ten.{DOMAIN}": SpfCase(_pf(), 10, "exactly 10 DNS-querying terms: still within the limit"),
    f"spf-void.{DOMAIN}": SpfCase(_both("permerror"), 3, "three void lookups (NXDOMAIN/NODATA) before the ip4"),
    f"spf-void-two.{DOMAIN}": SpfCase(_pf(), 2, "two void lookups: the limit is 2, allowed"),
    f"spf-redirect.{DOMAIN}": SpfCase(_pf(), 1, "redirect= to a record listing the IP"),
    f"spf-redirect-none.{DOMAIN}": SpfCase(_both("permerror"), 1, "redirect= to a domain without SPF"),
    f"spf-two.{DOMAIN}": SpfCase(_both("permerror"), None, "two v=spf1 records"),
    f"spf-syntax.{DOMAIN}": SpfCase(_both("permerror"), None, "unknown mechanism 'ipv4:'"),
    f"spf-plusall.{DOMAIN}": SpfCase(_both("pass"), 0, "+all: everybody passes (a finding of its own)"),
    f"spf-ptr.{DOMAIN}": SpfCase(_pf(), 1, "ptr:mailflow.test; 192.0.2.10 has a forward-confirmed PTR"),
    f"spf-exists.{DOMAIN}": SpfCase(_pf(), 1, "exists:%{i}._spf.spf-exists.mailflow.test"),
    f"spf-long.{DOMAIN}": SpfCase(_pf(), 0, "one record longer than 255 bytes, split across TXT strings"),
    f"spf-softfail.{DOMAIN}": SpfCase(_pf("pass", "softfail"), 0, "~all"),
    f"spf-mx.{DOMAIN}": SpfCase(_pf(), 1, "mx; the MX host has 192.0.2.10"),
    f"spf-none.{DOMAIN}": SpfCase(_both("none"), 0, "a TXT record, but no SPF"),
    f"spf-include-none.{DOMAIN}": SpfCase(_both("permerror"), 1, "include: of a domain without SPF"),
    f"spf-temperror.{DOMAIN}": SpfCase(_both("temperror"), 1, "include: of a name whose server fails"),
}


@dataclass(frozen=True)
class PtrCase:
    """An outbound IP with the HELO name its server uses, and what the PTR check should find."""

    helo: str
    ptrs: tuple[str, ...]
    verdict: str
    note: str = ""


PTR_CASES: dict[str, PtrCase] = {
    "192.0.2.10": PtrCase(f"ex01.{DOMAIN}", (f"ex01.{DOMAIN}",), "ok"),
    "192.0.2.21": PtrCase(f"ex02.{DOMAIN}", (f"mail.{DOMAIN}",), "helo_mismatch", "mail.mailflow.test A 192.0.2.21"),
    "192.0.2.20": PtrCase(f"ex03.{DOMAIN}", (f"host-20.{DOMAIN}",), "not_forward_confirmed", "PTR name is NXDOMAIN"),
    "198.51.100.10": PtrCase(
        f"ex05.{DOMAIN}", (f"ex05.{DOMAIN}",), "not_forward_confirmed", "ex05 resolves to 198.51.100.99"
    ),
    "192.0.2.30": PtrCase(f"ex06.{DOMAIN}", (), "missing", "no PTR: NXDOMAIN"),
    "192.0.2.40": PtrCase(f"ex04.{DOMAIN}", (f"ex04.{DOMAIN}", f"alt4.{DOMAIN}"), "multiple", "two PTRs"),
}

MX_CASES: dict[str, str] = {
    DOMAIN: "ok",  # MX 10 mx1, MX 20 mx2; both with A and AAAA
    f"nullmx.{DOMAIN}": "null_mx",
    f"nomx.{DOMAIN}": "implicit_mx",
    f"nonexistent.{DOMAIN}": "nxdomain",
    f"nodata.{DOMAIN}": "nodata",
    f"mx-dangling.{DOMAIN}": "mx_target_missing",
    f"mx-cname.{DOMAIN}": "mx_target_cname",
}

#: The MX hosts of the main domain and their addresses.
MX_HOSTS: dict[str, tuple[str, str]] = {
    f"mx1.{DOMAIN}": ("192.0.2.25", "2001:db8::25"),
    f"mx2.{DOMAIN}": ("198.51.100.25", "2001:db8::26"),
}

DNSBL_CASES: dict[str, str] = {
    "127.0.0.2": "listed",  # RFC 5782 test point: MUST be listed
    "127.0.0.1": "not_listed",  # RFC 5782: MUST NOT be listed
    "192.0.2.20": "listed",
    "198.51.100.7": "listed",  # two return codes (127.0.0.4 and 127.0.0.10)
    "192.0.2.10": "not_listed",
    "192.0.2.50": "public_resolver",
    "192.0.2.51": "rate_limited",
    "192.0.2.52": "zone_name_typo",
    "192.0.2.53": "query_error",
    "192.0.2.54": "ip_query_not_allowed",
    "192.0.2.55": "query_refused",
    "192.0.2.56": "bad_answer",
}

#: (ip, zone) -> verdict for lists that cannot be used whatever the IP (see the module docstring).
DNSBL_ZONE_CASES: dict[tuple[str, str], str] = {
    ("192.0.2.10", "dead.test"): "test_point_not_listed",
    ("192.0.2.10", "everything.test"): "lists_everything",
}

DMARC_CASES: dict[str, str] = {
    DOMAIN: "ok",
    f"baddmarc.{DOMAIN}": "malformed",
    f"nodmarc.{DOMAIN}": "missing",
}

#: The DMARC policy a receiver applies to each domain, and the organizational domain it inherits from
#: ("" for the domain's own record): RFC 7489 6.6.3, organizational domains from the Public Suffix List.
DMARC_EFFECTIVE: dict[str, tuple[str, str]] = {
    DOMAIN: ("reject", ""),
    f"baddmarc.{DOMAIN}": ("invalid", ""),  # a broken own record is what receivers see: no fallback
    f"nodmarc.{DOMAIN}": ("reject", DOMAIN),  # no sp= at the parent: its p= applies
    "orgdmarc.test": ("reject", ""),
    "eu.orgdmarc.test": ("quarantine", "orgdmarc.test"),  # the parent's sp=
    "own.orgdmarc.test": ("none", ""),  # its own record wins over the parent's
    "nodmarc.test": ("missing", ""),
    "eu.nodmarc.test": ("missing", ""),  # neither it nor its organizational domain has one
}

DMARC_RECORD = f"v=DMARC1; p=reject; rua=mailto:dmarc@{DOMAIN}; adkim=s; aspf=s"
MTA_STS_RECORD = "v=STSv1; id=20261101T000000"
TLSRPT_RECORD = f"v=TLSRPTv1; rua=mailto:tlsrpt@{DOMAIN}"
LONG_SPF_RECORD = _LONG_SPF


def _q(value: str) -> str:
    return split_txt(value)


_SOA = (
    "@ IN SOA ns1.mailflow.test. hostmaster.mailflow.test. 2026110101 3600 600 86400 120\n@ IN NS ns1.mailflow.test.\n"
)


def _a_terms(first: int, stop: int) -> str:
    return " ".join(f"a:h{n}.spf-toomany.{DOMAIN}" for n in range(first, stop))


def _mailflow() -> str:
    lines = [
        f"$ORIGIN {DOMAIN}.",
        "$TTL 300",
        _SOA,
        "ns1 IN A 127.0.0.1",
        # -- MX cases
        "@ IN MX 10 mx1",
        "@ IN MX 20 mx2",
        "@ IN A 192.0.2.80",
    ]
    for host, (v4, v6) in MX_HOSTS.items():
        label = host.split(".")[0]
        lines += [f"{label} IN A {v4}", f"{label} IN AAAA {v6}"]
    lines += [
        "nullmx IN MX 0 .",
        f"nullmx IN TXT {_q('v=spf1 -all')}",
        "nomx IN A 192.0.2.81",
        'nodata IN TXT "exists, without MX or address"',
        "mx-dangling IN MX 10 missing-host",
        "mx-cname IN MX 10 alias",
        "alias IN CNAME mx1",
        "alias2 IN CNAME alias",  # CNAME chain: alias2 -> alias -> mx1
        "dangling-cname IN CNAME nowhere",  # CNAME to a name that does not exist
        "cname-out IN CNAME 2.0.0.127.bl.test.",  # CNAME into another zone on the same server
        "deep.ent.sub IN A 192.0.2.82",  # ent.sub and sub are empty non-terminals (NODATA, not NXDOMAIN)
        # -- outbound hosts and PTR targets
        "ex01 IN A 192.0.2.10",
        "mail IN A 192.0.2.21",
        "ex02 IN A 192.0.2.20",
        "ex04 IN A 192.0.2.40",
        "alt4 IN A 192.0.2.40",
        "ex05 IN A 198.51.100.99",
        # -- DMARC / MTA-STS / TLS-RPT
        f"_dmarc IN TXT {_q(DMARC_RECORD)}",
        f"_mta-sts IN TXT {_q(MTA_STS_RECORD)}",
        "mta-sts IN A 192.0.2.80",
        f"_smtp._tls IN TXT {_q(TLSRPT_RECORD)}",
        "baddmarc IN MX 10 mx1",
        f"_dmarc.baddmarc IN TXT {_q('v=DMARC1; p=maybe; rua=dmarc@' + DOMAIN)}",
        "nodmarc IN MX 10 mx1",
        f"nodmarc IN TXT {_q('v=spf1 mx -all')}",
        # -- SPF cases
        f"spf-simple IN TXT {_q(f'v=spf1 ip4:{GOOD_IP} -all')}",
        f"spf-simple IN TXT {_q('google-site-verification=abc123')}",  # unrelated TXT beside it
        f"spf-include-ok IN TXT {_q('v=spf1 include:_l1.spf-include-ok.mailflow.test -all')}",
        f"_l1.spf-include-ok IN TXT {_q('v=spf1 include:_l2.spf-include-ok.mailflow.test -all')}",
        f"_l2.spf-include-ok IN TXT {_q('v=spf1 include:_l3.spf-include-ok.mailflow.test -all')}",
        f"_l3.spf-include-ok IN TXT {_q(f'v=spf1 ip4:{GOOD_IP} -all')}",
        f"spf-loop IN TXT {_q('v=spf1 include:spf-loop-b.mailflow.test -all')}",
        f"spf-loop-b IN TXT {_q('v=spf1 include:spf-loop.mailflow.test -all')}",
        # 11 lookups: a, mx, include (3) + 4 a: + include (8) + 3 a: (11); the ip4 is never reached
        "spf-toomany IN A 198.51.100.50",
        "spf-toomany IN MX 10 mx1",
        f"spf-toomany IN TXT {_q(f'v=spf1 a mx include:_i1.spf-toomany.mailflow.test ip4:{GOOD_IP} -all')}",
        "_i1.spf-toomany IN TXT " + _q(f"v=spf1 {_a_terms(1, 5)} include:_i2.spf-toomany.mailflow.test -all"),
        "_i2.spf-toomany IN TXT " + _q(f"v=spf1 {_a_terms(5, 8)} -all"),
        *(f"h{n}.spf-toomany IN A 198.51.100.{50 + n}" for n in range(1, 10)),
        # 10 lookups: 9 a: + include whose record lists the IP
        "spf-ten IN TXT " + _q(f"v=spf1 {_a_terms(1, 10)} include:_last.spf-ten.mailflow.test -all"),
        f"_last.spf-ten IN TXT {_q(f'v=spf1 ip4:{GOOD_IP} -all')}",
        f"spf-void IN TXT {_q(f'v=spf1 a:void1.{DOMAIN} a:nodata.{DOMAIN} a:void3.{DOMAIN} ip4:{GOOD_IP} -all')}",
        f"spf-void-two IN TXT {_q(f'v=spf1 a:void1.{DOMAIN} a:nodata.{DOMAIN} ip4:{GOOD_IP} -all')}",
        f"spf-redirect IN TXT {_q('v=spf1 redirect=_spf.spf-redirect.mailflow.test')}",
        f"_spf.spf-redirect IN TXT {_q(f'v=spf1 ip4:{GOOD_IP} -all')}",
        f"spf-redirect-none IN TXT {_q(f'v=spf1 redirect=nomx.{DOMAIN}')}",
        f"spf-two IN TXT {_q(f'v=spf1 ip4:{GOOD_IP} -all')}",
        f"spf-two IN TXT {_q('v=spf1 -all')}",
        f"spf-syntax IN TXT {_q(f'v=spf1 ip4:{GOOD_IP} ipv4:{BAD_IP} -all')}",
        f"spf-plusall IN TXT {_q('v=spf1 +all')}",
        f"spf-ptr IN TXT {_q(f'v=spf1 ptr:{DOMAIN} -all')}",
        f"spf-exists IN TXT {_q('v=spf1 exists:%{i}._spf.spf-exists.mailflow.test -all')}",
        f"{GOOD_IP}._spf.spf-exists IN A 127.0.0.2",
        f"spf-long IN TXT {_q(_LONG_SPF)}",
        f"spf-softfail IN TXT {_q(f'v=spf1 ip4:{GOOD_IP} ~all')}",
        f"spf-mx IN MX 10 smtp-out.{DOMAIN}.",
        f"smtp-out IN A {GOOD_IP}",
        f"spf-mx IN TXT {_q('v=spf1 mx -all')}",
        f"spf-none IN TXT {_q('MS=ms12345678')}",
        f"spf-include-none IN TXT {_q(f'v=spf1 include:nomx.{DOMAIN} -all')}",
        f"spf-temperror IN TXT {_q('v=spf1 include:servfail.test -all')}",
    ]
    return "\n".join(lines) + "\n"


def _reverse_192() -> str:
    return (
        "$ORIGIN 2.0.192.in-addr.arpa.\n$TTL 300\n"
        + _SOA
        + f"10 IN PTR ex01.{DOMAIN}.\n"
        + f"20 IN PTR host-20.{DOMAIN}.\n"
        + f"21 IN PTR mail.{DOMAIN}.\n"
        + f"40 IN PTR ex04.{DOMAIN}.\n"
        + f"40 IN PTR alt4.{DOMAIN}.\n"
    )


def _reverse_198() -> str:
    return "$ORIGIN 100.51.198.in-addr.arpa.\n$TTL 300\n" + _SOA + f"10 IN PTR ex05.{DOMAIN}.\n"


def _dnsbl() -> str:
    lines = [
        f"$ORIGIN {DNSBL_ZONE}.",
        "$TTL 300",
        _SOA,
        "2.0.0.127 IN A 127.0.0.2",
        f"2.0.0.127 IN TXT {_q('RFC 5782 test point')}",
        "20.2.0.192 IN A 127.0.0.2",
        f"20.2.0.192 IN TXT {_q('Listed: spam source, see https://bl.test/lookup?ip=192.0.2.20')}",
        "7.100.51.198 IN A 127.0.0.4",
        "7.100.51.198 IN A 127.0.0.10",
        f"7.100.51.198 IN TXT {_q('Listed: exploited host')}",
        "50.2.0.192 IN A 127.255.255.254",
        f"50.2.0.192 IN TXT {_q('Query refused: queries via public resolvers are blocked')}",
        "51.2.0.192 IN A 127.255.255.255",
        f"51.2.0.192 IN TXT {_q('Query refused: rate limit exceeded')}",
        "52.2.0.192 IN A 127.255.255.252",
        f"52.2.0.192 IN TXT {_q('Query refused: typo in the zone name or unsupported query')}",
        "53.2.0.192 IN A 127.255.255.253",
        "54.2.0.192 IN A 127.0.1.255",
        "55.2.0.192 IN A 127.0.0.1",
        f"55.2.0.192 IN TXT {_q('127.0.0.1 -> Query Refused. See https://uribl.test/refused for more information')}",
        "56.2.0.192 IN A 198.51.100.80",
    ]
    return "\n".join(lines) + "\n"


def _dead_list() -> str:
    """A zone that lists nothing, not even 127.0.0.2: a mistyped or retired list (NXDOMAIN for every IP)."""
    return "\n".join(["$ORIGIN dead.test.", "$TTL 300", _SOA]) + "\n"


def _everything_list() -> str:
    """A zone that lists 127.0.0.1 (and every IP asked here): a dead list answering 'listed' for all."""
    lines = ["$ORIGIN everything.test.", "$TTL 300", _SOA]
    lines += [f"{name} IN A 127.0.0.2" for name in ("1.0.0.127", "2.0.0.127", "10.2.0.192", "20.2.0.192")]
    return "\n".join(lines) + "\n"


def _orgdmarc() -> str:
    lines = [
        "$ORIGIN orgdmarc.test.",
        "$TTL 300",
        _SOA,
        f"@ IN MX 10 mx1.{DOMAIN}.",
        f"_dmarc IN TXT {_q('v=DMARC1; p=reject; sp=quarantine; rua=mailto:dmarc@orgdmarc.test')}",
        f"eu IN MX 10 mx1.{DOMAIN}.",
        f"own IN MX 10 mx1.{DOMAIN}.",
        f"_dmarc.own IN TXT {_q('v=DMARC1; p=none')}",
    ]
    return "\n".join(lines) + "\n"


def _nodmarc() -> str:
    lines = ["$ORIGIN nodmarc.test.", "$TTL 300", _SOA, f"@ IN MX 10 mx1.{DOMAIN}.", f"eu IN MX 10 mx1.{DOMAIN}."]
    return "\n".join(lines) + "\n"


TEST_ZONES: dict[str, str] = {
    DOMAIN: _mailflow(),
    "orgdmarc.test": _orgdmarc(),
    "nodmarc.test": _nodmarc(),
    "2.0.192.in-addr.arpa": _reverse_192(),
    "100.51.198.in-addr.arpa": _reverse_198(),
    DNSBL_ZONE: _dnsbl(),
    "dead.test": _dead_list(),
    "everything.test": _everything_list(),
}


def all_zones() -> dict[str, str]:
    """A copy of the test zones (origin -> zone text), for servers that may modify what they are given."""
    return dict(TEST_ZONES)
