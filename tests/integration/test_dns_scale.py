"""DNS checks at scale, against real NSD: linear bookkeeping per cycle, the shared per-cycle answer
cache (TTL respected, fresh each cycle), shared SPF results, and one series per domain (and IP).

No timing here (that is bench/bench_dns.py): the tests count what the code does.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from exporter.dnscheck.resolver import CycleCache, DnsClient
from exporter.dnscheck.spf import analyse, evaluate, shared_result
from exporter.service import Service
from exporter.settings import COLLECTOR_NAMES, Settings
from tests.dnsinfra.nsd import NsdServer
from tests.dnsinfra.zones import SPF_CASES

ZONE = "scale.test"
IPS = ("192.0.2.10", "198.51.100.7", "203.0.113.9")
SHORT_TTL = 8


def zone(
    n: int, short_record: str = "v=spf1 ip4:192.0.2.0/24 -all", long_record: str = "v=spf1 ip4:198.51.100.0/24 -all"
) -> str:
    """``n`` domains d<i> sharing two provider records: ``short`` (TTL 8 s) and ``long`` (TTL 3600 s);
    every fifth domain uses ``mx`` instead (its result depends on the domain)."""
    lines = [
        f"$ORIGIN {ZONE}.",
        "$TTL 300",
        f"@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 60",
        f"@ IN NS ns1.{ZONE}.",
        "ns1 IN A 127.0.0.1",
        "mx IN A 192.0.2.25",
        f'short {SHORT_TTL} IN TXT "{short_record}"',
        f'long 3600 IN TXT "{long_record}"',
    ]
    for i in range(n):
        spf = "v=spf1 mx -all" if i % 5 == 4 else f"v=spf1 include:short.{ZONE} include:long.{ZONE} ~all"
        lines += [f"d{i} IN MX 10 mx", f'd{i} IN TXT "{spf}"']
        if i % 2:
            policy = ("none", "quarantine", "reject")[i % 3]
            lines.append(f'_dmarc.d{i} IN TXT "v=DMARC1; p={policy}"')
    return "\n".join(lines) + "\n"


def settings_for(nsd: NsdServer, tmp_path: Path, domains: list[str], sharding: int = 1) -> Settings:
    return Settings.model_validate(
        {
            "state_dir": str(tmp_path / "state"),
            "exchange": {"servers": []},
            "collectors": {name: {"enabled": False} for name in COLLECTOR_NAMES},
            "sharding": {"count": sharding, "index": 0},
            "dns": {
                "resolvers": [nsd.address],
                "port": nsd.port,
                "timeout": 2,
                "domains": domains,
                "use_accepted_domains": False,
                "use_send_connector_ips": False,
                "outbound_ips": [{"ip": ip} for ip in IPS],
                "blocklists": [],
            },
        }
    )


def samples(registry: CollectorRegistry, name: str) -> list[Any]:
    return [s for family in registry.collect() if family.name == name for s in family.samples]


def test_bookkeeping_is_linear_per_cycle(nsd_factory: Any, tmp_path: Path) -> None:
    """After every poll the service asks ``targets()`` whether the target is still wanted. With 300
    domains that is 300 questions per cycle; the domain list is built once (its inputs did not
    change) and indexed once, not once per poll, so a cycle costs O(domains), not O(domains^2)."""
    domains = [f"d{i}.{ZONE}" for i in range(300)]
    nsd = nsd_factory({ZONE: zone(300)})
    for sharding in (1, 2):
        service = Service(settings_for(nsd, tmp_path / str(sharding), domains, sharding))
        try:
            collector = next(c for c in service.collectors if c.name == "dns_domains")
            inner = getattr(collector, "_inner", collector)  # sharded: the wrapped collector
            owned = collector.targets()
            assert collector.targets() is owned  # the same immutable list while nothing changed
            inner.sources.outbound()
            before = inner.sources.rebuilds  # the domain list and the outbound IPs, built once each
            for target in owned:
                assert service.poll_once(collector, target) is not None
            assert inner.sources.rebuilds == before  # nothing rebuilt the domain or IP lists
            assert service._wanted.rebuilds == 1  # one index for the whole cycle, not one per poll
            ip_collector = next(c for c in service.collectors if c.name == "dns_ips")
            assert ip_collector.targets() is ip_collector.targets()
            assert len(owned) == (300 if sharding == 1 else len([d for d in domains if service.shard.owns(d)]))
        finally:
            service.stop()


def test_target_list_is_rebuilt_when_its_input_changes(tmp_path: Path) -> None:
    """The accepted domains arrive as a new (immutable) result: the next ``targets()`` is a new list."""
    from exporter.dnscheck.baseline import BaselineStore
    from exporter.dnscheck.collectors import DomainCheckCollector, Sources
    from exporter.exchange.accepted_domains import AcceptedDomainResult, parse_accepted_domain
    from exporter.settings import DnsSettings
    from tests.unit.test_cardinality import wire

    def accepted(*names: str) -> AcceptedDomainResult:
        return AcceptedDomainResult(
            tuple(parse_accepted_domain(wire(("AcceptedDomain",), DomainName=n)) for n in names)
        )

    latest: dict[str, dict[str, Any]] = {"accepted_domains": {"organization": accepted("a.example", "b.example")}}
    settings = DnsSettings(domains=["c.example"])
    sources = Sources(settings, lambda name: latest.get(name, {}))
    collector = DomainCheckCollector(settings, sources, BaselineStore(tmp_path / "b.json", 0, time.time))
    first = collector.targets()
    assert first == ("a.example", "b.example", "c.example") and collector.targets() is first
    latest["accepted_domains"] = {"organization": accepted("a.example", "d.example")}
    second = collector.targets()
    assert second == ("a.example", "c.example", "d.example") and second is not first
    latest["accepted_domains"] = {}  # Exchange unreachable: the last accepted domains stay checked
    assert collector.targets() == second
    assert sources.rebuilds == 3  # three domain lists (the outbound IPs: asked by nobody yet)


def test_cycle_cache_respects_ttl_and_each_cycle_is_fresh(nsd_factory: Any) -> None:
    """Through the real resolver and NSD: within a cycle a shared answer is reused until its TTL runs
    out (the 8 s record is asked again, the 3600 s one is not); a domain's next check starts a new
    cycle and sees what is published now."""
    nsd = nsd_factory({ZONE: zone(3)})
    base = DnsClient((nsd.address,), nsd.port, 2.0)
    cycles = CycleCache()

    def check(target: str) -> tuple[str, str]:
        """One check run of ``target``: the short and the long record, as it sees them."""
        client = base.fresh(cycles.current(target).answers)
        short, long = (client.query(f"{name}.{ZONE}", "TXT").records for name in ("short", "long"))
        return short[0].split()[1], long[0].split()[1]

    fetched = time.monotonic()
    assert check("d0") == ("ip4:192.0.2.0/24", "ip4:198.51.100.0/24")
    nsd.reload({ZONE: zone(3, "v=spf1 ip4:192.0.2.0/25 -all", "v=spf1 ip4:198.51.100.0/25 -all")})
    # d1, same cycle, within the short TTL: both from the cache (the zone changed, the answers did not).
    assert time.monotonic() - fetched < SHORT_TTL
    assert check("d1") == ("ip4:192.0.2.0/24", "ip4:198.51.100.0/24")
    time.sleep(max(0.0, fetched + SHORT_TTL + 0.5 - time.monotonic()))
    # d2, same cycle, after the short TTL: the short record is asked again, the long one is still cached.
    assert check("d2") == ("ip4:192.0.2.0/25", "ip4:198.51.100.0/24")
    assert cycles.generations == 1
    # d0 comes round again: a new cycle, everything as published now.
    assert check("d0") == ("ip4:192.0.2.0/25", "ip4:198.51.100.0/25")
    assert cycles.generations == 2


def test_resolver_faults_are_not_cached(nsd_factory: Any) -> None:
    """A SERVFAIL is reported by every check that meets it, never answered from the cycle cache."""
    nsd = nsd_factory({ZONE: zone(1)}, broken_zones=["broken.test"])
    base = DnsClient((nsd.address,), nsd.port, 2.0)
    cycle = CycleCache().current("d0")
    assert base.fresh(cycle.answers).query("www.broken.test", "A").status == "servfail"
    assert base.fresh(cycle.answers).query("www.broken.test", "A").status == "servfail"
    assert len(cycle.answers) == 0


def test_a_negative_answer_is_cached_for_the_soa_negative_ttl(nsd_factory: Any) -> None:
    """NXDOMAIN is cached within a cycle for the SOA's negative TTL (2 s here), read from the reply's
    authority section (without it, dnspython's default would keep it 300 s): after that the name is
    asked again and found."""
    soa = f"@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 2"
    text = zone(1).replace(f"@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 60", soa)
    nsd = nsd_factory({ZONE: text})
    base = DnsClient((nsd.address,), nsd.port, 2.0)
    cycle = CycleCache().current("d0")
    asked = time.monotonic()
    assert base.fresh(cycle.answers).query(f"new.{ZONE}", "TXT").status == "nxdomain"
    nsd.reload({ZONE: text + 'new IN TXT "v=spf1 -all"\n'})
    assert base.fresh(cycle.answers).query(f"new.{ZONE}", "TXT").status == "nxdomain"  # cached
    assert time.monotonic() - asked < 2
    time.sleep(max(0.0, asked + 2.5 - time.monotonic()))
    assert base.fresh(cycle.answers).query(f"new.{ZONE}", "TXT").records == ("v=spf1 -all",)


def test_an_answer_too_long_for_udp_comes_over_tcp(nsd_factory: Any, monkeypatch: Any) -> None:
    """A TXT record longer than the 1,232-byte EDNS payload: NSD truncates the UDP reply, the client
    asks again over TCP and gets the whole record."""
    import dns.query

    strings = [chr(ord("a") + k % 26) * 250 for k in range(8)]  # 2,000 bytes
    nsd = nsd_factory({ZONE: zone(1) + "big IN TXT " + " ".join(f'"{t}"' for t in strings) + "\n"})
    tcp_calls = []
    tcp = dns.query.tcp

    def counted(*args: Any, **kwargs: Any) -> Any:
        tcp_calls.append(args[0])
        return tcp(*args, **kwargs)

    monkeypatch.setattr(dns.query, "tcp", counted)
    answer = DnsClient((nsd.address,), nsd.port, 2.0).query(f"big.{ZONE}", "TXT")
    assert answer.status == "ok" and answer.records == ("".join(strings),)
    assert len(tcp_calls) == 1


def test_shared_spf_results_equal_pyspf_per_domain(nsd_server: NsdServer) -> None:
    """Every SPF case of the test zones, evaluated through one shared result table, gives pyspf's own
    verdict for that domain; domains whose tree refers to the domain (mx, a, ptr, exists, macros) or
    that failed are never shared."""
    base = DnsClient((nsd_server.address,), nsd_server.port, 2.0)
    cycle = CycleCache().current("all")
    shared = 0
    for domain, case in sorted(SPF_CASES.items()):
        analysis = analyse(domain, base.fresh(cycle.answers))
        for ip, verdict in case.verdicts.items():
            got = shared_result(ip, domain, base.fresh(cycle.answers), analysis, cycle.derived)
            assert got == verdict == evaluate(ip, domain, base.fresh())[0], (domain, ip)
        names = [t.lstrip("+-~?").lower() for t in analysis.record.split()[1:]]
        domain_terms = [t for t in names if t in ("a", "mx", "ptr") or t.startswith(("a/", "mx", "ptr", "exists"))]
        if domain_terms or "%" in analysis.record or not analysis.valid:
            assert analysis.signature == (), domain
        shared += bool(analysis.signature)
    assert shared >= 3  # some cases did share (ip4/include/redirect-only trees)


def test_domains_with_the_same_tree_share_one_evaluation(nsd_factory: Any) -> None:
    nsd = nsd_factory({ZONE: zone(10)})
    base = DnsClient((nsd.address,), nsd.port, 2.0)
    cycle = CycleCache().current("all")
    trees = {}
    for i in range(10):
        domain = f"d{i}.{ZONE}"
        analysis = analyse(domain, base.fresh(cycle.answers))
        trees[domain] = analysis.signature
        for ip in IPS:
            assert (
                shared_result(ip, domain, base.fresh(cycle.answers), analysis, cycle.derived)
                == (evaluate(ip, domain, base.fresh())[0])
            )
    assert trees[f"d4.{ZONE}"] == () and trees[f"d9.{ZONE}"] == ()  # "mx": depends on the domain
    assert len({trees[f"d{i}.{ZONE}"] for i in (0, 1, 2, 3, 5, 6, 7, 8)}) == 1
    assert len(cycle.derived) == len(IPS)  # one evaluation per IP for the eight domains sharing a tree


def test_state_set_families_have_one_series_per_object(nsd_factory: Any, tmp_path: Path) -> None:
    """``mailflow_dns_spf_result``: one series per domain x outbound IP, value 1, the result in its
    label; ``mailflow_dns_dmarc_policy``: one per domain."""
    domains = [f"d{i}.{ZONE}" for i in range(20)]
    nsd = nsd_factory({ZONE: zone(20)})
    service = Service(settings_for(nsd, tmp_path, domains))
    try:
        assert all(s.ok for s in service.poll_all())
        spf = samples(service.registry, "mailflow_dns_spf_result")
        assert sorted((s.labels["domain"], s.labels["ip"]) for s in spf) == sorted(
            (d, ip) for d in domains for ip in IPS
        )
        assert {s.value for s in spf} == {1.0}
        by_key = {(s.labels["domain"], s.labels["ip"]): s.labels["result"] for s in spf}
        assert by_key[(f"d0.{ZONE}", "192.0.2.10")] == "pass"
        assert by_key[(f"d0.{ZONE}", "203.0.113.9")] == "softfail"
        assert by_key[(f"d4.{ZONE}", "203.0.113.9")] == "fail"  # "v=spf1 mx -all"
        dmarc = samples(service.registry, "mailflow_dns_dmarc_policy")
        assert sorted(s.labels["domain"] for s in dmarc) == sorted(domains) and {s.value for s in dmarc} == {1.0}
        policies = {s.labels["domain"]: s.labels["policy"] for s in dmarc}
        assert policies[f"d0.{ZONE}"] == "missing" and policies[f"d1.{ZONE}"] == "quarantine"
    finally:
        service.stop()
