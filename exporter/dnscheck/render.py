"""Metric families of the DNS and SMTP checks.

Rule for every family: a value is only emitted when the resolver answered. A timeout or SERVFAIL
shows as ``mailflow_dns_check_success == 0`` (with the reason in ``mailflow_dns_check_error_info``)
and the record metrics of that check are absent for that poll, never 0: a resolver outage is not a
missing record.

State-set families (``mailflow_dns_spf_result``, ``mailflow_dns_dmarc_policy``) carry the state in a
label and emit only the current state, with value 1: one series per domain (and IP), not one per
possible value. At 5,000 domains and 10 outbound IPs that is 50,000 SPF series instead of 350,000.
Queries select the state (``{result!="pass"}``); a state change ends one series and starts another.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.dnscheck.dnsbl import LISTED, NOT_LISTED
from exporter.dnscheck.resolver import FAILURES, Answer
from exporter.dnscheck.smtp_probe import PHASES, SmtpProbeResult

if TYPE_CHECKING:
    from exporter.dnscheck.collectors import DomainResult, IpResult

POLLED = "Checked from outside on a schedule."


def _g(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, f"{doc} {POLLED}", labels=labels)


def _b(value: bool) -> int:
    return 1 if value else 0


def render_domains(results: Iterable[DomainResult]) -> list[Metric]:
    """Families for the per-domain checks."""
    success = _g(
        "mailflow_dns_check_success",
        "1 if the resolver answered the check (record found or truly absent).",
        ["domain", "check"],
    )
    error = _g(
        "mailflow_dns_check_error_info",
        "1 with the reason when the resolver could not answer the check.",
        ["domain", "check", "reason"],
    )
    mx_records = _g(
        "mailflow_dns_mx_records",
        "MX records of the domain (0: none; null MX not counted).",
        ["domain"],
    )
    mx_null = _g(
        "mailflow_dns_mx_null",
        "1 if the domain publishes a null MX (RFC 7505): it receives no mail.",
        ["domain"],
    )
    mx_host = _g(
        "mailflow_dns_mx_host_resolves",
        "1 if the MX host has an A or AAAA record.",
        ["domain", "host"],
    )
    mx_match = _g(
        "mailflow_dns_mx_expected_match",
        "1 if the MX hosts equal dns.expect.<domain>.mx.",
        ["domain"],
    )
    spf_records = _g(
        "mailflow_dns_spf_records",
        "v=spf1 TXT records of the domain (exactly 1 is valid).",
        ["domain"],
    )
    spf_lookups = _g(
        "mailflow_dns_spf_lookups",
        "DNS-querying SPF terms through all includes (RFC 7208 limit 10).",
        ["domain"],
    )
    spf_void = _g(
        "mailflow_dns_spf_void_lookups",
        "SPF lookups that found nothing (RFC 7208 limit 2).",
        ["domain"],
    )
    spf_valid = _g(
        "mailflow_dns_spf_valid",
        "1 if the SPF record is unique, well-formed, loop-free and within the limits.",
        ["domain"],
    )
    spf_result = _g(
        "mailflow_dns_spf_result",
        "Always 1, labelled with the SPF result (pyspf check_host: pass, fail, softfail, neutral, none, "
        "permerror, temperror) of mail from the domain sent by the outbound IP; only the current result.",
        ["domain", "ip", "result"],
    )
    dmarc = _g(
        "mailflow_dns_dmarc_policy",
        "Always 1, labelled with the DMARC policy receivers apply to the domain (none, quarantine, reject, "
        "invalid, missing); only the current policy.",
        ["domain", "policy"],
    )
    dmarc_inherited = _g(
        "mailflow_dns_dmarc_inherited",
        "1 if the domain has no DMARC record of its own and its organizational domain's record covers it.",
        ["domain"],
    )
    mta_sts = _g(
        "mailflow_dns_mta_sts_present",
        "1 if the domain publishes an MTA-STS TXT record (_mta-sts).",
        ["domain"],
    )
    tls_rpt = _g(
        "mailflow_dns_tls_rpt_present",
        "1 if the domain publishes a TLS-RPT record (_smtp._tls).",
        ["domain"],
    )
    drift = _g(
        "mailflow_dns_record_drift",
        "1 if the record set differs from the expected value or the remembered baseline.",
        ["domain", "record_type"],
    )
    changed = _g(
        "mailflow_dns_record_last_change_timestamp_seconds",
        "When the record set was last seen to change, unix time.",
        ["domain", "record_type"],
    )

    def check(domain: str, name: str, answer: Answer | None, failed_reason: str = "") -> bool:
        reason = failed_reason or (answer.status if answer is not None and answer.failed else "")
        success.add_metric([domain, name], 0 if reason else 1)
        if reason:
            error.add_metric([domain, name, reason], 1)
        return not reason

    for r in sorted(results, key=lambda x: x.domain):
        d = r.domain
        if check(d, "mx", r.mx.answer):
            mx_records.add_metric([d], r.mx.records)
            mx_null.add_metric([d], _b(r.mx.null_mx))
            for host in r.mx.hosts:
                if host.status not in FAILURES:
                    mx_host.add_metric([d, host.host], _b(host.resolves))
            if r.mx.expected_match is not None:
                mx_match.add_metric([d], _b(r.mx.expected_match))
        spf_fault = r.spf.temp_errors[0].rsplit(": ", 1)[-1] if r.spf.temp_errors else ""
        if check(d, "spf", None, spf_fault if not r.spf.records and spf_fault else ""):
            spf_records.add_metric([d], r.spf.records)
            if r.spf.records == 1 and not r.spf.temp_errors:
                spf_lookups.add_metric([d], r.spf.lookups)
                spf_void.add_metric([d], r.spf.void_lookups)
            if not r.spf.temp_errors:
                spf_valid.add_metric([d], _b(r.spf.valid))
            for ip, result in sorted(r.spf_results.items()):
                spf_result.add_metric([d, ip, result], 1)
        if check(d, "dmarc", r.policies.dmarc.answer):
            dmarc.add_metric([d, r.policies.dmarc_policy], 1)
            dmarc_inherited.add_metric([d], _b(bool(r.policies.dmarc_inherited_from)))
        if check(d, "mta_sts", r.policies.mta_sts.answer):
            mta_sts.add_metric([d], _b(r.policies.mta_sts.present))
        if check(d, "tls_rpt", r.policies.tls_rpt.answer):
            tls_rpt.add_metric([d], _b(r.policies.tls_rpt.present))
        for rtype, state in sorted(r.drift.items()):
            drift.add_metric([d, rtype], _b(state.drifted))
            if state.last_change is not None:
                changed.add_metric([d, rtype], state.last_change)
    return [success, error, mx_records, mx_null, mx_host, mx_match, spf_records, spf_lookups, spf_void,
            spf_valid, spf_result, dmarc, dmarc_inherited, mta_sts, tls_rpt, drift, changed]  # fmt: skip


def render_ips(results: Iterable[IpResult]) -> list[Metric]:
    """Families for the per-IP checks (PTR, blocklists); PTR drift joins mailflow_dns_record_drift."""
    ptr_ok = _g(
        "mailflow_dns_ptr_check_success",
        "1 if the resolver answered the PTR lookup of the outbound IP.",
        ["ip"],
    )
    ptr_records = _g(
        "mailflow_dns_ptr_records",
        "PTR records of the outbound IP.",
        ["ip"],
    )
    confirmed = _g(
        "mailflow_dns_ptr_forward_confirmed",
        "1 if a PTR name of the IP resolves back to the IP (FCrDNS).",
        ["ip"],
    )
    helo = _g(
        "mailflow_dns_ptr_matches_helo",
        "1 if the PTR name equals the expected HELO name (or lies in a checked domain).",
        ["ip"],
    )
    listed = _g(
        "mailflow_dnsbl_listed",
        "1 if the blocklist lists the IP, 0 if not; absent when the list gave no usable answer.",
        ["ip", "zone"],
    )
    bl_ok = _g(
        "mailflow_dnsbl_check_success",
        "1 if the blocklist gave a usable answer (listed or not listed).",
        ["ip", "zone"],
    )
    bl_error = _g(
        "mailflow_dnsbl_error_info",
        "1 with the reason when the blocklist answer is not usable, so the IP is neither listed nor clean: "
        "public_resolver, rate_limited, query_refused, zone_name_typo, ip_query_not_allowed, query_error, "
        "bad_answer, test_point_not_listed, lists_everything, or the resolver's timeout, servfail, refused, error.",
        ["ip", "zone", "reason"],
    )
    drift = _g(
        "mailflow_dns_ptr_drift",
        "1 if the IP's PTR names differ from the remembered baseline.",
        ["ip"],
    )
    changed = _g(
        "mailflow_dns_ptr_last_change_timestamp_seconds",
        "When the IP's PTR names were last seen to change, unix time.",
        ["ip"],
    )
    for r in sorted(results, key=lambda x: x.ip):
        ptr_ok.add_metric([r.ip], 0 if r.ptr.answer.failed else 1)
        if not r.ptr.answer.failed:
            ptr_records.add_metric([r.ip], len(r.ptr.names))
            if r.ptr.forward_confirmed is not None:
                confirmed.add_metric([r.ip], _b(r.ptr.forward_confirmed))
            if r.ptr.matches_helo is not None:
                helo.add_metric([r.ip], _b(r.ptr.matches_helo))
        for b in r.dnsbl:
            bl_ok.add_metric([r.ip, b.zone], _b(b.ok))
            if b.verdict in (LISTED, NOT_LISTED):
                listed.add_metric([r.ip, b.zone], _b(b.verdict == LISTED))
            else:
                bl_error.add_metric([r.ip, b.zone, b.verdict], 1)
        if r.drift is not None:
            drift.add_metric([r.ip], _b(r.drift.drifted))
            if r.drift.last_change is not None:
                changed.add_metric([r.ip], r.drift.last_change)
    return [ptr_ok, ptr_records, confirmed, helo, listed, bl_ok, bl_error, drift, changed]


def render_smtp(results: Iterable[SmtpProbeResult]) -> list[Metric]:
    """Families for the SMTP probes."""
    success = _g(
        "mailflow_smtp_probe_success",
        "1 if the MX host answered banner and EHLO (and STARTTLS, when offered).",
        ["host"],
    )
    error = _g(
        "mailflow_smtp_probe_error_info",
        "1 with the phase that failed (connection, timeout, banner, ehlo, starttls, tls).",
        ["host", "reason"],
    )
    offered = _g(
        "mailflow_smtp_starttls_offered",
        "1 if EHLO advertises STARTTLS.",
        ["host"],
    )
    negotiated = _g(
        "mailflow_smtp_starttls_success",
        "1 if the TLS handshake after STARTTLS completed.",
        ["host"],
    )
    expiry = _g(
        "mailflow_smtp_tls_certificate_expiry_timestamp_seconds",
        "When the MX host's certificate expires, unix time.",
        ["host"],
    )
    name_match = _g(
        "mailflow_smtp_tls_certificate_name_match",
        "1 if the certificate names the MX host (SAN, RFC 6125).",
        ["host"],
    )
    trusted = _g(
        "mailflow_smtp_tls_certificate_trusted",
        "1 if the certificate chain verifies against the CA bundle.",
        ["host"],
    )
    duration = _g(
        "mailflow_smtp_probe_duration_seconds",
        "Time per probe phase (connect, banner, ehlo, starttls, total).",
        ["host", "phase"],
    )
    for r in sorted(results, key=lambda x: x.host):
        success.add_metric([r.host], _b(r.success))
        if not r.success:
            error.add_metric([r.host, r.error or "other"], 1)
        if r.starttls_offered is not None:
            offered.add_metric([r.host], _b(r.starttls_offered))
        if r.starttls_ok is not None:
            negotiated.add_metric([r.host], _b(r.starttls_ok))
        if r.cert_not_after is not None:
            expiry.add_metric([r.host], r.cert_not_after.timestamp())
        if r.cert_name_match is not None:
            name_match.add_metric([r.host], _b(r.cert_name_match))
        if r.cert_trusted is not None:
            trusted.add_metric([r.host], _b(r.cert_trusted))
        for phase in PHASES:
            if phase in r.phases:
                duration.add_metric([r.host, phase], r.phases[phase])
    return [success, error, offered, negotiated, expiry, name_match, trusted, duration]
