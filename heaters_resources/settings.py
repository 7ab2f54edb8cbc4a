"""Process-wide settings read from the environment.

A plain frozen dataclass (no pydantic) so every layer — CLI, Dagster resources, tests — builds the
same object from the same variables, and tests can build one explicitly without touching os.environ.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

DEFAULT_HOME = "./.heaters"


def _clean(value: str | None) -> str | None:
    """Treat unset and empty variables alike (an empty `HEATERS_S3_BUCKET=` means no S3)."""
    if value is None:
        return None
    value = value.strip()
    return value or None


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    """A non-negative number of seconds; a malformed value is an error, not a silent default."""
    raw = _clean(env.get(name))
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{name}={raw!r} must be a finite number of seconds >= 0")
    return value


@dataclass(frozen=True)
class Settings:
    """Every ``HEATERS_*`` setting of the platform (ARCHITECTURE.md, "Configuration"): where state
    lives (HEATERS_HOME, the database URL, the S3 object store), the default embedding space,
    the inbox and archive timings, and the review page's secrets. Nothing else reads them."""

    home: Path
    database_url: str | None = None
    s3_bucket: str | None = None
    s3_prefix: str = ""
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    #: Default embedding space (None: the weights-free descriptor / ``keyframe_multi_avg``).
    embedding_model: str | None = None
    embedding_strategy: str | None = None
    #: Inbox sensors: a dropped file must be unmodified (mtime) this long before it is registered.
    inbox_settle_seconds: float = 2.0
    #: S3 prefix watched as an inbox ("" : no S3 inbox).
    inbox_prefix: str = ""
    #: An archive waits this long before its objects are deleted, so an undo can still win.
    archive_grace_seconds: float = 60.0
    #: Review page: a shared token required from non-loopback clients, and the key that signs
    #: its cookies (None: a random one per process, so sessions end with the process).
    review_token: str | None = None
    review_secret: str | None = None

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
            embedding_model=_clean(env.get("HEATERS_EMBEDDING_MODEL")),
            embedding_strategy=_clean(env.get("HEATERS_EMBEDDING_STRATEGY")),
            inbox_settle_seconds=_seconds(env, "HEATERS_INBOX_SETTLE_SECONDS", 2.0),
            inbox_prefix=_clean(env.get("HEATERS_INBOX_PREFIX")) or "",
            archive_grace_seconds=_seconds(env, "HEATERS_ARCHIVE_GRACE_SECONDS", 60.0),
            review_token=_clean(env.get("HEATERS_REVIEW_TOKEN")),
            review_secret=_clean(env.get("HEATERS_REVIEW_SECRET")),
        )

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)

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
