"""The demo organisation's outside world: its public DNS zones and its MX endpoint, all on loopback.

Domains: ``contoso.sim`` (the organisation) and ``fabrikam.sim`` (a second accepted domain). Outbound mail
leaves from two Exchange servers with documentation-range addresses (no packet is ever sent to them; they
only appear in DNS data):

====== ============ ==================== ============================================================
server outbound IP  HELO                 what the checks should find
====== ============ ==================== ============================================================
EX01   192.0.2.10   ex01.contoso.sim     all good: PTR ex01.contoso.sim, forward-confirmed, matches
                                         HELO; SPF pass; not on the demo DNSBL
EX02   192.0.2.20   ex02.contoso.sim     three planted faults, see below
====== ============ ==================== ============================================================

Planted faults (dashboards, alerts and tests rely on these; change them only together):

1. **SPF fail for EX02**: ``contoso.sim`` publishes ``v=spf1 ip4:192.0.2.10 include:_spf.contoso.sim -all``
   and ``_spf.contoso.sim`` covers only ``198.51.100.0/28``, so 192.0.2.20 evaluates to ``fail``
   (192.0.2.10 to ``pass``). Two DNS-querying terms in total (the include, none inside it).
2. **PTR mismatch for EX02**: 192.0.2.20 has PTR ``static-20.isp.example``, which resolves back to
   192.0.2.20 (forward-confirmed) but does not match the HELO name ``ex02.contoso.sim``.
3. **DNSBL listing for EX02**: on the demo list ``bl.demo.example`` 192.0.2.20 is listed
   (``20.2.0.192.bl.demo.example`` A ``127.0.0.2`` with a TXT reason); 192.0.2.10 is not (NXDOMAIN).
   The RFC 5782 test point ``2.0.0.127.bl.demo.example`` is listed, ``1.0.0.127`` is not.
4. **fabrikam.sim has no DMARC record** (``_dmarc.fabrikam.sim`` is NXDOMAIN), no MTA-STS and no TLS-RPT.
   Its SPF is ``v=spf1 mx -all`` and its MX hosts are the loopback MX endpoints, so mail from either
   outbound IP evaluates to ``fail`` for fabrikam.sim as well.

Everything else is meant to be healthy: ``contoso.sim`` MX 10 ``mail1.contoso.sim`` and MX 20
``mail2.contoso.sim`` (both A -> ``mx_ip``, loopback, where ``DemoSMTP`` listens with a certificate for both
names from a demo CA valid 90 days, STARTTLS offered); DMARC ``v=DMARC1; p=quarantine;
rua=mailto:dmarc@contoso.sim``; MTA-STS ``v=STSv1; id=20261101``; TLS-RPT ``v=TLSRPTv1;
rua=mailto:tlsrpt@contoso.sim``.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from exporter.netsim.dns_server import DemoDNS
from exporter.netsim.smtp_server import DemoSMTP, MailSink
from exporter.simulator.tls import generate_tls

__all__ = [
    "DMARC_RECORD",
    "DNSBL_ZONE",
    "DOMAIN",
    "MTA_STS_RECORD",
    "OUTBOUND",
    "PLANTED_FAULTS",
    "SECOND_DOMAIN",
    "SPF_RECORD",
    "TLSRPT_RECORD",
    "DemoNet",
    "OutboundServer",
    "demo_zones",
    "mx_hosts",
    "outbound_servers",
]

DOMAIN = "contoso.sim"
SECOND_DOMAIN = "fabrikam.sim"
DNSBL_ZONE = "bl.demo.example"
ISP_ZONE = "isp.example"
REVERSE_ZONE = "2.0.192.in-addr.arpa"
SPF_RECORD = "v=spf1 ip4:192.0.2.10 include:_spf.{domain} -all"
SPF_INCLUDE_RECORD = "v=spf1 ip4:198.51.100.0/28 -all"
SECOND_SPF_RECORD = "v=spf1 mx -all"
DMARC_RECORD = "v=DMARC1; p=quarantine; rua=mailto:dmarc@{domain}"
MTA_STS_RECORD = "v=STSv1; id=20261101"
TLSRPT_RECORD = "v=TLSRPTv1; rua=mailto:tlsrpt@{domain}"
DNSBL_REASON = "Listed by the demo blocklist: spam trap hits, see https://bl.demo.example/lookup?ip=192.0.2.20"
#: Used for the zones' SOA serial; drift tests bump it with set_zones.
SERIAL = 2026110101


@dataclass(frozen=True)
class OutboundServer:
    """An outbound Exchange server of the demo organisation and what the DNS checks should find for it."""

    server: str
    ip: str
    helo: str
    ptr: str
    ptr_verdict: str  # "ok" | "mismatch"
    spf: str  # pyspf result for the main domain
    dnsbl_listed: bool


def outbound_servers(domain: str = DOMAIN) -> tuple[OutboundServer, ...]:
    """The outbound servers with their planted verdicts (see the module docstring)."""
    return (
        OutboundServer("EX01", "192.0.2.10", f"ex01.{domain}", f"ex01.{domain}", "ok", "pass", False),
        OutboundServer("EX02", "192.0.2.20", f"ex02.{domain}", f"static-20.{ISP_ZONE}", "mismatch", "fail", True),
    )


def mx_hosts(domain: str = DOMAIN) -> tuple[str, ...]:
    """The MX host names of the main domain, by preference."""
    return (f"mail1.{domain}", f"mail2.{domain}")


OUTBOUND = outbound_servers()

PLANTED_FAULTS = (
    "spf_fail: 192.0.2.20 (EX02) fails SPF for contoso.sim",
    "ptr_mismatch: 192.0.2.20 PTR static-20.isp.example does not match HELO ex02.contoso.sim",
    "dnsbl_listed: 192.0.2.20 listed on bl.demo.example (127.0.0.2)",
    "dmarc_missing: fabrikam.sim has no DMARC record",
)


def _soa(ns: str) -> str:
    return f"@ IN SOA {ns} hostmaster.{ns.split('.', 1)[1]} {SERIAL} 3600 600 1209600 300\n@ IN NS {ns}\n"


def _txt(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def demo_zones(domain: str = DOMAIN, mx_ip: str = "127.0.0.1") -> dict[str, str]:
    """Zone texts (origin -> zone file) of the demo organisation's public DNS; see the module docstring.

    ``mx_ip`` is where both MX hosts (and the name server) point: the loopback address ``DemoSMTP``
    listens on. Every zone passes ``nsd-checkzone``.
    """
    if domain == SECOND_DOMAIN:
        raise ValueError(f"the main domain cannot be {SECOND_DOMAIN}")
    ns = f"ns1.{domain}."
    main = (
        f"$ORIGIN {domain}.\n$TTL 300\n" + _soa(ns) + f"ns1 IN A {mx_ip}\n"
        f"@ IN MX 10 mail1\n"
        f"@ IN MX 20 mail2\n"
        f"mail1 IN A {mx_ip}\n"
        f"mail2 IN A {mx_ip}\n"
        f"ex01 IN A 192.0.2.10\n"
        f"ex02 IN A 192.0.2.20\n"
        f"mta-sts IN A {mx_ip}\n"
        f"@ IN TXT {_txt(SPF_RECORD.format(domain=domain))}\n"
        f"_spf IN TXT {_txt(SPF_INCLUDE_RECORD)}\n"
        f"_dmarc IN TXT {_txt(DMARC_RECORD.format(domain=domain))}\n"
        f"_mta-sts IN TXT {_txt(MTA_STS_RECORD)}\n"
        f"_smtp._tls IN TXT {_txt(TLSRPT_RECORD.format(domain=domain))}\n"
    )
    second = (
        f"$ORIGIN {SECOND_DOMAIN}.\n$TTL 300\n" + _soa(ns) + f"@ IN MX 10 mail1.{domain}.\n"
        f"@ IN MX 20 mail2.{domain}.\n"
        f"@ IN TXT {_txt(SECOND_SPF_RECORD)}\n"
    )
    reverse = (
        f"$ORIGIN {REVERSE_ZONE}.\n$TTL 300\n" + _soa(ns) + f"10 IN PTR ex01.{domain}.\n"
        f"20 IN PTR static-20.{ISP_ZONE}.\n"
    )
    isp = (
        f"$ORIGIN {ISP_ZONE}.\n$TTL 300\n" + _soa(f"ns1.{ISP_ZONE}.") + f"ns1 IN A {mx_ip}\nstatic-20 IN A 192.0.2.20\n"
    )
    dnsbl = (
        f"$ORIGIN {DNSBL_ZONE}.\n$TTL 300\n" + _soa(f"ns1.{DNSBL_ZONE}.") + f"ns1 IN A {mx_ip}\n"
        "2.0.0.127 IN A 127.0.0.2\n"
        f"2.0.0.127 IN TXT {_txt('RFC 5782 test point')}\n"
        "20.2.0.192 IN A 127.0.0.2\n"
        f"20.2.0.192 IN TXT {_txt(DNSBL_REASON)}\n"
    )
    return {domain: main, SECOND_DOMAIN: second, REVERSE_ZONE: reverse, ISP_ZONE: isp, DNSBL_ZONE: dnsbl}


class DemoNet:
    """The demo organisation's outside world on loopback: ``DemoDNS`` with ``demo_zones`` plus ``DemoSMTP``
    (STARTTLS with a certificate for both MX names from a generated CA valid 90 days).

    Point the DNS checks at ``dns_address``:``dns_port`` and trust ``ca_file`` in the SMTP probe; the MX
    names resolve to ``host``, where the SMTP endpoint listens on ``smtp_port`` (probes must use that port,
    since port 25 is not ours).
    """

    def __init__(
        self,
        directory: Path | None = None,
        host: str = "127.0.0.1",
        dns_port: int = 0,
        smtp_port: int = 0,
        domain: str = DOMAIN,
        sink: MailSink | None = None,
    ) -> None:
        self.domain = domain
        self.host = host
        self._directory = directory
        self._own_directory: Path | None = None
        self.dns = DemoDNS(demo_zones(domain, host), host=host, port=dns_port)
        self._smtp_port = smtp_port
        self._sink = sink  # where accepted mail goes (the simulator's smtp_sink()); None: every sender refused
        self.smtp: DemoSMTP | None = None
        self._ca_file: Path | None = None

    def start(self) -> DemoNet:
        """Generate the TLS material, start the DNS responder and the SMTP endpoint."""
        directory = self._directory
        if directory is None:
            directory = self._own_directory = Path(tempfile.mkdtemp(prefix="mailflow-demonet-"))
        tls = generate_tls(directory / "smtp-tls", mx_hosts(self.domain), days=90)
        self._ca_file = tls.ca_file
        self.dns.start()
        try:
            self.smtp = DemoSMTP(
                host=self.host,
                port=self._smtp_port,
                hostname=mx_hosts(self.domain)[0],
                cert_file=tls.cert_file,
                key_file=tls.key_file,
                sink=self._sink,
            ).start()
        except BaseException:
            self.dns.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop both servers and remove generated files (when no directory was given); idempotent."""
        if self.smtp is not None:
            self.smtp.stop()
            self.smtp = None
        self.dns.stop()
        if self._own_directory is not None:
            shutil.rmtree(self._own_directory, ignore_errors=True)
            self._own_directory = None

    @property
    def dns_address(self) -> str:
        """Address of the DNS responder."""
        return self.dns.address

    @property
    def dns_port(self) -> int:
        """Port (UDP and TCP) of the DNS responder."""
        return self.dns.port

    @property
    def smtp_port(self) -> int:
        """Port of the SMTP endpoint."""
        if self.smtp is None:
            raise RuntimeError("DemoNet not started")
        return self.smtp.port

    @property
    def ca_file(self) -> Path:
        """The CA certificate (PEM) that signed the SMTP endpoint's certificate."""
        if self._ca_file is None:
            raise RuntimeError("DemoNet not started")
        return self._ca_file

    def __enter__(self) -> DemoNet:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
