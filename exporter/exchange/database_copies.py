"""Mailbox database copies on each server (``Get-MailboxDatabaseCopyStatus -Server EX01``).

Mail cannot be delivered to a dismounted database: delivery queues to it pile up in Retry. Copy and
replay queue lengths show a DAG copy falling behind long before a failover would lose data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.errors import ParseError
from exporter.exchange.clixml import as_bool, as_int, flatten
from exporter.exchange.cmdlet_collector import ServerCollector
from exporter.exchange.session import ExchangeSession

#: CopyStatus values (Get-MailboxDatabaseCopyStatus ``Status``).
COPY_STATUSES = (
    "Mounted",
    "Healthy",
    "Dismounted",
    "Failed",
    "FailedAndSuspended",
    "Suspended",
    "ServiceDown",
    "Initializing",
    "Resynchronizing",
    "Seeding",
    "SeedingSource",
    "Mounting",
    "Dismounting",
    "DisconnectedAndHealthy",
    "DisconnectedAndResynchronizing",
    "SinglePageRestore",
)
#: Statuses that need no attention (an active copy Mounted, a passive copy Healthy).
GOOD_STATUSES = frozenset({"Mounted", "Healthy"})
POLLED = "Polled from Get-MailboxDatabaseCopyStatus on a schedule."


@dataclass(frozen=True)
class DatabaseCopy:
    """One copy of one database on one server."""

    database: str
    server: str
    status: str
    active: bool
    copy_queue_length: int
    replay_queue_length: int
    content_index_state: str
    activation_suspended: bool


def parse_database_copy(obj: Any, server: str) -> DatabaseCopy:
    """One Get-MailboxDatabaseCopyStatus object (Identity ``DB\\SERVER``)."""
    p = flatten(obj)
    identity = str(p.get("Identity") or p.get("Name") or "")
    database = str(p.get("DatabaseName") or identity.split("\\", 1)[0]).strip()
    if not database:
        raise ParseError("a Get-MailboxDatabaseCopyStatus object without DatabaseName")
    copy_server = str(p.get("MailboxServer") or (identity.split("\\", 1)[1] if "\\" in identity else server))
    status = str(p.get("Status") or "Unknown").strip()
    return DatabaseCopy(
        database=database,
        server=copy_server.strip().upper(),
        status=status,
        active=as_bool(p.get("ActiveCopy")) or status in ("Mounted", "Mounting"),
        copy_queue_length=as_int(p.get("CopyQueueLength")),
        replay_queue_length=as_int(p.get("ReplayQueueLength")),
        content_index_state=str(p.get("ContentIndexState") or ""),
        activation_suspended=as_bool(p.get("ActivationSuspended")),
    )


@dataclass(frozen=True)
class DatabaseCopyResult:
    """The database copies hosted on one server."""

    server: str
    copies: tuple[DatabaseCopy, ...]


class DatabaseCopyCollector(ServerCollector):
    """Polls Get-MailboxDatabaseCopyStatus per server."""

    name = "database_copies"
    needs_hub_transport = True  # mailbox databases live on Mailbox (hub transport) servers

    def collect(self, session: ExchangeSession, server: str) -> DatabaseCopyResult:
        copies = self.fetch(session, server, "Get-MailboxDatabaseCopyStatus", {"Server": server}, parse_database_copy)
        return DatabaseCopyResult(server, tuple(sorted(copies, key=lambda c: c.database)))

    def render(self, results: Mapping[str, DatabaseCopyResult]) -> Iterable[Metric]:
        return render_database_copies(results.values())


def render_database_copies(results: Iterable[DatabaseCopyResult]) -> list[Metric]:
    """Metric families for database copies."""
    labels = ["database", "server"]
    status = GaugeMetricFamily(
        "mailflow_database_copy_status",
        f"1 for the copy's current status, 0 for the other statuses. {POLLED}",
        labels=[*labels, "status"],
    )
    active = GaugeMetricFamily(
        "mailflow_database_copy_active", f"1 if this is the active (mounted) copy. {POLLED}", labels=labels
    )
    copy_queue = GaugeMetricFamily(
        "mailflow_database_copy_queue_length",
        f"Log files not yet copied to this passive copy (CopyQueueLength). {POLLED}",
        labels=labels,
    )
    replay_queue = GaugeMetricFamily(
        "mailflow_database_replay_queue_length",
        f"Log files copied but not yet replayed into this copy (ReplayQueueLength). {POLLED}",
        labels=labels,
    )
    index = GaugeMetricFamily(
        "mailflow_database_copy_content_index_healthy",
        f"1 if the copy's content index is Healthy (search and some transport rules depend on it). {POLLED}",
        labels=labels,
    )
    for result in sorted(results, key=lambda r: r.server):
        for c in result.copies:
            values = [c.database, c.server]
            statuses = COPY_STATUSES if c.status in COPY_STATUSES else (*COPY_STATUSES, c.status)
            for s in statuses:
                status.add_metric([*values, s], 1 if c.status == s else 0)
            active.add_metric(values, 1 if c.active else 0)
            copy_queue.add_metric(values, c.copy_queue_length)
            replay_queue.add_metric(values, c.replay_queue_length)
            if c.content_index_state:
                index.add_metric(values, 1 if c.content_index_state.startswith("Healthy") else 0)
    return [status, active, copy_queue, replay_queue, index]
