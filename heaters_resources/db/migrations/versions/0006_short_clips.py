"""Short clips: a shot shorter than the minimum scene length is its own clip, marked `short`.

Before issue 11 such a shot was merged into the next clip, so that clip straddled two shots.
Now scene detection keeps every cut (`short_policy="keep"`, the default) and the clip of a short
shot carries `short = true`: the review queue leaves it out by default and `heaters status`
counts it. A NOT NULL boolean with a constant default is a catalog-only change (no rewrite of
`clips`), and no index names it, so transitions stay HOT updates (migration 0004).

Revision ID: 0006_short_clips
Revises: 0005_leases
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_short_clips"
down_revision = "0005_leases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "clips", sa.Column("short", sa.Boolean(), nullable=False, server_default=sa.false())
    )


def downgrade() -> None:
    op.drop_column("clips", "short")
