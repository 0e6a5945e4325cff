"""The inbound probe: a message from the exporter's host through the domain's published MX, confirmed
delivered from message tracking.

1. ``dns_mx``: the domain's MX records, by preference, through the exporter's DNS client
   (``dnscheck.resolver``; the ``dns`` section's resolvers), and each host's addresses.
2. ``connect``/``tls``/``smtp_4xx``/``smtp_5xx``: an SMTP session to the first MX host that accepts a
   connection (``dnscheck.smtp_probe.open_session``: STARTTLS when offered), then MAIL FROM, RCPT TO
   and DATA with smtplib. The message carries a fresh ``Message-ID``; the clock starts at DATA's end.
3. ``tracking_receive``/``deliver``: every ``tracking_every`` seconds, every transport server's
   tracking log is searched for that Message-ID (``trace.query``: the trace's searches, through the
   exporter's sessions; ``-MessageId`` only, which every build's Message Tracking role entry holds, and
   the few events of one message are filtered here rather than with ``-EventId``). DELIVER's Timestamp
   minus the send time is the end-to-end latency. At ``deliver_timeout`` without DELIVER, its RECEIVE
   events say where it stopped. A server whose log could not be searched makes the outcome unknown
   (``tracking_blind``), never a failure of mail flow: the DELIVER may be in that log.

The addresses and the Message-ID never leave this module except in the message itself.
"""

from __future__ import annotations

import logging
import smtplib
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

from exporter.dnscheck.resolver import DnsClient, combine_status
from exporter.dnscheck.smtp_probe import SmtpStepError, open_session, quit_session
from exporter.errors import CollectorError
from exporter.exchange.targets import ExchangeTargets
from exporter.probe.result import FAILURE, SUCCESS, UNKNOWN, ProbeResult
from exporter.probe.settings import InboundProbe
from exporter.trace.query import ServerSearch, TraceQuery, search_all

log = logging.getLogger(__name__)
#: How far before the send the tracking search starts (server clocks that run behind).
_CLOCK_SLACK = timedelta(minutes=5)


def _mx_hosts(client: DnsClient, domain: str, limit: int) -> tuple[list[tuple[str, str]], str]:
    """[(host, address)] by MX preference, or ([], why)."""
    answer = client.query(domain, "MX")
    if not answer.ok:
        return [], f"MX lookup for the probe domain: {answer.status}"
    ranked = sorted((int(p), h) for p, h in (r.split(" ", 1) for r in answer.records) if h != ".")
    hosts: list[tuple[str, str]] = []
    for _preference, host in ranked[:limit]:
        a, aaaa = client.addresses(host)
        if a.ok:
            hosts.append((host, a.records[0]))
        elif aaaa.ok:
            hosts.append((host, aaaa.records[0]))
    if not hosts:
        statuses = ", ".join(sorted({combine_status(*client.addresses(h)) for _, h in ranked[:limit]})) or "none"
        return [], f"no MX host of the probe domain has an address ({statuses})"
    return hosts, ""


def _message(probe: InboundProbe, message_id: str, now: datetime) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = probe.sender
    msg["To"] = probe.recipient
    msg["Subject"] = f"mailflow-exporter probe {probe.name}"
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to the probe
    msg.set_content("A synthetic probe message from mailflow-exporter. It can be deleted.\n")
    return msg


def _reply_stage(code: int) -> str:
    return "smtp_5xx" if 500 <= code < 600 else "smtp_4xx"


def send(probe: InboundProbe, client: DnsClient, message_id: str) -> tuple[ProbeResult | None, str]:
    """Send the probe message; (None, MX host used) when accepted, else (the failed result, "")."""

    def failed(stage: str, detail: str) -> tuple[ProbeResult, str]:
        return ProbeResult(probe.name, "inbound", FAILURE, stage, detail=detail), ""

    hosts, why = _mx_hosts(client, probe.domain, probe.max_mx_hosts)
    if not hosts:
        return failed("dns_mx", why)
    last = "no MX host"
    for host, address in hosts:
        try:
            smtp, _tls = open_session(host, address, probe.port, probe.smtp_timeout, probe.helo_name)
        except SmtpStepError as err:
            if err.step == "connect":  # the next MX host, as a sending MTA would
                last = f"{host}: {err}"
                continue
            if err.code:
                return failed(_reply_stage(err.code), f"{host}: {err.step} refused: {err.code}")
            return failed("tls" if err.step == "starttls" else "connect", f"{host}: {err.step}: {err}"[:200])
        try:
            msg = _message(probe, message_id, datetime.now(UTC))
            smtp.send_message(msg, from_addr=probe.sender, to_addrs=[probe.recipient])
        except smtplib.SMTPRecipientsRefused as err:
            code = next(iter(err.recipients.values()))[0]
            return failed(_reply_stage(code), f"{host}: RCPT TO refused: {code}")
        except smtplib.SMTPResponseException as err:  # MAIL FROM / DATA refused
            return failed(_reply_stage(err.smtp_code), f"{host}: refused: {err.smtp_code}")
        except (smtplib.SMTPException, OSError) as err:
            return failed("connect", f"{host}: the session broke: {type(err).__name__}")
        finally:
            quit_session(smtp)
        return None, host
    return failed("connect", f"no MX host accepted a connection ({last})"[:200])


def _search(targets: ExchangeTargets, message_id: str, sent: datetime, deadline: float) -> list[ServerSearch]:
    end = datetime.now(UTC) + _CLOCK_SLACK
    query = TraceQuery.build(start=sent - _CLOCK_SLACK, end=end, message_id=message_id, result_size=100)
    return search_all(targets, query, deadline)


def _skew(targets: ExchangeTargets, server: str) -> float:
    """How far ``server``'s clock is ahead of ours (its session's last reading; 0 when unknown)."""
    try:
        reading = targets.session(server).server_clock.reading()
    except CollectorError:
        return 0.0
    return reading.skew if reading is not None else 0.0


def run_inbound(
    targets: ExchangeTargets,
    client: DnsClient,
    probe: InboundProbe,
    call_timeout: float,
    sleep: Callable[[float], object] = time.sleep,
) -> ProbeResult:
    """Send, then wait for DELIVER in message tracking (see the module docstring)."""
    message_id = f"<{uuid.uuid4()}@mailflow-probe.invalid>"
    started = time.monotonic()
    failed, host = send(probe, client, message_id)
    if failed is not None:
        return failed
    sent = datetime.now(UTC)
    give_up = time.monotonic() + probe.deliver_timeout
    while True:
        searches = _search(targets, message_id, sent, time.monotonic() + call_timeout)
        events = [e for s in searches for e in s.events]
        delivered = [e for e in events if e.event_id.upper() == "DELIVER"]
        if delivered:
            first = min(delivered, key=lambda e: e.timestamp)
            # DELIVER is stamped by its server's clock: measured on ours (mailflow_server_clock_skew_seconds).
            latency = max(0.0, (first.timestamp - sent).total_seconds() - _skew(targets, first.server))
            return ProbeResult(probe.name, "inbound", SUCCESS, duration=latency, server=first.server)
        if time.monotonic() >= give_up:
            break
        sleep(min(probe.tracking_every, max(0.0, give_up - time.monotonic())))
    waited = f"{time.monotonic() - started:.0f}s"
    blind = [s for s in searches if not s.ok]
    if blind:
        names = ", ".join(f"{s.server} ({s.reason or 'error'})" for s in blind)
        return ProbeResult(probe.name, "inbound", UNKNOWN, "tracking_blind",
                           detail=f"accepted by {host}; no DELIVER found after {waited}, but the tracking log of "
                           f"{names} could not be searched")  # fmt: skip
    got = sorted({e.server for e in events if e.event_id.upper() == "RECEIVE"})
    if got:
        detail = f"accepted by {host}, received by {', '.join(got)}, not delivered after {waited}"
        return ProbeResult(probe.name, "inbound", FAILURE, "deliver", detail=detail, server=got[0])
    detail = f"accepted by {host}, but no Exchange server logged its RECEIVE after {waited}"
    return ProbeResult(probe.name, "inbound", FAILURE, "tracking_receive", detail=detail)
