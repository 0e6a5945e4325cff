"""One severity table for the triage findings and the alert rules (issue 14, "one table").

Each :class:`Fault` pairs a triage finding (``Finding.rule``) with the alert(s) of
``dashboards/prometheus/alerts.yml`` that report the same fault, and says how bad it is: its
severity, the volume at which it starts (below it, triage reports ``info`` and no alert fires) and,
for faults that scale with volume, the volume at which it becomes ``critical``. Triage reads its
severities from here; ``tests/unit/test_severity.py`` renders the same fault as metrics, runs the
alert rules over them with ``promtool test rules`` and holds both sides equal at every threshold.

Volume is, for a LastError fault, the messages in delivery queues whose LastError is in one of
its ``categories``, summed over every server the exporter polls (the alert sums
``mailflow_queue_last_error_messages`` by job and instance); a fault with ``per_server`` counts the
largest single server instead. A constant fault (no ``critical_at``) ignores volume.

To add a LastError category ``x``: add ``_queue("queue_x", RETRYING, "x")`` to :data:`FAULTS` below
(section "LastError categories"). Its triage finding is ``queue_x`` (rules.queues_retrying_other)
and its alert the generic ``MailflowQueueRetrying``, which already selects every category without
an alert of its own, so alerts.yml needs no change. Other thresholds need an alert of their own
(faults sharing an alert share its tiers). A category that folds into an existing fault instead (a
new kind of connection failure, say) goes into that entry's categories, that alert's
``category=~`` list and ``MailflowQueueRetrying``'s ``category!~`` list. tests/unit/test_severity.py
says what is missing.

This module imports nothing from the exporter: triage, the CLI and the web layer can all use it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FAULTS", "RETRYING", "TRIAGE_ONLY", "Fault", "category_fault", "fault", "severity"]

#: The generic alert for LastError categories without an alert of their own.
RETRYING = "MailflowQueueRetrying"
#: Messages from which a queue fault that means "mail is not leaving" pages (was triage's 10).
PAGE_AT = 10


@dataclass(frozen=True)
class Fault:
    """One fault kind: its triage finding, its alert(s), and its severity by volume."""

    finding: str  # Finding.rule of the triage finding
    alerts: tuple[str, ...]  # alert names in alerts.yml (one rule per severity tier)
    severity: str  # from ``starts_at`` on (below: "info")
    critical_at: int | None = None  # volume from which it is critical (None: never by volume)
    categories: tuple[str, ...] = ()  # LastError categories (volume: messages retrying with them)
    starts_at: int = 1
    per_server: bool = False  # volume of the largest server, not the sum over every server
    internal_only: bool = False  # only queues with next_hop_category="Internal"

    def severity_at(self, volume: float = 1) -> str:
        """The severity of this fault at ``volume`` (messages, for a LastError fault)."""
        if self.critical_at is not None and volume >= self.critical_at:
            return "critical"
        return self.severity if volume >= self.starts_at else "info"

    @property
    def tiers(self) -> tuple[tuple[int, str], ...]:
        """``(volume, severity)`` from which each severity applies, lowest first (alerts: one rule each)."""
        first = ((self.starts_at, self.severity),)
        return first + (((self.critical_at, "critical"),) if self.critical_at is not None else ())


def _queue(finding: str, alert: str, *categories: str, critical_at: int | None = PAGE_AT, **kw: bool) -> Fault:
    """A LastError fault: warning from one message retrying, critical from ``critical_at`` messages."""
    return Fault(finding, (alert,), "warning", critical_at, categories, **kw)


FAULTS: tuple[Fault, ...] = (
    # ---- LastError categories: delivery queues retrying with this cause. One entry per category of
    # exporter/exchange/lasterror.py (a test fails for a category without one). Add new ones here.
    _queue("outbound_dns_failure", "MailflowQueueRetryingDnsFailure", "dns_failure"),
    _queue("outbound_connection_failure", "MailflowQueueRetryingConnection",
           "connection_refused", "connection_timeout", "connection_failed"),
    _queue("queue_tls_failure", "MailflowQueueRetryingTls", "tls_failure"),
    _queue("queue_auth_failure", RETRYING, "auth_failure"),
    _queue("queue_proxy_failure", RETRYING, "proxy_failure"),
    _queue("queue_blocklisted", RETRYING, "blocklisted"),
    _queue("queue_remote_rejected", RETRYING, "remote_rejected"),
    _queue("queue_other", RETRYING, "other"),
    # Throttling and greylisting clear by themselves: a page only when much mail waits on them.
    _queue("queue_throttled", "MailflowQueueRetryingThrottled", "throttled", critical_at=50),
    # One recipient's full mailbox or one oversized message: the rest of the queue still leaves.
    _queue("queue_mailbox_full", "MailflowQueueRetryingMessageRefused", "mailbox_full", critical_at=None),
    _queue("queue_message_too_large", "MailflowQueueRetryingMessageRefused", "message_too_large", critical_at=None),
    # A recipient that accepts only some senders (RESOLVER.RST.*): that recipient's rule, not mail flow.
    _queue(
        "queue_recipient_restricted", "MailflowQueueRetryingMessageRefused", "recipient_restricted", critical_at=None
    ),
    # Expired messages have gone back to their senders as NDRs: the generic alert, critical at volume.
    _queue("queue_expired", RETRYING, "expired"),
    # An unknown remote recipient is the sender's typo; an unknown internal one is our recipient policy.
    _queue("internal_recipient_unknown", "MailflowInternalRecipientUnknown", "recipient_unknown", critical_at=None,
           internal_only=True),
    # ---- other faults both sides report
    Fault("poison_messages", ("MailflowPoisonQueueNotEmpty",), "warning"),
    Fault("unreachable_messages", ("MailflowUnreachableQueueNotEmpty",), "warning"),
    Fault("stuck_messages", ("MailflowMessagesStuck",), "warning", starts_at=6, per_server=True),  # more than 5
    Fault("inbound_silence", ("MailflowInboundMailStopped",), "critical"),
    # Maintenance mode left on one server: the others carry its mail; a ticket, not a page.
    Fault("transport_component_inactive", ("MailflowTransportComponentInactive",), "warning"),
    Fault("database_not_mounted", ("MailflowDatabaseNotMounted",), "critical"),
    Fault("database_copy_unhealthy", ("MailflowDatabaseCopyUnhealthy",), "warning"),
    Fault("certificate_expiring", ("MailflowCertificateExpiring",), "warning"),  # within 30 days
    Fault("certificate_expired", ("MailflowCertificateExpiring",), "critical"),
    Fault("service_stopped", ("MailflowRequiredServiceStopped",), "critical"),
    Fault("open_relay", ("MailflowOpenRelayConnector",), "critical"),
    Fault("relay_unverified", ("MailflowRelayRightsUnverified",), "info"),
    Fault("accepted_domain_relay", ("MailflowAcceptedDomainOpenRelay",), "critical"),
    Fault("connector_drift", ("MailflowSendConnectorDrift", "MailflowReceiveConnectorDrift",
                              "MailflowTransportRuleDrift"), "warning"),
    # A server whose settings give it no DNS server: its outbound mail retries with 451 4.4.0; the others still send.
    Fault("transport_dns_unconfigured", ("MailflowTransportDnsUnconfigured",), "warning"),
    Fault("inbound_mx", ("MailflowMxMissing", "MailflowMxHostUnresolvable", "MailflowDnsRecordDrift"), "critical"),
    Fault("inbound_smtp_probe", ("MailflowSmtpProbeFailing",), "critical"),
    Fault("inbound_starttls", ("MailflowSmtpStarttlsMissing",), "warning"),
    Fault("blocklisted", ("MailflowOutboundIpBlocklisted",), "critical"),
    # A list that refuses our resolver (or answers nonsense): its IPs are neither listed nor clean.
    Fault("blocklist_unusable", ("MailflowBlocklistUnusable",), "warning"),
    Fault("spf_not_passing", ("MailflowSpfFailingForOutboundIp",), "warning"),
    Fault("spf_invalid", ("MailflowSpfInvalid", "MailflowSpfLookupLimit"), "critical"),
    Fault("ptr_mismatch", ("MailflowPtrMismatch",), "warning"),
    Fault("dmarc_missing", ("MailflowDmarcMissing",), "warning"),
    Fault("missing_role", ("MailflowCollectorFailing",), "warning"),
    # ---- blindness: what the exporter could not see (exporter/triage/blindness.py)
    Fault("server_unreachable", ("MailflowExchangeUnreachable",), "critical"),
    Fault("collector_failed", ("MailflowCollectorFailing",), "warning"),
    # ---- the transport servers themselves (exporter/triage/rules_transport.py)
    # Back pressure by the worst throttling meter: Medium refuses or delays mail from outside, High all mail.
    Fault("back_pressure_medium", ("MailflowBackPressureMedium",), "warning"),
    Fault("back_pressure_high", ("MailflowBackPressureHigh",), "critical"),
    # The server that does not answer is the root finding (server_unreachable); this is its toll.
    Fault("shadow_for_unreachable_server", ("MailflowShadowRedundancyPrimaryUnreachable",), "warning"),
    # One server's clock off, or (every server off alike) the exporter's: the same alert shows both.
    Fault("server_clock_skew", ("MailflowServerClockSkew",), "warning"),
    Fault("exporter_clock_skew", ("MailflowServerClockSkew",), "warning"),
    # ---- the synthetic probe (exporter/triage/rules_probe.py): a message that should have arrived did not.
    Fault("probe_failed", ("MailflowProbeFailed",), "critical"),
    Fault("probe_slow", ("MailflowProbeSlow",), "warning"),
    # Its outcome could not be seen (a tracking log that could not be searched): a blind spot, not a failure.
    Fault("probe_blind", ("MailflowProbeBlind",), "warning"),
)  # fmt: skip

#: Findings no alert can see (the server answered some polls; the `check` run itself timed out; a
#: Submission backlog judged against the other servers):
#: triage-only severities, still from this table.
TRIAGE_ONLY: tuple[Fault, ...] = (
    Fault("server_partly_unreachable", (), "warning"),
    Fault("check_timeout", (), "warning"),
    # A Submission queue backing up on one server with no resource state to blame: a correlation of
    # queue lengths across servers that no single series shows.
    Fault("submission_backlog", (), "warning"),
    # A rule that stops or diverts mail changed shortly before failures: the failures themselves are
    # reported (and alerted) with their own severity; this names the suspect.
    Fault("transport_rule_changed", (), "warning"),
)

_BY_FINDING = {f.finding: f for f in (*FAULTS, *TRIAGE_ONLY)}
_BY_CATEGORY = {c: f for f in FAULTS for c in f.categories}


def fault(finding: str) -> Fault:
    """The table entry of a triage finding (``KeyError`` for a finding the table lacks)."""
    return _BY_FINDING[finding]


def category_fault(category: str) -> Fault:
    """The table entry of a LastError category; an unknown category gets the generic queue fault,
    so a category added without an entry is still reported (the test suite demands the entry)."""
    return _BY_CATEGORY.get(category) or _queue(f"queue_{category}", RETRYING, category)


def severity(finding: str, volume: float = 1) -> str:
    """The severity of a triage finding at ``volume`` (messages for a queue fault)."""
    return fault(finding).severity_at(volume)
