"""Mailbox database copies on each server (``Get-MailboxDatabaseCopyStatus -Server EX01``).

Mail cannot be delivered to a dismounted database: delivery queues to it pile up in Retry. Copy and
replay queue lengths show a DAG copy falling behind long before a failover would lose data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.cardinality import OTHER, fold_enum, keep_top, unknown
from exporter.errors import ParseError
from exporter.exchange.clixml import as_bool, as_int, flatten
from exporter.exchange.cmdlet_collector import CappedServerCollector
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
    kept: frozenset[tuple[str, str]] | None = None  # (database, server) with their own series (None: all)
    folded: Mapping[str, int] = field(default_factory=dict)  # label -> distinct values shown as "other"


class DatabaseCopyCollector(CappedServerCollector):
    """Polls Get-MailboxDatabaseCopyStatus per server."""

    name = "database_copies"
    needs_hub_transport = True  # mailbox databases live on Mailbox (hub transport) servers

    def collect(self, session: ExchangeSession, server: str) -> DatabaseCopyResult:
        copies = self.fetch(session, server, "Get-MailboxDatabaseCopyStatus", {"Server": server}, parse_database_copy)
        return cap_database_copies(
            DatabaseCopyResult(server, tuple(sorted(copies, key=lambda c: c.database))), self._limit
        )

    def render(self, results: Mapping[str, DatabaseCopyResult]) -> Iterable[Metric]:
        return render_database_copies(results.values())


def cap_database_copies(result: DatabaseCopyResult, limit: int) -> DatabaseCopyResult:
    """The result with its cardinality cap decided: ``limit`` copies keep their own series; copies that
    need no attention and have the shortest queues go to "other" first."""
    worst = {(c.database, c.server): (c.status in GOOD_STATUSES, -c.copy_queue_length - c.replay_queue_length)
             for c in result.copies}  # fmt: skip
    kept = keep_top(worst, limit, worst.__getitem__)
    statuses = unknown((c.status for c in result.copies), COPY_STATUSES)
    return replace(result, kept=kept, folded={"database": len(worst) - len(kept), "status": statuses})


def render_database_copies(results: Iterable[DatabaseCopyResult]) -> list[Metric]:
    """Metric families for database copies."""
    labels = ["database", "server"]
    status = GaugeMetricFamily(
        "mailflow_database_copy_status",
        "Always 1, labelled with the copy's current status (Mounted, Healthy, Dismounted, Failed, ...; "
        f"other for a status outside the documented set); only the current status. {POLLED}",
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
        other = [0, 0, 0]  # copies beyond the cap: active copies, copy and replay queues, summed
        folded = False
        for c in result.copies:
            if result.kept is not None and (c.database, c.server) not in result.kept:
                folded = True
                other = [other[0] + (1 if c.active else 0), other[1] + c.copy_queue_length,
                         other[2] + c.replay_queue_length]  # fmt: skip
                continue
            values = [c.database, c.server]
            status.add_metric([*values, fold_enum(c.status, COPY_STATUSES)], 1)
            active.add_metric(values, 1 if c.active else 0)
            copy_queue.add_metric(values, c.copy_queue_length)
            replay_queue.add_metric(values, c.replay_queue_length)
            if c.content_index_state:
                index.add_metric(values, 1 if c.content_index_state.startswith("Healthy") else 0)
        if folded:
            # No status series for "other": the alerts read a status per database, and "other" is not one.
            values = [OTHER, result.server]
            active.add_metric(values, other[0])
            copy_queue.add_metric(values, other[1])
            replay_queue.add_metric(values, other[2])
    return [status, active, copy_queue, replay_queue, index]
