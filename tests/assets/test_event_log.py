"""Our Dagster event log (orchestration/event_log.py) on the repository's dagster.yaml.

A run over a range of video partitions plans one materialization per partition and asset.
With DAGSTER_EVENT_BATCH_SIZE (as ``heaters dev`` sets it) our storage writes them in one
statement; the rows must be those Dagster writes one by one, so that a failed run's partitions
are still marked failed (what DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS gives up).
"""

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy
import yaml
from dagster import AssetExecutionContext
from dagster._core.storage.partition_status_cache import (
    get_and_update_asset_status_cache_value,
)
from dagster_postgres.event_log import PostgresEventLogStorage

from heaters_resources.orchestration.event_log import (
    EVENT_BATCH_SIZE,
    BatchedPostgresEventLogStorage,
)
from heaters_resources.orchestration.instance import REPO_ROOT
from heaters_resources.orchestration.pg_storage import HeldPostgresRunStorage

VIDEOS = dg.DynamicPartitionsDefinition(name="videos")
KEYS = ["1", "2", "3", "4"]


@dg.asset(partitions_def=VIDEOS)
def frames(context: AssetExecutionContext) -> None:
    context.log.info(f"frames of {context.partition_keys}")


@dg.asset(partitions_def=VIDEOS, deps=[frames])
def thumbs(context: AssetExecutionContext) -> None:
    if "3" in context.partition_keys:
        raise RuntimeError("video 3 cannot be read")


@pytest.fixture
def instance(
    fresh_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("HEATERS_DAGSTER_PG_URL", fresh_database_url)
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", EVENT_BATCH_SIZE)
    monkeypatch.delenv("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", raising=False)
    with dg.DagsterInstance.from_config(str(home)) as inst:
        inst.add_dynamic_partitions("videos", KEYS)
        yield inst


def _run_range(instance: dg.DagsterInstance, first: str, last: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [frames, thumbs],
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
        },
        raise_on_error=False,
    )


def _planned(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str | None]]:
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED
    ).records
    out = []
    for record in records:
        event = record.event_log_entry.get_dagster_event()
        assert event.asset_key is not None
        out.append((event.asset_key.to_user_string(), event.partition))
    return sorted(out, key=lambda kp: (kp[0], kp[1] or ""))


def test_the_instance_config_uses_our_event_log() -> None:
    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    assert "storage" not in config  # the three storages are named one by one
    url = {"postgres_url": {"env": "HEATERS_DAGSTER_PG_URL"}}
    assert config["run_storage"] == {
        "module": HeldPostgresRunStorage.__module__,
        "class": HeldPostgresRunStorage.__name__,
        "config": url,
    }
    assert config["schedule_storage"]["config"] == url
    assert config["event_log_storage"] == {
        "module": BatchedPostgresEventLogStorage.__module__,
        "class": BatchedPostgresEventLogStorage.__name__,
        "config": url,
    }


def test_planned_events_of_a_run_are_one_write_and_failed_partitions_are_marked(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(instance.event_log_storage, BatchedPostgresEventLogStorage)
    upserts: list[str] = []
    original = BatchedPostgresEventLogStorage._store_asset_event

    def counting(self: BatchedPostgresEventLogStorage, conn, event, event_id) -> None:  # type: ignore[no-untyped-def]
        if event.get_dagster_event().is_asset_materialization_planned:
            upserts.append(event.get_dagster_event().asset_key.to_user_string())
        original(self, conn, event, event_id)

    monkeypatch.setattr(BatchedPostgresEventLogStorage, "_store_asset_event", counting)

    ok = _run_range(instance, "1", "2")
    assert ok.success
    # Every partition and asset has its own planned row, as Dagster writes them one by one ...
    assert _planned(instance, ok.run_id) == [
        ("frames", "1"),
        ("frames", "2"),
        ("thumbs", "1"),
        ("thumbs", "2"),
    ]
    # ... but the asset rows were upserted once per asset, not once per event.
    assert sorted(upserts) == ["frames", "thumbs"]
    record = instance.get_asset_records([dg.AssetKey("thumbs")])[0]
    assert record.asset_entry.last_run_id == ok.run_id

    failed = _run_range(instance, "3", "4")
    assert not failed.success
    assert len(_planned(instance, failed.run_id)) == 4
    status = get_and_update_asset_status_cache_value(
        instance, dg.AssetKey("thumbs"), VIDEOS, dynamic_partitions_loader=instance
    )
    assert status is not None
    assert set(status.deserialize_materialized_partition_subsets(VIDEOS).get_partition_keys()) == {
        "1",
        "2",
    }
    # The failed run's partitions are failed: the planned rows carry their partition.
    assert set(status.deserialize_failed_partition_subsets(VIDEOS).get_partition_keys()) == {
        "3",
        "4",
    }


def test_without_the_batch_size_each_event_is_stored_alone(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "0")
    batches: list[int] = []
    original = BatchedPostgresEventLogStorage.store_event_batch

    def spying(self: BatchedPostgresEventLogStorage, events) -> None:  # type: ignore[no-untyped-def]
        batches.append(len(events))
        original(self, events)

    monkeypatch.setattr(BatchedPostgresEventLogStorage, "store_event_batch", spying)
    result = _run_range(instance, "1", "4")
    assert batches == []  # Dagster's own path: nothing batched ...
    assert len(_planned(instance, result.run_id)) == 8  # ... the same rows


def test_partition_keys_are_read_again_only_when_they_changed(
    instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    parent = PostgresEventLogStorage.get_dynamic_partitions

    def counting(self: PostgresEventLogStorage, name: str) -> Sequence[str]:
        reads.append(name)
        return parent(self, name)

    monkeypatch.setattr(PostgresEventLogStorage, "get_dynamic_partitions", counting)
    assert instance.get_dynamic_partitions("videos") == KEYS
    assert instance.get_dynamic_partitions("videos") == KEYS
    assert reads == ["videos"]  # the second call was answered from the process's copy
    instance.add_dynamic_partitions("videos", ["5"])
    assert instance.get_dynamic_partitions("videos") == [*KEYS, "5"]
    instance.delete_dynamic_partition("videos", "2")
    assert instance.get_dynamic_partitions("videos") == ["1", "3", "4", "5"]
    # One out, one in: the same count, a larger id.
    instance.delete_dynamic_partition("videos", "1")
    instance.add_dynamic_partitions("videos", ["6"])
    assert instance.get_dynamic_partitions("videos") == ["3", "4", "5", "6"]
    # Changes made by another process (another instance on the same database) are seen too.
    other = dg.DagsterInstance.from_ref(instance.get_ref())
    other.delete_dynamic_partition("videos", "3")
    other.add_dynamic_partitions("videos", ["7"])
    other.dispose()
    assert instance.get_dynamic_partitions("videos") == ["4", "5", "6", "7"]
    assert len(reads) == 5
    assert instance.get_dynamic_partitions("other") == []


def _connections(url: str) -> int:
    """Connections to the database of ``url``, other than the one counting them."""
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            return int(
                conn.scalar(
                    sqlalchemy.text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
            )
    finally:
        engine.dispose()


def test_storages_hold_a_connection_and_close_it_with_the_instance(
    fresh_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run storage and the event log keep one connection open each (the stock classes
    open one per statement: ~140 for a run with nothing to do) and close them when the
    instance is disposed, so short-lived instances (a sensor tick's) leave none behind."""
    home = tmp_path / "dagster"
    home.mkdir()
    shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("HEATERS_DAGSTER_PG_URL", fresh_database_url)
    with dg.DagsterInstance.from_config(str(home)) as inst:
        assert isinstance(inst.run_storage, HeldPostgresRunStorage)
        inst.add_dynamic_partitions("videos", KEYS)
        for _ in range(3):
            assert _run_range(inst, "1", "2").success
        held = _connections(fresh_database_url)
        assert 2 <= held <= 3, held  # run storage + event log (+ one the run's thread kept)
    assert _connections(fresh_database_url) == 0
