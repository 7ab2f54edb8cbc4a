"""Let state transitions of clips be HOT updates.

A transition rewrites only `state`, `updated_at`, `attempts` and `error`. With no index on
`state` and free space left in each page (fillfactor 80), PostgreSQL updates such rows in place
(heap-only tuples) without touching the primary key, the identifier index or the GiST overlap
constraint: bulk transitions of 10,000 clips cost a fraction of what they did. Queries by state
(sensors, the review queue) go through the id/video indexes or a scan, fast at this size.

Revision ID: 0002_clips_hot_updates
Revises: 0001_initial
"""

from __future__ import annotations

from alembic import op

revision = "0002_clips_hot_updates"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_clips_state", table_name="clips")
    op.execute("ALTER TABLE clips SET (fillfactor = 80)")


def downgrade() -> None:
    op.execute("ALTER TABLE clips RESET (fillfactor)")
    op.create_index("ix_clips_state", "clips", ["state"])
