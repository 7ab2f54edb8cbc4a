"""Benchmark: bulk clip + artifact creation through the state module vs one raw INSERT ... SELECT.

Run: .venv/bin/python benchmarks/bench_db.py [--clips 10000] [--repeat 3]

Prints the cold start of the embedded database (fresh data folder: initdb + start), the warm
reuse, migrations, then for N clips and 3N keyframe artifacts the best-of-`repeat` time of
  state: create_clips_from_splice + start_keyframing_many + complete_keyframing_many
  raw:   INSERT INTO clips SELECT ... generate_series; INSERT INTO clip_artifacts SELECT ...
and their ratio (target: state within 3x of raw).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

from heaters_resources import states as st
from heaters_resources.db.embedded_pg import ensure_server, stop_server
from heaters_resources.db.engine import Database, migrate
from heaters_resources.store import keys

TABLES = (
    "review_events, pending_object_deletions, clip_embeddings, clip_artifacts, clips, source_videos"
)


def _empty(db: Database) -> None:
    with db.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))


def _video(db: Database, frames: int) -> int:
    vid = st.create_source_video(db, "bench")
    st.start_downloading(db, vid)
    st.complete_downloading(
        db, vid, original_key=keys.source_original_key(vid, "mp4"), fps=25.0, frame_count=frames
    )
    st.start_splicing(db, vid)
    return vid


def state_path(db: Database, n: int) -> tuple[float, dict[str, float]]:
    """The three bulk calls a splice and a keyframing step make; total and per-call seconds."""
    vid = _video(db, n * 10)
    specs = [st.ClipSpec(i * 10, i * 10 + 10) for i in range(n)]
    t0 = time.perf_counter()
    ids = st.create_clips_from_splice(db, vid, specs)
    t1 = time.perf_counter()
    st.start_keyframing_many(db, ids)
    t2 = time.perf_counter()
    idents = [keys.clip_identifier(vid, s.start_frame, s.end_frame) for s in specs]
    st.complete_keyframing_many(
        db,
        {
            cid: [
                st.ArtifactSpec(
                    "keyframe", "uniform", keys.keyframe_key(vid, ident, "uniform", p), tag=str(p)
                )
                for p in (25, 50, 75)
            ]
            for cid, ident in zip(ids, idents, strict=True)
        },
    )
    t3 = time.perf_counter()
    return t3 - t0, {
        "create_clips_from_splice": t1 - t0,
        "start_keyframing_many": t2 - t1,
        "complete_keyframing_many (incl. building specs)": t3 - t2,
    }


RAW_CLIPS = """
INSERT INTO clips (source_video_id, identifier, start_frame, end_frame, start_time, end_time,
                   fps, state, storage_key)
SELECT :vid, :vid || '_' || g * 10 || '_' || (g * 10 + 10), g * 10, g * 10 + 10, g * 10 / 25.0,
       (g * 10 + 10) / 25.0, 25.0, 'keyframed',
       'clips/' || :vid || '/' || :vid || '_' || g * 10 || '_' || (g * 10 + 10) || '.mp4'
FROM generate_series(0, :n - 1) AS g
"""
RAW_ARTIFACTS = """
INSERT INTO clip_artifacts (clip_id, kind, strategy, tag, storage_key)
SELECT c.id, 'keyframe', 'uniform', p::text,
       'clips/' || :vid || '/' || c.identifier || '/keyframes/uniform_' || p || '.jpg'
FROM clips c CROSS JOIN (VALUES (25), (50), (75)) AS pct(p) WHERE c.source_video_id = :vid
"""


def raw_path(db: Database, n: int) -> float:
    vid = _video(db, n * 10)
    t0 = time.perf_counter()
    with db.session() as s:
        s.execute(text(RAW_CLIPS), {"vid": vid, "n": n})
        s.execute(text(RAW_ARTIFACTS), {"vid": vid})
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="heaters-bench-") as tmp:
        home = Path(tmp)
        try:
            t0 = time.perf_counter()
            server = ensure_server(home)
            cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            ensure_server(home)
            warm = time.perf_counter() - t0
            db = Database(server.url, auto_migrate=False)
            t0 = time.perf_counter()
            migrate(db.engine)
            mig = time.perf_counter() - t0
            print(f"embedded db cold start (initdb + start): {cold:.2f} s")
            print(f"embedded db reuse (already running):     {warm * 1000:.1f} ms")
            print(f"migrations to head:                       {mig:.2f} s")
            best_state = best_raw = float("inf")
            phases: dict[str, float] = {}
            for _ in range(args.repeat):
                _empty(db)
                elapsed, split = state_path(db, args.clips)
                if elapsed < best_state:
                    best_state, phases = elapsed, split
                _empty(db)
                best_raw = min(best_raw, raw_path(db, args.clips))
            print(f"{args.clips} clips + {3 * args.clips} artifacts, best of {args.repeat}:")
            print(f"  state module:          {best_state:.3f} s")
            for name, seconds in phases.items():
                print(f"    {name}: {seconds:.3f} s")
            print(f"  raw INSERT ... SELECT: {best_raw:.3f} s")
            ratio = best_state / best_raw
            print(f"  ratio: {ratio:.2f}x (target <= 3x: {'OK' if ratio <= 3 else 'MISSED'})")
            db.dispose()
        finally:
            stop_server(home)


if __name__ == "__main__":
    main()
