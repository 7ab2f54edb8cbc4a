"""The state machine against a real Postgres: every transition, refusals, races, bulk rollback."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import func, select, text

from heaters_resources import states as st
from heaters_resources.db.engine import Database
from heaters_resources.db.models import (
    Clip,
    ClipArtifact,
    ClipEmbedding,
    PendingObjectDeletion,
    ReviewEvent,
    SourceVideo,
)
from heaters_resources.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidClipsError,
    InvalidTransitionError,
    MissingObjectError,
    NotFoundError,
)
from heaters_resources.states import leases
from heaters_resources.states.core import array_literal
from heaters_resources.store import keys
from heaters_resources.store.objects import LocalObjectStore


def _state(db: Database, model: Any, row_id: int) -> str:
    with db.session() as s:
        return str(s.execute(select(model.state).where(model.id == row_id)).scalar_one())


def _count(db: Database, model: Any) -> int:
    with db.session() as s:
        return int(s.execute(select(func.count()).select_from(model)).scalar_one())


def _downloaded_video(db: Database, frames: int = 1000) -> int:
    vid = st.create_source_video(db, "https://example.test/v", title="A title")
    st.start_downloading(db, vid)
    st.complete_downloading(
        db,
        vid,
        original_key=keys.source_original_key(vid, "mkv"),
        normalized_key=keys.source_normalized_key(vid),
        fps=25.0,
        frame_count=frames,
        duration_s=frames / 25,
        width=640,
        height=360,
    )
    return vid


def _spliced_video(db: Database, bounds: list[tuple[int, int]]) -> tuple[int, list[int]]:
    vid = _downloaded_video(db)
    st.start_splicing(db, vid, scene_params={"threshold": 27})
    ids = st.create_clips_from_splice(db, vid, [st.ClipSpec(a, b) for a, b in bounds])
    return vid, ids


def _kf(vid: int, ident: str, pct: int, strategy: str = "midpoint") -> st.ArtifactSpec:
    return st.ArtifactSpec(
        "keyframe", strategy, keys.keyframe_key(vid, ident, strategy, pct), tag=str(pct)
    )


def _clip_to(db: Database, state: str) -> tuple[int, int]:
    """A video with one clip [0, 100), driven to `state`."""
    vid, (cid,) = _spliced_video(db, [(0, 100)])
    ident = keys.clip_identifier(vid, 0, 100)
    path = [
        "keyframing",
        "keyframed",
        "generating_sprite",
        "pending_review",
        "approved",
        "embedding",
        "embedded",
    ]
    steps = {
        "keyframing": lambda: st.start_keyframing(db, cid),
        "keyframed": lambda: st.complete_keyframing(db, cid, [_kf(vid, ident, 50)]),
        "generating_sprite": lambda: st.start_sprite_generation(db, cid),
        "pending_review": lambda: st.complete_sprite_generation(
            db,
            cid,
            st.ArtifactSpec(
                "sprite_sheet",
                "grid",
                keys.sprite_key(vid, ident, "5x5_160"),
                sidecar_key=keys.sprite_metadata_key(vid, ident, "5x5_160"),
                meta={"cols": 5, "rows": 5},
            ),
        ),
        "approved": lambda: st.approve_clip(db, cid, actor="alice"),
        "embedding": lambda: st.start_embedding(db, cid),
        "embedded": lambda: st.complete_embedding(
            db, cid, [1.0, 0.0, 0.0], model_name="m", generation_strategy="avg"
        ),
    }
    if state != "spliced":
        for name in path[: path.index(state) + 1]:
            steps[name]()
    assert _state(db, Clip, cid) == state
    return vid, cid


def test_source_video_happy_path(db: Database) -> None:
    vid = st.create_source_video(db, "https://example.test/v")
    assert st.get_source_video(db, vid).state == "new"
    r = st.start_downloading(db, vid)
    assert (r.from_state, r.to_state) == ("new", "downloading")
    st.complete_downloading(
        db,
        vid,
        original_key=keys.source_original_key(vid, "mp4"),
        fps=30.0,
        frame_count=300,
        uploader="someone",
    )
    video = st.get_source_video(db, vid)
    assert (video.state, video.attempts, video.fps, video.uploader) == (
        "downloaded",
        1,
        30.0,
        "someone",
    )
    st.start_splicing(db, vid, scene_params={"threshold": 27.0})
    ids = st.create_clips_from_splice(db, vid, [st.ClipSpec(0, 100), st.ClipSpec(100, 300)])
    assert st.get_source_video(db, vid).state == "spliced"
    clip = st.get_clip(db, ids[1])
    assert clip.identifier == f"{vid}_100_300"
    assert clip.storage_key == f"clips/{vid}/{vid}_100_300.mp4"
    assert clip.start_time == pytest.approx(100 / 30) and clip.state == "spliced"


def test_clip_happy_path_and_artifacts(db: Database) -> None:
    _vid, cid = _clip_to(db, "embedded")
    with db.session() as s:
        kinds = sorted(s.execute(select(ClipArtifact.kind)).scalars())
        assert kinds == ["keyframe", "sprite_sheet"]
        assert s.execute(select(ClipEmbedding.dimension)).scalar_one() == 3
        assert s.execute(select(ReviewEvent.action)).scalars().all() == ["approve"]
    assert st.get_clip(db, cid).reviewed_at is not None


@pytest.mark.parametrize(
    ("entity", "action", "state"),
    [
        ("source_video", "complete_downloading", "new"),
        ("source_video", "start_splicing", "new"),
        ("clip", "complete_keyframing", "spliced"),
        ("clip", "start_sprite_generation", "spliced"),
        ("clip", "start_embedding", "pending_review"),
        ("clip", "approve", "keyframed"),
        ("clip", "start_keyframing", "approved"),
        ("clip", "complete_embedding", "approved"),
    ],
)
def test_invalid_transitions_write_nothing(
    db: Database, entity: str, action: str, state: str
) -> None:
    if entity == "source_video":
        row_id = st.create_source_video(db, "x")
        model: Any = SourceVideo
    else:
        _, row_id = _clip_to(db, state)
        model = Clip
    calls = {
        "complete_downloading": lambda: st.complete_downloading(db, row_id, original_key="k"),
        "start_splicing": lambda: st.start_splicing(db, row_id),
        "complete_keyframing": lambda: st.complete_keyframing(db, row_id, []),
        "start_sprite_generation": lambda: st.start_sprite_generation(db, row_id),
        "start_embedding": lambda: st.start_embedding(db, row_id),
        "approve": lambda: st.approve_clip(db, row_id),
        "start_keyframing": lambda: st.start_keyframing(db, row_id),
        "complete_embedding": lambda: st.complete_embedding(
            db, row_id, [1.0], model_name="m", generation_strategy="s"
        ),
    }
    before = (_count(db, ClipArtifact), _count(db, ReviewEvent), _count(db, ClipEmbedding))
    with pytest.raises(InvalidTransitionError) as info:
        calls[action]()
    assert info.value.state == state
    assert _state(db, model, row_id) == state
    assert (_count(db, ClipArtifact), _count(db, ReviewEvent), _count(db, ClipEmbedding)) == before


def test_every_state_is_reachable_and_no_step_is_a_dead_end() -> None:
    """From a new video / a freshly spliced clip, the table reaches every declared state, names
    only declared states, and every in-progress state has both a completion and a failure."""
    from heaters_resources.db.models import STATES

    for entity, start in (("source_video", "new"), ("clip", "spliced")):
        rules = [r for (e, _), r in st.TRANSITIONS.items() if e == entity]
        for rule in rules:
            assert rule.to_state in STATES[entity]
            assert rule.from_states | rule.overwrite_from <= set(STATES[entity])
        seen, frontier = {start}, [start]
        while frontier:
            state = frontier.pop()
            for rule in rules:
                if state in rule.from_states | rule.overwrite_from and rule.to_state not in seen:
                    seen.add(rule.to_state)
                    frontier.append(rule.to_state)
        assert seen == set(STATES[entity]), set(STATES[entity]) - seen
        for state in STATES[entity]:
            if (
                state.endswith("ing") or state.startswith("generating_")
            ) and state != "pending_review":
                exits = {r.to_state for r in rules if state in r.from_states}
                assert any(s.endswith("_failed") or s == "pending_review" for s in exits), state
                assert any(not s.endswith("_failed") for s in exits), state


def test_not_found(db: Database) -> None:
    with pytest.raises(NotFoundError):
        st.start_downloading(db, 999)
    with pytest.raises(NotFoundError):
        st.start_keyframing(db, 999)


@pytest.mark.parametrize(
    ("state", "step", "failed", "retry"),
    [
        ("keyframing", "keyframe", "keyframing_failed", st.start_keyframing),
        ("generating_sprite", "sprite", "sprite_failed", st.start_sprite_generation),
        ("embedding", "embedding", "embedding_failed", st.start_embedding),
    ],
)
def test_clip_failures_are_retryable(
    db: Database, state: str, step: str, failed: str, retry: Any
) -> None:
    _, cid = _clip_to(db, state)
    st.mark_failed(db, "clip", cid, step, "boom")
    clip = st.get_clip(db, cid)
    assert (clip.state, clip.error) == (failed, "boom")
    retry(db, cid)
    assert _state(db, Clip, cid) == state
    assert st.get_clip(db, cid).attempts == 2
    with pytest.raises(ValueError):
        st.mark_failed(db, "clip", cid, "nonsense", "x")


def test_source_failures_are_retryable(db: Database) -> None:
    vid = st.create_source_video(db, "x")
    with pytest.raises(InvalidTransitionError):
        st.mark_failed(db, "source_video", vid, "download", "not started")
    st.start_downloading(db, vid)
    st.mark_failed(db, "source_video", vid, "download", "404")
    assert st.get_source_video(db, vid).state == "ingestion_failed"
    st.start_downloading(db, vid)
    st.complete_downloading(db, vid, original_key="source_videos/1/original.mp4", fps=25.0)
    st.start_splicing(db, vid)
    st.mark_failed(db, "source_video", vid, "splice", "ffmpeg died")
    assert st.get_source_video(db, vid).state == "splicing_failed"
    st.start_splicing(db, vid)
    assert st.get_source_video(db, vid).error == "ffmpeg died"  # kept until success
    st.create_clips_from_splice(db, vid, [st.ClipSpec(0, 10)])
    assert st.get_source_video(db, vid).error is None


@pytest.mark.parametrize(
    "bad",
    [
        [(0, 100), (50, 150)],  # overlap inside the batch
        [(0, 100), (900, 1001)],  # past the last frame (1000 frames)
        [(0, 100), (100, 100)],  # empty
    ],
)
def test_bulk_creation_rolls_back(db: Database, bad: list[tuple[int, int]]) -> None:
    vid = _downloaded_video(db, frames=1000)
    st.start_splicing(db, vid)
    good = [st.ClipSpec(a, a + 10) for a in range(200, 800, 10)]
    with pytest.raises((InvalidClipsError, ValueError)):
        st.create_clips_from_splice(db, vid, good + [st.ClipSpec(a, b) for a, b in bad])
    assert _count(db, Clip) == 0
    assert st.get_source_video(db, vid).state == "splicing"


def test_exclusion_constraint_backs_up_validation(db: Database) -> None:
    vid, _ = _spliced_video(db, [(0, 100)])
    with pytest.raises(Exception, match="ex_clips_no_overlap"), db.session() as s:
        s.add(
            Clip(
                source_video_id=vid,
                identifier=f"{vid}_50_60",
                start_frame=50,
                end_frame=60,
                start_time=2,
                end_time=2.4,
                fps=25,
            )
        )


def test_resplice_requires_overwrite_and_schedules_old_objects(db: Database) -> None:
    vid, (c1, _c2) = _spliced_video(db, [(0, 100), (100, 200)])
    ident = keys.clip_identifier(vid, 0, 100)
    st.start_keyframing(db, c1)
    st.complete_keyframing(db, c1, [_kf(vid, ident, 25), _kf(vid, ident, 75)])
    with pytest.raises(InvalidTransitionError):
        st.start_splicing(db, vid)
    st.start_splicing(db, vid, overwrite=True)
    with pytest.raises(AlreadyExistsError):
        st.create_clips_from_splice(db, vid, [st.ClipSpec(0, 100), st.ClipSpec(100, 150)])
    ids = st.create_clips_from_splice(
        db, vid, [st.ClipSpec(0, 100), st.ClipSpec(100, 150)], overwrite=True
    )
    assert _count(db, Clip) == 2 and _count(db, ClipArtifact) == 0
    with db.session() as s:
        pending = set(s.execute(select(PendingObjectDeletion.storage_key)).scalars())
    # the reused key of [0, 100) is kept, everything else of the old splice is scheduled
    assert pending == {
        keys.clip_key(vid, f"{vid}_100_200"),
        keys.keyframe_key(vid, ident, "midpoint", 25),
        keys.keyframe_key(vid, ident, "midpoint", 75),
    }
    assert st.get_clip(db, ids[0]).identifier == ident


def test_rekeyframing_with_overwrite_replaces_artifacts(db: Database) -> None:
    vid, cid = _clip_to(db, "pending_review")
    ident = keys.clip_identifier(vid, 0, 100)
    with pytest.raises(InvalidTransitionError):
        st.start_keyframing(db, cid)
    st.start_keyframing(db, cid, overwrite=True)
    st.complete_keyframing(db, cid, [_kf(vid, ident, 50), _kf(vid, ident, 10, "uniform")])
    with db.session() as s:
        keyframes = (
            s.execute(select(ClipArtifact.storage_key).where(ClipArtifact.kind == "keyframe"))
            .scalars()
            .all()
        )
        pending = s.execute(select(PendingObjectDeletion.storage_key)).scalars().all()
    assert sorted(keyframes) == sorted(
        [
            keys.keyframe_key(vid, ident, "midpoint", 50),
            keys.keyframe_key(vid, ident, "uniform", 10),
        ]
    )
    assert pending == []  # the reused key is not scheduled; nothing else was replaced
    st.start_keyframing(db, cid, overwrite=True)
    st.complete_keyframing(db, cid, [_kf(vid, ident, 50)])
    with db.session() as s:
        pending = s.execute(select(PendingObjectDeletion.storage_key)).scalars().all()
    assert pending == [keys.keyframe_key(vid, ident, "uniform", 10)]
    assert _count(db, ClipArtifact) == 2  # one keyframe + the sprite


def test_reembedding_replaces_row(db: Database) -> None:
    _, cid = _clip_to(db, "embedded")
    st.start_embedding(db, cid, overwrite=True)
    st.complete_embedding(db, cid, [0.0, 1.0, 0.0], model_name="m", generation_strategy="avg")
    with db.session() as s:
        rows = s.execute(select(ClipEmbedding.embedding)).scalars().all()
    assert len(rows) == 1 and list(rows[0]) == [0.0, 1.0, 0.0]
    with pytest.raises(AlreadyExistsError):
        st.store_embedding(db, cid, [1, 1, 1], model_name="m", generation_strategy="avg")
    st.store_embedding(db, cid, [1, 1], model_name="other", generation_strategy="avg")
    assert _count(db, ClipEmbedding) == 2


def test_verify_store_refuses_missing_objects(db: Database, local_store: LocalObjectStore) -> None:
    vid = _downloaded_video(db)
    st.start_splicing(db, vid)
    with pytest.raises(MissingObjectError):
        st.create_clips_from_splice(db, vid, [st.ClipSpec(0, 10)], store=local_store)
    local_store.upload_bytes(b"x", keys.clip_key(vid, f"{vid}_0_10"))
    st.create_clips_from_splice(db, vid, [st.ClipSpec(0, 10)], store=local_store)


@pytest.mark.parametrize(
    ("action", "state"),
    [
        (st.approve_clip, "approved"),
        (st.skip_clip, "skipped"),
        (st.archive_clip, "archived"),
    ],
)
def test_review_actions_and_undo(db: Database, action: Any, state: str) -> None:
    _, cid = _clip_to(db, "pending_review")
    event = action(db, cid, actor="bob")
    assert _state(db, Clip, cid) == state
    undo = st.undo_review(db, cid, actor="bob")
    assert _state(db, Clip, cid) == "pending_review"
    with db.session() as s:
        assert s.get(ReviewEvent, undo).undoes_event_id == event
    with pytest.raises(InvalidTransitionError):
        st.undo_review(db, cid)


def test_undo_refused_after_effect_moved_on(db: Database) -> None:
    _, cid = _clip_to(db, "embedding")
    with pytest.raises(InvalidTransitionError):
        st.undo_review(db, cid)
    assert _state(db, Clip, cid) == "embedding"


def _reviewable_clips(db: Database, bounds: list[tuple[int, int]]) -> tuple[int, list[int]]:
    vid, ids = _spliced_video(db, bounds)
    st.start_keyframing_many(db, ids)
    st.complete_keyframing_many(db, {c: [] for c in ids})
    st.start_sprite_generation_many(db, ids)
    st.complete_sprite_generation_many(db, {c: [] for c in ids})
    return vid, ids


def test_merge_with_previous_clip(db: Database) -> None:
    vid, (a, b, c) = _reviewable_clips(db, [(0, 100), (100, 200), (200, 300)])
    st.approve_clip(db, a)
    with pytest.raises(InvalidClipsError):
        st.request_merge(db, a)  # no previous clip
    st.request_merge(db, b, actor="eve")
    assert (_state(db, Clip, a), _state(db, Clip, b)) == ("merging", "merging")
    new = st.complete_merge(db, [a, b])
    merged = st.get_clip(db, new)
    assert (merged.identifier, merged.state, merged.parent_clip_ids) == (
        f"{vid}_0_200",
        "spliced",
        [a, b],
    )
    for old in (a, b):
        clip = st.get_clip(db, old)
        assert clip.state == "archived" and clip.superseded_at is not None
    assert _state(db, Clip, c) == "pending_review"


def test_merge_undo_restores_both_states(db: Database) -> None:
    _, (a, b) = _reviewable_clips(db, [(0, 100), (100, 200)])
    st.skip_clip(db, a)
    st.request_merge(db, b)
    st.undo_review(db, b)
    assert (_state(db, Clip, a), _state(db, Clip, b)) == ("skipped", "pending_review")


def test_split(db: Database) -> None:
    vid, (a,) = _reviewable_clips(db, [(0, 100)])
    with pytest.raises(InvalidClipsError):
        st.request_split(db, a, 100)
    assert _state(db, Clip, a) == "pending_review"
    st.request_split(db, a, 40)
    left, right = st.complete_split(db, a, 40)
    assert st.get_clip(db, left).identifier == f"{vid}_0_40"
    assert st.get_clip(db, right).identifier == f"{vid}_40_100"
    assert st.get_clip(db, right).parent_clip_ids == [a]
    with pytest.raises(InvalidTransitionError):
        st.complete_split(db, a, 40)


def test_row_lock_conflict_is_typed(db: Database) -> None:
    _, cid = _clip_to(db, "spliced")
    with db.session() as s:
        s.execute(text("SELECT 1 FROM clips WHERE id = :i FOR UPDATE"), {"i": cid})
        with pytest.raises(ConflictError):
            st.start_keyframing(db, cid)
    assert _state(db, Clip, cid) == "spliced"


@pytest.mark.parametrize("round_", range(5))
def test_concurrent_transition_exactly_one_wins(db: Database, round_: int) -> None:
    _, cid = _clip_to(db, "spliced")
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def attempt() -> None:
        barrier.wait()
        try:
            st.start_keyframing(db, cid)
            outcomes.append("won")
        except (ConflictError, InvalidTransitionError) as exc:
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes).count("won") == 1, outcomes
    assert st.get_clip(db, cid).attempts == 1


def test_concurrent_transition_held_lock(db: Database) -> None:
    """Deterministic race: one transaction holds the row mid-transition, the other is refused."""
    _, cid = _clip_to(db, "spliced")
    with db.session() as s:
        owner = leases.take_lease(s)  # held by this (live) process
        s.execute(
            text("UPDATE clips SET state = 'keyframing', lease_id = :o WHERE id = :i"),
            {"i": cid, "o": owner},
        )
        with pytest.raises(ConflictError):
            st.start_keyframing(db, cid)
    with pytest.raises(InvalidTransitionError):  # its live holder is still at work
        st.start_keyframing(db, cid)


def test_bulk_paths(db: Database) -> None:
    vid = _downloaded_video(db, frames=100_000)
    st.start_splicing(db, vid)
    ids = st.create_clips_from_splice(
        db, vid, [st.ClipSpec(i * 10, i * 10 + 10) for i in range(500)]
    )
    assert ids == sorted(ids) and len(ids) == 500
    st.start_keyframing_many(db, ids)
    n = st.complete_keyframing_many(
        db,
        {
            c: [_kf(vid, keys.clip_identifier(vid, i * 10, i * 10 + 10), p) for p in (25, 50, 75)]
            for i, c in enumerate(ids)
        },
    )
    assert n == 1500 and _count(db, ClipArtifact) == 1500
    with db.session() as s:
        assert s.execute(select(func.count()).where(Clip.state == "keyframed")).scalar() == 500
    # one clip in the wrong state refuses the whole batch
    st.start_sprite_generation(db, ids[0])
    with pytest.raises(InvalidTransitionError):
        st.start_sprite_generation_many(db, ids)
    with db.session() as s:
        assert s.execute(select(func.count()).where(Clip.state == "keyframed")).scalar() == 499


def _clip_pages(db: Database, ids: list[int]) -> dict[int, int]:
    with db.session() as s:
        rows = s.execute(
            text("SELECT id, (ctid::text::point)[0]::bigint FROM clips WHERE id = ANY(:ids)"),
            {"ids": ids},
        ).all()
    return {int(i): int(page) for i, page in rows}


def test_bulk_transitions_update_rows_in_place(db: Database) -> None:
    """Four bulk transitions of 2,000 fresh clips keep every row on its page: heap-only (HOT)
    updates that touch no index and re-check no constraint (migration 0003's fillfactor)."""
    vid = _downloaded_video(db, frames=10_000_000)
    st.start_splicing(db, vid)
    # short rows first (frames 0..), long identifiers after (frames 10^6..)
    specs = [st.ClipSpec(i * 10, i * 10 + 10) for i in range(1000)] + [
        st.ClipSpec(1_000_000 + i * 10, 1_000_000 + i * 10 + 10) for i in range(1000)
    ]
    ids = st.create_clips_from_splice(db, vid, specs)
    before = _clip_pages(db, ids)
    assert len(set(before.values())) > 40  # many pages, each shared by many clips
    st.start_keyframing_many(db, ids)
    st.complete_keyframing_many(db, {c: [] for c in ids})
    st.start_sprite_generation_many(db, ids)
    assert _clip_pages(db, ids) == before
    st.complete_sprite_generation_many(db, {c: [] for c in ids})
    assert _clip_pages(db, ids) == before
    assert _state(db, Clip, ids[-1]) == "pending_review"


def test_bulk_values_survive_the_array_encoding(db: Database) -> None:
    """Bulk inserts send each column as one array literal: quoting, separators, NULL-looking
    text, non-ASCII and float precision come back exactly."""
    vid = _downloaded_video(db, frames=1000)
    st.start_splicing(db, vid)
    odd = [
        'clips/a "quoted" key.mp4',
        "clips/back\\slash\\\\.mp4",
        "clips/{braces},comma.mp4",
        "NULL",
        "clips/\u00fcmlaut \u2013 \u2713.mp4",
        "clips/ spaces .mp4",
        "clips/'single'.mp4",
    ]
    specs = [st.ClipSpec(i * 10, i * 10 + 7, storage_key=k) for i, k in enumerate(odd)]
    ids = st.create_clips_from_splice(db, vid, specs, fps=29.97)
    with db.session() as s:
        rows = {c.id: c for c in s.execute(select(Clip).where(Clip.id.in_(ids))).scalars()}
    for cid, spec in zip(ids, specs, strict=True):
        assert rows[cid].storage_key == spec.storage_key
        assert rows[cid].start_time == spec.start_frame / 29.97
        assert rows[cid].end_time == spec.end_frame / 29.97
    st.start_keyframing_many(db, ids)
    arts = {
        cid: [
            st.ArtifactSpec(
                "keyframe",
                "midpoint",
                f"{k}.jpg",
                tag='t"\\,{}',
                meta={"quote": '"', "n": 1.5, "none": None},
            )
        ]
        for cid, k in zip(ids, odd, strict=True)
    }
    assert st.complete_keyframing_many(db, arts) == len(odd)
    with db.session() as s:
        got = {a.clip_id: a for a in s.execute(select(ClipArtifact)).scalars()}
    for cid, (spec,) in arts.items():
        assert (got[cid].storage_key, got[cid].tag) == (spec.storage_key, spec.tag)
        assert got[cid].meta == {"quote": '"', "n": 1.5, "none": None}


def test_array_literal_of_numeric_subclasses(db: Database) -> None:
    """numpy floats and IntEnums are written by value, not by their repr."""
    import enum

    import numpy as np

    class Level(enum.IntEnum):
        HIGH = 3

    values = [np.float64(0.1), Level.HIGH, float("nan"), float("-inf"), None, True]
    literal = array_literal(values)
    assert literal == "{0.1,3,NaN,-Infinity,NULL,t}"
    with db.session() as s:
        back = s.execute(
            text("SELECT CAST(:a AS float8[])"), {"a": array_literal(values[:5])}
        ).scalar_one()
    assert back[:2] == [0.1, 3.0] and back[2] != back[2] and back[3] == float("-inf")
    assert back[4] is None
    assert array_literal([object()]) is None and array_literal([[1, 2]]) is None
