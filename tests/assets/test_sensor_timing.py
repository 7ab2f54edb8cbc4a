"""Sensors that wait: the archive grace period, the inbox settle time, and the S3-prefix inbox.

The rest of the suite runs these sensors with their waits set to zero, so a sensor that ignored
HEATERS_ARCHIVE_GRACE_SECONDS (deleting a clip's files before the reviewer could undo) or
HEATERS_INBOX_SETTLE_SECONDS (registering a half-copied file) would pass it. Here the waits are
real but short (2 s), the settings come from the environment at each tick as in the daemon,
and the cursor is carried from tick to tick the way the daemon carries it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import select

from heaters_assets.assets.videos import clip_splits, source_video
from heaters_assets.definitions import build_definitions
from heaters_assets.partitions import SOURCE_VIDEOS
from heaters_assets.sensors.inbox import inbox_sensor, store_inbox_sensor
from heaters_assets.sensors.pipeline import review_actions_sensor, submissions_sensor
from heaters_media.samples import SAMPLE_CUTS, SAMPLE_VIDEO
from heaters_resources import states, steps
from heaters_resources.db.embedded_pg import EmbeddedServer
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ReviewEvent, SourceVideo
from heaters_resources.orchestration import names
from heaters_resources.orchestration.resources import (
    DatabaseResource,
    ObjectStoreResource,
    SettingsResource,
)
from heaters_resources.store import keys
from heaters_resources.store.objects import ObjectStore, S3ObjectStore

GRACE = 2.0
SETTLE = 2.0

Tick = Callable[[str | None], tuple[dg.SensorResult, str | None]]


def _ticker(
    sensor: dg.SensorDefinition,
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
    defs: dg.Definitions | None = None,
) -> Tick:
    """One evaluation from a cursor; returns the result and the cursor the daemon keeps (a
    result without a cursor leaves it unchanged)."""

    def tick(cursor: str | None) -> tuple[dg.SensorResult, str | None]:
        ctx = dg.build_sensor_context(
            instance=instance, resources=resources, cursor=cursor, definitions=defs
        )
        result = sensor(ctx)
        assert isinstance(result, dg.SensorResult)
        return result, (result.cursor if result.cursor is not None else cursor)

    return tick


def _requests(result: dg.SensorResult) -> list[dg.RunRequest]:
    return list(result.run_requests or [])


def _skip(result: dg.SensorResult) -> str | None:
    return None if result.skip_reason is None else result.skip_reason.skip_message


# --------------------------------------------------------------------- archive grace period


def _pending_clips(db: Database, store: ObjectStore, n: int = 3) -> list[int]:
    """Clips at pending_review with a clip file, a keyframe and a sprite (+ sidecar) stored."""
    vid = states.create_source_video(db, "synthetic.mp4")
    states.start_downloading(db, vid)
    original = keys.source_original_key(vid, "mp4")
    store.upload_bytes(b"video", original)
    states.complete_downloading(
        db, vid, original_key=original, store=store, fps=10.0, frame_count=10 * n
    )
    states.start_splicing(db, vid)
    bounds = [(10 * i, 10 * i + 10) for i in range(n)]
    specs = []
    for start, end in bounds:
        key = keys.clip_key(vid, keys.clip_identifier(vid, start, end))
        store.upload_bytes(b"clip", key)
        specs.append(states.ClipSpec(start, end, key))
    ids = states.create_clips_from_splice(db, vid, specs, store=store)
    for cid, (start, end) in zip(ids, bounds, strict=True):
        ident = keys.clip_identifier(vid, start, end)
        states.start_keyframing(db, cid)
        kf = keys.keyframe_key(vid, ident, "midpoint", 50)
        store.upload_bytes(b"jpeg", kf)
        states.complete_keyframing(
            db, cid, [states.ArtifactSpec("keyframe", "midpoint", kf, tag="50")], store=store
        )
        states.start_sprite_generation(db, cid)
        sprite = keys.sprite_key(vid, ident, "p")
        sidecar = keys.sprite_metadata_key(vid, ident, "p")
        store.upload_bytes(b"jpeg", sprite)
        store.upload_bytes(b"{}", sidecar)
        states.complete_sprite_generation(
            db,
            cid,
            states.ArtifactSpec("sprite_sheet", "p", sprite, sidecar_key=sidecar),
            store=store,
        )
    return ids


def _purge_events(db: Database) -> list[ReviewEvent]:
    with db.session() as s:
        return list(s.scalars(select(ReviewEvent).where(ReviewEvent.action == "purge")))


def _execute(
    defs: dg.Definitions, instance: dg.DagsterInstance, requests: list[dg.RunRequest]
) -> None:
    job = defs.resolve_job_def(names.REVIEW_ACTION_JOB)
    for request in requests:
        assert job.execute_in_process(instance=instance, run_config=request.run_config).success


def _sleep_until(deadline: float) -> None:
    """Deadlines count from a stamp taken after the archive returned, so the event's
    ``created_at`` (its transaction's start) is earlier and ``grace`` later has surely passed."""
    time.sleep(max(0.0, deadline - time.monotonic()))


@pytest.fixture
def grace(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setenv("HEATERS_ARCHIVE_GRACE_SECONDS", str(GRACE))
    return GRACE


def test_undo_inside_the_grace_period_keeps_the_clip(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    db: Database,
    resources: dict[str, Any],
    grace: float,
) -> None:
    store = resources["object_store"].get_store()
    clip = _pending_clips(db, store, 1)[0]
    objects = steps.clip_object_keys(db, [clip])
    assert len(objects) == 4
    tick = _ticker(review_actions_sensor, instance, resources, defs)

    started = time.monotonic()
    states.archive_clip(db, clip)
    archived_by = time.monotonic()
    first, cursor = tick(None)
    assert not _requests(first) and cursor is None
    states.undo_review(db, clip)
    assert time.monotonic() - started < grace  # the undo really came inside the grace

    _sleep_until(archived_by + grace + 0.2)
    later, cursor = tick(cursor)
    # Whatever the sensor asks for now (see the strict test below), carrying it out must not
    # touch the clip: the undo won.
    _execute(defs, instance, _requests(later))
    assert states.get_clip(db, clip).state == "pending_review"
    assert states.get_clip(db, clip).storage_key is not None
    assert all(store.exists(k) for k in objects)
    assert steps.clip_object_keys(db, [clip]) == objects
    assert _purge_events(db) == []


def test_no_purge_run_for_an_undone_archive(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    db: Database,
    resources: dict[str, Any],
    grace: float,
) -> None:
    clip = _pending_clips(db, resources["object_store"].get_store(), 1)[0]
    tick = _ticker(review_actions_sensor, instance, resources, defs)
    states.archive_clip(db, clip)
    archived_by = time.monotonic()
    states.undo_review(db, clip)
    _sleep_until(archived_by + grace + 0.2)
    later, _ = tick(None)
    assert _requests(later) == []


def test_archiving_again_after_an_undo_gets_a_full_grace_period(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    db: Database,
    resources: dict[str, Any],
    grace: float,
) -> None:
    store = resources["object_store"].get_store()
    clip = _pending_clips(db, store, 1)[0]
    objects = steps.clip_object_keys(db, [clip])
    tick = _ticker(review_actions_sensor, instance, resources, defs)
    states.archive_clip(db, clip)
    archived_by = time.monotonic()
    states.undo_review(db, clip)
    _sleep_until(archived_by + grace / 2)
    states.archive_clip(db, clip)  # the reviewer changes their mind again
    _sleep_until(archived_by + grace + 0.2)  # first archive past its grace, second not yet
    later, _ = tick(None)
    _execute(defs, instance, _requests(later))
    assert all(store.exists(k) for k in objects)
    states.undo_review(db, clip)  # still inside the second archive's grace
    assert states.get_clip(db, clip).state == "pending_review"


def test_archive_is_purged_after_the_grace_and_the_cursor_waits_for_it(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    db: Database,
    resources: dict[str, Any],
    grace: float,
) -> None:
    store = resources["object_store"].get_store()
    kept, doomed, skipped = _pending_clips(db, store, 3)
    objects = steps.clip_object_keys(db, [doomed])
    tick = _ticker(review_actions_sensor, instance, resources, defs)

    approve = states.approve_clip(db, kept)
    archive = states.archive_clip(db, doomed)
    archived_by = time.monotonic()
    skip = states.skip_clip(db, skipped)
    first, cursor = tick(None)
    assert _requests(first) == []
    # Past the approve, not past the archive still in its grace (nor the skip after it).
    assert cursor == str(approve)
    again, cursor = tick(cursor)
    assert _requests(again) == [] and cursor == str(approve)
    assert all(store.exists(k) for k in objects)

    _sleep_until(archived_by + grace + 0.2)
    due, cursor = tick(cursor)
    assert [r.tags[names.REVIEW_EVENT_TAG] for r in _requests(due)] == [str(archive)]
    assert _requests(due)[0].tags[names.REVIEW_ACTION_TAG] == "archive"
    assert cursor == str(skip)
    _execute(defs, instance, _requests(due))

    assert not any(store.exists(k) for k in objects)
    assert states.get_clip(db, doomed).storage_key is None
    assert [e.clip_ids for e in _purge_events(db)] == [[doomed]]
    with pytest.raises(states.InvalidTransitionError, match="deleted"):
        states.undo_review(db, doomed)
    # The neighbours are untouched, and nothing is requested twice.
    assert states.get_clip(db, kept).state == "approved"
    assert states.get_clip(db, skipped).state == "skipped"
    assert all(store.exists(k) for k in steps.clip_object_keys(db, [kept, skipped]))
    after, _ = tick(cursor)
    assert _requests(after) == []


def test_grace_is_read_from_the_environment_at_each_tick(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    db: Database,
    resources: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clip = _pending_clips(db, resources["object_store"].get_store(), 1)[0]
    tick = _ticker(review_actions_sensor, instance, resources, defs)
    monkeypatch.setenv("HEATERS_ARCHIVE_GRACE_SECONDS", "3600")
    archive = states.archive_clip(db, clip)
    waiting, cursor = tick(None)
    assert _requests(waiting) == []
    monkeypatch.setenv("HEATERS_ARCHIVE_GRACE_SECONDS", "0")
    due, _ = tick(cursor)
    assert [r.tags[names.REVIEW_EVENT_TAG] for r in _requests(due)] == [str(archive)]


# ------------------------------------------------------------------------ inbox settle time


def _sources(db: Database) -> list[tuple[str, str | None]]:
    with db.session() as s:
        return [
            (v.source, v.title) for v in s.scalars(select(SourceVideo).order_by(SourceVideo.id))
        ]


def test_inbox_waits_for_a_file_to_settle(
    instance: dg.DagsterInstance,
    db: Database,
    resources: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HEATERS_INBOX_SETTLE_SECONDS", str(SETTLE))
    inbox = Path(resources["settings"].heaters_home) / "inbox"
    inbox.mkdir(parents=True)
    data = SAMPLE_VIDEO.read_bytes()
    path = inbox / "arriving.mp4"
    tick = _ticker(inbox_sensor, instance, resources)

    # A copy in progress: a partial file, written just now.
    path.write_bytes(data[: len(data) // 3])
    first, cursor = tick(None)
    assert _skip(first) and _sources(db) == []
    assert cursor is not None and "arriving.mp4" not in cursor
    # Still growing: the size changes between ticks and the mtime stays recent.
    sizes = [path.stat().st_size]
    for part in (2, 3):
        with path.open("ab") as f:
            f.write(data[len(data) * (part - 1) // 3 : len(data) * part // 3])
        sizes.append(path.stat().st_size)
        growing, cursor = tick(cursor)
        assert _skip(growing) and _sources(db) == []
    assert sizes[0] < sizes[1] < sizes[2] == len(data)
    # Just under the settle time is still too young.
    almost = time.time() - SETTLE + 1.0
    os.utime(path, (almost, almost))
    young, cursor = tick(cursor)
    assert _skip(young) and _sources(db) == []

    # Settled: unchanged for longer than the settle time.
    settled = time.time() - SETTLE - 1
    os.utime(path, (settled, settled))
    registered, cursor = tick(cursor)
    assert not _skip(registered)
    assert _sources(db) == [(str(path.resolve()), "arriving")]
    # Exactly once: a later tick, and a tick that lost the cursor, add nothing.
    again, cursor = tick(cursor)
    lost, _ = tick(None)
    assert _skip(again) and _skip(lost)
    assert len(_sources(db)) == 1


# ------------------------------------------------------------------ S3-prefix inbox, end to end


def test_store_inbox_ingests_an_object_under_the_prefix(
    instance: dg.DagsterInstance,
    db: Database,
    pg_server: EmbeddedServer,
    s3_store: S3ObjectStore,
    s3_endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resources: dict[str, Any] = {
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
    tick = _ticker(store_inbox_sensor, instance, resources)
    s3_store.upload_file(SAMPLE_VIDEO, "inbox/bbb.mp4")
    s3_store.upload_bytes(b"not a video", "inbox/readme.txt")
    s3_store.upload_file(SAMPLE_VIDEO, "elsewhere/other.mp4")

    monkeypatch.delenv("HEATERS_INBOX_PREFIX", raising=False)
    off, _ = tick(None)
    assert _skip(off) == "HEATERS_INBOX_PREFIX is not set"
    assert _sources(db) == []

    monkeypatch.setenv("HEATERS_INBOX_PREFIX", "inbox/")
    first, cursor = tick(None)
    assert not _skip(first)
    assert _sources(db) == [("store:inbox/bbb.mp4", "bbb")]
    again, cursor = tick(cursor)
    lost, _ = tick(None)
    assert _skip(again) and _skip(lost)
    assert len(_sources(db)) == 1
    with db.session() as s:
        video = s.scalars(select(SourceVideo)).one()
    assert video.state == "new"

    # The submissions sensor turns it into a partition and a run; carry that run out.
    submitted, _ = _ticker(submissions_sensor, instance, resources, defs)(None)
    assert [r.partition_key for r in _requests(submitted)] == [str(video.id)]
    [partitions] = submitted.dynamic_partitions_requests or []
    assert list(partitions.partition_keys or []) == [str(video.id)]
    instance.add_dynamic_partitions(SOURCE_VIDEOS, [str(video.id)])
    result = dg.materialize(
        [source_video, clip_splits],
        instance=instance,
        partition_key=str(video.id),
        resources=resources,
    )
    assert result.success
    ingested = states.get_source_video(db, video.id)
    assert ingested.state == "spliced"
    assert ingested.original_key and s3_store.exists(ingested.original_key)
    with db.session() as s:
        clips = list(
            s.scalars(select(Clip).where(Clip.source_video_id == video.id).order_by(Clip.id))
        )
    assert [c.start_frame for c in clips[1:]] == SAMPLE_CUTS
    # Clip rows over the source (HEATERS_CLIPS=proxy, the default): cut when approved.
    assert {c.storage_key for c in clips} == {None}
    # The inbox object itself is left where it was (the library has its own copy).
    assert s3_store.exists("inbox/bbb.mp4")
    # Ingesting did not make the sensor see anything new.
    after, _ = tick(cursor)
    assert _skip(after) and len(_sources(db)) == 1
