"""DNS checks at scale: CPU and wall time of one check cycle of the exporter, and checkdmarc beside it.

What is measured. A real authoritative server (NSD, from Debian) serves N generated domains on
loopback, shaped like a real tenant: 60 % on Microsoft 365 (their own MX host under the provider,
SPF ``include:`` of the provider's two-level record plus the company's own), 25 % on Google (five
shared MX hosts, SPF include of a three-netblock record), 15 % on their own MX hosts (SPF ``mx``,
``a:`` and includes); most include the same few providers (a mail-sending service, a marketing one).
80 % publish their own DMARC record, the rest inherit the organizational domain's; 30 % publish
MTA-STS and TLS-RPT. Provider records have a TTL of 3600 s, the domains' 300 s. NSD's response rate
limiting is off: the exporter asks a recursive resolver, which answers its own clients without
limit, and under RRL (200 replies a second per kind; every NXDOMAIN of the zone is one kind) a
cycle's wall time measured NSD dropping replies and the 2 s retries (11 s for 1,000 domains,
before 2026-12-07 12:45 UTC).

One cycle is what the scheduler does once per interval: for every domain, the real per-poll path of
the service (``Service.poll_once``: the dns_domains collector's poll, the "still wanted?" check and
the snapshot store), on a pool of ``dns.concurrency`` threads. Every cycle runs in a new service, so
the shared answer cache starts empty (production gets a new one each cycle, too): the queries the
run makes are real ones to NSD, counted where dnspython sends them (``dns.query.send_udp``/``tcp``).
CPU is the process's user+system time over the cycle (NSD is another process). Reported:

* 1,000 domains x 2 outbound IPs: wall and CPU of one cycle (goal: both under 5 s), the process's
  first (nothing kept from before) and a later one (the exporter keeps each rendered query across
  cycles; every answer is asked again);
* 5,000 domains x 10 outbound IPs: CPU of one cycle (goal: <= 75 s, a quarter of one core over a
  5-minute interval), and the size of the ``mailflow_dns_spf_result`` family and of the whole page
  rendered from that cycle;
* checkdmarc's ``check_domains`` (run in its own interpreter, ``--checkdmarc-python``; skipped when
  absent) against the exporter's cycle on one thread, same domains, same server: time per domain and
  per DNS query sent (goal: the exporter at least 10x faster per domain). checkdmarc checks, per
  domain: SOA, NS, DNSSEC (DNSKEY/DS), MX and its hosts' addresses, SPF (parsed through includes),
  DMARC (with the organizational fallback and report-destination checks), TLS-RPT, MTA-STS (TXT, and
  the HTTPS policy fetch, which fails at once here: the runner points httpx at a closed proxy) and
  BIMI; its own answer cache is module-wide for the run. The exporter checks, per domain: MX and the
  addresses of each MX host, the SPF record tree (RFC 7208 limits, void lookups, syntax) plus pyspf's
  check_host for each outbound IP, DMARC (with the organizational fallback), MTA-STS TXT, TLS-RPT TXT.

    python bench/bench_dns.py [--domains 1000] [--large 5000] [--large-ips 10] [--compare 200]
                              [--checkdmarc-python /work/venv-checkdmarc/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dns.inet
import dns.query

ZONE = "bench.test"
DEFAULT_CHECKDMARC = "/work/venv-checkdmarc/bin/python"
OUTBOUND = [
    "192.0.2.10",  # the company's Exchange (in _spf.corp)
    "203.0.113.9",  # not authorised anywhere
    "198.51.100.20",
    "40.92.1.1",  # Microsoft 365
    "209.61.151.5",  # the mail-sending service
    "167.89.1.1",  # the marketing service
    "172.217.1.1",  # Google
    "192.0.2.11",
    "198.51.100.21",
    "203.0.113.10",
]

#: Provider SPF records (name under the zone, terms), modelled on the real ones.
_PROVIDER_SPF = {
    "spf.protection.outlook": "ip4:40.92.0.0/15 ip4:40.107.0.0/16 ip4:52.100.0.0/15 ip4:52.102.0.0/16 "
    f"ip4:104.47.0.0/17 ip6:2a01:111:f400::/48 ip6:2a01:111:f403::/49 include:spfd.protection.outlook.{ZONE} -all",
    "spfd.protection.outlook": "ip4:51.4.72.0/24 ip4:51.5.72.0/24 ip4:51.5.80.0/27 ip4:20.47.149.138/32 "
    "ip4:51.4.80.0/27 ip6:2a01:4180:4051:0800::/64 -all",
    "_spf.google": f"include:_netblocks.google.{ZONE} include:_netblocks2.google.{ZONE} "
    f"include:_netblocks3.google.{ZONE} ~all",
    "_netblocks.google": "ip4:35.190.247.0/24 ip4:64.233.160.0/19 ip4:66.102.0.0/20 ip4:66.249.80.0/20 "
    "ip4:72.14.192.0/18 ip4:74.125.0.0/16 ip4:108.177.8.0/21 ip4:173.194.0.0/16 ip4:209.85.128.0/17 "
    "ip4:216.58.192.0/19 ip4:216.239.32.0/19 ~all",
    "_netblocks2.google": "ip6:2001:4860:4000::/36 ip6:2404:6800:4000::/36 ip6:2607:f8b0:4000::/36 "
    "ip6:2800:3f0:4000::/36 ip6:2a00:1450:4000::/36 ip6:2c0f:fb50:4000::/36 ~all",
    "_netblocks3.google": "ip4:172.217.0.0/19 ip4:172.217.32.0/20 ip4:172.217.128.0/19 ip4:172.217.160.0/20 "
    "ip4:172.217.192.0/19 ip4:172.253.56.0/21 ip4:172.253.112.0/20 ip4:108.177.96.0/19 ip4:35.191.0.0/16 "
    "ip4:130.211.0.0/22 ~all",
    "_spf.mailgun": "ip4:209.61.151.0/24 ip4:166.78.68.0/22 ip4:198.61.254.0/23 ip4:192.237.158.0/23 "
    "ip4:23.253.182.0/23 ip4:104.130.96.0/28 ip4:146.20.113.0/24 ip4:146.20.191.0/24 ip4:159.135.224.0/20 "
    "ip4:69.72.32.0/20 ~all",
    "sendgrid": "ip4:167.89.0.0/17 ip4:208.117.48.0/20 ip4:50.31.32.0/19 ip4:198.37.144.0/20 ip4:198.21.0.0/21 "
    "ip4:192.254.112.0/20 ip4:168.245.0.0/17 ip4:149.72.0.0/16 ip4:159.183.0.0/16 ~all",
    "_spf.corp": "ip4:192.0.2.0/26 ip4:198.51.100.0/26 -all",
}
_PROVIDERS = [
    f'_dmarc IN TXT "v=DMARC1; p=quarantine; sp=reject; rua=mailto:dmarc@{ZONE}"',
    *(f'{name} 3600 IN TXT "v=spf1 {terms}"' for name, terms in _PROVIDER_SPF.items()),
    "mx1.corp 3600 IN A 192.0.2.25",
    "mx2.corp 3600 IN A 198.51.100.25",
    "mail.corp 3600 IN A 192.0.2.30",
]


def _mx_at(line: str, address: str) -> str:
    """A provider record, with an MX host's A record pointed at ``address`` when one is given."""
    name, *rest = line.split()
    if address and name.startswith(("mx1.corp", "mx2.corp")) and rest[-2:-1] == ["A"]:
        return f"{name} 3600 IN A {address}"
    return line


def zone_text(n: int, mx_address: str = "") -> str:
    """The bench zone: shared provider records, then ``n`` domains ``d<i>.bench.test`` (see above).

    ``mx_address``, when given, is the address of every MX host (IPv4 only), so that a test SMTP
    server on it answers for all of them (the soak's SMTP probes)."""
    lines = [
        f"$ORIGIN {ZONE}.",
        "$TTL 300",
        f"@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 120",
        f"@ IN NS ns1.{ZONE}.",
        "ns1 IN A 127.0.0.1",
        *(_mx_at(line, mx_address) for line in _PROVIDERS),
    ]
    google_mx = ["aspmx.l.google", *(f"alt{k}.aspmx.l.google" for k in range(1, 5))]
    for k, host in enumerate(google_mx):
        if mx_address:
            lines.append(f"{host} 3600 IN A {mx_address}")
        else:
            lines += [f"{host} 3600 IN A 172.217.{k}.27", f"{host} 3600 IN AAAA 2a00:1450:4000::{k + 1:x}"]
    for i in range(n):
        d, kind = f"d{i}", i % 20
        if kind < 12:  # Microsoft 365
            host = f"d{i}-bench-test.mail.protection.outlook"
            lines += [f"{d} IN MX 0 {host}", f"{host} IN A {mx_address or f'52.101.{i // 250 % 256}.{i % 250}'}"]
            extra = f" include:sendgrid.{ZONE}" if i % 3 == 0 else ""
            spf = f"v=spf1 include:spf.protection.outlook.{ZONE} include:_spf.corp.{ZONE}{extra} -all"
        elif kind < 17:  # Google
            lines += [f"{d} IN MX {(k + 1) * 5} {host}" for k, host in enumerate(google_mx)]
            extra = f" include:_spf.mailgun.{ZONE}" if i % 2 == 0 else ""
            spf = f"v=spf1 include:_spf.google.{ZONE} include:_spf.corp.{ZONE}{extra} ~all"
        else:  # its own MX hosts
            lines += [f"{d} IN MX 10 mx1.corp", f"{d} IN MX 20 mx2.corp"]
            spf = f"v=spf1 mx a:mail.corp.{ZONE} include:_spf.corp.{ZONE} include:_spf.mailgun.{ZONE} -all"
        lines.append(f'{d} IN TXT "{spf}"')
        lines.append(f'{d} IN TXT "google-site-verification=bench{i}"')
        if i % 5:
            policy = ("reject", "quarantine", "none")[i % 3]
            lines.append(f'_dmarc.{d} IN TXT "v=DMARC1; p={policy}; rua=mailto:dmarc@{ZONE}"')
        if i % 10 < 3:
            lines += [
                f'_mta-sts.{d} IN TXT "v=STSv1; id=2024{i}"',
                f'_smtp._tls.{d} IN TXT "v=TLSRPTv1; rua=mailto:tls@{ZONE}"',
            ]
    return "\n".join(lines) + "\n"


class QueryCounter:
    """Counts the DNS messages dnspython sends (UDP and TCP) in this process: the exporter sends UDP
    queries with ``dns.query.send_udp`` (``dns.query.udp`` calls it, too) and TCP ones with
    ``dns.query.tcp``."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self._udp, self._tcp = dns.query.send_udp, dns.query.tcp

    def __enter__(self) -> QueryCounter:
        def counted(send: Any) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                with self._lock:
                    self.count += 1
                return send(*args, **kwargs)

            return wrapper

        dns.query.send_udp, dns.query.tcp = counted(self._udp), counted(self._tcp)  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        dns.query.send_udp, dns.query.tcp = self._udp, self._tcp  # type: ignore[assignment]


def _service(domains: list[str], ips: list[str], address: str, port: int, state: Path, workers: int) -> Any:
    from exporter.service import Service
    from exporter.settings import COLLECTOR_NAMES, Settings

    data: dict[str, Any] = {
        "state_dir": str(state),
        "exchange": {"servers": []},
        "collectors": {name: {"enabled": False} for name in COLLECTOR_NAMES},
        "dns": {
            "resolvers": [address],
            "port": port,
            "timeout": 5,
            "concurrency": workers,
            "domains": domains,
            "use_accepted_domains": False,
            "use_send_connector_ips": False,
            "outbound_ips": [{"ip": ip} for ip in ips],
            "blocklists": [],
        },
    }
    return Service(Settings.model_validate(data))


def run_cycle(
    domains: list[str], ips: list[str], address: str, port: int, workers: int, first: bool = True
) -> dict[str, Any]:
    """One check cycle of every domain in a new service: wall, CPU, queries sent, the page it renders.
    ``first``: the process's first cycle (the rendered queries the exporter keeps across cycles are
    dropped first); else a later one, which sends every query again but renders none."""
    from prometheus_client import generate_latest

    from exporter.dnscheck.resolver import question

    if first:
        question.cache_clear()
    with tempfile.TemporaryDirectory() as state:
        service = _service(domains, ips, address, port, Path(state), workers)
        collector = next(c for c in service.collectors if c.name == "dns_domains")
        targets = list(collector.targets())
        with QueryCounter() as counter:
            load = os.getloadavg()[0]
            wall0, cpu0 = time.perf_counter(), time.process_time()
            with ThreadPoolExecutor(workers) as pool:
                snaps = list(pool.map(lambda t: service.poll_once(collector, t), targets))
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        bad = [s.target for s in snaps if s is None or not s.ok or not s.result.spf.valid or not s.result.mx.records]
        assert not bad, f"unexpected check results: {bad[:5]}"
        lines = [ln for ln in generate_latest(service.registry).decode().splitlines() if ln and ln[0] != "#"]
        spf_lines = [ln for ln in lines if ln.startswith("mailflow_dns_spf_result{")]
        service.stop()
    return {
        "domains": len(targets),
        "ips": len(ips),
        "wall": wall,
        "cpu": cpu,
        "queries": counter.count,
        "cache_generations": collector.cycle_cache.generations,
        "spf_series": len(spf_lines),
        "spf_bytes": sum(len(ln) + 1 for ln in spf_lines),
        "page_series": len(lines),
        "load": (load + os.getloadavg()[0]) / 2,  # the machine's 1-minute load average, start and end
    }


# What both checkdmarc runners start with: the server, and a count of the messages dnspython sends.
_CHECKDMARC_PRELUDE = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
import checkdmarc, checkdmarc.utils, dns.nameserver, dns.query, dns.resolver
address, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sent = [0]
def counted(send):
    def wrapper(*a, **k):
        sent[0] += 1
        return send(*a, **k)
    return wrapper
dns.query.udp, dns.query.tcp = counted(dns.query.udp), counted(dns.query.tcp)
resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = [dns.nameserver.Do53Nameserver(address, port)]
resolver.lifetime = 5
"""

_CHECKDMARC_RUNNER = """
domains = open(path).read().split()
wall0, cpu0 = time.perf_counter(), time.process_time()
checkdmarc.check_domains(domains, nameservers=resolver.nameservers, resolver=resolver, timeout=5, retries=0)
print(json.dumps({"wall": time.perf_counter() - wall0, "cpu": time.process_time() - cpu0, "queries": sent[0],
                  "version": checkdmarc.__version__}))
"""


def _in_checkdmarc(python: str, runner: str, address: str, port: int, lines: list[str], *args: str) -> Any:
    """Run ``runner`` (after the prelude) in checkdmarc's interpreter with ``lines`` in a file: the JSON
    it prints last (None when that interpreter has no checkdmarc)."""
    if not Path(python).exists():
        return None
    probe = subprocess.run([python, "-c", "import checkdmarc"], capture_output=True, check=False)
    if probe.returncode != 0:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as listing:
        listing.write("\n".join(lines))
        listing.flush()
        # MTA-STS policy fetches (HTTPS to mta-sts.<domain>) fail at once through a closed proxy port,
        # instead of waiting on the sandbox's name resolution.
        env = {**os.environ, "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}
        done = subprocess.run(
            [python, "-c", _CHECKDMARC_PRELUDE + runner, address, str(port), listing.name, *args],
            capture_output=True,
            text=True,
            check=True,
            env=env,
            timeout=3600,
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_checkdmarc(python: str, domains: list[str], address: str, port: int) -> dict[str, Any] | None:
    """checkdmarc's check_domains in its own interpreter (None when that has no checkdmarc)."""
    result = _in_checkdmarc(python, _CHECKDMARC_RUNNER, address, port, domains)
    return None if result is None else dict(result)


def first_questions(domains: list[str]) -> list[tuple[str, str]]:
    """The five questions every domain's check starts with (MX, SPF's TXT, DMARC, MTA-STS, TLS-RPT):
    distinct names, a mix of answers (MX and TXT records, and NXDOMAIN for the 70 % of domains without
    MTA-STS and TLS-RPT and the 20 % without their own DMARC record)."""
    return [
        q
        for d in domains
        for q in ((d, "MX"), (d, "TXT"), (f"_dmarc.{d}", "TXT"), (f"_mta-sts.{d}", "TXT"), (f"_smtp._tls.{d}", "TXT"))
    ]


def run_query_path(queries: list[tuple[str, str]], address: str, port: int, repeats: int = 3) -> dict[str, Any]:
    """The exporter's query path alone, as a check calls it (``DnsClient.query``), each question
    asked once, nothing cached (a new client without the cycle's cache; the kept rendered queries
    dropped first): CPU and wall per query, the median of ``repeats`` runs."""
    from exporter.dnscheck.resolver import DnsClient, question

    wires = [question(name, rtype).wire()[1] for name, rtype in queries]
    floors = []
    for _ in range(repeats):  # the floor: the same queries sent and their replies received, nothing else
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for wire in wires:
            with socket.socket(dns.inet.af_for_address(address), socket.SOCK_DGRAM) as sock:
                sock.settimeout(5)
                sock.sendto(wire, (address, port))
                sock.recvfrom(65535)
        floors.append((time.perf_counter() - wall0, time.process_time() - cpu0))
    floor_wall, floor_cpu = sorted(floors)[len(floors) // 2]
    runs = []
    for _ in range(repeats):
        question.cache_clear()
        client = DnsClient([address], port, 5.0).fresh()
        with QueryCounter() as counter:
            wall0, cpu0 = time.perf_counter(), time.process_time()
            answers = [client.query(name, rtype) for name, rtype in queries]
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        failed = [a for a in answers if a.failed]
        assert not failed and counter.count == len(queries), (failed[:3], counter.count)
        runs.append((wall, cpu))
    wall, cpu = sorted(runs)[len(runs) // 2]
    n = len(queries)
    return {
        "us_wall": 1e6 * wall / n,
        "us_cpu": 1e6 * cpu / n,
        "queries": n,
        "us_floor_wall": 1e6 * floor_wall / n,
        "us_floor_cpu": 1e6 * floor_cpu / n,
    }


_CHECKDMARC_QUERY_RUNNER = """
repeats = int(sys.argv[4])
queries = [line.split() for line in open(path).read().splitlines()]
runs = []
for _ in range(repeats):
    sent[0] = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for name, rtype in queries:
        try:  # cache={}: not its ExpiringDict, so nothing is kept between queries
            checkdmarc.utils.query_dns(name, rtype, nameservers=resolver.nameservers, resolver=resolver,
                                       timeout=5, retries=0, cache={})
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            pass  # its answer for a missing record
    runs.append((time.perf_counter() - wall0, time.process_time() - cpu0, sent[0]))
wall, cpu, count = sorted(runs)[len(runs) // 2]
print(json.dumps({"us_wall": 1e6 * wall / len(queries), "us_cpu": 1e6 * cpu / len(queries), "sent": count,
                  "queries": len(queries)}))
"""


def run_checkdmarc_queries(
    python: str, queries: list[tuple[str, str]], address: str, port: int, repeats: int = 3
) -> dict[str, Any] | None:
    """checkdmarc's query path alone (``checkdmarc.utils.query_dns``, which all its checks call, with
    its answer cache off) on the same questions, in its own interpreter (None without checkdmarc)."""
    lines = [f"{name} {rtype}" for name, rtype in queries]
    result = _in_checkdmarc(python, _CHECKDMARC_QUERY_RUNNER, address, port, lines, str(repeats))
    if result is None:
        return None
    assert result["sent"] == len(queries), result  # one message per question: nothing retried, nothing cached
    return dict(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", type=int, default=1000, help="domains of the wall/CPU cycle (2 outbound IPs)")
    parser.add_argument("--large", type=int, default=5000, help="domains of the large cycle (0: skip)")
    parser.add_argument("--large-ips", type=int, default=10, help="outbound IPs of the large cycle")
    parser.add_argument("--concurrency", type=int, default=8, help="dns.concurrency (the default is 8)")
    parser.add_argument("--compare", type=int, default=200, help="domains checked by both tools, one thread")
    parser.add_argument("--checkdmarc-python", default=DEFAULT_CHECKDMARC, help="interpreter with checkdmarc")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.dnsinfra
    from tests.dnsinfra.nsd import NsdServer

    total = max(args.domains, args.large, args.compare)
    names = [f"d{i}.{ZONE}" for i in range(total)]
    out: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, NsdServer({ZONE: zone_text(total)}, Path(tmp), rate_limit=False) as nsd:
        addr, port = nsd.address, nsd.port
        run_cycle(names[:20], OUTBOUND[:2], addr, port, 2)  # warm-up: imports, the public suffix list
        small = run_cycle(names[: args.domains], OUTBOUND[:2], addr, port, args.concurrency)
        print(
            f"{small['domains']} domains x {small['ips']} IPs, {args.concurrency} threads: "
            f"wall {small['wall']:.2f} s, CPU {small['cpu']:.2f} s, {small['queries']} queries sent "
            f"({small['queries'] / small['domains']:.1f}/domain); load average {small['load']:.1f}"
        )
        out += [
            f"dns_domains={small['domains']}",
            f"dns_concurrency={args.concurrency}",
            f"dns_wall_s={small['wall']:.2f}",
            f"dns_cpu_s={small['cpu']:.2f}",
            f"dns_queries_per_domain={small['queries'] / small['domains']:.2f}",
            f"dns_load={small['load']:.1f}",
        ]
        later = run_cycle(names[: args.domains], OUTBOUND[:2], addr, port, args.concurrency, first=False)
        print(f"  a later cycle (queries rendered before): wall {later['wall']:.2f} s, CPU {later['cpu']:.2f} s")
        out += [f"dns_later_wall_s={later['wall']:.2f}", f"dns_later_cpu_s={later['cpu']:.2f}"]
        if args.large:
            big = run_cycle(names[: args.large], OUTBOUND[: args.large_ips], addr, port, args.concurrency)
            print(
                f"{big['domains']} domains x {big['ips']} IPs: wall {big['wall']:.1f} s, CPU {big['cpu']:.1f} s, "
                f"{big['queries']} queries; mailflow_dns_spf_result {big['spf_series']} series "
                f"({big['spf_bytes'] / 1e6:.2f} MB text), page {big['page_series']} series"
            )
            out += [
                f"dns_large_domains={big['domains']}",
                f"dns_large_ips={big['ips']}",
                f"dns_large_cpu_s={big['cpu']:.1f}",
                f"dns_large_wall_s={big['wall']:.1f}",
                f"dns_large_spf_series={big['spf_series']}",
                f"dns_large_spf_mb={big['spf_bytes'] / 1e6:.2f}",
            ]
        sample = names[: args.compare]
        ours = run_cycle(sample, OUTBOUND[:2], addr, port, 1)  # a first cycle: checkdmarc keeps nothing either
        theirs = run_checkdmarc(args.checkdmarc_python, sample, addr, port)
        asked = first_questions(sample)
        path_ours = run_query_path(asked, addr, port)
        path_theirs = run_checkdmarc_queries(args.checkdmarc_python, asked, addr, port)
    per_domain_ms = 1000 * ours["wall"] / len(sample)
    per_query_ms = 1000 * ours["wall"] / max(ours["queries"], 1)
    print(
        f"exporter, {len(sample)} domains, 1 thread: {per_domain_ms:.2f} ms/domain, {per_query_ms:.3f} ms/query "
        f"({ours['queries']} queries, CPU {ours['cpu']:.2f} s)"
    )
    out += [
        f"dns_compare_domains={len(sample)}",
        f"dns_ms_per_domain={per_domain_ms:.2f}",
        f"dns_ms_per_query={per_query_ms:.3f}",
        f"dns_compare_queries_per_domain={ours['queries'] / len(sample):.2f}",
        f"dns_compare_cpu_ms_per_domain={1000 * ours['cpu'] / len(sample):.2f}",
    ]
    if theirs is None:
        print(f"checkdmarc: skipped ({args.checkdmarc_python} has no checkdmarc)")
        out.append("dns_checkdmarc=missing")
    else:
        cd_domain = 1000 * theirs["wall"] / len(sample)
        cd_query = 1000 * theirs["wall"] / max(theirs["queries"], 1)
        print(
            f"checkdmarc {theirs['version']}, same domains: {cd_domain:.2f} ms/domain, {cd_query:.3f} ms/query "
            f"({theirs['queries']} queries, CPU {theirs['cpu']:.2f} s); "
            f"exporter faster x{cd_domain / per_domain_ms:.1f} per domain, x{cd_query / per_query_ms:.1f} per query"
        )
        out += [
            f"dns_checkdmarc_version={theirs['version']}",
            f"dns_checkdmarc_ms_per_domain={cd_domain:.2f}",
            f"dns_checkdmarc_ms_per_query={cd_query:.3f}",
            f"dns_checkdmarc_queries_per_domain={theirs['queries'] / len(sample):.2f}",
            f"dns_checkdmarc_cpu_ms_per_domain={1000 * theirs['cpu'] / len(sample):.2f}",
            f"dns_speedup_per_domain={cd_domain / per_domain_ms:.1f}",
            f"dns_speedup_per_query={cd_query / per_query_ms:.1f}",
        ]
    out += [
        f"dns_path_floor_us_wall={path_ours['us_floor_wall']:.0f}",
        f"dns_path_floor_us_cpu={path_ours['us_floor_cpu']:.0f}",
        f"dns_path_queries={path_ours['queries']}",
        f"dns_path_us_wall={path_ours['us_wall']:.0f}",
        f"dns_path_us_cpu={path_ours['us_cpu']:.0f}",
    ]
    print(
        f"the floor of one query (a new socket, the query sent, its reply received, nothing read): "
        f"{path_ours['us_floor_wall']:.0f} us wall / {path_ours['us_floor_cpu']:.0f} us CPU"
    )
    if path_theirs is not None:
        path_wall = path_theirs["us_wall"] / path_ours["us_wall"]
        above = (path_theirs["us_cpu"] - path_ours["us_floor_cpu"]) / max(
            path_ours["us_cpu"] - path_ours["us_floor_cpu"], 1.0
        )
        print(
            f"query path, {path_ours['queries']} questions asked once each, nothing cached: exporter "
            f"{path_ours['us_wall']:.0f} us wall / {path_ours['us_cpu']:.0f} us CPU per query, checkdmarc "
            f"{path_theirs['us_wall']:.0f} / {path_theirs['us_cpu']:.0f}: x{path_wall:.1f}"
            f" wall, x{path_theirs['us_cpu'] / path_ours['us_cpu']:.1f} CPU; CPU above the floor x{above:.1f}"
        )
        out += [
            f"dns_path_checkdmarc_us_wall={path_theirs['us_wall']:.0f}",
            f"dns_path_checkdmarc_us_cpu={path_theirs['us_cpu']:.0f}",
            f"dns_path_speedup_wall={path_wall:.1f}",
            f"dns_path_speedup_cpu={path_theirs['us_cpu'] / path_ours['us_cpu']:.1f}",
            f"dns_path_speedup_above_floor_cpu={above:.1f}",
        ]
    print("RESULT " + " ".join(out))


if __name__ == "__main__":
    main()
