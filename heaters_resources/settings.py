"""Process-wide settings read from the environment.

A plain frozen dataclass (no pydantic) so every layer — CLI, Dagster resources, tests — builds the
same object from the same variables, and tests can build one explicitly without touching os.environ.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

DEFAULT_HOME = "./.heaters"


def _clean(value: str | None) -> str | None:
    """Treat unset and empty variables alike (an empty `HEATERS_S3_BUCKET=` means no S3)."""
    if value is None:
        return None
    value = value.strip()
    return value or None


@dataclass(frozen=True)
class Settings:
    """Where state lives: HEATERS_HOME, the database URL and the S3 object store (if any)."""

    home: Path
    database_url: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_endpoint_url: str | None = None
    s3_region: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = Path(_clean(env.get("HEATERS_HOME")) or DEFAULT_HOME).expanduser().resolve()
        return cls(
            home=home,
            database_url=_clean(env.get("HEATERS_DATABASE_URL")),
            s3_bucket=_clean(env.get("HEATERS_S3_BUCKET")),
            s3_prefix=_clean(env.get("HEATERS_S3_PREFIX")) or "",
            s3_endpoint_url=_clean(env.get("HEATERS_S3_ENDPOINT_URL")),
            s3_region=_clean(env.get("HEATERS_S3_REGION")),
        )

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def pgdata_dir(self) -> Path:
        """Data folder of the embedded PostgreSQL (used only without HEATERS_DATABASE_URL)."""
        return self.home / "pgdata"

    @property
    def objects_dir(self) -> Path:
        """Root of the local object store (used only without HEATERS_S3_BUCKET)."""
        return self.home / "objects"

    @property
    def uses_s3(self) -> bool:
        return self.s3_bucket is not None
