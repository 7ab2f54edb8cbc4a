"""Clip artifacts may be review proxies (`kind = 'proxy'`, issue 10: deferred cutting).

Why: with `HEATERS_CLIPS=proxy` a clip is a frame range of its source until a reviewer keeps
it. The review page plays a small proxy made in the same decode as its keyframes and sprite;
the full-quality file is cut when the clip is approved. The proxy is an artifact like the
others (replaced, purged and checked the same way), so only the kind's CHECK changes.

Revision ID: 0009_proxy_artifacts
Revises: 0008_halfvec_default_indexes
"""

from __future__ import annotations

from alembic import op

revision = "0009_proxy_artifacts"
down_revision = "0008_halfvec_default_indexes"
branch_labels = None
depends_on = None

BEFORE = ("keyframe", "sprite_sheet")
AFTER = (*BEFORE, "proxy")


def _kinds(values: tuple[str, ...]) -> str:
    return f"kind IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.drop_constraint("ck_clip_artifacts_kind", "clip_artifacts", type_="check")
    op.create_check_constraint("ck_clip_artifacts_kind", "clip_artifacts", _kinds(AFTER))


def downgrade() -> None:
    op.execute("DELETE FROM clip_artifacts WHERE kind = 'proxy'")
    op.drop_constraint("ck_clip_artifacts_kind", "clip_artifacts", type_="check")
    op.create_check_constraint("ck_clip_artifacts_kind", "clip_artifacts", _kinds(BEFORE))
