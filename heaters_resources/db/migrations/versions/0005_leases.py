"""Leases: who holds a row in an in-progress state, and whether that holder is still alive;
and the fingerprint that makes submitting the same source twice find the first video.

Before this, a worker killed during a step (kill -9, OOM, reboot) left its video in `splicing`
or its clips in `keyframing` with no transition out. Now the transition into an in-progress
state records `lease_id`, the holder's row in `leases` (host, boot id, pid, run id, expiry),
renewed by a heartbeat. A row whose holder is dead goes back to its step's failed
state with the reason `interrupted` (`heaters_resources.states.leases`).

`lease_id` is a nullable bigint with no index and no foreign key: like `state`, an indexed
column would make every transition a non-HOT update (migration 0004), and a wide one (the
owner's name, tried first) no longer fit the 45 % fillfactor's free space, so transitions moved
rows to other pages. A lease id naming no lease row means "no live holder". Liveness is one
`leases` row per holder, so renewing costs one UPDATE whatever the number of rows held.

`fingerprint` has a partial unique index (NULL for videos submitted with `--new` or before
this migration): two concurrent submissions of one file cannot both create a row.

Revision ID: 0005_leases
Revises: 0004_review_events_lookups
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_leases"
down_revision = "0004_review_events_lookups"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("source_videos", sa.Column("lease_id", sa.BigInteger(), nullable=True))
    op.add_column("source_videos", sa.Column("fingerprint", sa.Text(), nullable=True))
    op.add_column("clips", sa.Column("lease_id", sa.BigInteger(), nullable=True))
    op.create_index(
        "ux_source_videos_fingerprint",
        "source_videos",
        ["fingerprint"],
        unique=True,
        postgresql_where=sa.text("fingerprint IS NOT NULL"),
    )
    op.create_table(
        "leases",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("owner", sa.Text(), nullable=False, unique=True),
        sa.Column("run_id", sa.Text(), nullable=True),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("boot_id", sa.Text(), nullable=False, server_default=""),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("pid_start", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_index("ux_source_videos_fingerprint", table_name="source_videos")
    op.drop_column("clips", "lease_id")
    op.drop_column("source_videos", "fingerprint")
    op.drop_column("source_videos", "lease_id")
