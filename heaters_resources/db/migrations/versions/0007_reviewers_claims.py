"""Named reviewers and queue claims in the database (issue 14).

Before this, a reviewer was the browser session (`reviewer@web-<8 hex>`): a new browser or a
restarted one was a new reviewer who could not undo earlier work, and the soft claims that
keep two reviewers off the same clip lived in the review process's memory (lost on restart,
invisible to a second `heaters review` on the same database).

`reviewers`: one row per name; `key` is a random 128-bit value the browser keeps in a
long-lived cookie, so the identity survives browser and server restarts without depending on
the app's signing secret (random per process unless HEATERS_REVIEW_SECRET is set). The name is
what `review_events.actor` records.

`review_claims`: one row per clip shown to a browser session, with an expiry; a claim whose
`expires_at` passed is free. Its foreign key cascades, so a deleted clip drops its claim. The
table holds one row per open page (a handful), never one per clip of the library.

No index on `clips` changes: the queue's keyset pagination walks `ix_clips_source_video_id`
(`/queue` orders by video id, then frame), so transitions stay HOT updates (migration 0004).

Revision ID: 0007_reviewers_claims
Revises: 0006_short_clips
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_reviewers_claims"
down_revision = "0006_short_clips"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reviewers",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("key", sa.String(64), nullable=False, unique=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "last_seen_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_table(
        "review_claims",
        sa.Column(
            "clip_id",
            sa.BigInteger(),
            sa.ForeignKey("clips.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("reviewer", sa.String(200), nullable=False, server_default=""),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_review_claims_holder", "review_claims", ["holder"])


def downgrade() -> None:
    op.drop_index("ix_review_claims_holder", table_name="review_claims")
    op.drop_table("review_claims")
    op.drop_table("reviewers")
