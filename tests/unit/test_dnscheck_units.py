"""DNS check pieces that need no DNS server: SPF syntax, DNSBL names, certificate names, baselines."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import example, given, settings
from hypothesis import strategies as st

from exporter.dnscheck.baseline import BaselineStore, fingerprint
from exporter.dnscheck.dnsbl import query_name
from exporter.dnscheck.smtp_probe import name_matches
from exporter.dnscheck.spf import check_syntax


@pytest.mark.parametrize(
    ("record", "problems"),
    [
        ("v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 include:_spf.example.com mx a:mail.example.com -all", 0),
        ("v=spf1 redirect=_spf.example.com", 0),
        ("v=spf1 exists:%{i}._spf.example.com -all", 0),
        ("v=spf1 ip4:192.0.2.300 -all", 1),
        ("v=spf1 ip4:2001:db8::1 -all", 1),
        ("v=spf1 include -all", 1),
        ("v=spf1 allow:everything -all", 1),
        ("v=spf1 -all:foo", 1),
        ("v=spf1 redirect=a.example redirect=b.example", 1),
        ("v=spf1 a:not_a..domain -all", 1),
    ],
)
def test_spf_syntax(record: str, problems: int) -> None:
    assert len(check_syntax(record)) == problems, check_syntax(record)


def test_dnsbl_query_names() -> None:
    assert query_name("192.0.2.20", "zen.example") == "20.2.0.192.zen.example"
    name = query_name("2001:db8::1", "bl.example")
    assert name.startswith("1.0.0.0.") and name.endswith(".8.b.d.0.1.0.0.2.bl.example")
    assert len(name.split(".")) == 32 + 2


def cert(names: list[str], cn: str = "ignored.example") -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
    return builder.sign(key, hashes.SHA256())


def test_certificate_name_matching_rfc6125() -> None:
    c = cert(["mail1.contoso.sim", "*.mx.contoso.sim"])
    assert name_matches("MAIL1.contoso.sim.", c)
    assert name_matches("a.mx.contoso.sim", c)
    assert not name_matches("a.b.mx.contoso.sim", c)  # a wildcard covers one label only
    assert not name_matches("mx.contoso.sim", c)
    assert not name_matches("mail2.contoso.sim", c)
    assert name_matches("legacy.example", cert([], cn="legacy.example"))  # CN only without SAN
    assert not name_matches("ignored.example", c)  # CN is ignored when SAN is present


def test_baseline_learns_drifts_accepts_and_survives_restart(tmp_path: Path) -> None:
    now = [1000.0]
    path = tmp_path / "b.json"
    store = BaselineStore(path, accept_after=3600, clock=lambda: now[0])
    first = store.observe("contoso.sim", "MX", ["mail1.contoso.sim", "mail2.contoso.sim"])
    assert not first.drifted and first.last_change is None
    now[0] += 60
    assert not store.observe("contoso.sim", "MX", ["MAIL2.contoso.sim", "mail1.contoso.sim"]).drifted  # same set
    now[0] += 60
    moved = store.observe("contoso.sim", "MX", ["evil.example"])
    assert (
        moved.drifted and moved.last_change == 1120.0 and moved.baseline == ("mail1.contoso.sim", "mail2.contoso.sim")
    )
    restarted = BaselineStore(path, accept_after=3600, clock=lambda: now[0])
    now[0] += 1800
    assert restarted.observe("contoso.sim", "MX", ["evil.example"]).drifted  # remembered across restarts
    now[0] += 1800
    accepted = restarted.observe("contoso.sim", "MX", ["evil.example"])
    assert not accepted.drifted and accepted.baseline == ("evil.example",) and accepted.last_change == 1120.0
    assert json.loads(path.read_text())["version"] == 1


def test_baseline_with_expected_value_never_auto_accepts(tmp_path: Path) -> None:
    now = [0.0]
    store = BaselineStore(tmp_path / "b.json", accept_after=10, clock=lambda: now[0])
    assert store.observe("d", "SPF", ["v=spf1 -all"], expected=["v=spf1 -all"]).drifted is False
    assert store.observe("d", "SPF", ["v=spf1 +all"], expected=["v=spf1 -all"]).drifted
    now[0] = 1e6
    assert store.observe("d", "SPF", ["v=spf1 +all"], expected=["v=spf1 -all"]).drifted
    assert fingerprint([]) == fingerprint(["  "])  # absent


def test_unreadable_baseline_file_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text("{not json")
    store = BaselineStore(path, accept_after=0, clock=lambda: 5.0)
    assert not store.observe("d", "MX", ["a"]).drifted
    assert json.loads(path.read_text())["records"]


def test_a_kept_question_is_the_same_query_with_a_new_id_and_matches_only_its_reply() -> None:
    """The rendered query is kept per name and type; each send gets a new ID; a reply matches only
    when its ID, QR flag and question (any letter case) are those of the query sent."""
    import dns.flags
    import dns.message

    from exporter.dnscheck.resolver import EDNS_PAYLOAD, question

    asked = question("Sub.Example.COM", "TXT")
    assert question("Sub.Example.COM", "TXT") is asked
    ids, wires = zip(*(asked.wire() for _ in range(8)), strict=True)
    assert len(set(ids)) > 1 and len({w[2:] for w in wires}) == 1
    query = dns.message.from_wire(wires[0])
    assert (query.id, str(query.question[0].name), query.flags & dns.flags.RD) == (
        ids[0],
        "Sub.Example.COM.",
        dns.flags.RD,
    )
    assert query.edns == 0 and query.payload == EDNS_PAYLOAD

    def reply(name: str, qid: int) -> tuple[bytes, dns.message.Message]:
        response = dns.message.make_response(dns.message.make_query(name, "TXT"))
        response.id = qid
        data = response.to_wire()
        return data, dns.message.from_wire(data)

    assert asked.answered_by(ids[0], *reply("sub.example.com", ids[0]))
    assert asked.answered_by(ids[0], *reply("SUB.EXAMPLE.COM", ids[0]))
    assert not asked.answered_by(ids[0], *reply("sub.example.com", (ids[0] + 1) % 65536))
    assert not asked.answered_by(ids[0], *reply("sub.example.net", ids[0]))
    assert not asked.answered_by(ids[0], wires[0], query)  # the query itself (no QR)


_LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1, max_size=70)


@settings(max_examples=300, deadline=None)
@given(
    labels=st.lists(_LABEL, min_size=1, max_size=6),
    rtype=st.sampled_from(["A", "AAAA", "MX", "TXT", "PTR", "CNAME", "NS", "SOA", "SRV"]),
    final_dot=st.booleans(),
)
@example(labels=["a" * 63, "b" * 63, "c" * 63, "d" * 61], rtype="TXT", final_dot=False)  # 255 octets: the most
@example(labels=["a" * 63, "b" * 63, "c" * 63, "d" * 62], rtype="TXT", final_dot=True)  # 256: NameTooLong
def test_a_plain_name_is_written_as_dnspython_renders_it(labels: list[str], rtype: str, final_dot: bool) -> None:
    """question() writes plain names itself; the query must be byte for byte dnspython's (or, for a
    name dnspython refuses, dnspython's error)."""
    from exporter.dnscheck.resolver import question, rendered_question

    name = ".".join(labels) + ("." if final_dot else "")
    try:
        expected = rendered_question(name, rtype)
    except Exception as err:  # whichever dnspython raises, question() must raise it too
        with pytest.raises(type(err)):
            question.__wrapped__(name, rtype)
        return
    assert question.__wrapped__(name, rtype) == expected


def test_names_that_are_not_plain_are_rendered_by_dnspython() -> None:
    """Escapes, IDN and the root go through dnspython's renderer (and its errors)."""
    import dns.name

    from exporter.dnscheck.resolver import question, rendered_question

    for name in ("bücher.example", r"a\.b.example", r"a\032b.example", "."):
        assert question.__wrapped__(name, "TXT") == rendered_question(name, "TXT")
    with pytest.raises(dns.name.EmptyLabel):
        question.__wrapped__("a..example", "TXT")
    with pytest.raises(dns.name.LabelTooLong):
        question.__wrapped__("a" * 64 + ".example", "TXT")


def test_a_reply_matches_only_with_the_questions_type_and_class_exactly() -> None:
    """The question's name compares without case (as ``Message.is_response`` does), its type and class
    octets exactly: lower-cased, type 67 (``00 43``) would pass for SPF's 99 (``00 63``), and a type
    whose octet is an upper-case letter (HTTPS, 65) would not match its own reply."""
    import dns.message

    from exporter.dnscheck.resolver import question

    for rtype, other in (("SPF", 67), ("TXT", 48), ("HTTPS", 97)):
        asked = question("Example.COM", rtype)
        response = dns.message.make_response(dns.message.make_query("EXAMPLE.com", rtype))
        response.id = 7
        data = response.to_wire()
        assert asked.answered_by(7, data, dns.message.from_wire(data)), rtype
        at = 12 + len(asked.asked) - 3  # the type's low octet
        forged = data[:at] + bytes((other,)) + data[at + 1 :]
        assert not asked.answered_by(7, forged, dns.message.from_wire(forged)), (rtype, other)
