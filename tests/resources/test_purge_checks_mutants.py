"""The archive purge and the invariant checks behind the Dagster asset checks, pinned exactly.

Purge: only clips still `archived` (an undo may have come first) and not yet purged lose their
objects; a clip whose objects could not all be deleted keeps its rows; a `purge` review event
records what happened (and makes undo impossible). Checks: the exact problem strings for gaps,
overlaps, short coverage, missing artifacts and objects, sprite sizes, vector dimension and norm.
Runs on the real Postgres of tests/conftest.py and a local object store.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import cv2
import numpy as np
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from heaters_resources import states as st
from heaters_resources import steps
from heaters_resources.db.engine import Database
from heaters_resources.db.models import ClipArtifact, ReviewEvent
from heaters_resources.store import keys
from heaters_resources.store.objects import LocalObjectStore

MODEL, STRATEGY = "test/model", "center"


def _jpeg(width: int, height: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((height, width, 3), 128, np.uint8))
    assert ok
    return bytes(buf.tobytes())


def _video(
    db: Database,
    store: LocalObjectStore,
    bounds: list[tuple[int, int]],
    frame_count: int | None = 100,
) -> tuple[int, list[int], list[str]]:
    """A spliced video with stored clip objects; returns (video id, clip ids, identifiers)."""
    vid = st.create_source_video(db, "v.mp4")
    st.start_downloading(db, vid)
    st.complete_downloading(
        db,
        vid,
        original_key=keys.source_original_key(vid, "mp4"),
        fps=10.0,
        frame_count=frame_count,
    )
    st.start_splicing(db, vid)
    idents = [keys.clip_identifier(vid, a, b) for a, b in bounds]
    for ident in idents:
        store.upload_bytes(b"clip", keys.clip_key(vid, ident))
    ids = st.create_clips_from_splice(db, vid, [st.ClipSpec(a, b) for a, b in bounds])
    return vid, ids, idents


def _review_ready(
    db: Database, store: LocalObjectStore, vid: int, ids: list[int], idents: list[str]
) -> None:
    """Two keyframes and a sprite (with its JSON sidecar) per clip, all stored; pending_review."""
    for cid, ident in zip(ids, idents, strict=True):
        st.start_keyframing(db, cid)
        kfs = []
        for pct in (25, 75):
            key = keys.keyframe_key(vid, ident, "multi", pct)
            store.upload_bytes(_jpeg(16, 8), key)
            kfs.append(st.ArtifactSpec("keyframe", "multi", key, tag=str(pct)))
        st.complete_keyframing(db, cid, kfs)
        st.start_sprite_generation(db, cid)
        key, side = keys.sprite_key(vid, ident, "p"), keys.sprite_metadata_key(vid, ident, "p")
        store.upload_bytes(_jpeg(30, 8), key)
        store.upload_bytes(b"{}", side)
        meta = {"cols": 3, "rows": 2, "tile_width": 10, "tile_height": 4}
        sprite = st.ArtifactSpec("sprite_sheet", "p", key, sidecar_key=side, meta=meta)
        st.complete_sprite_generation(db, cid, sprite)


def _objects(store: LocalObjectStore) -> set[str]:
    return {o.key for o in store.list("")}


def _sql(db: Database, statement: str, **params: Any) -> None:
    with db.engine.begin() as conn:
        conn.execute(text(statement), params)


# ------------------------------------------------------------------------------------ purge


def test_purge_deletes_every_object_of_archived_clips_only(
    db: Database, local_store: LocalObjectStore
) -> None:
    """Archived clips lose every object and artifact row; skipped, pending or un-archived ones keep
    theirs; one event records it."""
    vid, ids, idents = _video(db, local_store, [(0, 10), (10, 20), (20, 30), (30, 100)])
    _review_ready(db, local_store, vid, ids, idents)
    a, b, c, d = ids
    st.archive_clip(db, a)
    archived_b = st.archive_clip(db, b)
    st.skip_clip(db, c)
    st.archive_clip(db, d)
    st.undo_review(db, d)  # undone before the purge ran: must survive it
    keep = set(steps.clip_object_keys(db, [c, d]))
    assert len(keep) == 10  # per clip: its file, 2 keyframes, the sprite and its sidecar
    assert set(steps.clip_object_keys(db, [a])) == {
        keys.clip_key(vid, idents[0]),
        keys.keyframe_key(vid, idents[0], "multi", 25),
        keys.keyframe_key(vid, idents[0], "multi", 75),
        keys.sprite_key(vid, idents[0], "p"),
        keys.sprite_metadata_key(vid, idents[0], "p"),
    }
    out = steps.purge_archived_clips(db, local_store, ids, event_id=archived_b, actor="tester")
    assert (out.clip_ids, out.deleted, out.failed, out.requests) == ([a, b], 10, {}, 1)
    assert _objects(local_store) == keep
    for cid in (a, b):
        clip = st.get_clip(db, cid)
        assert clip.storage_key is None and clip.state == "archived"
    assert st.get_clip(db, c).storage_key == keys.clip_key(vid, idents[2])
    with db.session() as s:
        arts = dict(
            s.execute(
                select(ClipArtifact.clip_id, func.count()).group_by(ClipArtifact.clip_id)
            ).all()
        )
        event = s.scalars(select(ReviewEvent).where(ReviewEvent.action == "purge")).one()
    assert arts == {c: 3, d: 3}
    assert (event.actor, event.clip_ids, event.previous_states) == (
        "tester",
        [a, b],
        ["archived", "archived"],
    )
    assert event.payload == {"event_id": archived_b, "objects_deleted": 10}


def test_a_second_purge_finds_nothing(db: Database, local_store: LocalObjectStore) -> None:
    """Clips not archived, or already purged, are left alone: a repeated purge request is a no-
    op."""
    _, (a, b), _ = _video(db, local_store, [(0, 10), (10, 100)])
    st.start_keyframing(db, a)  # any state but archived
    assert steps.purge_archived_clips(db, local_store, [a, b]) == steps.PurgeOutcome([], 0, {}, 0)
    _sql(db, "UPDATE clips SET state = 'archived' WHERE id = :i", i=b)
    first = steps.purge_archived_clips(db, local_store, [b])
    assert (first.clip_ids, first.deleted) == ([b], 1)
    assert steps.purge_archived_clips(db, local_store, [b]) == steps.PurgeOutcome([], 0, {}, 0)
    with db.session() as s:
        purges = s.scalars(select(ReviewEvent).where(ReviewEvent.action == "purge")).all()
    assert [(e.actor, e.clip_ids, e.payload) for e in purges] == [
        ("archive-job", [b], {"event_id": None, "objects_deleted": 1})
    ]


def test_purge_touches_only_the_clips_it_is_given(
    db: Database, local_store: LocalObjectStore
) -> None:
    """Other archived clips wait for their own purge (and their own grace period)."""
    _, (a, b), _ = _video(db, local_store, [(0, 10), (10, 100)])
    _sql(db, "UPDATE clips SET state = 'archived'")
    assert steps.purge_archived_clips(db, local_store, [b]).clip_ids == [b]
    assert st.get_clip(db, a).storage_key is not None


def test_an_undone_archive_purges_nothing(db: Database, local_store: LocalObjectStore) -> None:
    """The purge of an archive action that was undone does nothing, even when the clip has been
    archived again since by other means (here: merged away)."""
    vid, (a, b), idents = _video(db, local_store, [(0, 10), (10, 100)])
    _review_ready(db, local_store, vid, [a, b], idents)
    archived = st.archive_clip(db, a)
    st.undo_review(db, a)
    st.request_merge(db, b)
    st.complete_merge(db, [a, b])
    assert st.get_clip(db, a).state == "archived"
    before = _objects(local_store)
    out = steps.purge_archived_clips(db, local_store, [a], event_id=archived)
    assert out == steps.PurgeOutcome([], 0, {}, 0)
    assert _objects(local_store) == before


def test_a_clip_archived_again_later_waits_for_that_purge(
    db: Database, local_store: LocalObjectStore
) -> None:
    """A later archive of the clip (with its own grace period for undo) wins over an older
    purge request; other clips' later archives do not matter."""
    _, (a, b, c), _ = _video(db, local_store, [(0, 10), (10, 20), (20, 100)])
    _sql(db, "UPDATE clips SET state = 'pending_review'")
    first = st.archive_clip(db, a)
    _sql(
        db,
        "INSERT INTO review_events (action, actor, clip_ids, previous_states, payload) "
        "VALUES ('archive', 'x', ARRAY[:a]::bigint[], ARRAY['pending_review'], '{}')",
        a=a,
    )
    later = st.archive_clip(db, b)
    assert steps.purge_archived_clips(db, local_store, [a], event_id=first).clip_ids == []
    assert st.get_clip(db, a).storage_key is not None
    st.archive_clip(db, c)  # a later archive of another clip
    assert steps.purge_archived_clips(db, local_store, [b], event_id=later).clip_ids == [b]
    with db.session() as s:
        newest = s.scalar(select(func.max(ReviewEvent.id)).where(ReviewEvent.action == "archive"))
    assert steps.purge_archived_clips(db, local_store, [c], event_id=newest).clip_ids == [c]


def test_a_clip_whose_objects_were_not_all_deleted_keeps_its_rows(
    db: Database, local_store: LocalObjectStore
) -> None:
    """Rows are forgotten only for clips whose objects are all gone, so a retry can still find the
    rest."""
    vid, ids, idents = _video(db, local_store, [(0, 10), (10, 100)])
    _review_ready(db, local_store, vid, ids, idents)
    a, b = ids
    stuck = keys.keyframe_key(vid, idents[0], "multi", 75)
    local_store.delete_many([stuck])
    local_store.upload_bytes(b"x", f"{stuck}/inner")  # a folder where the file was: undeletable
    st.archive_clip(db, a)
    st.archive_clip(db, b)
    out = steps.purge_archived_clips(db, local_store, [a, b])
    assert out.clip_ids == [b] and list(out.failed) == [stuck]
    assert out.deleted == 9  # a's other four objects went, b's five
    assert st.get_clip(db, a).storage_key == keys.clip_key(vid, idents[0])
    assert st.get_clip(db, b).storage_key is None
    with db.session() as s:
        left = set(s.scalars(select(ClipArtifact.clip_id)))
        event = s.scalars(select(ReviewEvent).where(ReviewEvent.action == "purge")).one()
    assert left == {a}
    assert (event.clip_ids, event.previous_states) == ([b], ["archived"])
    assert event.payload == {"event_id": None, "objects_deleted": 9}


# ----------------------------------------------------------------------------------- tiling


def test_tiling_problems_name_gaps_and_coverage(
    db: Database, local_store: LocalObjectStore
) -> None:
    """Live clips must tile the video from frame 0 to its end; each gap and short coverage is
    named."""
    vid, (first, _, _), _ = _video(db, local_store, [(0, 10), (10, 40), (40, 100)])
    assert steps.tiling_problems(db, vid) == []
    _sql(db, "UPDATE clips SET state = 'splitting' WHERE id = :i", i=first)
    st.complete_split(db, first, 5)  # the two new clips are stored after the others
    assert steps.tiling_problems(db, vid) == []
    gappy, _, _ = _video(db, local_store, [(3, 10), (12, 20), (20, 60)])
    assert steps.tiling_problems(db, gappy) == [
        "gap [0, 3)",
        "gap [10, 12)",
        "clips end at 60, video has 100 frames",
    ]
    unknown, _, _ = _video(db, local_store, [(0, 10)], frame_count=None)
    assert steps.tiling_problems(db, unknown) == []
    assert steps.tiling_problems(db, 99_999) == ["video 99999 not found"]


def test_tiling_problems_ignore_superseded_clips(
    db: Database, local_store: LocalObjectStore
) -> None:
    """Clips replaced by a merge no longer count; their replacement does."""
    vid, (a, b), _ = _video(db, local_store, [(0, 50), (50, 100)])
    _sql(db, "UPDATE clips SET state = 'merging' WHERE id = ANY(:ids)", ids=[a, b])
    st.complete_merge(db, [a, b])
    assert steps.tiling_problems(db, vid) == []


class _OneSession:
    """A stand-in for `Database` whose sessions are one open session (and its transaction)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    @contextmanager
    def session(self) -> Iterator[Session]:
        yield self._session


def test_tiling_problems_name_an_overlap(db: Database, local_store: LocalObjectStore) -> None:
    """Live clips cannot overlap (an exclusion constraint); the check is the second line of
    defence, so it is run inside a transaction that drops the constraint (rolled back after)."""
    vid, (_, b, c), _ = _video(db, local_store, [(0, 10), (10, 20), (20, 100)])
    with db.engine.connect() as conn, conn.begin() as transaction:
        conn.execute(text("ALTER TABLE clips DROP CONSTRAINT ex_clips_no_overlap"))
        conn.execute(
            text("UPDATE clips SET start_frame = 7, end_frame = 9 WHERE id = :i"), {"i": b}
        )
        conn.execute(text("UPDATE clips SET start_frame = 8 WHERE id = :i"), {"i": c})
        with Session(bind=conn) as session:
            problems = steps.tiling_problems(cast(Database, _OneSession(session)), vid)
        transaction.rollback()
    assert problems == ["overlap at [7, 10)", "overlap at [8, 10)"]
    assert steps.tiling_problems(db, vid) == []


# -------------------------------------------------------------------------------- artifacts


def test_artifact_problems_name_missing_rows_and_objects(
    db: Database, local_store: LocalObjectStore
) -> None:
    """Missing artifact rows and objects lost from the store are named, only for the clips asked
    about."""
    vid, ids, idents = _video(db, local_store, [(0, 10), (10, 20), (20, 100)])
    _review_ready(db, local_store, vid, ids[:2], idents[:2])
    assert steps.artifact_problems(db, local_store, [], "keyframe") == []
    assert steps.artifact_problems(db, local_store, idents[:2], "keyframe") == []
    assert steps.artifact_problems(db, local_store, idents[:2], "sprite_sheet") == []
    lost = keys.keyframe_key(vid, idents[1], "multi", 25)
    local_store.delete_many([lost])
    assert steps.artifact_problems(db, local_store, idents, "keyframe") == [
        f"{idents[2]}: no keyframe",
        f"{idents[1]}: {lost} missing from the store",
    ]
    assert steps.artifact_problems(db, local_store, [idents[2]], "sprite_sheet") == [
        f"{idents[2]}: no sprite_sheet"
    ]
    assert steps.artifact_problems(db, local_store, idents[:1], "keyframe") == []  # only those


def test_sprite_size_is_the_stored_pixels(db: Database, local_store: LocalObjectStore) -> None:
    """The check measures the image as stored, not as a viewer would rotate it (EXIF)."""
    import io

    from PIL import Image

    vid, ids, idents = _video(db, local_store, [(0, 100)])
    _review_ready(db, local_store, vid, ids, idents)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    buf = io.BytesIO()
    Image.new("RGB", (30, 8), (120, 50, 50)).save(buf, "JPEG", exif=exif)
    local_store.upload_bytes(buf.getvalue(), keys.sprite_key(vid, idents[0], "p"))
    assert steps.artifact_problems(db, local_store, idents, "sprite_sheet") == []


def test_sprite_problems_compare_the_image_with_its_metadata(
    db: Database, local_store: LocalObjectStore
) -> None:
    """A sprite whose pixels do not match its metadata (or do not decode, or are gone) is named."""
    vid, ids, idents = _video(db, local_store, [(0, 10), (10, 20), (20, 100)])
    _review_ready(db, local_store, vid, ids, idents)
    a, b, c = idents
    local_store.upload_bytes(_jpeg(31, 8), keys.sprite_key(vid, a, "p"))
    local_store.upload_bytes(b"not an image", keys.sprite_key(vid, b, "p"))
    local_store.delete_many([keys.sprite_key(vid, c, "p")])
    problems = steps.artifact_problems(db, local_store, idents, "sprite_sheet")
    assert sorted(problems) == [
        f"{a}: sprite is (31, 8), metadata says (30, 8)",
        f"{b}: sprite is None, metadata says (30, 8)",
        f"{c}: {keys.sprite_key(vid, c, 'p')} missing from the store",
    ]


@pytest.mark.parametrize(
    ("meta", "want"),
    [
        ({"rows": 2, "tile_width": 10, "tile_height": 4}, (0, 8)),
        ({"cols": 3, "tile_width": 10, "tile_height": 4}, (30, 0)),
        ({"cols": 3, "rows": 2, "tile_height": 4}, (0, 8)),
        ({"cols": 3, "rows": 2, "tile_width": 10}, (30, 0)),
    ],
)
def test_sprite_metadata_without_a_field_counts_it_as_zero(
    db: Database, local_store: LocalObjectStore, meta: dict[str, int], want: tuple[int, int]
) -> None:
    """Incomplete metadata never matches a real image."""
    vid, ids, idents = _video(db, local_store, [(0, 100)])
    _review_ready(db, local_store, vid, ids, idents)
    _sql(
        db, "UPDATE clip_artifacts SET metadata = CAST(:m AS jsonb)", m=str(meta).replace("'", '"')
    )
    assert steps.artifact_problems(db, local_store, idents, "sprite_sheet") == [
        f"{idents[0]}: sprite is (30, 8), metadata says {want}"
    ]


# ------------------------------------------------------------------------------- embeddings


def test_embedding_problems_name_missing_dimension_and_norm(
    db: Database, local_store: LocalObjectStore
) -> None:
    """Each clip needs one vector of the model's dimension for that model and strategy."""
    _, ids, idents = _video(db, local_store, [(0, 10), (10, 20), (20, 30), (30, 40), (40, 100)])

    def put(cid: int, vector: list[float], model: str = MODEL, strategy: str = STRATEGY) -> None:
        st.store_embedding(db, cid, vector, model_name=model, generation_strategy=strategy)

    put(ids[0], [0.0, 1.0, 0.0])
    put(ids[1], [1.0005, 0.0, 0.0])  # inside the default tolerance of 1e-3
    put(ids[2], [1.0, 0.0])
    put(ids[3], [1.0, 0.0, 0.0], model="other/model")
    put(ids[4], [1.0, 0.0, 0.0], strategy="other")
    assert steps.embedding_problems(db, [], MODEL, STRATEGY, 3) == []
    assert steps.embedding_problems(db, idents[:2], MODEL, STRATEGY, 3) == []
    problems = steps.embedding_problems(db, idents, MODEL, STRATEGY, 3)
    assert problems[:2] == sorted(
        [f"{idents[3]}: no {MODEL}/{STRATEGY} vector", f"{idents[4]}: no {MODEL}/{STRATEGY} vector"]
    )
    assert problems[2:] == [f"{idents[2]}: dimension 2, model gives 3"]


def test_embedding_norm_tolerance(db: Database, local_store: LocalObjectStore) -> None:
    """Vectors are stored normalised: a norm off by more than the tolerance is named."""
    _, (a, b), idents = _video(db, local_store, [(0, 10), (10, 100)])
    st.store_embedding(db, a, [1.002, 0.0], model_name=MODEL, generation_strategy=STRATEGY)
    st.store_embedding(db, b, [2.0, 0.0], model_name=MODEL, generation_strategy=STRATEGY)
    assert steps.embedding_problems(db, idents[:1], MODEL, STRATEGY, 2) == [
        f"{idents[0]}: norm 1.002000"
    ]
    assert steps.embedding_problems(db, idents[:1], MODEL, STRATEGY, 2, tolerance=0.01) == []
    # |2.0 - 1| is exactly the tolerance: still accepted (the bound is inclusive)
    assert steps.embedding_problems(db, idents[1:], MODEL, STRATEGY, 2, tolerance=1.0) == []
    assert steps.embedding_problems(db, idents[1:], MODEL, STRATEGY, 2, tolerance=0.5) == [
        f"{idents[1]}: norm 2.000000"
    ]
