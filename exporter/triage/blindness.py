"""Blind spots as findings: what the exporter could not see is said first, in plain words.

A server that cannot be polled is one finding (not one line per collector), naming the server, the
endpoint and one reason ("EX02: connection refused at https://ex02:443/PowerShell") and the checks it
blocks. A check that fails for another reason (an error record, output that cannot be parsed, a stale
poll, a resolver that does not answer) is one finding per collector. A ``check`` run that hit its
``--timeout`` says which polls did not finish. The verdicts (``report.verdicts``) use the same facts
so a scope the exporter cannot see is never called healthy.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from exporter.triage.facts import Facts, Poll
from exporter.triage.model import SCOPES, Finding
from exporter.triage.severity import severity

#: Failures to reach or use an Exchange endpoint (the server cannot be polled), as opposed to a
#: cmdlet that ran and failed.
ENDPOINT_REASONS = ("connection", "tls", "auth", "http_error", "wsman_fault", "session_limit", "timeout", "protocol")

#: The scopes each collector's results speak for: while it cannot be polled they are unknown.
COLLECTOR_SCOPES: dict[str, tuple[str, ...]] = {
    "discovery": SCOPES,
    "queues": ("outbound", "internal"),
    "back_pressure": SCOPES,  # a server under back pressure refuses mail from every direction
    "tracking": SCOPES,
    "receive_connectors": ("inbound", "outbound"),
    "send_connectors": ("outbound",),
    "accepted_domains": ("inbound", "internal"),
    "transport_rules": SCOPES,  # a rule can reject or divert mail in any direction
    "email_address_policies": ("internal",),
    "transport_dns": ("outbound",),
    "components": SCOPES,
    "database_copies": ("inbound", "internal"),
    "certificates": ("inbound", "outbound"),
    "service_health": SCOPES,
    "dns_domains": ("inbound", "outbound"),
    "dns_ips": ("outbound",),
    "smtp": ("inbound",),
    "mailflow_probe": ("inbound", "internal"),
}

#: What each collector checks, as an administrator names it.
CHECKS: dict[str, str] = {
    "discovery": "server discovery (Get-ExchangeServer)",
    "queues": "queues (Get-Queue)",
    "back_pressure": "back pressure (Get-ExchangeDiagnosticInfo)",
    "tracking": "message tracking (Get-MessageTrackingLog)",
    "receive_connectors": "receive connectors",
    "send_connectors": "send connectors",
    "accepted_domains": "accepted domains",
    "transport_rules": "transport rules (Get-TransportRule)",
    "email_address_policies": "email address policies (Get-EmailAddressPolicy)",
    "transport_dns": "the transport servers' DNS servers (Get-TransportService, Get-NetworkConnectionInfo)",
    "components": "component states (maintenance mode)",
    "database_copies": "database copies",
    "certificates": "certificates",
    "service_health": "required services (Test-ServiceHealth)",
    "dns_domains": "DNS of the accepted domains (MX, SPF, DMARC)",
    "dns_ips": "outbound IPs (PTR, blocklists)",
    "smtp": "SMTP probes of the MX hosts",
    "mailflow_probe": "synthetic mail-flow probes (Test-Mailflow, a message through the MX)",
}

#: The rules below: a scope they name is unknown, not failing (report.verdicts).
BLIND_RULES = ("server_unreachable", "collector_failed", "check_timeout")

_RUNBOOK = "exchange-server-unreachable"

# The next step for a server that cannot be polled, by the start of the plain reason, then by reason label.
_BY_TEXT = (
    ("connection refused", "Nothing listens on the port: is {server} up, and IIS (W3SVC) running on it? From the "
     "exporter host: Test-NetConnection {host} -Port {port}; a firewall that rejects the port looks the same."),
    ("host name does not resolve", "The name in exchange.servers (host) does not resolve from the exporter host: fix "
     "the name or the DNS the exporter uses (Resolve-DnsName {host})."),
    ("connection timed out", "Nothing answers the connect: {server} is down or a firewall drops port {port}. From "
     "the exporter host: Test-NetConnection {host} -Port {port}."),
    ("host unreachable", "No route to {host}: the server is down or the network path is broken."),
    ("network unreachable", "The exporter host has no route to {host}'s network."),
    ("no answer", "{server} accepts the connection but does not answer: IIS or the PowerShell application pool is "
     "hung or the server is overloaded. Recycle MSExchangePowerShellAppPool on {server}, then read its Application "
     "log; check CPU, memory and disk."),
    ("connection reset", "{server} closed the connection: IIS or the PowerShell application pool restarted or "
     "crashed (Application log), or a proxy or firewall in between cuts it."),
    ("connection closed", "{server} closed the connection: IIS or the PowerShell application pool restarted or "
     "crashed (Application log), or a proxy or firewall in between cuts it."),
)  # fmt: skip
_BY_REASON = {
    "tls": "The certificate of the IIS site on {server}: is it expired, is {host} one of its names, does ca_bundle "
    "hold its issuer? With tls: true the port must be the HTTPS one (443).",
    "auth": "The monitoring account: its password (password_file), lockout or expiry, RemotePowerShellEnabled "
    "(Get-User <account> | fl RemotePowerShellEnabled); with Kerberos the SPN and the clocks. The exporter waits "
    "before retrying so it cannot lock the account out.",
    "http_error": "IIS on {server} answered with an error: the PowerShell virtual directory "
    "(Get-PowerShellVirtualDirectory -Server {server}) and MSExchangePowerShellAppPool (recycle it).",
    "wsman_fault": "The URL must be /PowerShell on IIS (not WinRM's 5985 /wsman); read the fault text and the "
    "server's Application log.",
    "session_limit": "The account's 18 PowerShell sessions on {server} (PowerShellMaxConcurrency) are in use: other "
    "tools or scripts sharing the account; give the exporter its own account.",
    "timeout": "{server} does not answer in time: IIS or the PowerShell application pool is hung or the server is "
    "overloaded. Recycle MSExchangePowerShellAppPool on {server}; check CPU, memory and disk.",
    "protocol": "An unexpected answer from the PowerShell endpoint: run the exporter with --log-level debug and "
    "report it.",
}
_COLLECTOR_STEPS = {
    "cmdlet_error": "The cmdlet ran and wrote an error record (above): a server Exchange does not know, or a service "
    "the cmdlet needs is stopped (the MSExchangeTransport service for Get-Queue).",
    "parse": "The output could not be understood: report it with the text above; the other checks are unaffected.",
    "too_large": "The answer was larger than the exporter accepts for one call (max_response_bytes, max_objects, "
    "max_object_bytes): raise the limit named above under exchange.defaults or for that server if the "
    "organisation is that large; otherwise something between the exporter and Exchange inflates the answer.",
    "dns": "Every lookup failed at the resolver: check the resolvers the exporter uses (dns.resolvers or "
    "/etc/resolv.conf) and outbound port 53 from the exporter host.",
    "stale": "The exporter has not polled it for several intervals: it is overloaded (scheduler.max_workers) or its "
    "scheduler stopped; read its log and /-/healthy.",
    "config": "A target the configuration no longer has (often just after discovery changed): it clears itself.",
}
_OTHER_STEP = "An internal error: run the exporter with --log-level debug to log its stack trace, and report it."


def _host_port(endpoint: str) -> tuple[str, str]:
    rest = endpoint.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = rest.rpartition(":")
    return (host or rest), (port or "443")


def _next_step(poll: Poll, server: str) -> str:
    host, port = _host_port(poll.endpoint) if poll.endpoint else (server, "443")
    template = next((step for prefix, step in _BY_TEXT if poll.message.startswith(prefix)), None)
    if template is None:
        template = _BY_REASON.get(poll.reason, _BY_REASON["protocol"])
    return template.format(server=server, host=host, port=port)


def _scopes(collectors: Iterable[str]) -> tuple[str, ...]:
    wanted = {s for c in collectors for s in COLLECTOR_SCOPES.get(c, SCOPES)}
    return tuple(s for s in SCOPES if s in wanted)


def _checks(collectors: Iterable[str]) -> str:
    order = list(CHECKS)
    ranked = sorted(set(collectors), key=lambda c: (order.index(c) if c in order else len(order), c))
    return ", ".join(CHECKS.get(c, c) for c in ranked)


def _ago(facts: Facts, polls: list[Poll]) -> str:
    latest = max((p.finished for p in polls), default=0.0)
    return f"last tried {max(0.0, facts.now - latest):.0f}s ago" if latest else ""


def server_unreachable(facts: Facts) -> list[Finding]:
    """Trigger: polls of an Exchange server failed because its endpoint could not be used (connection
    refused or timed out, name not resolved, TLS, authentication, HTTP or WSMan error, session limit, no
    answer): one finding per server, critical when none of its polls succeeded (it cannot be polled at
    all), warning when some did; with the endpoint, one plain reason and the checks it blocks."""
    groups: dict[str, list[Poll]] = defaultdict(list)
    names: dict[str, str] = {}
    for poll in facts.failed_polls():
        if poll.reason in ENDPOINT_REASONS:
            name = poll.server or poll.target
            names.setdefault(name.upper(), name)
            groups[name.upper()].append(poll)
    out = []
    for key, polls in sorted(groups.items()):
        server = names[key]
        answered = [p for p in facts.polls.values() if p.ok and p.target.upper() == key]
        main = _main_failure(polls)
        collectors = [p.collector for p in polls]
        evidence = [f"not checked: {_checks(collectors)}"]
        through = sorted({p.target for p in polls if p.target.upper() != key})
        if through:
            evidence.append(f"also not checked, polled through {server}: {', '.join(through)}")
        others = sorted({f"{p.collector}: {p.why()}" for p in polls if p.why() != main.why()})
        evidence += others[:3]
        if answered:
            evidence.append(f"these answered: {_checks(p.collector for p in answered)}")
        ago = _ago(facts, polls)
        if ago:
            evidence.append(ago)
        title = f"{server}: {main.why()}"
        if answered:
            title += f" ({len(set(collectors))} check(s) failed)"
        out.append(
            Finding(
                "server_unreachable",
                severity("server_partly_unreachable" if answered else "server_unreachable"),
                "visibility",
                _scopes(collectors),
                title,
                tuple(evidence),
                _next_step(main, server),
                _RUNBOOK,
                len(polls),
            )
        )
    return out


def _main_failure(polls: list[Poll]) -> Poll:
    """The failure most polls of the server share (the first reason of ENDPOINT_REASONS on a tie)."""
    counts = Counter((p.reason, p.message, p.endpoint) for p in polls)
    best = max(counts, key=lambda k: (counts[k], -ENDPOINT_REASONS.index(k[0])))
    return next(p for p in polls if (p.reason, p.message, p.endpoint) == best)


def collector_failed(facts: Facts) -> list[Finding]:
    """Trigger: a poll failed for another reason than its endpoint (an error record, output that could
    not be parsed, every DNS lookup failing at the resolver, a stale poll, an internal error); one
    finding per collector. A missing RBAC role (reason permission) is missing_role's finding."""
    groups: dict[str, list[Poll]] = defaultdict(list)
    for poll in facts.failed_polls():
        if poll.reason not in ENDPOINT_REASONS and poll.reason not in ("permission", "shutdown"):
            groups[poll.collector].append(poll)
    out = []
    for collector, polls in sorted(groups.items()):
        targets = [p.target for p in polls]
        check = CHECKS.get(collector, collector)
        title = f"Could not check {check} on {targets[0]}: {polls[0].why()}"
        if len(polls) > 1:
            title = f"Could not check {check} on {len(polls)} targets"
        reasons = [r for r, _ in Counter(p.reason for p in polls).most_common()]
        out.append(
            Finding(
                "collector_failed",
                severity("collector_failed"),
                "monitoring",
                _scopes([collector]),
                title,
                tuple(f"{p.target}: {p.why()}" for p in polls[:8]),
                " ".join(_COLLECTOR_STEPS.get(r, _OTHER_STEP) for r in reasons[:2]),
                "collector-failures",
                len(polls),
            )
        )
    return out


def check_timeout(facts: Facts) -> list[Finding]:
    """Trigger: ``check --timeout`` expired before every poll finished: which polls did not finish, by
    target (a server that does not answer holds all of its polls)."""
    if facts.timeout is None or not facts.pending:
        return []
    by_target: dict[str, list[str]] = defaultdict(list)
    for collector, target in facts.pending:
        by_target[target].append(collector)
    evidence = tuple(f"{target}: {_checks(cs)}" for target, cs in sorted(by_target.items()))
    return [
        Finding(
            "check_timeout",
            severity("check_timeout"),
            "visibility",
            _scopes(c for c, _ in facts.pending),
            f"check stopped after --timeout {facts.timeout:g}s: {len(facts.pending)} poll(s) did not finish",
            evidence,
            "The targets above did not answer in time. A server that hangs holds its polls for call_timeout "
            "(exchange.defaults.call_timeout, 60 s by default): look at it first; otherwise run check with a "
            "--timeout longer than call_timeout.",
            "check-timed-out",
            len(facts.pending),
        )
    ]


#: Every blindness rule, in the order they are documented (docs/triage.md).
RULES = (server_unreachable, collector_failed, check_timeout)
