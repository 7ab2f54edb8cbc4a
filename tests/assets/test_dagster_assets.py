"""The Dagster platform in-process: assets, checks, jobs over partition ranges, sensors with
cursors, re-splice backfill, review jobs, failures. Real Postgres (embedded), real files."""

from __future__ import annotations

import base64
import contextlib
import re
import shutil
from pathlib import Path
from typing import Any

import cv2
import dagster as dg
import numpy as np
import pytest
from sqlalchemy import func, select

from heaters_assets import previews
from heaters_assets.assets.videos import clip_splits
from heaters_assets.definitions import build_definitions
from heaters_assets.partitions import SOURCE_VIDEOS, partition_range_tags
from heaters_assets.sensors.inbox import inbox_sensor
from heaters_assets.sensors.pipeline import (
    new_clips_sensor,
    review_actions_sensor,
    submissions_sensor,
)
from heaters_media.samples import SAMPLE_CUTS, SAMPLE_VIDEO
from heaters_resources import states
from heaters_resources.db.embedded_pg import EmbeddedServer
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ClipEmbedding, ReviewEvent
from heaters_resources.orchestration.resources import (
    DatabaseResource,
    ObjectStoreResource,
    SettingsResource,
)
from heaters_resources.review import queries as review_queries
from heaters_resources.search.space import DESCRIPTOR_MODEL
from tests.media_factory import make_video


def _ingest(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    db: Database,
    source: str = str(SAMPLE_VIDEO),
    run_config: dict | None = None,
) -> tuple[int, dg.ExecuteInProcessResult]:
    vid = states.create_source_video(db, source)
    instance.add_dynamic_partitions(SOURCE_VIDEOS, [str(vid)])
    result = defs.resolve_job_def("ingest_video_job").execute_in_process(
        instance=instance, partition_key=str(vid), run_config=run_config or {}, raise_on_error=False
    )
    return vid, result


def _clips(db: Database, vid: int) -> list[Clip]:
    with db.session() as s:
        return list(
            s.scalars(
                select(Clip)
                .where(Clip.source_video_id == vid, Clip.superseded_at.is_(None))
                .order_by(Clip.start_frame)
            )
        )


def _artifacts(
    defs: dg.Definitions, instance: dg.DagsterInstance, *video_ids: int
) -> dg.ExecuteInProcessResult:
    """Keyframes + sprites for the videos' partitions (a range when there are several)."""
    first, last = str(min(video_ids)), str(max(video_ids))
    return defs.resolve_job_def("clip_artifacts_job").execute_in_process(
        instance=instance, tags=partition_range_tags(first, last), raise_on_error=False
    )


def _mats(run: dg.ExecuteInProcessResult, asset: str) -> list[dg.AssetMaterialization]:
    """The run's materializations of ``asset`` (one op may make several assets)."""
    return [
        e.event_specific_data.materialization  # type: ignore[union-attr]
        for e in run.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey(asset)
    ]


def test_whole_graph_for_one_video(
    defs: dg.Definitions, instance: dg.DagsterInstance, db: Database
) -> None:
    vid, result = _ingest(defs, instance, db)
    assert result.success
    clips = _clips(db, vid)
    keys = [c.identifier for c in clips]
    assert [c.start_frame for c in clips[1:]] == SAMPLE_CUTS
    # Partitions grow with videos, not clips.
    assert instance.get_dynamic_partitions(SOURCE_VIDEOS) == [str(vid)]
    splits = result.asset_materializations_for_node("clip_splits")[0]
    assert splits.metadata["clips"].value == len(SAMPLE_CUTS) + 1
    checks = result.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [("clips_tile_video", True)]

    run = _artifacts(defs, instance, vid)
    assert run.success
    # One materialization of the video's partition per asset, describing exactly its clips.
    for asset in ("keyframes", "sprite_sheet"):
        (mat,) = _mats(run, asset)
        assert mat.partition == str(vid)
        assert mat.metadata["clips_done"].value == len(keys)
        rows = mat.metadata["clips"].value.records  # type: ignore[attr-defined]
        assert [(r.data["clip"], r.data["result"]) for r in rows] == [(k, "done") for k in keys]
    assert {c.check_name: c.passed for c in run.get_asset_check_evaluations()} == {
        "keyframes_stored": True,
        "sprite_matches_image": True,
    }
    assert {c.state for c in _clips(db, vid)} == {"pending_review"}
    _assert_describes_own_clips(run, clips)
    assert {c.check_name: c.description for c in run.get_asset_check_evaluations()} == {
        "keyframes_stored": f"All {len(keys)} checked have every keyframe in the store.",
        "sprite_matches_image": f"All {len(keys)} checked have a sprite sheet whose metadata "
        "matches the stored image (and a review proxy when not cut yet).",
    }
    # Similar clips during review by default: every pending clip has the descriptor's vector,
    # and its neighbours are found.
    with db.session() as s:
        have = s.scalars(
            select(ClipEmbedding.clip_id).where(ClipEmbedding.model_name == DESCRIPTOR_MODEL)
        )
        assert sorted(have) == sorted(c.id for c in clips)
    near = review_queries.similar_clips(db, clips[0].id, k=3)
    assert len(near) == 3 and clips[0].id not in [n.clip_id for n in near]
    assert {n.state for n in near} == {"pending_review"}
    # Every asset names its owners.
    for spec in defs.resolve_all_asset_specs():
        assert spec.owners == ["team:curation"], spec.key


def test_each_partition_names_its_own_clips_read_back_from_the_instance(
    defs: dg.Definitions, instance: dg.DagsterInstance, db: Database, tmp_path: Path
) -> None:
    """One artifacts run over a range of two videos: each partition's latest materialization,
    as the UI reads it from the instance, lists exactly that video's clips and previews its own
    first clip (the bug was every partition carrying the batch's figures and one preview)."""
    first, result = _ingest(defs, instance, db)
    assert result.success
    other = make_video(tmp_path / "other.mp4", [30, 40, 25], size=(160, 90))
    second, result = _ingest(defs, instance, db, source=str(other))
    assert result.success
    assert _artifacts(defs, instance, first, second).success
    for vid in (first, second):
        clips = _clips(db, vid)
        for asset in ("keyframes", "sprite_sheet"):
            (record,) = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[str(vid)]),
                limit=1,
            ).records
            mat = record.asset_materialization
            assert mat is not None and mat.partition == str(vid)
            rows = mat.metadata["clips"].value.records  # type: ignore[attr-defined]
            assert [r.data["clip"] for r in rows] == [c.identifier for c in clips]
            assert mat.metadata["frames"].value == sum(c.end_frame - c.start_frame for c in clips)
            assert f"[{clips[0].identifier}](" in str(mat.metadata["preview"].value)


def _assert_describes_own_clips(run: dg.ExecuteInProcessResult, clips: list[Clip]) -> None:
    """Each asset's materialization: a row per clip with its own frames, duration and review
    link, totals that add up, and the first clip's image inline (a real JPEG thumbnail)."""
    for asset, kind in (("keyframes", "keyframe"), ("sprite_sheet", "sprite_sheet")):
        (mat,) = _mats(run, asset)
        rows = [r.data for r in mat.metadata["clips"].value.records]  # type: ignore[attr-defined]
        assert [(r["clip"], r["frames"]) for r in rows] == [
            (c.identifier, c.end_frame - c.start_frame) for c in clips
        ]
        assert [r["review"] for r in rows] == [f"http://127.0.0.1:8765/?clip={c.id}" for c in clips]
        assert all(r["image"] for r in rows)
        assert mat.metadata["frames"].value == clips[-1].end_frame - clips[0].start_frame
        preview = str(mat.metadata["preview"].value)
        found = re.search(r"\(data:image/jpeg;base64,([A-Za-z0-9+/=]+)\)", preview)
        assert found, preview
        thumb = cv2.imdecode(np.frombuffer(base64.b64decode(found.group(1)), np.uint8), 1)
        width = previews.THUMB_WIDTH * (2 if kind == "sprite_sheet" else 1)
        assert thumb is not None and thumb.shape[1] == width
        assert f"[{clips[0].identifier}](http://127.0.0.1:8765/?clip={clips[0].id})" in preview
        assert f"/queue?video={clips[0].source_video_id}" in preview


def test_resplice_backfill_replaces_clips_and_keeps_one_partition(
    defs: dg.Definitions, instance: dg.DagsterInstance, db: Database, resources: dict[str, Any]
) -> None:
    vid, result = _ingest(defs, instance, db)
    assert result.success
    before = [c.identifier for c in _clips(db, vid)]
    # What a backfill of clip_splits with a new parameter runs for each chosen video.
    run = dg.materialize(
        [clip_splits],
        instance=instance,
        partition_key=str(vid),
        resources=resources,
        run_config={
            "ops": {
                "clip_splits": {
                    "config": {"min_scene_len": 4.0, "short_policy": "merge", "overwrite": True}
                }
            }
        },
    )
    assert run.success
    after = [c.identifier for c in _clips(db, vid)]
    assert len(after) < len(before)
    assert all(c.end_frame - c.start_frame >= 100 for c in _clips(db, vid)[:-1])
    assert instance.get_dynamic_partitions(SOURCE_VIDEOS) == [str(vid)]
    # The new clips are processed by a run of the same video partition.
    run = _artifacts(defs, instance, vid)
    assert run.success
    (mat,) = _mats(run, "keyframes")
    assert mat.metadata["clips_done"].value == len(after)


def test_failed_ingest_sets_failed_state(
    defs: dg.Definitions, instance: dg.DagsterInstance, db: Database, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x01garbage" * 100)
    vid, result = _ingest(defs, instance, db, source=str(bad))
    assert not result.success
    video = states.get_source_video(db, vid)
    assert video.state == "ingestion_failed"
    assert video.error and video.error.startswith("corrupt_media")
    assert _clips(db, vid) == []


def test_submission_and_new_clip_sensors(
    defs: dg.Definitions, instance: dg.DagsterInstance, db: Database, resources: dict[str, Any]
) -> None:
    a = states.create_source_video(db, str(SAMPLE_VIDEO))
    b = states.create_source_video(db, str(SAMPLE_VIDEO))
    ctx = dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
    first = submissions_sensor(ctx)
    assert [r.partition_key for r in first.run_requests] == [str(a), str(b)]
    assert first.dynamic_partitions_requests[0].partition_keys == [str(a), str(b)]
    # Resuming from the cursor (as after a daemon restart) requests nothing again.
    again = submissions_sensor(
        dg.build_sensor_context(
            instance=instance, resources=resources, cursor=first.cursor, definitions=defs
        )
    )
    assert not again.run_requests
    c = states.create_source_video(db, str(SAMPLE_VIDEO))
    third = submissions_sensor(
        dg.build_sensor_context(
            instance=instance, resources=resources, cursor=first.cursor, definitions=defs
        )
    )
    assert [r.partition_key for r in third.run_requests] == [str(c)]

    vid, result = _ingest(defs, instance, db)
    assert result.success
    clips_out = new_clips_sensor(
        dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
    )
    # All new clips of the video: one run of its partition.
    assert [r.partition_key for r in clips_out.run_requests] == [str(vid)]
    resumed = new_clips_sensor(
        dg.build_sensor_context(
            instance=instance, resources=resources, cursor=clips_out.cursor, definitions=defs
        )
    )
    assert not resumed.run_requests


def test_inbox_sensor_registers_each_file_once(
    instance: dg.DagsterInstance,
    db: Database,
    resources: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HEATERS_INBOX_SETTLE_SECONDS", "0")
    inbox = Path(resources["settings"].heaters_home) / "inbox"
    inbox.mkdir(parents=True)
    shutil.copy(SAMPLE_VIDEO, inbox / "first.mp4")
    (inbox / "notes.txt").write_text("ignored")
    ctx = dg.build_sensor_context(instance=instance, resources=resources)
    out = inbox_sensor(ctx)
    make_video(inbox / "second.mkv", [20, 20], size=(64, 36))
    shutil.copy(SAMPLE_VIDEO, inbox / "copy-of-first.mp4")  # same bytes: the same video
    # A restart that lost the cursor must not register first.mp4 again.
    lost = inbox_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    resumed = inbox_sensor(
        dg.build_sensor_context(instance=instance, resources=resources, cursor=lost.cursor)
    )
    with db.session() as s:
        from heaters_resources.db.models import SourceVideo

        titles = sorted(v.title for v in s.scalars(select(SourceVideo)))
    assert titles == ["first", "second"]
    assert out.cursor and resumed.skip_reason


def test_inbox_files_move_to_done_or_failed_with_a_note(
    instance: dg.DagsterInstance,
    db: Database,
    resources: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from heaters_media.errors import MediaError
    from heaters_resources import steps
    from heaters_resources.db.models import SourceVideo

    monkeypatch.setenv("HEATERS_INBOX_SETTLE_SECONDS", "0")
    inbox = Path(resources["settings"].heaters_home) / "inbox"
    inbox.mkdir(parents=True)
    make_video(inbox / "good.mp4", [20, 20], size=(64, 36))
    (inbox / "bad.mp4").write_bytes(b"not a video at all" * 100)

    def tick() -> dg.SensorResult:
        return inbox_sensor(dg.build_sensor_context(instance=instance, resources=resources))

    tick()  # registers both; nothing to file yet (not ingested)
    assert (inbox / "good.mp4").exists() and (inbox / "bad.mp4").exists()
    store = resources["object_store"].get_store()
    with db.session() as s:
        ids = {v.title: v.id for v in s.scalars(select(SourceVideo))}
    for vid in ids.values():
        with contextlib.suppress(MediaError):
            steps.ingest_source_video(db, store, vid)
    tick()
    assert not (inbox / "good.mp4").exists() and not (inbox / "bad.mp4").exists()
    done, failed = inbox / "done" / "good.mp4", inbox / "failed" / "bad.mp4"
    assert done.is_file() and failed.is_file()
    assert (inbox / "done" / "good.mp4.txt").read_text() == f"video {ids['good']}: downloaded\n"
    note = (inbox / "failed" / "bad.mp4.txt").read_text()
    assert note.startswith(f"video {ids['bad']}: ingestion_failed\nreason: ") and len(note) > 60
    with db.session() as s:
        sources = {v.title: v.source for v in s.scalars(select(SourceVideo))}
    assert sources == {"good": str(done), "bad": str(failed)}  # a retry finds the file
    tick()  # filed once; the subfolders are not the inbox
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(SourceVideo)) == 2
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["good.mp4", "good.mp4.txt"]


def test_review_actions_become_jobs(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    db: Database,
    resources: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    monkeypatch.setenv("HEATERS_ARCHIVE_GRACE_SECONDS", "0")
    vid, _ = _ingest(defs, instance, db)
    assert _artifacts(defs, instance, vid).success
    clips = _clips(db, vid)
    states.request_merge(db, clips[1].id)
    states.request_split(db, clips[3].id, clips[3].start_frame + 30)
    states.archive_clip(db, clips[5].id)
    states.approve_clip(db, clips[6].id)
    out = review_actions_sensor(
        dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
    )
    assert [r.tags["heaters/action"] for r in out.run_requests] == [
        "request_merge",
        "request_split",
        "archive",
    ]
    job = defs.resolve_job_def("review_action_job")
    for request in out.run_requests:
        assert job.execute_in_process(instance=instance, run_config=request.run_config).success
    live = _clips(db, vid)
    assert [(c.start_frame, c.state) for c in live[:2]] == [(0, "spliced"), (146, "pending_review")]
    assert len([c for c in live if c.state == "spliced"]) == 3  # merged + two split halves
    # Review jobs add no partitions: merged / split clips belong to their video's partition.
    assert instance.get_dynamic_partitions(SOURCE_VIDEOS) == [str(vid)]
    archived = states.get_clip(db, clips[5].id)
    assert archived.storage_key is None
    with db.session() as s:
        assert s.scalar(select(ReviewEvent.action).order_by(ReviewEvent.id.desc())) == "purge"
    with pytest.raises(states.InvalidTransitionError, match="deleted"):
        states.undo_review(db, clips[5].id)
    resumed = review_actions_sensor(
        dg.build_sensor_context(
            instance=instance, resources=resources, cursor=out.cursor, definitions=defs
        )
    )
    assert not resumed.run_requests


def test_whole_graph_on_s3(
    instance: dg.DagsterInstance,
    db: Database,
    pg_server: EmbeddedServer,
    s3_store: Any,
    s3_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Same graph with the object store on S3 (moto's server over HTTP): rows point at objects
    that really are in the bucket, under the configured prefix; previews are read from the
    bucket. With HEATERS_REVIEW_SIMILAR off, pending clips get no vector."""
    monkeypatch.setenv("HEATERS_REVIEW_SIMILAR", "off")
    monkeypatch.setenv("HEATERS_REVIEW_URL", "https://review.example/")
    resources = {
        "database": DatabaseResource(database_url=pg_server.url),
        "object_store": ObjectStoreResource(
            s3_bucket=s3_store.bucket,
            s3_prefix="lib",
            s3_endpoint_url=s3_endpoint,
            s3_region="us-east-1",
        ),
        "settings": SettingsResource(heaters_home=str(tmp_path), database_url=pg_server.url),
    }
    defs = build_definitions(resources)
    vid, result = _ingest(defs, instance, db)
    assert result.success
    run = _artifacts(defs, instance, vid)
    assert run.success
    for asset in ("keyframes", "sprite_sheet"):
        (mat,) = _mats(run, asset)
        assert "(data:image/jpeg;base64," in str(mat.metadata["preview"].value)
        assert "https://review.example/queue?video=" in str(mat.metadata["preview"].value)
        assert "review_descriptor" not in mat.metadata
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(ClipEmbedding)) == 0
    listed = {
        o["Key"]
        for page in s3_store.client.get_paginator("list_objects_v2").paginate(
            Bucket=s3_store.bucket
        )
        for o in page.get("Contents", [])
    }
    with db.session() as s:
        from heaters_resources.db.models import ClipArtifact

        clips = _clips(db, vid)  # rows over the source until approved (HEATERS_CLIPS=proxy)
        assert {c.storage_key for c in clips} == {None}
        proxies = s.scalar(
            select(func.count()).select_from(ClipArtifact).where(ClipArtifact.kind == "proxy")
        )
        assert proxies == len(clips)
        stored = [
            k
            for row in s.execute(select(ClipArtifact.storage_key, ClipArtifact.sidecar_key))
            for k in row
            if k
        ]
    assert stored and {f"lib/{k}" for k in stored} <= listed
    assert states.get_source_video(db, vid).original_key is not None
    assert f"lib/{states.get_source_video(db, vid).original_key}" in listed
