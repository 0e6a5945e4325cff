"""The DNS/SMTP test infrastructure: NSD with the test zones, DemoDNS against NSD, pyspf pointed at a
server of ours, DemoSMTP with every certificate kind, and the demo organisation's outside world."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.reversename
import dns.rrset
import dns.zone
import pytest
import spf
from cryptography import x509

from exporter.netsim.demo_net import DNSBL_ZONE as DEMO_DNSBL_ZONE
from exporter.netsim.demo_net import DOMAIN as DEMO_DOMAIN
from exporter.netsim.demo_net import OUTBOUND, SECOND_DOMAIN, DemoNet, demo_zones, mx_hosts
from exporter.netsim.dns_server import DemoDNS, split_txt
from exporter.netsim.smtp_server import REJECT_REPLY
from tests.conftest import NsdFactory
from tests.dnsinfra.nsd import NsdError, NsdServer
from tests.dnsinfra.pyspf_dns import make_resolver, use_resolver
from tests.dnsinfra.smtp import EXPIRING_DAYS, MX_NAME, SmtpServerFactory, SmtpTo
from tests.dnsinfra.zones import (
    DMARC_CASES,
    DNSBL_CASES,
    DNSBL_ZONE,
    DOMAIN,
    GOOD_IP,
    LONG_SPF_RECORD,
    MX_CASES,
    MX_HOSTS,
    PTR_CASES,
    SPF_CASES,
    TEST_ZONES,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

LOOPBACK = "127.0.0.1"


def resolver_for(port: int, lifetime: float = 3.0) -> dns.resolver.Resolver:
    return make_resolver(LOOPBACK, port, lifetime=lifetime)


def txt_values(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    return [b"".join(r.strings).decode() for r in resolver.resolve(name, "TXT")]


def ask(port: int, name: str, rtype: str, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rtype, use_edns=0, payload=1232)
    if tcp:
        return dns.query.tcp(query, LOOPBACK, port=port, timeout=3)
    return dns.query.udp(query, LOOPBACK, port=port, timeout=3)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback UDP port bound by a socket that never answers (queries to it time out)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        yield sock.getsockname()[1]


# -- NSD answers the test zones ------------------------------------------------------------------


def test_nsd_mx_and_addresses(nsd_server: NsdServer) -> None:
    resolver = resolver_for(nsd_server.port)
    mx = {(r.preference, r.exchange.to_text(True)) for r in resolver.resolve(DOMAIN, "MX")}
    assert mx == {(10, f"mx1.{DOMAIN}"), (20, f"mx2.{DOMAIN}")}
    for host, (v4, v6) in MX_HOSTS.items():
        assert [r.address for r in resolver.resolve(host, "A")] == [v4]
        assert [r.address for r in resolver.resolve(host, "AAAA")] == [v6]
    null_mx = resolver.resolve(f"nullmx.{DOMAIN}", "MX")
    assert [(r.preference, r.exchange) for r in null_mx] == [(0, dns.name.root)]
    assert MX_CASES[f"nullmx.{DOMAIN}"] == "null_mx"
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve(f"nomx.{DOMAIN}", "MX")
    assert [r.address for r in resolver.resolve(f"nomx.{DOMAIN}", "A")] == ["192.0.2.81"]
    # an MX host that is a CNAME: the resolver follows it, the answer's canonical name differs
    answer = resolver.resolve(f"alias.{DOMAIN}", "A")
    assert answer.canonical_name.to_text(True) == f"mx1.{DOMAIN}"


def test_nsd_txt_split_strings_are_joined(nsd_server: NsdServer) -> None:
    resolver = resolver_for(nsd_server.port)
    (record,) = resolver.resolve(f"spf-long.{DOMAIN}", "TXT")
    assert len(record.strings) >= 2
    assert all(len(s) <= 255 for s in record.strings)
    assert b"".join(record.strings).decode() == LONG_SPF_RECORD
    # a plain UDP query without EDNS does not fit: NSD sets TC (the resolver above retried over TCP)
    bare = dns.query.udp(dns.message.make_query(f"spf-long.{DOMAIN}", "TXT"), LOOPBACK, port=nsd_server.port)
    assert bare.flags & dns.flags.TC
    two = sorted(txt_values(resolver, f"spf-two.{DOMAIN}"))
    assert two == ["v=spf1 -all", f"v=spf1 ip4:{GOOD_IP} -all"]


def test_nsd_ptr_cases(nsd_server: NsdServer) -> None:
    resolver = resolver_for(nsd_server.port)
    for ip, case in PTR_CASES.items():
        reverse = dns.reversename.from_address(ip)
        if not case.ptrs:
            with pytest.raises(dns.resolver.NXDOMAIN):
                resolver.resolve(reverse, "PTR")
            continue
        names = {r.target.to_text(True) for r in resolver.resolve(reverse, "PTR")}
        assert names == set(case.ptrs), ip
        confirmed = []
        for name in names:
            with contextlib.suppress(dns.resolver.NXDOMAIN):
                confirmed += [r.address for r in resolver.resolve(name, "A")]
        verdict = (
            "multiple"
            if len(names) > 1
            else "not_forward_confirmed"
            if ip not in confirmed
            else "ok"
            if names == {case.helo}
            else "helo_mismatch"
        )
        assert verdict == case.verdict, ip


def classify_dnsbl(resolver: dns.resolver.Resolver, ip: str, zone: str) -> str:
    name = ".".join(reversed(ip.split("."))) + "." + zone
    try:
        codes = {r.address for r in resolver.resolve(name, "A")}
    except dns.resolver.NXDOMAIN:
        return "not_listed"
    errors = {
        "127.255.255.254": "public_resolver",
        "127.255.255.255": "rate_limited",
        "127.255.255.252": "zone_name_typo",
        "127.255.255.253": "query_error",
        "127.0.1.255": "ip_query_not_allowed",
        "127.0.0.1": "query_refused",
    }
    for code, verdict in errors.items():
        if code in codes:
            return verdict
    if not all(ipaddress.ip_address(c) in ipaddress.ip_network("127.0.0.0/8") for c in codes):
        return "bad_answer"
    return "listed"


def test_nsd_dnsbl_and_dmarc_cases(nsd_server: NsdServer) -> None:
    resolver = resolver_for(nsd_server.port)
    for ip, verdict in DNSBL_CASES.items():
        assert classify_dnsbl(resolver, ip, DNSBL_ZONE) == verdict, ip
    assert txt_values(resolver, f"20.2.0.192.{DNSBL_ZONE}")[0].startswith("Listed")
    for domain, verdict in DMARC_CASES.items():
        try:
            records = [t for t in txt_values(resolver, f"_dmarc.{domain}") if t.startswith("v=DMARC1")]
        except dns.resolver.NXDOMAIN:
            records = []
        tags = dict(part.strip().split("=", 1) for part in records[0].split(";") if part.strip()) if records else {}
        found = "missing" if not records else "ok" if tags.get("p") in ("none", "quarantine", "reject") else "malformed"
        assert found == verdict, domain
    assert txt_values(resolver, f"_mta-sts.{DOMAIN}")[0].startswith("v=STSv1;")
    assert txt_values(resolver, f"_smtp._tls.{DOMAIN}")[0].startswith("v=TLSRPTv1;")


def test_resolver_faults_are_distinct_exceptions(nsd_server: NsdServer, silent_port: int) -> None:
    resolver = resolver_for(nsd_server.port)
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve(f"nonexistent.{DOMAIN}", "A")
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve(f"nodata.{DOMAIN}", "A")
    with pytest.raises(dns.resolver.NoAnswer):  # empty non-terminal: NODATA, not NXDOMAIN
        resolver.resolve(f"ent.sub.{DOMAIN}", "A")
    with pytest.raises(dns.resolver.NoNameservers) as servfail:
        resolver.resolve("servfail.test", "A")
    assert "SERVFAIL" in str(servfail.value)
    with pytest.raises(dns.resolver.NoNameservers) as refused:
        resolver.resolve("example.org", "A")
    assert "REFUSED" in str(refused.value)
    started = time.monotonic()
    with pytest.raises(dns.resolver.LifetimeTimeout):
        resolver_for(silent_port, lifetime=0.6).resolve(DOMAIN, "MX")
    assert time.monotonic() - started < 3


def test_broken_zone_servfail(nsd_server: NsdServer) -> None:
    """NSD configured with a zone it cannot load answers SERVFAIL (without AA) for every name in it."""
    for name in ("servfail.test", "www.servfail.test"):
        for rtype in ("SOA", "A", "TXT"):
            reply = ask(nsd_server.port, name, rtype)
            assert reply.rcode() == dns.rcode.SERVFAIL
            assert not reply.flags & dns.flags.AA
            assert not reply.answer
    assert "servfail.test" in nsd_server.log_text()


def test_nsd_reload_and_checkzone_errors(nsd_factory: NsdFactory, tmp_path: Path) -> None:
    zone = "$ORIGIN r.test.\n$TTL 60\n@ IN SOA ns1 host 1 60 60 60 60\n@ IN NS ns1\nns1 IN A 127.0.0.1\n"
    server = nsd_factory({"r.test": zone + '@ IN TXT "v=spf1 -all"\n'})
    assert server.start_seconds is not None and server.start_seconds < 10
    resolver = resolver_for(server.port)
    assert txt_values(resolver, "r.test") == ["v=spf1 -all"]
    port = server.port
    server.reload({"r.test": zone.replace(" 1 60", " 2 60") + '@ IN TXT "v=spf1 ip4:192.0.2.10 -all"\n'})
    assert server.port == port
    assert txt_values(resolver, "r.test") == ["v=spf1 ip4:192.0.2.10 -all"]
    with pytest.raises(NsdError, match="nsd-checkzone"):
        NsdServer({"bad.test": "$ORIGIN bad.test.\n@ IN A 192.0.2.1\n"}, tmp_path / "bad").start()


# -- DemoDNS behaves like NSD --------------------------------------------------------------------


def comparison_queries() -> list[tuple[str, str]]:
    queries = [
        (DOMAIN, "MX"),
        (DOMAIN, "SOA"),
        (DOMAIN, "NS"),
        (DOMAIN, "A"),
        (DOMAIN, "AAAA"),
        (DOMAIN.upper(), "MX"),
        (f"alias.{DOMAIN}", "A"),
        (f"alias.{DOMAIN}", "CNAME"),
        (f"alias.{DOMAIN}", "TXT"),
        (f"alias2.{DOMAIN}", "AAAA"),
        (f"dangling-cname.{DOMAIN}", "A"),
        (f"cname-out.{DOMAIN}", "A"),
        (f"sub.{DOMAIN}", "A"),
        (f"ent.sub.{DOMAIN}", "TXT"),
        (f"deep.ent.sub.{DOMAIN}", "A"),
        (f"x.deep.ent.sub.{DOMAIN}", "A"),
        ("example.org", "A"),
        ("test", "SOA"),
        ("2.0.192.in-addr.arpa", "SOA"),
        ("99.2.0.192.in-addr.arpa", "PTR"),
    ]
    for rtype in ("MX", "A", "AAAA", "TXT"):
        queries += [(name, rtype) for name in MX_CASES]
    for name in SPF_CASES:
        queries += [(name, "TXT"), (name, "A")]
    for ip in PTR_CASES:
        queries.append((dns.reversename.from_address(ip).to_text(), "PTR"))
        queries += [(name, "A") for name in PTR_CASES[ip].ptrs]
    for ip in DNSBL_CASES:
        name = ".".join(reversed(ip.split("."))) + "." + DNSBL_ZONE
        queries += [(name, "A"), (name, "TXT")]
    for domain in DMARC_CASES:
        queries += [(f"_dmarc.{domain}", "TXT"), (f"_mta-sts.{domain}", "TXT"), (f"_smtp._tls.{domain}", "TXT")]
    return queries


def rrsets(section: list[dns.rrset.RRset]) -> list[tuple[str, str, int, list[str]]]:
    """Order-independent view of a section: (owner, type, TTL, sorted rdata) per RRset."""
    out = [
        (r.name.to_text().lower(), dns.rdatatype.to_text(r.rdtype), r.ttl, sorted(d.to_text() for d in r))
        for r in section
    ]
    return sorted(out)


def summary(reply: dns.message.Message) -> tuple[object, ...]:
    """rcode, AA, TC, the answer RRsets and the SOA in authority (the parts compared with NSD)."""
    return (
        dns.rcode.to_text(reply.rcode()),
        bool(reply.flags & dns.flags.AA),
        bool(reply.flags & dns.flags.TC),
        rrsets(reply.answer),
        rrsets([r for r in reply.authority if r.rdtype == dns.rdatatype.SOA]),
    )


def test_demo_dns_answers_like_nsd(nsd_server: NsdServer, demo_dns: DemoDNS) -> None:
    queries = comparison_queries()
    assert len(queries) > 100
    for index, (name, rtype) in enumerate(queries):
        tcp = index % 5 == 0  # a fifth over TCP, the rest over UDP with EDNS
        real = ask(nsd_server.port, name, rtype, tcp=tcp)
        demo = ask(demo_dns.port, name, rtype, tcp=tcp)
        assert summary(demo) == summary(real), (name, rtype)
        assert [r.rdtype for r in demo.answer] == [r.rdtype for r in real.answer], (name, rtype)  # CNAME first
    # truncation without EDNS, as NSD does it
    for port in (nsd_server.port, demo_dns.port):
        bare = dns.query.udp(dns.message.make_query(f"spf-long.{DOMAIN}", "TXT"), LOOPBACK, port=port)
        assert bare.flags & dns.flags.TC and not bare.answer


def test_demo_dns_resolver_view(demo_dns: DemoDNS, silent_port: int) -> None:
    resolver = resolver_for(demo_dns.port)
    (record,) = resolver.resolve(f"spf-long.{DOMAIN}", "TXT")  # truncated over UDP, retried over TCP
    assert b"".join(record.strings).decode() == LONG_SPF_RECORD
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve(f"nonexistent.{DOMAIN}", "A")
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve(f"nodata.{DOMAIN}", "A")
    with pytest.raises(dns.resolver.NoNameservers, match="REFUSED"):
        resolver.resolve("example.org", "A")
    transports = {t for t, name, _ in demo_dns.recent_queries() if name.startswith("spf-long.")}
    assert transports == {"udp", "tcp"}


def test_demo_dns_faults(demo_dns: DemoDNS) -> None:
    resolver = resolver_for(demo_dns.port, lifetime=0.8)
    demo_dns.faults.set(f"*.{DNSBL_ZONE}", "servfail")
    with pytest.raises(dns.resolver.NoNameservers, match="SERVFAIL"):
        resolver.resolve(f"2.0.0.127.{DNSBL_ZONE}", "A")
    assert resolver.resolve(DOMAIN, "MX")  # other names unaffected
    demo_dns.faults.set(f"spf-simple.{DOMAIN}", "refused", rtype="TXT")
    with pytest.raises(dns.resolver.NoNameservers, match="REFUSED"):
        resolver.resolve(f"spf-simple.{DOMAIN}", "TXT")
    with pytest.raises(dns.resolver.NoAnswer):  # the A query for the same name is answered normally
        resolver.resolve(f"spf-simple.{DOMAIN}", "A")
    demo_dns.faults.set(f"SPF-SIMPLE.{DOMAIN}.", "timeout", rtype="txt")  # replaces the refused entry
    assert len(demo_dns.faults) == 2
    started = time.monotonic()
    with pytest.raises(dns.resolver.LifetimeTimeout):
        resolver.resolve(f"spf-simple.{DOMAIN}", "TXT")
    assert time.monotonic() - started < 3
    with pytest.raises(ValueError, match="unknown fault"):
        demo_dns.faults.set("x", "nxdomain")
    demo_dns.faults.clear()
    assert len(demo_dns.faults) == 0
    assert txt_values(resolver, f"spf-simple.{DOMAIN}")
    assert resolver.resolve(f"2.0.0.127.{DNSBL_ZONE}", "A")


def test_demo_dns_planted_answers(demo_dns: DemoDNS) -> None:
    """An ``answer`` fault plants what a blocklist answers a resolver it refuses (Spamhaus: 127.255.255.254
    for every name, its reason in TXT), or what an NXDOMAIN-rewriting resolver answers: authoritative,
    for names inside the zones and outside them, A/TXT as planted and NODATA for other types."""
    resolver = resolver_for(demo_dns.port, lifetime=0.8)
    reason = "Error: open resolver; https://check.spamhaus.org/returnc/pub/127.0.0.1/"
    demo_dns.faults.set(f"*.{DNSBL_ZONE}", "answer", address="127.255.255.254", text=reason)
    for name in (f"2.0.0.127.{DNSBL_ZONE}", f"10.2.0.192.{DNSBL_ZONE}"):  # listed and unlisted alike
        assert [r.address for r in resolver.resolve(name, "A")] == ["127.255.255.254"]
        assert txt_values(resolver, name) == [reason]
        with pytest.raises(dns.resolver.NoAnswer):
            resolver.resolve(name, "AAAA")
    demo_dns.faults.set("*.nxdomain-rewritten.example", "answer", rtype="A", address="198.51.100.80")
    assert [r.address for r in resolver.resolve("10.2.0.192.nxdomain-rewritten.example", "A")] == ["198.51.100.80"]
    with pytest.raises(ValueError, match="address"):
        demo_dns.faults.set("x", "servfail", address="127.0.0.2")
    with pytest.raises(ValueError):
        demo_dns.faults.set("x", "answer", address="not-an-ip")
    demo_dns.faults.clear(f"*.{DNSBL_ZONE}")
    assert [r.address for r in resolver.resolve(f"2.0.0.127.{DNSBL_ZONE}", "A")] == ["127.0.0.2"]


def test_demo_dns_set_zones_and_faults_while_serving(demo_dns: DemoDNS) -> None:
    """Zones and faults switched from another thread while queries run: every answer is old or new data,
    or the fault, and nothing else."""
    name = f"spf-simple.{DOMAIN}"
    old = f"v=spf1 ip4:{GOOD_IP} -all"
    new = "v=spf1 ip4:192.0.2.99 -all"
    changed = dict(TEST_ZONES)
    changed[DOMAIN] = TEST_ZONES[DOMAIN].replace(split_txt(old), split_txt(new))
    assert changed[DOMAIN] != TEST_ZONES[DOMAIN]
    seen: set[str] = set()
    errors: list[BaseException] = []
    stop = threading.Event()

    def client() -> None:
        resolver = resolver_for(demo_dns.port, lifetime=2)
        while not stop.is_set():
            try:
                seen.update(t for t in txt_values(resolver, name) if t.startswith("v=spf1"))
            except dns.resolver.NoNameservers:
                seen.add("SERVFAIL")
            except BaseException as error:
                errors.append(error)
                return

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    for i in range(30):
        demo_dns.set_zones(changed if i % 2 else TEST_ZONES)
        if i % 3 == 0:
            demo_dns.faults.set(name, "servfail")
        else:
            demo_dns.faults.clear()
        time.sleep(0.01)
    stop.set()
    for thread in threads:
        thread.join(5)
    assert not errors
    assert seen <= {old, new, "SERVFAIL"} and old in seen
    demo_dns.set_zones(changed)
    demo_dns.faults.clear()
    assert [t for t in txt_values(resolver_for(demo_dns.port), name) if t.startswith("v=spf1")] == [new]
    with pytest.raises(dns.zone.NoSOA):
        demo_dns.set_zones({**TEST_ZONES, "broken.test": "$TTL 60\n@ IN A 192.0.2.1\n"})
    assert new in txt_values(resolver_for(demo_dns.port), name)  # the failed update changed nothing


def test_demo_dns_cname_loop_and_throughput() -> None:
    zone = (
        "$ORIGIN loop.test.\n$TTL 60\n@ IN SOA ns1 host 1 60 60 60 60\n@ IN NS ns1\nns1 IN A 127.0.0.1\n"
        "a IN CNAME b\nb IN CNAME a\n"
    )
    with DemoDNS({"loop.test": zone}) as server:
        reply = ask(server.port, "a.loop.test", "A")
        assert reply.rcode() == dns.rcode.NOERROR
        assert [r.rdtype for r in reply.answer] == [dns.rdatatype.CNAME, dns.rdatatype.CNAME]
        wire = dns.message.make_query("ns1.loop.test", "A").to_wire()
        count, started = 0, time.monotonic()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            while count < 1000 and time.monotonic() - started < 5:
                sock.sendto(wire, (LOOPBACK, server.port))
                sock.recv(4096)
                count += 1
        rate = count / (time.monotonic() - started)
        assert count == 1000 and rate > 200, f"{count} queries, {rate:.0f}/s"
        assert server.query_count >= 1001


# -- pyspf against our servers -------------------------------------------------------------------

SPF_PARAMS = [(domain, ip) for domain, case in SPF_CASES.items() for ip in case.verdicts]


@pytest.mark.parametrize(("domain", "ip"), SPF_PARAMS)
def test_pyspf_verdicts_against_nsd(nsd_server: NsdServer, domain: str, ip: str) -> None:
    case = SPF_CASES[domain]
    with use_resolver(make_resolver(LOOPBACK, nsd_server.port)):
        result, explanation = spf.check2(i=ip, s=f"postmaster@{domain}", h=f"ex01.{DOMAIN}")
        query = spf.query(i=ip, s=f"postmaster@{domain}", h=f"ex01.{DOMAIN}")
        query.check()
    assert result == case.verdicts[ip], (domain, ip, explanation, case.note)
    if case.lookups is not None and ip == GOOD_IP:
        assert query.lookups == case.lookups, (domain, explanation)


def test_pyspf_verdicts_against_demo_dns(demo_dns: DemoDNS) -> None:
    with use_resolver(make_resolver(LOOPBACK, demo_dns.port)):
        for domain, ip in SPF_PARAMS:
            result, explanation = spf.check2(i=ip, s=f"postmaster@{domain}", h=f"ex01.{DOMAIN}")
            assert result == SPF_CASES[domain].verdicts[ip], (domain, ip, explanation)
        demo_dns.faults.set(f"spf-simple.{DOMAIN}", "servfail")
        assert spf.check2(i=GOOD_IP, s=f"a@spf-simple.{DOMAIN}", h="x")[0] == "temperror"


def test_pyspf_resolver_is_per_thread(demo_dns: DemoDNS, silent_port: int) -> None:
    results: dict[str, str] = {}

    def run(label: str, port: int) -> None:
        with use_resolver(make_resolver(LOOPBACK, port, lifetime=0.5)):
            results[label] = spf.check2(i=GOOD_IP, s=f"a@spf-simple.{DOMAIN}", h="x", querytime=1)[0]

    threads = [
        threading.Thread(target=run, args=("demo", demo_dns.port)),
        threading.Thread(target=run, args=("silent", silent_port)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == {"demo": "pass", "silent": "temperror"}


# -- DemoSMTP ------------------------------------------------------------------------------------


def client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def peer_not_after(client: smtplib.SMTP) -> datetime.datetime:
    sock = client.sock
    assert isinstance(sock, ssl.SSLSocket)
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).not_valid_after_utc


def test_smtp_banner_ehlo_starttls(smtp_server_factory: SmtpServerFactory) -> None:
    server = smtp_server_factory("valid")
    client = SmtpTo(LOOPBACK)
    code, banner = client.connect(MX_NAME, server.port)
    assert (code, banner.decode()) == (220, f"{MX_NAME} ESMTP")
    code, _ = client.ehlo("probe.mailflow.test")
    assert code == 250 and client.has_extn("starttls")
    code, _ = client.starttls(context=client_context(smtp_server_factory.ca_file))
    assert code == 220
    sock = client.sock
    assert isinstance(sock, ssl.SSLSocket) and sock.version() in ("TLSv1.2", "TLSv1.3")
    assert peer_not_after(client) > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=89)
    client.ehlo("probe.mailflow.test")
    assert not client.has_extn("starttls") and not client.has_extn("auth")
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        client.sendmail("probe@mailflow.test", ["postmaster@mailflow.test"], "Subject: x\r\n\r\nx")
    assert (refused.value.smtp_code, refused.value.smtp_error.decode()) == (550, REJECT_REPLY[4:])
    client.quit()


def test_smtp_certificate_kinds(smtp_server_factory: SmtpServerFactory) -> None:
    context = client_context(smtp_server_factory.ca_file)
    client = SmtpTo(LOOPBACK)
    client.connect(MX_NAME, smtp_server_factory("expiring").port)
    client.starttls(context=context)
    left = peer_not_after(client) - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=EXPIRING_DAYS - 1) < left <= datetime.timedelta(days=EXPIRING_DAYS)
    client.quit()

    for kind, reason in (("expired", "certificate has expired"), ("wrong_name", "Hostname mismatch")):
        client = SmtpTo(LOOPBACK)
        client.connect(MX_NAME, smtp_server_factory(kind).port)
        with pytest.raises(ssl.SSLCertVerificationError, match=reason):
            client.starttls(context=context)
        client.close()

    client = SmtpTo(LOOPBACK)
    client.connect(MX_NAME, smtp_server_factory("no_starttls").port)
    client.ehlo("probe.mailflow.test")
    assert not client.has_extn("starttls")
    with pytest.raises(smtplib.SMTPNotSupportedError):
        client.starttls(context=context)
    client.quit()


def test_smtp_faults(smtp_server_factory: SmtpServerFactory) -> None:
    server = smtp_server_factory("valid", reset_after_banner=True)
    client = SmtpTo(LOOPBACK)
    assert client.connect(MX_NAME, server.port)[0] == 220
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.ehlo("probe.mailflow.test")
    client.close()

    delayed = smtp_server_factory("valid", banner_delay=0.5)
    started = time.monotonic()
    client = SmtpTo(LOOPBACK)
    assert client.connect(MX_NAME, delayed.port)[0] == 220
    assert 0.45 <= time.monotonic() - started < 3
    client.quit()


# -- the demo organisation's outside world ---------------------------------------------------------


def test_demo_zones_load_in_nsd_and_match_demo_dns(nsd_factory: NsdFactory) -> None:
    zones = demo_zones()
    real = nsd_factory(zones)  # nsd-checkzone passes, NSD loads them
    with DemoDNS(zones) as demo:
        for name, rtype in [
            (DEMO_DOMAIN, "MX"),
            (DEMO_DOMAIN, "TXT"),
            (f"_dmarc.{SECOND_DOMAIN}", "TXT"),
            ("20.2.0.192.in-addr.arpa", "PTR"),
            (f"20.2.0.192.{DEMO_DNSBL_ZONE}", "A"),
            (f"10.2.0.192.{DEMO_DNSBL_ZONE}", "A"),
        ]:
            assert summary(ask(demo.port, name, rtype)) == summary(ask(real.port, name, rtype)), (name, rtype)


def test_demo_net_planted_faults() -> None:
    with DemoNet() as net:
        resolver = make_resolver(net.dns_address, net.dns_port)
        mx = sorted((r.preference, r.exchange.to_text(True)) for r in resolver.resolve(DEMO_DOMAIN, "MX"))
        assert [host for _, host in mx] == list(mx_hosts())
        for host in mx_hosts():
            assert [r.address for r in resolver.resolve(host, "A")] == [LOOPBACK]
        with use_resolver(resolver):
            for server in OUTBOUND:
                result, _ = spf.check2(i=server.ip, s=f"postmaster@{DEMO_DOMAIN}", h=server.helo)
                assert result == server.spf, server
                assert spf.check2(i=server.ip, s=f"postmaster@{SECOND_DOMAIN}", h=server.helo)[0] == "fail"
        for server in OUTBOUND:
            (ptr,) = resolver.resolve(dns.reversename.from_address(server.ip), "PTR")
            assert ptr.target.to_text(True) == server.ptr
            assert [r.address for r in resolver.resolve(server.ptr, "A")] == [server.ip]  # forward-confirmed
            assert (server.ptr == server.helo) == (server.ptr_verdict == "ok")
            listed = classify_dnsbl(resolver, server.ip, DEMO_DNSBL_ZONE) == "listed"
            assert listed == server.dnsbl_listed
        assert classify_dnsbl(resolver, "127.0.0.2", DEMO_DNSBL_ZONE) == "listed"
        assert txt_values(resolver, f"_dmarc.{DEMO_DOMAIN}")[0].startswith("v=DMARC1; p=quarantine")
        with pytest.raises(dns.resolver.NXDOMAIN):
            resolver.resolve(f"_dmarc.{SECOND_DOMAIN}", "TXT")
        # the SMTP endpoint for both MX names, certificate from the demo CA
        for host in mx_hosts():
            client = SmtpTo(net.dns_address)
            assert client.connect(host, net.smtp_port) == (220, f"{mx_hosts()[0]} ESMTP".encode())
            client.starttls(context=client_context(net.ca_file))
            left = peer_not_after(client) - datetime.datetime.now(datetime.UTC)
            assert datetime.timedelta(days=89) < left <= datetime.timedelta(days=90)
            client.quit()
        smtp_port = net.smtp_port
    with pytest.raises(OSError):
        socket.create_connection((LOOPBACK, smtp_port), timeout=1).close()


def test_pyspf_patch_is_undone() -> None:
    before = spf.DNSLookup
    with use_resolver(make_resolver(LOOPBACK, 53)):
        assert spf.DNSLookup is not before
        with use_resolver(make_resolver(LOOPBACK, 53)):
            pass
        assert spf.DNSLookup is not before
    assert spf.DNSLookup is before
