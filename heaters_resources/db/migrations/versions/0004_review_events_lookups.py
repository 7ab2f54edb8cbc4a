"""Index the lookups of undo and of the review progress panel; still no index on `clips.state`.

Undo finds a reviewer's newest action (`actor`, newest `id` first) and the newest action on a
clip, each minus the actions already undone. Without these indexes each lookup scanned all of
`review_events`, one row per reviewed clip: about 20 ms at 100,000 events, growing with the
library. `(actor, id)` serves the reviewer's newest actions (undo and the progress panel); the
partial index on `undoes_event_id` serves "is this event undone" (an anti-join, NOT EXISTS);
the GIN index of 0001 on `clip_ids` serves "actions on this clip" once queried with `@>`.
`review_events` is append-only, so these cost one index entry per review action.

The review page's progress panel looks up the clips a merge or split made from the reviewer's
recent clips (`parent_clip_ids && ARRAY[...]`), a full scan of `clips` per poll without an
index. A GIN index on `parent_clip_ids`, partial to the few clips that have parents, answers it;
transitions never change `parent_clip_ids`, so they stay HOT updates (measured: 100 % HOT).

`clips.state` gets no index. An index whose key or predicate names `state` (a plain one on
`state`, or a partial one `WHERE state = 'pending_review'` for the review queue) makes every
state transition a non-HOT update: measured on 200,000 clips (86,000 moved back and forth in
10,000-id transactions as `apply_transition` does), 5.5 us a row with no such index, 56 us
with either (0 % HOT, 3x the WAL, and every index of `clips` grows). The queries by state
(review queue, pending count, `heaters status`) stay sequential scans: about 0.3 s at a million
clips.

Revision ID: 0004_review_events_lookups
Revises: 0003_clips_fillfactor_45
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_review_events_lookups"
down_revision = "0003_clips_fillfactor_45"
branch_labels = None
depends_on = None

# The partial index's predicate; a query uses the index only when it repeats this condition
# (`review.queries.recent_events` does).
NO_PARENTS = "'{}'::bigint[]"


def upgrade() -> None:
    op.create_index("ix_review_events_actor_id", "review_events", ["actor", "id"])
    op.create_index(
        "ix_clips_parent_clip_ids",
        "clips",
        ["parent_clip_ids"],
        postgresql_using="gin",
        postgresql_where=sa.text(f"parent_clip_ids <> {NO_PARENTS}"),
    )
    op.create_index(
        "ix_review_events_undoes_event_id",
        "review_events",
        ["undoes_event_id"],
        postgresql_where=sa.text("undoes_event_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_clips_parent_clip_ids", table_name="clips")
    op.drop_index("ix_review_events_undoes_event_id", table_name="review_events")
    op.drop_index("ix_review_events_actor_id", table_name="review_events")
