"""The DNS checks against a real authoritative server (NSD) and the SMTP probe against real STARTTLS endpoints."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.core import CollectorRegistry

from exporter.dnscheck.dnsbl import check_dnsbl
from exporter.dnscheck.mx import check_mx
from exporter.dnscheck.policy import check_policies, organizational_domain
from exporter.dnscheck.ptr import check_ptr
from exporter.dnscheck.resolver import NODATA, NXDOMAIN, OK, SERVFAIL, TIMEOUT, DnsClient
from exporter.dnscheck.smtp_probe import probe
from exporter.dnscheck.spf import analyse, evaluate
from exporter.service import Service
from exporter.settings import COLLECTOR_NAMES, Settings
from tests.dnsinfra.nsd import NsdServer, free_port
from tests.dnsinfra.smtp import EXPIRING_DAYS, MX_NAME, SmtpServerFactory
from tests.dnsinfra.zones import (
    DMARC_CASES,
    DMARC_EFFECTIVE,
    DNSBL_CASES,
    DNSBL_ZONE,
    DNSBL_ZONE_CASES,
    DOMAIN,
    MX_CASES,
    PTR_CASES,
    SPF_CASES,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def client_for(nsd: NsdServer, timeout: float = 3.0) -> DnsClient:
    return DnsClient((nsd.address,), nsd.port, timeout)


def test_resolver_faults_are_told_apart(nsd_server: NsdServer) -> None:
    c = client_for(nsd_server)
    assert c.query(DOMAIN, "MX").status == OK
    assert c.query(f"nonexistent.{DOMAIN}", "MX").status == NXDOMAIN
    assert c.query(f"nodata.{DOMAIN}", "MX").status == NODATA
    assert c.query(f"sub.{DOMAIN}", "A").status == NODATA  # an empty non-terminal is not NXDOMAIN
    servfail = c.query("www.servfail.test", "A")
    assert servfail.status == SERVFAIL and servfail.failed and not servfail.missing
    silent = DnsClient(("127.0.0.1",), free_port(), timeout=0.6)  # nothing listens there
    timed_out = silent.query(DOMAIN, "MX")
    assert timed_out.status == TIMEOUT and timed_out.failed and not timed_out.missing


@pytest.mark.parametrize("domain", sorted(SPF_CASES))
def test_spf_cases(nsd_server: NsdServer, domain: str) -> None:
    case = SPF_CASES[domain]
    c = client_for(nsd_server)
    for ip, verdict in case.verdicts.items():
        assert evaluate(ip, domain, c.fresh())[0] == verdict, (domain, ip)
    analysis = analyse(domain, c.fresh())
    if case.lookups is not None and "temperror" not in case.verdicts.values():
        assert analysis.lookups == case.lookups, (analysis.lookups, analysis.errors)
    permerror = "permerror" in case.verdicts.values()
    if permerror or "none" in case.verdicts.values():
        assert not analysis.valid, analysis
    elif "temperror" in case.verdicts.values():
        assert analysis.temp_errors and not analysis.valid
    else:
        assert analysis.valid, analysis


def test_spf_analysis_details(nsd_server: NsdServer) -> None:
    c = client_for(nsd_server)
    loop = analyse(f"spf-loop.{DOMAIN}", c.fresh())
    assert any("loop" in e for e in loop.errors)
    void = analyse(f"spf-void.{DOMAIN}", c.fresh())
    assert void.void_lookups == 3
    assert analyse(f"spf-void-two.{DOMAIN}", c.fresh()).void_lookups == 2
    two = analyse(f"spf-two.{DOMAIN}", c.fresh())
    assert two.records == 2
    syntax = analyse(f"spf-syntax.{DOMAIN}", c.fresh())
    assert any("ipv4" in e for e in syntax.errors)
    assert analyse(f"spf-long.{DOMAIN}", c.fresh()).record.endswith("-all")  # split TXT strings joined
    assert analyse(f"spf-include-none.{DOMAIN}", c.fresh()).errors
    temp = analyse(f"spf-temperror.{DOMAIN}", c.fresh())
    assert temp.temp_errors and "servfail" in temp.temp_errors[0]


def test_mx_cases(nsd_server: NsdServer) -> None:
    c = client_for(nsd_server)
    main = check_mx(DOMAIN, c.fresh(), expected=["mx2.mailflow.test", "MX1.mailflow.test."])
    assert [h.host for h in main.hosts] == [f"mx1.{DOMAIN}", f"mx2.{DOMAIN}"]
    assert all(h.resolves for h in main.hosts) and main.expected_match is True
    assert check_mx(DOMAIN, c.fresh(), expected=["mx1.mailflow.test"]).expected_match is False
    null = check_mx(f"nullmx.{DOMAIN}", c.fresh())
    assert null.null_mx and null.records == 0
    assert check_mx(f"nomx.{DOMAIN}", c.fresh()).answer.status == NODATA
    assert check_mx(f"nonexistent.{DOMAIN}", c.fresh()).answer.status == NXDOMAIN
    dangling = check_mx(f"mx-dangling.{DOMAIN}", c.fresh())
    assert dangling.records == 1 and not dangling.hosts[0].resolves and dangling.hosts[0].status == NXDOMAIN
    assert MX_CASES[f"mx-dangling.{DOMAIN}"] == "mx_target_missing"
    broken = check_mx("servfail.test", c.fresh())
    assert broken.answer.failed and broken.expected_match is None


@pytest.mark.parametrize("ip", sorted(PTR_CASES))
def test_ptr_cases(nsd_server: NsdServer, ip: str) -> None:
    case = PTR_CASES[ip]
    result = check_ptr(ip, client_for(nsd_server), helo=case.helo)
    assert set(result.names) == set(case.ptrs)
    confirmed = case.verdict in ("ok", "helo_mismatch", "multiple")
    # matches_helo compares names only; forward confirmation is its own metric (both matter to receivers).
    matches = case.helo in case.ptrs
    expected = (confirmed, matches)
    assert (result.forward_confirmed, result.matches_helo) == expected, result


@pytest.mark.parametrize("ip", sorted(DNSBL_CASES))
def test_dnsbl_cases(nsd_server: NsdServer, ip: str) -> None:
    result = check_dnsbl(ip, DNSBL_ZONE, client_for(nsd_server))
    assert result.verdict == DNSBL_CASES[ip]
    if not result.ok:  # an unusable answer is explained, never read as a listing or a clean bill
        assert result.explain().startswith(f"{DNSBL_ZONE} ") and result.codes[0] in result.explain()


@pytest.mark.parametrize(("ip", "zone"), sorted(DNSBL_ZONE_CASES))
def test_dnsbl_zones_that_cannot_be_used(nsd_server: NsdServer, ip: str, zone: str) -> None:
    """RFC 5782 test points: a zone without 127.0.0.2 cannot say "not listed", one with 127.0.0.1 cannot say
    "listed"; the IP itself is answered NXDOMAIN by the first and listed by the second."""
    result = check_dnsbl(ip, zone, client_for(nsd_server))
    assert result.verdict == DNSBL_ZONE_CASES[(ip, zone)] and not result.ok
    assert "RFC 5782" in result.explain()


def test_dnsbl_refusal_keeps_the_lists_own_words(nsd_server: NsdServer) -> None:
    refused = check_dnsbl("192.0.2.50", DNSBL_ZONE, client_for(nsd_server))
    assert refused.verdict == "public_resolver" and "public resolvers are blocked" in refused.reason_text
    assert refused.explain().startswith(
        f"{DNSBL_ZONE} refuses queries from this resolver (127.255.255.254: query via a public/open resolver)"
    )
    uribl = check_dnsbl("192.0.2.55", DNSBL_ZONE, client_for(nsd_server))
    assert uribl.verdict == "query_refused" and "Query Refused" in uribl.explain()


def test_dnsbl_listing_carries_the_reason_text(nsd_server: NsdServer) -> None:
    listed = check_dnsbl("192.0.2.20", DNSBL_ZONE, client_for(nsd_server))
    assert listed.codes == ("127.0.0.2",) and "spam source" in listed.reason_text
    assert check_dnsbl("192.0.2.20", "servfail.test", client_for(nsd_server)).verdict == "servfail"


def test_policies(nsd_server: NsdServer) -> None:
    c = client_for(nsd_server)
    main = check_policies(DOMAIN, c.fresh())
    assert main.dmarc_policy == "reject" and main.mta_sts.present and main.tls_rpt.present
    assert set(DMARC_CASES.values()) == {"ok", "malformed", "missing"}
    for domain, (policy, parent) in DMARC_EFFECTIVE.items():
        result = check_policies(domain, c.fresh())
        assert (result.dmarc_policy, result.dmarc_inherited_from) == (policy, parent), domain


def test_dmarc_fallback_is_not_taken_on_a_resolver_fault(nsd_server: NsdServer) -> None:
    """A SERVFAIL for the domain's own _dmarc is a failed check, not an absence to inherit over."""
    result = check_policies("eu.servfail.test", client_for(nsd_server))
    assert result.dmarc.answer.failed and not result.dmarc_inherited_from


def test_organizational_domains() -> None:
    assert organizational_domain("mail.contoso.com") == "contoso.com"
    assert organizational_domain("a.b.Example.CO.UK.") == "example.co.uk"
    assert organizational_domain("contoso.com") == "contoso.com"
    assert organizational_domain("co.uk") == "co.uk"  # a public suffix stays itself: nothing to fall back to
    assert organizational_domain("eu.orgdmarc.test") == "orgdmarc.test"  # unknown TLD: the default "*" rule


def test_smtp_probe_kinds(smtp_server_factory: SmtpServerFactory) -> None:
    ca = str(smtp_server_factory.ca_file)

    def run(kind: str) -> Any:
        server = smtp_server_factory(kind)
        return probe(MX_NAME, "127.0.0.1", server.port, timeout=5, helo="probe.mailflow.test", ca_file=ca)

    good = run("valid")
    assert good.success and good.starttls_offered and good.starttls_ok and good.cert_trusted and good.cert_name_match
    assert good.banner.startswith(MX_NAME) and good.tls_version.startswith("TLS")
    assert {"connect", "banner", "ehlo", "starttls", "total"} <= set(good.phases)
    expiring = run("expiring")
    assert expiring.success and expiring.cert_trusted
    assert expiring.cert_not_after is not None
    assert (EXPIRING_DAYS - 1) * 86400 < expiring.cert_not_after.timestamp() - time.time() <= EXPIRING_DAYS * 86400
    expired = run("expired")
    assert expired.success and expired.cert_trusted is False and "expired" in expired.trust_error
    assert expired.cert_not_after is not None and expired.cert_not_after.timestamp() < time.time()
    wrong = run("wrong_name")
    assert wrong.success and wrong.cert_trusted and wrong.cert_name_match is False
    plain = run("no_starttls")
    assert plain.success and plain.starttls_offered is False and plain.cert_not_after is None
    reset = smtp_server_factory("valid", reset_after_banner=True)
    cut = probe(MX_NAME, "127.0.0.1", reset.port, timeout=5, ca_file=ca)
    assert not cut.success and cut.error == "ehlo"  # the banner came, then the server hung up
    silent = smtp_server_factory("valid", banner_delay=3.0)
    mute = probe(MX_NAME, "127.0.0.1", silent.port, timeout=1, ca_file=ca)
    assert not mute.success and mute.error == "timeout", mute
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    refused = probe(MX_NAME, "127.0.0.1", closed_port, timeout=2)
    assert not refused.success and refused.error == "connection"


def dns_settings(nsd: NsdServer, tmp_path: Path, smtp: Any = None, ca: str | None = None) -> Settings:
    data: dict[str, Any] = {
        "state_dir": str(tmp_path / "state"),
        "exchange": {"servers": []},
        "collectors": {name: {"enabled": False} for name in ("queues", "tracking")},
        "dns": {
            "resolvers": [nsd.address],
            "port": nsd.port,
            "timeout": 1,
            "domains": [DOMAIN, f"spf-toomany.{DOMAIN}", "servfail.test"],
            "use_accepted_domains": False,
            "outbound_ips": [
                {"ip": "192.0.2.10", "helo": f"ex01.{DOMAIN}"},
                {"ip": "192.0.2.20", "helo": f"ex03.{DOMAIN}"},
            ],
            "blocklists": [DNSBL_ZONE],
            "expect": {DOMAIN: {"mx": [f"mx1.{DOMAIN}", f"mx2.{DOMAIN}"]}},
            "smtp": {
                "enabled": smtp is not None,
                "probe_mx": False,
                "hosts": [MX_NAME],
                "port": smtp.port if smtp else 25,
                "ca_bundle": ca,
            },
        },
    }
    for name in set(COLLECTOR_NAMES) - {"queues", "tracking"}:
        data["collectors"][name] = {"enabled": False}
    return Settings.model_validate(data)


def value(registry: CollectorRegistry, name: str, /, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_dns_collectors_end_to_end(nsd_factory: Any, tmp_path: Path, smtp_server_factory: SmtpServerFactory) -> None:
    from tests.dnsinfra.zones import BROKEN_ZONES, all_zones

    nsd = nsd_factory(all_zones(), broken_zones=BROKEN_ZONES)
    smtp = smtp_server_factory("valid")
    # The MX host name must resolve for the probe: it is in the zone (mx1 -> 192.0.2.25), so point the probe at
    # loopback through an extra host entry instead: the SMTP collector resolves through the same DNS.
    zones = all_zones()
    zones[DOMAIN] = zones[DOMAIN].replace("mx1 IN A 192.0.2.25", "mx1 IN A 127.0.0.1")
    nsd.reload(zones, broken_zones=BROKEN_ZONES)
    service = Service(dns_settings(nsd, tmp_path, smtp, str(smtp_server_factory.ca_file)))
    try:
        snaps = {(s.collector, s.target): s for s in service.poll_all()}
        assert (
            not snaps[("dns_domains", "servfail.test")].ok and snaps[("dns_domains", "servfail.test")].reason == "dns"
        )
        assert snaps[("dns_domains", DOMAIN)].ok and snaps[("dns_ips", "192.0.2.20")].ok
        r = service.registry
        assert value(r, "mailflow_dns_check_success", domain=DOMAIN, check="mx") == 1
        assert value(r, "mailflow_dns_mx_records", domain=DOMAIN) == 2
        assert value(r, "mailflow_dns_mx_expected_match", domain=DOMAIN) == 1
        assert value(r, "mailflow_dns_spf_lookups", domain=f"spf-toomany.{DOMAIN}") == 11
        assert value(r, "mailflow_dns_spf_valid", domain=f"spf-toomany.{DOMAIN}") == 0
        assert (
            value(r, "mailflow_dns_spf_result", domain=f"spf-toomany.{DOMAIN}", ip="192.0.2.10", result="permerror")
            == 1
        )
        assert value(r, "mailflow_dns_dmarc_policy", domain=DOMAIN, policy="reject") == 1
        assert value(r, "mailflow_dns_ptr_forward_confirmed", ip="192.0.2.10") == 1
        assert value(r, "mailflow_dns_ptr_matches_helo", ip="192.0.2.10") == 1
        assert value(r, "mailflow_dns_ptr_forward_confirmed", ip="192.0.2.20") == 0
        assert value(r, "mailflow_dnsbl_listed", ip="192.0.2.20", zone=DNSBL_ZONE) == 1
        assert value(r, "mailflow_dnsbl_listed", ip="192.0.2.10", zone=DNSBL_ZONE) == 0
        assert value(r, "mailflow_smtp_probe_success", host=MX_NAME) == 1
        assert value(r, "mailflow_smtp_tls_certificate_trusted", host=MX_NAME) == 1
        assert value(r, "mailflow_dns_record_drift", domain=DOMAIN, record_type="MX") == 0

        # The MX moves: the expectation says drift; the SPF baseline too when the record changes.
        moved = (
            zones[DOMAIN]
            .replace("@ IN MX 20 mx2", "@ IN MX 20 mx.evil.example.")
            .replace("\nspf-toomany IN TXT", '\nspf-toomany IN TXT "v=spf1 -all"\n_old IN TXT')
        )
        nsd.reload({**zones, DOMAIN: moved}, broken_zones=BROKEN_ZONES)
        service.poll_all()
        assert value(r, "mailflow_dns_record_drift", domain=DOMAIN, record_type="MX") == 1
        assert value(r, "mailflow_dns_mx_expected_match", domain=DOMAIN) == 0
        assert value(r, "mailflow_dns_record_drift", domain=f"spf-toomany.{DOMAIN}", record_type="SPF") == 1
        changed = value(
            r, "mailflow_dns_record_last_change_timestamp_seconds", domain=f"spf-toomany.{DOMAIN}", record_type="SPF"
        )
        assert changed is not None and abs(changed - time.time()) < 60

        # The resolver goes away entirely: the target is down for reason "dns"; the last good values stay
        # (until stale) rather than turning into "no MX".
        nsd.stop()
        service.poll_all()
        assert value(r, "mailflow_collector_up", collector="dns_domains", target=DOMAIN) == 0
        errors = value(r, "mailflow_collector_errors_total", collector="dns_domains", target=DOMAIN, reason="dns")
        assert errors is not None and errors >= 1
        assert value(r, "mailflow_dns_mx_records", domain=DOMAIN) == 2
    finally:
        service.stop()


def test_partial_resolver_failure_is_not_a_missing_record(demo_dns: Any, tmp_path: Path) -> None:
    demo_dns.faults.set(DOMAIN, "servfail", rtype="MX")
    settings = dns_settings(demo_dns, tmp_path)
    service = Service(settings)
    try:
        snaps = {(s.collector, s.target): s for s in service.poll_all()}
        assert snaps[("dns_domains", DOMAIN)].ok
        r = service.registry
        assert value(r, "mailflow_dns_check_success", domain=DOMAIN, check="mx") == 0
        assert value(r, "mailflow_dns_check_error_info", domain=DOMAIN, check="mx", reason="servfail") == 1
        assert value(r, "mailflow_dns_mx_records", domain=DOMAIN) is None  # unknown, not 0
        assert value(r, "mailflow_dns_mx_expected_match", domain=DOMAIN) is None
        assert value(r, "mailflow_dns_check_success", domain=DOMAIN, check="dmarc") == 1
        assert value(r, "mailflow_dns_record_drift", domain=DOMAIN, record_type="MX") is None
        demo_dns.faults.clear()
        service.poll_all()
        assert value(r, "mailflow_dns_mx_records", domain=DOMAIN) == 2
    finally:
        service.stop()


def test_forward_lookup_failure_is_unknown_not_unconfirmed(demo_dns: Any) -> None:
    demo_dns.faults.set(f"ex01.{DOMAIN}", "servfail", rtype="A")
    result = check_ptr("192.0.2.10", DnsClient((demo_dns.address,), demo_dns.port, 2.0), helo=f"ex01.{DOMAIN}")
    assert result.names == (f"ex01.{DOMAIN}",) and result.forward_confirmed is None
