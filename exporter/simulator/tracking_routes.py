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
"""

from __future__ import annotations

from collections.abc import Collection

from exporter.simulator.scenario import Scenario

__all__ = ["CONTINUATION_ID_OFFSET", "continuation_internal_id", "partner_index", "submission_partners"]

#: InternalMessageIds a server gives to messages other servers submitted to it start this far above
#: its own messages' ids (``base + 2k``, the DSN ``+ 1``), so both stay unique on that server.
CONTINUATION_ID_OFFSET = 5 * 10**13


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
