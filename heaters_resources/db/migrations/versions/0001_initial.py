"""Initial schema: source videos, clips, artifacts, embeddings, review events, pending deletions.

Revision ID: 0001_initial
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from heaters_resources.db.models import (
    CLIP_STATES,
    FRAME_SPACE,
    SOURCE_VIDEO_STATES,
)

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

# HNSW indexes need a fixed dimension: one partial expression index per known model.
# The artifact kinds of this revision (0009 added `proxy`): frozen here, not read from the models.
ARTIFACT_KINDS = ("keyframe", "sprite_sheet")
DEFAULT_EMBEDDING_MODELS = {"openai/clip-vit-base-patch32": 512, "facebook/dinov2-small": 384}


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _timestamps() -> list[sa.Column]:
    return [
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    ]


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.create_table(
        "source_videos",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("title", sa.Text),
        sa.Column("state", sa.String(32), nullable=False, server_default="new"),
        sa.Column("error", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("original_key", sa.Text),
        sa.Column("normalized_key", sa.Text),
        sa.Column("duration_s", sa.Double),
        sa.Column("fps", sa.Double),
        sa.Column("frame_count", sa.BigInteger),
        sa.Column("width", sa.Integer),
        sa.Column("height", sa.Integer),
        sa.Column("video_codec", sa.String(64)),
        sa.Column("audio_codec", sa.String(64)),
        sa.Column("size_bytes", sa.BigInteger),
        sa.Column("uploader", sa.Text),
        sa.Column("upload_date", sa.String(16)),
        sa.Column("info", JSONB, nullable=False, server_default="{}"),
        sa.Column("scene_params", JSONB),
        *_timestamps(),
        sa.CheckConstraint(_in("state", SOURCE_VIDEO_STATES), name="ck_source_videos_state"),
    )
    op.create_index("ix_source_videos_state", "source_videos", ["state"])
    op.create_table(
        "clips",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "source_video_id",
            sa.BigInteger,
            sa.ForeignKey("source_videos.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("identifier", sa.String(80), nullable=False, unique=True),
        sa.Column("start_frame", sa.BigInteger, nullable=False),
        sa.Column("end_frame", sa.BigInteger, nullable=False),
        sa.Column("start_time", sa.Double, nullable=False),
        sa.Column("end_time", sa.Double, nullable=False),
        sa.Column("fps", sa.Double, nullable=False),
        sa.Column("state", sa.String(32), nullable=False, server_default="spliced"),
        sa.Column("error", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("storage_key", sa.Text),
        sa.Column("parent_clip_ids", ARRAY(sa.BigInteger), nullable=False, server_default="{}"),
        sa.Column("superseded_at", sa.DateTime(timezone=True)),
        sa.Column("reviewed_at", sa.DateTime(timezone=True)),
        *_timestamps(),
        sa.CheckConstraint(_in("state", CLIP_STATES), name="ck_clips_state"),
        sa.CheckConstraint(
            f"start_frame >= 0 AND end_frame > start_frame AND end_frame < {FRAME_SPACE}",
            name="ck_clips_frames",
        ),
    )
    op.create_index("ix_clips_source_video_id", "clips", ["source_video_id"])
    op.create_index("ix_clips_state", "clips", ["state"])
    op.execute(
        "ALTER TABLE clips ADD CONSTRAINT ex_clips_no_overlap EXCLUDE USING gist ("
        f"int8range(source_video_id * {FRAME_SPACE} + start_frame, "
        f"source_video_id * {FRAME_SPACE} + end_frame) WITH &&) WHERE (superseded_at IS NULL)"
    )
    op.create_table(
        "clip_artifacts",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "clip_id", sa.BigInteger, sa.ForeignKey("clips.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("strategy", sa.String(64), nullable=False),
        sa.Column("tag", sa.String(64), nullable=False, server_default=""),
        sa.Column("storage_key", sa.Text, nullable=False, unique=True),
        sa.Column("sidecar_key", sa.Text),
        sa.Column("metadata", JSONB, nullable=False, server_default="{}"),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(_in("kind", ARTIFACT_KINDS), name="ck_clip_artifacts_kind"),
        sa.UniqueConstraint("clip_id", "kind", "strategy", "tag", name="uq_clip_artifacts_slot"),
    )
    op.create_index("ix_clip_artifacts_clip_id", "clip_artifacts", ["clip_id"])
    op.create_table(
        "clip_embeddings",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column(
            "clip_id", sa.BigInteger, sa.ForeignKey("clips.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("generation_strategy", sa.String(64), nullable=False),
        sa.Column("dimension", sa.Integer, nullable=False),
        sa.Column("embedding", Vector(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.UniqueConstraint(
            "clip_id",
            "model_name",
            "generation_strategy",
            name="uq_clip_embeddings_clip_model_strategy",
        ),
        sa.CheckConstraint("vector_dims(embedding) = dimension", name="ck_clip_embeddings_dim"),
    )
    op.create_index("ix_clip_embeddings_clip_id", "clip_embeddings", ["clip_id"])
    for model, dim in DEFAULT_EMBEDDING_MODELS.items():
        slug = model.replace("/", "_").replace("-", "_").replace(".", "_")
        op.execute(
            f"CREATE INDEX ix_clip_embeddings_hnsw_{slug} ON clip_embeddings USING hnsw "
            f"((embedding::vector({dim})) vector_cosine_ops) WHERE model_name = '{model}'"
        )
    op.create_table(
        "review_events",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False, server_default=""),
        sa.Column("clip_ids", ARRAY(sa.BigInteger), nullable=False),
        sa.Column("previous_states", ARRAY(sa.String(32)), nullable=False, server_default="{}"),
        sa.Column("payload", JSONB, nullable=False, server_default="{}"),
        sa.Column("undoes_event_id", sa.BigInteger),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_index(
        "ix_review_events_clip_ids", "review_events", ["clip_ids"], postgresql_using="gin"
    )
    op.create_table(
        "pending_object_deletions",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("storage_key", sa.Text, nullable=False, unique=True),
        sa.Column("reason", sa.String(200), nullable=False, server_default=""),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )


def downgrade() -> None:
    for table in (
        "pending_object_deletions",
        "review_events",
        "clip_embeddings",
        "clip_artifacts",
        "clips",
        "source_videos",
    ):
        op.drop_table(table)
