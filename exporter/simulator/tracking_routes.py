"""Cross-server submission in the simulated message-tracking log: who continues a message.

In Exchange 2013 and later the Mailbox Transport Submission service of the server holding the
sender's mailbox retrieves the message over RPC and submits it over SMTP "to the Transport service
on the local Mailbox server or on other Mailbox servers" (Mail flow and the transport pipeline).
Its own tracking log keeps the submission (NOTIFYMAPI, RECEIVE from STOREDRIVER, SUBMIT: "The
Mailbox Transport Submission service successfully transmitted the message to the Transport
service", message-tracking.md); the Transport service that took it logs the rest (the RECEIVE over
its ``Default <server>`` connector with the submitting server as client, the agents, SEND, DELIVER)
under the same MessageId and its own InternalMessageId ("different in the message tracking log of
every Exchange server", message-tracking.md).

Which server: a DAG member when the submitting server is in a DAG (servers holding copies of one
mailbox database), else a Mailbox server of the same AD site; shadow redundancy keeps the second
copy in that same boundary (shadow-redundancy.md). How often another server is chosen is the
spec's ``cross_server_submission`` share; public tracking output of a two-member Exchange 2013 DAG
shows every submission taken by the other member (davidmtechblog, "Message Tracking - 03/04",
2016), so the default share is high. The share and the uniform choice among partners are inferred.
Every choice is a pure function of the message's hash, like the rest of the log.

Delivery on another server (``remote_mailbox_share``, default 0): the recipients' mailbox database
may be active on another Mailbox server than the Transport service that categorised the message.
Mail routing (OfficeDocs-Exchange ``mail-routing.md``, Exchange 2016, "virtually unchanged from
Exchange 2013"): the routing destination of a mailbox recipient is its mailbox database; within one
delivery group (a routable DAG: the DAG members; a Mailbox delivery group: the Mailbox servers of
an AD site, for databases outside any DAG) the Transport service hands the message over SMTP to
the Mailbox Transport Delivery service of the server that holds the (active copy of the) database;
from outside the destination delivery group the message is first relayed to a Transport service
inside it. So a message delivered on server M logs, on the Transport server H: SEND over the
Intra-Organization connector to M; and, when H is outside M's delivery group, on M: HAREDIRECT,
RECEIVE over ``Default <M>`` with H as client, AGENTINFO, SEND to its own Mailbox Transport
Delivery service; then DELIVER on M. Which member of the destination group takes the relayed
message (M itself here), HAREDIRECT on that hop, all recipients of a message sharing one database,
and the uniform choice of M are inferred.
"""

from __future__ import annotations

from collections.abc import Collection

from exporter.simulator.scenario import Scenario

__all__ = [
    "CONTINUATION_ID_OFFSET",
    "RELAY_ID_OFFSET",
    "continuation_internal_id",
    "delivery_group",
    "delivery_servers",
    "partner_index",
    "relay_index",
    "relay_internal_id",
    "submission_partners",
]

#: InternalMessageIds a server gives to messages other servers submitted to it start this far above
#: its own messages' ids (``base + 2k``, the DSN ``+ 1``), so both stay unique on that server.
CONTINUATION_ID_OFFSET = 5 * 10**13
#: InternalMessageIds of messages another server relayed (or handed to the Mailbox Transport Delivery
#: service) for delivery here start this far above a server's own messages' ids.
RELAY_ID_OFFSET = 7 * 10**13


def submission_partners(scenario: Scenario, server: str, modelled: Collection[str]) -> tuple[str, ...]:
    """The servers (upper-case names, scenario order) whose Transport service may take ``server``'s
    mailbox submissions: its DAG partners if it has any, else the other Mailbox servers of its site.

    Only servers in ``modelled`` (those with tracking traffic) take part; Edge and non-Mailbox
    servers neither submit from mailboxes nor take submissions.
    """
    origin = scenario.server(server)
    if origin is None or not origin.is_mailbox or origin.is_edge:
        return ()
    me = origin.name.upper()
    eligible = [
        s
        for s in scenario.servers
        if s.name.upper() != me and s.name.upper() in modelled and s.is_mailbox and not s.is_edge
    ]
    dag: set[str] = set()
    for database in scenario.effective_databases:
        holders = {copy.server.upper() for copy in database.copies}
        if me in holders:
            dag |= holders
    members = [s for s in eligible if s.name.upper() in dag]
    chosen = members or [s for s in eligible if s.site.lower() == origin.site.lower()]
    return tuple(s.name.upper() for s in chosen)


def partner_index(digest: bytes, share: float, partners: int) -> int:
    """The partner (index) whose Transport service takes the message with this hash, -1 for the
    local one. Bytes 6-15 of the hash decide (bytes 0-5 are the arrival jitter)."""
    if partners == 0 or share <= 0.0:
        return -1
    if int.from_bytes(digest[6:12], "big") / 2.0**48 >= share:
        return -1
    return int.from_bytes(digest[12:16], "big") % partners


def continuation_internal_id(base: int, k: int, origin_position: int, servers: int) -> str:
    """The InternalMessageId the taking server logs for message ``k`` of the server at
    ``origin_position`` (unique on the taking server: one id per (origin, k))."""
    return str(base + CONTINUATION_ID_OFFSET + k * servers + origin_position)


def _dag(scenario: Scenario, server: str) -> frozenset[str]:
    """The servers (upper case) sharing a mailbox database copy with ``server``, itself included when
    it has any; empty when it holds no copy of a database that another server also holds."""
    me = server.upper()
    out: set[str] = set()
    for database in scenario.effective_databases:
        holders = {copy.server.upper() for copy in database.copies}
        if me in holders and len(holders) > 1:
            out |= holders
    return frozenset(out)


def delivery_group(scenario: Scenario, server: str) -> tuple[str, frozenset[str]]:
    """The delivery group of the databases on ``server``: ("dag", its DAG members) when it shares a
    database with another server, else ("site", its AD site name in lower case) as a one-element set."""
    members = _dag(scenario, server)
    if members:
        return "dag", members
    spec = scenario.server(server)
    return "site", frozenset({(spec.site if spec is not None else "").lower()})


def same_delivery_group(scenario: Scenario, hub: str, mailbox: str) -> bool:
    """Whether the Transport service of ``hub`` is inside the delivery group of ``mailbox``'s databases
    (then it hands the message straight to that server's Mailbox Transport Delivery service)."""
    kind, group = delivery_group(scenario, mailbox)
    if kind == "dag":
        return hub.upper() in group
    spec = scenario.server(hub)
    return not _dag(scenario, hub) and spec is not None and spec.site.lower() in group


def delivery_servers(scenario: Scenario, modelled: Collection[str]) -> tuple[str, ...]:
    """The Mailbox servers (upper case, scenario order) that may hold a recipient's active database:
    every non-Edge Mailbox server in ``modelled``."""
    return tuple(
        s.name.upper() for s in scenario.servers if s.name.upper() in modelled and s.is_mailbox and not s.is_edge
    )


def relay_index(digest: bytes, share: float, candidates: int) -> int:
    """The candidate (index) holding the recipients' database, -1 when it is the categorising server's
    own. Bytes 16-23 of the hash decide (independent of the submission partner's bytes 6-15)."""
    if candidates == 0 or share <= 0.0:
        return -1
    if int.from_bytes(digest[16:22], "big") / 2.0**48 >= share:
        return -1
    return int.from_bytes(digest[22:26], "big") % candidates


def relay_internal_id(base: int, k: int, origin_position: int, servers: int) -> str:
    """The InternalMessageId the delivering server logs for message ``k`` of the server at
    ``origin_position`` (unique there: one id per (origin, k), apart from submissions)."""
    return str(base + RELAY_ID_OFFSET + k * servers + origin_position)
