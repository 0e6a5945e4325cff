"""Triage rules for the transport servers themselves: back pressure, shadow redundancy held for a server
that cannot be reached, and server clocks.

Registered in ``rules.RULES`` like the rules of ``rules.py`` (each a function from the facts to
findings, its trigger in its docstring). They correlate what one collector cannot see alone: a
Submission queue growing on one server while the others are empty, with the resource state Exchange
reports for it; shadow messages held by one server for another whose polls fail.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from exporter.exchange.queues import primary_server
from exporter.triage.facts import Facts
from exporter.triage.model import Finding
from exporter.triage.severity import severity

__all__ = ["RULES", "back_pressure", "server_clock_skew", "shadow_for_unreachable_server"]

#: A Submission queue this long, growing (or at least SUBMISSION_HIGH), with the others near empty.
SUBMISSION_BACKLOG = 100
SUBMISSION_HIGH = 500
#: A server clock further off than this (seconds): well before Kerberos' 5-minute limit.
CLOCK_SKEW_LIMIT = 120.0
KERBEROS_SKEW = 300.0
#: The finding (and severity table entry) of back pressure by the worst throttling meter's level.
BACK_PRESSURE_FINDINGS = {"High": "back_pressure_high", "Medium": "back_pressure_medium"}
#: Poll failures that say a server does not answer at all (see exporter.errors reasons).
UNREACHABLE = ("connection", "timeout")
ALL_SCOPES = ("inbound", "internal", "outbound")

Rule = Callable[[Facts], list[Finding]]

_RESOURCE_HINTS = {
    "UsedDiskSpace": "free disk space on the drive of {path} (the queue database's logs, or content "
    "conversion), or move the queue database to a larger drive (QueueDatabasePath in EdgeTransport.exe.config)",
    "DatabaseUsedSpace": "free disk space on the drive of the queue database ({path}), or move it to a larger "
    "drive (QueueDatabasePath in EdgeTransport.exe.config)",
    "PrivateBytes": "EdgeTransport.exe uses too much memory: look for a leaking transport agent "
    "(Get-TransportAgent) or an oversized message; restarting MSExchangeTransport frees it for a while",
    "UsedVersionBuckets": "the queue database cannot commit fast enough: disk latency of the queue drive, "
    "antivirus scanning the queue folder, or a burst of large messages with many recipients",
    "CheckpointDepth": "the queue database's log checkpoint lags: disk latency of the queue drive or "
    "antivirus scanning {path}",
    "JetSessions": "too many open queue database sessions: a burst of concurrent deliveries or a stuck agent",
}
_CONFIRM = (
    "Confirm: [xml]$bp = Get-ExchangeDiagnosticInfo -Server {server} -Process EdgeTransport -Component "
    "ResourceThrottling; $bp.Diagnostics.Components.ResourceThrottling.ResourceTracker.ResourceMeter; the "
    "Application log has events 15004-15007 for each level change."
)


def _submission(facts: Facts) -> dict[str, tuple[int, bool]]:
    """Per server: messages in its Submission queue(s), and whether more arrive than leave."""
    out: dict[str, tuple[int, bool]] = {}
    for result in facts.all("queues"):
        queues = [q for q in result.queues if q.kind == "submission"]
        if queues:
            count = sum(q.message_count for q in queues)
            incoming = sum(q.incoming_rate for q in queues)
            outgoing = sum(q.outgoing_rate for q in queues)
            out[result.server] = (count, incoming > outgoing)
    return out


def back_pressure(facts: Facts) -> list[Finding]:
    """Trigger: the back pressure diagnostics of a transport server report a resource (other than
    SystemMemory) at Medium or High; or, when they report none or could not be read, its Submission
    queue holds 100+ messages and grows (or holds 500+) while every other polled server's holds at most
    a tenth of that. The finding is back_pressure_high when a resource is at High (all new mail is
    refused), back_pressure_medium at Medium, submission_backlog for the queue alone."""
    states = facts.of("back_pressure")
    submission = _submission(facts)
    failed = facts.failed("back_pressure")
    out = []
    for server in sorted(set(states) | set(submission)):
        state = states.get(server)
        count, growing = submission.get(server, (0, False))
        others = [c for s, (c, _) in submission.items() if s != server]
        queue_text = f"Submission {count}{' and growing' if growing else ''}"
        elsewhere = (
            f"the other servers' Submission queues hold {', '.join(str(c) for c in sorted(others, reverse=True)[:5])}"
            if others
            else ""
        )
        throttling = state.throttling() if state is not None else []
        if throttling:
            worst = throttling[0].level
            meters = ", ".join(dict.fromkeys(f"{m.resource} {m.level}" for m in throttling))
            evidence = [
                f"{server}: {m.resource} is {m.level} (was {m.previous}), pressure {m.pressure:g}"
                + (f" on {m.path}" if m.path else "")
                for m in throttling
                if m.pressure is not None
            ]
            evidence.append(f"{server}: {count} message(s) in the Submission queue{', growing' if growing else ''}")
            if state is not None and state.paused:
                evidence.append(f"{server}: paused by back pressure: {', '.join(state.paused)}")
            if elsewhere:
                evidence.append(elsewhere)
            hints = dict.fromkeys(
                _RESOURCE_HINTS.get(m.resource, "find what exhausts {resource}").format(
                    path=m.path, resource=m.resource
                )
                for m in throttling
            )
            out.append(
                Finding(
                    BACK_PRESSURE_FINDINGS[worst],
                    severity(BACK_PRESSURE_FINDINGS[worst]),
                    "queues",
                    ALL_SCOPES,
                    f"{server} is under back pressure: {queue_text}; {meters}",
                    tuple(evidence),
                    f"{server} refuses {'all new mail' if worst == 'High' else 'mail from outside the organisation'}"
                    f" until it recovers: {'; '.join(hints)}. " + _CONFIRM.format(server=server),
                    "back-pressure",
                    max(count, 1),
                )
            )
            continue
        alone = not others or max(others) <= count // 10
        if count < SUBMISSION_BACKLOG or not (growing or count >= SUBMISSION_HIGH) or not alone:
            continue
        if state is not None:
            why = f"{server}: Exchange reports no resource under back pressure (AggregateUse {state.aggregate})"
            step = (
                "Not back pressure: the categorizer is not keeping up. Check the transport agents "
                f"(Get-TransportAgent), the domain controllers {server} uses, and Get-Queue {server}\\Submission | fl "
                "LastError."
            )
        else:
            reason = failed.get(server, "the back_pressure collector is disabled")
            why = f"{server}: the back pressure state could not be read ({reason[:160]})"
            step = _CONFIRM.format(server=server) + " Then check the transport agents and the domain controllers."
        evidence = [f"{server}: {count} message(s) in the Submission queue{', growing' if growing else ''}", why]
        if elsewhere:
            evidence.append(elsewhere)
        out.append(
            Finding(
                "submission_backlog",
                severity("submission_backlog"),
                "queues",
                ALL_SCOPES,
                f"{server}'s Submission queue is backing up: {count}{' and growing' if growing else ''}",
                tuple(evidence),
                step,
                "back-pressure",
                count,
            )
        )
    return out


def _unreachable(facts: Facts) -> dict[str, list[str]]:
    """Servers (upper case) whose polls failed because they do not answer: the failure texts."""
    out: dict[str, list[str]] = defaultdict(list)
    for collector, failed in sorted(facts.failures.items()):
        for target, message in sorted(failed.items()):
            if message.partition(": ")[0] in UNREACHABLE:
                out[target.upper()].append(f"{collector}: {message[:200]}")
    return out


def _targets(facts: Facts) -> dict[str, str]:
    """Every server name the facts mention (polled or failed), as ``{name: name}`` for primary_server."""
    names = {t for results in facts.results.values() for t in results}
    names |= {t for failed in facts.failures.values() for t in failed}
    return {n: n for n in names if n != "organization"}


def shadow_for_unreachable_server(facts: Facts) -> list[Finding]:
    """Trigger: a shadow redundancy queue holds messages for a server (its NextHopDomain is that server's
    FQDN) whose polls fail because it does not answer (connection or timeout). One finding per such
    server, naming it and the servers holding its shadow messages."""
    unreachable = _unreachable(facts)
    names = _targets(facts)
    held: dict[str, list[Any]] = defaultdict(list)
    for result in facts.all("queues"):
        for q in result.queues:
            if q.kind != "shadow" or not q.message_count or not q.next_hop_domain:
                continue
            primary = result.shadow_primaries.get(q.next_hop_domain) or primary_server(q.next_hop_domain, names)
            if primary is not None and primary.upper() != result.server.upper():
                held[primary].append(q)
    out = []
    for primary, queues in sorted(held.items()):
        failures = unreachable.get(primary.upper(), [])
        if not failures:
            continue
        total = sum(q.message_count for q in queues)
        holders = sorted({q.server for q in queues})
        who = holders[0] if len(holders) == 1 else f"{', '.join(holders[:-1])} and {holders[-1]}"
        evidence = [
            f"{q.server}: {q.message_count} message(s) in {q.identity} (shadow for {q.next_hop_domain}, {q.status})"
            for q in sorted(queues, key=lambda q: -q.message_count)
        ]
        evidence += [f"{primary} does not answer: {text}" for text in failures[:2]]
        out.append(
            Finding(
                "shadow_for_unreachable_server",
                severity("shadow_for_unreachable_server"),
                "queues",
                ("internal", "outbound"),
                f"{primary} is unreachable; {who} {'holds' if len(holders) == 1 else 'hold'} {total} shadow "
                f"message(s) for it",
                tuple(evidence),
                f"Bring {primary} back (power, network, the Microsoft Exchange Transport service). Its messages are "
                f"safe: {who} keep{'s' if len(holders) == 1 else ''} shadow copies and resubmit them once "
                "ShadowResubmitTimeSpan has passed (Get-TransportConfig, 3 hours by default); do not delete the "
                f"shadow queue. Get-Queue -Server {holders[0]} -Filter \"DeliveryType -eq 'ShadowRedundancy'\".",
                "shadow-redundancy-held-for-an-unreachable-server",
                total,
            )
        )
    return out


def _minutes(seconds: float) -> str:
    return f"{abs(seconds) / 60:.0f} minute(s) {'ahead of' if seconds > 0 else 'behind'}"


def server_clock_skew(facts: Facts) -> list[Finding]:
    """Trigger: a transport server's clock (the Date header of its answers) differs from the exporter's by
    more than 2 minutes. When every polled server (two or more) is off by about the same, the exporter's
    own clock is the one that is wrong."""
    skews = {r.server: r.clock_skew for r in facts.all("tracking") if r.clock_skew is not None}
    off = {s: v for s, v in skews.items() if abs(v) > CLOCK_SKEW_LIMIT}
    if not off:
        return []
    values = list(skews.values())
    if len(skews) >= 2 and len(off) == len(skews) and max(values) - min(values) <= 30 and min(values) * max(values) > 0:
        mean = sum(values) / len(values)
        return [
            Finding(
                "exporter_clock_skew",
                severity("exporter_clock_skew"),
                "monitoring",
                (),
                f"The exporter's clock is {_minutes(-mean)} every Exchange server's",
                tuple(f"{s}: {_minutes(v)} the exporter" for s, v in sorted(skews.items())),
                "Synchronise the exporter host's clock (NTP, chrony, or the container host); the servers agree with "
                "each other. Message tracking is read by each server's clock, so counting is unaffected, but "
                "Kerberos logons fail beyond 5 minutes.",
                "server-clock-skew",
                int(abs(mean)),
            )
        ]
    out = []
    for server, skew in sorted(off.items()):
        evidence = [f"{server}: {_minutes(skew)} the exporter (HTTP Date header of its remote PowerShell answers)"]
        others = {s: v for s, v in skews.items() if s != server}
        if others:
            evidence.append("other servers: " + ", ".join(f"{s} {v:+.0f} s" for s, v in sorted(others.items())))
        if abs(skew) > KERBEROS_SKEW:
            evidence.append("beyond Kerberos' 5-minute limit: Kerberos logons to and from it fail")
        out.append(
            Finding(
                "server_clock_skew",
                severity("server_clock_skew"),
                "health",
                (),
                f"{server}'s clock is {_minutes(skew)} the exporter's",
                tuple(evidence),
                f"On {server}: w32tm /query /status, then w32tm /resync /rediscover; a domain member syncs from its "
                "domain hierarchy (the PDC emulator syncs from an external source). Message tracking is read by "
                "its clock, so counting stays right; Kerberos and the DAG suffer first.",
                "server-clock-skew",
                int(abs(skew)),
            )
        )
    return out


RULES: tuple[Rule, ...] = (back_pressure, shadow_for_unreachable_server, server_clock_skew)
