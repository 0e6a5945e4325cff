"""exporter/dnscheck/wire.py against dnspython, the oracle: whenever ``read_reply`` reads a reply, the
old path (``dns.message.from_wire`` of ``_answers_only``, ``Question.answered_by``,
``DnsClient._answer``) gives the same status, records and TTL; replies it does not read it hands
back (``None``). Replies are built with dnspython (``to_wire`` compresses names), then fuzzed."""

from __future__ import annotations

import struct

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.dnscheck.resolver import Answer, DnsClient, _answers_only, _read, question
from exporter.dnscheck.wire import Reply, read_reply

ASKED = ("A", "AAAA", "MX", "TXT", "SPF", "PTR", "CNAME", "NS")
READ = (*ASKED, "SOA")
UNREAD = ("DNAME", "CAA", "SRV", "HINFO")
NAMES = ("example.com", "mail.example.org", "1.2.0.192.in-addr.arpa", "a.b.c.d.e.f.example.net", "x")
ODD_LABELS = (
    b"with space",
    b"dot.inside",
    b"back\\slash",
    b"\xff\xfe",
    b"\xc3\xa9t\xc3\xa9",
    b"UPPER",
    b'quo"te',
    b"semi;colon",
    b"at@",
    b"par(en)",
    b"dol$lar",
    b"\x00nul",
    b"del\x7f",
    b"ok-label_1",
)
TTLS = st.one_of(st.integers(0, 86400), st.sampled_from([0, 1, 2**31 - 2, 2**31 - 1, 2**31, 2**32 - 1]))
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

Outcome = tuple[Answer, float] | str


def oracle(data: bytes, qid: int, name: str, rtype: str) -> Outcome:
    """What the dnspython path gives for ``data``: an (answer, TTL) or why there is none."""
    asked = question(name, rtype)
    try:
        response = dns.message.from_wire(_answers_only(data), ignore_trailing=True)
    except Exception:  # any exception is dnspython refusing the reply
        return "error"
    if not asked.answered_by(qid, data, response):
        return "not ours"
    if response.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN) or response.flags & dns.flags.TC:
        return "other"
    return DnsClient._answer(name, rtype, response)


def check(data: bytes, qid: int, name: str, rtype: str) -> Reply | None:
    """The property: a reply read by hand is read exactly as dnspython reads it."""
    asked = question(name, rtype)
    read = read_reply(data, qid, asked.asked, asked.code)
    if read is not None:
        expected = oracle(data, qid, name, rtype)
        assert isinstance(expected, tuple), (expected, read, data)
        assert expected[0].status != "error", (expected, read, data)
        assert _read(name, rtype, read) == expected, (read, data)
        assert read.ttl == expected[1]
    return read


def _vary_case(text: str, mask: int) -> str:
    return "".join(c.upper() if mask >> (i % 60) & 1 else c for i, c in enumerate(text))


def _vary_name(name: dns.name.Name, mask: int) -> dns.name.Name:
    return dns.name.Name(
        tuple(
            bytes(b ^ 0x20 if (mask >> (i % 60)) & 1 and 0x61 <= b | 0x20 <= 0x7A else b for i, b in enumerate(label))
            for label in name.labels
        )
    )


@st.composite
def _names(draw: st.DrawFn, pool: tuple[dns.name.Name, ...]) -> dns.name.Name:
    """A name from ``pool`` (in some letter case) or an odd one."""
    if draw(st.integers(0, 5)) == 0:
        labels = draw(st.lists(st.sampled_from(ODD_LABELS), min_size=1, max_size=2))
        base = draw(st.sampled_from(pool))
        return dns.name.Name((*labels, *base.labels))
    return _vary_name(draw(st.sampled_from(pool)), draw(st.integers(0, 2**60)))


@st.composite
def _rdata(
    draw: st.DrawFn, rtype: str, rdclass: dns.rdataclass.RdataClass, pool: tuple[dns.name.Name, ...]
) -> dns.rdata.Rdata:
    """One record's data of ``rtype``; names from ``pool`` (so duplicates happen)."""
    code = dns.rdatatype.from_text(rtype)
    if rtype == "A":
        text = draw(st.sampled_from(["192.0.2.1", "192.0.2.2", "10.0.0.1"]) | st.ip_addresses(v=4).map(str))
        return dns.rdata.from_text(rdclass, code, text)
    if rtype == "AAAA":
        text = draw(
            st.sampled_from(["::1", "2001:db8::1", "::ffff:192.0.2.1", "2001:db8:0:0:1::"])
            | st.ip_addresses(v=6).map(str)
        )
        return dns.rdata.from_text(rdclass, code, text)
    if rtype in ("TXT", "SPF"):
        strings = draw(
            st.lists(
                st.sampled_from([b"", b"v=spf1 -all", b"\xff\xfe"]) | st.binary(max_size=12), min_size=1, max_size=4
            )
        )
        return dns.rdata.from_text(
            rdclass, code, " ".join('"' + "".join(f"\\{b:03d}" for b in s) + '"' for s in strings)
        )
    if rtype == "MX":
        target = draw(_names(pool)).to_text()
        return dns.rdata.from_text(rdclass, code, f"{draw(st.sampled_from([0, 10, 65535]))} {target}")
    if rtype in ("PTR", "CNAME", "NS", "DNAME"):
        return dns.rdata.from_text(rdclass, code, draw(_names(pool)).to_text())
    if rtype == "SOA":
        mname, rname = draw(_names(pool)).to_text(), draw(_names(pool)).to_text()
        return dns.rdata.from_text(rdclass, code, f"{mname} {rname} 1 7200 900 1209600 {draw(TTLS)}")
    texts = {"CAA": '0 issue "ca.example"', "SRV": "0 5 25 mx.example.", "HINFO": '"cpu" "os"'}
    return dns.rdata.from_text(rdclass, code, texts[rtype])


def _rrset(owner: dns.name.Name, rd: dns.rdata.Rdata, ttl: int) -> dns.rrset.RRset:
    """One record as its own set, so duplicates and per-record TTLs reach the wire."""
    rrset = dns.rrset.RRset(owner, rd.rdclass, rd.rdtype)
    rrset.add(rd)
    rrset.ttl = ttl  # may exceed 2^31 - 1: written as is
    return rrset


@st.composite
def replies(draw: st.DrawFn, plain: bool = False) -> tuple[bytes, int, str, str]:
    """(wire, query ID, name, type) of a reply built by dnspython. ``plain``: one the hand path must
    read (right header, class IN, types it reads, no chain too long)."""
    name, rtype = draw(st.sampled_from(NAMES)), draw(st.sampled_from(ASKED))
    qid = draw(st.integers(0, 65535))
    qname = dns.name.from_text(name)
    asked = _vary_case(name, draw(st.integers(0, 2**60)))
    if not plain and draw(st.integers(0, 15)) == 0:
        asked = draw(st.sampled_from([f"{name}.evil", f"x{name}"]))
    qtype = rtype if plain or draw(st.integers(0, 15)) else draw(st.sampled_from(READ))
    response = dns.message.make_response(dns.message.make_query(asked, qtype, use_edns=draw(st.booleans())))
    response.id = qid if plain or draw(st.integers(0, 15)) else qid ^ draw(st.integers(1, 65535))
    # the chain: qname -> c1 -> ... -> cn, the last sometimes back to an earlier name
    length = draw(st.integers(0, 14 if plain else 20))
    chain = [qname] + [dns.name.from_text(f"c{i}.{draw(st.sampled_from(NAMES))}") for i in range(1, length + 1)]
    pool = (*chain, *(n.parent() for n in chain if len(n) > 1), dns.name.from_text("other.example"), dns.name.root)
    answer: list[dns.rrset.RRset] = []
    authority: list[dns.rrset.RRset] = []
    additional: list[dns.rrset.RRset] = []
    for i in range(length):
        target = chain[i + 1]
        if not plain and i == length - 1 and draw(st.integers(0, 3)) == 0:
            target = draw(st.sampled_from(chain))  # a loop
        for _ in range(draw(st.integers(1, 2)) if not plain or draw(st.booleans()) else 1):
            rd = dns.rdata.from_text("IN", "CNAME", _vary_name(target, draw(st.integers(0, 2**60))).to_text())
            answer.append(_rrset(_vary_name(chain[i], draw(st.integers(0, 2**60))), rd, draw(TTLS)))
    final = chain[-1]
    if rtype != "CNAME" or not length:
        for _ in range(draw(st.integers(0, 4))):
            rd = draw(_rdata(rtype, dns.rdataclass.IN, pool))
            answer.append(_rrset(_vary_name(final, draw(st.integers(0, 2**60))), rd, draw(TTLS)))
    if draw(st.booleans()):
        owner = draw(st.sampled_from([final, *(final.split(k)[1] for k in range(1, len(final) + 1))]))
        authority.append(_rrset(owner, draw(_rdata("SOA", dns.rdataclass.IN, pool)), draw(TTLS)))
    for _ in range(draw(st.integers(0, 5))):
        section = draw(st.sampled_from([answer, authority, additional]))
        unread = not plain or section is additional or (section is authority and answer)
        kind = draw(st.sampled_from(READ + UNREAD if unread else READ))
        rdclass = (
            dns.rdataclass.CH
            if unread and kind not in ("A", "AAAA", "SRV") and draw(st.integers(0, 5)) == 0
            else dns.rdataclass.IN
        )
        if plain and section is answer and kind in ("CNAME", "SOA", rtype):
            kind = "NS" if rtype != "NS" else "MX"  # keeps the chain and the final set as drawn
        owner = draw(_names(pool))
        section.append(_rrset(owner, draw(_rdata(kind, rdclass, pool)), draw(TTLS)))
    response.answer = draw(st.permutations(answer)) if not plain else answer
    response.authority = draw(st.permutations(authority))
    response.additional = additional
    codes = [dns.rcode.NOERROR, dns.rcode.NXDOMAIN]
    rcode = draw(st.sampled_from(codes if plain else [*codes, *codes, dns.rcode.SERVFAIL, dns.rcode.REFUSED]))
    if plain and rcode == dns.rcode.NXDOMAIN and any(r.rdtype == dns.rdatatype.from_text(rtype) for r in answer):
        rcode = dns.rcode.NOERROR  # dnspython raises AnswerForNXDOMAIN
    response.set_rcode(rcode)
    if not plain:
        flip = draw(st.sampled_from([0] * 12 + [dns.flags.TC, dns.flags.QR, dns.flags.AA, dns.flags.RD]))
        response.flags ^= flip
        if draw(st.integers(0, 15)) == 0:
            response.set_opcode(draw(st.sampled_from([dns.opcode.NOTIFY, dns.opcode.UPDATE, dns.opcode.STATUS])))
    return response.to_wire(), qid, name, rtype


def _layout(data: bytes) -> tuple[list[int], list[int]]:
    """Offsets of the compression pointers and of the RDLENGTH fields of a well-formed reply."""
    pointers = [i for i in range(12, len(data) - 1) if data[i] >= 0xC0]
    lengths: list[int] = []
    counts = struct.unpack_from("!HHHH", data, 4)
    pos = 12

    def skip(pos: int) -> int:
        while data[pos] and data[pos] < 0xC0:
            pos += data[pos] + 1
        return pos + (2 if data[pos] else 1)

    try:
        for _ in range(counts[0]):
            pos = skip(pos) + 4
        for _ in range(sum(counts[1:])):
            pos = skip(pos)
            lengths.append(pos + 8)
            pos += 10 + struct.unpack_from("!H", data, pos + 8)[0]
    except (IndexError, struct.error):
        pass
    return pointers, lengths


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, int, str, str]:
    """A generated reply with a few bytes changed: flipped, inserted, deleted, cut, counts in the
    header, compression pointers sent forward, at themselves or into the header, RDLENGTHs."""
    data, qid, name, rtype = draw(replies(plain=draw(st.booleans())))
    pointers, lengths = _layout(data)
    wire = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "cut", "count", "pointer", "rdlength", "case"]))
        at = draw(st.integers(0, max(len(wire) - 1, 0)))
        if op == "flip" and wire:
            wire[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and wire:
            wire[at] = draw(st.sampled_from([0, 1, 63, 64, 0xC0, 0xFF]) | st.integers(0, 255))
        elif op == "insert":
            wire[at:at] = draw(st.binary(min_size=1, max_size=3))
        elif op == "delete":
            del wire[at : at + draw(st.integers(1, 3))]
        elif op == "cut":
            del wire[max(at, 1) :]
        elif op == "case" and len(wire) > 12:  # a bit of the question's name, type or class
            spot = draw(st.integers(12, min(len(wire) - 1, 12 + len(question(name, rtype).asked) - 1)))
            wire[spot] ^= 0x20
        elif op == "count" and len(wire) >= 12:
            field = 4 + 2 * draw(st.integers(0, 3))
            wire[field : field + 2] = draw(st.sampled_from([0, 1, 2, 3, 65535]) | st.integers(0, 65535)).to_bytes(
                2, "big"
            )
        elif op == "pointer" and pointers:
            spot = draw(st.sampled_from(pointers))
            target = draw(st.sampled_from([spot, spot + 2, spot + 1, spot - 1, 0, 2, 11, 12]) | st.integers(0, 0x3FFF))
            if spot + 1 < len(wire):
                wire[spot : spot + 2] = (0xC000 | (target & 0x3FFF)).to_bytes(2, "big")
        elif op == "rdlength" and lengths:
            spot = draw(st.sampled_from(lengths))
            if spot + 1 < len(wire):
                value = struct.unpack_from("!H", wire, spot)[0] + draw(st.sampled_from([-2, -1, 1, 2, 300]))
                wire[spot : spot + 2] = (value & 0xFFFF).to_bytes(2, "big")
    return bytes(wire), qid, name, rtype


@settings(SETTINGS, max_examples=400)
@given(replies())
def test_generated_replies_read_as_dnspython_reads_them(reply: tuple[bytes, int, str, str]) -> None:
    check(*reply)


@settings(SETTINGS, max_examples=300)
@given(replies(plain=True))
def test_plain_replies_are_read_by_hand(reply: tuple[bytes, int, str, str]) -> None:
    # not vacuous: every well-formed reply of the kinds the module reads is read, and as dnspython reads it
    assert check(*reply) is not None, reply


@settings(SETTINGS, max_examples=500)
@given(mutated())
def test_mutated_replies_read_as_dnspython_reads_them(reply: tuple[bytes, int, str, str]) -> None:
    check(*reply)


# ---- explicit examples ---------------------------------------------------------------------------

Record = tuple[str, int, str, str]  # owner, TTL, type, rdata text


def build(
    name: str,
    rtype: str,
    answer: list[Record] = (),  # type: ignore[assignment]
    authority: list[Record] = (),  # type: ignore[assignment]
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR,
    qid: int = 4660,
) -> bytes:
    """A reply to ``name``/``rtype``, each record written as its own set (in the order given)."""
    response = dns.message.make_response(dns.message.make_query(name, rtype, use_edns=True))
    response.id = qid
    response.set_rcode(rcode)
    for section, records in ((response.answer, answer), (response.authority, authority)):
        for owner, ttl, kind, text in records:
            section.append(_rrset(dns.name.from_text(owner), dns.rdata.from_text("IN", kind, text), ttl))
    return response.to_wire()


def read(data: bytes, name: str, rtype: str, qid: int = 4660) -> tuple[Answer, float] | None:
    """The hand path's answer (checked against dnspython's), ``None`` if it hands the reply back."""
    reply = check(data, qid, name, rtype)
    return None if reply is None else _read(name, rtype, reply)


SOA = "ns1.example.com. hostmaster.example.com. 1 7200 900 1209600"


@pytest.mark.parametrize(
    ("name", "rtype", "answer", "authority", "rcode", "status", "records", "ttl"),
    [
        (
            "example.com",
            "A",
            [("example.com", 300, "A", "192.0.2.1"), ("example.com", 60, "A", "192.0.2.2")],
            [],
            dns.rcode.NOERROR,
            "ok",
            ("192.0.2.1", "192.0.2.2"),
            60,
        ),
        (
            "example.com",
            "AAAA",
            [("example.com", 300, "AAAA", "2001:db8:0:0:0:0:0:1")],
            [],
            dns.rcode.NOERROR,
            "ok",
            ("2001:db8::1",),
            300,
        ),
        (
            "example.com",
            "MX",
            [("example.com", 300, "MX", "10 Mail.Example.com."), ("example.com", 300, "MX", "20 .")],
            [],
            dns.rcode.NOERROR,
            "ok",
            ("10 mail.example.com", "20 ."),
            300,
        ),
        (
            "example.com",
            "TXT",
            [("example.com", 300, "TXT", '"v=spf1 " "-all"'), ("example.com", 300, "TXT", '"\\255x"')],
            [],
            dns.rcode.NOERROR,
            "ok",
            ("v=spf1 -all", "\ufffdx"),
            300,
        ),
        (
            "2.0.192.in-addr.arpa",
            "PTR",
            [("2.0.192.in-addr.arpa", 86400, "PTR", "Host.Example.NET.")],
            [],
            dns.rcode.NOERROR,
            "ok",
            ("host.example.net",),
            86400,
        ),
        (
            "www.example.com",
            "A",
            [
                ("www.example.com", 30, "CNAME", "cdn.example.net."),
                ("cdn.example.net", 20, "CNAME", "edge.example.org."),
                ("edge.example.org", 600, "A", "192.0.2.9"),
            ],
            [],
            dns.rcode.NOERROR,
            "ok",
            ("192.0.2.9",),
            20,
        ),
        (
            "nx.example.com",
            "A",
            [],
            [("example.com", 3600, "SOA", f"{SOA} 120")],
            dns.rcode.NXDOMAIN,
            "nxdomain",
            (),
            120,
        ),
        ("example.com", "MX", [], [("example.com", 60, "SOA", f"{SOA} 3600")], dns.rcode.NOERROR, "nodata", (), 60),
    ],
)
def test_plain_replies(
    name: str,
    rtype: str,
    answer: list[Record],
    authority: list[Record],
    rcode: dns.rcode.Rcode,
    status: str,
    records: tuple[str, ...],
    ttl: int,
) -> None:
    assert read(build(name, rtype, answer, authority, rcode), name, rtype) == (
        Answer(name, rtype, status, records),
        ttl,
    )


def test_names_compressed_backwards_are_read() -> None:
    data = build("example.com", "MX", [("example.com", 300, "MX", "10 mail.example.com.")])
    assert data.count(b"\xc0\x0c") == 2  # the owner is the question's name, the exchange ends in it
    assert read(data, "example.com", "MX") == (Answer("example.com", "MX", "ok", ("10 mail.example.com",)), 300)


def test_pointer_loops_and_forward_pointers_are_handed_back() -> None:
    data = build("example.com", "A", [("example.com", 300, "A", "192.0.2.1")])
    owner = data.index(b"\xc0\x0c", 12)
    for target in (owner, owner + 2, owner + 6):  # at itself, past itself
        bad = data[:owner] + (0xC000 | target).to_bytes(2, "big") + data[owner + 2 :]
        assert read(bad, "example.com", "A") is None
        assert oracle(bad, 4660, "example.com", "A") == "error"
    # a loop through the header: the ID's bytes are a pointer back at the owner, the owner points at them
    qid = 0xC000 | owner
    data = build("example.com", "A", [("example.com", 300, "A", "192.0.2.1")], qid=qid)
    looped = data[:owner] + b"\xc0\x00" + data[owner + 2 :]
    assert read(looped, "example.com", "A", qid) is None
    assert oracle(looped, qid, "example.com", "A") == "error"


def test_ttl_is_the_smallest_of_the_set() -> None:
    answer = [("example.com", ttl, "A", f"192.0.2.{i}") for i, ttl in enumerate((300, 100, 2**31, 200))]
    got = read(build("example.com", "A", answer), "example.com", "A")
    assert got is not None and got[1] == 0  # a TTL over 2^31 - 1 counts as 0
    got = read(build("example.com", "A", answer[:2] + answer[3:]), "example.com", "A")
    assert got is not None and got[1] == 100


def test_duplicates_count_once() -> None:
    answer = [("example.com", 300, "MX", "10 mx.example.com."), ("EXAMPLE.com", 50, "MX", "10 MX.example.COM.")]
    assert read(build("example.com", "MX", answer), "example.com", "MX") == (
        Answer("example.com", "MX", "ok", ("10 mx.example.com",)),
        50,
    )


def test_cname_set_keeps_its_last_record() -> None:
    answer = [
        ("www.example.com", 300, "CNAME", "one.example.com."),
        ("www.example.com", 200, "CNAME", "two.example.com."),
        ("one.example.com", 300, "A", "192.0.2.1"),
        ("two.example.com", 300, "A", "192.0.2.2"),
    ]
    assert read(build("www.example.com", "A", answer), "www.example.com", "A") == (
        Answer("www.example.com", "A", "ok", ("192.0.2.2",)),
        200,
    )


@pytest.mark.parametrize(
    ("soa", "ttl"),
    [
        (("example.com", 3600, f"{SOA} 120"), 120),  # the SOA's MINIMUM
        (("example.com", 60, f"{SOA} 3600"), 60),  # the SOA's own TTL
        (("com", 90, f"{SOA} 3600"), 90),  # a parent's SOA
        (("other.example", 10, f"{SOA} 10"), 300),  # not on the way to the root: as without one
        (None, 300),
    ],
)
def test_negative_ttl(soa: tuple[str, int, str] | None, ttl: int) -> None:
    authority = [(soa[0], soa[1], "SOA", soa[2])] if soa else []
    data = build("nx.example.com", "A", [], authority, dns.rcode.NXDOMAIN)
    assert read(data, "nx.example.com", "A") == (Answer("nx.example.com", "A", "nxdomain"), ttl)


def test_negative_ttl_after_a_chain_counts_the_cnames_not_the_authority() -> None:
    soa = [("example.net", 5, "SOA", f"{SOA} 5")]
    short = [("www.example.com", 30, "CNAME", "gone.example.net.")]
    data = build("www.example.com", "A", short, soa, dns.rcode.NXDOMAIN)
    assert read(data, "www.example.com", "A") == (Answer("www.example.com", "A", "nxdomain"), 30)
    long = [("www.example.com", 3000, "CNAME", "gone.example.net.")]
    data = build("www.example.com", "A", long, soa, dns.rcode.NOERROR)
    assert read(data, "www.example.com", "A") == (Answer("www.example.com", "A", "nodata"), 300)  # SOA not read


def test_chains_too_long_or_looping_are_handed_back() -> None:
    hops = [(f"c{i}.example.com", 300, "CNAME", f"c{i + 1}.example.com.") for i in range(17)]
    data = build("c0.example.com", "A", [*hops, ("c17.example.com", 300, "A", "192.0.2.1")])
    assert read(data, "c0.example.com", "A") is None
    assert oracle(data, 4660, "c0.example.com", "A")[0].status == "error"  # type: ignore[union-attr]
    loop = [("a.example.com", 300, "CNAME", "b.example.com."), ("b.example.com", 300, "CNAME", "A.example.com.")]
    assert read(build("a.example.com", "A", loop), "a.example.com", "A") is None
    ok = read(
        build("c0.example.com", "A", [*hops[:15], ("c15.example.com", 300, "A", "192.0.2.1")]), "c0.example.com", "A"
    )
    assert ok == (Answer("c0.example.com", "A", "ok", ("192.0.2.1",)), 300)


@pytest.mark.parametrize(
    ("target", "text"),
    [
        ("with\\032space.example.", "with\\032space.example"),
        ("dot\\.inside.example.", "dot\\.inside.example"),
        ("back\\\\slash.example.", "back\\\\slash.example"),
        ("\\255\\195\\169.EXAMPLE.", "\\255\\195\\169.example"),
        ('quo\\"te.at\\@.example.', 'quo\\"te.at\\@.example'),
    ],
)
def test_names_are_written_as_dnspython_writes_them(target: str, text: str) -> None:
    data = build("2.0.192.in-addr.arpa", "PTR", [("2.0.192.in-addr.arpa", 300, "PTR", target)])
    assert read(data, "2.0.192.in-addr.arpa", "PTR") == (Answer("2.0.192.in-addr.arpa", "PTR", "ok", (text,)), 300)


def test_question_type_compares_exactly() -> None:
    # found by this test: type 67 (0x0043) lower-cased is SPF's 99 (0x0063). Neither path takes it as
    # the reply (``Question.answered_by`` had the same flaw, and dnspython then answered NODATA).
    data = build("example.com", "SPF", [("example.com", 300, "SPF", '"v=spf1 -all"')])
    end = 12 + len(question("example.com", "SPF").asked)
    assert data[end - 4 : end] == b"\x00\x63\x00\x01"
    bad = data[: end - 3] + b"\x43" + data[end - 2 :]
    assert read(bad, "example.com", "SPF") is None
    assert oracle(bad, 4660, "example.com", "SPF") == "not ours"
    assert read(data.replace(b"\x07example", b"\x07ExAmPlE", 1), "example.com", "SPF") == (
        Answer("example.com", "SPF", "ok", ("v=spf1 -all",)),
        300,
    )


def test_a_name_pointing_into_the_header_is_handed_back() -> None:
    """dnspython parses the reply with its authority and additional counts cut (``_answers_only``), so
    a name pointing into the header reads zeros there; the hand path hands such a reply back instead of
    reading the counts as they came (found in review: a PTR target ``c0 09`` read as \\000)."""
    data = bytes.fromhex("123481800001000100010000076578616d706c6503636f6d00000c0001c00c000c00010000003c0002c009")
    assert read(data, "example.com", "PTR") is None
    assert oracle(data, 4660, "example.com", "PTR") == (Answer("example.com", "PTR", "ok", (".",)), 60)
