"""Triage rules for the synthetic mail-flow probe (``collectors.mailflow_probe``).

A probe that stopped is the most direct evidence there is: a message that should have arrived did not,
and the stage says where it stopped. A slow one is a warning; one whose outcome the exporter could not
see (no Test-Mailflow result, a tracking log that could not be searched) is a blind spot, not a
failure of mail flow. Registered in ``rules.RULES`` like the rules of ``rules.py``.
"""

from __future__ import annotations

from collections.abc import Callable

from exporter.probe.result import FAILURE, SUCCESS, UNKNOWN
from exporter.triage.facts import Facts
from exporter.triage.model import Finding
from exporter.triage.severity import severity

__all__ = ["PROBE_SLOW_SECONDS", "RULES", "mailflow_probe"]

#: An end-to-end latency above this (seconds) is slow (the MailflowProbeSlow alert's threshold).
PROBE_SLOW_SECONDS = 120.0

Rule = Callable[[Facts], list[Finding]]

#: What to do, by the stage where a probe stopped.
NEXT_STEPS = {
    "test_mailflow": "Test-Mailflow got no delivery receipt in time: run Get-Queue on the source and target "
    "servers (a queue in Retry names the broken hop), Test-ServiceHealth on both, and Get-MailboxDatabaseCopyStatus "
    "for the target's database.",
    "dns_mx": "The probe domain's MX records do not resolve to an address from the exporter host: check the MX "
    "records and the A/AAAA records of their hosts at the public DNS (Resolve-DnsName -Type MX <domain>).",
    "connect": "No MX host accepted a TCP connection on the SMTP port: check the firewall/load balancer in "
    "front of Exchange and that MSExchangeFrontEndTransport runs (Test-NetConnection <mx> -Port 25).",
    "tls": "STARTTLS was offered but the handshake failed: check the certificate bound to SMTP on the receive "
    "connector (Get-ExchangeCertificate | ? Services -match SMTP) and the TLS settings of the front end.",
    "smtp_4xx": "Exchange refused the message temporarily (4xx): back pressure (Get-ExchangeDiagnosticInfo "
    "-Process EdgeTransport -Component ResourceThrottling), a throttling policy or a transport agent.",
    "smtp_5xx": "Exchange refused the message permanently (5xx): is the probe recipient's domain an accepted "
    "domain and the recipient a valid mailbox? Check the receive connector's permissions and transport rules.",
    "tracking_receive": "The MX accepted the message but no Exchange server logged its RECEIVE: something other "
    "than Exchange answers on the MX (a gateway or filter holding it), or message tracking is off on the receiving "
    "server (Get-TransportService | fl MessageTrackingLogEnabled).",
    "deliver": "The message was received but not delivered: Get-Queue on the receiving server (Retry queues and "
    "their LastError), the recipient's database (Get-MailboxDatabaseCopyStatus) and MSExchangeDelivery.",
}
_SCOPES = {"inbound": ("inbound",), "internal": ("internal",)}


def mailflow_probe(facts: Facts) -> list[Finding]:
    """Trigger: a probe's last run stopped (critical, titled with its stage), took longer than
    PROBE_SLOW_SECONDS end to end (warning), or could not be followed (warning, no verdict)."""
    out = []
    for r in sorted(facts.all("mailflow_probe"), key=lambda r: r.probe):
        scopes = _SCOPES.get(r.kind, ())
        where = f" (server {r.server})" if r.server else ""
        if r.outcome == FAILURE:
            out.append(
                Finding(
                    "probe_failed",
                    severity("probe_failed"),
                    "tracking",
                    scopes,
                    f"Synthetic {r.kind} probe {r.probe} did not arrive: it stopped at {r.stage}",
                    (r.detail + where,),
                    NEXT_STEPS.get(r.stage, "Read the exporter log for the probe's last run."),
                    "mailflow-probe-failed",
                    10,
                )
            )
        elif r.outcome == SUCCESS and r.duration is not None and r.duration > PROBE_SLOW_SECONDS:
            out.append(
                Finding(
                    "probe_slow",
                    severity("probe_slow"),
                    "tracking",
                    scopes,
                    f"Synthetic {r.kind} probe {r.probe} took {r.duration:.0f}s end to end",
                    (f"more than {PROBE_SLOW_SECONDS:.0f}s{where}",),
                    "Look for the slow hop: Get-Queue on the servers on the path (a growing queue, Retry), back "
                    "pressure, and the DELIVER event's MessageLatency breakdown (mailflow-exporter trace).",
                    "mailflow-probe-slow",
                    int(r.duration),
                )
            )
        elif r.outcome == UNKNOWN:
            out.append(
                Finding(
                    "probe_blind",
                    severity("probe_blind"),
                    "visibility",
                    (),
                    f"Synthetic {r.kind} probe {r.probe}: outcome unknown ({r.stage})",
                    (r.detail + where,),
                    "The probe ran but the exporter could not see where its message went: see the other findings "
                    "for the server whose tracking log could not be searched, or the Test-Mailflow warning.",
                    "mailflow-probe-blind",
                )
            )
    return out


RULES: list[Rule] = [mailflow_probe]
