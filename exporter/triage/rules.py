"""Triage rules: each a small function from the facts to findings, with its trigger in its docstring.

Rules correlate across collectors where an expert would: a queue retrying on DNS errors while the
exporter's own resolver fails points at DNS, not at the remote domain; a queue refused by remote
hosts while an outbound IP is blocklisted points at the blocklisting; inbound silence with a broken
MX points at DNS, not at Exchange; internal 5.1.1 bounces right after an accepted-domain change
point at the recipient policy.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from exporter.exchange.lasterror import CATEGORY_HINTS
from exporter.exchange.lasterror_hints import hint_for
from exporter.exchange.permissions import parse_missing
from exporter.triage import hints, rules_policy, rules_probe, rules_transport
from exporter.triage.facts import Facts
from exporter.triage.model import Finding
from exporter.triage.severity import category_fault, severity

Rule = Callable[[Facts], list[Finding]]
# back pressure, shadow redundancy, server clocks; transport rules, the transport servers' DNS; the synthetic probe
RULES: list[Rule] = [*rules_transport.RULES, *rules_policy.RULES, *rules_probe.RULES]
CONNECTION = ("connection_refused", "connection_timeout", "connection_failed")
TRANSPORT_COMPONENTS = ("ServerWideOffline", "HubTransport", "FrontendTransport")
RECENT = 86400.0  # a configuration change this recent is a suspect


def rule(func: Rule) -> Rule:
    """Register a rule (the order of registration does not matter: findings are sorted)."""
    RULES.append(func)
    return func


def _queues(facts: Facts) -> Iterable[Any]:
    for result in facts.all("queues"):
        yield from result.queues


def _retrying(facts: Facts, categories: Iterable[str]) -> list[Any]:
    wanted = set(categories)
    return [
        q
        for q in _queues(facts)
        if q.kind == "delivery" and q.last_error is not None and q.last_error.category in wanted and q.message_count
    ]


def _queue_evidence(queues: list[Any]) -> tuple[str, ...]:
    lines = []
    for q in sorted(queues, key=lambda q: -q.message_count)[:8]:
        err = q.last_error.response if q.last_error else ""
        lines.append(
            f"{q.server}: {q.message_count} message(s) to {q.next_hop_domain or '?'} ({q.status}, "
            f"retry {q.retry_count}): {err[:160]}"
        )
    return tuple(lines)


def _resolver_failures(facts: Facts) -> list[str]:
    out = []
    for result in facts.all("dns_domains"):
        if result.mx.answer.failed:
            out.append(f"MX {result.domain}: {result.mx.answer.status}")
    out += [f"{target}: {msg}" for target, msg in facts.failed("dns_domains").items() if msg.startswith("dns:")]
    return out


def _smart_host(facts: Facts, queue: Any) -> str | None:
    """The organisation's own smart host a delivery queue sends to, or None for a remote next hop.

    A queue to a smart host has DeliveryType ``SmartHostConnectorDelivery``, or a NextHopDomain that is
    one of the send connectors' SmartHosts (``[192.0.2.5]`` or a name). Its name: that smart host, else
    the host the LastError names, else the NextHopDomain."""
    hop = queue.next_hop_domain.strip().strip("[]").lower()
    hosts = [h for r in facts.all("send_connectors") for c in r.connectors for h in c.smart_hosts]
    for host in hosts:
        if host.strip().strip("[]").lower() == hop and hop:
            return host.strip()
    if queue.delivery_type != "SmartHostConnectorDelivery":
        return None
    err = queue.last_error
    return (err.fqdn or err.ip if err else None) or queue.next_hop_domain or "(unnamed)"


def _listed_ips(facts: Facts) -> list[str]:
    return [
        f"{r.ip} is listed on {b.zone} ({', '.join(b.codes)}) {b.reason_text}".strip()
        for r in facts.all("dns_ips")
        for b in r.dnsbl
        if b.verdict == "listed"
    ]


@rule
def outbound_dns_failure(facts: Facts) -> list[Finding]:
    """Trigger: delivery queues with messages whose LastError is ``dns_failure`` (451 4.4.0).
    Correlated with the exporter's own DNS checks failing at the resolver; names the DNS servers each
    retrying server asks for lookups outside the organisation (transport_dns), or says they are
    unknown or that its settings leave it none."""
    queues = _retrying(facts, ["dns_failure"])
    if not queues:
        return []
    messages = sum(q.message_count for q in queues)
    evidence = _queue_evidence(queues)
    step = CATEGORY_HINTS["dns_failure"]
    if facts.of("transport_dns") or facts.failed("transport_dns"):
        evidence += tuple(rules_policy.dns_server_evidence(facts, {q.server for q in queues}))
        step = rules_policy.dns_server_step(facts, {q.server for q in queues}) + step
    resolver = _resolver_failures(facts)
    if resolver:
        evidence += tuple(f"the exporter's resolver fails too: {r}" for r in resolver[:3])
        step = (
            "DNS resolution itself is failing, not one remote domain: check the DNS servers the transport servers use. "
            + step
        )
    return [
        Finding(
            "outbound_dns_failure",
            severity("outbound_dns_failure", messages),
            "queues",
            ("outbound",),
            f"Outbound mail is retrying on DNS failures ({messages} messages)",
            evidence,
            step,
            "dns_failure",
            messages,
        )
    ]


@rule
def outbound_connection_failure(facts: Facts) -> list[Finding]:
    """Trigger: delivery queues retrying with connection_refused/timeout/failed (421 4.2.1, socket
    errors). Correlated with DNSBL listings of the outbound IPs. The hint follows the Winsock code
    (10061 refused, 10060 timed out, 10051/10065 unreachable) and names the organisation's own smart
    host when the queues deliver to one."""
    queues = _retrying(facts, CONNECTION)
    if not queues:
        return []
    messages = sum(q.message_count for q in queues)
    evidence = _queue_evidence(queues)
    smart = {q.identity: _smart_host(facts, q) for q in queues}
    top = max(queues, key=lambda q: q.message_count)
    step = hint_for(top.last_error, smart_host=smart[top.identity])
    own = ", ".join(sorted({h for h in smart.values() if h})[:3])
    who = f"Your smart host {own} does" if all(smart.values()) else "Remote hosts do"
    if own and not all(smart.values()):
        who = f"Remote hosts and your smart host {own} do"
    title = f"{who} not accept connections ({messages} messages retrying)"
    # A blocklisting explains remote MX hosts refusing us, not our own smart host.
    listed = _listed_ips(facts) if not all(smart.values()) else []
    level = severity("outbound_connection_failure", messages)
    if listed:
        evidence += tuple(listed)
        step = (
            "An outbound IP is blocklisted: remote hosts refuse it. Find the cause (open relay, compromised "
            "mailbox), then request delisting. " + step
        )
        level = severity("blocklisted")  # the listing explains the refusals: its severity
    return [
        Finding(
            "outbound_connection_failure",
            level,
            "queues",
            ("outbound",),
            title,
            evidence,
            step,
            top.last_error.category if top.last_error else "connection_failed",
            messages,
        )
    ]


@rule
def queues_retrying_other(facts: Facts) -> list[Finding]:
    """Trigger: delivery queues retrying with any other LastError category (TLS, auth, rejected,
    throttled, blocklisted...): one finding per category, with that category's runbook hint refined
    by its largest queue's text (the PRX code of a proxy failure, a Microsoft 365 block, the cause of
    an expiry)."""
    handled = {"dns_failure", "recipient_unknown", *CONNECTION}
    by_category: dict[str, list[Any]] = defaultdict(list)
    for q in _queues(facts):
        if (
            q.kind == "delivery"
            and q.last_error is not None
            and q.message_count
            and q.last_error.category not in handled
        ):
            by_category[q.last_error.category].append(q)
    out = []
    for category, queues in sorted(by_category.items()):
        messages = sum(q.message_count for q in queues)
        top = max(queues, key=lambda q: q.message_count)
        scope = "internal" if all(q.next_hop_category == "Internal" for q in queues) else "outbound"
        out.append(
            Finding(
                f"queue_{category}",
                category_fault(category).severity_at(messages),
                "queues",
                (scope,),
                f"Queues retrying with {category} ({messages} messages)",
                _queue_evidence(queues),
                hint_for(top.last_error, smart_host=_smart_host(facts, top)),
                category,
                messages,
            )
        )
    return out


@rule
def internal_recipient_unknown(facts: Facts) -> list[Finding]:
    """Trigger: internal queues whose LastError is ``recipient_unknown``, or 10+ recipients in the
    organisation's accepted domains rejected as unknown in the last tracking window (5.1.1, 5.1.10,
    5.4.1 Access denied...; counted per code and per recipient domain, recipients of other domains
    apart). Correlated with accepted domains changed in the last day: the one the rejected
    recipients are in is named in the title and the next step; else with email address policies
    changed in the last day. For each rejected domain, which policies generate addresses in it (or
    that none does)."""
    return hints.recipient_unknown_findings(facts, RECENT, CATEGORY_HINTS["recipient_unknown"])


@rule
def poison_and_unreachable(facts: Facts) -> list[Finding]:
    """Trigger: messages in a Poison or Unreachable queue."""
    out = []
    for kind, title, step, anchor in (
        (
            "poison",
            "Poison messages",
            "A message crashed the transport service: Get-Message -Queue <server>\\Poison, export it for analysis; "
            "suspect a transport agent after an update.",
            "mailflowpoisonqueuenotempty",
        ),
        (
            "unreachable",
            "Messages with no route (Unreachable queue)",
            "Get-Queue <server>\\Unreachable | fl LastError: a deleted send connector, accepted domain or database.",
            "mailflowunreachablequeuenotempty",
        ),
    ):
        queues = [q for q in _queues(facts) if q.kind == kind and q.message_count]
        if queues:
            n = sum(q.message_count for q in queues)
            evidence = tuple(f"{q.server}: {q.message_count} message(s) in {q.identity}" for q in queues)
            out.append(
                Finding(
                    f"{kind}_messages",
                    severity(f"{kind}_messages", n),
                    "queues",
                    ("internal", "outbound"),
                    f"{title} ({n})",
                    evidence,
                    step,
                    anchor,
                    n,
                )
            )
    return out


@rule
def stuck_messages(facts: Facts) -> list[Finding]:
    """Trigger: messages received more than ``stuck_after`` ago with no delivery or send since."""
    stuck = [(r.server, r.stuck) for r in facts.all("tracking") if r.stuck]
    if not stuck:
        return []
    total = sum(n for _s, n in stuck)
    return [
        Finding(
            "stuck_messages",
            severity("stuck_messages", max(n for _s, n in stuck)),
            "tracking",
            ("internal", "outbound"),
            f"{total} message(s) received but never delivered or sent",
            tuple(f"{s}: {n} stuck" for s, n in stuck),
            "Get-MessageTrackingLog -Server <server> -EventId RECEIVE -Start (Get-Date).AddHours(-1), then follow "
            "one MessageId: the last event says where it stopped.",
            "stuck-messages",
            total,
        )
    ]


@rule
def inbound_dns_and_smtp(facts: Facts) -> list[Finding]:
    """Trigger: a checked domain without MX, with an unresolvable MX host, MX drift, or an MX host
    whose SMTP probe fails. Correlated with inbound silence (no arrival from outside the organisation
    in the recent tracking log of any server; internal RECEIVEs do not count): then the cause is DNS
    or the path to Exchange, not Exchange itself."""
    out = []
    silent = rules_policy.inbound_silent(facts)
    for r in facts.all("dns_domains"):
        problems = []
        if not r.mx.answer.failed:
            if r.mx.records == 0 and not r.mx.null_mx:
                problems.append(f"{r.domain} has no MX record")
            problems += [
                f"MX host {h.host} of {r.domain} does not resolve ({h.status})"
                for h in r.mx.hosts
                if not h.resolves and h.status in ("nxdomain", "nodata")
            ]
            if r.mx.expected_match is False:
                problems.append(f"{r.domain} MX is {', '.join(h.host for h in r.mx.hosts)}, not the expected set")
        if "MX" in r.drift and r.drift["MX"].drifted:
            problems.append(
                f"{r.domain} MX changed from {', '.join(r.drift['MX'].baseline) or 'none'} to "
                f"{', '.join(r.drift['MX'].current) or 'none'}"
            )
        if problems:
            evidence = tuple(problems) + ((silent,) if silent else ())
            step = (
                "Inbound mail is silent and the MX is wrong: the cause is DNS, not Exchange. " if silent else ""
            ) + "Fix the MX records at the DNS provider (or update dns.expect if the change was planned)."
            out.append(
                Finding(
                    "inbound_mx",
                    severity("inbound_mx"),
                    "dns",
                    ("inbound",),
                    f"Inbound mail for {r.domain} is misrouted by DNS",
                    evidence,
                    step,
                    "mx-missing-or-drifted",
                    100,
                )
            )
    for host, p in sorted(facts.of("smtp").items()):
        if not p.success:
            evidence = (f"{host} ({p.address}:{p.port}) failed at {p.error}: {p.detail[:160]}",) + (
                (silent,) if silent else ()
            )
            out.append(
                Finding(
                    "inbound_smtp_probe",
                    severity("inbound_smtp_probe"),
                    "connectors",
                    ("inbound",),
                    f"MX host {host} does not answer SMTP",
                    evidence,
                    "Check the firewall/NAT to the frontend, the filtering service in front, and the Default "
                    "Frontend receive connector (Get-ReceiveConnector *Frontend* | fl Bindings,Enabled).",
                    "smtp-probe-failing",
                    50,
                )
            )
        elif p.starttls_offered is False:
            out.append(
                Finding(
                    "inbound_starttls",
                    severity("inbound_starttls"),
                    "connectors",
                    ("inbound",),
                    f"MX host {host} does not offer STARTTLS",
                    (f"EHLO from {host} lists no STARTTLS",),
                    "Bind an SMTP certificate to the frontend connector (Enable-ExchangeCertificate -Services "
                    "SMTP; TlsCertificateName).",
                    "smtp-probe-failing",
                )
            )
    return out


@rule
def inbound_silence(facts: Facts) -> list[Finding]:
    """Trigger: no arrival from outside the organisation in the recent tracking log (at least 5 and up
    to 15 minutes of it, every server read) while at least 20 internal and outbound messages were
    handed on in it, and no MX or SMTP-probe problem explains it (inbound_dns_and_smtp names that
    cause instead)."""
    silent = rules_policy.inbound_silent(facts)
    if not silent:
        return []
    if facts.failed("tracking"):
        return []  # a server whose log could not be read may be the one receiving from outside
    flowing = sum(r.recent_flow.get("internal", 0) + r.recent_flow.get("outbound", 0) for r in facts.all("tracking"))
    if flowing < 20 or any(f.rule in ("inbound_mx", "inbound_smtp_probe") for f in inbound_dns_and_smtp(facts)):
        return []
    return [
        Finding(
            "inbound_silence",
            severity("inbound_silence"),
            "tracking",
            ("inbound",),
            "No mail arrives from outside the organisation",
            (silent, f"{flowing} internal and outbound messages were delivered or sent out meanwhile"),
            "Exchange delivers internal mail, so the path in is broken: check the firewall/NAT rule for port 25, "
            "the filtering service or Edge server in front (its queue to you), the Default Frontend receive "
            "connector (Get-ReceiveConnector *Frontend* | fl Bindings,Enabled,PermissionGroups) and "
            "FrontendTransport's component state.",
            "mailflowinboundmailstopped",
            80,
        )
    ]


@rule
def transport_components(facts: Facts) -> list[Finding]:
    """Trigger: HubTransport, FrontendTransport or ServerWideOffline not Active on a server."""
    out = []
    for r in facts.all("components"):
        down = [c for c in r.components if c.component in TRANSPORT_COMPONENTS and c.state != "Active"]
        if down:
            who = {k: v for c in down for k, v in c.requesters.items() if v != "Active"}
            evidence = tuple(f"{c.server}: {c.component} is {c.state}" for c in down) + tuple(
                f"set {state} by requester {req}" for req, state in sorted(who.items())
            )
            out.append(
                Finding(
                    "transport_component_inactive",
                    severity("transport_component_inactive"),
                    "health",
                    ("inbound", "outbound", "internal"),
                    f"{r.server} is in maintenance mode: it takes no new mail",
                    evidence,
                    f"If the maintenance is over: Set-ServerComponentState {r.server} -Component HubTransport "
                    f"-State Active -Requester {next(iter(who), 'Maintenance')} (and ServerWideOffline).",
                    "transport-component-inactive",
                    40,
                )
            )
    return out


@rule
def databases(facts: Facts) -> list[Finding]:
    """Trigger: a database with no Mounted copy (critical), or a copy neither Mounted nor Healthy."""
    copies = [c for r in facts.all("database_copies") for c in r.copies]
    out = []
    by_db: dict[str, list[Any]] = defaultdict(list)
    for c in copies:
        by_db[c.database].append(c)
    for db, cs in sorted(by_db.items()):
        if not any(c.status == "Mounted" for c in cs):
            out.append(
                Finding(
                    "database_not_mounted",
                    severity("database_not_mounted"),
                    "health",
                    ("internal", "inbound"),
                    f"Database {db} is not mounted",
                    tuple(f"{c.server}: {c.status}" for c in cs),
                    f"Mail to mailboxes in {db} queues until it mounts: Get-MailboxDatabaseCopyStatus {db}\\* | fl "
                    f"Status,ErrorMessage; check disk space first, then Mount-Database {db}.",
                    "database-copy-not-healthy",
                    30,
                )
            )
        for c in cs:
            if c.status not in ("Mounted", "Healthy", "Dismounted"):
                out.append(
                    Finding(
                        "database_copy_unhealthy",
                        severity("database_copy_unhealthy"),
                        "health",
                        ("internal",),
                        f"Copy of {db} on {c.server} is {c.status}",
                        (f"copy queue {c.copy_queue_length}, replay queue {c.replay_queue_length}",),
                        "Get-MailboxDatabaseCopyStatus | fl Status,ErrorMessage; Resume-MailboxDatabaseCopy or reseed.",
                        "database-copy-not-healthy",
                    )
                )
    return out


@rule
def certificates(facts: Facts) -> list[Finding]:
    """Trigger: a certificate bound to SMTP or IIS that expired (critical) or expires within 30 days
    (warning), or one whose services are unknown (only its RawData arrived) on the same terms (the
    title says "services unknown"), as MailflowCertificateExpiring fires for both. One bound to nothing
    (Services None) or only to IMAP/POP is no finding."""
    return hints.certificate_findings(facts)


@rule
def services(facts: Facts) -> list[Finding]:
    """Trigger: Test-ServiceHealth reports a required service not running."""
    out = []
    for r in facts.all("service_health"):
        for role in r.roles:
            if not role.required_running:
                out.append(
                    Finding(
                        "service_stopped",
                        severity("service_stopped"),
                        "health",
                        ("inbound", "outbound", "internal"),
                        f"{r.server}: required {role.role} services are stopped",
                        tuple(f"{s} is not running" for s in role.not_running),
                        f"Start-Service {' '.join(role.not_running) or '<service>'} on {r.server}, then read the "
                        f"Application event log for why it stopped (often disk space / back pressure).",
                        "required-services-stopped",
                        35,
                    )
                )
    return out


# Why a relay right is unverified (receive_connectors.UNVERIFIED) -> (evidence, what to do).
_UNVERIFIED_RELAY = {
    "cmdlet_unavailable": (
        "Get-ADPermission not available to the account (RBAC)",
        "Give the monitoring account the View-Only Configuration role, which holds Get-ADPermission (README)",
    ),
    "check_disabled": (
        "the check is switched off (check_ad_permissions: false)",
        "Set collectors.receive_connectors.check_ad_permissions: true",
    ),
    "no_identity": (
        "Get-ReceiveConnector gave no DistinguishedName or Guid to ask Get-ADPermission with",
        "Read the exporter log",
    ),
    "call_failed": ("the Get-ADPermission call failed (an error, not a missing role)", "Read the exporter log"),
}


@rule
def open_relays(facts: Facts) -> list[Finding]:
    """Trigger: a receive connector at open-relay risk, an accepted domain ``*`` or ``*.<public suffix>``
    (such as ``*.com``) of a relay type (critical, titled with the domain), or relay rights that could
    not be read (info)."""
    out = []
    for r in facts.all("receive_connectors"):
        for name, risks in sorted(r.risks.items()):
            real = [k for k, v in risks.items() if v and k != "anonymous_relay_unverified"]
            if real:
                out.append(
                    Finding(
                        "open_relay",
                        severity("open_relay"),
                        "connectors",
                        ("outbound",),
                        f"Receive connector {r.server}\\{name} is an open relay",
                        tuple(
                            f"reason: {k}; {r.untrusted.get(name, 0):.3g} untrusted addresses may connect" for k in real
                        ),
                        "Narrow RemoteIPRanges to the hosts that must relay, or remove the Accept-Any-Recipient "
                        "grant; then check the outbound IPs against blocklists.",
                        "open-relay-risk",
                        60,
                    )
                )
            elif risks.get("anonymous_relay_unverified"):
                why, fix = _UNVERIFIED_RELAY.get(r.unverified.get(name, ""), _UNVERIFIED_RELAY["call_failed"])
                out.append(
                    Finding(
                        "relay_unverified",
                        severity("relay_unverified"),
                        "connectors",
                        ("outbound",),
                        f"Relay rights of {r.server}\\{name} could not be checked",
                        (f"anonymous, reachable from untrusted networks; {why}",),
                        f'{fix} or check once by hand: Get-ReceiveConnector "{r.server}\\{name}" | '
                        'Get-ADPermission -User "NT AUTHORITY\\ANONYMOUS LOGON".',
                        "open-relay-risk",
                    )
                )
    for r in facts.all("accepted_domains"):
        for d in r.domains:
            if d.relays_everything:
                out.append(
                    Finding(
                        "accepted_domain_relay",
                        severity("accepted_domain_relay"),
                        "connectors",
                        ("outbound",),
                        f"Accepted domain {d.domain} makes Exchange relay mail for {d.relay_scope}",
                        (
                            f"accepted domain {d.domain} is of type {d.domain_type}: Exchange accepts mail for "
                            f"{d.relay_scope} from anyone who can reach it and relays it on",
                        ),
                        f'Remove it (Remove-AcceptedDomain "{d.name or d.domain}") and add the domains you really '
                        "relay for one by one, unless a smart host in front that filters recipients is the only way "
                        "in.",
                        "open-relay-risk",
                        60,
                    )
                )
    return out


@rule
def connector_drift(facts: Facts) -> list[Finding]:
    """Trigger: a connector or transport rule setting differs from the configured expectation."""
    items = [("send connector", d, "") for r in facts.all("send_connectors") for d in r.drift if d.drifted]
    items += [("receive connector", d, r.server + "\\") for r in facts.all("receive_connectors") for d in r.drift
              if d.drifted]  # fmt: skip
    items += [("transport rule", d, "") for r in facts.all("transport_rules") for d in r.drift if d.drifted]
    if not items:
        return []
    evidence = tuple(f"{kind} {srv}{d.connector}: {d.setting} differs" for kind, d, srv in items)
    kinds = {k for k, _d, _s in items}
    scopes = ("outbound",) if kinds == {"send connector"} else ("outbound", "inbound")
    what = "Transport rules differ" if kinds == {"transport rule"} else "Connectors differ"
    if len(kinds) > 1 and "transport rule" in kinds:
        what = "Connectors and transport rules differ"
    return [
        Finding(
            "connector_drift",
            severity("connector_drift"),
            "connectors",
            scopes,
            f"{what} from their expected configuration",
            evidence,
            "Compare with Get-SendConnector / Get-ReceiveConnector / Get-TransportRule | fl and the admin audit log "
            "(Search-AdminAuditLog).",
            "connector-drift",
            len(items),
        )
    ]


@rule
def outbound_reputation(facts: Facts) -> list[Finding]:
    """Trigger: SPF not passing for an outbound IP, SPF invalid/over the limits, PTR missing or
    mismatched, DMARC missing, or an outbound IP blocklisted."""
    out = []
    listed = _listed_ips(facts)
    if listed:
        out.append(
            Finding(
                "blocklisted",
                severity("blocklisted"),
                "dns",
                ("outbound",),
                "An outbound IP is blocklisted",
                tuple(listed),
                "Find why (open relay, compromised mailbox sending spam), fix it, then request delisting at the list.",
                "outbound-ip-blocklisted",
                20,
            )
        )
    spf = [
        (r.domain, ip, res)
        for r in facts.all("dns_domains")
        for ip, res in sorted(r.spf_results.items())
        if res != "pass"
    ]
    if spf:
        out.append(
            Finding(
                "spf_not_passing",
                severity("spf_not_passing"),
                "dns",
                ("outbound",),
                "SPF does not pass for outbound IPs",
                tuple(f"mail from {d} sent by {ip}: SPF {res}" for d, ip, res in spf),
                "Add the IPs (ip4:) or the sending service's include to the SPF record, or stop those servers "
                "sending for the domain.",
                "spf-failing-for-an-outbound-ip",
                len(spf),
            )
        )
    invalid = [r for r in facts.all("dns_domains") if r.spf.records and not r.spf.temp_errors and not r.spf.valid]
    for r in invalid:
        out.append(
            Finding(
                "spf_invalid",
                severity("spf_invalid"),
                "dns",
                ("outbound",),
                f"SPF of {r.domain} is a permerror at every receiver",
                (f"{r.spf.lookups} DNS lookups (limit 10), {r.spf.void_lookups} void (limit 2)", *r.spf.errors[:4]),
                "Flatten includes, remove ptr and duplicate terms, publish exactly one v=spf1 record.",
                "spf-over-the-lookup-limit",
                10,
            )
        )
    ptr = [
        r
        for r in facts.all("dns_ips")
        if not r.ptr.answer.failed and (not r.ptr.names or not r.ptr.forward_confirmed or r.ptr.matches_helo is False)
    ]
    if ptr:
        out.append(
            Finding(
                "ptr_mismatch",
                severity("ptr_mismatch"),
                "dns",
                ("outbound",),
                "Reverse DNS of outbound IPs is missing or mismatched",
                tuple(
                    f"{r.ip}: PTR {', '.join(r.ptr.names) or 'none'}; forward-confirmed {r.ptr.forward_confirmed}; "
                    f"HELO {r.ptr.expected_helo or '?'}"
                    for r in ptr
                ),
                "Ask the IP's owner to set the PTR to the send connector's FQDN, and make that name resolve to the IP.",
                "ptr-mismatch",
                len(ptr),
            )
        )
    dmarc = [
        r.domain
        for r in facts.all("dns_domains")
        if not r.policies.dmarc.answer.failed and r.policies.dmarc_policy in ("missing", "invalid")
    ]
    if dmarc:
        out.append(
            Finding(
                "dmarc_missing",
                severity("dmarc_missing"),
                "dns",
                ("outbound",),
                "Domains without a valid DMARC record",
                tuple(dmarc),
                "Publish _dmarc TXT v=DMARC1; p=none; rua=... and tighten to quarantine/reject once reports are clean.",
                "dmarc-missing-or-weakened",
            )
        )
    return out


@rule
def blocklists_unusable(facts: Facts) -> list[Finding]:
    """Trigger: a blocklist whose answer for an outbound IP cannot be used: an error code instead of a
    listing (Spamhaus 127.255.255.252/254/255 and the rest of 127.255.255.0/24, DBL 127.0.1.255, URIBL
    127.0.0.1), an answer outside 127.0.0.0/8, a zone that does not list its RFC 5782 test address
    127.0.0.2 or lists 127.0.0.1, or a resolver failure (warning, one per list and reason; the IPs are
    also under "could not check", never "listed" or "not listed")."""
    return hints.blocklist_findings(facts)


@rule
def missing_role(facts: Facts) -> list[Finding]:
    """Trigger: a poll failed with reason permission: the account's Exchange session does not have
    the cmdlet, because none of its RBAC roles grants it (one finding per role)."""
    by_role: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for collector, failed in sorted(facts.failures.items()):
        for target, message in sorted(failed.items()):
            reason, _, text = message.partition(": ")
            parsed = parse_missing(text) if reason == "permission" else None
            if parsed is not None:
                cmdlet, _account, role = parsed
                by_role[role or ""].append((cmdlet, f"{collector} {target}: {text}"))
    out = []
    for role, items in sorted(by_role.items()):
        cmdlets = ", ".join(dict.fromkeys(c for c, _ in items))
        lacks = f"the {role} role" if role else "a role granting it"
        grant = f'-Role "{role}"' if role else "-Role <a role holding the cmdlet>"
        out.append(
            Finding(
                "missing_role",
                severity("missing_role"),
                "monitoring",
                (),
                f"The monitoring account lacks {lacks} ({cmdlets})",
                tuple(e for _, e in items),
                f"Add the role to the account's role group: New-ManagementRoleAssignment -SecurityGroup \"Mailflow "
                f'Exporter" {grant} (README, permissions). The exporter opens a new session within 10 minutes.',
                "missing-rbac-role",
                len(items),
            )
        )
    return out


def run_rules(facts: Facts, rules: Iterable[Rule] = ()) -> list[Finding]:
    """Every rule's findings, most important first. A rule that crashes is reported, not fatal."""
    findings: list[Finding] = []
    for func in list(rules) or RULES:
        try:
            findings.extend(func(facts))
        except Exception as exc:  # a rule bug must not hide the other findings
            findings.append(
                Finding(
                    f"rule_error_{func.__name__}",
                    "info",
                    "monitoring",
                    (),
                    f"Rule {func.__name__} failed",
                    (f"{type(exc).__name__}: {str(exc)[:200]}",),
                    "Report this as a bug.",
                    "",
                )
            )
    return sorted(findings, key=Finding.sort_key)


__all__ = ["RULES", "run_rules"]
