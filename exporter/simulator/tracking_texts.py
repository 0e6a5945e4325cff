"""The fixed texts of the simulated message tracking log: EventId names, FAIL statuses (real
Exchange texts), DEFER statuses, and the people, domains, subjects and databases messages are made of.

``tracking`` draws from these tables (by index from a per-message random stream, so changing a
table's contents or order changes the generated log); ``cmdlets_transport`` checks ``-EventId``
against :data:`EVENT_IDS`.
"""

from __future__ import annotations

import re

__all__ = [
    "DEFERS",
    "EVENT_IDS",
    "EXTERNAL_DOMAINS",
    "FAILURES",
    "FAILURE_CODES",
    "MAILBOX_DATABASES",
    "NDR_SENDER_LOCAL",
    "PEOPLE",
    "SUBJECTS",
]

#: The MessageTrackingEvent enum names Get-MessageTrackingLog validates ``-EventId`` against.
EVENT_IDS: tuple[str, ...] = (
    "AGENTINFO", "BADMAIL", "CLIENTSUBMISSION", "DEFER", "DELIVER", "DELIVERFAIL", "DROP", "DSN",
    "DUPLICATEDELIVER", "DUPLICATEEXPAND", "DUPLICATEREDIRECT", "EXPAND", "FAIL", "HADISCARD",
    "HARECEIVE", "HAREDIRECT", "HAREDIRECTFAIL", "INITMESSAGECREATED", "LOAD", "MODERATIONEXPIRE",
    "MODERATORAPPROVE", "MODERATORREJECT", "MODERATORSALLNDR", "NOTIFYMAPI", "NOTIFYSHADOW",
    "POISONMESSAGE", "PROCESS", "PROCESSMEETINGMESSAGE", "RECEIVE", "REDIRECT", "RESOLVE", "RESUBMIT",
    "RESUBMITDEFER", "RESUBMITFAIL", "SEND", "SUBMIT", "SUBMITDEFER", "SUBMITFAIL", "SUPPRESSED",
    "THROTTLE", "TRANSFER",
)  # fmt: skip
NDR_SENDER_LOCAL = "MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e"

#: (RecipientStatus, Source, SourceContext, Directionality) of FAIL events: real Exchange texts.
FAILURES: tuple[tuple[str, str, str, str], ...] = (
    ("550 5.1.1 RESOLVER.ADR.RecipNotFound; not found", "ROUTING", "", "Incoming"),
    (
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        "RESOLVER",
        "",
        "Incoming",
    ),
    (
        "[{LED=550 5.7.1 TRANSPORT.RULES.RejectMessage; the message was rejected by organization policy};"
        "{MSG=};{FQDN=};{IP=};{LRT=}]",
        "SMTP",
        "Transport Rule Agent",
        "Originating",
    ),
    (
        "[{LED=550 5.7.1 Sender ID (PRA) Not Permitted};{MSG=};{FQDN=};{IP=%CLIENT_IP%};{LRT=}]",
        "SMTP",
        "Sender Id Agent",
        "Incoming",
    ),
    ("550 5.4.1 Recipient address rejected: Access denied", "SMTP", "", "Originating"),
    ("554 5.4.14 Hop count exceeded - possible mail loop", "ROUTING", "", "Incoming"),
    ("552 5.2.2 mailbox full", "SMTP", "", "Originating"),
)
#: The enhanced status code of each FAILURES entry (what ``tracking.failure_codes`` selects by).
FAILURE_CODES: tuple[str, ...] = tuple(
    m.group(0) if (m := re.search(r"(?<![\d.])[245]\.\d{1,3}\.\d{1,3}(?![\d.])", f[0])) else "" for f in FAILURES
)
#: RecipientStatus of DEFER events (transient 4.x.x failures before a later SEND).
DEFERS: tuple[str, ...] = (
    '451 4.4.0 Primary target IP address responded with: "421 4.2.1 Unable to connect." Attempted failover '
    "to alternate host, but that did not succeed. Either there are no alternate hosts, or delivery failed to "
    "all alternate hosts. The last endpoint attempted was %REMOTE_IP%:25",
    "[{LRT=};{LED=451 4.4.397 Error communicating with target host. -> 421 4.4.2 Connection dropped due to "
    "SocketError};{FQDN=%REMOTE_HOST%};{IP=%REMOTE_IP%}]",
    "451 4.7.0 Temporary server error. Please try again later. PRX4",
    "421 4.7.66 TLS is required but the remote host does not offer it",
)
#: Internet domains of outside senders and recipients (fictitious).
EXTERNAL_DOMAINS = (
    "fabrikam.example", "adatum.example", "tailspin.example", "northwind.example", "woodgrove.example",
    "litware.example", "proseware.example", "wingtiptoys.example", "example.com", "example.net",
)  # fmt: skip
#: Mailbox local parts of the simulated users.
PEOPLE = (
    "adele.vance", "alex.wilber", "diego.siciliani", "grady.archie", "isaiah.langer", "johanna.lorenz",
    "lee.gu", "lidia.holloway", "lynne.robbins", "megan.bowen", "miriam.graham", "nestor.wilke",
    "patti.fernandez", "pradeep.gupta", "joni.sherman", "christie.cline",
)  # fmt: skip
#: Message subjects.
SUBJECTS = (
    "Quarterly report", "Meeting notes", "Invoice 2024-0412", "Project status update", "Lunch on Friday?",
    "Contract draft for review", "Travel itinerary", "Weekly newsletter", "Your order has shipped",
    "Password expiry notice", "Budget approval", "Thanks for your request", "Team offsite agenda",
    "Support case 118204", "Holiday schedule", "Shared document: roadmap.xlsx",
)  # fmt: skip
#: The mailbox databases named in STOREDRIVER events.
MAILBOX_DATABASES = ("Mailbox Database 0471695037", "Mailbox Database 1839204716")
