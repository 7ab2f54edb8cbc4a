"""Asset checks fed bad data fail, and say what is wrong.

Elsewhere the suite only ever sees these checks pass, so a check that reported ``passed=True``
whatever it found, or an invariant function that never found anything, would survive. Each
test here first builds a correct state and asserts it is clean, then corrupts one thing the way
it goes wrong in practice (an object lost from the store, a sprite re-encoded at another size,
a clip row edited by hand, a vector stored unnormalized) and asserts the exact problem strings.
The Dagster tests inject the fault inside a real run and read the ``AssetCheckEvaluation``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import cv2
import dagster as dg
import numpy as np
import pytest
from sqlalchemy import select, text

from heaters_assets.sensors.embeddings import approved_clips_sensor
from heaters_assets.sensors.pipeline import new_clips_sensor
from heaters_media.samples import SAMPLE_CUTS, SAMPLE_VIDEO
from heaters_resources import states, steps
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ClipArtifact
from heaters_resources.orchestration import names
from heaters_resources.store import keys
from heaters_resources.store.objects import ObjectStore

TILE_W, TILE_H, COLS, ROWS = 32, 18, 5, 2
SPRITE_PARAMS = steps.sprite_params(TILE_W, 24.0, COLS)
MODEL, STRATEGY = "test/unindexed-model", "keyframe_midpoint"


# ------------------------------------------------------------------------------- helpers


def _jpeg(width: int, height: int) -> bytes:
    pixels = np.random.default_rng(width * height).integers(0, 256, (height, width, 3), np.uint8)
    ok, buf = cv2.imencode(".jpg", pixels)
    assert ok
    return bytes(buf.tobytes())


def _video_with_clips(
    db: Database,
    store: ObjectStore,
    bounds: tuple[tuple[int, int], ...] = ((0, 10), (10, 20), (20, 30)),
    frame_count: int = 30,
) -> tuple[int, list[str]]:
    """A spliced video whose clips tile it, through the public state API (objects are stubs)."""
    vid = states.create_source_video(db, "synthetic.mp4")
    states.start_downloading(db, vid)
    original = keys.source_original_key(vid, "mp4")
    store.upload_bytes(b"video", original)
    states.complete_downloading(
        db, vid, original_key=original, store=store, fps=10.0, frame_count=frame_count
    )
    states.start_splicing(db, vid)
    specs = []
    for start, end in bounds:
        key = keys.clip_key(vid, keys.clip_identifier(vid, start, end))
        store.upload_bytes(b"clip", key)
        specs.append(states.ClipSpec(start, end, key))
    states.create_clips_from_splice(db, vid, specs, store=store)
    return vid, [keys.clip_identifier(vid, s, e) for s, e in bounds]


def _add_artifacts(db: Database, store: ObjectStore, vid: int, idents: list[str]) -> None:
    """Three keyframes and a sprite (its JPEG the size its metadata says) per clip."""
    for clip in steps.clips_by_identifier(db, idents):
        states.start_keyframing(db, clip.id)
        specs = []
        for pct in (25, 50, 75):
            key = keys.keyframe_key(vid, clip.identifier, "multi", pct)
            store.upload_bytes(_jpeg(64, 36), key, content_type="image/jpeg")
            specs.append(states.ArtifactSpec("keyframe", "multi", key, tag=str(pct)))
        states.complete_keyframing(db, clip.id, specs, store=store)
        states.start_sprite_generation(db, clip.id)
        key = keys.sprite_key(vid, clip.identifier, SPRITE_PARAMS)
        meta_key = keys.sprite_metadata_key(vid, clip.identifier, SPRITE_PARAMS)
        store.upload_bytes(_jpeg(COLS * TILE_W, ROWS * TILE_H), key, content_type="image/jpeg")
        store.upload_bytes(b"{}", meta_key, content_type="application/json")
        meta = {"cols": COLS, "rows": ROWS, "tile_width": TILE_W, "tile_height": TILE_H}
        spec = states.ArtifactSpec(
            "sprite_sheet", SPRITE_PARAMS, key, sidecar_key=meta_key, meta=meta
        )
        states.complete_sprite_generation(db, clip.id, spec, store=store)


def _artifact_keys(db: Database, ident: str, kind: str) -> list[str]:
    with db.session() as s:
        return list(
            s.scalars(
                select(ClipArtifact.storage_key)
                .join(Clip, Clip.id == ClipArtifact.clip_id)
                .where(Clip.identifier == ident, ClipArtifact.kind == kind)
                .order_by(ClipArtifact.storage_key)
            )
        )


def _sql(db: Database, statement: str, **params: Any) -> None:
    with db.engine.begin() as conn:
        conn.execute(text(statement), params)


# ------------------------------------------------------------------ invariant functions


def test_tiling_problems_name_gaps_and_short_coverage(db: Database, local_store: Any) -> None:
    vid, (first, middle, last) = _video_with_clips(db, local_store)
    assert steps.tiling_problems(db, vid) == []

    # A clip row moved by hand: its old first frames belong to no clip.
    _sql(db, "UPDATE clips SET start_frame = 14 WHERE identifier = :i", i=middle)
    assert steps.tiling_problems(db, vid) == ["gap [10, 14)"]
    _sql(db, "UPDATE clips SET start_frame = 3 WHERE identifier = :i", i=first)
    assert steps.tiling_problems(db, vid) == ["gap [0, 3)", "gap [10, 14)"]

    # The video is longer than its clips (probe and splice disagree).
    _sql(db, "UPDATE source_videos SET frame_count = 36 WHERE id = :v", v=vid)
    assert steps.tiling_problems(db, vid) == [
        "gap [0, 3)",
        "gap [10, 14)",
        "clips end at 30, video has 36 frames",
    ]
    # A superseded clip no longer covers its frames.
    _sql(db, "UPDATE clips SET superseded_at = now() WHERE identifier = :i", i=last)
    assert steps.tiling_problems(db, vid)[-1] == "clips end at 20, video has 36 frames"
    assert steps.tiling_problems(db, vid + 1000) == [f"video {vid + 1000} not found"]


def test_tiling_problems_name_an_overlap(fresh_database_url: str, local_store: Any) -> None:
    """The exclusion constraint keeps live clips from overlapping; the check is the second line
    of defence, so it is tested on a database where that constraint is missing."""
    db = Database(fresh_database_url)
    try:
        db.ensure_migrated()
        _sql(db, "ALTER TABLE clips DROP CONSTRAINT ex_clips_no_overlap")
        vid, (_, middle, _) = _video_with_clips(db, local_store)
        assert steps.tiling_problems(db, vid) == []
        _sql(db, "UPDATE clips SET start_frame = 7 WHERE identifier = :i", i=middle)
        assert steps.tiling_problems(db, vid) == ["overlap at [7, 10)"]
    finally:
        db.dispose()


def test_artifact_problems_name_lost_keyframes(db: Database, any_store: ObjectStore) -> None:
    vid, idents = _video_with_clips(db, any_store)
    _add_artifacts(db, any_store, vid, idents)
    assert steps.artifact_problems(db, any_store, idents, "keyframe") == []

    lost = _artifact_keys(db, idents[0], "keyframe")[1]
    assert any_store.delete_many([lost]).ok
    assert steps.artifact_problems(db, any_store, idents, "keyframe") == [
        f"{idents[0]}: {lost} missing from the store"
    ]
    # Rows gone too (a clip that never got its keyframes recorded).
    _sql(
        db,
        "DELETE FROM clip_artifacts WHERE kind = 'keyframe' AND clip_id = "
        "(SELECT id FROM clips WHERE identifier = :i)",
        i=idents[2],
    )
    assert steps.artifact_problems(db, any_store, idents, "keyframe") == [
        f"{idents[2]}: no keyframe",
        f"{idents[0]}: {lost} missing from the store",
    ]
    # Only the clips asked about are reported.
    assert steps.artifact_problems(db, any_store, [idents[1]], "keyframe") == []


def test_artifact_problems_compare_sprite_image_with_metadata(
    db: Database, any_store: ObjectStore
) -> None:
    vid, idents = _video_with_clips(db, any_store)
    _add_artifacts(db, any_store, vid, idents)
    assert steps.artifact_problems(db, any_store, idents, "sprite_sheet") == []
    want = (COLS * TILE_W, ROWS * TILE_H)

    [resized] = _artifact_keys(db, idents[0], "sprite_sheet")
    any_store.upload_bytes(_jpeg(100, 50), resized, content_type="image/jpeg")
    assert steps.artifact_problems(db, any_store, idents, "sprite_sheet") == [
        f"{idents[0]}: sprite is (100, 50), metadata says {want}"
    ]
    # An image that does not decode, and metadata edited to disagree with a good image.
    [garbage] = _artifact_keys(db, idents[1], "sprite_sheet")
    any_store.upload_bytes(b"not a jpeg", garbage)
    _sql(
        db,
        "UPDATE clip_artifacts SET metadata = jsonb_set(metadata, '{cols}', '4') "
        "WHERE storage_key = :k",
        k=_artifact_keys(db, idents[2], "sprite_sheet")[0],
    )
    assert sorted(steps.artifact_problems(db, any_store, idents, "sprite_sheet")) == sorted(
        [
            f"{idents[0]}: sprite is (100, 50), metadata says {want}",
            f"{idents[1]}: sprite is None, metadata says {want}",
            f"{idents[2]}: sprite is {want}, metadata says ({4 * TILE_W}, {ROWS * TILE_H})",
        ]
    )
    # A sheet of the right size cut short: its header alone would pass.
    any_store.upload_bytes(_jpeg(*want)[:-200], resized, content_type="image/jpeg")
    assert f"{idents[0]}: sprite is None, metadata says {want}" in steps.artifact_problems(
        db, any_store, idents, "sprite_sheet"
    )
    assert any_store.delete_many([resized]).ok
    assert steps.artifact_problems(db, any_store, idents[:1], "sprite_sheet") == [
        f"{idents[0]}: {resized} missing from the store"
    ]


def test_embedding_problems_name_dimension_norm_and_missing(db: Database, local_store: Any) -> None:
    _, idents = _video_with_clips(db, local_store, ((0, 10), (10, 20), (20, 30), (30, 40)), 40)
    ids = [c.id for c in steps.clips_by_identifier(db, idents)]

    def put(clip_id: int, vector: list[float], model: str = MODEL) -> None:
        states.store_embedding(
            db, clip_id, vector, model_name=model, generation_strategy=STRATEGY, overwrite=True
        )

    put(ids[0], [0.6, 0.8, 0.0, 0.0])
    put(ids[1], [1.0005, 0.0, 0.0, 0.0])  # inside the 1e-3 tolerance
    assert embedding_ok(db, idents[:2]) == []

    put(ids[1], [2.0, 0.0, 0.0, 0.0])
    put(ids[2], [0.0, 1.0, 0.0])
    put(ids[3], [1.0, 0.0, 0.0, 0.0], model="test/other-model")  # another space's vector
    assert embedding_ok(db, idents) == [
        f"{idents[3]}: no {MODEL}/{STRATEGY} vector",
        f"{idents[1]}: norm 2.000000",
        f"{idents[2]}: dimension 3, model gives 4",
    ]
    put(ids[0], [1.002, 0.0, 0.0, 0.0])  # just outside the tolerance
    assert embedding_ok(db, idents[:1]) == [f"{idents[0]}: norm 1.002000"]


def embedding_ok(db: Database, idents: list[str]) -> list[str]:
    """The problems in a stable order: missing vectors first (sorted), then per clip."""
    problems = steps.embedding_problems(db, idents, MODEL, STRATEGY, 4)
    missing = [p for p in problems if " no " in p]
    return missing + sorted(p for p in problems if p not in missing)


# ---------------------------------------------------------------------- through Dagster
#
# Faults are injected with BEFORE INSERT triggers (dropped after the test): they corrupt exactly
# the row the check must then report, whichever code path wrote it. Runs are launched from the
# sensors' own requests, as the daemon launches them.

Fault = Callable[[str, str], None]


@pytest.fixture
def fault(db: Database) -> Iterator[Fault]:
    """``fault(table, plpgsql)``: run ``plpgsql`` on each row inserted into ``table``."""
    made: list[tuple[str, str]] = []

    def add(table: str, body: str) -> None:
        name = f"test_fault_{len(made)}"
        _sql(
            db,
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS "
            f"$fn$ BEGIN {body} RETURN NEW; END $fn$",
        )
        made.append((table, name))
        _sql(
            db,
            f"CREATE TRIGGER {name} BEFORE INSERT ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {name}()",
        )

    yield add
    for table, name in made:
        _sql(db, f"DROP TRIGGER IF EXISTS {name} ON {table}")
        _sql(db, f"DROP FUNCTION IF EXISTS {name}()")


def _ingest(
    defs: dg.Definitions, instance: dg.DagsterInstance, db: Database, fault: Fault | None = None
) -> tuple[int, dg.ExecuteInProcessResult]:
    vid = states.create_source_video(db, str(SAMPLE_VIDEO))
    if fault is not None:  # the second clip starts 5 frames late: a gap before it
        fault(
            "clips",
            f"IF NEW.source_video_id = {vid} AND NEW.start_frame = {SAMPLE_CUTS[0]} "
            "THEN NEW.start_frame := NEW.start_frame + 5; END IF;",
        )
    instance.add_dynamic_partitions(names.SOURCE_VIDEOS, [str(vid)])
    result = defs.resolve_job_def(names.INGEST_VIDEO_JOB).execute_in_process(
        instance=instance, partition_key=str(vid), raise_on_error=False
    )
    return vid, result


def _launch(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    resources: dict[str, Any],
    sensor: dg.SensorDefinition,
    job_name: str,
) -> list[dg.ExecuteInProcessResult]:
    """Tick ``sensor`` and do what the daemon does with the result: add the partitions it asks
    for, then run each request."""
    out = sensor(dg.build_sensor_context(instance=instance, resources=resources, definitions=defs))
    assert isinstance(out, dg.SensorResult) and out.run_requests
    for add in out.dynamic_partitions_requests or []:
        if isinstance(add, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(add.partitions_def_name, list(add.partition_keys or []))
    job = defs.resolve_job_def(job_name)
    return [
        job.execute_in_process(
            instance=instance,
            partition_key=request.partition_key,
            tags=request.tags,
            run_config=request.run_config,
            raise_on_error=False,
        )
        for request in out.run_requests
    ]


def _evaluation(
    results: list[dg.ExecuteInProcessResult], check_name: str
) -> dg.AssetCheckEvaluation:
    """The one evaluation of ``check_name`` that failed, or the only one if none failed."""
    found = [
        e for r in results for e in r.get_asset_check_evaluations() if e.check_name == check_name
    ]
    failed = [e for e in found if not e.passed]
    assert found and len(failed) <= 1, found
    return failed[0] if failed else found[0]


def _problems(evaluation: dg.AssetCheckEvaluation) -> Any:
    """The problems listed (one Markdown list item each); the verdict in words names the
    first one."""
    listed = evaluation.metadata["problems"].value
    found = [line[2:] for line in str(listed).splitlines() if line.startswith("- ")]
    assert found, listed
    assert evaluation.description and found[0] in evaluation.description
    assert evaluation.description.startswith(f"{len(found)} problem(s)")
    return found


def test_clips_tile_video_fails_on_a_gap(
    defs: dg.Definitions, instance: dg.DagsterInstance, db: Database, fault: Fault
) -> None:
    """A clip row that starts late (as if a splice lost frames) leaves a gap the check must
    report; the splice itself does not notice."""
    vid, result = _ingest(defs, instance, db, fault)
    assert states.get_source_video(db, vid).state == "spliced"
    evaluation = _evaluation([result], "clips_tile_video")
    assert evaluation.passed is False
    assert _problems(evaluation) == [f"gap [{SAMPLE_CUTS[0]}, {SAMPLE_CUTS[0] + 5})"]


def _artifact(db: Database, clip_id: int, kind: str, tag: str | None = None) -> ClipArtifact:
    with db.session() as s:
        stmt = select(ClipArtifact).where(
            ClipArtifact.clip_id == clip_id, ClipArtifact.kind == kind
        )
        return s.scalars(stmt if tag is None else stmt.where(ClipArtifact.tag == tag)).one()


def test_artifact_checks_fail_on_a_lost_keyframe_and_a_wrong_sprite_size(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    db: Database,
    resources: dict[str, Any],
    fault: Fault,
) -> None:
    vid, ingest = _ingest(defs, instance, db)
    assert ingest.success and _evaluation([ingest], "clips_tile_video").passed is True
    first, second = steps.clips_by_identifier(db, steps.clip_identifiers_of_video(db, vid)[:2])
    # One keyframe row of the first clip points at an object that is not there; the second
    # clip's sprite metadata claims tiles 8 px wider than the image has.
    fault(
        "clip_artifacts",
        f"IF NEW.clip_id = {first.id} AND NEW.kind = 'keyframe' AND NEW.tag = '50' "
        "THEN NEW.storage_key := NEW.storage_key || '.lost'; END IF;",
    )
    fault(
        "clip_artifacts",
        f"IF NEW.clip_id = {second.id} AND NEW.kind = 'sprite_sheet' THEN NEW.metadata := "
        "jsonb_set(NEW.metadata, '{tile_width}', "
        "to_jsonb((NEW.metadata ->> 'tile_width')::int + 8)); END IF;",
    )
    runs = _launch(defs, instance, resources, new_clips_sensor, names.CLIP_ARTIFACTS_JOB)

    lost = _artifact(db, first.id, "keyframe", "50").storage_key
    assert lost.endswith(".lost")
    keyframes = _evaluation(runs, "keyframes_stored")
    assert keyframes.passed is False
    assert _problems(keyframes) == [f"{first.identifier}: {lost} missing from the store"]

    meta = _artifact(db, second.id, "sprite_sheet").meta
    cols, rows, width, height = (meta[k] for k in ("cols", "rows", "tile_width", "tile_height"))
    sprite = _evaluation(runs, "sprite_matches_image")
    assert sprite.passed is False
    assert _problems(sprite) == [
        f"{second.identifier}: sprite is ({cols * (width - 8)}, {rows * height}), "
        f"metadata says ({cols * width}, {rows * height})"
    ]


def test_embedding_check_fails_on_a_vector_of_the_wrong_norm(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    db: Database,
    resources: dict[str, Any],
    fault: Fault,
) -> None:
    """The default (weights-free) model embeds an approved clip's keyframes; the vector reaches
    the table scaled by 2, as a step that forgot to normalize would store it."""
    store = resources["object_store"].get_store()
    vid, idents = _video_with_clips(db, store)
    _add_artifacts(db, store, vid, idents)
    instance.add_dynamic_partitions(names.SOURCE_VIDEOS, [str(vid)])
    [clip] = steps.clips_by_identifier(db, idents[:1])
    states.approve_clip(db, clip.id)
    fault(
        "clip_embeddings",
        "NEW.embedding := (SELECT array_agg(x * 2 ORDER BY i) "
        "FROM unnest(NEW.embedding::real[]) WITH ORDINALITY AS u(x, i))::vector;",
    )
    runs = _launch(defs, instance, resources, approved_clips_sensor, names.EMBED_CLIPS_JOB)
    assert states.get_clip(db, clip.id).state == "embedded"
    evaluation = _evaluation(runs, "embedding_dimension_and_norm")
    assert evaluation.passed is False
    assert _problems(evaluation) == [f"{idents[0]}: norm 2.000000"]
