"""Short shots on the platform (issue 11): a shot under the minimum scene length becomes its
own clip marked `short` (never merged across a cut), kept out of the review queue, counted
by `heaters status`; `merge` and `drop` do what they say and the tiling check agrees."""

from __future__ import annotations

from pathlib import Path

import pytest

from heaters_resources import states, steps
from heaters_resources.db.engine import Database
from heaters_resources.review import queries
from heaters_resources.store.objects import ObjectStore
from tests.media_factory import make_video

SHOTS = [40, 8, 40]  # at 25 fps: the middle shot lasts 0.32 s, under the default 1 s


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("short") / "short.mp4", SHOTS, size=(160, 90))


def _spliced(
    db: Database, store: ObjectStore, video: Path, policy: str
) -> tuple[int, steps.SpliceOutcome]:
    vid = states.create_source_video(db, str(video))
    steps.ingest_source_video(db, store, vid)
    return vid, steps.splice_source_video(db, store, vid, short_policy=policy)


def test_a_short_shot_is_its_own_clip_out_of_the_review_queue(
    db: Database, local_store: ObjectStore, video: Path
) -> None:
    vid, out = _spliced(db, local_store, video, "keep")
    clips = [states.get_clip(db, i) for i in out.clip_ids]
    assert [(c.start_frame, c.end_frame, c.short) for c in clips] == [
        (0, 40, False),
        (40, 48, True),
        (48, 88, False),
    ]
    assert out.short_clips == 1 and steps.tiling_problems(db, vid) == []
    steps.keyframe_clips(db, local_store, out.identifiers)
    steps.sprite_clips(db, local_store, out.identifiers)
    assert {c.state for c in (states.get_clip(db, i) for i in out.clip_ids)} == {"pending_review"}
    assert queries.pending_clip_ids(db) == [clips[0].id, clips[2].id]
    assert queries.pending_count(db) == 2
    assert queries.pending_clip_ids(db, include_short=True) == [c.id for c in clips]
    again = steps.splice_source_video(db, local_store, vid)  # resumed: counted from the rows
    assert again.skipped and again.short_clips == 1


@pytest.mark.parametrize(
    ("policy", "spans"), [("merge", [(0, 40), (40, 88)]), ("drop", [(0, 40), (48, 88)])]
)
def test_merge_and_drop_policies(
    db: Database, local_store: ObjectStore, video: Path, policy: str, spans: list[tuple[int, int]]
) -> None:
    vid, out = _spliced(db, local_store, video, policy)
    clips = [states.get_clip(db, i) for i in out.clip_ids]
    assert [(c.start_frame, c.end_frame) for c in clips] == spans
    assert not any(c.short for c in clips)
    assert steps.tiling_problems(db, vid) == []  # a dropped shot is an expected gap
