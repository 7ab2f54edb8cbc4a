"""Alembic environment: always run with a connection handed over by `heaters_resources.db.engine`.

`db.migrate()` builds the Alembic Config in code, takes a Postgres advisory lock on its connection
and passes that connection here in `config.attributes["connection"]`, so concurrent first users
serialize on the lock instead of racing to create the same tables.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from heaters_resources.db.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        literal_binds=True,
        target_metadata=target_metadata,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
