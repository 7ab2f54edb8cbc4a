"""The review app's clip list at size: `/queue` and `/api/clips` with N clips stored.

Usage: ``.venv/bin/python -m benchmarks.bench_queue [--clips 10000] [--per-video 25]
[--repeat 3]``; prints one line per request and a JSON line last.

A temporary HEATERS_HOME (embedded Postgres, migrations to head) is filled in bulk with
``INSERT ... SELECT generate_series`` (no media, no state machine: a few seconds for 100,000
clips): videos of ``--per-video`` clips, a keyframe and a sprite sheet per clip, states spread
as a library in use (43 % pending review, 37 % embedded with a vector, 10 % approved, 3 %
skipped, 3 % archived, the rest before review), every 20th clip a short shot, one
``review_events`` row per reviewed clip by one of three reviewers. Then ANALYZE, and the review
app is served by uvicorn on 127.0.0.1 as ``heaters review`` serves it; each request goes over
HTTP (a new connection each), best of ``--repeat``:

- ``queue``: ``/queue`` (first page of 50, per-video progress, library totals, filters).
- ``queue_deep``: ``/queue?after=...`` 90 % of the way through (keyset: as cheap as page 1).
- ``queue_skipped`` / ``queue_reviewer`` / ``queue_not_embedded``: one filter each.
- ``api_clips`` / ``api_clips_deep``: ``/api/clips`` (page 1 and the deep page).
- ``grid``: ``/grid`` (50 pending clips, claimed).
- ``library`` / ``library_deep``: ``/library`` (approved clips, 48 a page; page 1 and deep).
- ``library_like``: ``/library?like=ID`` ("more like this": HNSW over the stored vectors).

Target (issue 14): ``/queue`` with 10,000 clips in <= 1 s on this machine. ``loadavg_before`` /
``loadavg_after`` say what else the machine was doing: these are wall-clock times.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import text

from heaters_resources.db.embedded_pg import ensure_server, stop_server
from heaters_resources.db.engine import Database
from heaters_resources.review import create_app
from heaters_resources.search.index import ensure_hnsw_index
from heaters_resources.store.objects import LocalObjectStore

FILL = [
    """INSERT INTO source_videos (source, title, state, fps, duration_s, frame_count)
       SELECT 'bench://queue/' || g, 'bench video ' || g, 'spliced', 25, :per * 2, :per * 50
       FROM generate_series(1, :videos) g""",
    """INSERT INTO clips (source_video_id, identifier, start_frame, end_frame, start_time,
                          end_time, fps, state, storage_key, short, reviewed_at)
       SELECT v.id, v.id || '_' || i * 50 || '_' || (i + 1) * 50, i * 50, (i + 1) * 50,
              i * 2.0, (i + 1) * 2.0, 25,
              CASE WHEN n < 43 THEN 'pending_review' WHEN n < 80 THEN 'embedded'
                   WHEN n < 90 THEN 'approved' WHEN n < 93 THEN 'skipped'
                   WHEN n < 96 THEN 'archived' WHEN n < 98 THEN 'keyframed' ELSE 'spliced' END,
              'clips/' || v.id || '/' || v.id || '_' || i * 50 || '.mp4', i % 20 = 19,
              CASE WHEN n BETWEEN 43 AND 95 THEN now() END
       FROM source_videos v, generate_series(0, :per - 1) i,
            LATERAL (SELECT ((v.id * 7919 + i * 104729) % 100)::int AS n) h
       WHERE (v.id - 1) * :per + i < :clips""",
    """INSERT INTO clip_artifacts (clip_id, kind, strategy, tag, storage_key, metadata)
       SELECT id, 'keyframe', 'multi', '50', 'k/' || identifier || '.jpg',
              jsonb_build_object('timestamp', 1.0)
       FROM clips WHERE state NOT IN ('spliced')""",
    """INSERT INTO clip_artifacts (clip_id, kind, strategy, tag, storage_key, metadata)
       SELECT id, 'sprite_sheet', 'w480_f24_c5', '', 's/' || identifier || '.jpg',
              '{"cols": 5, "rows": 10, "frame_count": 48, "tile_width": 480,
                "tile_height": 270, "sprite_fps": 24, "duration": 2}'::jsonb
       FROM clips WHERE state NOT IN ('spliced', 'keyframed')""",
    """INSERT INTO clip_embeddings (clip_id, model_name, generation_strategy, dimension, embedding)
       SELECT id, 'bench/queue', 'keyframe_multi_avg', 8,
              ARRAY[1, id % 7, id % 11, id % 13, 1, 2, 3, 4]::real[]::vector
       FROM clips WHERE state = 'embedded'""",
    """INSERT INTO review_events (action, actor, clip_ids, previous_states)
       SELECT CASE state WHEN 'skipped' THEN 'skip' WHEN 'archived' THEN 'archive'
                         ELSE 'approve' END,
              (ARRAY['alice', 'bob', 'carol'])[1 + id % 3], ARRAY[id], ARRAY['pending_review']
       FROM clips WHERE reviewed_at IS NOT NULL ORDER BY id""",
    "INSERT INTO reviewers (name, key) VALUES ('alice', md5('a')), ('bob', md5('b')), "
    "('carol', md5('c'))",
]
DEEP = """SELECT source_video_id || '.' || start_frame || '.' || id FROM clips
          WHERE superseded_at IS NULL AND NOT short
          ORDER BY source_video_id, start_frame, id OFFSET :skip LIMIT 1"""

LIKE = "SELECT min(clip_id) FROM clip_embeddings"
LIBRARY_DEEP = """SELECT source_video_id || '.' || start_frame || '.' || id FROM clips
          WHERE superseded_at IS NULL AND state IN ('approved', 'embedded')
          ORDER BY source_video_id, start_frame, id OFFSET :skip LIMIT 1"""


def fill(db: Database, clips: int, per_video: int) -> dict[str, int]:
    videos = -(-clips // per_video)
    params = {"clips": clips, "per": per_video, "videos": videos}
    with db.engine.begin() as conn:
        for statement in FILL:
            conn.execute(text(statement), params)
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
        counts = conn.execute(
            text("SELECT state, count(*) FROM clips GROUP BY state ORDER BY state")
        ).all()
    return {str(state): int(n) for state, n in counts}


@contextmanager
def serve(app: Any) -> Iterator[int]:
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def get(port: int, path: str) -> tuple[int, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, len(body)


def best_of(port: int, path: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        status, _size = get(port, path)
        best = min(best, time.perf_counter() - t0)
        if status != 200:
            raise SystemExit(f"{path}: HTTP {status}")
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=10_000)
    parser.add_argument("--per-video", type=int, default=25)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    result: dict[str, Any] = {"clips": args.clips, "loadavg_before": list(os.getloadavg())}
    with tempfile.TemporaryDirectory(prefix="heaters-bench-queue-") as tmp:
        home = Path(tmp)
        try:
            db = Database(ensure_server(home).url)
            db.ensure_migrated()
            t0 = time.perf_counter()
            result["clips_by_state"] = fill(db, args.clips, args.per_video)
            result["fill_s"] = round(time.perf_counter() - t0, 3)
            ensure_hnsw_index(db, "bench/queue", 8)  # what storing vectors makes
            with db.engine.connect() as conn:
                deep = conn.execute(text(DEEP), {"skip": int(args.clips * 0.85)}).scalar()
                like = conn.execute(text(LIKE)).scalar()
                library_deep = conn.execute(
                    text(LIBRARY_DEEP), {"skip": int(args.clips * 0.3)}
                ).scalar()
            app = create_app(db, LocalObjectStore(home / "objects"))
            paths = {
                "queue": "/queue",
                "queue_deep": f"/queue?after={deep}",
                "queue_skipped": "/queue?state=skipped",
                "queue_reviewer": "/queue?reviewer=alice",
                "queue_not_embedded": "/queue?embedded=no&state=approved",
                "api_clips": "/api/clips",
                "api_clips_deep": f"/api/clips?after={deep}",
                "grid": "/grid",
                "library": "/library",
                "library_deep": f"/library?after={library_deep}",
                "library_like": f"/library?like={like}&model=bench/queue",
            }
            with serve(app) as port:
                get(port, "/healthz")
                for name, path in paths.items():
                    seconds = best_of(port, path, args.repeat)
                    result[f"{name}_s"] = round(seconds, 4)
                    print(f"{name:20s} {seconds * 1000:8.1f} ms  GET {path}", flush=True)
            db.dispose()
        finally:
            stop_server(home)
    result["loadavg_after"] = list(os.getloadavg())
    result["cpus"] = os.cpu_count()
    result["target_queue_s"] = 1.0
    print(f"load average before {result['loadavg_before']}, after {result['loadavg_after']}")
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
