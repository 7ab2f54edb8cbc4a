"""Dagster's Postgres run storage (and, through ``HeldConnection``, the event log) keeping a
connection open.

The stock dagster-postgres storages open a new connection for every statement (``NullPool``,
so that many instances in one process do not pile up idle connections). A run stores dozens
of events and run records: a `dagster job execute` whose steps had nothing left to do opened
140 connections, a quarter of a second of its second here, paid again by every run. Dagster's
webserver already swaps in an engine that holds a connection (``optimize_for_webserver``);
the run storage and the event log (``event_log.py``) do the same in every process (the CLI,
run workers, the daemon), and close it when their instance is disposed (a sensor's
short-lived instance must not leave one behind). The schedule storage keeps the stock class:
few statements per run, and an instance never disposes it. Named in ``dagster.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from dagster._serdes import ConfigurableClassData
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)
from sqlalchemy.pool import NullPool

#: Connections a storage may open beyond its held one, when threads need them at once.
POOL_OVERFLOW = 8


def hold_connection(storage: Any) -> None:
    """Give a dagster-postgres storage an engine that keeps one connection open (more on
    demand, closed when returned); a connection Postgres dropped (a restart of the embedded
    server) is replaced on checkout (``pool_pre_ping``)."""
    if not isinstance(storage._engine.pool, NullPool):
        return
    old = storage._engine
    storage._engine = create_pg_engine(
        storage.postgres_url,
        storage._token_provider,
        isolation_level="AUTOCOMMIT",
        pool_size=1,
        max_overflow=POOL_OVERFLOW,
        pool_pre_ping=True,
    )
    old.dispose()


def storage_kwargs(config_value: Mapping[str, Any]) -> dict[str, Any]:
    """A dagster-postgres storage's constructor arguments from its instance config (what the
    stock ``from_config_value`` passes, which builds the stock class rather than ``cls``)."""
    return {
        "postgres_url": pg_url_from_config(config_value),
        "should_autocreate_tables": config_value.get("should_autocreate_tables", True),
        "token_provider": get_token_provider_from_config(config_value),
    }


class HeldConnection:
    """Mixin for a dagster-postgres storage: holds a connection from construction
    (``hold_connection``) and closes it when its instance is disposed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        hold_connection(self)

    def dispose(self) -> None:
        cast(Any, super()).dispose()
        cast(Any, self)._engine.dispose()


class HeldPostgresRunStorage(HeldConnection, PostgresRunStorage):
    """``PostgresRunStorage`` keeping a connection open."""

    @classmethod
    def from_config_value(  # the parent builds its own class, not cls
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> HeldPostgresRunStorage:
        return cls(inst_data=inst_data, **storage_kwargs(config_value))
