"""Embeddings on the platform: the embed step, pgvector storage and search, near-duplicates,
the embed-missing backfill, failures, the Dagster asset/sensors and the CLI.

Real Postgres + pgvector (embedded), real files, tiny random CLIP/DINOv2 models saved to a tmp
folder and loaded through the real ``from_pretrained`` code. The bundled sample is ingested,
split, keyframed and sprited twice (two videos with the same 8 clips) once per module by the
real steps; each test starts from a restored copy of those rows and objects.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import dagster as dg
import numpy as np
import pytest
from sqlalchemy import func, select, text

from heaters_media import descriptor
from heaters_media.embed import embed_images, embed_text
from heaters_media.errors import InvalidInputError
from heaters_media.samples import SAMPLE_VIDEO
from heaters_resources import states, steps
from heaters_resources.db.embedded_pg import EmbeddedServer
from heaters_resources.db.engine import Database
from heaters_resources.db.models import Clip, ClipArtifact, ClipEmbedding
from heaters_resources.orchestration.ranges import partition_ranges
from heaters_resources.search import index_name, similarity, space
from heaters_resources.steps import embeddings
from heaters_resources.store import keys
from heaters_resources.store.objects import LocalObjectStore
from tests.tiny_models import build_tiny_models, config_only_folder

PIXELS = descriptor.NAME
SNAP = "embed_test_snapshot"
SNAP_TABLES = ("source_videos", "clips", "clip_artifacts")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="module")
def sample_snapshot(session_db: Database, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two videos of the sample through ingest/splice/keyframes/sprites, saved as snapshot
    tables (rows) and a store folder (objects)."""
    root = tmp_path_factory.mktemp("embed-objects")
    store = LocalObjectStore(root)
    with session_db.engine.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE review_events, pending_object_deletions, clip_embeddings, "
                "clip_artifacts, clips, source_videos RESTART IDENTITY CASCADE"
            )
        )
    for _ in range(2):
        vid = states.create_source_video(session_db, str(SAMPLE_VIDEO))
        steps.ingest_source_video(session_db, store, vid)
        idents = steps.splice_source_video(session_db, store, vid).identifiers
        assert not steps.keyframe_clips(session_db, store, idents).failed
        assert not steps.sprite_clips(session_db, store, idents, tile_width=64).failed
    with session_db.engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {SNAP} CASCADE; CREATE SCHEMA {SNAP}"))
        for table in SNAP_TABLES:
            conn.execute(text(f"CREATE TABLE {SNAP}.{table} AS SELECT * FROM {table}"))
    return root


@dataclass
class Library:
    db: Database
    store: LocalObjectStore
    videos: dict[int, list[Clip]]  # video id -> clips in time order

    @property
    def clips(self) -> list[Clip]:
        return [c for v in sorted(self.videos) for c in self.videos[v]]

    def approve(self, clips: list[Clip]) -> None:
        for c in clips:
            states.approve_clip(self.db, c.id)

    def state(self, clip: Clip) -> Clip:
        return states.get_clip(self.db, clip.id)


@pytest.fixture
def lib(db: Database, sample_snapshot: Path, tmp_path: Path) -> Library:
    with db.engine.begin() as conn:
        for table in SNAP_TABLES:
            conn.execute(text(f"INSERT INTO {table} SELECT * FROM {SNAP}.{table}"))
            conn.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT max(id) FROM {table}))"
                )
            )
        # HNSW indexes made by earlier tests (ensure_hnsw_index) go; the migration's stay.
        for (name,) in conn.execute(
            text(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'clip_embeddings' AND "
                "indexname LIKE 'ix_clip_embeddings_hnsw_%' AND indexname NOT IN (:a, :b)"
            ),
            {
                "a": index_name("openai/clip-vit-base-patch32"),
                "b": index_name("facebook/dinov2-small"),
            },
        ):
            conn.execute(text(f"DROP INDEX {name}"))
    shutil.copytree(sample_snapshot, tmp_path / "objects")
    store = LocalObjectStore(tmp_path / "objects")
    with db.session() as s:
        clips = list(s.scalars(select(Clip).order_by(Clip.source_video_id, Clip.start_frame)))
    videos: dict[int, list[Clip]] = {}
    for c in clips:
        videos.setdefault(c.source_video_id, []).append(c)
    return Library(db, store, videos)


def _vectors(db: Database, model: str, strategy: str) -> dict[int, np.ndarray]:
    with db.session() as s:
        rows = s.execute(
            select(ClipEmbedding.clip_id, ClipEmbedding.embedding).where(
                ClipEmbedding.model_name == model, ClipEmbedding.generation_strategy == strategy
            )
        ).all()
    return {int(cid): np.asarray(v, dtype=np.float32) for cid, v in rows}


def _count(db: Database) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(ClipEmbedding)) or 0)


def _keyframe_files(lib: Library, clip: Clip) -> list[Path]:
    with lib.db.session() as s:
        rows = s.execute(
            select(ClipArtifact.tag, ClipArtifact.storage_key).where(
                ClipArtifact.clip_id == clip.id, ClipArtifact.kind == "keyframe"
            )
        ).all()
    return [lib.store.path(k) for _, k in sorted(rows, key=lambda r: int(r[0]))]


# ------------------------------------------------------------------- step, storage, upsert


def test_tiny_clip_and_dinov2_coexist_in_one_batched_call(
    lib: Library, tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    video = lib.videos[min(lib.videos)]
    lib.approve(video)
    idents = [c.identifier for c in video]
    calls: list[int] = []
    real = embeddings.embed_images

    def counting(paths: list[Path], **kw: Any) -> Any:
        calls.append(len(paths))
        return real(paths, **kw)

    monkeypatch.setattr(embeddings, "embed_images", counting)
    out = embeddings.embed_clips(
        lib.db,
        lib.store,
        idents,
        model="tiny-clip",
        strategy="keyframe_multi_avg",
        model_path=str(tiny["clip"]),
        offline=True,
        device="cpu",
        batch_size=32,
    )
    assert calls == [3 * len(video)]  # one model call for every keyframe of every clip
    assert out.done == idents and not out.failed
    assert out.details["dimension"] == 16 and out.details["count"] == len(video)
    assert out.details["images"] == 3 * len(video) and out.details["images_per_second"] > 0
    assert {lib.state(c).state for c in video} == {"embedded"}

    clip_vecs = _vectors(lib.db, "tiny-clip", "keyframe_multi_avg")
    assert set(clip_vecs) == {c.id for c in video}
    # Aggregation = mean of the keyframes' unit vectors, re-normalized (same as heaters_media).
    direct = embed_images(
        _keyframe_files(lib, video[2]),
        model="tiny-clip",
        model_path=tiny["clip"],
        strategy="keyframe_multi_avg",
        offline=True,
        device="cpu",
    ).array()[0]
    np.testing.assert_allclose(clip_vecs[video[2].id], direct, atol=1e-5)

    # A second model on embedded clips: DINOv2 midpoint vectors coexist with the CLIP ones.
    calls.clear()
    dino = embeddings.embed_clips(
        lib.db,
        lib.store,
        idents,
        model="tiny-dinov2",
        strategy="keyframe_midpoint",
        model_path=str(tiny["dinov2"]),
        offline=True,
        device="cpu",
        batch_size=4,
    )
    # One feed for the run whatever the batch size (batch_size only sizes the forward passes).
    assert calls == [8] and dino.details["dimension"] == 32 and not dino.failed
    dino_vecs = _vectors(lib.db, "tiny-dinov2", "keyframe_midpoint")
    mid = embed_images(
        _keyframe_files(lib, video[0])[1:2],
        model="tiny-dinov2",
        model_path=tiny["dinov2"],
        offline=True,
        device="cpu",
    ).array()[0]
    np.testing.assert_allclose(dino_vecs[video[0].id], mid, atol=1e-5)
    for vecs, dim in ((clip_vecs, 16), (dino_vecs, 32)):
        arr = np.stack(list(vecs.values()))
        assert arr.shape == (len(video), dim)
        np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-5)
    assert _count(lib.db) == 2 * len(video)
    with lib.db.session() as s:
        indexes = set(
            s.scalars(text("SELECT indexname FROM pg_indexes WHERE tablename = 'clip_embeddings'"))
        )
    assert {index_name("tiny-clip"), index_name("tiny-dinov2")} <= indexes

    # Re-running without overwrite does nothing; with overwrite it replaces, never duplicates.
    again = embeddings.embed_clips(
        lib.db,
        lib.store,
        idents,
        model="tiny-clip",
        strategy="keyframe_multi_avg",
        model_path=str(tiny["clip"]),
        offline=True,
        device="cpu",
    )
    assert not again.done and len(again.skipped) == len(video)
    with lib.db.session() as s:
        s.execute(
            text(
                "UPDATE clip_embeddings SET embedding = array_fill(0.25, ARRAY[16])"
                "::vector WHERE model_name = 'tiny-clip'"
            )
        )
    redo = embeddings.embed_clips(
        lib.db,
        lib.store,
        idents,
        model="tiny-clip",
        strategy="keyframe_multi_avg",
        model_path=str(tiny["clip"]),
        offline=True,
        device="cpu",
        overwrite=True,
    )
    assert redo.done == idents and _count(lib.db) == 2 * len(video)
    restored = _vectors(lib.db, "tiny-clip", "keyframe_multi_avg")
    for cid, vec in clip_vecs.items():
        np.testing.assert_allclose(restored[cid], vec, atol=1e-5)


# --------------------------------------------------------------------------------- search


def _numpy_ranking(
    vecs: dict[int, np.ndarray], query: np.ndarray, skip: set[int] | None = None
) -> list[tuple[int, float]]:
    """Clip ids by cosine distance to ``query`` computed in NumPy (float64), closest first."""
    ids = [i for i in vecs if i not in (skip or set())]
    mat = np.stack([vecs[i] for i in ids]).astype(np.float64)
    q = query.astype(np.float64)
    dist = 1 - (mat @ q) / (np.linalg.norm(mat, axis=1) * np.linalg.norm(q))
    order = np.argsort(dist, kind="stable")
    return [(ids[j], float(dist[j])) for j in order]


def _assert_same_ranking(got: list[similarity.SimilarClip], want: list[tuple[int, float]]) -> None:
    assert len(got) == len(want)
    np.testing.assert_allclose([r.distance for r in got], [d for _, d in want], atol=1e-5)
    for n, (r, (cid, d)) in enumerate(zip(got, want, strict=True)):
        # Equal ids wherever the NumPy distances are not tied.
        tied = any(abs(d - d2) < 1e-5 for j, (_, d2) in enumerate(want) if j != n)
        assert tied or r.clip_id == cid, (n, got, want)


def test_similar_clips_match_numpy_ranking_and_exclude_video(
    lib: Library, tiny: dict[str, Path]
) -> None:
    lib.approve(lib.clips)
    kw = dict(
        model="tiny-clip",
        strategy="keyframe_multi_avg",
        model_path=str(tiny["clip"]),
        offline=True,
        device="cpu",
    )
    out = embeddings.embed_clips(lib.db, lib.store, [c.identifier for c in lib.clips], **kw)
    assert len(out.done) == len(lib.clips) == 16
    vecs = _vectors(lib.db, "tiny-clip", "keyframe_multi_avg")
    first, second = sorted(lib.videos)
    target = lib.videos[first][3]
    got = similarity.similar_clips(lib.db, target.id, 15, "tiny-clip", "keyframe_multi_avg")
    want = _numpy_ranking(vecs, vecs[target.id], skip={target.id})
    _assert_same_ranking(got, want)
    # Its twin in the other video (the same footage) is the nearest, at distance ~0.
    twin = lib.videos[second][3]
    assert got[0].clip_id == twin.id and got[0].distance < 1e-5
    by_ident = similarity.similar_clips(
        lib.db, target.identifier, 5, "tiny-clip", "keyframe_multi_avg"
    )
    assert [r.clip_id for r in by_ident] == [r.clip_id for r in got[:5]]

    other = similarity.similar_clips(
        lib.db, target.id, 15, "tiny-clip", "keyframe_multi_avg", exclude_same_video=True
    )
    assert {r.source_video_id for r in other} == {second} and len(other) == 8
    _assert_same_ranking(
        other, _numpy_ranking(vecs, vecs[target.id], skip={c.id for c in lib.videos[first]})
    )
    with pytest.raises(states.NotFoundError, match="no tiny-clip/keyframe_midpoint embedding"):
        similarity.similar_clips(lib.db, target.id, 5, "tiny-clip", "keyframe_midpoint")


def test_text_search_with_tiny_clip(lib: Library, tiny: dict[str, Path]) -> None:
    lib.approve(lib.clips)
    embeddings.embed_clips(
        lib.db,
        lib.store,
        [c.identifier for c in lib.clips],
        model="tiny-clip",
        strategy="keyframe_midpoint",
        model_path=str(tiny["clip"]),
        offline=True,
        device="cpu",
    )
    got = similarity.search_text(
        lib.db,
        "a rabbit in a meadow",
        6,
        "tiny-clip",
        "keyframe_midpoint",
        model_path=tiny["clip"],
        offline=True,
        device="cpu",
    )
    query = embed_text(
        ["a rabbit in a meadow"],
        model="tiny-clip",
        model_path=tiny["clip"],
        offline=True,
        device="cpu",
    ).array()[0]
    want = _numpy_ranking(_vectors(lib.db, "tiny-clip", "keyframe_midpoint"), query)[:6]
    _assert_same_ranking(got, want)
    with pytest.raises(InvalidInputError, match="text search needs a CLIP model"):
        similarity.search_text(
            lib.db, "a rabbit", 5, "tiny-dinov2", model_path=tiny["dinov2"], offline=True
        )
    with pytest.raises(InvalidInputError, match="CLIP"):
        similarity.search_text(lib.db, "a rabbit", 5, PIXELS)


def test_near_duplicates_before_review_keeps_states(lib: Library) -> None:
    idents = [c.identifier for c in lib.clips]
    out = embeddings.embed_clips(lib.db, lib.store, idents, model=PIXELS, before_review=True)
    assert len(out.done) == 16 and {lib.state(c).state for c in lib.clips} == {"pending_review"}
    pairs = similarity.near_duplicates(lib.db, 0.01, PIXELS, "keyframe_multi_avg")
    first, second = sorted(lib.videos)
    twins = {(a.id, b.id) for a, b in zip(lib.videos[first], lib.videos[second], strict=True)}
    assert {(p.a.clip_id, p.b.clip_id) for p in pairs} == twins
    assert all(p.distance < 0.01 and p.a.source_video_id != p.b.source_video_id for p in pairs)
    # A looser threshold adds pairs, closest first.
    loose = similarity.near_duplicates(lib.db, 0.5, PIXELS, "keyframe_multi_avg")
    assert len(loose) > len(pairs)
    assert [p.distance for p in loose] == sorted(p.distance for p in loose)
    assert similarity.near_duplicates(lib.db, 0.01, "tiny-clip") == []
    # Without before_review, pending clips are skipped (they are not approved yet).
    again = embeddings.embed_clips(
        lib.db, lib.store, idents[:2], model=PIXELS, strategy="keyframe_midpoint"
    )
    assert not again.done and all("pending_review" in r for r in again.skipped.values())


def test_embed_missing_embeds_only_the_missing(lib: Library) -> None:
    video = lib.videos[min(lib.videos)]
    lib.approve(video)
    embeddings.embed_clips(lib.db, lib.store, [c.identifier for c in video[:3]], model=PIXELS)
    missing = embeddings.clips_missing_embedding(lib.db, PIXELS, "keyframe_multi_avg")
    assert [cid for cid, _ in missing] == [c.id for c in video[3:]]
    # A new model: every approved/embedded clip misses it; pending clips are not in scope.
    assert len(embeddings.clips_missing_embedding(lib.db, PIXELS, "keyframe_midpoint")) == 8
    before = _vectors(lib.db, PIXELS, "keyframe_multi_avg")
    with lib.db.session() as s:
        created = dict(s.execute(select(ClipEmbedding.clip_id, ClipEmbedding.created_at)).all())
    out = embeddings.embed_missing(lib.db, lib.store, model=PIXELS, strategy="keyframe_multi_avg")
    assert out.done == [c.identifier for c in video[3:]] and not out.failed
    assert embeddings.clips_missing_embedding(lib.db, PIXELS, "keyframe_multi_avg") == []
    with lib.db.session() as s:
        after = dict(s.execute(select(ClipEmbedding.clip_id, ClipEmbedding.created_at)).all())
    assert all(after[cid] == created[cid] for cid in before)  # the others were not touched
    assert {lib.state(c).state for c in video} == {"embedded"}

    order = [c.identifier for c in lib.clips]
    wanted = [order[1], order[2], order[3], order[6], order[15]]
    assert partition_ranges(wanted, order, 500) == [
        (order[1], order[3]),
        (order[6], order[6]),
        (order[15], order[15]),
    ]
    assert partition_ranges(order, order, max_per_run=5) == [
        (order[0], order[4]),
        (order[5], order[9]),
        (order[10], order[14]),
        (order[15], order[15]),
    ]


def test_defaults_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(space.MODEL_ENV, raising=False)
    monkeypatch.delenv(space.STRATEGY_ENV, raising=False)
    assert space.default_model() == PIXELS
    assert space.default_strategy() == "keyframe_multi_avg"
    monkeypatch.setenv(space.MODEL_ENV, "openai/clip-vit-base-patch32")
    monkeypatch.setenv(space.STRATEGY_ENV, "keyframe_midpoint")
    assert space.default_model() == "openai/clip-vit-base-patch32"
    assert space.default_strategy() == "keyframe_midpoint"


# --------------------------------------------------------------------------------- failures


def _failed(lib: Library, clips: list[Clip]) -> list[tuple[str, str]]:
    return [(c.state, c.error or "") for c in (lib.state(x) for x in clips)]


def test_model_errors_fail_every_started_clip_and_store_nothing(
    lib: Library, tiny: dict[str, Path], tmp_path: Path
) -> None:
    video = lib.videos[min(lib.videos)][:4]
    idents = [c.identifier for c in video]
    lib.approve(video)
    with pytest.raises(InvalidInputError, match="unknown embedding model"):
        embeddings.embed_clips(lib.db, lib.store, idents, model="acme/not-a-model")
    assert all(
        s == "embedding_failed" and "unknown embedding model 'acme/not-a-model'" in e
        for s, e in _failed(lib, video)
    )

    half = config_only_folder(tiny["clip"], tmp_path / "half-clip")
    with pytest.raises(InvalidInputError, match="save_pretrained"):
        embeddings.embed_clips(
            lib.db,
            lib.store,
            idents,
            model="half-clip",
            model_path=str(half),
            offline=True,
            device="cpu",
        )
    assert all(
        s == "embedding_failed" and e.startswith("model_not_found:") for s, e in _failed(lib, video)
    )

    # A model stored under a name whose HNSW index (from the migration) is 512-d.
    with pytest.raises(space.EmbeddingDimensionError, match="16-d vectors but its HNSW"):
        embeddings.embed_clips(
            lib.db,
            lib.store,
            idents,
            model="openai/clip-vit-base-patch32",
            model_path=str(tiny["clip"]),
            offline=True,
            device="cpu",
        )
    assert all(
        s == "embedding_failed" and e.startswith("dimension_mismatch:")
        for s, e in _failed(lib, video)
    )
    with pytest.raises(InvalidInputError, match="cannot be stored"):
        embeddings.embed_clips(lib.db, lib.store, idents, model=PIXELS, strategy="keyframe_multi")
    assert _count(lib.db) == 0

    # Stored vectors of another dimension under the same name are refused the same way.
    embeddings.embed_clips(
        lib.db,
        lib.store,
        idents[:1],
        model="tiny",
        model_path=str(tiny["dinov2"]),
        offline=True,
        device="cpu",
    )
    with pytest.raises(space.EmbeddingDimensionError, match=r"16-d vectors but .* 32-d"):
        embeddings.embed_clips(
            lib.db,
            lib.store,
            idents[1:],
            model="tiny",
            model_path=str(tiny["clip"]),
            offline=True,
            device="cpu",
        )
    assert _count(lib.db) == 1
    # Failures are retryable: the right model embeds the failed clips.
    retry = embeddings.embed_clips(lib.db, lib.store, idents, model=PIXELS)
    assert retry.done == idents and {lib.state(c).state for c in video} == {"embedded"}
    assert all(lib.state(c).error is None for c in video)


def test_a_corrupt_keyframe_fails_only_its_clip(lib: Library, tiny: dict[str, Path]) -> None:
    video = lib.videos[min(lib.videos)]
    lib.approve(video)
    bad = video[2]
    key = keys.keyframe_key(bad.source_video_id, bad.identifier, "multi", 75)
    lib.store.upload_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all" * 4, key)
    lost = video[5]  # a keyframe object missing from the store
    lib.store.delete_many([keys.keyframe_key(lost.source_video_id, lost.identifier, "multi", 25)])
    idents = [c.identifier for c in video]
    out = embeddings.embed_clips(
        lib.db,
        lib.store,
        idents,
        model="tiny-dinov2",
        model_path=str(tiny["dinov2"]),
        offline=True,
        device="cpu",
        batch_size=8,
    )
    assert set(out.failed) == {bad.identifier, lost.identifier}
    assert out.failed[bad.identifier].startswith("corrupt_media:")
    assert out.done == [i for i in idents if i not in out.failed]
    assert lib.state(bad).state == "embedding_failed" and "multi_75" in (lib.state(bad).error or "")
    assert lib.state(lost).state == "embedding_failed"
    assert set(_vectors(lib.db, "tiny-dinov2", "keyframe_multi_avg")) == {
        c.id for c in video if c.identifier in out.done
    }
    with pytest.raises(steps.StepFailedError, match="embedding failed for 2"):
        out.raise_for_failures()


# ---------------------------------------------------------------------- Dagster in-process


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def test_clip_embedding_asset_sensors_and_check(
    lib: Library,
    tiny: dict[str, Path],
    pg_server: EmbeddedServer,
    tmp_path: Path,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from heaters_assets.definitions import build_definitions
    from heaters_assets.partitions import SOURCE_VIDEOS, partition_range_tags
    from heaters_assets.sensors.embeddings import approved_clips_sensor, missing_embeddings_sensor
    from heaters_resources.orchestration.resources import (
        DatabaseResource,
        ObjectStoreResource,
        SettingsResource,
    )

    monkeypatch.delenv(space.MODEL_ENV, raising=False)
    monkeypatch.delenv(space.STRATEGY_ENV, raising=False)
    resources = {
        "database": DatabaseResource(database_url=pg_server.url),
        "object_store": ObjectStoreResource(heaters_home=str(tmp_path)),
        "settings": SettingsResource(heaters_home=str(tmp_path), database_url=pg_server.url),
    }
    defs = build_definitions(resources)
    vid1, vid2 = sorted(lib.videos)
    instance.add_dynamic_partitions(SOURCE_VIDEOS, [str(vid1), str(vid2)])
    v1, v2 = lib.videos[vid1], lib.videos[vid2]
    lib.approve(v1)

    def ctx(cursor: str | None = None) -> dg.SensorEvaluationContext:
        return dg.build_sensor_context(
            instance=instance, resources=resources, cursor=cursor, definitions=defs
        )

    approved = approved_clips_sensor(ctx())
    # The approved clips' video: one run of its partition.
    assert [r.partition_key for r in approved.run_requests] == [str(vid1)]
    assert not approved_clips_sensor(ctx(approved.cursor)).run_requests

    job = defs.resolve_job_def("embed_clips_job")
    assert job.tags["heaters/resource"] == "embedding"  # one embedding run at a time
    config = {
        "model": "tiny-dinov2",
        "model_path": str(tiny["dinov2"]),
        "offline": True,
        "device": "cpu",
        "batch_size": 8,
    }
    run = job.execute_in_process(
        instance=instance,
        partition_key=approved.run_requests[0].partition_key,
        run_config={"ops": {"clip_embedding": {"config": config}}},
    )
    assert run.success
    (mat,) = run.asset_materializations_for_node("clip_embedding")
    assert mat.partition == str(vid1)
    meta = mat.metadata
    assert meta["model"].value == "tiny-dinov2" and meta["dimension"].value == 32
    assert meta["clips_done"].value == len(v1) == 8 and meta["run_images_per_second"].value > 0
    checks = run.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [("embedding_dimension_and_norm", True)]
    assert {lib.state(c).state for c in v1} == {"embedded"}

    # The backfill sensor (default model = pixels-v1): the videos with clips missing it, as one
    # range; the run embeds only the clips that miss it.
    states.approve_clip(lib.db, v2[0].id)
    states.approve_clip(lib.db, v2[2].id)
    missing = missing_embeddings_sensor(ctx())
    assert [r.tags for r in missing.run_requests] == [partition_range_tags(str(vid1), str(vid2))]
    for request in missing.run_requests:
        backfill = job.execute_in_process(instance=instance, tags=request.tags)
        assert backfill.success
        done = {
            m.partition: m.metadata["clips_done"].value
            for m in backfill.asset_materializations_for_node("clip_embedding")
        }
        assert done == {str(vid1): len(v1), str(vid2): 2}
    assert embeddings.clips_missing_embedding(lib.db) == []
    assert missing_embeddings_sensor(ctx()).skip_reason

    # A failing clip fails the run, after the others were stored.
    lib.store.upload_bytes(
        b"garbage", keys.keyframe_key(v2[4].source_video_id, v2[4].identifier, "multi", 50)
    )
    lib.approve([v2[3], v2[4]])
    bad = job.execute_in_process(instance=instance, raise_on_error=False, partition_key=str(vid2))
    assert not bad.success
    assert lib.state(v2[3]).state == "embedded" and lib.state(v2[4]).state == "embedding_failed"
    # The video with a failed clip is not reported as materialized.
    assert bad.asset_materializations_for_node("clip_embedding") == []


# ------------------------------------------------------------------------------------ CLI


def test_cli_similar_search_duplicates_and_embed_missing(
    lib: Library,
    tiny: dict[str, Path],
    pg_server: EmbeddedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from heaters_resources.cli.main import app

    monkeypatch.setenv("HEATERS_DATABASE_URL", pg_server.url)
    monkeypatch.setenv("HEATERS_HOME", str(tmp_path))
    monkeypatch.delenv("HEATERS_S3_BUCKET", raising=False)
    monkeypatch.delenv(space.MODEL_ENV, raising=False)
    monkeypatch.delenv(space.STRATEGY_ENV, raising=False)
    runner = CliRunner()

    def heaters(*args: str, code: int = 0) -> dict[str, Any]:
        result = runner.invoke(app, [*args, "--json"])
        assert result.exit_code == code, (result.stdout, result.stderr)
        (line,) = result.stdout.strip().splitlines()  # one JSON document, no table
        return json.loads(line)

    def table(*args: str, code: int = 0) -> tuple[str, str]:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (result.stdout, result.stderr)
        assert not result.stdout.lstrip().startswith("{")
        return result.stdout, result.stderr

    v1, v2 = (lib.videos[v] for v in sorted(lib.videos))
    lib.approve(v1)
    dry = heaters("embed-missing", "--dry-run")
    assert dry["missing"] == [c.identifier for c in v1] and len(dry["runs"]) == 1
    done = heaters("embed-missing", "--local")
    assert done["done"] == [c.identifier for c in v1] and not done["failed"]
    assert heaters("embed-missing", "--dry-run")["missing"] == []

    embeddings.embed_clips(
        lib.db, lib.store, [c.identifier for c in v2], model=PIXELS, before_review=True
    )
    out = heaters("similar", v1[2].identifier, "-k", "3")
    assert out["model"] == PIXELS and len(out["results"]) == 3
    assert out["results"][0]["clip_id"] == v2[2].id and out["results"][0]["distance"] < 1e-4
    same = heaters("similar", str(v1[2].id), "-k", "3", "--exclude-same-video")
    assert {r["source_video_id"] for r in same["results"]} == {v2[0].source_video_id}
    pairs = heaters("near-duplicates", "--threshold", "0.01")["pairs"]
    assert len(pairs) == 8 and not any(p["same_video"] for p in pairs)
    # Without --json: tables for people, the same answers.
    shown, _ = table("similar", v1[2].identifier, "--top", "3")
    assert v2[2].identifier in shown and "distance" in shown
    shown, _ = table("near-duplicates", "--threshold", "0.01")
    assert "8 near-duplicate pairs" in shown and all(p["a_identifier"] in shown for p in pairs)
    _, said = table("similar", "999999", code=2)
    assert said.strip() == "heaters: error (NotFoundError): clip not found: 999999"

    err = heaters("search", "a rabbit", code=2)
    assert err["error"]["type"] == "invalid_input" and "CLIP" in err["error"]["message"]
    assert heaters("similar", "999999", code=2)["error"]["message"] == "clip not found: 999999"

    embeddings.embed_clips(
        lib.db,
        lib.store,
        [c.identifier for c in v1],
        model="tiny-clip",
        model_path=str(tiny["clip"]),
        offline=True,
        device="cpu",
    )
    found = heaters(
        "search",
        "a rabbit",
        "-k",
        "4",
        "--model",
        "tiny-clip",
        "--model-path",
        str(tiny["clip"]),
        "--offline",
    )
    assert len(found["results"]) == 4
    assert {r["clip_id"] for r in found["results"]} <= {c.id for c in v1}


# ------------------------------------------------ weights-free descriptor: re-encoded copy


SIZE = (96, 54)
CLIP_FRAMES = 8
CLIPS_PER_SOURCE = 26
SOURCES = [  # diverse lavfi footage; the hue turns once over each source's clips
    "testsrc2",
    "mandelbrot",
    "smptehdbars",
    "life=seed=7:mold=10:ratio=0.3",  # seeded: the same footage every run
    "cellauto=seed=7:rule=110",
    "rgbtestsrc",
    "gradients=speed=0.05",
    "color=c=0x3050a0,noise=alls=30:allf=t",
]


def _frames(source: str, n: int) -> np.ndarray:
    """``n`` BGR frames of a lavfi source at SIZE, straight from ffmpeg (no file)."""
    name, _, opts = source.partition("=")
    head, _, chain = f"{name}=s={SIZE[0]}x{SIZE[1]}:r=25{':' + opts if opts else ''}".partition(",")
    graph = f"{head}{',' + chain if chain else ''},hue=H=2*PI*n/{n}:s=1.2"
    raw = subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            graph,
            "-frames:v",
            str(n),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "bgr24",
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, np.uint8).reshape(n, SIZE[1], SIZE[0], 3)


def _reencoded_copy(frames: np.ndarray, tmp: Path) -> np.ndarray:
    """The clip re-encoded with H.264 at a slightly smaller size (90x50), decoded back."""
    h, w = frames.shape[1:3]
    out = tmp / "copy.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "bgr24",
            "-s",
            f"{w}x{h}",
            "-r",
            "25",
            "-i",
            "-",
            "-vf",
            "scale=90:50",
            "-c:v",
            "libx264",
            "-crf",
            "30",
            "-pix_fmt",
            "yuv420p",
            str(out),
        ],
        input=frames.tobytes(),
        check=True,
    )
    cap = cv2.VideoCapture(str(out))
    decoded = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        decoded.append(frame)
    cap.release()
    assert len(decoded) == len(frames)
    return np.stack(decoded)


def _register(db: Database, store: LocalObjectStore, clips: list[np.ndarray]) -> list[str]:
    """One source video holding ``clips`` (each CLIP_FRAMES frames): rows via the state module
    in bulk, multi keyframes (25/50/75 %) in the store, clips left in pending_review."""
    n = len(clips) * CLIP_FRAMES
    vid = states.create_source_video(db, "generated")
    states.start_downloading(db, vid)
    states.complete_downloading(
        db, vid, original_key=keys.source_original_key(vid, "mp4"), fps=25.0, frame_count=n
    )
    states.start_splicing(db, vid)
    specs = [states.ClipSpec(i * CLIP_FRAMES, (i + 1) * CLIP_FRAMES) for i in range(len(clips))]
    ids = states.create_clips_from_splice(db, vid, specs, fps=25.0)
    states.start_keyframing_many(db, ids)
    artifacts: dict[int, list[states.ArtifactSpec]] = {}
    idents = []
    for cid, spec, frames in zip(ids, specs, clips, strict=True):
        ident = keys.clip_identifier(vid, spec.start_frame, spec.end_frame)
        idents.append(ident)
        for pct in (25, 50, 75):
            key = keys.keyframe_key(vid, ident, "multi", pct)
            ok, jpg = cv2.imencode(".jpg", frames[CLIP_FRAMES * pct // 100])
            assert ok
            store.upload_bytes(jpg.tobytes(), key)
            artifacts.setdefault(cid, []).append(
                states.ArtifactSpec("keyframe", "multi", key, tag=str(pct))
            )
    states.complete_keyframing_many(db, artifacts)
    states.start_sprite_generation_many(db, ids)
    states.complete_sprite_generation_many(db, {cid: [] for cid in ids})
    return idents


def test_descriptor_finds_reencoded_scaled_copy_among_200_clips(
    db: Database, local_store: LocalObjectStore, tmp_path: Path
) -> None:
    idents: list[str] = []
    originals: dict[str, np.ndarray] = {}
    for source in SOURCES:
        frames = _frames(source, CLIPS_PER_SOURCE * CLIP_FRAMES)
        clips = [frames[i * CLIP_FRAMES : (i + 1) * CLIP_FRAMES] for i in range(CLIPS_PER_SOURCE)]
        made = _register(db, local_store, clips)
        originals.update(zip(made, clips, strict=True))
        idents += made
    assert len(idents) == len(SOURCES) * CLIPS_PER_SOURCE >= 201
    targets = [idents[5], idents[CLIPS_PER_SOURCE + 17], idents[4 * CLIPS_PER_SOURCE + 9]]
    copies = [
        _register(db, local_store, [_reencoded_copy(originals[t], tmp_path)])[0] for t in targets
    ]
    out = embeddings.embed_clips(
        db, local_store, idents + copies, model=PIXELS, before_review=True, batch_size=64
    )
    assert len(out.done) == len(idents) + len(copies) and not out.failed
    for target, copy in zip(targets, copies, strict=True):
        nearest = similarity.similar_clips(db, copy, 3, PIXELS, "keyframe_multi_avg")
        assert nearest[0].identifier == target, (target, nearest)
        assert nearest[0].distance < 0.5 * nearest[1].distance, nearest
