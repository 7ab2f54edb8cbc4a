"""Dagster `ConfigurableResource`s: the Dagster layer gets sessions and stores from here and never
builds engines or boto3 clients itself.

Every field is optional: unset fields fall back to the environment (`Settings.from_env`), so the
same `Definitions` work with the embedded defaults and with an external Postgres / S3.
Engines are cached per process by URL (`db.get_database`), so resources are cheap to build.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource
from sqlalchemy.orm import Session

from heaters_resources.db.engine import Database, get_database
from heaters_resources.settings import Settings
from heaters_resources.store.objects import ObjectStore, object_store_from_settings


def _settings(home: str | None, **overrides: Any) -> Settings:
    base = Settings.from_env()
    changes: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    if home:
        changes["home"] = Path(home).expanduser().resolve()
    return base.with_overrides(**changes) if changes else base


class SettingsResource(ConfigurableResource):
    """Settings with optional overrides of HEATERS_HOME and the database URL."""

    heaters_home: str | None = None
    database_url: str | None = None

    def get_settings(self) -> Settings:
        return _settings(self.heaters_home, database_url=self.database_url)


class DatabaseResource(ConfigurableResource):
    """The database: the embedded PostgreSQL in HEATERS_HOME unless `database_url` is set."""

    heaters_home: str | None = None
    database_url: str | None = None

    def get_database(self) -> Database:
        return get_database(_settings(self.heaters_home, database_url=self.database_url))

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        with self.get_database().session() as session:
            yield session


class ObjectStoreResource(ConfigurableResource):
    """The object store: local folder in HEATERS_HOME unless an S3 bucket is configured."""

    heaters_home: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    multipart_threshold_mb: int | None = None

    def get_store(self) -> ObjectStore:
        settings = _settings(
            self.heaters_home,
            s3_bucket=self.s3_bucket,
            s3_prefix=self.s3_prefix,
            s3_endpoint_url=self.s3_endpoint_url,
            s3_region=self.s3_region,
        )
        options: dict[str, Any] = {}
        if settings.s3_bucket and self.multipart_threshold_mb:
            options["multipart_threshold"] = self.multipart_threshold_mb * 1024 * 1024
        return object_store_from_settings(settings, **options)
