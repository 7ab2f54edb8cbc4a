"""Dagster's Postgres event log, with a run's planned-materialization events written at once.

Creating a run over a range of video partitions logs one ASSET_MATERIALIZATION_PLANNED event
per partition and asset: that is how Dagster later marks a failed run's partitions failed. The
stock ``PostgresEventLogStorage`` writes each of them alone (an INSERT and a NOTIFY on one new
connection, an upsert of the asset's row on another: about 8 ms an event here), which made the
daemon's run creation the slowest part of a backfill over a large library (ARCHITECTURE.md,
"Dagster shape"; ``benchmarks/bench_library.py``). Dagster hands these events over as one batch
when ``DAGSTER_EVENT_BATCH_SIZE`` is set (``heaters dev`` sets it); the stock storage then still
stores planned events one by one. Here a batch of them is one multi-row INSERT and one upsert
per asset: the same rows, so partition statuses (failed ones included) are read as before,
unlike ``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS``, which writes one event per asset and
loses failed partitions.

The other cost that grew with the library: Dagster turns a run's partition range into keys by
reading every key of the dynamic partitions (``get_dynamic_partitions``), several times per run
created (40,000 videos: 40,000 rows each time), so a backfill's run creation grew with the
square of the library. Here the keys are kept per process and read again only when the
partitions changed: ``count(*)`` and ``max(id)`` of the definition's rows (an index-only scan)
move on every add and delete, as ids are never reused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.schema import (
    DynamicPartitionsTable,
    SqlEventLogStorageTable,
)
from dagster._serdes import ConfigurableClassData
from dagster_postgres.event_log import PostgresEventLogStorage
from sqlalchemy import func, select

from heaters_resources.orchestration.pg_storage import HeldConnection, storage_kwargs

#: Events per batch Dagster hands to the storage (``heaters dev`` exports it; a run over
#: 20 videos plans 40 materializations, a batch is written when its run's last one arrives).
EVENT_BATCH_SIZE = "10000"


def _is_planned(event: EventLogEntry) -> bool:
    return event.is_dagster_event and event.get_dagster_event().is_asset_materialization_planned


class BatchedPostgresEventLogStorage(HeldConnection, PostgresEventLogStorage):
    """``PostgresEventLogStorage`` whose batches of planned events take two round trips,
    whose dynamic partition keys are read again only when they changed, and which keeps a
    connection open (``pg_storage.HeldConnection``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: partitions definition -> ((row count, largest id), its keys in Dagster's order)
        self._partition_keys: dict[str, tuple[tuple[int, int], list[str]]] = {}
        super().__init__(*args, **kwargs)

    def _partitions_stamp(self, partitions_def_name: str) -> tuple[int, int]:
        table = DynamicPartitionsTable
        query = select(func.count(), func.coalesce(func.max(table.c.id), 0)).where(
            table.c.partitions_def_name == partitions_def_name
        )
        with self.index_connection() as conn:
            count, largest = conn.execute(query).one()
        return int(count), int(largest)

    def get_dynamic_partitions(self, partitions_def_name: str) -> Sequence[str]:
        self._check_partitions_table()
        # The stamp is read before the keys: a change in between leaves keys newer than their
        # stamp, which the next call reads again; never keys older than the stamp.
        stamp = self._partitions_stamp(partitions_def_name)
        cached = self._partition_keys.get(partitions_def_name)
        if cached is not None and cached[0] == stamp:
            return list(cached[1])
        keys = list(super().get_dynamic_partitions(partitions_def_name))
        self._partition_keys[partitions_def_name] = (stamp, keys)
        return list(keys)

    @classmethod
    def from_config_value(  # the parent's builds its own class, not ``cls``
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> BatchedPostgresEventLogStorage:
        return cls(inst_data=inst_data, **storage_kwargs(config_value))

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        planned = [e for e in events if _is_planned(e)]
        if len(planned) < 2:
            super().store_event_batch(events)
            return
        # Planned asset-check evaluations (one per check and run) keep the stock path.
        rest = [e for e in events if not _is_planned(e)]
        if rest:
            super().store_event_batch(rest)
        statement = self.prepare_insert_event_batch(planned)
        with self._connect() as conn:
            rows = conn.execute(statement.returning(SqlEventLogStorageTable.c.id)).fetchall()
        ids = [int(row[0]) for row in rows]  # in the order of the rows (one per event)
        # The asset row keeps the newest planned event of each asset (last run id, timestamp):
        # what storing them one by one leaves there too. Planned events carry no tags.
        newest: dict[str, tuple[EventLogEntry, int]] = {}
        for event, event_id in zip(planned, ids, strict=True):
            key = event.get_dagster_event().asset_key
            assert key is not None
            newest[key.to_string()] = (event, event_id)
        with self.index_transaction() as conn:
            for event, event_id in newest.values():
                self._store_asset_event(conn, event, event_id)
