"""Library scale: what the read paths and Dagster's bookkeeping cost with N clips stored.

Usage: ``.venv/bin/python -m benchmarks.bench_library --clips N [--clips-per-video 25]
[--dim 512] [--repeat 3] [--backfill-runs K] [--skip-near-duplicates] [--profile METRIC]
[--json]``; defaults: 2,000 clips, a minute or less.

The library is built through the project's own code paths in a temporary HEATERS_HOME
(embedded Postgres, migrations; no media, no object store): per video ``create_source_video``,
``start_downloading`` / ``complete_downloading``, ``start_splicing`` and one
``create_clips_from_splice`` (the splice step's transaction; 4 threads); then, oldest videos
first, the bulk transitions ``start_keyframing_many`` / ``complete_keyframing_many`` (3
keyframes each), the sprite pair (one sprite + sidecar), review (``approve`` / ``skip`` /
``archive`` through ``states.core.apply_transition`` with one ``review_events`` row per clip,
as the review page writes them), ``start_embedding_many`` + one random unit vector per
approved / embedded clip (binary COPY as in bench_pgvector; every 50th a near-copy of the one
before) + ``complete_embedding``, and the model's HNSW index. About 37 % embedded, 10 %
approved, 3 % archived, 3 % skipped, 43 % pending review, 3 % keyframed, 2 % spliced
(``clips_by_state``). ``synchronous_commit`` is off while building only. The Dagster
instance is the repository's ``dagster.yaml`` on a ``dagster`` database of the same server,
set up as ``heaters dev`` does (``orchestration.instance.prepare_dagster_home``), else
``dg.instance_for_test()`` (sqlite; ``dagster_storage`` says which); one partition per video.

Figures, in seconds (best of ``--repeat`` when a try takes under 5 s, else one try):

- ``build_s``: all of the above (``build_phases`` splits it).
- ``backfill_run_creation_s``: the daemon's code path approximated, not the daemon itself:
  a backfill of ``keyframes`` + ``sprite_sheet`` over every video with the backfill policy
  (20 videos a run): ``ranges.partition_ranges`` over the instance's partition order, one
  execution plan of ``clip_artifacts_job`` (the daemon caches one per job), then
  ``instance.create_run_for_job`` per range with ``names.partition_range_tags`` and a backfill
  tag. Creating a run logs its ASSET_MATERIALIZATION_PLANNED events (by default one per
  partition and asset). Left out: the daemon's backfill bookkeeping, ``submit_run``, the runs.
  One try; ``runs_created`` of ``backfill_ranges`` (``--backfill-runs`` caps it). The instance
  is ``heaters dev``'s: our event log (``orchestration/event_log.py``) with
  DAGSTER_EVENT_BATCH_SIZE set, so that a run's planned events are one INSERT.
  Over the first ``compared_runs`` (at most 100) runs: ``backfill_stock_s`` with Dagster's own
  event-log writes (DAGSTER_EVENT_BATCH_SIZE=0: an INSERT, a NOTIFY and an upsert on two new
  connections per event; the partition keys stay cached by our event log) and
  ``backfill_subset_events_s`` with DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS (one
  planned event per asset and run; Dagster then cannot mark a failed run's partitions failed).
- ``partitions_page_s``: the data of the ``keyframes`` partitions page: the ``source_videos``
  keys and the materialized / failed / in-progress subsets from the asset status cache
  (``get_and_update_asset_status_cache_value``, as the webserver), after a runless
  ``AssetMaterialization`` for half of the partitions (batched writes, ``materializations_s``;
  the backfills' planned events leave the rest in progress). ``partitions_page_cold_s``: the
  first try, which builds the cache.
- ``sensor_tick_s``: the worst of one tick of ``new_clips_sensor``, ``approved_clips_sensor``
  and ``review_actions_sensor`` (``dg.build_sensor_context`` with Definitions and resources)
  from the cursor each had right before 1,000 new clips (40 new videos), 1,000 approvals and
  1,000 review events (archive / skip in turn; HEATERS_ARCHIVE_GRACE_SECONDS=0 so archives
  become run requests) were made; a tick reads at most 500 rows. ``sensor_ticks_s``: each.
- ``near_duplicates_s``: ``similarity.near_duplicates(db, 0.05, model_name=..., strategy=...)``
  (``near_duplicate_pairs`` found of ``near_duplicates_planted``).
- ``queue_page_s``: ``review.queries.pending_clip_ids(db, limit=50)`` + ``pending_count(db)``.
- ``status_s``: ``heaters status --json`` through Typer's CliRunner (every video with its
  per-state counts; the engine is warm after the first try).
- ``export_s``: ``export.export_manifest(db, file, fmt="jsonl")``, every approved clip
  (``export_rows``).
- ``load_avg`` (at the end; ``load_avg_before``) and ``cpus``: these are wall-clock times on
  whatever else the machine runs.

The sensor scenario comes last: the other figures and ``clips_by_state`` (summing to
``clips``) are of the library as built.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import numpy as np
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from heaters_assets.definitions import build_definitions, defs
from heaters_assets.partitions import source_videos_partitions
from heaters_assets.sensors.embeddings import approved_clips_sensor
from heaters_assets.sensors.pipeline import new_clips_sensor, review_actions_sensor
from heaters_resources import export, states
from heaters_resources.db.embedded_pg import ensure_server, stop_server
from heaters_resources.db.engine import Database, get_database
from heaters_resources.db.models import Clip, ReviewEvent
from heaters_resources.orchestration import names
from heaters_resources.orchestration.instance import prepare_dagster_home
from heaters_resources.orchestration.ranges import VIDEOS_PER_MEDIA_RUN, partition_ranges
from heaters_resources.orchestration.resources import (
    DatabaseResource,
    ObjectStoreResource,
    SettingsResource,
)
from heaters_resources.review import queries
from heaters_resources.search import ensure_hnsw_index
from heaters_resources.search.similarity import near_duplicates
from heaters_resources.settings import Settings
from heaters_resources.states.core import CLIPS, any_id, apply_transition, array_literal
from heaters_resources.store import keys

MODEL, STRATEGY = "bench/random", "keyframe_multi_avg"
FRAMES, FPS = 50, 25.0  # frames per clip (2 s)
CHUNK = 10_000  # clips per bulk transition
COMPARE_RUNS = 100  # runs created by each alternative event-log path
SCENARIO = 1_000  # new clips / approvals / review events before the sensor ticks
CHEAP_S = 5.0  # a try shorter than this is repeated
DUPLICATE_EVERY = 50
METRICS = ("backfill", "partitions_page", "queue", "status", "export", "near_duplicates", "sensors")
SPRITE = "w480_f24_c5"
SPRITE_META = {"cols": 5, "rows": 10, "frame_count": 48, "tile_width": 480, "tile_height": 270}
SPRITE_META |= {"sprite_fps": 24, "duration": 2}  # 50 frames at 25 fps
T = TypeVar("T")


class Timer:
    """Best-of-``repeat`` timings; the first try of the ``profile`` metric under cProfile."""

    def __init__(self, repeat: int, profile: str | None) -> None:
        self.repeat, self.profile, self.report = repeat, profile, ""

    def best(self, name: str, fn: Callable[[], T], *, once: bool = False) -> tuple[float, T]:
        best, result = float("inf"), None
        for i in range(1 if once else self.repeat):
            prof = cProfile.Profile() if self.profile == name and i == 0 else None
            t0 = time.perf_counter()
            result = prof.runcall(fn) if prof is not None else fn()
            elapsed = time.perf_counter() - t0
            if prof is not None:
                buf = io.StringIO()
                pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(35)
                self.report += buf.getvalue()
            best = min(best, elapsed)
            if elapsed > CHEAP_S:
                break
        return best, result  # type: ignore[return-value]


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def chunks(ids: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for lo in range(0, len(ids), size):
        yield ids[lo : lo + size]


# ----------------------------------------------------------------------------- library


def make_video(db: Database, n: int) -> tuple[int, list[int]]:
    """One video as the ingest and splice steps leave it, with ``n`` clips (spliced)."""
    vid = states.create_source_video(db, "bench://library")
    states.start_downloading(db, vid)
    states.complete_downloading(
        db, vid, original_key=keys.source_original_key(vid, "mp4"), fps=FPS, frame_count=n * FRAMES
    )
    states.start_splicing(db, vid)
    specs = [states.ClipSpec(i * FRAMES, (i + 1) * FRAMES) for i in range(n)]
    return vid, states.create_clips_from_splice(db, vid, specs)


def make_videos(db: Database, clips: int, per_video: int) -> list[tuple[int, list[int]]]:
    sizes = [min(per_video, clips - lo) for lo in range(0, clips, per_video)]
    with ThreadPoolExecutor(4) as pool:
        return sorted(pool.map(lambda n: make_video(db, n), sizes))


def _idents(db: Database, ids: Sequence[int]) -> dict[int, tuple[int, str]]:
    with db.session() as s:
        rows = s.execute(
            select(Clip.id, Clip.source_video_id, Clip.identifier).where(any_id(CLIPS, ids))
        ).all()
    return {cid: (vid, ident) for cid, vid, ident in rows}


def _keyframes(vid: int, ident: str) -> list[states.ArtifactSpec]:
    return [
        states.ArtifactSpec(
            "keyframe",
            "multi",
            keys.keyframe_key(vid, ident, "multi", p),
            tag=str(p),
            meta={"pct": p, "timestamp": p / 100 * FRAMES / FPS},
        )
        for p in (25, 50, 75)
    ]


def _sprite(vid: int, ident: str) -> list[states.ArtifactSpec]:
    sidecar = keys.sprite_metadata_key(vid, ident, SPRITE)
    key = keys.sprite_key(vid, ident, SPRITE)
    return [states.ArtifactSpec("sprite_sheet", SPRITE, key, sidecar_key=sidecar, meta=SPRITE_META)]


def keyframe(db: Database, ids: Sequence[int]) -> None:
    """spliced -> keyframing -> keyframed, three keyframe artifacts per clip."""
    for chunk in chunks(ids):
        of = _idents(db, chunk)
        states.start_keyframing_many(db, chunk)
        states.complete_keyframing_many(db, {c: _keyframes(*of[c]) for c in chunk})


def sprite(db: Database, ids: Sequence[int]) -> None:
    """keyframed -> generating_sprite -> pending_review, one sprite sheet (+ sidecar) each."""
    for chunk in chunks(ids):
        of = _idents(db, chunk)
        states.start_sprite_generation_many(db, chunk)
        states.complete_sprite_generation_many(db, {c: _sprite(*of[c]) for c in chunk})


REVIEW_EVENTS = """
INSERT INTO review_events (action, actor, clip_ids, previous_states)
SELECT u.action, 'bench', ARRAY[u.c], ARRAY[u.prev]::varchar(32)[]
FROM unnest(CAST(:ids AS BIGINT[]), CAST(:prev AS TEXT[]), CAST(:actions AS TEXT[]))
     WITH ORDINALITY AS u(c, prev, action, n)
ORDER BY u.n
"""


def review(db: Database, items: Sequence[tuple[int, str]]) -> None:
    """(clip, approve / skip / archive) as the review page does them: the clip moves as
    ``states.approve_clip`` etc. move it and gets its own ``review_events`` row, in order (one
    transaction per chunk instead of one per clip)."""
    for chunk in chunks(items):

        def work(s: Session, chunk: Sequence[tuple[int, str]] = chunk) -> None:
            old: dict[int, Any] = {}
            for action in dict.fromkeys(a for _, a in chunk):
                ids = [c for c, a in chunk if a == action]
                old.update(apply_transition(s, "clip", action, ids, reviewed_at=func.now()))
            params = {
                "ids": array_literal([c for c, _ in chunk]),
                "prev": array_literal([old[c].state for c, _ in chunk]),
                "actions": array_literal([a for _, a in chunk]),
            }
            s.execute(text(REVIEW_EVENTS), params)

        db.run(work)


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """Random unit vectors; every DUPLICATE_EVERY-th is a near-copy of the one before it."""
    v = rng.standard_normal((n, dim), dtype=np.float32)
    copies = np.arange(DUPLICATE_EVERY - 1, n, DUPLICATE_EVERY)
    v[copies] = v[copies - 1] + 0.01 * rng.standard_normal((len(copies), dim), dtype=np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def copy_vectors(db: Database, clip_ids: Sequence[int], vectors: np.ndarray) -> None:
    """Binary COPY into clip_embeddings (pgvector's binary format: int16 dim, int16 0, float4)."""
    dim, model, strategy = vectors.shape[1], MODEL.encode(), STRATEGY.encode()
    fmt = f"!i{len(model)}si{len(strategy)}siiihh"
    tail = struct.pack(fmt, len(model), model, len(strategy), strategy, 4, dim, 4 + 4 * dim, dim, 0)
    body, row = vectors.astype(">f4").tobytes(), 4 * dim
    for lo in range(0, len(clip_ids), 50_000):
        buf = io.BytesIO()
        buf.write(b"PGCOPY\n\xff\r\n\0" + struct.pack("!ii", 0, 0))
        for i in range(lo, min(lo + 50_000, len(clip_ids))):
            buf.write(struct.pack("!hiq", 5, 8, clip_ids[i]) + tail + body[i * row : (i + 1) * row])
        buf.write(struct.pack("!h", -1))
        buf.seek(0)
        raw = db.engine.raw_connection()
        try:
            cur: Any = raw.cursor()  # psycopg2's, with copy_expert
            cur.copy_expert(
                "COPY clip_embeddings (clip_id, model_name, generation_strategy, dimension, "
                "embedding) FROM STDIN WITH (FORMAT binary)",
                buf,
            )
            cur.close()
            raw.commit()
        finally:
            raw.close()


def state_plan(ids: Sequence[int]) -> dict[str, list[int]]:
    """Clips in id order (oldest videos first) -> the state each one ends in."""
    n = len(ids)
    reviewed, pending_end, keyframed_end = int(0.52 * n), int(0.95 * n), int(0.98 * n)
    plan: dict[str, list[int]] = {"archived": [], "skipped": [], "approved": []}
    for j, cid in enumerate(ids[:reviewed]):
        plan[{0: "archived", 1: "skipped"}.get(j % 33, "approved")].append(cid)
    cut = int(0.78 * len(plan["approved"]))
    plan["embedded"], plan["approved"] = plan["approved"][:cut], plan["approved"][cut:]
    plan["pending_review"] = list(ids[reviewed:pending_end])
    plan["keyframed"] = list(ids[pending_end:keyframed_end])
    plan["spliced"] = list(ids[keyframed_end:])
    return plan


def build_library(
    db: Database, clips: int, per_video: int, dim: int, phases: dict[str, float]
) -> tuple[list[int], int]:
    """The library in its states; returns (video ids, planted near-duplicates)."""
    t0 = time.perf_counter()
    videos = make_videos(db, clips, per_video)
    ids = [cid for _, cids in videos for cid in cids]
    plan = state_plan(ids)
    t1 = time.perf_counter()
    spliced, keyframed = set(plan["spliced"]), set(plan["keyframed"])
    keyframe(db, [c for c in ids if c not in spliced])
    sprite(db, [c for c in ids if c not in spliced and c not in keyframed])
    t2 = time.perf_counter()
    action = {c: "approve" for c in (*plan["embedded"], *plan["approved"])}
    action.update({c: "skip" for c in plan["skipped"]})
    action.update({c: "archive" for c in plan["archived"]})
    review(db, [(c, action[c]) for c in ids if c in action])
    t3 = time.perf_counter()
    embedded = plan["embedded"]
    vectors = unit_vectors(np.random.default_rng(0), len(embedded) + len(plan["approved"]), dim)
    for chunk in chunks(embedded):
        states.start_embedding_many(db, chunk)
    # The approved clips' vectors: stored without a state change, as review's "similar clips".
    copy_vectors(db, [*embedded, *plan["approved"]], vectors)
    for chunk in chunks(embedded):
        done = partial(apply_transition, entity="clip", action="complete_embedding", ids=chunk)
        db.run(partial(done, error=None))
    t4 = time.perf_counter()
    if len(vectors):
        ensure_hnsw_index(db, MODEL, dim)
    with db.engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    phases.update(
        videos_and_splices=t1 - t0,
        keyframes_and_sprites=t2 - t1,
        review=t3 - t2,
        embeddings=t4 - t3,
        hnsw_index_and_analyze=time.perf_counter() - t4,
    )
    return [vid for vid, _ in videos], len(
        range(DUPLICATE_EVERY - 1, len(vectors), DUPLICATE_EVERY)
    )


def clips_by_state(db: Database) -> dict[str, int]:
    with db.session() as s:
        rows = s.execute(select(Clip.state, func.count()).group_by(Clip.state)).all()
    return {state: int(n) for state, n in sorted(rows)}


def set_database(db: Database, setting: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(text(f"ALTER DATABASE postgres {setting}"))
    db.engine.dispose()  # new connections get it


# ----------------------------------------------------------------------------- dagster


@contextlib.contextmanager
def dagster_instance(settings: Settings, tmp: Path) -> Iterator[tuple[dg.DagsterInstance, str]]:
    """dagster.yaml on Postgres (a ``dagster`` database of the same server), else sqlite."""
    instance: dg.DagsterInstance | None = None
    try:
        with environ(DAGSTER_HOME=str(tmp / "dagster")):
            env = prepare_dagster_home(settings)
        dagster_env = {k: env[k] for k in ("HEATERS_DAGSTER_PG_URL", "DAGSTER_EVENT_BATCH_SIZE")}
        with environ(**dagster_env):
            instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
            instance.get_dynamic_partitions(names.SOURCE_VIDEOS)  # fails here if it is broken
    except Exception as exc:  # any failure to set it up: fall back, and say so
        print(f"Postgres-backed Dagster instance failed ({exc!r}); using instance_for_test")
        instance = None
    if instance is None:
        with dg.instance_for_test() as fallback:
            yield fallback, "sqlite (instance_for_test)"
        return
    try:
        with environ(**dagster_env):
            yield instance, "postgres (dagster.yaml)"
    finally:
        instance.dispose()


def add_partitions(instance: dg.DagsterInstance, video_ids: Sequence[int]) -> None:
    for chunk in chunks(video_ids):
        instance.add_dynamic_partitions(names.SOURCE_VIDEOS, [str(v) for v in chunk])


def create_backfill_runs(instance: dg.DagsterInstance, limit: int | None) -> tuple[int, int]:
    """(runs created, ranges): a run per range of at most VIDEOS_PER_MEDIA_RUN partitions, as
    the backfill daemon creates them (one cached execution plan, a run record per range)."""
    from dagster._core.execution.api import create_execution_plan

    job = defs.resolve_job_def(names.CLIP_ARTIFACTS_JOB)
    order = list(instance.get_dynamic_partitions(names.SOURCE_VIDEOS))
    ranges = partition_ranges(order, order, VIDEOS_PER_MEDIA_RUN)
    plan = create_execution_plan(job, run_config={}, instance_ref=instance.get_ref())
    tags = {**names.MEDIA_TAGS, "dagster/backfill": uuid.uuid4().hex[:8]}
    for first, last in ranges[:limit]:
        instance.create_run_for_job(
            job,
            execution_plan=plan,
            run_config={},
            status=dg.DagsterRunStatus.NOT_STARTED,
            tags={**tags, **names.partition_range_tags(first, last)},
        )
    return len(ranges[:limit]), len(ranges)


def log_materializations(instance: dg.DagsterInstance, partitions: Sequence[str]) -> None:
    """A runless ``keyframes`` materialization per partition (metadata like the asset's), as
    ``instance.report_runless_asset_event`` logs one, written in batches of 1,000 through
    Dagster's event batching (DAGSTER_EVENT_BATCH_SIZE), as a run worker may write them."""
    from dagster._core.events import (
        DagsterEvent,
        DagsterEventBatchMetadata,
        DagsterEventType,
        StepMaterializationData,
        generate_event_batch_id,
    )
    from dagster._core.instance.utils import RUNLESS_JOB_NAME, RUNLESS_RUN_ID

    batch = generate_event_batch_id()
    with environ(DAGSTER_EVENT_BATCH_SIZE="1000"):
        for i, key in enumerate(partitions):
            table = [dg.TableRecord({"clip": f"{key}_{j}", "result": "done"}) for j in range(3)]
            mat = dg.AssetMaterialization(
                asset_key=names.KEYFRAMES_ASSET,
                partition=key,
                metadata={"clips": 25, "done": 25, "clips_table": dg.MetadataValue.table(table)},
            )
            event = DagsterEvent(
                event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
                event_specific_data=StepMaterializationData(mat),
                job_name=RUNLESS_JOB_NAME,
            )
            end = DagsterEventBatchMetadata(batch, i == len(partitions) - 1)
            instance.report_dagster_event(event, RUNLESS_RUN_ID, batch_metadata=end)


def partitions_page(instance: dg.DagsterInstance) -> dict[str, int]:
    """What the partitions page loads: the keys, then the status cache's subsets."""
    from dagster._core.storage.partition_status_cache import (
        get_and_update_asset_status_cache_value as status_cache,
    )

    part = source_videos_partitions
    keys_ = instance.get_dynamic_partitions(names.SOURCE_VIDEOS)
    value = status_cache(instance, dg.AssetKey(names.KEYFRAMES_ASSET), part)
    subsets = {
        "materialized": value and value.deserialize_materialized_partition_subsets(part),
        "failed": value and value.deserialize_failed_partition_subsets(part),
        "in_progress": value and value.deserialize_in_progress_partition_subsets(part),
    }
    return {
        "partitions": len(keys_),
        **{k: len(list(v.get_partition_keys())) if v else 0 for k, v in subsets.items()},
    }


def _max_id(db: Database, column: Any) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.coalesce(func.max(column), 0))) or 0)


def sensor_scenario(db: Database, instance: dg.DagsterInstance, per_video: int) -> dict[str, int]:
    """SCENARIO approvals, SCENARIO review events, SCENARIO new clips on new videos; returns
    each sensor's cursor from right before its batch."""
    made = make_videos(db, 2 * SCENARIO, per_video)
    ab = [cid for _, cids in made for cid in cids]
    keyframe(db, ab)
    sprite(db, ab)
    cursors = {approved_clips_sensor.name: _max_id(db, ReviewEvent.id)}
    review(db, [(c, "approve") for c in ab[:SCENARIO]])
    cursors[review_actions_sensor.name] = _max_id(db, ReviewEvent.id)
    review(db, [(c, ("archive", "skip")[i % 2]) for i, c in enumerate(ab[SCENARIO:])])
    cursors[new_clips_sensor.name] = _max_id(db, Clip.id)
    made += make_videos(db, SCENARIO, per_video)
    add_partitions(instance, [v for v, _ in made])  # as the submissions sensor does
    return cursors


def sensor_ticks(
    instance: dg.DagsterInstance, timer: Timer, cursors: dict[str, int], url: str, home: str
) -> tuple[dict[str, float], dict[str, int]]:
    resources = {
        "database": DatabaseResource(database_url=url),
        "object_store": ObjectStoreResource(heaters_home=home),
        "settings": SettingsResource(heaters_home=home, database_url=url),
    }
    definitions = build_definitions(resources)
    seconds, requests = {}, {}
    for sensor in (new_clips_sensor, approved_clips_sensor, review_actions_sensor):

        def tick(sensor: Any = sensor) -> dg.SensorResult:
            ctx = dg.build_sensor_context(
                instance=instance,
                cursor=str(cursors[sensor.name]),
                resources=resources,
                definitions=definitions,
            )
            return sensor(ctx)

        seconds[sensor.name], result = timer.best("sensors", tick)
        requests[sensor.name] = len(result.run_requests or [])
    return seconds, requests


# ----------------------------------------------------------------------------- main


def status_command(url: str, home: Path) -> int:
    """``heaters status --json`` in-process; returns how many videos it listed."""
    from typer.testing import CliRunner

    from heaters_resources.cli.main import app

    env = {"HEATERS_DATABASE_URL": url, "HEATERS_HOME": str(home)}
    result = CliRunner().invoke(app, ["status", "--json"], env=env)
    if result.exit_code != 0:
        raise RuntimeError(f"heaters status failed: {result.output[-2000:]}") from result.exception
    return len(json.loads(result.stdout.strip().splitlines()[-1])["videos"])


def run(args: argparse.Namespace, tmp: Path, out: dict[str, Any]) -> None:
    timer, home = Timer(args.repeat, args.profile), tmp / "home"
    t_build = time.perf_counter()
    url = ensure_server(home).url
    db = Database(url)
    db.ensure_migrated()
    phases = {"database": time.perf_counter() - t_build}
    set_database(db, "SET synchronous_commit = off")  # only while building
    set_database(db, "SET maintenance_work_mem = '1GB'")  # room for the HNSW graph
    video_ids, planted = build_library(db, args.clips, args.clips_per_video, args.dim, phases)
    set_database(db, "RESET synchronous_commit")
    env = {"HEATERS_HOME": str(home), "HEATERS_DATABASE_URL": url}
    settings = Settings.from_env(env)
    t0 = time.perf_counter()
    with (
        environ(**env, HEATERS_ARCHIVE_GRACE_SECONDS="0"),
        dagster_instance(settings, tmp) as (instance, storage),
    ):
        add_partitions(instance, video_ids)
        phases["dagster_instance_and_partitions"] = time.perf_counter() - t0
        library = clips_by_state(db)
        out.update(
            videos=len(video_ids),
            clips=sum(library.values()),
            build_s=time.perf_counter() - t_build,
            build_phases=phases,
            clips_by_state=library,
            dagster_storage=storage,
        )
        print(f"built {out['clips']} clips, {len(video_ids)} videos: {out['build_s']:.1f} s")
        print(f"dagster instance: {storage}", flush=True)
        measure(args, db, instance, timer, out, tmp, planted)
    get_database(url=url).dispose()
    db.dispose()
    if timer.report:
        print(f"profile of {args.profile}:\n{timer.report}", file=sys.stderr)


def measure(
    args: argparse.Namespace,
    db: Database,
    instance: dg.DagsterInstance,
    timer: Timer,
    out: dict[str, Any],
    tmp: Path,
    planted: int,
) -> None:
    cap = args.backfill_runs or None
    seconds, (runs, ranges) = timer.best(
        "backfill", lambda: create_backfill_runs(instance, cap), once=True
    )
    out.update(backfill_run_creation_s=seconds, runs_created=runs, backfill_ranges=ranges)
    print(f"backfill: {runs} of {ranges} runs created in {seconds:.2f} s", flush=True)
    # The alternatives, over at most COMPARE_RUNS runs (the stock path takes half an hour at 1M).
    few = min(cap or COMPARE_RUNS, COMPARE_RUNS)
    with environ(DAGSTER_EVENT_BATCH_SIZE="0"):
        seconds, _ = timer.best(
            "backfill_stock", lambda: create_backfill_runs(instance, few), once=True
        )
    out.update(backfill_stock_s=seconds, compared_runs=min(few, ranges))
    with environ(DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS="1"):
        seconds, _ = timer.best(
            "backfill_subset", lambda: create_backfill_runs(instance, few), once=True
        )
    out["backfill_subset_events_s"] = seconds
    print(
        f"the first {out['compared_runs']} runs: stock event log {out['backfill_stock_s']:.2f} s,"
        f" subset events {seconds:.2f} s",
        flush=True,
    )

    half = [str(v) for v in instance.get_dynamic_partitions(names.SOURCE_VIDEOS)]
    half = half[: len(half) // 2]
    t0 = time.perf_counter()
    log_materializations(instance, half)
    out.update(materializations_logged=len(half), materializations_s=time.perf_counter() - t0)
    t0 = time.perf_counter()
    partitions_page(instance)
    out["partitions_page_cold_s"] = time.perf_counter() - t0
    out["partitions_page_s"], out["partitions_page"] = timer.best(
        "partitions_page", lambda: partitions_page(instance)
    )

    seconds, (ids, pending) = timer.best(
        "queue", lambda: (queries.pending_clip_ids(db, limit=50), queries.pending_count(db))
    )
    out.update(queue_page_s=seconds, queue_pending=pending, queue_ids=len(ids))
    out["status_s"], out["status_videos"] = timer.best(
        "status", lambda: status_command(db.url, tmp / "home")
    )
    manifest = tmp / "manifest.jsonl"
    seconds, result = timer.best("export", lambda: export.export_manifest(db, manifest))
    out.update(export_s=seconds, export_rows=result.rows)
    out["near_duplicates_planted"] = planted
    if args.skip_near_duplicates:
        out.update(near_duplicates_s=None, near_duplicate_pairs=None)
    else:
        seconds, pairs = timer.best(
            "near_duplicates",
            lambda: near_duplicates(db, 0.05, model_name=MODEL, strategy=STRATEGY),
        )
        out.update(near_duplicates_s=seconds, near_duplicate_pairs=len(pairs))
        print(f"near_duplicates: {len(pairs)} pairs in {seconds:.2f} s", flush=True)

    t0 = time.perf_counter()
    cursors = sensor_scenario(db, instance, args.clips_per_video)
    out["sensor_scenario_s"] = time.perf_counter() - t0
    out["sensor_scenario"] = {
        "new_clips": SCENARIO,
        "approvals": SCENARIO,
        "review_events": SCENARIO,
    }
    ticks, requests = sensor_ticks(instance, timer, cursors, db.url, str(tmp / "home"))
    out.update(sensor_tick_s=max(ticks.values()), sensor_ticks_s=ticks)
    out["sensor_run_requests"] = requests


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=2_000, help="clips in the library")
    parser.add_argument("--clips-per-video", type=int, default=25)
    parser.add_argument("--dim", type=int, default=512, help="embedding dimension")
    parser.add_argument("--repeat", type=int, default=3, help="tries of a cheap figure")
    parser.add_argument(
        "--backfill-runs", type=int, default=0, help="create only the first K runs (0: all)"
    )
    parser.add_argument("--profile", choices=METRICS, help="cProfile a figure (to stderr)")
    parser.add_argument(
        "--skip-near-duplicates", action="store_true", help="near_duplicates_s: null (slow)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line")
    args = parser.parse_args(argv)
    out: dict[str, Any] = {"load_avg_before": [round(x, 2) for x in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="heaters-bench-library-") as tmp:
        try:
            run(args, Path(tmp), out)
        finally:
            stop_server(Path(tmp) / "home")
    out.update(dim=args.dim, clips_per_video=args.clips_per_video, cpus=os.cpu_count())
    out = _rounded({**out, "load_avg": [round(x, 2) for x in os.getloadavg()]})
    for key, value in out.items():
        if key.endswith("_s") and isinstance(value, float):
            print(f"{key:<28}{value:10.3f} s")
    print(f"load average before {out['load_avg_before']}, after {out['load_avg']}")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
