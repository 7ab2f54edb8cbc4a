"""The transition checks and the review rules, each pinned exactly: which state may move where
(with and without overwrite), what a refusal says and leaves behind, what every review action,
undo, merge and split writes, and which clip a merge or an undo picks.

The table itself (`states.table.TRANSITIONS`) is data built at import time; the checks that read
it (`check_transition`, `lock_rows`, `apply_transition`, `single_transition`, `mark_failed`)
and the review functions (`states.review`) are what scripts/mutation.sh mutates. Most tests run
on the real Postgres of tests/conftest.py and drive clips through the public state API.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select, text, update

from heaters_resources import states as st
from heaters_resources.db.engine import Database
from heaters_resources.db.models import STATES, Clip, ReviewEvent
from heaters_resources.errors import (
    ConflictError,
    InvalidClipsError,
    InvalidTransitionError,
    MissingObjectError,
    NotFoundError,
)
from heaters_resources.states.core import (
    apply_transition,
    check_transition,
    lock_rows,
    single_transition,
)
from heaters_resources.states.table import Transition, _t
from heaters_resources.store.objects import LocalObjectStore

# ------------------------------------------------------------------------------ pure checks


def test_table_rows_are_built_as_frozensets() -> None:
    """Rows compare and test membership as sets: duplicates and order in the table source do not
    matter."""
    assert _t(["a", "b", "a"], "c") == Transition(frozenset({"a", "b"}), "c", frozenset())
    assert _t({"a"}, "b", ["c"]) == Transition(frozenset({"a"}), "b", frozenset({"c"}))


def _rows(*states_: str) -> dict[int, Any]:
    return {i + 1: SimpleNamespace(state=s) for i, s in enumerate(states_)}


def test_check_transition_allows_exactly_the_from_states() -> None:
    """Every (entity, action) against every declared state: allowed iff the table says so, and
    the overwrite states only when overwrite is asked for."""
    for (entity, action), rule in st.TRANSITIONS.items():
        for state in STATES[entity]:
            for overwrite in (False, True):
                allowed = state in rule.from_states or (overwrite and state in rule.overwrite_from)
                if allowed:
                    got = check_transition(entity, action, _rows(state), overwrite=overwrite)
                    assert got == rule.to_state, (entity, action, state)
                else:
                    with pytest.raises(InvalidTransitionError):
                        check_transition(entity, action, _rows(state), overwrite=overwrite)


def test_check_transition_names_the_first_refused_row() -> None:
    """A refusal names the row, the state it was in and what would have been allowed (callers and
    the review page show it)."""
    with pytest.raises(InvalidTransitionError) as info:
        check_transition("clip", "start_keyframing", _rows("spliced", "approved", "embedded"))
    err = info.value
    assert (err.entity, err.entity_id, err.action, err.state) == (
        "clip",
        2,
        "start_keyframing",
        "approved",
    )
    assert err.allowed == ("keyframing_failed", "spliced")
    with pytest.raises(InvalidTransitionError) as info:
        check_transition("clip", "start_keyframing", _rows("approved"), overwrite=True)
    assert info.value.allowed == (
        "keyframed",
        "keyframing_failed",
        "pending_review",
        "spliced",
        "sprite_failed",
    )


def test_key_review_rules() -> None:
    """The rules a reviewer meets, spelled out: archive also from skipped, undo only from a
    review outcome, merge partners may already be approved or skipped, nothing from archived."""
    assert check_transition("clip", "archive", _rows("skipped")) == "archived"
    assert check_transition("clip", "merge_into_next", _rows("approved", "skipped")) == "merging"
    for outcome in ("approved", "skipped", "archived", "merging", "splitting"):
        assert check_transition("clip", "undo", _rows(outcome)) == "pending_review"
    for action in ("approve", "skip", "request_merge", "request_split"):
        with pytest.raises(InvalidTransitionError):
            check_transition("clip", action, _rows("skipped"))
    with pytest.raises(InvalidTransitionError):
        check_transition("clip", "undo", _rows("embedded"))


# ----------------------------------------------------------------------------------- helpers


def _state(db: Database, clip_id: int) -> str:
    return st.get_clip(db, clip_id).state


def _events(db: Database) -> list[ReviewEvent]:
    with db.session() as s:
        return list(s.scalars(select(ReviewEvent).order_by(ReviewEvent.id)))


def _video(db: Database, frames: int = 1000, fps: float = 25.0) -> int:
    vid = st.create_source_video(db, "https://example.test/v")
    st.start_downloading(db, vid)
    st.complete_downloading(
        db, vid, original_key=f"source_videos/{vid}/original.mp4", fps=fps, frame_count=frames
    )
    st.start_splicing(db, vid)
    return vid


def _pending(db: Database, bounds: list[tuple[int, int]], vid: int | None = None) -> list[int]:
    """Clips of one (new) video driven to pending_review."""
    vid = vid if vid is not None else _video(db)
    ids = st.create_clips_from_splice(db, vid, [st.ClipSpec(a, b) for a, b in bounds])
    st.start_keyframing_many(db, ids)
    st.complete_keyframing_many(db, {c: [] for c in ids})
    st.start_sprite_generation_many(db, ids)
    st.complete_sprite_generation_many(db, {c: [] for c in ids})
    return ids


def _force_state(db: Database, clip_id: int, state: str) -> None:
    with db.session() as s:
        s.execute(update(Clip).where(Clip.id == clip_id).values(state=state))


def _version(db: Database, clip_id: int) -> str:
    clip = st.get_clip(db, clip_id)
    return st.clip_version(clip.state, clip.updated_at)


# ------------------------------------------------------------------------ locks and results


def test_single_transition_reports_both_states(db: Database) -> None:
    """Callers log and report the state a row came from and the one it went to."""
    vid = st.create_source_video(db, "x")
    assert st.start_downloading(db, vid) == st.TransitionResult(
        "source_video", vid, "new", "downloading"
    )
    (cid,) = _pending(db, [(0, 10)])
    assert st.start_keyframing(db, cid, overwrite=True) == st.TransitionResult(
        "clip", cid, "pending_review", "keyframing"
    )


def test_overwrite_is_opt_in(db: Database) -> None:
    """Re-running a done step must be asked for: without `overwrite` the overwrite states are
    refused, at every level."""
    (cid,) = _pending(db, [(0, 10)])
    with pytest.raises(InvalidTransitionError):
        single_transition(db, "clip", "start_keyframing", cid)
    with pytest.raises(InvalidTransitionError), db.session() as s:
        apply_transition(s, "clip", "start_keyframing", [cid])
    assert _state(db, cid) == "pending_review"


def test_a_transition_moves_only_its_rows_and_stamps_them(db: Database) -> None:
    """A bulk transition touches exactly its rows, and `updated_at` (the review page's version)
    moves."""
    a, b, c = _pending(db, [(0, 10), (10, 20), (20, 30)])
    before = {i: st.get_clip(db, i).updated_at for i in (a, b, c)}
    time.sleep(0.01)
    st.start_keyframing_many(db, [a, c], overwrite=True)
    assert [_state(db, i) for i in (a, b, c)] == ["keyframing", "pending_review", "keyframing"]
    after = {i: st.get_clip(db, i).updated_at for i in (a, b, c)}
    assert after[a] > before[a] and after[c] > before[c] and after[b] == before[b]


def test_missing_rows_are_not_found_by_id(db: Database) -> None:
    """Unknown ids are a NotFoundError naming them (at most ten), and nothing moves."""
    (cid,) = _pending(db, [(0, 10)])
    with pytest.raises(NotFoundError, match=r"clip not found: \[998, 999\]"):
        st.start_keyframing_many(db, [cid, 998, 999], overwrite=True)
    assert _state(db, cid) == "pending_review"
    many = list(range(1000, 1012))
    with pytest.raises(NotFoundError) as info:  # the message names the first ten only
        st.start_keyframing_many(db, many)
    assert str(info.value) == f"clip not found: {many[:10]}"


@pytest.mark.timeout(30)
def test_a_locked_row_is_refused_at_once(db: Database) -> None:
    """NOWAIT: a row held by another transaction raises ConflictError immediately instead of
    queueing (the waiting session would otherwise hit the statement timeout set here)."""
    ids = _pending(db, [(i * 10, i * 10 + 10) for i in range(7)])
    with db.session() as holder:
        holder.execute(text("SELECT 1 FROM clips WHERE id = :i FOR UPDATE"), {"i": ids[-1]})
        with db.session() as s:
            s.execute(text("SET LOCAL statement_timeout = '3s'"))
            started = time.monotonic()
            with pytest.raises(ConflictError) as info:
                lock_rows(s, "clip", ids)
            assert time.monotonic() - started < 2.5
    # the message names the first five ids
    assert str(info.value) == f"clip {ids[:5]} is locked by a concurrent transition"
    assert _state(db, ids[-1]) == "pending_review"


def test_lock_rows_returns_the_requested_columns(db: Database) -> None:
    """Callers read the locked rows' current state and extra columns from what lock_rows returns."""
    a, b = _pending(db, [(0, 10), (10, 25)])
    with db.session() as s:
        rows = lock_rows(s, "clip", [b, a], Clip.__table__.c.end_frame)
    assert sorted(rows) == [a, b]
    assert (rows[b].state, rows[b].end_frame, rows[a].end_frame) == ("pending_review", 25, 10)


def test_mark_failed_keeps_the_error_and_checks_the_step(db: Database) -> None:
    """A failure keeps its (bounded) error text; an unknown step is a programming error, refused
    with the valid steps."""
    (cid,) = _pending(db, [(0, 10)])
    st.approve_clip(db, cid)
    st.start_embedding(db, cid)
    result = st.mark_failed(db, "clip", cid, "embedding", "x" * 20_000)
    assert result == st.TransitionResult("clip", cid, "embedding", "embedding_failed")
    assert st.get_clip(db, cid).error == "x" * 10_000
    with pytest.raises(ValueError) as info:
        st.mark_failed(db, "clip", cid, "download", "e")
    assert str(info.value) == (
        "unknown step 'download' for clip; one of "
        "('keyframe', 'sprite', 'embedding', 'merge', 'split')"
    )
    with pytest.raises(ValueError, match="unknown step"):
        st.mark_failed(db, "nothing", cid, "embedding", "e")  # type: ignore[arg-type]
    vid = st.create_source_video(db, "y")
    st.start_downloading(db, vid)
    st.mark_failed(db, "source_video", vid, "download", "404")
    assert st.get_source_video(db, vid).state == "ingestion_failed"


# -------------------------------------------------------------------------- review actions


def test_clip_version_is_state_and_iso_time() -> None:
    """The version token a review page sends back: state and last change, ISO formatted."""
    stamp = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert st.clip_version("approved", stamp) == "approved@2024-05-06T07:08:09+00:00"
    assert st.clip_version("skipped", "raw") == "skipped@raw"


@pytest.mark.parametrize(
    ("act", "action", "state"),
    [
        (st.approve_clip, "approve", "approved"),
        (st.skip_clip, "skip", "skipped"),
        (st.archive_clip, "archive", "archived"),
    ],
)
def test_review_action_records_an_event(db: Database, act: Any, action: str, state: str) -> None:
    """Every review action is an append-only event recording what it replaced (undo reads it)."""
    a, b = _pending(db, [(0, 10), (10, 20)])
    event_id = act(db, a, "alice", expected_version=_version(db, a))
    clip = st.get_clip(db, a)
    assert clip.state == state and clip.reviewed_at is not None
    assert st.get_clip(db, b).reviewed_at is None
    [event] = _events(db)
    assert (event.id, event.action, event.actor, event.clip_ids) == (event_id, action, "alice", [a])
    assert (event.previous_states, event.payload, event.undoes_event_id) == (
        ["pending_review"],
        {},
        None,
    )


def test_a_stale_page_cannot_act(db: Database) -> None:
    """A page showing an older version of the clip may not act on it (another reviewer or an undo
    came first)."""
    (a,) = _pending(db, [(0, 10)])
    seen = _version(db, a)
    st.skip_clip(db, a)
    for act in (
        lambda: st.archive_clip(db, a, expected_version=seen),
        lambda: st.undo_review(db, a, expected_version=seen),
        lambda: st.request_split(db, a, 5, expected_version=seen),
        lambda: st.request_merge(db, a, expected_version=seen),
    ):
        with pytest.raises(st.StaleActionError, match="changed since the page was loaded"):
            act()
    assert _state(db, a) == "skipped" and len(_events(db)) == 1
    st.archive_clip(db, a, expected_version=_version(db, a))
    assert _state(db, a) == "archived"


def test_split_request_frame_must_be_strictly_inside(db: Database) -> None:
    """A split at a clip's first or end frame would make an empty clip: refused; a valid one is
    recorded with its frame."""
    a, b = _pending(db, [(10, 20), (20, 30)])
    for frame in (10, 20, 9, 25):
        with pytest.raises(InvalidClipsError, match=rf"split frame {frame} not inside clip"):
            st.request_split(db, a, frame)
    before = _version(db, a)
    stamp = st.get_clip(db, a).updated_at
    time.sleep(0.01)
    event_id = st.request_split(db, a, 11, "bob", expected_version=before)
    clip = st.get_clip(db, a)
    assert clip.state == "splitting" and clip.reviewed_at is not None
    assert clip.updated_at > stamp
    assert _state(db, b) == "pending_review"
    [event] = _events(db)
    assert (event.id, event.action, event.actor, event.clip_ids) == (
        event_id,
        "request_split",
        "bob",
        [a],
    )
    assert (event.previous_states, event.payload) == (["pending_review"], {"frame": 11})
    st.request_split(db, b, 29)
    assert _state(db, b) == "splitting"
    assert _events(db)[-1].actor == ""  # no actor given


def test_split_request_needs_a_pending_clip(db: Database) -> None:
    """Only clips waiting for review can be split."""
    (a,) = _pending(db, [(0, 10)])
    st.approve_clip(db, a)
    with pytest.raises(InvalidTransitionError):
        st.request_split(db, a, 5)
    assert _state(db, a) == "approved"


def test_merge_takes_the_adjacent_previous_live_clip(db: Database) -> None:
    """A merge joins the clip with the live clip right before it; both are stamped and one event
    records both."""
    vid = _video(db)
    a, b, c = _pending(db, [(0, 10), (10, 20), (20, 30)], vid)
    st.approve_clip(db, b)
    before = _version(db, c)
    stamps = {i: st.get_clip(db, i).updated_at for i in (b, c)}
    time.sleep(0.01)
    event_id = st.request_merge(db, c, "eve", expected_version=before)
    assert [_state(db, i) for i in (a, b, c)] == ["pending_review", "merging", "merging"]
    for i in (b, c):
        clip = st.get_clip(db, i)
        assert clip.reviewed_at is not None and clip.updated_at > stamps[i]
    [_, event] = _events(db)
    assert (event.id, event.action, event.actor, event.clip_ids) == (
        event_id,
        "request_merge",
        "eve",
        [b, c],
    )
    assert (event.previous_states, event.payload) == (["approved", "pending_review"], {})


def test_merge_skips_superseded_clips_and_other_videos(db: Database) -> None:
    """Superseded clips and clips of other videos are never merge partners."""
    vid = _video(db)
    a, b, c = _pending(db, [(0, 10), (10, 20), (20, 30)], vid)
    st.request_merge(db, b)
    merged = st.complete_merge(db, [a, b])
    st.start_keyframing(db, merged)
    st.complete_keyframing(db, merged, [])
    st.start_sprite_generation(db, merged)
    st.complete_sprite_generation(db, merged, [])
    st.request_merge(db, c)  # the previous live clip is the merged [0, 20), not b
    assert (_state(db, merged), _state(db, c), _state(db, b)) == ("merging", "merging", "archived")
    (first_of_other,) = _pending(db, [(500, 600)])
    with pytest.raises(InvalidClipsError, match="has no previous clip"):
        st.request_merge(db, first_of_other)
    with pytest.raises(NotFoundError, match=r"^clip not found: 99999$"):
        st.request_merge(db, 99_999)


def test_merge_never_takes_a_superseded_clip(db: Database) -> None:
    """The nearest earlier clip is skipped when it is superseded (however that came about)."""
    a, b, c = _pending(db, [(0, 10), (10, 20), (20, 30)])
    with db.session() as s:
        s.execute(update(Clip).where(Clip.id == b).values(superseded_at=datetime.now(UTC)))
    st.request_merge(db, c)
    assert [_state(db, i) for i in (a, b, c)] == ["merging", "pending_review", "merging"]
    assert (_events(db)[-1].clip_ids, _events(db)[-1].actor) == ([a, c], "")


def test_merge_needs_a_pending_clip_and_a_mergeable_partner(db: Database) -> None:
    """The clip must be pending review and its partner pending, approved or skipped; a refusal names
    the offending clip."""
    a, b = _pending(db, [(0, 10), (10, 20)])
    _force_state(db, a, "archived")
    with pytest.raises(InvalidTransitionError) as info:
        st.request_merge(db, b)
    assert (info.value.entity_id, info.value.state) == (a, "archived")
    _force_state(db, a, "skipped")
    st.approve_clip(db, b)
    with pytest.raises(InvalidTransitionError) as info:
        st.request_merge(db, b)
    assert (info.value.entity_id, info.value.state) == (b, "approved")
    assert (_state(db, a), _state(db, b)) == ("skipped", "approved")


# ------------------------------------------------------------------------------------- undo


@pytest.mark.parametrize(
    ("act", "action", "state"),
    [
        (lambda db, i: st.approve_clip(db, i), "approve", "approved"),
        (lambda db, i: st.skip_clip(db, i), "skip", "skipped"),
        (lambda db, i: st.archive_clip(db, i), "archive", "archived"),
        (lambda db, i: st.request_split(db, i, 15), "request_split", "splitting"),
        (lambda db, i: st.request_merge(db, i), "request_merge", "merging"),
    ],
)
def test_undo_restores_what_each_action_replaced(
    db: Database, act: Any, action: str, state: str
) -> None:
    """Undo puts back the recorded previous states of every action kind, and records itself."""
    a, b = _pending(db, [(0, 10), (10, 20)])
    st.skip_clip(db, a)
    event_id = act(db, b)
    assert _state(db, b) == state
    before = _version(db, b)
    stamp = st.get_clip(db, b).updated_at
    time.sleep(0.01)
    undo_id = st.undo_review(db, b, "carol", expected_version=before)
    assert _state(db, b) == "pending_review" and _state(db, a) == "skipped"
    assert st.get_clip(db, b).updated_at > stamp
    undo = _events(db)[-1]
    touched = [a, b] if action == "request_merge" else [b]
    assert (undo.id, undo.action, undo.actor, undo.clip_ids) == (undo_id, "undo", "carol", touched)
    assert undo.previous_states == [state] * len(touched)
    assert (undo.payload, undo.undoes_event_id) == ({"undone_action": action}, event_id)


def test_undo_walks_back_one_action_at_a_time(db: Database) -> None:
    """Repeated undos go back through the clip's own actions, newest first, ignoring other clips and
    undo events."""
    a, b = _pending(db, [(0, 10), (10, 20)])
    st.skip_clip(db, a)
    st.archive_clip(db, a)
    st.approve_clip(db, b)  # the latest event, but of another clip
    st.undo_review(db, a)
    assert _state(db, a) == "skipped"
    st.undo_review(db, a)
    assert _state(db, a) == "pending_review"
    with pytest.raises(InvalidTransitionError) as info:
        st.undo_review(db, a)
    assert (info.value.entity, info.value.entity_id, info.value.action, info.value.state) == (
        "clip",
        a,
        "undo",
        "no review action to undo",
    )
    assert _state(db, b) == "approved"
    assert {e.actor for e in _events(db)} == {""}
    assert [e.action for e in _events(db)] == ["skip", "archive", "approve", "undo", "undo"]


def test_undo_refused_once_the_action_moved_on(db: Database) -> None:
    """An action whose effect has moved on (an approved clip already embedding) cannot be undone."""
    a, b = _pending(db, [(0, 10), (10, 20)])
    st.approve_clip(db, a)
    st.start_embedding(db, a)
    with pytest.raises(InvalidTransitionError) as info:
        st.undo_review(db, a)
    err = info.value
    assert (err.entity, err.entity_id, err.action, err.state, err.allowed) == (
        "clip",
        a,
        "undo",
        "embedding",
        ("approved",),
    )
    with pytest.raises(InvalidTransitionError):
        st.request_merge(db, b)  # a is embedding: not a merge partner
    assert _state(db, b) == "pending_review"


def test_undo_of_a_merge_checks_both_clips(db: Database) -> None:
    """Undoing a merge needs both clips still merging."""
    a, b = _pending(db, [(0, 10), (10, 20)])
    st.request_merge(db, b)
    _force_state(db, a, "pending_review")
    with pytest.raises(InvalidTransitionError) as info:
        st.undo_review(db, b)
    assert (info.value.entity_id, info.value.state) == (a, "pending_review")
    assert _state(db, b) == "merging"


def test_undo_after_the_purge_explains_why_not(db: Database, local_store: LocalObjectStore) -> None:
    """Once the archive job deleted a clip's files, undo is refused with the reason the reviewer
    sees."""
    from heaters_resources import steps

    (a,) = _pending(db, [(0, 10)])
    local_store.upload_bytes(b"c", st.get_clip(db, a).storage_key or "")
    st.archive_clip(db, a)
    steps.purge_archived_clips(db, local_store, [a])
    with pytest.raises(InvalidTransitionError) as info:
        st.undo_review(db, a)
    err = info.value
    assert (err.entity, err.entity_id, err.action, err.state) == ("clip", a, "undo", "archived")
    assert err.reason == "the archive job already deleted its files; it cannot be restored"
    assert _state(db, a) == "archived"


# ------------------------------------------------------------------------- merge and split


def test_complete_merge_spans_its_clips(db: Database, local_store: LocalObjectStore) -> None:
    """The merged clip spans its parents (any order given), keeps the fps, and the parents end; its
    object must exist first."""
    vid = _video(db, fps=30.0)
    a, b, c = _pending(db, [(0, 10), (10, 25), (25, 40)], vid)
    for i in (a, b, c):
        _force_state(db, i, "merging")
    with pytest.raises(MissingObjectError):
        st.complete_merge(db, [c, a, b], store=local_store)
    local_store.upload_bytes(b"m", f"clips/{vid}/{vid}_0_40.mp4")
    new = st.complete_merge(db, [c, a, b], store=local_store)
    clip = st.get_clip(db, new)
    assert (clip.identifier, clip.start_frame, clip.end_frame, clip.fps) == (
        f"{vid}_0_40",
        0,
        40,
        30.0,
    )
    assert (clip.state, clip.parent_clip_ids, clip.source_video_id) == ("spliced", [a, b, c], vid)
    for old in (a, b, c):
        gone = st.get_clip(db, old)
        assert gone.state == "archived" and gone.superseded_at is not None


def test_complete_merge_needs_two_clips_of_one_video(db: Database) -> None:
    """A merge of one clip, or across videos, is refused, as are clips that are not merging."""
    (a,) = _pending(db, [(0, 10)])
    (b,) = _pending(db, [(0, 10)])
    for i in (a, b):
        _force_state(db, i, "merging")
    with pytest.raises(InvalidClipsError, match=r"^merge needs two or more clips of one video$"):
        st.complete_merge(db, [a])
    with pytest.raises(InvalidClipsError, match="two or more clips of one video"):
        st.complete_merge(db, [a, b])
    _force_state(db, b, "pending_review")
    with pytest.raises(InvalidTransitionError):
        st.complete_merge(db, [a, b])
    assert (_state(db, a), _state(db, b)) == ("merging", "pending_review")


def test_complete_split_makes_two_clips(db: Database, local_store: LocalObjectStore) -> None:
    """A split at a frame strictly inside makes [start, frame) and [frame, end), whose objects must
    exist first."""
    vid = _video(db)
    (a,) = _pending(db, [(10, 30)], vid)
    st.request_split(db, a, 15)
    for frame in (10, 30):
        with pytest.raises(InvalidClipsError, match="not inside clip"):
            st.complete_split(db, a, frame)
    with pytest.raises(MissingObjectError):
        st.complete_split(db, a, 11, store=local_store)
    for ident in (f"{vid}_10_11", f"{vid}_11_30"):
        local_store.upload_bytes(b"s", f"clips/{vid}/{ident}.mp4")
    left, right = st.complete_split(db, a, 11, store=local_store)
    parts = [st.get_clip(db, i) for i in (left, right)]
    assert [(c.start_frame, c.end_frame, c.state) for c in parts] == [
        (10, 11, "spliced"),
        (11, 30, "spliced"),
    ]
    assert st.get_clip(db, right).parent_clip_ids == [a]
    assert st.get_clip(db, a).state == "archived"
