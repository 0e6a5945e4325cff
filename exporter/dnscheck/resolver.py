"""DNS lookups whose outcome says what happened: a record, a real absence, or a resolver fault.

A missing MX record pages someone; a resolver that timed out must not. dnspython raises a
different exception for each case and :class:`DnsClient` turns them into one :class:`Answer`:

* ``ok``: NOERROR with records;
* ``nxdomain``: the name does not exist; ``nodata``: the name exists without that type. Both are
  real absences (:attr:`Answer.missing`);
* ``servfail``, ``refused``, ``timeout``, ``error``: the resolver could not tell
  (:attr:`Answer.failed`): never reported as a missing record.

Two caches, both short-lived so every check cycle sees fresh records (drift detection needs them):

* each client (one check run) remembers its answers, so a record asked for by several checks of one
  domain (SPF includes, MX hosts) is converted once per run;
* clients of one cycle share a :class:`dns.resolver.Cache` (dnspython's own: thread-safe, expires each
  answer at its TTL, keeps NXDOMAIN/NODATA by the SOA minimum), so the SPF include of a provider that a
  thousand domains share is asked once per cycle, not a thousand times. :class:`CycleCache` replaces
  it every cycle. Failures (timeout, SERVFAIL, REFUSED) are never cached: each check that meets one
  reports it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.reversename

OK = "ok"
NXDOMAIN = "nxdomain"
NODATA = "nodata"
SERVFAIL = "servfail"
REFUSED = "refused"
TIMEOUT = "timeout"
ERROR = "error"
FAILURES = (SERVFAIL, REFUSED, TIMEOUT, ERROR)


@dataclass(frozen=True)
class Answer:
    """The outcome of one lookup. ``records`` are presentation strings (TXT strings joined)."""

    name: str
    rtype: str
    status: str
    records: tuple[str, ...] = ()
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def missing(self) -> bool:
        """The authoritative answer is that there is no such record."""
        return self.status in (NXDOMAIN, NODATA)

    @property
    def failed(self) -> bool:
        """The resolver could not answer; nothing is known about the record."""
        return self.status in FAILURES


def _text(rdata: object, rtype: str) -> str:
    if rtype in ("TXT", "SPF"):
        return b"".join(rdata.strings).decode("utf-8", "replace")  # type: ignore[attr-defined]
    if rtype == "MX":
        exchange = rdata.exchange.to_text(omit_final_dot=True).lower()  # type: ignore[attr-defined]
        return f"{rdata.preference} {exchange or '.'}"  # type: ignore[attr-defined]
    if rtype in ("PTR", "CNAME", "NS"):
        return rdata.target.to_text(omit_final_dot=True).lower()  # type: ignore[attr-defined]
    return rdata.to_text()  # type: ignore[attr-defined]


def _no_nameservers_status(err: dns.resolver.NoNameservers) -> str:
    """SERVFAIL vs REFUSED from the per-server errors dnspython collected."""
    errors = err.kwargs.get("errors") or []
    codes = {str(e[3]) for e in errors if len(e) > 3 and e[3] is not None}
    texts = " ".join(str(e) for e in errors)
    if "REFUSED" in codes or "REFUSED" in texts:
        return REFUSED if "SERVFAIL" not in codes and "SERVFAIL" not in texts else SERVFAIL
    return SERVFAIL


@dataclass(frozen=True)
class Cycle:
    """What the checks of one cycle share: dnspython's answer cache, and results computed from those
    answers alone (keyed by the caller, e.g. SPF results by record tree; plain dict operations are
    atomic, and two threads computing one value agree)."""

    answers: dns.resolver.Cache = field(default_factory=dns.resolver.Cache)
    derived: dict[object, Any] = field(default_factory=dict)


class CycleCache:
    """The :class:`Cycle` shared by one cycle of checks. A cycle ends when a target comes round again:
    the first check of a target that already used the current cycle gets a new one. So no check ever
    sees an answer cached before its own previous run (drift detection compares what is published
    now), while every other target polled in between shares every answer (within its TTL, which
    dnspython's cache enforces)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cycle = Cycle()
        self._served: set[str] = set()
        self.generations = 1  # cycles begun so far

    def current(self, target: str) -> Cycle:
        """The cycle for a check of ``target`` (a new one if ``target`` already ran in this one)."""
        with self._lock:
            if target in self._served:
                self._cycle, self._served = Cycle(), set()
                self.generations += 1
            self._served.add(target)
            return self._cycle


@dataclass
class DnsClient:
    """A resolver with explicit nameservers (or the system's), per-lookup lifetime and a run cache;
    ``shared``: the cycle's answer cache (None: every lookup goes to the network)."""

    nameservers: Sequence[str] = ()
    port: int = 53
    timeout: float = 5.0
    shared: dns.resolver.Cache | None = None
    _resolver: dns.resolver.Resolver = field(init=False, repr=False)
    _cache: dict[tuple[str, str], Answer] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    queries: int = field(default=0, init=False)  # distinct lookups of this run (network or shared cache)

    def __post_init__(self) -> None:
        if self.nameservers:
            self._resolver = dns.resolver.Resolver(configure=False)
            self._resolver.nameservers = list(self.nameservers)
        else:
            self._resolver = dns.resolver.Resolver()
        self._resolver.port = self.port
        self._resolver.lifetime = self.timeout
        self._resolver.timeout = min(self.timeout, 2.0)  # per try; retried within the lifetime
        self._resolver.cache = self.shared
        self._resolver.use_edns(0, 0, 1232)  # long SPF/TXT answers in one UDP reply (no TCP retry)

    def fresh(self, shared: dns.resolver.Cache | None = None) -> DnsClient:
        """A client with the same servers and an empty run cache (one per check run), sharing
        ``shared`` (the cycle's cache) with the other runs of the cycle."""
        return DnsClient(tuple(self.nameservers), self.port, self.timeout, shared)

    def query(self, name: str, rtype: str) -> Answer:
        """Look up ``name``/``rtype``; never raises."""
        key = (name.lower().rstrip("."), rtype)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        answer = self._query(key[0], rtype)
        with self._lock:
            self._cache[key] = answer
            self.queries += 1
        return answer

    def _query(self, name: str, rtype: str) -> Answer:
        try:
            result = self._resolver.resolve(name, rtype, raise_on_no_answer=True, search=False)
        except dns.resolver.NXDOMAIN:
            return Answer(name, rtype, NXDOMAIN)
        except dns.resolver.NoAnswer:
            return Answer(name, rtype, NODATA)
        except dns.resolver.NoNameservers as err:
            return Answer(name, rtype, _no_nameservers_status(err), detail=str(err)[:200])
        except dns.resolver.LifetimeTimeout:
            return Answer(name, rtype, TIMEOUT, detail=f"no answer within {self.timeout:g}s")
        except dns.exception.Timeout:
            return Answer(name, rtype, TIMEOUT, detail=f"no answer within {self.timeout:g}s")
        except (dns.exception.DNSException, OSError, ValueError) as err:
            return Answer(name, rtype, ERROR, detail=f"{type(err).__name__}: {str(err)[:160]}")
        records = tuple(sorted(_text(r, rtype) for r in result))
        return Answer(name, rtype, OK, records)

    def addresses(self, name: str) -> tuple[Answer, Answer]:
        """A and AAAA of a host."""
        return self.query(name, "A"), self.query(name, "AAAA")

    def ptr(self, ip: str) -> Answer:
        """PTR of an IPv4/IPv6 address (queried under in-addr.arpa / ip6.arpa)."""
        return self.query(dns.reversename.from_address(ip).to_text(omit_final_dot=True), "PTR")


def combine_status(*answers: Answer) -> str:
    """The status of a host lookup done with several queries: ok if any had data, a failure if any
    failed and none had data, else the absence."""
    if any(a.ok for a in answers):
        return OK
    failed = [a.status for a in answers if a.failed]
    if failed:
        return failed[0]
    return NXDOMAIN if any(a.status == NXDOMAIN for a in answers) else NODATA
