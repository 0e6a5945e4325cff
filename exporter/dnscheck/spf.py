"""SPF: the record itself, RFC 7208 limits across the include tree, and per-IP results from pyspf.

:func:`analyse` walks the whole record tree (pyspf stops at the first match, so it cannot say how
close a record is to the limit): it counts DNS-querying terms (include, a, mx, ptr, exists,
redirect) through includes and redirects, void lookups (a, mx, exists, include targets that return
NXDOMAIN/NODATA), detects include loops, and validates the syntax of every term. Over 10 lookups
or 2 void lookups is a permerror at receivers: mail fails SPF for every sender.

:func:`evaluate` asks pyspf, the maintained RFC 7208 evaluator, for ``check_host()`` of one IP.
:func:`shared_result` lets domains whose whole record tree is the same and says nothing about the
sender's domain (only ``ip4``/``ip6``/``all``/``include``/``redirect``/``a:<host>`` terms, no macro:
"v=spf1 include:spf.protection.outlook.com -all" on a hundred accepted domains) share one pyspf
evaluation per IP and cycle: the result depends on the IP and those records only.
pyspf looks DNS up through its module-level ``DNSLookup`` function; :func:`_pyspf_lookup` replaces
it once and routes each evaluation's queries to that evaluation's :class:`DnsClient` through a
thread-local, so evaluations in parallel threads use their own resolver and cache.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import threading
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import dns.name
import spf as pyspf

from exporter.dnscheck.resolver import NODATA, NXDOMAIN, Answer, DnsClient

MAX_LOOKUPS = 10
MAX_VOID = 2
RESULTS = ("pass", "fail", "softfail", "neutral", "none", "permerror", "temperror")
_VERSION = re.compile(r"^v=spf1(\s|$)", re.I)
_MECHANISM = re.compile(r"^([+\-~?]?)(all|include|a|mx|ptr|ip4|ip6|exists)(?::(.+?))?(/\d{1,3})?(//\d{1,3})?$", re.I)
_MODIFIER = re.compile(r"^([a-z][a-z0-9_.\-]*)=(.*)$", re.I)
_MACRO = re.compile(r"%\{[slodiphcrtv]\d*r?[.\-+,/_=]*\}|%%|%_|%-", re.I)
_QUERYING = ("include", "a", "mx", "ptr", "exists")


def spf_records(txt: Answer) -> list[str]:
    """The ``v=spf1`` records among a name's TXT strings."""
    return [r for r in txt.records if _VERSION.match(r.strip())]


@dataclass
class SpfAnalysis:
    """What :func:`analyse` found for one domain."""

    domain: str
    records: int = 0
    record: str = ""
    lookups: int = 0
    void_lookups: int = 0
    errors: list[str] = field(default_factory=list)
    temp_errors: list[str] = field(default_factory=list)  # resolver faults met on the way
    depth: int = 0
    #: Every record of the tree (and the answers of its ``a:<host>`` terms) when the tree's SPF result
    #: depends on nothing else (see :func:`shared_result`); () when it does.
    signature: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        """Exactly one record, valid syntax, within both limits, no loop, nothing unresolved."""
        return (
            self.records == 1
            and not self.errors
            and not self.temp_errors
            and self.lookups <= MAX_LOOKUPS
            and self.void_lookups <= MAX_VOID
        )


def _has_macro(text: str) -> bool:
    return "%" in text


def _valid_domain_spec(spec: str) -> bool:
    if _has_macro(spec):
        return bool(_MACRO.search(spec)) and "%" not in _MACRO.sub("", spec)
    try:
        dns.name.from_text(spec)
    except (dns.exception.DNSException, ValueError):
        return False
    return "." in spec.strip(".")


def terms(record: str) -> Iterator[str]:
    """The record's terms after ``v=spf1``."""
    yield from record.split()[1:]


def check_syntax(record: str) -> list[str]:
    """Syntax problems of one record (RFC 7208 section 12 grammar, with ip4/ip6 validated)."""
    return list(_syntax_problems(record))


@functools.lru_cache(maxsize=4096)
def _syntax_problems(record: str) -> tuple[str, ...]:
    # Provider records (a dozen ip4 networks each) are included by most domains: parse each text once.
    problems: list[str] = []
    seen_modifiers: set[str] = set()
    for term in terms(record):
        m = _MECHANISM.match(term)
        if m:
            name, arg = m.group(2).lower(), m.group(3)
            if name == "all" and (arg or m.group(4)):
                problems.append(f"'{term}': all takes no argument")
            elif name in ("include", "exists") and not arg:
                problems.append(f"'{term}': {name} needs a domain")
            elif name == "ip4":
                try:
                    net = ipaddress.ip_network(f"{arg}{m.group(4) or ''}", strict=False)
                    if net.version != 4:
                        raise ValueError
                except ValueError:
                    problems.append(f"'{term}': not an IPv4 address or network")
            elif name == "ip6":
                try:
                    net = ipaddress.ip_network(f"{arg}{(m.group(4) or '')}", strict=False)
                    if net.version != 6:
                        raise ValueError
                except ValueError:
                    problems.append(f"'{term}': not an IPv6 address or network")
            elif arg and not _valid_domain_spec(arg):
                problems.append(f"'{term}': bad domain")
            continue
        mod = _MODIFIER.match(term)
        if mod:
            key = mod.group(1).lower()
            if key in ("redirect", "exp"):
                if key in seen_modifiers:
                    problems.append(f"'{term}': {key}= given twice")
                if not _valid_domain_spec(mod.group(2)):
                    problems.append(f"'{term}': bad domain")
            seen_modifiers.add(key)
            continue
        problems.append(f"'{term}': unknown mechanism")
    return tuple(problems)


class _Walker:
    def __init__(self, client: DnsClient, result: SpfAnalysis) -> None:
        self.client = client
        self.result = result
        self.signature: list[str] | None = []  # None: the result depends on the sender's domain

    def _depends(self) -> None:
        self.signature = None

    def void(self, answer: Answer) -> None:
        if answer.status in (NXDOMAIN, NODATA):
            self.result.void_lookups += 1
        elif answer.failed:
            self.result.temp_errors.append(f"{answer.rtype} {answer.name}: {answer.status}")

    def fetch(self, domain: str, via: str) -> str | None:
        txt = self.client.query(domain, "TXT")
        if txt.failed:
            self.result.temp_errors.append(f"TXT {domain}: {txt.status}")
            return None
        records = spf_records(txt)
        if not records:
            if via != "top":
                self.void(txt)
                self.result.errors.append(f"{via} {domain}: no SPF record")
            return None
        if len(records) > 1:
            self.result.errors.append(f"{domain}: {len(records)} SPF records (only one is allowed)")
        return records[0]

    def walk(self, domain: str, record: str, stack: tuple[str, ...]) -> None:
        self.result.depth = max(self.result.depth, len(stack))
        self.result.errors.extend(f"{domain}: {p}" for p in check_syntax(record))
        if self.signature is not None:
            self.signature.append(record)
            if _has_macro(record):
                self._depends()
        redirect: str | None = None
        has_all = False
        for term in terms(record):
            m = _MECHANISM.match(term)
            if m is None:
                mod = _MODIFIER.match(term)
                if mod and mod.group(1).lower() == "redirect":
                    redirect = mod.group(2)
                continue
            name, arg = m.group(2).lower(), m.group(3)
            has_all = has_all or name == "all"
            if name not in _QUERYING:
                continue
            if name not in ("include", "a") or not arg:
                self._depends()  # mx, ptr, exists, bare a: answers the signature does not hold
            self.result.lookups += 1
            target = (arg or domain).rstrip(".").lower()
            if _has_macro(target):
                continue  # depends on the sender or IP: only the count is known
            if name == "include":
                self.descend(target, "include", stack)
            elif name == "a":
                a, aaaa = self.void_host(target)
                if self.signature is not None:
                    self.signature.append(f"a:{target} {' '.join(a.records + aaaa.records)}")
            elif name == "mx":
                mx = self.client.query(target, "MX")
                self.void(mx)
                if len(mx.records) > MAX_LOOKUPS:
                    self.result.errors.append(f"mx:{target}: {len(mx.records)} MX hosts (limit {MAX_LOOKUPS})")
            elif name == "exists":
                self.void(self.client.query(target, "A"))
        if redirect and not has_all:  # redirect is ignored when the record has "all"
            self.result.lookups += 1
            if not _has_macro(redirect):
                self.descend(redirect.rstrip(".").lower(), "redirect", stack)

    def void_host(self, host: str) -> tuple[Answer, Answer]:
        a, aaaa = self.client.addresses(host)
        if a.ok or aaaa.ok:
            return a, aaaa  # it resolves: neither void nor a fault, whatever the other family said
        if a.failed or aaaa.failed:
            self.void(a if a.failed else aaaa)
        elif a.missing and aaaa.missing:
            self.result.void_lookups += 1
        return a, aaaa

    def descend(self, target: str, via: str, stack: tuple[str, ...]) -> None:
        if target in stack:
            self.result.errors.append(f"{via} loop: {' -> '.join((*stack, target))}")
            return
        if len(stack) > 20 or self.result.lookups > MAX_LOOKUPS * 4:
            return  # far past the limit already; stop walking
        record = self.fetch(target, via)
        if record is not None:
            self.walk(target, record, (*stack, target))


def analyse(domain: str, client: DnsClient) -> SpfAnalysis:
    """Fetch and analyse ``domain``'s SPF record through its whole include/redirect tree."""
    result = SpfAnalysis(domain=domain)
    txt = client.query(domain, "TXT")
    if txt.failed:
        result.temp_errors.append(f"TXT {domain}: {txt.status}")
        return result
    records = spf_records(txt)
    result.records = len(records)
    if len(records) != 1:
        if len(records) > 1:
            result.errors.append(f"{len(records)} SPF records (only one is allowed)")
        return result
    result.record = records[0]
    walker = _Walker(client, result)
    walker.walk(domain.lower(), records[0], (domain.lower(),))
    if walker.signature is not None and result.valid and not result.void_lookups:
        result.signature = tuple(walker.signature)
    return result


# --- pyspf evaluation -------------------------------------------------------------------------

_local = threading.local()
_install_lock = threading.Lock()
_installed = False


def _pyspf_lookup(name: str, qtype: str, strict: Any = True, timeout: Any = None) -> list[tuple[tuple[str, str], Any]]:
    """pyspf's DNSLookup contract, answered by the calling thread's DnsClient."""
    client: DnsClient = _local.client
    answer = client.query(name, qtype)
    if answer.failed:
        raise pyspf.TempError(f"DNS {answer.status} for {qtype} {name}")
    out: list[tuple[tuple[str, str], Any]] = []
    for rec in answer.records:
        if qtype in ("TXT", "SPF"):
            value: Any = [rec.encode()]
        elif qtype == "MX":
            pref, host = rec.split(" ", 1)
            value = (int(pref), dns.name.from_text(host))
        else:
            value = rec
        out.append(((name, qtype), value))
    return out


def _install() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            pyspf.DNSLookup = _pyspf_lookup
            _installed = True


def evaluate(ip: str, domain: str, client: DnsClient, helo: str = "", timeout: float = 20.0) -> tuple[str, str]:
    """pyspf's ``check_host()`` result for mail from ``postmaster@domain`` sent by ``ip``:
    (one of :data:`RESULTS`, explanation)."""
    _install()
    _local.client = client
    try:
        result, explanation = pyspf.check2(i=ip, s=f"postmaster@{domain}", h=helo or domain, querytime=timeout)
    except Exception as err:  # pyspf raises on some malformed input instead of returning permerror
        return "permerror", f"{type(err).__name__}: {str(err)[:160]}"
    finally:
        _local.client = None
    result = str(result).lower()
    return (result if result in RESULTS else "permerror"), str(explanation)


def shared_result(
    ip: str, domain: str, client: DnsClient, analysis: SpfAnalysis, shared: MutableMapping[object, str], helo: str = ""
) -> str:
    """:func:`evaluate`'s result, computed once per IP and record tree in ``shared`` (one cycle's
    results) when the tree's signature says the result depends on nothing else. A temperror is never
    shared: each domain that meets a resolver fault reports it."""
    key = (ip, analysis.signature) if analysis.signature else None
    if key is not None:
        known = shared.get(key)
        if known is not None:
            return known
    result = evaluate(ip, domain, client, helo)[0]
    if key is not None and result != "temperror":
        shared[key] = result
    return result
