"""SQLAlchemy 2 typed models (ARCHITECTURE.md, "Data model").

The Alembic migrations in `heaters_resources/migrations` are the source of truth for the schema;
these classes mirror them for queries. States are plain strings guarded by CHECK constraints (easy
to extend in a migration, unlike a Postgres enum). State names live in `STATES` here and the allowed
transitions in `heaters_resources.states`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Integer,
    String,
    Text,
    false,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SOURCE_VIDEO_STATES: tuple[str, ...] = (
    "new",
    "downloading",
    "downloaded",
    "splicing",
    "spliced",
    "ingestion_failed",
    "splicing_failed",
)
CLIP_STATES: tuple[str, ...] = (
    "spliced",
    "keyframing",
    "keyframed",
    "generating_sprite",
    "pending_review",
    "approved",
    "skipped",
    "archived",
    "merging",
    "splitting",
    "embedding",
    "embedded",
    "keyframing_failed",
    "sprite_failed",
    "embedding_failed",
)
# `proxy` (migration 0009): the review proxy of a clip not cut yet (HEATERS_CLIPS=proxy).
ARTIFACT_KINDS: tuple[str, ...] = ("keyframe", "sprite_sheet", "proxy")
STATES: dict[str, tuple[str, ...]] = {"source_video": SOURCE_VIDEO_STATES, "clip": CLIP_STATES}

# Clips of one video never overlap: the migration adds an exclusion constraint over
# int8range(video_id * FRAME_SPACE + start, video_id * FRAME_SPACE + end), which needs only the
# built-in range GiST opclass (no extension: the earlier pgserver build had no btree_gist).
FRAME_SPACE = 2**32


class Base(DeclarativeBase):
    """Declarative base of every Heaters table."""


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SourceVideo(TimestampMixin, Base):
    __tablename__ = "source_videos"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(32), server_default="new")
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    original_key: Mapped[str | None] = mapped_column(Text)
    normalized_key: Mapped[str | None] = mapped_column(Text)
    duration_s: Mapped[float | None] = mapped_column(Double)
    fps: Mapped[float | None] = mapped_column(Double)
    frame_count: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    video_codec: Mapped[str | None] = mapped_column(String(64))
    audio_codec: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    uploader: Mapped[str | None] = mapped_column(Text)
    upload_date: Mapped[str | None] = mapped_column(String(16))
    info: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    scene_params: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # Who works on the row while it is in an in-progress state (a `leases.id`); NULL otherwise.
    lease_id: Mapped[int | None] = mapped_column(BigInteger)
    # What the source is, whatever it was called: a sha256 of a file's size and ends, a URL,
    # an inbox object's key, size and time. Submitting it again finds this row (unique if set).
    fingerprint: Mapped[str | None] = mapped_column(Text)

    clips: Mapped[list[Clip]] = relationship(back_populates="source_video", passive_deletes=True)


class Clip(TimestampMixin, Base):
    __tablename__ = "clips"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    source_video_id: Mapped[int] = mapped_column(
        ForeignKey("source_videos.id", ondelete="CASCADE"), index=True
    )
    identifier: Mapped[str] = mapped_column(String(80), unique=True)
    start_frame: Mapped[int] = mapped_column(BigInteger)
    end_frame: Mapped[int] = mapped_column(BigInteger)  # exclusive
    start_time: Mapped[float] = mapped_column(Double)
    end_time: Mapped[float] = mapped_column(Double)
    fps: Mapped[float] = mapped_column(Double)
    state: Mapped[str] = mapped_column(String(32), server_default="spliced")
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    # The clip's own file; NULL while it is only a frame range of its source (HEATERS_CLIPS=proxy:
    # cut when approved, by the embedding run) and after an archive purge.
    storage_key: Mapped[str | None] = mapped_column(Text)
    parent_clip_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), server_default="{}")
    superseded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_id: Mapped[int | None] = mapped_column(BigInteger)
    # A shot shorter than the minimum scene length (migration 0006): kept out of the review
    # queue by default.
    short: Mapped[bool] = mapped_column(Boolean, server_default=false())

    source_video: Mapped[SourceVideo] = relationship(back_populates="clips")


class ClipArtifact(Base):
    __tablename__ = "clip_artifacts"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    clip_id: Mapped[int] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    strategy: Mapped[str] = mapped_column(String(64))
    tag: Mapped[str] = mapped_column(String(64), server_default="")
    storage_key: Mapped[str] = mapped_column(Text, unique=True)
    sidecar_key: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ClipEmbedding(Base):
    __tablename__ = "clip_embeddings"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    clip_id: Mapped[int] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"), index=True)
    model_name: Mapped[str] = mapped_column(String(200))
    generation_strategy: Mapped[str] = mapped_column(String(64))
    dimension: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[Any] = mapped_column(Vector())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ReviewEvent(Base):
    """Append-only audit of review actions; the source of undo and of the review sensor."""

    __tablename__ = "review_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(200), server_default="")
    clip_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    previous_states: Mapped[list[str]] = mapped_column(ARRAY(String(32)), server_default="{}")
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    undoes_event_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Reviewer(Base):
    """A named reviewer (migration 0007): `review_events.actor` is the name; the browser keeps
    `key` in a long-lived cookie, so the identity (and its undo) outlives browser sessions."""

    __tablename__ = "reviewers"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_seen_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class ReviewClaim(Base):
    """A clip shown to one browser session until `expires_at` (migration 0007): other sessions
    are shown other clips meanwhile. Soft: actions never depend on it."""

    __tablename__ = "review_claims"

    clip_id: Mapped[int] = mapped_column(
        ForeignKey("clips.id", ondelete="CASCADE"), primary_key=True
    )
    holder: Mapped[str] = mapped_column(String(64), index=True)
    reviewer: Mapped[str] = mapped_column(String(200), server_default="")
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PendingObjectDeletion(Base):
    """Objects replaced by an overwrite: deleted later by `cleanup.purge_scheduled_deletions`.

    Deleting after commit (not inside the transaction) means a rolled-back overwrite never loses
    the objects its old rows still point at.
    """

    __tablename__ = "pending_object_deletions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    storage_key: Mapped[str] = mapped_column(Text, unique=True)
    reason: Mapped[str] = mapped_column(String(200), server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Lease(Base):
    """A worker holding rows in an in-progress state (migration 0005).

    Rows name their holder (`lease_id`); the holder's liveness is one row here, renewed by a
    heartbeat while it works: one UPDATE per holder, not one per held clip. A holder is dead when
    its process is gone (same host and boot), its expiry has passed, or its Dagster run ended.
    """

    __tablename__ = "leases"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(Text, unique=True)
    run_id: Mapped[str | None] = mapped_column(Text)
    host: Mapped[str] = mapped_column(Text)
    boot_id: Mapped[str] = mapped_column(Text, server_default="")
    pid: Mapped[int] = mapped_column(Integer)
    pid_start: Mapped[int] = mapped_column(BigInteger, server_default="0")
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
