"""Processing steps end to end on a real Postgres (embedded) and both object stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from heaters_media.errors import CorruptMediaError, DownloadFailedError, InvalidInputError
from heaters_media.samples import SAMPLE_CUTS, SAMPLE_VIDEO
from heaters_resources import states, steps
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ClipArtifact, ClipEmbedding, SourceVideo
from heaters_resources.store.objects import ObjectStore


def _full_run(db: Database, store: ObjectStore, source: str) -> tuple[int, steps.SpliceOutcome]:
    vid = states.create_source_video(db, source)
    steps.ingest_source_video(db, store, vid)
    spliced = steps.splice_source_video(db, store, vid)
    kf = steps.keyframe_clips(db, store, spliced.identifiers)
    sp = steps.sprite_clips(db, store, spliced.identifiers)
    assert not kf.failed and not sp.failed
    return vid, spliced


def test_sample_goes_through_every_step(db: Database, any_store: ObjectStore) -> None:
    vid, spliced = _full_run(db, any_store, str(SAMPLE_VIDEO))
    assert spliced.cut_frames == SAMPLE_CUTS
    with db.session() as s:
        video = s.get(SourceVideo, vid)
        assert video is not None and video.state == "spliced"
        assert video.frame_count == 536 and video.scene_params["detector"] == "adaptive"
        clips = list(s.scalars(select(Clip).order_by(Clip.start_frame)))
        assert [c.state for c in clips] == ["pending_review"] * (len(SAMPLE_CUTS) + 1)
        assert [c.start_frame for c in clips[1:]] == SAMPLE_CUTS
        assert clips[-1].end_frame == 536
        kinds = s.execute(select(ClipArtifact.kind, func.count()).group_by(ClipArtifact.kind))
        assert dict(kinds.all()) == {"keyframe": 3 * len(clips), "sprite_sheet": len(clips)}
        for c in clips:
            assert c.storage_key and any_store.exists(c.storage_key)
        for key, side in s.execute(select(ClipArtifact.storage_key, ClipArtifact.sidecar_key)):
            assert any_store.exists(key)
            assert side is None or any_store.exists(side)


def test_resplice_with_new_threshold_replaces_clips(db: Database, local_store: ObjectStore) -> None:
    vid, first = _full_run(db, local_store, str(SAMPLE_VIDEO))
    old_keys = [k for k in steps.clip_object_keys(db, first.clip_ids)]
    again = steps.splice_source_video(
        db, local_store, vid, min_scene_len=4.0, short_policy="merge", overwrite=True
    )
    assert len(again.identifiers) < len(first.identifiers)
    assert set(again.retired_identifiers) == set(first.identifiers) - set(again.identifiers)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Clip)) == len(again.identifiers)
        assert s.scalar(select(func.count()).select_from(ClipArtifact)) == 0
    kept = {k for k in steps.clip_object_keys(db, again.clip_ids)}
    for key in old_keys:
        assert local_store.exists(key) == (key in kept)


def test_failed_ingest_is_recorded_and_retry_starts_clean(
    db: Database, local_store: ObjectStore, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(SAMPLE_VIDEO.read_bytes()[:20000])
    vid = states.create_source_video(db, str(broken))
    with pytest.raises(CorruptMediaError):
        steps.ingest_source_video(db, local_store, vid)
    video = states.get_source_video(db, vid)
    assert video.state == "ingestion_failed" and video.error.startswith("corrupt_media:")
    assert list(local_store.list("")) == []
    broken.write_bytes(SAMPLE_VIDEO.read_bytes())  # the user fixes the file; a retry works
    steps.ingest_source_video(db, local_store, vid)
    assert states.get_source_video(db, vid).state == "downloaded"


def test_bad_url_fails_ingest_with_reason(db: Database, local_store: ObjectStore) -> None:
    vid = states.create_source_video(db, "ftp://example.invalid/video.mp4")
    with pytest.raises(InvalidInputError):
        steps.ingest_source_video(db, local_store, vid)
    assert "invalid_input" in (states.get_source_video(db, vid).error or "")


def test_clip_steps_skip_clips_in_the_wrong_state(db: Database, local_store: ObjectStore) -> None:
    vid = states.create_source_video(db, str(SAMPLE_VIDEO))
    steps.ingest_source_video(db, local_store, vid)
    spliced = steps.splice_source_video(db, local_store, vid)
    out = steps.sprite_clips(db, local_store, spliced.identifiers[:2])  # not keyframed yet
    assert set(out.skipped) == set(spliced.identifiers[:2]) and not out.done
    again = steps.splice_source_video(db, local_store, vid)  # already spliced, no overwrite
    assert again.skipped and again.clip_ids == spliced.clip_ids  # resumed: nothing redone
    assert again.identifiers == spliced.identifiers
    assert steps.ingest_source_video(db, local_store, vid).skipped


def test_clip_failure_is_isolated(db: Database, local_store: ObjectStore) -> None:
    """Clips made in review are decoded from their own file: a damaged one fails alone while
    the clips cut from the source (one shared decode) complete."""
    _, spliced = _full_run(db, local_store, str(SAMPLE_VIDEO))
    states.request_merge(db, spliced.clip_ids[1])
    merged = steps.execute_merge(db, local_store, spliced.clip_ids[:2])
    victim = states.get_clip(db, merged.new_clip_ids[0])
    local_store.path(victim.storage_key).write_bytes(b"garbage")
    live = [victim.identifier, *spliced.identifiers[2:]]
    out = steps.keyframe_clips(db, local_store, live, overwrite=True)
    assert list(out.failed) == [victim.identifier]
    assert "corrupt" in out.failed[victim.identifier] or "invalid" in out.failed[victim.identifier]
    assert sorted(out.done) == sorted(spliced.identifiers[2:])
    assert states.get_clip(db, victim.id).state == "keyframing_failed"
    with pytest.raises(steps.StepFailedError):
        out.raise_for_failures()


class _LosesOneSprite:
    """The local store, except that one clip's sprite upload reports success and stores
    nothing (a store that loses a write): the batched commit's object check refuses it."""

    def __init__(self, store: ObjectStore, lost: str) -> None:
        self.store, self.lost = store, lost

    def upload_file(self, path: Path, key: str, **kw: object) -> None:
        if f"/{self.lost}/sprite" in key and key.endswith(".jpg"):
            return
        self.store.upload_file(path, key, **kw)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> object:
        return getattr(self.store, name)


def test_one_clip_refused_at_commit_fails_alone(db: Database, local_store: ObjectStore) -> None:
    """Keyframes and sprites of all clips are recorded in one transaction each; when that
    transaction is refused for one clip (its object is not in the store), the others are
    recorded one by one and only that clip fails, with the reason."""
    vid = states.create_source_video(db, str(SAMPLE_VIDEO))
    steps.ingest_source_video(db, local_store, vid)
    spliced = steps.splice_source_video(db, local_store, vid)
    victim = spliced.identifiers[1]
    store = _LosesOneSprite(local_store, victim)
    kf, sp = steps.make_artifacts(
        db,
        store,  # type: ignore[arg-type]
        keyframe_ids=spliced.identifiers,
        sprite_ids=spliced.identifiers,
        sprites=True,
    )
    assert sorted(kf.done) == sorted(spliced.identifiers) and not kf.failed
    assert list(sp.failed) == [victim] and "MissingObjectError" in sp.failed[victim]
    assert sorted(sp.done) == sorted(set(spliced.identifiers) - {victim})
    with db.session() as s:
        clip_states = dict(s.execute(select(Clip.identifier, Clip.state)).tuples().all())
        sprites = set(
            s.scalars(
                select(Clip.identifier)
                .join(ClipArtifact, ClipArtifact.clip_id == Clip.id)
                .where(ClipArtifact.kind == "sprite_sheet")
            )
        )
    assert clip_states.pop(victim) == "sprite_failed"
    assert set(clip_states.values()) == {"pending_review"}
    assert sprites == set(spliced.identifiers) - {victim}


def test_review_vectors_come_from_the_pass_frames(db: Database, local_store: ObjectStore) -> None:
    """HEATERS_REVIEW_SIMILAR: the artifacts' decode embeds each clip's keyframe frames with
    the descriptor and stores the vector of every clip now pending review (no state change),
    the one an embedding run would make from the stored JPEGs (cosine >= 0.999). A clip whose
    sprite failed is not pending review: no vector."""
    from heaters_media.embed import embed_images
    from heaters_resources.search.space import DESCRIPTOR_MODEL

    vid = states.create_source_video(db, str(SAMPLE_VIDEO))
    steps.ingest_source_video(db, local_store, vid)
    spliced = steps.splice_source_video(db, local_store, vid)
    victim = spliced.identifiers[0]
    _, sp = steps.make_artifacts(
        db,
        _LosesOneSprite(local_store, victim),  # type: ignore[arg-type]
        keyframe_ids=spliced.identifiers,
        sprites=True,
        describe=DESCRIPTOR_MODEL,
    )
    assert list(sp.failed) == [victim]
    made = sp.details["review_vectors"]
    assert made["stored"] == len(spliced.identifiers) - 1 and made["missing"] == {}
    assert made["strategy"] == "keyframe_multi_avg"
    with db.session() as s:
        rows = s.execute(
            select(Clip.identifier, Clip.state, ClipEmbedding.embedding)
            .join(ClipEmbedding, ClipEmbedding.clip_id == Clip.id)
            .where(
                ClipEmbedding.model_name == DESCRIPTOR_MODEL,
                ClipEmbedding.generation_strategy == "keyframe_multi_avg",
            )
        ).all()
        keyframes: dict[str, list[str]] = {}
        for ident, key in s.execute(
            select(Clip.identifier, ClipArtifact.storage_key)
            .join(ClipArtifact, ClipArtifact.clip_id == Clip.id)
            .where(ClipArtifact.kind == "keyframe")
        ):
            keyframes.setdefault(ident, []).append(key)
    assert sorted(r.identifier for r in rows) == sorted(set(spliced.identifiers) - {victim})
    for ident, state, vector in rows:
        assert state == "pending_review"
        files = [str(local_store.path(k)) for k in sorted(keyframes[ident])]
        ref = embed_images(files, model=DESCRIPTOR_MODEL, strategy="keyframe_multi_avg")
        assert float(np.asarray(vector) @ ref.array()[0]) >= 0.999


def test_a_review_vector_problem_never_fails_the_clips(
    db: Database, local_store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vectors are stored after the clips' artifacts are recorded: a database error
    there is reported in the details and the clips stay done, pending review."""
    from heaters_resources.search.space import DESCRIPTOR_MODEL

    vid = states.create_source_video(db, str(SAMPLE_VIDEO))
    steps.ingest_source_video(db, local_store, vid)
    spliced = steps.splice_source_video(db, local_store, vid)

    def broken(*args: object, **kwargs: object) -> int:
        raise RuntimeError("connection to the database lost (simulated)")

    monkeypatch.setattr(states, "store_embeddings", broken)
    kf, sp = steps.make_artifacts(
        db, local_store, keyframe_ids=spliced.identifiers, sprites=True, describe=DESCRIPTOR_MODEL
    )
    assert sorted(sp.done) == sorted(spliced.identifiers) and not sp.failed and not kf.failed
    made = sp.details["review_vectors"]
    assert made["stored"] == 0 and "connection to the database lost" in made["error"]
    with db.session() as s:
        assert set(s.scalars(select(Clip.state))) == {"pending_review"}
        assert not s.scalar(select(func.count()).select_from(ClipEmbedding))


def test_missing_source_fails_only_its_clips(db: Database, local_store: ObjectStore) -> None:
    """The shared decode needs the video's source: without it every clip of that video fails
    with the reason stored, and nothing is recorded for them."""
    vid = states.create_source_video(db, str(SAMPLE_VIDEO))
    steps.ingest_source_video(db, local_store, vid)
    spliced = steps.splice_source_video(db, local_store, vid)
    video = states.get_source_video(db, vid)
    local_store.path(steps.playable_key(video)).unlink()
    kf, sp = steps.make_artifacts(db, local_store, keyframe_ids=spliced.identifiers, sprites=True)
    assert sorted(kf.failed) == sorted(spliced.identifiers) and not kf.done
    assert not sp.done and not sp.failed  # never keyframed, so no sprite step started
    assert all("not_found" in r or "NotFound" in r for r in kf.failed.values())
    with db.session() as s:
        assert not s.scalar(select(func.count()).select_from(ClipArtifact))


def test_merge_and_split_jobs(db: Database, local_store: ObjectStore) -> None:
    _, spliced = _full_run(db, local_store, str(SAMPLE_VIDEO))
    first, second = spliced.clip_ids[:2]
    states.request_merge(db, second)
    merging = [c for c in (states.get_clip(db, i) for i in (first, second)) if c.state == "merging"]
    merged = steps.execute_merge(db, local_store, [c.id for c in merging])
    new = states.get_clip(db, merged.new_clip_ids[0])
    assert (new.start_frame, new.end_frame) == (0, SAMPLE_CUTS[1])
    assert new.state == "spliced" and local_store.exists(new.storage_key)
    steps.keyframe_clips(db, local_store, [new.identifier])
    sp = steps.sprite_clips(db, local_store, [new.identifier])
    assert not sp.failed, sp.failed
    states.request_split(db, new.id, 100)
    split = steps.execute_split(db, local_store, new.id, 100)
    parts = [states.get_clip(db, i) for i in split.new_clip_ids]
    assert [(p.start_frame, p.end_frame) for p in parts] == [(0, 100), (100, SAMPLE_CUTS[1])]
    assert all(local_store.exists(p.storage_key) for p in parts)


def test_one_pass_sprites_clips_that_are_keyframed_already(
    db: Database, local_store: ObjectStore
) -> None:
    """A clip asked for both steps that is already keyframed skips keyframing (with the reason)
    and still gets its sprite from the same pass."""
    vid = states.create_source_video(db, str(SAMPLE_VIDEO))
    steps.ingest_source_video(db, local_store, vid)
    spliced = steps.splice_source_video(db, local_store, vid)
    first, rest = spliced.identifiers[:1], spliced.identifiers[1:]
    assert not steps.keyframe_clips(db, local_store, first).failed
    kf, sp = steps.make_artifacts(
        db, local_store, keyframe_ids=spliced.identifiers, sprite_ids=first, sprites=True
    )
    assert list(kf.skipped) == first and sorted(kf.done) == sorted(rest)
    assert sorted(sp.done) == sorted(spliced.identifiers) and not sp.failed
    with db.session() as s:
        states_now = set(s.scalars(select(Clip.state)))
    assert states_now == {"pending_review"}


def test_download_limits_from_the_environment_reach_the_ingest_step(
    db: Database, local_store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HEATERS_MAX_DOWNLOAD_BYTES bounds the pipeline's URL ingest: the video fails as
    download_failed with the reason stored, and nothing is uploaded."""
    import functools
    import shutil
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    served = tmp_path / "site"
    served.mkdir()
    shutil.copy(SAMPLE_VIDEO, served / "v.mp4")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HEATERS_MAX_DOWNLOAD_BYTES", "1000")
        vid = states.create_source_video(db, f"http://127.0.0.1:{server.server_address[1]}/v.mp4")
        with pytest.raises(DownloadFailedError):
            steps.ingest_source_video(db, local_store, vid, workdir=tmp_path / "work")
    finally:
        server.shutdown()
        server.server_close()
    video = states.get_source_video(db, vid)
    assert video.state == "ingestion_failed"
    assert (video.error or "").startswith("download_failed:") and "1000 byte limit" in video.error
    assert list(local_store.list("")) == []
    assert list((tmp_path / "work").iterdir()) == []
