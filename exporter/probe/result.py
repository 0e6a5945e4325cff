"""What one probe run found: success, failure at a stage, or unknown (the exporter could not see)."""

from __future__ import annotations

from dataclasses import dataclass

#: Where a probe stopped (the ``stage`` label; bounded). Internal: ``test_mailflow`` (Test-Mailflow
#: said *FAILURE*), ``no_result`` (unknown: no TestMailflowOutput, e.g. a server without databases).
#: Inbound: ``dns_mx`` (no usable MX or address), ``connect`` (no MX host accepted a connection),
#: ``tls`` (STARTTLS offered but failed), ``smtp_4xx``/``smtp_5xx`` (refused with that reply class),
#: ``tracking_receive`` (accepted, but no server logged its RECEIVE), ``deliver`` (received, no DELIVER
#: within deliver_timeout), ``tracking_blind`` (unknown: a transport server's log could not be searched).
STAGES = (
    "test_mailflow",
    "no_result",
    "dns_mx",
    "connect",
    "tls",
    "smtp_4xx",
    "smtp_5xx",
    "tracking_receive",
    "deliver",
    "tracking_blind",
)
SUCCESS, FAILURE, UNKNOWN = "success", "failure", "unknown"


@dataclass(frozen=True)
class ProbeResult:
    """One run of one probe. ``duration``: end-to-end latency when delivered (seconds), else None.
    ``detail``: one plain reason, without the probe's addresses or message id."""

    probe: str
    kind: str  # internal | inbound
    outcome: str  # success | failure | unknown
    stage: str = ""  # one of STAGES when not successful
    duration: float | None = None
    detail: str = ""
    server: str = ""  # the server that ran Test-Mailflow, or that delivered / received the inbound probe

    @property
    def success(self) -> bool | None:
        """True/False, or None when unknown (blind)."""
        return None if self.outcome == UNKNOWN else self.outcome == SUCCESS
