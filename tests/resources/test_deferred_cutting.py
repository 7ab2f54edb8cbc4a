"""HEATERS_CLIPS=proxy on the platform: clips are frame ranges of their source until approved.

Splice stores rows only; the artifacts' decode adds a review proxy per clip (what the review
page plays); approval's embedding run cuts the clip's full-quality file; merge and split of
clips not cut yet are rows over the source; an archive purge deletes the proxy with the rest.
Each file is checked by its frame count (ffprobe) and by its first and last frames against
the source's, so a clip cut or proxied one frame off fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from heaters_media.errors import InvalidInputError
from heaters_media.samples import SAMPLE_CUTS, SAMPLE_VIDEO
from heaters_resources import states, steps
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ClipArtifact
from heaters_resources.review import queries
from heaters_resources.search.space import DESCRIPTOR_MODEL
from heaters_resources.settings import Settings
from heaters_resources.steps.embeddings import embed_clips
from heaters_resources.store.objects import LocalObjectStore, ObjectStore
from tests.media.test_split import assert_same_frame
from tests.media_factory import count_frames

FRAMES = 536  # the sample's frame count


def _proxy_run(db: Database, store: ObjectStore) -> tuple[int, steps.SpliceOutcome]:
    vid = states.create_source_video(db, str(SAMPLE_VIDEO))
    steps.ingest_source_video(db, store, vid)
    spliced = steps.splice_source_video(db, store, vid, clips="proxy")
    kf, sp = steps.make_artifacts(
        db, store, keyframe_ids=spliced.identifiers, sprites=True, sprite=steps.SpriteSettings(64)
    )
    assert not kf.failed and not sp.failed and len(sp.done) == len(spliced.identifiers)
    return vid, spliced


def _fetched(store: ObjectStore, key: str, tmp: Path) -> Path:
    target = tmp / key.replace("/", "_")
    store.download_file(key, target)
    return target


def _proxy_of(db: Database, clip_id: int) -> ClipArtifact:
    with db.session() as s:
        found = s.scalar(
            select(ClipArtifact).where(
                ClipArtifact.clip_id == clip_id, ClipArtifact.kind == "proxy"
            )
        )
    assert found is not None, f"clip {clip_id} has no proxy"
    return found


def _assert_is_range(path: Path, start: int, end: int) -> None:
    """``path`` holds source frames [start, end): count, first and last frame."""
    assert count_frames(path) == end - start
    if end - start > 1:
        assert_same_frame(path, 0, SAMPLE_VIDEO, start, FRAMES)
        assert_same_frame(path, end - start - 1, SAMPLE_VIDEO, end - 1, FRAMES)


def test_proxy_mode_reviews_proxies_and_cuts_on_approval(
    db: Database, any_store: ObjectStore, tmp_path: Path
) -> None:
    vid, spliced = _proxy_run(db, any_store)
    assert spliced.cut_frames == SAMPLE_CUTS and spliced.encoded == spliced.copied == 0
    assert states.get_source_video(db, vid).scene_params["clips"] == "proxy"
    clips = [states.get_clip(db, i) for i in spliced.clip_ids]
    assert all(c.storage_key is None and c.state == "pending_review" for c in clips)
    videos = [o.key for o in any_store.list("clips/") if o.key.endswith(".mp4")]
    assert videos and all("/proxy/" in k for k in videos)  # proxies only, no clip file
    # Each clip has a proxy of exactly its frames, and the review page plays it.
    for clip in clips:
        proxy = _proxy_of(db, clip.id)
        assert proxy.meta["frames"] == clip.end_frame - clip.start_frame
        assert proxy.meta["height"] <= 360
        assert queries.object_key(db, "clip", clip.id) == proxy.storage_key
        view = queries.clip_view(db, clip.id)
        assert view is not None and view.has_file
    middle = clips[1]
    _assert_is_range(
        _fetched(any_store, _proxy_of(db, middle.id).storage_key, tmp_path),
        middle.start_frame,
        middle.end_frame,
    )
    assert steps.artifact_problems(db, any_store, spliced.identifiers, "sprite_sheet") == []
    # Approval: the embedding run cuts the approved clips' files, frame-exact, and no other.
    approved = [clips[0], clips[2]]
    for clip in approved:
        states.approve_clip(db, clip.id)
    out = embed_clips(db, any_store, [c.identifier for c in approved], model=DESCRIPTOR_MODEL)
    assert sorted(out.done) == sorted(c.identifier for c in approved) and not out.failed
    assert out.details["clips_cut"] == 2
    for clip in approved:
        now = states.get_clip(db, clip.id)
        assert now.state == "embedded" and now.storage_key
        assert queries.object_key(db, "clip", clip.id) == now.storage_key
        _assert_is_range(
            _fetched(any_store, now.storage_key, tmp_path), clip.start_frame, clip.end_frame
        )
    assert states.get_clip(db, clips[1].id).storage_key is None


def test_merge_and_split_of_clips_not_cut_are_ranges_of_the_source(
    db: Database, local_store: LocalObjectStore, tmp_path: Path
) -> None:
    _, spliced = _proxy_run(db, local_store)
    first, second = spliced.clip_ids[:2]
    states.request_merge(db, second)
    merged = steps.execute_merge(db, local_store, [first, second])
    new = states.get_clip(db, merged.new_clip_ids[0])
    assert (new.start_frame, new.end_frame) == (0, SAMPLE_CUTS[1])
    assert new.storage_key is None and new.parent_clip_ids == [first, second]
    _review_media(db, local_store, [new])
    states.request_split(db, new.id, 40)
    split = steps.execute_split(db, local_store, new.id, 40)
    parts = [states.get_clip(db, i) for i in split.new_clip_ids]
    assert [(p.start_frame, p.end_frame) for p in parts] == [(0, 40), (40, SAMPLE_CUTS[1])]
    assert all(p.storage_key is None for p in parts)
    _review_media(db, local_store, parts)


def _review_media(db: Database, store: LocalObjectStore, clips: list[Clip]) -> None:
    """Clips made in review get their artifacts from the source's decode, proxies included."""
    idents = [c.identifier for c in clips]
    kf, sp = steps.make_artifacts(db, store, keyframe_ids=idents, sprites=True)
    assert sorted(sp.done) == sorted(idents) and not kf.failed
    for clip in clips:
        path = store.path(_proxy_of(db, clip.id).storage_key)
        _assert_is_range(path, clip.start_frame, clip.end_frame)


def test_merge_across_a_gap_cuts_both_clips_and_joins_them(
    db: Database, local_store: LocalObjectStore
) -> None:
    """Two clips around a gap (a shot dropped by short_policy="drop") cannot be one range of
    the source: each is cut from it, and the files are joined as in the exact mode."""
    _, spliced = _proxy_run(db, local_store)
    a, gap, b = (states.get_clip(db, i) for i in spliced.clip_ids[:3])
    with db.session() as s:
        s.execute(delete(Clip).where(Clip.id == gap.id))
        s.execute(update(Clip).where(Clip.id.in_([a.id, b.id])).values(state="merging"))
        s.commit()
    merged = steps.execute_merge(db, local_store, [a.id, b.id])
    new = states.get_clip(db, merged.new_clip_ids[0])
    assert new.storage_key and (new.start_frame, new.end_frame) == (a.start_frame, b.end_frame)
    path = local_store.path(new.storage_key)
    frames_a = a.end_frame - a.start_frame
    assert count_frames(path) == frames_a + b.end_frame - b.start_frame
    assert_same_frame(path, frames_a - 1, SAMPLE_VIDEO, a.end_frame - 1, FRAMES)
    assert_same_frame(path, frames_a, SAMPLE_VIDEO, b.start_frame, FRAMES)


def test_archive_purge_deletes_the_proxy(db: Database, local_store: LocalObjectStore) -> None:
    _, spliced = _proxy_run(db, local_store)
    clip_id = spliced.clip_ids[0]
    owned = steps.clip_object_keys(db, [clip_id])
    assert any(k.endswith(".mp4") for k in owned)  # the proxy
    states.archive_clip(db, clip_id)
    purged = steps.purge_archived_clips(db, local_store, [clip_id])
    assert purged.clip_ids == [clip_id] and purged.deleted == len(owned)
    assert not any(local_store.exists(k) for k in owned)
    assert steps.purge_archived_clips(db, local_store, [clip_id]).clip_ids == []  # done once


def test_a_failed_cut_fails_the_embedding_with_its_reason_and_a_retry_cuts(
    db: Database, local_store: LocalObjectStore, tmp_path: Path
) -> None:
    vid, spliced = _proxy_run(db, local_store)
    clip_id = spliced.clip_ids[0]
    states.approve_clip(db, clip_id)
    source = local_store.path(steps.playable_key(states.get_source_video(db, vid)))
    kept = tmp_path / "kept.mp4"
    source.rename(kept)
    ident = spliced.identifiers[0]
    out = embed_clips(db, local_store, [ident], model=DESCRIPTOR_MODEL)
    assert list(out.failed) == [ident] and out.failed[ident].startswith("cut: ")
    clip = states.get_clip(db, clip_id)
    assert clip.state == "embedding_failed" and (clip.error or "").startswith("cut: ")
    assert clip.storage_key is None
    kept.rename(source)
    again = embed_clips(db, local_store, [ident], model=DESCRIPTOR_MODEL)
    assert again.done == [ident] and states.get_clip(db, clip_id).storage_key


def test_a_clip_keeps_the_file_it_has(db: Database, local_store: LocalObjectStore) -> None:
    """`record_clip_files` gives a file only to a clip without one (two runs cutting the same
    clip: the second's record is a no-op) and refuses keys not in the store."""
    _, spliced = _proxy_run(db, local_store)
    a, b = spliced.clip_ids[:2]
    key_a = "clips/x/a.mp4"
    local_store.upload_bytes(b"file", key_a)
    assert states.record_clip_files(db, {a: key_a}, store=local_store) == [a]
    assert states.record_clip_files(db, {a: "clips/x/other.mp4"}) == []
    assert states.get_clip(db, a).storage_key == key_a
    with pytest.raises(states.MissingObjectError):
        states.record_clip_files(db, {b: "clips/x/absent.mp4"}, store=local_store)
    assert states.get_clip(db, b).storage_key is None


def test_an_unknown_clip_mode_is_refused_before_anything_changes(
    db: Database, local_store: LocalObjectStore
) -> None:
    vid = states.create_source_video(db, str(SAMPLE_VIDEO))
    steps.ingest_source_video(db, local_store, vid)
    with pytest.raises(InvalidInputError, match="clips must be one of exact, proxy"):
        steps.splice_source_video(db, local_store, vid, clips="lazy")
    assert states.get_source_video(db, vid).state == "downloaded"
    with pytest.raises(ValueError, match="HEATERS_CLIPS"):
        Settings.from_env({"HEATERS_CLIPS": "lazy"})
    assert Settings.from_env({"HEATERS_CLIPS": "Exact"}).clips == "exact"
    assert Settings.from_env({}).clips == "proxy"
