"""Triage steps for the organisation's policies and the transport servers' own DNS.

- A transport rule that rejects, deletes, redirects, quarantines or moderates mail, enabled and
  enforced, changed shortly before mail started failing or stopped arriving: the first suspect.
- Email address policies next to the accepted domains, for recipients of our own domains rejected
  as unknown (``550 5.1.1``): which policy generates addresses in the domain, which changed.
- The DNS servers each transport server asks, next to queues retrying on DNS failures
  (``451 4.4.0``), and a server whose settings leave it no DNS server at all.

The functions here build findings and evidence; ``rules.py`` registers them (its rule functions
carry the triggers in their docstrings). Like ``hints``, this module imports only the model, the
facts and the severity table.
"""

from __future__ import annotations

from collections.abc import Iterable

from exporter.triage.facts import Facts
from exporter.triage.model import Finding
from exporter.triage.severity import severity

#: How long before now a rule change still counts as "shortly before" the failures seen now: the
#: tracking window and inbound-silence checks look back 15-30 minutes, a change within two hours of
#: them is the first thing an administrator checks.
RULE_CHANGE_WINDOW = 7200.0
#: An email address policy changed this recently is a suspect for 5.1.1 storms (as accepted domains).
POLICY_RECENT = 86400.0


def _ago(seconds: float) -> str:
    minutes = max(0, round(seconds / 60))
    return f"{minutes} minutes ago" if minutes < 120 else f"{minutes / 60:.0f} hours ago"


def _failures(facts: Facts) -> tuple[int, dict[str, int], float]:
    """FAIL recipients in this tracking window: total, by enhanced code, and the window in minutes."""
    by_code: dict[str, int] = {}
    for r in facts.all("tracking"):
        for (code, _category), n in r.window_failures.items():
            by_code[code] = by_code.get(code, 0) + n
    window = max((r.window_seconds for r in facts.all("tracking")), default=0.0) / 60
    return sum(by_code.values()), by_code, window


def transport_rule_findings(facts: Facts, silent: str) -> list[Finding]:
    """One finding per rule that acts on mail now (enabled, Enforce, a delivery-affecting action) and
    changed within RULE_CHANGE_WINDOW, while tracking shows failures or no mail arrives from outside
    (``silent``: the inbound-silence evidence, "" when mail arrives)."""
    failed, by_code, window = _failures(facts)
    if not failed and not silent:
        return []
    out = []
    for result in facts.all("transport_rules"):
        for rule in result.rules:
            if not rule.acts or rule.changed is None:
                continue
            age = facts.now - rule.changed.timestamp()
            if not -300 <= age <= RULE_CHANGE_WINDOW:  # a few minutes ahead: the DC's clock
                continue
            actions = ", ".join(rule.actions)
            evidence = [
                f"transport rule {rule.name} (priority {rule.priority}, {actions}) changed "
                f"{rule.changed:%Y-%m-%d %H:%M} UTC, {_ago(age)}; State Enabled, Mode Enforce",
            ]
            if failed:
                evidence.append(f"{failed} recipient(s) failed (FAIL) in the last {window:.0f} minutes of tracking log")
            if rule.reject_code and by_code.get(rule.reject_code):
                evidence.append(
                    f"{by_code[rule.reject_code]} of them with {rule.reject_code}, the code this rule rejects with"
                )
            if silent:
                evidence.append(silent)
            what = "failures" if failed else "silence from outside"
            out.append(
                Finding(
                    "transport_rule_changed",
                    severity("transport_rule_changed"),
                    "connectors",
                    ("inbound", "outbound", "internal"),
                    f"Transport rule {rule.name} ({actions}) changed {_ago(age)}, shortly before the {what}",
                    tuple(evidence),
                    f'Read what the rule does now: Get-TransportRule "{rule.name}" | fl Description,State,Mode,'
                    "WhenChanged; who changed it: Search-AdminAuditLog -Cmdlets Set-TransportRule,New-TransportRule "
                    f'-StartDate "{rule.changed:%Y-%m-%d %H:%M}Z". To stop it at once: Disable-TransportRule '
                    f'"{rule.name}" (or Set-TransportRule -Mode Audit). The message tracking log names the rule '
                    "that rejected a message: FAIL events with SourceContext Transport Rule Agent and "
                    "TRANSPORT.RULES.RejectMessage in RecipientStatus.",
                    "transport-rule-changed",
                    failed,
                )
            )
    return out


def address_policy_evidence(facts: Facts, domains: Iterable[str]) -> tuple[list[str], list[str]]:
    """For the domains whose recipients are rejected as unknown: evidence lines, and the names of the
    policies that changed within POLICY_RECENT (the suspects). Empty when the policies were not read."""
    results = facts.all("email_address_policies")
    if not results:
        failed = facts.failed("email_address_policies")
        if failed:
            return ["the email address policies could not be read: " + next(iter(failed.values()))[:160]], []
        return [], []
    policies = [p for r in results for p in r.policies]
    lines: list[str] = []
    recent: list[str] = []
    for domain in sorted(set(domains)):
        if not domain:
            continue
        making = [p for p in policies if p.generates(domain)]
        if not making:
            lines.append(f"{domain}: no email address policy generates addresses in it (only addresses set by hand)")
        for p in making:
            role = "primary" if p.primary_domain == domain else "secondary"
            applied = "" if p.applied else ", not applied yet (RecipientFilterApplied false)"
            lines.append(f"{domain}: email address policy {p.name} (priority {p.priority}) generates {role} "
                         f"addresses in it{applied}")  # fmt: skip
    for p in policies:
        if p.changed is not None and facts.now - p.changed.timestamp() < POLICY_RECENT:
            recent.append(p.name)
            shown = ", ".join(p.domains) or "no SMTP domain"
            when = f"{p.changed:%Y-%m-%d %H:%M} UTC, {_ago(facts.now - p.changed.timestamp())}"
            lines.append(f"email address policy {p.name} changed {when}: it now generates addresses in {shown}")
    return lines, recent


def dns_server_evidence(facts: Facts, servers: Iterable[str]) -> list[str]:
    """The DNS servers each of ``servers`` asks for lookups outside the organisation (or why it is unknown)."""
    by_server = {r.server.upper(): r for r in facts.all("transport_dns")}
    failed = facts.failed("transport_dns")
    # Set-SendConnector: UseExternalDNSServersEnabled makes the connector use the ExternalDNSServers list.
    listed = sorted({c.name for r in facts.all("send_connectors") for c in r.connectors if c.use_external_dns})
    out = []
    for server in sorted(set(servers)):
        r = by_server.get(server.upper())
        if r is None:
            why = failed.get(server, "")
            out.append(f"{server}: its DNS servers are unknown" + (f" ({why[:120]})" if why else " (not polled)"))
            continue
        resolvers = r.resolvers("external")
        source = "its network adapters" if resolvers.source == "adapter" else "ExternalDNSServers"
        if resolvers.problem:
            out.append(f"{server}: no DNS server for external lookups: {resolvers.problem}")
        else:
            out.append(f"{server} asks {', '.join(resolvers.servers)} (from {source}) for external lookups")
        if listed and resolvers.source == "adapter":
            servers = ", ".join(r.external.servers) or "none: the list is empty"
            out.append(f"{server}: send connectors {', '.join(listed)} use ExternalDNSServers instead ({servers})")
    return out


def dns_server_step(facts: Facts, servers: Iterable[str]) -> str:
    """The first thing to fix when a retrying server's settings leave it no DNS server, else ""."""
    wanted = {s.upper() for s in servers}
    broken = sorted(r.server for r in facts.all("transport_dns")
                    if r.server.upper() in wanted and r.resolvers("external").problem)  # fmt: skip
    if not broken:
        return ""
    return (f"{', '.join(broken)} {'has' if len(broken) == 1 else 'have'} no DNS server for external lookups "
            "(transport_dns_unconfigured): fix that first. ")  # fmt: skip


def transport_dns_findings(facts: Facts) -> list[Finding]:
    """A transport server whose DNS settings leave it no DNS server for external lookups."""
    out = []
    for r in sorted(facts.all("transport_dns"), key=lambda r: r.server):
        resolvers = r.resolvers("external")
        if not resolvers.problem:
            continue
        adapters = "; ".join(f"{a.name}: {', '.join(a.dns_servers) or 'no DNS server'}" for a in r.adapters)
        out.append(
            Finding(
                "transport_dns_unconfigured",
                severity("transport_dns_unconfigured"),
                "dns",
                ("outbound",),
                f"{r.server} has no DNS server for lookups outside the organisation",
                (resolvers.problem, f"network adapters: {adapters or 'none listed'}"),
                f"Point the Transport service at working DNS servers: Set-TransportService {r.server} "
                "-ExternalDNSAdapterEnabled $true -ExternalDNSAdapterGuid <an adapter's GUID, or "
                "00000000-0000-0000-0000-000000000000 for any> (Get-NetworkConnectionInfo lists them), or "
                "-ExternalDNSAdapterEnabled $false -ExternalDNSServers <IP>,<IP>; then restart MSExchangeTransport. "
                "Until then outbound mail retries with 451 4.4.0 DNS query failed.",
                "transport-dns-unconfigured",
            )
        )
    return out


def inbound_silent(facts: Facts) -> str:
    """The evidence that no mail arrives from outside (every server's recent log read, at least 5
    minutes of it, without an arrival from outside), or "" when mail arrives or it cannot be told."""
    results = facts.all("tracking")
    if not results or any(r.recent_seconds < 300 for r in results):
        return ""
    # Arrivals from outside, not any SMTP RECEIVE: internal submissions and hops between servers are
    # logged as RECEIVE over SMTP too, and would hide an inbound outage while internal mail flows.
    received = sum(r.recent_received_inbound + r.recent_flow.get("inbound", 0) for r in results)
    if received:
        return ""
    minutes = min(r.recent_seconds for r in results) / 60
    return f"no message arrived from outside the organisation on any server in the last {minutes:.0f} minutes"


def transport_rule_changed(facts: Facts) -> list[Finding]:
    """Trigger: a transport rule that rejects, deletes, redirects, quarantines or moderates mail, with
    State Enabled and Mode Enforce, changed (WhenChanged) within the last two hours while the tracking
    window shows failed recipients (FAIL) or no mail arrives from outside (as inbound_silence judges
    it). One finding per rule; the rejections with the rule's own RejectMessageEnhancedStatusCode are
    counted apart."""
    return transport_rule_findings(facts, inbound_silent(facts))


def transport_dns_unconfigured(facts: Facts) -> list[Finding]:
    """Trigger: a transport server whose DNS settings leave it no DNS server for lookups outside the
    organisation: ExternalDNSAdapterEnabled true with an ExternalDNSAdapterGuid that names none of its
    adapters (Get-NetworkConnectionInfo) or an adapter without DNS servers, or ExternalDNSAdapterEnabled
    false with an empty ExternalDNSServers."""
    return transport_dns_findings(facts)


RULES = (transport_rule_changed, transport_dns_unconfigured)
