"""DNS lookups whose outcome says what happened: a record, a real absence, or a resolver fault.

A missing MX record pages someone; a resolver that timed out must not. :class:`DnsClient` tells the
cases apart by the reply's RCODE and answer section (or its absence) and returns one :class:`Answer`:

* ``ok``: NOERROR with records;
* ``nxdomain``: the name does not exist; ``nodata``: the name exists without that type. Both are
  real absences (:attr:`Answer.missing`);
* ``servfail``, ``refused``, ``timeout``, ``error``: the resolver could not tell
  (:attr:`Answer.failed`): never reported as a missing record.

How a lookup is made. :class:`DnsClient` renders the query with dnspython's
``dns.renderer.Renderer`` (once per name and type: :func:`question`), sends it with
``dns.query.send_udp`` (TCP through ``dns.query.tcp`` when the reply is truncated) and parses the reply
with ``dns.message.from_wire``. It does what ``dns.resolver.Resolver`` did for it (each server in turn
within the lifetime, a server that answers SERVFAIL/REFUSED or garbage is dropped for that lookup,
CNAME chains and the negative TTL through ``Message.resolve_chaining``) without the Resolver's
per-call machinery, and it parses only the sections it reads: a reply with answers without its
authority and additional sections (the glue and NS records an authoritative server or BIND adds), a
negative reply without its additional section (its SOA gives the negative TTL). Parsing is most of
dnspython's cost per query; see docs/performance.md ("DNS checks") for the measurements.

Two caches, both short-lived so every check cycle sees fresh records (drift detection needs them):

* each client (one check run) remembers its answers, so a record asked for by several checks of one
  domain (SPF includes, MX hosts) is looked up once per run;
* clients of one cycle share an :class:`AnswerCache` (each answer until its TTL runs out; NXDOMAIN and
  NODATA by the SOA's negative TTL), so the SPF include of a provider that a thousand domains share is
  asked once per cycle, not a thousand times. :class:`CycleCache` replaces it every cycle. Failures
  (timeout, SERVFAIL, REFUSED, errors) are never cached: each check that meets one reports it.
"""

from __future__ import annotations

import functools
import re
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.entropy
import dns.exception
import dns.flags
import dns.inet
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.renderer
import dns.resolver
import dns.reversename

from exporter.dnscheck.wire import Reply, asked_form, read_reply, same_question

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


EDNS_PAYLOAD = 1232  # long SPF/TXT answers in one UDP reply (no TCP retry); the DNS Flag Day 2020 size
PER_TRY = 2.0  # seconds one server gets per try; the lookup's lifetime is the client's timeout


def _answers_only(wire: bytes) -> bytes:
    """``wire`` with the sections the checks never read cut by their counts in the header: authority
    and additional when the reply has answers, additional when it has none (the authority's SOA
    gives the negative TTL). dnspython parses every record of every section it is given, and glue
    and NS records are most of an authoritative reply. Parsed with ``ignore_trailing``. The OPT
    record goes with the additional section; it only carries extended RCODEs, and a query of EDNS
    version 0 without options has none to get back (BADVERS answers a higher version, BADCOOKIE a
    cookie)."""
    if len(wire) < 12:
        return wire  # from_wire reports the short header
    if wire[6:8] != b"\0\0":  # ANCOUNT
        return wire[:8] + b"\0\0\0\0" + wire[12:]
    return wire[:10] + b"\0\0" + wire[12:]


@functools.lru_cache(maxsize=64)
def _family(address: str) -> int:
    """The address family of a nameserver's address (raises ValueError for anything else)."""
    return int(dns.inet.af_for_address(address))


def _same_address(family: int, a: str, b: str) -> bool:
    return a == b or dns.inet.inet_pton(family, a) == dns.inet.inet_pton(family, b)


QUESTIONS_KEPT = 32768  # rendered queries kept across cycles: about 400 bytes each with the key, 13 MB at most


@dataclass(frozen=True, slots=True)
class Question:
    """One lookup's query (RD, EDNS 0 with a 1,232-byte payload), written once (:func:`question`: by
    hand for a plain name, by dnspython's :class:`dns.renderer.Renderer` otherwise) and kept: every
    cycle asks the same names again, and a query differs from the last one by its ID alone. Only bytes
    are kept (a parsed name costs 1.5 kB)."""

    rendered: bytes  # the query with ID 0
    asked: bytes  # its question section (name in lower case, type, class): wire.asked_form
    code: int  # the type asked for

    def wire(self) -> tuple[int, bytes]:
        """A new query ID and the query's wire form with it (the ID is the first two bytes)."""
        qid = dns.entropy.random_16()
        return qid, qid.to_bytes(2, "big") + self.rendered[2:]

    def message(self) -> dns.message.Message:
        """The query as a dnspython message, with a new ID (for ``dns.query.tcp``)."""
        query = dns.message.from_wire(self.rendered)
        query.id = dns.entropy.random_16()
        return query

    def answered_by(self, qid: int, data: bytes, response: dns.message.Message) -> bool:
        """``response`` (parsed from ``data``) is the reply to the query ``qid`` of this question: what
        ``Message.is_response`` checks (ID, QR, opcode, the question, whose name compares without case;
        the question is the first thing after the 12-byte header, never compressed)."""
        if response.id != qid or not response.flags & dns.flags.QR or response.opcode() != dns.opcode.QUERY:
            return False
        if not response.question:
            return response.rcode() in (dns.rcode.FORMERR, dns.rcode.SERVFAIL, dns.rcode.NOTIMP, dns.rcode.REFUSED)
        return len(response.question) == 1 and same_question(data, self.asked)


# A name of these characters alone (letters, digits, hyphen, underscore; no escapes, no IDN) is written
# by dnspython as its labels, each after its length: :func:`question` writes those itself.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.?")
_QUERY_HEADER = b"\0\0\x01\0\0\x01\0\0\0\0\0\x01"  # ID 0, RD; one question, one additional (OPT)
_OPT = b"\0\0\x29" + EDNS_PAYLOAD.to_bytes(2, "big") + b"\0\0\0\0\0\0"  # EDNS 0, no flags, no options


@functools.lru_cache(maxsize=QUESTIONS_KEPT)
def question(name: str, rtype: str) -> Question:
    """The :class:`Question` for ``name``/``rtype`` (raises dnspython's errors for a bad name or type).
    A plain name (:data:`_PLAIN_NAME`, within the length limits) is written here, byte for byte what
    dnspython's ``Renderer`` writes (tests compare them) in about 5 µs instead of 46-50 µs; any other
    name is rendered by dnspython. A kept question costs 1 µs."""
    code = int(dns.rdatatype.from_text(rtype))
    if _PLAIN_NAME.fullmatch(name):
        labels = [label.encode("ascii") for label in name.rstrip(".").split(".")]
        if all(len(label) <= 63 for label in labels) and sum(len(label) + 1 for label in labels) < 255:
            qname = b"".join(bytes((len(label),)) + label for label in labels) + b"\0"
            asked = qname + code.to_bytes(2, "big") + b"\0\x01"  # type, class IN
            return Question(_QUERY_HEADER + asked + _OPT, asked_form(asked), code)
    return rendered_question(name, rtype)


def rendered_question(name: str, rtype: str) -> Question:
    """The :class:`Question` for ``name``/``rtype`` rendered by dnspython's ``Renderer``."""
    qname = dns.name.from_text(name)
    renderer = dns.renderer.Renderer(0, dns.flags.RD, 65535)
    code = dns.rdatatype.from_text(rtype)
    renderer.add_question(qname, code)
    renderer.add_edns(0, 0, EDNS_PAYLOAD)
    renderer.write_header()
    rendered = renderer.get_wire()
    return Question(rendered, asked_form(rendered[12 : 12 + len(qname.to_digestable()) + 4]), int(code))


class AnswerCache:
    """The answers of one cycle (positive and negative, never failures), each until its TTL runs
    out. Plain dict operations are atomic; two threads storing one answer store equal ones."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[float, Answer]] = {}

    def get(self, key: tuple[str, str]) -> Answer | None:
        """The cached answer for (name, type), if its TTL has not run out."""
        entry = self._entries.get(key)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]

    def put(self, answer: Answer, ttl: float) -> None:
        """Keep ``answer`` for ``ttl`` seconds (failures are refused)."""
        if not answer.failed and ttl > 0:
            self._entries[(answer.name, answer.rtype)] = (time.monotonic() + ttl, answer)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class Cycle:
    """What the checks of one cycle share: the answer cache, and results computed from those
    answers alone (keyed by the caller, e.g. SPF results by record tree; plain dict operations are
    atomic, and two threads computing one value agree)."""

    answers: AnswerCache = field(default_factory=AnswerCache)
    derived: dict[object, Any] = field(default_factory=dict)


class CycleCache:
    """The :class:`Cycle` shared by one cycle of checks. A cycle ends when a target comes round again:
    the first check of a target that already used the current cycle gets a new one. So no check ever
    sees an answer cached before its own previous run (drift detection compares what is published
    now), while every other target polled in between shares every answer (within its TTL)."""

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


def _system_nameservers() -> tuple[str, ...]:
    """The system's nameserver addresses, read by dnspython from resolv.conf (only when no nameserver
    is configured: building a ``dns.resolver.Resolver`` costs about 0.25 ms, once per check run)."""
    system = dns.resolver.Resolver().nameservers  # plain addresses, as resolv.conf lists them
    return tuple(ns for ns in system if isinstance(ns, str))


@dataclass
class DnsClient:
    """A stub resolver with explicit nameservers (or the system's), a per-lookup lifetime
    (``timeout``) and a run cache; ``shared``: the cycle's answer cache (None: every lookup goes to
    the network)."""

    nameservers: Sequence[str] = ()
    port: int = 53
    timeout: float = 5.0
    shared: AnswerCache | None = None
    _servers: tuple[str, ...] = field(default=(), init=False, repr=False)
    _cache: dict[tuple[str, str], Answer] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    queries: int = field(default=0, init=False)  # distinct lookups of this run (network or shared cache)

    def __post_init__(self) -> None:
        self._servers = tuple(self.nameservers) or _system_nameservers()

    def fresh(self, shared: AnswerCache | None = None) -> DnsClient:
        """A client with the same servers and an empty run cache (one per check run), sharing
        ``shared`` (the cycle's cache) with the other runs of the cycle."""
        return DnsClient(self._servers, self.port, self.timeout, shared)

    def query(self, name: str, rtype: str) -> Answer:
        """Look up ``name``/``rtype`` (a type name, in any case); never raises."""
        key = (name.lower().rstrip("."), rtype.upper())
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        answer = self.shared.get(key) if self.shared is not None else None
        if answer is None:
            answer, ttl = self._lookup(*key)
            if self.shared is not None:
                self.shared.put(answer, ttl)
        with self._lock:
            self._cache[key] = answer
            self.queries += 1
        return answer

    def _lookup(self, name: str, rtype: str) -> tuple[Answer, float]:
        """Ask each server in turn until one answers or the lifetime runs out: the answer and its TTL."""
        try:
            asked = question(name, rtype)
        except (dns.exception.DNSException, ValueError) as err:
            return Answer(name, rtype, ERROR, detail=f"{type(err).__name__}: {str(err)[:160]}"), 0.0
        deadline = time.monotonic() + self.timeout
        servers, errors = list(self._servers), []
        while servers:
            for server in tuple(servers):
                left = deadline - time.monotonic()
                if left <= 0:
                    return Answer(name, rtype, TIMEOUT, detail=f"no answer within {self.timeout:g}s"), 0.0
                try:
                    response = self._udp(asked, server, min(left, PER_TRY))
                    if isinstance(response, Reply):
                        return _read(name, rtype, response)
                    if response.flags & dns.flags.TC:  # too long for UDP even with EDNS: ask over TCP
                        left = max(deadline - time.monotonic(), 0.001)
                        response = dns.query.tcp(asked.message(), server, timeout=left, port=self.port)
                except (TimeoutError, dns.exception.Timeout):
                    continue  # the next server, or this one again while the lifetime lasts
                except (dns.exception.DNSException, OSError, ValueError) as err:
                    errors.append((ERROR, f"{server}: {type(err).__name__}: {str(err)[:120]}"))
                    servers.remove(server)
                    continue
                rcode = response.rcode()
                if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                    return self._answer(name, rtype, response)
                status = {dns.rcode.SERVFAIL: SERVFAIL, dns.rcode.REFUSED: REFUSED}.get(rcode, ERROR)
                errors.append((status, f"{server} answered {dns.rcode.to_text(rcode)}"))
                servers.remove(server)
        statuses = {status for status, _ in errors}
        status = next((s for s in (SERVFAIL, REFUSED) if s in statuses), ERROR)
        return Answer(name, rtype, status, detail="; ".join(d for _, d in errors)[:200] or "no nameservers"), 0.0

    def _udp(self, asked: Question, server: str, timeout: float) -> Reply | dns.message.Message:
        """Send the question to ``server`` over UDP and wait for its reply (datagrams from elsewhere,
        or answering another query, are ignored as dnspython's ``receive_udp`` does): read by
        :func:`~exporter.dnscheck.wire.read_reply` when it reads it, else parsed by dnspython. A
        truncated reply is parsed no further than its question: the caller asks again over TCP."""
        expiration = time.monotonic() + timeout
        qid, wire = asked.wire()
        family = _family(server)
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            dns.query.send_udp(sock, wire, (server, self.port), expiration)
            while True:
                data, source = sock.recvfrom(65535)
                if source[1] == self.port and _same_address(family, source[0], server):
                    read = read_reply(data, qid, asked.asked, asked.code)
                    if read is not None:
                        return read
                    truncated = len(data) > 2 and bool(data[2] & 0x02)  # TC, in the flags' high byte
                    response = dns.message.from_wire(_answers_only(data), ignore_trailing=True, question_only=truncated)
                    if asked.answered_by(qid, data, response):
                        return response
                sock.settimeout(max(expiration - time.monotonic(), 0.001))

    @staticmethod
    def _answer(name: str, rtype: str, response: dns.message.Message) -> tuple[Answer, float]:
        """NOERROR/NXDOMAIN reply -> answer (after any CNAME chain) and how long it may be cached."""
        if not isinstance(response, dns.message.QueryMessage):  # opcode QUERY: checked by answered_by
            return Answer(name, rtype, ERROR, detail=f"reply of opcode {response.opcode()!r}"), 0.0
        try:
            chain = response.resolve_chaining()
        except dns.exception.DNSException as err:
            return Answer(name, rtype, ERROR, detail=f"{type(err).__name__}: {str(err)[:160]}"), 0.0
        # resolve_chaining refuses an answer with NXDOMAIN (AnswerForNXDOMAIN): records or NXDOMAIN, not both
        records = None if chain.answer is None else tuple(sorted(_text(r, rtype) for r in chain.answer))
        return _read(name, rtype, Reply(response.rcode() == dns.rcode.NXDOMAIN, records, chain.minimum_ttl))

    def addresses(self, name: str) -> tuple[Answer, Answer]:
        """A and AAAA of a host."""
        return self.query(name, "A"), self.query(name, "AAAA")

    def ptr(self, ip: str) -> Answer:
        """PTR of an IPv4/IPv6 address (queried under in-addr.arpa / ip6.arpa)."""
        return self.query(dns.reversename.from_address(ip).to_text(omit_final_dot=True), "PTR")


def _read(name: str, rtype: str, reply: Reply) -> tuple[Answer, float]:
    """What a reply says (read by :func:`~exporter.dnscheck.wire.read_reply`, or by dnspython in
    ``DnsClient._answer``) -> answer and how long it may be cached."""
    if reply.records is not None:
        return Answer(name, rtype, OK, reply.records), reply.ttl
    return Answer(name, rtype, NXDOMAIN if reply.nxdomain else NODATA), reply.ttl


def combine_status(*answers: Answer) -> str:
    """The status of a host lookup done with several queries: ok if any had data, a failure if any
    failed and none had data, else the absence."""
    if any(a.ok for a in answers):
        return OK
    failed = [a.status for a in answers if a.failed]
    if failed:
        return failed[0]
    return NXDOMAIN if any(a.status == NXDOMAIN for a in answers) else NODATA
