"""Engine, sessions and migrations for one database URL (embedded or external, same code path).

`database_url()` resolves the URL: HEATERS_DATABASE_URL when set (normalized to the psycopg2
driver, see ARCHITECTURE.md, "Pitfalls"), otherwise the embedded PostgreSQL (`embedded_pg`) in
HEATERS_HOME, started on demand. `Database` wraps a pooled engine with `pool_pre_ping` (a dropped
connection is replaced at checkout) and runs migrations on first use in each process, serialized
across processes by a Postgres advisory lock.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from heaters_resources.settings import Settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATION_LOCK_ID = 0x48454154  # "HEAT": pg_advisory_lock key guarding migrations
T = TypeVar("T")


def normalize_url(url: str) -> str:
    """Force the psycopg2 driver: a bare postgresql:// would pick psycopg 3 when installed."""
    if url.startswith("postgresql+psycopg2://"):
        return url
    if url.startswith("postgres://"):  # Heroku-style alias SQLAlchemy does not accept
        url = "postgresql://" + url[len("postgres://") :]
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"only PostgreSQL (with pgvector) is supported, got {parsed.drivername}")
    return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)


def database_url(settings: Settings | None = None) -> str:
    """The URL every process should use; starts the embedded server if no URL is configured."""
    settings = settings or Settings.from_env()
    if settings.database_url:
        return normalize_url(settings.database_url)
    from heaters_resources.db.embedded_pg import ensure_server

    return ensure_server(settings.home).url


def alembic_config(url: str | None = None) -> Config:
    """Alembic Config built in code (no alembic.ini to ship or find)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine, revision: str = "head") -> str | None:
    """Upgrade to `revision` under an advisory lock; idempotent and safe to call concurrently."""
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_ID})
        conn.commit()
        try:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_ID})
            conn.commit()
    return current_revision(engine)


def is_disconnect(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


class Database:
    """A pooled engine plus a session factory for one URL, migrated on first use."""

    def __init__(
        self, url: str, *, auto_migrate: bool = True, pool_size: int = 5, echo: bool = False
    ) -> None:
        self.url = normalize_url(url)
        self.engine: Engine = create_engine(
            self.url,
            pool_pre_ping=True,
            pool_size=pool_size,
            max_overflow=10,
            pool_recycle=1800,
            echo=echo,
        )
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._auto_migrate = auto_migrate
        self._migrated = False
        self._lock = threading.Lock()

    def ensure_migrated(self) -> None:
        if self._migrated or not self._auto_migrate:
            return
        with self._lock:
            if not self._migrated:
                if current_revision(self.engine) != head_revision():
                    migrate(self.engine)
                self._migrated = True

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on any exception."""
        self.ensure_migrated()
        with self.sessions() as session, session.begin():
            yield session

    def run(self, fn: Callable[[Session], T], *, retries: int = 3, backoff: float = 0.2) -> T:
        """Run `fn` in one transaction, retrying with backoff when the connection was lost.

        Only disconnects are retried: the failed transaction was rolled back by the server, so
        running it again is safe. Every other error propagates unchanged.
        """
        attempt = 0
        while True:
            try:
                with self.session() as session:
                    return fn(session)
            except DBAPIError as exc:
                if not is_disconnect(exc) or attempt >= retries:
                    raise
                attempt += 1
                time.sleep(backoff * 2 ** (attempt - 1))

    def dispose(self) -> None:
        self.engine.dispose()


_DATABASES: dict[str, Database] = {}
_DATABASES_LOCK = threading.Lock()


def get_database(settings: Settings | None = None, url: str | None = None) -> Database:
    """The process-wide `Database` for the configured URL (one engine per URL per process)."""
    resolved = normalize_url(url) if url else database_url(settings)
    with _DATABASES_LOCK:
        db = _DATABASES.get(resolved)
        if db is None:
            db = _DATABASES[resolved] = Database(resolved)
        return db
