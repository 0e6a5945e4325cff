"""Reading the replies the checks get, without building dnspython objects for them.

:class:`~exporter.dnscheck.resolver.DnsClient` sends one question and needs three things back: the
RCODE, the records of the asked type at the end of any CNAME chain (as presentation text) and how long
the answer may be cached. dnspython's ``dns.message.from_wire`` builds a ``Name`` for every owner and
target, an ``Rdata`` for every record and an ``RRset`` for every set, and ``Message.resolve_chaining``
walks them; that is about 110 µs of the 230 µs a lookup costs (docs/performance.md, "DNS checks").
:func:`read_reply` reads the same bytes straight into that result in about a tenth of the time.

It reads only what it reads exactly as dnspython 2.x does, and hands everything else back
(``None``: the caller parses the reply with dnspython, as before), so a reply it returns a result for
gets the same status, records and TTL from both (``tests/unit/test_dns_wire.py`` compares them on
generated and mutated replies). What it reads:

* a reply (QR) of opcode QUERY, not truncated, with RCODE NOERROR or NXDOMAIN, whose ID and only
  question are the query's (its name compares without case, as ``Message.is_response`` does, its
  type and class exactly: compared without case, the octets of type 67 would pass for SPF's 99);
* the sections dnspython is given after ``resolver._answers_only`` (the answer section, or the
  authority section when there are no answers); records of class IN of types A, AAAA, NS, CNAME,
  SOA, PTR, MX, TXT and SPF, each checked as dnspython's rdata classes check it (lengths, names with
  backward compression pointers inside the message, at most 16 pointer hops, 255 octets a name, at
  least one string a TXT record);
* sets as dnspython keeps them: a record equal to one already in the set is not added again (names
  compare without case), the set's TTL is the smallest of its records' (a TTL over 2^31 - 1 counts as
  0), and a CNAME or SOA set keeps only its last record;
* the chain as ``Message.resolve_chaining``: at most 16 CNAMEs; with no answer the TTL is lowered to
  the SOA's (its TTL and MINIMUM) found at the final name or a parent, or to 300 s without one.

Anything else (another class or type in those sections, an OPT or TSIG record out of place, a chain
too long, an answer with NXDOMAIN, a malformed record) returns ``None``: dnspython then reads it and
raises, or answers, exactly as before, with its own error text.
"""

from __future__ import annotations

import re
import struct
from typing import Any, NamedTuple

import dns.ipv6
import dns.name

A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SPF = 1, 2, 5, 6, 12, 15, 16, 28, 99
READ = frozenset({A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SPF})  # record types read here
ASKED = READ - {SOA}  # the types a question may ask for here
IN = 1
NOERROR, NXDOMAIN = 0, 3
MAX_TTL = 2**32 - 1  # dns.ttl.MAX_TTL, where resolve_chaining starts
TTL_LIMIT = 0x7FFFFFFF  # dns.message's _WireReader reads a record's TTL above this as 0
MAX_CHAIN = 16  # dns.message.MAX_CHAIN
MAX_POINTERS = 16  # dns.name.MAX_COMPRESSION_POINTER_CHAIN
NEGATIVE_TTL_WITHOUT_SOA = 300  # dns.message.NEGATIVE_TTL_WITHOUT_SOA

_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
# A name whose labels hold only these octets is written by dnspython's to_text as the labels joined
# with dots; any other octet (and a dot inside a label) is escaped, and dnspython writes those names.
_ESCAPED = re.compile(rb"[^!#%&'*+,\-/0-9:<=>?A-Z\[\]^_`a-z{|}~.]")

Labels = tuple[bytes, ...]


class Reply(NamedTuple):
    """What a reply says about the question: ``records`` of the asked type (presentation text,
    sorted; ``None``: no answer), and the TTL that ``Message.resolve_chaining`` gives."""

    nxdomain: bool
    records: tuple[str, ...] | None
    ttl: int


class _Unread(Exception):
    """The reply is not one this module reads."""


def _name(data: bytes, pos: int, end: int) -> tuple[Labels, int]:
    """The labels of the name at ``pos`` (not the root), in lower case (names compare without case,
    and the checks keep them in lower case), and the position after it, decompressed as
    ``dns.name.from_wire_parser`` does: each pointer must point before the last one (or the name's
    start), the target may not reach the start of what pointed to it, at most 16 hops. A pointer into
    the 12-octet header is not read here."""
    labels: list[bytes] = []
    biggest = start = pos
    after = -1
    hops = 0
    size = 1
    while True:
        if pos >= end:
            raise _Unread
        count = data[pos]
        if count == 0:
            pos += 1
            break
        if count < 64:
            nxt = pos + 1 + count
            if nxt > end:
                raise _Unread
            labels.append(data[pos + 1 : nxt].lower())
            size += count + 1
            pos = nxt
        elif count >= 192:
            if pos + 1 >= end:
                raise _Unread
            target = (count & 0x3F) << 8 | data[pos + 1]
            if after < 0:
                after = pos + 2
            hops += 1
            if target >= biggest or hops > MAX_POINTERS or target < 12:
                raise _Unread  # into the header: dnspython reads it with the counts cut (_answers_only)
            end = start  # the target may not reach into what pointed to it
            biggest = start = pos = target
        else:
            raise _Unread
    if size > 255:
        raise _Unread
    return tuple(labels), (after if after >= 0 else pos)


def name_text(labels: Labels) -> str:
    """A name (labels in lower case) as the checks keep it: dnspython's text without the final dot,
    lower-case ("." for the root). Lower-casing the octets before escaping them gives what
    lower-casing dnspython's text gives: escapes are digits, and only ASCII letters change."""
    if not labels:
        return "."
    joined = b".".join(labels)
    if _ESCAPED.search(joined) is None and joined.count(b".") == len(labels) - 1:
        return joined.decode("ascii")
    return dns.name.Name((*labels, b"")).to_text(omit_final_dot=True).lower()


class _Set:
    """One RRset as dnspython keeps it: records without duplicates, the smallest TTL."""

    __slots__ = ("items", "ttl")

    def __init__(self, ttl: int) -> None:
        self.ttl = ttl
        self.items: dict[object, Any] = {}  # what makes a record equal to another -> its value


def _rdata(data: bytes, rtype: int, start: int, end: int) -> tuple[object, object]:
    """One record's data: (what makes it equal to another, its value). Values: text for A, AAAA, MX
    and TXT, labels for names, the MINIMUM for SOA."""
    if rtype == A:
        if end - start != 4:
            raise _Unread
        raw = data[start:end]
        return raw, f"{raw[0]}.{raw[1]}.{raw[2]}.{raw[3]}"
    if rtype in (TXT, SPF):
        if end == start:
            raise _Unread  # dnspython refuses a TXT record without strings
        pos, strings = start, []
        while pos < end:
            nxt = pos + 1 + data[pos]
            if nxt > end:
                raise _Unread
            strings.append(data[pos + 1 : nxt])
            pos = nxt
        raw = data[start:end]
        return raw, b"".join(strings).decode("utf-8", "replace")
    if rtype == MX:
        if end - start < 2:
            raise _Unread
        labels, pos = _name(data, start + 2, end)
        if pos != end:
            raise _Unread
        preference = _U16.unpack_from(data, start)[0]
        return (preference, labels), f"{preference} {name_text(labels)}"
    if rtype in (CNAME, PTR, NS):
        labels, pos = _name(data, start, end)
        if pos != end:
            raise _Unread
        return labels, labels
    if rtype == AAAA:
        if end - start != 16:
            raise _Unread
        raw = data[start:end]
        return raw, dns.ipv6.inet_ntoa(raw)
    # SOA: two names and five 32-bit numbers, MINIMUM last
    _, pos = _name(data, start, end)
    _, pos = _name(data, pos, end)
    if end - pos != 20:
        raise _Unread
    return None, _U32.unpack_from(data, pos + 16)[0]


def _section(data: bytes, pos: int, count: int) -> tuple[dict[tuple[Labels, int], _Set], int]:
    """``count`` records from ``pos``, grouped into sets by (owner, type)."""
    sets: dict[tuple[Labels, int], _Set] = {}
    size = len(data)
    for _ in range(count):
        owner, pos = _name(data, pos, size)
        if pos + 10 > size:
            raise _Unread
        rtype, rclass, ttl, length = _RR.unpack_from(data, pos)
        start, end = pos + 10, pos + 10 + length
        if rtype not in READ or rclass != IN or end > size:
            raise _Unread
        key, value = _rdata(data, rtype, start, end)
        if ttl > TTL_LIMIT:
            ttl = 0
        found = sets.get(owner_key := (owner, rtype))
        if found is None:
            sets[owner_key] = found = _Set(ttl)
        elif ttl < found.ttl:
            found.ttl = ttl
        if rtype in (CNAME, SOA):  # dnspython's singleton types: the last record replaces the others
            found.items.clear()
        found.items.setdefault(key, value)
        pos = end
    return sets, pos


def asked_form(section: bytes) -> bytes:
    """A question section (one uncompressed name, type, class) as replies are compared with it: the
    name in lower case, the type and class as they are."""
    return section[:-4].lower() + section[-4:]


def same_question(data: bytes, asked: bytes) -> bool:
    """The message ``data`` starts with the question ``asked`` (:func:`asked_form`) after its header:
    the name compares without case, as ``Message.is_response`` does, the type and class exactly
    (compared without case, the octets of type 67 would pass for SPF's 99). A reply's first name is
    never compressed: there is nothing before it to point to."""
    end = 12 + len(asked)
    return data[12 : end - 4].lower() == asked[:-4] and data[end - 4 : end] == asked[-4:]


def read_reply(data: bytes, qid: int, question: bytes, rtype: int) -> Reply | None:
    """The answer in ``data`` to the query ``qid`` whose question section is ``question``
    (:func:`asked_form`), asking for ``rtype``; ``None`` when this is not a reply read here (see the module)."""
    if len(data) < 12 or rtype not in ASKED:
        return None
    ident, flags, qdcount, ancount, nscount, _ = _HEADER.unpack_from(data)
    rcode = flags & 0xF
    if (
        ident != qid
        or flags & 0xFA00 != 0x8000  # QR set, opcode QUERY, TC clear
        or rcode not in (NOERROR, NXDOMAIN)
        or qdcount != 1
        or not same_question(data, question)
    ):
        return None
    try:
        qname, pos = _name(data, 12, len(data))
        if ancount:
            answers, _ = _section(data, pos + 4, ancount)
            authority: dict[tuple[Labels, int], _Set] = {}
        else:
            answers = {}
            authority, _ = _section(data, pos + 4, nscount)
    except (_Unread, IndexError, struct.error):
        return None
    name, ttl, hops = qname, MAX_TTL, 0
    found = None
    while hops < MAX_CHAIN:
        found = answers.get((name, rtype))
        if found is not None:
            ttl = min(ttl, found.ttl)
            break
        alias = answers.get((name, CNAME)) if rtype != CNAME else None
        if alias is None:
            break
        ttl = min(ttl, alias.ttl)
        name = next(iter(alias.items.values()))
        hops += 1
    if hops >= MAX_CHAIN or (found is not None and rcode == NXDOMAIN):
        return None  # dnspython raises ChainTooLong / AnswerForNXDOMAIN
    if found is not None:
        if rtype in (CNAME, PTR, NS):
            records = tuple(sorted(name_text(v) for v in found.items.values()))
        else:
            records = tuple(sorted(found.items.values()))
        return Reply(False, records, ttl)
    while True:
        soa = authority.get((name, SOA))
        if soa is not None:
            ttl = min(ttl, soa.ttl, next(iter(soa.items.values())))
            break
        if not name:
            ttl = min(ttl, NEGATIVE_TTL_WITHOUT_SOA)
            break
        name = name[1:]
    return Reply(rcode == NXDOMAIN, None, ttl)
